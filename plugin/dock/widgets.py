"""What the dock is made of besides its logic: settings it remembers, readable messages, new file
names that never replace an earlier run's, layer filters, narrow forms and the layer checklist."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from qgis.core import (
    QgsMapLayer,
    QgsProject,
    QgsRasterLayer,
    QgsSettings,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.gui import QgsCheckableComboBox
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import (
    QComboBox,
    QFormLayout,
    QSizePolicy,
    QWidget,
)

from ..layers import is_plugin_output, layer_file

if TYPE_CHECKING:
    from ...model.io.label_checks import LabelValues

ERROR_STYLE = "QLabel { color: #a40000; }"
SETTINGS_GROUP = "unet_buildings/dock/"
DEFAULT_TRAINING_MINUTES = 30
MAX_MESSAGE_CHARS = 500
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# parts of a library's message that are advice for programmers, not for the person at the map
NOT_FOR_USERS = re.compile(r"weights_only|Traceback|safe_globals|add_safe_globals|pytorch\.org", re.IGNORECASE)


def setting(key: str, default=None):
    return QgsSettings().value(SETTINGS_GROUP + key, default)


def remember(key: str, value) -> None:
    QgsSettings().setValue(SETTINGS_GROUP + key, value)


def readable(text: str) -> str:
    """An error as one plain line for the dock and the message bar (the log keeps the whole text): no
    terminal escape codes, no parenthesised library advice (torch's "weights_only=False" among it), no
    line breaks, at most MAX_MESSAGE_CHARS characters."""
    text = ANSI_ESCAPE.sub("", text)
    kept, depth, start = [], 0, 0
    for index, character in enumerate(text):  # drop "( ... )" groups that hold programmer advice
        if character == "(":
            if depth == 0:
                kept.append(text[start:index])
                start = index
            depth += 1
        elif character == ")" and depth:
            depth -= 1
            if depth == 0:
                group = text[start : index + 1]
                if not NOT_FOR_USERS.search(group) and "\n" not in group:
                    kept.append(group)
                start = index + 1
    kept.append(text[start:])
    lines = [line for line in " ".join(kept).splitlines() if line.strip() and not NOT_FOR_USERS.search(line)]
    line = re.sub(r"\s+", " ", " ".join(lines)).strip()
    line = re.sub(r"\s+([.,;:])(?=\s|$)", r"\1", line)  # where a dropped group left "word ."
    if len(line) > MAX_MESSAGE_CHARS:
        line = line[:MAX_MESSAGE_CHARS].rsplit(" ", 1)[0] + "... (the whole message is in the log)"
    return line or "The run failed: the details are in the log."


def breakable(text: str) -> str:
    """Long paths get break opportunities (zero-width spaces after separators), so a word-wrapped label
    wraps them instead of widening the dock; a decimal point is no separator ("IoU 0.299" stays whole)."""
    return re.sub(r"([/\\_-]|\.(?!\d))(?=\S)", "\\1\u200b", text)


def numbered(folder: Path, names: list[str]) -> tuple[list[Path], str]:
    """``names`` holding ``{n}`` in ``folder``, with the first run number none of whose files exists yet:
    '' for the first run, then '_2', '_3'... so nothing written earlier is ever replaced. Also the run's
    label for its layer names ('' then ' 2', ' 3'...), so that runs are told apart in the layer panel."""
    number = 1
    while True:
        suffix = "" if number == 1 else f"_{number}"
        paths = [folder / name.format(n=suffix) for name in names]
        if not any(path.exists() for path in paths):
            return paths, suffix.replace("_", " ")
        number += 1


def file_stem(name: str) -> str:
    """A layer name as a safe file-name stem."""
    return re.sub(r"[^\w.-]+", "_", name).strip("_") or "layer"


def natural_key(name: str) -> list:
    """'scene_10' after 'scene_2': the order in which ticked images and labels are paired."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


def built_up_area(area_m2: float) -> str:
    """'850 m²' below a hectare, '2.35 ha' from one: the unit a built-up total is read in."""
    return f"{area_m2:,.0f} m²" if area_m2 < 10_000 else f"{area_m2 / 10_000:,.2f} ha"


def is_image_layer(layer: QgsMapLayer) -> bool:
    return isinstance(layer, QgsRasterLayer) and not is_plugin_output(layer)


def is_label_layer(layer: QgsMapLayer) -> bool:
    return (
        isinstance(layer, QgsRasterLayer)
        or (isinstance(layer, QgsVectorLayer) and layer.geometryType() == QgsWkbTypes.GeometryType.PolygonGeometry)
    ) and not is_plugin_output(layer)


def label_values(layer: QgsMapLayer) -> LabelValues | str | None:
    """The engine's look at a label raster's values, from a sample of its pixels; the sentence that says
    why it cannot be a class raster (an image, an unreadable file); None for layers that are not a local
    raster file (polygons, web services: training exports and checks those itself)."""
    path = layer_file(layer) if isinstance(layer, QgsRasterLayer) and layer.isValid() else ""
    if not path:
        return None
    return sampled_label_values(path, Path(path).stat().st_mtime_ns, layer.name())


@lru_cache(maxsize=16)
def sampled_label_values(path: str, modified_ns: int, name: str) -> LabelValues | str:
    """``label_values`` once per version of a file (``modified_ns``): the dock asks again whenever a layer
    is added to or removed from the project, and a large raster's sample takes a moment to read."""
    from ...model.errors import EngineError
    from ...model.io.rasters import sample_label_values

    try:
        return sample_label_values(path, f"The label layer '{name}'")
    except EngineError as error:
        return str(error)


def narrow_form(parent: QWidget | None = None) -> QFormLayout:
    """A form whose labels go above their fields when the dock is too narrow for both side by side."""
    form = QFormLayout(parent)
    form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
    form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
    return form


def shrinkable(widget: QWidget) -> QWidget:
    """Lets a combo box, file widget or line edit get narrower than its text (the text is elided)."""
    widget.setMinimumWidth(60)
    widget.setSizePolicy(QSizePolicy.Policy.Ignored, widget.sizePolicy().verticalPolicy())
    if isinstance(widget, QComboBox):
        widget.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        widget.setMinimumContentsLength(6)
    return widget


class LayerChecklist(QgsCheckableComboBox):
    """The project's layers that ``accepts`` takes, to tick several, in natural name order (the order in
    which ticked images are paired with ticked labels). Follows layers being added and removed."""

    def __init__(self, accepts: Callable[[QgsMapLayer], bool], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.accepts = accepts
        self.setDefaultText("tick one or more layers")
        QgsProject.instance().layersAdded.connect(self.refresh)
        QgsProject.instance().layersRemoved.connect(self.refresh)
        self.refresh()

    def refresh(self, *_) -> None:
        ticked = set(self.checkedItemsData())
        layers = sorted(
            (layer for layer in QgsProject.instance().mapLayers().values() if self.accepts(layer)),
            key=lambda layer: natural_key(layer.name()),
        )
        self.blockSignals(True)
        self.clear()
        for layer in layers:
            state = Qt.CheckState.Checked if layer.id() in ticked else Qt.CheckState.Unchecked
            self.addItemWithCheckState(layer.name(), state, layer.id())
        self.blockSignals(False)
        self.checkedItemsChanged.emit(self.checkedItems())

    def ticked_layers(self) -> list[QgsMapLayer]:
        project = QgsProject.instance()
        return [layer for layer in map(project.mapLayer, self.checkedItemsData()) if layer is not None]

    def tick(self, layers: list[QgsMapLayer]) -> None:
        ids = {layer.id() for layer in layers}
        for index in range(self.count()):
            self.setItemCheckState(
                index, Qt.CheckState.Checked if self.itemData(index) in ids else Qt.CheckState.Unchecked
            )
        self.checkedItemsChanged.emit(self.checkedItems())  # setItemCheckState does not emit it
