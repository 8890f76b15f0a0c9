"""The provider's algorithms run through processing.run in a real QGIS, on tiny generated rasters."""

from __future__ import annotations

import json
import re

import pytest
import rasterio
from qgis.core import (
    NULL,
    QgsApplication,
    QgsFeature,
    QgsGeometry,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterDefinition,
    QgsProject,
    QgsVectorLayer,
)

from .conftest import BUILDINGS_PX, GROUND_M_PER_MAP_M, PIXEL_M, SIZE_PX, KeptMessages

pytestmark = pytest.mark.usefixtures("plugin")
ALGORITHM_IDS = ("train", "predict", "vectorize", "extract", "evaluate", "export")
BUILDING_AREA_M2 = 16 * 16 * PIXEL_M * PIXEL_M  # in map units
BUILDING_GROUND_AREA_M2 = BUILDING_AREA_M2 * GROUND_M_PER_MAP_M**2


def run(algorithm_id: str, parameters: dict, context: QgsProcessingContext | None = None) -> dict:
    import processing

    return processing.run(
        f"unet_buildings:{algorithm_id}", parameters, context=context, feedback=QgsProcessingFeedback()
    )


def test_provider_lists_its_algorithms() -> None:
    provider = QgsApplication.processingRegistry().providerById("unet_buildings")
    assert provider is not None and provider.name() == "U-Net Building Extractor"
    assert sorted(algorithm.name() for algorithm in provider.algorithms()) == sorted(ALGORITHM_IDS)


@pytest.mark.parametrize("algorithm_id", ALGORITHM_IDS)
def test_help_explains_every_parameter_and_cites_the_method(algorithm_id: str) -> None:
    algorithm = QgsApplication.processingRegistry().algorithmById(f"unet_buildings:{algorithm_id}")
    text = algorithm.shortHelpString()
    assert "Ronneberger" in text and "Remote sensing image building extraction based on U-net" in text
    undocumented = [
        parameter.name()
        for parameter in algorithm.parameterDefinitions()
        if f"<small>({parameter.name()})</small></dt>" not in text
    ]
    assert undocumented == []
    # the dialog folds advanced parameters away: the help says which ones they are, and no others
    flagged = {
        parameter.name()
        for parameter in algorithm.parameterDefinitions()
        if parameter.flags() & QgsProcessingParameterDefinition.Flag.FlagAdvanced
    }
    said = {
        parameter.name()
        for parameter in algorithm.parameterDefinitions()
        if f"<small>({parameter.name()})</small></dt><dd>(advanced)" in text
    }
    assert flagged == said
    assert algorithm.group() in {"Training", "Prediction", "Evaluation"}


def test_public_parameter_names_exist() -> None:
    """The names users' scripts and models depend on (DESIGN.md's public contract)."""
    contract = {
        "train": {
            "IMAGES",
            "LABELS",
            "BUILDING_VALUES",
            "PRESET",
            "EPOCHS",
            "PATCHES_PER_EPOCH",
            "BATCH_SIZE",
            "BASE_WIDTH",
            "DEVICE",
            "OUTPUT_MODEL",
            "BANDS",
            "SEED",
        },
        "predict": {"INPUT", "MODEL", "OUTPUT_PROBABILITY", "OUTPUT_MASK", "THRESHOLD", "BATCH_SIZE", "DEVICE", "TTA"},
        "vectorize": {"INPUT", "MIN_AREA", "SIMPLIFY", "OUTPUT", "PROBABILITY", "FILL_HOLES", "REGULARIZE"},
        "extract": {"INPUT", "MODEL", "OUTPUT", "OUTPUT_PROBABILITY", "OUTPUT_MASK", "THRESHOLD"},
        "evaluate": {"PREDICTION", "LABELS", "BUILDING_VALUES", "THRESHOLD", "OUTPUT_REPORT", "OUTPUT_ERROR_MAP"},
    }
    for algorithm_id, names in contract.items():
        algorithm = QgsApplication.processingRegistry().algorithmById(f"unet_buildings:{algorithm_id}")
        assert names <= {parameter.name() for parameter in algorithm.parameterDefinitions()}, algorithm_id
    evaluate = QgsApplication.processingRegistry().algorithmById("unet_buildings:evaluate")
    assert {"TP", "FP", "FN", "TN", "ACCURACY", "PRECISION", "RECALL", "F1", "IOU", "KAPPA"} <= {
        output.name() for output in evaluate.outputDefinitions()
    }


def test_predict_writes_both_rasters_on_the_image_grid(scene, model_file, tmp_path) -> None:
    results = run(
        "predict",
        {
            "INPUT": str(scene.image),
            "MODEL": str(model_file),
            "THRESHOLD": 0.0,
            "OUTPUT_PROBABILITY": str(tmp_path / "p.tif"),
            "OUTPUT_MASK": str(tmp_path / "m.tif"),
            "DEVICE": "cpu",
        },
    )
    assert results["THRESHOLD_USED"] == 0.0
    with (
        rasterio.open(scene.image) as image,
        rasterio.open(results["OUTPUT_PROBABILITY"]) as probability,
        rasterio.open(results["OUTPUT_MASK"]) as mask,
    ):
        assert (probability.transform, probability.crs, probability.shape) == (image.transform, image.crs, image.shape)
        assert probability.tags()["UNET_BUILDINGS_KIND"] == "probability"
        assert mask.tags()["UNET_BUILDINGS_KIND"] == "mask"
        assert (mask.read(1) == 1).all()  # threshold 0: every valid pixel is building


def test_predict_without_outputs_still_writes_a_mask(scene, model_file) -> None:
    results = run("predict", {"INPUT": str(scene.image), "MODEL": str(model_file)})
    assert results["OUTPUT_PROBABILITY"] is None
    with rasterio.open(results["OUTPUT_MASK"]) as mask:
        assert mask.shape == (SIZE_PX, SIZE_PX)


def test_vectorize_mask_gives_one_polygon_per_building(scene, tmp_path) -> None:
    results = run("vectorize", {"INPUT": str(scene.mask), "OUTPUT": str(tmp_path / "b.gpkg")})
    layer = QgsVectorLayer(results["OUTPUT"], "buildings", "ogr")
    assert layer.isValid() and results["BUILDING_COUNT"] == len(BUILDINGS_PX) == layer.featureCount()
    assert layer.crs().authid() == "EPSG:32736"
    # one column of feature numbers: the GeoPackage's own fid holds the polygon's number, no "id" beside it
    assert [field.name() for field in layer.fields()] == [
        *("fid", "area_m2", "perimeter_m", "mean_probability"),
        *("source", "model", "created"),
    ]
    assert sorted(feature["fid"] for feature in layer.getFeatures()) == list(range(1, len(BUILDINGS_PX) + 1))
    for feature in layer.getFeatures():
        assert (feature["source"], feature["model"]) == (scene.mask.name, NULL)
        assert feature["area_m2"] == round(BUILDING_GROUND_AREA_M2, 2)  # rounded as written
        assert feature.geometry().area() == pytest.approx(BUILDING_AREA_M2)
    assert results["BUILT_UP_AREA_M2"] == pytest.approx(len(BUILDINGS_PX) * round(BUILDING_GROUND_AREA_M2, 2))


def test_vectorize_min_area_drops_small_buildings_into_a_memory_layer(scene) -> None:
    results = run(
        "vectorize", {"INPUT": str(scene.mask), "MIN_AREA": BUILDING_GROUND_AREA_M2 + 1, "OUTPUT": "TEMPORARY_OUTPUT"}
    )
    assert results["BUILDING_COUNT"] == 0 and results["OUTPUT"].featureCount() == 0


def test_extract_goes_from_image_to_polygons(scene, model_file, tmp_path, unet_buildings) -> None:
    from unet_buildings.model.prediction.predict import predict_raster

    # threshold 0 marks every pixel building: one polygon covering the whole image
    results = run(
        "extract",
        {
            "INPUT": str(scene.image),
            "MODEL": str(model_file),
            "THRESHOLD": 0.0,
            "OUTPUT": str(tmp_path / "buildings.gpkg"),
            "OUTPUT_MASK": str(tmp_path / "mask.tif"),
        },
    )
    layer = QgsVectorLayer(results["OUTPUT"], "buildings", "ogr")
    assert results["BUILDING_COUNT"] == layer.featureCount() == 1
    feature = next(layer.getFeatures())
    assert feature["area_m2"] == pytest.approx((SIZE_PX * PIXEL_M * GROUND_M_PER_MAP_M) ** 2)
    # a temporary probability raster filled it: the mean of the engine's probabilities over the image
    predict_raster(scene.image, model_file, probability_path=tmp_path / "p.tif", probability_dtype="float32")
    with rasterio.open(tmp_path / "p.tif") as probability:
        expected = float(probability.read(1).mean())
    assert feature["mean_probability"] == pytest.approx(expected, abs=0.5 / 254)  # stored as 1/254 steps
    assert results["OUTPUT_PROBABILITY"] is None and (tmp_path / "mask.tif").exists()
    # which image and model, and when: polygons of several runs merged into one table stay apart
    assert (feature["source"], feature["model"]) == (scene.image.name, model_file.name)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", feature["created"]), feature["created"]


@pytest.mark.parametrize("labels", ["labels", "polygons"])
def test_evaluate_a_perfect_mask(scene, tmp_path, labels: str) -> None:
    results = run(
        "evaluate",
        {
            "PREDICTION": str(scene.mask),
            "LABELS": str(getattr(scene, labels)),
            "BUILDING_VALUES": "2",
            "OUTPUT_REPORT": str(tmp_path / "report.html"),
            "OUTPUT_ERROR_MAP": str(tmp_path / "errors.tif"),
        },
    )
    building_px = sum(side * side for _, _, side in BUILDINGS_PX)
    assert (results["TP"], results["FP"], results["FN"], results["TN"]) == (
        building_px,
        0,
        0,
        SIZE_PX * SIZE_PX - building_px,
    )
    assert results["IOU"] == results["F1"] == results["KAPPA"] == results["ACCURACY"] == pytest.approx(1.0)
    assert results["OBJECT_F1"] == pytest.approx(1.0)
    assert "<html" in (tmp_path / "report.html").read_text().lower()
    assert json.loads((tmp_path / "report.json").read_text())["confusion_matrix"]["pixels"]["tp"] == building_px
    with rasterio.open(results["OUTPUT_ERROR_MAP"]) as error_map:
        assert set(error_map.read(1).ravel().tolist()) == {0, 3}


def test_evaluate_exports_a_memory_polygon_layer(scene, tmp_path) -> None:
    """Layers that are not plain files go to the engine as a temporary GeoPackage."""
    memory = QgsVectorLayer("Polygon?crs=EPSG:32736", "drawn buildings", "memory")
    row, column, side = BUILDINGS_PX[0]
    left, top = 500000 + column * PIXEL_M, 9000000 - row * PIXEL_M
    feature = QgsFeature()
    feature.setGeometry(
        QgsGeometry.fromWkt(
            f"POLYGON(({left} {top},{left + side * PIXEL_M} {top},{left + side * PIXEL_M} {top - side * PIXEL_M},"
            f"{left} {top - side * PIXEL_M},{left} {top}))"
        )
    )
    memory.dataProvider().addFeatures([feature])
    QgsProject.instance().addMapLayer(memory)
    try:
        context = QgsProcessingContext()
        context.setProject(QgsProject.instance())
        results = run(
            "evaluate",
            {"PREDICTION": str(scene.mask), "LABELS": memory.id(), "OUTPUT_REPORT": str(tmp_path / "r.html")},
            context,
        )
    finally:
        QgsProject.instance().removeMapLayer(memory.id())
    # the second building is predicted but not in the drawn labels
    assert results["TP"] == side * side and results["FP"] == side * side and results["FN"] == 0


def test_bad_inputs_fail_with_plain_messages(scene, tmp_path) -> None:
    with pytest.raises(QgsProcessingException, match="does not exist: train a model first"):
        run(
            "predict",
            {"INPUT": str(scene.image), "MODEL": str(tmp_path / "missing.pt"), "OUTPUT_MASK": str(tmp_path / "m.tif")},
        )
    with pytest.raises(QgsProcessingException, match="whole numbers separated by commas"):
        run(
            "evaluate",
            {
                "PREDICTION": str(scene.mask),
                "LABELS": str(scene.labels),
                "BUILDING_VALUES": "roof",
                "OUTPUT_REPORT": str(tmp_path / "r.html"),
            },
        )
    not_a_raster = tmp_path / "notes.txt"
    not_a_raster.write_text("not an image")
    with pytest.raises(QgsProcessingException, match="Could not load source layer for INPUT"):  # QGIS says it
        run("vectorize", {"INPUT": str(not_a_raster), "OUTPUT": "TEMPORARY_OUTPUT"})


def test_train_a_tiny_model_then_predict_with_it(scene, tmp_path, unet_buildings) -> None:
    """What train reports is what its history file and model file hold, and predict writes the mask the
    engine writes for the same image and model."""
    import csv

    import numpy as np
    import processing
    from unet_buildings.model.net.modelfile import load_model
    from unet_buildings.model.prediction.predict import predict_raster

    feedback = KeptMessages()

    results = processing.run(
        "unet_buildings:train",
        {
            "IMAGES": [str(scene.image)],
            "LABELS": [str(scene.polygons)],
            "EPOCHS": 2,
            "PATCHES_PER_EPOCH": 8,
            "BATCH_SIZE": 4,
            "BASE_WIDTH": 4,
            "TILE_SIZE": 32,
            "SEED": 1,
            "DEVICE": "cpu",
            "OUTPUT_MODEL": str(tmp_path / "model.pt"),
        },
        feedback=feedback,
    )
    assert results["OUTPUT_MODEL"] == str(tmp_path / "model.pt") and results["DEVICE_USED"].startswith("CPU")
    with open(results["HISTORY_CSV"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    scores = [float(row["val_iou_tuned"]) for row in rows]
    assert results["BEST_EPOCH"] == 1 + scores.index(max(scores))  # the first epoch with the best score
    best = rows[results["BEST_EPOCH"] - 1]
    assert results["VAL_IOU"] == pytest.approx(float(best["val_iou_tuned"]), rel=1e-9)
    assert results["THRESHOLD"] == pytest.approx(float(best["val_threshold"]), rel=1e-9)
    info = load_model(results["OUTPUT_MODEL"]).info
    assert (info.best_epoch, info.threshold) == (results["BEST_EPOCH"], results["THRESHOLD"])
    epoch_lines = [line for line in feedback.lines if line.startswith("Epoch ")]
    assert len(epoch_lines) == 2 and f"val_iou={float(rows[0]['val_iou']):.4f} " in epoch_lines[0]  # one per epoch

    predicted = run(
        "predict",
        {
            "INPUT": str(scene.image),
            "MODEL": results["OUTPUT_MODEL"],
            "OUTPUT_PROBABILITY": str(tmp_path / "probability.tif"),
            "OUTPUT_MASK": str(tmp_path / "mask.tif"),
        },
    )
    assert predicted["OUTPUT_MASK"] == str(tmp_path / "mask.tif")
    assert predicted["THRESHOLD_USED"] == results["THRESHOLD"]  # the model's tuned threshold by default
    engine = predict_raster(
        scene.image,
        results["OUTPUT_MODEL"],
        probability_path=tmp_path / "engine_probability.tif",
        mask_path=tmp_path / "engine_mask.tif",
    )
    assert engine.threshold == results["THRESHOLD"]
    for name in ("probability", "mask"):
        with rasterio.open(tmp_path / f"{name}.tif") as ours, rasterio.open(tmp_path / f"engine_{name}.tif") as theirs:
            np.testing.assert_array_equal(ours.read(), theirs.read(), err_msg=name)


def test_train_needs_one_label_layer_per_image(scene, tmp_path) -> None:
    with pytest.raises(QgsProcessingException, match="one label layer per image"):
        run(
            "train",
            {
                "IMAGES": [str(scene.image), str(scene.image)],
                "LABELS": [str(scene.labels)],
                "OUTPUT_MODEL": str(tmp_path / "model.pt"),
            },
        )
