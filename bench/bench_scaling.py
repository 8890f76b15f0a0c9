"""Scaling model: time and memory of a training step and of prediction per megapixel as functions of
the network's base width and the tile (crop) size, measured side by side in one run.

For each base width (16, 32, 64) and tile size (128, 256 px), with the default recipe's network
(19 convolutions, batch norm, nearest up-sampling) in the precision ``device.autocast_settings``
picks ("auto"):
- training: the bare step on a batch already in memory (forward, BCE + Dice, backward, Adam), batch 4:
  seconds per step (the fastest of at least 4) and the peak memory the steps add (Adam's state
  included);
- prediction: ``predict_raster`` end to end on a generated 768 x 768 px RGB GeoTIFF (read, normalise,
  tiles with a quarter-tile overlap, blend, write a probability GeoTIFF), batch 4: seconds per
  megapixel (the fastest of at least 2, after a warm-up on one tile) and the peak memory it adds.
Times are given in wall seconds and in CPU seconds (all the process's threads added); of several
calls the fastest is kept, because other programs on a shared machine only slow calls down.
Each measurement runs in a fresh process, so one's memory never hides another's peak (memory: the
growth of the process's peak resident set on a CPU, ``torch.cuda.max_memory_allocated`` on a GPU).
FLOPs are counted on the convolutions (``torch.utils.flop_counter``, as in bench_gpu.py); the achieved
rate beside each time (GFLOP per CPU-second on a CPU, GFLOP/s on a GPU) is the one the
extrapolation rule below assumes constant.

The rule: time = FLOPs / achieved rate, where FLOPs grow with width^2 x pixels (each conv's cost is
in_channels x out_channels x pixels) and the achieved rate is the device's, measured here for this
CPU and by bench_gpu.py on a GPU. Memory grows with width x pixels (activations) plus width^2
(weights and Adam state). The ratios printed at the end check both against the measurements.

Run from the repository root: ``.venv/bin/python bench/bench_scaling.py [--device cpu|cuda]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_gpu import sample_flops  # noqa: E402  (bench/ is on sys.path)
from bench_inference import NORMALIZATION, make_image  # noqa: E402

from model.net.device import autocast, autocast_settings, describe_device, precision_name  # noqa: E402
from model.net.modelfile import ModelInfo, save_model  # noqa: E402
from model.net.network import UNet, UNetConfig  # noqa: E402
from model.prediction.predict import predict_raster  # noqa: E402
from model.training.objective import masked_loss  # noqa: E402

WIDTHS = (16, 32, 64)
TILES_PX = (128, 256)
TRAIN_BATCH = 4
PREDICT_BATCH = 4
RASTER_PX = 768
STEPS = 4  # training steps timed, the fastest kept (more while under MIN_SECONDS)
PREDICTIONS = 2  # predictions of the raster timed, the fastest kept
MIN_SECONDS = 3.0
STATUS = Path("/proc/self/status")


def network(base_width: int) -> UNet:
    torch.manual_seed(0)
    return UNet(UNetConfig(in_bands=3, base_width=base_width, batch_norm=True))


def resident_mib(field: str) -> float:
    """VmRSS (now) or VmHWM (peak since the last reset) of this process, in MiB."""
    for line in STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{STATUS} has no {field}")


class PeakMemory:
    """The memory a block adds at its peak: resident set growth on a CPU (the kernel's peak counter
    reset on entry), allocated memory on a GPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start_mib = torch.cuda.memory_allocated(self.device) / 2**20
        else:
            Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
            self.start_mib = resident_mib("VmRSS")
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            peak_mib = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            peak_mib = resident_mib("VmHWM")
        self.added_mib = peak_mib - self.start_mib


def best_seconds(function: Callable[[], object], device: torch.device, calls: int) -> tuple[float, float]:
    """The fastest of ``calls`` calls (and of as many more as MIN_SECONDS allows), in wall seconds and
    in CPU seconds of this process (all its threads added). Other programs on a shared machine only
    slow a call down, so the fastest is the one they disturbed least; CPU seconds hardly count the
    time they take the cores away, so on a busy machine they are the steadier measure of work (not
    immune: caches and cores are shared too)."""
    walls: list[float] = []
    cpus: list[float] = []
    started = time.perf_counter()
    while len(walls) < calls or time.perf_counter() - started < MIN_SECONDS:
        wall, cpu = time.perf_counter(), time.process_time()
        function()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return min(walls), min(cpus)


def measure_training(device: torch.device, base_width: int, tile_px: int) -> dict:
    net = network(base_width).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    dtype, _ = autocast_settings(device, "auto")
    generator = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(TRAIN_BATCH, 3, tile_px, tile_px, device=device, generator=generator)
    x = x.contiguous(memory_format=torch.channels_last)
    target = (torch.rand(TRAIN_BATCH, 1, tile_px, tile_px, device=device, generator=generator) > 0.9).float()
    weight = torch.ones_like(target)

    def step() -> None:
        with autocast(device, dtype):
            logits = net(x)
        loss = masked_loss(logits.float(), target, weight, "bce_dice")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    with PeakMemory(device) as memory:  # the first step also allocates Adam's state, and is not the fastest
        seconds, cpu_seconds = best_seconds(step, device, STEPS)
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "peak_mib": memory.added_mib,
        "precision": precision_name(dtype),
    }


def measure_prediction(device: torch.device, base_width: int, tile_px: int, folder: Path) -> dict:
    model_path = folder / f"w{base_width}_t{tile_px}.pt"
    save_model(
        model_path, network(base_width), ModelInfo(bands=[1, 2, 3], normalization=NORMALIZATION, tile_size_px=tile_px)
    )
    image = folder / "image.tif"

    tiles: list[int] = []

    def predict(path: Path) -> None:
        result = predict_raster(
            path,
            model_path,
            probability_path=folder / f"p_{model_path.stem}.tif",
            batch_size=PREDICT_BATCH,
            device=device.type,
        )
        tiles.append(result.tile_count)

    with PeakMemory(device) as memory:
        predict(folder / "warm_up.tif")  # one-time costs: kernels for this shape, the first GeoTIFF written
        seconds, cpu_seconds = best_seconds(lambda: predict(image), device, PREDICTIONS)
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "tiles": tiles[-1], "peak_mib": memory.added_mib}


def in_fresh_process(kind: str, base_width: int, tile_px: int, folder: Path, device: str) -> dict:
    command = [sys.executable, __file__, "--child", kind, str(base_width), str(tile_px), str(folder), device]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{kind} w{base_width} t{tile_px} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.splitlines()[-1])


def child(kind: str, base_width: str, tile_px: str, folder: str, device_name: str) -> None:
    device = torch.device(device_name)
    width, tile = int(base_width), int(tile_px)
    if kind == "train":
        print(json.dumps(measure_training(device, width, tile)))
    else:
        print(json.dumps(measure_prediction(device, width, tile, Path(folder))))


def ratio_line(label: str, a: dict, b: dict) -> str:
    """How much configuration ``b`` costs over ``a``: time measured beside FLOPs counted, and memory."""
    step, step_flops = b["train_cost"] / a["train_cost"], b["train_flops"] / a["train_flops"]
    predict, predict_flops = b["predict_cost"] / a["predict_cost"], b["predict_flops"] / a["predict_flops"]
    return (
        f"   {label:<26} step {step:5.2f}x (FLOPs {step_flops:5.2f}x), prediction per MP {predict:5.2f}x "
        f"(FLOPs {predict_flops:4.2f}x); peak memory step {b['train_mib'] / a['train_mib']:.2f}x, "
        f"prediction {b['predict_mib'] / a['predict_mib']:.2f}x"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return 0
    device = torch.device(args.device)
    megapixels = RASTER_PX * RASTER_PX / 1e6
    print(
        f"Scaling on {describe_device(device)}, precision auto; training batch {TRAIN_BATCH} (bare step), "
        f"prediction of a {RASTER_PX} px raster end to end, batch {PREDICT_BATCH}, overlap a quarter tile"
    )
    # the cost the ratios compare: CPU seconds on a CPU (steady on a shared machine), wall seconds on a GPU
    cost = "cpu_seconds" if device.type == "cpu" else "seconds"
    rows = {}
    with tempfile.TemporaryDirectory(prefix="bench_scaling_") as scratch:
        folder = Path(scratch)
        make_image(folder / "image.tif", RASTER_PX)
        make_image(folder / "warm_up.tif", max(TILES_PX))
        for width in WIDTHS:
            for tile in TILES_PX:
                train = in_fresh_process("train", width, tile, folder, args.device)
                predict = in_fresh_process("predict", width, tile, folder, args.device)
                rows[width, tile] = r = dict(
                    train_s=train["seconds"],
                    train_cost=train[cost],
                    train_flops=TRAIN_BATCH * sample_flops(width, tile, backward=True),
                    train_mib=train["peak_mib"],
                    predict_s=predict["seconds"] / megapixels,
                    predict_cost=predict[cost] / megapixels,
                    predict_flops=predict["tiles"] * sample_flops(width, tile, backward=False) / megapixels,
                    predict_mib=predict["peak_mib"],
                )
                print(
                    f"   measured width {width:3d}, tile {tile} px: step {r['train_s']:.3f} s, "
                    f"prediction {r['predict_s']:.2f} s/MP",
                    flush=True,
                )

    rate, spent = ("GFLOP/CPU-s", " CPU s") if cost == "cpu_seconds" else ("    GFLOP/s", "wall s")
    print(f"\nTraining step (batch {TRAIN_BATCH}) and prediction (per megapixel), side by side, {train['precision']}:")
    print(
        f"   width  tile |  wall s {spent}  {rate}  peak MiB | wall s/MP {spent}/MP  {rate}  peak MiB\n"
        "   ------------+-------------------------------------+---------------------------------------"
    )
    for (width, tile), r in rows.items():
        print(
            f"   {width:5d}  {tile:4d} | {r['train_s']:6.2f} {r['train_cost']:6.2f} "
            f"{r['train_flops'] / r['train_cost'] / 1e9:11.1f} {r['train_mib']:8.0f} | {r['predict_s']:9.2f} "
            f"{r['predict_cost']:9.2f} {r['predict_flops'] / r['predict_cost'] / 1e9:11.1f} {r['predict_mib']:8.0f}"
        )

    print("\nRatios (the rule: time follows FLOPs, i.e. width^2 x pixels, at a constant achieved rate):")
    for tile in TILES_PX:
        for small, large in zip(WIDTHS, WIDTHS[1:]):
            print(ratio_line(f"width {small} -> {large}, tile {tile}:", rows[small, tile], rows[large, tile]))
    for width in WIDTHS:
        small, large = TILES_PX[0], TILES_PX[-1]
        print(ratio_line(f"tile {small} -> {large}, width {width}:", rows[width, small], rows[width, large]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
