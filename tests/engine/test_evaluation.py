"""The evaluation engine against independent numpy computations on small generated rasters."""

import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
import shapely.affinity
from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import Resampling, reproject, transform_bounds

from model.errors import Cancelled, InputError
from model.evaluation import comparison
from model.evaluation.evaluate import evaluate
from model.io.outputs import OUTPUT_BLOCK_PX, create_geotiff
from model.io.rasters import Grid, LabelSource
from tests.engine.scenes import SHARED_DATA, write_geotiff

CRS_UTM = CRS.from_epsg(32636)
ORIGIN = Affine(0.5, 0.0, 500_000.0, 0.0, -0.5, 9_000_000.0)  # 0.5 m pixels


def write_raster(
    path: Path,
    array: np.ndarray,
    *,
    transform: Affine = ORIGIN,
    crs: CRS | None = CRS_UTM,
    nodata=None,
    kind: str | None = None,
    **creation_options,
) -> Path:
    return write_geotiff(path, array, crs=crs, transform=transform, nodata=nodata, kind=kind, **creation_options)


def write_polygons(path: Path, geometries, crs: CRS = CRS_UTM) -> Path:
    from osgeo import ogr, osr

    driver = ogr.GetDriverByName("GPKG")
    source = driver.CreateDataSource(str(path))
    reference = osr.SpatialReference()
    reference.ImportFromWkt(crs.to_wkt())
    layer = source.CreateLayer("buildings", reference, ogr.wkbMultiPolygon)
    for geometry in geometries:
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetGeometry(ogr.CreateGeometryFromWkb(shapely.to_wkb(geometry)))
        layer.CreateFeature(feature)
    source = None  # closing flushes the file
    return path


def pixel_box(col0: int, row0: int, col1: int, row1: int, transform: Affine = ORIGIN) -> shapely.Geometry:
    """The map-coordinate rectangle covering pixel columns col0..col1-1 and rows row0..row1-1."""
    (left, top), (right, bottom) = transform * (col0, row0), transform * (col1, row1)
    return shapely.box(left, bottom, right, top)


def expected_matrix(predicted: np.ndarray, truth: np.ndarray, valid: np.ndarray) -> dict[str, int]:
    return {
        "tn": int(np.sum(~predicted & ~truth & valid)),
        "fp": int(np.sum(predicted & ~truth & valid)),
        "fn": int(np.sum(~predicted & truth & valid)),
        "tp": int(np.sum(predicted & truth & valid)),
    }


@pytest.fixture
def random_pair(tmp_path):
    """A tagged mask with nodata and a 5-class label raster with nodata, on the same 300 x 217 grid."""
    rng = np.random.default_rng(3)
    mask = (rng.random((300, 217)) < 0.3).astype(np.uint8)
    mask[rng.random(mask.shape) < 0.05] = 255
    classes = rng.integers(0, 5, mask.shape).astype(np.uint8)
    classes[rng.random(mask.shape) < 0.05] = 9
    return (
        write_raster(tmp_path / "mask.tif", mask, nodata=255, kind="mask"),
        write_raster(tmp_path / "classes.tif", classes, nodata=9),
        mask,
        classes,
    )


def test_random_rasters_score_exactly_like_numpy(random_pair, tmp_path, monkeypatch):
    mask_path, classes_path, mask, classes = random_pair
    monkeypatch.setattr(comparison, "WINDOW_PIXELS", 217 * 64)  # several windows, one partial
    result = evaluate(
        mask_path, classes_path, [2, 4], error_map_path=tmp_path / "out" / "errors.tif", object_scores=False
    )
    truth = (classes == 2) | (classes == 4)
    predicted_valid, label_valid = mask != 255, classes != 9
    assert result.matrix.counts() == expected_matrix(mask == 1, truth, predicted_valid & label_valid)
    assert result.excluded_px == {
        "outside_aoi": 0,
        "prediction_nodata": int(np.sum(~predicted_valid)),
        "label_nodata": int(np.sum(predicted_valid & ~label_valid)),
    }
    assert result.scores()["iou"] == result.matrix.iou and result.objects is None
    # 0.5 m map pixels on UTM's central meridian, where the projection scales the ground by 0.9996
    assert result.pixel_area == pytest.approx(0.25 / 0.9996**2, rel=1e-6) and result.area_unit == "m²"

    expected_codes = np.where(predicted_valid & label_valid, 2 * truth + (mask == 1), 255)
    with rasterio.open(tmp_path / "out" / "errors.tif") as error_map:
        assert np.array_equal(error_map.read(1), expected_codes)
        assert error_map.tags()["UNET_BUILDINGS_KIND"] == "error_map"
        assert error_map.nodata == 255 and error_map.compression.name == "deflate"
        assert error_map.transform == ORIGIN
    assert os.listdir(tmp_path / "out") == ["errors.tif"]  # no temporary file left


def test_error_maps_are_written_with_the_predictions_geotiff_profile(tmp_path):
    mask = np.zeros((300, 520), np.uint8)  # more than one tile each way
    mask[100:150, 200:260] = 1
    mask_path = write_raster(tmp_path / "mask.tif", mask, kind="mask")
    evaluate(mask_path, mask_path, [1], error_map_path=tmp_path / "errors.tif", object_scores=False)
    with rasterio.open(mask_path) as dataset:
        create_geotiff(tmp_path / "prediction.tif", Grid.of(dataset), "uint8", 255, "mask").close()
    with rasterio.open(tmp_path / "errors.tif") as error_map, rasterio.open(tmp_path / "prediction.tif") as prediction:
        assert error_map.block_shapes == [(OUTPUT_BLOCK_PX, OUTPUT_BLOCK_PX)]
        assert error_map.tags(ns="IMAGE_STRUCTURE") == prediction.tags(ns="IMAGE_STRUCTURE")  # compression
        assert error_map.profile == prediction.profile


def test_probability_rasters_use_the_threshold(tmp_path):
    rng = np.random.default_rng(5)
    probability = rng.random((64, 80)).astype(np.float32)
    classes = rng.integers(0, 3, probability.shape).astype(np.uint8)
    labels = write_raster(tmp_path / "labels.tif", classes)
    coded = np.round(probability * 254).astype(np.uint8)
    coded[:5] = 255
    u8 = write_raster(tmp_path / "p8.tif", coded, nodata=255, kind="probability")
    valid = np.ones(coded.shape, bool)
    valid[:5] = False
    for threshold, expected_threshold in ((None, 0.5), (0.3, 0.3)):
        result = evaluate(u8, labels, [2], threshold=threshold, object_scores=False)
        assert result.threshold == expected_threshold
        assert result.matrix.counts() == expected_matrix(coded / 254 >= expected_threshold, classes == 2, valid)
    probability[:, :3] = -1.0
    f32 = write_raster(tmp_path / "p32.tif", probability, nodata=-1.0, kind="probability")
    result = evaluate(f32, labels, [2], threshold=0.7, object_scores=False)
    assert result.matrix.counts() == expected_matrix(probability >= 0.7, classes == 2, probability >= 0)
    with pytest.raises(InputError, match="between 0 and 1"):
        evaluate(u8, labels, [2], threshold=1.5)


def test_untagged_rasters_follow_the_documented_rule(tmp_path):
    classes = np.zeros((32, 32), np.uint8)
    classes[8:24, 8:24] = 2
    labels = write_raster(tmp_path / "labels.tif", classes)
    binary = np.zeros((32, 32), np.uint8)
    binary[8:24, 10:26] = 1
    result = evaluate(write_raster(tmp_path / "binary.tif", binary), labels, [2], object_scores=False)
    assert result.inputs["prediction"]["kind"] == "mask" and result.threshold is None
    assert result.matrix.tp == 16 * 14 and result.matrix.fp == 16 * 2
    scores = (binary * 200).astype(np.uint8)  # 0-255 scores: not a mask
    untagged = write_raster(tmp_path / "scores.tif", scores)
    with pytest.raises(InputError, match="give a threshold"):
        evaluate(untagged, labels, [2])
    thresholded = evaluate(untagged, labels, [2], threshold=128, object_scores=False)
    assert thresholded.inputs["prediction"]["kind"] == "thresholded raster"
    assert thresholded.matrix == result.matrix
    rgb = write_raster(tmp_path / "rgb.tif", np.stack([binary] * 3))
    with pytest.raises(InputError, match="3 bands"):
        evaluate(rgb, labels, [2])


def test_an_error_map_is_not_taken_for_a_prediction(random_pair, tmp_path):
    mask_path, classes_path, _, _ = random_pair
    evaluate(mask_path, classes_path, error_map_path=tmp_path / "errors.tif", object_scores=False)
    with pytest.raises(InputError, match="error map"):
        evaluate(tmp_path / "errors.tif", classes_path)


def test_labels_in_another_crs_and_resolution_score_like_a_prewarped_copy(tmp_path):
    rng = np.random.default_rng(11)
    coarse = np.kron(rng.integers(0, 4, (30, 30)), np.ones((4, 4))).astype(np.uint8)  # blocks of 4 pixels
    # labels: 1 m pixels in Web Mercator, shifted so that their extent only partly covers the prediction
    mercator = CRS.from_epsg(3857)
    left, bottom, right, top = rasterio.warp.transform_bounds(CRS_UTM, mercator, *pixel_box(0, 0, 100, 100).bounds)
    label_transform = Affine(1.0, 0.0, left + 20.0, 0.0, -1.0, top)
    labels = write_raster(tmp_path / "labels.tif", coarse, transform=label_transform, crs=mercator, nodata=255)
    predicted = (rng.random((100, 100)) < 0.4).astype(np.uint8)
    prediction = write_raster(tmp_path / "mask.tif", predicted, nodata=255, kind="mask")

    warped = np.full((100, 100), 255, np.uint8)
    reproject(
        coarse,
        warped,
        src_transform=label_transform,
        src_crs=mercator,
        src_nodata=255,
        dst_transform=ORIGIN,
        dst_crs=CRS_UTM,
        dst_nodata=255,
        resampling=Resampling.nearest,
    )
    prewarped = write_raster(tmp_path / "prewarped.tif", warped, nodata=255)

    aligned = evaluate(prediction, labels, [2], object_scores=False)
    reference = evaluate(prediction, prewarped, [2], object_scores=False)
    assert reference.matrix.counts() == expected_matrix(predicted == 1, warped == 2, warped != 255)
    # nearest resampling may pick the neighbouring label pixel where a target pixel centre falls on a
    # boundary; allow a few boundary pixels out of the ~7,000 scored
    assert aligned.matrix.total == pytest.approx(reference.matrix.total, abs=100)
    for name, count in aligned.matrix.counts().items():
        assert count == pytest.approx(reference.matrix.counts()[name], abs=100), name
    assert aligned.excluded_px["label_nodata"] > 2000  # the part the labels do not cover
    assert 0.2 < aligned.extent_fraction_compared["labels"] < 1.0
    assert aligned.extent_fraction_compared["prediction"] == 1.0


def test_no_overlap_and_nothing_comparable_are_clear_errors(random_pair, tmp_path):
    mask_path, _, mask, classes = random_pair
    far = write_raster(tmp_path / "far.tif", classes, transform=ORIGIN * Affine.translation(10_000, 0), nodata=9)
    with pytest.raises(InputError, match="does not overlap"):
        evaluate(mask_path, far)
    empty = write_raster(tmp_path / "empty.tif", np.full(mask.shape, 9, np.uint8), nodata=9)
    with pytest.raises(InputError, match="No pixel"):
        evaluate(mask_path, empty, error_map_path=tmp_path / "errors.tif")
    assert not list(tmp_path.glob("*errors*"))
    with pytest.raises(InputError, match="does not exist"):
        evaluate(tmp_path / "missing.tif", empty)


def test_polygon_labels_burn_each_window_as_all_polygons_would(tmp_path):
    """Each window rasterizes only the polygons its spatial index finds: the same mask, pixel for pixel, as
    rasterizing every polygon, for windows inside, across and beyond the grid's edges."""
    from rasterio.features import rasterize

    rng = np.random.default_rng(5)
    shapes = []
    for _ in range(300):  # squares, rotated rectangles and thin slivers, some over the grid's edge
        col, row = rng.uniform(-20, 420, 2)
        box = pixel_box(int(col), int(row), int(col + rng.uniform(1, 30)), int(row + rng.uniform(0.3, 30)))
        shapes.append(shapely.affinity.rotate(box, rng.uniform(0, 90)))
    path = write_polygons(tmp_path / "many.gpkg", shapes)
    grid = Grid(CRS_UTM.to_wkt(), ORIGIN, 400, 400)
    source = LabelSource(path, [1], grid)
    everything = [shapely.geometry.mapping(shape) for shape in shapes]
    for _ in range(60):
        col, row = (int(value) for value in rng.integers(-100, 400, 2))
        window = rasterio.windows.Window(col, row, int(rng.integers(1, 200)), int(rng.integers(1, 200)))
        sub = grid.window_grid(window)
        expected = rasterize(
            ((shape, 1) for shape in everything), out_shape=(sub.height, sub.width), transform=sub.transform
        )
        np.testing.assert_array_equal(source.read(window), expected)


def test_a_layer_beside_the_grid_is_refused_naming_both_in_any_crs(random_pair, tmp_path):
    mask_path, _, _, classes = random_pair
    far = write_raster(tmp_path / "far.tif", classes, transform=ORIGIN * Affine.translation(10_000, 0), nodata=9)
    with pytest.raises(InputError, match=re.escape(f"The label layer '{far}' does not overlap '{mask_path}'")):
        evaluate(mask_path, far)
    with rasterio.open(mask_path) as dataset:
        grid = Grid.of(dataset)
    with pytest.raises(InputError, match=re.escape(f"The label layer '{far}' does not overlap the image")):
        LabelSource(far, [1], grid)  # as training reads labels
    # label rasters in degrees: one over the grid's south-west corner is used, one a degree east is refused
    west, south, east, _ = transform_bounds(CRS_UTM, "EPSG:4326", *grid.bounds)
    size = (east - west) / 10
    for shift, overlaps in ((0.0, True), (1.0, False)):
        degrees = write_raster(
            tmp_path / f"degrees_{shift}.tif",
            classes[:10, :10],
            transform=Affine(size, 0, west + shift, 0, -size, south + size * 5),
            crs=CRS.from_epsg(4326),
        )
        if overlaps:
            assert evaluate(mask_path, degrees, [2], object_scores=False).matrix.total > 0
        else:
            with pytest.raises(InputError, match="does not overlap"):
                evaluate(mask_path, degrees, [2], object_scores=False)


def test_area_of_interest_limits_scoring(random_pair, tmp_path):
    mask_path, classes_path, mask, classes = random_pair
    aoi = write_polygons(tmp_path / "aoi.gpkg", [pixel_box(0, 0, 217, 100)])
    result = evaluate(mask_path, classes_path, [2], aoi=aoi, object_scores=False)
    inside = np.zeros(mask.shape, bool)
    inside[:100] = True
    assert result.matrix.counts() == expected_matrix(mask == 1, classes == 2, inside & (mask != 255) & (classes != 9))
    assert result.excluded_px["outside_aoi"] == 200 * 217
    assert result.excluded_px["prediction_nodata"] == int(np.sum(inside & (mask == 255)))
    by_geometry = evaluate(mask_path, classes_path, [2], aoi=pixel_box(0, 0, 217, 100), object_scores=False)
    assert by_geometry.matrix == result.matrix


def test_polygon_labels_and_polygon_predictions(tmp_path):
    predicted = np.zeros((40, 60), np.uint8)
    predicted[5:15, 5:25] = 1  # a building found exactly
    predicted[20:30, 30:40] = 1  # a false building
    mask = write_raster(tmp_path / "mask.tif", predicted, nodata=255, kind="mask")
    truth_boxes = [pixel_box(5, 5, 25, 15), pixel_box(45, 25, 55, 35)]  # the second is missed
    labels = write_polygons(tmp_path / "labels.gpkg", truth_boxes)

    raster_vs_polygons = evaluate(mask, labels)
    truth = np.zeros_like(predicted, bool)
    truth[5:15, 5:25] = truth[25:35, 45:55] = True
    assert raster_vs_polygons.matrix.counts() == expected_matrix(predicted == 1, truth, np.ones_like(truth))
    objects = raster_vs_polygons.objects
    assert (objects.predicted, objects.true, objects.matched) == (2, 2, 1)

    # the prediction as polygons is rasterized onto the label raster's grid
    label_raster = write_raster(tmp_path / "labels.tif", truth.astype(np.uint8))
    prediction_polygons = write_polygons(
        tmp_path / "prediction.gpkg", [pixel_box(5, 5, 25, 15), pixel_box(30, 20, 40, 30)]
    )
    polygons_vs_raster = evaluate(prediction_polygons, label_raster, [1])
    assert polygons_vs_raster.inputs["prediction"]["kind"] == "polygons"
    assert polygons_vs_raster.matrix == raster_vs_polygons.matrix
    assert polygons_vs_raster.objects.matched == 1

    with pytest.raises(InputError, match="pixel size"):
        evaluate(prediction_polygons, labels)
    both = evaluate(prediction_polygons, labels, pixel_size_map_units=0.25, object_scores=False)
    # the grid covers the labels' extent (columns 5..55, rows 5..35 of the 0.5 m grid) at 0.25 m
    assert both.matrix.total == (50 * 2) * (30 * 2)
    assert both.matrix.tp == 200 * 4 and both.matrix.fn == 100 * 4 and both.matrix.fp == 100 * 4


def test_objects_cut_by_windows_are_joined(tmp_path, monkeypatch):
    # windows of 16 rows x 24 columns: edges at rows 16, 32, 48 and columns 24, 48
    monkeypatch.setattr(comparison, "WINDOW_PIXELS", 24 * 16)
    monkeypatch.setattr(comparison, "MAX_WINDOW_WIDTH_PX", 24)
    predicted = np.zeros((64, 64), np.uint8)
    predicted[10:40, 18:28] = 1  # cut into six pieces
    predicted[10:40, 30:34] = 1
    predicted[44:54, 44:54] = 1  # cut into four
    truth = np.zeros_like(predicted)
    truth[10:40, 18:28] = 1
    truth[12:40, 30:34] = 1  # IoU 28/30 with the second prediction
    truth[50:60, 4:14] = 1  # no overlap with the third
    tiles = dict(tiled=True, blockxsize=16, blockysize=16)
    mask = write_raster(tmp_path / "mask.tif", predicted, kind="mask", **tiles)
    labels = write_raster(tmp_path / "labels.tif", truth, **tiles)
    with rasterio.open(mask) as dataset:
        assert len(list(comparison.comparison_windows(comparison.Grid.of(dataset), 16))) == 12
    result = evaluate(mask, labels, [1])
    assert (result.objects.predicted, result.objects.true, result.objects.matched) == (3, 3, 2)
    assert result.objects.mean_matched_iou == pytest.approx((1 + 28 / 30) / 2)
    small = evaluate(mask, labels, [1], min_object_area_px=200)
    assert (small.objects.predicted, small.objects.true) == (1, 1)
    strict = evaluate(mask, labels, [1], object_iou_threshold=0.95)
    assert strict.objects.matched == 1


def test_areas_are_ground_square_metres_in_web_mercator_too(tmp_path):
    """A Web Mercator "metre" at 50 N covers cos(50°) = 0.64 ground metres: areas labelled m² must be
    ground areas, not square map units (1.28 times too large at Banepa's 27.6 N, 2.4 at 50 N)."""
    classes = np.zeros((20, 20), np.uint8)
    classes[5:10, 5:10] = 2
    north_50 = Affine(0.5, 0.0, 1_000_000.0, 0.0, -0.5, 6_446_276.0)  # y of 50 N in EPSG:3857
    mercator = CRS.from_epsg(3857)
    labels = write_raster(tmp_path / "labels.tif", classes, transform=north_50, crs=mercator)
    nothing = np.zeros((20, 20), np.uint8)
    mask = write_raster(tmp_path / "mask.tif", nothing, kind="mask", transform=north_50, crs=mercator)
    result = evaluate(mask, labels, [2])
    # a sphere's cos² is within 1 % of the ellipsoid's scale
    assert result.pixel_area == pytest.approx(0.25 * math.cos(math.radians(50)) ** 2, rel=0.01)
    assert result.to_dict()["confusion_matrix"]["area"]["fn"] == pytest.approx(25 * result.pixel_area)
    (missed,) = result.missed_objects
    assert result.ground_area(missed) == pytest.approx(25 * result.pixel_area)


def test_reports_hold_the_numbers_and_escape_text(tmp_path):
    classes = np.zeros((20, 20), np.uint8)
    classes[5:10, 5:10] = 2
    odd_name = tmp_path / "labels <b>&amp.tif"
    labels = write_raster(odd_name, classes)
    mask = write_raster(tmp_path / "mask.tif", np.zeros((20, 20), np.uint8), kind="mask")  # finds nothing
    result = evaluate(
        mask, labels, [2], report_html_path=tmp_path / "report.html", report_json_path=tmp_path / "report.json"
    )
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["confusion_matrix"]["pixels"] == {"tn": 375, "fp": 0, "fn": 25, "tp": 0}
    assert data["confusion_matrix"]["area"]["fn"] == pytest.approx(25 * 0.25 / 0.9996**2, rel=1e-6)
    assert data["pixel_scores"]["precision"] is None  # undefined, not NaN (invalid JSON) and not 0
    assert data["object_scores"]["true_objects"] == 1
    assert data == json.loads(json.dumps(result.to_dict()))  # the same numbers as the returned result
    page = (tmp_path / "report.html").read_text()
    assert "labels &lt;b&gt;&amp;amp.tif" in page and "<b>&amp" not in page
    for text in (
        "True non-building",
        "Predicted building",
        "TN 375",
        "Building recall (producer&#x27;s accuracy)",
        "Cohen&#x27;s kappa",
        "Background IoU",
        "Mean IoU",
        "0.9375",
    ):
        assert text in page, text


def test_cancel_leaves_no_output_and_progress_reaches_100(random_pair, tmp_path, monkeypatch):
    mask_path, classes_path, _, _ = random_pair
    monkeypatch.setattr(comparison, "WINDOW_PIXELS", 217 * 16)
    calls = []
    with pytest.raises(Cancelled, match="Cancelled by the user"):
        evaluate(
            mask_path,
            classes_path,
            error_map_path=tmp_path / "out" / "errors.tif",
            cancelled=lambda: len(calls) > 3,
            progress=lambda percent, message: calls.append(percent),
        )
    assert os.listdir(tmp_path / "out") == []
    percents = []
    evaluate(mask_path, classes_path, progress=lambda percent, message: percents.append(percent))
    assert percents == sorted(percents) and percents[-1] == 100.0


@pytest.mark.skipif(not (SHARED_DATA / "banepa_1").is_dir(), reason="shared real scenes not available")
def test_real_scene_rasterized_labels_agree_with_their_polygons():
    scene = SHARED_DATA / "banepa_1"
    # labels.tif is buildings.geojson rasterized on the image grid: the two must agree almost everywhere
    result = evaluate(scene / "labels.tif", scene / "buildings.geojson", object_scores=True)
    assert result.inputs["prediction"]["kind"] == "mask"
    assert result.matrix.iou > 0.95 and result.matrix.kappa > 0.95
    assert result.objects.f1 > 0.9
