"""One rank of a tiny distributed training run, started by torchrun from test_distributed.py (test code).

    python -m torch.distributed.run --standalone --nproc_per_node 2 distributed_rank.py SETTINGS_JSON RESULTS_DIR

Trains with ``model.training.trainer.train`` on the TrainConfig overrides in SETTINGS_JSON (default preset;
``"cancel_on": [R, E]`` asks rank R alone to cancel once E epochs are saved; a rank still running
after ``"hang_dump_s"`` prints every thread's stack and exits, so a hang says where it waits), then writes
RESULTS_DIR/rank<R>.json with what the test compares across ranks: a checksum of the network after
each epoch, the seed, the training crops this rank drew, the crops it validated, the result, and every write
this process made inside
the model's folder. Writes are seen by an audit hook (open for writing, rename, mkdir, remove), so a
write by any route is caught, not only the ones the engine means to make.
"""

from __future__ import annotations

import faulthandler
import hashlib
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for `model`

from model.errors import Cancelled  # noqa: E402
from model.training.data import TrainingData  # noqa: E402
from model.training.epoch_files import EpochFiles  # noqa: E402
from model.training.sampling import CropSampler  # noqa: E402
from model.training.trainer import TrainConfig, train  # noqa: E402

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
WRITE_EVENTS = ("os.rename", "os.mkdir", "os.remove", "os.rmdir")


def audited_writes(folder: str) -> list[str]:
    """The paths under ``folder`` that this process writes from now on, as ``event path`` lines."""
    writes: list[str] = []

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            writing = any(letter in (mode or "") for letter in "wax+") or bool(flags & WRITE_FLAGS)
        else:
            path, writing = (args[0] if args else None), event in WRITE_EVENTS
        if writing and isinstance(path, (str, bytes, os.PathLike)) and os.fsdecode(path).startswith(folder):
            writes.append(f"{event} {os.fsdecode(path)}")

    sys.addaudithook(hook)
    return writes


def main(settings_json: str, results_dir: str) -> None:
    # Adam's first construction imports torch._dynamo (seconds): done here, before training's clock starts,
    # so that a short time budget measures training steps
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    settings = json.loads(settings_json)
    faulthandler.dump_traceback_later(settings.pop("hang_dump_s"), exit=True)
    rank = int(os.environ["RANK"])
    cancel_rank, cancel_after_epochs = settings.pop("cancel_on", (None, None))
    writes = audited_writes(str(Path(settings["output_model"]).parent))
    checksums: list[str] = []
    crops: list[list[int]] = []
    validated: list[list[int]] = []
    record: dict = {"checksums": checksums, "crops": crops, "validated": validated, "writes": writes}
    save_epoch, draw, batch_tensors = EpochFiles.save_epoch, CropSampler.draw, TrainingData.batch_tensors

    def recording_save_epoch(self: EpochFiles, net, optimizer, info, *args) -> None:
        digest = hashlib.sha256()
        for tensor in net.state_dict().values():
            digest.update(tensor.detach().cpu().numpy().tobytes())
        checksums.append(digest.hexdigest())
        record["seed"] = info.training["seed"]  # the run's seed, as its model file records it
        save_epoch(self, net, optimizer, info, *args)

    def recording_draw(self: CropSampler, count: int) -> list:
        drawn = draw(self, count)
        crops.extend([crop.scene, crop.row, crop.col] for crop in drawn)
        return drawn

    def recording_batch_tensors(self: TrainingData, scenes, batch_crops, hidden, augmented: bool, generator):
        if not augmented:  # spatial validation's crops are the only ones not augmented
            validated.extend([crop.scene, crop.row, crop.col] for crop in batch_crops)
        return batch_tensors(self, scenes, batch_crops, hidden, augmented, generator)

    EpochFiles.save_epoch = recording_save_epoch  # type: ignore[method-assign]
    CropSampler.draw = recording_draw  # type: ignore[method-assign]
    TrainingData.batch_tensors = recording_batch_tensors  # type: ignore[method-assign]

    def cancelled() -> bool:
        return rank == cancel_rank and len(checksums) >= cancel_after_epochs

    try:
        result = train(TrainConfig.for_preset("default", **settings), cancelled=cancelled)
    except Cancelled:
        record["cancelled"] = True
    else:
        record["history"] = [{k: v for k, v in epoch.items() if k != "seconds"} for epoch in result.history]
        record.update(best_epoch=result.best_epoch, stop_reason=result.stop_reason)
    Path(results_dir, f"rank{rank}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main(*sys.argv[1:])
