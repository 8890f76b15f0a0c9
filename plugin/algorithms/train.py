"""Train: a U-Net on images and their building labels, to a model file."""

from __future__ import annotations

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingOutputBoolean,
    QgsProcessingOutputFile,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
)

from ...model.choices import NORMALIZATIONS, PRECISIONS, PRESETS, check_pairs, parse_bands, parse_building_values
from ...model.io.files import same_file
from ...model.training.start_model import starter_model
from ..epochs import format_batch, format_epoch, record_reporter
from .base import EngineAlgorithm, advanced, building_values_parameter, device_parameter, engine_hooks

# parameter -> TrainConfig field; empty means "the preset's value"
OPTIONAL_INTEGERS = {
    "EPOCHS": "epochs",
    "PATCHES_PER_EPOCH": "patches_per_epoch",
    "BATCH_SIZE": "batch_size",
    "BASE_WIDTH": "base_width",
    "TILE_SIZE": "tile_size_px",
    "SEED": "seed",
    "EARLY_STOP_EPOCHS": "early_stop_patience",
}
PRESET_CHOICE = "preset"  # an enum's "the preset's value"


def preset_number(name: str, title: str) -> QgsProcessingParameterNumber:
    """An optional whole number whose empty value means the preset's."""
    return QgsProcessingParameterNumber(
        name,
        f"{title} (empty: the preset's value)",
        QgsProcessingParameterNumber.Type.Integer,
        optional=True,
        minValue=1,
    )


class TrainAlgorithm(EngineAlgorithm):
    ALGORITHM_ID = "train"
    SOURCE_PARAMETER = ""
    TITLE = "Train building model"
    GROUP = "Training"
    GROUP_ID = "training"
    SUMMARY = (
        "Trains a U-Net to tell building pixels from everything else, on random 256 x 256 crops of the "
        "images (augmented with gamma, rotation, noise, blur and flips) and their labels. By default it "
        "adapts the starter model to your imagery instead of starting from nothing: the model it starts "
        "from is scored first on the validation areas (epoch 0), and the new model replaces it only if "
        "an epoch does better there. Validation uses areas training never sees; the epoch with the best "
        "validation IoU is kept and the building threshold is tuned on validation. One line per epoch "
        "reports loss, accuracy, precision, recall and IoU."
    )
    PARAMETER_HELP = {
        "IMAGES": "One or more images (local raster files) of the same bands and a similar resolution.",
        "LABELS": "One label layer per image, in the same order: a class raster (any CRS, resolution or "
        "extent; aligned onto the image) or building polygons.",
        "BUILDING_VALUES": "Class values of the label rasters that mean building, comma-separated: 1 for 0/1 "
        "building masks (the default), 2 for the paper's classes, or e.g. 2,5. Ignored for polygon labels.",
        "PRESET": "default: the improved recipe (separate validation areas, stable learning rate, selection by "
        "IoU). paper: the paper's recipe exactly (64-filter U-Net, Adam lr 0.01, batch 16, 10 epochs).",
        "EPOCHS": "Number of epochs. Empty: the preset's value (default preset on a GPU: 20; on a CPU, as many as "
        "the time budget allows).",
        "TIME_BUDGET_MIN": "Train for this many minutes: the running epoch is cut short, validated and saved, and "
        "the learning-rate schedule follows the time. Empty: the preset's (default preset on a "
        "computer without a GPU: 30 minutes, unless you set EPOCHS; on a GPU: no limit).",
        "INIT_MODEL": "The model file (.pt) to start from: training adapts it to your labels (its network, bands "
        "and input scaling are kept) with a gentle fine-tuning recipe, and keeps it when no epoch beats it "
        "on your validation areas. Default: the starter model shipped with the plugin, when the images' "
        "bands fit it (RGB), else a new network. Empty: a new network.",
        "FROM_SCRATCH": "Train a new network instead of adapting a model (INIT_MODEL is then ignored). On a "
        "computer without a GPU a new network needs far more labels and time to match the starter model.",
        "RESUME": "(optional) Continue a run that was cancelled or ran out of time, from its checkpoint "
        "NAME_checkpoints/last.pt beside its model file; give the same images, labels and options, and "
        "that model file as OUTPUT_MODEL. The time budget covers the whole run, the time already spent "
        "included: give a larger one to train on after a run that used up its time.",
        "OUTPUT_MODEL": "The model file (.pt) to write: weights plus bands, normalisation, tile size, tuned "
        "threshold and training history. Beside it go the history as NAME_history.csv and "
        "the checkpoints in a folder NAME_checkpoints (NAME: the file name without .pt).",
        "PATCHES_PER_EPOCH": "(advanced) Training crops per epoch. Empty: the preset's value.",
        "BATCH_SIZE": "(advanced) Crops per optimisation step. Empty: the preset's value.",
        "LEARNING_RATE": "(advanced) The peak learning rate of Adam. Empty: the recipe's (default preset: 0.001 "
        "for a new network and when adapting a model; paper preset: 0.01).",
        "BASE_WIDTH": "(advanced) Filters of the first U-Net level (the paper: 64; each level doubles it). "
        "Smaller trains faster. Empty: the preset's value.",
        "DEVICE": "(advanced) auto: the GPU when torch sees one, else the CPU; or force cpu or cuda.",
        "BANDS": "(advanced) Image bands to use, 1-based and comma-separated (e.g. 1,2,3). Empty: every band "
        "that is not an alpha band.",
        "TILE_SIZE": "(advanced) Tile size in pixels, a multiple of 16 (the paper: 256): the side of the square "
        "crops training draws, and so of the tiles the model predicts. Empty: the preset's value.",
        "SEED": "(advanced) Random seed, for a repeatable run. Empty: a random seed.",
        "EARLY_STOP_EPOCHS": "(advanced) Stop when validation IoU has not improved for this many epochs. Empty: "
        "never stop early.",
        "NORMALIZATION": "(advanced) How band values are scaled: dataset (the training images' statistics, "
        "fixed in the model: a pixel's result never depends on the extent or file you process, and "
        "Deepness runs an export as Predict does; the default), per_image (each image by its own "
        "statistics, contrast never stretched past twice the training images'), fixed (values / "
        "full range, the paper's), or the preset's choice.",
        "PRECISION": "(advanced) auto: bfloat16 where the GPU or CPU computes it natively (about 2.5x faster "
        "training on such CPUs), else float32; or force one.",
    }

    def initAlgorithm(self, configuration: dict | None = None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterMultipleLayers("IMAGES", "Images", QgsProcessing.SourceType.TypeRaster))
        self.addParameter(
            QgsProcessingParameterMultipleLayers(
                "LABELS",
                "Labels (class rasters or building polygons, one per image, same order)",
                QgsProcessing.SourceType.TypeMapLayer,
            )
        )
        self.addParameter(building_values_parameter())
        self.addParameter(
            QgsProcessingParameterEnum(
                "PRESET", "Preset", options=list(PRESETS), defaultValue="default", usesStaticStrings=True
            )
        )
        self.addParameter(preset_number("EPOCHS", "Epochs"))
        self.addParameter(
            QgsProcessingParameterNumber(
                "TIME_BUDGET_MIN",
                "Train for this many minutes (empty: the preset's; 30 on a computer without a GPU)",
                QgsProcessingParameterNumber.Type.Double,
                optional=True,
                minValue=0.1,
            )
        )
        starter = starter_model()
        self.addParameter(
            QgsProcessingParameterFile(
                "INIT_MODEL",
                "Start from this model (default: the starter model)",
                extension="pt",
                optional=True,
                defaultValue=str(starter) if starter else None,
            )
        )
        self.addParameter(QgsProcessingParameterBoolean("FROM_SCRATCH", "Train a new network from scratch", False))
        self.addParameter(
            QgsProcessingParameterFile(
                "RESUME", "Continue from this checkpoint (…_checkpoints/last.pt)", extension="pt", optional=True
            )
        )
        self.addParameter(QgsProcessingParameterFileDestination("OUTPUT_MODEL", "Model file", "Model files (*.pt)"))
        # the preset's recipe is what most users want: its knobs are advanced
        titles = {
            "PATCHES_PER_EPOCH": "Crops per epoch",
            "BATCH_SIZE": "Batch size",
            "BASE_WIDTH": "Base width (filters of the first level)",
        }
        for name, title in titles.items():
            self.addParameter(advanced(preset_number(name, title)))
        self.addParameter(
            advanced(
                QgsProcessingParameterNumber(
                    "LEARNING_RATE",
                    "Learning rate (empty: the recipe's)",
                    QgsProcessingParameterNumber.Type.Double,
                    optional=True,
                    minValue=1e-9,
                )
            )
        )
        self.addParameter(advanced(device_parameter()))
        self.addParameter(advanced(QgsProcessingParameterString("BANDS", "Bands (e.g. 1,2,3)", optional=True)))
        self.addParameter(
            advanced(
                QgsProcessingParameterNumber(
                    "TILE_SIZE",
                    "Tile size in pixels: training crops and prediction tiles (empty: the preset's value)",
                    QgsProcessingParameterNumber.Type.Integer,
                    optional=True,
                    minValue=16,
                )
            )
        )
        self.addParameter(
            advanced(
                QgsProcessingParameterNumber(
                    "SEED", "Random seed", QgsProcessingParameterNumber.Type.Integer, optional=True
                )
            )
        )
        self.addParameter(
            advanced(
                QgsProcessingParameterNumber(
                    "EARLY_STOP_EPOCHS",
                    "Stop after this many epochs without a better validation IoU (empty: never)",
                    QgsProcessingParameterNumber.Type.Integer,
                    optional=True,
                    minValue=1,
                )
            )
        )
        self.addParameter(
            advanced(
                QgsProcessingParameterEnum(
                    "NORMALIZATION",
                    "Band scaling",
                    options=[PRESET_CHOICE, *NORMALIZATIONS],
                    defaultValue=PRESET_CHOICE,
                    usesStaticStrings=True,
                )
            )
        )
        self.addParameter(
            advanced(
                QgsProcessingParameterEnum(
                    "PRECISION",
                    "Arithmetic precision",
                    options=list(PRECISIONS),
                    defaultValue="auto",
                    usesStaticStrings=True,
                )
            )
        )
        self.addOutput(QgsProcessingOutputNumber("BEST_EPOCH", "Best epoch"))
        self.addOutput(
            QgsProcessingOutputNumber("VAL_IOU", "Validation IoU of the best epoch (at its tuned threshold)")
        )
        self.addOutput(QgsProcessingOutputNumber("THRESHOLD", "Building threshold tuned on validation"))
        self.addOutput(QgsProcessingOutputString("STARTED_FROM", "The model training started from (empty: new)"))
        self.addOutput(QgsProcessingOutputNumber("START_VAL_IOU", "Validation IoU of the model training started from"))
        self.addOutput(
            QgsProcessingOutputBoolean("KEPT_START", "No epoch beat the model training started from: it was kept")
        )
        self.addOutput(QgsProcessingOutputString("OUTCOME", "How the new model compares with its start, in words"))
        self.addOutput(
            QgsProcessingOutputBoolean("OUT_OF_TIME", "The time budget ended training (RESUME with a larger one)")
        )
        self.addOutput(QgsProcessingOutputString("DEVICE_USED", "Device used"))
        self.addOutput(QgsProcessingOutputFile("HISTORY_CSV", "Training history (CSV)"))

    def run_engine(self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> dict:
        from ...model.training.trainer import TrainConfig, train
        from ..layers import layer_path, raster_path

        images = [raster_path(layer, "image") for layer in self.parameterAsLayerList(parameters, "IMAGES", context)]
        labels = [
            layer_path(layer, "label", context, feedback)
            for layer in self.parameterAsLayerList(parameters, "LABELS", context)
        ]
        check_pairs(images, labels)
        budget_min = self.optional_number(parameters, "TIME_BUDGET_MIN", context)
        init_model, from_scratch = self.start_model(parameters, context)
        normalization = self.parameterAsEnumString(parameters, "NORMALIZATION", context)
        config = TrainConfig.for_preset(
            self.parameterAsEnumString(parameters, "PRESET", context),
            images=images,
            labels=labels,
            building_values=parse_building_values(self.parameterAsString(parameters, "BUILDING_VALUES", context)),
            output_model=self.parameterAsFileOutput(parameters, "OUTPUT_MODEL", context),
            device=self.device(parameters, context),
            precision=self.parameterAsEnumString(parameters, "PRECISION", context) or None,
            bands=parse_bands(self.parameterAsString(parameters, "BANDS", context)),
            time_budget_s=budget_min * 60 if budget_min else None,
            init_model=init_model,
            from_scratch=from_scratch,
            learning_rate=self.optional_number(parameters, "LEARNING_RATE", context),
            resume_from=self.parameterAsFile(parameters, "RESUME", context) or None,
            normalization=None if normalization in ("", PRESET_CHOICE) else normalization,
            **{
                field: self.optional_number(parameters, name, context, integer=True)
                for name, field in OPTIONAL_INTEGERS.items()
            },
        )
        progress, cancelled = engine_hooks(feedback)
        result = train(
            config,
            progress=progress,
            cancelled=cancelled,
            on_epoch=record_reporter(feedback, "epoch", format_epoch),
            on_batch=record_reporter(feedback, "batch", format_batch),
        )
        best = next((record for record in result.history if record.get("epoch") == result.best_epoch), {})
        if result.stop_reason:
            feedback.pushInfo(f"Training ended early: {result.stop_reason}.")
        feedback.pushInfo(
            f"Best epoch {result.best_epoch} on {result.device_description}, {result.precision}; "
            f"model: {result.model_path}"
        )
        (feedback.pushWarning if result.kept_start else feedback.pushInfo)(result.outcome)
        # the score that chose the epoch: IoU at the threshold tuned on validation (0.5 when not tuned)
        return {
            "OUTPUT_MODEL": str(result.model_path),
            "BEST_EPOCH": result.best_epoch,
            "VAL_IOU": best.get("val_iou_tuned"),
            "THRESHOLD": best.get("val_threshold"),
            "STARTED_FROM": result.start_model,
            "START_VAL_IOU": result.start_val_iou,
            "KEPT_START": result.kept_start,
            "OUTCOME": result.outcome,
            "OUT_OF_TIME": result.out_of_time,
            "DEVICE_USED": result.device_description,
            "HISTORY_CSV": str(result.history_csv_path),
        }

    def start_model(self, parameters: dict, context: QgsProcessingContext) -> tuple[str | None, bool]:
        """(init_model, from_scratch) as the engine takes them. The starter model (INIT_MODEL's default) is
        left to the engine, which trains a new network, and says why, when the images do not fit it (4
        bands, another band scaling); FROM_SCRATCH or an emptied INIT_MODEL mean a new network."""
        path = self.parameterAsFile(parameters, "INIT_MODEL", context)
        if self.parameterAsBoolean(parameters, "FROM_SCRATCH", context) or not path:
            return None, True
        starter = starter_model()
        return (None, False) if starter is not None and same_file(path, starter) else (path, False)
