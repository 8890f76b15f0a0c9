"""Live training curves for the dock: matplotlib when QGIS's Python has it, else a plain table."""

from __future__ import annotations

from typing import TYPE_CHECKING

from qgis.PyQt.QtWidgets import QSizePolicy, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget

# (history key, label) per panel; keys as in the training history records
PANELS = (
    ("Loss per epoch", (("train_loss", "train"), ("val_loss", "validation"))),
    (
        "Accuracy and IoU per epoch",
        (("train_accuracy", "train accuracy"), ("val_accuracy", "validation accuracy"), ("val_iou", "validation IoU")),
    ),
)
COLUMNS = tuple(key for _, series in PANELS for key, _ in series)

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class CurvesWidget(QWidget):
    """Per-epoch loss, accuracy and IoU, redrawn as each epoch's record arrives."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.records: list[dict] = []
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
        self.figure = Figure(figsize=(3.2, 4.2), tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        # as wide as the dock, never wider: a narrow dock must not scroll sideways
        self.canvas.setMinimumSize(120, 340)
        self.canvas.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        layout.addWidget(self.canvas)
        self.clear()

    def clear(self) -> None:
        self.show_history([])

    def show_history(self, records: list[dict]) -> None:
        """Exactly ``records`` (a model file's whole history), drawn once: a redraw per epoch took
        about 0.1 s each, seconds for a long history."""
        self.records = []
        if self.table is not None:
            self.table.setRowCount(0)
        self._add(records)

    def add_epoch(self, record: dict) -> None:
        """One more epoch, as training reports it."""
        self._add([record])

    def _add(self, records: list[dict]) -> None:
        self.records.extend(records)
        if self.figure is not None:
            self._draw(self.figure)
        if self.table is not None:
            for record in records:
                row = self.table.rowCount()
                self.table.insertRow(row)
                values = [record["epoch"], *(record.get(key) for key in COLUMNS)]
                for column, value in enumerate(values):
                    text = "" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)
                    self.table.setItem(row, column, QTableWidgetItem(text))

    def _draw(self, figure: Figure) -> None:
        from matplotlib.ticker import MaxNLocator

        figure.clear()
        epochs: list[int] = [record["epoch"] for record in self.records]
        for index, (title, series) in enumerate(PANELS):
            axes = figure.add_subplot(len(PANELS), 1, index + 1)
            axes.set_title(title, fontsize=9)
            axes.tick_params(labelsize=7)
            axes.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # epochs are whole numbers
            for key, label in series:
                values = [record.get(key, float("nan")) for record in self.records]
                if values:
                    axes.plot(epochs, values, marker="o", markersize=3, label=label)
            if self.records:
                # half an epoch either side: a single epoch still gets a whole-number tick, not 0.95...1.05
                axes.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
                # below the plot, never over the lines (tight_layout makes room for it); the titles say
                # "per epoch", so no axis label competes with the legend for that space
                axes.legend(
                    fontsize=7,
                    loc="upper center",
                    bbox_to_anchor=(0.5, -0.12),
                    ncol=len(series),
                    frameon=False,
                    handlelength=1.2,
                    columnspacing=0.8,
                    handletextpad=0.4,
                )
        self.canvas.draw_idle()
