"""The model file: weights plus everything needed to use them correctly, in one ``.pt`` file.

It holds only tensors and plain values (dicts, lists, strings, numbers), so it loads with
``torch.load(weights_only=True)``: a model file from a stranger cannot run code. It is written to a
temporary name beside the target and renamed, so a crash or cancel never leaves half a file.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from . import __version__
from .errors import InputError
from .files import replaced_when_done
from .network import UNet, UNetConfig

FORMAT = "unet_buildings.model/1"


@dataclass
class ModelInfo:
    """What a prediction needs to know besides the weights. Plain values only."""

    network: dict = field(default_factory=lambda: UNetConfig().to_dict())
    bands: list = field(default_factory=lambda: [1, 2, 3])  # 1-based raster band indexes
    # {"mode": "per_image" | "fixed", "mean": [...], "std": [...]}: see normalization.py
    normalization: dict = field(default_factory=lambda: {"mode": "fixed", "mean": [0.0] * 3, "std": [255.0] * 3})
    tile_size_px: int = 256
    threshold: float = 0.5
    building_values: list = field(default_factory=lambda: [2])
    pixel_size: Optional[list] = None  # [x, y] in the training rasters' CRS units
    crs_units: str = ""
    preset: str = "default"
    history: list = field(default_factory=list)  # one dict of numbers per epoch
    training: dict = field(default_factory=dict)  # the training options, for the record
    epoch: int = 0
    best_epoch: int = 0
    software_version: str = __version__

    @property
    def network_config(self) -> UNetConfig:
        return UNetConfig.from_dict(self.network)

    @classmethod
    def from_dict(cls, values: dict) -> "ModelInfo":
        known = {name: values[name] for name in cls.__dataclass_fields__ if name in values}
        return cls(**known)


@dataclass
class LoadedModel:
    net: UNet
    info: ModelInfo
    path: Optional[Path] = None


def atomic_torch_save(payload: Any, path: Path) -> None:
    with replaced_when_done(path) as temporary:
        torch.save(payload, temporary)


def model_payload(state_dict: dict, info: ModelInfo, extra: Optional[dict] = None) -> dict:
    """The dict stored on disk; ``extra`` carries training state (optimizer) in checkpoints."""
    state = {name: tensor.detach().cpu() for name, tensor in state_dict.items()}
    payload = {"format": FORMAT, "info": asdict(info), "state_dict": state}
    if extra:
        payload.update(extra)
    return payload


def save_model(path: Path, net: UNet, info: ModelInfo, extra: Optional[dict] = None) -> None:
    info.network = net.config.to_dict()
    atomic_torch_save(model_payload(net.state_dict(), info, extra), path)


def read_payload(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Model file '{path}' does not exist: train a model first or pick an existing .pt file.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated file, another program's file, or a pickle with code
        raise InputError(f"'{path}' is not a model file this plugin can read safely ({error}). "
                         "Pick a .pt file written by the U-Net Building Extractor.") from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(f"'{path}' is not a U-Net Building Extractor model file "
                         f"(expected format {FORMAT!r}).")
    return payload


def load_model(path: Path, device: str | torch.device = "cpu") -> LoadedModel:
    payload = read_payload(path)
    info = ModelInfo.from_dict(payload["info"])
    net = UNet(info.network_config)
    net.load_state_dict(payload["state_dict"])
    net.to(device).eval()
    return LoadedModel(net, info, Path(path))
