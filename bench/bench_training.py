"""Training throughput, measured side by side in one run on the bundled sample scenes.

1. Training samples per second (256 px crops, the default recipe: batch norm, BCE + Dice,
   augmentation) at base widths 16, 32 and 64, on the CPU and, when there is one, on the GPU
   (where trainer.py always uses bfloat16 autocast and channels_last). Measured inside the real
   ``train()`` loop: its per-batch progress reports are timestamped, the first batch (warm-up) is
   left out, and the run is cancelled once ``--seconds`` have passed (at least two batches).
2. Data loading alone (crop drawing + gather + augmentation + normalisation on the device,
   ``TrainingData.batch_tensors``, no network) in samples per second, and as a ratio to the training
   step's samples per second: how much of a step the data costs. Also with the images read crop by crop
   from their files, as images too large to hold are (``sampling.WindowedImage``), beside it.
3. Polygon labels read window by window (``LabelSource.read``, as training and evaluation read them), on
   a generated city of ``--polygons`` buildings: the polygons the spatial index finds for each window,
   against rasterizing every polygon for every window (the previous version), 256 px windows per second.

Run from the repository root: ``.venv/bin/python bench/bench_training.py [--seconds 30]``.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model.errors import Cancelled  # noqa: E402  (after the path set-up above)
from model.io.rasters import LABEL_IGNORE  # noqa: E402
from model.progress import Reporter  # noqa: E402
from model.training import sampling  # noqa: E402
from model.training.sampling import CropSampler  # noqa: E402
from model.training.trainer import TrainConfig, Trainer, train  # noqa: E402

SAMPLE = ROOT / "resources" / "sample"
SCENES = ("scene_1", "scene_2", "scene_3")
BUILDING_VALUES = [2]  # the sample scenes follow the paper's classes: 2 is building
WIDTHS = (16, 32, 64)
MIN_MEASURED_BATCHES = 2
BATCH_REPORT = re.compile(r"batch (\d+)/")


def config_for(folder: Path, base_width: int, batch_size: int, device: str) -> TrainConfig:
    # one long epoch: the measurement is cancelled long before it ends, so no validation runs
    return TrainConfig.for_preset(
        "default",
        images=[str(SAMPLE / f"{name}.tif") for name in SCENES],
        labels=[str(SAMPLE / f"{name}_labels.tif") for name in SCENES],
        building_values=BUILDING_VALUES,
        output_model=str(folder / f"w{base_width}.pt"),
        epochs=1,
        patches_per_epoch=100_000,
        batch_size=batch_size,
        base_width=base_width,
        device=device,
        seed=0,
    )


def training_samples_per_s(config: TrainConfig, seconds: float) -> tuple[float, int]:
    """(samples/s over the batches after the first, batches measured) in the real training loop."""
    stamps: list[tuple[int, float]] = []

    def progress(percent: float, message: str) -> None:
        match = BATCH_REPORT.search(message)
        if match:
            if config.device == "cuda":
                torch.cuda.synchronize()
            stamps.append((int(match.group(1)), time.perf_counter()))

    def cancelled() -> bool:
        return len(stamps) > MIN_MEASURED_BATCHES and stamps[-1][1] - stamps[0][1] >= seconds

    try:
        train(config, progress=progress, cancelled=cancelled)
    except Cancelled:
        pass
    (first_batch, first_s), (last_batch, last_s) = stamps[0], stamps[-1]
    batches = last_batch - first_batch
    return batches * config.batch_size / (last_s - first_s), batches


def data_samples_per_s(config: TrainConfig, seconds: float, by_window: bool = False) -> float:
    """Crop drawing + gather + augmentation + normalisation, as the training loop does them; ``by_window``:
    the images read crop by crop from their files, as a scene too large to hold is."""
    trainer = Trainer(config, Reporter.of(), None)
    data = trainer.data
    held_limit = sampling.IN_MEMORY_LIMIT_BYTES
    sampling.IN_MEMORY_LIMIT_BYTES = 0 if by_window else held_limit
    try:
        scenes = data.load_scenes(Path(config.output_model).parent, trainer.reporter, trainer.check_cancel_alone)
    finally:
        sampling.IN_MEMORY_LIMIT_BYTES = held_limit
    hidden, _ = data.split(scenes, trainer.rng)
    usable = [(scene.label != LABEL_IGNORE) & ~mask for scene, mask in zip(scenes, hidden)]
    sampler = CropSampler(scenes, config.tile_size_px, usable, trainer.rng)

    def draw() -> None:
        data.batch_tensors(scenes, sampler.draw(config.batch_size), hidden, True, trainer.torch_rng)

    draw()  # warm-up
    batches, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        draw()
        batches += 1
    if config.device == "cuda":
        torch.cuda.synchronize()
    return batches * config.batch_size / (time.perf_counter() - started)


def polygon_label_windows_per_s(folder: Path, polygons: int, seconds: float) -> tuple[float, float]:
    """256 px windows per second read from a polygon label layer of ``polygons`` 10 m squares spread over a
    grid of 0.15 m pixels sized for them: (by the spatial index, every polygon rasterized)."""
    import numpy as np
    import shapely
    from affine import Affine
    from osgeo import ogr, osr
    from rasterio.crs import CRS
    from rasterio.features import rasterize
    from rasterio.windows import Window

    from model.io.rasters import Grid, LabelSource

    side_px = int(math.sqrt(polygons) * 120)  # about one building per 18 x 18 m
    transform = Affine(0.15, 0, 500_000, 0, -0.15, 9_000_000)
    rng = np.random.default_rng(0)
    path = folder / "city.gpkg"
    source = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    reference = osr.SpatialReference()
    reference.ImportFromEPSG(32736)
    layer = source.CreateLayer("buildings", reference, ogr.wkbPolygon)
    layer.StartTransaction()
    for col, row in rng.uniform(0, side_px, (polygons, 2)):
        left, top = transform * (col, row)
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetGeometry(ogr.CreateGeometryFromWkb(shapely.to_wkb(shapely.box(left, top - 10, left + 10, top))))
        layer.CreateFeature(feature)
    layer.CommitTransaction()
    source = None  # closing flushes the file
    grid = Grid(CRS.from_epsg(32736).to_wkt(), transform, side_px, side_px)
    labels = LabelSource(path, [1], grid)
    every = labels.polygons or []

    def all_polygons(window: Window) -> None:
        sub = grid.window_grid(window)
        rasterize(((shape, 1) for shape in every), out_shape=(sub.height, sub.width), transform=sub.transform)

    rates = []
    for read in (labels.read, all_polygons):
        windows, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            col, row = (int(value) for value in rng.integers(0, side_px - 256, 2))
            read(Window(col, row, 256, 256))
            windows += 1
        rates.append(windows / (time.perf_counter() - started))
    return rates[0], rates[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0, help="time per training measurement")
    parser.add_argument("--batch-size", type=int, default=8, help="crops per batch (default recipe: 8)")
    parser.add_argument("--widths", default=",".join(map(str, WIDTHS)), help="base widths, e.g. '16,32,64'")
    parser.add_argument("--polygons", type=int, default=20_000, help="buildings of the polygon-label city")
    args = parser.parse_args()
    widths = [int(value) for value in args.widths.split(",")]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

    print(
        f"Training throughput, 256 px crops, batch {args.batch_size}, default recipe; "
        f"CPU threads {torch.get_num_threads()}"
        + (f", GPU {torch.cuda.get_device_name()} (bf16 autocast + channels_last)" if "cuda" in devices else "")
    )
    with tempfile.TemporaryDirectory(prefix="bench_training_") as scratch:
        folder = Path(scratch)
        indexed, every = polygon_label_windows_per_s(folder, args.polygons, args.seconds / 4)
        print(
            f"\nPolygon labels, {args.polygons:,} buildings, 256 px windows per second: {indexed:.1f} by the "
            f"spatial index, {every:.2f} rasterizing every polygon ({indexed / every:.0f}x)"
        )
        for device in devices:
            config = config_for(folder, widths[0], args.batch_size, device)
            data = data_samples_per_s(config, args.seconds / 2)
            windowed = data_samples_per_s(config, args.seconds / 2, by_window=True)
            print(f"\n[{device}] data loading alone (draw + gather + augment + normalise): {data:8.1f} samples/s")
            print(
                f"[{device}] the same, images read by window from their files: {windowed:8.1f} samples/s "
                f"({windowed / data:.2f}x the images held in memory)"
            )
            print(f"{'base width':>10} {'train samples/s':>16} {'batches':>8} {'data / step ratio':>18}")
            for width in widths:
                rate, batches = training_samples_per_s(config_for(folder, width, args.batch_size, device), args.seconds)
                # the data's share of a step: step time / data time = data rate / step rate
                print(f"{width:>10} {rate:>16.2f} {batches:>8} {data / rate:>17.1f}x", flush=True)
    print(
        "\nratio = data-loading samples/s over training samples/s: how many times faster the data "
        "comes than the network consumes it (data costs 1/ratio of a step)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
