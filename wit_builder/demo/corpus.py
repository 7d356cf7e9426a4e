"""The demo's candidate pool and image corpus, generated deterministically from images that ship offline.

Every visual class is one query word: a WordNet noun with tagged-sense counts, so that stage 1 ranks it among
the WordNet queries it keeps (checked against the enwiki sample's queries.parquet; ``wit demo`` checks again):

- photo classes: many variants (crops, flips, colour and scale changes) of one real photo from
  scikit-image, scikit-learn or matplotlib's sample data, where that package is installed;
- drawn classes: shapes and patterns drawn with PIL from a seeded generator.

Alt texts name the class inside varied sentences. Around them the pool holds what a real crawl holds:
distractor texts that match no query, the same (url, caption) pair twice, the same bytes under several URLs,
a re-encoded near-duplicate, rows that stage 2 filters (empty caption, ``data:`` and ``ftp://`` URLs, an
over-long URL), and hostile URLs for stage 3 (a 404, the cloud-metadata address and a redirect to it, an HTML
page served as ``image/jpeg``, a truncated JPEG, a path robots.txt disallows, a decompression bomb).

The held-out zero-shot images (``heldout/<class>/*.jpg``) come from their own random stream and are never
served, so they cannot enter the training shards; :func:`generate` asserts their bytes differ from every
served file. The same config gives byte-identical files on every run.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

# Where each file of the corpus goes, relative to the corpus folder.
WWW = "www"                  # served over HTTP
HELDOUT = "heldout"          # zero-shot images, DIR/<class>/*.jpg; never served
POOL = "pool.parquet"        # the candidate pool: url, caption, kind
REDIRECTS = "redirects.json"  # served path -> Location, read by the demo server
MANIFEST = "manifest.json"   # classes, counts, sha256 of every file

ROBOTS_TXT = "User-agent: *\nDisallow: /private/\n"
# Never reachable from a crawler with default safety settings: stage 3 blocks link-local addresses.
METADATA_URL = "http://169.254.169.254/latest/meta-data/iam/security-credentials/demo.jpg"

# Pool row kinds, for the demo's "what happened to each kind" table.
KINDS = (
    "train", "flood", "duplicate_pair", "mirror", "near_duplicate", "distractor", "filtered",
    "http_404", "link_local", "redirect_to_link_local", "html_as_jpeg", "truncated_jpeg", "robots_disallowed",
    "decompression_bomb",
)
LANGUAGE_KINDS = ("train_ja", "wiki_caption")  # --languages en,ja only (add_japanese)

_TEMPLATES = (
    "a photo of {a} {c}",
    "the {c} up close",
    "{C} seen from the side",
    "my favourite {c} picture",
    "{a} {c} in soft light",
    "old {c} photo from the family album",
    "{c}, photographed in 2014",
    "close-up of {a} {c}",
    "a blurry picture of the {c}",
    "{C} (cropped)",
    "the {c} at noon",
    "{a} {c} on a plain background",
    "picture of {a} {c} for the school project",
    "{c} - high resolution image",
    "here is {a} {c} I saw today",
    "wallpaper: {c}",
)
# Pseudo-words: in no dictionary and not in the enwiki sample, so a caption made of them matches no query.
_SYLLABLES = ("zub", "rek", "fin", "tal", "osw", "api", "qor", "vim", "dax", "yel", "plo", "nug", "xar", "bez",
              "kiv", "uth")


@dataclass(frozen=True)
class CorpusConfig:
    seed: int = 0
    train_per_class: int = 60
    heldout_per_class: int = 12
    flood_class: str = "coffee"   # gets ``flood_extra`` more pairs captioned with the bare word: stage 2's cap bites
    flood_extra: int = 40
    distractors: int = 40
    mirrors: int = 6              # training images also served under a second URL
    near_duplicates: int = 6      # training images served again, re-encoded and slightly resized
    duplicate_pairs: int = 6      # (url, caption) rows listed twice
    min_side: int = 96
    max_side: int = 224
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        if self.train_per_class < 1 or self.heldout_per_class < 1:
            raise ValueError("train_per_class and heldout_per_class must be at least 1")
        if not 16 <= self.min_side <= self.max_side:
            raise ValueError(f"need 16 <= min_side <= max_side, got {self.min_side}, {self.max_side}")
        if max(self.mirrors, self.near_duplicates, self.duplicate_pairs) > self.train_per_class:
            raise ValueError("mirrors, near_duplicates and duplicate_pairs cannot exceed train_per_class")


@dataclass(frozen=True)
class PoolRow:
    path: str       # "/img/cat/cat-000.jpg", or an absolute URL that the server does not serve
    caption: str
    kind: str       # one of KINDS


@dataclass
class Corpus:
    classes: list[str]
    files: dict[str, bytes]                      # www-relative path -> bytes
    heldout: dict[str, list[bytes]]              # class -> zero-shot images
    rows: list[PoolRow]
    redirects: dict[str, str] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # class -> where its images come from


# ---- sources of the visual classes ----

def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        return getattr(skimage.data, name)()
    return load


def _motorcycle() -> np.ndarray:
    import skimage.data

    return skimage.data.stereo_motorcycle()[0]


def _sklearn(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        # The file itself, found without importing scikit-learn (seconds of import for two JPEGs).
        spec = importlib.util.find_spec("sklearn")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("scikit-learn is not installed")
        path = Path(spec.submodule_search_locations[0]) / "datasets" / "images" / name
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    return load


def _grace_hopper() -> np.ndarray:
    import matplotlib.cbook

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=True) as f:  # type: ignore[union-attr]
        # matplotlib's stub types the result as ndarray | IO; a jpg with asfileobj=True is always a file object
        return np.asarray(Image.open(f).convert("RGB"))


# class word -> (source label, loader). Every word is a WordNet noun.
PHOTO_CLASSES: dict[str, tuple[str, Callable[[], np.ndarray]]] = {
    "cat": ("skimage.data.chelsea", _skimage("chelsea")),
    "astronaut": ("skimage.data.astronaut", _skimage("astronaut")),
    "coffee": ("skimage.data.coffee", _skimage("coffee")),
    "rocket": ("skimage.data.rocket", _skimage("rocket")),
    "coin": ("skimage.data.coins", _skimage("coins")),
    "brick": ("skimage.data.brick", _skimage("brick")),
    "galaxy": ("skimage.data.hubble_deep_field", _skimage("hubble_deep_field")),
    "vehicle": ("skimage.data.stereo_motorcycle", _motorcycle),  # "motorcycle" has no sense count
    "temple": ("sklearn china.jpg", _sklearn("china.jpg")),
    "flower": ("sklearn flower.jpg", _sklearn("flower.jpg")),
    "portrait": ("matplotlib grace_hopper.jpg", _grace_hopper),
}
DRAWN_CLASSES = ("circle", "triangle", "pattern")  # "pattern": a rotated checkerboard


def available_photos() -> dict[str, tuple[str, Image.Image]]:
    """The photo classes whose source package is installed: class -> (source, RGB image)."""
    found = {}
    for name, (source, load) in PHOTO_CLASSES.items():
        try:
            array = load()
        except (ImportError, OSError, ValueError):  # package missing or its data file absent: skip the class
            continue
        image = Image.fromarray(np.asarray(array).astype(np.uint8))
        found[name] = (source, image.convert("RGB"))
    return found


# ---- image variants ----

def _photo_variant(src: Image.Image, rng: random.Random, cfg: CorpusConfig) -> Image.Image:
    """A random crop (35-90% of each side), maybe mirrored, colour-jittered and rescaled."""
    w, h = src.size
    scale, aspect = rng.uniform(0.35, 0.9), rng.uniform(0.75, 1.33)
    cw = min(w, max(16, round(w * scale * math.sqrt(aspect))))
    ch = min(h, max(16, round(h * scale / math.sqrt(aspect))))
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    img = src.crop((x, y, x + cw, y + ch))
    if rng.random() < 0.5:
        img = ImageOps.mirror(img)
    for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        img = enhance(img).enhance(rng.uniform(0.75, 1.25))
    return _rescale(img, rng.randint(cfg.min_side, cfg.max_side))


def _rescale(img: Image.Image, longest: int) -> Image.Image:
    w, h = img.size
    ratio = longest / max(w, h)
    return img.resize((max(1, round(w * ratio)), max(1, round(h * ratio))), Image.Resampling.BICUBIC)


def _colour(rng: random.Random) -> tuple[int, int, int]:
    return rng.randint(0, 255), rng.randint(0, 255), rng.randint(0, 255)


def _distinct_colours(rng: random.Random) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """A background and a foreground colour far enough apart that the shape stays visible."""
    while True:
        bg, fg = _colour(rng), _colour(rng)
        if sum(abs(a - b) for a, b in zip(bg, fg, strict=True)) > 200:
            return bg, fg


def _drawn(kind: str, rng: random.Random, cfg: CorpusConfig) -> Image.Image:
    side = rng.randint(cfg.min_side, cfg.max_side)
    w, h = side, max(cfg.min_side, round(side * rng.uniform(0.75, 1.0)))
    bg, fg = _distinct_colours(rng)
    img = Image.new("RGB", (w, h), bg)
    draw = ImageDraw.Draw(img)
    if kind == "pattern":
        cell = rng.randint(max(4, side // 16), max(5, side // 5))
        for row in range(0, h, cell):
            for col in range(0, w, cell):
                if (row // cell + col // cell) % 2:
                    draw.rectangle((col, row, col + cell - 1, row + cell - 1), fill=fg)
        return img.rotate(rng.uniform(-20, 20), resample=Image.Resampling.BICUBIC, fillcolor=bg)
    r = rng.uniform(0.25, 0.45) * min(w, h)
    cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
    if kind == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fg)
    elif kind == "triangle":
        turn = rng.uniform(0, 2 * math.pi)
        draw.polygon([(cx + r * math.cos(turn + k * 2 * math.pi / 3), cy + r * math.sin(turn + k * 2 * math.pi / 3))
                      for k in range(3)], fill=fg)
    else:
        raise ValueError(f"unknown drawn class {kind!r}")
    return img


def _noise(rng: random.Random, cfg: CorpusConfig) -> Image.Image:
    """A smooth random colour field: a distractor picture that belongs to no class."""
    coarse = np.array([[_colour(rng) for _ in range(4)] for _ in range(4)], dtype=np.uint8)
    return Image.fromarray(coarse).resize((cfg.min_side, cfg.min_side), Image.Resampling.BICUBIC)


def jpeg(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _bomb_png() -> bytes:
    """A 9,600 x 9,600 one-bit PNG (92 Mpx, over Pillow's 89 Mpx bomb limit) that weighs a few kB."""
    buf = io.BytesIO()
    Image.new("1", (9600, 9600)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


# ---- captions ----

def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def caption(word: str, rng: random.Random) -> str:
    return rng.choice(_TEMPLATES).format(a=_article(word), c=word, C=word.capitalize())


def distractor_text(rng: random.Random) -> str:
    words = ["".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3))) for _ in range(rng.randint(2, 4))]
    return " ".join(words).capitalize()


# ---- the corpus ----

def generate(cfg: CorpusConfig = CorpusConfig()) -> Corpus:
    """Build the whole corpus in memory. Pure: the same config and installed packages give the same bytes."""
    photos = available_photos()
    classes = sorted([*photos, *DRAWN_CLASSES])
    corpus = Corpus(classes=classes, files={}, heldout={}, rows=[])
    corpus.sources = {c: photos[c][0] if c in photos else "drawn with PIL" for c in classes}

    def make(cls: str, rng: random.Random) -> bytes:
        img = _photo_variant(photos[cls][1], rng, cfg) if cls in photos else _drawn(cls, rng, cfg)
        return jpeg(img, cfg.jpeg_quality)

    for cls in classes:
        # Separate streams per class and split: adding a class or changing one count leaves the rest unchanged.
        train_rng = random.Random(f"{cfg.seed}/train/{cls}")
        caption_rng = random.Random(f"{cfg.seed}/captions/{cls}")
        heldout_rng = random.Random(f"{cfg.seed}/heldout/{cls}")
        count = cfg.train_per_class + (cfg.flood_extra if cls == cfg.flood_class else 0)
        for i in range(count):
            path = f"img/{cls}/{cls}-{i:03d}.jpg"
            corpus.files[path] = make(cls, train_rng)
            flood = i >= cfg.train_per_class
            corpus.rows.append(PoolRow(f"/{path}", cls.capitalize() if flood else caption(cls, caption_rng),
                                       "flood" if flood else "train"))
        corpus.heldout[cls] = [make(cls, heldout_rng) for _ in range(cfg.heldout_per_class)]
    _add_duplicates(corpus, cfg)
    _add_distractors(corpus, cfg)
    _add_hostile(corpus, cfg)
    served = {hashlib.sha256(data).hexdigest() for data in corpus.files.values()}
    held = [hashlib.sha256(data).hexdigest() for images in corpus.heldout.values() for data in images]
    # The zero-shot test set must never be downloadable: not one held-out image may equal a served file.
    assert served.isdisjoint(held), "a held-out image equals a served file"
    assert len(set(held)) == len(held), "two held-out images are identical"
    return corpus


def _add_duplicates(corpus: Corpus, cfg: CorpusConfig) -> None:
    rng = random.Random(f"{cfg.seed}/duplicates")
    train = [r for r in corpus.rows if r.kind == "train"]
    for row in rng.sample(train, cfg.duplicate_pairs):
        corpus.rows.append(PoolRow(row.path, row.caption, "duplicate_pair"))  # same uid: stage 2 collapses it
    for i, row in enumerate(rng.sample(train, cfg.mirrors)):
        path = f"mirror/{i:03d}.jpg"   # same bytes, other URL and caption: finalize's exact dedup
        corpus.files[path] = corpus.files[row.path.lstrip("/")]
        word = row.path.split("/")[2]
        corpus.rows.append(PoolRow(f"/{path}", f"{_article(word).capitalize()} {word} (mirror copy)", "mirror"))
    # Photos only: a flat drawn shape's pHash moves too much under re-encoding to count as a near-duplicate.
    photos = [r for r in train if r.path.split("/")[2] not in DRAWN_CLASSES]
    for i, row in enumerate(rng.sample(photos, cfg.near_duplicates)):
        path = f"reupload/{i:03d}.jpg"  # re-encoded and 10% smaller: finalize's perceptual-hash dedup
        img = Image.open(io.BytesIO(corpus.files[row.path.lstrip("/")])).convert("RGB")
        corpus.files[path] = jpeg(_rescale(img, round(max(img.size) * 0.9)), 70)
        word = row.path.split("/")[2]
        corpus.rows.append(PoolRow(f"/{path}", f"reuploaded {word} image", "near_duplicate"))


def _add_distractors(corpus: Corpus, cfg: CorpusConfig) -> None:
    rng = random.Random(f"{cfg.seed}/distractors")
    for i in range(cfg.distractors):
        path = f"misc/{i:03d}.jpg"
        corpus.files[path] = jpeg(_noise(rng, cfg), cfg.jpeg_quality)
        corpus.rows.append(PoolRow(f"/{path}", distractor_text(rng), "distractor"))
    # Rows stage 2 filters before matching; each caption names a class so only the URL is at fault.
    word = corpus.classes[0]
    corpus.rows += [
        PoolRow("/img/empty-caption.jpg", "", "filtered"),
        PoolRow("data:image/png;base64,iVBORw0KGgo=", f"inline {word} icon", "filtered"),
        PoolRow(f"ftp://127.0.0.1/{word}.jpg", f"{word} on an ftp server", "filtered"),
        PoolRow("/img/" + "x" * 2100 + ".jpg", f"{word} with an absurdly long URL", "filtered"),
    ]


def _add_hostile(corpus: Corpus, cfg: CorpusConfig) -> None:
    """Rows whose captions match but whose URLs stage 3 must refuse or fail safely, each with its reason."""
    rng = random.Random(f"{cfg.seed}/hostile")
    word = rng.choice(corpus.classes)
    good = corpus.files[f"img/{word}/{word}-000.jpg"]
    corpus.files["robots.txt"] = ROBOTS_TXT.encode()
    corpus.files[f"private/{word}.jpg"] = jpeg(_drawn("circle", rng, cfg), cfg.jpeg_quality)
    corpus.files["hostile/page.jpg"] = (b"<!doctype html><html><head><title>Not found</title></head>"
                                        b"<body><h1>Sorry, this image was removed</h1></body></html>\n")
    corpus.files["hostile/truncated.jpg"] = good[: len(good) // 3]
    corpus.files["hostile/huge.png"] = _bomb_png()
    corpus.redirects["/hostile/redirect.jpg"] = METADATA_URL
    corpus.rows += [
        PoolRow(f"/missing/{word}.jpg", f"a {word} that was deleted", "http_404"),
        PoolRow(METADATA_URL, f"{word} credentials", "link_local"),
        PoolRow("/hostile/redirect.jpg", f"{word} behind a redirect", "redirect_to_link_local"),
        PoolRow("/hostile/page.jpg", f"{word} page served as a jpeg", "html_as_jpeg"),
        PoolRow("/hostile/truncated.jpg", f"half a {word} photo", "truncated_jpeg"),
        PoolRow(f"/private/{word}.jpg", f"a private {word} photo", "robots_disallowed"),
        PoolRow("/hostile/huge.png", f"an enormous {word} poster", "decompression_bomb"),
    ]


# ---- a second language (``wit demo --languages en,ja``) ----

def add_japanese(corpus: Corpus, cfg: CorpusConfig, wiki_captions: dict[str, list[str]], per_class: int) -> None:
    """Add ``per_class`` pairs per class captioned in Japanese (``demo.languages.JA_TEMPLATES``, the class's
    Japanese word), on new variants of the class's picture from their own random stream, and one row per real
    caption of ``wiki_captions`` (language -> file-link captions of the shipped dumps) on a picture of no class.
    The English rows, files and held-out images are left as ``generate`` made them."""
    from wit_builder.demo import languages

    photos = available_photos()
    for cls in corpus.classes:
        rng = random.Random(f"{cfg.seed}/ja/train/{cls}")
        caption_rng = random.Random(f"{cfg.seed}/ja/captions/{cls}")
        for i in range(per_class):
            path = f"img-ja/{cls}/{cls}-{i:03d}.jpg"
            img = _photo_variant(photos[cls][1], rng, cfg) if cls in photos else _drawn(cls, rng, cfg)
            corpus.files[path] = jpeg(img, cfg.jpeg_quality)
            corpus.rows.append(PoolRow(f"/{path}", languages.japanese_caption(cls, caption_rng), "train_ja"))
    for lang, captions in sorted(wiki_captions.items()):
        rng = random.Random(f"{cfg.seed}/wiki/{lang}")
        for i, text in enumerate(captions):
            path = f"wiki/{lang}/{i:03d}.jpg"
            corpus.files[path] = jpeg(_noise(rng, cfg), cfg.jpeg_quality)
            corpus.rows.append(PoolRow(f"/{path}", text, "wiki_caption"))
    served = {hashlib.sha256(data).hexdigest() for data in corpus.files.values()}
    held = {hashlib.sha256(data).hexdigest() for images in corpus.heldout.values() for data in images}
    assert served.isdisjoint(held), "a held-out image equals a served file"


# ---- writing ----

def pool_records(corpus: Corpus, base_url: str) -> list[dict[str, str]]:
    """The pool rows with absolute URLs under ``base_url`` (e.g. ``http://127.0.0.1:8765``)."""
    base = base_url.rstrip("/")
    return [{"url": base + r.path if r.path.startswith("/") else r.path, "caption": r.caption, "kind": r.kind}
            for r in corpus.rows]


def write_files(corpus: Corpus, folder: str | Path) -> dict[str, object]:
    """Write the served files, the held-out folder, the redirect map and a manifest; returns the manifest.

    The pool table is written separately (it holds the server's address); files already holding the
    right bytes are left untouched.
    """
    root = Path(folder)
    written: dict[str, str] = {}
    for rel, data in sorted(corpus.files.items()):
        written[f"{WWW}/{rel}"] = _write_if_changed(root / WWW / rel, data)
    for cls, images in sorted(corpus.heldout.items()):
        for i, data in enumerate(images):
            rel = f"{HELDOUT}/{cls}/{cls}-{i:03d}.jpg"
            written[rel] = _write_if_changed(root / rel, data)
    _write_if_changed(root / REDIRECTS, json.dumps(corpus.redirects, indent=2, sort_keys=True).encode())
    kinds = {k: sum(r.kind == k for r in corpus.rows) for k in KINDS}
    kinds.update({k: n for k in LANGUAGE_KINDS if (n := sum(r.kind == k for r in corpus.rows))})
    manifest = {"classes": corpus.classes, "sources": corpus.sources, "pool_rows": len(corpus.rows),
                "kinds": kinds, "heldout_per_class": {c: len(v) for c, v in corpus.heldout.items()},
                "sha256": written}
    _write_if_changed(root / MANIFEST, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    return manifest


def _write_if_changed(path: Path, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    if path.exists() and hashlib.sha256(path.read_bytes()).hexdigest() == digest:
        return digest
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)  # never a half-written file under the final name
    return digest
