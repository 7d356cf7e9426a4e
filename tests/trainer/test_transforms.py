"""Transforms without torchvision: the seeded random resized crop, the eval centre crop, CLIP's normalisation,
and the loader's uint8 crop against the PIL reference."""

from __future__ import annotations

import io
import random

import numpy as np
import torch
from PIL import Image

from tests.trainer.conftest import TrainTransform, jpeg_bytes, to_uint8_tensor
from trainer.transforms import CLIP_MEAN, CLIP_STD, eval_transform, normalize_uint8, random_resized_crop_uint8

torch.set_num_threads(1)


def test_transforms_are_seeded_and_normalised():
    image = Image.new("RGB", (100, 90), (128, 128, 128))
    image.paste((255, 0, 0), (0, 0, 4, 90))
    crop = TrainTransform(32)
    a, b = crop(image, random.Random(1)), crop(image, random.Random(1))
    assert a.shape == (3, 32, 32) and a.dtype == torch.float32 and torch.equal(a, b)
    assert not torch.equal(a, crop(image, random.Random(2)))
    centre = eval_transform(32)(image.convert("L"))  # any mode in, RGB out
    assert centre.shape == (3, 32, 32)
    # The loader's uint8 path normalises to exactly the same values.
    cropped = crop.crop(image, random.Random(1))
    assert torch.equal(normalize_uint8(to_uint8_tensor(cropped)[None])[0], a)
    # The red band on the left is cut off by the centre crop; the rest is mid-grey, normalised with CLIP's stats.
    expected = torch.tensor([(128 / 255 - m) / s for m, s in zip(CLIP_MEAN, CLIP_STD, strict=True)])
    torch.testing.assert_close(centre.mean(dim=(1, 2)), expected, atol=1e-3, rtol=0)


def test_the_loaders_uint8_crop_is_the_pil_crop():
    """Same seeded box as TrainTransform.crop; torch's antialiased bicubic in uint8 instead of PIL's resize."""
    image = Image.open(io.BytesIO(jpeg_bytes(5, px=256)))
    image.load()
    for seed in range(5):
        ours = random_resized_crop_uint8(image, 224, random.Random(seed))
        pil = np.asarray(TrainTransform(224).crop(image, random.Random(seed)))
        assert ours.shape == (224, 224, 3) and ours.dtype == torch.uint8
        assert np.abs(ours.numpy().astype(int) - pil.astype(int)).mean() < 0.5
    grey = random_resized_crop_uint8(image.convert("L"), 32, random.Random(0))  # any mode in, RGB out
    assert grey.shape == (32, 32, 3)
