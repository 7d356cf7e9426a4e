"""Stage 4's Beam graph: raw shards -> every raw row's final status -> final shards, accounting and the counts.

``Finalize`` = ``ReadRawShards`` ─► ``SelectSurvivors`` ─► ``WriteShards`` and ``WriteQueryCounts``; the counts of
every step are summed into ``OUT/_counts.json`` (``wit_builder.beam.counting``), and stats.json, sizes.json and
the card are written from them after the run (``wit_builder.finalize.command``). Every decision is a pure
function of ``wit_builder.finalize.rules``; the DoFns only move data and count.

Only metadata moves through the shuffles; image bytes are read once, from the raw tars, by the writer of the
final shard that needs them (seeking to offsets recorded while reading), and only for survivors. Global order
is (raw shard name, raw row): each final shard then reads contiguous runs of one or two raw tars instead of a
few members from every raw tar. Shuffling is the data loader's job (WebDataset shuffles shards and a sample
buffer).

On the in-process runners every shuffle of rows below (uid, sha256, band, the near-duplicate join, raw shard,
final shard; the re-cap's wait for its thresholds) goes through files under ``OUT/_tmp_spill``
(``wit_builder.beam.spill``: only file references cross Beam's buffers; a bucket of ``ROWS_PER_BUCKET`` raw rows,
one raw shard or one final shard is held at a time), and the decided rows of each step go to the raw-shard
shuffle by themselves, never through one Flatten. Cluster runners keep their own shuffle; the bytes are the same.

```
raw *.parquet ─Reshuffle─► ReadRawShards (index the tar: member offsets; decode every stored image; hash
                             images that lack sha256/pHash)
  ─► DropRepeatedUids (GroupByKey uid) ─► [Decontaminate: eval pHash index as a side input]
  ─► DropExactDuplicates (GroupByKey sha256) ─► DropNearDuplicates (banded pHash keys ─► a star per bucket
                             component ─► union-find forests combined)
  ─► [Rebalance: Top.SmallestPerKey(cap+1) per query ─► thresholds as a side input]
  ─► survivors + every decided row ─GroupByKey raw shard─► AccountRawShards (global index, accounting parquet)
  ─GroupByKey final shard─► WriteFinalShards (reads image bytes by offset from the raw tars) ─► OUT/_sizes.json
  survivors and candidates ─► WriteQueryCounts (accounting/query_counts.parquet)
  every step's counts ─► WriteCounts (OUT/_counts.json)
```
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from schemas.finalize import (
    FINAL_ROWS,
    QUERY_COUNTS,
    QUERY_COUNTS_PARQUET,
    RECORD_FIELDS,
    ROWS_DIR,
    ImageLocation,
    RawRecord,
    record_from_values,
)
from wit_builder.beam import counting, fileio
from wit_builder.beam.counting import COUNTS
from wit_builder.beam.spill import (
    CoGroupByKeySpilled,
    GroupByKeySpilled,
    Materialize,
    Spill,
    bucket_count,
    spill_folder,
)
from wit_builder.core import dedup, progress
from wit_builder.core.verdicts import Drop
from wit_builder.download import raw_shards
from wit_builder.finalize import rebuild, rules, stats
from wit_builder.finalize import shards as final_shards
from wit_builder.finalize.inputs import Inputs
from wit_builder.finalize.options import FinalizeOptions
from wit_builder.finalize.outputs import WRITTEN_SIZES
from wit_builder.finalize.stats import QueryCount

NAMESPACE = "finalize"  # the Beam counters' namespace (monitoring)
ROWS_PER_BUCKET = 10_000  # in-process runners: raw rows per spilled shuffle bucket (one bucket held at a time)
DECIDED = "decided"  # tagged output: rows whose final status is settled (all but the survivors)


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


def _decided(record: RawRecord) -> beam.pvalue.TaggedOutput:
    return beam.pvalue.TaggedOutput(DECIDED, record)


def _keep_or_decide(record: RawRecord, decided: RawRecord | None) -> RawRecord | beam.pvalue.TaggedOutput:
    """A rule's verdict routed: the record stays (main output) when the rule decided nothing."""
    return record if decided is None else _decided(decided)


def _by_uid(record: RawRecord) -> tuple[str, RawRecord]:
    return record.uid, record


def _by_sha256(record: RawRecord) -> tuple[str | None, RawRecord]:
    return record.sha256, record  # a success always has one (raw_shards computes missing hashes)


def _by_raw_shard(record: RawRecord) -> tuple[str, RawRecord]:
    return record.raw_shard, record


def _queries(record: RawRecord) -> tuple[str, ...]:
    return record.queries


# ---- reading ----

class _ReadRawShard(counting.CountingDoFn):
    """One raw parquet (+ its tar) -> its records, every row of the parquet, in order; counts each row's
    ``stats.input_counts``."""

    namespace = NAMESPACE

    def __init__(self, names: dict[str, str]) -> None:
        super().__init__()
        self._names = names

    def process(self, parquet_path: str) -> Iterator[RawRecord]:
        records = raw_shards.table_rows(fileio.read_parquet(parquet_path).to_pydict(), parquet_path,
                                        self._names[parquet_path])
        if any(r.status == "success" for r in records):
            records = self._attach_images(records, parquet_path[: -len(".parquet")] + ".tar")
        progress.reporter("finalize", "rows").add(len(records))
        for record in records:
            for name in stats.input_counts(record):
                self.count(name)
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
    """The raw parquets (spread over workers) -> every raw row as a RawRecord (output ``rows``) and their counts
    (COUNTS: ``rows``, ``raw_status_*``).

    Args:
        raw_names: raw parquet path -> raw shard name (``wit_builder.download.raw_shards.raw_shard_names``); the
            ``.tar`` beside each parquet holds its images.
    """

    def __init__(self, raw_names: Mapping[str, str]) -> None:
        super().__init__()
        self._names = dict(raw_names)

    def expand(self, pbegin):
        return (
            pbegin
            | "RawParquets" >> beam.Create(sorted(self._names))
            | "SpreadRawShards" >> beam.Reshuffle()
            | "ReadRawShards" >> beam.ParDo(_ReadRawShard(self._names)).with_output_types(RawRecord)
            .with_outputs(COUNTS, main="rows")
        )


# ---- dedup, decontamination, re-balance: each splits rows into survivors (main) and DECIDED ----

class _PickOnePerUid(counting.CountingDoFn):
    """One uid's rows -> the row that stays (main output when it is a success: a dedup candidate) and the others
    with their final status (DECIDED), by ``rules.pick_one_per_uid``; counts ``uids`` and each candidate's
    ``stats.candidate_counts``."""

    namespace = NAMESPACE

    def process(self, uid_rows: tuple[str, Iterable[RawRecord]]) -> Iterator[Any]:
        first, duplicates = rules.pick_one_per_uid(uid_rows[1])
        self.count("uids")
        for duplicate in duplicates:
            yield _decided(duplicate)
        if first.status != "success":  # a failure that stays keeps its raw status: final now
            yield _decided(first)
            return
        for name in stats.candidate_counts(first):
            self.count(name)
        yield first


class DropRepeatedUids(beam.PTransform):
    """Rows -> one row per uid (the same pair in several raw rows keeps one): the successes (``kept``), every
    other row with its final status (DECIDED) and the counts (COUNTS: ``uids``, ``hash_source_*``).

    Args:
        spill: where the shuffle's buckets go on an in-process runner (``wit_builder.beam.spill``); inline by
            default (a plain GroupByKey).
        buckets: the buckets of a spilled shuffle.
    """

    def __init__(self, spill: Spill | None = None, buckets: int = 1) -> None:
        super().__init__()
        self._spill, self._buckets = spill or Spill(None), buckets

    def expand(self, rows):
        return (
            rows
            | "KeyByUid" >> beam.Map(_by_uid).with_output_types(KeyedRecord)
            | "GroupByUid" >> GroupByKeySpilled(self._spill, "uid", self._buckets)
            | "PickOnePerUid" >> beam.ParDo(_PickOnePerUid()).with_outputs(DECIDED, COUNTS, main="kept")
        )


def _read_eval_image(path: str, root: str) -> Iterator[tuple[str, str] | Drop]:
    """``rules.eval_image_hash`` of the file; a file that cannot be read is skipped (said in the log)."""
    try:
        with fileio.open_read(path) as f:
            data: bytes | None = f.read()
        problem = ""
    except OSError as exc:
        data, problem = None, f"cannot be read ({exc})"
    for verdict in rules.eval_image_hash(path, root, data, problem):
        if isinstance(verdict, Drop):
            logging.getLogger(__name__).warning("--decontaminate: skipped evaluation image %s", verdict.record)
        yield verdict


def _decontaminate(record: RawRecord, index: dedup.HashIndex) -> RawRecord | beam.pvalue.TaggedOutput:
    return _keep_or_decide(record, rules.decontaminated(record, index))


class Decontaminate(beam.PTransform):
    """Successes -> those far from every evaluation image (``kept``) and those within the pHash distance of one,
    ``filtered`` (DECIDED; ``rules.decontaminated``). The evaluation images' pHash index is a side input; an
    image that cannot be read or decoded is skipped and counted (COUNTS: ``eval_images_hashed``,
    ``eval_images_unreadable``), never the end of the run.

    Args:
        eval_files: the evaluation images (``wit_builder.finalize.inputs.eval_images_below``).
        root: the ``--decontaminate`` folder; messages name an image by its path below it.
        distance: the largest pHash Hamming distance (bits) of a copy.
    """

    def __init__(self, eval_files: Iterable[str], root: str, distance: int) -> None:
        super().__init__()
        self._files, self._root, self._distance = sorted(eval_files), root.rstrip("/") + "/", distance

    def expand(self, rows):
        index = (
            rows.pipeline
            | "EvalImages" >> beam.Create(self._files)
            | "HashEvalImages" >> beam.ParDo(counting.RuleDoFn(
                _read_eval_image, self._root, kept_as="eval_images_hashed", namespace=NAMESPACE)
            ).with_outputs(COUNTS, main="hashes")
        )
        built = (
            index.hashes
            | "CollectEvalHashes" >> beam.combiners.ToList()
            | "BuildEvalIndex" >> beam.Map(dedup.HashIndex.build, self._distance)
        )
        clean = rows | "DropEvalNearDuplicates" >> beam.Map(
            _decontaminate, beam.pvalue.AsSingleton(built)).with_outputs(DECIDED, main="kept")
        return {"kept": clean.kept, DECIDED: clean[DECIDED], COUNTS: index[COUNTS]}


def _pick_exact(sha_rows: tuple[str, Iterable[RawRecord]]) -> Iterator[Any]:
    survivor, duplicates = rules.pick_one_per_sha256(sha_rows[1])
    yield survivor
    for duplicate in duplicates:
        yield _decided(duplicate)


class DropExactDuplicates(beam.PTransform):
    """Successes -> one per sha256 (``kept``: the survivor_key-smallest) and the others, duplicates of it
    (DECIDED; ``rules.pick_one_per_sha256``).

    Args:
        spill, buckets: the shuffle's spill (as for :class:`DropRepeatedUids`).
    """

    def __init__(self, spill: Spill | None = None, buckets: int = 1) -> None:
        super().__init__()
        self._spill, self._buckets = spill or Spill(None), buckets

    def expand(self, rows):
        return (
            rows
            | "KeyBySha256" >> beam.Map(_by_sha256).with_output_types(KeyedRecord)
            | "GroupBySha256" >> GroupByKeySpilled(self._spill, "sha256", self._buckets)
            | "KeepOnePerSha256" >> beam.FlatMap(_pick_exact).with_outputs(DECIDED, main="kept")
        )


def _bucket_edges(bucket: tuple[tuple[int, int], Iterable[Any]], distance: int) -> list[rules.Edge]:
    return rules.bucket_edges(bucket[1], distance)


class _ClusterForest(beam.CombineFn):
    """Edges -> every non-survivor uid's survivor uid, through a union-find forest
    (``wit_builder.core.dedup.UnionFind``) as the accumulator: each bundle links its edges into its own
    forest and forests merge by their links, so no list of edges is ever gathered; the largest state is one
    entry per image with a near duplicate."""

    def create_accumulator(self) -> dedup.UnionFind:
        return dedup.UnionFind()

    def add_input(self, forest: dedup.UnionFind, edge: rules.Edge) -> dedup.UnionFind:
        forest.union(*edge)
        return forest

    def merge_accumulators(self, forests: Iterable[dedup.UnionFind]) -> dedup.UnionFind:
        merged = None
        for forest in forests:
            if merged is None:
                merged = forest
            else:
                merged.merge(forest)
        return merged if merged is not None else dedup.UnionFind()

    def extract_output(self, forest: dedup.UnionFind) -> list[tuple[str, str]]:
        return sorted(forest.survivors().items())


def _apply_near(uid_joined: tuple[str, dict[str, list]], distance: int) -> Iterator[Any]:
    _, joined = uid_joined
    for record in joined["row"]:
        if joined["survivor"]:
            yield _decided(rules.near_duplicate(record, joined["survivor"][0], distance))
        else:
            yield record


class DropNearDuplicates(beam.PTransform):
    """Successes -> one per cluster of near duplicates (``kept``) and the others, duplicates of its survivor
    (DECIDED): banded pHash keys -> candidate buckets -> a star per component of each bucket -> clusters
    (union-find, ``wit_builder.core.dedup``: linear in a cluster's size, never its pairs).

    The stars feed a combiner whose accumulator is a union-find forest (one entry per image that has a near
    duplicate; no edge list is gathered); the samples themselves are joined back by uid.

    Args:
        distance: the largest pHash Hamming distance (bits) of two near duplicates.
        spill, buckets: the shuffles' spill (as for :class:`DropRepeatedUids`).
    """

    def __init__(self, distance: int, spill: Spill | None = None, buckets: int = 1) -> None:
        super().__init__()
        self._distance = distance
        self._spill, self._buckets = spill or Spill(None), buckets

    def expand(self, rows):
        distance = self._distance
        removed = (
            rows
            | "BandKeys" >> beam.FlatMap(rules.band_entries, distance)
            | "GroupByBand" >> GroupByKeySpilled(self._spill, "band", self._buckets)
            | "EdgesInBucket" >> beam.FlatMap(_bucket_edges, distance)
            | "ClusterForest" >> beam.CombineGlobally(_ClusterForest())
            | "ResolveClusters" >> beam.FlatMap(list)
        )
        return (
            {"row": rows | "KeyRowsByUid" >> beam.Map(_by_uid).with_output_types(KeyedRecord),
             "survivor": removed}
            | "JoinSurvivors" >> CoGroupByKeySpilled(self._spill, "near", self._buckets)
            | "MarkNearDuplicates" >> beam.FlatMap(_apply_near, distance).with_outputs(DECIDED, main="kept")
        )


def _cap(record: RawRecord, thresholds: dict[str, Any], seed: int, cap: int,
         caps: dict[str, int]) -> RawRecord | beam.pvalue.TaggedOutput:
    return _keep_or_decide(record, rules.over_cap(record, thresholds, seed, cap, caps))


class Rebalance(beam.PTransform):
    """Survivors -> those some query keeps under the cap (``kept``) and the others, ``over_cap`` (DECIDED), with
    the counts (COUNTS: ``queries_over_cap``). The cap+1 smallest ranks per query (a bounded combiner) give the
    threshold of every query over the cap (``rules.threshold_over_cap``); that small table is a side input to the
    keep/drop step (``rules.over_cap``).

    Args:
        cap: samples per query at most (``--per-query-cap``).
        seed: the seed of the rank (stage 2's balance seed: ``wit_builder.finalize.inputs.rebalance_seed``).
        caps: each language's cap (``wit_builder.finalize.inputs.language_recaps``: stage 2's per-language rule
            with English at ``cap``); empty: ``cap`` for every query.
        spill: on an in-process runner the rows wait for the thresholds as files (``spill.Materialize``), not
            in the runner's memory; inline by default.
    """

    def __init__(self, cap: int, seed: int, caps: dict[str, int] | None = None, spill: Spill | None = None) -> None:
        super().__init__()
        self._cap, self._seed, self._caps = cap, seed, dict(caps or {})
        self._spill = spill or Spill(None)

    def expand(self, rows):
        cap, seed, caps = self._cap, self._seed, self._caps
        thresholds = (
            rows
            | "QueryRanks" >> beam.FlatMap(rules.query_ranks, seed, caps)
            | "SmallestRanksPerQuery" >> beam.combiners.Top.SmallestPerKey(max([cap, *caps.values()]) + 1)
            | "ThresholdsOverCap" >> beam.ParDo(counting.RuleDoFn(
                rules.threshold_over_cap, cap, caps, kept_as="queries_over_cap", namespace=NAMESPACE))
            .with_outputs(COUNTS, main="thresholds")
        )
        waiting = rows | "AwaitThresholds" >> Materialize(self._spill, "rebalance")
        capped = waiting | "DropOverCap" >> beam.Map(
            _cap, beam.pvalue.AsDict(thresholds.thresholds), seed, cap, caps).with_outputs(DECIDED, main="kept")
        return {"kept": capped.kept, DECIDED: capped[DECIDED], COUNTS: thresholds[COUNTS]}


class SelectSurvivors(beam.PTransform):
    """Rows -> the survivors (``kept``) and every other row with its final status (DECIDED: a tuple of
    PCollections, one per step, flattened by the consumer's shuffle: an in-process runner holds a Flatten's
    output in memory), in this order: repeated uids, decontamination, exact duplicates, near duplicates,
    re-balance. Also ``candidates`` (the successes entering dedup) and the counts (COUNTS).

    Args:
        phash_distance: near duplicates and copies of evaluation images: pHash Hamming distance at most this.
        decontaminate: the folder of the evaluation images, or None (no decontamination).
        eval_files: the evaluation images below it.
        per_query_cap: cap every query again at this many samples, or None (no re-balance).
        seed: the re-balance rank's seed.
        language_caps: each language's re-cap (``inputs.language_recaps``); empty: ``per_query_cap`` for all.
        spill, buckets: the shuffles' spill (as for :class:`DropRepeatedUids`).
    """

    def __init__(self, phash_distance: int, decontaminate: str | None = None, eval_files: Iterable[str] = (),
                 per_query_cap: int | None = None, seed: int = 0,
                 language_caps: Mapping[str, int] | None = None, spill: Spill | None = None,
                 buckets: int = 1) -> None:
        super().__init__()
        self._distance, self._decontaminate, self._eval_files = phash_distance, decontaminate, tuple(eval_files)
        self._cap, self._seed, self._language_caps = per_query_cap, seed, dict(language_caps or {})
        self._spill, self._buckets = spill or Spill(None), buckets

    def expand(self, rows):
        spill, buckets = self._spill, self._buckets
        by_uid = rows | "DropRepeatedUids" >> DropRepeatedUids(spill, buckets)
        decided, counts, kept = [by_uid[DECIDED]], [by_uid[COUNTS]], by_uid.kept
        if self._decontaminate:
            clean = kept | "Decontaminate" >> Decontaminate(self._eval_files, self._decontaminate, self._distance)
            decided.append(clean[DECIDED])
            counts.append(clean[COUNTS])
            kept = clean["kept"]
        exact = kept | "DropExactDuplicates" >> DropExactDuplicates(spill, buckets)
        near = exact.kept | "DropNearDuplicates" >> DropNearDuplicates(self._distance, spill, buckets)
        decided += [exact[DECIDED], near[DECIDED]]
        kept = near.kept
        if self._cap:
            capped = kept | "Rebalance" >> Rebalance(self._cap, self._seed, self._language_caps, spill)
            decided.append(capped[DECIDED])
            counts.append(capped[COUNTS])
            kept = capped["kept"]
        return {
            "kept": kept,
            DECIDED: tuple(decided),
            "candidates": by_uid.kept,
            COUNTS: counts | "SelectionCounts" >> beam.Flatten(),
        }


# ---- --uids: the list is the selection (wit_builder.finalize.rebuild) ----

def _uid_of_line(line: str) -> Iterator[str]:
    yield from rebuild.uids_in_lines([line])


def _uid_of_row(row: dict[str, Any]) -> Iterator[str]:
    if row.get("uid"):
        yield row["uid"]


def _listed(uid: str) -> tuple[str, bool]:
    return uid, True


class _SelectListedUid(counting.CountingDoFn):
    """One uid's rows and whether the list names it -> the kept success (main), the rows decided here (DECIDED)
    and, for a listed uid without a success, (uid, why) on ``missing`` (``rebuild.select_listed``). Counts
    ``uids`` (uids with raw rows), ``uids_listed``, ``uids_missing`` and each kept row's candidate counts."""

    namespace = NAMESPACE

    def __init__(self, list_name: str) -> None:
        super().__init__()
        self._list = list_name

    def process(self, element: tuple[str, dict[str, Iterable[Any]]]) -> Iterator[Any]:
        uid, joined = element
        listed = bool(list(joined["listed"]))
        records = list(joined["rows"])
        if records:
            self.count("uids")
        if listed:
            self.count("uids_listed")
        kept, decided, missing = rebuild.select_listed(uid, listed, records, self._list)
        for record in decided:
            yield _decided(record)
        if missing is not None:
            self.count("uids_missing")
            yield beam.pvalue.TaggedOutput("missing", (uid, missing))
        if kept is not None:
            for name in stats.candidate_counts(kept):
                self.count(name)
            yield kept


def _write_missing(missing: list[tuple[str, str]], path: str) -> None:
    fileio.write_bytes(path, rebuild.missing_text(missing))


class SelectListed(beam.PTransform):
    """Rows -> the listed uids' successes (``kept``, also ``candidates``) and every other row with its final status
    (DECIDED), for ``wit finalize --uids``; the listed uids without a success are written to ``missing_path``
    (``rebuild.MISSING_UIDS``). The list is read by Beam's text or parquet source (split over workers) and
    joined with the rows by uid, so neither side is held in one place but the missing uids.

    Args:
        uid_list: the ``--uids`` file.
        missing_path: where the listed uids without a success go (sorted ``uid<TAB>why`` lines).
        spill, buckets: the join's spill (as for :class:`DropRepeatedUids`).
    """

    def __init__(self, uid_list: str, missing_path: str, spill: Spill | None = None, buckets: int = 1) -> None:
        super().__init__()
        self._list, self._missing = uid_list, missing_path
        self._spill, self._buckets = spill or Spill(None), buckets

    def expand(self, rows):
        # Beam's own sources split the list (text by byte ranges, parquet by row groups) over workers
        if rebuild.is_parquet(self._list):
            uids = (rows.pipeline
                    | "ReadUidList" >> beam.io.ReadFromParquet(self._list, columns=["uid"])
                    | "UidColumn" >> beam.FlatMap(_uid_of_row))
        else:
            uids = (rows.pipeline
                    | "ReadUidList" >> beam.io.ReadFromText(self._list)
                    | "UidLines" >> beam.FlatMap(_uid_of_line))
        listed = uids | "ListedUid" >> beam.Map(_listed)
        selected = (
            {"listed": listed, "rows": rows | "KeyRowsByUid" >> beam.Map(_by_uid).with_output_types(KeyedRecord)}
            | "JoinListByUid" >> CoGroupByKeySpilled(self._spill, "listed", self._buckets)
            | "SelectListedUids" >> beam.ParDo(_SelectListedUid(self._list))
            .with_outputs(DECIDED, COUNTS, "missing", main="kept")
        )
        _ = (selected.missing
             | "CollectMissingUids" >> beam.combiners.ToList()
             | "WriteMissingUids" >> beam.Map(_write_missing, self._missing))
        return {"kept": selected.kept, DECIDED: (selected[DECIDED],), "candidates": selected.kept,
                COUNTS: selected[COUNTS]}


# ---- order, accounting and shard writing ----

def _final_table(records: Iterable[RawRecord]) -> pa.Table:
    return pa.Table.from_pylist([r.final_row() for r in records], schema=FINAL_ROWS)


class _AccountRawShard(counting.CountingDoFn):
    """All rows of one raw shard -> accounting parquet (every row, input order, final status); the survivors,
    numbered (rules.number_raw_shard), go on keyed by final shard number. Counts every row's
    ``stats.final_counts``."""

    namespace = NAMESPACE

    def __init__(self, out: str, samples_per_shard: int) -> None:
        super().__init__()
        self._out, self._per_shard = out, samples_per_shard

    def process(self, element: tuple[str, Iterable[RawRecord]],
                offsets: dict[str, int]) -> Iterator[tuple[int, RawRecord]]:
        raw_shard, records = element
        numbered = rules.number_raw_shard(raw_shard, records, offsets.get(raw_shard, 0), self._per_shard)
        for record in numbered:
            for name in stats.final_counts(record):
                self.count(name)
            if record.index is not None:
                yield final_shards.shard_of(record.index, self._per_shard), record
        fileio.write_parquet(fileio.join(self._out, ROWS_DIR, f"{raw_shard}.parquet"), _final_table(numbered))


class _WriteFinalShard(beam.DoFn):
    """One final shard: its tar (image bytes read from the raw tars by offset) and its parquet; produces
    (shard name, samples written)."""

    def __init__(self, out: str) -> None:
        super().__init__()
        self._out = out

    def process(self, element: tuple[int, Iterable[RawRecord]]) -> Iterator[tuple[str, int]]:
        shard, records = element
        ordered = rules.shard_order(records)
        name = final_shards.shard_name(shard)
        with fileio.atomic_create(fileio.join(self._out, f"{name}.tar")) as f:
            final_shards.write_tar(f, self._members(ordered))
        fileio.write_parquet(fileio.join(self._out, f"{name}.parquet"), _final_table(ordered))
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


def _survivor_raw_shard(record: RawRecord) -> str:
    return record.raw_shard


class _RawShardBucket:
    """A raw shard's spill bucket: its place among the run's raw shard names (one raw shard per bucket)."""

    def __init__(self, names: Iterable[str]) -> None:
        self._index = {name: i for i, name in enumerate(sorted(names))}

    def __call__(self, name: str) -> int:
        return self._index[name]


class _FinalShardBucket:
    """A final shard's spill bucket: its number modulo the buckets (one final shard per bucket when there are as
    many buckets as final shards at most)."""

    def __init__(self, buckets: int) -> None:
        self._buckets = buckets

    def __call__(self, shard: int) -> int:
        return shard % self._buckets


class WriteShards(beam.PTransform):
    """Survivors (``kept``) and decided rows (DECIDED) -> the accounting parquets and the final shards under
    ``out``; produces ``sizes`` ((final shard name, samples written)) and COUNTS (every row's final status:
    ``status_*``, ``reason_*``, ``size_*``).

    Survivors are numbered in (raw shard, raw row) order: a small side input gives each raw shard the global
    index of its first survivor (rules.prefix_offsets), so numbering needs no global sort.

    Args:
        out: the output folder.
        samples_per_shard: samples per final shard (the last one may hold fewer).
        spill: where the two shuffles' buckets go on an in-process runner (``wit_builder.beam.spill``): one raw
            shard, then one final shard per bucket; inline by default.
        raw_shards: the raw shard names (a spilled shuffle's buckets).
        rows: the raw rows (at most this many survivors: the final shards' buckets).
    """

    def __init__(self, out: str, samples_per_shard: int, spill: Spill | None = None,
                 raw_shards: Iterable[str] = (), rows: int = 0) -> None:
        super().__init__()
        self._out, self._per_shard = out, samples_per_shard
        self._spill, self._raw_shards, self._rows = spill or Spill(None), sorted(raw_shards), rows

    def expand(self, selected):
        offsets = (
            selected["kept"]
            | "SurvivorRawShard" >> beam.Map(_survivor_raw_shard)
            | "SurvivorsPerRawShard" >> beam.combiners.Count.PerElement()
            | "CollectSurvivorCounts" >> beam.combiners.ToList()
            | "PrefixOffsets" >> beam.Map(rules.prefix_offsets)
        )
        keyed = tuple(rows | f"KeyByRawShard{i}" >> beam.Map(_by_raw_shard).with_output_types(KeyedRecord)
                      for i, rows in enumerate((*selected[DECIDED], selected["kept"])))
        final_buckets = bucket_count(self._rows, self._per_shard)  # survivors <= rows
        accounted = (
            keyed
            | "GroupByRawShard" >> GroupByKeySpilled(self._spill, "raw_shard", max(1, len(self._raw_shards)),
                                                     _RawShardBucket(self._raw_shards))
            | "AccountRawShards" >> beam.ParDo(_AccountRawShard(self._out, self._per_shard),
                                               beam.pvalue.AsSingleton(offsets)).with_output_types(ShardRecord)
            .with_outputs(COUNTS, main="numbered")
        )
        sizes = (
            accounted.numbered
            | "GroupByFinalShard" >> GroupByKeySpilled(self._spill, "final_shard", final_buckets,
                                                       _FinalShardBucket(final_buckets))
            | "WriteFinalShards" >> beam.ParDo(_WriteFinalShard(self._out))
        )
        return {"sizes": sizes, COUNTS: accounted[COUNTS]}


def _write_query_counts(rows: list[QueryCount], path: str) -> None:
    table = pa.Table.from_pylist([{"query": q, "input": i, "final": f} for q, i, f in sorted(rows)],
                                 schema=QUERY_COUNTS)
    fileio.write_parquet(path, table)


class WriteQueryCounts(beam.PTransform):
    """The selected rows -> per query, the successes entering dedup (``candidates``) and the samples in the
    final shards (``kept``), written sorted by query (``schemas.finalize.QUERY_COUNTS``).

    Args:
        path: the parquet to write (``OUT/accounting/query_counts.parquet``).
    """

    def __init__(self, path: str) -> None:
        super().__init__()
        self._path = path

    def expand(self, selected):
        entering = (selected["candidates"]
                    | "QueriesEntering" >> beam.FlatMap(_queries)
                    | "CountEntering" >> beam.combiners.Count.PerElement())
        final = (selected["kept"]
                 | "QueriesFinal" >> beam.FlatMap(_queries)
                 | "CountFinal" >> beam.combiners.Count.PerElement())
        return (
            {"input": entering, "final": final}
            | "JoinByQuery" >> beam.CoGroupByKey()
            | "QueryRows" >> beam.Map(stats.query_row)
            | "CollectQueryRows" >> beam.combiners.ToList()
            | "WriteQueryCounts" >> beam.Map(_write_query_counts, self._path)
        )


class Finalize(beam.PTransform):
    """Raw shards -> final shards (``{shard}.tar``/``.parquet``) and ``accounting/`` under ``options.out``, and
    for the command the counts (``OUT/_counts.json``) and the written shard sizes (``OUT/_sizes.json``), from
    which stats.json, sizes.json and the card are written after the run (``wit_builder.finalize.command``).

    Args:
        options: the command's settings (``out``, ``samples_per_shard``, ``per_query_cap``, ``phash_distance``,
            ``decontaminate``).
        inputs: what they name, resolved (``wit_builder.finalize.inputs.resolve``): the raw parquets and their
            names, the evaluation images, the re-balance seed.
        spill: whether the shuffles' rows travel as files under ``OUT/_tmp_spill`` (``wit_builder.beam.spill``)
            with only their names crossing Beam, one bucket (``ROWS_PER_BUCKET`` raw rows, a raw shard, a final
            shard) held at a time; None: on the in-process runners only (``spill.spill_folder``).
    """

    def __init__(self, options: FinalizeOptions, inputs: Inputs, spill: bool | None = None) -> None:
        super().__init__()
        self._options, self._inputs, self._spill_choice = options, inputs, spill

    def expand(self, pbegin):
        options, inputs, out = self._options, self._inputs, self._options.out
        runner = pbegin.pipeline.options.view_as(beam.options.pipeline_options.StandardOptions).runner
        folder = spill_folder(runner, out) if self._spill_choice is None else (
            spill_folder("", out) if self._spill_choice else None)
        spill, buckets = Spill(folder), bucket_count(inputs.rows, ROWS_PER_BUCKET)
        read = pbegin | "ReadRawShards" >> ReadRawShards(dict(inputs.raw_names))
        if options.uids:  # a rebuild: the list is the selection
            selected = read.rows | "SelectListed" >> SelectListed(
                options.uids, fileio.join(out, rebuild.MISSING_UIDS), spill, buckets)
        else:
            selected = read.rows | "SelectSurvivors" >> SelectSurvivors(
                options.phash_distance, options.decontaminate, inputs.eval_files, options.per_query_cap, inputs.seed,
                dict(inputs.language_caps), spill, buckets)
        written = selected | "WriteShards" >> WriteShards(out, options.samples_per_shard, spill,
                                                          [name for _, name in inputs.raw_names], inputs.rows)
        _ = selected | "WriteQueryCounts" >> WriteQueryCounts(fileio.join(out, QUERY_COUNTS_PARQUET))
        _ = written["sizes"] | "WriteShardSizes" >> counting.WriteCounts(fileio.join(out, WRITTEN_SIZES))
        return (
            (read[COUNTS], selected[COUNTS], written[COUNTS])
            | "AllCounts" >> beam.Flatten()
            | "WriteCounts" >> counting.WriteCounts(fileio.join(out, counting.COUNTS_FILE))
        )
