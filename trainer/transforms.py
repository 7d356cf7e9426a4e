"""Image preprocessing without torchvision (it stays optional): CLIP's random resized crop for training (PIL
decode, torch's uint8 resize), resize + center crop for evaluation, both normalised with CLIP's mean and std.

The training crop draws from an explicit ``random.Random`` so the data loader can make every augmentation a
function of (seed, epoch, position) — that is what lets a resumed run see exactly the same pixels. The PIL-only
training crop the loader's is checked against lives in ``tests/trainer/conftest.py``.
"""

from __future__ import annotations

import math
import random

import numpy as np
import torch
from PIL import Image

# OpenAI CLIP's normalisation constants (computed on its training set).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_MEAN = np.asarray(CLIP_MEAN, dtype=np.float32) * 255.0
_STD = np.asarray(CLIP_STD, dtype=np.float32) * 255.0


def to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> normalised (3, H, W) float32 tensor."""
    arr = np.asarray(image.convert("RGB"), dtype=np.float32)  # (H, W, 3), 0..255
    return torch.from_numpy(((arr - _MEAN) / _STD).transpose(2, 0, 1).copy())


def normalize_uint8(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) uint8 on any device -> normalised float32, the same values as ``to_tensor``."""
    mean = torch.tensor(_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(_STD, device=images.device).view(1, 3, 1, 1)
    return (images.float() - mean) / std


def random_resized_crop_box(width: int, height: int, rng: random.Random, scale: tuple[float, float] = (0.9, 1.0),
                            ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """A crop box (left, top, right, bottom) covering ``scale`` of the area with aspect in ``ratio``
    (torchvision's RandomResizedCrop.get_params, with a seeded generator)."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            left = rng.randint(0, width - w)
            top = rng.randint(0, height - h)
            return left, top, left + w, top + h
    # Fallback: the largest centred crop with an aspect inside the range.
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        h, w = height, round(height * ratio[1])
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def random_resized_crop_uint8(image: Image.Image, size: int, rng: random.Random,
                              scale: tuple[float, float] = (0.9, 1.0)) -> torch.Tensor:
    """The training crop for the loader: PIL image (any mode) -> (size, size, 3) uint8, channels last (HWC).

    The box is ``random_resized_crop_box``'s (same draws from ``rng`` as the PIL reference crop in
    ``tests/trainer/conftest.py``), resized with an antialiased bicubic filter in uint8 by torch's vectorised
    kernel (about 4x PIL's resize; the pixels differ from PIL's by 0.02 on average). ``size`` in px.
    """
    if image.mode != "RGB":
        image = image.convert("RGB")
    left, top, right, bottom = random_resized_crop_box(image.width, image.height, rng, scale)
    hwc = torch.from_numpy(np.array(image))  # (H, W, 3)
    crop = hwc[top:bottom, left:right].permute(2, 0, 1).unsqueeze(0)  # (1, 3, h, w), channels-last strides
    crop = crop.contiguous(memory_format=torch.channels_last)  # the layout the uint8 AVX kernel takes
    out = torch.nn.functional.interpolate(crop, size=(size, size), mode="bicubic", antialias=True,
                                          align_corners=False)
    return out[0].permute(1, 2, 0)  # (S, S, 3)


class EvalTransform:
    """PIL.Image (any mode) -> (3, S, S) normalised float32, S = ``image_size`` px: the shorter side resized to S
    (bicubic), then the centre crop (CLIP's and open_clip's evaluation preprocessing)."""

    def __init__(self, image_size: int):
        self.image_size = image_size

    def __call__(self, image: Image.Image) -> torch.Tensor:
        image = image.convert("RGB")
        size = self.image_size
        w, h = image.size
        scale = size / min(w, h)
        new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
        image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
        left, top = (new_w - size) // 2, (new_h - size) // 2
        return to_tensor(image.crop((left, top, left + size, top + size)))


def eval_transform(image_size: int) -> EvalTransform:
    """PIL.Image (any mode) -> (3, image_size, image_size): shorter side resized, centre crop."""
    return EvalTransform(image_size)
