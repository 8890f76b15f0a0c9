"""The U-Net of the paper (19 conv layers, nearest up-sampling) with a few user options.

At the paper's settings (3 bands, base width 64, depth 4, no batch norm) it has 8 encoder convs,
2 bottom convs, 8 decoder convs and one 1x1 output conv, and 31,378,945 parameters. The network
returns logits: the sigmoid is applied where probabilities are needed, so training can use the
numerically stable ``BCEWithLogitsLoss``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import torch
from torch import nn

from ..errors import InputError


@dataclass(frozen=True)
class UNetConfig:
    in_bands: int = 3
    base_width: int = 64
    depth: int = 4  # number of pooling steps; filters double at each: 64..1024 at depth 4
    batch_norm: bool = False
    upsample: str = "nearest"  # the paper repeats rows and columns; "bilinear" is smoother

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> UNetConfig:
        known = {name: values[name] for name in cls.__dataclass_fields__ if name in values}
        return cls(**known)

    @property
    def size_multiple_px(self) -> int:
        """Input height and width must be multiples of this so pooling and up-sampling line up."""
        return 2**self.depth


class DoubleConv(nn.Sequential):
    """[3x3 conv ('same' padding), (batch norm), ReLU] x 2."""

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool) -> None:
        layers: list[nn.Module] = []
        for channels_in in (in_channels, out_channels):
            # A conv followed by batch norm needs no bias: the norm's shift replaces it.
            layers.append(nn.Conv2d(channels_in, out_channels, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class UpBlock(nn.Module):
    """2x up-sampling, concatenation with the encoder's skip, then a DoubleConv."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, config: UNetConfig) -> None:
        super().__init__()
        align = None if config.upsample == "nearest" else False
        self.upsample = nn.Upsample(scale_factor=2, mode=config.upsample, align_corners=align)
        self.conv = DoubleConv(in_channels + skip_channels, out_channels, config.batch_norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.upsample(x)], dim=1))


class UNet(nn.Module):
    def __init__(self, config: UNetConfig = UNetConfig()) -> None:
        super().__init__()
        if config.upsample not in ("nearest", "bilinear"):
            raise InputError(f"U-Net up-sampling must be 'nearest' or 'bilinear', not {config.upsample!r}.")
        self.config = config
        widths = [config.base_width * 2**level for level in range(config.depth + 1)]
        self.encoders = nn.ModuleList()
        channels = config.in_bands
        for width in widths[:-1]:
            self.encoders.append(DoubleConv(channels, width, config.batch_norm))
            channels = width
        self.pool = nn.MaxPool2d(2)
        self.bottom = DoubleConv(widths[-2], widths[-1], config.batch_norm)
        self.decoders = nn.ModuleList(
            UpBlock(widths[level + 1], widths[level], widths[level], config) for level in reversed(range(config.depth))
        )
        self.head = nn.Conv2d(widths[0], 1, kernel_size=1)

    def call_before_each_block(self, call: Callable[[], None]) -> None:
        """``call()`` before every U-Net block, forward and backward (a cancel check: one raising there
        stops a step within a block's time, about a second on a CPU, not a whole batch's)."""

        def hook(*_args) -> None:
            call()

        blocks = [*self.encoders, self.bottom, *self.decoders]
        for block in blocks:
            block.register_forward_pre_hook(hook)
        for block in blocks[1:]:  # the first block's input needs no gradient: no backward hook there
            block.register_full_backward_pre_hook(hook)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        skips = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottom(x)
        for decoder, skip in zip(self.decoders, reversed(skips)):
            x = decoder(x, skip)
        return self.head(x)

    def _check_input(self, x: torch.Tensor) -> None:
        multiple = self.config.size_multiple_px
        if x.ndim != 4 or x.shape[1] != self.config.in_bands:
            raise InputError(
                f"The U-Net expects a batch shaped (N, {self.config.in_bands}, H, W), "
                f"got {tuple(x.shape)}: check the number of image bands."
            )
        if x.shape[2] % multiple or x.shape[3] % multiple:
            raise InputError(
                f"Tile height and width must be multiples of {multiple} px, got {x.shape[2]}x{x.shape[3]}."
            )


def count_conv_layers(net: nn.Module) -> int:
    return sum(isinstance(module, nn.Conv2d) for module in net.modules())


def count_parameters(net: nn.Module) -> int:
    return sum(parameter.numel() for parameter in net.parameters())
