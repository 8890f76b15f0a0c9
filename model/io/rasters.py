"""Raster and label input: opening with clear errors, pixel grids, valid-data masks, and labels
(class rasters or building polygons) aligned onto an image's grid as binary building masks.

Binary labels use 0 = background, 1 = building, LABEL_IGNORE = no data / not scored.
The encodings of the rasters the engine writes are defined here too, so every reader agrees.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import shapely
import shapely.geometry
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.features import rasterize
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds, transform_geom
from rasterio.windows import Window

from ..errors import InputError
from .label_checks import LabelValues, check_band_count

LABEL_IGNORE = 255
# Output encodings shared by prediction, vectorization and evaluation:
MASK_NODATA = 255  # mask rasters: uint8, 1 building, 0 background
PROBABILITY_U8_SCALE = 254  # uint8 probability = round(p * 254); 255 is nodata
PROBABILITY_U8_NODATA = 255
PROBABILITY_F32_NODATA = -1.0  # float32 probability in [0, 1]; -1 is nodata
KIND_TAG = "UNET_BUILDINGS_KIND"  # GDAL dataset tag on every written raster: probability | mask | error_map
VECTOR_SUFFIXES = {".geojson", ".json", ".gpkg", ".shp", ".kml", ".gml", ".fgb", ".sqlite"}
# a quick look at a label raster's values (the dock's, as the user ticks it): a million pixels read in well
# under a second and miss only classes rarer than about one pixel in a million
LABEL_SAMPLE_PX = 1_000_000


@dataclass(frozen=True)
class Grid:
    """A raster's pixel grid: where every pixel is, without the pixels."""

    crs_wkt: str
    transform: Affine
    width: int
    height: int

    @classmethod
    def of(cls, dataset: rasterio.io.DatasetReader) -> Grid:
        crs_wkt = dataset.crs.to_wkt() if dataset.crs else ""
        return cls(crs_wkt, dataset.transform, dataset.width, dataset.height)

    @property
    def crs(self) -> CRS | None:
        return CRS.from_wkt(self.crs_wkt) if self.crs_wkt else None

    @property
    def pixel_size_map_units(self) -> tuple[float, float]:
        return abs(self.transform.a), abs(self.transform.e)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in the grid's CRS."""
        corners = [
            self.transform * corner for corner in ((0, 0), (self.width, 0), (0, self.height), (self.width, self.height))
        ]
        xs, ys = zip(*corners)
        return min(xs), min(ys), max(xs), max(ys)

    def window_grid(self, window: Window) -> Grid:
        return Grid(
            self.crs_wkt, rasterio.windows.transform(window, self.transform), int(window.width), int(window.height)
        )


def raster_windows(width_px: int, height_px: int, rows_px: int, columns_px: int | None = None) -> Iterator[Window]:
    """Windows covering a raster row by row, each row of windows left to right: ``rows_px`` high and
    ``columns_px`` wide (None: the full width), the last ones cut short at the raster's edges."""
    columns_px = columns_px or width_px
    for row in range(0, height_px, rows_px):
        for column in range(0, width_px, columns_px):
            yield Window(column, row, min(columns_px, width_px - column), min(rows_px, height_px - row))


def open_raster(path: str | Path, role: str = "image") -> rasterio.io.DatasetReader:
    """Open a raster for reading, or fail with a message that names the input and the fix."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"The {role} raster '{path}' does not exist.")
    try:
        dataset = rasterio.open(path)
    except rasterio.errors.RasterioIOError as error:
        raise InputError(
            f"The {role} '{path}' cannot be read as a raster ({error}). Pick a GeoTIFF or another GDAL-readable raster."
        ) from error
    try:  # a truncated file opens (its header is at the start) and fails at its last blocks: try both corners
        for row, column in ((0, 0), (dataset.height - 1, dataset.width - 1)):
            dataset.read(1, window=Window(column, row, 1, 1))
    except (rasterio.errors.RasterioError, rasterio.errors.RasterioIOError) as error:
        dataset.close()
        raise InputError(
            f"The {role} '{path}' is damaged or truncated: its pixels cannot be read. Copy or export it again."
        ) from error
    return dataset


def check_bands(
    dataset: rasterio.io.DatasetReader, bands: Sequence[int], role: str = "image", fix: str | None = None
) -> list[int]:
    """``fix`` says what to do when a band is missing; by default: pick existing bands (right where the
    user chose the bands, wrong where a model file did)."""
    bands = [int(band) for band in bands]
    bad = [band for band in bands if not 1 <= band <= dataset.count]
    if bad or not bands:
        raise InputError(
            f"The {role} '{dataset.name}' has {dataset.count} band(s); band(s) {bad or bands} "
            f"do not exist. {fix or f'Pick bands between 1 and {dataset.count}.'}"
        )
    return bands


def written_geotiff_problem(path: str | Path, width: int, height: int, count: int = 1) -> str | None:
    """What is wrong with a GeoTIFF just written, or None when it is complete: it opens, has the expected
    size, and every block of every band has its bytes in the file. GDAL reports a full disk only in its
    log and rasterio does not raise for it; a block it failed to write has no offset, and would read
    back as zeros without a word."""
    from osgeo import gdal

    gdal.PushErrorHandler("CPLQuietErrorHandler")  # the failure is reported below, as one sentence
    try:
        dataset = gdal.Open(str(path))
        if dataset is None:
            return f"it cannot be read back: {gdal.GetLastErrorMsg() or 'not a raster'}"
        if (dataset.RasterXSize, dataset.RasterYSize, dataset.RasterCount) != (width, height, count):
            return "it came out with the wrong size"
        file_size = os.path.getsize(path)
        for index in range(1, count + 1):
            band = dataset.GetRasterBand(index)
            block_x, block_y = band.GetBlockSize()
            for row in range((height + block_y - 1) // block_y):
                for column in range((width + block_x - 1) // block_x):
                    offset = band.GetMetadataItem(f"BLOCK_OFFSET_{column}_{row}", "TIFF")
                    size = band.GetMetadataItem(f"BLOCK_SIZE_{column}_{row}", "TIFF")
                    if not offset or not size or int(offset) == 0 or int(offset) + int(size) > file_size:
                        return f"block {column},{row} of band {index} is missing"
        return None
    finally:
        dataset = None
        gdal.PopErrorHandler()


def valid_mask(
    dataset: rasterio.io.DatasetReader,
    bands: Sequence[int],
    window: Window | None = None,
    boundless: bool = False,
    values: np.ndarray | None = None,
) -> np.ndarray:
    """True where every chosen band has data: GDAL masks cover nodata values, alpha and internal masks;
    in float imagery NaN and infinite values are voids too, declared or not. ``values``: the bands
    already read from that window, so a float image is not read twice."""
    valid = np.all(dataset.read_masks(list(bands), window=window, boundless=boundless) > 0, axis=0)
    if has_float_bands(dataset, bands):
        if values is None:
            values = dataset.read(list(bands), window=window, boundless=boundless)
        valid &= np.isfinite(values).all(axis=0)
    return valid


def has_float_bands(dataset: rasterio.io.DatasetReader, bands: Sequence[int]) -> bool:
    """Whether any chosen band holds floats, which can hold NaN whatever the nodata value says."""
    return any(np.issubdtype(np.dtype(dataset.dtypes[band - 1]), np.floating) for band in bands)


def is_vector(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VECTOR_SUFFIXES


def bounds_on_grid(bounds: tuple, crs: CRS | None, grid: Grid) -> tuple:
    """``bounds`` (left, bottom, right, top) in ``crs``, in the grid's CRS (as they are when either CRS is unknown)."""
    if crs and grid.crs and crs != grid.crs:
        return tuple(transform_bounds(crs, grid.crs, *bounds))
    return bounds


def require_overlap(grid: Grid, bounds: tuple, crs: CRS | None, path: Path, role: str, other: str) -> None:
    """Refuse a layer whose extent (``bounds`` in ``crs``) misses the grid of ``other``: nothing of it would be used."""
    left, bottom, right, top = grid.bounds
    bounds = bounds_on_grid(bounds, crs, grid)
    if bounds[0] >= right or bounds[2] <= left or bounds[1] >= top or bounds[3] <= bottom:
        raise InputError(
            f"The {role} '{path}' does not overlap {other}: check that both cover the same area and carry "
            "the right coordinate reference system."
        )


class LabelSource:
    """A label layer (class raster or building polygons) that yields binary building masks on any
    window of a target grid, aligned on the fly (nearest resampling for class rasters, so class
    values are never blended; polygons are rasterized). A class raster's raw values are tallied as they
    are read (``values``), so ``check_values`` judges them without a second pass over the raster."""

    def __init__(self, path: str | Path, building_values: Sequence[int], grid: Grid, role: str = "label layer") -> None:
        self.path = Path(path)
        self.grid = grid
        self.role = role  # how messages name this input: the label layer, a prediction, an area of interest
        self.building_values = np.asarray(list(building_values))
        if not self.path.exists():
            raise InputError(f"The {role} '{self.path}' does not exist.")
        self._vrt: WarpedVRT | None = None
        self._dataset: rasterio.io.DatasetReader | None = None
        self._shapes: list | None = None
        self._index: shapely.STRtree | None = None  # the polygons' spatial index: each window burns its own
        # the raw class values of every window read so far (class rasters only): read each pixel once
        self.values: LabelValues | None = None
        if is_vector(self.path):
            self._shapes = _read_polygons(self.path, grid, role)
            self._index = shapely.STRtree([shapely.geometry.shape(shape) for shape in self._shapes])
        else:
            self._open_raster()

    def _open_raster(self) -> None:
        dataset = open_raster(self.path, self.role)
        subject = f"The {self.role} '{self.path}'"
        try:
            check_label_bands(dataset, subject)
        except InputError:
            dataset.close()
            raise
        self._dataset = dataset
        self.values = LabelValues(subject)
        require_overlap(self.grid, tuple(dataset.bounds), dataset.crs, self.path, self.role, "the image")
        if Grid.of(dataset) != self.grid:
            self._vrt = WarpedVRT(
                dataset,
                crs=self.grid.crs or dataset.crs,
                transform=self.grid.transform,
                width=self.grid.width,
                height=self.grid.height,
                resampling=Resampling.nearest,
                nodata=LABEL_IGNORE,
            )

    def read(self, window: Window | None = None) -> np.ndarray:
        """uint8 mask of the window: 1 building, 0 background, LABEL_IGNORE where the label has no data."""
        window = window or Window(0, 0, self.grid.width, self.grid.height)
        if self._shapes is not None and self._index is not None:
            sub = self.grid.window_grid(window)
            # only the polygons that reach the window: rasterizing every polygon of a city for each crop
            # cost time in proportion to polygons x windows
            hits = self._index.query(shapely.box(*sub.bounds), predicate="intersects")
            if not len(hits):
                return np.zeros((sub.height, sub.width), np.uint8)
            return rasterize(
                ((self._shapes[index], 1) for index in hits),
                out_shape=(sub.height, sub.width),
                transform=sub.transform,
                fill=0,
                dtype="uint8",
            )
        source = self._vrt or self._dataset
        assert source is not None  # a raster label layer is opened in __init__
        # a boundless read goes through a temporary VRT (several times slower): only when needed
        boundless = not (
            window.col_off >= 0
            and window.row_off >= 0
            and window.col_off + window.width <= source.width
            and window.row_off + window.height <= source.height
        )
        classes = source.read(
            1, window=window, boundless=boundless, fill_value=LABEL_IGNORE if source.nodata is None else source.nodata
        )
        has_data = source.read_masks(1, window=window, boundless=boundless) > 0
        if self.values is not None:
            self.values.add(classes, has_data)
        # one comparison per building value: several times faster than np.isin on large windows
        binary = np.zeros(classes.shape, np.uint8)
        for value in self.building_values:
            binary |= classes == value
        binary[~has_data] = LABEL_IGNORE
        return binary

    def check_values(self) -> None:
        """Refuse class values that cannot be these labels (``label_checks``: continuous values, building
        values marking none or nearly all of the labelled pixels), judged on every window read so far:
        call once the whole grid is read. Polygon layers pass: each polygon is a building."""
        if self.values is not None:
            self.values.check(self.building_values.tolist())

    @property
    def polygons(self) -> list | None:
        """The building polygons (GeoJSON-like, in the grid's CRS) of a vector layer; None for a raster."""
        return self._shapes

    def close(self) -> None:
        for handle in (self._vrt, self._dataset):
            if handle is not None:
                handle.close()

    def __enter__(self) -> LabelSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check_label_bands(dataset: rasterio.io.DatasetReader, subject: str) -> None:
    """Refuse a label raster with more than one data band (alpha bands are masks, not data)."""
    check_band_count(subject, sum(interp.name != "alpha" for interp in dataset.colorinterp))


def sample_label_values(path: str | Path, subject: str, max_px: int = LABEL_SAMPLE_PX) -> LabelValues:
    """The values of a label raster on an evenly spread sample of at most ``max_px`` pixels (nearest
    decimation: classes are never blended), for a quick look before any run; refuses a multi-band raster."""
    with open_raster(path, "label layer") as dataset:
        check_label_bands(dataset, subject)
        step = max(1, math.ceil(math.sqrt(dataset.width * dataset.height / max_px)))
        shape = (max(1, dataset.height // step), max(1, dataset.width // step))
        values = LabelValues(subject, dataset.nodata)
        try:  # open_raster read two corners: a damaged block in between fails here
            values.add(dataset.read(1, out_shape=shape), dataset.read_masks(1, out_shape=shape) > 0)
        except (rasterio.errors.RasterioError, rasterio.errors.RasterioIOError) as error:
            raise InputError(
                f"{subject} is damaged: its pixels cannot be read ({error}). Copy or export it again."
            ) from error
    return values


def open_vector_layer(path: Path, role: str) -> tuple:
    """(data source, its first layer, the layer's CRS) of a vector file; keep the data source alive
    while using the layer. A layer without a CRS is taken as WGS 84, as GeoJSON specifies."""
    from osgeo import ogr  # GDAL's Python bindings come with the same GDAL rasterio uses

    ogr.UseExceptions()
    try:
        source = ogr.Open(str(path))
    except RuntimeError as error:
        raise InputError(f"The {role} '{path}' cannot be read as polygons ({error}).") from error
    if source is None or source.GetLayerCount() == 0:
        raise InputError(f"The {role} '{path}' has no vector layer to read.")
    layer = source.GetLayer(0)
    reference = layer.GetSpatialRef()
    return source, layer, CRS.from_wkt(reference.ExportToWkt()) if reference else CRS.from_epsg(4326)


def _read_polygons(path: Path, grid: Grid, role: str = "label layer") -> list:
    """Building polygons of a vector file as GeoJSON-like geometries in the grid's CRS."""
    from osgeo import ogr

    _source, layer, source_crs = open_vector_layer(path, role)
    target_crs = grid.crs or source_crs
    geometries = []
    for feature in layer:
        geometry = feature.GetGeometryRef()
        if geometry is None or geometry.IsEmpty():
            continue
        if ogr.GT_Flatten(geometry.GetGeometryType()) not in (ogr.wkbPolygon, ogr.wkbMultiPolygon):
            continue
        geojson = json.loads(geometry.ExportToJson())
        geometries.append(transform_geom(source_crs, target_crs, geojson) if source_crs != target_crs else geojson)
    if geometries:
        bounds = shapely.GeometryCollection([shapely.geometry.shape(g) for g in geometries]).bounds
        require_overlap(grid, bounds, None, path, role, "the image")
    return geometries


def metres_per_unit(units: str) -> float | None:
    """Metres per unit for the names GDAL / PROJ give linear units; None for unknown names."""
    name = units.strip().lower()
    if name in ("m", "metre", "meter", "metres", "meters"):
        return 1.0
    if name in ("ft", "foot", "feet", "international foot"):
        return 0.3048
    if "us survey foot" in name:
        return 1200.0 / 3937.0
    return None
