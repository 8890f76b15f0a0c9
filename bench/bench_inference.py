"""Prediction benchmark: engine overhead, throughput, precision, and flat memory.

Run from the repository root: ``.venv/bin/python bench/bench_inference.py [--quick] [--full]``.

1. Engine vs bare model: ``predict_raster`` on a GeoTIFF (reading, normalising, blending,
   writing probability + mask) against a bare loop that only runs the same network on the same
   tiles already in memory. Printed as the ratio engine / bare (target <= 1.15), with megapixels
   per second, tiles per second and the achieved GFLOP/s next to the machine's measured float32
   matmul GFLOP/s, for base widths 16 and 64 (the paper's).
2. bfloat16 autocast vs float32 for the bare model on this CPU (speed ratio and largest
   probability difference), which decides the CPU default of ``precision="auto"``.
3. Peak memory: each raster size predicted in a fresh process that prints its own peak RSS;
   4, 16 and 64 megapixels (base width 4 to keep the run short; memory does not depend on the
   width of the network beyond its weights), plus 20000 x 20000 px with ``--full``. GDAL's block
   cache is pinned to GDAL_CACHE_MB in those processes (its default, 5% of RAM, is also a
   constant but would fill with the larger inputs and hide what the engine itself holds).
   Rasters wider than one column panel (4096 px) run the tiles straddling panel borders twice:
   the tile count is printed against that of one panel, the compute this flat memory costs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.transform import from_origin

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model.net.modelfile import ModelInfo, load_model, save_model  # noqa: E402
from model.net.network import UNet, UNetConfig  # noqa: E402
from model.prediction.predict import predict_raster  # noqa: E402
from model.prediction.runner import TileRunner  # noqa: E402
from model.prediction.tiling import plan_tiles  # noqa: E402

TARGET_RATIO = 1.15
GDAL_CACHE_MB = 32
NORMALIZATION = {"mode": "fixed", "mean": [128.0] * 3, "std": [64.0] * 3}


def make_model(path: Path, base_width: int, tile_size_px: int = 256) -> Path:
    torch.manual_seed(0)
    save_model(
        path,
        UNet(UNetConfig(base_width=base_width)),
        ModelInfo(bands=[1, 2, 3], normalization=NORMALIZATION, tile_size_px=tile_size_px),
    )
    return path


def make_image(path: Path, size_px: int, rows_per_write: int = 1024) -> Path:
    """A textured RGB GeoTIFF, written in bands of rows so making it needs little memory."""
    rng = np.random.default_rng(0)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=size_px,
        height=size_px,
        count=3,
        dtype="uint8",
        crs="EPSG:32633",
        transform=from_origin(500000, 100000, 0.3, 0.3),
        tiled=True,
        blockxsize=256,
        blockysize=256,
        compress="deflate",
    ) as dataset:
        for top in range(0, size_px, rows_per_write):
            rows = min(rows_per_write, size_px - top)
            block = rng.integers(0, 255, (3, rows, size_px), dtype=np.uint8)
            dataset.write(block, window=rasterio.windows.Window(0, top, size_px, rows))
    return path


def conv_flops(net: torch.nn.Module, tile_px: int) -> float:
    """Multiply-adds x 2 of one tile, counted from the conv layers' output shapes."""
    total = 0.0

    def hook(module, inputs, output):
        nonlocal total
        kernel = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
        total += 2.0 * output.numel() * kernel

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.inference_mode():
        net(torch.zeros(1, net.config.in_bands, tile_px, tile_px))
    for handle in handles:
        handle.remove()
    return total


def matmul_gflops(size: int = 4096, repeats: int = 5) -> float:
    """Best of ``repeats`` float32 matmuls: the machine's practical peak for dense math."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def bare_tiles(image: Path, tile_px: int, overlap_px: int) -> tuple[np.ndarray, np.ndarray]:
    with rasterio.open(image) as dataset:
        data = dataset.read()
    layout = plan_tiles(data.shape[2], data.shape[1], tile_px, overlap_px, 16)
    tiles = np.stack(
        [data[:, top : top + tile_px, left : left + tile_px] for top in layout.rows for left in layout.columns]
    )
    return tiles, np.ones((len(tiles), tile_px, tile_px), bool)


def timed(function) -> tuple[float, float]:
    """(wall seconds, CPU seconds of all this process's threads) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - wall, time.process_time() - cpu


def bare_run(runner: TileRunner, tiles: np.ndarray, valid: np.ndarray, batch_size: int) -> None:
    for start in range(0, len(tiles), batch_size):
        runner(tiles[start : start + batch_size], valid[start : start + batch_size])


def engine_vs_bare(folder: Path, base_width: int, size_px: int, batch_size: int, peak_gflops: float) -> None:
    tile_px, overlap_px = 256, 64
    image = make_image(folder / f"image_{size_px}.tif", size_px)
    model_path = make_model(folder / f"model_{base_width}.pt", base_width, tile_px)
    loaded = load_model(model_path)
    runner = TileRunner(loaded.net, torch.device("cpu"), NORMALIZATION["mean"], NORMALIZATION["std"])
    tiles, valid = bare_tiles(image, tile_px, overlap_px)
    runner(tiles[:batch_size], valid[:batch_size])  # warm-up: oneDNN picks its kernels on first use
    flops = conv_flops(loaded.net, tile_px) * len(tiles)
    # Interleaved, best of three each: other processes on the machine disturb single runs. CPU
    # time is printed too: it is what the engine adds, and less sensitive to a busy machine.
    bare_runs, engine_runs, results = [], [], []
    for _ in range(3):
        bare_runs.append(timed(lambda: bare_run(runner, tiles, valid, batch_size)))
        engine_runs.append(
            timed(
                lambda: results.append(
                    predict_raster(
                        image,
                        loaded,
                        probability_path=folder / "p.tif",
                        mask_path=folder / "m.tif",
                        batch_size=batch_size,
                        device="cpu",
                        overlap_px=overlap_px,
                    )
                )
            )
        )
    (bare, bare_cpu), (engine, engine_cpu) = (
        tuple(min(column) for column in zip(*runs)) for runs in (bare_runs, engine_runs)
    )
    assert results[-1].tile_count == len(tiles)
    megapixels = size_px * size_px / 1e6
    print(
        f"base width {base_width:3d}, {size_px}x{size_px} px, {len(tiles)} tiles of {tile_px} px: "
        f"engine {engine:.2f} s, bare model {bare:.2f} s, engine/bare = {engine / bare:.3f} "
        f"({'within' if engine / bare <= TARGET_RATIO else 'ABOVE'} the {TARGET_RATIO} target), "
        f"CPU time engine/bare = {engine_cpu / bare_cpu:.3f}; "
        f"{megapixels / engine:.2f} MP/s, {len(tiles) / engine:.2f} tiles/s, "
        f"{flops / bare / 1e9:.1f} GFLOP/s in the model = {flops / bare / 1e9 / peak_gflops:.0%} of matmul"
    )


def bf16_vs_fp32(base_width: int, batch_size: int = 4, tile_px: int = 256) -> None:
    torch.manual_seed(0)
    net = UNet(UNetConfig(base_width=base_width))
    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 255, (batch_size * 2, 3, tile_px, tile_px), dtype=np.uint8)
    valid = np.ones((len(tiles), tile_px, tile_px), bool)
    results = {}
    for precision in ("float32", "bfloat16"):
        runner = TileRunner(net, torch.device("cpu"), NORMALIZATION["mean"], NORMALIZATION["std"], precision)
        runner(tiles[:batch_size], valid[:batch_size])
        started = time.perf_counter()
        output = np.concatenate(
            [runner(tiles[s : s + batch_size], valid[s : s + batch_size]) for s in range(0, len(tiles), batch_size)]
        )
        results[precision] = (time.perf_counter() - started, output)
    (fp32_s, fp32), (bf16_s, bf16) = results["float32"], results["bfloat16"]
    print(
        f"base width {base_width:3d}: bfloat16 time / float32 time = {bf16_s / fp32_s:.2f}, "
        f"largest probability difference {np.abs(fp32 - bf16).max():.4f}"
    )


MEMORY_CHILD = r"""
import re, sys, time
sys.path.insert(0, {root!r})
from model.prediction.predict import predict_raster
started = time.perf_counter()
result = predict_raster({image!r}, {model!r}, probability_path={out!r} + "_p.tif", mask_path={out!r} + "_m.tif",
                        device="cpu", batch_size=8)
# VmHWM restarts at exec; ru_maxrss would also count the forking parent's memory
peak_kb = int(re.search(r"VmHWM:\s+(\d+)", open("/proc/self/status").read()).group(1))
print(peak_kb / 1024, time.perf_counter() - started, result.tile_count)
"""


def memory(folder: Path, sizes: list[int]) -> None:
    model_path = make_model(folder / "model_mem.pt", 4, 256)
    environment = dict(os.environ, GDAL_CACHEMAX=str(GDAL_CACHE_MB))
    peaks = []
    for size_px in sizes:
        one_panel = plan_tiles(size_px, size_px, 256, 64, 16).tile_count
        image = make_image(folder / f"mem_{size_px}.tif", size_px)
        code = MEMORY_CHILD.format(
            root=str(ROOT), image=str(image), model=str(model_path), out=str(folder / f"out_{size_px}")
        )
        output = subprocess.run(
            [sys.executable, "-c", code], env=environment, capture_output=True, text=True, check=True
        )
        peak_mb, seconds, tiles = output.stdout.split()
        peaks.append(float(peak_mb))
        print(
            f"{size_px}x{size_px} px ({size_px * size_px / 1e6:.0f} MP): peak RSS {float(peak_mb):.0f} MB, "
            f"{float(seconds):.1f} s, {tiles} tiles ({int(tiles) / one_panel:.3f}x one panel's), "
            f"{size_px * size_px / 1e6 / float(seconds):.2f} MP/s (base width 4)"
        )
        for path in folder.glob(f"*{size_px}*"):
            path.unlink()
    print(
        f"peak RSS largest - smallest = {peaks[-1] - peaks[0]:.0f} MB (GDAL block cache capped at {GDAL_CACHE_MB} MB) "
        f"(ratio {peaks[-1] / peaks[0]:.3f}) for {sizes[-1] ** 2 / sizes[0] ** 2:.0f}x the pixels"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller rasters (a smoke run)")
    parser.add_argument("--full", action="store_true", help="also the 20000 x 20000 px memory case")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--memory-only", action="store_true")
    arguments = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        if not arguments.memory_only:
            peak = matmul_gflops()
            print(f"float32 matmul: {peak:.1f} GFLOP/s")
            small = 512 if arguments.quick else 1024
            engine_vs_bare(folder, 16, small * 2, 8, peak)
            engine_vs_bare(folder, 64, small, 4, peak)
            for base_width in (16, 64):
                bf16_vs_fp32(base_width)
        if not arguments.skip_memory:
            sizes = [2048, 4096, 8192] + ([20000] if arguments.full else [])
            memory(folder, sizes[:2] if arguments.quick else sizes)


if __name__ == "__main__":
    main()
