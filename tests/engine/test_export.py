"""ONNX export for Deepness: the exported graph, fed the way Deepness feeds it, gives the torch
network's probabilities, and carries the metadata Deepness reads, in the formats it parses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from model.__main__ import main
from model.errors import InputError
from model.net.export import export_onnx
from model.net.modelfile import ModelInfo, load_model, save_model
from model.net.network import UNet, UNetConfig
from model.net.normalization import normalize
from model.prediction.predict import predict_raster
from model.prediction.runner import TileRunner
from model.training.start_model import STARTER_MODEL
from tests.engine.scenes import SHARED_DATA

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

TILE_PX = 64
PER_IMAGE = {"mode": "per_image", "mean": [96.0, 104.0, 88.0], "std": [41.0, 37.0, 30.0]}
FIXED = {"mode": "fixed", "mean": [0.0, 0.0, 0.0], "std": [255.0, 255.0, 255.0]}
DATASET = {"mode": "fixed", "mean": [96.0, 104.0, 88.0], "std": [41.0, 37.0, 30.0]}  # black is not the mean


def write_model(
    path: Path,
    normalization: dict,
    *,
    pixel_size=(0.3, -0.3),
    crs_units: str = "metre",
    ground_pixel_size_m=None,
    threshold: float = 0.42,
    value_scales=None,
) -> Path:
    torch.manual_seed(0)
    net = UNet(UNetConfig(base_width=4, batch_norm=True))
    with torch.no_grad():  # random heads give probabilities near 0.5; spread them so a mismatch shows
        net.head.weight.mul_(200.0)
    info = ModelInfo(
        normalization=normalization,
        tile_size_px=TILE_PX,
        threshold=threshold,
        pixel_size=list(pixel_size),
        crs_units=crs_units,
        ground_pixel_size_m=ground_pixel_size_m,
        value_scales=value_scales,
    )
    save_model(path, net, info)
    return path


def deepness_input(tiles_hwc: np.ndarray, metadata: dict[str, str]) -> np.ndarray:
    """Deepness' preprocessing (model_base.preprocessing): /255, standardise, NHWC -> NCHW."""
    batch = np.float32(tiles_hwc * 1.0 / 255.0)
    mean = np.array(json.loads(metadata["standardization_mean"]), np.float32)
    std = np.array(json.loads(metadata["standardization_std"]), np.float32)
    return np.transpose((batch - mean) / std, (0, 3, 1, 2)).astype(np.float32)


def torch_probability(model_path: Path, tiles_hwc: np.ndarray) -> np.ndarray:
    """Our own path: raw values normalised with the model file's mean/std, network, sigmoid."""
    loaded = load_model(model_path)
    raw = torch.from_numpy(np.ascontiguousarray(tiles_hwc.transpose(0, 3, 1, 2)))
    settings = loaded.info.normalization
    with torch.inference_mode():
        return torch.sigmoid(loaded.net(normalize(raw, settings["mean"], settings["std"]))).numpy()


@pytest.mark.parametrize("normalization", [PER_IMAGE, FIXED], ids=["per_image", "fixed"])
def test_onnx_in_deepness_matches_torch(tmp_path: Path, normalization: dict) -> None:
    model_path = write_model(tmp_path / "model.pt", normalization)
    onnx_path = export_onnx(model_path, tmp_path / "model.onnx", tile_size_px=TILE_PX)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    metadata = session.get_modelmeta().custom_metadata_map
    tiles = np.random.default_rng(1).integers(0, 256, (3, TILE_PX, TILE_PX, 3), dtype=np.uint8)

    expected = torch_probability(model_path, tiles)
    assert expected.std() > 0.01  # the comparison below can only fail if the output varies
    for batch in (tiles[:1], tiles):  # dynamic batch size: one tile and three
        (probability,) = session.run(None, {session.get_inputs()[0].name: deepness_input(batch, metadata)})
        assert probability.shape == (len(batch), 1, TILE_PX, TILE_PX)
        np.testing.assert_allclose(probability, expected[: len(batch)], atol=1e-4)


def test_black_padding_is_read_as_nodata_and_is_no_building(tmp_path: Path) -> None:
    """Deepness pads the far edges of an image with black (0 in every band): the export gives no
    building there, and the real pixels beside it what our Predict gives pixels beside nodata."""
    model_path = write_model(tmp_path / "model.pt", DATASET)
    onnx_path = export_onnx(model_path, tmp_path / "model.onnx", tile_size_px=TILE_PX)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    tile = np.random.default_rng(2).integers(1, 256, (1, TILE_PX, TILE_PX, 3), dtype=np.uint8)
    tile[:, :, TILE_PX // 2 :] = 0  # the image ends half way across the tile
    model_input = deepness_input(tile, session.get_modelmeta().custom_metadata_map)
    (probability,) = session.run(None, {session.get_inputs()[0].name: model_input})
    image_part = probability[0, 0, :, : TILE_PX // 2]
    assert np.all(probability[..., TILE_PX // 2 :] == 0)
    loaded = load_model(model_path)
    settings = loaded.info.normalization
    runner = TileRunner(loaded.net, torch.device("cpu"), settings["mean"], settings["std"], "float32")
    raw = np.ascontiguousarray(tile.transpose(0, 3, 1, 2))
    beside_nodata = runner(raw, raw.max(axis=1) > 0)[0, :, : TILE_PX // 2]
    np.testing.assert_allclose(image_part, beside_nodata, atol=1e-4)
    # control: as black band values, the padding would change what the network says beside it
    assert np.abs(image_part - torch_probability(model_path, tile)[0, 0, :, : TILE_PX // 2]).max() > 0.01
    assert image_part.max() > 0.5  # there are buildings to lose


@pytest.mark.parametrize("asked_px, export_px", [(None, 2 * TILE_PX), (TILE_PX, TILE_PX)])
def test_metadata_is_what_deepness_reads(tmp_path: Path, asked_px, export_px) -> None:
    """The tile Deepness proposes is our Predict's (twice the training tile) unless another is asked
    for, and the graph takes that size."""
    model_path = write_model(tmp_path / "model.pt", PER_IMAGE)
    onnx_path = export_onnx(model_path, tmp_path / "model.onnx", tile_size_px=asked_px)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    # parsed the way Deepness' ModelBase getters parse them
    assert str(json.loads(meta["model_type"])).capitalize() == "Segmentor"
    assert float(json.loads(meta["resolution"])) == pytest.approx(30.0)  # 0.3 m -> cm per pixel
    assert int(json.loads(meta["tile_size"])) == export_px
    assert int(json.loads(meta["tiles_overlap"])) == 25  # percent
    assert float(json.loads(meta["seg_thresh"])) == pytest.approx(0.42)
    names = json.loads(meta["class_names"])
    assert [names[key] for key in sorted(names, key=int)] == ["background", "building"]
    assert json.loads(meta["standardization_mean"]) == [0.0] * 3  # normalisation is in the graph
    assert json.loads(meta["standardization_std"]) == [1.0] * 3
    assert json.loads(meta["unet_buildings"])["normalization"] == PER_IMAGE
    # Deepness' Segmentor checks: one input (batch, C, S, S), one square 4-D output with one
    # (sigmoid) channel; a string batch dimension means dynamic batch size
    (model_input,), (output,) = session.get_inputs(), session.get_outputs()
    assert isinstance(model_input.shape[0], str) and model_input.shape[1:] == [3, export_px, export_px]
    assert len(output.shape) == 4 and output.shape[1:] == [1, export_px, export_px]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.onnx", "model.pt"]  # no .part left


def test_resolution_is_the_ground_pixel_size(tmp_path: Path) -> None:
    """Web Mercator "metres" at 27 degrees north are 0.89 ground metres: the export says what the
    model saw on the ground (from before ground sizes were stored: the map units, as above)."""
    model_path = write_model(
        tmp_path / "model.pt", FIXED, pixel_size=(0.3, -0.3), crs_units="metre", ground_pixel_size_m=[0.267, 0.265]
    )
    session = ort.InferenceSession(
        str(export_onnx(model_path, tmp_path / "model.onnx")), providers=["CPUExecutionProvider"]
    )
    assert float(json.loads(session.get_modelmeta().custom_metadata_map["resolution"])) == pytest.approx(26.6)


def test_resolution_left_out_when_units_are_not_linear(tmp_path: Path) -> None:
    model_path = write_model(tmp_path / "model.pt", FIXED, pixel_size=(2.7e-6, -2.7e-6), crs_units="unknown")
    session = ort.InferenceSession(
        str(export_onnx(model_path, tmp_path / "model.onnx")), providers=["CPUExecutionProvider"]
    )
    assert "resolution" not in session.get_modelmeta().custom_metadata_map  # Deepness asks the user


def test_16_bit_model_is_refused_and_nothing_written(tmp_path: Path) -> None:
    model_path = write_model(tmp_path / "model.pt", {"mode": "fixed", "mean": [0.0] * 3, "std": [65535.0] * 3})
    with pytest.raises(InputError, match="8-bit"):
        export_onnx(model_path, tmp_path / "model.onnx")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.pt"]


@pytest.mark.parametrize("tile_px", [100, -16])
def test_a_tile_the_network_cannot_take_is_refused_and_nothing_written(tmp_path: Path, tile_px: int) -> None:
    model_path = write_model(tmp_path / "model.pt", FIXED)
    with pytest.raises(InputError, match=f"multiple of 16 px, not {tile_px}"):
        export_onnx(model_path, tmp_path / "model.onnx", tile_size_px=tile_px)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.pt"]


def test_an_export_over_its_model_file_is_refused_and_the_model_kept(tmp_path: Path) -> None:
    model_path = write_model(tmp_path / "model.pt", FIXED)
    before = model_path.read_bytes()
    (tmp_path / "link.onnx").symlink_to(model_path)
    for output in (model_path, tmp_path / "link.onnx"):
        with pytest.raises(InputError, match="is the input model file"):
            export_onnx(model_path, output)
    assert model_path.read_bytes() == before


def test_a_model_of_0_to_1_float_imagery_is_refused_though_its_numbers_look_8_bit(tmp_path: Path) -> None:
    """Its normalisation numbers (mean 0.4, std 0.2) are below 255: only the recorded value scale tells
    that Deepness' 0..255 bands would be read 255 times too bright."""
    per_image = {"mode": "per_image", "mean": [0.4] * 3, "std": [0.2] * 3, "min_relative_std": [0.05] * 3}
    model_path = write_model(tmp_path / "model.pt", per_image, value_scales=[1.0])
    with pytest.raises(InputError, match="values up to 1; Deepness feeds 8-bit bands only"):
        export_onnx(model_path, tmp_path / "model.onnx")
    export_onnx(write_model(tmp_path / "byte.pt", FIXED, value_scales=[255.0, 255.0]), tmp_path / "byte.onnx")


def test_command_line_export(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model_path = write_model(tmp_path / "model.pt", FIXED)
    onnx_path = tmp_path / "out" / "model.onnx"
    assert main(["export-onnx", str(model_path), "--output", str(onnx_path), "--overlap-percent", "10"]) == 0
    assert json.loads(capsys.readouterr().out) == {"onnx": str(onnx_path)}
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert session.get_modelmeta().custom_metadata_map["tiles_overlap"] == "10"
    assert main(["export-onnx", str(tmp_path / "missing.pt"), "--output", str(onnx_path)]) == 2


def deepness_tiled_mask(session, image: np.ndarray) -> np.ndarray:
    """The building mask (H, W) of bool Deepness makes of a whole (bands, H, W) 8-bit image at its own
    pixels with an exported model, following its code (extent_utils, map_processor, tile_params): the
    image extended at the top and the right with black to whole tiles of the metadata's size and
    overlap, tiles on a grid of that stride from the corner, each keeping all but half the overlap at
    its sides (all of it at the image's edges), pixels at or above the threshold buildings."""
    meta = session.get_modelmeta().custom_metadata_map
    tile = int(json.loads(meta["tile_size"]))
    overlap = int(tile * float(json.loads(meta["tiles_overlap"])) / 100 * 2) // 2
    stride, half = tile - overlap, overlap // 2
    threshold = float(json.loads(meta["seg_thresh"]))
    bands, height, width = image.shape

    def missing(length: int) -> int:
        return tile - length if length <= tile else (stride - (length - tile) % stride) % stride

    pad_y, pad_x = missing(height), missing(width)
    full = np.zeros((bands, height + pad_y, width + pad_x), np.uint8)
    full[:, pad_y:, :width] = image
    rows, cols = (round((size - tile) / stride) + 1 for size in full.shape[1:])
    mask = np.zeros(full.shape[1:], bool)
    for row in range(rows):
        for col in range(cols):
            y, x = row * stride, col * stride
            hwc = full[:, y : y + tile, x : x + tile].transpose(1, 2, 0)[None]
            (probability,) = session.run(None, {session.get_inputs()[0].name: deepness_input(hwc, meta)})
            top, left = (0 if row == 0 else half), (0 if col == 0 else half)
            bottom, right = (tile if row == rows - 1 else tile - half), (tile if col == cols - 1 else tile - half)
            mask[y + top : y + bottom, x + left : x + right] = probability[0, 0, top:bottom, left:right] >= threshold
    return mask[pad_y:, :width]


@pytest.mark.skipif(not (SHARED_DATA / "banepa_1").is_dir(), reason="shared real scenes not available")
@pytest.mark.skipif(not STARTER_MODEL.is_file(), reason="the starter model is not installed")
def test_the_starter_model_in_deepness_marks_what_our_predict_marks(tmp_path: Path) -> None:
    """The shipped starter model, exported with the defaults and tiled as Deepness tiles, marks the
    buildings our Predict marks on a real scene at its own pixels: its normalisation does not depend
    on the image, and both keep only what lies well inside a tile (0.994 here, 0.991 by Deepness's own
    code in bench_deepness.py; the starter before it gave 0.958 with the training tile for both and no
    border quarter in our blend). What differs lies mostly near the scene's edges, where Deepness pads
    with black."""
    image_path = SHARED_DATA / "banepa_1" / "image.tif"
    ours_path = predict_raster(
        image_path,
        STARTER_MODEL,
        mask_path=tmp_path / "mask.tif",
        processing_pixel_size_map_units="native",
        device="cpu",
        precision="float32",  # as onnxruntime runs the graph
    ).mask_path
    session = ort.InferenceSession(
        str(export_onnx(STARTER_MODEL, tmp_path / "starter.onnx")), providers=["CPUExecutionProvider"]
    )
    with rasterio.open(image_path) as dataset:
        image, valid = dataset.read([1, 2, 3]), dataset.read_masks(1) > 0
    with rasterio.open(ours_path) as dataset:
        ours = (dataset.read(1) == 1) & valid
    theirs = deepness_tiled_mask(session, image) & valid
    assert ours.mean() > 0.05  # buildings to agree on
    assert (ours & theirs).sum() / (ours | theirs).sum() >= 0.98
