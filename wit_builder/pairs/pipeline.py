"""Stage 2's Beam wiring, the only module of the stage that imports Beam: :class:`BuildPairs` and the composites
it chains. The rules are pure functions elsewhere (``batches``, ``matcher``/``metaclip_rule``, ``readers``,
``stats``); the DoFns here are thin, private frames around them that count what they see.

    pool files ─► ReadAndMatch (read in column batches, clean, language ID, match: matchers per process)
      ─► (bucket, IPC bytes of matched rows) ─► CollapseDuplicates (GroupByKey(bucket), in-process through spill
      files with one reference per file (``beam.spill.GroupByKeySpilled``), one copy per uid, seeded
      rank; matched per query id) ─► Balance (capped set ─► k smallest ranks of capped queries, merged per group of
      query ids ─► one threshold per capped query ─► cut array as a side input ─► kept rows)
      ─► WritePairs (pairs-*.parquet)
      matched + kept per query id ─► WriteQueryCounts (query_counts.parquet);  rejected ─► WriteBadRecords
      every DoFn's counts ─► WriteCounts (OUT/_counts.json: the launcher reads it, stats.json is made from it)

Records move through the graph as Arrow tables in IPC bytes (``wit_builder.pairs.batches``): a pool file is
read, cleaned and matched in batches inside one DoFn call, and only its matched rows leave it, split by uid
bucket (``--shuffle-buckets``). Beam handles a few thousand elements of bytes, never one per record; every
later step is a numpy/Arrow operation on a bucket's table, with queries as ids (positions in the sorted
distinct entries) until the pairs files are written.

Every pool record is counted once under a filter or bad-record reason, ``no_match``, ``duplicates``,
``over_cap`` or ``kept`` (``wit_builder.pairs.stats``); the counts are data (``wit_builder.beam.counting``), and the
``build_pairs`` Beam counters carry the same names for monitoring.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.pvalue import AsSingleton, TaggedOutput
from apache_beam.utils import shared

from schemas.pairs import QUERY_COUNTS_PARQUET
from wit_builder.beam import counting, fileio
from wit_builder.beam.counting import COUNTS
from wit_builder.beam.spill import GroupByKeySpilled, Ref, Spill, spill_folder
from wit_builder.core import progress
from wit_builder.core.balance import LANGUAGE_CAP_RULES, BalanceConfig
from wit_builder.pairs.batches import (
    KEPT,
    MATCHED,
    NO_CUT,
    add_counts,
    assign_files,
    balance_table,
    bucket_of_keys,
    capped_queries,
    capped_smallest_ranks,
    collapse,
    concat,
    cut_array,
    file_count,
    from_bytes,
    id_targets,
    matched_table,
    pairs_file_name,
    pairs_table,
    query_counts,
    query_counts_table,
    smallest_per_query,
    split_by_key,
    thresholds,
    to_bytes,
)
from wit_builder.pairs.inputs import QuerySet, load_entries
from wit_builder.pairs.langid import DEFAULT_MIN_SCORE, LanguageIdentifier
from wit_builder.pairs.readers.formats import read_pool_batches
from wit_builder.pairs.readers.layouts import PoolOptions
from wit_builder.pairs.routing import FILTERED, RoutedMatcher, unsegmented
from wit_builder.pairs.stats import (
    BAD_RECORDS_JSONL,
    MAX_BAD_RECORDS,
    bad_record_key,
    bad_records_jsonl,
    language_count,
    query_totals,
)

NAMESPACE = "build_pairs"
REJECTED = "rejected"  # tagged output of ReadAndMatch: the bad records' Rejections, for bad_records.jsonl
PENDING_ROWS = 262_144  # matched pairs a ReadAndMatch holds before splitting them into bucket elements
_FUNNEL = ("records", "bad_records", "candidates", "matched", "no_match")  # not rejection reasons (the file's log)


# ---- DoFns and CombineFns: thin frames around wit_builder.pairs' pure functions ----

class _Entries:
    """The sorted distinct entries as an Arrow array (query id i is element i), loaded once per process."""

    def __init__(self, array: pa.Array):
        self.array = array


class _Matchers:
    """The routed automata and the language ID model of a process (one ``Shared`` holder)."""

    def __init__(self, matcher: RoutedMatcher, identifier: LanguageIdentifier):
        self.matcher, self.identifier = matcher, identifier


class _EntriesDoFn(counting.CountingDoFn):
    """A counting DoFn that may need the entries: acquired through a ``Shared`` handle (one load per process)."""

    namespace = NAMESPACE

    def __init__(self, queries: QuerySet, handle: shared.Shared):
        super().__init__()
        self._queries = queries
        self._tag = queries.tag
        self._entries_handle = handle
        self._entries: pa.Array | None = None

    def _load_entries(self) -> pa.Array:
        # The holder is kept: Shared holds it weakly, and a collected holder would be loaded again.
        self._entries_holder = self._entries_handle.acquire(lambda: _Entries(load_entries(self._queries)),
                                                            tag=f"{self._tag}#entries")
        self._entries = self._entries_holder.array
        return self._entries

    def setup(self) -> None:
        self._load_entries()


class _ReadAndMatch(_EntriesDoFn):
    """One pool file -> (bucket, IPC bytes of its ``MATCHED`` rows); bad records' Rejections on :data:`REJECTED`.

    The file is read in column batches (``read_pool_batches``); each batch's captions get their language
    (``langid``) and are matched against that language's entries (``routing.RoutedMatcher``), and only matched
    rows are kept, in Arrow tables split by uid bucket. The automata and the language ID model are built once per
    worker process and shared by its threads (``Shared``), from the queries files read on the worker: never
    pickled or shipped as a side input. Counts every record by its verdict: a rejection reason, or candidate
    (language_filtered, matched or no_match), and per caption language (``stats.language_count``).
    """

    def __init__(self, queries: QuerySet, handle: shared.Shared, pool: PoolOptions, buckets: int,
                 min_language_score: float):
        super().__init__(queries, handle)
        self._pool = pool
        self._buckets = buckets
        self._min_score = min_language_score
        self._matchers = shared.Shared()
        self._matcher: RoutedMatcher | None = None
        self._identifier: LanguageIdentifier | None = None

    def setup(self) -> None:
        entries = self._load_entries()  # the sorted entries, shared with the later steps: read and sorted once
        q = self._queries
        self._matcher_holder = self._matchers.acquire(
            lambda: _Matchers(RoutedMatcher(entries, q.sizes, q.langs, q.languages, q.match_rule, q.routing),
                              LanguageIdentifier(self._min_score)), tag=f"{self._tag}#{self._min_score}")
        self._matcher, self._identifier = self._matcher_holder.matcher, self._matcher_holder.identifier

    def process(self, path: str) -> Iterator[tuple[int, Ref] | TaggedOutput]:
        matcher, identifier = self._matcher, self._identifier
        assert matcher is not None and identifier is not None
        self.count("pool_files")
        seen: Counter[str] = Counter()  # this file's records by verdict: counted at its end, and logged
        pending: list[pa.Table] = []
        held = 0
        for batch in read_pool_batches(path, fileio.open_read, self._pool):
            seen["records"] += len(batch.rejections) + len(batch)
            for rejection in batch.rejections:
                seen[rejection.reason] += 1
                if rejection.is_bad:
                    seen["bad_records"] += 1
                    if seen["bad_records"] <= MAX_BAD_RECORDS:  # the file's first ones: all the list can show
                        yield TaggedOutput(REJECTED, rejection)
            if not len(batch):
                continue
            langs, scores = identifier.identify(batch.captions)
            routes, found = matcher.match(batch.captions, batch.raw_captions, langs)
            filtered = routes == FILTERED
            matched = np.zeros(len(batch), bool)
            lang_array, score_array = pa.array(langs, pa.string()), pa.array(scores, pa.float32())
            for rows, lengths, ids in found:
                matched[rows] = True
                pending.append(matched_table(path, batch.records, batch.urls, batch.captions, batch.page_urls,
                                             rows, lengths, ids, lang_array, score_array))
                held += len(rows)
            seen.update(candidates=len(batch), matched=int(matched.sum()), language_filtered=int(filtered.sum()),
                        no_match=int((~matched & ~filtered).sum()),
                        unsegmented_script=int(unsegmented(batch.captions).sum()))
            for what, mask in (("candidates", None), ("matched", matched), ("language_filtered", filtered)):
                chosen = langs if mask is None else itertools.compress(langs, mask.tolist())
                for lang, n in Counter(chosen).items():
                    seen[language_count(lang, what)] += n
            if held >= PENDING_ROWS:
                yield from self._emit(pending)
                pending, held = [], 0
        yield from self._emit(pending)
        for name, n in seen.items():
            if n:
                self.count(name, n)
        progress.reporter("build-pairs", "records").add(seen["records"])
        rejected = ", ".join(f"{k} {n:,}" for k, n in sorted(seen.items()) if k not in _FUNNEL)
        logging.getLogger(__name__).info("read %s: %s candidates, %s matched%s", path, f"{seen['candidates']:,}",
                                         f"{seen['matched']:,}", f"; {rejected}" if rejected else "")

    def _emit(self, pending: list[pa.Table]) -> Iterator[tuple[int, bytes]]:
        """The held rows as (bucket, IPC bytes) elements, one per bucket they fall in (``CollapseDuplicates``
        spills them to files in-process: ``beam.spill.GroupByKeySpilled``)."""
        if not pending:
            return
        table = pa.concat_tables(pending).combine_chunks()
        buckets = bucket_of_keys(table.column("key").to_numpy(), self._buckets)
        yield from ((bucket, to_bytes(rows)) for bucket, rows in split_by_key(table, buckets))


_MATCHED_IDS = "matched_ids"  # tagged output of _CollapseBucket: (query ids, pairs matched) of a bucket
_KEPT_IDS = "kept_ids"  # tagged output of _BalanceBucket: (query ids, pairs kept) of a bucket


class _CollapseBucket(counting.CountingDoFn):
    """(bucket, IPC blobs of matched rows) -> (bucket, IPC bytes) one row per uid with its seeded ``rank``, the
    copy from the earliest file and record (deterministic anywhere; ``batches.collapse``); on
    :data:`_MATCHED_IDS` the bucket's (ids, matched). Counts ``duplicates``, ``unique_pairs``, ``matches``."""

    namespace = NAMESPACE

    def __init__(self, seed: int, spill: Spill):
        super().__init__()
        self._seed = seed
        self._spill = spill

    def process(self, element: tuple[int, Iterable[Ref]]) -> Iterator[tuple[int, Ref] | TaggedOutput]:
        bucket, refs = element
        table = concat((Spill.get(ref) for ref in refs), MATCHED)
        ranked = collapse(table, self._seed)
        ids, counts = query_counts(ranked)
        self.count("duplicates", table.num_rows - ranked.num_rows)
        self.count("unique_pairs", ranked.num_rows)
        for lang, n in zip(*np.unique(ranked.column("lang").to_numpy(zero_copy_only=False), return_counts=True),
                           strict=True):
            self.count(language_count(str(lang), "unique_pairs"), int(n))
        self.count("matches", int(counts.sum()))
        if len(ids):
            yield TaggedOutput(_MATCHED_IDS, (ids, counts))
        yield bucket, self._spill.put(f"ranked/b{bucket:05d}.arrow", to_bytes(ranked))


class _SumQueryCounts(beam.CombineFn):
    """Sparse (ids, counts) -> one dense int64 array of counts by query id (as long as the largest id seen)."""

    def create_accumulator(self) -> np.ndarray:
        return np.zeros(0, np.int64)

    def add_input(self, acc: np.ndarray, element: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        return add_counts(acc, *element)

    def merge_accumulators(self, accs: Iterable[np.ndarray]) -> np.ndarray:
        total = np.zeros(0, np.int64)
        for acc in accs:
            total = add_counts(total, np.arange(len(acc)), acc)
        return total

    def extract_output(self, acc: np.ndarray) -> np.ndarray:
        return acc


RANK_GROUP_IDS = 64  # capped query ids per key of the rank combiner: about 64 x 2 targets of ranks per accumulator


class _CappedRanks(beam.DoFn):
    """Hard balance, second look at a bucket: (id group, (ids, ranks, limits)) of the capped queries, each one's
    ``limit`` smallest ranks, its language's target (``targets``, by id), keyed by ``id // RANK_GROUP_IDS`` so that
    no combiner holds the ranks of every capped query (issue 25).

    Only queries matched more than their target need a threshold, so ranks are collected for those alone.
    """

    def process(self, element: tuple[int, bytes], capped: np.ndarray,
                targets: np.ndarray) -> Iterator[tuple[int, tuple[np.ndarray, np.ndarray, np.ndarray]]]:
        if not capped.any():
            return
        ids, ranks = capped_smallest_ranks(from_bytes(Spill.get(element[1])), capped, targets)
        if not len(ids):
            return
        groups = ids // RANK_GROUP_IDS  # ids come sorted (smallest_per_query): each group is one run
        starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
        for start, end in zip(starts.tolist(), np.r_[starts[1:], len(ids)].tolist(), strict=True):
            part = ids[start:end]
            yield int(groups[start]), (part, ranks[start:end], targets[part])


Ranks = tuple[np.ndarray, np.ndarray, np.ndarray]  # (query ids, ranks, each id's limit), one triple per element


def _smallest(acc: Ranks) -> Ranks:
    """Each id's ``limit`` smallest ranks of a (ids, ranks, limits) triple."""
    ids, ranks, limits = acc
    if not len(ids):
        return acc
    by_id = np.zeros(int(ids.max()) + 1, np.int64)
    by_id[ids] = limits
    ids, ranks = smallest_per_query(ids, ranks, by_id)
    return ids, ranks, by_id[ids]


class _MergeQueryStats(beam.CombineFn):
    """(ids, ranks, limits) arrays -> the same: each id's ``limit`` smallest ranks (its language's target); cut
    back whenever twice the largest limit per id would pass.

    Bounded like ``wit_builder.core.balance.SmallestRanks``: the accumulator holds at most about 2k ranks per id.
    """

    def create_accumulator(self) -> Ranks:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)

    def add_input(self, acc: Ranks, element: Ranks) -> Ranks:
        merged = tuple(np.concatenate([a, e]) for a, e in zip(acc, element, strict=True))
        ids, _, limits = merged
        if len(limits) and len(ids) >= 2 * int(limits.max()) * max(1, len(np.unique(element[0]))):
            return _smallest(merged)  # type: ignore[arg-type]
        return merged  # type: ignore[return-value]

    def merge_accumulators(self, accs: Iterable[Ranks]) -> Ranks:
        merged = self.create_accumulator()
        for acc in accs:
            merged = self.add_input(merged, acc)
        return merged

    def compact(self, acc: Ranks) -> Ranks:
        return _smallest(acc)

    def extract_output(self, acc: Ranks) -> Ranks:
        return _smallest(acc)


def _group_thresholds(group_ranks: tuple[int, Ranks]) -> tuple[np.ndarray, np.ndarray]:
    """One id group's merged (ids, ranks, limits) -> (ids, thresholds) of the ids with ``limit`` ranks: their
    ``limit``-th smallest rank (``batches.thresholds``), one number per capped query; ids with fewer keep all."""
    ids, ranks, limits = group_ranks[1]
    uniq, local = np.unique(ids, return_inverse=True)  # local ids: no array as long as the query list per group
    limit = np.zeros(len(uniq), np.int64)
    limit[local] = limits
    dense = thresholds(local, ranks, limit, len(uniq))
    cut = dense != NO_CUT
    return uniq[cut].astype(np.int64), dense[cut]


class _DenseThresholds(beam.CombineFn):
    """(ids, thresholds) of the id groups -> one dense int64 array by id (``NO_CUT`` where none): 8 bytes per
    query id, the only place every capped query meets."""

    def create_accumulator(self) -> np.ndarray:
        return np.zeros(0, np.int64)

    def add_input(self, acc: np.ndarray, element: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        ids, values = element
        if len(ids) and int(ids.max()) >= len(acc):
            acc = np.r_[acc, np.full(int(ids.max()) + 1 - len(acc), NO_CUT, np.int64)]
        acc[ids] = values
        return acc

    def merge_accumulators(self, accs: Iterable[np.ndarray]) -> np.ndarray:
        merged = self.create_accumulator()
        for acc in accs:
            set_ids = np.flatnonzero(acc != NO_CUT)
            merged = self.add_input(merged, (set_ids, acc[set_ids]))
        return merged

    def extract_output(self, acc: np.ndarray) -> np.ndarray:
        return acc


def _cuts(matched: np.ndarray, threshold: np.ndarray, config: BalanceConfig, targets: np.ndarray) -> np.ndarray:
    """``batches.cut_array`` (what ``batches.cut_table`` makes from all ranks at once) with the gathered
    thresholds padded to the matched counts' length (ids past the end: ``NO_CUT``)."""
    dense = np.full(len(matched), NO_CUT, np.int64)
    n = min(len(matched), len(threshold))
    dense[:n] = threshold[:n]
    return cut_array(matched, dense, config, targets)


class _BalanceBucket(_EntriesDoFn):
    """A bucket's ranked rows -> (kept rows, IPC bytes of them) (a pair is kept when any of its queries keeps
    it; its ``queries`` become the keeping ones: ``batches.balance_table``); on :data:`_KEPT_IDS` the bucket's
    (ids, kept). Counts ``over_cap``, ``kept``, ``kept_matches``."""

    def __init__(self, config: BalanceConfig, queries: QuerySet, handle: shared.Shared, spill: Spill):
        super().__init__(queries, handle)
        self._config = config
        self._spill = spill

    def setup(self) -> None:
        if self._config.mode == "probabilistic":  # hard mode never needs the query strings here
            self._load_entries()

    def process(self, element: tuple[int, Ref], cuts: np.ndarray) -> Iterator[tuple[int, Ref] | TaggedOutput]:
        bucket, ref = element
        ranked = from_bytes(Spill.get(ref))
        rows, kept_ids = balance_table(ranked, cuts, self._config, self._entries)
        self.count("over_cap", ranked.num_rows - rows.num_rows)
        self.count("kept", rows.num_rows)
        self.count("kept_matches", len(kept_ids))
        for lang, n in zip(*np.unique(rows.column("lang").to_numpy(zero_copy_only=False), return_counts=True),
                           strict=True):
            self.count(language_count(str(lang), "kept"), int(n))
        if len(kept_ids):
            ids, counts = np.unique(kept_ids, return_counts=True)
            yield TaggedOutput(_KEPT_IDS, (ids.astype(np.int64), counts.astype(np.int64)))
        yield rows.num_rows, self._spill.put(f"kept/b{bucket:05d}.arrow", to_bytes(rows))


class _WritePairsFile(_EntriesDoFn):
    """(file index, IPC blobs of kept rows) -> one parquet file sorted by uid, written temp-then-rename
    (``batches.pairs_table``). Counts ``pair_files``."""

    def __init__(self, out_dir: str, queries: QuerySet, handle: shared.Shared):
        super().__init__(queries, handle)
        self._out_dir = out_dir

    def process(self, element: tuple[int, Iterable[Ref]], num_files: int) -> Iterator[None]:
        index, refs = element
        table = pairs_table(concat((Spill.get(ref) for ref in refs), KEPT), self._queries.match_rule, self._entries)
        fileio.write_parquet(fileio.join(self._out_dir, pairs_file_name(index, num_files)), table)
        self.count("pair_files")
        return iter(())


class _WriteQueryCounts(_EntriesDoFn):
    """Matched counts by id (the element), kept counts and targets by id (side inputs) -> query_counts.parquet
    (``batches.query_counts_table``). Counts ``queries``, ``queries_matched``, ``queries_capped``."""

    def __init__(self, out_path: str, queries: QuerySet, handle: shared.Shared):
        super().__init__(queries, handle)
        self._out_path = out_path

    def process(self, matched: np.ndarray, kept: np.ndarray, targets: np.ndarray) -> Iterator[None]:
        q = self._queries
        langs = pa.array(np.repeat(np.array(q.langs, object), q.sizes).tolist(), pa.string())
        fileio.write_parquet(self._out_path, query_counts_table(matched, kept, self._entries, langs))
        counts = np.zeros(len(targets), np.int64)
        counts[: min(len(matched), len(counts))] = matched[: len(counts)]
        for name, n in query_totals(counts, targets).items():
            self.count(name, n)
        return iter(())


def _own_bucket(bucket: int) -> int:
    """A uid bucket is its own spill bucket (``GroupByKeySpilled``'s ``bucket_of``)."""
    return bucket


def _row_count(element: tuple[int, Ref]) -> int:
    return element[0]


def _assign_files(element: tuple[int, Ref], num_files: int, spill: Spill) -> Iterator[tuple[int, Ref]]:
    """``batches.assign_files`` on a bucket's kept rows, each file's part spilled under the bucket's name."""
    n, ref = element
    parts = list(assign_files((n, Spill.get(ref)), num_files))
    refs = spill.put_many(f"files/{Spill.stem(ref)}.arrow", [blob for _, blob in parts])  # one file per bucket
    for (index, _), part in zip(parts, refs, strict=True):
        yield index, part


def _empty_blobs(num_files: int) -> Iterator[tuple[int, bytes]]:
    """One empty blob per file index, so a file with no rows is still written and the set of names is complete."""
    return ((index, b"") for index in range(num_files))


# ---- the composites ----

class ReadAndMatch(beam.PTransform):
    """Pool file paths -> the matched rows of every file, by uid bucket.

    Returns the ParDo's outputs: ``matched`` ((bucket, IPC bytes of ``batches.MATCHED`` rows)), :data:`REJECTED`
    (``readers.records.Rejection`` of each bad record) and :data:`~wit_builder.beam.counting.COUNTS`.

    Args:
        queries: the queries file the automaton is built from, on each worker.
        pool: how the pool files are read (``readers.layouts.PoolOptions``).
        buckets: the number of uid buckets (``--shuffle-buckets``).
        entries: the ``Shared`` handle of the sorted entries, shared with the later steps of the process.
    """

    def __init__(self, queries: QuerySet, pool: PoolOptions, buckets: int, entries: shared.Shared,
                 min_language_score: float):
        super().__init__()
        self._queries, self._pool, self._buckets, self._entries = queries, pool, buckets, entries
        self._min_score = min_language_score

    def expand(self, paths: beam.PCollection) -> Any:
        return (
            paths
            | "SpreadFiles" >> beam.Reshuffle()
            | "ReadFiles" >> beam.ParDo(_ReadAndMatch(self._queries, self._entries, self._pool, self._buckets,
                                                      self._min_score))
            .with_outputs(REJECTED, COUNTS, main="matched")
        )


class CollapseDuplicates(beam.PTransform):
    """(bucket, IPC bytes of matched rows) -> one row per uid (the earliest copy) with its seeded rank.

    Returns a dict: ``ranked`` ((bucket, IPC bytes of ``MATCHED`` rows with ``rank``)), ``matched`` (one int64
    array: pairs matched per query id) and ``counts``.

    Args:
        seed: the seed of the ranks (``--seed``).
        spill: in-process, the buckets' rows go through files (``beam.spill.GroupByKeySpilled``: one reference
            per spill file crosses Beam, linear in the pool; a bucket's rows are read back one bucket at a time).
        buckets: the uid buckets of the elements' keys (``--shuffle-buckets``).
    """

    def __init__(self, seed: int, spill: Spill | None = None, buckets: int = 256):
        super().__init__()
        self._seed = seed
        self._spill = spill or Spill(None)
        self._buckets = buckets

    def expand(self, matched: beam.PCollection) -> dict[str, beam.PCollection]:
        collapsed = (
            matched
            | "GroupByBucket" >> GroupByKeySpilled(self._spill, "matched", self._buckets, _own_bucket)
            | "CollapseBucket" >> beam.ParDo(_CollapseBucket(self._seed, self._spill))
            .with_outputs(_MATCHED_IDS, COUNTS, main="ranked")
        )
        per_query = collapsed[_MATCHED_IDS] | "MergeMatchedCounts" >> beam.CombineGlobally(_SumQueryCounts())
        return {"ranked": collapsed.ranked, "matched": per_query, COUNTS: collapsed[COUNTS]}


class Balance(beam.PTransform):
    """``{"ranked": ..., "matched": ...}`` (``CollapseDuplicates``'s) -> the pairs some query keeps.

    Hard mode: only the queries matched more than the target (``batches.capped_queries``) get a threshold, their
    target-th smallest rank from a bounded combiner per group of ``RANK_GROUP_IDS`` query ids (no combiner holds
    every capped query's ranks; only one threshold per capped query is gathered); probabilistic: the matched counts
    alone give the cuts. The cut array (``batches.cut_array``, as ``batches.cut_table`` makes it from all ranks at
    once) goes to every bucket as a side input.

    Returns a dict: ``kept`` ((row count, IPC bytes of ``batches.KEPT`` rows) per bucket), ``kept_counts`` (one
    int64 array: pairs kept per query id) and ``counts``.

    Args:
        config: the balance settings (``--balance``, ``--per-query-cap``, ``--seed``, ``--oversample``).
        queries: the queries file (probabilistic coins need the query strings).
        entries: the ``Shared`` handle of the sorted entries.
    """

    def __init__(self, config: BalanceConfig, queries: QuerySet, entries: shared.Shared, language_caps: str,
                 spill: Spill | None = None):
        super().__init__()
        self._config, self._queries, self._entries = config, queries, entries
        self._language_caps = language_caps
        self._spill = spill or Spill(None)

    def expand(self, collapsed: dict[str, beam.PCollection]) -> dict[str, beam.PCollection]:
        config, q = self._config, self._queries
        ranked, matched = collapsed["ranked"], collapsed["matched"]
        targets = matched | "LanguageTargets" >> beam.Map(id_targets, q.sizes, q.langs, config, self._language_caps,
                                                           q.languages)
        capped = matched | "CappedQueries" >> beam.Map(capped_queries, config, AsSingleton(targets))
        # Each id group's smallest ranks per capped query meet in their own combiner; only one threshold per
        # capped query meets in one place (a dense int64 array, as long as the query list at most).
        threshold = (
            ranked
            | "CappedRanks" >> beam.ParDo(_CappedRanks(), capped=AsSingleton(capped), targets=AsSingleton(targets))
            | "MergeCappedRanks" >> beam.CombinePerKey(_MergeQueryStats())
            | "GroupThresholds" >> beam.Map(_group_thresholds)
            | "Thresholds" >> beam.CombineGlobally(_DenseThresholds())
        )
        cuts = matched | "CutTable" >> beam.Map(_cuts, AsSingleton(threshold), config, AsSingleton(targets))
        balanced = ranked | "BalanceBucket" >> beam.ParDo(
            _BalanceBucket(config, self._queries, self._entries, self._spill), cuts=AsSingleton(cuts),
        ).with_outputs(_KEPT_IDS, COUNTS, main="kept")
        kept_counts = balanced[_KEPT_IDS] | "MergeKeptCounts" >> beam.CombineGlobally(_SumQueryCounts())
        return {"kept": balanced.kept, "kept_counts": kept_counts, "targets": targets, COUNTS: balanced[COUNTS]}


class WritePairs(beam.PTransform):
    """(row count, IPC bytes of kept rows) -> ``pairs-NNNNN-of-MMMMM.parquet`` files under ``out_dir``.

    The file count comes from the kept count (known only after balancing, so a side input); a pair's file from
    its uid; rows are sorted by uid: the same bytes on any runner. Returns the ``counts`` (``pair_files``).

    Args:
        out_dir: the output folder (``--out``).
        rows_per_file: rows per file at most (``--rows-per-file``).
        queries: the queries file (query ids become strings when a file is written).
        entries: the ``Shared`` handle of the sorted entries.
    """

    def __init__(self, out_dir: str, rows_per_file: int, queries: QuerySet, entries: shared.Shared,
                 spill: Spill | None = None):
        super().__init__()
        self._out_dir, self._rows_per_file, self._queries, self._entries = out_dir, rows_per_file, queries, entries
        self._spill = spill or Spill(None)

    def expand(self, kept: beam.PCollection) -> beam.PCollection:
        num_files = (
            kept
            | "CountRows" >> beam.Map(_row_count)
            | "CountKeptPairs" >> beam.CombineGlobally(sum)
            | "NumFiles" >> beam.Map(file_count, self._rows_per_file)
        )
        markers = num_files | "FileMarkers" >> beam.FlatMap(_empty_blobs)
        assigned = kept | "AssignFiles" >> beam.FlatMap(_assign_files, num_files=AsSingleton(num_files),
                                                        spill=self._spill)
        written = (
            (assigned, markers)
            | "MergeMarkers" >> beam.Flatten()
            | "GroupByFile" >> beam.GroupByKey()
            | "WriteFile" >> beam.ParDo(_WritePairsFile(self._out_dir, self._queries, self._entries),
                                        num_files=AsSingleton(num_files)).with_outputs(COUNTS)
        )
        return written[COUNTS]


class WriteQueryCounts(beam.PTransform):
    """``{"matched": ..., "kept_counts": ..., "targets": ...}`` (int64 arrays by query id; targets: pairs kept
    per query, each language's, ``batches.id_targets``) -> ``query_counts.parquet``: every query, matched or not,
    with its language. Returns the ``counts`` (``queries``, ``queries_matched``, ``queries_capped``).

    Args:
        out_path: the file to write.
        queries: the queries files (ids become strings and languages).
        entries: the ``Shared`` handle of the sorted entries.
    """

    def __init__(self, out_path: str, queries: QuerySet, entries: shared.Shared):
        super().__init__()
        self._out_path, self._queries, self._entries = out_path, queries, entries

    def expand(self, per_query: dict[str, beam.PCollection]) -> beam.PCollection:
        written = per_query["matched"] | "WriteFile" >> beam.ParDo(
            _WriteQueryCounts(self._out_path, self._queries, self._entries),
            AsSingleton(per_query["kept_counts"]), AsSingleton(per_query["targets"])).with_outputs(COUNTS)
        return written[COUNTS]


def _write_bad_records(rejections: list, out_path: str) -> None:
    fileio.write_bytes(out_path, bad_records_jsonl(rejections))


class WriteBadRecords(beam.PTransform):
    """``readers.records.Rejection`` values -> ``bad_records.jsonl`` (``stats.bad_records_jsonl``): the first
    ``stats.MAX_BAD_RECORDS`` by (file, offset), kept by a bounded combiner; written even when there are none.

    Args:
        out_path: the file to write.
    """

    def __init__(self, out_path: str):
        super().__init__()
        self._out_path = out_path

    def expand(self, rejected: beam.PCollection) -> beam.PCollection:
        return (
            rejected
            | "FirstBadRecords" >> beam.combiners.Top.Smallest(MAX_BAD_RECORDS, key=bad_record_key)
            | "WriteFile" >> beam.Map(_write_bad_records, self._out_path)
        )


class BuildPairs(beam.PTransform):
    """The stage: pool files -> ``pairs-*.parquet``, ``query_counts.parquet``, ``bad_records.jsonl`` and the
    counts file (``_counts.json``) under ``out_dir``. Applied to the pipeline itself (the files are its input).

    Args:
        files: the pool files, checked (``inputs.pool_files``).
        queries: every language's queries file, the languages kept and the match rule.
        out_dir: the output folder (``--out``).
        pool: how the pool files are read (``readers.layouts.PoolOptions``).
        balance: the balance settings.
        rows_per_file: rows per pairs file at most (``--rows-per-file``).
        buckets: uid buckets of the shuffle (``--shuffle-buckets``).
        min_language_score: a caption's language below this probability is ``und`` (``--min-language-score``).
        language_caps: how each language's cap is set (``--language-caps``, ``core.balance.language_caps``).
        spill: whether the buckets travel as files under ``OUT/_tmp_spill`` (``wit_builder.beam.spill``) with only
            their names crossing Beam; None: on the in-process runners only (``spill.spill_folder``).
    """

    def __init__(self, files: list[str], queries: QuerySet, out_dir: str, pool: PoolOptions,
                 balance: BalanceConfig, rows_per_file: int, buckets: int = 256,
                 min_language_score: float = DEFAULT_MIN_SCORE, language_caps: str = LANGUAGE_CAP_RULES[0],
                 spill: bool | None = None):
        super().__init__()
        self._spill_choice = spill
        self._files, self._queries, self._out_dir = files, queries, out_dir
        self._pool, self._balance, self._rows_per_file, self._buckets = pool, balance, rows_per_file, buckets
        self._min_score, self._language_caps = min_language_score, language_caps
        self._entries = shared.Shared()  # one handle: every step that needs the entries shares one load

    def expand(self, pipeline: beam.pvalue.PBegin) -> beam.PCollection:
        queries, entries, out = self._queries, self._entries, self._out_dir
        runner = pipeline.pipeline.options.view_as(beam.options.pipeline_options.StandardOptions).runner
        folder = spill_folder(runner, out) if self._spill_choice is None else (
            spill_folder("", out) if self._spill_choice else None)
        spill = Spill(folder)
        read = (
            pipeline
            | "PoolFiles" >> beam.Create(self._files)
            | "ReadAndMatch" >> ReadAndMatch(queries, self._pool, self._buckets, entries, self._min_score)
        )
        collapsed = read.matched | "CollapseDuplicates" >> CollapseDuplicates(self._balance.seed, spill, self._buckets)
        balanced = ({"ranked": collapsed["ranked"], "matched": collapsed["matched"]}
                    | "Balance" >> Balance(self._balance, queries, entries, self._language_caps, spill))
        written = balanced["kept"] | "WritePairs" >> WritePairs(out, self._rows_per_file, queries, entries, spill)
        listed = ({"matched": collapsed["matched"], "kept_counts": balanced["kept_counts"],
                   "targets": balanced["targets"]}
                  | "WriteQueryCounts" >> WriteQueryCounts(fileio.join(out, QUERY_COUNTS_PARQUET), queries, entries))
        _ = read[REJECTED] | "WriteBadRecords" >> WriteBadRecords(fileio.join(out, BAD_RECORDS_JSONL))
        # stats.json's counts: summed from the DoFns' COUNTS outputs (exact under retries), not from metrics
        return (
            [read[COUNTS], collapsed[COUNTS], balanced[COUNTS], written, listed]
            | "AllCounts" >> beam.Flatten()
            | "WriteCounts" >> counting.WriteCounts(fileio.join(out, counting.COUNTS_FILE))
        )
