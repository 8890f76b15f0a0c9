"""Training data: the image / label pairs read into memory, split into training and validation
areas, and served as normalised (and, for training, augmented) batches of crops on the device."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import InputError
from ..io.rasters import LABEL_IGNORE
from ..net.modelfile import LoadedModel
from ..net.normalization import (
    fixed_value_scale,
    normalize,
    pooled_in_value_scale,
    pooled_statistics,
    relative_contrast_floor,
    with_contrast_floor,
)
from ..progress import Reporter
from .augment import augment
from .distributed import Ranks
from .recipe import TrainConfig
from .sampling import (
    Crop,
    CropSampler,
    Scene,
    default_bands,
    evenly_spread,
    gather,
    load_scene,
    validation_block_px,
    validation_blocks,
    validation_crops,
)

PER_IMAGE_MIN_STD_FRACTION = 0.5  # no image is stretched to more than twice the training images' contrast


class TrainingData:
    """What one training run reads: its bands, scenes, validation split and input normalisation."""

    def __init__(self, config: TrainConfig, device: torch.device, ranks: Ranks, init: LoadedModel | None) -> None:
        self.config = config
        self.device = device
        self.ranks = ranks
        self.init = init  # the model being fine-tuned: its bands and input scaling are kept
        self.bands: list[int] = []
        self.normalization: dict = {}  # chosen from the scenes' statistics when they are read

    def load_scenes(self, scratch_dir: Path, reporter: Reporter, check_cancel: Callable[[], None]) -> list[Scene]:
        bands = self.config.bands or default_bands(self.config.images[0])
        if self.init is not None and len(bands) != len(self.init.info.bands):
            raise InputError(
                f"The model to fine-tune, '{self.config.init_model}', reads {len(self.init.info.bands)} "
                f"band(s) but the images give {len(bands)}: choose {len(self.init.info.bands)} bands "
                "(BANDS) or train a new model."
            )
        self.bands = bands
        scenes = []
        for index, (image, label) in enumerate(zip(self.config.images, self.config.labels)):
            reporter.report(0.0, f"Reading image {index + 1} of {len(self.config.images)}: {Path(image).name}")
            check_cancel()
            scenes.append(
                load_scene(image, label, self.config.building_values, bands, self.config.tile_size_px, scratch_dir)
            )
        self.normalization = self._input_normalization(scenes)
        return scenes

    def split(self, scenes: list[Scene], rng: np.random.Generator) -> tuple[list[np.ndarray], list[Crop]]:
        """Per scene, the areas held out for validation (hidden from training), and the validation
        crops (a fixed, bounded set)."""
        crop_px = self.config.tile_size_px
        if self.config.validation == "random":
            count = max(1, round(self.config.patches_per_epoch * self.config.validation_fraction))
            usable = [scene.label != LABEL_IGNORE for scene in scenes]
            crops = self.ranks.from_main(CropSampler(scenes, crop_px, usable, rng).draw(count))  # one set for all
            return [np.zeros_like(scene.label, dtype=bool) for scene in scenes], crops
        validation_areas, crops = [], []
        for index, scene in enumerate(scenes):
            blocks = validation_blocks(scene, validation_block_px(scene, crop_px), offset=index)
            validation_areas.append(blocks)
            crops.extend(validation_crops(index, scene, blocks, crop_px))
        if not crops:
            raise InputError(
                "The images are too small to hold out a validation area: give larger images or more of them."
            )
        return validation_areas, evenly_spread(crops, self.config.max_validation_crops)

    def _input_normalization(self, scenes: list[Scene]) -> dict:
        """How raw values become network inputs, as stored in the model file (see normalization.py)."""
        c, bands = self.config, len(self.bands)
        if self.init is not None:  # fine-tuning keeps the input scaling the weights were trained for
            settings = dict(self.init.info.normalization)
            scale = fixed_value_scale(settings, self.init.info.value_scales)
            if settings.get("mode") == "fixed" and scale:  # stated with its numbers, as new files have it
                settings["value_scale"] = scale
            return settings
        # fixed numbers are in the first image's value scale (255 for 8-bit imagery), each image's own
        # scale applied to them (``normalization_of``): imagery of several bit depths trains as one
        scale = scenes[0].value_scale
        if c.normalization == "fixed":
            return {"mode": "fixed", "mean": [0.0] * bands, "std": [scale] * bands, "value_scale": scale}
        if c.normalization == "dataset":
            mean, std = pooled_in_value_scale([scene.statistics for scene in scenes], scale)
            return {"mode": "fixed", "mean": mean, "std": std, "value_scale": scale, "source": "training images"}
        # per_image: pooled numbers for the record (and exports); the floor applies
        mean, std = pooled_statistics([scene.statistics for scene in scenes])
        return {
            "mode": "per_image",
            "mean": mean,
            "std": std,
            "min_relative_std": relative_contrast_floor(
                [scene.statistics for scene in scenes], PER_IMAGE_MIN_STD_FRACTION
            ),
        }

    def batch_tensors(
        self,
        scenes: list[Scene],
        crops: Sequence[Crop],
        blanked: list[np.ndarray] | None,
        augmented: bool,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images, labels, scene_ids = gather(scenes, crops, self.config.tile_size_px, blanked)
        device = self.device
        x = torch.from_numpy(images).to(device, non_blocking=True)
        label = torch.from_numpy(labels).to(device).unsqueeze(1)
        weight = (label != LABEL_IGNORE).float()
        target = (label == 1).float()
        if augmented:
            scale = torch.tensor([scenes[i].value_scale for i in scene_ids], dtype=torch.float32, device=device)
            x, target, weight = augment(x, target, weight, scale, self.config.augmentation, generator)
        x = normalize(x, *self.normalization_of(scenes, scene_ids))
        return x.contiguous(memory_format=torch.channels_last), target, weight

    def normalization_of(self, scenes: list[Scene], scene_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.normalization["mode"] == "per_image":
            return (
                np.array([scenes[i].mean for i in scene_ids]),
                np.array([with_contrast_floor(scenes[i].statistics, self.normalization) for i in scene_ids]),
            )
        mean, std = np.asarray(self.normalization["mean"]), np.asarray(self.normalization["std"])
        scale = fixed_value_scale(self.normalization)
        if scale is None:  # a start model's numbers from before value scales were stored: as they are
            return mean, std
        ratios = np.array([[scenes[i].value_scale / scale] for i in scene_ids])  # (N, 1): each crop's image
        return mean * ratios, std * ratios
