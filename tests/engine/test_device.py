"""Precision choice by hardware, and prediction that survives running out of GPU memory.

Runs on the CPU: the CUDA answers are checked with the capability query replaced, and running
out of memory is injected by a network wrapper raising torch's real ``OutOfMemoryError``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

import model.net.device as device_module
from model.errors import InputError
from model.net.device import autocast_settings, cpu_flags_have_native_bf16, describe_precision
from model.net.modelfile import LoadedModel, ModelInfo
from model.net.network import UNet, UNetConfig
from model.prediction.predict import TileRunner, predict_raster

CPU = torch.device("cpu")
CUDA = torch.device("cuda")


@pytest.mark.parametrize(
    ("flags", "native"),
    [
        ("fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni", True),  # Cooper Lake, Zen 4
        ("fpu sse2 avx2 avx512f amx_bf16 amx_tile", True),  # Sapphire Rapids
        ("fpu sse2 avx2 avx512f avx512bw avx512_vnni", False),  # Skylake / Cascade Lake: emulated
        ("fp asimd evtstrm", False),  # Arm
    ],
)
def test_cpu_bf16_is_read_from_the_cpuinfo_flags(flags, native):
    text = f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\nbugs\t\t: avx512_bf16_not_a_flag\n"
    assert cpu_flags_have_native_bf16(text) is native


@pytest.mark.parametrize("native", [True, False])
def test_cpu_auto_is_bfloat16_only_with_native_instructions(monkeypatch, native):
    monkeypatch.setattr(device_module, "cpu_has_native_bf16", lambda: native)
    assert autocast_settings(CPU, "auto") == ((torch.bfloat16 if native else None), False)
    assert autocast_settings(CPU, "float32") == (None, False)
    assert autocast_settings(CPU, "bfloat16") == (torch.bfloat16, False)  # forced: honoured
    with pytest.raises(InputError, match="float16 precision needs a CUDA GPU"):
        autocast_settings(CPU, "float16")
    with pytest.raises(InputError, match="auto, float32, bfloat16, float16"):
        autocast_settings(CPU, "half")


@pytest.mark.parametrize(
    ("capability", "expected"),
    [
        ((7, 0), (torch.float16, True)),  # V100: fp16 tensor cores, bf16 only emulated
        ((7, 5), (torch.float16, True)),  # T4, RTX 20xx
        ((8, 0), (torch.bfloat16, False)),  # A100
        ((8, 6), (torch.bfloat16, False)),  # RTX 30xx
        ((9, 0), (torch.bfloat16, False)),  # H100 / H200
    ],
)
def test_cuda_auto_follows_the_compute_capability_not_is_bf16_supported(monkeypatch, capability, expected):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)  # what old cards answer
    assert autocast_settings(CUDA, "auto") == expected
    assert autocast_settings(CUDA, "float16") == (torch.float16, True)  # float16 always scales the loss
    assert autocast_settings(CUDA, "bfloat16") == (torch.bfloat16, False)
    assert autocast_settings(CUDA, "float32") == (None, False)
    assert ("GradScaler" in describe_precision(CUDA, "auto")) is expected[1]


def test_describe_precision_says_what_runs():
    assert describe_precision(CPU, "float32") == "float32 (as asked)"
    assert describe_precision(CPU, "bfloat16").startswith("bfloat16 autocast (as asked")


class OutOfMemoryAbove(torch.nn.Module):
    """The network, except that batches of more than ``limit`` tiles raise CUDA's out-of-memory
    error, as a GPU with too little free memory does. Records the batch sizes it was given."""

    def __init__(self, net: UNet, limit: int) -> None:
        super().__init__()
        self.inner, self.limit, self.config = net, limit, net.config
        self.sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(len(x))
        if len(x) > self.limit:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (injected: {len(x)} > {self.limit} tiles)")
        return self.inner(x)


def tiny_net() -> UNet:
    torch.manual_seed(0)
    return UNet(UNetConfig(base_width=4)).eval()


def test_out_of_memory_batches_run_again_in_halves_with_the_same_result():
    net = tiny_net()
    raw = np.random.default_rng(0).integers(0, 255, (8, 3, 32, 32), dtype=np.uint8)
    valid = np.ones((8, 32, 32), bool)
    expected = TileRunner(net, CPU, [128.0] * 3, [64.0] * 3, "float32")(raw, valid)
    wrapped = OutOfMemoryAbove(net, limit=3)
    runner = TileRunner(wrapped, CPU, [128.0] * 3, [64.0] * 3, "float32")
    np.testing.assert_array_equal(runner(raw, valid), expected)
    assert wrapped.sizes == [8, 4, 2, 2, 2, 2]  # 8 and 4 fail; 2 fits and is kept
    assert runner.batch_limit == 2
    notice = runner.take_notice()
    assert notice is not None and "Out of GPU memory with 8 tiles" in notice and "2 or fewer" in notice
    assert runner.take_notice() is None  # said once
    wrapped.sizes.clear()
    runner(raw[:5], valid[:5])  # the next batch starts at the size that fitted
    assert wrapped.sizes == [2, 2, 1]


def test_out_of_memory_on_one_tile_is_a_clear_error():
    runner = TileRunner(OutOfMemoryAbove(tiny_net(), limit=0), CPU, [0.0] * 3, [1.0] * 3, "float32")
    with pytest.raises(InputError, match="ran out of memory on a single tile"):
        runner(np.zeros((2, 3, 32, 32), np.uint8), np.ones((2, 32, 32), bool))


def test_prediction_says_once_that_it_reduced_the_batch_and_writes_the_same_raster(tmp_path: Path):
    data = np.random.default_rng(1).integers(0, 255, (3, 100, 100), dtype=np.uint8)
    image = tmp_path / "image.tif"
    with rasterio.open(
        image,
        "w",
        driver="GTiff",
        width=100,
        height=100,
        count=3,
        dtype="uint8",
        crs="EPSG:32633",
        transform=from_origin(500000, 100000, 0.5, 0.5),
    ) as dataset:
        dataset.write(data)
    info = ModelInfo(
        bands=[1, 2, 3], normalization={"mode": "fixed", "mean": [128.0] * 3, "std": [64.0] * 3}, tile_size_px=32
    )
    net = tiny_net()
    outputs, messages = {}, {"plain": [], "short": []}
    for name, model in (("plain", net), ("short", OutOfMemoryAbove(net, limit=2))):
        predict_raster(
            image,
            LoadedModel(model, info),
            probability_path=tmp_path / f"{name}.tif",
            probability_dtype="float32",
            batch_size=8,
            device="cpu",
            precision="float32",
            progress=lambda percent, message, said=messages[name]: said.append(message),
        )
        with rasterio.open(tmp_path / f"{name}.tif") as dataset:
            outputs[name] = dataset.read(1)
    np.testing.assert_array_equal(outputs["short"], outputs["plain"])
    assert sum("Out of GPU memory" in message for message in messages["short"]) == 1
    assert not any("Out of GPU memory" in message for message in messages["plain"])
