"""Training: the paper's recipe as a preset, and our default recipe.

One readable loop: draw random crops, augment them on the device, take an Adam step on binary
cross-entropy (plus Dice in the default recipe), validate after each epoch, keep the best model
and a resumable checkpoint, report progress, stop promptly when cancelled. The data it reads is
``data.py``, its loss, pull towards the start and validation tally ``objective.py``, its options'
checks ``recipe.py``, its progress bar and smoothed loss ``progress_bar.py``, its epoch files and
resuming ``epoch_files.py``, what it returns and its best epoch ``outcome.py``, and its ranks under
torchrun ``distributed.py``.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import Cancelled, EngineError, InputError
from ..evaluation.metrics import ConfusionMatrix
from ..io.files import clean_leftovers, scratch_folder
from ..io.rasters import LABEL_IGNORE
from ..net.device import autocast, autocast_settings, describe_device, describe_precision, resolve_device
from ..net.modelfile import LoadedModel, ModelInfo, load_model
from ..net.network import UNet, UNetConfig
from ..progress import CancelFn, ProgressFn, Reporter
from .checkpoints import check_run_files, checkpoint_dir_for, history_csv_for, write_history_csv
from .data import TrainingData
from .distributed import Ranks, process_group
from .epoch_files import EpochFiles, RandomState
from .objective import ValidationTally, confusion_counts, learning_rate_at, masked_loss, pull_towards
from .outcome import BestEpoch, TrainResult
from .progress_bar import SmoothedLoss, TrainingProgress
from .recipe import PAPER_PRESET, TrainConfig  # noqa: F401  (part of the training API)
from .sampling import (
    Crop,
    CropSampler,
    Scene,
)

EpochFn = Callable[[dict], None]
BatchFn = Callable[[dict], None]
BUDGET_REACHED = "the time budget"  # how the stop reason of a run that used up its time begins
BATCH_REPORT_S = 3.0  # the smoothed training loss is reported this often (and at each epoch's end)
# a GradScaler skips a step whose float16 loss overflows and halves its scale: from 2**16, this many
# skips in a row leave a scale far below 1, so the loss itself is lost, not just its float16 range
MAX_SKIPPED_STEPS = 24


class TrainingDiverged(EngineError):
    """The loss became NaN or infinite: the weights are lost, the last good epoch is kept."""


@dataclass(frozen=True)
class RunPlan:
    """How a run's epochs are cut into steps: an epoch is patches_per_epoch crops in all, shared out, and
    each rank takes batch_size of them a step."""

    batches_per_epoch: int
    val_batches: int  # this rank's validation batches
    total_steps: int
    global_batch: int

    @classmethod
    def of(cls, config: TrainConfig, val_crops: int, rank_val_crops: int, world_size: int) -> RunPlan:
        train_per_epoch = config.patches_per_epoch - (val_crops if config.validation == "random" else 0)
        global_batch = config.batch_size * world_size
        batches = max(1, math.ceil(max(train_per_epoch, 1) / global_batch))
        return cls(batches, math.ceil(rank_val_crops / config.batch_size), batches * config.epochs, global_batch)


class Trainer:
    def __init__(
        self,
        config: TrainConfig,
        reporter: Reporter,
        on_epoch: EpochFn | None,
        ranks: Ranks | None = None,
        on_batch: BatchFn | None = None,
    ) -> None:
        self.config = config
        self.reporter = reporter
        self.on_epoch = on_epoch
        self.on_batch = on_batch
        self.ranks = ranks or Ranks(resolve_device(config.device))  # one process unless torchrun started several
        self.device = self.ranks.device
        self.autocast_dtype, needs_grad_scaler = autocast_settings(self.device, config.precision)
        self.precision = describe_precision(self.device, config.precision)
        # float16 gradients underflow without loss scaling; bfloat16 and float32 need none
        self.scaler = torch.amp.GradScaler(self.device.type) if needs_grad_scaler else None
        self.batch_size = config.batch_size  # halved when the GPU runs out of memory
        self.skipped_steps = 0  # steps in a row whose loss was not finite (the GradScaler skipped them)
        self.output_model = Path(config.output_model)
        self.checkpoint_dir = checkpoint_dir_for(self.output_model)
        config.check()
        check_run_files(config)
        seed = config.seed if config.seed is not None else int(np.random.default_rng().integers(2**31))
        self.seed = seed = self.ranks.from_main(seed)  # an unseeded run's ranks take rank 0's seed
        torch.manual_seed(seed)  # the same initial network on every rank
        self.rng = np.random.default_rng(self.ranks.seed(seed))  # each rank its own crops and augmentation
        self.torch_rng = torch.Generator(device=self.device).manual_seed(self.ranks.seed(seed))
        self.files = EpochFiles(config, self.ranks, RandomState(self.rng, self.torch_rng))
        self.init = self._load_init_model()
        self.data = TrainingData(config, self.device, self.ranks, self.init)

    def _load_init_model(self) -> LoadedModel | None:
        """The model to start from; also when resuming, whose checkpoint holds the weights: the start's
        network, bands, input scaling and weights (the L2-SP anchor) are those of the first run."""
        if not self.config.init_model:
            return None
        return load_model(Path(self.config.init_model))

    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.device, self.autocast_dtype)

    # -- loop -------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        # scenes too large for memory are memory-mapped from here; removed when training ends. Ranks
        # other than 0 use the system's temporary folder: they write nothing beside the model.
        scratch_parent = None
        if self.ranks.is_main:
            scratch_parent = self.output_model.parent
            scratch_parent.mkdir(parents=True, exist_ok=True)
            clean_leftovers(scratch_parent)  # a killed run's scratch can hold gigabytes: gone before this one's
        with scratch_folder(scratch_parent) as scratch:
            return self._run(Path(scratch))

    def build_network(self) -> UNet:
        c = self.config
        if self.init is not None:
            return self.init.net.train()
        return UNet(
            UNetConfig(len(self.data.bands), c.base_width, depth=c.depth, batch_norm=c.batch_norm, upsample=c.upsample)
        )

    def _run(self, scratch_dir: Path) -> TrainResult:
        c = self.config
        self.started = time.monotonic()
        self.elapsed_before_s = 0.0  # training time of the run this one resumes
        scenes = self.data.load_scenes(scratch_dir, self.reporter, self.check_cancel_alone)
        validation_areas, val_crops = self.data.split(scenes, self.rng)
        train_usable = [(scene.label != LABEL_IGNORE) & ~mask for scene, mask in zip(scenes, validation_areas)]
        sampler = CropSampler(scenes, c.tile_size_px, train_usable, self.rng, c.building_crop_share)
        self.plan = plan = RunPlan.of(c, len(val_crops), len(self.ranks.shard(val_crops)), self.ranks.world_size)
        self.progress = TrainingProgress(
            self.reporter, c.epochs, c.time_budget_s, plan.batches_per_epoch, plan.val_batches
        )

        net = self.build_network()
        # the start weights, which L2-SP pulls towards: taken before a checkpoint's weights replace them
        self.anchors = (
            [parameter.detach().clone() for parameter in net.parameters()]
            if self.init is not None and c.l2sp_weight > 0
            else []
        )
        if not self.ranks.distributed:  # a rank stopping inside a step would leave the others waiting
            # a batch of the paper's network takes many seconds on a CPU: a cancel takes effect within a block
            net.call_before_each_block(self.reporter.check)
        # torch's type stubs omit memory_format, which Module.to accepts
        net.to(self.device, memory_format=torch.channels_last)  # type: ignore[call-overload]
        optimizer = torch.optim.Adam(net.parameters(), lr=c.learning_rate)
        info = self.files.model_info(scenes, self.data, self.seed, self.precision)
        history: list[dict] = []
        best = BestEpoch()
        self.start_epoch = 1
        if c.resume_from:
            resumed = self.files.resume(net, optimizer, Path(c.resume_from), info)
            self.start_epoch, history, self.elapsed_before_s = resumed.start_epoch, resumed.history, resumed.elapsed_s
            best.state, best.score = resumed.best_state, resumed.best_score
        self.anchors = [anchor.to(self.device) for anchor in self.anchors]
        model = self.ranks.wrap(net)  # what the steps call; net itself is validated and saved
        self.report_set_up()

        def end_epoch(record: dict, started: float) -> None:
            """Validation, the best epoch, the epoch's files and the caller's callback."""
            record.update(self.validate(net, scenes, validation_areas, val_crops, record["epoch"]))
            record["seconds"] = time.monotonic() - started
            history.append(record)
            best.offer(record, net, info, c.select_by)
            info.epoch, info.history = record["epoch"], history
            assert best.state is not None  # offer() takes the first epoch it is given
            self.files.save_epoch(net, optimizer, info, best.state, best.score, record, self.elapsed_s())
            if self.on_epoch:
                self.on_epoch(dict(record))

        if self.init is not None and not c.resume_from:
            # epoch 0: the start model on the same validation blocks, so a run that cannot beat it keeps it
            end_epoch({"epoch": 0}, time.monotonic())
        stop_reason = ""
        self.batch_loss = SmoothedLoss()
        for epoch in range(self.start_epoch, c.epochs + 1):
            started = time.monotonic()
            record, stop_reason = self.train_epoch(
                model, net, optimizer, scenes, sampler, validation_areas, epoch, info
            )
            if record["train_batches"] == 0 and history:  # the budget ran out right at an epoch's start
                break
            end_epoch(record, started)
            if stop_reason:
                break
            if c.early_stop_patience and epoch - info.best_epoch >= c.early_stop_patience:
                stop_reason = f"validation did not improve for {c.early_stop_patience} epochs"
                break

        if self.ranks.is_main:
            write_history_csv(history_csv_for(self.output_model), history)
        start_record = history[0] if self.init is not None and history and history[0]["epoch"] == 0 else None
        return TrainResult(
            self.output_model,
            history,
            info.best_epoch,
            describe_device(self.device),
            history_csv_for(self.output_model),
            self.checkpoint_dir,
            bool(stop_reason),
            stop_reason,
            c.sizing,
            self.precision,
            str(c.init_model) if self.init is not None else "",
            start_record[c.select_by] if start_record else None,
            stop_reason.startswith(BUDGET_REACHED),
        )

    def report_set_up(self) -> None:
        """What the run does, in the log before its first step."""
        c, plan = self.config, self.plan
        for line in (
            c.sizing,
            f"Training on {describe_device(self.device)} in {self.precision}.",
            f"{self.ranks.world_size} processes (torchrun), batch {c.batch_size} each: global batch "
            f"{plan.global_batch}, {plan.batches_per_epoch} steps per epoch of {c.patches_per_epoch} crops."
            if self.ranks.distributed
            else "",
            f"Starting from the model '{c.init_model}'." if self.init is not None else c.start_note,
        ):
            if line:
                self.reporter.report(0.0, line)

    def train_epoch(
        self,
        model: torch.nn.Module,
        net: UNet,
        optimizer: torch.optim.Optimizer,
        scenes: list[Scene],
        sampler: CropSampler,
        validation_areas: list[np.ndarray],
        epoch: int,
        info: ModelInfo,
    ) -> tuple[dict, str]:
        """One epoch's training steps, cut short when the time budget is spent: (its record without the
        validation scores, why training stops or "")."""
        c, plan = self.config, self.plan
        net.train()
        train_loss, train_matrix, batches_run, finite_batches = 0.0, ConfusionMatrix(), 0, 0
        stop_reason = ""
        for batch in range(plan.batches_per_epoch):
            elapsed_s = self.agreed_clock()
            progress = ((epoch - 1) * plan.batches_per_epoch + batch) / plan.total_steps
            if c.time_budget_s is not None:
                spent = elapsed_s / c.time_budget_s
                if spent >= 1.0:
                    stop_reason = f"{BUDGET_REACHED} of {c.time_budget_s / 60:g} min was reached"
                    break
                progress = max(progress, spent)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate_at(c, progress)
            batch_started = time.monotonic()
            loss, logits, target, weight = self.step(model, optimizer, scenes, sampler, validation_areas)
            # the ranks' mean loss: every rank sees a divergence at the same step
            value = self.ranks.sum([float(loss.detach())])[0] / self.ranks.world_size
            self.skipped_steps = 0 if math.isfinite(value) else self.skipped_steps + 1
            if self.skipped_steps > (0 if self.scaler is None else MAX_SKIPPED_STEPS):
                raise TrainingDiverged(self.divergence_message(epoch, batch, value, info))
            if math.isfinite(value):  # a step the scaler skipped has no loss to average
                train_loss += value
                finite_batches += 1
            batches_run += 1
            train_matrix += confusion_counts(logits.detach(), target, weight)
            self.progress.timed_train_batch(time.monotonic() - batch_started)
            self.report_batch(epoch, batch + 1, value)
            self.progress.report(
                self.elapsed_s(), epoch, batch + 1, 0, f"loss {train_loss / max(finite_batches, 1):.4f}"
            )
        # the epoch's figures summed over the ranks, whose batch-norm statistics are shared before validating
        train_matrix = self.summed_over_ranks(train_matrix)
        self.ranks.share_buffers(net)
        record = {
            "epoch": epoch,
            "train_loss": train_loss / finite_batches if finite_batches else math.nan,
            "train_batches": batches_run,
            "train_accuracy": train_matrix.accuracy,
            "train_iou": train_matrix.iou,
            "learning_rate": optimizer.param_groups[0]["lr"],
        }
        return record, stop_reason

    def report_batch(self, epoch: int, batch: int, loss: float) -> None:
        """The smoothed training loss, every BATCH_REPORT_S and at the epoch's last batch: a short run shows
        its progress long before its first epoch ends."""
        if not self.batch_loss.add(loss) or self.on_batch is None:
            return
        if self.batch_loss.due(BATCH_REPORT_S) or batch == self.plan.batches_per_epoch:
            self.on_batch(
                {
                    "epoch": epoch,
                    "batch": batch,
                    "batches_per_epoch": self.plan.batches_per_epoch,
                    "train_loss": self.batch_loss.value,
                    "elapsed_s": self.elapsed_s(),
                }
            )

    def elapsed_s(self) -> float:
        """Training time so far, a resumed run's earlier time included (the budget covers both)."""
        return self.elapsed_before_s + time.monotonic() - self.started

    def agreed_clock(self) -> float:
        """Raises ``Cancelled`` when any rank is asked to stop, else returns the training time so far by
        rank 0's clock: every rank then takes the same time-budget and learning-rate decisions."""
        asked, elapsed_s = self.ranks.sum([self.reporter.cancelled(), self.elapsed_s() if self.ranks.is_main else 0])
        if asked:
            raise Cancelled()
        return elapsed_s

    def check_cancel_alone(self) -> None:
        """Cancel where ranks may be out of step (reading, validating): there only a single process
        stops at once; the ranks of a distributed run stop together at their next training step."""
        if not self.ranks.distributed:
            self.reporter.check()

    def summed_over_ranks(self, matrix: ConfusionMatrix) -> ConfusionMatrix:
        return ConfusionMatrix(*(int(count) for count in self.ranks.sum([matrix.tn, matrix.fp, matrix.fn, matrix.tp])))

    def step(
        self,
        net: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scenes: list[Scene],
        sampler: CropSampler,
        validation_areas: list[np.ndarray],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One optimisation step on a fresh batch. Out of GPU memory, the batch size is halved for the
        rest of training (and said so) and the step is taken again on a smaller batch."""
        while True:
            crops = sampler.draw(self.batch_size)
            x, target, weight = self.data.batch_tensors(scenes, crops, validation_areas, True, self.torch_rng)
            try:
                with self.autocast():
                    logits = net(x)
                loss = masked_loss(logits.float(), target, weight, self.config.loss)
                optimizer.zero_grad(set_to_none=True)
                if self.scaler is None:
                    loss.backward()
                    pull_towards(net, self.anchors, self.config.l2sp_weight)
                    optimizer.step()
                else:
                    self.scaler.scale(loss).backward()
                    self.scaler.unscale_(optimizer)  # the pull is added to true, unscaled gradients
                    pull_towards(net, self.anchors, self.config.l2sp_weight)
                    self.scaler.step(optimizer)
                    self.scaler.update()
                return loss, logits, target, weight
            except torch.cuda.OutOfMemoryError:
                del x, target, weight
                optimizer.zero_grad(set_to_none=True)
                torch.cuda.empty_cache()
                if self.ranks.distributed:  # the ranks' steps must stay alike: no rank halves its batch alone
                    raise InputError(
                        f"The GPU ran out of memory at a batch size of {self.batch_size} per process: "
                        "run again with a smaller batch size or base width."
                    ) from None
                if self.batch_size == 1:
                    raise InputError(
                        "The GPU ran out of memory for a single crop: choose a smaller base width or "
                        "crop size, close other programs using the GPU, or train on the CPU."
                    ) from None
                self.batch_size //= 2
                self.reporter.report(0.0, f"The GPU ran out of memory: batch size halved to {self.batch_size}.")

    def divergence_message(self, epoch: int, batch: int, value: float, info: ModelInfo) -> str:
        kept = (
            f"the model file keeps epoch {info.best_epoch}, the best complete one"
            if info.best_epoch
            else "no model file was written"
        )
        return (
            f"Training diverged at epoch {epoch}, batch {batch + 1}: the loss became {value}, so {kept}. "
            f"Lower the learning rate (now {self.config.learning_rate:g}) or use the default preset."
        )

    @torch.inference_mode()
    def validate(
        self, net: UNet, scenes: list[Scene], validation_areas: list[np.ndarray], crops: list[Crop], epoch: int
    ) -> dict:
        net.eval()
        c = self.config
        # The paper's validation crops are augmented like its training crops; the same seed
        # each epoch gives the same validation set. Spatial validation is never augmented.
        generator = torch.Generator(device=self.device).manual_seed(self.seed + 1)
        augmented = c.validation == "random"
        training_areas = None if augmented else [~mask for mask in validation_areas]  # blanked in validation
        tally = ValidationTally()
        share = self.ranks.shard(crops)  # each rank scores its share; the tallies of all ranks are summed
        for index, start in enumerate(range(0, len(share), self.batch_size)):
            self.check_cancel_alone()
            batch_started = time.monotonic()
            chunk = share[start : start + self.batch_size]
            x, target, weight = self.data.batch_tensors(scenes, chunk, training_areas, augmented, generator)
            with self.autocast():
                logits = net(x).float()
            tally.add(logits, target, weight, c.loss)
            self.progress.timed_validation_batch(time.monotonic() - batch_started)
            doing = "validating" if epoch else "scoring the model it starts from"
            self.progress.report(self.elapsed_s(), epoch, self.plan.batches_per_epoch, index + 1, doing)
        return tally.summed(self.ranks.sum).record(len(crops), c.tune_threshold)


def train(
    config: TrainConfig,
    progress: ProgressFn | None = None,
    cancelled: CancelFn | None = None,
    on_epoch: EpochFn | None = None,
    on_batch: BatchFn | None = None,
) -> TrainResult:
    """Train a U-Net on the config's image/label pairs and write the best model to
    ``config.output_model``. Raises ``Cancelled`` when cancelled; the model file then holds the
    best complete epoch so far (if any) and ``<model>_checkpoints/last.pt`` allows resuming.

    A run that starts from a model (``init_model``) first scores it on the validation areas (epoch 0,
    the first history record): an epoch must beat it to replace it, so a run that cannot improve on
    its start writes the start's weights (``TrainResult.kept_start``) instead of a worse model.

    Started by torchrun as several processes, each is one rank of one run (see distributed.py):
    ``batch_size`` is per rank, an epoch's crops are shared out, and only rank 0 reports progress,
    calls ``on_epoch`` and writes files; every rank returns the same result."""
    with process_group(resolve_device(config.device)) as ranks:
        main = ranks.is_main
        reporter = Reporter.of(progress if main else None, cancelled)
        return Trainer(config, reporter, on_epoch if main else None, ranks, on_batch if main else None).run()
