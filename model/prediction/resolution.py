"""The grid the network runs on: the model's training resolution matched on the ground for finer
imagery, coarser imagery on its own pixels (up to a limit), or what the user asked for; and the
limits of resampling."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import rasterio
from affine import Affine

from ..errors import InputError
from ..io.ground import ground_pixel_size_m
from ..io.rasters import Grid, metres_per_unit
from ..net.modelfile import ModelInfo

# Pixel sizes within this relative difference of the model's are processed as they are:
# resampling by a few percent costs a blur and buys nothing.
PIXEL_SIZE_TOLERANCE = 0.05
# Imagery coarser than the model's resolution runs on its own pixels up to this many times the model's
# pixel size, and is enlarged to that size beyond: enlarging 0.2 to 0.75 m imagery to a 0.15 m model's
# pixels scored lower than its own pixels on coarse copies of a real scene, with or without scale
# augmentation, and higher only from 1 m (bench/bench_coarse_imagery.py, README).
MAX_COARSER_THAN_MODEL = 4.0
# Beyond this factor between the input's and the processing pixel size the result is
# meaningless (buildings a few pixels wide, or a few hundred): refuse rather than guess.
MAX_RESAMPLE_FACTOR = 16.0
# The model's pixel size in the input's units comes from the ground size at the scene's centre, so
# it differs in the last digits between neighbouring files; rounded to this many significant
# digits, they resample onto one grid (0.05 % of a pixel at most, nothing to the network).
PIXEL_SIZE_DIGITS = 4
# An edge this close to a pixel edge (in pixels) is on it: no sliver pixel added (an area of
# interest's edges, a resampled grid's far edges).
EDGE_TOLERANCE_PX = 1e-6


def model_pixel_size_in_input_units(dataset: rasterio.io.DatasetReader, info: ModelInfo) -> tuple[float, float] | None:
    """The model's training pixel size expressed in the input CRS's units, or None when unknown.

    Sizes are matched on the ground (``ground.py``): a model trained on 0.15 m Web Mercator pixels
    near the equator gets 0.15 ground metres on a Web Mercator image at 50 degrees (0.23 Web
    Mercator "metres"), on UTM, feet or degrees alike. Model files from before ground sizes were
    stored fall back to their CRS's unit name (metres, feet; degrees at the centre latitude)."""
    native_map_units = Grid.of(dataset).pixel_size_map_units
    input_ground = ground_pixel_size_m(dataset.crs, dataset.transform, dataset.width, dataset.height)
    if info.ground_pixel_size_m and input_ground:
        return (
            native_map_units[0] * float(info.ground_pixel_size_m[0]) / input_ground[0],
            native_map_units[1] * float(info.ground_pixel_size_m[1]) / input_ground[1],
        )
    if not info.pixel_size:
        return None
    size_x, size_y = (float(value) for value in info.pixel_size)
    model_metres = metres_per_unit(info.crs_units or "")
    if model_metres is None or input_ground is None:
        return size_x, size_y  # units unknown on one side: assume the same units
    # the old model's pixel in metres, over the input's ground metres per unit
    return (
        size_x * model_metres * native_map_units[0] / input_ground[0],
        size_y * model_metres * native_map_units[1] / input_ground[1],
    )


def processing_grid(
    dataset: rasterio.io.DatasetReader,
    info: ModelInfo,
    processing_pixel_size_map_units: float | Sequence[float] | str | None,
) -> Grid | None:
    """The grid the network runs on, or None to run on the input's own pixels."""
    grid = Grid.of(dataset)
    if isinstance(processing_pixel_size_map_units, str):
        if processing_pixel_size_map_units != "native":
            raise InputError(
                "The processing pixel size must be a number, [x, y] or 'native', "
                f"not {processing_pixel_size_map_units!r}."
            )
        return None
    if dataset.crs is None:
        if processing_pixel_size_map_units is None:
            return None  # pixels without a georeference have no size to match: run on them as they are
        raise InputError(
            f"The image '{dataset.name}' has no coordinate reference system, so it cannot be "
            "resampled to a pixel size: leave the processing pixel size empty."
        )
    native_map_units = grid.pixel_size_map_units
    if processing_pixel_size_map_units is None:
        model_map_units = model_pixel_size_in_input_units(dataset, info)
        if model_map_units is None:
            return None
        target_map_units = not_enlarged(model_map_units, native_map_units)
    else:
        values = [float(value) for value in np.atleast_1d(processing_pixel_size_map_units)]
        target_map_units = (values[0], values[-1])
    if not all(0 < value < math.inf for value in target_map_units):  # NaN fails both
        raise InputError(
            f"The processing pixel size must be a positive number of map units, not "
            f"{' x '.join(f'{value:g}' for value in target_map_units)}."
        )
    factors = (target_map_units[0] / native_map_units[0], target_map_units[1] / native_map_units[1])
    if all(abs(factor - 1.0) <= PIXEL_SIZE_TOLERANCE for factor in factors):
        return None
    if any(not 1 / MAX_RESAMPLE_FACTOR <= factor <= MAX_RESAMPLE_FACTOR for factor in factors):
        raise InputError(
            f"The image's pixels ({native_map_units[0]:.6g} x {native_map_units[1]:.6g}) differ from the processing "
            f"pixel size ({target_map_units[0]:.6g} x {target_map_units[1]:.6g}) by more than {MAX_RESAMPLE_FACTOR:g} "
            "times: use imagery close to the model's training resolution, or set the processing "
            "pixel size explicitly ('native' to run on the image's own pixels)."
        )
    if processing_pixel_size_map_units is None:
        target_map_units = (significant(target_map_units[0]), significant(target_map_units[1]))
    return ground_anchored_grid(grid, target_map_units)


def not_enlarged(model_map_units: tuple[float, float], native_map_units: tuple[float, float]) -> tuple[float, float]:
    """The pixel size to process at by default, per axis: the model's for finer imagery (resampled
    down to it), the image's own for coarser imagery up to ``MAX_COARSER_THAN_MODEL`` times the
    model's, that limit beyond."""
    x, y = (
        max(model, min(native, MAX_COARSER_THAN_MODEL * model))
        for model, native in zip(model_map_units, native_map_units)
    )
    return x, y


def significant(value: float, digits: int = PIXEL_SIZE_DIGITS) -> float:
    return float(f"{value:.{digits - 1}e}")


def ground_anchored_grid(grid: Grid, pixel_size_map_units: tuple[float, float]) -> Grid:
    """A grid of ``pixel_size_map_units`` pixels covering ``grid``, its pixel edges on multiples of
    that size from the CRS's origin: any file over the same place resamples onto the same pixels, so
    the tile grid anchored on them (``tiling.ground_phase_px``) is the same too. It reaches past the
    input by under a pixel at each side (no data there). A rotated input keeps its own origin."""
    transform = grid.transform
    if transform.b or transform.d:
        width = max(1, round(grid.width * abs(transform.a) / pixel_size_map_units[0]))
        height = max(1, round(grid.height * abs(transform.e) / pixel_size_map_units[1]))
        # Scaling the input's geotransform keeps its origin, orientation and extent.
        return Grid(grid.crs_wkt, transform * Affine.scale(grid.width / width, grid.height / height), width, height)
    size_x = math.copysign(pixel_size_map_units[0], transform.a)
    size_y = math.copysign(pixel_size_map_units[1], transform.e)
    left, top = math.floor(transform.c / size_x) * size_x, math.floor(transform.f / size_y) * size_y
    right, bottom = transform.c + grid.width * transform.a, transform.f + grid.height * transform.e
    # the tolerance keeps an edge on a pixel edge (up to rounding) from gaining a pixel
    width = max(1, math.ceil((right - left) / size_x - EDGE_TOLERANCE_PX))
    height = max(1, math.ceil((bottom - top) / size_y - EDGE_TOLERANCE_PX))
    return Grid(grid.crs_wkt, Affine(size_x, 0.0, left, 0.0, size_y, top), width, height)
