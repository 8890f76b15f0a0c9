"""ONNX export of a model file, with the metadata the Deepness QGIS plugin reads, so a model
trained here also runs in Deepness (https://github.com/PUTvision/qgis-plugin-deepness).

What Deepness does with a segmentation model (its ``model_base.py`` / ``segmentor.py`` /
``map_processor_segmentation.py``):
- input: one tensor (N, C, S, S); it feeds 8-bit band values divided by 255 (0..1, float32), then
  ``(x - standardization_mean) / standardization_std`` when those metadata keys are present
  (newer versions only; older ones feed 0..1 as is);
- output: one tensor (N, 1, S, S) holding a sigmoid probability is a binary (one-class) model;
  pixels at or above ``seg_thresh`` become the class, the rest background;
- tiles: it cuts the image into tiles of ``tile_size`` px on a grid of stride ``tile_size`` minus the
  overlap, from the processed extent's corner, pads tiles past the image's far edges with black, and
  keeps of each tile all but half the overlap at each side;
- metadata_props: every value a JSON string: ``model_type`` "Segmentor", ``class_names``
  ({"0": ..., "1": ...}), ``resolution`` in cm per pixel (on the ground), ``tile_size`` in px, ``tiles_overlap``
  in percent of the tile, ``seg_thresh``, ``seg_small_segment`` (the size of a median filter applied
  to the mask; 0 for none), ``standardization_mean`` / ``standardization_std``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import InputError
from ..io.files import check_output_location, check_output_paths, replaced_when_done
from ..io.rasters import metres_per_unit
from ..prediction.tiling import prediction_tile_px
from .modelfile import ModelInfo, load_model
from .network import UNet

DEEPNESS_INPUT_RANGE = 255.0  # Deepness reads 8-bit bands and divides them by 255
# 11 is the first with the Resize the network's upsampling exports to; 20 the last torch's exporter writes
ONNX_OPSETS = range(11, 21)
DEFAULT_OVERLAP_PERCENT = 25  # our prediction default: a quarter of the tile
# One sigmoid channel is "building"; both names are given because Deepness versions before the
# multi-output rework name the background channel 0 from this list too (newer ones accept both).
CLASS_NAMES = {"0": "background", "1": "building"}
INPUT_NAME, OUTPUT_NAME = "image", "building_probability"


class DeepnessGraph(nn.Module):
    """Deepness' input (bands / 255) -> our normalisation -> U-Net -> sigmoid probability; black
    padding is read as nodata."""

    scale: torch.Tensor  # buffers, registered in __init__
    shift: torch.Tensor

    def __init__(self, net: UNet, scale: torch.Tensor, shift: torch.Tensor) -> None:
        super().__init__()
        self.net = net
        # (raw - mean) / std with raw = x * 255, folded into one multiply-add per band
        self.register_buffer("scale", scale.view(1, -1, 1, 1))
        self.register_buffer("shift", shift.view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Deepness pads tiles past the image's far edges with black, 0 in every band (and 0 is the
        # usual nodata of 8-bit imagery): the network gets there what our Predict gives it for
        # nodata, the band mean (0 once normalised), so the image next to it is read alike, and no
        # building is marked on it.
        image = (x.amax(dim=1, keepdim=True) > 0).to(x.dtype)
        probability = torch.sigmoid(self.net((x * self.scale + self.shift) * image))
        return probability * image


def deepness_normalization(info: ModelInfo) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) per band turning Deepness' 0..1 input into the network's input.

    ``fixed`` mode uses the stored mean/std. ``per_image`` mode cannot be reproduced (Deepness
    sees one tile at a time, never the whole image's statistics), so the training images' average
    mean/std stored in the model file stands in for them: images much brighter or darker than
    the training ones will score worse in Deepness than with our own prediction."""
    settings = info.normalization
    if settings.get("mode") not in ("fixed", "per_image"):
        raise InputError(f"Unknown normalisation mode {settings.get('mode')!r} in the model file.")
    mean = torch.tensor(settings["mean"], dtype=torch.float64)
    std = torch.tensor(settings["std"], dtype=torch.float64)
    # Deepness feeds 8-bit bands: a model of 16-bit or float imagery (0..1 reflectance included) would
    # read them on another scale. Model files record their images' value scales; for older ones, uint8
    # data has means in 0..255 (per_image) or a full range of 255 (fixed), and anything larger is not 8-bit.
    if info.value_scales is not None:
        eight_bit = all(scale == DEEPNESS_INPUT_RANGE for scale in info.value_scales)
        trained_on = f"images with values up to {', '.join(f'{scale:g}' for scale in info.value_scales)}"
    else:
        eight_bit = not bool((mean + std > DEEPNESS_INPUT_RANGE + 1e-6).any())
        trained_on = (
            f"imagery beyond 8 bits per band (its normalisation is mean {settings['mean']}, std {settings['std']})"
        )
    if not eight_bit:
        raise InputError(
            f"This model was trained on {trained_on}; Deepness feeds 8-bit bands only (0..255). "
            "Train on 8-bit (Byte) images to export for Deepness."
        )
    return (DEEPNESS_INPUT_RANGE / std).float(), (-mean / std).float()


def deepness_metadata(info: ModelInfo, overlap_percent: int, tile_px: int) -> dict[str, str]:
    """metadata_props for Deepness (values JSON-encoded, as its reader expects), plus our own
    ``unet_buildings`` record of where the model came from."""
    metadata = {
        "model_type": "Segmentor",
        "class_names": CLASS_NAMES,
        "tile_size": int(tile_px),
        "tiles_overlap": int(overlap_percent),
        "seg_thresh": float(info.threshold),
        # no extra clean-up: Deepness would otherwise median-filter the mask (9 px), which our Predict never does
        "seg_small_segment": 0,
        # the normalisation is inside the graph: Deepness must not standardise again
        "standardization_mean": [0.0] * len(info.bands),
        "standardization_std": [1.0] * len(info.bands),
        "unet_buildings": {
            "bands": list(info.bands),
            "normalization": info.normalization,
            "building_values": list(info.building_values),
            "preset": info.preset,
            "best_epoch": info.best_epoch,
            "software_version": info.software_version,
        },
    }
    resolution_cm = resolution_cm_per_px(info)
    if resolution_cm is not None:
        metadata["resolution"] = resolution_cm
    return {key: json.dumps(value) for key, value in metadata.items()}


def resolution_cm_per_px(info: ModelInfo) -> float | None:
    """The training pixel size on the ground in cm (mean of x and y): what the model sees, whatever
    its training images' CRS (0.13 m Web Mercator pixels at 27 degrees north are 0.15 "metres" of
    the map). Model files from before ground sizes were stored give their CRS's linear units;
    None when those are not linear either (degrees), and Deepness then asks the user."""
    if info.ground_pixel_size_m:
        size_x_m, size_y_m = (abs(float(value)) for value in info.ground_pixel_size_m)
    else:
        metres = metres_per_unit(info.crs_units or "")
        if not info.pixel_size or metres is None:
            return None
        size_x_m, size_y_m = (abs(float(value)) * metres for value in info.pixel_size)
    return round((size_x_m + size_y_m) / 2 * 100, 4)


def export_onnx(
    model_path: str | Path,
    onnx_path: str | Path,
    *,
    opset: int = 17,
    overlap_percent: int = DEFAULT_OVERLAP_PERCENT,
    tile_size_px: int | None = None,
) -> Path:
    """Write ``model_path`` (our .pt) as an ONNX model for Deepness and return ``onnx_path``.

    The graph takes (N, bands, tile, tile) float32 band values / 255 with a dynamic batch size
    and returns (N, 1, tile, tile) building probability; ``tile_size_px`` None gives our Predict's
    default tile (``prediction_tile_px``, twice the training tile): with the default overlap,
    Deepness keeps of each tile only what lies an eighth of it (64 px) or more inside, where the view
    of the network does not depend on where the tile ends, so it marks what our Predict marks
    (bench/bench_deepness.py). The model's normalisation is baked in (see
    ``deepness_normalization``: per-image models use their training images' average mean/std), so
    the file also runs in Deepness versions without standardisation metadata. The file is written
    under a temporary name and renamed when complete."""
    try:
        import onnx
    except ImportError as error:
        raise InputError(
            "ONNX export needs the 'onnx' package: install it into the plugin's Python environment (pip install onnx)."
        ) from error
    if not 0 <= overlap_percent < 100:
        raise InputError(f"The tile overlap must be 0 to 99 percent, not {overlap_percent}.")
    if opset not in ONNX_OPSETS:
        raise InputError(
            f"The ONNX opset must be {ONNX_OPSETS.start} to {ONNX_OPSETS.stop - 1}, not {opset}: the default, 17, "
            "runs in every onnxruntime of the last years (Deepness included)."
        )
    onnx_path = Path(onnx_path)
    check_output_paths({"model file": model_path}, {"ONNX file": onnx_path})
    check_output_location(onnx_path, "ONNX file")
    loaded = load_model(Path(model_path), "cpu")
    info = loaded.info
    multiple = loaded.net.config.size_multiple_px
    tile_px = prediction_tile_px(info.tile_size_px) if tile_size_px is None else tile_size_px
    if tile_px <= 0 or tile_px % multiple:
        raise InputError(f"The tile size must be a positive multiple of {multiple} px, not {tile_px}.")
    graph = DeepnessGraph(loaded.net, *deepness_normalization(info)).eval()
    example = torch.zeros(1, len(info.bands), tile_px, tile_px)

    with replaced_when_done(onnx_path) as temporary:
        # the TorchScript exporter (dynamo=False) needs no onnxscript and gives one self-contained file
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            # the network's input-shape checks run once on the example tile, which is the point
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(
                graph,
                (example,),
                temporary,
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            )
        model = onnx.load(temporary)
        for key, value in deepness_metadata(info, overlap_percent, tile_px).items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        model.doc_string = "U-Net Building Extractor model: building probability from RGB band values / 255."
        onnx.checker.check_model(model)
        onnx.save(model, temporary)
    return onnx_path
