"""Streaming (image, caption) batches from WebDataset shards: stage 4's final shards or img2dataset's raw ones,
on local disk or behind gs://, s3:// and http(s):// (webdataset's gopen pipes).

The order of batches is a pure function of (seed, epoch, position), which is what makes ``--resume`` exact:

* each rank reads ``workers`` streams (a stream = one DataLoader worker); stream g gets every n-th shard of the
  epoch's seeded shard permutation (or, resampled, draws shards with replacement from a seeded generator);
* within a stream, a seeded shuffle buffer mixes raw samples; sample i's crop is drawn from a generator seeded
  by (seed, epoch, stream, i);
* the loader takes batches from the streams strictly round-robin (an exhausted stream keeps answering with an
  end marker rather than stopping, so DataLoader never reorders around it);
* the position is, per stream, how many raw samples its consumed batches covered: a resumed stream replays its
  reader and shuffle buffer up to there without decoding, then continues.

Corrupt, truncated or incomplete samples and unreadable shards are skipped and counted, never fatal.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import io
import json
import logging
import math
import os
import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
import webdataset as wds
from PIL import Image
from webdataset import filters, tariterators

from trainer.tokenizer import Tokenizer
from trainer.transforms import TrainTransform, normalize_uint8, random_resized_crop_box, to_uint8_tensor

log = logging.getLogger(__name__)

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")
TEXT_KEYS = ("txt",)
REMOTE_PREFIXES = ("gs://", "s3://", "http://", "https://", "pipe:", "htgs://", "hf://", "ais://")


class DataError(ValueError):
    """Bad shards or an impossible request (what, which file, what to do)."""


# ---- shard lists and sizes ----

def _pipe_url(url: str) -> str:
    # webdataset has no s3 handler; the AWS CLI streams the object to stdout, as open_clip's docs recommend.
    return f"pipe:aws s3 cp {url} -" if url.startswith("s3://") else url


def resolve_shards(spec: str) -> list[str]:
    """A directory (its *.tar), a local glob, or brace patterns / URLs joined by '::' -> sorted shard URLs."""
    if os.path.isdir(spec):
        found = sorted(glob.glob(os.path.join(spec, "*.tar")))
        if not found:
            raise DataError(f"shard directory {spec} holds no .tar files; point --shards at stage 4's output")
        return found
    urls: list[str] = []
    for url in wds.shardlists.expand_urls(spec):
        if url.startswith(REMOTE_PREFIXES):
            urls.append(url)
        elif any(c in url for c in "*?["):
            matched = sorted(glob.glob(url))
            if not matched:
                raise DataError(f"shard pattern {url!r} matches no file")
            urls.extend(matched)
        elif os.path.exists(url):
            urls.append(url)
        else:
            raise DataError(f"shard {url!r} does not exist")
    return urls


def _read_json(url: str) -> Any | None:
    try:
        if url.startswith(REMOTE_PREFIXES):
            with wds.gopen(_pipe_url(url)) as f:
                return json.loads(f.read())
        if os.path.exists(url):
            with open(url, encoding="utf-8") as f:
                return json.load(f)
    except Exception as e:  # an absent remote file surfaces as a pipe error: treat it as "no sizes"
        log.debug("cannot read %s: %s", url, e)
    return None


def shard_sizes(shards: list[str]) -> dict[str, int] | None:
    """Samples per shard, from ``sizes.json`` beside the shards (stage 4; open_clip's convention) or else from
    img2dataset's ``{shard}_stats.json`` ("successes"). None when any shard's count is unknown."""
    sizes: dict[str, int] = {}
    by_dir: dict[str, dict] = {}
    for url in shards:
        directory, name = url.rsplit("/", 1) if "/" in url else (".", url)
        if directory not in by_dir:
            by_dir[directory] = _read_json(f"{directory}/sizes.json") or {}
        table = by_dir[directory]
        count = table.get(name, table.get(name.removesuffix(".tar")))
        if count is None:
            stats = _read_json(f"{directory}/{name.removesuffix('.tar')}_stats.json")
            count = stats.get("successes") if isinstance(stats, dict) else None
        if count is None:
            return None
        sizes[url] = int(count)
    return sizes


def check_match_rules(shards: list[str]) -> str | None:
    """The one match rule (wit_builder.match_rules) of the folders the shards come from, read from finalize's
    ``stats.json`` beside them (``details.match_rule``); DataError when two folders differ. Folders without
    a recorded rule (img2dataset output, older runs) are not counted."""
    rules: dict[str, list[str]] = {}
    for directory in sorted({url.rsplit("/", 1)[0] if "/" in url else "." for url in shards}):
        stats = _read_json(f"{directory}/stats.json")
        details = stats.get("details") if isinstance(stats, dict) else None
        rule = details.get("match_rule") if isinstance(details, dict) else None
        if rule:
            rules.setdefault(rule, []).append(directory)
    if len(rules) > 1:
        listing = "; ".join(f"{rule}: {', '.join(dirs)}" for rule, dirs in sorted(rules.items()))
        raise DataError(f"the shards mix pairs matched under different match rules ({listing}); "
                        "train on shards of one --match-rule")
    return next(iter(rules), None)


# ---- the epoch plan ----

@dataclass(frozen=True)
class DataPlan:
    shards: tuple[str, ...]
    batch_size: int  # per rank
    seed: int = 0
    workers: int = 2
    rank: int = 0
    world_size: int = 1
    shuffle_buffer: int = 1000
    resampled: bool = False
    samples_per_epoch: int | None = None  # global; None: one pass over the shards
    image_size: int = 224
    gpu_decode: bool = False

    @property
    def streams_per_rank(self) -> int:
        return max(1, self.workers)

    @property
    def steps_per_epoch(self) -> int | None:
        if self.samples_per_epoch is None:
            return None
        return max(1, self.samples_per_epoch // (self.batch_size * self.world_size))

    def stream_shards(self, epoch: int, local_stream: int) -> Iterator[str]:
        """Shard URLs of one stream in one epoch, a pure function of (seed, epoch, stream)."""
        g = self.rank * self.streams_per_rank + local_stream
        n_streams = self.world_size * self.streams_per_rank
        if self.resampled:
            rng = random.Random(f"{self.seed}/{epoch}/shards/{g}")
            while True:
                yield rng.choice(self.shards)
        order = list(self.shards)
        random.Random(f"{self.seed}/{epoch}/shards").shuffle(order)
        yield from order[g::n_streams]


def make_plan(shards_spec: str, *, batch_size: int, image_size: int, seed: int = 0, workers: int = 2,
              rank: int = 0, world_size: int = 1, shuffle_buffer: int = 1000, resampled: bool = False,
              samples_per_epoch: int | None = None, allow_repeat: bool = False,
              gpu_decode: bool = False) -> DataPlan:
    """Resolve shards and sizes and check that the request can be met without silently repeating samples."""
    shards = resolve_shards(shards_spec)
    check_match_rules(shards)
    sizes = shard_sizes(shards)
    total = sum(sizes.values()) if sizes is not None else None
    streams = world_size * max(1, workers)
    if samples_per_epoch is None:
        samples_per_epoch = total
    elif total is not None and samples_per_epoch > total:
        message = (f"asked for {samples_per_epoch} samples per epoch but the {len(shards)} shards hold {total} "
                   f"(sizes.json); that would repeat samples within an epoch")
        if not allow_repeat:
            raise DataError(message + ". Lower --samples-per-epoch, or pass --allow-repeat to repeat on purpose")
        log.warning("!!! %s — repeating on purpose (--allow-repeat): switching to resampled shards", message)
        resampled = True
    if total is None:
        log.warning("no sizes.json (or img2dataset _stats.json) beside the shards: epoch size unknown; "
                    "an epoch is one pass over the shards")
        if resampled and samples_per_epoch is None:
            raise DataError("resampled mode needs an epoch size: add sizes.json or pass --samples-per-epoch")
    if not resampled and len(shards) < streams:
        if len(shards) < world_size:
            raise DataError(f"{len(shards)} shards cannot feed {world_size} ranks without repeating; write more "
                            f"shards (finalize --samples-per-shard) or use --resampled")
        log.warning("%d shards for %d worker(s) per rank: reading with %d", len(shards), workers,
                    len(shards) // world_size)
        workers = len(shards) // world_size
    if samples_per_epoch is not None and samples_per_epoch < batch_size * world_size:
        raise DataError(f"an epoch of {samples_per_epoch} samples is smaller than one global batch "
                        f"({batch_size} x {world_size}); lower --batch-size")
    return DataPlan(tuple(shards), batch_size, seed, workers, rank, world_size, shuffle_buffer, resampled,
                    samples_per_epoch, image_size, gpu_decode)


# ---- one stream: read, shuffle, skip, decode, batch ----

def raw_samples(urls: Iterator[str], on_error: Callable[[Exception], bool]) -> Iterator[dict]:
    """Grouped tar members (``__key__``, ``jpg``, ``txt``, ...) of the shards in order; read errors skipped."""
    opened = tariterators.url_opener(({"url": _pipe_url(u)} for u in urls), handler=on_error)
    files = tariterators.tar_file_expander(opened, handler=on_error)
    return tariterators.group_by_keys(files, handler=on_error)


def first_member(sample: dict, keys: tuple[str, ...]) -> Any:
    """The first of ``keys`` (member extensions, in order of preference) that the sample holds, else None."""
    return next((sample[k] for k in keys if k in sample), None)


def sample_where(sample: dict) -> str:
    """``shard-url:key``, to name a sample in warnings."""
    return f"{sample.get('__url__', '?')}:{sample.get('__key__', '?')}"


def _decode_caption(sample: dict, counts: Counter) -> str | None:
    raw = first_member(sample, TEXT_KEYS)
    if raw is None:
        counts["incomplete"] += 1
        log.warning("skipping %s: no caption (.txt)", sample_where(sample))
        return None
    try:
        caption = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        caption = ""
    if not caption:
        counts["bad_caption"] += 1
        log.warning("skipping %s: empty or non-UTF-8 caption", sample_where(sample))
        return None
    return caption


def _decode_pil(sample: dict, image_size: int, counts: Counter) -> Image.Image | None:
    data = first_member(sample, IMAGE_KEYS)
    if data is None:
        counts["incomplete"] += 1
        log.warning("skipping %s: no image member", sample_where(sample))
        return None
    try:
        image = Image.open(io.BytesIO(data))
        # JPEG draft mode decodes at 1/2, 1/4 or 1/8 scale when the crop will be that much smaller anyway.
        image.draft("RGB", (math.ceil(image_size / 0.85),) * 2)
        image.load()
        return image
    except Exception as e:  # truncated, not an image, decompression bomb...
        counts["corrupt_image"] += 1
        log.warning("skipping %s: undecodable image (%s)", sample_where(sample), e)
        return None


@dataclass
class StreamItem:
    """One answer of a stream: a batch (or None once the stream is exhausted) and where the stream stands."""

    stream: int
    batch: dict | None
    position: int  # raw samples consumed by this stream up to the end of this batch
    counts: dict[str, int] = field(default_factory=dict)  # drops since the previous item

    def pin_memory(self) -> StreamItem:
        """Called by DataLoader(pin_memory=True): page-locked tensors make the host-to-GPU copy asynchronous."""
        if self.batch is not None:
            self.batch = {k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in self.batch.items()}
        return self


def stream_items(plan: DataPlan, tokenizer: Tokenizer, epoch: int, local_stream: int,
                 skip: int) -> Iterator[StreamItem]:
    """The stream's batches after its first ``skip`` raw samples, then end markers forever."""
    counts: Counter = Counter()
    position = 0
    current: list[str] = []  # the shard being read (the reader pulls shard URLs lazily, one at a time)
    failed: set[str] = set()

    def shard_urls() -> Iterator[str]:
        for url in plan.stream_shards(epoch, local_stream):
            current[:] = [url]
            yield url

    def on_error(exn: Exception) -> bool:
        # webdataset reports one broken tar at several levels; count the shard once. Errors inside a replayed
        # prefix were counted by the run that read them first.
        shard = current[0] if current else "?"
        if shard not in failed and position >= skip:
            counts["unreadable_shard"] += 1
            log.warning("skipping the rest of shard %s: %s", shard, exn)
        failed.add(shard)
        return True

    g = plan.rank * plan.streams_per_rank + local_stream
    transform = TrainTransform(plan.image_size)
    samples = raw_samples(shard_urls(), on_error)
    shuffled = filters._shuffle(samples, bufsize=plan.shuffle_buffer, initial=plan.shuffle_buffer,
                                rng=random.Random(f"{plan.seed}/{epoch}/samples/{g}"))
    images: list = []
    captions: list[str] = []
    for sample in shuffled:
        index, position = position, position + 1
        if index < skip:
            continue
        caption = _decode_caption(sample, counts)
        if caption is None:
            continue
        rng = random.Random(f"{plan.seed}/{epoch}/crop/{g}/{index}")
        item = _gpu_item(sample, plan.image_size, rng, counts) if plan.gpu_decode else None
        if not plan.gpu_decode:
            image = _decode_pil(sample, plan.image_size, counts)
            item = to_uint8_tensor(transform.crop(image, rng)) if image is not None else None
        if item is None:
            continue
        images.append(item)
        captions.append(caption)
        if len(images) == plan.batch_size:
            yield StreamItem(local_stream, _collate(images, captions, tokenizer, plan.gpu_decode), position,
                             dict(counts))
            counts.clear()
            images, captions = [], []
    # A short last batch is dropped (fixed shapes for compile and all_gather); its samples are counted.
    if images:
        counts["partial_batch_dropped"] += len(images)
    while True:
        yield StreamItem(local_stream, None, position, dict(counts))
        counts.clear()


def _collate(images: list, captions: list[str], tokenizer: Tokenizer, gpu_decode: bool) -> dict:
    tokens = tokenizer(captions)  # (B, L)
    if gpu_decode:
        return {"jpeg": [data for data, _ in images], "boxes": torch.tensor([box for _, box in images]),
                "tokens": tokens}
    return {"images": torch.stack(images), "tokens": tokens}  # (B, 3, H, W) uint8, (B, L)


# ---- the GPU-decode path: workers only parse JPEG headers; nvJPEG decodes whole batches on the device ----

def _gpu_item(sample: dict, image_size: int, rng: random.Random,
              counts: Counter) -> tuple[torch.Tensor, tuple[int, int, int, int]] | None:
    data = first_member(sample, IMAGE_KEYS)
    if data is None:
        counts["incomplete"] += 1
        return None
    try:
        header = Image.open(io.BytesIO(data))  # reads the header only
        if header.format != "JPEG" or header.mode not in ("RGB", "L"):
            raise ValueError(f"{header.format} {header.mode} is not a baseline RGB/greyscale JPEG")
    except Exception as e:
        counts["corrupt_image"] += 1
        log.warning("skipping %s: %s", sample_where(sample), e)
        return None
    box = random_resized_crop_box(header.width, header.height, rng)
    return torch.frombuffer(bytearray(data), dtype=torch.uint8), box


def batch_to_device(batch: dict, plan: DataPlan, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised float images and tokens on ``device``; uint8 crosses the bus, normalisation runs there."""
    if plan.gpu_decode:
        return gpu_decode_batch(batch, plan.image_size, device)
    images = batch["images"].to(device, non_blocking=True)
    return normalize_uint8(images), batch["tokens"].to(device, non_blocking=True)


def gpu_decode_batch(batch: dict, image_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode a GPU-path batch on ``device`` with nvJPEG (torchvision.io.decode_jpeg), then crop, resize and
    normalise there. Images nvJPEG rejects are dropped together with their captions, and logged."""
    from torchvision.io import ImageReadMode, decode_jpeg

    try:
        decoded = decode_jpeg(batch["jpeg"], mode=ImageReadMode.RGB, device=device)
    except RuntimeError:  # one bad image fails the batched call: find it
        decoded = []
        for data in batch["jpeg"]:
            try:
                decoded.append(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
            except RuntimeError:
                decoded.append(None)
        log.warning("nvJPEG rejected %d image(s) of a batch; dropped", sum(d is None for d in decoded))
    images, keep = crop_resize_normalize(decoded, batch["boxes"], image_size)
    return images, batch["tokens"][keep].to(device, non_blocking=True)


def crop_resize_normalize(decoded: list[torch.Tensor | None], boxes: torch.Tensor,
                          image_size: int) -> tuple[torch.Tensor, list[int]]:
    """Decoded (3, H, W) uint8 images (None: undecodable) -> the crops as a normalised (B, 3, S, S) batch on the
    images' device, and the indices kept."""
    keep = [i for i, image in enumerate(decoded) if image is not None]
    if not keep:
        raise DataError("no image of a batch could be decoded on the GPU; rerun without --gpu-decode")
    crops = []
    for i, (left, top, right, bottom) in zip(keep, boxes[keep].tolist(), strict=True):
        crop = decoded[i][:, top:bottom, left:right].unsqueeze(0).float()  # (1, 3, h, w)
        crops.append(torch.nn.functional.interpolate(crop, size=(image_size, image_size), mode="bicubic",
                                                     antialias=True, align_corners=False))
    return normalize_uint8(torch.cat(crops).clamp(0, 255)), keep  # (B, 3, S, S)


def torchvision_gpu_decode_available() -> bool:
    try:
        import torchvision.io  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


# ---- the loader: round-robin over streams, epochs, positions, agreement across ranks ----

class _Streams(torch.utils.data.IterableDataset):
    def __init__(self, plan: DataPlan, tokenizer_json: str, epoch: int, state: dict):
        self.plan, self.tokenizer_json, self.epoch, self.state = plan, tokenizer_json, epoch, state

    def __iter__(self) -> Iterator[StreamItem]:
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        # Rotate so that the first item of a resumed epoch comes from the stream whose turn it is.
        stream = (worker + self.state["items"]) % self.plan.streams_per_rank
        tokenizer = Tokenizer.from_json(self.tokenizer_json)
        yield from stream_items(self.plan, tokenizer, self.epoch, stream, self.state["positions"][stream])


def new_epoch_state(epoch: int, streams: int) -> dict:
    return {"epoch": epoch, "step_in_epoch": 0, "items": 0, "positions": [0] * streams, "exhausted": [],
            "counts": {}}


class Loader:
    """Yields (batch dict, epoch) forever across epochs; ``state()`` is the exact position to resume from."""

    def __init__(self, plan: DataPlan, tokenizer: Tokenizer, state: dict | None = None, pin_memory: bool = False):
        self.plan = plan
        self.tokenizer_json = tokenizer.to_json()
        self.pin_memory = pin_memory
        self._state = state or new_epoch_state(0, plan.streams_per_rank)
        if len(self._state["positions"]) != plan.streams_per_rank:
            raise DataError(f"the checkpoint's data position has {len(self._state['positions'])} streams per rank "
                            f"but this run has {plan.streams_per_rank}; resume with the same --workers")
        self.totals: Counter = Counter(self._state.get("counts", {}))

    def state(self) -> dict:
        return {**self._state, "positions": list(self._state["positions"]),
                "exhausted": list(self._state["exhausted"]), "counts": dict(self.totals)}

    def _epoch_items(self) -> Iterator[StreamItem]:
        dataset = _Streams(self.plan, self.tokenizer_json, self._state["epoch"], self.state())
        if self.plan.workers == 0:  # the same single stream, read in the training process
            return iter(dataset)
        return iter(torch.utils.data.DataLoader(
            dataset, batch_size=None, num_workers=self.plan.workers, pin_memory=self.pin_memory,
            prefetch_factor=4, persistent_workers=False,
        ))

    def __iter__(self) -> Iterator[tuple[dict, int]]:
        while True:
            epoch, produced = self._state["epoch"], 0
            for batch in self.epoch_batches():
                produced += 1
                yield batch, epoch
            if produced == 0:  # an empty epoch would repeat forever
                raise DataError(
                    f"epoch {epoch} produced no batch: no stream of {self.plan.streams_per_rank} per rank holds "
                    f"{self.plan.batch_size} readable samples (dropped: {dict(self.totals) or 'none'}); lower "
                    f"--batch-size or --workers, or check the shards")

    def epoch_batches(self) -> Iterator[dict]:
        """The rest of the current epoch's batches; afterwards the position points at the next epoch's start."""
        items = self._epoch_items()
        limit = self.plan.steps_per_epoch
        while True:
            batch = None
            if limit is None or self._state["step_in_epoch"] < limit:
                batch = self._next_batch(items)
            if not all_ranks_agree(batch is not None):  # every rank ends the epoch at the same step
                break
            self._state["step_in_epoch"] += 1
            yield batch
        del items  # shuts the epoch's workers down
        log.info("epoch %d done after %d steps; dropped so far: %s", self._state["epoch"],
                 self._state["step_in_epoch"], dict(self.totals) or "none")
        self._state = new_epoch_state(self._state["epoch"] + 1, self.plan.streams_per_rank)
        self._state["counts"] = dict(self.totals)

    def _next_batch(self, items: Iterator[StreamItem]) -> dict | None:
        streams = self.plan.streams_per_rank
        while len(self._state["exhausted"]) < streams:
            item = next(items)
            self._state["items"] += 1
            self._state["positions"][item.stream] = item.position
            self.totals.update(item.counts)
            if item.batch is not None:
                return item.batch
            if item.stream not in self._state["exhausted"]:
                self._state["exhausted"].append(item.stream)
        return None


def all_ranks_agree(flag: bool, op: str = "all") -> bool:
    """Whether ``flag`` holds on all (``op="all"``) or any (``op="any"``) rank, through a CPU (gloo) group so that
    the per-step vote never waits for the GPU's queue (a CUDA tensor's .item() would sync every step)."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return flag
    t = torch.tensor([1 if flag else 0])
    dist.all_reduce(t, op=dist.ReduceOp.MIN if op == "all" else dist.ReduceOp.MAX, group=_cpu_group())
    return bool(t.item())


@functools.lru_cache(maxsize=1)
def _cpu_group():
    # Created lazily, on every rank at the same point: the first vote of the first epoch.
    return dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else dist.group.WORLD


def plan_fields(plan: DataPlan) -> dict:
    """What a checkpoint records about the plan, to refuse a resume whose data order would differ."""
    return {k: v for k, v in dataclasses.asdict(plan).items() if k not in ("rank", "shards")} | {
        "num_shards": len(plan.shards)}
