"""Training recipes: the options of one run (``TrainConfig``), the paper's preset, and our default
recipe sized for the device it runs on and the time it is given.

The default recipe's sizes were chosen by measurement (``bench/bench_cpu_speed.py`` for the CPU
speed of each setting, ``bench/bench_presets.py`` for test IoU after a CPU budget): on a CPU the
narrow network sees several times more crops in the same minutes than a wider one, and that wins on
a short budget; a GPU trains the wider network as fast as the CPU trains the narrow one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from ..choices import DEFAULT_BUILDING_VALUES, NORMALIZATIONS, PRESETS, check_pairs
from ..errors import InputError
from .augment import AugmentConfig
from .start_model import default_start

CPU_DEFAULT_BUDGET_MIN = 30.0


@dataclass
class TrainConfig:
    images: list[str]
    labels: list[str]
    output_model: str
    building_values: list[int] = field(default_factory=lambda: list(DEFAULT_BUILDING_VALUES))
    preset: str = "default"
    bands: list[int] | None = None  # None: every band that is not alpha
    epochs: int = 20
    # crops (the paper: patches) drawn per epoch ("random" validation takes a share of them)
    patches_per_epoch: int = 1000
    batch_size: int = 8
    base_width: int = 32
    depth: int = 4  # pooling steps: 5 sees about twice the ground (bench/bench_context.py)
    batch_norm: bool = True
    upsample: str = "nearest"
    tile_size_px: int = 256  # the side of the crops training draws, and so of the tiles the model predicts
    learning_rate: float = 1e-3
    schedule: str = "cosine"  # "cosine" (with warm-up) or "constant"
    warmup_fraction: float = 0.05  # share of training (steps or budget) over which the rate ramps up
    # L2-SP: a pull of every weight towards the start model's, this much per unit of squared distance,
    # so a few labelled blocks adapt the model without erasing what it learnt elsewhere (0: none)
    l2sp_weight: float = 0.0
    loss: str = "bce_dice"  # "bce" or "bce_dice"
    validation: str = "spatial"  # "spatial": 1 block in 5 held out; "random": crops split at random
    validation_fraction: float = 0.2  # share of crops for "random" validation (paper 4:1)
    max_validation_crops: int = 64  # spatial validation: a fixed, evenly spread subset beyond this
    building_crop_share: float = 0.3  # share of training crops centred on a (training-side) building
    # see choices.NORMALIZATIONS; "dataset" with the default augmentation's photometric changes did as
    # well as "per_image" on the leave-one-scene-out benchmark, and needs nothing but its own numbers
    normalization: str = "dataset"
    augmentation: AugmentConfig = field(default_factory=AugmentConfig)
    select_by: str = "val_iou_tuned"  # history column that picks the best epoch
    tune_threshold: bool = True
    early_stop_patience: int | None = None  # stop after this many epochs without a better score
    keep_epoch_checkpoints: bool = False
    device: str = "auto"
    precision: str = "auto"  # "auto": bfloat16 autocast where the device computes it natively
    seed: int | None = None
    resume_from: str | None = None
    init_model: str | None = None  # a model file whose weights training starts from (fine-tuning)
    from_scratch: bool = False  # True: a new network even where the default preset would fine-tune
    start_note: str = ""  # why the run starts from a new network when the starter model was not used
    # Wall-clock limit on training: when reached, the running epoch is cut short, validated and
    # saved, and training ends; the schedule then follows elapsed time rather than steps.
    time_budget_s: float | None = None
    sizing: str = ""  # what the preset chose for this device and why: logged and kept in the model file

    def check(self) -> None:
        """Refuses values no run can use, each in a sentence naming the option."""
        c = self
        check_pairs(c.images, c.labels)
        if not 1 <= c.depth <= 6:
            raise InputError(f"The network depth must be 1 to 6 pooling steps, not {c.depth}.")
        multiple = 2**c.depth
        if c.tile_size_px % multiple:
            raise InputError(f"The crop size must be a multiple of {multiple} px, not {c.tile_size_px}.")
        for name in ("epochs", "patches_per_epoch", "batch_size", "base_width", "max_validation_crops"):
            if getattr(c, name) < 1:
                raise InputError(f"{name} must be at least 1, not {getattr(c, name)}.")
        if c.early_stop_patience is not None and c.early_stop_patience < 1:
            raise InputError(f"Early stopping needs a patience of at least 1 epoch, not {c.early_stop_patience}.")
        if c.time_budget_s is not None and not 0 < c.time_budget_s < math.inf:  # NaN fails both
            raise InputError(f"The time budget must be a positive number of minutes, not {c.time_budget_s / 60:g}.")
        if not 0 < c.learning_rate < math.inf:
            raise InputError(f"The learning rate must be a positive number, not {c.learning_rate:g}.")
        if not 0 <= c.warmup_fraction < 1 or not c.l2sp_weight >= 0:
            raise InputError(
                f"The warm-up must be a share of training from 0 up to 1 (not {c.warmup_fraction:g}) and the "
                f"pull towards the start weights at least 0 (not {c.l2sp_weight:g})."
            )
        if (
            c.validation not in ("spatial", "random")
            or c.loss not in ("bce", "bce_dice")
            or c.normalization not in NORMALIZATIONS
            or c.schedule not in ("cosine", "constant")
        ):
            raise InputError("Unknown validation, loss, normalisation or schedule option.")

    @classmethod
    def for_preset(cls, preset: str = "default", **overrides) -> TrainConfig:
        """The preset's values with the given overrides; an override of None keeps the preset's.
        The default preset sizes itself for the device (see ``default_sizes``)."""
        if preset not in PRESETS:
            raise InputError(f"Unknown preset {preset!r}: choose one of {', '.join(PRESETS)}.")
        values = {name: value for name, value in overrides.items() if value is not None}
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise InputError(f"Unknown training option(s): {', '.join(sorted(unknown))}.")
        if values.get("from_scratch") and values.get("init_model"):
            raise InputError("Give either a model to start from or 'from scratch', not both.")
        if not values.get("from_scratch") and not values.get("init_model"):
            values["init_model"], values["start_note"] = default_start(preset, values, lambda: _band_count(values))
        if preset == "paper":
            values = {**PAPER_PRESET, **values}
        else:
            from ..net.device import resolve_device  # imports torch: only when a config is built

            sizes, sizing = default_sizes(resolve_device(values.get("device", "auto")).type, values)
            if values.get("init_model"):
                tuning = {name: value for name, value in FINE_TUNE_RECIPE.items() if name not in values}
                sizes, sizing = {**sizes, **tuning}, f"{sizing} {describe_fine_tuning({**tuning, **values})}"
            values = {**sizes, **values, "sizing": sizing}
        return cls(preset=preset, **values)


def _band_count(values: dict) -> int:
    """How many bands a run reads: the bands asked for, else the first image's (alpha excluded)."""
    if values.get("bands"):
        return len(values["bands"])
    from .sampling import default_bands  # reads the file: only when a config is built

    return len(default_bands(values["images"][0])) if values.get("images") else 0


# The paper's recipe ("Remote sensing image building extraction based on U-net"), every number
# a parameter: 100,000 random 256 px crops split 4:1, the 19-conv U-Net at width 64 without batch
# norm, Adam at lr 0.01, binary cross-entropy, batch 16, 10 epochs, a checkpoint per epoch, the
# best kept by validation accuracy, probabilities thresholded at 0.5, values scaled to 0..1.
PAPER_PRESET = dict(
    epochs=10,
    patches_per_epoch=100_000,
    batch_size=16,
    base_width=64,
    batch_norm=False,
    upsample="nearest",
    tile_size_px=256,
    learning_rate=0.01,
    schedule="constant",
    loss="bce",
    validation="random",
    validation_fraction=0.2,
    normalization="fixed",
    building_crop_share=0.0,
    augmentation=AugmentConfig.paper(),
    select_by="val_accuracy",
    tune_threshold=False,
    keep_epoch_checkpoints=True,
    precision="float32",
)

# Fine-tuning (the default preset's recipe when a run starts from a model, the starter model by
# default): a new network's peak rate after a longer warm-up, and no pull towards the start weights.
# Chosen with bench/bench_finetune.py (leave-one-scene-out starting models of 30 CPU-minutes, train on
# half a scene for 10, test on the other half; the README gives its figures): mean test IoU 0.536
# against 0.448 for 3e-4 with an L2-SP pull of 0.01 and 0.410 for 1e-4 with 0.1. Gentler recipes kept
# neither the start's skill on the other half nor learnt the user's half as well.
FINE_TUNE_RECIPE = dict(learning_rate=1e-3, warmup_fraction=0.1, l2sp_weight=0.0)


def describe_fine_tuning(values: dict) -> str:
    recipe = (
        f"Fine-tuning recipe: learning rate {values['learning_rate']:g} after a {values['warmup_fraction']:.0%} warm-up"
    )
    pull = values["l2sp_weight"]
    return f"{recipe}, weights pulled towards the start model's (L2-SP {pull:g})." if pull else f"{recipe}."


# The default recipe by device. On a CPU: width 16 (about 3x the crops per minute of width 32 in
# bfloat16), epochs of a minute or so, so the best epoch is picked often, and a 30-minute budget
# that ends training unless the user asks for epochs or another budget. On a GPU: the wider network
# for as many epochs as asked, no budget.
DEFAULT_SIZES = {
    "cpu": dict(
        base_width=16, batch_size=8, tile_size_px=256, patches_per_epoch=600, epochs=200, max_validation_crops=48
    ),
    "cuda": dict(
        base_width=32, batch_size=16, tile_size_px=256, patches_per_epoch=2000, epochs=20, max_validation_crops=128
    ),
}


def default_sizes(device_type: str, given: dict) -> tuple[dict, str]:
    """The default recipe's sizes on ``device_type`` and one sentence saying what was chosen and
    why. Values in ``given`` win; the CPU's time budget applies only when neither epochs nor a
    budget were given (a user who asks for 5 epochs gets 5 epochs)."""
    sizes: dict[str, float] = dict(DEFAULT_SIZES["cuda" if device_type == "cuda" else "cpu"])
    chosen = {**sizes, **given}
    if device_type != "cuda" and "epochs" not in given and "time_budget_s" not in given:
        sizes["time_budget_s"] = chosen["time_budget_s"] = CPU_DEFAULT_BUDGET_MIN * 60
    budget = chosen.get("time_budget_s")
    epochs = chosen["epochs"]
    limit = f"for {budget / 60:g} min" if budget else f"for {epochs} epoch{'s' if epochs != 1 else ''}"
    where = "GPU" if device_type == "cuda" else "CPU, no GPU"
    reason = (
        "a narrow network sees about 3x more crops per CPU minute than width 32"
        if device_type != "cuda"
        else "the GPU trains the wider network fast"
    )
    sizing = (
        f"Default recipe sized for this device ({where}): base width {chosen['base_width']}, "
        f"batch {chosen['batch_size']}, {chosen['tile_size_px']} px crops, {chosen['patches_per_epoch']} "
        f"crops per epoch, {limit} ({reason})."
    )
    return sizes, sizing
