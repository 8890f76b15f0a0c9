"""Our Predict against the Deepness plugin's own processing code, on a real scene, for exported models.

For each model file given (default: the starter model), the model is exported to ONNX with the
engine's ``export_onnx``; Deepness's ``MapProcessorSegmentation`` (its real code, from a checkout
of https://github.com/PUTvision/qgis-plugin-deepness) then processes the whole scene with the
parameters its "Load default parameters" button reads from the file's metadata (tile size, overlap,
threshold, no small-segment filter), at the scene's own resolution; our ``predict_raster`` predicts
the same scene at its own pixels too, with the export's tile and overlap. Prints, per model, the
IoU of the two building masks, the share of pixels they disagree on and where the disagreement lies
(within ``EDGE_PX`` of the scene's edge, or inside), so a normalisation that depends on the image
(``per_image``: Deepness sees one tile at a time and gets the training images' average statistics
instead) shows against one that does not (``dataset``).

Needs QGIS's Python, onnxruntime, and OpenCV (Deepness imports ``cv2``; e.g.
``pip install --target /tmp/cv2 opencv-python-headless==4.10.0.84`` and ``PYTHONPATH=/tmp/cv2``,
a build for numpy 1 where GDAL's bindings need it). Run from the repository root:
``.venv/bin/python bench/bench_deepness.py --deepness <checkout>/src [--models a.pt b.pt] [--scene banepa_1]``.
Exits 0 with a message when the Deepness checkout, OpenCV or the data folder is missing.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import os
import sys
import tempfile
from pathlib import Path
from unittest.mock import MagicMock

import numpy as np
import rasterio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model.net.export import export_onnx  # noqa: E402  (after the path set-up above)
from model.net.modelfile import read_payload  # noqa: E402
from model.prediction.predict import predict_raster  # noqa: E402
from model.prediction.tiling import prediction_tile_px  # noqa: E402
from model.training.start_model import STARTER_MODEL  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_presets import SCENES, shared_data  # noqa: E402  (beside this file)

EDGE_PX = 128  # "at edges": within this of the scene's edges, where Deepness's tiles are padded with black


def deepness_mask(deepness_src: Path, onnx_path: Path, image_path: Path) -> np.ndarray:
    """Deepness's building mask (H, W) of bool for the whole image, at the image's own pixels."""
    sys.path.insert(0, str(deepness_src))
    from deepness.common.channels_mapping import ChannelsMapping, ImageChannelStandaloneBand
    from deepness.common.processing_overlap import ProcessingOverlap, ProcessingOverlapOptions
    from deepness.common.processing_parameters.map_processing_parameters import ProcessedAreaType
    from deepness.common.processing_parameters.segmentation_parameters import SegmentationParameters
    from deepness.processing.map_processor.map_processor_segmentation import MapProcessorSegmentation
    from deepness.processing.models.segmentor import Segmentor
    from qgis.core import QgsProject, QgsRasterLayer

    layer = QgsRasterLayer(str(image_path), image_path.stem)
    QgsProject.instance().addMapLayer(layer)
    channels = ChannelsMapping()
    channels.set_image_channels(
        [
            ImageChannelStandaloneBand(band_number=band, name=name)
            for band, name in enumerate(("red", "green", "blue"), 1)
        ]
    )
    channels.set_number_of_model_inputs_same_as_image_channels()
    model = Segmentor(str(onnx_path))
    model.check_loaded_model_outputs()
    pixel_size = layer.rasterUnitsPerPixelX()  # the scene's own pixels, in its map units (metres here)
    params = SegmentationParameters(
        resolution_cm_per_px=pixel_size * 100,
        tile_size_px=model.get_input_size_in_pixels()[0],
        batch_size=4,
        local_cache=False,
        processed_area_type=ProcessedAreaType.ENTIRE_LAYER,
        mask_layer_id=None,
        input_layer_id=layer.id(),
        input_channels_mapping=channels,
        postprocessing_dilate_erode_size=0,
        processing_overlap=ProcessingOverlap(
            ProcessingOverlapOptions.OVERLAP_IN_PERCENT, percentage=model.get_metadata_tiles_overlap()
        ),
        pixel_classification__probability_threshold=model.get_metadata_segmentation_threshold(),
        model=model,
    )
    processor = MapProcessorSegmentation(rlayer=layer, vlayer_mask=None, map_canvas=MagicMock(), params=params)
    processor.run()
    # a one-channel sigmoid output: 1 below the threshold, 2 from it (0 is outside the processed area)
    return processor.get_result_img()[0] == 2


def compare(ours: np.ndarray, theirs: np.ndarray, valid: np.ndarray, edge_px: int) -> dict:
    ours, theirs = ours & valid, theirs & valid
    union = (ours | theirs).sum()
    differ = ours != theirs
    edge = np.zeros_like(valid)
    edge[:edge_px], edge[-edge_px:], edge[:, :edge_px], edge[:, -edge_px:] = True, True, True, True
    return {
        "iou": float((ours & theirs).sum() / union) if union else 1.0,
        "differ": float(differ[valid].mean()),
        "differ_edge": float(differ[valid & edge].mean()),
        "differ_inside": float(differ[valid & ~edge].mean()),
        "ours_share": float(ours[valid].mean()),
        "theirs_share": float(theirs[valid].mean()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deepness", type=Path, default=os.environ.get("DEEPNESS_SRC"), help="Deepness's src folder")
    parser.add_argument("--models", type=Path, nargs="+", default=[STARTER_MODEL], help="model files (.pt)")
    parser.add_argument("--scene", choices=SCENES, default="banepa_1")
    parser.add_argument(
        "--overlap-percent", type=int, default=25, help="tile overlap, of the export and of our Predict (default 25)"
    )
    parser.add_argument(
        "--export-tile-px", type=int, nargs="+", default=[None], help="tile sizes of the export (default: its own)"
    )
    args = parser.parse_args()
    if args.deepness is None or not (Path(args.deepness) / "deepness").is_dir():
        print("skipped: give --deepness <checkout of qgis-plugin-deepness>/src (or set DEEPNESS_SRC)")
        return 0
    if importlib.util.find_spec("cv2") is None:
        print("skipped: Deepness needs OpenCV (cv2) on the Python path (see this script's help)")
        return 0
    image = shared_data() / args.scene / "image.tif"
    if not image.is_file():
        print(f"skipped: the real scene {image} is not there (set UNET_SHARED_DATA to its folder)")
        return 0

    from qgis.core import QgsApplication

    application = QgsApplication([], False)
    application.initQgis()
    with rasterio.open(image) as dataset:
        valid = dataset.read_masks(1) > 0
    print(
        f"Our Predict against Deepness's MapProcessorSegmentation on {args.scene} ({valid.shape[1]} x "
        f"{valid.shape[0]} px), both at the scene's own pixels, tiles overlapping by {args.overlap_percent} %"
    )
    print(
        f"{'model':<36} {'export tile':>11} {'mask IoU':>9} {'differ':>8} {'at edges':>8} {'inside':>8} "
        f"{'ours':>8} {'Deepness':>8}"
    )
    with tempfile.TemporaryDirectory(prefix="bench_deepness_") as scratch:
        for model_path, export_tile_px in itertools.product(args.models, args.export_tile_px):
            onnx_path = export_onnx(
                model_path,
                Path(scratch) / f"{model_path.stem}_{export_tile_px}.onnx",
                overlap_percent=args.overlap_percent,
                tile_size_px=export_tile_px,
            )
            tile_px = export_tile_px or prediction_tile_px(read_payload(model_path)["info"]["tile_size_px"])
            ours_path = Path(scratch) / f"{model_path.stem}_mask.tif"
            predict_raster(  # float32, as onnxruntime runs the graph
                image,
                model_path,
                mask_path=ours_path,
                processing_pixel_size_map_units="native",
                device="cpu",
                precision="float32",
                tile_size_px=tile_px,
                overlap_px=tile_px * args.overlap_percent // 100,
            )
            with rasterio.open(ours_path) as dataset:
                ours = dataset.read(1) == 1
            theirs = deepness_mask(Path(args.deepness), onnx_path, image)
            if theirs.shape != ours.shape:
                raise SystemExit(f"Deepness's result is {theirs.shape} px, ours {ours.shape}: not the same grid")
            figures = compare(ours, theirs, valid, edge_px=EDGE_PX)
            shares = (figures[key] for key in ("differ", "differ_edge", "differ_inside", "ours_share", "theirs_share"))
            print(
                f"{model_path.name:<36} {export_tile_px or 'default':>11} {figures['iou']:>9.4f} "
                + " ".join(f"{share:>8.2%}" for share in shares),
                flush=True,
            )
    application.exitQgis()
    return 0


if __name__ == "__main__":
    sys.exit(main())
