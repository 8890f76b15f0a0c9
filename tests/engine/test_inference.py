"""Prediction engine: outputs on the input's grid, encodings, nodata, seam-free blending,
resampling to the model's pixel size, test-time augmentation, cancel, and the whole
predict -> mask -> polygons slice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.features import rasterize
from rasterio.transform import from_origin
from rasterio.windows import Window

from model.errors import Cancelled, InputError
from model.io.rasters import KIND_TAG, MASK_NODATA, PROBABILITY_F32_NODATA, PROBABILITY_U8_NODATA
from model.io.vector_io import write_polygons
from model.net.modelfile import ModelInfo, load_model, save_model
from model.net.network import UNet, UNetConfig
from model.net.normalization import normalize
from model.prediction.predict import predict_raster
from model.prediction.tiling import ground_phase_px, plan_tiles, tile_starts
from model.training.start_model import STARTER_MODEL
from model.vectors.vectorize import polygons_from_mask
from tests.engine.scenes import SHARED_DATA, write_geotiff

FIXED = {"mode": "fixed", "mean": [128.0, 128.0, 128.0], "std": [64.0, 64.0, 64.0]}


def make_model(
    path: Path,
    *,
    bands=(1, 2, 3),
    normalization=None,
    threshold=0.5,
    pixel_size=None,
    crs_units="metre",
    gain: float = 40.0,
    seed: int = 0,
) -> Path:
    """A tiny random U-Net; ``gain`` scales the output layer so probabilities vary visibly, and
    its bias centres them on 0.5 so masks hold both classes."""
    torch.manual_seed(seed)
    net = UNet(UNetConfig(in_bands=len(bands), base_width=4)).eval()
    with torch.no_grad():
        net.head.weight.mul_(gain)
        net.head.bias.sub_(net(torch.randn(1, len(bands), 64, 64)).mean())
    info = ModelInfo(
        bands=list(bands),
        normalization=normalization or {"mode": "per_image"},
        tile_size_px=64,
        threshold=threshold,
        pixel_size=pixel_size,
        crs_units=crs_units,
    )
    save_model(path, net, info)
    return path


def write_image(
    path: Path, data: np.ndarray, *, crs="EPSG:3857", origin=(1000.0, 2000.0), pixel=(1.0, 1.0), nodata=None
) -> Path:
    return write_geotiff(path, data, crs=crs, transform=from_origin(origin[0], origin[1], *pixel), nodata=nodata)


def noise(shape, seed=1) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, 255, shape, dtype=np.uint8)


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as dataset:
        return dataset.read(1)


def test_outputs_on_input_grid_with_encodings_and_nodata(tmp_path):
    data = noise((3, 97, 150))
    data[:, 10:30, 40:70] = 0  # a nodata hole
    data[:, :, -5:] = 0  # a nodata strip on the edge
    image = write_image(tmp_path / "image.tif", data, nodata=0, pixel=(0.5, 0.5))
    model = make_model(tmp_path / "model.pt", threshold=0.5)
    result = predict_raster(image, model, probability_path=tmp_path / "p8.tif", mask_path=tmp_path / "mask.tif")
    float_result = predict_raster(image, model, probability_path=tmp_path / "p32.tif", probability_dtype="float32")

    nodata = (data == 0).any(axis=0)
    with rasterio.open(image) as source:
        for path, kind, dtype in (
            (result.probability_path, "probability", "uint8"),
            (result.mask_path, "mask", "uint8"),
            (float_result.probability_path, "probability", "float32"),
        ):
            with rasterio.open(path) as output:
                assert (output.crs, output.transform, output.shape) == (source.crs, source.transform, source.shape)
                assert output.dtypes[0] == dtype and output.tags()[KIND_TAG] == kind
                assert output.compression is not None
    p8, p32, mask = read(result.probability_path), read(float_result.probability_path), read(result.mask_path)
    assert np.array_equal(p8 == PROBABILITY_U8_NODATA, nodata)
    assert np.array_equal(p32 == PROBABILITY_F32_NODATA, nodata)
    assert np.array_equal(mask == MASK_NODATA, nodata)
    valid = ~nodata
    assert np.all((p32[valid] >= 0) & (p32[valid] <= 1)) and p32[valid].std() > 0.01
    assert np.array_equal(p8[valid], np.rint(p32[valid] * 254).astype(np.uint8))
    assert np.array_equal(mask[valid], (p32[valid] >= 0.5).astype(np.uint8))
    assert 0 < mask[valid].mean() < 1  # the gain makes both classes appear
    assert result.tile_count > 0 and result.threshold == 0.5 and result.device_description
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.tif", "mask.tif", "model.pt", "p32.tif", "p8.tif"]


def test_optional_overviews(tmp_path):
    image = write_image(tmp_path / "image.tif", noise((3, 520, 600)))
    result = predict_raster(
        image, make_model(tmp_path / "m.pt"), mask_path=tmp_path / "mask.tif", overviews=True, tile_size_px=256
    )
    with rasterio.open(result.mask_path) as output:
        assert output.overviews(1) == [2]


def test_whole_tile_rows_of_nodata_are_skipped_and_stay_nodata(tmp_path):
    data = noise((3, 150, 100))
    data[:, :90] = 0  # the first tile rows (64 px tiles, 48 px stride) hold no image at all
    image = write_image(tmp_path / "image.tif", data, nodata=0)
    result = predict_raster(image, make_model(tmp_path / "m.pt"), probability_path=tmp_path / "p.tif", tile_size_px=64)
    full = predict_raster(
        write_image(tmp_path / "full.tif", noise((3, 150, 100))),
        tmp_path / "m.pt",
        probability_path=tmp_path / "f.tif",
        tile_size_px=64,
    )
    probability = read(result.probability_path)
    assert np.all(probability[:90] == PROBABILITY_U8_NODATA) and np.all(probability[90:] < PROBABILITY_U8_NODATA)
    assert result.tile_count < full.tile_count


def test_other_input_types_give_the_same_prediction(tmp_path):
    """uint16 and float32 imagery holding the same numbers as a uint8 image predict the same."""
    model = make_model(tmp_path / "m.pt", normalization=FIXED)
    data = noise((3, 80, 90), seed=9)
    outputs = []
    for dtype in ("uint8", "uint16", "float32"):
        image = write_image(tmp_path / f"{dtype}.tif", data.astype(dtype))
        predict_raster(image, model, probability_path=tmp_path / f"p_{dtype}.tif", probability_dtype="float32")
        outputs.append(read(tmp_path / f"p_{dtype}.tif"))
    np.testing.assert_allclose(outputs[1], outputs[0], atol=1e-6)
    np.testing.assert_allclose(outputs[2], outputs[0], atol=1e-6)


def test_model_threshold_is_default_and_user_override_wins(tmp_path):
    image = write_image(tmp_path / "image.tif", noise((3, 64, 64)))
    low = predict_raster(
        image,
        make_model(tmp_path / "low.pt", threshold=0.2),
        mask_path=tmp_path / "low.tif",
        probability_path=tmp_path / "p.tif",
        probability_dtype="float32",
    )
    high = predict_raster(image, tmp_path / "low.pt", mask_path=tmp_path / "high.tif", threshold=0.8)
    probability = read(tmp_path / "p.tif")
    assert (low.threshold, high.threshold) == (0.2, 0.8)
    assert np.array_equal(read(tmp_path / "low.tif"), probability >= 0.2)
    assert np.array_equal(read(tmp_path / "high.tif"), probability >= 0.8)


def test_single_tile_matches_network_with_chosen_bands_and_fixed_normalisation(tmp_path):
    """A raster of exactly one tile must give sigmoid(net(normalised chosen bands)): the blend
    weights of a lone tile normalise to 1."""
    normalization = {"mode": "fixed", "mean": [10.0, 200.0], "std": [50.0, 20.0]}
    model_path = make_model(tmp_path / "model.pt", bands=(4, 2), normalization=normalization)
    data = noise((4, 64, 64), seed=3)
    image = write_image(tmp_path / "image.tif", data)
    # float32: "auto" is bfloat16 on CPUs with bfloat16 instructions, ~1e-2 from this reference
    predict_raster(
        image, model_path, probability_path=tmp_path / "p.tif", probability_dtype="float32", precision="float32"
    )
    loaded = load_model(model_path)
    with torch.no_grad():
        batch = normalize(torch.from_numpy(data[[3, 1]][None]), normalization["mean"], normalization["std"])
        expected = torch.sigmoid(loaded.net(batch))[0, 0].numpy()
    np.testing.assert_allclose(read(tmp_path / "p.tif"), expected, atol=1e-5)


def test_tiled_prediction_approaches_one_pass_over_the_whole_image(tmp_path):
    """The network is fully convolutional: on a small raster it can run once over the whole normalised
    image, with no tiles. Tiled prediction (64 px tiles, edge tiles shifted inside) is not equal to that
    pass: each output pixel of the U-Net sees 188 x 188 input pixels, more than a tile, so every tiled
    pixel feels the zero padding at its tile's border, not only those at seams. Blending keeps it close
    by leaving out each tile's border quarter of the overlap: measured here, the mean difference is
    0.00015 with the default quarter-tile overlap (2e-5 with half a tile, 0.016 with none; 0.0006 with
    the overlap all ramp, before the border quarter), against a probability standard deviation of 0.13
    and 0.14 between neighbouring pixels, so an output placed one pixel off fails by far."""
    model = make_model(tmp_path / "m.pt", normalization=FIXED, gain=400.0)
    data = noise((3, 160, 224), seed=2)  # sides multiples of 16, not of the 48 px stride
    # the corner on the ground's 16 px grid, the pooling grid of the tiles, as it is of the one pass
    image = write_image(tmp_path / "image.tif", data, origin=(1008.0, 2000.0))
    with torch.no_grad():
        batch = normalize(torch.from_numpy(data[None]), FIXED["mean"], FIXED["std"])
        whole = torch.sigmoid(load_model(model).net(batch))[0, 0].numpy()
    assert whole.std() > 0.1  # outputs vary enough for the comparison to mean something

    def difference(overlap_px: int | None) -> np.ndarray:
        predict_raster(
            image,
            model,
            probability_path=tmp_path / "p.tif",
            probability_dtype="float32",
            precision="float32",
            tile_size_px=64,
            overlap_px=overlap_px,
        )
        return np.abs(read(tmp_path / "p.tif") - whole)

    quarter, half, none = difference(None), difference(32), difference(0)
    assert quarter.mean() < 0.0004 and quarter.max() < 0.03
    assert half.mean() < quarter.mean() < none.mean()  # more overlap, closer to the one pass


@pytest.mark.parametrize("shape", [(3, 20, 33), (3, 1, 70), (3, 130, 17)])
def test_rasters_smaller_than_a_tile_or_odd_sized(tmp_path, shape):
    image = write_image(tmp_path / "image.tif", noise(shape))
    result = predict_raster(
        image, make_model(tmp_path / "m.pt"), probability_path=tmp_path / "p.tif", probability_dtype="float32"
    )
    probability = read(result.probability_path)
    assert probability.shape == shape[1:]
    assert np.all((probability >= 0) & (probability <= 1))


def test_tile_origins_sit_on_the_ground_grid_with_a_tile_on_each_edge():
    assert tile_starts(300, 64, 48) == (0, 48, 96, 144, 192, 236)
    starts = tile_starts(300, 64, 48, phase_px=77)
    assert (starts[0], starts[-1]) == (0, 300 - 64)
    assert all((start + 77) % 48 == 0 for start in starts[1:-1]) and len(starts) == 7
    assert max(b - a for a, b in zip(starts, starts[1:])) <= 48  # every pixel covered
    assert tile_starts(60, 64, 48, phase_px=5) == (0,)
    snapped = tile_starts(300, 64, 48, phase_px=77, multiple_px=16)
    assert all((start + 77) % 16 == 0 for start in snapped)  # every tile on the network's pooling grid
    assert -16 < snapped[0] <= 0 and 300 - 64 <= snapped[-1] < 300 - 64 + 16  # flush with the edges, on it
    for phase in range(0, 64, 3):  # a 6 px overlap, a stride off the 16 px grid: every pixel still in a tile
        starts = tile_starts(1000, 64, 58, phase_px=phase, multiple_px=16)
        assert starts[0] <= 0 and starts[-1] + 64 >= 1000 and max(b - a for a, b in zip(starts, starts[1:])) <= 64


@pytest.mark.parametrize("pixel_size", [1.0, 0.5])  # run as it is, and resampled to the model's 1 m
def test_a_clip_saved_as_its_own_file_predicts_its_pixels_as_the_whole_file(tmp_path, pixel_size):
    """A clip of an image saved as its own file, starting an odd (77, 45) px into it: the tiles are
    anchored to the ground, so away from the clip's edges (a tile) its pixels get the whole file's
    probabilities, and on average all over the clip nearly so. In float32: bfloat16 rounds a tile
    differently in another batch (6e-4 seen)."""
    model = make_model(tmp_path / "m.pt", normalization=FIXED, pixel_size=[1.0, 1.0])
    size, shift_x, shift_y = round(240 / pixel_size), 77, 45
    data = noise((3, size, size))
    origin = (1000.0, 2000.0)
    whole = write_image(tmp_path / "whole.tif", data, origin=origin, pixel=(pixel_size, pixel_size))
    clip = write_image(
        tmp_path / "clip.tif",
        data[:, shift_y:, shift_x:],
        origin=(origin[0] + shift_x * pixel_size, origin[1] - shift_y * pixel_size),
        pixel=(pixel_size, pixel_size),
    )
    for image, output in ((whole, "a.tif"), (clip, "b.tif")):
        result = predict_raster(
            image, model, probability_path=tmp_path / output, probability_dtype="float32", precision="float32"
        )
        assert result.resampled == (pixel_size != 1.0)
    difference = np.abs(read(tmp_path / "a.tif")[shift_y:, shift_x:] - read(tmp_path / "b.tif"))
    margin = round(64 / pixel_size)  # a tile of the processing grid, in the image's pixels
    # what is left is arithmetic: the same tiles batched with others (2e-5 seen)
    assert difference[margin:-margin, margin:-margin].max() < 1e-4
    assert difference.mean() < 0.005


@pytest.mark.skipif(not (SHARED_DATA / "kampala_1").is_dir(), reason="shared real scenes not available")
@pytest.mark.skipif(not STARTER_MODEL.is_file(), reason="the starter model is not installed")
def test_the_starter_model_predicts_a_clip_of_a_real_scene_as_the_scene(tmp_path):
    """The shipped starter model on a real scene and on a 700 px clip of it saved as its own file, an
    odd (137, 211) px in: away from the clip's edges its pixels get the scene's probabilities (0.0026
    on average). The per-image starter before it differed by 0.0054 there (README): the clip's
    statistics are not the scene's; and edge tiles flush with the clip's corner, off the network's
    pooling grid, made 0.0072."""
    scene = SHARED_DATA / "kampala_1" / "image.tif"
    clip_window = Window(137, 211, 700, 700)
    with rasterio.open(scene) as dataset:
        profile = {**dataset.profile, "width": 700, "height": 700, "transform": dataset.window_transform(clip_window)}
        with rasterio.open(tmp_path / "clip.tif", "w", **profile) as clip:
            clip.write(dataset.read(window=clip_window))
    for image, output in ((scene, "scene.tif"), (tmp_path / "clip.tif", "clip_probability.tif")):
        predict_raster(image, STARTER_MODEL, probability_path=tmp_path / output, probability_dtype="float32")
    with rasterio.open(tmp_path / "scene.tif") as whole:
        expected = whole.read(1, window=clip_window)
    difference = np.abs(expected - read(tmp_path / "clip_probability.tif"))
    margin = 256
    assert difference[margin:-margin, margin:-margin].mean() < 0.005


def test_no_grid_lines_at_the_tile_stride(tmp_path):
    """Column and row means of a prediction over stationary noise must not jump at tile borders."""
    model = make_model(tmp_path / "m.pt", normalization=FIXED)
    image = write_image(tmp_path / "image.tif", noise((3, 208, 208), seed=5))

    def step_ratio(overlap_px: int) -> float:
        predict_raster(
            image,
            model,
            probability_path=tmp_path / "p.tif",
            probability_dtype="float32",
            tile_size_px=64,
            overlap_px=overlap_px,
        )
        probability = read(tmp_path / "p.tif")
        with rasterio.open(image) as dataset:
            layout = plan_tiles(208, 208, 64, overlap_px, 16, ground_phase_px(dataset.transform))
        ratios = []
        for profile, starts in ((probability.mean(axis=0), layout.columns), (probability.mean(axis=1), layout.rows)):
            borders = sorted({start for start in starts[1:]} | {start + 64 for start in starts[:-1]})
            steps = np.abs(np.diff(profile))  # steps[i] is the jump between pixel i and i + 1
            at_border = np.array(borders) - 1
            elsewhere = np.setdiff1d(np.arange(len(steps)), at_border)
            ratios.append(steps[at_border].mean() / np.median(steps[elsewhere]))
        return max(ratios)

    assert step_ratio(16) < 3.0
    assert step_ratio(0) > 10.0  # control: butted tiles do show lines


@pytest.mark.parametrize("panel_width_px", [96, 40])
def test_column_panels_leave_no_seam(tmp_path, panel_width_px):
    """Column panels (96 px: borders in tile overlaps and centres; 40 px: narrower than a tile)
    give the one-panel result, nodata included: same tiles, weights and normalisation."""
    model = make_model(tmp_path / "m.pt", normalization=FIXED)
    data = noise((3, 150, 290), seed=4)
    data[:, 100:, 40:250] = 0  # below row 100 the tiles of whole panels are all nodata and skipped
    image = write_image(tmp_path / "image.tif", data, nodata=0)
    outputs = {}
    for name, width in (("one", None), ("many", panel_width_px)):
        outputs[name] = predict_raster(
            image,
            model,
            probability_path=tmp_path / f"p_{name}.tif",
            mask_path=tmp_path / f"m_{name}.tif",
            probability_dtype="float32",
            panel_width_px=width,
        )
    assert outputs["many"].tile_count > outputs["one"].tile_count  # tiles straddling a border run twice
    one, many = read(tmp_path / "p_one.tif"), read(tmp_path / "p_many.tif")
    assert np.array_equal(many == PROBABILITY_F32_NODATA, (data == 0).any(axis=0))
    np.testing.assert_allclose(many, one, atol=1e-5)
    assert np.array_equal(read(tmp_path / "m_many.tif"), read(tmp_path / "m_one.tif"))


def test_column_panels_on_the_resampled_path(tmp_path):
    model = make_model(tmp_path / "m.pt", pixel_size=[1.0, 1.0], normalization=FIXED)
    image = write_image(
        tmp_path / "image.tif", noise((3, 120, 300)), pixel=(0.5, 0.5), crs="EPSG:32633", origin=(500000.0, 100.0)
    )
    for name, width in (("one", None), ("many", 48)):
        result = predict_raster(
            image, model, probability_path=tmp_path / f"p_{name}.tif", probability_dtype="float32", panel_width_px=width
        )
        assert result.resampled
    np.testing.assert_allclose(read(tmp_path / "p_many.tif"), read(tmp_path / "p_one.tif"), atol=1e-5)


def test_test_time_augmentation_is_flip_invariant(tmp_path):
    model = make_model(tmp_path / "m.pt")
    data = noise((3, 64, 64), seed=7)
    image = write_image(tmp_path / "image.tif", data)
    flipped = write_image(tmp_path / "flipped.tif", np.ascontiguousarray(data[:, :, ::-1]))

    def flip_difference(tta: bool) -> float:
        predict_raster(image, model, probability_path=tmp_path / "a.tif", probability_dtype="float32", tta=tta)
        predict_raster(flipped, model, probability_path=tmp_path / "b.tif", probability_dtype="float32", tta=tta)
        return float(np.abs(read(tmp_path / "a.tif") - read(tmp_path / "b.tif")[:, ::-1]).max())

    assert flip_difference(True) < 1e-5
    assert flip_difference(False) > 1e-3


def test_prediction_runs_at_the_model_pixel_size_and_writes_on_the_input_grid(tmp_path):
    model = make_model(tmp_path / "m.pt", pixel_size=[1.0, 1.0], crs_units="metre")
    image = write_image(
        tmp_path / "image.tif", noise((3, 200, 160)), pixel=(0.5, 0.5), crs="EPSG:32633", origin=(500000.0, 100.0)
    )
    result = predict_raster(image, model, probability_path=tmp_path / "p.tif", mask_path=tmp_path / "mask.tif")
    native = predict_raster(image, model, probability_path=tmp_path / "n.tif", processing_pixel_size_map_units="native")
    assert result.resampled and not native.resampled
    # 1 m on the ground is 0.9996 UTM metres on the central meridian (its scale factor)
    assert result.processing_pixel_size_map_units == pytest.approx((0.9996, 0.9996))
    assert result.tile_count < native.tile_count
    with rasterio.open(image) as source, rasterio.open(result.probability_path) as output:
        assert (output.transform, output.shape) == (source.transform, source.shape)
    assert set(np.unique(read(result.mask_path))) <= {0, 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.tif", "m.pt", "mask.tif", "n.tif", "p.tif"]


@pytest.mark.parametrize(
    "image_px, processed_px",
    [(2.0, 2.0), (3.9, 3.9), (6.0, 4 * 0.9996)],  # 1 m on the ground is 0.9996 UTM metres here
)
def test_coarser_imagery_is_not_enlarged_to_the_model_pixel_size(tmp_path, image_px, processed_px):
    """A 1 m model on 2 m and 3.9 m imagery runs on the image's own pixels (enlarging coarse imagery to the
    model's pixels scored lower on a real scene); 6 m imagery, more than four times the model's pixel,
    is enlarged to four times it. The outputs are on the image's grid either way."""
    model = make_model(tmp_path / "m.pt", pixel_size=[1.0, 1.0], crs_units="metre")
    image = write_image(
        tmp_path / "image.tif",
        noise((3, 40, 48)),
        pixel=(image_px, image_px),
        crs="EPSG:32633",
        origin=(500000.0, 100.0),
    )
    result = predict_raster(image, model, probability_path=tmp_path / "p.tif")
    assert result.resampled == (processed_px != image_px)
    assert result.processing_pixel_size_map_units == pytest.approx((processed_px, processed_px), rel=1e-3)
    assert read(result.probability_path).shape == (40, 48)


def test_geographic_input_gets_the_model_metres_in_degrees(tmp_path):
    model = make_model(tmp_path / "m.pt", pixel_size=[0.3, 0.3], crs_units="metre")
    degrees = 0.15 / 111_320  # about 0.15 m at the equator
    image = write_image(
        tmp_path / "image.tif", noise((3, 96, 96)), crs="EPSG:4326", origin=(30.0, 0.001), pixel=(degrees, degrees)
    )
    result = predict_raster(image, model, probability_path=tmp_path / "p.tif")
    assert result.resampled
    assert result.processing_pixel_size_map_units[0] == pytest.approx(2 * degrees, rel=0.02)
    assert read(result.probability_path).shape == (96, 96)


def test_cancel_leaves_no_output_and_progress_reaches_100(tmp_path):
    image = write_image(tmp_path / "image.tif", noise((3, 150, 150)))
    model = make_model(tmp_path / "m.pt")
    calls = []
    with pytest.raises(Cancelled, match="Cancelled by the user"):
        predict_raster(
            image,
            model,
            probability_path=tmp_path / "p.tif",
            mask_path=tmp_path / "mask.tif",
            batch_size=1,
            cancelled=lambda: len(calls) > 0,
            progress=lambda p, m: calls.append(p),
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.tif", "m.pt"]
    reported = []
    predict_raster(image, model, mask_path=tmp_path / "mask.tif", progress=lambda p, m: reported.append(p))
    assert reported == sorted(reported) and reported[-1] == 100.0


def test_bad_inputs_raise_input_errors_that_name_the_fix(tmp_path):
    model = make_model(tmp_path / "m.pt")
    one_band = write_image(tmp_path / "gray.tif", noise((1, 64, 64)))
    image = write_image(tmp_path / "image.tif", noise((3, 64, 64)))
    with pytest.raises(InputError, match="band"):
        predict_raster(one_band, model, mask_path=tmp_path / "mask.tif")
    with pytest.raises(InputError, match="at least one output"):
        predict_raster(image, model)
    with pytest.raises(InputError, match="multiple of 16"):
        predict_raster(image, model, mask_path=tmp_path / "mask.tif", tile_size_px=50)
    with pytest.raises(InputError, match="threshold"):
        predict_raster(image, model, mask_path=tmp_path / "mask.tif", threshold=1.5)
    with pytest.raises(InputError, match="does not exist"):
        predict_raster(tmp_path / "missing.tif", model, mask_path=tmp_path / "mask.tif")
    assert not (tmp_path / "mask.tif").exists()


def test_predict_mask_polygons_slice(tmp_path):
    """End to end: the polygons of the predicted mask, burnt back onto the grid, are the mask."""
    image = write_image(
        tmp_path / "image.tif",
        noise((3, 120, 140), seed=11),
        crs="EPSG:32633",
        origin=(500000.0, 100.0),
        pixel=(0.5, 0.5),
    )
    result = predict_raster(
        image, make_model(tmp_path / "m.pt"), probability_path=tmp_path / "p.tif", mask_path=tmp_path / "mask.tif"
    )
    mask = read(result.mask_path)
    features = list(polygons_from_mask(result.mask_path, probability_path=result.probability_path, window_rows_px=32))
    assert features and [attributes["id"] for _, attributes in features] == list(range(1, len(features) + 1))
    with rasterio.open(result.mask_path) as dataset:
        burnt = rasterize([geometry for geometry, _ in features], out_shape=dataset.shape, transform=dataset.transform)
        crs_wkt = dataset.crs.to_wkt()
    assert np.array_equal(burnt, mask == 1)
    probability = read(result.probability_path) / 254
    assert all(attributes["mean_probability"] >= 0.5 - 1 / 254 for _, attributes in features)
    # on UTM's central meridian a map metre is 1 / 0.9996 ground metres
    assert sum(attributes["area_m2"] for _, attributes in features) == pytest.approx(
        (mask == 1).sum() * 0.25 / 0.9996**2,
        abs=0.005 * len(features),  # each area rounded to 0.01 m²
    )
    assert probability[mask == 1].min() >= 0.5 - 1 / 254
    assert write_polygons(features, tmp_path / "buildings.gpkg", crs_wkt) == len(features)


@pytest.mark.skipif(not (SHARED_DATA / "banepa_1" / "image.tif").exists(), reason="shared real scenes absent")
def test_real_scene_with_internal_mask_resampled_to_the_model_pixel_size(tmp_path):
    image = SHARED_DATA / "banepa_1" / "image.tif"  # EPSG:3857, ~0.15 m, internal nodata mask
    model = make_model(tmp_path / "m.pt", pixel_size=[0.3, 0.3], crs_units="metre")
    result = predict_raster(image, model, probability_path=tmp_path / "p.tif", mask_path=tmp_path / "mask.tif")
    assert result.resampled
    with rasterio.open(image) as source, rasterio.open(result.mask_path) as output:
        assert (output.crs, output.transform, output.shape) == (source.crs, source.transform, source.shape)
        nodata = source.dataset_mask() == 0
    mask = read(result.mask_path)
    assert np.array_equal(mask == MASK_NODATA, nodata)
    assert set(np.unique(mask[~nodata])) <= {0, 1}
