"""Stage 4: ``wit finalize`` — dedup, re-balance and write equal-count WebDataset shards.

Reads stage 3's raw shards (either engine), gives every raw row exactly one final status, and writes the
final shards, their rows, ``sizes.json``, ``stats.json``, the dataset card and its plots. Only metadata
moves through the shuffles; image bytes are read once, from the raw tars, by the writer of the final shard
that needs them (seeking to offsets recorded while reading), and only for survivors.

Global order is (raw shard name, raw row): each final shard then reads contiguous runs of one or two raw
tars instead of a few members from every raw tar. Shuffling is the data loader's job (WebDataset shuffles
shards and a sample buffer).
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from schemas import stats as stats_schema
from schemas.finalize import (
    ACCOUNTING_DIR,
    DATASET_CARD,
    FINAL_ROWS,
    IMAGE_SIZES_PNG,
    QUERY_COUNTS,
    QUERY_COUNTS_PARQUET,
    QUERY_COUNTS_PNG,
    RECORD_FIELDS,
    ROWS_DIR,
    SIZES_JSON,
    STATS_JSON,
    ImageLocation,
    RawRecord,
    record_from_values,
)
from schemas.pairs import STATS_JSON as PAIRS_STATS_JSON
from wit_builder.beam import counting, fileio, launcher
from wit_builder.core import balance, dedup, options, progress
from wit_builder.core.options import option
from wit_builder.download import raw_shards
from wit_builder.finalize import dataset_card, rules
from wit_builder.finalize import inputs as finalize_inputs
from wit_builder.finalize import shards as final_shards
from wit_builder.finalize import stats as finalize_stats
from wit_builder.finalize.match_rule_check import raw_match_rule, traced_pairs

NAMESPACE = "finalize"
# Written last, removed first: their presence says the folder holds a complete run.
COMPLETION_FILES = (STATS_JSON, SIZES_JSON, DATASET_CARD)
logger = logging.getLogger(__name__)

DECIDED = "decided"  # tagged output: rows whose final status is settled (all but the survivors)


@dataclass(frozen=True)
class FinalizeConfig:
    """The resolved run: the raw parquets found (with their footers' row count) and the checked settings.

    ValueError from ``__post_init__`` for a setting out of range (``wit_builder.finalize.inputs.check_settings``)
    or ``--decontaminate`` naming a folder without images.
    """

    raw: tuple[str, ...]               # what the user gave (folders, files or globs), for the card
    out: str
    raw_files: tuple[str, ...]         # the raw parquets, sorted
    raw_names: tuple[tuple[str, str], ...]  # (parquet path, raw shard name)
    expected_rows: int                 # rows in all raw parquets, from their footers
    samples_per_shard: int = final_shards.DEFAULT_SAMPLES_PER_SHARD
    per_query_cap: int | None = None
    phash_distance: int = 4
    seed: int = 0
    decontaminate: str | None = None
    eval_files: tuple[str, ...] = ()
    match_rule: str | None = None      # the rule the pairs were matched under (wit_builder.finalize.match_rule_check)

    def __post_init__(self) -> None:
        finalize_inputs.check_settings(self.samples_per_shard, self.per_query_cap, self.phash_distance)
        if self.decontaminate and not self.eval_files:
            raise ValueError(f"--decontaminate {self.decontaminate}: no image files found there")

    def settings(self) -> dict[str, Any]:
        """stats.json's ``parameters`` and the card's settings (no output path: the same inputs give the same
        bytes wherever they are written)."""
        return {
            "raw": " ".join(self.raw), "samples_per_shard": self.samples_per_shard,
            "per_query_cap": self.per_query_cap, "phash_distance": self.phash_distance, "seed": self.seed,
            "decontaminate": self.decontaminate, "eval_images": len(self.eval_files),
            "match_rule": self.match_rule,
        }


class RawRecordCoder(beam.coders.Coder):
    """Beam's coder of a RawRecord: its field values by position (the ImageLocation as a tuple) through
    FastPrimitivesCoder, so records cross a shuffle without pickling. Deterministic: every field is a string, an
    int, None or a tuple of those."""

    _values = beam.coders.FastPrimitivesCoder()
    _image = RECORD_FIELDS.index("image")

    def encode(self, value: RawRecord) -> bytes:
        values = [getattr(value, name) for name in RECORD_FIELDS]
        image = value.image
        values[self._image] = None if image is None else (image.path, image.offset, image.size, image.ext)
        return self._values.encode(tuple(values))

    def decode(self, encoded: bytes) -> RawRecord:
        values = list(self._values.decode(encoded))
        image = values[self._image]
        values[self._image] = None if image is None else ImageLocation(*image)
        return record_from_values(values)

    def is_deterministic(self) -> bool:
        return True

    def to_type_hint(self) -> type:
        return RawRecord


beam.coders.registry.register_coder(RawRecord, RawRecordCoder)
# Element types of the steps before a shuffle, so that Beam picks RawRecordCoder for the records (keys are
# strings and ints: deterministic coders).
KeyedRecord = beam.typehints.Tuple[str, RawRecord]
ShardRecord = beam.typehints.Tuple[int, RawRecord]


def _count(name: str, n: int = 1) -> None:
    Metrics.counter(NAMESPACE, name).inc(n)


def _decided(record: RawRecord) -> beam.pvalue.TaggedOutput:
    """A record with its final status on the DECIDED output; counts its reason (stats.json's reasons' names)."""
    _count(record.reason)
    return beam.pvalue.TaggedOutput(DECIDED, record)


def _keep_or_decide(record: RawRecord, decided: RawRecord | None) -> RawRecord | beam.pvalue.TaggedOutput:
    return record if decided is None else _decided(decided)


# ---- reading ----

class ReadRawShard(beam.DoFn):
    """One raw parquet (+ its tar) -> its records, every row of the parquet, in order."""

    def __init__(self, names: dict[str, str]) -> None:
        self._names = names

    def process(self, parquet_path: str) -> Iterator[RawRecord]:
        records = raw_shards.table_rows(fileio.read_parquet(parquet_path).to_pydict(), parquet_path,
                                        self._names[parquet_path])
        if any(r.status == "success" for r in records):
            records = self._attach_images(records, parquet_path[: -len(".parquet")] + ".tar")
        _count("raw_rows", len(records))
        progress.reporter("finalize", "rows").add(len(records))
        for record in records:
            _count(f"raw_{record.raw_status}")
            yield record

    @staticmethod
    def _attach_images(records: list[RawRecord], tar_path: str) -> list[RawRecord]:
        if not fileio.exists(tar_path):
            return raw_shards.attach_images(records, tar_path, {}, 0, "the tar file does not exist",
                                            lambda o, s: b"")
        with fileio.open_read(tar_path) as f:
            members, error = raw_shards.index_tar(f)
            size = FileSystems.match([tar_path])[0].metadata_list[0].size_in_bytes

            def read_member(offset: int, length: int) -> bytes:
                f.seek(offset)
                return f.read(length)

            return raw_shards.attach_images(records, tar_path, members, size, error, read_member)


class ReadRawShards(beam.PTransform):
    """The raw parquets (spread over workers) -> every raw row as a RawRecord."""

    def __init__(self, config: FinalizeConfig) -> None:
        super().__init__()
        self._config = config

    def expand(self, pbegin):
        return (
            pbegin
            | "RawParquets" >> beam.Create(list(self._config.raw_files))
            | "SpreadRawShards" >> beam.Reshuffle()
            | "ReadRawShards" >> beam.ParDo(ReadRawShard(dict(self._config.raw_names))).with_output_types(RawRecord)
        )


# ---- dedup, decontamination, re-balance: each splits rows into survivors (main) and DECIDED ----

def _pick_uid(uid_rows: tuple[str, Iterable[RawRecord]]) -> Iterator[Any]:
    """One row per uid stays (rules.pick_one_per_uid); also emits the uid once on ``uids``."""
    uid, records = uid_rows
    first, duplicates = rules.pick_one_per_uid(records)
    yield beam.pvalue.TaggedOutput("uids", uid)
    for duplicate in duplicates:
        yield _decided(duplicate)
    if first.status == "success":
        yield first
    else:
        if first.reason == "raw_image_unreadable":  # counted here, where the status becomes final
            _count("raw_image_unreadable")
        yield beam.pvalue.TaggedOutput(DECIDED, first)


class DropRepeatedUids(beam.PTransform):
    """The same pair in several raw rows (a uid seen twice) keeps one row; also emits each uid once."""

    def expand(self, rows):
        return (
            rows
            | "KeyByUid" >> beam.Map(lambda r: (r.uid, r)).with_output_types(KeyedRecord)
            | "GroupByUid" >> beam.GroupByKey()
            | "PickOnePerUid" >> beam.FlatMap(_pick_uid).with_outputs(DECIDED, "uids", main="kept")
        )


def _hash_eval_image(path: str, root: str) -> tuple[str, str]:
    with fileio.open_read(path) as f:
        data = f.read()
    try:
        return rules.eval_image_name(path, root), dedup.image_phash(data)
    except Exception as exc:
        raise ValueError(f"--decontaminate: evaluation image {path} does not decode ({exc}); "
                         "remove it or fix it") from exc



class Decontaminate(beam.PTransform):
    """Successes within the pHash distance of any evaluation image become ``filtered`` (rules.decontaminated)."""

    def __init__(self, eval_files: Iterable[str], root: str, distance: int) -> None:
        super().__init__()
        self._files, self._root, self._distance = sorted(eval_files), root.rstrip("/") + "/", distance

    def expand(self, rows):
        index = (
            rows.pipeline
            | "EvalImages" >> beam.Create(self._files)
            | "HashEvalImages" >> beam.Map(_hash_eval_image, self._root)
            | "CollectEvalHashes" >> beam.combiners.ToList()
            | "BuildEvalIndex" >> beam.Map(dedup.HashIndex.build, self._distance)
        )
        return rows | "DropEvalNearDuplicates" >> beam.Map(
            lambda r, idx: _keep_or_decide(r, rules.decontaminated(r, idx)),
            beam.pvalue.AsSingleton(index)).with_outputs(DECIDED, main="kept")


def _pick_exact(sha_rows: tuple[str, Iterable[RawRecord]]) -> Iterator[Any]:
    survivor, duplicates = rules.pick_one_per_sha256(sha_rows[1])
    yield survivor
    for duplicate in duplicates:
        yield _decided(duplicate)


class DropExactDuplicates(beam.PTransform):
    """Same sha256: the survivor_key-smallest sample stays, the others become duplicates of it."""

    def expand(self, rows):
        return (
            rows
            | "KeyBySha256" >> beam.Map(lambda r: (r.sha256, r)).with_output_types(KeyedRecord)
            | "GroupBySha256" >> beam.GroupByKey()
            | "KeepOnePerSha256" >> beam.FlatMap(_pick_exact).with_outputs(DECIDED, main="kept")
        )


def _apply_near(uid_joined: tuple[str, dict[str, list]], distance: int) -> Iterator[Any]:
    _, joined = uid_joined
    for record in joined["row"]:
        if joined["survivor"]:
            yield _decided(rules.near_duplicate(record, joined["survivor"][0], distance))
        else:
            yield record


class DropNearDuplicates(beam.PTransform):
    """Banded pHash keys -> candidate buckets -> edges within the distance -> clusters -> one survivor each.

    Only the edges (pairs of near duplicates, usually a small share of the samples) meet in one place for
    the union-find; the samples themselves are joined back by uid.
    """

    def __init__(self, distance: int) -> None:
        super().__init__()
        self._distance = distance

    def expand(self, rows):
        distance = self._distance
        removed = (
            rows
            | "BandKeys" >> beam.FlatMap(rules.band_entries, distance)
            | "GroupByBand" >> beam.GroupByKey()
            | "EdgesInBucket" >> beam.FlatMap(lambda bucket: rules.bucket_edges(bucket[0][0], bucket[1], distance))
            | "CollectEdges" >> beam.combiners.ToList()
            | "ResolveClusters" >> beam.FlatMap(lambda edges: sorted(dedup.resolve_clusters(edges).items()))
        )
        return (
            {"row": rows | "KeyRowsByUid" >> beam.Map(lambda r: (r.uid, r)).with_output_types(KeyedRecord),
             "survivor": removed}
            | "JoinSurvivors" >> beam.CoGroupByKey()
            | "MarkNearDuplicates" >> beam.FlatMap(_apply_near, distance).with_outputs(DECIDED, main="kept")
        )


class Rebalance(beam.PTransform):
    """Cap each query at ``cap`` again: the cap+1 smallest ranks per query (a bounded combiner) give the
    threshold of every query over the cap; that small table is a side input to the keep/drop step."""

    def __init__(self, cap: int, seed: int) -> None:
        super().__init__()
        self._cap, self._seed = cap, seed

    def expand(self, rows):
        cap, seed = self._cap, self._seed
        thresholds = (
            rows
            | "QueryRanks" >> beam.FlatMap(rules.query_ranks, seed)
            | "SmallestRanksPerQuery" >> beam.combiners.Top.SmallestPerKey(cap + 1)
            | "ThresholdsOverCap" >> beam.FlatMap(
                lambda kv: [(kv[0], balance.threshold_from_smallest(kv[1], cap))] if len(kv[1]) > cap else [])
        )
        result = rows | "DropOverCap" >> beam.Map(
            lambda r, table: _keep_or_decide(r, rules.over_cap(r, table, seed, cap)),
            beam.pvalue.AsDict(thresholds)).with_outputs(DECIDED, main="kept")
        over_cap = thresholds | "CountQueriesOverCap" >> beam.combiners.Count.Globally()
        return {"kept": result.kept, DECIDED: result[DECIDED], "queries_over_cap": over_cap}


class SelectSurvivors(beam.PTransform):
    """Rows -> the survivors (``kept``) and every other row with its final status (``decided``), in this order:
    repeated uids, decontamination, exact duplicates, near duplicates, re-balance. Also ``rows`` (the input),
    ``candidates`` (the successes entering dedup), ``uids`` (count of distinct uids) and ``queries_over_cap``."""

    def __init__(self, config: FinalizeConfig) -> None:
        super().__init__()
        self._config = config

    def expand(self, rows):
        config = self._config
        by_uid = rows | "DropRepeatedUids" >> DropRepeatedUids()
        decided, kept = [by_uid[DECIDED]], by_uid.kept
        if config.decontaminate:
            clean = kept | "Decontaminate" >> Decontaminate(config.eval_files, config.decontaminate,
                                                            config.phash_distance)
            decided.append(clean[DECIDED])
            kept = clean.kept
        exact = kept | "DropExactDuplicates" >> DropExactDuplicates()
        near = exact.kept | "DropNearDuplicates" >> DropNearDuplicates(config.phash_distance)
        decided += [exact[DECIDED], near[DECIDED]]
        kept = near.kept
        queries_over_cap = rows.pipeline | "NoCap" >> beam.Create([0])
        if config.per_query_cap:
            capped = kept | "Rebalance" >> Rebalance(config.per_query_cap, config.seed)
            decided.append(capped[DECIDED])
            kept, queries_over_cap = capped["kept"], capped["queries_over_cap"]
        return {
            "rows": rows,
            "kept": kept,
            DECIDED: decided | "AllDecided" >> beam.Flatten(),
            "candidates": by_uid.kept,
            "uids": by_uid.uids | "CountUids" >> beam.combiners.Count.Globally(),
            "queries_over_cap": queries_over_cap,
        }


# ---- order, accounting and shard writing ----

def _final_table(records: Iterable[RawRecord]) -> pa.Table:
    return pa.Table.from_pylist([r.final_row() for r in records], schema=FINAL_ROWS)


class AccountRawShard(beam.DoFn):
    """All rows of one raw shard -> accounting parquet (every row, input order, final status); the survivors,
    numbered (rules.number_raw_shard), go on keyed by final shard number."""

    def __init__(self, out: str, samples_per_shard: int) -> None:
        self._out, self._per_shard = out, samples_per_shard

    def process(self, element: tuple[str, Iterable[RawRecord]],
                offsets: dict[str, int]) -> Iterator[tuple[int, RawRecord]]:
        raw_shard, records = element
        numbered = rules.number_raw_shard(raw_shard, records, offsets.get(raw_shard, 0), self._per_shard)
        for record in numbered:
            if record.index is not None:
                yield final_shards.shard_of(record.index, self._per_shard), record
            _count(f"status_{record.status}")
        fileio.write_parquet(fileio.join(self._out, ROWS_DIR, f"{raw_shard}.parquet"), _final_table(numbered))


class WriteFinalShard(beam.DoFn):
    """One final shard: its tar (image bytes read from the raw tars by offset) and its parquet."""

    def __init__(self, out: str) -> None:
        self._out = out

    def process(self, element: tuple[int, Iterable[RawRecord]]) -> Iterator[tuple[str, int]]:
        shard, records = element
        ordered = rules.shard_order(records)
        name = final_shards.shard_name(shard)
        with fileio.atomic_create(fileio.join(self._out, f"{name}.tar")) as f:
            final_shards.write_tar(f, self._members(ordered))
        fileio.write_parquet(fileio.join(self._out, f"{name}.parquet"), _final_table(ordered))
        _count("shards_written")
        _count("samples_written", len(ordered))
        yield name, len(ordered)

    @staticmethod
    def _members(records: list[RawRecord]) -> Iterator[tuple[str, bytes]]:
        # Records come in raw-shard order, so one open raw tar serves a whole run of samples.
        open_path: str | None = None
        handle = None
        try:
            for record in records:
                image = record.image
                if image is None:
                    raise RuntimeError(f"uid {record.uid}: a survivor without a located image (finalize bug)")
                if image.path != open_path:
                    if handle is not None:
                        handle.close()
                    open_path = image.path
                    handle = FileSystems.open(open_path, compression_type="uncompressed")
                assert handle is not None
                handle.seek(image.offset)
                data = handle.read(image.size)
                if len(data) != image.size:
                    raise RuntimeError(f"{open_path}: member {record.raw_key}.{image.ext} is shorter than "
                                       "when finalize indexed it; the raw shard changed during the run")
                yield from final_shards.sample_members(record.final_row(), image.ext, data)
        finally:
            if handle is not None:
                handle.close()


class WriteShards(beam.PTransform):
    """Survivors and decided rows -> accounting parquets and final shards; produces (shard name, count).

    Survivors are numbered in (raw shard, raw row) order: a small side input gives each raw shard the global
    index of its first survivor (rules.prefix_offsets), so numbering needs no global sort.
    """

    def __init__(self, config: FinalizeConfig) -> None:
        super().__init__()
        self._config = config

    def expand(self, selected):
        config = self._config
        offsets = (
            selected["kept"]
            | "SurvivorRawShard" >> beam.Map(lambda r: r.raw_shard)
            | "SurvivorsPerRawShard" >> beam.combiners.Count.PerElement()
            | "CollectSurvivorCounts" >> beam.combiners.ToList()
            | "PrefixOffsets" >> beam.Map(rules.prefix_offsets)
        )
        return (
            (selected[DECIDED], selected["kept"])
            | "AllRows" >> beam.Flatten()
            | "KeyByRawShard" >> beam.Map(lambda r: (r.raw_shard, r)).with_output_types(KeyedRecord)
            | "GroupByRawShard" >> beam.GroupByKey()
            | "AccountRawShards" >> beam.ParDo(AccountRawShard(config.out, config.samples_per_shard),
                                               beam.pvalue.AsSingleton(offsets)).with_output_types(ShardRecord)
            | "GroupByFinalShard" >> beam.GroupByKey()
            | "WriteFinalShards" >> beam.ParDo(WriteFinalShard(config.out))
        )


class CountFacts(beam.PTransform):
    """The selected rows -> ((category, name), count) for every fact of ``wit_builder.finalize.stats``."""

    def expand(self, selected):
        return (
            (
                selected["rows"] | "InputFacts" >> beam.FlatMap(finalize_stats.input_facts),
                selected["candidates"] | "CandidateFacts" >> beam.FlatMap(finalize_stats.candidate_facts),
                selected[DECIDED] | "DecidedFacts" >> beam.FlatMap(finalize_stats.final_facts),
                selected["kept"] | "SurvivorFacts" >> beam.FlatMap(finalize_stats.final_facts),
            )
            | "AllFacts" >> beam.Flatten()
            | "CountFacts" >> beam.combiners.Count.PerElement()
        )


class WriteOutputs(beam.PTransform):
    """The selected rows -> final shards, accounting, statistics and the card; produces the stats document."""

    def __init__(self, config: FinalizeConfig) -> None:
        super().__init__()
        self._config = config

    def expand(self, selected):
        config = self._config
        sizes = selected | "WriteShards" >> WriteShards(config)
        facts = selected | "CountFacts" >> CountFacts()
        return (
            selected["rows"].pipeline
            | "SummaryTrigger" >> beam.Create([None])
            | "WriteSummary" >> beam.Map(
                write_summary,
                facts=beam.pvalue.AsList(facts),
                sizes=beam.pvalue.AsList(sizes),
                uids=beam.pvalue.AsSingleton(selected["uids"]),
                capped_queries=beam.pvalue.AsSingleton(selected["queries_over_cap"]),
                config=config,
                started=time.time(),
            )
        )


class Finalize(beam.PTransform):
    """Raw shards -> final shards, accounting and statistics. Produces the stats document (one element)."""

    def __init__(self, config: FinalizeConfig) -> None:
        super().__init__()
        self._config = config

    def expand(self, pbegin):
        return (
            pbegin
            | "ReadRawShards" >> ReadRawShards(self._config)
            | "SelectSurvivors" >> SelectSurvivors(self._config)
            | "WriteOutputs" >> WriteOutputs(self._config)
        )


# ---- statistics ----

def write_summary(_: Any, facts: list[tuple[tuple[str, str], int]], sizes: list[tuple[str, int]],
                  uids: int, capped_queries: int, config: FinalizeConfig, started: float) -> dict[str, Any]:
    """stats.json, sizes.json, query counts, the card and its plots; AccountingError when rows went missing
    (``wit_builder.finalize.stats.summarize``)."""
    stats, query_rows, sizes_map = finalize_stats.summarize(
        facts, sizes, uids=uids, queries_over_cap=capped_queries, raw_names=[name for _, name in config.raw_names],
        expected_rows=config.expected_rows, samples_per_shard=config.samples_per_shard)
    out = config.out
    fileio.write_parquet(fileio.join(out, QUERY_COUNTS_PARQUET),
                         pa.Table.from_pylist([{"query": q, "input": i, "final": f} for q, i, f in query_rows],
                                              schema=QUERY_COUNTS))
    fileio.write_bytes(fileio.join(out, IMAGE_SIZES_PNG), dataset_card.plot_image_sizes(stats["image_sizes"]))
    fileio.write_bytes(fileio.join(out, QUERY_COUNTS_PNG),
                       dataset_card.plot_query_counts(query_rows, config.per_query_cap))
    stale = remove_stale_outputs(out, sizes_map, [name for _, name in config.raw_names])
    if stale:
        logger.info("finalize: removed %d files of an earlier run that this run did not write", len(stale))
    # The completion files last, stats.json very last: a run killed before them never looks complete.
    fileio.write_json(fileio.join(out, SIZES_JSON), sizes_map)
    fileio.write_bytes(fileio.join(out, DATASET_CARD),
                       dataset_card.render_card({**stats, "settings": config.settings()}, query_rows).encode())
    document = finalize_stats.stats_document(stats, raw_files=config.raw_files, settings=config.settings(),
                                             sizes=sizes_map, seconds=time.time() - started,
                                             match_rule=config.match_rule)
    fileio.write_json(fileio.join(out, STATS_JSON), document)
    return document


# ---- command line ----

@dataclass(frozen=True)
class FinalizeOptions:
    """``wit finalize``'s settings; the flags, defaults and help are generated from these fields.

    The inputs they name are resolved (and checked) into a :class:`FinalizeConfig` by :func:`build_config`.
    """

    raw: tuple[str, ...] = option(metavar="DIR_OR_GLOB",
                                  help="stage 3 output: a folder of {shard}.parquet/.tar, a parquet file or a glob "
                                       "(repeatable)")
    out: str = option(help="output folder for the final shards")
    samples_per_shard: int = option(FinalizeConfig.samples_per_shard, unit="samples", help="samples per final shard")
    per_query_cap: int | None = option(FinalizeConfig.per_query_cap, unit="samples",
                                       help="cap every query again after losses (none: no re-cap)")
    phash_distance: int = option(FinalizeConfig.phash_distance, unit="bits",
                                 help="near duplicates: pHash Hamming distance at most this")
    decontaminate: str | None = option(FinalizeConfig.decontaminate, metavar="DIR",
                                       help="folder of evaluation images (searched recursively); near duplicates "
                                            "become 'filtered'")
    seed: int | None = option(None, help="seed of the re-balance hash rank (none: stage 2's --seed, traced through "
                                         "the raw folder's plan.json to the pairs' stats.json, else 0); with "
                                         "--per-query-cap a seed other than stage 2's is refused")

    def __post_init__(self) -> None:
        finalize_inputs.check_settings(self.samples_per_shard, self.per_query_cap, self.phash_distance)


OPTIONS = FinalizeOptions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``wit finalize``'s flags (generated from FinalizeOptions) to ``parser``."""
    options.add_arguments(parser, OPTIONS)


def raw_parquets(patterns: Iterable[str]) -> list[str]:
    """The raw parquets named by folders, files or globs (``wit_builder.finalize.inputs.raw_patterns``), sorted;
    FileNotFoundError naming the pattern that matches nothing, or all of them when no parquet is among them."""
    patterns = list(patterns)
    matched = fileio.expand_patterns(finalize_inputs.raw_patterns(patterns, fileio.join), "--raw")
    return finalize_inputs.raw_parquet_files(matched, patterns)


def eval_images(folder: str) -> list[str]:
    """The evaluation images anywhere below ``folder`` (``wit_builder.finalize.inputs.eval_images``), sorted."""
    return finalize_inputs.eval_images(m.path for m in FileSystems.match([fileio.join(folder, "**")])[0].metadata_list)


def parquet_rows(path: str) -> int:
    """Rows in a raw parquet, from its footer; RawInputError naming the file when it is no raw shard."""
    with fileio.open_read(path) as f:
        try:
            footer = pq.ParquetFile(io.BytesIO(f.read())).metadata
        except (pa.ArrowInvalid, OSError) as exc:
            raise raw_shards.RawInputError(f"{path}: not a readable parquet file ({exc})") from exc
    raw_shards.check_columns(footer.schema.to_arrow_schema().names, path)
    return int(footer.num_rows)


def _folder_key(path: str) -> str:
    return path.rstrip("/") if "://" in path else os.path.realpath(path)


def check_out_apart_from_raw(out: str, files: Iterable[str]) -> None:
    """ValueError when --out is a folder holding raw shards (``wit_builder.finalize.inputs``, same name)."""
    finalize_inputs.check_out_apart_from_raw(out, files, _folder_key)


def pairs_stats_behind(raw_files: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Stage 2's stats.json documents behind the raw shards: each raw folder's plan.json (wit_builder.download.pipeline)
    names the pairs files it read; their folders hold stage 2's stats.json. Path -> document; what cannot be
    traced (no plan.json, pairs moved, no stats.json) is left out."""
    found: dict[str, dict[str, Any]] = {}
    for pairs_path in traced_pairs(finalize_inputs.folder_of(f) for f in raw_files):
        stats_path = fileio.join(finalize_inputs.folder_of(pairs_path), PAIRS_STATS_JSON)
        if stats_path not in found and fileio.exists(stats_path):
            try:
                found[stats_path] = fileio.read_json_object(stats_path)
            except ValueError as exc:
                raise ValueError(f"{exc}; the seed of stage 2 is unknown") from exc
    return found


def build_config(args: FinalizeOptions) -> FinalizeConfig:
    """Resolve and check the inputs: the raw parquets (footers read), --out apart from them, the evaluation
    images, the match rule and the seed of the pairs behind them. FileNotFoundError, ValueError (RawInputError
    among them) name the flag and the file; the launcher turns them into exit status 2."""
    options.check_out_folder(args.out)
    files = raw_parquets(args.raw)
    check_out_apart_from_raw(args.out, files)
    names = raw_shards.raw_shard_names(files)
    expected = sum(parquet_rows(f) for f in files)
    if expected == 0:
        raise raw_shards.RawInputError(f"--raw {' '.join(args.raw)}: the raw parquets hold no rows")
    evals = tuple(eval_images(args.decontaminate)) if args.decontaminate else ()
    seed = finalize_inputs.rebalance_seed(args.seed, args.per_query_cap, pairs_stats_behind(files))
    return FinalizeConfig(
        raw=tuple(args.raw), out=args.out, raw_files=tuple(files), raw_names=tuple(sorted(names.items())),
        expected_rows=expected, samples_per_shard=args.samples_per_shard, per_query_cap=args.per_query_cap,
        phash_distance=args.phash_distance, seed=seed, decontaminate=args.decontaminate, eval_files=evals,
        match_rule=raw_match_rule(files),  # ValueError when the pairs behind the shards mix match rules
    )


def remove_stale_outputs(out: str, keep_shards: Iterable[str], keep_raw_names: Iterable[str]) -> list[str]:
    """Delete final shards and accounting parquets of an earlier run that this run did not write."""
    keep_shards, keep_raw = set(keep_shards), set(keep_raw_names)
    stale = []
    for ext in ("tar", "parquet"):
        for m in FileSystems.match([fileio.join(out, f"*.{ext}")])[0].metadata_list:
            name = m.path.rsplit("/", 1)[-1][: -len(ext) - 1]
            if name.isdigit() and name not in keep_shards:
                stale.append(m.path)
    for m in FileSystems.match([fileio.join(out, ROWS_DIR, "*.parquet")])[0].metadata_list:
        if m.path.rsplit("/", 1)[-1][: -len(".parquet")] not in keep_raw:
            stale.append(m.path)
    if stale:
        FileSystems.delete(stale)
    return stale


def start_rerun(out: str) -> list[str]:
    """Before writing anything: delete the completion files of an earlier run (stats.json first), so that a
    killed rerun never looks complete, and the ``*.tmp-*`` files killed writers left behind."""
    removed = [p for p in (fileio.join(out, name) for name in COMPLETION_FILES) if fileio.exists(p)]
    if removed:
        FileSystems.delete(removed)
    folders = (out, fileio.join(out, ACCOUNTING_DIR), fileio.join(out, ROWS_DIR))
    orphans = [m.path for folder in folders
               for m in FileSystems.match([fileio.join(folder, "*.tmp-*")])[0].metadata_list]
    if orphans:
        FileSystems.delete(orphans)
    return removed + orphans


def run(args: FinalizeOptions, beam_argv: list[str]) -> int:
    """``wit finalize``: exit 0 done, 2 bad input or settings found before any work (one line on stderr);
    a failed run raises (the launcher's exit 1)."""
    try:
        config = build_config(args)
    except (FileNotFoundError, ValueError) as exc:
        print(f"wit finalize: error: {exc}", file=sys.stderr)
        return 2
    print(f"finalize: {len(config.raw_files)} raw shards, {config.expected_rows} rows -> {config.out}", flush=True)
    fileio.makedirs(config.out)
    removed = start_rerun(config.out)
    if removed:
        print(f"finalize: removed {len(removed)} completion and temporary files of an earlier run", flush=True)
    started = time.monotonic()
    pipeline = beam.Pipeline(options=launcher.pipeline_options(beam_argv))
    _ = pipeline | "Finalize" >> Finalize(config)
    result = launcher.run_pipeline(pipeline, config.out)
    elapsed = time.monotonic() - started
    stats = fileio.read_json(fileio.join(config.out, STATS_JSON))
    counts = stats["counts"]
    statuses = stats_schema.prefixed(counts, "status_")
    mismatched = finalize_stats.counter_mismatches(counts, counting.counters(result, NAMESPACE),
                                                   rules.DROP_REASONS)
    if mismatched:  # stats.json comes from the data; a retried bundle can inflate attempted-only counters
        print(f"wit finalize: warning: monitoring counters differ from stats.json (stats, counter): {mismatched}",
              file=sys.stderr)
    if unreadable := counts.get("reason_raw_image_unreadable", 0):  # damaged download output: say so, not only count
        print(f"wit finalize: warning: {unreadable:,} stored image(s) could not be read back from their raw tars "
              f"(missing, truncated or undecodable); they are failed_to_decode, each naming its tar and key, in "
              f"{fileio.join(config.out, ROWS_DIR)}; rerun the download of those shards if that is unexpected",
              file=sys.stderr)
    shown = ", ".join(f"{s} {n}" for s, n in statuses.items() if n)
    print(progress.summary_line("finalize", [
        f"{counts['rows']:,} rows -> {counts['samples']:,} samples in {counts['shards']} shards ({shown})",
        f"{counts['rows'] / max(elapsed, 1e-9):.0f} rows/s"], elapsed, config.out), flush=True)
    return 0
