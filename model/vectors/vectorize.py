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

Regularisation (``regularize=True``), for mostly rectangular buildings: a polygon filling at
least ``RECTANGLE_FILL`` of its minimum rotated rectangle becomes that rectangle, scaled about its
centre to the polygon's area (the enclosing rectangle also encloses pixel jags); any other is
simplified, turned into the frame of that rectangle, and every edge within ``SNAP_ANGLE_DEG`` of
the rectangle's axes is made exactly parallel to it (corners recomputed as line intersections).
A result that comes out invalid or changes the area by more than ``MAX_AREA_CHANGE`` falls back
to the plain simplified outline, so regularisation never destroys a building.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
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
SNAP_ANGLE_DEG = 20.0
MAX_AREA_CHANGE = 0.25


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
        # measured on the ground (x and y scaled apart: degrees are anisotropic); the minimum area is
        # compared with the very area_m2 written, so a kept building never shows an area below it
        on_ground = shapely.transform(geometries, lambda xy: xy * self.metres_per_unit)
        areas_m2, perimeters_m = shapely.area(on_ground), shapely.length(on_ground)
        for index, geometry, area_m2, perimeter_m in zip(order, geometries, areas_m2, perimeters_m):
            if area_m2 <= 0 or area_m2 < self.min_area_m2:
                continue
            region = regions[index]
            mean = region.value_sum / self.probability_scale / region.value_count if region.value_count else None
            yield geometry, {"area_m2": float(area_m2), "perimeter_m": float(perimeter_m), "mean_probability": mean}


def _orthogonal_ring(coordinates: list[tuple[float, float]], snap_tangent: float) -> list[tuple[float, float]]:
    """Edges of a ring in an axis-aligned frame: near-horizontal ones made horizontal, near-vertical
    ones vertical, others kept; vertices recomputed where consecutive edge lines meet."""
    points = coordinates[:-1]
    count = len(points)
    lines = []  # (kind, point on the line, direction)
    for index in range(count):
        (x0, y0), (x1, y1) = points[index], points[(index + 1) % count]
        dx, dy = x1 - x0, y1 - y0
        if abs(dy) <= snap_tangent * abs(dx):
            lines.append(("h", (x0, (y0 + y1) / 2), (1.0, 0.0)))
        elif abs(dx) <= snap_tangent * abs(dy):
            lines.append(("v", ((x0 + x1) / 2, y0), (0.0, 1.0)))
        else:
            lines.append(("d", (x0, y0), (dx, dy)))
    result = []
    for index in range(count):
        before, after = lines[index - 1], lines[index]
        corner = points[index]
        if before[0] == after[0] and before[0] != "d":
            # Two parallel axis edges: a small step between them, through the original corner.
            result.extend([_project(corner, before), _project(corner, after)])
            continue
        meet = _intersect(before, after)
        result.append(meet if meet is not None else corner)
    return result + [result[0]]


def _project(point: tuple[float, float], line: tuple) -> tuple[float, float]:
    kind, (px, py), _ = line
    return (point[0], py) if kind == "h" else (px, point[1])


def _intersect(first: tuple, second: tuple) -> tuple[float, float] | None:
    (_, (x1, y1), (dx1, dy1)), (_, (x2, y2), (dx2, dy2)) = first, second
    denominator = dx1 * dy2 - dy1 * dx2
    if abs(denominator) < 1e-9 * math.hypot(dx1, dy1) * math.hypot(dx2, dy2):
        return None
    t = ((x2 - x1) * dy2 - (y2 - y1) * dx2) / denominator
    return x1 + t * dx1, y1 + t * dy1


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
    corners = list(rectangle.exterior.coords)
    angle = math.degrees(math.atan2(corners[1][1] - corners[0][1], corners[1][0] - corners[0][0]))
    centre = polygon.centroid
    upright = shapely.affinity.rotate(simplified, -angle, origin=centre)
    snap_tangent = math.tan(math.radians(SNAP_ANGLE_DEG))
    try:
        rebuilt = shapely.Polygon(
            _orthogonal_ring(list(upright.exterior.coords), snap_tangent),
            [_orthogonal_ring(list(ring.coords), snap_tangent) for ring in upright.interiors],
        )
        rebuilt = shapely.affinity.rotate(rebuilt, angle, origin=centre).simplify(0)
    except (ValueError, shapely.errors.GEOSException):
        return simplified
    if (
        not rebuilt.is_valid
        or not isinstance(rebuilt, shapely.Polygon)
        or abs(rebuilt.area - polygon.area) > MAX_AREA_CHANGE * polygon.area
    ):
        return simplified
    return rebuilt
