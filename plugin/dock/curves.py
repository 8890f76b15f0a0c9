"""Live training curves for the dock: matplotlib when QGIS's Python has it, else a plain table."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from qgis.PyQt.QtWidgets import QSizePolicy, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget

# (history key, label) per panel; keys as in the training history records. Each legend has two columns:
# three labels side by side are wider than a 250 px dock
PANELS = (
    ("Loss by epoch", (("train_loss", "train"), ("val_loss", "validation"))),
    (
        "Accuracy and IoU by epoch",
        (("train_accuracy", "train accuracy"), ("val_accuracy", "validation accuracy"), ("val_iou", "validation IoU")),
    ),
)
COLUMNS = tuple(key for _, series in PANELS for key, _ in series)
BATCH_LABEL = "train, smoothed per batch"  # the loss panel's line of batch reports (not in its legend)
TITLE_PT, TEXT_PT = 9, 7

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D


def batch_x(record: dict) -> float:
    """A batch report's place on the epoch axis: epoch N's batches run from N - 1 to N, where N's record is drawn."""
    return record["epoch"] - 1 + record["batch"] / record["batches_per_epoch"]


def cell_text(value: object) -> str:
    return "" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


class CurvesWidget(QWidget):
    """Per-epoch loss, accuracy and IoU plus the smoothed training loss of batch reports within an epoch,
    redrawn as each record arrives (batch reports come every few seconds, so a slow epoch still shows)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.records: list[dict] = []
        self.batches: list[dict] = []
        # the table's last row shows the running epoch's latest batch report until that epoch's record replaces it
        self.batch_row = False
        # exactly one of them shows the records
        self.figure: Figure | None = None
        self.table: QTableWidget | None = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        try:
            from matplotlib.figure import Figure

            try:  # matplotlib 3.5+: one backend for Qt5 and Qt6, it uses whichever PyQt QGIS loaded
                from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
            except ImportError:
                from matplotlib.backends.backend_qt5agg import FigureCanvasQTAgg
        except ImportError:  # matplotlib is optional in QGIS installs: the numbers still show
            self.table = QTableWidget(0, len(COLUMNS) + 1, self)
            self.table.setHorizontalHeaderLabels(["epoch", *COLUMNS])
            layout.addWidget(self.table)
            return
        # constrained layout fits titles, ticks and legends at any width it can, without tight_layout's
        # "not applied" at a narrow dock; constrained_layout=True rather than layout= for matplotlib < 3.5
        self.figure = Figure(figsize=(3.2, 4.2), constrained_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        # as wide as the dock, never wider: a narrow dock must not scroll sideways
        self.canvas.setMinimumSize(120, 340)
        self.canvas.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        layout.addWidget(self.canvas)
        self.lines, self.batch_line = self._plot(self.figure)
        self.clear()

    def clear(self) -> None:
        self.show_history([])

    def show_history(self, records: list[dict]) -> None:
        """Exactly ``records`` (a model file's whole history), drawn once: a redraw per epoch took
        about 0.1 s each, seconds for a long history."""
        self.records, self.batches, self.batch_row = [], [], False
        if self.table is not None:
            self.table.setRowCount(0)
        self._add(records)

    def add_epoch(self, record: dict) -> None:
        """One more epoch, as training reports it (epoch 0: the starting model, validation keys only)."""
        self._add([record])

    def add_batch(self, record: dict) -> None:
        """One more batch report of the running epoch: its smoothed training loss."""
        self.batches.append(record)
        if self.figure is not None:
            self._draw(self.figure)
        if self.table is not None:
            progress = f"{record['epoch']} ({record['batch']}/{record['batches_per_epoch']})"
            self._table_row([progress, *(record["train_loss"] if key == "train_loss" else None for key in COLUMNS)])
            self.batch_row = True

    def _add(self, records: list[dict]) -> None:
        self.records.extend(records)
        if self.figure is not None:
            self._draw(self.figure)
        if self.table is not None:
            for record in records:
                self._table_row([record["epoch"], *(record.get(key) for key in COLUMNS)])
                self.batch_row = False

    def _table_row(self, values: list) -> None:
        """``values`` in the batch report's row if there is one, else in a new last row."""
        assert self.table is not None
        if not self.batch_row:
            self.table.insertRow(self.table.rowCount())
        row = self.table.rowCount() - 1
        for column, value in enumerate(values):
            self.table.setItem(row, column, QTableWidgetItem(cell_text(value)))

    def _plot(self, figure: Figure) -> tuple[dict[str, Line2D], Line2D]:
        """The panels and their (empty) lines, made once: a redraw per batch report only gives them new data."""
        from matplotlib import rcParams
        from matplotlib.ticker import MaxNLocator

        # the legend's top just below the x tick labels (tick, pad, label), in units of its font size
        below_ticks = (rcParams["xtick.major.size"] + rcParams["xtick.major.pad"] + 1.4 * TEXT_PT) / TEXT_PT
        lines: dict[str, Line2D] = {}
        for index, (title, series) in enumerate(PANELS):
            axes = figure.add_subplot(len(PANELS), 1, index + 1)
            axes.set_title(title, fontsize=TITLE_PT)
            axes.tick_params(labelsize=TEXT_PT)
            # whole-number epochs, and few enough ticks for a narrow dock
            axes.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True, min_n_ticks=1))
            axes.yaxis.set_major_locator(MaxNLocator(nbins=4))
            for key, label in series:
                (lines[key],) = axes.plot([], [], marker="o", markersize=3, label=label)
            # below the plot, never over the lines; the titles say "by epoch", so no axis label competes with
            # the legend for that space
            axes.legend(
                fontsize=TEXT_PT,
                loc="upper center",
                bbox_to_anchor=(0.5, 0),
                borderaxespad=below_ticks,
                ncol=2,
                frameon=False,
                handlelength=1.2,
                columnspacing=0.8,
                handletextpad=0.4,
            )
        # thin and pale under the epoch means, in the same colour: both are the training loss, so it comes after
        # the legend and the legend's "train" stands for both; a marker on the latest report, so that the first
        # one shows too (a line of one point draws nothing)
        (batch_line,) = figure.axes[0].plot(
            [],
            [],
            color=lines["train_loss"].get_color(),
            linewidth=0.9,
            alpha=0.6,
            marker="o",
            markersize=3,
            label=BATCH_LABEL,
        )
        return lines, batch_line

    def _draw(self, figure: Figure) -> None:
        epochs = [record["epoch"] for record in self.records]
        for key, line in self.lines.items():
            line.set_data(epochs, [record.get(key, math.nan) for record in self.records])
        batch_xs = [batch_x(record) for record in self.batches]
        self.batch_line.set_data(batch_xs, [record["train_loss"] for record in self.batches])
        self.batch_line.set_markevery([len(batch_xs) - 1] if batch_xs else [])
        xs = epochs + batch_xs
        # whole epochs plus half an epoch either side: the running epoch fills in from the left, and a single
        # epoch still gets a whole-number tick, not 0.95...1.05
        left, right = (math.floor(min(xs)), math.ceil(max(xs))) if xs else (0, 1)
        for axes in figure.axes:
            axes.relim()
            axes.autoscale_view()
            if not math.isfinite(axes.dataLim.y0):  # nothing to show yet: the scores' range, not -0.05...0.05
                axes.set_ylim(0, 1, auto=True)
            axes.set_xlim(left - 0.5, right + 0.5)
        self.canvas.draw_idle()
