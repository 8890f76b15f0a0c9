"""Mask raster -> building polygons, streamed by full-width bands of rows.

The bands are polygonised and buildings cut by band borders merged back by ``polygonize.py`` (in
pixel coordinates, 4-connected); only finished polygons are moved to map coordinates, cleaned and
yielded.

Units: ``min_area_m2``, ``fill_holes_below_m2`` and ``simplify_m`` are ground metres whatever the
mask's CRS, as a GIS analyst means them: a Web Mercator "metre" covers cos(latitude) ground metres
(0.64 at 50 degrees) and a degree tens of kilometres. They are converted once, in
``polygons_from_mask``, into map units with the ground size of a map unit at the mask's centre
(``ground.metres_per_map_unit``, WGS84 ellipsoid; a mask without a CRS has no ground size, so its
map units are taken for metres). Polygons stay in the mask's CRS.
Attributes: ``id`` (1..n in output order: band by band as buildings are completed, top to bottom
then left to right within a band; stable for a given mask and window height), ``area_m2`` and
``perimeter_m`` (on the ground, with the same ground size of a map unit), ``mean_probability``
(mean of the probability raster over the building's pixels; None without one).

Regularisation (``regularize=True``, "Square corners"), for mostly rectangular buildings: a polygon
filling at least ``RECTANGLE_FILL`` of its minimum rotated rectangle becomes that rectangle, scaled
about its centre to the polygon's area (the enclosing rectangle also encloses pixel jags); any other
is simplified and turned into the frame of that rectangle, where each edge goes to the nearer axis,
each run of edges along one axis becomes one wall, and walls shorter than ``MIN_EDGE_TOLERANCES``
simplification tolerances are dropped, their neighbours merged: walls at right angles only. A
result that comes out invalid or overlaps the traced outline less than ``MIN_SHAPE_IOU`` (a round
or diagonal building) falls back to the plain simplified outline, so regularisation never destroys
a building. On the real scenes (``bench/bench_outlines.py``) squared outlines have a median of 5 to 9
vertices against 21 to 28 simplified, with the same IoU against the mapped buildings.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import shapely
import shapely.affinity
import shapely.errors
from affine import Affine

from ..errors import InputError
from ..io.ground import metres_per_map_unit
from ..io.rasters import KIND_TAG, PROBABILITY_U8_SCALE, open_raster, raster_windows
from ..progress import CancelFn, ProgressFn, Reporter
from .polygonize import Region, RegionStream, apply_affine

WINDOW_ROWS_PX = 1024
RECTANGLE_FILL = 0.85
MIN_EDGE_TOLERANCES = 4.0  # a squared outline's shortest wall, in simplification tolerances
MIN_SHAPE_IOU = 0.8  # a squared outline overlapping the traced one less than this is not used
# the attributes' precision, what a measurement from 0.1-0.5 m pixels can mean: centimetres, a hundredth
# of a square metre (a pixel of 0.15 m is 0.0225 m²), a probability to a thousandth
AREA_DECIMALS = 2
LENGTH_DECIMALS = 2
PROBABILITY_DECIMALS = 3


def polygons_from_mask(
    mask_path: str | Path,
    *,
    probability_path: str | Path | None = None,
    min_area_m2: float = 0.0,
    simplify_m: float = 0.0,
    fill_holes_below_m2: float = 0.0,
    regularize: bool = False,
    window_rows_px: int = WINDOW_ROWS_PX,
    progress: ProgressFn | None = None,
    cancelled: CancelFn | None = None,
) -> Iterator[tuple[shapely.Geometry, dict]]:
    """Building polygons of a mask raster (non-zero valid pixels are building) as
    ``(shapely polygon in the mask's CRS, {"id", "area_m2", "perimeter_m", "mean_probability"})``.

    Inputs are checked here, before the first polygon is asked for."""
    for name, value in (
        ("minimum area", min_area_m2),
        ("simplification tolerance", simplify_m),
        ("hole filling area", fill_holes_below_m2),
    ):
        if not value >= 0:  # NaN too: it would compare false with every area and keep everything
            raise InputError(f"The {name} must be zero or positive, got {value}.")
    if window_rows_px < 1:
        raise InputError(f"The window height must be at least 1 row, got {window_rows_px}.")
    mask = open_raster(mask_path, "mask")
    probability = None
    try:
        kind = mask.tags().get(KIND_TAG)
        if kind in ("probability", "error_map"):
            raise InputError(
                f"'{mask_path}' is a {kind.replace('_', ' ')} raster: vectorize the mask raster "
                "written by the prediction (or predict again with a mask output)."
            )
        check_mask_raster(mask, mask_path, sample=kind != "mask")
        if probability_path is not None:
            probability = open_raster(probability_path, "probability")
            if (probability.width, probability.height, probability.transform) != (
                mask.width,
                mask.height,
                mask.transform,
            ):
                raise InputError(
                    f"The probability raster '{probability_path}' is not on the mask's grid: give "
                    "the probability raster written together with this mask."
                )
    except BaseException:
        mask.close()
        if probability is not None:
            probability.close()
        raise
    reporter = Reporter.of(progress, cancelled)
    metres_per_unit = metres_per_map_unit(mask.crs, mask.transform, mask.width, mask.height)
    if metres_per_unit is None:
        metres_per_unit = (1.0, 1.0)
        reporter.report(0.0, "The mask has no coordinate reference system: its map units are taken for metres.")
    metres_x, metres_y = metres_per_unit
    # The tolerance is one distance in every direction, a map unit is not (a degree of longitude is
    # cos(latitude) of a degree of latitude): the geometric mean, the side of a square as large on the
    # ground as a square map unit, errs by the same factor along x and y. Projected CRSs are near-isotropic.
    simplify_map_units = simplify_m / math.sqrt(metres_x * metres_y)
    cleaning = _Cleaning(
        mask.transform,
        metres_per_unit,
        min_area_m2,
        simplify_map_units,
        fill_holes_below_m2 / (metres_x * metres_y),
        regularize,
        PROBABILITY_U8_SCALE if probability is not None and probability.dtypes[0] == "uint8" else 1.0,
    )
    return _stream(mask, probability, cleaning, window_rows_px, reporter)


# side of the decimated read that checks an untagged mask's values before any output is made
MASK_SAMPLE_PX = 512


def check_mask_raster(mask: rasterio.io.DatasetReader, path: str | Path, sample: bool) -> None:
    """Refuse what evaluate refuses as a mask: several bands, or (``sample``: a raster without the
    engine's mask tag) values other than 0 and 1 in a decimated read of the whole raster. The full
    check happens while streaming; this one catches an image picked by mistake before anything is written."""
    if mask.count != 1:
        raise InputError(
            f"The mask '{path}' has {mask.count} bands; a building mask is a single-band raster "
            "of 0 and 1 (was the image picked by mistake?). Pick the mask written by Predict."
        )
    if sample:
        shape = (min(mask.height, MASK_SAMPLE_PX), min(mask.width, MASK_SAMPLE_PX))
        _check_binary(mask.read(1, out_shape=shape, masked=True), path)


def _check_binary(values: np.ma.MaskedArray, path: str | Path) -> None:
    data = values.compressed() if np.ma.isMaskedArray(values) else values
    if data.size and (data.min() < 0 or data.max() > 1 or (data.dtype.kind == "f" and np.any(data % 1))):
        raise InputError(
            f"The mask '{path}' holds values other than 0 and 1, so it is not a building mask (a "
            "probability raster or an image?): pick the mask written by Predict, or threshold the "
            "raster into 0 and 1 first."
        )


def _stream(
    mask: rasterio.io.DatasetReader,
    probability: rasterio.io.DatasetReader | None,
    cleaning: _Cleaning,
    window_rows_px: int,
    reporter: Reporter,
) -> Iterator[tuple[shapely.Geometry, dict]]:
    regions = RegionStream(mask.width, mask.height)
    next_id = 1
    untagged = mask.tags().get(KIND_TAG) != "mask"
    try:
        for window in raster_windows(mask.width, mask.height, window_rows_px):
            reporter.check()
            values = mask.read(1, window=window, masked=True)
            if untagged:
                _check_binary(values, mask.name)
            building = np.ma.filled(values != 0, False)
            probabilities = probability.read(1, window=window, masked=True) if probability is not None else None
            for geometry, attributes in cleaning.finish(regions.add(building, window, probabilities)):
                yield geometry, {"id": next_id, **attributes}
                next_id += 1
            done_rows = window.row_off + window.height
            reporter.report(done_rows / mask.height, f"Vectorized {done_rows} of {mask.height} rows")
    finally:
        mask.close()
        if probability is not None:
            probability.close()


def _fill_holes(polygon: shapely.Polygon, below_map_units2: float) -> shapely.Polygon:
    kept = [ring for ring in polygon.interiors if shapely.Polygon(ring).area >= below_map_units2]
    return shapely.Polygon(polygon.exterior, kept)


class _Cleaning:
    """Finished regions -> polygons in map coordinates, cleaned, with attributes; vectorised over
    the regions a band finishes where shapely allows it."""

    def __init__(
        self,
        transform: Affine,
        metres_per_unit: tuple[float, float],
        min_area_m2: float,
        simplify_map_units: float,
        fill_holes_below_map_units2: float,
        regularize: bool,
        probability_scale: float,  # an 8-bit probability raster stores round(p * scale): sums are scaled back to p
    ) -> None:
        self.transform = transform
        self.pixel_size_map_units = math.sqrt(abs(transform.determinant))
        self.metres_per_unit = np.array(metres_per_unit)
        self.min_area_m2 = min_area_m2
        self.simplify_map_units = simplify_map_units
        self.fill_holes_below_map_units2 = fill_holes_below_map_units2
        self.regularize = regularize
        self.probability_scale = probability_scale

    def finish(self, regions: list[Region]) -> Iterator[tuple[shapely.Polygon, dict]]:
        if not regions:
            return
        geometries = np.array([region.geometry for region in regions], dtype=object)
        bounds = shapely.bounds(geometries)
        order = np.lexsort((bounds[:, 0], bounds[:, 1]))  # top to bottom, then left to right
        geometries = apply_affine(geometries[order], self.transform)
        if self.fill_holes_below_map_units2 > 0:
            geometries = np.array(
                [_fill_holes(geometry, self.fill_holes_below_map_units2) for geometry in geometries], dtype=object
            )
        if self.regularize:
            tolerance = max(self.simplify_map_units, self.pixel_size_map_units)
            geometries = np.array([regularize_polygon(geometry, tolerance) for geometry in geometries], dtype=object)
        elif self.simplify_map_units > 0:
            geometries = shapely.simplify(geometries, self.simplify_map_units, preserve_topology=True)
        # measured on the ground (x and y scaled apart: degrees are anisotropic) and rounded as written;
        # the minimum area is compared with the very area_m2 written, so a kept building never shows an
        # area below it
        on_ground = shapely.transform(geometries, lambda xy: xy * self.metres_per_unit)
        areas_m2 = np.round(shapely.area(on_ground), AREA_DECIMALS)
        perimeters_m = np.round(shapely.length(on_ground), LENGTH_DECIMALS)
        for index, geometry, area_m2, perimeter_m in zip(order, geometries, areas_m2, perimeters_m):
            if area_m2 <= 0 or area_m2 < self.min_area_m2:
                continue
            region = regions[index]
            mean = (
                round(region.value_sum / self.probability_scale / region.value_count, PROBABILITY_DECIMALS)
                if region.value_count
                else None
            )
            yield geometry, {"area_m2": float(area_m2), "perimeter_m": float(perimeter_m), "mean_probability": mean}


@dataclass(frozen=True)
class _Wall:
    """A line of a squared ring: ``axis`` 0 is horizontal, y = ``position``; 1 vertical, x = ``position``.
    ``length``: of the traced edges it stands for, its weight when walls merge."""

    axis: int
    position: float
    length: float

    def merged(self, other: _Wall) -> _Wall:
        length = self.length + other.length
        return _Wall(self.axis, (self.position * self.length + other.position * other.length) / length, length)


def _orthogonal_ring(coordinates: list[tuple[float, float]], min_edge: float) -> list[tuple[float, float]] | None:
    """A ring in an axis-aligned frame made of horizontal and vertical walls only, or None when
    nothing is left of it: each edge goes to the nearer axis, each run of edges on one axis becomes
    one wall (at their length-weighted mean), and a wall shorter than ``min_edge`` is dropped, its
    two neighbours (on the other axis) merged into one; corners are where the walls meet."""
    points = np.array(coordinates[:-1], np.float64)
    edges = np.roll(points, -1, axis=0) - points
    walls: list[_Wall] = []
    for (x0, y0), (dx, dy) in zip(points, edges):
        axis = 0 if abs(dy) <= abs(dx) else 1
        wall = _Wall(axis, y0 + dy / 2 if axis == 0 else x0 + dx / 2, math.hypot(dx, dy))
        if walls and walls[-1].axis == axis:
            walls[-1] = walls[-1].merged(wall)
        else:
            walls.append(wall)
    if len(walls) > 1 and walls[0].axis == walls[-1].axis:  # the ring's last run goes on into its first
        walls = [walls[0].merged(walls[-1]), *walls[1:-1]]
    while len(walls) > 4:
        corners = _corners(walls)
        # a horizontal wall runs along x from its corner to the next one, a vertical one along y
        spans = [abs(corners[(i + 1) % len(walls)][wall.axis] - corners[i][wall.axis]) for i, wall in enumerate(walls)]
        shortest = int(np.argmin(spans))
        if spans[shortest] >= min_edge:
            break
        # rotated so that the short wall is second, between the two walls it joins
        walls = walls[shortest - 1 :] + walls[: shortest - 1]
        walls = [walls[0].merged(walls[2]), *walls[3:]]
    if len(walls) < 4:
        return None
    corners = _corners(walls)
    return [*corners, corners[0]]


def _corners(walls: list[_Wall]) -> list[tuple[float, float]]:
    """Where each wall meets the one before it (they alternate between the axes)."""
    return [
        (before.position, wall.position) if wall.axis == 0 else (wall.position, before.position)
        for before, wall in zip([walls[-1], *walls[:-1]], walls)
    ]


def rectangle_angle_deg(rectangle: shapely.Polygon) -> float:
    """The direction of a rotated rectangle's first side (e.g. ``shapely.oriented_envelope``'s), in degrees."""
    (x0, y0), (x1, y1) = rectangle.exterior.coords[:2]
    return math.degrees(math.atan2(y1 - y0, x1 - x0))


def regularize_polygon(polygon: shapely.Polygon, tolerance: float) -> shapely.Polygon:
    """Right-angle regularisation of a building outline (see the module docstring)."""
    rectangle = shapely.oriented_envelope(polygon)
    if not isinstance(rectangle, shapely.Polygon) or rectangle.area == 0:
        return polygon
    if polygon.area >= RECTANGLE_FILL * rectangle.area:
        # The enclosing rectangle also encloses the outline's jags: shrink it to the outline's area.
        scale = math.sqrt(polygon.area / rectangle.area)
        return shapely.affinity.scale(rectangle, scale, scale, origin=rectangle.centroid)
    simplified = polygon.simplify(tolerance, preserve_topology=True)
    angle = rectangle_angle_deg(rectangle)
    centre = polygon.centroid
    upright = shapely.affinity.rotate(simplified, -angle, origin=centre)
    min_edge = MIN_EDGE_TOLERANCES * tolerance
    shell = _orthogonal_ring(list(upright.exterior.coords), min_edge)
    if shell is None:
        return simplified
    holes = [_orthogonal_ring(list(ring.coords), min_edge) for ring in upright.interiors]
    try:
        rebuilt = shapely.Polygon(shell, [hole for hole in holes if hole is not None])
        rebuilt = shapely.affinity.rotate(rebuilt, angle, origin=centre).simplify(0)
    except (ValueError, shapely.errors.GEOSException):
        return simplified
    if not rebuilt.is_valid or not isinstance(rebuilt, shapely.Polygon) or _iou(rebuilt, polygon) < MIN_SHAPE_IOU:
        return simplified
    return rebuilt


def _iou(first: shapely.Polygon, second: shapely.Polygon) -> float:
    common = first.intersection(second).area
    return common / (first.area + second.area - common)
