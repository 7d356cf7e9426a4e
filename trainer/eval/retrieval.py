"""Image-text retrieval recall@K on held-out WebDataset shards, in both directions.

Text-to-image ("image retrieval"): each caption is a query; a hit at K when its own image is among the K
images most similar to it. Image-to-text ("text retrieval"): each image is a query; a hit at K when any of its
captions is among the K most similar captions. The similarity matrix is never held whole: it is computed one
chunk of images at a time (chunk_size x captions), and each chunk serves both directions.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from trainer.languages import UNDETERMINED, sample_language
from trainer.shards import IMAGE_KEYS, first_member, raw_samples, sample_where

log = logging.getLogger(__name__)

DEFAULT_KS = (1, 5, 10)
MAX_EXAMPLES = 20  # skipped samples kept by name (all are counted)


def retrieval_recall(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    text_to_image: torch.Tensor,
    ks: Sequence[int] = DEFAULT_KS,
    chunk_size: int = 1024,
) -> dict[str, float]:
    """Recall@K both ways, in CLIP_benchmark's names.

    ``image_features`` (N, D), ``text_features`` (T, D), ``text_to_image`` (T,): the image each caption
    belongs to (several captions may share an image; every image needs at least one). A query's rank is
    the number of candidates scored strictly higher than its best positive, so ties count in its favour.
    """
    n_images, n_texts = len(image_features), len(text_features)
    if n_images == 0 or n_texts != len(text_to_image):
        raise ValueError(f"need images and one image index per caption; got {n_images} images, "
                         f"{n_texts} captions, {len(text_to_image)} indices")
    text_to_image = text_to_image.long()
    if n_texts and (text_to_image.min() < 0 or text_to_image.max() >= n_images):
        raise ValueError(f"caption image indices must lie in [0, {n_images})")
    captions_per_image = torch.bincount(text_to_image, minlength=n_images)
    if (captions_per_image == 0).any():
        raise ValueError(f"every image needs at least one caption; {int((captions_per_image == 0).sum())} have none")
    images = F.normalize(image_features.float(), dim=-1)  # (N, D)
    texts = F.normalize(text_features.float(), dim=-1)  # (T, D)
    text_positive = (texts * images[text_to_image]).sum(dim=-1)  # (T,) each caption with its own image
    by_image = torch.argsort(text_to_image, stable=True)  # caption ids grouped by image
    group_end = torch.cumsum(captions_per_image, dim=0)  # (N,) end of each image's group in by_image

    # One pass over image chunks serves both directions: rows rank captions for an image, columns add up,
    # for every caption, the images of this chunk that beat its own image.
    text_ranks = torch.zeros(n_texts, dtype=torch.int32)
    image_ranks = torch.empty(n_images, dtype=torch.int32)
    for start in range(0, n_images, chunk_size):
        stop = min(start + chunk_size, n_images)
        sims = images[start:stop] @ texts.T  # (c, T)
        own = by_image[group_end[start] - captions_per_image[start] : group_end[stop - 1]]  # this chunk's captions
        own_rows = text_to_image[own] - start
        own_sims = sims[own_rows, own]  # each of them scored against its own image, from this very matrix
        best_positive = torch.full((stop - start,), float("-inf")).scatter_reduce(0, own_rows, own_sims, "amax")
        image_ranks[start:stop] = (sims > best_positive[:, None]).sum(dim=1, dtype=torch.int32)
        text_ranks += (sims > text_positive[None, :]).sum(dim=0, dtype=torch.int32)
        # the own image never counts against its caption, whatever the rounding of the two dot products
        text_ranks[own] -= (own_sims > text_positive[own]).int()

    metrics = {}
    for k in ks:
        metrics[f"image_retrieval_recall@{k}"] = (text_ranks < k).double().mean().item()
        metrics[f"text_retrieval_recall@{k}"] = (image_ranks < k).double().mean().item()
    return metrics


# ---- reading held-out shards ----

@dataclass
class ShardSample:
    """One held-out sample: its key, the decoded image and every caption it carries."""

    key: str
    image: Image.Image
    captions: list[str]
    lang: str = UNDETERMINED  # the json's ``lang``


@dataclass
class ReadStats:
    """Samples read and skipped (by reason, with the first ``MAX_EXAMPLES`` examples) while reading shards."""

    samples: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count
    examples: list[str] = field(default_factory=list)  # the first few, "shard:key: reason (detail)"
    languages: list[str] = field(default_factory=list)  # per encoded image, in order (``encode_shards``)

    def skip(self, reason: str, where: str, detail: str = "") -> None:
        """Count one skipped sample under ``reason`` and log it (``where``: ``shard:key``)."""
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        message = f"{where}: {reason}" + (f" ({detail})" if detail else "")
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(message)
        log.warning("skipped %s", message)

    def merge(self, other: ReadStats) -> None:
        """Add another reader's counts (a DataLoader worker's) into these."""
        self.samples += other.samples
        for reason, count in other.skipped.items():
            self.skipped[reason] = self.skipped.get(reason, 0) + count
        self.examples.extend(other.examples[: MAX_EXAMPLES - len(self.examples)])


def sample_captions(sample: dict) -> list[str]:
    """The captions of one shard sample: every non-empty line of ``.txt`` (COCO-style shards hold one caption
    per line), else the ``caption`` / ``captions`` fields of ``.json``."""
    if "txt" in sample:
        lines = sample["txt"].decode("utf-8", errors="replace").splitlines()
        return [line.strip() for line in lines if line.strip()]
    if "json" in sample:
        meta = json.loads(sample["json"])
        if not isinstance(meta, dict):
            return []
        found = meta.get("captions") or [meta.get("caption")]
        return [c.strip() for c in found if isinstance(c, str) and c.strip()]
    return []


def read_shard_samples(urls: Sequence[str], stats: ReadStats) -> Iterator[ShardSample]:
    """Decoded (image, captions) samples of ``urls`` in order; incomplete or corrupt samples and unreadable
    tar members are skipped and counted in ``stats``, never raised."""
    def on_error(exc: Exception) -> bool:
        # webdataset names the shard in the exception's args
        stats.skip("unreadable_shard", "shard", f"{type(exc).__name__}: {', '.join(map(str, exc.args))}")
        return True  # keep going with the next member or shard

    for sample in raw_samples(iter(urls), on_error):
        where = sample_where(sample)
        image_bytes = first_member(sample, IMAGE_KEYS)
        if image_bytes is None:
            stats.skip("no_image", where)
            continue
        try:
            captions = sample_captions(sample)
        except (ValueError, UnicodeDecodeError) as e:
            stats.skip("no_caption", where, f"unreadable: {e}")
            continue
        if not captions:
            stats.skip("no_caption", where)
            continue
        try:
            with Image.open(io.BytesIO(image_bytes)) as img:
                image = img.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            stats.skip("corrupt_image", where, str(e))
            continue
        stats.samples += 1
        yield ShardSample(sample["__key__"], image, captions, sample_language(sample.get("json")))


class _ShardStream(IterableDataset):
    """Transformed samples of the shards, each DataLoader worker reading its own share of them; every worker
    ends its stream with its ReadStats so that the counts of skipped samples reach the main process."""

    def __init__(self, urls: Sequence[str], transform: Callable[[Image.Image], torch.Tensor]):
        self.urls = list(urls)
        self.transform = transform

    def __iter__(self) -> Iterator[tuple[torch.Tensor, list[str], str] | ReadStats]:
        worker = get_worker_info()
        urls = self.urls if worker is None else self.urls[worker.id :: worker.num_workers]
        stats = ReadStats()
        for sample in read_shard_samples(urls, stats):
            yield self.transform(sample.image), sample.captions, sample.lang
        yield stats


@torch.inference_mode()
def encode_shards(
    urls: Sequence[str],
    encode_image: Callable[[torch.Tensor], torch.Tensor],
    encode_text: Callable[[torch.Tensor], torch.Tensor],
    transform: Callable[[Image.Image], torch.Tensor],
    tokenize: Callable[[list[str]], torch.Tensor],
    *,
    batch_size: int = 256,
    workers: int = 0,
    device: str | torch.device = "cpu",
    progress: Callable[[int], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, ReadStats]:
    """Image features (N, D), caption features (T, D) and the caption -> image index (T,) of every readable
    sample in ``urls``, with the read statistics (``stats.languages``: each image's language). ``workers``
    processes decode the shards in parallel."""
    stats = ReadStats()
    image_chunks, text_chunks, owners = [], [], []
    images: list[torch.Tensor] = []
    captions: list[str] = []

    def flush() -> None:
        if images:
            image_chunks.append(encode_image(torch.stack(images).to(device)).float().cpu())  # (b, D)
            images.clear()
        for start in range(0, len(captions), batch_size):
            tokens = tokenize(captions[start : start + batch_size]).to(device)  # (b, L)
            text_chunks.append(encode_text(tokens).float().cpu())  # (b, D)
        captions.clear()

    loader = DataLoader(_ShardStream(urls, transform), batch_size=None, num_workers=min(workers, len(urls)))
    n_images = 0
    for item in loader:
        if isinstance(item, ReadStats):
            stats.merge(item)
            continue
        image, sample_captions, lang = item
        stats.languages.append(lang)
        images.append(image)
        captions.extend(sample_captions)
        owners.extend([n_images] * len(sample_captions))
        n_images += 1
        if len(images) == batch_size:
            flush()
            if progress:
                progress(n_images)
    flush()
    if n_images == 0:
        raise ValueError(f"no readable image-caption samples in {len(urls)} shard(s); skipped: {stats.skipped}")
    return torch.cat(image_chunks), torch.cat(text_chunks), torch.tensor(owners), stats
