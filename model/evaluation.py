"""Scoring a building prediction against labels: pixel confusion matrix, object matching, error map.

Inputs
------
The prediction is one of:

- a raster tagged ``UNET_BUILDINGS_KIND=mask`` (1 building, 0 background, nodata excluded);
- a raster tagged ``UNET_BUILDINGS_KIND=probability``: building where p >= threshold (default 0.5);
  8-bit ones hold round(p * 254) with 255 as nodata, float ones hold p in [0, 1];
- an untagged single-band raster: without a threshold it must hold only 0 and 1 (a mask; any other
  value is an error that asks for a threshold); with a threshold, pixel values are compared with
  it as they are (a float raster in [0, 1] with 0.5, an 8-bit 0-255 raster with 128);
- a building polygon layer (any OGR format).

The labels are a class raster (building = any of ``building_values``; a binary raster is a class
raster with ``building_values=(1,)``) or a building polygon layer.

Where it is scored
------------------
Rasters define the area; polygon layers say "building inside, background elsewhere". The
comparison grid is the prediction raster's; for a polygon prediction it is the label raster's;
when both are polygon layers it covers the label layer's extent (narrowed to the area of interest)
at ``pixel_size`` map units, in the prediction layer's CRS. Labels are aligned onto that grid (nearest
for class rasters, rasterized polygons), so layers may differ in CRS, resolution and extent; only
pixels where both have data, inside the optional area of interest, are scored. Excluded pixels are
counted by cause, in this order: outside the area of interest, prediction nodata, label nodata.

Objects are the 4-connected building regions of scored pixels for raster inputs, and the features
themselves (clipped to the scored pixels, so touching buildings stay apart) for polygon inputs; they
are matched one to one when their IoU reaches ``object_iou_threshold`` (SpaceNet: 0.5).

Pixels are read window by window, so the engine's memory stays flat in the raster size (object
scoring keeps the buildings' polygons, a small fraction of the pixels; switch it off for huge
scenes). GDAL's block cache, shared by the whole process, still fills up to its cap
(``GDAL_CACHEMAX``, 5 % of RAM by default) with the blocks read.
"""
from __future__ import annotations

import datetime
import math
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import rasterio
import shapely
import shapely.geometry
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import MaskFlags
from rasterio.features import rasterize, shapes
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from . import __version__
from .errors import InputError
from .files import (GEOTIFF_SUFFIXES, check_output_location, check_output_paths, check_output_suffix,
                    replaced_when_done)
from .metrics import ConfusionMatrix, ObjectScores, check_iou_threshold, match_objects
from .progress import CancelFn, ProgressFn, Reporter
from .rasters import (KIND_TAG, LABEL_IGNORE, PROBABILITY_U8_SCALE, Grid, LabelSource, is_vector, open_raster,
                      open_vector_layer, parse_building_values, written_geotiff_problem)
from .report import write_reports

ERROR_MAP_NODATA = 255
ERROR_MAP_CODES = {0: "true negative", 1: "false positive", 2: "false negative", 3: "true positive"}
# a colour table makes the four classes readable in any GIS, even without the plugin's .qml style
ERROR_MAP_COLOURS = {0: (235, 235, 235, 255), 1: (228, 26, 28, 255), 2: (55, 126, 184, 255),
                     3: (77, 175, 74, 255), ERROR_MAP_NODATA: (0, 0, 0, 0)}
# pixels per processing window: large enough that per-window overhead vanishes, small enough that the
# dozen temporary arrays of a window stay in tens of megabytes
WINDOW_PIXELS = 2 * 1024 * 1024
MAX_WINDOW_WIDTH_PX = 4096


@dataclass
class EvaluationResult:
    """Everything one evaluation measured; ``to_dict()`` is what the JSON report holds."""

    matrix: ConfusionMatrix
    objects: Optional[ObjectScores]
    pixel_area: float  # one pixel's area in square map units of the comparison grid
    area_unit: str
    grid: Grid
    excluded_px: dict[str, int]  # outside_aoi, prediction_nodata, label_nodata
    extent_fraction_compared: dict[str, Optional[float]]  # per layer: share of its extent on the grid
    inputs: dict
    parameters: dict
    threshold: Optional[float]  # the threshold applied; None for masks and polygons
    error_map_path: Optional[Path] = None
    report_html_path: Optional[Path] = None
    report_json_path: Optional[Path] = None
    seconds: float = 0.0
    # the buildings object matching left unpaired, in the comparison grid's CRS (empty without object scores):
    # predicted buildings that match no true one, and true buildings no prediction matches
    false_positive_objects: list = field(default_factory=list)
    missed_objects: list = field(default_factory=list)
    created: str = field(default_factory=lambda: datetime.datetime.now().astimezone().isoformat(timespec="seconds"))

    @property
    def scored_px(self) -> int:
        return self.matrix.total

    @property
    def grid_px(self) -> int:
        return self.grid.width * self.grid.height

    def scores(self) -> dict[str, float]:
        """Pixel scores (``iou`` is the building class's) plus object scores when they were computed."""
        scores = self.matrix.scores()
        if self.objects is not None:
            scores.update(self.objects.scores())
        return scores

    def to_dict(self) -> dict:
        """Plain JSON-able values; scores that are undefined (e.g. precision with nothing predicted) are None."""
        data = {
            "software": {"name": "U-Net Building Extractor", "version": __version__},
            "created": self.created,
            "inputs": self.inputs,
            "parameters": self.parameters,
            "threshold_applied": self.threshold,
            "grid": {"crs": self.grid.crs.to_string() if self.grid.crs else None, "crs_wkt": self.grid.crs_wkt,
                     "width_px": self.grid.width, "height_px": self.grid.height,
                     "pixel_size": list(self.grid.pixel_size), "pixel_area": self.pixel_area,
                     "area_unit": self.area_unit},
            "confusion_matrix": {"pixels": self.matrix.counts(), "area": self.matrix.areas(self.pixel_area)},
            "pixel_scores": self.matrix.scores(),
            "object_scores": None if self.objects is None else {
                "iou_threshold": self.objects.iou_threshold, **self.objects.counts(), **self.objects.scores()},
            "coverage": {"grid_px": self.grid_px, "scored_px": self.scored_px,
                         "scored_fraction_of_grid": self.scored_px / self.grid_px if self.grid_px else None,
                         **{f"{cause}_px": count for cause, count in self.excluded_px.items()},
                         "extent_fraction_compared": self.extent_fraction_compared},
            "outputs": {"error_map": _text(self.error_map_path), "report_html": _text(self.report_html_path),
                        "report_json": _text(self.report_json_path)},
            "seconds": self.seconds,
        }
        return _json_safe(data)


def evaluate(prediction: str | Path, labels: str | Path, building_values: Sequence[int] | str = (2,), *,
             threshold: Optional[float] = None, aoi: str | Path | shapely.Geometry | None = None,
             error_map_path: str | Path | None = None, report_html_path: str | Path | None = None,
             report_json_path: str | Path | None = None, object_iou_threshold: float = 0.5,
             object_scores: bool = True, min_object_area_px: float = 0.0, pixel_size: Optional[float] = None,
             progress: Optional[ProgressFn] = None, cancelled: Optional[CancelFn] = None) -> EvaluationResult:
    """Score ``prediction`` against ``labels`` (see the module docstring for inputs and rules).

    ``threshold`` applies to probability and untagged score rasters (a mask ignores it).
    ``aoi`` is a polygon layer path, or a shapely geometry in the comparison grid's CRS.
    ``pixel_size`` (map units of the prediction layer) is needed only when both inputs are polygons.
    Objects smaller than ``min_object_area_px`` pixels are left out of object matching (pixel scores
    keep them). Outputs are written under temporary names and renamed when complete.
    """
    started = time.perf_counter()
    reporter = Reporter.of(progress, cancelled)
    building_values = parse_building_values(building_values)
    prediction, labels = Path(prediction), Path(labels)
    for path, role in ((prediction, "prediction"), (labels, "label layer")):
        if not path.exists():
            raise InputError(f"The {role} '{path}' does not exist.")
    check_evaluation_outputs({"prediction": prediction, "label layer": labels,
                              "area of interest": aoi if isinstance(aoi, (str, Path)) else None},
                             error_map_path, report_html_path, report_json_path)
    if object_scores:
        check_iou_threshold(object_iou_threshold)  # before the long pixel pass, not after it

    with ExitStack() as stack:
        predicted = _Prediction(prediction, threshold)
        stack.callback(predicted.close)
        grid = _comparison_grid(predicted, labels, aoi, pixel_size)
        extent_fraction = {"prediction": _extent_fraction(prediction, grid, "prediction"),
                           "labels": _extent_fraction(labels, grid, "label layer")}
        if predicted.kind == "polygons":
            predicted.attach_grid(grid)
        truth = stack.enter_context(LabelSource(labels, building_values, grid))
        area = _AreaOfInterest(aoi, grid) if aoi is not None else None
        if area is not None:
            stack.callback(area.close)

        windows = list(_windows(grid, predicted.block_height_px))
        pixel_reporter = reporter.sub(0.0, 0.8 if object_scores else 1.0)
        matrix = ConfusionMatrix()
        excluded = {"outside_aoi": 0, "prediction_nodata": 0, "label_nodata": 0}
        predicted_pieces = _Pieces(grid) if object_scores and predicted.kind != "polygons" else None
        true_pieces = _Pieces(grid) if object_scores and truth.polygons is None else None
        # polygon inputs are clipped to the scored pixels, so both sides' objects cover the same area
        unscored_pieces = _Pieces(grid) if object_scores and None in (predicted_pieces, true_pieces) else None
        with _error_map_writer(error_map_path, grid) as error_map:
            for index, window in enumerate(windows):
                pixel_reporter.check()
                building, predicted_valid = predicted.read(window)
                label = truth.read(window)
                true_building = label == 1
                inside = area.read(window) if area is not None else None
                scored = _score_window(matrix, excluded, building, predicted_valid, true_building,
                                       label != LABEL_IGNORE, inside)
                if error_map is not None:
                    codes = true_building.view(np.uint8) << 1 | building.view(np.uint8)
                    codes[~scored] = ERROR_MAP_NODATA
                    error_map.write(codes, 1, window=window)
                if predicted_pieces is not None:
                    predicted_pieces.add(building & scored, window)
                if true_pieces is not None:
                    true_pieces.add(true_building & scored, window)
                if unscored_pieces is not None:
                    unscored_pieces.add(~scored, window)
                pixel_reporter.report((index + 1) / len(windows), "Comparing pixels")
            if not matrix.total:  # raised inside the writer's block, so no error map is left behind
                raise InputError(f"No pixel of '{prediction}' and '{labels}' can be compared: where they "
                                 "overlap, one of them (or the area of interest) leaves every pixel out. Check "
                                 "their nodata and the area of interest.")
        objects = None
        unmatched: tuple[list, list] = ([], [])
        if object_scores:
            reporter.report(0.8, "Matching buildings")
            reporter.check()
            region = shapely.box(0, 0, grid.width, grid.height)
            if unscored_pieces is not None:
                region = region.difference(shapely.union_all(np.asarray(unscored_pieces.geometries(), dtype=object)))
            predicted_objects = _objects(predicted_pieces, predicted.polygons, grid, region, min_object_area_px)
            true_objects = _objects(true_pieces, truth.polygons, grid, region, min_object_area_px)
            objects = match_objects(predicted_objects, true_objects, object_iou_threshold)
            unmatched = _unmatched(objects, predicted_objects, true_objects, grid)

    result = EvaluationResult(
        matrix=matrix, objects=objects, pixel_area=abs(grid.transform.determinant), area_unit=_area_unit(grid.crs),
        grid=grid, excluded_px=excluded, extent_fraction_compared=extent_fraction,
        inputs={"prediction": {"path": str(prediction), "kind": predicted.kind},
                "labels": {"path": str(labels), "kind": "polygons" if truth.polygons is not None else "class raster",
                           "building_values": building_values if truth.polygons is None else None},
                "aoi": None if aoi is None else (str(aoi) if isinstance(aoi, (str, Path)) else "geometry")},
        parameters={"threshold": threshold, "object_scores": object_scores,
                    "object_iou_threshold": object_iou_threshold if object_scores else None,
                    "min_object_area_px": min_object_area_px, "pixel_size": pixel_size},
        threshold=predicted.threshold,
        error_map_path=Path(error_map_path) if error_map_path else None,
        report_html_path=Path(report_html_path) if report_html_path else None,
        report_json_path=Path(report_json_path) if report_json_path else None,
        false_positive_objects=unmatched[0], missed_objects=unmatched[1])
    result.seconds = time.perf_counter() - started
    if report_html_path or report_json_path:
        write_reports(result.to_dict(), html_path=report_html_path, json_path=report_json_path)
    reporter.report(1.0, "Evaluation done")
    return result


def check_evaluation_outputs(inputs: dict, error_map_path: str | Path | None, report_html_path: str | Path | None,
                             report_json_path: str | Path | None) -> None:
    """Before any work: no output over an input or another output, each in the format its name says,
    each where a file can be written."""
    outputs = {"error map": error_map_path, "HTML report": report_html_path, "JSON report": report_json_path}
    check_output_paths(inputs, outputs)
    formats = {"error map": (GEOTIFF_SUFFIXES, "a GeoTIFF"), "HTML report": ((".html", ".htm"), "HTML"),
               "JSON report": ((".json",), "JSON")}
    for name, path in outputs.items():
        if path:
            check_output_location(path, name)
            check_output_suffix(path, *formats[name], name=name)


def _score_window(matrix: ConfusionMatrix, excluded: dict[str, int], building: np.ndarray,
                  predicted_valid: Optional[np.ndarray], true_building: np.ndarray, label_valid: np.ndarray,
                  inside: Optional[np.ndarray]) -> np.ndarray:
    """Count one window into ``matrix`` and ``excluded``; returns the scored pixels."""
    pixels = building.size
    # the exclusion causes nest (outside AOI, then prediction nodata, then label nodata), so each
    # count is a difference of two cheap counts instead of a pass over a combined code array
    if inside is not None:
        predicted_valid = inside if predicted_valid is None else predicted_valid & inside
        inside_count = int(np.count_nonzero(inside))
    else:
        inside_count = pixels
    scored = label_valid
    if predicted_valid is not None:
        scored &= predicted_valid
        predicted_count = int(np.count_nonzero(predicted_valid))
    else:
        predicted_count = pixels
    before = matrix.total
    matrix.update(building, true_building, scored)
    excluded["outside_aoi"] += pixels - inside_count
    excluded["prediction_nodata"] += inside_count - predicted_count
    excluded["label_nodata"] += predicted_count - (matrix.total - before)
    return scored


class _Prediction:
    """The prediction as building / valid pixels on the comparison grid, whatever its kind."""

    def __init__(self, path: Path, threshold: Optional[float]) -> None:
        self.path = path
        self.threshold: Optional[float] = None
        self.dataset: Optional[rasterio.io.DatasetReader] = None
        self._polygon_source: Optional[LabelSource] = None
        self._cut: Optional[float] = None  # building where value >= cut
        self._must_be_binary = False
        if is_vector(path):
            self.kind = "polygons"
            return
        self.dataset = open_raster(path, "prediction")
        try:
            self._read_kind(threshold)
        except BaseException:
            self.dataset.close()
            raise

    def _read_kind(self, threshold: Optional[float]) -> None:
        path, dataset = self.path, self.dataset
        tag = dataset.tags().get(KIND_TAG)
        if tag == "error_map":
            raise InputError(f"The prediction '{path}' is an error map from an earlier evaluation; pick the "
                             "mask or probability raster that prediction wrote.")
        if tag not in ("mask", "probability") and dataset.count != 1:
            raise InputError(f"The prediction '{path}' has {dataset.count} bands; a prediction must be a "
                             "single-band mask or probability raster (was the image picked by mistake?).")
        if tag == "mask" or (tag is None and threshold is None):
            self.kind = "mask"
            self._must_be_binary = tag is None
        elif tag == "probability":
            self.kind = "probability"
            self.threshold = 0.5 if threshold is None else float(threshold)
            if not 0.0 <= self.threshold <= 1.0:
                raise InputError(f"The threshold for the probability raster '{path}' must be between 0 and 1; "
                                 f"got {self.threshold}.")
            if dataset.dtypes[0] == "uint8":
                # stored value v means p = v / 254: the cut is the first level whose p reaches the threshold,
                # found on the decoded levels themselves so that it agrees with p >= threshold exactly
                levels = np.arange(PROBABILITY_U8_SCALE + 1) / PROBABILITY_U8_SCALE
                self._cut = float(np.searchsorted(levels, self.threshold, side="left"))
            else:
                self._cut = self.threshold
        else:
            self.kind = "thresholded raster"
            self.threshold = self._cut = float(threshold)

    @property
    def block_height_px(self) -> int:
        return self.dataset.block_shapes[0][0] if self.dataset is not None else 512

    @property
    def polygons(self) -> Optional[list]:
        return self._polygon_source.polygons if self._polygon_source is not None else None

    def attach_grid(self, grid: Grid) -> None:
        """A polygon prediction is rasterized onto the comparison grid, like polygon labels."""
        self._polygon_source = LabelSource(self.path, [1], grid, role="prediction")

    def read(self, window: Window) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """(building, valid) boolean arrays of a window; valid is None when every pixel has data."""
        if self._polygon_source is not None:
            return self._polygon_source.read(window) == 1, None
        values = self.dataset.read(1, window=window)
        valid = _valid_pixels(self.dataset, values, window)
        if self._must_be_binary:
            odd = (values != 0) & (values != 1)
            if valid is not None:
                odd &= valid
            if odd.any():
                raise InputError(f"The prediction '{self.path}' holds values other than 0 and 1, so it is not a "
                                 "mask; give a threshold to score it as a probability or score raster.")
        building = values == 1 if self._cut is None else values >= self._cut
        return building, valid

    def close(self) -> None:
        if self.dataset is not None:
            self.dataset.close()
        if self._polygon_source is not None:
            self._polygon_source.close()


def _valid_pixels(dataset: rasterio.io.DatasetReader, values: np.ndarray, window: Window) -> Optional[np.ndarray]:
    """Band 1's data mask for a window, None when all pixels are valid. A plain nodata value is compared
    here directly: it gives what GDAL's mask band gives, several times faster."""
    flags = dataset.mask_flag_enums[0]
    if MaskFlags.all_valid in flags:
        return None
    if list(flags) == [MaskFlags.nodata]:
        nodata = values.dtype.type(dataset.nodata)
        return ~np.isnan(values) if np.isnan(nodata) else values != nodata
    return dataset.read_masks(1, window=window) > 0


class _AreaOfInterest:
    """The area-of-interest polygon(s) as a boolean pixel mask per window."""

    def __init__(self, aoi: str | Path | shapely.Geometry, grid: Grid) -> None:
        self._source: Optional[LabelSource] = None
        if isinstance(aoi, (str, Path)):
            if not is_vector(aoi):
                raise InputError(f"The area of interest '{aoi}' must be a polygon layer (GeoPackage, GeoJSON, "
                                 "shapefile...).")
            self._source = LabelSource(aoi, [1], grid, role="area of interest")
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
        return rasterize(self._shapes, out_shape=(sub.height, sub.width), transform=sub.transform,
                         fill=0, dtype="uint8").view(bool)

    def close(self) -> None:
        if self._source is not None:
            self._source.close()


def _comparison_grid(predicted: _Prediction, labels: Path, aoi, pixel_size: Optional[float]) -> Grid:
    if predicted.dataset is not None:
        grid = Grid.of(predicted.dataset)
        _require_overlap(labels, "label layer", grid, predicted.path)
        return grid
    if not is_vector(labels):
        with open_raster(labels, "label layer") as dataset:
            grid = Grid.of(dataset)
        _require_overlap(predicted.path, "prediction", grid, labels)
        return grid
    if pixel_size is None or not pixel_size > 0:
        raise InputError(f"Both the prediction '{predicted.path}' and the labels '{labels}' are polygon layers: "
                         "give a pixel size (in the prediction layer's map units, e.g. 0.25 for 25 cm) to "
                         "compare them on a raster grid.")
    crs = _vector_extent(predicted.path, "prediction")[1]
    bounds, label_crs = _vector_extent(labels, "label layer")
    if bounds is None:
        raise InputError(f"The label layer '{labels}' has no feature, so it gives no area to score; add an "
                         "area of interest or pick a label layer that covers the area.")
    bounds = transform_bounds(label_crs, crs, *bounds) if label_crs != crs else bounds
    if isinstance(aoi, (str, Path)) and is_vector(aoi):
        aoi_bounds, aoi_crs = _vector_extent(Path(aoi), "area of interest")
        if aoi_bounds is not None:
            aoi_bounds = transform_bounds(aoi_crs, crs, *aoi_bounds) if aoi_crs != crs else aoi_bounds
            bounds = (max(bounds[0], aoi_bounds[0]), max(bounds[1], aoi_bounds[1]),
                      min(bounds[2], aoi_bounds[2]), min(bounds[3], aoi_bounds[3]))
    elif isinstance(aoi, shapely.Geometry) and not aoi.is_empty:
        left, bottom, right, top = aoi.bounds
        bounds = (max(bounds[0], left), max(bounds[1], bottom), min(bounds[2], right), min(bounds[3], top))
    if bounds[0] >= bounds[2] or bounds[1] >= bounds[3]:
        raise InputError(f"The area of interest does not overlap the label layer '{labels}'.")
    left, bottom, right, top = bounds
    width = max(1, math.ceil((right - left) / pixel_size))
    height = max(1, math.ceil((top - bottom) / pixel_size))
    grid = Grid(crs.to_wkt(), Affine(pixel_size, 0.0, left, 0.0, -pixel_size, top), width, height)
    _require_overlap(predicted.path, "prediction", grid, labels)
    return grid


def _layer_extent(path: Path, role: str) -> tuple[Optional[tuple], Optional[CRS]]:
    """(left, bottom, right, top) and CRS of a raster or polygon layer; bounds None for an empty layer."""
    if is_vector(path):
        return _vector_extent(path, role)
    with open_raster(path, role) as dataset:
        return tuple(dataset.bounds), dataset.crs


def _vector_extent(path: Path, role: str) -> tuple[Optional[tuple], CRS]:
    _source, layer, crs = open_vector_layer(path, role)
    if layer.GetFeatureCount() == 0:
        return None, crs
    left, right, bottom, top = layer.GetExtent()
    return (left, bottom, right, top), crs


def _grid_bounds_of(path: Path, role: str, grid: Grid) -> Optional[tuple]:
    bounds, crs = _layer_extent(path, role)
    if bounds is None:
        return None
    if crs is not None and grid.crs is not None and crs != grid.crs:
        bounds = transform_bounds(crs, grid.crs, *bounds)
    return bounds


def _require_overlap(path: Path, role: str, grid: Grid, other: Path) -> None:
    bounds = _grid_bounds_of(path, role, grid)
    if bounds is None:
        return  # an empty polygon layer: nothing there, background everywhere
    left, bottom, right, top = grid.bounds
    if bounds[0] >= right or bounds[2] <= left or bounds[1] >= top or bounds[3] <= bottom:
        raise InputError(f"The {role} '{path}' does not overlap '{other}': nothing can be compared. Check that "
                         "both cover the same area and carry the right coordinate reference system.")


def _extent_fraction(path: Path, grid: Grid, role: str) -> Optional[float]:
    """Share of a layer's extent (its bounding box, in the grid's CRS) that lies on the comparison grid."""
    bounds = _grid_bounds_of(path, role, grid)
    if bounds is None:
        return None
    box, grid_box = shapely.box(*bounds), shapely.box(*grid.bounds)
    if box.area == 0:
        return 1.0 if box.intersects(grid_box) else 0.0
    return box.intersection(grid_box).area / box.area


def _windows(grid: Grid, block_height_px: int) -> Iterator[Window]:
    """Windows over the grid, whole blocks high, row by row; wide grids are cut into columns too."""
    width_px = grid.width if grid.width <= MAX_WINDOW_WIDTH_PX else MAX_WINDOW_WIDTH_PX
    rows_px = max(block_height_px, WINDOW_PIXELS // width_px // block_height_px * block_height_px)
    for row in range(0, grid.height, rows_px):
        for column in range(0, grid.width, width_px):
            yield Window(column, row, min(width_px, grid.width - column), min(rows_px, grid.height - row))


@contextmanager
def _error_map_writer(path: str | Path | None, grid: Grid):
    """An error-map GeoTIFF open for writing under a temporary name, renamed when the block exits cleanly."""
    if path is None:
        yield None
        return
    profile = dict(driver="GTiff", width=grid.width, height=grid.height, count=1, dtype="uint8",
                   crs=grid.crs, transform=grid.transform, nodata=ERROR_MAP_NODATA, tiled=True,
                   blockxsize=512, blockysize=512, compress="deflate", zlevel=1, num_threads="all_cpus",
                   bigtiff="if_safer")
    def problem(written: Path) -> Optional[str]:
        return written_geotiff_problem(written, grid.width, grid.height)

    with replaced_when_done(path, ".part.tif", verify=problem) as temporary, \
            rasterio.open(temporary, "w", **profile) as dataset:
        dataset.update_tags(**{KIND_TAG: "error_map"},
                            **{f"CODE_{code}": name for code, name in ERROR_MAP_CODES.items()})
        dataset.write_colormap(1, ERROR_MAP_COLOURS)
        yield dataset


class _Pieces:
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
        found = np.asarray([shapely.geometry.shape(geometry) for geometry, _ in shapes(
            building.view(np.uint8), mask=building, connectivity=4, transform=Affine.translation(column, row))],
            dtype=object)
        left, top, right, bottom = shapely.bounds(found).T
        cut = (((left <= column) & (column > 0)) | ((top <= row) & (row > 0))
               | ((right >= column + window.width) & (column + window.width < self._grid.width))
               | ((bottom >= row + window.height) & (row + window.height < self._grid.height)))
        self._whole.extend(found[~cut])
        self._cut.extend(found[cut])

    def geometries(self) -> list[shapely.Geometry]:
        joined = shapely.union_all(np.asarray(self._cut, dtype=object)) if self._cut else None
        parts = list(shapely.get_parts(joined)) if joined is not None and not joined.is_empty else []
        return self._whole + parts


def _to_pixels(geometries, grid: Grid):
    inverse = ~grid.transform

    def transform(xy: np.ndarray) -> np.ndarray:
        x, y = xy[:, 0], xy[:, 1]
        return np.column_stack([inverse.a * x + inverse.b * y + inverse.c, inverse.d * x + inverse.e * y + inverse.f])

    return shapely.transform(geometries, transform)


def _objects(pieces: Optional[_Pieces], polygons: Optional[list], grid: Grid, region: shapely.Geometry,
             min_area_px: float) -> list[shapely.Geometry]:
    """Buildings in pixel coordinates: polygonized raster regions, or a layer's features clipped to the region."""
    if pieces is not None:
        found = np.asarray(pieces.geometries(), dtype=object)
    else:
        features = np.asarray([shapely.geometry.shape(shape) for shape in polygons or []], dtype=object)
        found = shapely.intersection(shapely.make_valid(_to_pixels(features, grid)), region)
    if not len(found):
        return []
    areas = shapely.area(found)
    return list(found[(areas > 0) & (areas >= min_area_px)])


def _unmatched(objects: ObjectScores, predicted: list, truth: list, grid: Grid) -> tuple[list, list]:
    """(false positives, missed buildings): the objects ``match_objects`` paired with nothing, in map
    coordinates of the grid."""
    paired_predicted = {p for p, _, _ in objects.pairs}
    paired_true = {t for _, t, _ in objects.pairs}
    false_positives = [shape for index, shape in enumerate(predicted) if index not in paired_predicted]
    missed = [shape for index, shape in enumerate(truth) if index not in paired_true]
    return _to_map(false_positives, grid), _to_map(missed, grid)


def _to_map(geometries: list, grid: Grid) -> list:
    """Pixel-coordinate geometries -> the grid's map coordinates (the inverse of ``_to_pixels``)."""
    if not geometries:
        return []
    forward = grid.transform

    def transform(xy: np.ndarray) -> np.ndarray:
        x, y = xy[:, 0], xy[:, 1]
        return np.column_stack([forward.a * x + forward.b * y + forward.c, forward.d * x + forward.e * y + forward.f])

    return [shape for shape in map(_polygonal, shapely.transform(np.asarray(geometries, dtype=object), transform))
            if not shape.is_empty]


def _polygonal(shape: shapely.Geometry) -> shapely.Geometry:
    """Polygons stay; a collection (a polygon clipped to the scored region) keeps its polygonal parts."""
    if shape.geom_type in ("Polygon", "MultiPolygon"):
        return shape
    polygons = []
    for part in shapely.get_parts(shape):
        polygons.extend(shapely.get_parts(part) if part.geom_type == "MultiPolygon" else
                        [part] if part.geom_type == "Polygon" else [])
    return shapely.MultiPolygon(polygons)


def _area_unit(crs: Optional[CRS]) -> str:
    if crs is None:
        return "square map units"
    if crs.is_geographic:
        return "square degrees"
    units = crs.linear_units
    return "m²" if units in ("metre", "meter", "m") else f"square {units}"


def _text(path: Optional[Path]) -> Optional[str]:
    return None if path is None else str(path)


def _json_safe(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    if isinstance(value, (np.integer, np.floating)):
        return _json_safe(value.item())
    return value
