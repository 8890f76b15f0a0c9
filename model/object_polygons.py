"""Buildings as objects for object-level scores: regions polygonized window by window and merged
across window borders, features clipped to the scored area, unmatched ones back in map units."""

from __future__ import annotations

import numpy as np
import shapely
import shapely.geometry
from affine import Affine
from rasterio.features import shapes
from rasterio.windows import Window

from .metrics import ObjectScores
from .rasters import (
    Grid,
)


class PolygonPieces:
    """Building regions polygonized window by window, in pixel coordinates of the whole grid. Regions cut
    by a window edge are kept apart and joined at the end (pieces that share an edge are one building)."""

    def __init__(self, grid: Grid) -> None:
        self._grid = grid
        self._whole: list[shapely.Geometry] = []
        self._cut: list[shapely.Geometry] = []

    def add(self, building: np.ndarray, window: Window) -> None:
        if not building.any():
            return
        column, row = int(window.col_off), int(window.row_off)
        found = np.asarray(
            [
                shapely.geometry.shape(geometry)
                for geometry, _ in shapes(
                    building.view(np.uint8), mask=building, connectivity=4, transform=Affine.translation(column, row)
                )
            ],
            dtype=object,
        )
        left, top, right, bottom = shapely.bounds(found).T
        cut = (
            ((left <= column) & (column > 0))
            | ((top <= row) & (row > 0))
            | ((right >= column + window.width) & (column + window.width < self._grid.width))
            | ((bottom >= row + window.height) & (row + window.height < self._grid.height))
        )
        self._whole.extend(found[~cut])
        self._cut.extend(found[cut])

    def geometries(self) -> list[shapely.Geometry]:
        joined = shapely.union_all(np.asarray(self._cut, dtype=object)) if self._cut else None
        parts = list(shapely.get_parts(joined)) if joined is not None and not joined.is_empty else []
        return self._whole + parts


def to_pixels(geometries, grid: Grid):
    inverse = ~grid.transform

    def transform(xy: np.ndarray) -> np.ndarray:
        x, y = xy[:, 0], xy[:, 1]
        return np.column_stack([inverse.a * x + inverse.b * y + inverse.c, inverse.d * x + inverse.e * y + inverse.f])

    return shapely.transform(geometries, transform)


def building_objects(
    pieces: PolygonPieces | None, polygons: list | None, grid: Grid, region: shapely.Geometry, min_area_px: float
) -> list[shapely.Geometry]:
    """Buildings in pixel coordinates: polygonized raster regions, or a layer's features clipped to the region."""
    if pieces is not None:
        found = np.asarray(pieces.geometries(), dtype=object)
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
    forward = grid.transform

    def transform(xy: np.ndarray) -> np.ndarray:
        x, y = xy[:, 0], xy[:, 1]
        return np.column_stack([forward.a * x + forward.b * y + forward.c, forward.d * x + forward.e * y + forward.f])

    return [
        shape
        for shape in map(polygonal, shapely.transform(np.asarray(geometries, dtype=object), transform))
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
