"""The trainer's fixtures and data builders: small real-photo WebDataset shards in stage 4's format (KEY.jpg,
KEY.txt, KEY.json + sizes.json) for the tests and the benchmark (photos from ``tests.conftest.photo``, varied by
random crops, flips and JPEG quality, a few classes with distinct captions); numbered shards of random pixels
with their tokenizer; one tiny checkpoint; the PIL reference of the loader's crop."""

from __future__ import annotations

import hashlib
import io
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image, ImageOps

from tests.conftest import photo
from trainer.checkpoint import save_checkpoint
from trainer.config import MODEL_CONFIGS
from trainer.eval.zeroshot import load_templates
from trainer.model import CLIP
from trainer.tokenizer import Tokenizer
from trainer.transforms import random_resized_crop_box, to_tensor

# class name -> (photo name for tests.conftest.photo, caption templates)
CLASSES: dict[str, tuple[str, tuple[str, ...]]] = {
    "astronaut": ("astronaut", ("an astronaut in a white space suit", "portrait of a smiling astronaut")),
    "coffee": ("coffee", ("a cup of coffee on a saucer", "hot coffee in a red cup")),
    "cat": ("chelsea", ("a ginger tabby cat", "photo of an orange cat looking away")),
    "rocket": ("rocket", ("a rocket on the launch pad", "a space rocket ready for launch")),
    "galaxy": ("hubble_deep_field", ("deep field image of distant galaxies", "stars and galaxies in space")),
    "retina": ("retina", ("a medical scan of a human retina", "fundus photograph of an eye")),
    "temple": ("china.jpg", ("an old chinese temple roof", "a pagoda among green trees")),
    "flower": ("flower.jpg", ("a pink flower in bloom", "close-up of a dahlia flower")),
}


def variant(picture: Image.Image, rng: random.Random, size: int) -> bytes:
    """A random crop of 35-100% of the shorter side, maybe mirrored, resized to ``size``, as JPEG bytes."""
    w, h = picture.size
    side = int(min(w, h) * rng.uniform(0.35, 1.0))
    left, top = rng.randint(0, w - side), rng.randint(0, h - side)
    image = picture.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.BICUBIC)
    if rng.random() < 0.5:
        image = ImageOps.mirror(image)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=rng.randint(70, 95))
    return out.getvalue()


def write_shards(out_dir: Path, per_class: int = 32, samples_per_shard: int = 64, image_px: int = 64,
                 seed: int = 0, classes: list[str] | None = None) -> dict[str, int]:
    """Write ``{shard:05d}.tar`` shards and ``sizes.json`` (stem -> count, as stage 4 writes it); returns it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    names = classes or list(CLASSES)
    samples = []
    for name in names:
        source, templates = CLASSES[name]
        picture = photo(source)
        for i in range(per_class):
            samples.append((name, rng.choice(templates), variant(picture, rng, image_px), i))
    rng.shuffle(samples)
    sizes: dict[str, int] = {}
    for shard_index, start in enumerate(range(0, len(samples), samples_per_shard)):
        shard_name = f"{shard_index:05d}.tar"
        with wds.TarWriter(str(out_dir / shard_name)) as sink:
            for offset, (name, caption, jpeg, i) in enumerate(samples[start:start + samples_per_shard]):
                key = f"{shard_index:05d}{offset:04d}"
                sink.write({"__key__": key, "jpg": jpeg, "txt": caption, "json": _sample_json(key, name, i, caption,
                                                                                              jpeg, image_px)})
        sizes[f"{shard_index:05d}"] = min(samples_per_shard, len(samples) - start)  # stage 4 names shards by stem
    (out_dir / "sizes.json").write_text(json.dumps(sizes, indent=1))
    return sizes


def _sample_json(key: str, name: str, i: int, caption: str, jpeg: bytes, px: int) -> dict:
    return {
        "key": key, "uid": hashlib.sha1(f"{name}/{i}".encode()).hexdigest(), "url": f"http://photos.test/{name}/{i}.jpg",
        "caption": caption, "queries": [name], "status": "success", "width": px, "height": px,
        "original_width": px, "original_height": px, "sha256": hashlib.sha256(jpeg).hexdigest(),
        "phash": f"{int(np.frombuffer(hashlib.md5(jpeg).digest()[:8], dtype='>u8')[0]):016x}",
    }


def write_class_folders(out_dir: Path, per_class: int = 8, image_px: int = 64, seed: int = 1,
                        classes: list[str] | None = None) -> list[str]:
    """Held-out ``DIR/<class name>/*.jpg`` (fresh crops, another seed) for zero-shot evaluation."""
    rng = random.Random(seed)
    names = classes or list(CLASSES)
    for name in names:
        folder = out_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        picture = photo(CLASSES[name][0])
        for i in range(per_class):
            (folder / f"{i:03d}.jpg").write_bytes(variant(picture, rng, image_px))
    return names


# ---- numbered shards: captions say which sample ('sample 17'), for the loader's and shards' tests ----

def jpeg_bytes(seed: int, px: int = 24) -> bytes:
    """A ``px`` square of seeded random pixels as JPEG bytes."""
    rng = np.random.default_rng(seed)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (px, px, 3), dtype=np.uint8)).save(out, format="JPEG")
    return out.getvalue()


def write_numbered(out: Path, shards: int, per_shard: int) -> list[str]:
    """Shards whose captions name each sample ('sample 17'), to check which samples an epoch saw."""
    out.mkdir(parents=True, exist_ok=True)
    captions, sizes = [], {}
    for s in range(shards):
        with wds.TarWriter(str(out / f"{s:05d}.tar")) as sink:
            for i in range(per_shard):
                n = s * per_shard + i
                sink.write({"__key__": f"{s:05d}{i:04d}", "jpg": jpeg_bytes(n), "txt": f"sample {n}"})
                captions.append(f"sample {n}")
        sizes[f"{s:05d}.tar"] = per_shard  # open_clip's convention; write_shards writes stage 4's stems
    (out / "sizes.json").write_text(json.dumps(sizes))
    return captions


def write_sized(out: Path, sizes: list[int], start: int = 0) -> None:
    """Numbered shards of the given sizes, with sizes.json."""
    out.mkdir(parents=True, exist_ok=True)
    n = start
    for s, size in enumerate(sizes):
        with wds.TarWriter(str(out / f"{s:05d}.tar")) as sink:
            for i in range(size):
                sink.write({"__key__": f"{s:05d}{i:04d}", "jpg": jpeg_bytes(n, 16), "txt": f"sample {n}"})
                n += 1
    (out / "sizes.json").write_text(json.dumps({f"{s:05d}": size for s, size in enumerate(sizes)}))


# ---- the reference the loader's crop is held to (never used by the trainer itself) ----

def to_uint8_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> (3, H, W) uint8 (the loader's layout before ``normalize_uint8``)."""
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1).copy())


class TrainTransform:
    """The training crop in PIL alone: ``random_resized_crop_box`` then PIL's bicubic resize to an ``image_size``
    square; the loader's ``random_resized_crop_uint8`` takes the same box and resizes in torch."""

    def __init__(self, image_size: int, scale: tuple[float, float] = (0.9, 1.0)):
        self.image_size = image_size
        self.scale = scale

    def crop(self, image: Image.Image, rng: random.Random | None = None) -> Image.Image:
        """The random resized crop alone: an RGB ``image_size`` square."""
        rng = rng or random.Random()
        image = image.convert("RGB")
        box = random_resized_crop_box(image.width, image.height, rng, self.scale)
        return image.resize((self.image_size, self.image_size), Image.Resampling.BICUBIC, box=box)

    def __call__(self, image: Image.Image, rng: random.Random | None = None) -> torch.Tensor:
        """PIL.Image (any mode) -> (3, image_size, image_size) float32, normalised with CLIP's mean and std."""
        return to_tensor(self.crop(image, rng))


# ---- fixtures ----

@pytest.fixture(scope="module")
def numbered(tmp_path_factory) -> tuple[Path, Tokenizer]:
    """4 shards of 16 samples captioned 'sample N' (sizes.json in open_clip's convention), and a BPE of them."""
    out = tmp_path_factory.mktemp("numbered")
    captions = write_numbered(out, shards=4, per_shard=16)
    return out, Tokenizer.train(captions * 5, vocab_size=300, context_length=8)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A randomly initialised ``tiny`` CLIP checkpoint whose tokenizer knows the test captions and prompts."""
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint.pt"
    captions = [c for _, templates in CLASSES.values() for c in templates]
    prompts = [t.format(name) for name in CLASSES for t in load_templates("imagenet")]
    tokenizer = Tokenizer.train(captions * 20 + prompts, vocab_size=400, context_length=32)
    config = MODEL_CONFIGS["tiny"].with_vocab_size(tokenizer.vocab_size)
    torch.manual_seed(0)
    save_checkpoint(path, model=CLIP(config), model_config=config, tokenizer=tokenizer, step=0)
    return path
