"""How much ground the U-Net sees, and what seeing more costs on a CPU: depth 4 (the paper's and the
default) against depth 5 (one more pooling level).

For each depth, at base width 16 with batch norm: the receptive field measured, not computed (the
input pixels whose gradient reaches one output pixel in the middle of a 512 px tile, with the
weights set to 1 so no path cancels), in pixels and in metres at the starter model's 0.148 m; the
parameter count; training samples per second (256 px, batch 8) and prediction tiles per second
(256 px, batch 4) in bfloat16 + channels_last where the CPU has bfloat16 instructions, else float32,
the engine's CPU default; and the ratios to depth 4, measured side by side in one run. How well each
depth finds buildings is ``bench_presets.py --runs default default:depth=5``.

Run from the repository root: ``.venv/bin/python bench/bench_context.py [--seconds 10]``.
"""

from __future__ import annotations

import argparse
import sys

import torch
from bench_cpu_speed import autocast, per_second, training_rate  # beside this file; sets sys.path

from model.net.device import cpu_has_native_bf16
from model.net.network import UNet, UNetConfig, count_parameters

DEPTHS = (4, 5)
WIDTH, TILE_PX, STARTER_PIXEL_M = 16, 256, 0.148


def receptive_field_px(depth: int, tile_px: int = 512) -> int:
    """The side of the square of input pixels that reach the output pixel at the tile's centre."""
    net = UNet(UNetConfig(3, WIDTH, depth=depth, batch_norm=False)).eval()
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.fill_(1.0 if parameter.ndim > 1 else 0.0)
    x = torch.ones(1, 3, tile_px, tile_px, dtype=torch.float64, requires_grad=True)  # every ReLU passes
    net.double()(x)[0, 0, tile_px // 2, tile_px // 2].backward()
    rows, cols = torch.nonzero(x.grad[0].abs().sum(0), as_tuple=True)
    return int(max(rows.max() - rows.min(), cols.max() - cols.min())) + 1


def prediction_rate(depth: int, dtype: torch.dtype | None, seconds: float) -> float:
    net = UNet(UNetConfig(3, WIDTH, depth=depth, batch_norm=True)).eval().to(memory_format=torch.channels_last)
    tiles = torch.randn(4, 3, TILE_PX, TILE_PX).contiguous(memory_format=torch.channels_last)

    def run() -> None:
        with torch.inference_mode(), autocast(dtype):
            net(tiles)

    return per_second(run, len(tiles), seconds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="time per measurement (default 10)")
    args = parser.parse_args()
    dtype = torch.bfloat16 if cpu_has_native_bf16() else None
    print(f"base width {WIDTH}, {'bfloat16' if dtype else 'float32'}, channels_last, {torch.get_num_threads()} threads")
    rows = []
    for depth in DEPTHS:
        field = receptive_field_px(depth)
        parameters = count_parameters(UNet(UNetConfig(3, WIDTH, depth=depth, batch_norm=True)))
        training = training_rate(WIDTH, 8, dtype, True, args.seconds, depth=depth)
        prediction = prediction_rate(depth, dtype, args.seconds)
        rows.append((depth, field, parameters, training, prediction))
    print(f"{'depth':>5} {'receptive field':>22} {'parameters':>11} {'train samples/s':>16} {'predict tiles/s':>16}")
    base = rows[0]
    for depth, field, parameters, training, prediction in rows:
        print(
            f"{depth:>5} {field:>7} px = {field * STARTER_PIXEL_M:>5.1f} m {parameters:>11,} "
            f"{training:>9.2f} ({training / base[3]:.2f}x) {prediction:>9.2f} ({prediction / base[4]:.2f}x)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
