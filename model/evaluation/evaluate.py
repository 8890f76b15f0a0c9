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
at ``pixel_size_map_units``, in the prediction layer's CRS. Labels are aligned onto that grid (nearest
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

This module scores and writes; ``comparison.py`` reads the inputs onto the comparison grid and
``object_polygons.py`` turns building regions into objects.
"""

from __future__ import annotations

import datetime
import math
import time
from collections.abc import Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import shapely
import shapely.geometry

from .. import __version__
from ..choices import DEFAULT_BUILDING_VALUES, parse_building_values
from ..errors import InputError
from ..io.files import (
    GEOTIFF_SUFFIXES,
    check_output_location,
    check_output_paths,
    check_output_suffix,
    replaced_when_done,
)
from ..io.ground import ground_pixel_size_m
from ..io.outputs import create_geotiff
from ..io.rasters import (
    LABEL_IGNORE,
    Grid,
    LabelSource,
    written_geotiff_problem,
)
from ..progress import CancelFn, ProgressFn, Reporter
from .comparison import AreaOfInterest, PredictionSource, comparison_grid, comparison_windows, extent_fraction
from .metrics import ConfusionMatrix, ObjectScores, check_iou_threshold, match_objects
from .object_polygons import BuildingRegions, building_objects, unmatched_objects
from .report import write_reports
from .score_warnings import score_warnings

ERROR_MAP_NODATA = 255
ERROR_MAP_CODES = {0: "true negative", 1: "false positive", 2: "false negative", 3: "true positive"}
# a colour table makes the four classes readable in any GIS, even without the plugin's .qml style
ERROR_MAP_COLOURS = {
    0: (235, 235, 235, 255),
    1: (228, 26, 28, 255),
    2: (55, 126, 184, 255),
    3: (77, 175, 74, 255),
    ERROR_MAP_NODATA: (0, 0, 0, 0),
}


@dataclass
class EvaluationResult:
    """Everything one evaluation measured; ``to_dict()`` is what the JSON report holds."""

    matrix: ConfusionMatrix
    objects: ObjectScores | None
    pixel_area: float  # one pixel's ground area in m² (square map units for a grid without a CRS)
    area_unit: str  # "m²", or "square map units" without a CRS
    grid: Grid
    excluded_px: dict[str, int]  # outside_aoi, prediction_nodata, label_nodata
    extent_fraction_compared: dict[str, float | None]  # per layer: share of its extent on the grid
    inputs: dict
    parameters: dict
    threshold: float | None  # the threshold applied; None for masks and polygons
    error_map_path: Path | None = None
    report_html_path: Path | None = None
    report_json_path: Path | None = None
    seconds: float = 0.0
    # the buildings object matching left unpaired, in the comparison grid's CRS (empty without object scores):
    # predicted buildings that match no true one, and true buildings no prediction matches
    false_positive_objects: list = field(default_factory=list)
    missed_objects: list = field(default_factory=list)
    # why scores are undefined (n/a) or can only be 0, one sentence each (``score_warnings``)
    warnings: list[str] = field(default_factory=list)
    created: str = field(default_factory=lambda: datetime.datetime.now().astimezone().isoformat(timespec="seconds"))

    def ground_area(self, shape: shapely.Geometry) -> float:
        """The area of a polygon in the grid's CRS, in ``area_unit`` (m² on the ground where it has a CRS)."""
        return float(shape.area) * self.pixel_area / abs(self.grid.transform.determinant)

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
            "warnings": self.warnings,
            "grid": {
                "crs": self.grid.crs.to_string() if self.grid.crs else None,
                "crs_wkt": self.grid.crs_wkt,
                "width_px": self.grid.width,
                "height_px": self.grid.height,
                "pixel_size": list(self.grid.pixel_size_map_units),
                "pixel_area": self.pixel_area,
                "area_unit": self.area_unit,
            },
            "confusion_matrix": {"pixels": self.matrix.counts(), "area": self.matrix.areas(self.pixel_area)},
            "pixel_scores": self.matrix.scores(),
            "object_scores": None
            if self.objects is None
            else {"iou_threshold": self.objects.iou_threshold, **self.objects.counts(), **self.objects.scores()},
            "coverage": {
                "grid_px": self.grid_px,
                "scored_px": self.scored_px,
                "scored_fraction_of_grid": self.scored_px / self.grid_px if self.grid_px else None,
                **{f"{cause}_px": count for cause, count in self.excluded_px.items()},
                "extent_fraction_compared": self.extent_fraction_compared,
            },
            "outputs": {
                "error_map": _text(self.error_map_path),
                "report_html": _text(self.report_html_path),
                "report_json": _text(self.report_json_path),
            },
            "seconds": self.seconds,
        }
        return _json_safe(data)


def evaluate(
    prediction: str | Path,
    labels: str | Path,
    building_values: Sequence[int] | str = DEFAULT_BUILDING_VALUES,
    *,
    threshold: float | None = None,
    aoi: str | Path | shapely.Geometry | None = None,
    error_map_path: str | Path | None = None,
    report_html_path: str | Path | None = None,
    report_json_path: str | Path | None = None,
    object_iou_threshold: float = 0.5,
    object_scores: bool = True,
    min_object_area_px: float = 0.0,
    pixel_size_map_units: float | None = None,
    progress: ProgressFn | None = None,
    cancelled: CancelFn | None = None,
) -> EvaluationResult:
    """Score ``prediction`` against ``labels`` (see the module docstring for inputs and rules).

    ``threshold`` applies to probability and untagged score rasters (a mask ignores it).
    ``aoi`` is a polygon layer path, or a shapely geometry in the comparison grid's CRS.
    ``pixel_size_map_units`` (of the prediction layer's CRS) is needed only when both inputs are polygons.
    Objects smaller than ``min_object_area_px`` pixels are left out of object matching (pixel scores
    keep them). Outputs are written under temporary names and renamed when complete. Class-raster labels
    that cannot be the buildings meant (``label_checks``) are refused before any output is kept; scores
    left undefined or 0 by what was scored get a reason in ``warnings``.
    """
    started = time.perf_counter()
    reporter = Reporter.of(progress, cancelled)
    building_values = parse_building_values(building_values)
    prediction, labels = Path(prediction), Path(labels)
    for path, role in ((prediction, "prediction"), (labels, "label layer")):
        if not path.exists():
            raise InputError(f"The {role} '{path}' does not exist.")
    check_evaluation_outputs(
        {
            "prediction": prediction,
            "label layer": labels,
            "area of interest": aoi if isinstance(aoi, (str, Path)) else None,
        },
        error_map_path,
        report_html_path,
        report_json_path,
    )
    if object_scores:
        check_iou_threshold(object_iou_threshold)  # before the long pixel pass, not after it

    with ExitStack() as stack:
        predicted = PredictionSource(prediction, threshold)
        stack.callback(predicted.close)
        grid = comparison_grid(predicted, labels, aoi, pixel_size_map_units)
        fractions = {
            "prediction": extent_fraction(prediction, grid, "prediction"),
            "labels": extent_fraction(labels, grid, "label layer"),
        }
        if predicted.kind == "polygons":
            predicted.attach_grid(grid)
        truth = stack.enter_context(LabelSource(labels, building_values, grid))
        area = AreaOfInterest(aoi, grid) if aoi is not None else None
        if area is not None:
            stack.callback(area.close)

        windows = list(comparison_windows(grid, predicted.block_height_px))
        pixel_reporter = reporter.sub(0.0, 0.8 if object_scores else 1.0)
        matrix = ConfusionMatrix()
        excluded = {"outside_aoi": 0, "prediction_nodata": 0, "label_nodata": 0}
        predicted_regions = BuildingRegions(grid) if object_scores and predicted.kind != "polygons" else None
        true_regions = BuildingRegions(grid) if object_scores and truth.polygons is None else None
        # polygon inputs are clipped to the scored pixels, so both sides' objects cover the same area
        unscored_regions = (
            BuildingRegions(grid) if object_scores and None in (predicted_regions, true_regions) else None
        )
        with _error_map_writer(error_map_path, grid) as error_map:
            for index, window in enumerate(windows):
                pixel_reporter.check()
                building, predicted_valid = predicted.read(window)
                label = truth.read(window)
                true_building = label == 1
                inside = area.read(window) if area is not None else None
                scored = _score_window(
                    matrix, excluded, building, predicted_valid, true_building, label != LABEL_IGNORE, inside
                )
                if error_map is not None:
                    codes = true_building.view(np.uint8) << 1 | building.view(np.uint8)
                    codes[~scored] = ERROR_MAP_NODATA
                    error_map.write(codes, 1, window=window)
                if predicted_regions is not None:
                    predicted_regions.add(building & scored, window)
                if true_regions is not None:
                    true_regions.add(true_building & scored, window)
                if unscored_regions is not None:
                    unscored_regions.add(~scored, window)
                pixel_reporter.report((index + 1) / len(windows), "Comparing pixels")
            if not matrix.total:  # raised inside the writer's block, so no error map is left behind
                raise InputError(
                    f"No pixel of '{prediction}' and '{labels}' can be compared: where they "
                    "overlap, one of them (or the area of interest) leaves every pixel out. Check "
                    "their nodata and the area of interest."
                )
            truth.check_values()  # judged on every label pixel read; inside the writer's block too
        objects = None
        unmatched: tuple[list, list] = ([], [])
        if object_scores:
            reporter.report(0.8, "Matching buildings")
            reporter.check()
            region = shapely.box(0, 0, grid.width, grid.height)
            if unscored_regions is not None:
                region = region.difference(shapely.union_all(np.asarray(unscored_regions.geometries, dtype=object)))
            predicted_objects = building_objects(
                predicted_regions, predicted.polygons, grid, region, min_object_area_px
            )
            true_objects = building_objects(true_regions, truth.polygons, grid, region, min_object_area_px)
            objects = match_objects(predicted_objects, true_objects, object_iou_threshold)
            unmatched = unmatched_objects(objects, predicted_objects, true_objects, grid)

    result = EvaluationResult(
        matrix=matrix,
        objects=objects,
        pixel_area=ground_pixel_area(grid),
        area_unit="m²" if grid.crs else "square map units",
        grid=grid,
        excluded_px=excluded,
        extent_fraction_compared=fractions,
        inputs={
            "prediction": {"path": str(prediction), "kind": predicted.kind},
            "labels": {
                "path": str(labels),
                "kind": "polygons" if truth.polygons is not None else "class raster",
                "building_values": building_values if truth.polygons is None else None,
            },
            "aoi": None if aoi is None else (str(aoi) if isinstance(aoi, (str, Path)) else "geometry"),
        },
        parameters={
            "threshold": threshold,
            "object_scores": object_scores,
            "object_iou_threshold": object_iou_threshold if object_scores else None,
            "min_object_area_px": min_object_area_px,
            "pixel_size": pixel_size_map_units,
        },
        threshold=predicted.threshold,
        error_map_path=Path(error_map_path) if error_map_path else None,
        report_html_path=Path(report_html_path) if report_html_path else None,
        report_json_path=Path(report_json_path) if report_json_path else None,
        false_positive_objects=unmatched[0],
        missed_objects=unmatched[1],
    )
    result.warnings = score_warnings(result.matrix, result.objects, result.scores())
    result.seconds = time.perf_counter() - started
    if report_html_path or report_json_path:
        write_reports(result.to_dict(), html_path=report_html_path, json_path=report_json_path)
    reporter.report(1.0, "Evaluation done")
    return result


def check_evaluation_outputs(
    inputs: dict,
    error_map_path: str | Path | None,
    report_html_path: str | Path | None,
    report_json_path: str | Path | None,
) -> None:
    """Before any work: no output over an input or another output, each in the format its name says,
    each where a file can be written."""
    outputs = {"error map": error_map_path, "HTML report": report_html_path, "JSON report": report_json_path}
    check_output_paths(inputs, outputs)
    formats = {
        "error map": (GEOTIFF_SUFFIXES, "a GeoTIFF"),
        "HTML report": ((".html", ".htm"), "HTML"),
        "JSON report": ((".json",), "JSON"),
    }
    for name, path in outputs.items():
        if path:
            check_output_location(path, name)
            check_output_suffix(path, *formats[name], name=name)


def _score_window(
    matrix: ConfusionMatrix,
    excluded: dict[str, int],
    building: np.ndarray,
    predicted_valid: np.ndarray | None,
    true_building: np.ndarray,
    label_valid: np.ndarray,
    inside: np.ndarray | None,
) -> np.ndarray:
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


@contextmanager
def _error_map_writer(path: str | Path | None, grid: Grid):
    """An error-map GeoTIFF open for writing under a temporary name, renamed when the block exits cleanly."""
    if path is None:
        yield None
        return

    def problem(written: Path) -> str | None:
        return written_geotiff_problem(written, grid.width, grid.height)

    with (
        replaced_when_done(path, ".part.tif", verify=problem) as temporary,
        create_geotiff(temporary, grid, "uint8", ERROR_MAP_NODATA, "error_map") as dataset,
    ):
        dataset.update_tags(**{f"CODE_{code}": name for code, name in ERROR_MAP_CODES.items()})
        dataset.write_colormap(1, ERROR_MAP_COLOURS)
        yield dataset


def ground_pixel_area(grid: Grid) -> float:
    """One pixel's area on the ground in m² (Web Mercator, feet and degrees included: ``ground.py``);
    in square map units for a grid without a CRS."""
    ground = ground_pixel_size_m(grid.crs, grid.transform, grid.width, grid.height)
    return ground[0] * ground[1] if ground else abs(grid.transform.determinant)


def _text(path: Path | None) -> str | None:
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
