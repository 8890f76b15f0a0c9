"""Training on several processes at once: one per GPU (or a few on a CPU), started by ``torchrun``.

``torchrun`` (or ``srun`` running torchrun) starts the processes, the *ranks*, and tells each one who it
is through the environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``).
Training reads that here, joins the process group (NCCL between GPUs, gloo on CPUs) and wraps the
network in DistributedDataParallel, which averages the gradients so every rank takes the same step.
Everything else stays in step by construction: every decision that ends or changes training (time
budget, learning rate, cancel, divergence, best epoch, early stop) is taken on numbers all ranks
share, because a rank that decides alone leaves the others waiting forever in the next exchange.

Started without torchrun (``WORLD_SIZE`` unset or 1), training is a single process, exactly as before.
"""

from __future__ import annotations

import os
import pickle
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

# Rank r draws crops from seed + r * RANK_SEED_STRIDE: rank 0 is a single-process run's stream, and no
# rank's stream is the validation stream (seed + 1).
RANK_SEED_STRIDE = 1_000_003
# how long leaving the process group waits for its threads to let go of this rank's exchanged tensors
SETTLE_S = 30.0

T = TypeVar("T")


def launched_world_size() -> int:
    """The number of ranks torchrun started (1 when not started by it)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Whether this process is rank 0, the one that writes files and reports (read before training)."""
    return int(os.environ.get("RANK", "0")) == 0


def held_elsewhere(tensor: torch.Tensor) -> bool:
    """Whether C++ code (a process group's thread) still holds ``tensor``, besides its Python object."""
    return tensor._use_count() > 1  # type: ignore[attr-defined]  # torch has it; its stubs do not


@dataclass(frozen=True)
class Ranks:
    """This process's place among the ranks, and the few exchanges training needs. With one rank
    every exchange returns its input unchanged, so the training loop has a single code path."""

    device: torch.device  # where this rank computes: cuda:LOCAL_RANK on a multi-GPU launch
    rank: int = 0
    world_size: int = 1
    # Every tensor this rank handed to an exchange, until the process group's threads let go of it. A gloo
    # thread that drops the last reference to a tensor made in Python takes the GIL to free it; if that
    # happens while the main thread, holding the GIL, frees the group (whose destructor joins those threads),
    # both wait forever. Holding the tensors here until they are let go means no thread needs the GIL.
    _exchanged: list[torch.Tensor] = field(default_factory=list, compare=False, repr=False)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def seed(self, seed: int) -> int:
        return seed + RANK_SEED_STRIDE * self.rank

    def shard(self, items: Sequence[T]) -> list[T]:
        """This rank's share of ``items``: every world_size-th, starting at its rank."""
        return list(items[self.rank :: self.world_size])

    def sum(self, values: Sequence[float]) -> list[float]:
        """``values`` summed element-wise over the ranks (float64: counts stay exact below 2**53)."""
        if not self.distributed:
            return [float(value) for value in values]
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        self._exchange(dist.all_reduce, tensor)
        return tensor.tolist()

    def from_main(self, value: T) -> T:
        """Rank 0's ``value`` (any picklable object) on every rank."""
        return self.gather(value)[0]

    def gather(self, value: Any) -> list:
        """Every rank's ``value`` (any picklable object), in rank order, on every rank. Not torch's
        all_gather_object, whose tensors this rank could not hold (see ``_exchanged``)."""
        if not self.distributed:
            return [value]
        data = torch.frombuffer(bytearray(pickle.dumps(value)), dtype=torch.uint8).to(self.device)
        size = torch.tensor([data.numel()], device=self.device)
        sizes = [torch.zeros_like(size) for _ in range(self.world_size)]
        self._exchange(dist.all_gather, sizes, size)
        padded = torch.zeros(int(max(sizes)), dtype=torch.uint8, device=self.device)
        padded[: data.numel()] = data
        gathered = [torch.zeros_like(padded) for _ in range(self.world_size)]
        self._exchange(dist.all_gather, gathered, padded)
        return [pickle.loads(bytes(part[: int(n)].cpu().numpy())) for part, n in zip(gathered, sizes)]

    def _exchange(self, collective: Callable[..., Any], *arguments: torch.Tensor | list[torch.Tensor]) -> None:
        """Runs ``collective(*arguments)`` and holds its tensors until the group's threads let go of them."""
        collective(*arguments)
        self._exchanged[:] = [tensor for tensor in self._exchanged if held_elsewhere(tensor)]
        for argument in arguments:
            self._exchanged.extend(argument if isinstance(argument, list) else [argument])

    def settle(self) -> None:
        """Waits (without the GIL) until the process group's threads hold none of this rank's tensors,
        so that leaving the group cannot deadlock; see ``_exchanged``."""
        deadline = time.monotonic() + SETTLE_S
        while any(map(held_elsewhere, self._exchanged)) and time.monotonic() < deadline:
            time.sleep(0.001)
        self._exchanged.clear()

    def wrap(self, net: torch.nn.Module) -> torch.nn.Module:
        """The network as the training step calls it: under DistributedDataParallel when distributed
        (it starts every rank from rank 0's weights and averages gradients in backward)."""
        if not self.distributed:
            return net
        device_ids = [self.device] if self.device.type == "cuda" else None
        return DistributedDataParallel(net, device_ids=device_ids)

    def share_buffers(self, net: torch.nn.Module) -> None:
        """Rank 0's buffers (batch-norm running statistics) on every rank. DistributedDataParallel sends
        them before each training forward, so after the last step each rank holds its own batch's
        update: aligned here, every rank validates the model that rank 0 saves."""
        if self.distributed:
            for buffer in net.buffers():
                self._exchange(lambda tensor: dist.broadcast(tensor, src=0), buffer)


@contextmanager
def process_group(device: torch.device) -> Iterator[Ranks]:
    """This process's ``Ranks`` for ``device``. Under a torchrun launch of several ranks it joins the
    process group (NCCL for CUDA, on GPU LOCAL_RANK; gloo for the CPU) and leaves it on the way out,
    errors included; a group the caller set up already is used and left to the caller."""
    world_size = launched_world_size()
    if world_size <= 1:
        yield Ranks(device)
        return
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if dist.is_initialized():
        yield Ranks(device, dist.get_rank(), dist.get_world_size())
        return
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    ranks = Ranks(device, dist.get_rank(), dist.get_world_size())
    try:
        yield ranks
    finally:
        ranks.settle()
        dist.destroy_process_group()
