"""What a training run keeps of itself: the model's description, each epoch's files (written by rank 0
alone, see ``checkpoints.py``), and resuming from them so that a resumed run ends as an uninterrupted
one. Mixed into the trainer, which provides what is declared here."""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..net.modelfile import ModelInfo
from ..net.network import UNet
from .checkpoints import read_checkpoint, save_epoch_files
from .data import TrainingData
from .distributed import Ranks
from .recipe import TrainConfig
from .sampling import Scene


class EpochFiles:
    """Mixed into the trainer, which provides what is declared here."""

    config: TrainConfig
    data: TrainingData
    ranks: Ranks
    seed: int
    precision: str  # the arithmetic training runs in, in words
    output_model: Path
    rng: np.random.Generator
    torch_rng: torch.Generator
    elapsed_before_s: float  # training time of the run this one resumes
    elapsed_s: Callable[[], float]

    def model_info(self, scenes: list[Scene]) -> ModelInfo:
        c = self.config
        ground = scenes[0].ground_pixel_size_m
        return ModelInfo(
            bands=list(self.data.bands),
            normalization=self.data.normalization,
            tile_size_px=c.tile_size_px,
            threshold=0.5,
            building_values=list(c.building_values),
            pixel_size=list(scenes[0].pixel_size),
            crs_units=scenes[0].crs_units,
            ground_pixel_size_m=list(ground) if ground else None,
            preset=c.preset,
            training={**asdict(replace(c, resume_from=None, seed=self.seed)), "precision_used": self.precision},
        )

    def save_epoch(
        self,
        net: UNet,
        optimizer: torch.optim.Optimizer,
        info: ModelInfo,
        best_state: dict,
        best_score: float,
        record: dict,
    ) -> None:
        """The epoch's files, written by rank 0 alone; every rank's random state goes into last.pt."""
        rng = {"numpy": self.rng.bit_generator.state, "torch": self.torch_rng.get_state()}
        rng_by_rank = self.ranks.gather(rng)
        if not self.ranks.is_main:
            return
        state = {
            "optimizer": optimizer.state_dict(),
            "best_state_dict": best_state,
            "best_score": best_score,
            "elapsed_s": self.elapsed_s(),
            "rng": rng,
            **({"rng_by_rank": rng_by_rank} if self.ranks.distributed else {}),
        }
        save_epoch_files(self.output_model, net, info, best_state, state, record, self.config.keep_epoch_checkpoints)

    def resume(
        self, net: UNet, optimizer: torch.optim.Optimizer, path: Path, info: ModelInfo
    ) -> tuple[int, list, dict, float]:
        """Restores the weights, optimizer, random state, history, best epoch with its threshold and
        the time already spent, so a resumed run ends as an uninterrupted one would (every rank reads
        the same file; a rank the saved run did not have keeps its own seed's crops)."""
        payload, saved = read_checkpoint(path, net.config)
        net.load_state_dict(payload["state_dict"])
        optimizer.load_state_dict(payload["optimizer"])
        rng_by_rank = payload.get("rng_by_rank", [payload["rng"]])
        if self.ranks.rank < len(rng_by_rank):
            self.rng.bit_generator.state = rng_by_rank[self.ranks.rank]["numpy"]
            self.torch_rng.set_state(rng_by_rank[self.ranks.rank]["torch"])
        self.elapsed_before_s = float(payload.get("elapsed_s", 0.0))
        info.best_epoch, info.threshold = saved.best_epoch, saved.threshold
        return saved.epoch + 1, list(saved.history), payload["best_state_dict"], float(payload["best_score"])
