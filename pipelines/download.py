"""Stage 3, ``wit download``: fetch, check and resize the images of the pairs, one raw shard per url shard.

The launcher reads only the input parquet footers and cuts the rows, in file and row order, into url shards
of ``--rows-per-shard`` rows (the same input always gives the same shards). Each shard is one Beam element;
after a Reshuffle (so that shards spread over workers) a per-shard DoFn downloads its rows with the chosen
engine and writes ``{shard}.tar``, ``{shard}.parquet`` and, last, ``{shard}_stats.json``, each
temp-then-rename. A rerun skips shards whose three files exist, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from pipelines import common
from schemas import stats as stats_schema
from schemas.download import RAW_STATUSES
from schemas.pairs import PAIRS_GLOB
from wit_builder import options, progress, raw_shards
from wit_builder.fetch import FetchConfig
from wit_builder.images import ENCODE_FORMATS, RESIZE_MODES, ImageConfig
from wit_builder.options import option

NAMESPACE = "download"
ENGINES = ("native", "img2dataset")
PLAN_JSON = "plan.json"
STATS_JSON = "stats.json"
INPUT_COLUMNS = ("uid", "url", "caption", "queries")
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DownloadConfig:
    """Everything a shard worker needs; picklable, validated once at the launcher."""

    out: str
    engine: str = "native"
    rows_per_shard: int = 10_000
    threads: int = 64
    fetch: FetchConfig = dataclasses.field(default_factory=FetchConfig)
    image: ImageConfig = dataclasses.field(default_factory=ImageConfig)

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        if self.rows_per_shard < 1:
            raise ValueError(f"rows_per_shard must be >= 1, got {self.rows_per_shard}")
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")


@dataclass(frozen=True)
class ShardSpec:
    """One url shard: row ranges ``[start, stop)`` of input files, in order."""

    shard_id: int
    slices: tuple[tuple[str, int, int], ...]

    @property
    def rows(self) -> int:
        return sum(stop - start for _, start, stop in self.slices)


class InputError(ValueError):
    """Input that cannot be downloaded; the message names the file and what to do."""


def input_files(pattern: str) -> list[str]:
    """A file or glob as given; a folder means stage 2's ``pairs-*.parquet`` in it, else all its ``*.parquet``.

    Folders are recognised by name, not by ``exists()``: object stores (gs://, s3://) have no folders.
    """
    if pattern.endswith(".parquet") or any(ch in pattern for ch in "*?["):
        return common.expand_patterns([pattern], what="--pairs")
    for name in (PAIRS_GLOB, "*.parquet"):
        try:
            return common.expand_patterns([common.join(pattern, name)], what="--pairs")
        except FileNotFoundError:
            continue
    raise FileNotFoundError(f"--pairs {pattern!r} holds no {PAIRS_GLOB} nor any *.parquet file")


def plan_shards(paths: list[str], rows_per_shard: int) -> list[ShardSpec]:
    """Cut the rows of ``paths`` (footers only) into consecutive shards of ``rows_per_shard`` rows."""
    shards: list[ShardSpec] = []
    current: list[tuple[str, int, int]] = []
    filled = 0
    for path in paths:
        try:
            with common.open_read(path) as f:
                footer = pq.ParquetFile(f)
                names, total = set(footer.schema_arrow.names), footer.metadata.num_rows
        except Exception as e:  # pyarrow raises ArrowInvalid, OSError, ... for a bad file
            raise InputError(f"{path}: not a readable parquet file ({e}); pass the pairs of `wit build-pairs`") from e
        if "url" not in names:
            raise InputError(f"{path}: no 'url' column (has {sorted(names)}); pass a url/caption parquet")
        start = 0
        while start < total:
            take = min(rows_per_shard - filled, total - start)
            current.append((path, start, start + take))
            filled += take
            start += take
            if filled == rows_per_shard:
                shards.append(ShardSpec(len(shards), tuple(current)))
                current, filled = [], 0
    if current:
        shards.append(ShardSpec(len(shards), tuple(current)))
    return shards


def read_shard_rows(spec: ShardSpec) -> list[dict[str, Any]]:
    """The shard's input rows, reading only the row groups that hold them."""
    rows: list[dict[str, Any]] = []
    for path, start, stop in spec.slices:
        with common.open_read(path) as f:  # seekable: only the footer and the needed row groups are read
            pf = pq.ParquetFile(f)
            columns = [c for c in INPUT_COLUMNS if c in pf.schema_arrow.names]
            groups, first, offset = [], None, 0
            for g in range(pf.metadata.num_row_groups):
                n = pf.metadata.row_group(g).num_rows
                if offset + n > start and offset < stop:
                    groups.append(g)
                    first = offset if first is None else first
                offset += n
            table = pf.read_row_groups(groups, columns=columns).slice(start - (first or 0), stop - start)
        rows.extend(table.to_pylist())
    return rows


def shard_paths(out: str, shard_id: int) -> tuple[str, str, str]:
    return tuple(common.join(out, name) for name in raw_shards.shard_files(shard_id))  # type: ignore[return-value]


def shard_complete(out: str, shard_id: int) -> bool:
    return all(common.exists(p) for p in shard_paths(out, shard_id))


def remove_leftovers(out: str, shard_id: int) -> None:
    """Delete the temporary files a killed attempt at this shard left behind (never a final name)."""
    pattern = common.join(out, f"{raw_shards.shard_name(shard_id)}*.tmp-*")
    leftovers = [m.path for m in FileSystems.match([pattern])[0].metadata_list]
    if leftovers:
        FileSystems.delete(leftovers)


class DownloadShardFn(beam.DoFn):
    """Downloads one url shard and writes its raw shard; yields the shard's stats."""

    def __init__(self, config: DownloadConfig) -> None:
        self.config = config
        self.fetcher = None
        self.status_counters = {s: Metrics.counter(NAMESPACE, s) for s in RAW_STATUSES}
        self.rows_counter = Metrics.counter(NAMESPACE, "rows")
        self.skipped_counter = Metrics.counter(NAMESPACE, "shards_skipped_complete")
        self.written_counter = Metrics.counter(NAMESPACE, "shards_written")

    def setup(self) -> None:
        if self.config.engine == "native":
            from wit_builder.fetch import Fetcher

            self.fetcher = Fetcher(self.config.fetch)

    def teardown(self) -> None:
        if self.fetcher is not None:
            self.fetcher.close()

    def process(self, spec: ShardSpec):
        cfg = self.config
        tar_path, parquet_path, stats_path = shard_paths(cfg.out, spec.shard_id)
        if shard_complete(cfg.out, spec.shard_id):
            self.skipped_counter.inc()
            yield common.read_json(stats_path)
            return
        started = time.monotonic()
        remove_leftovers(cfg.out, spec.shard_id)
        rows = read_shard_rows(spec)
        samples = self._download(spec, rows)
        if len(samples) != len(rows):
            raise AssertionError(f"shard {spec.shard_id}: {len(rows)} rows in, {len(samples)} out")
        with common.atomic_create(tar_path) as f:
            raw_shards.write_tar(f, samples)
        common.write_parquet(parquet_path, raw_shards.rows_table(samples))
        stats = raw_shards.shard_stats(spec.shard_id, samples, cfg.engine)
        common.write_json(stats_path, stats)  # last: its presence marks the shard complete
        for status, n in stats["statuses"].items():
            self.status_counters[status].inc(n)
        self.rows_counter.inc(len(rows))
        self.written_counter.inc()
        progress.reporter("download", "rows").add(len(rows), success=stats["successes"])
        elapsed = time.monotonic() - started
        logger.info("shard %s: %d rows, %d ok in %.1fs (%.1f rows/s)", raw_shards.shard_name(spec.shard_id),
                    len(rows), stats["successes"], elapsed, len(rows) / max(elapsed, 1e-9))
        yield stats

    def _download(self, spec: ShardSpec, rows: list[dict[str, Any]]) -> list[raw_shards.RawSample]:
        cfg = self.config
        if cfg.engine == "native":
            from wit_builder.download_shard import download_rows

            return download_rows(rows, spec.shard_id, cfg.rows_per_shard, self.fetcher, cfg.image, cfg.threads)
        from wit_builder.img2dataset_engine import download_rows_img2dataset

        workdir = tempfile.mkdtemp(prefix=f"wit-img2dataset-{spec.shard_id}-")
        try:
            return download_rows_img2dataset(rows, spec.shard_id, cfg.rows_per_shard, cfg.fetch, cfg.image,
                                             cfg.threads, workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


class Download(beam.PTransform):
    """url shards -> raw shards on disk -> per-shard stats."""

    def __init__(self, config: DownloadConfig) -> None:
        super().__init__()
        self.config = config

    def expand(self, specs):
        return (
            specs
            | "SpreadShards" >> beam.Reshuffle()
            | "DownloadShard" >> beam.ParDo(DownloadShardFn(self.config))
        )


# ---- command line ----

_F, _I = FetchConfig, ImageConfig
_IMG, _NET = "images", "network"


@dataclass(frozen=True)
class DownloadOptions:
    """``wit download``'s settings; the flags, defaults and help are generated from these fields."""

    pairs: tuple[str, ...] = option(help="pairs directory, parquet file or glob (needs a url column); repeatable")
    out: str = option(help="output directory for raw shards")
    engine: str = option(DownloadConfig.engine, choices=ENGINES,
                         help="native (requests + Pillow, polite and safe) or img2dataset (the peer, unchanged)")
    rows_per_shard: int = option(DownloadConfig.rows_per_shard, unit="rows",
                                 help="input rows per url shard (one Beam element, one raw shard)")
    threads: int = option(DownloadConfig.threads, help="requests in flight per worker")
    image_size: int = option(_I.image_size, unit="px", group=_IMG, help="target side")
    resize_mode: str = option(_I.resize_mode, choices=RESIZE_MODES, group=_IMG, help="img2dataset's resize modes")
    encode_format: str = option(_I.encode_format, choices=tuple(ENCODE_FORMATS), group=_IMG,
                                help="stored image format")
    encode_quality: int = option(_I.encode_quality, group=_IMG, help="encoder quality, 1-100")
    min_image_size: int = option(_I.min_image_size, unit="px", group=_IMG,
                                 help="smallest accepted side (smaller: status filtered)")
    max_aspect_ratio: float = option(_I.max_aspect_ratio, group=_IMG,
                                     help="largest accepted long/short side ratio (larger: status filtered)")
    max_image_pixels: int = option(_I.max_image_pixels, unit="px", group=_IMG,
                                   help="refuse images whose header declares more pixels (decompression bombs)")
    timeout: float | None = option(None, unit="s", group=_NET,
                                   help=f"connect and read timeout; none: the fetcher's {_F.connect_timeout_s} s "
                                        f"connect, {_F.read_timeout_s} s read")
    deadline: float = option(_F.deadline_s, unit="s", group=_NET, help="total time per attempt")
    max_bytes: int = option(_F.max_bytes, unit="bytes", group=_NET, help="largest body read")
    retries: int = option(_F.retries, group=_NET, help="extra attempts for transient failures")
    backoff_base: float = option(_F.backoff_base_s, unit="s", group=_NET, help="first backoff")
    backoff_max: float = option(_F.backoff_max_s, unit="s", group=_NET,
                                help="longest backoff, and the longest Retry-After honoured")
    per_host_concurrency: int = option(_F.per_host_concurrency, group=_NET,
                                       help="requests in flight per host per worker")
    per_host_rate: float = option(_F.per_host_rate, unit="requests/s", group=_NET,
                                  help="request starts per second per host per worker (0: unlimited)")
    user_agent_contact: str | None = option(None, group=_NET, help="URL or e-mail put in the User-Agent")
    allow_private_networks: bool = option(False, group=_NET,
                                          help="allow loopback and private addresses (tests, intranet mirrors)")
    allow_link_local: bool = option(False, group=_NET, help="also allow link-local addresses (169.254/16: cloud "
                                                            "metadata!); separate on purpose")
    robots: bool = option(True, negate="--no-robots", group=_NET, help="ignore robots.txt")
    x_robots_tag: bool = option(True, negate="--no-x-robots-tag", group=_NET,
                                help="ignore X-Robots-Tag noai/noindex opt-outs")

    def __post_init__(self) -> None:
        config_from_args(self)


OPTIONS = DownloadOptions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    options.add_arguments(parser, OPTIONS)


def config_from_args(args: DownloadOptions) -> DownloadConfig:
    defaults = FetchConfig()
    fetch = FetchConfig(
        connect_timeout_s=defaults.connect_timeout_s if args.timeout is None else args.timeout,
        read_timeout_s=defaults.read_timeout_s if args.timeout is None else args.timeout, deadline_s=args.deadline,
        max_bytes=args.max_bytes, retries=args.retries, backoff_base_s=args.backoff_base,
        backoff_max_s=args.backoff_max, per_host_concurrency=args.per_host_concurrency,
        per_host_rate=args.per_host_rate, user_agent_contact=args.user_agent_contact,
        allow_private_networks=args.allow_private_networks, allow_link_local=args.allow_link_local,
        respect_robots_txt=args.robots, respect_x_robots_tag=args.x_robots_tag,
        pool_maxsize=max(args.per_host_concurrency, 1),
    )
    image = ImageConfig(
        image_size=args.image_size, resize_mode=args.resize_mode, encode_format=args.encode_format,
        encode_quality=args.encode_quality, min_image_size=args.min_image_size,
        max_aspect_ratio=args.max_aspect_ratio, max_image_pixels=args.max_image_pixels,
    )
    return DownloadConfig(out=args.out, engine=args.engine, rows_per_shard=args.rows_per_shard,
                          threads=args.threads, fetch=fetch, image=image)


def _check_plan(out: str, plan: dict[str, Any]) -> None:
    """A rerun must cut the same shards, or skipping complete shards would mix two different runs."""
    path = common.join(out, PLAN_JSON)
    if common.exists(path):
        previous = common.read_json(path)
        if previous != plan:
            raise InputError(f"{path}: this output folder holds a run with other inputs or --rows-per-shard "
                             f"(was {previous}); use a fresh --out or the same inputs")
    else:
        common.write_json(path, plan)


def summarize(out: str, shard_ids: list[int]) -> dict[str, Any]:
    """The sum of every shard's stats (complete shards from earlier runs included)."""
    totals: dict[str, Any] = {"shards": 0, "count": 0, "statuses": dict.fromkeys(RAW_STATUSES, 0),
                              "bytes_downloaded": 0}
    for shard_id in shard_ids:
        stats = common.read_json(shard_paths(out, shard_id)[2])
        totals["shards"] += 1
        totals["count"] += stats["count"]
        totals["bytes_downloaded"] += stats["bytes_downloaded"]
        for status, n in stats["statuses"].items():
            totals["statuses"][status] = totals["statuses"].get(status, 0) + n
    return totals


def stats_document(args: DownloadOptions, specs: list[ShardSpec], totals: dict[str, Any],
                   seconds: float) -> dict[str, Any]:
    """stats.json in the declared layout (schemas/stats.py), from the shards' own stats files."""
    rows_in: dict[str, int] = {}
    for spec in specs:
        for path, start, stop in spec.slices:
            rows_in[path] = rows_in.get(path, 0) + stop - start
    counts = {"shards": totals["shards"], "rows": totals["count"], "bytes_downloaded": totals["bytes_downloaded"],
              **{f"status_{k}": v for k, v in totals["statuses"].items()}}
    return stats_schema.envelope(
        "download",
        inputs=[stats_schema.input_entry(path, rows=n) for path, n in rows_in.items()],
        parameters=options.as_parameters(args, skip=("out",)),
        counts=counts,
        outputs=[stats_schema.output_entry(raw_shards.shard_files(s.shard_id)[1], s.rows) for s in specs],
        seconds=seconds,
        details={"statuses": totals["statuses"]},
    )


def _write_stats(out: str, doc: dict[str, Any], unchanged_run: bool) -> None:
    """Write stats.json; a rerun that downloaded nothing keeps the file when only its timings would change."""
    path = common.join(out, STATS_JSON)
    if unchanged_run and common.exists(path):
        try:
            old = common.read_json(path)
            stats_schema.validate(old)
        except (ValueError, OSError):
            old = None
        if old is not None and {k: v for k, v in old.items() if k != "timings"} == {
                k: v for k, v in doc.items() if k != "timings"}:
            return
    common.write_json(path, doc)


def run(args: DownloadOptions, beam_argv: list[str]) -> int:
    try:
        config = config_from_args(args)
        if config.engine == "img2dataset":
            from wit_builder.img2dataset_engine import INSTALL_HINT, img2dataset_available

            if not img2dataset_available():
                raise InputError(INSTALL_HINT)
        paths = list(dict.fromkeys(p for pattern in args.pairs for p in input_files(pattern)))
        specs = plan_shards(paths, config.rows_per_shard)
        common.makedirs(config.out)
        _check_plan(config.out, {"inputs": paths, "rows_per_shard": config.rows_per_shard,
                                 "shards": len(specs), "rows": sum(s.rows for s in specs)})
    except (InputError, FileNotFoundError, ValueError) as e:
        print(f"wit download: error: {e}", file=sys.stderr, flush=True)
        return 2
    todo = [s for s in specs if not shard_complete(config.out, s.shard_id)]
    print(f"wit download: {sum(s.rows for s in specs)} rows in {len(specs)} shards of <= {config.rows_per_shard} "
          f"({len(specs) - len(todo)} already complete), engine {config.engine}", flush=True)
    started = time.monotonic()
    if todo:
        pipeline = beam.Pipeline(options=common.pipeline_options(beam_argv))
        _ = (
            pipeline
            | "UrlShards" >> beam.Create(todo)
            | "Download" >> Download(config)
        )
        common.run_pipeline(pipeline, config.out)
    totals = summarize(config.out, [s.shard_id for s in specs])
    elapsed = time.monotonic() - started
    _write_stats(config.out, stats_document(args, specs, totals, elapsed), unchanged_run=not todo)
    statuses = " ".join(f"{k}={v}" for k, v in totals["statuses"].items())
    print(progress.summary_line("download", [
        f"{totals['count']:,} rows in {len(specs)} shards: {statuses}",
        f"this run downloaded {sum(s.rows for s in todo):,} rows in {len(todo)} shards"], elapsed, config.out),
        flush=True)
    return 0
