"""Stage 2, ``wit build-pairs``: match candidate (image URL, alt text) pairs against the queries and balance.

    pool files ─► ReadAndMatch (read, clean, match: automaton per process) ─► (bucket, [matched pairs])
      ─► GroupByKey(bucket) ─► CollapseBucket (one copy per uid, seeded rank) ─► matched per query ─► capped set
      ─► CappedRanks (k smallest ranks of capped queries) ─► cut table (side input) ─► BalanceBucket
      ─► (file, [rows]) ─► WritePairs
                                                   └─► query_counts.parquet, stats.json, balance.png

Records move through the graph in batches: a pool file is read, cleaned and matched inside one DoFn call, and
only matched pairs leave it, as plain tuples in lists keyed by a uid bucket (``--shuffle-buckets``). Every later
step works on a bucket's list, so Beam handles a few thousand elements, not one per record; plain tuples of
str/int go through Beam's compiled coder without pickling.

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
import pyarrow as pa
from apache_beam.utils import shared

from pipelines import common
from pipelines.common import COUNTS
from schemas import stats as stats_schema
from schemas.pairs import BALANCE_PNG, PAIRS, PAIRS_GLOB, QUERY_COUNTS, QUERY_COUNTS_PARQUET, STATS_JSON
from schemas.queries import QUERIES_PARQUET
from wit_builder import options, progress
from wit_builder.balance import MODES, BalanceConfig, SmallestRanks, cut_value, kept_queries
from wit_builder.balance_plot import balance_png
from wit_builder.match_rules import DEFAULT_RULE, MATCH_RULES, METACLIP, entries_column, make_matcher
from wit_builder.match_rules import validate as validate_entries
from wit_builder.matcher import QueryMatcher
from wit_builder.metaclip_rule import MetaClipMatcher
from wit_builder.options import option
from wit_builder.pool_readers import (
    BAD_REASONS,
    FILTER_REASONS,
    FORMATS,
    LAYOUTS,
    Candidate,
    PoolOptions,
    check_pool_file,
    parse_layout,
    read_pool_file,
)
from wit_builder.uid import hash_rank, pair_uid

NAMESPACE = "build_pairs"
BAD_RECORDS_JSONL = "bad_records.jsonl"
# Every counter, so that stats.json lists zeros too. Accounting: records = filtered + bad + candidates;
# candidates = no_match + matched; matched = duplicates + unique_pairs; unique_pairs = kept + over_cap.
COUNTERS = (
    "pool_files", "records", *FILTER_REASONS, *BAD_REASONS, "candidates", "no_match", "matched",
    "duplicates", "unique_pairs", "matches", "over_cap", "kept", "kept_matches",
)
MATCH_CHUNK = 4096  # candidates matched at a time
EMIT_BATCH = 4096  # matched pairs per (bucket, list) element

# A matched pair: (uid, url, caption, queries found (tuple, sorted), source_file, source_record, page_url).
UID, URL, CAPTION, QUERIES, SOURCE_FILE, SOURCE_RECORD, PAGE_URL = range(7)


def bucket_of(uid: str, buckets: int) -> int:
    return int(uid[:8], 16) % buckets


def load_matcher(queries_path: str, match_rule: str = DEFAULT_RULE) -> QueryMatcher | MetaClipMatcher:
    """The automaton of ``match_rule`` (``wit_builder.match_rules``) over the queries file's entries."""
    table = common.read_parquet(queries_path)
    return make_matcher(table.column(entries_column(table, match_rule)).to_pylist(), match_rule)


# ---- DoFns and CombineFns: thin wrappers over wit_builder ----

class ReadAndMatch(common.CountingDoFn):
    """One pool file -> (bucket, [matched pair tuples]) lists; bad records (tagged ``rejected``) reported.

    The automaton is built once per worker process and shared by its threads (``Shared``), from the queries
    file read on the worker: it is never pickled or shipped as a side input.
    """

    def __init__(self, options: PoolOptions, queries_path: str, queries_fingerprint: str, buckets: int,
                 match_rule: str = DEFAULT_RULE):
        self._options = options
        self._queries_path = queries_path
        self._match_rule = match_rule
        self._tag = f"{queries_path}#{queries_fingerprint}#{match_rule}"
        self._buckets = buckets
        self._shared = shared.Shared()
        self._matcher: QueryMatcher | MetaClipMatcher | None = None

    namespace = NAMESPACE

    def setup(self) -> None:
        self._matcher = self._shared.acquire(lambda: load_matcher(self._queries_path, self._match_rule),
                                             tag=self._tag)

    def process(self, path: str) -> Iterator:
        self.count("pool_files")
        counts: Counter[str] = Counter()
        buffers: dict[int, list[tuple]] = {}
        chunk: list[Candidate] = []
        for item in read_pool_file(path, common.open_read, self._options):
            if isinstance(item, Candidate):
                chunk.append(item)
                if len(chunk) >= MATCH_CHUNK:
                    yield from self._match(chunk, buffers, counts)
                    chunk = []
            else:
                counts[item.reason] += 1
                if item.is_bad:
                    yield beam.pvalue.TaggedOutput("rejected", item)
        yield from self._match(chunk, buffers, counts)
        for bucket in sorted(buffers):
            yield bucket, buffers[bucket]
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

    def _match(self, chunk: list[Candidate], buffers: dict[int, list[tuple]], counts: Counter) -> Iterator:
        if not chunk:
            return
        counts["candidates"] += len(chunk)
        match = self._matcher.match
        buckets = self._buckets
        matched = 0
        as_written = self._match_rule == METACLIP  # MetaCLIP's rule matches the text as read, not as cleaned
        for c in chunk:
            found = match(c.raw_caption if as_written and c.raw_caption is not None else c.caption)
            if not found:
                continue
            matched += 1
            uid = pair_uid(c.url, c.caption)
            bucket = int(uid[:8], 16) % buckets
            pairs = buffers.get(bucket)
            if pairs is None:
                pairs = buffers[bucket] = []
            pairs.append((uid, c.url, c.caption, tuple(found), c.source_file, c.source_record, c.page_url))
            if len(pairs) >= EMIT_BATCH:
                yield bucket, pairs
                buffers[bucket] = []
        counts["matched"] += matched
        counts["no_match"] += len(chunk) - matched


def _provenance(pair: tuple) -> tuple:
    return pair[SOURCE_FILE], pair[SOURCE_RECORD], pair[URL], pair[CAPTION], pair[PAGE_URL] or ""


class CollapseBucket(common.CountingDoFn):
    """(bucket, lists of matched pairs) -> (bucket, [(rank, pair)] by uid) one copy per uid, the copy from the
    earliest file and record (deterministic anywhere); tagged ``query_counts``: {query: matched} of the bucket.
    """

    def __init__(self, config: BalanceConfig):
        self._seed = config.seed

    namespace = NAMESPACE

    def process(self, element: tuple[int, Iterable[list[tuple]]]) -> Iterator:
        bucket, lists = element
        best: dict[str, tuple] = {}
        copies = 0
        for pairs in lists:
            for pair in pairs:
                copies += 1
                uid = pair[UID]
                held = best.get(uid)
                if held is None or _provenance(pair) < _provenance(held):
                    best[uid] = pair
        seed = self._seed
        counts: Counter[str] = Counter()
        ranked = []
        for uid in sorted(best):
            pair = best[uid]
            ranked.append((hash_rank(uid, seed), pair))
            counts.update(pair[QUERIES])  # a C loop: per-query counting costs little per match
        self.count("duplicates", copies - len(best))
        self.count("unique_pairs", len(best))
        self.count("matches", sum(counts.values()))
        if counts:
            yield beam.pvalue.TaggedOutput("query_counts", dict(counts))
        yield bucket, ranked


class CappedRanks(beam.DoFn):
    """Hard balance, second look at a bucket: {query: (n, its k smallest ranks)} for the capped queries only.

    Only queries matched more than ``target`` times need a threshold, so ranks are collected for those alone
    (a set intersection per pair), not for every match.
    """

    def __init__(self, k: int):
        self._k = k

    def process(self, element: tuple[int, list[tuple]], capped: frozenset) -> Iterator[dict]:
        if not capped:
            return
        _, ranked = element
        found: dict[str, list[int]] = {}
        intersection = capped.intersection
        for rank, pair in ranked:
            for q in intersection(pair[QUERIES]):
                held = found.get(q)
                if held is None:
                    found[q] = [rank]
                else:
                    held.append(rank)
        k = self._k
        out = {}
        for q, ranks in found.items():
            n = len(ranks)
            if n > k:
                ranks.sort()
                del ranks[k:]
            out[q] = (n, ranks)
        if out:
            yield out


class MergeQueryStats(beam.CombineFn):
    """Dicts {query: (matched, smallest ranks)} -> {query: (matched, k-th smallest rank or None)}.

    Bounded like ``wit_builder.balance.SmallestRanks`` (whose ``extract`` gives the result): a query holds at
    most 2k ranks, cut back to its k smallest whenever it reaches 2k.
    """

    def __init__(self, k: int):
        self._ranks = SmallestRanks(k)
        self._k = k

    def create_accumulator(self) -> dict:
        return {}

    def add_input(self, acc: dict, stats: dict) -> dict:
        limit = 2 * self._k
        for q, (count, ranks) in stats.items():
            held = acc.get(q)
            if held is None:
                acc[q] = [count, list(ranks)]
                continue
            held[0] += count
            held_ranks = held[1]
            held_ranks.extend(ranks)
            if len(held_ranks) >= limit:
                held_ranks.sort()
                del held_ranks[self._k:]
        return acc

    def merge_accumulators(self, accs) -> dict:
        accs = iter(accs)
        merged: dict = next(accs, {})
        for acc in accs:
            self.add_input(merged, acc)
        return merged

    def compact(self, acc: dict) -> dict:
        for held in acc.values():
            if len(held[1]) > self._k:
                held[1].sort()
                del held[1][self._k:]
        return acc

    def extract_output(self, acc: dict) -> dict:
        return {q: self._ranks.extract((count, ranks)) for q, (count, ranks) in acc.items()}


def capped_queries(matched: dict[str, int], config: BalanceConfig) -> frozenset:
    """Queries matched more often than the target (hard mode: the only ones that need rank thresholds)."""
    if config.mode != "hard":
        return frozenset()  # probabilistic cuts need the matched counts only
    return frozenset(q for q, n in matched.items() if n > config.target)


def cut_table(matched: dict[str, int], thresholds: dict, config: BalanceConfig) -> dict:
    """{query: cut} for the queries over the target (hard: rank threshold; probabilistic: keep probability)."""
    cuts = {}
    for q, n in matched.items():
        threshold = thresholds.get(q, (n, None))[1]
        if (cut := cut_value(config, n, threshold)) is not None:
            cuts[q] = cut
    return cuts


class BalanceBucket(common.CountingDoFn):
    """A bucket's ranked pairs -> its kept rows (a pair is kept when any of its queries keeps it; its ``queries``
    become the keeping ones); tagged ``kept_counts``: {query: kept} of the bucket."""

    def __init__(self, config: BalanceConfig):
        self._config = config

    namespace = NAMESPACE

    def process(self, element: tuple[int, list[tuple]], cuts: dict) -> Iterator:
        bucket, ranked = element
        rows = []
        kept_counts: Counter[str] = Counter()
        config = self._config
        cut_queries = cuts.keys()
        for rank, pair in ranked:
            found = pair[QUERIES]
            # Most pairs match no capped query: they keep all their queries (a C-level disjointness test).
            keeping = list(found) if cut_queries.isdisjoint(found) else kept_queries(pair[UID], rank, found, cuts,
                                                                                     config)
            if not keeping:
                continue
            kept_counts.update(keeping)
            rows.append((pair[UID], pair[URL], pair[CAPTION], keeping, pair[SOURCE_FILE], pair[SOURCE_RECORD],
                         pair[PAGE_URL], list(found)))
        self.count("over_cap", len(ranked) - len(rows))
        self.count("kept", len(rows))
        self.count("kept_matches", sum(kept_counts.values()))
        if kept_counts:
            yield beam.pvalue.TaggedOutput("kept_counts", dict(kept_counts))
        yield bucket, rows


def pairs_file_name(index: int, count: int) -> str:
    return f"pairs-{index:05d}-of-{count:05d}.parquet"


def file_of(uid: str, num_files: int) -> int:
    return int(uid[:15], 16) % num_files


def assign_files(element: tuple[int, list[tuple]], num_files: int) -> Iterator[tuple[int, list[tuple]]]:
    _, rows = element
    by_file: dict[int, list[tuple]] = {}
    for row in rows:
        by_file.setdefault(file_of(row[0], num_files), []).append(row)
    yield from by_file.items()


class WritePairsFile(beam.DoFn):
    """(file index, lists of rows) -> one parquet file sorted by uid, written temp-then-rename."""

    def __init__(self, out_dir: str, match_rule: str = DEFAULT_RULE):
        self._out_dir = out_dir
        self._match_rule = match_rule

    def process(self, element: tuple[int, Iterable[list[tuple]]], num_files: int) -> Iterator[tuple[str, int]]:
        index, lists = element
        rule = (self._match_rule,)
        ordered = sorted((row + rule for rows in lists for row in rows), key=lambda r: r[0])
        name = pairs_file_name(index, num_files)
        columns: list = list(zip(*ordered, strict=True)) if ordered else [[] for _ in PAIRS.names]
        table = pa.Table.from_arrays([pa.array(col, type=field.type) for col, field in zip(columns, PAIRS,
                                                                                          strict=True)],
                                     schema=PAIRS)
        common.write_parquet(common.join(self._out_dir, name), table)
        yield name, len(ordered)


def merge_counts(dicts: Iterable[dict]) -> dict:
    total: Counter[str] = Counter()
    for d in dicts:
        total.update(d)
    return dict(total)


class SumCounts(beam.CombineFn):
    """Per-bucket {query: n} dicts -> their sum. An accumulator holds at most one entry per query, where gathering
    the dicts in a list held (buckets x queries) entries in one worker (issue 15: bounded on an engine)."""

    def create_accumulator(self) -> Counter:
        return Counter()

    def add_input(self, acc: Counter, counts: dict) -> Counter:
        acc.update(counts)
        return acc

    def merge_accumulators(self, accs: Iterable[Counter]) -> Counter:
        return Counter(merge_counts(accs))

    def extract_output(self, acc: Counter) -> dict:
        return dict(acc)


def write_query_counts(counts: list[tuple[str, int, int]], queries_path: str, out_path: str,
                       match_rule: str = DEFAULT_RULE) -> None:
    """All queries (the entries ``match_rule`` matched with), matched or not, most matched first (ties by query)."""
    seen = {q: (m, k) for q, m, k in counts}
    table = common.read_parquet(queries_path)
    for q in table.column(entries_column(table, match_rule)).to_pylist():
        seen.setdefault(q, (0, 0))
    rows = sorted(((q, m, k) for q, (m, k) in seen.items()), key=lambda r: (-r[1], r[0]))
    table = pa.table(
        {"query": [r[0] for r in rows], "matched": [r[1] for r in rows], "kept": [r[2] for r in rows]},
        schema=QUERY_COUNTS,
    )
    common.write_parquet(out_path, table)


def write_bad_records(rejections: list, out_path: str) -> None:
    rows = sorted((r.source_file, r.source_record, r.reason, r.detail) for r in rejections)
    lines = [json.dumps({"file": f, "offset": o, "reason": reason, "detail": d}, ensure_ascii=False)
             for f, o, reason, d in rows]
    common.write_bytes(out_path, "".join(line + "\n" for line in lines).encode())


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

    def expand(self, paths):
        config = self._balance
        read = (
            paths
            | "SpreadFiles" >> beam.Reshuffle()
            | "ReadAndMatch" >> beam.ParDo(
                ReadAndMatch(self._pool, self._queries_path, self._fingerprint, self._buckets, self._match_rule)
            ).with_outputs("rejected", COUNTS, main="matched")
        )
        collapsed = (
            read.matched
            | "GroupByBucket" >> beam.GroupByKey()
            | "CollapseBucket" >> beam.ParDo(CollapseBucket(config)).with_outputs("query_counts", COUNTS,
                                                                             main="ranked")
        )
        matched = (
            collapsed.query_counts
            | "MergeMatchedCounts" >> beam.CombineGlobally(SumCounts())
        )
        capped = matched | "CappedQueries" >> beam.Map(capped_queries, config)
        thresholds = (
            collapsed.ranked
            | "CappedRanks" >> beam.ParDo(CappedRanks(config.target if config.mode == "hard" else 1),
                                          capped=beam.pvalue.AsSingleton(capped))
            | "MergeCappedRanks" >> beam.CombineGlobally(
                MergeQueryStats(config.target if config.mode == "hard" else 1))
        )
        cuts = matched | "CutTable" >> beam.Map(cut_table, beam.pvalue.AsSingleton(thresholds), config)
        balanced = collapsed.ranked | "Balance" >> beam.ParDo(
            BalanceBucket(config), cuts=beam.pvalue.AsSingleton(cuts)
        ).with_outputs("kept_counts", COUNTS, main="kept")
        # stats.json's counts: summed from the DoFns' COUNTS outputs (exact under retries), not from metrics
        _ = (
            [out[COUNTS] for out in (read, collapsed, balanced)]
            | "AllCounts" >> beam.Flatten()
            | "WriteCounts" >> common.WriteCounts(common.join(self._out_dir, common.COUNTS_FILE))
        )

        kept_counts = (
            balanced.kept_counts
            | "MergeKeptCounts" >> beam.CombineGlobally(SumCounts())
        )
        _ = (
            matched
            | "QueryCountRows" >> beam.Map(
                lambda m, kept: [(q, n, kept.get(q, 0)) for q, n in m.items()],
                kept=beam.pvalue.AsSingleton(kept_counts))
            | "WriteQueryCounts" >> beam.Map(write_query_counts, self._queries_path,
                                             common.join(self._out_dir, QUERY_COUNTS_PARQUET), self._match_rule)
        )
        _ = (
            read.rejected
            | "GatherBadRecords" >> beam.combiners.ToList()
            | "WriteBadRecords" >> beam.Map(write_bad_records, common.join(self._out_dir, BAD_RECORDS_JSONL))
        )

        # Files: a count known only after balancing, so it comes in as a side input; every index gets an empty
        # list so that a file with no rows is still written and the set of names is complete.
        rows_per_file = self._rows_per_file
        num_files = (
            balanced.kept
            | "CountRows" >> beam.Map(lambda kv: len(kv[1]))
            | "CountKeptPairs" >> beam.CombineGlobally(sum)
            | "NumFiles" >> beam.Map(lambda n: max(1, math.ceil(n / rows_per_file)))
        )
        markers = num_files | "FileMarkers" >> beam.FlatMap(lambda n: ((i, []) for i in range(n)))
        assigned = balanced.kept | "AssignFiles" >> beam.FlatMap(assign_files,
                                                                 num_files=beam.pvalue.AsSingleton(num_files))
        return (
            (assigned, markers)
            | "MergeMarkers" >> beam.Flatten()
            | "GroupByFile" >> beam.GroupByKey()
            | "WritePairs" >> beam.ParDo(WritePairsFile(self._out_dir, self._match_rule),
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
                             help="normalized: case-folded tokens, wit_builder.textnorm; metaclip: MetaCLIP v1's "
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
        queries_path = common.join(args.queries, QUERIES_PARQUET)
        if not common.exists(queries_path):
            raise FileNotFoundError(f"{queries_path} not found; run 'wit build-queries' first or fix --queries")
        match_rule = args.match_rule
        queries_table = common.read_parquet(queries_path)
        query_list = queries_table.column(entries_column(queries_table, match_rule)).to_pylist()
        validate_entries(query_list, match_rule, queries_path)
        files = common.expand_patterns(args.pool, "pool")
        for path in files:  # a wrong format, a missing or mistyped column fails here, before any work
            check_pool_file(path, common.open_read, pool)
    except (ValueError, FileNotFoundError, KeyError) as e:
        print(f"wit build-pairs: error: {e}", file=sys.stderr)
        return 2
    print(f"build-pairs: {len(files)} pool file(s), {len(query_list):,} queries, balance={balance.mode} "
          f"cap={balance.per_query_cap} target={balance.target} seed={balance.seed} match_rule={match_rule}",
          flush=True)

    common.makedirs(args.out)
    # A rerun replaces the previous output: stale files of another run must not mix in; stats.json comes last.
    stale = [m.path for m in common.FileSystems.match([common.join(args.out, PAIRS_GLOB)])[0].metadata_list]
    for name in (STATS_JSON, QUERY_COUNTS_PARQUET, BAD_RECORDS_JSONL, BALANCE_PNG):
        if common.exists(common.join(args.out, name)):
            stale.append(common.join(args.out, name))
    if stale:
        common.FileSystems.delete(stale)

    fingerprint = common.sha256_file(queries_path)
    pipeline = beam.Pipeline(options=common.pipeline_options(beam_argv))
    _ = (
        pipeline
        | "PoolFiles" >> beam.Create(files)
        | "BuildPairs" >> BuildPairs(queries_path, fingerprint, args.out, pool, balance, args.rows_per_file,
                                     args.shuffle_buckets, match_rule)
    )
    result = common.run_pipeline(pipeline, args.out)
    counts = common.read_counts(args.out, COUNTERS)
    _cross_check(counts, common.counters(result, NAMESPACE))

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
    query_counts = common.read_parquet(common.join(out, QUERY_COUNTS_PARQUET))
    matched = query_counts.column("matched").to_pylist()
    kept = query_counts.column("kept").to_pylist()
    common.write_bytes(common.join(out, BALANCE_PNG), balance_png(matched, kept, balance.per_query_cap,
                                                                  balance.target))
    pair_files = sorted(m.path for m in common.FileSystems.match([common.join(out, PAIRS_GLOB)])[0].metadata_list)
    with common.open_read(common.join(out, BAD_RECORDS_JSONL)) as f:
        bad_lines = f.read().decode().splitlines()
    capped = sum(1 for m in matched if m > balance.target)
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
                "queries_matched": sum(1 for m in matched if m > 0), "queries_capped": capped,
                "pair_files": len(pair_files)},
        outputs=[*(stats_schema.output_entry(p.rsplit("/", 1)[-1]) for p in pair_files),
                 stats_schema.output_entry(QUERY_COUNTS_PARQUET, len(matched)),
                 stats_schema.output_entry(BAD_RECORDS_JSONL, len(bad_lines))],
        seconds=seconds,
        details={
            "match_rule": match_rule,
            "queries": {"max_matched": max(matched, default=0), "max_kept": max(kept, default=0)},
            "pairs": {"file_names": [p.rsplit("/", 1)[-1] for p in pair_files]},
            "bad_records": {"file": BAD_RECORDS_JSONL, "first": [json.loads(line) for line in bad_lines[:20]]},
        },
    )
    common.write_json(common.join(out, STATS_JSON), stats)
    return stats
