"""What a training run keeps of itself: the model's description, each epoch's files (written by rank 0
alone, see ``checkpoints.py``), and resuming from them so that a resumed run ends as an uninterrupted
one."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..net.modelfile import ModelInfo
from ..net.network import UNet
from .checkpoints import read_checkpoint, save_epoch_files
from .data import TrainingData
from .distributed import Ranks
from .recipe import TrainConfig
from .sampling import Scene, mean_ground_pixel_size_m


@dataclass
class RandomState:
    """A rank's random streams: its crops and augmentation (numpy) and its device-side draws (torch)."""

    numpy: np.random.Generator
    torch: torch.Generator

    def saved(self) -> dict:
        return {"numpy": self.numpy.bit_generator.state, "torch": self.torch.get_state()}

    def restore(self, saved: dict) -> None:
        self.numpy.bit_generator.state = saved["numpy"]
        self.torch.set_state(saved["torch"])


@dataclass
class Resumed:
    """Where a checkpoint's run stood: the epoch to go on with, its history, best weights and score,
    and the training time it had spent."""

    start_epoch: int
    history: list
    best_state: dict
    best_score: float
    elapsed_s: float


class EpochFiles:
    """The files of one run beside its model file: written after every epoch, read back to resume."""

    def __init__(self, config: TrainConfig, ranks: Ranks, random: RandomState) -> None:
        self.config = config
        self.ranks = ranks
        self.random = random
        self.output_model = Path(config.output_model)

    def model_info(self, scenes: list[Scene], data: TrainingData, seed: int, precision: str) -> ModelInfo:
        """The model file's description of what this run trains (``precision``: its arithmetic, in words)."""
        c = self.config
        ground = mean_ground_pixel_size_m(scenes)
        return ModelInfo(
            bands=list(data.bands),
            normalization=data.normalization,
            tile_size_px=c.tile_size_px,
            threshold=0.5,
            building_values=list(c.building_values),
            pixel_size=list(scenes[0].pixel_size_map_units),
            crs_units=scenes[0].crs_units,
            ground_pixel_size_m=list(ground) if ground else None,
            value_scales=[scene.value_scale for scene in scenes],
            preset=c.preset,
            training={**asdict(replace(c, resume_from=None, seed=seed)), "precision_used": precision},
        )

    def save_epoch(
        self,
        net: UNet,
        optimizer: torch.optim.Optimizer,
        info: ModelInfo,
        best_state: dict,
        best_score: float,
        record: dict,
        elapsed_s: float,
    ) -> None:
        """The epoch's files, written by rank 0 alone; every rank's random state goes into last.pt."""
        rng = self.random.saved()
        rng_by_rank = self.ranks.gather(rng)
        if not self.ranks.is_main:
            return
        state = {
            "optimizer": optimizer.state_dict(),
            "best_state_dict": best_state,
            "best_score": best_score,
            "elapsed_s": elapsed_s,
            "rng": rng,
            **({"rng_by_rank": rng_by_rank} if self.ranks.distributed else {}),
        }
        save_epoch_files(self.output_model, net, info, best_state, state, record, self.config.keep_epoch_checkpoints)

    def resume(self, net: UNet, optimizer: torch.optim.Optimizer, path: Path, info: ModelInfo) -> Resumed:
        """Restores the weights, optimizer, random state and the best epoch with its threshold, so a resumed
        run ends as an uninterrupted one would (every rank reads the same file; a rank the saved run did not
        have keeps its own seed's crops)."""
        payload, saved = read_checkpoint(path, net.config)
        net.load_state_dict(payload["state_dict"])
        optimizer.load_state_dict(payload["optimizer"])
        rng_by_rank = payload.get("rng_by_rank", [payload["rng"]])
        if self.ranks.rank < len(rng_by_rank):
            self.random.restore(rng_by_rank[self.ranks.rank])
        info.best_epoch, info.threshold = saved.best_epoch, saved.threshold
        return Resumed(
            saved.epoch + 1,
            list(saved.history),
            payload["best_state_dict"],
            float(payload["best_score"]),
            float(payload.get("elapsed_s", 0.0)),
        )
