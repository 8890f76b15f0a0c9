"""Batch augmentation on tensors (on the GPU when training runs there).

The paper's four: gamma change, random rotation, added noise, smoothing. The default recipe adds
flips and 90-degree rotations; colour jitter (a gain and an offset per band and crop) and changes of
a whole crop's brightness, contrast (about its mean) and saturation (about its grey), which stand in
for other cameras and light: the default normalisation (``dataset``) applies the training images'
statistics to every image, so the network must meet those differences in training. The paper
preset has none of ours (``AugmentConfig.paper``).

Two changes of scale are options, off by default: ``zoom`` resamples the crop so its buildings look
larger or smaller (another ground resolution at the same pixel size), and ``resolution loss``
shrinks the crop by up to a factor and enlarges it back, what coarse imagery resampled up to the
model's resolution looks like. On the leave-one-scene-out benchmark they scored as well as without
them, but three of four such models agreed less with their own Deepness exports (README).

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
    colour_jitter: float = 0.15  # ours: per-band gain in 1 +- this, offset in +- half of it (0..1 units)
    brightness: float = 0.15  # ours: an offset of the whole crop in +- this (0..1 units)
    contrast: float = 0.4  # ours: the crop's spread about its mean times a factor in [1 / (1 + this), 1 + this]
    saturation: float = 0.3  # ours: colour about the crop's grey times a factor in [1 - this, 1 + this] (3+ bands)
    # off by default: scale-augmented models agreed less with their Deepness exports (README)
    zoom_range: tuple[float, float] = (1.0, 1.0)  # ground covered by the crop, relative, drawn log-uniform
    resolution_loss_probability: float = 0.0
    resolution_loss_range: tuple[float, float] = (1.0, 4.0)  # shrunk by a factor drawn log-uniform, enlarged back

    @classmethod
    def paper(cls) -> AugmentConfig:
        """The paper's four alone: none of ours."""
        return cls(
            flips_and_rot90=False,
            colour_jitter=0.0,
            brightness=0.0,
            contrast=0.0,
            saturation=0.0,
            zoom_range=(1.0, 1.0),
            resolution_loss_probability=0.0,
        )


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

    if config.brightness or config.contrast or config.saturation:
        images = _photometric(images, config, generator)

    if config.flips_and_rot90:
        flip = _per_sample(n, 0.5, generator, device).view(n, 1, 1, 1)
        images, labels, weights = (torch.where(flip, t.flip(-1), t) for t in (images, labels, weights))
        quarter_turns = int(torch.randint(0, 4, (1,), generator=generator, device=device))
        images, labels, weights = (torch.rot90(t, quarter_turns, dims=(-2, -1)) for t in (images, labels, weights))

    rotate = _per_sample(n, config.rotation_probability, generator, device)
    zooms = config.zoom_range != (1.0, 1.0)
    if rotate.any() or zooms:
        angle = torch.rand(n, generator=generator, device=device) * 2 * math.pi * rotate
        cos, sin = torch.cos(angle), torch.sin(angle)
        if zooms:  # > 1: more ground in the crop, smaller buildings
            zoom = _log_uniform(n, *config.zoom_range, generator, device)
            cos, sin = cos * zoom, sin * zoom
        zero = torch.zeros_like(cos)
        theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        images = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        labels = F.grid_sample(labels, grid, mode="nearest", align_corners=False)
        # corners rotated or zoomed in from outside the crop carry no label: zero weight
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

    if config.resolution_loss_probability > 0:
        images = _resolution_loss(images, config, generator)

    return images * scale, labels, weights


def _log_uniform(n: int, low: float, high: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """(n,) factors drawn so that halving and doubling are as likely (uniform in log scale)."""
    fraction = torch.rand(n, generator=generator, device=device)
    return torch.exp(math.log(low) + (math.log(high) - math.log(low)) * fraction)


def _photometric(images: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Brightness, contrast and saturation of each crop changed at random (values in 0..1 units)."""
    n, bands, device = images.shape[0], images.shape[1], images.device
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    if config.contrast:
        factor = _log_uniform(n, 1 / (1 + config.contrast), 1 + config.contrast, generator, device)
        images = mean + (images - mean) * factor.view(n, 1, 1, 1)
    if config.saturation and bands >= 3:
        grey = images.mean(dim=1, keepdim=True)
        factor = 1 + config.saturation * (2 * torch.rand(n, 1, 1, 1, generator=generator, device=device) - 1)
        images = grey + (images - grey) * factor
    if config.brightness:
        images = images + config.brightness * (2 * torch.rand(n, 1, 1, 1, generator=generator, device=device) - 1)
    return images


def _resolution_loss(images: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Some crops shrunk by a random factor (averaging pixels, as a coarser sensor does) and enlarged back
    bilinearly, as Predict resamples coarse imagery up to the model's resolution. One factor per batch:
    the shrunk crops share a size."""
    n, device = images.shape[0], images.device
    chosen = _per_sample(n, config.resolution_loss_probability, generator, device).view(n, 1, 1, 1)
    factor = float(_log_uniform(1, *config.resolution_loss_range, generator, device))
    size = images.shape[-2:]
    small = [max(1, round(side / factor)) for side in size]
    if not chosen.any() or small == list(size):
        return images
    coarse = F.interpolate(F.interpolate(images, size=small, mode="area"), size=size, mode="bilinear")
    return torch.where(chosen, coarse, images)
