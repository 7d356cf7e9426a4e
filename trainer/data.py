"""Streaming (image, caption) batches from WebDataset shards (``trainer.shards`` resolves and reads them).

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

import atexit
import dataclasses
import io
import logging
import math
import random
import signal
import weakref
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image
from webdataset import filters

from trainer.balance import LoadBalance, plan_balance
from trainer.distributed import all_gather, all_ranks_agree
from trainer.languages import UNDETERMINED, sample_language
from trainer.shards import (
    IMAGE_KEYS,
    TEXT_KEYS,
    DataError,
    check_match_rules,
    first_member,
    raw_samples,
    resolve_shards,
    sample_where,
    shard_sizes,
)
from trainer.tokenizer import Tokenizer
from trainer.transforms import normalize_uint8, random_resized_crop_box, random_resized_crop_uint8

log = logging.getLogger(__name__)


# ---- the epoch plan ----

@dataclass(frozen=True)
class DataPlan:
    """Everything that fixes the order of batches (module docstring); built and checked by ``make_plan``."""

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
    sizes: tuple[int, ...] | None = None  # samples per shard (sizes.json), aligned with ``shards``; None: unknown
    balance: LoadBalance | None = None  # load-time per-query cap (``--per-query-cap``)

    @property
    def streams_per_rank(self) -> int:
        """Streams each rank reads: one per DataLoader worker, one when reading in the training process."""
        return max(1, self.workers)

    @property
    def steps_per_epoch(self) -> int | None:
        """Optimizer steps in an epoch of ``samples_per_epoch`` (global batches, at least 1); None: one pass."""
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
        yield from self._epoch_order(epoch)[g::n_streams]

    def _epoch_order(self, epoch: int) -> list[str]:
        order = list(self.shards)
        random.Random(f"{self.seed}/{epoch}/shards").shuffle(order)
        return order

    def stream_size(self, epoch: int, local_stream: int) -> int | None:
        """Samples the shards of one stream hold in one epoch (sizes.json); None when unknown or resampled."""
        if self.resampled or self.sizes is None:
            return None
        size = dict(zip(self.shards, self.sizes, strict=True))
        g = self.rank * self.streams_per_rank + local_stream
        return sum(size[url] for url in self._epoch_order(epoch)[g::self.world_size * self.streams_per_rank])


def make_plan(shards_spec: str, *, batch_size: int, image_size: int, seed: int = 0, workers: int = 2,
              rank: int = 0, world_size: int = 1, shuffle_buffer: int = 1000, resampled: bool = False,
              samples_per_epoch: int | None = None, allow_repeat: bool = False,
              gpu_decode: bool = False, per_query_cap: int | None = None,
              balance_mode: str = "hard", language_caps: dict[str, int] | None = None) -> DataPlan:
    """Resolve shards and sizes and check that the request can be met without silently repeating samples.
    With ``per_query_cap`` the shards' sample json (uid, queries) is read once first to plan the load-time
    balance (``trainer.balance``); the epoch is then the kept samples. ``batch_size`` is per rank, ``image_size``
    in px. Raises DataError when the shards cannot meet the request (too few shards for the ranks, an epoch
    larger than the data without ``allow_repeat``, smaller than one global batch, resampled without a size)."""
    shards = resolve_shards(shards_spec)
    check_match_rules(shards)
    sizes = shard_sizes(shards)
    total = sum(sizes.values()) if sizes is not None else None
    balance = None
    if per_query_cap is not None:
        balance = plan_balance(shards, per_query_cap, balance_mode, seed, language_caps)
        log.info("load-time balance (%s, cap %d per query%s, seed %d): keeps %d of %d samples (%s); %d queries "
                 "over the cap", balance_mode, per_query_cap, f", per language {language_caps}" if language_caps
                 else "", seed, balance.kept, balance.total,
                 ", ".join(f"{k} {v}" for k, v in balance.kept_by_language.items()), len(balance.cuts))
        if sizes is not None and balance.total != total:
            raise DataError(f"the shards hold {balance.total} samples but sizes.json says {total}; rewrite "
                            f"sizes.json (finalize writes it) before balancing at load time")
        total = balance.kept
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
                    samples_per_epoch, image_size, gpu_decode,
                    tuple(sizes[url] for url in shards) if sizes is not None else None, balance)


# ---- one stream: read, shuffle, skip, decode, batch ----

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
    languages: dict[str, int] = field(default_factory=dict)  # 'ja/trained', 'ja/over_cap': per sample language

    def pin_memory(self) -> StreamItem:
        """Called by DataLoader(pin_memory=True): page-locked tensors make the host-to-GPU copy asynchronous."""
        if self.batch is not None:
            self.batch = {k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in self.batch.items()}
        return self


def stream_items(plan: DataPlan, tokenizer: Tokenizer, epoch: int, local_stream: int,
                 skip: int) -> Iterator[StreamItem]:
    """The stream's batches after its first ``skip`` raw samples, then end markers forever.

    A batch is ``{"images": (B, 3, S, S) uint8, "tokens": (B, L)}``, or on the GPU path ``{"jpeg": B byte
    tensors, "boxes": (B, 4) crop boxes (left, top, right, bottom) px, "tokens": (B, L)}``; B = ``plan.batch_size``.
    """
    counts: Counter = Counter()
    by_language: Counter = Counter()  # 'lang/trained' (in this batch), 'lang/over_cap'
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
    samples = raw_samples(shard_urls(), on_error)
    shuffled = filters._shuffle(samples, bufsize=plan.shuffle_buffer, initial=plan.shuffle_buffer,
                                rng=random.Random(f"{plan.seed}/{epoch}/samples/{g}"))
    images: list = []
    captions: list[str] = []
    langs: list[str] = []  # of the batch being filled
    for sample in shuffled:
        index, position = position, position + 1
        if index < skip:
            continue
        lang = sample_language(sample.get("json"))
        if plan.balance is not None and not plan.balance.keeps_sample(sample):
            counts["over_cap"] += 1  # not a drop: the load-time cap leaves it out of every epoch
            by_language[f"{lang}/over_cap"] += 1
            continue
        if sample.get("__damaged__") and (first_member(sample, TEXT_KEYS) is None
                                          or first_member(sample, IMAGE_KEYS) is None):
            counts["damaged_tar"] += 1  # its missing member sat under a damaged tar header (logged with the shard)
            continue
        caption = _decode_caption(sample, counts)
        if caption is None:
            continue
        rng = random.Random(f"{plan.seed}/{epoch}/crop/{g}/{index}")
        item: torch.Tensor | tuple[torch.Tensor, tuple[int, int, int, int]] | None  # HWC uint8 crop | (JPEG, box)
        if plan.gpu_decode:
            item = _gpu_item(sample, plan.image_size, rng, counts)
        else:
            image = _decode_pil(sample, plan.image_size, counts)
            item = random_resized_crop_uint8(image, plan.image_size, rng) if image is not None else None
        if item is None:
            continue
        images.append(item)
        captions.append(caption)
        langs.append(lang)
        if len(images) == plan.batch_size:
            by_language.update(f"{lang}/trained" for lang in langs)
            yield StreamItem(local_stream, _collate(images, captions, tokenizer, plan.gpu_decode), position,
                             dict(counts), dict(by_language))
            counts.clear()
            by_language.clear()
            images, captions, langs = [], [], []
    # A short last batch is dropped (fixed shapes for compile and all_gather); its samples are counted.
    if images:
        counts["partial_batch_dropped"] += len(images)
    while True:
        yield StreamItem(local_stream, None, position, dict(counts), dict(by_language))
        counts.clear()
        by_language.clear()


def _collate(images: list, captions: list[str], tokenizer: Tokenizer, gpu_decode: bool) -> dict:
    tokens = tokenizer(captions)  # (B, L)
    if gpu_decode:
        return {"jpeg": [data for data, _ in images], "boxes": torch.tensor([box for _, box in images]),
                "tokens": tokens}
    # One copy of the HWC crops into the batch; the (B, 3, H, W) view is channels-last, which the device keeps.
    return {"images": torch.stack(images).permute(0, 3, 1, 2), "tokens": tokens}  # (B, 3, H, W) uint8, (B, L)


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
    """(B, 3, S, S) normalised float32 images and (B, L) tokens on ``device``; uint8 crosses the bus and is
    normalised there. On the GPU-decode path B may shrink (images nvJPEG rejects are dropped)."""
    if plan.gpu_decode:
        return gpu_decode_batch(batch, plan.image_size, device)
    images = batch["images"].to(device, non_blocking=True)
    return normalize_uint8(images), batch["tokens"].to(device, non_blocking=True)


def gpu_decode_batch(batch: dict, image_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode a GPU-path batch on ``device`` with nvJPEG (torchvision.io.decode_jpeg), then crop, resize and
    normalise there -> (B', 3, S, S) images and (B', L) tokens. Images nvJPEG rejects are dropped together with
    their captions, and logged; DataError when none is left."""
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
    kept = [(i, image) for i, image in enumerate(decoded) if image is not None]
    if not kept:
        raise DataError("no image of a batch could be decoded on the GPU; rerun without --gpu-decode")
    keep = [i for i, _ in kept]
    crops = []
    for (_, image), (left, top, right, bottom) in zip(kept, boxes[keep].tolist(), strict=True):
        crop = image[:, top:bottom, left:right].unsqueeze(0).float()  # (1, 3, h, w)
        crops.append(torch.nn.functional.interpolate(crop, size=(image_size, image_size), mode="bicubic",
                                                     antialias=True, align_corners=False))
    return normalize_uint8(torch.cat(crops).clamp(0, 255)), keep  # (B, 3, S, S)


def torchvision_gpu_decode_available() -> bool:
    """Whether ``--gpu-decode`` can run here: torchvision importable and a CUDA device present."""
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
    """The loader position at the start of ``epoch`` with ``streams`` streams per rank (what checkpoints store)."""
    return {"epoch": epoch, "step_in_epoch": 0, "items": 0, "positions": [0] * streams, "exhausted": [],
            "counts": {}, "epoch_counts": {}, "epoch_languages": {}}


_LIVE: weakref.WeakSet[Loader] = weakref.WeakSet()


@atexit.register
def _close_live_loaders() -> None:
    # Registered after torch imported multiprocessing, so it runs before multiprocessing's exit handler, which
    # would terminate (SIGTERM, ignored by our workers) and then join the workers of an unfinished epoch forever.
    for loader in list(_LIVE):
        loader.close()


def _quiet_worker(worker_id: int) -> None:
    # Ctrl-C reaches the whole process group: the training process checkpoints and stops its workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class Loader:
    """Yields (batch dict, epoch) forever across epochs; ``state()`` is the exact position to resume from.

    Every finished epoch appends its accounting to ``reports`` (see ``epoch_report``); ``finished_epochs`` takes
    them.

    Worker processes (``plan.workers`` > 0) live while an epoch is read. They stop when the epoch ends, when the
    iterator is closed or dropped, on ``close()`` (also as a context manager's exit) and at interpreter exit:
    a script that takes a few batches and returns exits (the workers ignore SIGTERM, so that a preemption
    reaches the training process first; Python's own exit handler would wait on them forever)."""

    def __init__(self, plan: DataPlan, tokenizer: Tokenizer, state: dict | None = None, pin_memory: bool = False):
        self.plan = plan
        self.tokenizer_json = tokenizer.to_json()
        self.pin_memory = pin_memory
        self._state = state or new_epoch_state(0, plan.streams_per_rank)
        self._state.setdefault("epoch_counts", {})  # checkpoints written before per-epoch accounting
        if len(self._state["positions"]) != plan.streams_per_rank:
            raise DataError(f"the checkpoint's data position has {len(self._state['positions'])} streams per rank "
                            f"but this run has {plan.streams_per_rank}; resume with the same --workers")
        self.totals: Counter = Counter(self._state.get("counts", {}))
        self.epoch_counts: Counter = Counter(self._state["epoch_counts"])
        self.epoch_languages: Counter = Counter(self._state.get("epoch_languages", {}))  # 'ja/trained' -> n
        self.reports: list[dict] = []
        self._workers: Any = None  # the DataLoader iterator of the epoch being read (its worker processes)
        _LIVE.add(self)

    def close(self) -> None:
        """Stop the worker processes of the epoch being read (nothing to do without workers). Idempotent; the
        position stays where the consumed batches left it."""
        workers, self._workers = self._workers, None
        shutdown = getattr(workers, "_shutdown_workers", None)  # torch's DataLoader iterator; __del__ calls it too
        if shutdown is not None:
            shutdown()

    def __enter__(self) -> Loader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def finished_epochs(self) -> list[dict]:
        """The reports of the epochs finished since the last call, oldest first (``epoch_report``'s dicts)."""
        reports, self.reports = self.reports, []
        return reports

    def state(self) -> dict:
        """A copy of the position to resume from (JSON-able: epoch, step, per-stream positions, counts)."""
        return {**self._state, "positions": list(self._state["positions"]),
                "exhausted": list(self._state["exhausted"]), "counts": dict(self.totals),
                "epoch_counts": dict(self.epoch_counts), "epoch_languages": dict(self.epoch_languages)}

    def _epoch_items(self) -> Iterator[StreamItem]:
        dataset = _Streams(self.plan, self.tokenizer_json, self._state["epoch"], self.state())
        if self.plan.workers == 0:  # the same single stream, read in the training process
            return iter(dataset)
        self.close()  # a previous epoch's workers, when its iterator was left unfinished
        self._workers = iter(torch.utils.data.DataLoader(
            dataset, batch_size=None, num_workers=self.plan.workers, pin_memory=self.pin_memory,
            prefetch_factor=4, persistent_workers=False, worker_init_fn=_quiet_worker,
        ))
        return self._workers

    def __iter__(self) -> Iterator[tuple[dict, int]]:
        while True:
            epoch, produced = self._state["epoch"], 0
            # A checkpoint written on an epoch's last step resumes into an epoch with nothing left: not an error.
            fresh = self._state["step_in_epoch"] == 0 and self._state["items"] == 0
            for batch in self.epoch_batches():
                produced += 1
                yield batch, epoch
            if produced == 0 and fresh:  # an empty epoch would repeat forever
                raise DataError(
                    f"epoch {epoch} produced no batch: no stream of {self.plan.streams_per_rank} per rank holds "
                    f"{self.plan.batch_size} readable samples (dropped: {dict(self.totals) or 'none'}); lower "
                    f"--batch-size or --workers, or check the shards")

    def epoch_batches(self) -> Iterator[dict]:
        """The rest of the current epoch's batches; afterwards the position points at the next epoch's start."""
        items = self._epoch_items()
        limit = self.plan.steps_per_epoch
        try:
            while True:
                item = None
                if limit is None or self._state["step_in_epoch"] < limit:
                    item = self._next_batch(items)
                # Every rank ends the epoch at the same step. A batch another rank's end leaves unused is not
                # committed to the position: its samples count as not reached. (When all agree, this rank's item
                # holds a batch: the last two tests only narrow the types.)
                if not all_ranks_agree(item is not None) or item is None or item.batch is None:
                    break
                self._commit(item)
                self._state["step_in_epoch"] += 1
                yield item.batch
        finally:  # the epoch ended, or the iterator was closed or dropped: its workers stop either way
            del items
            self.close()
        report = self.epoch_report(ended=True)
        self.reports.append(report)
        log.info("%s", describe_epoch(report))
        self._state = new_epoch_state(self._state["epoch"] + 1, self.plan.streams_per_rank)
        self._state["counts"] = dict(self.totals)
        self.epoch_counts = Counter()
        self.epoch_languages = Counter()

    def _commit(self, item: StreamItem) -> None:
        self._state["items"] += 1
        self._state["positions"][item.stream] = item.position
        self.totals.update(item.counts)
        self.epoch_counts.update(item.counts)
        self.epoch_languages.update(item.languages)

    def _next_batch(self, items: Iterator[StreamItem]) -> StreamItem | None:
        """The next stream item holding a batch (not yet committed), or None once every stream is exhausted."""
        streams = self.plan.streams_per_rank
        while len(self._state["exhausted"]) < streams:
            item = next(items)
            if item.batch is not None:
                return item
            self._commit(item)
            if item.stream not in self._state["exhausted"]:
                self._state["exhausted"].append(item.stream)
        return None

    def epoch_report(self, ended: bool = False) -> dict:
        """The current epoch's accounting, summed over ranks (every rank must call it at the same point):

        ``samples_planned`` (sizes.json, or None when unknown or resampled), ``samples_trained`` (steps x global
        batch) and ``left_out``: samples of the epoch not trained on, by reason — the per-sample skips
        (corrupt_image, incomplete, bad_caption, over_cap, damaged_tar: a member lost under a damaged tar
        header), ``partial_batch_dropped`` (a stream's short last
        batch), ``not_reached`` (still unread when the epoch ended: the epoch's step limit or another rank's
        end), ``missing`` (sizes.json promised them but the shard ended or could not be read). With sizes
        known, trained + left out == planned (``unlisted``: samples beyond what sizes.json promised).
        ``complete``: the epoch ended (``ended``, as the loader says when all ranks agreed on its end), or its
        step limit is reached, or every stream of every rank is exhausted.
        ``uncounted_streams``: streams cut off early whose rest is unknown (no sizes.json)."""
        plan, st = self.plan, self._state
        left: Counter = Counter({k: v for k, v in self.epoch_counts.items() if k != "unreadable_shard"})
        planned: int | None = 0
        uncounted, unlisted = 0, 0
        for stream in range(plan.streams_per_rank):
            size = plan.stream_size(st["epoch"], stream)
            if size is None:
                planned = None
                uncounted += stream not in st["exhausted"] and not plan.resampled
                continue
            if planned is not None:
                planned += size
            rest = size - st["positions"][stream]
            if rest < 0:
                unlisted -= rest
            elif rest:
                left["missing" if stream in st["exhausted"] else "not_reached"] += rest
        local = {"trained": st["step_in_epoch"] * plan.batch_size, "left": dict(left), "planned": planned,
                 "uncounted": uncounted, "unlisted": unlisted, "languages": dict(self.epoch_languages),
                 "unreadable_shards": self.epoch_counts.get("unreadable_shard", 0)}
        local["done"] = ended or (plan.steps_per_epoch is not None and st["step_in_epoch"] >= plan.steps_per_epoch) \
            or len(st["exhausted"]) == plan.streams_per_rank
        parts = all_gather(local)
        total_left: Counter = Counter()
        for part in parts:
            total_left.update(part["left"])
        plans = [part["planned"] for part in parts]
        by_language: Counter = Counter()
        for part in parts:
            by_language.update(part["languages"])
        return {
            "epoch": st["epoch"], "steps": st["step_in_epoch"],
            "complete": all(part["done"] for part in parts),
            "samples_planned": None if None in plans else sum(plans),
            "samples_trained": sum(part["trained"] for part in parts),
            "left_out": {k: v for k, v in sorted(total_left.items()) if v},
            "unlisted": sum(part["unlisted"] for part in parts),
            "unreadable_shards": sum(part["unreadable_shards"] for part in parts),
            "uncounted_streams": sum(part["uncounted"] for part in parts),
            **_language_report(by_language),
        }


def _language_report(by_language: Counter) -> dict:
    """``{"languages": {lang: {"trained": n, "over_cap": m}}}`` from 'lang/what' counts; {} when no sample carried
    a language (shards without ``lang``: the report keeps its earlier shape)."""
    languages: dict[str, dict[str, int]] = {}
    for key, n in sorted(by_language.items()):
        lang, _, what = key.partition("/")
        languages.setdefault(lang, {"trained": 0, "over_cap": 0})[what] = n
    return {"languages": languages} if set(languages) - {UNDETERMINED} else {}


def describe_epoch(report: dict) -> str:
    """One line: 'epoch 0: trained 48 of 56 samples; left out 8 (partial_batch_dropped 8)'."""
    planned = report["samples_planned"]
    left = report["left_out"]
    words = f"epoch {report['epoch']}{'' if report['complete'] else ' (in progress)'}: trained " \
            f"{report['samples_trained']}{f' of {planned}' if planned is not None else ''} samples in " \
            f"{report['steps']} steps; left out "
    words += f"{sum(left.values())} ({', '.join(f'{k} {v}' for k, v in left.items())})" if left else "none"
    if report["uncounted_streams"]:
        words += (f", plus the unread rest of {report['uncounted_streams']} stream(s), not counted: no sizes.json "
                  f"beside the shards")
    if report["unlisted"]:
        words += f"; {report['unlisted']} samples more than sizes.json lists"
    if report["unreadable_shards"]:
        words += f"; {report['unreadable_shards']} shard(s) unreadable"
    if report.get("languages"):
        words += "; trained per language: " + ", ".join(
            f"{lang} {n['trained']}" + (f" ({n['over_cap']} over the cap)" if n["over_cap"] else "")
            for lang, n in report["languages"].items())
    return words


def plan_fields(plan: DataPlan) -> dict:
    """What a checkpoint records about the plan (JSON-able), to refuse a resume whose data order would differ:
    every field but the rank, with shard names rather than URLs (a moved folder still resumes) and the balance
    as its settings and kept count."""
    fields = {f.name: getattr(plan, f.name) for f in dataclasses.fields(plan) if f.name not in ("rank", "balance")}
    fields["shards"] = [url.rsplit("/", 1)[-1] for url in plan.shards]
    fields["sizes"] = list(plan.sizes) if plan.sizes is not None else None
    fields["num_shards"] = len(plan.shards)
    fields["balance"] = plan.balance.settings() if plan.balance is not None else None
    return fields


def plan_differences(old: dict, new: dict) -> list[str]:
    """What changed between a checkpoint's ``plan_fields`` and this run's, in words; [] when resumable."""
    changes = []
    old_shards, new_shards = old.get("shards"), new["shards"]
    if old_shards is not None and old_shards != new_shards:
        added = sorted(set(new_shards) - set(old_shards))
        removed = sorted(set(old_shards) - set(new_shards))
        changes.append("the shard list changed" + (f": {len(added)} added ({', '.join(added[:3])}"
                                                    f"{' ...' if len(added) > 3 else ''})" if added else "")
                       + (f"; {len(removed)} removed ({', '.join(removed[:3])}{' ...' if len(removed) > 3 else ''})"
                          if removed else ""))
    elif old.get("num_shards") is not None and old["num_shards"] != new["num_shards"]:
        changes.append(f"the checkpoint read {old['num_shards']} shards, this run finds {new['num_shards']}")
    if "sizes" in old and old["sizes"] != new["sizes"] and not changes:
        changes.append("sizes.json changed (sample counts per shard differ)")
    for key, flag in (("samples_per_epoch", "--samples-per-epoch"), ("balance", "--per-query-cap/--balance"),
                      ("workers", "--workers"), ("batch_size", "--batch-size"), ("seed", "--seed"),
                      ("shuffle_buffer", "--shuffle-buffer"), ("resampled", "--resampled (or --allow-repeat)"),
                      ("image_size", "--model"), ("gpu_decode", "--gpu-decode")):
        if key in old and old[key] != new[key]:
            changes.append(f"{flag}: the checkpoint's plan has {key} {old[key]!r}, this run {new[key]!r}")
    return changes
