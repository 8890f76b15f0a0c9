"""CPU settings side by side: which arithmetic and memory layout trains and predicts fastest here,
and what it costs in result. Decides ``precision="auto"`` and channels_last on the CPU.

1. Training steps (the project's U-Net with batch norm, BCE + Dice, Adam; 256 px, batch 8) in
   samples/s for float32 vs bfloat16 autocast, each in the default and the channels_last memory
   layout, with 1 thread and with every thread, at base widths 16 and 32. ``--compile`` adds
   ``torch.compile`` of the fastest setting (slow to compile: a minute or more).
2. Prediction tiles (256 px, batch 4) in tiles/s: torch float32, torch bfloat16 + channels_last
   (the engine's CPU default where the CPU has bfloat16 instructions) and ONNX Runtime float32 on
   the same network exported by ``model.net.export`` (the engine of the Deepness plugin), with the
   ratio of our default to ONNX Runtime, and the largest and mean probability difference of
   bfloat16 against float32.
3. With ``--model M --image I --labels L``: the end-to-end prediction of a real scene in float32
   and in bfloat16 scored against its labels (building = 1): the IoU each precision gives.

Every figure of one table is measured in the same run, one after the other, so the ratios hold on
a noisy machine even where the absolute numbers drift. Run from the repository root:
``.venv/bin/python bench/bench_cpu_speed.py [--seconds 10] [--compile]``.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model.net.device import cpu_has_native_bf16  # noqa: E402  (after the path set-up above)
from model.net.modelfile import ModelInfo, save_model  # noqa: E402
from model.net.network import UNet, UNetConfig  # noqa: E402
from model.training.objective import masked_loss  # noqa: E402

TILE_PX = 256
WIDTHS = (16, 32)


def per_second(run: Callable[[], None], items: int, seconds: float) -> float:
    """Items per second of ``run`` after one warm-up call, over at least two calls."""
    run()
    calls, started = 0, time.perf_counter()
    while calls < 2 or time.perf_counter() - started < seconds:
        run()
        calls += 1
    return calls * items / (time.perf_counter() - started)


def autocast(dtype: torch.dtype | None):
    return torch.autocast("cpu", dtype=dtype) if dtype else contextlib.nullcontext()


def training_rate(
    width: int,
    batch: int,
    dtype: torch.dtype | None,
    channels_last: bool,
    seconds: float,
    compiled: bool = False,
    depth: int = 4,
) -> float:
    torch.manual_seed(0)
    net = UNet(UNetConfig(3, width, depth=depth, batch_norm=True)).train()
    layout = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(memory_format=layout)
    step_net = torch.compile(net) if compiled else net
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.randn(batch, 3, TILE_PX, TILE_PX).contiguous(memory_format=layout)
    target = (torch.rand(batch, 1, TILE_PX, TILE_PX) > 0.8).float()
    weight = torch.ones_like(target)

    def step() -> None:
        with autocast(dtype):
            logits = step_net(x)
        loss = masked_loss(logits.float(), target, weight, "bce_dice")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return per_second(step, batch, seconds)


def prediction_settings(net: UNet, tiles: torch.Tensor, onnx_path: Path) -> dict[str, Callable[[], np.ndarray]]:
    """Each setting as a function returning the probabilities of ``tiles``."""
    import onnxruntime

    net = net.eval()
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    channels_last = tiles.contiguous(memory_format=torch.channels_last)
    net_cl = UNet(net.config).eval()
    net_cl.load_state_dict(net.state_dict())
    net_cl = net_cl.to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def torch_float32() -> np.ndarray:
        return torch.sigmoid(net(tiles)).numpy()

    @torch.inference_mode()
    def torch_bf16_channels_last() -> np.ndarray:
        with autocast(torch.bfloat16):
            logits = net_cl(channels_last)
        return torch.sigmoid(logits.float()).numpy()

    def onnx_runtime() -> np.ndarray:
        # the exported graph takes Deepness' input, band values / 255, and holds our normalisation
        # and the sigmoid: raw values (tiles * 64 + 128 under this model's statistics) / 255 in
        return session.run(None, {input_name: ((tiles.numpy() * 64.0 + 128.0) / 255.0).astype(np.float32)})[0]

    return {
        "torch float32": torch_float32,
        "torch bfloat16 + channels_last": torch_bf16_channels_last,
        "ONNX Runtime float32": onnx_runtime,
    }


def prediction_table(width: int, batch: int, seconds: float, folder: Path) -> None:
    from model.net.export import export_onnx

    torch.manual_seed(0)
    net = UNet(UNetConfig(3, width, batch_norm=True)).eval()
    # batch-norm statistics of a trained network, not the identity of a fresh one
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_var.uniform_(0.5, 2.0)
                module.running_mean.uniform_(-0.2, 0.2)
    info = ModelInfo(
        bands=[1, 2, 3], tile_size_px=TILE_PX, normalization={"mode": "fixed", "mean": [128.0] * 3, "std": [64.0] * 3}
    )
    save_model(folder / f"w{width}.pt", net, info)
    export_onnx(folder / f"w{width}.pt", folder / f"w{width}.onnx")
    tiles = torch.randn(batch, 3, TILE_PX, TILE_PX)
    settings = prediction_settings(net, tiles, folder / f"w{width}.onnx")
    reference = settings["torch float32"]()
    print(f"\nPrediction, base width {width}, {TILE_PX} px tiles, batch {batch}:")
    print(f"{'setting':<34} {'tiles/s':>8} {'max |dp|':>9} {'mean |dp|':>10}")
    rates = {}
    for name, run in settings.items():
        rates[name] = per_second(run, batch, seconds)
        difference = np.abs(run().reshape(reference.shape) - reference)
        print(f"{name:<34} {rates[name]:>8.2f} {difference.max():>9.4f} {difference.mean():>10.5f}", flush=True)
    print(
        f"torch bfloat16 + channels_last / ONNX Runtime: "
        f"{rates['torch bfloat16 + channels_last'] / rates['ONNX Runtime float32']:.2f}x; "
        f"/ torch float32: {rates['torch bfloat16 + channels_last'] / rates['torch float32']:.2f}x"
    )


def scene_table(model: Path, image: Path, labels: Path, folder: Path) -> None:
    from model.evaluation.evaluate import evaluate
    from model.prediction.predict import predict_raster

    print(f"\nEnd to end on {image.parent.name}/{image.name} with {model.name}:")
    probabilities = {}
    for precision in ("float32", "bfloat16"):
        started = time.perf_counter()
        result = predict_raster(
            image,
            model,
            probability_path=folder / f"p_{precision}.tif",
            mask_path=folder / f"m_{precision}.tif",
            probability_dtype="float32",
            precision=precision,
            device="cpu",
        )
        seconds = time.perf_counter() - started
        iou = evaluate(result.mask_path, labels, [1]).scores()["iou"]
        import rasterio

        with rasterio.open(result.probability_path) as dataset:
            probabilities[precision] = dataset.read(1, masked=True)
        print(f"  {precision:<9} test IoU {iou:.4f}, {seconds:.1f} s")
    difference = np.abs(probabilities["bfloat16"] - probabilities["float32"])
    print(f"  probability difference bfloat16 vs float32: max {difference.max():.4f}, mean {difference.mean():.5f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="time per measurement (default 10)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile)")
    parser.add_argument("--model", type=Path, help="a trained model file, for the end-to-end comparison")
    parser.add_argument("--image", type=Path)
    parser.add_argument("--labels", type=Path)
    args = parser.parse_args()
    threads = torch.get_num_threads()
    print(
        f"CPU: {threads} threads, native bfloat16: {'yes' if cpu_has_native_bf16() else 'no'} "
        "(on a CPU without it, bfloat16 is emulated and slower than float32)"
    )

    print(f"\nTraining steps, {TILE_PX} px, batch 8, samples/s:")
    settings = [
        ("float32", None, False),
        ("float32 + channels_last", None, True),
        ("bfloat16", torch.bfloat16, False),
        ("bfloat16 + channels_last", torch.bfloat16, True),
    ]
    print(f"{'setting':<28} {'threads':>7}" + "".join(f"{'width ' + str(w):>10}" for w in WIDTHS))
    baseline = {}
    for thread_count in sorted({1, threads}):
        torch.set_num_threads(thread_count)
        for name, dtype, channels_last in settings:
            rates = [training_rate(width, 8, dtype, channels_last, args.seconds) for width in WIDTHS]
            if name == "float32":
                baseline[thread_count] = rates
            ratios = "  (" + ", ".join(f"{r / b:.2f}x" for r, b in zip(rates, baseline[thread_count])) + " float32)"
            print(f"{name:<28} {thread_count:>7}" + "".join(f"{rate:>10.2f}" for rate in rates) + ratios, flush=True)
    torch.set_num_threads(threads)
    if args.compile:
        rates = [training_rate(width, 8, torch.bfloat16, True, args.seconds, compiled=True) for width in WIDTHS]
        print(f"{'compiled bf16 + channels_last':<28} {threads:>7}" + "".join(f"{r:>10.2f}" for r in rates))

    with tempfile.TemporaryDirectory(prefix="bench_cpu_speed_") as scratch:
        for width in WIDTHS:
            prediction_table(width, 4, args.seconds, Path(scratch))
        if args.model and args.image and args.labels:
            scene_table(args.model, args.image, args.labels, Path(scratch))
    return 0


if __name__ == "__main__":
    sys.exit(main())
