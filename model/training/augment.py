"""Batch augmentation on tensors (on the GPU when training runs there).

The paper's four: gamma change, random rotation, added noise, smoothing; the default recipe adds
flips and 90-degree rotations, and colour jitter (a gain and an offset per band and crop), which
stands in for the brightness and colour differences between cameras and light that per-image
normalisation (the default) does not remove, and all of them under ``dataset`` normalisation.
Images arrive as raw band values (float), labels as float {0, 1} with a separate validity weight;
geometric changes move all three together.
Value-scale changes (gamma, noise, jitter) work on values divided by the image's ``value_scale``:
the full range of 8-bit data, the data's own high value for 16-bit and float data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    gamma_range: tuple[float, float] = (0.7, 1.5)  # paper: "gamma change"
    rotation_probability: float = 0.5  # arbitrary-angle rotation (paper: "random rotation")
    noise_probability: float = 0.3
    noise_std: float = 0.05  # in units of the value range (0..1)
    blur_probability: float = 0.2
    flips_and_rot90: bool = True  # ours, not the paper's
    colour_jitter: float = 0.1  # ours: per-band gain in 1 +- this, offset in +- half of it (0..1 units)

    @classmethod
    def paper(cls) -> AugmentConfig:
        return cls(flips_and_rot90=False, colour_jitter=0.0)


def _per_sample(batch: int, probability: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(batch, generator=generator, device=device) < probability


def augment(
    images: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor,
    value_scale: torch.Tensor,
    config: AugmentConfig,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """images (N, C, H, W) raw values; labels and weights (N, 1, H, W); value_scale (N,) full range."""
    n, device = images.shape[0], images.device
    scale = value_scale.view(n, 1, 1, 1)

    low, high = config.gamma_range
    gamma = low + (high - low) * torch.rand(n, 1, 1, 1, generator=generator, device=device)
    images = (images / scale).clamp(0, 1) ** gamma

    if config.colour_jitter > 0:
        bands = images.shape[1]
        jitter = config.colour_jitter
        gain = 1 + jitter * (2 * torch.rand(n, bands, 1, 1, generator=generator, device=device) - 1)
        offset = jitter / 2 * (2 * torch.rand(n, bands, 1, 1, generator=generator, device=device) - 1)
        images = images * gain + offset

    if config.flips_and_rot90:
        flip = _per_sample(n, 0.5, generator, device).view(n, 1, 1, 1)
        images, labels, weights = (torch.where(flip, t.flip(-1), t) for t in (images, labels, weights))
        quarter_turns = int(torch.randint(0, 4, (1,), generator=generator, device=device))
        images, labels, weights = (torch.rot90(t, quarter_turns, dims=(-2, -1)) for t in (images, labels, weights))

    rotate = _per_sample(n, config.rotation_probability, generator, device)
    if rotate.any():
        angle = torch.rand(n, generator=generator, device=device) * 2 * math.pi * rotate
        cos, sin = torch.cos(angle), torch.sin(angle)
        zero = torch.zeros_like(cos)
        theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        images = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        labels = F.grid_sample(labels, grid, mode="nearest", align_corners=False)
        # corners rotated in from outside the crop carry no label: zero weight
        weights = F.grid_sample(weights, grid, mode="nearest", padding_mode="zeros", align_corners=False)

    noisy = _per_sample(n, config.noise_probability, generator, device).view(n, 1, 1, 1)
    noise = torch.randn(images.shape, generator=generator, device=device) * config.noise_std
    images = images + noise * noisy

    blurred = _per_sample(n, config.blur_probability, generator, device).view(n, 1, 1, 1)
    if blurred.any():
        channels = images.shape[1]
        kernel = torch.tensor([1.0, 2.0, 1.0], device=device)
        kernel = (kernel[:, None] * kernel[None, :] / 16).expand(channels, 1, 3, 3)
        smooth = F.conv2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), kernel, groups=channels)
        images = torch.where(blurred, smooth, images)

    return images * scale, labels, weights
