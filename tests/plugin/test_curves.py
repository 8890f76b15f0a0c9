"""The dock's live training curves: the log lines of their records, batch reports within an epoch,
the starting model's epoch 0, the table without matplotlib, and their shape at a narrow dock's width."""

from __future__ import annotations

import logging
import math
import sys
import warnings

import pytest
from qgis.PyQt.QtCore import QCoreApplication

from .test_dock import dock  # noqa: F401  (the fixture)

BATCH = {"epoch": 2, "batch": 12, "batches_per_epoch": 75, "train_loss": 0.4123, "elapsed_s": 41.2}
# as the engine writes them: an epoch record, and the starting model's score before any training
EPOCH = {
    "epoch": 3,
    "train_loss": 0.4123,
    "train_batches": 75,
    "train_accuracy": 0.9012,
    "train_iou": 0.6,
    "learning_rate": 0.000234,
    "val_loss": 0.5,
    "val_accuracy": 0.875,
    "val_precision": 0.8,
    "val_recall": 0.7,
    "val_f1": 0.7467,
    "val_iou": 0.5956,
    "val_threshold": 0.45,
    "val_iou_tuned": 0.61,
    "seconds": 61.8,
}
EPOCH_0 = {key: value for key, value in EPOCH.items() if key.startswith("val_")} | {"epoch": 0, "seconds": 12.5}


def batches(epoch: int, count: int, batches_per_epoch: int = 4) -> list[dict]:
    """The first ``count`` reports of ``epoch``, a loss of 1 / batch."""
    return [
        {
            "epoch": epoch,
            "batch": batch,
            "batches_per_epoch": batches_per_epoch,
            "train_loss": 1 / batch,
            "elapsed_s": 3.0,
        }
        for batch in range(1, count + 1)
    ]


def drawn(curves) -> dict:
    """The drawn lines by label, of both panels."""
    return {line.get_label(): line for axes in curves.figure.axes for line in axes.lines}


@pytest.fixture
def curves(unet_buildings, qgis_app):
    from unet_buildings.plugin.dock.curves import CurvesWidget

    widget = CurvesWidget()
    yield widget
    widget.deleteLater()


def test_batch_line_reads_as_a_sentence(unet_buildings) -> None:
    from unet_buildings.plugin.epochs import format_batch

    assert format_batch(BATCH) == "Batch 12/75 of epoch 2, 41.2 s into training: smoothed training loss 0.4123"


@pytest.mark.parametrize("record", [EPOCH, EPOCH_0], ids=["epoch", "epoch 0"])
def test_epoch_line_has_meaningful_digits(unet_buildings, record) -> None:
    from unet_buildings.plugin.epochs import format_epoch

    line = format_epoch(record)
    words = line.split()
    assert line.startswith(f"Epoch {record['epoch']}: ") and f"seconds={record['seconds']:.1f}" in words
    assert f"val_iou={record['val_iou']:.4f}" in words and len(words) == len(record) + 1
    if "train_batches" in record:
        assert "train_batches=75" in words and "learning_rate=0.000234" in words


def test_batch_reports_and_epoch_0_reach_the_curves_through_the_dock(dock) -> None:  # noqa: F811
    from unet_buildings.plugin.dock.curves import BATCH_LABEL

    dock.widgets.curves.clear()
    dock.show_record("epoch", EPOCH_0)
    first, *rest = batches(1, 4)
    dock.show_record("batch", first)
    lines = drawn(dock.widgets.curves)
    # the first report of a run is already drawn: a point, marked, since a line needs two
    assert list(lines[BATCH_LABEL].get_xdata()) == [0.25] and list(lines[BATCH_LABEL].get_ydata()) == [1.0]
    assert lines[BATCH_LABEL].get_markevery() == [0]
    assert list(lines["validation"].get_xdata()) == [0] and list(lines["validation"].get_ydata()) == [0.5]
    assert list(lines["validation IoU"].get_ydata()) == [0.5956]
    assert all(math.isnan(value) for value in lines["train"].get_ydata())  # epoch 0 trained nothing
    for report in rest:
        dock.show_record("batch", report)
    dock.show_record("epoch", {**EPOCH, "epoch": 1})
    dock.show_record("batch", batches(2, 1)[0])
    assert drawn(dock.widgets.curves) == lines, "a redraw gives the same lines new data, it does not rebuild the figure"
    assert list(lines[BATCH_LABEL].get_xdata()) == [0.25, 0.5, 0.75, 1.0, 1.25]
    assert list(lines[BATCH_LABEL].get_ydata()) == [1, 1 / 2, 1 / 3, 1 / 4, 1]  # the numbers themselves
    assert lines[BATCH_LABEL].get_markevery() == [4]
    assert list(lines["validation IoU"].get_xdata()) == [0, 1]
    assert list(lines["train"].get_xdata()) == [0, 1] and lines["train"].get_ydata()[1] == 0.4123
    axes = dock.widgets.curves.figure.axes[0]
    assert axes.get_xlim() == (-0.5, 2.5), "the running epoch is on the axis"
    assert axes.get_ylim()[0] < 0.25 and axes.get_ylim()[1] > 1


def test_model_file_whose_history_starts_at_epoch_0_shows_it(dock, tmp_path) -> None:  # noqa: F811
    from unet_buildings.model.net.modelfile import ModelInfo, save_model
    from unet_buildings.model.net.network import UNet, UNetConfig

    path = tmp_path / "fine_tuned.pt"
    history = [EPOCH_0, EPOCH]
    save_model(path, UNet(UNetConfig(in_bands=3, base_width=4, depth=2)), ModelInfo(history=history))
    dock.widgets.model_widget.setFilePath(str(path))
    lines = drawn(dock.widgets.curves)
    assert list(lines["validation IoU"].get_xdata()) == [0, 3]
    assert list(lines["train accuracy"].get_ydata())[1:] == [0.9012] and math.isnan(
        lines["train accuracy"].get_ydata()[0]
    )


def test_without_matplotlib_a_table_shows_epoch_0_and_the_running_epoch(unet_buildings, qgis_app, monkeypatch) -> None:
    from unet_buildings.plugin.dock.curves import COLUMNS, CurvesWidget

    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # its import now fails, as in a QGIS without it
    widget = CurvesWidget()
    assert widget.figure is None and widget.table is not None

    def rows() -> list[dict]:
        header = ["epoch", *COLUMNS]
        return [
            {header[column]: widget.table.item(row, column).text() for column in range(len(header))}
            for row in range(widget.table.rowCount())
        ]

    widget.add_epoch(EPOCH_0)
    for report in batches(1, 2):
        widget.add_batch(report)
    epoch_0 = {"epoch": "0", "train_loss": "", "val_loss": "0.5", "train_accuracy": "", "val_accuracy": "0.875"}
    assert rows()[0] == {**epoch_0, "val_iou": "0.5956"}
    assert len(rows()) == 2 and rows()[1]["epoch"] == "1 (2/4)" and rows()[1]["train_loss"] == "0.5"
    widget.add_epoch({**EPOCH, "epoch": 1})  # takes the batch report's row
    widget.add_batch(batches(2, 1)[0])  # and the next epoch's report a new one
    assert [row["epoch"] for row in rows()] == ["0", "1", "2 (1/4)"] and rows()[1]["train_loss"] == "0.4123"
    widget.deleteLater()


@pytest.mark.parametrize("width", [250, 280, 330, 400])
def test_curves_keep_their_shape_at_the_docks_width(curves, width, caplog) -> None:
    curves.add_epoch(EPOCH_0)
    for report in batches(1, 4):
        curves.add_batch(report)
    for epoch in (1, 2, 3):
        curves.add_epoch({**EPOCH, "epoch": epoch, "train_loss": 1 / epoch})
    curves.resize(width, curves.height())
    curves.show()
    with warnings.catch_warnings(record=True) as warned, caplog.at_level(logging.WARNING, logger="matplotlib"):
        warnings.simplefilter("always")
        QCoreApplication.processEvents()  # the resize reaches the canvas, which draws
        curves.canvas.draw()
    assert not [str(warning.message) for warning in warned] and not caplog.records  # e.g. "Tight layout not applied"
    renderer = curves.canvas.get_renderer()
    figure = curves.figure.get_window_extent(renderer)
    assert figure.width == width
    for axes in curves.figure.axes:
        box = axes.get_window_extent(renderer)
        assert box.width > 0.75 * width and box.height > 80, f"the plot collapsed to {box.width:.0f}x{box.height:.0f}"
        legend = axes.get_legend().get_window_extent(renderer)
        assert figure.x0 <= legend.x0 and legend.x1 <= figure.x1 and not legend.overlaps(box)
        ticks = [label.get_window_extent(renderer) for label in axes.get_xticklabels() if label.get_text()]
        assert ticks and not [tick for tick in ticks if tick.overlaps(legend)], "the legend covers the epoch numbers"
        assert all(float(tick).is_integer() for tick in axes.get_xticks()) and len(axes.get_xticks()) <= 7
