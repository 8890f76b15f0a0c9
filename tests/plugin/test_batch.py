"""Batch mode: the toolbox's own batch dialog runs an algorithm over two images.

QGIS 3.22's batch mode is ``processing.gui.BatchAlgorithmDialog``: a ``BatchPanel`` table with one row
per run, filled by the column's "Autofill..." button (``BatchPanelFillWidget.setRowValue``, which adds
rows as needed), and the Run button's ``runAlgorithm``, which turns each row into parameters through
the row's widget wrappers (``parametersForRow``), runs the algorithm once per row with a fresh context
and a ``QgsProcessingMultiStepFeedback`` over all rows, and loads the outputs through Processing's
``handleAlgorithmResults`` (where our style post-processors take effect, and where a layer that does not
load is reported in red in the dialog's log). This test builds that very
dialog (offscreen), fills its table the way Autofill does and calls ``runAlgorithm``: every step the
user's click would take runs, only the clicks themselves are replaced by calls.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from qgis.core import QgsApplication, QgsProject, QgsVectorLayer
from qgis.PyQt.QtWidgets import QTextEdit

from .conftest import GROUND_M_PER_MAP_M, PIXEL_M, SIZE_PX, make_scene

pytestmark = pytest.mark.usefixtures("plugin")


def fill_column(panel, name: str, values: list) -> None:
    """What the column's Autofill button does: one value per row, adding rows when needed."""
    autofill = panel.tblParameters.cellWidget(0, panel.parameter_to_column[name])
    for row, value in enumerate(values):
        autofill.setRowValue(row, value, panel.processing_context)


def test_extract_in_the_batch_dialog_over_two_images(scene, model_file, tmp_path: Path, qgis_new_project) -> None:
    from processing.gui.BatchAlgorithmDialog import BatchAlgorithmDialog

    second_image = make_scene(tmp_path / "second").image.rename(tmp_path / "second" / "harbour.tif")
    outputs = [tmp_path / "first_buildings.gpkg", tmp_path / "second_buildings.gpkg"]
    dialog = BatchAlgorithmDialog(QgsApplication.processingRegistry().createAlgorithmById("unet_buildings:extract"))
    try:
        panel = dialog.mainWidget()
        fill_column(panel, "INPUT", [str(scene.image), str(second_image)])
        fill_column(panel, "MODEL", [str(model_file)] * 2)
        fill_column(panel, "THRESHOLD", [0.0] * 2)  # the untrained model's mask: every pixel is building
        fill_column(panel, "OUTPUT", [str(path) for path in outputs])
        panel.checkLoadLayersOnCompletion.setChecked(True)
        assert panel.batchRowCount() == 2

        dialog.runAlgorithm()
        log = dialog.findChild(QTextEdit, "txtLog").toPlainText()
    finally:
        dialog.deleteLater()

    # the optional rasters left blank are not reported as "not correctly generated" after each row
    assert log.count("correctly executed") == 2 and "not correctly generated" not in log, log
    for path in outputs:
        layer = QgsVectorLayer(str(path), path.stem, "ogr")
        assert layer.isValid() and layer.featureCount() == 1
        assert next(layer.getFeatures())["area_m2"] == pytest.approx((SIZE_PX * PIXEL_M * GROUND_M_PER_MAP_M) ** 2)
    # both rows' outputs were loaded and styled by the algorithm's post-processor (outlined polygons)
    loaded = [layer for layer in QgsProject.instance().mapLayers().values() if isinstance(layer, QgsVectorLayer)]
    assert sorted(Path(layer.source().split("|")[0]).name for layer in loaded) == sorted(p.name for p in outputs)
    # named after each row's image, not all "Buildings"
    assert sorted(layer.name() for layer in loaded) == ["harbour buildings", "image buildings"]
    for layer in loaded:
        fill = layer.renderer().symbol().symbolLayer(0)
        assert fill.brushStyle() == 0 and fill.strokeWidth() > 0  # Qt.BrushStyle.NoBrush, outline only
