"""Evaluation reports: a self-contained HTML page for people and a JSON file for programs.

Both are made from ``EvaluationResult.to_dict()``, so they always hold the same numbers. Every piece of
text that comes from outside (paths, kinds, CRS) is HTML-escaped.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from ..io.files import replaced_when_done

# (key in pixel_scores, name spelled out, how it is computed)
PIXEL_SCORES = (
    ("accuracy", "Overall accuracy", "(TP + TN) / all scored pixels"),
    ("precision", "Building precision (user's accuracy)", "TP / (TP + FP)"),
    ("recall", "Building recall (producer's accuracy)", "TP / (TP + FN)"),
    ("f1", "Building F1 score", "2 TP / (2 TP + FP + FN)"),
    ("iou", "Building IoU (intersection over union of the building class)", "TP / (TP + FP + FN)"),
    ("kappa", "Cohen's kappa", "agreement beyond chance"),
    ("background_iou", "Background IoU (non-building class only)", "TN / (TN + FP + FN)"),
    ("mean_iou", "Mean IoU (average of building and background IoU)", "(building IoU + background IoU) / 2"),
)
OBJECT_SCORES = (
    ("object_precision", "Object precision", "matched / predicted buildings"),
    ("object_recall", "Object recall", "matched / true buildings"),
    ("object_f1", "Object F1 score", "2 matched / (predicted + true buildings)"),
    ("object_mean_matched_iou", "Mean IoU of matched buildings", "average IoU over matched pairs"),
)
OBJECT_COUNTS = (
    ("predicted_objects", "Predicted buildings"),
    ("true_objects", "True buildings"),
    ("matched_objects", "Matched pairs (true positives)"),
    ("false_positive_objects", "Unmatched predicted buildings (false positives)"),
    ("false_negative_objects", "Unmatched true buildings (false negatives)"),
)

STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; max-width: 60em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #bbb; padding: 0.3em 0.7em; text-align: left; vertical-align: top; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f0f0f0; }
.matrix td.number { min-width: 10em; }
.note { color: #666; font-size: 0.9em; }
.area { color: #666; font-size: 0.85em; }
.warning { color: #a40000; font-weight: bold; }
"""


def write_reports(data: dict, html_path: str | Path | None = None, json_path: str | Path | None = None) -> None:
    """Write the HTML and/or JSON report of an evaluation's ``to_dict()``."""
    if html_path:
        atomic_write_text(Path(html_path), html_report(data))
    if json_path:
        atomic_write_text(Path(json_path), json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def atomic_write_text(path: Path, text: str) -> None:
    """Write under a temporary name beside ``path`` and rename, so no half-written report is ever seen."""
    with replaced_when_done(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def html_report(data: dict) -> str:
    counts = data["confusion_matrix"]["pixels"]
    areas = data["confusion_matrix"]["area"]
    unit = data["grid"]["area_unit"]
    sections = [
        "<h1>Building extraction accuracy</h1>",
        f"<p class='note'>{_e(data['created'])} &middot; {_e(data['software']['name'])} "
        f"{_e(data['software']['version'])}</p>",
        *(f"<p class='warning'>{_e(warning)}</p>" for warning in data["warnings"]),
        "<h2>Confusion matrix (pixels)</h2>",
        _matrix_table(counts, areas, unit),
        "<p class='note'>Building is the positive class. TN, FP, FN, TP: true negatives, false positives, false "
        "negatives, true positives.</p>",
        "<h2>Pixel scores</h2>",
        _scores_table(data["pixel_scores"], PIXEL_SCORES),
    ]
    objects = data.get("object_scores")
    if objects:
        sections += [
            f"<h2>Object scores (a predicted building matches one true building when their IoU &ge; "
            f"{_number(objects['iou_threshold'])})</h2>",
            _scores_table(objects, OBJECT_SCORES),
            _rows_table([(name, _count(objects[key])) for key, name in OBJECT_COUNTS]),
        ]
    coverage = data["coverage"]
    fractions = coverage["extent_fraction_compared"]
    sections += [
        "<h2>What was scored</h2>",
        _rows_table(
            [
                (
                    "Comparison grid",
                    f"{_count(data['grid']['width_px'])} &times; {_count(data['grid']['height_px'])} "
                    f"pixels of {_e(_pixel_size(data['grid']['pixel_size']))} map units, "
                    f"{_e(data['grid']['crs'] or 'no coordinate reference system')}",
                ),
                (
                    "Pixels scored",
                    f"{_count(coverage['scored_px'])} ({_percent(coverage['scored_fraction_of_grid'])} "
                    f"of the grid; {_area(coverage['scored_px'] * data['grid']['pixel_area'], unit)})",
                ),
                ("Left out: outside the area of interest", _count(coverage["outside_aoi_px"])),
                ("Left out: no data in the prediction", _count(coverage["prediction_nodata_px"])),
                ("Left out: no data in the labels", _count(coverage["label_nodata_px"])),
                ("Share of the prediction's extent compared", _percent(fractions["prediction"])),
                ("Share of the labels' extent compared", _percent(fractions["labels"])),
            ]
        ),
        "<h2>Inputs</h2>",
        _rows_table(_flatten(data["inputs"])),
        "<h2>Parameters</h2>",
        _rows_table(_flatten({**data["parameters"], "threshold applied": data["threshold_applied"]})),
        "<h2>Outputs</h2>",
        _rows_table(_flatten({**data["outputs"], "seconds": data["seconds"]})),
    ]
    body = "\n".join(sections)
    return (
        f"<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
        f"<title>Building extraction accuracy</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}\n"
        f"</body>\n</html>\n"
    )


def _matrix_table(counts: dict, areas: dict, unit: str) -> str:
    """Laid out like the paper's Table 2: rows are the truth, columns the prediction."""

    def cell(key: str) -> str:
        return (
            f"<td class='number'>{key.upper()} {_count(counts[key])}<br>"
            f"<span class='area'>{_area(areas[key], unit)}</span></td>"
        )

    def total(*keys: str) -> str:
        return (
            f"<td class='number'>{_count(sum(counts[k] for k in keys))}<br>"
            f"<span class='area'>{_area(sum(areas[k] for k in keys), unit)}</span></td>"
        )

    return (
        "<table class='matrix'>\n"
        "<tr><th></th><th>Predicted non-building</th><th>Predicted building</th><th>Total</th></tr>\n"
        f"<tr><th>True non-building</th>{cell('tn')}{cell('fp')}{total('tn', 'fp')}</tr>\n"
        f"<tr><th>True building</th>{cell('fn')}{cell('tp')}{total('fn', 'tp')}</tr>\n"
        f"<tr><th>Total</th>{total('tn', 'fn')}{total('fp', 'tp')}{total('tn', 'fp', 'fn', 'tp')}</tr>\n"
        "</table>"
    )


def _scores_table(values: dict, rows: tuple) -> str:
    lines = ["<table>", "<tr><th>Score</th><th>Value</th><th>Computed as</th></tr>"]
    lines += [
        f"<tr><td>{_e(name)}</td><td class='number'>{_number(values.get(key))}</td><td>{_e(how)}</td></tr>"
        for key, name, how in rows
    ]
    return "\n".join(lines + ["</table>"])


def _rows_table(rows: list[tuple[str, str]]) -> str:
    """Two-column table; values are already HTML (numbers formatted here, text escaped by the caller)."""
    return "\n".join(
        ["<table>"] + [f"<tr><th>{_e(name)}</th><td>{value}</td></tr>" for name, value in rows] + ["</table>"]
    )


def _flatten(values: dict, prefix: str = "") -> list[tuple[str, str]]:
    rows = []
    for key, value in values.items():
        name = f"{prefix}{key}".replace("_", " ")
        if isinstance(value, dict):
            rows += _flatten(value, f"{name} ")
        elif isinstance(value, list):
            rows.append((name, _e(", ".join(str(item) for item in value))))
        elif isinstance(value, float):
            rows.append((name, _number(value)))
        else:
            rows.append((name, "&ndash;" if value is None else _e(value)))
    return rows


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _count(value: int | None) -> str:
    return "n/a" if value is None else f"{value:,}"


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def _area(value: float, unit: str) -> str:
    return f"{value:,.1f} {_e(unit)}"


def _pixel_size(size: list) -> str:
    return " x ".join(f"{value:g}" for value in size)


def text_report(data: dict) -> str:
    """The confusion matrix laid out like the paper's Table 2 and the scores, for a terminal."""
    counts = data["confusion_matrix"]["pixels"]
    width = max(12, *(len(f"{value:,}") for value in counts.values()))
    lines = [
        f"{'':<20}{'predicted non-building':>{width + 10}}{'predicted building':>{width + 8}}",
        f"{'true non-building':<20}{counts['tn']:>{width + 10},}{counts['fp']:>{width + 8},}",
        f"{'true building':<20}{counts['fn']:>{width + 10},}{counts['tp']:>{width + 8},}",
        "",
    ]
    scores = data["pixel_scores"]
    for key, name, _formula in PIXEL_SCORES:
        lines.append(f"{name:<68}{_number(scores.get(key)):>10}")
    objects = data.get("object_scores")
    if objects:
        for key, name, _formula in OBJECT_SCORES:
            lines.append(
                f"{name + ' (IoU >= ' + str(objects['iou_threshold']) + ')':<68}{_number(objects.get(key)):>10}"
            )
    return "\n".join(lines + [f"Warning: {warning}" for warning in data.get("warnings", [])])  # older JSON: none
