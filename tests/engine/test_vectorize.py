"""Mask -> polygons: buildings cut by processing windows merged back, cleaning options,
regularisation, attributes, and the QGIS-free writer."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
import shapely.affinity
from rasterio.features import rasterize
from rasterio.transform import from_origin
from rasterio.windows import Window

from model.errors import Cancelled, InputError
from model.io.rasters import MASK_NODATA, raster_windows
from model.io.vector_io import write_polygons
from model.vectors.polygonize import RegionStream
from model.vectors.vectorize import polygons_from_mask, regularize_polygon
from tests.engine.scenes import write_geotiff

PIXEL_M = 0.5
TRANSFORM = from_origin(500000.0, 100.0, PIXEL_M, PIXEL_M)
CRS = "EPSG:32633"
# TRANSFORM lies on UTM's central meridian, where the projection scales the ground by 0.9996
GROUND_M_PER_MAP_M = 1 / 0.9996


def write_raster(
    path: Path, data: np.ndarray, *, nodata=MASK_NODATA, kind="mask", crs=CRS, transform=TRANSFORM
) -> Path:
    return write_geotiff(path, data, crs=crs, transform=transform, nodata=nodata, kind=kind)


def shapes_mask() -> np.ndarray:
    mask = np.zeros((40, 50), np.uint8)
    mask[5:25, 5:15] = 1  # a block crossing row borders 8, 16, 24
    mask[10:12, 30:45] = 1  # a thin one inside a band
    mask[14:16, 20:28] = 1  # an arch: the top bar joins two legs that reach the bottom
    mask[14:40, 20:22] = 1
    mask[14:40, 26:28] = 1
    mask[28:30, 32:48] = 1  # a U: two legs meet at the bottom bar only
    mask[20:30, 32:34] = 1
    mask[20:30, 46:48] = 1
    mask[0:3, 47:50] = MASK_NODATA  # nodata is never a building
    return mask


def polygons(path: Path, **options) -> list[tuple[shapely.Geometry, dict]]:
    return list(polygons_from_mask(path, **options))


@pytest.mark.parametrize("window_rows_px", [1, 7, 16, 1000])
def test_buildings_cut_by_windows_come_out_whole(tmp_path, window_rows_px):
    mask = shapes_mask()
    path = write_raster(tmp_path / "mask.tif", mask)
    features = polygons(path, window_rows_px=window_rows_px)
    assert len(features) == 4  # block, thin, arch, U: each exactly one polygon whatever the windows
    assert all(isinstance(geometry, shapely.Polygon) and geometry.is_valid for geometry, _ in features)
    assert sorted(round(a["area_m2"] / PIXEL_M**2) for _, a in features) == [30, 64, 112, 200]
    burnt = rasterize([geometry for geometry, _ in features], out_shape=mask.shape, transform=TRANSFORM)
    assert np.array_equal(burnt, mask == 1)
    assert [a["id"] for _, a in features] == [1, 2, 3, 4]


def test_region_stream_joins_windows_cut_into_columns_and_sums_values():
    # the polygonizer shared with object scores, which also cut bands into columns
    building = shapes_mask() == 1
    height, width = building.shape
    values = np.ma.masked_array(np.arange(building.size, dtype=np.float64).reshape(building.shape))
    values[12] = np.ma.masked  # not counted
    stream = RegionStream(width, height)
    regions = []
    for window in raster_windows(width, height, 7, 16):
        regions += stream.add(building[window.toslices()], window, values[window.toslices()])
    assert len(regions) == 4
    burnt = [rasterize([region.geometry], out_shape=building.shape).astype(bool) for region in regions]
    assert np.array_equal(np.sum(burnt, axis=0), building)  # every building pixel in exactly one region
    for region, pixels in zip(regions, burnt):
        assert region.value_sum == values[pixels].sum() and region.value_count == values[pixels].count()
    with pytest.raises(ValueError, match="out of order"):
        RegionStream(width, height).add(building[7:14], Window(0, 7, width, 7))


def test_attributes_area_perimeter_and_mean_probability(tmp_path):
    mask = np.zeros((20, 20), np.uint8)
    mask[2:6, 3:9] = 1  # 4 x 6 px
    probability = np.full((20, 20), 255, np.uint8)  # nodata except on the building
    probability[2:6, 3:9] = 127
    probability[2, 3] = 254
    mask_path = write_raster(tmp_path / "mask.tif", mask)
    probability_path = write_raster(tmp_path / "p.tif", probability, nodata=255, kind="probability")
    ((geometry, attributes),) = polygons(mask_path, probability_path=probability_path)
    # rounded as a measurement from such pixels means: to the centimetre, and probabilities to a thousandth
    assert attributes["area_m2"] == round(24 * (PIXEL_M * GROUND_M_PER_MAP_M) ** 2, 2)
    assert attributes["perimeter_m"] == round(20 * PIXEL_M * GROUND_M_PER_MAP_M, 2)
    assert attributes["mean_probability"] == round((23 * 127 + 254) / 24 / 254, 3)
    assert geometry.bounds == pytest.approx((500001.5, 97.0, 500004.5, 99.0))  # map coordinates
    ((_, plain),) = polygons(mask_path)
    assert plain["mean_probability"] is None


def test_minimum_area_hole_filling_and_simplification(tmp_path):
    mask = np.zeros((40, 40), np.uint8)
    mask[2:12, 2:12] = 1
    mask[5:7, 5:7] = 0  # a 2 x 2 px hole = 1 m²
    mask[20:22, 20:22] = 1  # 1 m² speck
    mask[25:38, 5:35] = 1
    mask[25:27, 5:25] = 0  # a notch two pixels deep: a simplification of 1.5 m straightens it
    path = write_raster(tmp_path / "mask.tif", mask)
    assert len(polygons(path)) == 3
    kept = polygons(path, min_area_m2=2.0)
    assert len(kept) == 2 and min(a["area_m2"] for _, a in kept) >= 2.0
    with_hole = [g for g, _ in polygons(path) if len(g.interiors) == 1]
    assert len(with_hole) == 1
    filled = polygons(path, fill_holes_below_m2=1.5)
    assert all(len(geometry.interiors) == 0 for geometry, _ in filled)
    assert any(len(geometry.interiors) == 1 for geometry, _ in polygons(path, fill_holes_below_m2=0.5))
    raw_vertices = sum(len(g.exterior.coords) for g, _ in polygons(path))
    simple_vertices = sum(len(g.exterior.coords) for g, _ in polygons(path, simplify_m=1.5))
    assert simple_vertices < raw_vertices


# One ground pixel of GROUND_PIXEL_M at 50 degrees north in three CRSs, from spherical approximations
# (within 0.5 % of the ellipsoid; the thresholds below leave 15 %): UTM metres are ground metres to
# 0.04 %, a Web Mercator metre is cos(50) ground metres, a degree of latitude about 111.2 km.
GROUND_PIXEL_M = 0.5
LATITUDE_DEG = 50.0
METRES_PER_DEGREE = 6_371_000 * math.pi / 180
MERCATOR_Y = 6_378_137 * math.log(math.tan(math.pi / 4 + math.radians(LATITUDE_DEG) / 2))
SAME_GROUND_GRIDS = {
    "UTM 33N": ("EPSG:32633", TRANSFORM),
    "Web Mercator": (
        "EPSG:3857",
        from_origin(1_700_000.0, MERCATOR_Y, *[GROUND_PIXEL_M / math.cos(math.radians(LATITUDE_DEG))] * 2),
    ),
    "WGS 84 degrees": (
        "EPSG:4326",
        from_origin(
            15.0,
            LATITUDE_DEG,
            GROUND_PIXEL_M / (METRES_PER_DEGREE * math.cos(math.radians(LATITUDE_DEG))),
            GROUND_PIXEL_M / METRES_PER_DEGREE,
        ),
    ),
}


@pytest.mark.parametrize("grid", SAME_GROUND_GRIDS)
def test_areas_are_ground_square_metres_whatever_the_crs(tmp_path, grid):
    crs, transform = SAME_GROUND_GRIDS[grid]
    mask = np.zeros((40, 40), np.uint8)
    mask[5:20, 5:21] = 1  # 15 x 16 px = 60 m² on the ground
    mask[10:14, 10:14] = 0  # a 4 x 4 px hole = 4 m²
    path = write_raster(tmp_path / "mask.tif", mask, crs=crs, transform=transform)
    ((_, attributes),) = polygons(path, min_area_m2=50)
    assert attributes["area_m2"] == pytest.approx(56, rel=0.005)  # 60 m² less the hole
    assert attributes["perimeter_m"] == pytest.approx(2 * (7.5 + 8) + 4 * 2, rel=0.005)
    assert polygons(path, min_area_m2=70) == []
    # the minimum is compared with the very area written: kept at it, dropped just above
    assert len(polygons(path, min_area_m2=attributes["area_m2"])) == 1
    assert polygons(path, min_area_m2=math.nextafter(attributes["area_m2"], math.inf)) == []
    ((filled, _),) = polygons(path, fill_holes_below_m2=5)
    ((holed, _),) = polygons(path, fill_holes_below_m2=3)
    assert (len(filled.interiors), len(holed.interiors)) == (0, 1)


def test_a_mask_without_crs_takes_map_units_for_metres_and_says_so(tmp_path):
    mask = np.zeros((40, 40), np.uint8)
    mask[5:20, 5:21] = 1  # 15 x 16 px of 0.5 units = 60 square units
    path = write_raster(tmp_path / "mask.tif", mask, crs=None)
    messages = []
    assert len(list(polygons_from_mask(path, min_area_m2=59, progress=lambda _, message: messages.append(message))))
    assert polygons(path, min_area_m2=61) == []
    assert "no coordinate reference system: its map units are taken for metres" in messages[0]


def sawtooth_l_mask() -> np.ndarray:
    """An L of 20 x 12 m arms 6 m wide, its long outer edges notched 3 px (1.5 m) deep every 4 px."""
    mask = np.zeros((60, 60), np.uint8)
    mask[5:45, 5:17] = 1
    mask[33:45, 5:45] = 1
    for start in range(7, 41, 4):
        mask[start : start + 2, 5:8] = 0  # the left edge
        mask[42:45, start : start + 2] = 0  # the bottom edge
    return mask


def test_simplification_tolerance_is_ground_metres_whatever_the_crs(tmp_path):
    # 1 m straightens some notch corners and keeps the 1.5 m notches (1 degree would flatten them);
    # 2 m removes the notches and keeps the L (2 Web Mercator units at 50 degrees are 1.3 m: notches kept)
    vertices = {}
    for grid, (crs, transform) in SAME_GROUND_GRIDS.items():
        path = write_raster(tmp_path / "mask.tif", sawtooth_l_mask(), crs=crs, transform=transform)
        vertices[grid] = [
            len(geometry.exterior.coords)
            for tolerance_m in (0.0, 1.0, 2.0)
            for geometry, _ in polygons(path, simplify_m=tolerance_m)
        ]
    raw, notched, plain = vertices["UTM 33N"]
    assert raw > notched > 5 * plain and plain == 7  # the L's six corners, closed
    for grid, (_, one_m, two_m) in vertices.items():
        # degrees are anisotropic, so one tolerance cannot match the ground exactly along x and y
        assert one_m == pytest.approx(notched, rel=0.15) and two_m == plain, (grid, vertices)


def test_regularisation_makes_rectangles_and_right_angles(tmp_path):
    rectangle = shapely.affinity.rotate(shapely.box(10, 10, 30, 22), 25, origin="center")
    mask = rasterize([rectangle], out_shape=(40, 40), dtype="uint8")  # pixel coordinates: a jagged outline
    path = write_raster(tmp_path / "mask.tif", mask)
    ((geometry, _),) = polygons(path, regularize=True)
    assert len(geometry.exterior.coords) == 5
    assert geometry.area == pytest.approx(rectangle.area * PIXEL_M**2, rel=0.15)

    # an L-shaped outline with every vertex jittered by up to 0.4 units, rotated off the axes
    l_shape = shapely.Polygon([(0, 0), (30, 0), (30, 10), (12, 10), (12, 25), (0, 25)])
    corners = np.array(shapely.segmentize(l_shape, 1.0).exterior.coords)[:-1]
    corners += np.random.default_rng(0).uniform(-0.4, 0.4, corners.shape)
    noisy = shapely.affinity.rotate(shapely.Polygon(corners), 30, origin=(0, 0))
    regular = regularize_polygon(noisy, 1.0)
    edges = np.diff(np.array(regular.exterior.coords), axis=0)
    assert len(edges) == 6
    for first, second in zip(edges, np.roll(edges, -1, axis=0)):
        cosine = abs(first @ second) / (np.linalg.norm(first) * np.linalg.norm(second))
        assert cosine < 1e-6  # a right angle at every corner
    assert regular.is_valid and regular.area == pytest.approx(noisy.area, rel=0.1)


def test_squared_pixel_outline_of_a_rotated_l_is_its_six_walls(tmp_path):
    """Traced from the pixels of a mask, an L-shaped building 25 degrees off the grid has a
    staircase outline; squared, it is six walls at right angles, over the building."""
    l_shape = shapely.affinity.rotate(
        shapely.Polygon([(10, 10), (50, 10), (50, 26), (28, 26), (28, 50), (10, 50)]), 25, origin=(30, 30)
    )
    mask = rasterize([l_shape], out_shape=(64, 64), dtype="uint8")
    path = write_raster(tmp_path / "mask.tif", mask, crs=None, transform=from_origin(0, 64, 1, 1))
    ((traced, _),) = polygons(path, simplify_m=1.0)
    ((squared, _),) = polygons(path, simplify_m=1.0, regularize=True)
    assert len(traced.exterior.coords) > 10  # what squaring has to mend
    edges = np.diff(np.array(squared.exterior.coords), axis=0)
    assert len(edges) == 6
    for first, second in zip(edges, np.roll(edges, -1, axis=0)):
        assert abs(first @ second) / (np.linalg.norm(first) * np.linalg.norm(second)) < 1e-6
    # pixel (column, row) -> map (x, 64 - y)
    truth = shapely.affinity.affine_transform(l_shape, [1, 0, 0, -1, 0, 64])
    common = squared.intersection(truth).area
    assert common / (squared.area + truth.area - common) > 0.9


def test_bad_inputs(tmp_path):
    mask_path = write_raster(tmp_path / "mask.tif", shapes_mask())
    probability = write_raster(tmp_path / "p.tif", np.zeros((40, 50), np.uint8), kind="probability")
    with pytest.raises(InputError, match="probability raster"):
        polygons_from_mask(probability)
    other = tmp_path / "other.tif"
    with rasterio.open(
        other, "w", driver="GTiff", width=10, height=10, count=1, dtype="uint8", crs=CRS, transform=TRANSFORM
    ) as dataset:
        dataset.write(np.zeros((1, 10, 10), np.uint8))
    with pytest.raises(InputError, match="grid"):
        polygons_from_mask(mask_path, probability_path=other)
    with pytest.raises(InputError, match="minimum area"):
        polygons_from_mask(mask_path, min_area_m2=-1)
    with pytest.raises(InputError, match="does not exist"):
        polygons_from_mask(tmp_path / "missing.tif")
    with pytest.raises(Cancelled, match="Cancelled by the user"):
        list(polygons_from_mask(mask_path, window_rows_px=4, cancelled=lambda: True))


@pytest.mark.parametrize("suffix", [".gpkg", ".geojson"])
def test_writer_round_trip(tmp_path, suffix):
    from osgeo import ogr

    features = polygons(write_raster(tmp_path / "mask.tif", shapes_mask()))
    features[0][1]["mean_probability"] = 0.75
    path = tmp_path / f"buildings{suffix}"
    crs_wkt = rasterio.crs.CRS.from_string(CRS).to_wkt()
    assert write_polygons(features, path, crs_wkt) == 4
    source = ogr.Open(str(path))
    layer = source.GetLayer(0)
    assert layer.GetFeatureCount() == 4
    assert layer.GetSpatialRef().GetAuthorityCode(None) == "32633"
    first = layer.GetNextFeature()
    # the polygon's number once: a GeoPackage's feature id column, a GeoJSON property
    number = first.GetFID() if suffix == ".gpkg" else first.GetField("fid")
    names = [layer.GetLayerDefn().GetFieldDefn(i).GetName() for i in range(layer.GetLayerDefn().GetFieldCount())]
    assert ("fid" in names) == (suffix == ".geojson") and "id" not in names
    assert number == 1 and first.GetField("mean_probability") == 0.75
    assert first.GetField("area_m2") == pytest.approx(features[0][1]["area_m2"])
    assert shapely.from_wkb(bytes(first.GetGeometryRef().ExportToWkb())).equals(features[0][0])
    source = None
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["mask.tif", path.name])


def test_writer_leaves_nothing_when_features_fail(tmp_path):
    def failing():
        yield shapely.box(0, 0, 1, 1), {"id": 1}
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):  # the writer's own error, unchanged
        write_polygons(failing(), tmp_path / "buildings.gpkg", "")
    with pytest.raises(InputError, match="GeoPackage"):
        write_polygons([], tmp_path / "buildings.shp", "")
    assert list(tmp_path.iterdir()) == []
