"""Stage 2, ``wit build-pairs``: match candidate (image URL, alt text) pairs against the queries and balance.

    pool files ─► ReadPool ─► Reshuffle ─► MatchQueries (automaton per process) ─► CollapseDuplicates (by uid)
      ─► (query, rank) ─► CountAndCap (bounded combiner) ─► cut table (side input) ─► Balance ─► pairs-*.parquet
                                                         └─► query_counts.parquet, stats.json, balance.png

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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

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
from wit_builder.matcher import QueryMatcher, validate_queries
from wit_builder.options import option
from wit_builder.pool_readers import (
    BAD_REASONS,
    FILTER_REASONS,
    FORMATS,
    Candidate,
    PoolOptions,
    check_table_columns,
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


class MatchedPair(NamedTuple):
    url: str
    caption: str
    queries: tuple[str, ...]
    source_file: str
    source_record: int
    page_url: str | None


class RankedPair(NamedTuple):
    uid: str
    rank: int
    pair: MatchedPair


# ---- DoFns and CombineFns: thin wrappers over wit_builder ----

class ReadPoolFile(common.CountingDoFn):
    """One pool file -> candidates (main output) and rejections (tagged output ``rejected``)."""

    namespace = NAMESPACE

    def __init__(self, options: PoolOptions):
        self._options = options

    def process(self, path: str) -> Iterator:
        self.count("pool_files")
        counts: dict[str, int] = {}
        bar = progress.reporter("build-pairs", "records")
        for item in read_pool_file(path, common.open_read, self._options):
            bar.add(1)
            key = "candidates" if isinstance(item, Candidate) else item.reason
            counts[key] = counts.get(key, 0) + 1
            if isinstance(item, Candidate):
                yield item
            elif item.is_bad:
                yield beam.pvalue.TaggedOutput("rejected", item)
        for key, n in counts.items():
            self.count(key, n)
        self.count("records", sum(counts.values()))
        rejected = ", ".join(f"{k} {n:,}" for k, n in sorted(counts.items()) if k != "candidates")
        logging.getLogger(__name__).info("read %s: %s candidates%s", path, f"{counts.get('candidates', 0):,}",
                                         f"; {rejected}" if rejected else "")


def load_matcher(queries_path: str) -> QueryMatcher:
    table = common.read_parquet(queries_path)
    return QueryMatcher(table.column("query").to_pylist())


class MatchQueries(common.CountingDoFn):
    """Batches of candidates -> (uid, MatchedPair) for texts that contain a query; the rest are counted.

    The automaton is built once per worker process and shared by its threads (``Shared``), from the queries
    file read on the worker: it is never pickled or shipped as a side input.
    """

    def __init__(self, queries_path: str, queries_fingerprint: str):
        self._queries_path = queries_path
        self._tag = f"{queries_path}#{queries_fingerprint}"
        self._shared = shared.Shared()
        self._matcher: QueryMatcher | None = None

    def setup(self) -> None:
        self._matcher = self._shared.acquire(lambda: load_matcher(self._queries_path), tag=self._tag)

    def process(self, batch: list[Candidate]) -> Iterator[tuple[str, MatchedPair]]:
        matched = 0
        match = self._matcher.match
        for candidate in batch:
            if queries := match(candidate.caption):
                matched += 1
                yield pair_uid(candidate.url, candidate.caption), MatchedPair(
                    candidate.url, candidate.caption, tuple(queries), candidate.source_file,
                    candidate.source_record, candidate.page_url,
                )
        self.count("matched", matched)
        self.count("no_match", len(batch) - matched)


def _provenance(pair: MatchedPair) -> tuple:
    return pair.source_file, pair.source_record, pair.url, pair.caption, pair.page_url or ""


class FirstByProvenance(beam.CombineFn):
    """Copies of one uid -> (copies, the copy from the earliest file and record): deterministic anywhere."""

    def create_accumulator(self) -> tuple[int, MatchedPair | None]:
        return 0, None

    @staticmethod
    def _earlier(a: MatchedPair | None, b: MatchedPair | None) -> MatchedPair | None:
        if a is None or b is None:
            return a or b
        return a if _provenance(a) <= _provenance(b) else b

    def add_input(self, acc, pair: MatchedPair):
        return acc[0] + 1, self._earlier(acc[1], pair)

    def merge_accumulators(self, accs):
        count, best = 0, None
        for c, pair in accs:
            count, best = count + c, self._earlier(best, pair)
        return count, best

    def extract_output(self, acc):
        return acc


class RankUnique(common.CountingDoFn):
    """(uid, (copies, pair)) -> RankedPair with the uid's seeded rank; extra copies are counted as duplicates."""

    def __init__(self, seed: int):
        self._seed = seed

    def process(self, element: tuple[str, tuple[int, MatchedPair]]) -> Iterator[RankedPair]:
        uid, (copies, pair) = element
        self.count("duplicates", copies - 1)
        self.count("unique_pairs")
        self.count("matches", len(pair.queries))
        yield RankedPair(uid, hash_rank(uid, self._seed), pair)


class CountAndCap(beam.CombineFn):
    """Per query: (matched count, target-th smallest rank or None). Bounded: at most 2 x target ranks held."""

    def __init__(self, target: int):
        self._ranks = SmallestRanks(target)

    def create_accumulator(self):
        return self._ranks.create()

    def add_input(self, acc, rank: int):
        return self._ranks.add(acc, rank)

    def merge_accumulators(self, accs):
        return self._ranks.merge(accs)

    def compact(self, acc):
        return self._ranks.compact(acc)

    def extract_output(self, acc):
        return self._ranks.extract(acc)


class Balance(common.CountingDoFn):
    """Keep a pair when any of its queries keeps it; its ``queries`` become the keeping ones."""

    def __init__(self, config: BalanceConfig):
        self._config = config

    def process(self, ranked: RankedPair, cuts: dict) -> Iterator[dict]:
        keeping = kept_queries(ranked.uid, ranked.rank, ranked.pair.queries, cuts, self._config)
        if not keeping:
            self.count("over_cap")
            return
        self.count("kept")
        self.count("kept_matches", len(keeping))
        pair = ranked.pair
        yield {
            "uid": ranked.uid, "url": pair.url, "caption": pair.caption, "queries": keeping,
            "source_file": pair.source_file, "source_record": pair.source_record, "page_url": pair.page_url,
        }


def pairs_file_name(index: int, count: int) -> str:
    return f"pairs-{index:05d}-of-{count:05d}.parquet"


class WritePairsFile(beam.DoFn):
    """(file index, rows) -> one parquet file sorted by uid, written temp-then-rename."""

    def __init__(self, out_dir: str):
        self._out_dir = out_dir

    def process(self, element: tuple[int, Iterable[dict | None]], num_files: int) -> Iterator[tuple[str, int]]:
        index, rows = element
        ordered = sorted((r for r in rows if r is not None), key=lambda r: r["uid"])
        name = pairs_file_name(index, num_files)
        common.write_parquet(common.join(self._out_dir, name), pa.Table.from_pylist(ordered, schema=PAIRS))
        yield name, len(ordered)


def write_query_counts(counts: list[tuple[str, int, int]], queries_path: str, out_path: str) -> None:
    """All queries, matched or not, most matched first (ties by query)."""
    seen = {q: (m, k) for q, m, k in counts}
    for q in common.read_parquet(queries_path).column("query").to_pylist():
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
                 balance: BalanceConfig, rows_per_file: int):
        super().__init__()
        self._queries_path = queries_path
        self._fingerprint = queries_fingerprint
        self._out_dir = out_dir
        self._pool = pool
        self._balance = balance
        self._rows_per_file = rows_per_file

    def expand(self, paths):
        config = self._balance
        read = (
            paths
            | "SpreadFiles" >> beam.Reshuffle()
            | "ReadPool" >> beam.ParDo(ReadPoolFile(self._pool)).with_outputs("rejected", COUNTS, main="candidates")
        )
        matched = (
            read.candidates
            | "SpreadCandidates" >> beam.Reshuffle()  # one file fans out to millions of records
            | "BatchCandidates" >> beam.BatchElements(min_batch_size=64, max_batch_size=2048)
            | "MatchQueries" >> beam.ParDo(MatchQueries(self._queries_path, self._fingerprint)).with_outputs(
                COUNTS, main="pairs")
        )
        ranked_out = (
            matched.pairs
            | "CollapseDuplicates" >> beam.CombinePerKey(FirstByProvenance())
            | "RankUnique" >> beam.ParDo(RankUnique(config.seed)).with_outputs(COUNTS, main="ranked")
        )
        ranked = ranked_out.ranked
        # The bounded combiner only needs the target smallest ranks in hard mode; counting is enough otherwise.
        per_query = (
            ranked
            | "FanOutQueries" >> beam.FlatMap(lambda r: ((q, r.rank) for q in r.pair.queries))
            | "CountAndCap" >> beam.CombinePerKey(CountAndCap(config.target if config.mode == "hard" else 1))
        )
        cuts = (
            per_query
            | "CutTable" >> beam.FlatMap(
                lambda kv: [] if (cut := cut_value(config, kv[1][0], kv[1][1])) is None else [(kv[0], cut)]
            )
        )
        balanced = ranked | "Balance" >> beam.ParDo(Balance(config), cuts=beam.pvalue.AsDict(cuts)).with_outputs(
            COUNTS, main="kept")
        kept = balanced.kept
        # stats.json's counts: summed from the DoFns' COUNTS outputs (exact under retries), not from metrics
        _ = (
            [out[COUNTS] for out in (read, matched, ranked_out, balanced)]
            | "AllCounts" >> beam.Flatten()
            | "WriteCounts" >> common.WriteCounts(common.join(self._out_dir, common.COUNTS_FILE))
        )

        kept_per_query = (
            kept
            | "KeptQueries" >> beam.FlatMap(lambda row: ((q, 1) for q in row["queries"]))
            | "CountKept" >> beam.CombinePerKey(sum)
        )
        _ = (
            {"matched": per_query | "Matched" >> beam.Map(lambda kv: (kv[0], kv[1][0])), "kept": kept_per_query}
            | "JoinCounts" >> beam.CoGroupByKey()
            | "CountRow" >> beam.Map(lambda kv: (kv[0], sum(kv[1]["matched"]), sum(kv[1]["kept"])))
            | "GatherCounts" >> beam.combiners.ToList()
            | "WriteQueryCounts" >> beam.Map(write_query_counts, self._queries_path,
                                             common.join(self._out_dir, QUERY_COUNTS_PARQUET))
        )
        _ = (
            read.rejected
            | "GatherBadRecords" >> beam.combiners.ToList()
            | "WriteBadRecords" >> beam.Map(write_bad_records, common.join(self._out_dir, BAD_RECORDS_JSONL))
        )

        # Files: a count known only after balancing, so it comes in as a side input; every index gets a marker
        # so that a file with no rows is still written and the set of names is complete.
        rows_per_file = self._rows_per_file
        num_files = (
            kept
            | "CountKeptPairs" >> beam.combiners.Count.Globally()
            | "NumFiles" >> beam.Map(lambda n: max(1, math.ceil(n / rows_per_file)))
        )
        markers = num_files | "FileMarkers" >> beam.FlatMap(lambda n: ((i, None) for i in range(n)))
        assigned = kept | "AssignFile" >> beam.Map(
            lambda row, n: (int(row["uid"][:15], 16) % n, row), n=beam.pvalue.AsSingleton(num_files)
        )
        return (
            (assigned, markers)
            | "MergeMarkers" >> beam.Flatten()
            | "GroupByFile" >> beam.GroupByKey()
            | "WritePairs" >> beam.ParDo(WritePairsFile(self._out_dir), num_files=beam.pvalue.AsSingleton(num_files))
        )


# ---- the command ----

@dataclass(frozen=True)
class BuildPairsOptions:
    """``wit build-pairs``'s settings; the flags, defaults and help are generated from these fields."""

    queries: str = option(help=f"directory holding stage 1's {QUERIES_PARQUET}")
    pool: tuple[str, ...] = option(help="pool file or glob (WAT .warc.wat.gz, parquet, jsonl[.gz], csv, tsv); "
                                        "repeatable")
    out: str = option(help="output directory")
    per_query_cap: int = option(BalanceConfig.per_query_cap, unit="pairs", help="pairs kept per query")
    balance: str = option(BalanceConfig.mode, choices=MODES,
                          help="hard: each query keeps its cap smallest-ranked pairs; probabilistic: MetaCLIP's "
                               "p = min(1, cap / matched)")
    seed: int = option(BalanceConfig.seed, help="seed of the ranks and draws")
    oversample: float = option(BalanceConfig.oversample, unit="x cap",
                               help="keep this many times the cap, for download losses; stage 4 caps again")
    pool_format: str = option(PoolOptions.fmt, choices=("auto", *FORMATS), help="format of the pool files")
    url_col: str = option(PoolOptions.url_col, help="URL column of table pools")
    caption_col: str = option(PoolOptions.caption_col, help="caption column of table pools")
    max_url_length: int = option(PoolOptions.max_url_length, unit="characters",
                                 help="longer URLs are reported and dropped")
    rows_per_file: int = option(500_000, unit="rows", help="rows per pairs-*.parquet file")

    def __post_init__(self) -> None:
        self.balance_config()
        self.pool_options()
        if self.rows_per_file < 1:
            raise ValueError(f"--rows-per-file must be at least 1, not {self.rows_per_file}")

    def balance_config(self) -> BalanceConfig:
        return BalanceConfig(self.balance, self.per_query_cap, self.seed, self.oversample)

    def pool_options(self) -> PoolOptions:
        return PoolOptions(self.pool_format, self.url_col, self.caption_col, self.max_url_length)


OPTIONS = BuildPairsOptions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    options.add_arguments(parser, OPTIONS)


def run(args: BuildPairsOptions, beam_argv: list[str]) -> int:
    started = time.monotonic()
    try:
        balance, pool = args.balance_config(), args.pool_options()
        queries_path = common.join(args.queries, QUERIES_PARQUET)
        if not common.exists(queries_path):
            raise FileNotFoundError(f"{queries_path} not found; run 'wit build-queries' first or fix --queries")
        query_list = common.read_parquet(queries_path).column("query").to_pylist()
        validate_queries(query_list, queries_path)
        files = common.expand_patterns(args.pool, "pool")
        for path in files:  # a table without its URL or caption column fails here, before any work
            check_table_columns(path, common.open_read, pool)
    except (ValueError, FileNotFoundError, KeyError) as e:
        print(f"wit build-pairs: {e}", file=sys.stderr)
        return 2
    print(f"build-pairs: {len(files)} pool file(s), {len(query_list):,} queries, balance={balance.mode} "
          f"cap={balance.per_query_cap} target={balance.target} seed={balance.seed}", flush=True)

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
        | "BuildPairs" >> BuildPairs(queries_path, fingerprint, args.out, pool, balance, args.rows_per_file)
    )
    result = common.run_pipeline(pipeline, args.out)
    counts = common.read_counts(args.out, COUNTERS)
    _cross_check(counts, common.counters(result, NAMESPACE))

    stats = write_summary(args.out, files, queries_path, fingerprint, balance, pool, counts, args.rows_per_file,
                          time.monotonic() - started)
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
                  pool: PoolOptions, counts: dict[str, int], rows_per_file: int, seconds: float) -> dict:
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
                    "max_url_length": pool.max_url_length, "rows_per_file": rows_per_file},
        counts={**counts, "bad_records": len(bad_lines), "queries": len(matched),
                "queries_matched": sum(1 for m in matched if m > 0), "queries_capped": capped,
                "pair_files": len(pair_files)},
        outputs=[*(stats_schema.output_entry(p.rsplit("/", 1)[-1]) for p in pair_files),
                 stats_schema.output_entry(QUERY_COUNTS_PARQUET, len(matched)),
                 stats_schema.output_entry(BAD_RECORDS_JSONL, len(bad_lines))],
        seconds=seconds,
        details={
            "queries": {"max_matched": max(matched, default=0), "max_kept": max(kept, default=0)},
            "pairs": {"file_names": [p.rsplit("/", 1)[-1] for p in pair_files]},
            "bad_records": {"file": BAD_RECORDS_JSONL, "first": [json.loads(line) for line in bad_lines[:20]]},
        },
    )
    common.write_json(common.join(out, STATS_JSON), stats)
    return stats

