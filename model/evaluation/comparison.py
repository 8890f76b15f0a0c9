"""What an evaluation compares: the prediction as a mask source (mask, probability or polygons), the
area of interest, the comparison grid both layers are aligned onto, and its windows."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import rasterio
import shapely
import shapely.geometry
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import MaskFlags
from rasterio.features import rasterize
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from ..errors import InputError
from ..io.rasters import (
    KIND_TAG,
    PROBABILITY_U8_SCALE,
    Grid,
    LabelSource,
    bounds_on_grid,
    is_vector,
    open_raster,
    open_vector_layer,
    raster_windows,
    require_overlap,
)

# pixels per processing window: large enough that per-window overhead vanishes, small enough that the
# dozen temporary arrays of a window stay in tens of megabytes
WINDOW_PIXELS = 2 * 1024 * 1024
MAX_WINDOW_WIDTH_PX = 4096


class PredictionSource:
    """The prediction as building / valid pixels on the comparison grid, whatever its kind."""

    def __init__(self, path: Path, threshold: float | None) -> None:
        self.path = path
        self.threshold: float | None = None
        self.dataset: rasterio.io.DatasetReader | None = None
        self._polygon_source: LabelSource | None = None
        self._cut: float | None = None  # building where value >= cut
        self._must_be_binary = False
        if is_vector(path):
            self.kind = "polygons"
            return
        self.dataset = dataset = open_raster(path, "prediction")
        try:
            self._read_kind(dataset, threshold)
        except BaseException:
            dataset.close()
            raise

    def _read_kind(self, dataset: rasterio.io.DatasetReader, threshold: float | None) -> None:
        path = self.path
        tag = dataset.tags().get(KIND_TAG)
        if tag == "error_map":
            raise InputError(
                f"The prediction '{path}' is an error map from an earlier evaluation; pick the "
                "mask or probability raster that prediction wrote."
            )
        if tag not in ("mask", "probability") and dataset.count != 1:
            raise InputError(
                f"The prediction '{path}' has {dataset.count} bands; a prediction must be a "
                "single-band mask or probability raster (was the image picked by mistake?)."
            )
        if tag == "probability":
            self.kind = "probability"
            self.threshold = 0.5 if threshold is None else float(threshold)
            if not 0.0 <= self.threshold <= 1.0:
                raise InputError(
                    f"The threshold for the probability raster '{path}' must be between 0 and 1; got {self.threshold}."
                )
            if dataset.dtypes[0] == "uint8":
                # stored value v means p = v / 254: the cut is the first level whose p reaches the threshold,
                # found on the decoded levels themselves so that it agrees with p >= threshold exactly
                levels = np.arange(PROBABILITY_U8_SCALE + 1) / PROBABILITY_U8_SCALE
                self._cut = float(np.searchsorted(levels, self.threshold, side="left"))
            else:
                self._cut = self.threshold
        elif tag == "mask" or threshold is None:
            self.kind = "mask"
            self._must_be_binary = tag != "mask"  # untagged (or tagged by another program): checked
        else:
            self.kind = "thresholded raster"
            self.threshold = self._cut = float(threshold)

    @property
    def block_height_px(self) -> int:
        return self.dataset.block_shapes[0][0] if self.dataset is not None else 512

    @property
    def polygons(self) -> list | None:
        return self._polygon_source.polygons if self._polygon_source is not None else None

    def attach_grid(self, grid: Grid) -> None:
        """A polygon prediction is rasterized onto the comparison grid, like polygon labels."""
        self._polygon_source = LabelSource(self.path, [1], grid, role="prediction")

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray | None]:
        """(building, valid) boolean arrays of a window; valid is None when every pixel has data."""
        if self._polygon_source is not None:
            return self._polygon_source.read(window) == 1, None
        dataset = self.dataset
        assert dataset is not None  # only a polygon prediction has no raster, and it returned above
        values = dataset.read(1, window=window)
        valid = valid_pixels(dataset, values, window)
        if self._must_be_binary:
            odd = (values != 0) & (values != 1)
            if valid is not None:
                odd &= valid
            if odd.any():
                raise InputError(
                    f"The prediction '{self.path}' holds values other than 0 and 1, so it is not a "
                    "mask; give a threshold to score it as a probability or score raster."
                )
        building = values == 1 if self._cut is None else values >= self._cut
        return building, valid

    def close(self) -> None:
        if self.dataset is not None:
            self.dataset.close()
        if self._polygon_source is not None:
            self._polygon_source.close()


def valid_pixels(dataset: rasterio.io.DatasetReader, values: np.ndarray, window: Window) -> np.ndarray | None:
    """Band 1's data mask for a window, None when all pixels are valid. A plain nodata value is compared
    here directly: it gives what GDAL's mask band gives, several times faster."""
    flags = dataset.mask_flag_enums[0]
    if MaskFlags.all_valid in flags:
        return None
    if list(flags) == [MaskFlags.nodata]:
        nodata = values.dtype.type(dataset.nodata)
        return ~np.isnan(values) if np.isnan(nodata) else values != nodata
    return dataset.read_masks(1, window=window) > 0


class AreaOfInterest:
    """The area-of-interest polygon(s) as a boolean pixel mask per window."""

    def __init__(self, aoi: str | Path | shapely.Geometry, grid: Grid) -> None:
        self._source: LabelSource | None = None
        if isinstance(aoi, (str, Path)):
            if not is_vector(aoi):
                raise InputError(
                    f"The area of interest '{aoi}' must be a polygon layer (GeoPackage, GeoJSON, shapefile...)."
                )
            self._source = LabelSource(aoi, [1], grid, role="area of interest")
            assert self._source.polygons is not None  # a vector layer's polygons, checked by is_vector
            geometries = [shapely.geometry.shape(shape) for shape in self._source.polygons]
        else:
            geometries = [aoi]
        geometry = shapely.union_all(shapely.make_valid(np.asarray(geometries, dtype=object)))
        if geometry.is_empty or geometry.area <= 0:
            raise InputError(f"The area of interest '{aoi}' holds no polygon with an area.")
        self._shapes = [shapely.geometry.mapping(geometry)]
        self._grid = grid

    def read(self, window: Window) -> np.ndarray:
        sub = self._grid.window_grid(window)
        return rasterize(
            self._shapes, out_shape=(sub.height, sub.width), transform=sub.transform, fill=0, dtype="uint8"
        ).view(bool)

    def close(self) -> None:
        if self._source is not None:
            self._source.close()


def comparison_grid(predicted: PredictionSource, labels: Path, aoi, pixel_size_map_units: float | None) -> Grid:
    if predicted.dataset is not None:
        grid = Grid.of(predicted.dataset)
        require_layer_overlap(labels, "label layer", grid, predicted.path)
        return grid
    if not is_vector(labels):
        with open_raster(labels, "label layer") as dataset:
            grid = Grid.of(dataset)
        require_layer_overlap(predicted.path, "prediction", grid, labels)
        return grid
    if pixel_size_map_units is None or not pixel_size_map_units > 0:
        raise InputError(
            f"Both the prediction '{predicted.path}' and the labels '{labels}' are polygon layers: "
            "give a pixel size (in the prediction layer's map units, e.g. 0.25 for 25 cm) to "
            "compare them on a raster grid."
        )
    crs = vector_extent(predicted.path, "prediction")[1]
    bounds, label_crs = vector_extent(labels, "label layer")
    if bounds is None:
        raise InputError(
            f"The label layer '{labels}' has no feature, so it gives no area to score; add an "
            "area of interest or pick a label layer that covers the area."
        )
    bounds = transform_bounds(label_crs, crs, *bounds) if label_crs != crs else bounds
    if isinstance(aoi, (str, Path)) and is_vector(aoi):
        aoi_bounds, aoi_crs = vector_extent(Path(aoi), "area of interest")
        if aoi_bounds is not None:
            aoi_bounds = transform_bounds(aoi_crs, crs, *aoi_bounds) if aoi_crs != crs else aoi_bounds
            bounds = (
                max(bounds[0], aoi_bounds[0]),
                max(bounds[1], aoi_bounds[1]),
                min(bounds[2], aoi_bounds[2]),
                min(bounds[3], aoi_bounds[3]),
            )
    elif isinstance(aoi, shapely.Geometry) and not aoi.is_empty:
        left, bottom, right, top = aoi.bounds
        bounds = (max(bounds[0], left), max(bounds[1], bottom), min(bounds[2], right), min(bounds[3], top))
    if bounds[0] >= bounds[2] or bounds[1] >= bounds[3]:
        raise InputError(f"The area of interest does not overlap the label layer '{labels}'.")
    left, bottom, right, top = bounds
    width = max(1, math.ceil((right - left) / pixel_size_map_units))
    height = max(1, math.ceil((top - bottom) / pixel_size_map_units))
    grid = Grid(crs.to_wkt(), Affine(pixel_size_map_units, 0.0, left, 0.0, -pixel_size_map_units, top), width, height)
    require_layer_overlap(predicted.path, "prediction", grid, labels)
    return grid


def layer_extent(path: Path, role: str) -> tuple[tuple | None, CRS | None]:
    """(left, bottom, right, top) and CRS of a raster or polygon layer; bounds None for an empty layer."""
    if is_vector(path):
        return vector_extent(path, role)
    with open_raster(path, role) as dataset:
        return tuple(dataset.bounds), dataset.crs


def vector_extent(path: Path, role: str) -> tuple[tuple | None, CRS]:
    _source, layer, crs = open_vector_layer(path, role)
    if layer.GetFeatureCount() == 0:
        return None, crs
    left, right, bottom, top = layer.GetExtent()
    return (left, bottom, right, top), crs


def grid_bounds_of(path: Path, role: str, grid: Grid) -> tuple | None:
    bounds, crs = layer_extent(path, role)
    return None if bounds is None else bounds_on_grid(bounds, crs, grid)


def require_layer_overlap(path: Path, role: str, grid: Grid, other: Path) -> None:
    bounds, crs = layer_extent(path, role)
    if bounds is not None:  # an empty polygon layer: nothing there, background everywhere
        require_overlap(grid, bounds, crs, path, role, f"'{other}'")


def extent_fraction(path: Path, grid: Grid, role: str) -> float | None:
    """Share of a layer's extent (its bounding box, in the grid's CRS) that lies on the comparison grid."""
    bounds = grid_bounds_of(path, role, grid)
    if bounds is None:
        return None
    box, grid_box = shapely.box(*bounds), shapely.box(*grid.bounds)
    if box.area == 0:
        return 1.0 if box.intersects(grid_box) else 0.0
    return box.intersection(grid_box).area / box.area


def comparison_windows(grid: Grid, block_height_px: int) -> Iterator[Window]:
    """Windows over the grid, whole blocks high, row by row; wide grids are cut into columns too."""
    width_px = grid.width if grid.width <= MAX_WINDOW_WIDTH_PX else MAX_WINDOW_WIDTH_PX
    rows_px = max(block_height_px, WINDOW_PIXELS // width_px // block_height_px * block_height_px)
    return raster_windows(grid.width, grid.height, rows_px, width_px)
