"""Evaluation speed and memory, measured side by side in one run.

Synthetic scenes (a tiled DEFLATE uint8 mask and a 5-class label raster on the same grid, buildings as
24 px squares on a 32 px lattice) are written to a temporary folder; then:
- pixel scoring of an 8192 x 8192 scene, as megapixels per second and as a ratio to a bare
  ``np.bincount`` over the same arrays already in memory (the least any numpy evaluation costs);
- the paper's test-image size (61.6 megapixels), pixels only and with error map + object scores;
- peak resident memory growth of one evaluation at 16 and 64 megapixels, each in a fresh process,
  to show memory stays flat while the raster grows: once with GDAL's block cache capped at 16 MB
  (the engine's own memory), once with GDAL's default cache (5 % of RAM, shared by everything in
  the process, QGIS included), which fills with the blocks read until it reaches its cap.

Run from the repository root: ``.venv/bin/python bench/bench_evaluation.py``.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.evaluation.evaluate import evaluate  # noqa: E402  (after the path set-up above)
from model.evaluation.metrics import ConfusionMatrix  # noqa: E402

CELL_PX = 32
PAPER_PIXELS = 61_594_236  # TN + FP + FN + TP of the paper's Table 2


def make_scene(folder: Path, height: int, width: int, seed: int = 0) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    cells = (-(-height // CELL_PX), -(-width // CELL_PX))
    footprint = np.zeros((CELL_PX, CELL_PX), np.uint8)
    footprint[4:28, 4:28] = 1
    buildings = np.kron(rng.random(cells) < 0.12, footprint)[:height, :width]
    ground = np.kron(rng.choice(np.array([0, 1, 3, 4], np.uint8), cells), np.ones((CELL_PX, CELL_PX), np.uint8))
    classes = np.where(buildings, 2, ground[:height, :width]).astype(np.uint8)
    # the prediction: buildings shifted by 3 px, some missed, some invented; a nodata collar on the left
    predicted = np.roll(buildings, 3, axis=1) & np.kron(rng.random(cells) < 0.9, footprint)[:height, :width]
    predicted |= np.kron(rng.random(cells) < 0.03, footprint)[:height, :width]
    predicted[:, :64] = 255
    profile = dict(
        driver="GTiff",
        width=width,
        height=height,
        count=1,
        dtype="uint8",
        crs="EPSG:32636",
        transform=Affine(0.5, 0, 500_000, 0, -0.5, 9_000_000),
        tiled=True,
        blockxsize=512,
        blockysize=512,
        compress="deflate",
        nodata=255,
    )
    mask_path, label_path = folder / f"mask_{height}x{width}.tif", folder / f"classes_{height}x{width}.tif"
    with rasterio.open(mask_path, "w", **profile) as dataset:
        dataset.write(predicted.astype(np.uint8), 1)
        dataset.update_tags(UNET_BUILDINGS_KIND="mask")
    with rasterio.open(label_path, "w", **profile) as dataset:
        dataset.write(classes, 1)
    return mask_path, label_path


def timed(function, repeats: int = 3) -> tuple[float, object]:
    """Best of ``repeats`` wall times: other processes share this machine's two cores."""
    best, result = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - started)
    return best, result


def peak_rss_mb() -> float:
    """Peak resident memory of this process. Linux's VmHWM restarts at exec; getrusage's ru_maxrss
    does not (a spawned child starts with its parent's peak), so it is only the fallback."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_growth_mb(mask_path: Path, label_path: Path, cache_mb: str | None, queue) -> None:
    """In a fresh process: peak RSS after one evaluation minus peak RSS before it."""
    if cache_mb:
        os.environ["GDAL_CACHEMAX"] = cache_mb  # read by GDAL when its cache is first used
    before = peak_rss_mb()
    evaluate(mask_path, label_path, [2], object_scores=False)
    queue.put(peak_rss_mb() - before)


def measure_rss(mask_path: Path, label_path: Path, cache_mb: str | None) -> float:
    context = multiprocessing.get_context("spawn")  # a clean process: no arrays left from this one
    queue = context.Queue()
    process = context.Process(target=rss_growth_mb, args=(mask_path, label_path, cache_mb, queue))
    process.start()
    growth = queue.get()
    process.join()
    return growth


def print_in_memory_scoring(mask_path: Path, label_path: Path, seconds: float, evaluated: ConfusionMatrix) -> None:
    """The same pixels scored by bare numpy in memory, beside evaluate's file-to-file time."""
    with rasterio.open(mask_path) as dataset:
        predicted = dataset.read(1)
    with rasterio.open(label_path) as dataset:
        classes = dataset.read(1)
    valid = predicted != 255
    # 0 TN, 1 FP, 2 FN, 3 TP, 4 not scored: the bincount alone is timed, codes made beforehand
    codes = np.where(valid, ((classes == 2).view(np.uint8) << 1) | (predicted == 1).view(np.uint8), 4)
    bincount_seconds, counts = timed(lambda: np.bincount(codes.ravel(), minlength=5)[:4])
    update_seconds, matrix = timed(lambda: ConfusionMatrix().update(predicted == 1, classes == 2, valid))
    assert matrix == evaluated and list(counts) == [matrix.tn, matrix.fp, matrix.fn, matrix.tp]
    pixels = predicted.size
    height, width = predicted.shape
    print(f"pixel scoring, {width}x{height} mask vs class raster on the same grid (files, DEFLATE):")
    print(f"  evaluate                            {seconds:7.3f} s  {pixels / seconds / 1e6:7.1f} MP/s")
    print(
        f"  bare np.bincount, arrays in memory  {bincount_seconds:7.3f} s  "
        f"{pixels / bincount_seconds / 1e6:7.1f} MP/s   evaluate / bincount = {seconds / bincount_seconds:.2f}"
    )
    print(
        f"  ConfusionMatrix.update, in memory   {update_seconds:7.3f} s  {pixels / update_seconds / 1e6:7.1f} MP/s"
        f"   bincount / update = {bincount_seconds / update_seconds:.1f}"
    )


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        size = 8192
        mask_path, label_path = make_scene(folder, size, size)
        evaluate(mask_path, label_path, [2], object_scores=False)  # warm the file cache and GDAL
        seconds, result = timed(lambda: evaluate(mask_path, label_path, [2], object_scores=False))

        print_in_memory_scoring(mask_path, label_path, seconds, result.matrix)

        width = 7848
        height = -(-PAPER_PIXELS // width)
        paper_mask, paper_labels = make_scene(folder, height, width, seed=1)
        evaluate(paper_mask, paper_labels, [2], object_scores=False)
        pixel_seconds, _ = timed(lambda: evaluate(paper_mask, paper_labels, [2], object_scores=False))
        full_seconds, full = timed(
            lambda: evaluate(
                paper_mask,
                paper_labels,
                [2],
                error_map_path=folder / "errors.tif",
                report_html_path=folder / "report.html",
                report_json_path=folder / "report.json",
            ),
            repeats=1,
        )
        print(f"paper-size scene, {height}x{width} = {height * width / 1e6:.1f} MP:")
        print(
            f"  pixel scores                        {pixel_seconds:7.3f} s  "
            f"{height * width / pixel_seconds / 1e6:7.1f} MP/s"
        )
        print(
            f"  + error map + {full.objects.true:,} true / {full.objects.predicted:,} predicted objects + reports"
            f" {full_seconds:7.3f} s"
        )

        small_mask, small_labels = make_scene(folder, 4096, 4096, seed=2)
        print("peak RSS growth of one evaluation (pixel scores), fresh process each:")
        for cache_mb, cache in (("16", "GDAL cache capped at 16 MB"), (None, "GDAL's default cache   ")):
            growth_small = measure_rss(small_mask, small_labels, cache_mb)
            growth_large = measure_rss(mask_path, label_path, cache_mb)
            print(
                f"  {cache}: 16.8 MP {growth_small:6.1f} MB, 67.1 MP {growth_large:6.1f} MB "
                f"(ratio {growth_large / max(growth_small, 1e-9):.2f} for 4x the pixels)"
            )


if __name__ == "__main__":
    main()
