"""Choosing where torch runs and in which precision.

Device: the GPU when there is one, else the CPU, or what the user asked.

Precision: mixed precision only where the hardware does it natively, because an emulated
low-precision type costs accuracy and buys no speed:
- CUDA, compute capability 8.0 (Ampere) and later: bfloat16 autocast. bfloat16 has float32's
  exponent range, so training needs no gradient scaling.
- CUDA below 8.0 (Volta, Turing): float16 autocast, whose tensor cores those cards do have; its
  small exponent range makes small gradients underflow, so training needs a
  ``torch.amp.GradScaler``. ``torch.cuda.is_bf16_supported()`` is no guide here: it also answers
  yes on cards that only emulate bfloat16.
- CPU: bfloat16 autocast where the processor has bfloat16 instructions (AVX512-BF16 or AMX, read
  from the ``/proc/cpuinfo`` flags ``avx512_bf16`` / ``amx_bf16``); measured 1.6 to 2.2x faster
  than float32 for the U-Net on such a CPU. Elsewhere oneDNN emulates bfloat16, slower than
  float32: float32.
The user can always force ``float32`` (or a type of their choice, float16 only on CUDA).
"""

from __future__ import annotations

import functools
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch

from ..choices import DEVICE_CHOICES, PRECISIONS
from ..errors import InputError

NATIVE_BF16_CUDA_CAPABILITY = (8, 0)
NATIVE_BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
CPUINFO = Path("/proc/cpuinfo")
_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(choice: str = "auto") -> torch.device:
    if choice not in DEVICE_CHOICES:
        raise InputError(f"Device must be one of {', '.join(DEVICE_CHOICES)}, not {choice!r}.")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise InputError(
            "Device 'cuda' was asked for but torch sees no CUDA GPU: choose 'auto' or 'cpu', "
            "or install a CUDA build of torch."
        )
    return torch.device(choice)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"GPU {torch.cuda.get_device_name(device)}"
    threads = torch.get_num_threads()
    return f"CPU ({threads} thread{'' if threads == 1 else 's'})"


def cpu_flags_have_native_bf16(cpuinfo_text: str) -> bool:
    """Whether a ``/proc/cpuinfo`` text lists bfloat16 instructions on its ``flags`` lines."""
    for line in cpuinfo_text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags" and NATIVE_BF16_CPU_FLAGS & set(value.split()):
            return True
    return False


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True where the CPU computes bfloat16 natively. Without ``/proc/cpuinfo`` (macOS, Windows)
    the answer is no: float32 is always correct, bfloat16 only sometimes faster."""
    try:
        return cpu_flags_have_native_bf16(CPUINFO.read_text(errors="replace"))
    except OSError:
        return False


def _check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise InputError(f"Precision must be one of {', '.join(PRECISIONS)}, not {precision!r}.")


def autocast_settings(device: torch.device, precision: str = "auto") -> tuple[torch.dtype | None, bool]:
    """The autocast type for running a network on ``device``, and whether training needs a GradScaler.

    ``precision`` is "auto", "float32", "bfloat16" or "float16". Returns ``(dtype, needs_grad_scaler)``:
    ``dtype`` is ``torch.bfloat16`` / ``torch.float16`` to use as
    ``torch.autocast(device.type, dtype=dtype)``, or None for plain float32 (no autocast);
    ``needs_grad_scaler`` is True exactly when ``dtype`` is float16, whose training needs
    ``torch.amp.GradScaler(device.type)`` so that small gradients do not underflow.

    "auto" is bfloat16 on CUDA cards of compute capability 8.0 or later, float16 on older ones,
    bfloat16 on CPUs with bfloat16 instructions (AVX512-BF16 / AMX) and float32 elsewhere.
    A forced "bfloat16" is honoured everywhere (emulated, thus slow, where not native); a forced
    "float16" needs CUDA (CPU float16 kernels are slow and incomplete). Raises ``InputError`` for an
    unknown name or float16 off CUDA.
    """
    _check_precision(precision)
    if precision == "auto":
        if device.type == "cuda":
            native_bf16 = torch.cuda.get_device_capability(device) >= NATIVE_BF16_CUDA_CAPABILITY
            precision = "bfloat16" if native_bf16 else "float16"
        elif device.type == "cpu" and cpu_has_native_bf16():
            precision = "bfloat16"
        else:
            precision = "float32"
    if precision == "float16" and device.type != "cuda":
        raise InputError("float16 precision needs a CUDA GPU; use 'bfloat16' or 'float32' on the CPU.")
    dtype = _DTYPES.get(precision)
    return dtype, dtype is torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager:
    """The context that runs a network in ``dtype`` (from ``autocast_settings``); none for float32."""
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def precision_name(dtype: torch.dtype | None) -> str:
    """ "float32", "bfloat16" or "float16": the name of what ``autocast_settings`` chose."""
    return {torch.bfloat16: "bfloat16", torch.float16: "float16"}.get(dtype, "float32") if dtype else "float32"


def describe_precision(device: torch.device, precision: str = "auto") -> str:
    """One line saying which precision runs and why, for logs and result summaries."""
    dtype, scaled = autocast_settings(device, precision)
    chosen = "chosen" if precision == "auto" else "as asked"
    if dtype is None:
        return f"float32 ({chosen})"
    where = ""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        where = f", compute capability {major}.{minor}"
    elif precision == "auto":
        where = ", the CPU has bfloat16 instructions"
    return (
        f"{precision_name(dtype)} autocast ({chosen}{where}"
        f"{'; training scales the loss (GradScaler)' if scaled else ''})"
    )
