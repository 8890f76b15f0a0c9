"""Training for a time, fine-tuning and the processing resolution through processing.run in a real QGIS."""

from __future__ import annotations

import pytest
import rasterio
from qgis.core import QgsProcessingFeedback

from .conftest import KeptMessages

pytestmark = pytest.mark.usefixtures("plugin")
TINY = {"BATCH_SIZE": 4, "TILE_SIZE": 32, "SEED": 1, "DEVICE": "cpu", "PATCHES_PER_EPOCH": 8}


def run(algorithm_id: str, parameters: dict) -> dict:
    import processing

    return processing.run(f"unet_buildings:{algorithm_id}", parameters, feedback=QgsProcessingFeedback())


def train(image, labels, output_model, **parameters) -> dict:
    """The train algorithm on one image / label pair, with the tiny settings and ``parameters``."""
    return run(
        "train",
        {
            "IMAGES": [str(image)],
            "LABELS": [str(labels)],
            "BUILDING_VALUES": "2",
            "OUTPUT_MODEL": str(output_model),
            **TINY,
            **parameters,
        },
    )


def test_train_for_a_time_reports_the_score_that_chose_the_epoch(scene, tmp_path, unet_buildings) -> None:
    from unet_buildings.model.net.modelfile import load_model

    results = train(scene.image, scene.labels, tmp_path / "m.pt", TIME_BUDGET_MIN=0.1, BASE_WIDTH=4)
    info = load_model(results["OUTPUT_MODEL"]).info
    assert info.training["time_budget_s"] == pytest.approx(6.0)  # 0.1 min, not the CPU default's 30
    assert info.training["epochs"] == 200  # the CPU default: the budget ends training, not the epochs
    best = info.history[info.best_epoch - 1]
    assert results["VAL_IOU"] == best["val_iou_tuned"] and results["THRESHOLD"] == info.threshold


def test_fine_tuning_through_processing_keeps_the_models_network(scene, tmp_path, unet_buildings) -> None:
    from unet_buildings.model.net.modelfile import load_model

    base = train(scene.image, scene.labels, tmp_path / "base.pt", EPOCHS=1, BASE_WIDTH=8)
    # polygon labels, another base width asked for: the fine-tuned model keeps its own network
    tuned = train(
        scene.image, scene.polygons, tmp_path / "tuned.pt", EPOCHS=1, BASE_WIDTH=4, INIT_MODEL=base["OUTPUT_MODEL"]
    )
    assert load_model(tuned["OUTPUT_MODEL"]).info.network["base_width"] == 8
    assert load_model(tuned["OUTPUT_MODEL"]).info.training["init_model"] == base["OUTPUT_MODEL"]


def test_processing_pixel_size_zero_runs_on_the_images_own_pixels(scene, model_file, tmp_path) -> None:
    """The tiny model was trained at 0.5 m like the scene: empty and 0 run on the image's pixels, 1.0
    makes the network see a coarser image, and the outputs land on the image's grid every time."""
    import processing

    said = {}
    for name, size in (("own", 0.0), ("model", None), ("coarse", 1.0)):
        feedback = KeptMessages()

        parameters = {
            "INPUT": str(scene.image),
            "MODEL": str(model_file),
            "DEVICE": "cpu",
            "OUTPUT_PROBABILITY": str(tmp_path / f"{name}.tif"),
        }
        if size is not None:
            parameters["PIXEL_SIZE"] = size
        output = processing.run("unet_buildings:predict", parameters, feedback=feedback)["OUTPUT_PROBABILITY"]
        with rasterio.open(output) as dataset, rasterio.open(scene.image) as image:
            assert (dataset.transform, dataset.shape) == (image.transform, image.shape)
        said[name] = next(line for line in feedback.lines if line.startswith("Predicted "))
    assert "at 0.5 x 0.5 map units per pixel (the image's own pixels)" in said["own"]
    assert "at 0.5 x 0.5 map units per pixel (the image's own pixels)" in said["model"]
    assert "at 1 x 1 map units per pixel (resampled" in said["coarse"]
