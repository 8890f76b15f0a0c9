"""Scale benchmark on whatever device runs it (a CUDA GPU when torch sees one, else the CPU at tiny sizes).

Run from the repository root: ``python bench/bench_gpu.py [--seconds 10] [--device cpu]``.

1. The device's peak: the best of several bfloat16 matrix products (8192^3 on a GPU), in TFLOP/s.
   Every achieved figure below is also given as a share of it.
2. Training the paper's network (19 convs, base width 64, no batch norm, 256 px crops, BCE, Adam)
   at batch 16 and 64, side by side:
   - the bare step: forward, backward and Adam on a batch already on the device, in the precision
     ``device.autocast_settings`` picks ("auto") and in float32, with channels_last as training
     uses; samples/s, TFLOP/s (FLOPs of one step counted by ``torch.utils.flop_counter``) and the
     peak GPU memory of the step;
   - the real loop: ``model.training.trainer.train`` with the paper preset on the bundled sample scenes
     (crops drawn, gathered, augmented and moved every batch), measured between its per-batch
     progress reports; samples/s and the ratio real / bare (what the data and the bookkeeping cost).
   The projected wall time of the paper's protocol, 1,000,000 crop-steps (10 epochs of 100,000
   crops), at the real loop's rate, beside the paper's ~10 h on one GPU and the 12 min target.
3. Prediction end to end: ``predict_raster`` on a generated RGB GeoTIFF (read, normalise, predict,
   blend, write probability + mask GeoTIFFs) against the bare model on the same tiles already in
   memory (``TileRunner.run_ahead``: host-to-device copy, network, copy back); megapixels/s of both
   and the ratio end-to-end / bare (target >= 0.85). A third run with a network that costs nothing
   gives the rate the reading, blending and writing alone allow: the ceiling for end to end.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import rasterio
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_inference import NORMALIZATION, bare_tiles, make_image  # noqa: E402  (bench/ is on sys.path)
from bench_training import SAMPLE, SCENES, training_samples_per_s  # noqa: E402

from model.net.device import autocast_settings, describe_device, precision_name  # noqa: E402
from model.net.modelfile import LoadedModel, ModelInfo, load_model, save_model  # noqa: E402
from model.net.network import UNet, UNetConfig  # noqa: E402
from model.prediction.predict import predict_raster  # noqa: E402
from model.prediction.runner import TileRunner  # noqa: E402
from model.training.trainer import TrainConfig  # noqa: E402

PAPER_CROP_STEPS = 1_000_000  # 10 epochs x 100,000 crops
PAPER_HOURS = 10.0  # the paper's training time on its GPU
TARGET_MINUTES = 12.0
TARGET_RATIO = 0.85
OVERLAP_PX = 64
# (base width, crop px, batch sizes, raster px, prediction batch): the paper's sizes on a GPU; on a
# CPU small enough to finish in a minute or two, so the script is checked anywhere.
SIZES = {"cuda": (64, 256, (16, 64), 8192, 32), "cpu": (16, 128, (2, 4), 768, 4)}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_seconds(function: Callable[[], None], device: torch.device, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        function()
        synchronize(device)
        best = min(best, time.perf_counter() - started)
    return best


def matmul_peak_tflops(device: torch.device) -> float:
    """Best of ten bf16 products on random data after three warm-ups: the practical dense ceiling."""
    size = 8192 if device.type == "cuda" else 2048
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    return 2 * size**3 / best_seconds(lambda: a @ b, device, 10) / 1e12


def paper_network(base_width: int) -> UNet:
    torch.manual_seed(0)
    return UNet(UNetConfig(in_bands=3, base_width=base_width, batch_norm=False, upsample="nearest"))


def sample_flops(base_width: int, crop_px: int, backward: bool) -> float:
    """FLOPs of one sample's forward (+ backward), counted on the meta device: no memory, no time."""
    with torch.device("meta"):
        net = paper_network(base_width)
        x = torch.zeros(1, 3, crop_px, crop_px)
    with FlopCounterMode(display=False) as counter:
        output = net(x)
        if backward:
            output.sum().backward()
    return float(counter.get_total_flops())


def bare_training(
    device: torch.device, base_width: int, crop_px: int, batch_size: int, precision: str, steps: int
) -> tuple[float, float]:
    """(samples/s, peak memory GB) of forward + backward + Adam on a resident batch."""
    net = paper_network(base_width).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    dtype, _ = autocast_settings(device, precision)
    generator = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(batch_size, 3, crop_px, crop_px, device=device, generator=generator)
    x = x.contiguous(memory_format=torch.channels_last)
    target = (torch.rand(batch_size, 1, crop_px, crop_px, device=device, generator=generator) > 0.9).float()

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            logits = net(x)
        loss = F.binary_cross_entropy_with_logits(logits.float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def run() -> None:
        for _ in range(steps):
            step()

    step(), step()  # warm-up: cuDNN and the allocator settle
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = best_seconds(run, device, 2)
    memory_gb = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else float("nan")
    return steps * batch_size / seconds, memory_gb


def real_loop_samples_per_s(
    folder: Path, device: torch.device, base_width: int, crop_px: int, batch_size: int, precision: str, seconds: float
) -> float:
    config = TrainConfig.for_preset(
        "paper",
        images=[str(SAMPLE / f"{name}.tif") for name in SCENES],
        labels=[str(SAMPLE / f"{name}_labels.tif") for name in SCENES],
        building_values=[2],
        output_model=str(folder / f"paper_{batch_size}.pt"),
        batch_size=batch_size,
        base_width=base_width,
        tile_size_px=crop_px,
        device=device.type,
        precision=precision,
        seed=0,
    )
    rate, _ = training_samples_per_s(config, seconds)
    return rate


def training(folder: Path, device: torch.device, peak: float, args: argparse.Namespace) -> None:
    base_width, crop_px, batch_sizes = args.base_width, args.crop_px, args.batch_sizes
    flops = sample_flops(base_width, crop_px, backward=True)
    auto = precision_name(autocast_settings(device, "auto")[0])
    print(
        f"\n2. Training the paper network: base width {base_width}, {crop_px} px crops, "
        f"{flops / 1e9:.1f} GFLOP per sample (forward + backward)"
    )
    print(
        f"{'batch':>5} {'precision':>9} {'bare samples/s':>15} {'TFLOP/s':>8} {'of peak':>8} {'memory GB':>10} "
        f"{'loop samples/s':>15} {'loop/bare':>10} {'1M crop-steps':>14}"
    )
    best_loop = 0.0
    for batch_size in batch_sizes:
        for precision in dict.fromkeys([auto, "float32"]):
            rate, memory_gb = bare_training(device, base_width, crop_px, batch_size, precision, args.steps)
            achieved = rate * flops / 1e12
            loop_text = ""
            if precision == auto:  # the real loop in the precision a user gets
                loop = real_loop_samples_per_s(folder, device, base_width, crop_px, batch_size, precision, args.seconds)
                best_loop = max(best_loop, loop)
                loop_text = f"{loop:>15.1f} {loop / rate:>10.2f} {PAPER_CROP_STEPS / loop / 60:>10.1f} min"
            memory = f"{memory_gb:>10.2f}" if device.type == "cuda" else f"{'-':>10}"
            print(
                f"{batch_size:>5} {precision:>9} {rate:>15.1f} {achieved:>8.2f} {achieved / peak:>8.1%} "
                f"{memory} {loop_text}",
                flush=True,
            )
    if device.type == "cuda":  # does letting cuDNN time its algorithms for these fixed shapes pay?
        torch.backends.cudnn.benchmark = True
        rate, _ = bare_training(device, base_width, crop_px, batch_sizes[-1], auto, args.steps)
        torch.backends.cudnn.benchmark = False
        print(
            f"{batch_sizes[-1]:>5} {auto:>9} {rate:>15.1f} {rate * flops / 1e12:>8.2f} "
            f"{rate * flops / 1e12 / peak:>8.1%}"
            "   with torch.backends.cudnn.benchmark = True"
        )
    minutes = PAPER_CROP_STEPS / best_loop / 60
    print(
        f"Projected paper protocol ({PAPER_CROP_STEPS:,} crop-steps) at the best real-loop rate: {minutes:.1f} min "
        f"({PAPER_HOURS * 60 / minutes:.2g}x the paper's ~{PAPER_HOURS:g} h; target {TARGET_MINUTES:g} min: "
        f"{'met' if minutes <= TARGET_MINUTES else 'NOT met'})"
        + ("" if base_width == 64 and crop_px == 256 else " [not the paper's sizes: a smoke run]")
    )


class FreeNetwork(torch.nn.Module):
    """A network that costs nothing: end to end with it is the rate of reading, blending and writing."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # gives .to() a parameter to move

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1] * 0 + self.anchor


def prediction(folder: Path, device: torch.device, peak: float, args: argparse.Namespace) -> None:
    size_px, tile_px, batch_size = args.raster_px, args.crop_px, args.predict_batch
    started = time.perf_counter()
    image = make_image(folder / "image.tif", size_px)
    print(
        f"\n3. Prediction, {size_px}x{size_px} px RGB GeoTIFF (deflate, 256 px blocks; made in "
        f"{time.perf_counter() - started:.1f} s), {tile_px} px tiles, overlap {OVERLAP_PX} px, batch {batch_size}, "
        f"precision auto, probability + mask written"
    )
    model_path = folder / "paper.pt"
    save_model(
        model_path,
        paper_network(args.base_width),
        ModelInfo(bands=[1, 2, 3], normalization=NORMALIZATION, tile_size_px=tile_px),
    )
    loaded = load_model(model_path, device)
    megapixels = size_px * size_px / 1e6

    def end_to_end(model: LoadedModel) -> tuple[float, int]:
        result = predict_raster(
            image,
            model,
            probability_path=folder / "p.tif",
            mask_path=folder / "m.tif",
            batch_size=batch_size,
            device=device.type,
            overlap_px=OVERLAP_PX,
        )
        return result.seconds, result.tile_count

    end_to_end(loaded)  # warm-up: cuDNN, the allocator, the page cache
    engine_s, engine_tiles = min(end_to_end(loaded) for _ in range(2))
    free_s, _ = min(end_to_end(LoadedModel(FreeNetwork(loaded.net.config), loaded.info)) for _ in range(2))

    tiles, valid = bare_tiles(image, tile_px, OVERLAP_PX)
    runner = TileRunner(loaded.net, device, NORMALIZATION["mean"], NORMALIZATION["std"])
    batches = [
        _Batch(tiles[start : start + batch_size], valid[start : start + batch_size])
        for start in range(0, len(tiles), batch_size)
    ]

    def bare() -> None:
        for _ in runner.run_ahead(batches):
            pass

    bare_s = best_seconds(bare, device, 2) * engine_tiles / len(tiles)  # the same tile count as the engine ran
    tile_flops = sample_flops(args.base_width, tile_px, backward=False)
    ratio = bare_s / engine_s
    print(
        f"   end to end        {megapixels / engine_s:8.2f} MP/s  ({engine_s:.2f} s, {engine_tiles} tiles: "
        f"{len(tiles)} of the tile grid, those at column-panel borders twice)"
    )
    print(
        f"   bare model        {megapixels / bare_s:8.2f} MP/s  ({bare_s:.2f} s for as many tiles; "
        f"{engine_tiles * tile_flops / bare_s / 1e12:.2f} TFLOP/s = "
        f"{engine_tiles * tile_flops / bare_s / 1e12 / peak:.1%}"
        f" of peak, precision {runner.precision_name})"
    )
    print(f"   no network        {megapixels / free_s:8.2f} MP/s  ({free_s:.2f} s: reading, blending, writing alone)")
    print(
        f"   end to end / bare = {ratio:.2f} ({'within' if ratio >= TARGET_RATIO else 'BELOW'} the "
        f"{TARGET_RATIO} target)"
    )


class _Batch:
    def __init__(self, raw: np.ndarray, valid: np.ndarray) -> None:
        self.raw, self.valid = raw, valid


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--seconds", type=float, default=10.0, help="time per real-loop training measurement")
    parser.add_argument("--steps", type=int, help="bare training steps timed per measurement (best of two runs)")
    parser.add_argument("--base-width", type=int, help="default: 64 on a GPU, 16 on a CPU")
    parser.add_argument("--crop-px", type=int, help="training crop and prediction tile size; default 256 / 128")
    parser.add_argument("--batch-sizes", help="training batch sizes, e.g. '16,64' (default on a GPU)")
    parser.add_argument("--raster-px", type=int, help="side of the predicted raster; default 8192 / 768")
    parser.add_argument("--predict-batch", type=int, help="tiles per prediction batch; default 32 / 4")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--skip-prediction", action="store_true")
    args = parser.parse_args()
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else args.device
        if args.device != "auto"
        else "cpu"
    )
    width, crop, batches, raster, predict_batch = SIZES["cuda" if device.type == "cuda" else "cpu"]
    args.base_width = args.base_width or width
    args.crop_px = args.crop_px or crop
    args.batch_sizes = [int(value) for value in args.batch_sizes.split(",")] if args.batch_sizes else list(batches)
    args.raster_px = args.raster_px or raster
    args.predict_batch = args.predict_batch or predict_batch
    args.steps = args.steps or (20 if device.type == "cuda" else 2)

    print(
        f"torch {torch.__version__}, rasterio {rasterio.__version__}, {describe_device(device)}"
        + (
            f", compute capability {'.'.join(map(str, torch.cuda.get_device_capability(device)))}"
            if device.type == "cuda"
            else ""
        )
        + f", precision auto = {precision_name(autocast_settings(device)[0])}"
    )
    peak = matmul_peak_tflops(device)
    print(f"\n1. bfloat16 matmul peak: {peak:.1f} TFLOP/s")
    with tempfile.TemporaryDirectory(prefix="bench_gpu_") as scratch:
        folder = Path(scratch)
        if not args.skip_training:
            training(folder, device, peak, args)
        if not args.skip_prediction:
            prediction(folder, device, peak, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
