"""The files a training run writes, checked before it starts (``check_run_files``) and written after
every epoch: the best model, a resumable checkpoint (optimizer, random state, best weights, time
spent), optionally each epoch's model, and the history as CSV. Each is written under a temporary name
and renamed, so a crash leaves the previous epoch's."""

from __future__ import annotations

import csv
import os
from dataclasses import replace
from pathlib import Path

from ..errors import InputError
from ..io.files import check_output_location, check_output_paths, replaced_when_done, same_file
from ..net.modelfile import ModelInfo, atomic_torch_save, model_payload, read_payload
from ..net.network import UNet, UNetConfig
from .recipe import TrainConfig


def checkpoint_dir_for(output_model: Path) -> Path:
    return output_model.with_name(output_model.stem + "_checkpoints")


def history_csv_for(output_model: Path) -> Path:
    return output_model.with_name(output_model.stem + "_history.csv")


def check_run_files(config: TrainConfig) -> None:
    """Before the first step, not after an epoch: the files a run writes, its derived ones included, never
    replace what it reads (a run resumed from its own checkpoint goes on writing it: that one is meant to
    be replaced), nothing is in their way, no name is too long once derived, and no input lies inside the
    checkpoint folder the run fills."""
    output_model = Path(config.output_model)
    folder, history = checkpoint_dir_for(output_model), history_csv_for(output_model)
    last = folder / "last.pt"
    resumed_elsewhere = config.resume_from if config.resume_from and not same_file(config.resume_from, last) else None
    check_output_paths(
        {
            "image": config.images,
            "label layer": config.labels,
            "model to start from": config.init_model,
            "checkpoint": resumed_elsewhere,
        },
        {"model file": output_model, "history": history, "checkpoint": last},
    )
    for name, written in (
        ("model file", output_model),
        ("training history written beside the model file", history),
        ("checkpoint written beside the model file", last),
    ):
        check_output_location(written, name)
    inputs = {
        "image": list(config.images),
        "label layer": list(config.labels),
        "model to start from": [config.init_model] if config.init_model else [],
    }
    inside = os.path.realpath(folder) + os.sep
    for name, paths in inputs.items():
        for path in paths:
            if os.path.realpath(path).startswith(inside):
                raise InputError(
                    f"The {name} '{path}' is inside '{folder}', the checkpoint folder this run writes: copy it "
                    "elsewhere first, or choose another name for the model file."
                )


def save_epoch_files(
    output_model: Path,
    net: UNet,
    info: ModelInfo,
    best_state: dict,
    training_state: dict,
    record: dict,
    keep_epoch_checkpoints: bool,
) -> None:
    """Best model to ``output_model``, the network's current state with ``training_state`` to
    ``last.pt``, and this epoch's model with this epoch's tuned threshold when epochs are kept."""
    info.network = net.config.to_dict()
    folder = checkpoint_dir_for(output_model)
    writes = [
        (model_payload(best_state, info), output_model),
        (model_payload(net.state_dict(), info, training_state), folder / "last.pt"),
    ]
    if keep_epoch_checkpoints:
        writes.append(
            (
                model_payload(net.state_dict(), replace(info, threshold=record["val_threshold"])),
                folder / f"epoch_{record['epoch']:03d}.pt",
            )
        )
    for payload, path in writes:
        try:
            atomic_torch_save(payload, path)
        except OSError as error:
            raise InputError(
                f"Could not write '{path}' ({error.strerror or error}): free some disk space or "
                "choose another folder for the model; the previous epoch's files are kept."
            ) from error


def read_checkpoint(path: Path, network: UNetConfig) -> tuple[dict, ModelInfo]:
    """A ``last.pt`` payload and its model info, checked to be a checkpoint of this network."""
    payload = read_payload(path)
    if "optimizer" not in payload:
        raise InputError(
            f"'{path}' is a model file, not a training checkpoint: resume from the "
            f"'last.pt' in the model's _checkpoints folder."
        )
    saved = ModelInfo.from_dict(payload["info"])
    if UNetConfig.from_dict(saved.network) != network:
        raise InputError(
            f"The checkpoint '{path}' was trained with another network "
            f"({saved.network}); use the same preset and widths to resume."
        )
    return payload, saved


def training_time_s(checkpoint: Path) -> float:
    """The training time a checkpoint's run has spent: what a resumed run's time budget must exceed."""
    return float(read_payload(checkpoint).get("elapsed_s", 0.0))


def write_history_csv(path: Path, history: list[dict]) -> None:
    """One row per epoch; a start model's epoch 0 has validation columns only, its others are empty."""
    columns = list(dict.fromkeys(key for record in history for key in record))
    with replaced_when_done(path) as temporary, open(temporary, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)
