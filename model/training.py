"""Training: the paper's recipe as a preset, and our default recipe.

One readable loop: draw random crops, augment them on the device, take an Adam step on binary
cross-entropy (plus Dice in the default recipe), validate after each epoch, keep the best model
and a resumable checkpoint, report progress, stop promptly when cancelled.
"""
from __future__ import annotations

import copy
import csv
import math
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .augment import AugmentConfig, augment
from .device import describe_device, resolve_device
from .errors import InputError
from .files import replaced_when_done
from .metrics import ConfusionMatrix
from .modelfile import ModelInfo, atomic_torch_save, model_payload, read_payload
from .network import UNet, UNetConfig
from .normalization import normalize
from .progress import CancelFn, ProgressFn, Reporter
from .rasters import LABEL_IGNORE
from .sampling import (Crop, CropSampler, Scene, default_bands, gather, load_scene, validation_blocks,
                       validation_crops)

PRESETS = ("default", "paper")
THRESHOLD_BINS = 100  # validation probabilities are histogrammed in 1 % steps to tune the threshold
EpochFn = Callable[[dict], None]


@dataclass
class TrainConfig:
    images: list[str]
    labels: list[str]
    output_model: str
    building_values: list[int] = field(default_factory=lambda: [2])
    preset: str = "default"
    bands: Optional[list[int]] = None  # None: every band that is not alpha
    epochs: int = 20
    patches_per_epoch: int = 1000  # crops drawn per epoch ("random" validation takes a share of them)
    batch_size: int = 8
    base_width: int = 32
    batch_norm: bool = True
    upsample: str = "nearest"
    tile_size_px: int = 256
    learning_rate: float = 1e-3
    schedule: str = "cosine"  # "cosine" (with warm-up) or "constant"
    loss: str = "bce_dice"  # "bce" or "bce_dice"
    validation: str = "spatial"  # "spatial": 1 block in 5 held out; "random": crops split at random
    validation_fraction: float = 0.2  # share of crops for "random" validation (paper 4:1)
    normalization: str = "per_image"  # or "fixed" (values / full range, as the paper)
    augmentation: AugmentConfig = field(default_factory=AugmentConfig)
    select_by: str = "val_iou_tuned"  # history column that picks the best epoch
    tune_threshold: bool = True
    keep_epoch_checkpoints: bool = False
    device: str = "auto"
    seed: Optional[int] = None
    resume_from: Optional[str] = None
    # Wall-clock limit on training: when reached, the running epoch is cut short, validated and
    # saved, and training ends; the schedule then follows elapsed time rather than steps.
    time_budget_s: Optional[float] = None

    @classmethod
    def for_preset(cls, preset: str = "default", **overrides) -> "TrainConfig":
        """The preset's values with the given overrides; an override of None keeps the preset's."""
        if preset not in PRESETS:
            raise InputError(f"Unknown preset {preset!r}: choose one of {', '.join(PRESETS)}.")
        values = {name: value for name, value in overrides.items() if value is not None}
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise InputError(f"Unknown training option(s): {', '.join(sorted(unknown))}.")
        if preset == "paper":
            values = {**PAPER_PRESET, **values}
        return cls(preset=preset, **values)


# The paper's recipe ("Remote sensing image building extraction based on U-net"), every number
# a parameter: 100,000 random 256 px crops split 4:1, the 19-conv U-Net at width 64 without batch
# norm, Adam at lr 0.01, binary cross-entropy, batch 16, 10 epochs, a checkpoint per epoch, the
# best kept by validation accuracy, probabilities thresholded at 0.5.
PAPER_PRESET = dict(
    epochs=10, patches_per_epoch=100_000, batch_size=16, base_width=64, batch_norm=False,
    upsample="nearest", tile_size_px=256, learning_rate=0.01, schedule="constant", loss="bce",
    validation="random", validation_fraction=0.2, normalization="fixed",
    augmentation=AugmentConfig.paper(), select_by="val_accuracy", tune_threshold=False,
    keep_epoch_checkpoints=True,
)


@dataclass
class TrainResult:
    model_path: Path
    history: list[dict]
    best_epoch: int
    device_description: str
    history_csv_path: Path
    checkpoint_dir: Path
    stopped_early: bool = False  # the time budget ended training before its last batch


def checkpoint_dir_for(output_model: Path) -> Path:
    return output_model.with_name(output_model.stem + "_checkpoints")


def history_csv_for(output_model: Path) -> Path:
    return output_model.with_name(output_model.stem + "_history.csv")


WARMUP_FRACTION = 0.05


def learning_rate_at(config: TrainConfig, progress: float) -> float:
    """The rate at ``progress`` (0..1) through training: a pure function, so a resumed run continues
    the schedule exactly. Linear warm-up, then cosine decay to 1 % of the peak."""
    if config.schedule == "constant":
        return config.learning_rate
    if progress < WARMUP_FRACTION:
        return config.learning_rate * max(progress / WARMUP_FRACTION, 0.01)
    decay = min((progress - WARMUP_FRACTION) / (1 - WARMUP_FRACTION), 1.0)
    return config.learning_rate * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * decay)))


def masked_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean BCE over valid pixels (weight 1), plus soft Dice on them for "bce_dice"."""
    valid = weight.sum().clamp_min(1.0)
    loss = F.binary_cross_entropy_with_logits(logits, target, weight=weight, reduction="sum") / valid
    if kind == "bce_dice":
        probability = torch.sigmoid(logits) * weight
        overlap = (probability * target).sum()
        loss = loss + 1 - (2 * overlap + 1) / (probability.sum() + (target * weight).sum() + 1)
    return loss


def confusion_counts(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> ConfusionMatrix:
    predicted = logits > 0  # probability > 0.5
    truth = target > 0.5
    valid = weight > 0
    tp = int((predicted & truth & valid).sum())
    fp = int((predicted & ~truth & valid).sum())
    fn = int((~predicted & truth & valid).sum())
    return ConfusionMatrix(tn=int(valid.sum()) - tp - fp - fn, fp=fp, fn=fn, tp=tp)


def tuned_threshold(positive_hist: np.ndarray, negative_hist: np.ndarray) -> tuple[float, float]:
    """The probability threshold (bin edge) maximising building IoU, and that IoU."""
    tp = positive_hist[::-1].cumsum()[::-1]  # pixels at or above each bin's lower edge
    fp = negative_hist[::-1].cumsum()[::-1]
    fn = positive_hist.sum() - tp
    iou = tp / np.maximum(tp + fp + fn, 1)
    candidates = np.arange(5, THRESHOLD_BINS - 4)  # 0.05 .. 0.95: avoid degenerate extremes
    best = candidates[np.argmax(iou[candidates])]
    return float(best) / THRESHOLD_BINS, float(iou[best])


class Trainer:
    def __init__(self, config: TrainConfig, reporter: Reporter, on_epoch: Optional[EpochFn]) -> None:
        self.config = config
        self.reporter = reporter
        self.on_epoch = on_epoch
        self.device = resolve_device(config.device)
        self.output_model = Path(config.output_model)
        self.checkpoint_dir = checkpoint_dir_for(self.output_model)
        self._validate_config()
        seed = config.seed if config.seed is not None else int(np.random.SeedSequence().entropy % 2**31)
        self.seed = seed
        torch.manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.torch_rng = torch.Generator(device=self.device).manual_seed(seed)

    def _validate_config(self) -> None:
        c = self.config
        if not c.images or len(c.images) != len(c.labels):
            raise InputError(f"Give one label layer per image: got {len(c.images)} image(s) and "
                             f"{len(c.labels)} label layer(s).")
        multiple = 2 ** UNetConfig().depth
        if c.tile_size_px % multiple:
            raise InputError(f"The crop size must be a multiple of {multiple} px, not {c.tile_size_px}.")
        for name in ("epochs", "patches_per_epoch", "batch_size", "base_width"):
            if getattr(c, name) < 1:
                raise InputError(f"{name} must be at least 1, not {getattr(c, name)}.")
        if c.validation not in ("spatial", "random") or c.loss not in ("bce", "bce_dice") \
                or c.normalization not in ("per_image", "fixed") or c.schedule not in ("cosine", "constant"):
            raise InputError("Unknown validation, loss, normalisation or schedule option.")

    # -- data -------------------------------------------------------------------------------
    def load_scenes(self, scratch_dir: Path) -> list[Scene]:
        bands = self.config.bands or default_bands(self.config.images[0])
        self.bands = bands
        scenes = []
        for index, (image, label) in enumerate(zip(self.config.images, self.config.labels)):
            self.reporter.report(0.0, f"Reading image {index + 1} of {len(self.config.images)}: {Path(image).name}")
            self.reporter.check()
            scenes.append(load_scene(image, label, self.config.building_values, bands, self.config.tile_size_px,
                                     scratch_dir))
        return scenes

    def split(self, scenes: list[Scene]) -> tuple[list[np.ndarray], list[Crop]]:
        """Training-hidden masks per scene and the validation crops."""
        crop_px = self.config.tile_size_px
        if self.config.validation == "random":
            count = max(1, round(self.config.patches_per_epoch * self.config.validation_fraction))
            usable = [scene.label != LABEL_IGNORE for scene in scenes]
            crops = CropSampler(scenes, crop_px, usable, self.rng).draw(count)
            return [np.zeros_like(scene.label, dtype=bool) for scene in scenes], crops
        hidden, crops = [], []
        for index, scene in enumerate(scenes):
            blocks = validation_blocks(scene, crop_px, offset=index)
            hidden.append(blocks)
            crops.extend(validation_crops(index, scene, blocks, crop_px))
        if not crops:
            raise InputError("The images are too small to hold out a validation area: give larger images "
                             "or more of them.")
        return hidden, crops

    def batch_tensors(self, scenes: list[Scene], crops: Sequence[Crop], hidden: Optional[list[np.ndarray]],
                      augmented: bool, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images, labels, scene_ids = gather(scenes, crops, self.config.tile_size_px, hidden)
        device = self.device
        x = torch.from_numpy(images).to(device, non_blocking=True)
        label = torch.from_numpy(labels).to(device).unsqueeze(1)
        weight = (label != LABEL_IGNORE).float()
        target = (label == 1).float()
        if augmented:
            scale = torch.tensor([scenes[i].value_scale for i in scene_ids], dtype=torch.float32, device=device)
            x, target, weight = augment(x, target, weight, scale, self.config.augmentation, generator)
        x = normalize(x, *self.normalization_of(scenes, scene_ids))
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        return x, target, weight

    def normalization_of(self, scenes: list[Scene], scene_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.config.normalization == "per_image":
            return (np.array([scenes[i].mean for i in scene_ids]), np.array([scenes[i].std for i in scene_ids]))
        return (np.zeros((len(scene_ids), len(self.bands))),
                np.array([[scenes[i].value_scale] * len(self.bands) for i in scene_ids]))

    # -- loop -------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        self.output_model.parent.mkdir(parents=True, exist_ok=True)
        # scenes too large for memory are memory-mapped from here; removed when training ends
        with tempfile.TemporaryDirectory(prefix=".unet_buildings_scratch_", dir=self.output_model.parent) as scratch:
            return self._run(Path(scratch))

    def _run(self, scratch_dir: Path) -> TrainResult:
        c = self.config
        started = time.monotonic()
        scenes = self.load_scenes(scratch_dir)
        hidden, val_crops = self.split(scenes)
        train_usable = [(scene.label != LABEL_IGNORE) & ~mask for scene, mask in zip(scenes, hidden)]
        sampler = CropSampler(scenes, c.tile_size_px, train_usable, self.rng)
        train_per_epoch = c.patches_per_epoch - (len(val_crops) if c.validation == "random" else 0)
        batches_per_epoch = max(1, math.ceil(max(train_per_epoch, 1) / c.batch_size))
        val_batches = math.ceil(len(val_crops) / c.batch_size)
        total_steps = batches_per_epoch * c.epochs

        net = UNet(UNetConfig(len(self.bands), c.base_width, batch_norm=c.batch_norm, upsample=c.upsample))
        self.check_cancel_inside(net)
        net.to(self.device)
        if self.device.type == "cuda":
            net = net.to(memory_format=torch.channels_last)
        optimizer = torch.optim.Adam(net.parameters(), lr=c.learning_rate)
        info = self.model_info(scenes)
        history: list[dict] = []
        start_epoch, best_state, best_score = 1, None, -math.inf
        if c.resume_from:
            start_epoch, history, best_state, best_score = self.resume(net, optimizer, Path(c.resume_from))

        amp = self.device.type == "cuda"
        stopped_early = False
        for epoch in range(start_epoch, c.epochs + 1):
            epoch_started = time.monotonic()
            net.train()
            train_loss, train_matrix, batches_run = 0.0, ConfusionMatrix(), 0
            for batch in range(batches_per_epoch):
                self.reporter.check()
                progress = ((epoch - 1) * batches_per_epoch + batch) / total_steps
                if c.time_budget_s is not None:
                    spent = (time.monotonic() - started) / c.time_budget_s
                    if spent >= 1.0:
                        stopped_early = True
                        break
                    progress = max(progress, spent)
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate_at(c, progress)
                x, target, weight = self.batch_tensors(scenes, sampler.draw(c.batch_size), hidden, True, self.torch_rng)
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=amp):
                    logits = net(x)
                loss = masked_loss(logits.float(), target, weight, c.loss)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                train_loss += float(loss.detach())
                batches_run += 1
                train_matrix += confusion_counts(logits.detach(), target, weight)
                self.report_progress(epoch, batch + 1, batches_per_epoch, val_batches, train_loss / (batch + 1), started,
                                     start_epoch)
            if batches_run == 0 and history:  # the budget ran out right at an epoch's start
                break
            record = {"epoch": epoch, "train_loss": train_loss / max(batches_run, 1), "train_batches": batches_run,
                      "train_accuracy": train_matrix.accuracy, "train_iou": train_matrix.iou,
                      "learning_rate": optimizer.param_groups[0]["lr"]}
            record.update(self.validate(net, scenes, hidden, val_crops, amp))
            record["seconds"] = time.monotonic() - epoch_started
            history.append(record)
            score = record[c.select_by]
            if score > best_score or best_state is None:
                best_score, best_state = score, copy.deepcopy({k: v.detach().cpu() for k, v in net.state_dict().items()})
                info.best_epoch, info.threshold = epoch, record["val_threshold"]
            info.epoch, info.history = epoch, history
            self.save_epoch(net, optimizer, info, best_state, best_score, record)
            if self.on_epoch:
                self.on_epoch(dict(record))
            if stopped_early:
                break

        self.write_history_csv(history)
        return TrainResult(self.output_model, history, info.best_epoch, describe_device(self.device),
                           history_csv_for(self.output_model), self.checkpoint_dir, stopped_early)

    def check_cancel_inside(self, net: UNet) -> None:
        """A batch of the paper's network takes many seconds on a CPU: checking for cancel before
        each U-Net block, forward and backward, makes cancel take effect within about a second."""
        def check(*_args) -> None:
            self.reporter.check()

        blocks = [*net.encoders, net.bottom, *net.decoders]
        for block in blocks:
            block.register_forward_pre_hook(check)
        for block in blocks[1:]:  # the first block's input needs no gradient: no backward hook there
            block.register_full_backward_pre_hook(check)

    @torch.inference_mode()
    def validate(self, net: UNet, scenes: list[Scene], hidden: list[np.ndarray], crops: list[Crop], amp: bool) -> dict:
        net.eval()
        c = self.config
        # The paper's validation crops are augmented like its training crops; the same seed
        # each epoch gives the same validation set. Spatial validation is never augmented.
        generator = torch.Generator(device=self.device).manual_seed(self.seed + 1)
        augmented = c.validation == "random"
        val_hidden = None if augmented else [~mask for mask in hidden]
        loss_sum, matrix = 0.0, ConfusionMatrix()
        positive_hist = np.zeros(THRESHOLD_BINS, np.int64)
        negative_hist = np.zeros(THRESHOLD_BINS, np.int64)
        for start in range(0, len(crops), c.batch_size):
            self.reporter.check()
            chunk = crops[start:start + c.batch_size]
            x, target, weight = self.batch_tensors(scenes, chunk, val_hidden, augmented, generator)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=amp):
                logits = net(x).float()
            loss_sum += float(masked_loss(logits, target, weight, c.loss)) * len(chunk)
            matrix += confusion_counts(logits, target, weight)
            bins = (torch.sigmoid(logits) * THRESHOLD_BINS).long().clamp_(0, THRESHOLD_BINS - 1)
            valid = weight > 0
            positive_hist += torch.bincount(bins[valid & (target > 0.5)], minlength=THRESHOLD_BINS).cpu().numpy()
            negative_hist += torch.bincount(bins[valid & (target < 0.5)], minlength=THRESHOLD_BINS).cpu().numpy()
        threshold, tuned_iou = tuned_threshold(positive_hist, negative_hist) if c.tune_threshold else (0.5, matrix.iou)
        return {"val_loss": loss_sum / max(1, len(crops)), "val_accuracy": matrix.accuracy,
                "val_precision": matrix.precision, "val_recall": matrix.recall, "val_f1": matrix.f1,
                "val_iou": matrix.iou, "val_threshold": threshold, "val_iou_tuned": tuned_iou}

    def report_progress(self, epoch: int, batch: int, batches: int, val_batches: int, running_loss: float,
                        started: float, start_epoch: int) -> None:
        c = self.config
        per_epoch = batches + val_batches
        done = (epoch - start_epoch) * per_epoch + batch
        remaining_work = (c.epochs - start_epoch + 1) * per_epoch - done
        elapsed = time.monotonic() - started
        eta_s = elapsed / max(done, 1) * remaining_work
        fraction = ((epoch - 1) * per_epoch + batch) / (c.epochs * per_epoch)
        self.reporter.report(fraction, f"epoch {epoch}/{c.epochs}, batch {batch}/{batches}, "
                                       f"loss {running_loss:.4f}, about {eta_s / 60:.1f} min left")

    # -- files ------------------------------------------------------------------------------
    def model_info(self, scenes: list[Scene]) -> ModelInfo:
        c = self.config
        if c.normalization == "per_image":
            normalization = {"mode": "per_image", "mean": np.mean([s.mean for s in scenes], 0).tolist(),
                             "std": np.mean([s.std for s in scenes], 0).tolist()}
        else:
            normalization = {"mode": "fixed", "mean": [0.0] * len(self.bands),
                             "std": [scenes[0].value_scale] * len(self.bands)}
        return ModelInfo(bands=list(self.bands), normalization=normalization, tile_size_px=c.tile_size_px,
                         threshold=0.5, building_values=list(c.building_values),
                         pixel_size=list(scenes[0].pixel_size), crs_units=scenes[0].crs_units, preset=c.preset,
                         training=asdict(replace(c, resume_from=None, seed=self.seed)))

    def save_epoch(self, net: UNet, optimizer: torch.optim.Optimizer, info: ModelInfo, best_state: dict,
                   best_score: float, record: dict) -> None:
        """Best model to the output path, a resumable checkpoint (optimizer, RNG, best weights), and
        for presets that keep them this epoch's model with this epoch's tuned threshold."""
        info.network = net.config.to_dict()
        atomic_torch_save(model_payload(best_state, info), self.output_model)
        extra = {"optimizer": optimizer.state_dict(), "best_state_dict": best_state, "best_score": best_score,
                 "rng": {"numpy": self.rng.bit_generator.state, "torch": self.torch_rng.get_state()}}
        atomic_torch_save(model_payload(net.state_dict(), info, extra), self.checkpoint_dir / "last.pt")
        if self.config.keep_epoch_checkpoints:
            atomic_torch_save(model_payload(net.state_dict(), replace(info, threshold=record["val_threshold"])),
                              self.checkpoint_dir / f"epoch_{record['epoch']:03d}.pt")

    def resume(self, net: UNet, optimizer: torch.optim.Optimizer, path: Path) -> tuple[int, list, dict, float]:
        payload = read_payload(path)
        if "optimizer" not in payload:
            raise InputError(f"'{path}' is a model file, not a training checkpoint: resume from the "
                             f"'last.pt' in the model's _checkpoints folder.")
        saved = ModelInfo.from_dict(payload["info"])
        if UNetConfig.from_dict(saved.network) != net.config:
            raise InputError(f"The checkpoint '{path}' was trained with another network "
                             f"({saved.network}); use the same preset and widths to resume.")
        net.load_state_dict(payload["state_dict"])
        optimizer.load_state_dict(payload["optimizer"])
        self.rng.bit_generator.state = payload["rng"]["numpy"]
        self.torch_rng.set_state(payload["rng"]["torch"])
        return saved.epoch + 1, list(saved.history), payload["best_state_dict"], float(payload["best_score"])

    def write_history_csv(self, history: list[dict]) -> None:
        with replaced_when_done(history_csv_for(self.output_model)) as temporary, \
                open(temporary, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(history[0]))
            writer.writeheader()
            writer.writerows(history)


def train(config: TrainConfig, progress: Optional[ProgressFn] = None, cancelled: Optional[CancelFn] = None,
          on_epoch: Optional[EpochFn] = None) -> TrainResult:
    """Train a U-Net on the config's image/label pairs and write the best model to
    ``config.output_model``. Raises ``Cancelled`` when cancelled; the model file then holds the
    best complete epoch so far (if any) and ``<model>_checkpoints/last.pt`` allows resuming."""
    return Trainer(config, Reporter.of(progress, cancelled), on_epoch).run()
