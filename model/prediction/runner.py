"""Running the network on batches of raw tiles: normalisation, precision (autocast), channels_last,
test-time augmentation, out-of-GPU-memory halving, and batches queued ahead on a GPU."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Callable, Protocol, TypeVar

import numpy as np
import torch

from ..errors import InputError
from ..net.device import autocast, autocast_settings, precision_name
from ..net.normalization import normalize


class RawTiles(Protocol):
    """What ``TileRunner.run_ahead`` needs of a batch: raw band values and their validity."""

    raw: np.ndarray  # (N, C, H, W)
    valid: np.ndarray  # (N, H, W)


BatchT = TypeVar("BatchT", bound=RawTiles)  # whatever run_ahead is given, handed back with its result


class TileRunner:
    """Normalises raw tiles and runs the network on them: inference mode, channels_last, autocast,
    optional test-time augmentation. Returns float32 probabilities.

    Out of GPU memory, a batch is run again in halves (down to single tiles), and later batches
    keep the smaller size: the first time, ``take_notice`` returns a message saying so."""

    def __init__(
        self,
        net: torch.nn.Module,
        device: torch.device,
        mean: Sequence[float],
        std: Sequence[float],
        precision: str = "auto",
        tta: bool = False,
    ) -> None:
        self.device = device
        self.mean, self.std = list(mean), list(std)
        self.tta = tta
        self._autocast_dtype, _ = autocast_settings(device, precision)
        self.precision_name = precision_name(self._autocast_dtype)
        self.batch_limit: int | None = None  # tiles per forward pass once memory ran out
        self._notice: str | None = None
        self._notice_from: int | None = None
        # Mutating the caller's network is harmless: eval mode and memory format change no weights.
        # torch's type stubs omit memory_format, which Module.to accepts
        self.net = net.to(device=device, memory_format=torch.channels_last).eval()  # type: ignore[call-overload]

    def _autocast(self) -> AbstractContextManager:
        return autocast(self.device, self._autocast_dtype)

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            logits = self.net(batch.contiguous(memory_format=torch.channels_last))
        return torch.sigmoid(logits.float())[:, 0]

    def _probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        if not self.tta:
            return self._forward(batch)
        total = torch.zeros(batch.shape[0], batch.shape[2], batch.shape[3], device=self.device)
        for flip in (False, True):
            flipped = batch.flip(-1) if flip else batch
            for turns in range(4):
                probability = self._forward(torch.rot90(flipped, turns, (-2, -1)))
                probability = torch.rot90(probability, -turns, (-2, -1))
                total += probability.flip(-1) if flip else probability
        return total / 8

    def _in_parts(self, batch: torch.Tensor) -> torch.Tensor:
        """``_probabilities`` over the batch, in parts of at most ``batch_limit`` tiles, halving the
        limit whenever the GPU runs out of memory."""
        parts: list[torch.Tensor] = []
        start = 0
        while start < len(batch):
            size = min(self.batch_limit or len(batch), len(batch) - start)
            try:
                parts.append(self._probabilities(batch[start : start + size]))
                start += size
                continue
            except torch.cuda.OutOfMemoryError:
                if size == 1:
                    raise InputError(
                        "The GPU ran out of memory on a single tile: free GPU memory (close other "
                        "programs using it), use a smaller tile size, or predict on the CPU."
                    ) from None
            # Outside the except block, so the exception's frames (holding GPU tensors) are freed.
            self.batch_limit = size // 2
            # One message per batch however often it halved: from the size that failed first.
            self._notice_from = self._notice_from or size
            self._notice = (
                f"Out of GPU memory with {self._notice_from} tiles per batch: continuing with "
                f"{self.batch_limit} or fewer."
            )
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def take_notice(self) -> str | None:
        """A message about a reduced batch size, returned once (then None)."""
        notice, self._notice, self._notice_from = self._notice, None, None
        return notice

    @torch.inference_mode()
    def _start(self, raw: np.ndarray, valid: np.ndarray) -> Callable[[], np.ndarray]:
        """Queue a batch on the device; the returned function waits for its probabilities.

        On a GPU every copy is asynchronous: page-locked host buffers both ways (from pageable
        memory CUDA would block the host until the GPU had finished the batch before) and an event
        marking the result's arrival. On the CPU the work is done here."""
        tensor, valid_t = torch.from_numpy(raw), torch.from_numpy(valid)
        on_gpu = self.device.type == "cuda"
        if on_gpu:
            tensor = tensor.pin_memory().to(self.device, non_blocking=True)
            valid_t = valid_t.pin_memory().to(self.device, non_blocking=True)
        # Nodata and padding become the band mean (0 after normalising), the least surprising value;
        # chosen, not multiplied by 0, so that a NaN void gives 0 and not NaN to every pixel it reaches.
        normalized = normalize(tensor, self.mean, self.std)
        probabilities = self._in_parts(torch.where(valid_t.unsqueeze(1), normalized, 0.0))
        if not on_gpu:
            result = probabilities.numpy()
            return lambda: result
        host = torch.empty(probabilities.shape, dtype=probabilities.dtype, pin_memory=True)
        host.copy_(probabilities, non_blocking=True)
        arrived = torch.cuda.Event()
        arrived.record()

        def wait() -> np.ndarray:
            arrived.synchronize()
            return host.numpy()

        return wait

    def __call__(self, raw: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """(N, C, H, W) raw band values and (N, H, W) validity -> (N, H, W) float32 probabilities."""
        return self._start(raw, valid)()

    def run_ahead(self, batches: Iterable[BatchT]) -> Iterator[tuple[BatchT, np.ndarray]]:
        """``(batch, probabilities)`` for batches that have ``.raw`` and ``.valid``, in order. The
        next batch is queued on the GPU before a batch's probabilities are handed over, so what the
        caller does with them (blending, encoding) overlaps the GPU's work instead of idling it."""
        pending: tuple[BatchT, Callable[[], np.ndarray]] | None = None
        for batch in batches:
            started = (batch, self._start(batch.raw, batch.valid))
            if pending is not None:
                yield pending[0], pending[1]()
            pending = started
        if pending is not None:
            yield pending[0], pending[1]()
