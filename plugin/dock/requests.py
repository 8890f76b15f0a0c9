"""What the user asked the dock for, as plain data, and the one place it becomes a Processing run.

The dock fills a request from its widgets (layers by id, files, numbers with their units in the names); a
request's ``parameters()`` names the provider algorithm's parameters, so widget code never spells a
parameter name and a test can check the mapping without running anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Union


def set_only(parameters: dict[str, object]) -> dict[str, object]:
    """The parameters the user set: a None value is left out, so the algorithm uses its own default
    (the preset's epochs, the model's tuned threshold, the whole image)."""
    return {name: value for name, value in parameters.items() if value is not None}


@dataclass(frozen=True)
class TrainRequest:
    algorithm_id: ClassVar[str] = "train"
    image_ids: tuple[str, ...]
    label_ids: tuple[str, ...]  # paired with image_ids in order
    building_values: str  # comma-separated label values that mean building
    preset: str
    output_model: Path
    epochs: int | None  # None: the preset's
    time_budget_min: float | None  # None: the preset's; a resumed run's covers the time already spent
    init_model: Path | None  # the model to adapt; None: a new network
    resume_from: Path | None = None  # a cancelled or timed-out run's checkpoint, continued

    def parameters(self) -> dict[str, object]:
        return set_only(
            {
                "IMAGES": list(self.image_ids),
                "LABELS": list(self.label_ids),
                "BUILDING_VALUES": self.building_values,
                "PRESET": self.preset,
                "OUTPUT_MODEL": str(self.output_model),
                "EPOCHS": self.epochs,
                "TIME_BUDGET_MIN": self.time_budget_min,
                "INIT_MODEL": str(self.init_model) if self.init_model else "",
                "FROM_SCRATCH": self.init_model is None,
                "RESUME": str(self.resume_from) if self.resume_from else None,
            }
        )


@dataclass(frozen=True)
class PredictRequest:
    """Buildings, probability and mask of one image (the extract algorithm)."""

    algorithm_id: ClassVar[str] = "extract"
    image_id: str
    model: Path
    output_buildings: Path
    output_probability: Path
    output_mask: Path
    min_area_m2: float
    simplify_m: float
    regularize: bool
    threshold: float | None  # None: the model's tuned threshold
    extent: str | None  # a Processing extent with its CRS; None: the whole image
    run_label: str = ""  # ' 2' for the second run on this image (its files end in '_2'): in its layers' names

    def parameters(self) -> dict[str, object]:
        return set_only(
            {
                "INPUT": self.image_id,
                "MODEL": str(self.model),
                "OUTPUT": str(self.output_buildings),
                "OUTPUT_PROBABILITY": str(self.output_probability),
                "OUTPUT_MASK": str(self.output_mask),
                "MIN_AREA": self.min_area_m2,
                "SIMPLIFY": self.simplify_m,
                "REGULARIZE": self.regularize,
                "THRESHOLD": self.threshold,
                "EXTENT": self.extent,
            }
        )


@dataclass(frozen=True)
class EvaluateRequest:
    algorithm_id: ClassVar[str] = "evaluate"
    prediction_id: str
    labels_id: str
    building_values: str
    output_report: Path
    output_error_map: Path
    output_false_positives: Path
    output_missed: Path
    run_label: str = ""  # ' 2' for the second evaluation of this layer: in its group's and layers' names

    def parameters(self) -> dict[str, object]:
        return {
            "PREDICTION": self.prediction_id,
            "LABELS": self.labels_id,
            "BUILDING_VALUES": self.building_values,
            "OUTPUT_REPORT": str(self.output_report),
            "OUTPUT_ERROR_MAP": str(self.output_error_map),
            "OUTPUT_FALSE_POSITIVES": str(self.output_false_positives),
            "OUTPUT_MISSED": str(self.output_missed),
        }


@dataclass(frozen=True)
class ExportRequest:
    """A model file as ONNX for the Deepness plugin."""

    algorithm_id: ClassVar[str] = "export"
    model: Path
    output: Path

    def parameters(self) -> dict[str, object]:
        return {"MODEL": str(self.model), "OUTPUT": str(self.output)}


DockRequest = Union[TrainRequest, PredictRequest, EvaluateRequest, ExportRequest]
