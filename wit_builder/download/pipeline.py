"""Stage 3, ``wit download``: fetch, check and resize the images of the pairs, one raw shard per url shard.

The launcher reads the input parquet footers and url column and cuts the rows into url shards of at most
``--rows-per-shard`` rows grouped by host (``wit_builder.download.host_shards``; the same input always gives the same
shards). The shards of one host chain form one Beam element (after a GroupByKey that spreads the chains over
workers); a DoFn downloads the chain's shards one after another with the chosen engine and writes, per
shard, ``{shard}.tar``, ``{shard}.parquet`` and, last, ``{shard}_stats.json``, each temp-then-rename.
A rerun skips shards whose three files exist, so a killed run resumes where it stopped.

The settings are part of the output's identity: ``plan.json`` records the inputs, the shard cut and every
setting that decides what a shard holds (engine, image and network settings; not the speed-only
``--threads``, ``--per-host-concurrency``, ``--per-host-rate``). A rerun with other settings refuses, saying
what differs, unless ``--overwrite`` deletes the folder's shards first.

Exit status: 0 when the run finished and some row succeeded; 1 when the run failed; 2 for bad input or
settings found before any work (including a folder made with other settings); 3 when the run finished but
no row succeeded (every row refused or failed: the summary prints the top reasons and a hint).
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
from typing import TYPE_CHECKING, Any, ClassVar

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from schemas import stats as stats_schema
from schemas.download import RAW_STATUSES
from schemas.pairs import PAIRS_GLOB
from wit_builder.beam import fileio, launcher
from wit_builder.core import options, progress
from wit_builder.core.options import option
from wit_builder.core.table_checks import ColumnTypeError, check_pairs_input
from wit_builder.download import plan as download_plan
from wit_builder.download import raw_shards
from wit_builder.download.fetch import FetchConfig
from wit_builder.download.host_shards import HostPlanner, url_key
from wit_builder.download.images import ENCODE_FORMATS, RESIZE_MODES, ImageConfig

if TYPE_CHECKING:
    from wit_builder.download.fetch import Fetcher

NAMESPACE = "download"
ENGINES = ("native", "img2dataset")
PLAN_JSON = "plan.json"
STATS_JSON = "stats.json"
INPUT_COLUMNS = ("uid", "url", "caption", "queries")
EXIT_NOTHING_SUCCEEDED = 3
SPEED_ONLY_SETTINGS = download_plan.SPEED_ONLY_SETTINGS
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


ShardSpec = download_plan.ShardSpec


class InputError(ValueError):
    """Input that cannot be downloaded; the message names the file and what to do."""


def input_files(pattern: str) -> list[str]:
    """A file or glob as given; a folder means stage 2's ``pairs-*.parquet`` in it, else all its ``*.parquet``.

    Folders are recognised by name, not by ``exists()``: object stores (gs://, s3://) have no folders.
    """
    if pattern.endswith(".parquet") or any(ch in pattern for ch in "*?["):
        return fileio.expand_patterns([pattern], what="--pairs")
    for name in (PAIRS_GLOB, "*.parquet"):
        try:
            return fileio.expand_patterns([fileio.join(pattern, name)], what="--pairs")
        except FileNotFoundError:
            continue
    raise FileNotFoundError(f"--pairs {pattern!r} holds no {PAIRS_GLOB} nor any *.parquet file")


def plan_shards(paths: list[str], rows_per_shard: int) -> list[ShardSpec]:
    """Cut the rows of ``paths`` into url shards of at most ``rows_per_shard`` rows, grouped by host.

    Reads the footers and the url column only (about 20 us and 16 bytes of memory per row at the launcher).
    The same inputs always give the same shards. Rules: ``wit_builder.download.host_shards``.
    """
    planner = HostPlanner()
    offsets: list[int] = []
    for path in paths:
        try:
            with fileio.open_read(path) as f:
                footer = pq.ParquetFile(f)
                names = set(footer.schema_arrow.names)
                if "url" not in names:
                    raise InputError(f"{path}: no 'url' column (has {sorted(names)}); pass a url/caption parquet")
                if {"key", "status"} <= names:  # a download's own output: its rows were fetched already
                    raise InputError(f"{path}: a raw download shard (stage 3's output, it has 'key' and 'status' "
                                     "columns); --pairs takes stage 2's pairs (wit build-pairs --out)")
                try:  # types and duplicate names checked before any work (stage 2's rules, core.table_checks)
                    check_pairs_input(path, footer.schema_arrow)
                except ColumnTypeError as e:
                    raise InputError(str(e)) from e
                offsets.append(planner.rows)
                for batch in footer.iter_batches(batch_size=65_536, columns=["url"]):
                    planner.add(str(u) if u is not None else None for u in batch.column(0).to_pylist())
        except InputError:
            raise
        except Exception as e:  # pyarrow raises ArrowInvalid, OSError, ... for a bad file
            raise InputError(f"{path}: not a readable parquet file ({e}); pass the pairs of `wit build-pairs`") from e
    return download_plan.shard_specs(paths, offsets,
                                     ((planned.chain, planned.rows) for planned in planner.shards(rows_per_shard)))


def read_shard_rows(spec: ShardSpec) -> list[dict[str, Any]]:
    """The shard's input rows in its download order, reading only the row groups that hold them."""
    wanted: dict[int, list[int]] = {}
    for file_index, row in spec.members:
        wanted.setdefault(file_index, []).append(row)
    found: dict[tuple[int, int], dict[str, Any]] = {}
    for file_index, rows in sorted(wanted.items()):
        path = spec.paths[file_index]
        targets = sorted(set(rows))
        with fileio.open_read(path) as f:  # seekable: only the footer and the needed row groups are read
            pf = pq.ParquetFile(f)
            columns = [c for c in INPUT_COLUMNS if c in pf.schema_arrow.names]
            sizes = [pf.metadata.row_group(g).num_rows for g in range(pf.metadata.num_row_groups)]
            groups, positions = download_plan.row_group_selection(sizes, targets)
            table = pf.read_row_groups(groups, columns=columns)
            for row, values in zip(targets, table.take(positions).to_pylist(), strict=True):
                found[(file_index, row)] = values
    return [found[m] for m in spec.members]


def shard_paths(out: str, shard_id: int) -> tuple[str, str, str]:
    """(tar, parquet, stats) paths of a raw shard in ``out``; the stats file is written last."""
    tar, parquet, stats = raw_shards.shard_files(shard_id)
    return fileio.join(out, tar), fileio.join(out, parquet), fileio.join(out, stats)


def shard_complete(out: str, shard_id: int) -> bool:
    """Whether all three files of the shard exist (a complete shard; a rerun skips it)."""
    return all(fileio.exists(p) for p in shard_paths(out, shard_id))


def remove_leftovers(out: str, shard_id: int) -> None:
    """Delete the temporary files a killed attempt at this shard left behind (never a final name)."""
    pattern = fileio.join(out, f"{raw_shards.shard_name(shard_id)}*.tmp-*")
    leftovers = [m.path for m in FileSystems.match([pattern])[0].metadata_list]
    if leftovers:
        FileSystems.delete(leftovers)


class DownloadShardFn(beam.DoFn):
    """Downloads one url shard and writes its raw shard; yields the shard's stats."""

    def __init__(self, config: DownloadConfig) -> None:
        self.config = config
        self.fetcher: Fetcher | None = None
        self.status_counters = {s: Metrics.counter(NAMESPACE, s) for s in RAW_STATUSES}
        self.rows_counter = Metrics.counter(NAMESPACE, "rows")
        self.skipped_counter = Metrics.counter(NAMESPACE, "shards_skipped_complete")
        self.written_counter = Metrics.counter(NAMESPACE, "shards_written")

    def setup(self) -> None:
        if self.config.engine == "native":
            from wit_builder.download.fetch import Fetcher

            self.fetcher = Fetcher(self.config.fetch)

    def teardown(self) -> None:
        if self.fetcher is not None:
            self.fetcher.close()

    def process(self, element: tuple[int, Any]):
        """One host chain: its shards in order, one after another (see ``wit_builder.download.host_shards``)."""
        _, specs = element
        carry: dict[str, raw_shards.RawSample] = {}  # the URL at a shard boundary, handed to the next shard
        for spec in sorted(specs, key=lambda s: s.shard_id):
            yield from self._process_shard(spec, carry)

    def _process_shard(self, spec: ShardSpec, carry: dict[str, raw_shards.RawSample]):
        cfg = self.config
        tar_path, parquet_path, stats_path = shard_paths(cfg.out, spec.shard_id)
        if shard_complete(cfg.out, spec.shard_id):
            carry.clear()
            self.skipped_counter.inc()
            yield fileio.read_json(stats_path)
            return
        started = time.monotonic()
        remove_leftovers(cfg.out, spec.shard_id)
        rows = read_shard_rows(spec)
        samples = self._download(spec, rows, carry)
        if len(samples) != len(rows):
            raise AssertionError(f"shard {spec.shard_id}: {len(rows)} rows in, {len(samples)} out")
        carry.clear()
        if samples:
            carry[url_key(rows[-1].get("url"))] = samples[-1]
        with fileio.atomic_create(tar_path) as f:
            raw_shards.write_tar(f, samples)
        fileio.write_parquet(parquet_path, raw_shards.rows_table(samples))
        stats = raw_shards.shard_stats(spec.shard_id, samples, cfg.engine)
        fileio.write_json(stats_path, stats)  # last: its presence marks the shard complete
        for status, n in stats["statuses"].items():
            self.status_counters[status].inc(n)
        self.rows_counter.inc(len(rows))
        self.written_counter.inc()
        progress.reporter("download", "rows").add(len(rows), success=stats["successes"])
        elapsed = time.monotonic() - started
        logger.info("shard %s: %d rows, %d ok in %.1fs (%.1f rows/s)", raw_shards.shard_name(spec.shard_id),
                    len(rows), stats["successes"], elapsed, len(rows) / max(elapsed, 1e-9))
        yield stats

    def _download(self, spec: ShardSpec, rows: list[dict[str, Any]],
                  carry: dict[str, raw_shards.RawSample]) -> list[raw_shards.RawSample]:
        cfg = self.config
        if cfg.engine == "native":
            from wit_builder.download.shard import download_rows

            if self.fetcher is None:
                raise RuntimeError("DownloadShardFn: process() before setup() made the fetcher")
            return download_rows(rows, spec.shard_id, cfg.rows_per_shard, self.fetcher, cfg.image, cfg.threads,
                                 known=carry)
        from wit_builder.download.img2dataset_engine import download_rows_img2dataset

        workdir = tempfile.mkdtemp(prefix=f"wit-img2dataset-{spec.shard_id}-")
        try:
            return download_rows_img2dataset(rows, spec.shard_id, cfg.rows_per_shard, cfg.fetch, cfg.image,
                                             cfg.threads, workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


class Download(beam.PTransform):
    """url shards -> raw shards on disk -> per-shard stats.

    Shards are grouped by host chain: the group is the unit of parallelism, so no two workers ever serve
    one host at the same time and per-host limits hold for the whole run (``wit_builder.download.host_shards``).
    """

    def __init__(self, config: DownloadConfig) -> None:
        super().__init__()
        self.config = config

    def expand(self, specs):
        return (
            specs
            | "ByHostChain" >> beam.Map(lambda spec: (spec.chain, spec))
            | "GroupHostChains" >> beam.GroupByKey()  # also spreads the chains over workers
            | "DownloadChain" >> beam.ParDo(DownloadShardFn(self.config))
        )


# ---- command line ----

_F, _I = FetchConfig, ImageConfig
_IMG, _NET = "images", "network"


@dataclass(frozen=True)
class DownloadOptions:
    """``wit download``'s settings; the flags, defaults and help are generated from these fields."""

    # FetchConfig's names for what the user set with these flags (its errors name them: wit_builder.core.options)
    CONFIG_FLAGS: ClassVar[dict[str, str]] = {
        "connect_timeout_s": "--timeout", "read_timeout_s": "--timeout", "deadline_s": "--deadline",
        "backoff_base_s": "--backoff-base", "backoff_max_s": "--backoff-max"}

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
    max_output_pixels: int = option(_I.max_output_pixels, unit="px", group=_IMG,
                                    help="refuse images whose resized picture would have more pixels (keep_ratio on "
                                         "a very elongated image), checked from the header before decoding")
    image_memory_budget: int = option(_I.memory_budget_bytes >> 20, unit="MiB", group=_IMG,
                                      help="image decode/resize work in flight per worker process, all threads "
                                           "together; an image needing more is refused (failed_to_decode)")
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
                                       help="requests in flight per host, for the whole run (a host is served by "
                                            "one shard at a time)")
    per_host_rate: float = option(_F.per_host_rate, unit="requests/s", group=_NET,
                                  help="request starts per second per host, for the whole run (0: unlimited)")
    user_agent_contact: str | None = option(None, group=_NET, help="URL or e-mail put in the User-Agent")
    allow_private_networks: bool = option(False, group=_NET,
                                          help="allow loopback, private and shared addresses (tests, intranet "
                                               "mirrors); never opens a cloud metadata endpoint nor a "
                                               "special-purpose range")
    allow_link_local: bool = option(False, group=_NET,
                                    help="also allow link-local addresses and cloud metadata endpoints "
                                         "(169.254.169.254, 100.100.100.200, fd00:ec2::254, ...); separate on purpose")
    robots: bool = option(True, negate="--no-robots", group=_NET, help="ignore robots.txt")
    x_robots_tag: bool = option(True, negate="--no-x-robots-tag", group=_NET,
                                help="ignore X-Robots-Tag noai/noindex opt-outs")
    overwrite: bool = option(False, help="the --out folder holds shards of other inputs or settings: delete them "
                                         "and download again (without it such a rerun is refused)")

    def __post_init__(self) -> None:
        config_from_args(self)


OPTIONS = DownloadOptions
EPILOG = ("Exit status: 0 some row succeeded; 1 the run failed; 2 bad input or settings, or --out holds shards of "
          "other inputs or settings (see --overwrite); 3 the run finished but no row succeeded (the summary lists "
          "the top reasons).")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``wit download``'s flags (generated from DownloadOptions) to ``parser``."""
    options.add_arguments(parser, OPTIONS)


def config_from_args(args: DownloadOptions) -> DownloadConfig:
    """The validated DownloadConfig of the options (``--timeout`` sets both connect and read timeouts; MiB of
    ``--image-memory-budget`` become bytes); ValueError from FetchConfig/ImageConfig/DownloadConfig for a
    setting out of range."""
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
        max_output_pixels=args.max_output_pixels, memory_budget_bytes=args.image_memory_budget << 20,
    )
    return DownloadConfig(out=args.out, engine=args.engine, rows_per_shard=args.rows_per_shard,
                          threads=args.threads, fetch=fetch, image=image)


def output_settings(config: DownloadConfig) -> dict[str, Any]:
    """The settings that decide what a raw shard holds (``wit_builder.download.plan.output_settings``)."""
    return download_plan.output_settings(config.engine, config.image, config.fetch)


def _check_plan(out: str, plan: dict[str, Any], overwrite: bool = False) -> list[str]:
    """A rerun must cut the same shards with the same settings, or skipping complete shards would mix two
    different runs. Returns the files ``overwrite`` deleted."""
    path = fileio.join(out, PLAN_JSON)
    removed: list[str] = []
    if fileio.exists(path):
        # json_safe: a plan.json of an earlier version holds Infinity where this one writes "inf"
        conflict = download_plan.plan_conflict(out, stats_schema.json_safe(fileio.read_json_object(path)), plan)
        if conflict is None:
            return removed
        if not overwrite:
            raise InputError(conflict)
    elif not overwrite and _run_files(out):
        # Shards without a plan (plan.json deleted, or another tool's output): their settings are unknown.
        raise InputError(f"{out} holds raw shards but no {PLAN_JSON}, so the settings they were made with are "
                         "unknown; use a fresh --out, or pass --overwrite to delete those shards and download again")
    if overwrite:
        removed = remove_run(out)
    fileio.write_json(path, plan)
    return removed


def _run_files(out: str) -> list[str]:
    """A download run's files in ``out``: shards, their temporaries, plan.json and stats.json."""
    names = [f"{'[0-9]' * raw_shards.SHARD_DIGITS}*", PLAN_JSON, STATS_JSON, f"{PLAN_JSON}.tmp-*",
             f"{STATS_JSON}.tmp-*"]
    return [m.path for name in names for m in FileSystems.match([fileio.join(out, name)])[0].metadata_list]


def remove_run(out: str) -> list[str]:
    """Delete a download run's files from ``out``: shards, their temporaries, plan.json and stats.json."""
    found = _run_files(out)
    if found:
        FileSystems.delete(found)
    return found


def summarize(out: str, shard_ids: list[int]) -> dict[str, Any]:
    """The sum of every shard's stats (complete shards from earlier runs included), with their top errors
    (``wit_builder.download.plan.sum_shard_stats``)."""
    return download_plan.sum_shard_stats(fileio.read_json(shard_paths(out, i)[2]) for i in shard_ids)


def stats_document(args: DownloadOptions, specs: list[ShardSpec], totals: dict[str, Any],
                   seconds: float) -> dict[str, Any]:
    """stats.json in the declared layout (schemas/stats.py), from the shards' own stats files."""
    counts = {"shards": totals["shards"], "rows": totals["count"], "bytes_downloaded": totals["bytes_downloaded"],
              **{f"status_{k}": v for k, v in totals["statuses"].items()}}
    return stats_schema.envelope(
        "download",
        inputs=[stats_schema.input_entry(path, rows=n) for path, n in download_plan.rows_per_input(specs).items()],
        parameters=options.as_parameters(args, skip=("out",)),
        counts=counts,
        outputs=[stats_schema.output_entry(raw_shards.shard_files(s.shard_id)[1], s.rows) for s in specs],
        seconds=seconds,
        details={"statuses": totals["statuses"], "top_errors": totals["top_errors"]},
    )


def _write_stats(out: str, doc: dict[str, Any], unchanged_run: bool) -> None:
    """Write stats.json; a rerun that downloaded nothing keeps the file when only its timings would change."""
    path = fileio.join(out, STATS_JSON)
    if unchanged_run and fileio.exists(path):
        try:
            old = fileio.read_json(path)
            stats_schema.validate(old)
        except (ValueError, OSError):
            old = None
        def untimed(d: dict[str, Any]) -> Any:  # as written: non-finite floats as strings (earlier files: Infinity)
            return stats_schema.json_safe({k: v for k, v in d.items() if k != "timings"})

        if old is not None and untimed(old) == untimed(doc):
            return
    fileio.write_json(path, doc)


def run(args: DownloadOptions, beam_argv: list[str]) -> int:
    """``wit download``: exit 0 some row succeeded, 2 bad input or settings before any work (one line on
    stderr), 3 the run finished but no row succeeded; a failed run raises (the launcher's exit 1)."""
    try:
        config = config_from_args(args)
        options.check_out_folder(config.out)
        if config.engine == "img2dataset":
            from wit_builder.download.img2dataset_engine import INSTALL_HINT, img2dataset_available

            if not img2dataset_available():
                raise InputError(INSTALL_HINT)
        paths = list(dict.fromkeys(p for pattern in args.pairs for p in input_files(pattern)))
        specs = plan_shards(paths, config.rows_per_shard)
        fileio.makedirs(config.out)
        plan = download_plan.plan_document(paths, config.rows_per_shard, specs, output_settings(config))
        removed = _check_plan(config.out, plan, args.overwrite)
    except (InputError, FileNotFoundError, ValueError) as e:
        print(f"wit download: error: {e}", file=sys.stderr, flush=True)
        return 2
    if removed:
        print(f"wit download: --overwrite: deleted {len(removed)} files of the earlier run in {config.out}",
              flush=True)
    todo = [s for s in specs if not shard_complete(config.out, s.shard_id)]
    print(f"wit download: {sum(s.rows for s in specs)} rows in {len(specs)} shards of <= {config.rows_per_shard} "
          f"({len(specs) - len(todo)} already complete), engine {config.engine}", flush=True)
    started = time.monotonic()
    if todo:
        pipeline = beam.Pipeline(options=launcher.pipeline_options(beam_argv))
        _ = (
            pipeline
            | "UrlShards" >> beam.Create(todo)
            | "Download" >> Download(config)
        )
        launcher.run_pipeline(pipeline, config.out)
    totals = summarize(config.out, [s.shard_id for s in specs])
    elapsed = time.monotonic() - started
    _write_stats(config.out, stats_document(args, specs, totals, elapsed), unchanged_run=not todo)
    statuses = " ".join(f"{k}={v}" for k, v in totals["statuses"].items())
    print(progress.summary_line("download", [
        f"{totals['count']:,} rows in {len(specs)} shards: {statuses}",
        f"this run downloaded {sum(s.rows for s in todo):,} rows in {len(todo)} shards"], elapsed, config.out),
        flush=True)
    if totals["count"] and not totals["statuses"].get("success"):
        print(download_plan.nothing_succeeded_report(totals), file=sys.stderr, flush=True)
        return EXIT_NOTHING_SUCCEEDED
    return 0
