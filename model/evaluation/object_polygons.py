"""Buildings as objects for object-level scores: raster regions polygonized window by window
(``polygonize.py``), features clipped to the scored area, unmatched ones back in map units."""

from __future__ import annotations

import numpy as np
import shapely
import shapely.geometry
from rasterio.windows import Window

from ..io.rasters import Grid
from ..vectors.polygonize import RegionStream, apply_affine
from .metrics import ObjectScores


class BuildingRegions:
    """Every building region of a grid fed window by window (``RegionStream``'s order), in pixel
    coordinates of the whole grid: object matching needs them all at the end."""

    def __init__(self, grid: Grid) -> None:
        self._stream = RegionStream(grid.width, grid.height)
        self.geometries: list[shapely.Geometry] = []

    def add(self, building: np.ndarray, window: Window) -> None:
        self.geometries.extend(region.geometry for region in self._stream.add(building, window))


def to_pixels(geometries, grid: Grid):
    return apply_affine(geometries, ~grid.transform)


def building_objects(
    regions: BuildingRegions | None, polygons: list | None, grid: Grid, region: shapely.Geometry, min_area_px: float
) -> list[shapely.Geometry]:
    """Buildings in pixel coordinates: polygonized raster regions, or a layer's features clipped to the region."""
    if regions is not None:
        found = np.asarray(regions.geometries, dtype=object)
    else:
        features = np.asarray([shapely.geometry.shape(shape) for shape in polygons or []], dtype=object)
        found = shapely.intersection(shapely.make_valid(to_pixels(features, grid)), region)
    if not len(found):
        return []
    areas = shapely.area(found)
    return list(found[(areas > 0) & (areas >= min_area_px)])


def unmatched_objects(objects: ObjectScores, predicted: list, truth: list, grid: Grid) -> tuple[list, list]:
    """(false positives, missed buildings): the objects ``match_objects`` paired with nothing, in map
    coordinates of the grid."""
    paired_predicted = {p for p, _, _ in objects.pairs}
    paired_true = {t for _, t, _ in objects.pairs}
    false_positives = [shape for index, shape in enumerate(predicted) if index not in paired_predicted]
    missed = [shape for index, shape in enumerate(truth) if index not in paired_true]
    return to_map(false_positives, grid), to_map(missed, grid)


def to_map(geometries: list, grid: Grid) -> list:
    """Pixel-coordinate geometries -> the grid's map coordinates (the inverse of ``to_pixels``)."""
    if not geometries:
        return []
    return [
        shape
        for shape in map(polygonal, apply_affine(np.asarray(geometries, dtype=object), grid.transform))
        if not shape.is_empty
    ]


def polygonal(shape: shapely.Geometry) -> shapely.Geometry:
    """Polygons stay; a collection (a polygon clipped to the scored region) keeps its polygonal parts."""
    if shape.geom_type in ("Polygon", "MultiPolygon"):
        return shape
    polygons: list[shapely.Geometry] = []
    for part in shapely.get_parts(shape):
        polygons.extend(
            shapely.get_parts(part)
            if part.geom_type == "MultiPolygon"
            else [part]
            if part.geom_type == "Polygon"
            else []
        )
    return shapely.MultiPolygon(polygons)
