"""Stage 2, ``wit build-pairs``: match candidate (image URL, alt text) pairs against the queries and balance.

    pool files ─► ReadAndMatch (read in column batches, clean, match: automaton per process)
      ─► (bucket, IPC bytes of matched rows) ─► GroupByKey(bucket) ─► CollapseBucket (one copy per uid, seeded
      rank) ─► matched per query id ─► capped set ─► CappedRanks (k smallest ranks of capped queries)
      ─► cut array (side input) ─► BalanceBucket ─► (file, IPC bytes of kept rows) ─► WritePairs
                                                   └─► query_counts.parquet, stats.json, balance.png

Records move through the graph as Arrow tables in IPC bytes (``wit_builder.pairs.batches``): a pool file is
read, cleaned and matched in batches inside one DoFn call, and only its matched rows leave it, split by uid
bucket (``--shuffle-buckets``). Beam handles a few thousand elements of bytes, never one per record; every
later step is a numpy/Arrow operation on a bucket's table, with queries as ids (positions in the sorted
distinct entries) until the pairs files are written.

Every pool record ends in exactly one counter of the ``build_pairs`` namespace: a filter or bad-record
reason, ``no_match``, ``duplicates``, ``over_cap`` or ``kept``; the same counts go to ``stats.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.utils import shared

from schemas import stats as stats_schema
from schemas.pairs import BALANCE_PNG, PAIRS_GLOB, QUERY_COUNTS, QUERY_COUNTS_PARQUET, STATS_JSON
from schemas.queries import QUERIES_PARQUET
from wit_builder.beam import counting, fileio, launcher
from wit_builder.beam.counting import COUNTS
from wit_builder.core import options, progress
from wit_builder.core.balance import MODES, BalanceConfig
from wit_builder.core.options import option
from wit_builder.pairs.balance_plot import balance_png
from wit_builder.pairs.batches import (
    KEPT,
    MATCHED,
    add_counts,
    balance_table,
    bucket_of_keys,
    capped_smallest_ranks,
    collapse,
    concat,
    cut_array,
    from_bytes,
    matched_table,
    pairs_table,
    query_counts,
    smallest_per_query,
    split_by_key,
    thresholds,
    to_bytes,
)
from wit_builder.pairs.match_rules import DEFAULT_RULE, MATCH_RULES, entries_column, make_matcher
from wit_builder.pairs.match_rules import validate as validate_entries
from wit_builder.pairs.matcher import QueryMatcher, sorted_entries
from wit_builder.pairs.metaclip_rule import MetaClipMatcher
from wit_builder.pairs.readers.formats import check_pool_file, read_pool_batches
from wit_builder.pairs.readers.layouts import FORMATS, LAYOUTS, PoolOptions, parse_layout
from wit_builder.pairs.readers.records import BAD_REASONS, FILTER_REASONS

NAMESPACE = "build_pairs"
BAD_RECORDS_JSONL = "bad_records.jsonl"
# Every counter, so that stats.json lists zeros too. Accounting: records = filtered + bad + candidates;
# candidates = no_match + matched; matched = duplicates + unique_pairs; unique_pairs = kept + over_cap.
COUNTERS = (
    "pool_files", "records", *FILTER_REASONS, *BAD_REASONS, "candidates", "no_match", "matched",
    "duplicates", "unique_pairs", "matches", "over_cap", "kept", "kept_matches",
)
PENDING_ROWS = 262_144  # matched pairs a ReadAndMatch holds before splitting them into bucket elements


def load_matcher(queries_path: str, match_rule: str = DEFAULT_RULE) -> QueryMatcher | MetaClipMatcher:
    """The automaton of ``match_rule`` (``wit_builder.pairs.match_rules``) over the queries file's entries."""
    table = fileio.read_parquet(queries_path)
    return make_matcher(table.column(entries_column(table, match_rule)).to_pylist(), match_rule)


def load_entries(queries_path: str, match_rule: str = DEFAULT_RULE) -> pa.Array:
    """The matcher's sorted distinct entries as a string array: query id i is element i."""
    table = fileio.read_parquet(queries_path)
    return pa.array(sorted_entries(table.column(entries_column(table, match_rule)).to_pylist()), pa.string())


# ---- DoFns and CombineFns: thin wrappers over wit_builder ----

class _Entries:
    """The sorted distinct entries as an Arrow array (query id i is element i), loaded once per process."""

    def __init__(self, array: pa.Array):
        self.array = array


class EntriesDoFn(beam.DoFn):
    """A DoFn that needs the entries: acquired in ``setup`` through a ``Shared`` handle (one load per process)."""

    def __init__(self, queries_path: str, queries_fingerprint: str, match_rule: str, handle: shared.Shared):
        self._queries_path = queries_path
        self._match_rule = match_rule
        self._entries_tag = f"{queries_path}#{queries_fingerprint}#{match_rule}#entries"
        self._entries_handle = handle

    def setup(self) -> None:
        # The holder is kept: Shared holds it weakly, and a collected holder would be loaded again.
        self._entries_holder = self._entries_handle.acquire(
            lambda: _Entries(load_entries(self._queries_path, self._match_rule)), tag=self._entries_tag)
        self._entries = self._entries_holder.array


class ReadAndMatch(counting.CountingDoFn, EntriesDoFn):
    """One pool file -> (bucket, IPC bytes of its ``MATCHED`` rows); bad records (tagged ``rejected``) reported.

    The file is read in column batches (``read_pool_batches``), each batch matched in one loop, and only its
    matched rows are kept, in Arrow tables split by uid bucket. The automaton is built once per worker process
    and shared by its threads (``Shared``), from the queries file read on the worker: it is never pickled or
    shipped as a side input.
    """

    def __init__(self, options: PoolOptions, queries_path: str, queries_fingerprint: str, buckets: int,
                 match_rule: str = DEFAULT_RULE, entries: shared.Shared | None = None):
        EntriesDoFn.__init__(self, queries_path, queries_fingerprint, match_rule, entries or shared.Shared())
        self._options = options
        self._tag = f"{queries_path}#{queries_fingerprint}#{match_rule}"
        self._buckets = buckets
        self._shared = shared.Shared()
        self._matcher: QueryMatcher | MetaClipMatcher | None = None

    namespace = NAMESPACE

    def setup(self) -> None:
        EntriesDoFn.setup(self)  # the sorted entries, shared with the later steps: read and sorted once
        entries = self._entries
        self._matcher = self._shared.acquire(lambda: make_matcher(entries.to_pylist(), self._match_rule),
                                             tag=self._tag)

    def process(self, path: str) -> Iterator:
        self.count("pool_files")
        counts: Counter[str] = Counter()
        pending: list[pa.Table] = []
        held = 0
        matcher = self._matcher
        assert matcher is not None
        for batch in read_pool_batches(path, fileio.open_read, self._options):
            for rejection in batch.rejections:
                counts[rejection.reason] += 1
                if rejection.is_bad:
                    yield beam.pvalue.TaggedOutput("rejected", rejection)
            if not len(batch):
                continue
            counts["candidates"] += len(batch)
            rows, lengths, ids = matcher.match_ids(matcher.haystacks(batch.captions, batch.raw_captions))
            counts["matched"] += len(rows)
            counts["no_match"] += len(batch) - len(rows)
            if len(rows):
                pending.append(matched_table(path, batch.records, batch.urls, batch.captions, batch.page_urls,
                                             rows, lengths, ids))
                held += len(rows)
            if held >= PENDING_ROWS:
                yield from self._emit(pending)
                pending, held = [], 0
        yield from self._emit(pending)
        for key, n in counts.items():
            self.count(key, n)
        read = sum(n for k, n in counts.items() if k not in ("no_match", "matched"))
        self.count("records", read)
        progress.reporter("build-pairs", "records").add(read)
        rejected = ", ".join(f"{k} {n:,}" for k, n in sorted(counts.items())
                             if k not in ("candidates", "matched", "no_match"))
        logging.getLogger(__name__).info("read %s: %s candidates, %s matched%s", path,
                                         f"{counts['candidates']:,}", f"{counts['matched']:,}",
                                         f"; {rejected}" if rejected else "")

    def _emit(self, pending: list[pa.Table]) -> Iterator[tuple[int, bytes]]:
        if not pending:
            return
        table = pa.concat_tables(pending).combine_chunks()
        buckets = bucket_of_keys(table.column("key").to_numpy(), self._buckets)
        for bucket, rows in split_by_key(table, buckets):
            yield bucket, to_bytes(rows)


class CollapseBucket(counting.CountingDoFn):
    """(bucket, IPC blobs of matched rows) -> (bucket, IPC bytes) one row per uid with its seeded ``rank``, the
    copy from the earliest file and record (deterministic anywhere); tagged ``query_counts``: (ids, matched)
    of the bucket (``wit_builder.pairs.batches.collapse``)."""

    def __init__(self, config: BalanceConfig):
        self._seed = config.seed

    namespace = NAMESPACE

    def process(self, element: tuple[int, Iterable[bytes]]) -> Iterator:
        bucket, blobs = element
        table = concat(blobs, MATCHED)
        ranked = collapse(table, self._seed)
        ids, counts = query_counts(ranked)
        self.count("duplicates", table.num_rows - ranked.num_rows)
        self.count("unique_pairs", ranked.num_rows)
        self.count("matches", int(counts.sum()))
        if len(ids):
            yield beam.pvalue.TaggedOutput("query_counts", (ids, counts))
        yield bucket, to_bytes(ranked)


class SumQueryCounts(beam.CombineFn):
    """Sparse (ids, counts) -> one dense int64 array of counts by query id (as long as the largest id seen)."""

    def create_accumulator(self) -> np.ndarray:
        return np.zeros(0, np.int64)

    def add_input(self, acc: np.ndarray, element: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        return add_counts(acc, *element)

    def merge_accumulators(self, accs) -> np.ndarray:
        total = np.zeros(0, np.int64)
        for acc in accs:
            total = add_counts(total, np.arange(len(acc)), acc)
        return total

    def extract_output(self, acc: np.ndarray) -> np.ndarray:
        return acc


class CappedRanks(beam.DoFn):
    """Hard balance, second look at a bucket: (ids, ranks) of the capped queries, each's k smallest ranks.

    Only queries matched more than ``target`` times need a threshold, so ranks are collected for those alone.
    """

    def __init__(self, k: int):
        self._k = k

    def process(self, element: tuple[int, bytes], capped: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if not capped.any():
            return
        ids, ranks = capped_smallest_ranks(from_bytes(element[1]), capped, self._k)
        if len(ids):
            yield ids, ranks


class MergeQueryStats(beam.CombineFn):
    """(ids, ranks) arrays -> (ids, ranks): each id's k smallest ranks; cut back whenever 2k per id would pass.

    Bounded like ``wit_builder.core.balance.SmallestRanks``: the accumulator holds at most about 2k ranks per id.
    """

    def __init__(self, k: int):
        self._k = k

    def create_accumulator(self) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)

    def add_input(self, acc, element):
        ids, ranks = np.concatenate([acc[0], element[0]]), np.concatenate([acc[1], element[1]])
        if len(ids) >= 2 * self._k * max(1, len(np.unique(element[0]))):
            ids, ranks = smallest_per_query(ids, ranks, self._k)
        return ids, ranks

    def merge_accumulators(self, accs):
        merged = self.create_accumulator()
        for acc in accs:
            merged = self.add_input(merged, acc)
        return merged

    def compact(self, acc):
        return smallest_per_query(acc[0], acc[1], self._k)

    def extract_output(self, acc):
        return smallest_per_query(acc[0], acc[1], self._k)


def capped_queries(matched: np.ndarray, config: BalanceConfig) -> np.ndarray:
    """Mask by id of the queries matched more often than the target (hard mode: the only ones that need rank
    thresholds; probabilistic cuts need the matched counts only)."""
    if config.mode != "hard":
        return np.zeros(len(matched), bool)
    return matched > config.target


def cut_table(matched: np.ndarray, smallest: tuple[np.ndarray, np.ndarray], config: BalanceConfig) -> np.ndarray:
    """The cut of every id (``wit_builder.pairs.batches.cut_array``)."""
    k = config.target if config.mode == "hard" else 1
    return cut_array(matched, thresholds(smallest[0], smallest[1], k, len(matched)), config)


class BalanceBucket(counting.CountingDoFn, EntriesDoFn):
    """A bucket's ranked rows -> (kept rows, IPC bytes of them) (a pair is kept when any of its queries keeps
    it; its ``queries`` become the keeping ones); tagged ``kept_counts``: (ids, kept) of the bucket."""

    def __init__(self, config: BalanceConfig, queries_path: str, queries_fingerprint: str, match_rule: str,
                 handle: shared.Shared):
        EntriesDoFn.__init__(self, queries_path, queries_fingerprint, match_rule, handle)
        self._config = config

    namespace = NAMESPACE

    def setup(self) -> None:
        if self._config.mode == "probabilistic":  # hard mode never needs the query strings here
            EntriesDoFn.setup(self)
        else:
            self._entries = None

    def process(self, element: tuple[int, bytes], cuts: np.ndarray) -> Iterator:
        ranked = from_bytes(element[1])
        rows, kept_ids = balance_table(ranked, cuts, self._config, self._entries)
        self.count("over_cap", ranked.num_rows - rows.num_rows)
        self.count("kept", rows.num_rows)
        self.count("kept_matches", len(kept_ids))
        if len(kept_ids):
            ids, counts = np.unique(kept_ids, return_counts=True)
            yield beam.pvalue.TaggedOutput("kept_counts", (ids.astype(np.int64), counts.astype(np.int64)))
        yield rows.num_rows, to_bytes(rows)


def pairs_file_name(index: int, count: int) -> str:
    return f"pairs-{index:05d}-of-{count:05d}.parquet"


def file_of(uid: str, num_files: int) -> int:
    return int(uid[:15], 16) % num_files


def assign_files(element: tuple[int, bytes], num_files: int) -> Iterator[tuple[int, bytes]]:
    """Kept rows -> (file index, IPC bytes of its rows): file ``file_of(uid)``, from the key column."""
    n, blob = element
    if not n:
        return
    table = from_bytes(blob)
    for index, rows in split_by_key(table, table.column("key").to_numpy() % num_files):
        yield index, to_bytes(rows)


class WritePairsFile(EntriesDoFn):
    """(file index, IPC blobs of kept rows) -> one parquet file sorted by uid, written temp-then-rename."""

    def __init__(self, out_dir: str, match_rule: str, queries_path: str, queries_fingerprint: str,
                 handle: shared.Shared):
        super().__init__(queries_path, queries_fingerprint, match_rule, handle)
        self._out_dir = out_dir

    def process(self, element: tuple[int, Iterable[bytes]], num_files: int) -> Iterator[tuple[str, int]]:
        index, blobs = element
        table = pairs_table(concat(blobs, KEPT), self._match_rule, self._entries)
        name = pairs_file_name(index, num_files)
        fileio.write_parquet(fileio.join(self._out_dir, name), table)
        yield name, table.num_rows


class WriteQueryCounts(EntriesDoFn):
    """matched counts by id (the element), kept counts by id (side input) -> query_counts.parquet."""

    def __init__(self, out_path: str, match_rule: str, queries_path: str, queries_fingerprint: str,
                 handle: shared.Shared):
        super().__init__(queries_path, queries_fingerprint, match_rule, handle)
        self._out_path = out_path

    def process(self, matched: np.ndarray, kept: np.ndarray) -> Iterator[None]:
        fileio.write_parquet(self._out_path, query_counts_table(matched, kept, self._entries))
        return iter(())


def query_counts_table(matched: np.ndarray, kept: np.ndarray, entries: pa.Array) -> pa.Table:
    """All queries (the entries the rule matched with), matched or not, most matched first (ties by query).

    ``matched`` and ``kept`` are counts by query id (shorter arrays: the ids past their end count 0).
    """
    n = len(entries)
    m = np.zeros(n, np.int64)
    m[: len(matched)] = matched[:n]
    k = np.zeros(n, np.int64)
    k[: len(kept)] = kept[:n]
    order = np.argsort(-m, kind="stable")  # ids are in query order, so ties stay by query
    return pa.table({"query": entries.take(pa.array(order)), "matched": m[order], "kept": k[order]},
                    schema=QUERY_COUNTS)


def write_bad_records(rejections: list, out_path: str) -> None:
    rows = sorted((r.source_file, r.source_record, r.reason, r.detail) for r in rejections)
    lines = [json.dumps({"file": f, "offset": o, "reason": reason, "detail": d}, ensure_ascii=False)
             for f, o, reason, d in rows]
    fileio.write_bytes(out_path, "".join(line + "\n" for line in lines).encode())


# ---- the composite ----

class BuildPairs(beam.PTransform):
    """Pool file paths -> writes pairs-*.parquet, query_counts.parquet and bad_records.jsonl under ``out_dir``."""

    def __init__(self, queries_path: str, queries_fingerprint: str, out_dir: str, pool: PoolOptions,
                 balance: BalanceConfig, rows_per_file: int, buckets: int = 256, match_rule: str = DEFAULT_RULE):
        super().__init__()
        self._match_rule = match_rule
        self._queries_path = queries_path
        self._fingerprint = queries_fingerprint
        self._out_dir = out_dir
        self._pool = pool
        self._balance = balance
        self._rows_per_file = rows_per_file
        self._buckets = buckets
        self._entries = shared.Shared()  # one handle: Balance, WritePairs and WriteQueryCounts share one load

    def expand(self, paths):
        config = self._balance
        read = (
            paths
            | "SpreadFiles" >> beam.Reshuffle()
            | "ReadAndMatch" >> beam.ParDo(
                ReadAndMatch(self._pool, self._queries_path, self._fingerprint, self._buckets, self._match_rule,
                             self._entries)
            ).with_outputs("rejected", COUNTS, main="matched")
        )
        collapsed = (
            read.matched
            | "GroupByBucket" >> beam.GroupByKey()
            | "CollapseBucket" >> beam.ParDo(CollapseBucket(config)).with_outputs("query_counts", COUNTS,
                                                                             main="ranked")
        )
        matched = collapsed.query_counts | "MergeMatchedCounts" >> beam.CombineGlobally(SumQueryCounts())
        capped = matched | "CappedQueries" >> beam.Map(capped_queries, config)
        k = config.target if config.mode == "hard" else 1
        smallest = (
            collapsed.ranked
            | "CappedRanks" >> beam.ParDo(CappedRanks(k), capped=beam.pvalue.AsSingleton(capped))
            | "MergeCappedRanks" >> beam.CombineGlobally(MergeQueryStats(k))
        )
        cuts = matched | "CutTable" >> beam.Map(cut_table, beam.pvalue.AsSingleton(smallest), config)
        balanced = collapsed.ranked | "Balance" >> beam.ParDo(
            BalanceBucket(config, self._queries_path, self._fingerprint, self._match_rule, self._entries),
            cuts=beam.pvalue.AsSingleton(cuts),
        ).with_outputs("kept_counts", COUNTS, main="kept")
        # stats.json's counts: summed from the DoFns' COUNTS outputs (exact under retries), not from metrics
        _ = (
            [out[COUNTS] for out in (read, collapsed, balanced)]
            | "AllCounts" >> beam.Flatten()
            | "WriteCounts" >> counting.WriteCounts(fileio.join(self._out_dir, counting.COUNTS_FILE))
        )

        kept_counts = balanced.kept_counts | "MergeKeptCounts" >> beam.CombineGlobally(SumQueryCounts())
        _ = (
            matched
            | "WriteQueryCounts" >> beam.ParDo(
                WriteQueryCounts(fileio.join(self._out_dir, QUERY_COUNTS_PARQUET), self._match_rule,
                                 self._queries_path, self._fingerprint, self._entries),
                beam.pvalue.AsSingleton(kept_counts))
        )
        _ = (
            read.rejected
            | "GatherBadRecords" >> beam.combiners.ToList()
            | "WriteBadRecords" >> beam.Map(write_bad_records, fileio.join(self._out_dir, BAD_RECORDS_JSONL))
        )

        # Files: a count known only after balancing, so it comes in as a side input; every index gets an empty
        # blob so that a file with no rows is still written and the set of names is complete.
        rows_per_file = self._rows_per_file
        num_files = (
            balanced.kept
            | "CountRows" >> beam.Map(lambda kv: kv[0])
            | "CountKeptPairs" >> beam.CombineGlobally(sum)
            | "NumFiles" >> beam.Map(lambda n: max(1, math.ceil(n / rows_per_file)))
        )
        markers = num_files | "FileMarkers" >> beam.FlatMap(lambda n: ((i, b"") for i in range(n)))
        assigned = balanced.kept | "AssignFiles" >> beam.FlatMap(assign_files,
                                                                 num_files=beam.pvalue.AsSingleton(num_files))
        return (
            (assigned, markers)
            | "MergeMarkers" >> beam.Flatten()
            | "GroupByFile" >> beam.GroupByKey()
            | "WritePairs" >> beam.ParDo(WritePairsFile(self._out_dir, self._match_rule, self._queries_path,
                                                        self._fingerprint, self._entries),
                                         num_files=beam.pvalue.AsSingleton(num_files))
        )


# ---- the command ----

@dataclass(frozen=True)
class BuildPairsOptions:
    """``wit build-pairs``'s settings; the flags, defaults and help are generated from these fields."""

    queries: str = option(help=f"directory holding stage 1's {QUERIES_PARQUET}")
    pool: tuple[str, ...] = option(help="pool file or glob (WAT .warc.wat.gz, WARC .warc.gz, parquet, jsonl[.gz], "
                                        "csv, tsv); repeatable")
    out: str = option(help="output directory")
    per_query_cap: int = option(BalanceConfig.per_query_cap, unit="pairs", help="pairs kept per query")
    balance: str = option(BalanceConfig.mode, choices=MODES,
                          help="hard: each query keeps its cap smallest-ranked pairs; probabilistic: MetaCLIP's "
                               "p = min(1, cap / matched)")
    seed: int = option(BalanceConfig.seed, help="seed of the ranks and draws")
    match_rule: str = option(DEFAULT_RULE, choices=MATCH_RULES,
                             help="normalized: case-folded tokens, wit_builder.core.textnorm; metaclip: MetaCLIP v1's "
                                  "rule, entries and text as written (the queries' query_as_written column when "
                                  "present, else query); see docs/ARCHITECTURE.md")
    oversample: float = option(BalanceConfig.oversample, unit="x cap",
                               help="keep this many times the cap, for download losses; stage 4 caps again")
    pool_format: str = option(PoolOptions.fmt, choices=("auto", *FORMATS),
                              help="format of every pool file (auto: from the name; the content is checked)")
    url_col: str = option(PoolOptions.url_col, help="URL column of table pools; a 0-based position with --no-header")
    caption_col: str = option(PoolOptions.caption_col,
                              help="caption column of table pools; a 0-based position with --no-header")
    header: bool = option(True, negate="--no-header",
                          help="csv/tsv pools have no header line; --url-col/--caption-col are positions")
    pool_preset: str | None = option(None, choices=tuple(LAYOUTS),
                                     help="the layout of a well-known pool for every file: cc3m (caption<TAB>url, "
                                          "no header), cc12m (url<TAB>caption, no header), laion (URL, TEXT), "
                                          "datacomp/coyo (url, text), img2dataset (url, caption)")
    pool_layout: tuple[str, ...] = option((), metavar="PATTERN=LAYOUT",
                                          help="per-input layout for mixed pools: files whose path or name matches "
                                               "the glob PATTERN use LAYOUT, a preset name or items like "
                                               "'url=URL,caption=TEXT[,format=tsv,header=no]'; repeatable, the "
                                               "first match wins; other files use the options above")
    shuffle_buckets: int = option(256, unit="buckets",
                                  help="uid buckets matched pairs are grouped into; a bucket's pairs are held in "
                                       "memory by one worker (about 0.5 KB each), so raise it beyond ~1e9 pairs")
    max_url_length: int = option(PoolOptions.max_url_length, unit="characters",
                                 help="longer URLs are reported and dropped")
    rows_per_file: int = option(500_000, unit="rows", help="rows per pairs-*.parquet file")

    def __post_init__(self) -> None:
        self.balance_config()
        self.pool_options()
        if self.rows_per_file < 1:
            raise ValueError(f"--rows-per-file must be at least 1, not {self.rows_per_file}")
        if self.shuffle_buckets < 1:
            raise ValueError(f"--shuffle-buckets must be at least 1, not {self.shuffle_buckets}")

    def balance_config(self) -> BalanceConfig:
        return BalanceConfig(self.balance, self.per_query_cap, self.seed, self.oversample)

    def pool_options(self) -> PoolOptions:
        """PoolOptions from the command line: a preset, or the format/column options; then per-input layouts."""
        fmt, url_col, caption_col, header = self.pool_format, self.url_col, self.caption_col, self.header
        if self.pool_preset:
            preset = LAYOUTS[self.pool_preset]
            fmt = preset.fmt if fmt == "auto" else fmt
            url_col, caption_col, header = preset.url_col, preset.caption_col, preset.header
        layouts = []
        for item in self.pool_layout:
            pattern, sep, spec = item.partition("=")
            if not sep or not pattern.strip():
                raise ValueError(f"--pool-layout {item!r}: expected PATTERN=LAYOUT")
            layouts.append((pattern.strip(), parse_layout(spec)))
        return PoolOptions(fmt, url_col, caption_col, self.max_url_length, header, tuple(layouts))


OPTIONS = BuildPairsOptions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    options.add_arguments(parser, OPTIONS)


def pool_options(args: BuildPairsOptions) -> PoolOptions:
    return args.pool_options()


def run(args: BuildPairsOptions, beam_argv: list[str]) -> int:
    started = time.monotonic()
    try:
        balance, pool = args.balance_config(), args.pool_options()
        options.check_out_folder(args.out)
        queries_path = fileio.join(args.queries, QUERIES_PARQUET)
        if not fileio.exists(queries_path):
            raise FileNotFoundError(f"{queries_path} not found; run 'wit build-queries' first or fix --queries")
        match_rule = args.match_rule
        queries_table = fileio.read_parquet(queries_path)
        query_list = queries_table.column(entries_column(queries_table, match_rule)).to_pylist()
        validate_entries(query_list, match_rule, queries_path)
        files = fileio.expand_patterns(args.pool, "pool")
        for path in files:  # a wrong format, a missing or mistyped column fails here, before any work
            check_pool_file(path, fileio.open_read, pool)
    except (ValueError, FileNotFoundError, KeyError) as e:
        print(f"wit build-pairs: error: {e}", file=sys.stderr)
        return 2
    print(f"build-pairs: {len(files)} pool file(s), {len(query_list):,} queries, balance={balance.mode} "
          f"cap={balance.per_query_cap} target={balance.target} seed={balance.seed} match_rule={match_rule}",
          flush=True)

    fileio.makedirs(args.out)
    # A rerun replaces the previous output: stale files of another run must not mix in; stats.json comes last.
    stale = [m.path for m in fileio.FileSystems.match([fileio.join(args.out, PAIRS_GLOB)])[0].metadata_list]
    for name in (STATS_JSON, QUERY_COUNTS_PARQUET, BAD_RECORDS_JSONL, BALANCE_PNG):
        if fileio.exists(fileio.join(args.out, name)):
            stale.append(fileio.join(args.out, name))
    if stale:
        fileio.FileSystems.delete(stale)

    fingerprint = fileio.sha256_file(queries_path)
    pipeline = beam.Pipeline(options=launcher.pipeline_options(beam_argv))
    _ = (
        pipeline
        | "PoolFiles" >> beam.Create(files)
        | "BuildPairs" >> BuildPairs(queries_path, fingerprint, args.out, pool, balance, args.rows_per_file,
                                     args.shuffle_buckets, match_rule)
    )
    result = launcher.run_pipeline(pipeline, args.out)
    counts = counting.read_counts(args.out, COUNTERS)
    _cross_check(counts, counting.counters(result, NAMESPACE))

    stats = write_summary(args.out, files, queries_path, fingerprint, balance, pool, counts, args.rows_per_file,
                          time.monotonic() - started, match_rule)
    elapsed = time.monotonic() - started
    c = stats["counts"]
    print(progress.summary_line("build-pairs", [
        f"{counts['records']:,} records -> {counts['candidates']:,} candidates -> {counts['matched']:,} matched -> "
        f"{counts['unique_pairs']:,} unique -> {counts['kept']:,} kept in {c['pair_files']} file(s)",
        f"{c['bad_records']:,} bad records", f"{c['queries_capped']:,} queries capped"], elapsed, args.out), flush=True)
    if counts["matched"] == 0:
        print("wit build-pairs: no candidate matched any query; check --caption-col, --pool-format and the "
              "queries", file=sys.stderr)
        return 1
    return 0


def _cross_check(counts: dict[str, int], counted: dict[str, int]) -> None:
    """Metrics are for monitoring: a difference from the data-derived counts (a retried bundle on a runner
    that reports attempted values) is logged, never fatal."""
    differ = {k: (n, counted.get(k, 0)) for k, n in counts.items() if counted.get(k, 0) != n}
    if differ:
        logging.getLogger(__name__).info("monitoring counters differ from the data-derived counts "
                                         "(counts, counter): %s", differ)


def write_summary(out: str, files: list[str], queries_path: str, fingerprint: str, balance: BalanceConfig,
                  pool: PoolOptions, counts: dict[str, int], rows_per_file: int, seconds: float,
                  match_rule: str = DEFAULT_RULE) -> dict:
    """balance.png and stats.json (written last: its presence marks a complete output)."""
    query_counts = fileio.read_parquet(fileio.join(out, QUERY_COUNTS_PARQUET))
    matched = query_counts.column("matched").to_numpy()
    kept = query_counts.column("kept").to_numpy()
    fileio.write_bytes(fileio.join(out, BALANCE_PNG), balance_png(matched, kept, balance.per_query_cap,
                                                                  balance.target))
    pair_files = sorted(m.path for m in fileio.FileSystems.match([fileio.join(out, PAIRS_GLOB)])[0].metadata_list)
    with fileio.open_read(fileio.join(out, BAD_RECORDS_JSONL)) as f:
        bad_lines = f.read().decode().splitlines()
    capped = int((matched > balance.target).sum())
    stats = stats_schema.envelope(
        "build-pairs",
        inputs=[stats_schema.input_entry(queries_path, fingerprint, rows=len(matched)),
                *(stats_schema.input_entry(f) for f in files)],
        parameters={"balance": balance.mode, "per_query_cap": balance.per_query_cap, "seed": balance.seed,
                    "oversample": balance.oversample, "target": balance.target, "pool_format": pool.fmt,
                    "url_col": pool.url_col, "caption_col": pool.caption_col,
                    "max_url_length": pool.max_url_length, "rows_per_file": rows_per_file, "header": pool.header,
                    "pool_layouts": [[pattern, vars(layout)] for pattern, layout in pool.layouts],
                    "match_rule": match_rule},
        counts={**counts, "bad_records": len(bad_lines), "queries": len(matched),
                "queries_matched": int((matched > 0).sum()), "queries_capped": capped,
                "pair_files": len(pair_files)},
        outputs=[*(stats_schema.output_entry(p.rsplit("/", 1)[-1]) for p in pair_files),
                 stats_schema.output_entry(QUERY_COUNTS_PARQUET, len(matched)),
                 stats_schema.output_entry(BAD_RECORDS_JSONL, len(bad_lines))],
        seconds=seconds,
        details={
            "match_rule": match_rule,
            "queries": {"max_matched": int(matched.max(initial=0)), "max_kept": int(kept.max(initial=0))},
            "pairs": {"file_names": [p.rsplit("/", 1)[-1] for p in pair_files]},
            "bad_records": {"file": BAD_RECORDS_JSONL, "first": [json.loads(line) for line in bad_lines[:20]]},
        },
    )
    fileio.write_json(fileio.join(out, STATS_JSON), stats)
    return stats
