"""The model file: weights plus everything needed to use them correctly, in one ``.pt`` file.

It holds only tensors and plain values (dicts, lists, strings, numbers), so it loads with
``torch.load(weights_only=True)``: a model file from a stranger cannot run code. It is written to a
temporary name beside the target and renamed, so a crash or cancel never leaves half a file.
"""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..errors import InputError
from ..io.files import describe_os_error, incomplete_output, replaced_when_done
from .network import UNet, UNetConfig

FORMAT_NAME = "unet_buildings.model"
FORMAT = f"{FORMAT_NAME}/1"


@dataclass
class ModelInfo:
    """What a prediction needs to know besides the weights. Plain values only."""

    network: dict = field(default_factory=lambda: UNetConfig().to_dict())
    bands: list = field(default_factory=lambda: [1, 2, 3])  # 1-based raster band indexes
    # {"mode": "per_image" | "fixed", "mean": [...], "std": [...], ...}: see normalization.py
    normalization: dict = field(default_factory=lambda: {"mode": "fixed", "mean": [0.0] * 3, "std": [255.0] * 3})
    tile_size_px: int = 256
    threshold: float = 0.5
    building_values: list = field(default_factory=lambda: [2])
    pixel_size: list | None = None  # [x, y] in the training rasters' CRS units
    crs_units: str = ""
    # [x, y] metres on the ground at the training images' centres (ground.py), averaged over the images
    # weighted by their valid pixels: what predictions match, whatever the CRS of either image. None in
    # model files of versions before it existed.
    ground_pixel_size_m: list | None = None
    # each training image's full range of values (255 for 8-bit, 1.0 for 0..1 floats: normalization.py);
    # None in model files of versions before it existed
    value_scales: list | None = None
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
    def from_dict(cls, values: dict) -> ModelInfo:
        known = {name: values[name] for name in cls.__dataclass_fields__ if name in values}
        return cls(**known)


@dataclass
class LoadedModel:
    net: UNet
    info: ModelInfo
    path: Path | None = None


def atomic_torch_save(payload: Any, path: Path) -> None:
    with replaced_when_done(path, verify=_zip_problem) as temporary:
        try:
            torch.save(payload, temporary)
        except RuntimeError as error:  # torch's writer reports a full disk as "unexpected pos ..."
            raise incomplete_output(path, "torch could not write it") from error


def _zip_problem(path: Path) -> str | None:
    """A torch file is a zip archive whose directory is written last: a truncated file has none."""
    try:
        with zipfile.ZipFile(path) as archive:
            return None if archive.namelist() else "it holds nothing"
    except (zipfile.BadZipFile, OSError) as error:
        return f"it cannot be read back: {error}"


def model_payload(state_dict: dict, info: ModelInfo, extra: dict | None = None) -> dict:
    """The dict stored on disk; ``extra`` carries training state (optimizer) in checkpoints."""
    state = {name: tensor.detach().cpu() for name, tensor in state_dict.items()}
    payload = {"format": FORMAT, "info": asdict(info), "state_dict": state}
    if extra:
        payload.update(extra)
    return payload


def save_model(path: Path, net: UNet, info: ModelInfo, extra: dict | None = None) -> None:
    info.network = net.config.to_dict()
    atomic_torch_save(model_payload(net.state_dict(), info, extra), path)


def _inflating_entries(path: Path) -> list[str]:
    """The archive entries that would grow when read. torch.save stores every entry as it is, so the
    memory a real model file needs is bounded by its size on disk; a compressed entry can declare
    gigabytes in a few kilobytes (a zip bomb), and safe loading stops code, not decompression."""
    try:
        with zipfile.ZipFile(path) as archive:
            return [
                entry.filename
                for entry in archive.infolist()
                if entry.compress_type != zipfile.ZIP_STORED or entry.file_size > entry.compress_size
            ]
    except (zipfile.BadZipFile, OSError):
        return []  # not a readable archive: torch.load says so below, in its own way


def read_payload(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise InputError(f"Model file '{path}' {what}: train a model first or pick an existing .pt file.")
    inflating = _inflating_entries(path)
    if inflating:
        raise InputError(
            f"'{path}' is not a model file this plugin can load safely: {len(inflating)} of its parts are "
            "compressed (model files never are) and could fill the memory when unpacked. Pick a .pt file "
            "written by the U-Net Building Extractor."
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:  # torch's own text advises weights_only=False: never pass it on
        raise InputError(
            f"'{path}' is not a model file this plugin can load safely: it holds Python objects "
            "that could run code when loaded. Pick a .pt file written by the U-Net Building "
            "Extractor."
        ) from error
    except OSError as error:
        raise InputError(describe_os_error(error, path)) from error
    except MemoryError:
        raise  # not damage: the callers say "out of memory" and what to close
    except Exception as error:  # a truncated file or another program's file
        raise InputError(
            f"'{path}' is damaged or not a model file (it cannot be read as one). Pick a .pt file "
            "written by the U-Net Building Extractor, or train the model again."
        ) from error
    if not isinstance(payload, dict) or not str(payload.get("format", "")).startswith(FORMAT_NAME + "/"):
        raise InputError(f"'{path}' is not a U-Net Building Extractor model file (expected format {FORMAT!r}).")
    if payload["format"] != FORMAT:
        raise InputError(
            f"'{path}' was written by a newer version of the U-Net Building Extractor (model format "
            f"{payload['format']!r}; this version reads {FORMAT!r}): update the plugin to use it."
        )
    return payload


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value  # not NaN


def info_problem(info: ModelInfo) -> str | None:
    """What in a model file's description cannot be used, or None. A file that passes the format check
    can still be damaged or edited by hand: a clear sentence now beats a crash deep in a prediction."""
    network = info.network if isinstance(info.network, dict) else {}
    # bounds far beyond any real model, so that a damaged number cannot ask for all the memory there is
    limits = {"in_bands": 256, "base_width": 1024, "depth": 8}
    if not isinstance(info.network, dict) or not all(
        _whole(network.get(name)) and 0 < network[name] <= limit for name, limit in limits.items()
    ):
        return "its network description is not valid"
    if network.get("upsample", "nearest") not in ("nearest", "bilinear"):
        return f"its up-sampling {network.get('upsample')!r} is unknown"
    if not isinstance(info.bands, list) or not info.bands or not all(_whole(b) and b >= 1 for b in info.bands):
        return "its band list is not a list of band numbers"
    if len(info.bands) != network["in_bands"]:
        return f"it lists {len(info.bands)} band(s) for a network of {network['in_bands']} input band(s)"
    if not _whole(info.tile_size_px) or not 16 <= info.tile_size_px <= 65536:
        return f"its tile size {info.tile_size_px!r} is not a whole number of pixels between 16 and 65536"
    if not _number(info.threshold) or not 0.0 <= info.threshold <= 1.0:
        return f"its threshold {info.threshold!r} is not a number between 0 and 1"
    normalization = info.normalization
    if not isinstance(normalization, dict) or normalization.get("mode") not in ("per_image", "fixed"):
        return "its normalisation settings are not valid"
    if normalization["mode"] == "fixed":
        mean, std = normalization.get("mean"), normalization.get("std")
        if not all(
            isinstance(values, list) and len(values) == len(info.bands) and all(map(_number, values))
            for values in (mean, std)
        ) or not (isinstance(std, list) and all(value != 0 for value in std)):
            return "its normalisation numbers do not match its bands"
        scale = normalization.get("value_scale")
        if scale is not None and not (_number(scale) and scale > 0):
            return "its normalisation's value scale is not a positive number"
    if info.pixel_size is not None and not (
        isinstance(info.pixel_size, list)
        and len(info.pixel_size) == 2
        and all(_number(v) and v != 0 for v in info.pixel_size)
    ):
        return "its pixel size is not two numbers other than 0"
    if info.value_scales is not None and not (
        isinstance(info.value_scales, list) and all(_number(v) and v > 0 for v in info.value_scales)
    ):
        return "its training images' value scales are not positive numbers"
    return None


def load_model(path: Path, device: str | torch.device = "cpu") -> LoadedModel:
    payload = read_payload(path)

    def damaged(what: str) -> InputError:
        return InputError(
            f"The model file '{path}' is damaged: {what}. Pick another model file or train the model again."
        )

    if not isinstance(payload.get("info"), dict) or not isinstance(payload.get("state_dict"), dict):
        raise damaged("its description or its weights are missing")
    try:
        info = ModelInfo.from_dict(payload["info"])
    except TypeError as error:
        raise damaged("its description is not valid") from error
    problem = info_problem(info)
    if problem:
        raise damaged(problem)
    # Built without memory ("meta") and given the file's tensors: a damaged description (say a base
    # width of 5000) is found by the shape check instead of allocating a network that exhausts memory.
    with torch.device("meta"):
        net = UNet(info.network_config)
    try:
        net.load_state_dict(payload["state_dict"], assign=True)
    except (RuntimeError, TypeError, AttributeError) as error:  # missing or unexpected tensors, wrong shapes
        raise damaged("its weights do not fit its network (missing tensors or tensors of the wrong shape)") from error
    net.to(device).eval()
    return LoadedModel(net, info, Path(path))
