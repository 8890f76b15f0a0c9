"""Train through Processing adapts a model: the starter model by default, a new network when asked,
the start kept when no epoch beats it, a run continued from its checkpoint (RESUME), and the dock
that switches to a new model only when it is better and offers to resume a cut-short run."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
import torch
from qgis.core import QgsProcessingException

from .conftest import KeptMessages
from .test_dock import dock, wait_for  # noqa: F401  (dock is a fixture)

pytestmark = pytest.mark.usefixtures("plugin")

# a few crops of a small network: seconds on a CPU (the test scene marks buildings with class 2)
QUICK = {
    "BUILDING_VALUES": "2",
    "EPOCHS": 1,
    "PATCHES_PER_EPOCH": 8,
    "BATCH_SIZE": 4,
    "TILE_SIZE": 64,
    "SEED": 1,
    "DEVICE": "cpu",
}


def train(scene, output: Path, feedback: KeptMessages | None = None, **parameters) -> dict:
    import processing

    values = {"IMAGES": [str(scene.image)], "LABELS": [str(scene.labels)], "OUTPUT_MODEL": str(output), **QUICK}
    return processing.run("unet_buildings:train", {**values, **parameters}, feedback=feedback or KeptMessages())


def history(results: dict) -> list[dict]:
    with open(results["HISTORY_CSV"], newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def starter(unet_buildings) -> Path:
    from unet_buildings.model.training.start_model import starter_model

    path = starter_model()
    if path is None:
        pytest.skip("the starter model is not in this checkout")
    return path


def test_train_adapts_the_starter_model_by_default_and_scores_it_first(scene, tmp_path, starter) -> None:
    from unet_buildings.model.net.modelfile import load_model

    feedback = KeptMessages()
    results = train(scene, tmp_path / "adapted.pt", feedback)
    rows = history(results)
    assert results["STARTED_FROM"] == str(starter) and [row["epoch"] for row in rows] == ["0", "1"]
    assert results["START_VAL_IOU"] == pytest.approx(float(rows[0]["val_iou_tuned"]), rel=1e-9)
    assert load_model(results["OUTPUT_MODEL"]).info.training["init_model"] == str(starter)
    said = feedback.warnings if results["KEPT_START"] else feedback.lines
    assert results["OUTCOME"] in said and "buildings_rgb_starter.pt" in results["OUTCOME"]


@pytest.mark.parametrize("start", [{"FROM_SCRATCH": True}, {"INIT_MODEL": ""}])
def test_from_scratch_or_an_emptied_start_model_trains_a_new_network(scene, tmp_path, start) -> None:
    results = train(scene, tmp_path / "new.pt", BASE_WIDTH=4, **start)
    assert results["STARTED_FROM"] == "" and results["START_VAL_IOU"] is None and not results["KEPT_START"]
    assert [row["epoch"] for row in history(results)] == ["1"]
    assert results["OUTCOME"].endswith("(best epoch 1, a new network).")


def test_a_run_that_cannot_beat_its_start_keeps_it_and_warns(scene, tmp_path) -> None:
    from unet_buildings.model.net.modelfile import load_model

    # a start that is good on this synthetic scene (validation IoU about 0.9 in seconds; the starter
    # model, made for real imagery, scores less here than a network marking everything as building)
    start = train(scene, tmp_path / "start.pt", BASE_WIDTH=8, FROM_SCRATCH=True, EPOCHS=4, PATCHES_PER_EPOCH=32)
    feedback = KeptMessages()
    # a learning rate of 1 wrecks the network at its first steps: the start must be kept
    results = train(
        scene, tmp_path / "kept.pt", feedback, LEARNING_RATE=1.0, EPOCHS=2, INIT_MODEL=start["OUTPUT_MODEL"]
    )
    assert results["START_VAL_IOU"] > 0.5 and results["KEPT_START"] and results["BEST_EPOCH"] == 0
    assert results["OUTCOME"].startswith(
        "The new model is not better than the one it started from on your validation areas: kept 'start.pt'"
    )
    assert results["OUTCOME"] in feedback.warnings
    kept = load_model(results["OUTPUT_MODEL"]).net.state_dict()
    started = load_model(start["OUTPUT_MODEL"]).net.state_dict()
    assert all(torch.equal(kept[name], started[name]) for name in started)


def test_the_model_file_cannot_replace_the_model_it_starts_from(scene, tmp_path) -> None:
    start = tmp_path / "start.pt"
    train(scene, start, BASE_WIDTH=4, FROM_SCRATCH=True)
    with pytest.raises(QgsProcessingException, match="is the input INIT_MODEL"):
        train(scene, start, INIT_MODEL=str(start))


def test_resume_continues_a_run_from_its_checkpoint(scene, tmp_path) -> None:
    output = tmp_path / "resumed.pt"
    train(scene, output, BASE_WIDTH=4, FROM_SCRATCH=True)
    checkpoint = tmp_path / "resumed_checkpoints" / "last.pt"
    results = train(scene, output, BASE_WIDTH=4, FROM_SCRATCH=True, EPOCHS=3, RESUME=str(checkpoint))
    assert [row["epoch"] for row in history(results)] == ["1", "2", "3"]


# -- the dock --------------------------------------------------------------------------------------
def tick_training(dock, scene, qgis_iface) -> None:  # noqa: F811
    from qgis.core import QgsProject, QgsRasterLayer

    image = QgsRasterLayer(str(scene.image), "image")
    labels = QgsRasterLayer(str(scene.labels), "image labels")
    QgsProject.instance().addMapLayers([image, labels])
    dock.widgets.train_images.tick([image])
    dock.widgets.train_labels.tick([labels])
    dock.widgets.building_values_edit.setText("2")


def test_the_dock_switches_to_a_new_model_only_when_it_beat_its_start(dock, scene, tmp_path, model_file) -> None:  # noqa: F811
    from unet_buildings.plugin.dock.curves import BATCH_LABEL

    weak = model_file  # untrained
    # real runs of the train algorithm, as the dock's own task would return them
    better = train(scene, tmp_path / "better.pt", INIT_MODEL=str(weak), TILE_SIZE=32, LEARNING_RATE=3e-3, EPOCHS=4)
    good = Path(better["OUTPUT_MODEL"])
    worse = train(scene, tmp_path / "worse.pt", INIT_MODEL=str(good), TILE_SIZE=32, LEARNING_RATE=1.0, EPOCHS=2)
    assert not better["KEPT_START"] and worse["KEPT_START"]

    dock.widgets.model_widget.setFilePath(str(good))
    dock.trained(worse)
    assert dock.widgets.model_widget.filePath() == str(good)
    shown = dock.widgets.status_label.text().replace(
        "\u200b", ""
    )  # the status line breaks long paths with zero-width spaces
    assert shown == f"{worse['OUTCOME']} The dock goes on using it."
    assert "not better than the one it started from" in shown and "'better.pt'" in shown

    dock.widgets.model_widget.setFilePath(str(weak))
    dock.widgets.curves.add_batch({"epoch": 1, "batch": 1, "batches_per_epoch": 2, "train_loss": 0.5, "elapsed_s": 1.0})
    dock.finish(True, better, "", dock.trained)  # as the task's end calls it
    assert dock.widgets.model_widget.filePath() == better["OUTPUT_MODEL"]
    # the live curves stay: the new model file's history has no batch reports to redraw them from
    (batch_line,) = [
        line for axes in dock.widgets.curves.figure.axes for line in axes.get_lines() if line.get_label() == BATCH_LABEL
    ]
    assert list(batch_line.get_ydata()) == [0.5]
    shown = dock.widgets.status_label.text().replace("\u200b", "")
    assert f"up from {better['START_VAL_IOU']:.3f} for '{weak.name}'" in shown
    assert "The dock now uses the new model" in shown


def test_the_dock_draws_a_real_runs_records_as_the_engine_made_them(dock, scene, tmp_path) -> None:  # noqa: F811
    """The dock's task hands the curves the engine's records themselves: the scores drawn are the model
    file's to the last bit, not the log line's four decimals read back."""
    from unet_buildings.model.net.modelfile import read_payload
    from unet_buildings.plugin.dock.curves import BATCH_LABEL

    values = {"IMAGES": [str(scene.image)], "LABELS": [str(scene.labels)], "OUTPUT_MODEL": str(tmp_path / "m.pt")}
    results: list[dict] = []
    dock.widgets.curves.clear()
    dock.start("train", {**values, **QUICK, "EPOCHS": 2, "TILE_SIZE": 32, "FROM_SCRATCH": True}, results.append)
    wait_for(dock)
    assert results, dock.widgets.status_label.text()
    history = read_payload(Path(results[0]["OUTPUT_MODEL"]))["info"]["history"]
    lines = {line.get_label(): line for axes in dock.widgets.curves.figure.axes for line in axes.get_lines()}
    assert list(lines["validation IoU"].get_xdata()) == [record["epoch"] for record in history] == [1, 2]
    assert list(lines["validation IoU"].get_ydata()) == [record["val_iou"] for record in history]
    assert len(lines[BATCH_LABEL].get_xdata()) >= 2  # a batch report at least at each epoch's end


def test_the_dock_adapts_its_model_unless_told_to_start_anew(dock, scene, tmp_path, qgis_iface) -> None:  # noqa: F811
    dock.widgets.model_widget.setFilePath(str(tmp_path / "mine.pt"))
    tick_training(dock, scene, qgis_iface)
    dock.widgets.adapt_check.setChecked(True)
    parameters = dock.inputs.train_request().parameters()
    assert parameters["INIT_MODEL"] == str(tmp_path / "mine.pt") and parameters["FROM_SCRATCH"] is False
    dock.widgets.adapt_check.setChecked(False)
    parameters = dock.inputs.train_request().parameters()
    assert parameters["INIT_MODEL"] == "" and parameters["FROM_SCRATCH"] is True
    dock.widgets.adapt_check.setChecked(True)


def test_the_dock_resumes_a_cancelled_run_for_the_minutes_set(dock, scene, tmp_path, qgis_iface) -> None:  # noqa: F811
    from qgis.PyQt.QtCore import QCoreApplication
    from unet_buildings.model.training.checkpoints import training_time_s

    start = tmp_path / "start.pt"
    train(scene, start, BASE_WIDTH=4, FROM_SCRATCH=True, TILE_SIZE=32)
    dock.widgets.model_widget.setFilePath(str(start))
    dock.widgets.output_widget.setFilePath(str(tmp_path))
    tick_training(dock, scene, qgis_iface)
    dock.widgets.epochs_spin.setValue(0)
    dock.widgets.minutes_spin.setValue(30)
    dock.widgets.train_button.click()
    first = dock.current_run.parameters
    checkpoint = tmp_path / "image_model_checkpoints" / "last.pt"
    while not checkpoint.is_file():  # epoch 0 (the start scored) writes the first checkpoint
        QCoreApplication.processEvents()
    qgis_iface.messageBar().clear_messages()
    dock.widgets.cancel_button.click()
    wait_for(dock)
    # a cancel the user asked for is a warning, never an error, and reads as a cancel everywhere
    assert qgis_iface.messageBar().get_messages(1) and not qgis_iface.messageBar().get_messages(2)
    assert re.fullmatch(r"Train building model: cancelled after \d+:\d\d", dock.widgets.time_label.text())
    assert dock.widgets.progress_bar.value() == 0
    assert dock.widgets.resume_button.isEnabled()
    spent_min = training_time_s(checkpoint) / 60
    dock.widgets.minutes_spin.setValue(2)
    dock.widgets.resume_button.click()
    resumed = dock.current_run.parameters
    dock.widgets.cancel_button.click()
    wait_for(dock)
    assert resumed["RESUME"] == str(checkpoint) and resumed["OUTPUT_MODEL"] == first["OUTPUT_MODEL"]
    assert resumed["INIT_MODEL"] == str(start) and resumed["TIME_BUDGET_MIN"] == pytest.approx(spent_min + 2)


def test_status_lines_break_paths_but_not_numbers(unet_buildings) -> None:
    from unet_buildings.plugin.dock.widgets import breakable

    assert breakable("up from 0.299, written to /data/a_b.pt") == (
        "up from 0.299, written to /\u200bdata/\u200ba_\u200bb.\u200bpt"
    )
