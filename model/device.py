"""Choosing where torch runs: the GPU when there is one, else the CPU, or what the user asked."""
from __future__ import annotations

import torch

from .errors import InputError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(choice: str = "auto") -> torch.device:
    if choice not in DEVICE_CHOICES:
        raise InputError(f"Device must be one of {', '.join(DEVICE_CHOICES)}, not {choice!r}.")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise InputError("Device 'cuda' was asked for but torch sees no CUDA GPU: choose 'auto' or 'cpu', "
                         "or install a CUDA build of torch.")
    return torch.device(choice)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"GPU {torch.cuda.get_device_name(device)}"
    return f"CPU ({torch.get_num_threads()} threads)"
