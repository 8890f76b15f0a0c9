"""The CUDA path: training in each precision, prediction equal to the CPU's, cancel inside a batch.

Runs only where torch sees a CUDA GPU (skipped elsewhere); every test name starts with
``test_cuda_`` so ``pytest -k test_cuda`` runs exactly these. Tolerances, stated once:
- float32 on the GPU convolves in TF32 (torch's default for cuDNN convolutions), whose 10-bit
  mantissa puts probabilities within FLOAT32_TOLERANCE of the CPU's float32;
- bfloat16 autocast (8-bit mantissa) within BF16_TOLERANCE at worst and BF16_MEAN_TOLERANCE on
  average (the CPU's own bfloat16 autocast is within 5e-4 on the same test).
Masks are not compared: pixels whose probability lies within these tolerances of the threshold
may flip, and a tiny random network has many of them.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from model.errors import Cancelled
from model.net.device import autocast_settings, precision_name
from model.net.modelfile import load_model
from model.prediction.predict import TileRunner, predict_raster
from model.training.trainer import train
from tests.engine.test_inference import make_model, noise, read, write_image
from tests.engine.test_training import scenes, tiny_config  # noqa: F401  (scenes is a fixture)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

FLOAT32_TOLERANCE = 2e-3
BF16_TOLERANCE = 5e-2
BF16_MEAN_TOLERANCE = 5e-3
AUTOCAST_TYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ConvOutputTypes:
    """Records the dtype of every Conv2d output while active: what autocast really ran."""

    def __init__(self) -> None:
        self.seen: set[torch.dtype] = set()

    def __enter__(self) -> ConvOutputTypes:
        def hook(module, inputs, output):
            if isinstance(module, torch.nn.Conv2d):
                self.seen.add(output.dtype)

        self._handle = torch.nn.modules.module.register_module_forward_hook(hook)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()


@pytest.mark.parametrize("precision", ["float32", "bfloat16", "float16"])
def test_cuda_training_steps_in_each_precision(scenes, tmp_path, precision):  # noqa: F811
    epochs: list[dict] = []
    output = tmp_path / "model.pt"
    config = tiny_config(
        scenes,
        output,
        device="cuda",
        precision=precision,
        epochs=4,
        patches_per_epoch=32,
        batch_size=8,
        base_width=8,
        learning_rate=3e-3,
    )
    with ConvOutputTypes() as types:
        result = train(config, on_epoch=epochs.append)
    assert types.seen == {AUTOCAST_TYPES[precision]}
    losses = [record["train_loss"] for record in epochs]
    assert all(math.isfinite(loss) for loss in losses) and losses[-1] < losses[0], losses
    assert result.device_description.startswith("GPU")
    loaded = load_model(output)  # weights saved as float32 on the CPU, whatever ran
    assert all(
        tensor.dtype == torch.float32 and tensor.device.type == "cpu" and torch.isfinite(tensor).all()
        for tensor in loaded.net.state_dict().values()
        if tensor.is_floating_point()
    )


def test_cuda_prediction_equals_the_cpu_within_the_stated_tolerance(tmp_path):
    model = make_model(tmp_path / "m.pt", gain=10.0)
    data = noise((3, 300, 260), seed=5)
    data[:, :40, :50] = 0  # some nodata, which must stay nodata on both devices
    image = write_image(tmp_path / "image.tif", data, nodata=0)

    def probability(device: str, precision: str) -> np.ndarray:
        path = tmp_path / f"{device}_{precision}.tif"
        result = predict_raster(
            image,
            model,
            probability_path=path,
            probability_dtype="float32",
            device=device,
            precision=precision,
            batch_size=3,
        )
        assert result.precision == precision_name(autocast_settings(torch.device(device), precision)[0])
        return read(path)

    cpu = probability("cpu", "float32")
    assert cpu.std() > 0.05  # outputs vary enough for the comparison to mean something
    nodata = cpu == -1.0
    assert nodata[:40, :50].all()
    for precision, worst, mean in (
        ("float32", FLOAT32_TOLERANCE, FLOAT32_TOLERANCE),
        ("auto", BF16_TOLERANCE, BF16_MEAN_TOLERANCE),
    ):
        gpu = probability("cuda", precision)
        assert np.array_equal(gpu == -1.0, nodata)
        difference = np.abs(gpu - cpu)[~nodata]
        assert difference.max() <= worst and difference.mean() <= mean, (precision, difference.max(), difference.mean())


def test_cuda_batches_queued_ahead_return_each_batch_its_own_probabilities(tmp_path):
    loaded = load_model(make_model(tmp_path / "m.pt"))
    runner = TileRunner(loaded.net, torch.device("cuda"), [128.0] * 3, [64.0] * 3)

    class Batch:
        def __init__(self, seed: int) -> None:
            self.raw = noise((4, 3, 64, 64), seed=seed)
            self.valid = np.ones((4, 64, 64), bool)

    batches = [Batch(seed) for seed in range(6)]
    one_by_one = [runner(batch.raw, batch.valid).copy() for batch in batches]
    queued = [(batch, probabilities.copy()) for batch, probabilities in runner.run_ahead(batches)]
    assert [batch for batch, _ in queued] == batches
    for (_, probabilities), expected in zip(queued, one_by_one):
        np.testing.assert_allclose(probabilities, expected, atol=1e-6)
    assert not np.allclose(one_by_one[0], one_by_one[1])  # distinct inputs, distinct outputs


def test_cuda_cancel_takes_effect_inside_a_batch(scenes, tmp_path):  # noqa: F811
    """Cancel requested once the first convolution of training has run (GPU work is queued
    asynchronously, the checks run on the host): the next U-Net block stops the batch."""
    started = {"conv": False}
    messages: list[str] = []

    def hook(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d) and torch.is_grad_enabled():
            started["conv"] = True

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        with pytest.raises(Cancelled, match="Cancelled by the user") as caught:
            train(
                tiny_config(scenes, tmp_path / "m.pt", device="cuda", epochs=3, base_width=8),
                cancelled=lambda: started["conv"],
                progress=lambda percent, message: messages.append(message),
            )
    finally:
        handle.remove()
    assert any(entry.name == "forward" and entry.path.name == "network.py" for entry in caught.traceback)
    assert not any("batch 1/" in message for message in messages)
    assert not (tmp_path / "m.pt").exists()
