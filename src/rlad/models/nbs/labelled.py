"""What NBS and its supervised control train on, prepared once per fit: the context encoder fitted on
the normal images, the augmented labelled images with their soft masks and context, and a fixed
subset of unlabelled normal images as all-normal examples.

Both methods draw the same augmentations and the same normal subset for a seed, so they differ only
in the loss profile.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from rlad.errors import DataError
from rlad.models.base import FitData
from rlad.models.nbs.config import NBSConfig
from rlad.models.nbs.context import ContextEncoder
from rlad.models.nbs.profiles import resize

# A predictor example's key: ("lab", index into the augmented labelled images) or ("neg", index into
# the normal subset); replay buffers store keys so the context is looked up, not copied.
ExampleKey = tuple[str, int]


def require_labels(data: FitData, method: str) -> None:
    if len(data.labeled_images) == 0 or not np.asarray(data.labeled_masks).any():
        raise DataError(
            f"{method} is semi-supervised and needs labelled defective images with non-empty masks: "
            "run with --labeled-per-type N (N >= 1) on a dataset whose test/ has defect folders with masks"
        )
    if len(data.normal) == 0:
        raise DataError(f"{method} needs normal training images (train/good is empty)")


def augment_labeled(images: np.ndarray, masks: np.ndarray, copies: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Each labelled image and mask, then copies-1 jointly warped versions (flips, +-30 deg rotation,
    10% shift, 20 deg shear): uint8 (M * copies, 3, S, S) and (M * copies, S, S)."""
    from rlad.data.transforms import augment_pair  # imports scipy.ndimage (0.4 s), only needed here

    rng = np.random.default_rng([seed, 7919])
    out_images, out_masks = [], []
    for image, mask in zip(images, masks):
        out_images.append(image)
        out_masks.append(mask)
        for _ in range(copies - 1):
            warped, warped_mask = augment_pair(image, mask, rng, flip=True, max_rotation=30, max_shift=0.1, max_shear=20)
            out_images.append(warped)
            out_masks.append(warped_mask)
    return np.stack(out_images), np.stack(out_masks)


def to_float_at(images_uint8: np.ndarray, size: int, chunk: int = 64) -> torch.Tensor:
    """uint8 (N, C, S, S) -> float (N, C, size, size) in [0, 1], converted in chunks (bounded memory)."""
    parts = [resize(FitData.to_tensor(images_uint8[i : i + chunk]), size) for i in range(0, len(images_uint8), chunk)]
    if not parts:
        return torch.zeros(0, images_uint8.shape[1] if images_uint8.ndim == 4 else 1, size, size)
    return torch.cat(parts)


def masks_at(masks_uint8: np.ndarray, size: int) -> torch.Tensor:
    """Binary masks (N, S, S) -> soft masks (N, 1, size, size): the share of defect pixels per cell."""
    return resize(torch.from_numpy(np.ascontiguousarray(masks_uint8 > 0)).float()[:, None], size)


def fit_context(cfg: NBSConfig, data: FitData, seed: int) -> tuple[ContextEncoder, torch.Tensor]:
    """The context encoder fitted on the normal images, and the context of the normal subset
    (`draw_negative_ids`), taken from the same backbone pass."""
    encoder = ContextEncoder(cfg.context, cfg.predictor_grid)
    negative_context = encoder.fit(data.normal, seed, keep_ids=draw_negative_ids(cfg, len(data.normal), seed))
    return encoder, negative_context


def draw_negative_ids(cfg: NBSConfig, n_normal: int, seed: int) -> list[int]:
    """The unlabelled normal images used as all-normal predictor examples (a seeded subset)."""
    rng = np.random.default_rng([seed, 31337])
    return sorted(rng.choice(n_normal, size=min(cfg.predictor_normals, n_normal), replace=False).tolist())


@dataclass
class LabelledSet:
    """images: augmented labelled images at profile size (float; empty without profiles); masks: their soft masks on the
    predictor grid; context: their context maps (float16); negative_* the same for a fixed subset of
    unlabelled normal images (all-normal examples); reward_ids: un-augmented originals spread over
    the labelled set (R_pred's fixed yardstick)."""

    images: torch.Tensor
    masks: torch.Tensor
    context: torch.Tensor
    negative_ids: list[int]
    negative_images: torch.Tensor
    negative_context: torch.Tensor
    reward_ids: list[int]

    def keys(self) -> list[ExampleKey]:
        """Every example: the augmented labelled images, then the normal subset."""
        return [("lab", i) for i in range(len(self.context))] + [("neg", i) for i in range(len(self.negative_context))]

    def example(self, key: ExampleKey, profile: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(predictor input, soft mask) of one example: its profile (NBS; None for the supervised
        control) followed by its context channels."""
        kind, index = key
        if kind == "lab":
            context, mask = self.context[index], self.masks[index]
        else:
            context, mask = self.negative_context[index], torch.zeros_like(self.masks[0])
        return (context if profile is None else torch.cat([profile, context])), mask


def prepare_labelled(
    cfg: NBSConfig, data: FitData, encoder: ContextEncoder, negative_context: torch.Tensor, pool: torch.Tensor | None, seed: int
) -> LabelledSet:
    """The LabelledSet of `data`; `negative_context` is the context of the normal subset
    (`fit_context`); `pool` holds the normal images at profile size (the sampler's), None for a
    method without loss profiles (no image is then resized to the profile size)."""
    lab_images_u8, lab_masks_u8 = augment_labeled(data.labeled_images, data.labeled_masks, cfg.augment_copies, seed)
    n_originals = len(data.labeled_images)
    spread = np.linspace(0, n_originals - 1, min(cfg.reward_images, n_originals)).round().astype(int)
    reward_ids = sorted({int(i) * cfg.augment_copies for i in spread}) if cfg.reward_images else []
    negative_ids = draw_negative_ids(cfg, len(data.normal), seed)
    profiles = pool is not None
    return LabelledSet(
        images=to_float_at(lab_images_u8, cfg.profile_size) if profiles else torch.zeros(0),
        masks=masks_at(lab_masks_u8, cfg.predictor_grid),
        context=encoder.encode_uint8(lab_images_u8),
        negative_ids=negative_ids,
        negative_images=pool[negative_ids] if profiles else torch.zeros(0),
        negative_context=negative_context,
        reward_ids=reward_ids,
    )
