"""Stage 4's Beam graph (wit_builder.finalize.pipeline): composites fed with ``beam.Create`` and checked with
``assert_that``, the record coder, what ReadRawShards reads, Rebalance against the brute-force selection.
(The raw shards' own reading helpers: tests/download/test_raw_shards.py.)"""

from __future__ import annotations

import itertools
import pickle
import random

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from schemas.finalize import RawRecord
from tests.conftest import BEAM_IN_PROCESS
from tests.finalize.examples import record
from tests.references import reference_kept
from wit_builder.beam.counting import COUNTS
from wit_builder.core import dedup
from wit_builder.download import raw_shards
from wit_builder.finalize.pipeline import (
    DECIDED,
    DropNearDuplicates,
    DropRepeatedUids,
    KeyedRecord,
    RawRecordCoder,
    ReadRawShards,
    Rebalance,
    WriteQueryCounts,
)


def beam_pipeline() -> BeamTestPipeline:
    return BeamTestPipeline(options=beam.options.pipeline_options.PipelineOptions(BEAM_IN_PROCESS))


def summed(counts):
    """A COUNTS output summed by name (bundles emit their own tallies)."""
    return counts | "SumCounts" >> beam.CombinePerKey(sum)


# ---- the record between the steps ----

def test_records_survive_beams_coders_and_encode_deterministically():
    rec = record("a1")
    failed = record("b2", status="failed_to_download").replace(index=None)
    numbered = rec.replace(index=7, key="0000000007", shard="00001")
    coder = beam.coders.registry.get_coder(RawRecord)
    assert isinstance(coder, RawRecordCoder) and coder.is_deterministic()
    for value in (rec, failed, numbered):
        assert coder.decode(coder.encode(value)) == value
        assert pickle.loads(pickle.dumps(value)) == value  # the fallback for tagged outputs
    keyed = beam.coders.registry.get_coder(KeyedRecord)
    assert keyed.is_deterministic() and keyed.decode(keyed.encode(("a1", rec))) == ("a1", rec)
    assert len(coder.encode(rec)) < len(beam.coders.FastPrimitivesCoder().encode(rec.final_row()))
    # A frozen dataclass of primitives has Beam's deterministic encoding (should a record ever be a key).
    deterministic = beam.coders.FastPrimitivesCoder().as_deterministic_coder("test")
    assert deterministic.encode(rec) == deterministic.encode(record("a1"))
    assert deterministic.decode(deterministic.encode(rec)) == rec


# ---- reading ----

def test_read_raw_shards_gives_every_row_and_counts_them(raw):
    files = sorted(str(p) for p in raw.root.glob("*.parquet"))
    with beam_pipeline() as p:
        read = p | ReadRawShards(raw_shards.raw_shard_names(files))
        assert_that(read.rows | "Uids" >> beam.Map(lambda r: (r.raw_shard, r.row, r.uid)),
                    equal_to([(shard, row, r["uid"]) for (shard, row), r in raw.rows.items()]), label="Rows")
        statuses: dict[str, int] = {}
        for r in raw.rows.values():
            status = "failed_to_decode" if r["status"] == "failed_to_resize" else r["status"]  # img2dataset's name
            statuses[f"raw_status_{status}"] = statuses.get(f"raw_status_{status}", 0) + 1
        assert_that(summed(read[COUNTS]), equal_to([("rows", len(raw.rows)), *statuses.items()]), label="Counts")


# ---- selection ----

def test_drop_repeated_uids_keeps_one_row_per_uid_and_counts_uids_and_candidates():
    rows = [record("a1", shard="00000", row=0), record("a1", shard="00001", row=0),
            record("b2", row=1, status="failed_to_download"),
            record("c3", row=2).replace(hash_source="stored_bytes")]
    with beam_pipeline() as p:
        out = p | beam.Create(rows) | DropRepeatedUids()
        assert_that(out.kept | "Kept" >> beam.Map(lambda r: (r.uid, r.raw_shard)),
                    equal_to([("a1", "00000"), ("c3", "00000")]), label="Kept")
        assert_that(out[DECIDED] | "Decided" >> beam.Map(lambda r: (r.uid, r.status, r.reason)),
                    equal_to([("a1", "duplicate", "repeated_uid"), ("b2", "failed_to_download", "failed_to_download")]),
                    label="Decided")
        assert_that(summed(out[COUNTS]),
                    equal_to([("uids", 3), ("hash_source_raw", 1), ("hash_source_stored_bytes", 1)]), label="Counts")


def brute_force_duplicates(rows, distance):
    """The reference of near-duplicate removal: every pair within ``distance`` compared (as finalize did before
    clusters became linear), components by union-find -> uid -> survivor uid."""
    edges = [(rules_key(a), rules_key(b)) for a, b in itertools.combinations(rows, 2)
             if dedup.hamming(int(a.phash, 16), int(b.phash, 16)) <= distance]
    return dedup.resolve_clusters(edges)


def rules_key(rec):
    return dedup.survivor_key(rec.uid, rec.original_width, rec.original_height)


def test_beam_near_duplicates_equal_the_all_pairs_reference_on_adversarial_hashes():
    rng, distance = random.Random(25), 4
    rows = []
    for i in range(400):
        if rows and rng.random() < 0.6:  # a re-encoded copy: 0..6 bits off an earlier one (chains, partial cliques)
            value = int(rows[rng.randrange(len(rows))].phash, 16)
            for bit in rng.sample(range(64), rng.randint(0, distance + 2)):
                value ^= 1 << bit
        else:  # band 0 cleared: near-blank images meet unrelated ones in one big bucket
            value = rng.getrandbits(64) & ~0x1FFF
        side = rng.choice([100, 200, 300])
        rows.append(record(f"{i:04x}", row=i, raw_rows=400, phash=f"{value:016x}", size=(side, side)))
    expected = brute_force_duplicates(rows, distance)
    assert len(expected) > 100
    with beam_pipeline() as p:
        out = p | beam.Create(rows, reshuffle=True) | DropNearDuplicates(distance)
        assert_that(out.kept | "Kept" >> beam.Map(lambda r: r.uid),
                    equal_to([r.uid for r in rows if r.uid not in expected]), label="Kept")
        assert_that(out[DECIDED] | "Decided" >> beam.Map(lambda r: (r.uid, r.reason, r.duplicate_of)),
                    equal_to([(uid, "near_duplicate", survivor) for uid, survivor in expected.items()]),
                    label="Decided")


def test_beam_rebalance_equals_the_pure_function():
    queries = ["cat", "dog", "space", "car", "tree"]
    samples = [(f"{i:032x}", [queries[i % 3], queries[(i * 7) % 5]] if i % 11 else []) for i in range(120)]
    rows = [RawRecord(key=None, uid=uid, url=f"https://example.org/{uid}.jpg", caption=None,
                      queries=tuple(sorted(set(q))), status="success", error_message=None, http_status=200, width=64,
                      height=64, original_width=64, original_height=64, sha256=None, phash=None, bytes=1000,
                      shard=None, duplicate_of=None, raw_shard="00000", raw_key=f"{i:09d}", row=i,
                      raw_rows=len(samples), raw_status="success", reason="success")
            for i, (uid, q) in enumerate(samples)]
    cap, seed = 7, 5
    expected_kept = reference_kept(samples, cap, seed)
    with beam_pipeline() as p:
        out = p | beam.Create(rows) | Rebalance(cap, seed)
        assert_that(out["kept"] | "KeptUids" >> beam.Map(lambda r: r.uid), equal_to(sorted(expected_kept)),
                    label="Kept")
        assert_that(out[DECIDED] | "DroppedUids" >> beam.Map(lambda r: (r.uid, r.status)),
                    equal_to([(uid, "over_cap") for uid, _ in samples if uid not in expected_kept]),
                    label="Dropped")
        over = sum(1 for q in queries if sum(q in s[1] for s in samples) > cap)
        assert_that(out[COUNTS] | "SumCounts" >> beam.CombinePerKey(sum), equal_to([("queries_over_cap", over)]),
                    label="QueriesOverCap")


def test_query_counts_count_each_query_entering_and_final(tmp_path):
    path = tmp_path / "query_counts.parquet"
    candidates = [record("01", queries=("moon",)), record("02", queries=("moon", "sun"))]
    with beam_pipeline() as p:
        selected = {"candidates": p | "Candidates" >> beam.Create(candidates),
                    "kept": p | "Kept" >> beam.Create(candidates[:1])}
        _ = selected | WriteQueryCounts(str(path))
    table = pq.read_table(path).to_pylist()
    assert [(r["query"], r["input"], r["final"]) for r in table] == [("moon", 2, 1), ("sun", 1, 0)]


# ---- in-process runners: only file references cross the spilled shuffles ----

CROSSED: list[tuple[str, object]] = []  # (shuffle or Flatten, element): filled by the taps in this process


def _note(element, label):
    CROSSED.append((label, element))
    return element


def _holds_record(value) -> bool:
    if isinstance(value, RawRecord):
        return True
    if isinstance(value, dict):
        value = list(value.values())
    return isinstance(value, list | tuple) and any(_holds_record(v) for v in value)


def _inside_combine(node) -> bool:
    while node is not None:
        if isinstance(node.transform, beam.CombinePerKey | beam.CombineGlobally | beam.combiners.Count.PerElement):
            return True  # the runner lifts a combine: bundles' partial sums cross, not its input
        node = node.parent
    return False


class _Crossings(beam.pipeline.PipelineVisitor):
    """Every PCollection entering a GroupByKey or a Flatten (outside a combine): what the in-process runner holds
    in its own memory until the next stage reads it."""

    def __init__(self) -> None:
        self.inputs: list[tuple[str, beam.PCollection]] = []

    def visit_transform(self, node) -> None:
        if isinstance(node.transform, beam.GroupByKey | beam.Flatten) and not _inside_combine(node.parent):
            self.inputs += [(node.full_label, pc) for pc in node.inputs]


def crossing_elements(raw, out, spilled: bool) -> list[tuple[str, object]]:
    """Finalize (re-cap and decontamination on) with a tap on every shuffle's and Flatten's input."""
    from wit_builder.finalize import inputs as stage_inputs
    from wit_builder.finalize.options import FinalizeOptions
    from wit_builder.finalize.pipeline import Finalize

    options = FinalizeOptions(raw=(str(raw.root),), out=str(out), per_query_cap=1, decontaminate=str(raw.eval_dir))
    p = beam.Pipeline(options=beam.options.pipeline_options.PipelineOptions(BEAM_IN_PROCESS))
    _ = p | Finalize(options, stage_inputs.resolve(options), spill=spilled)
    visitor = _Crossings()
    p.visit(visitor)
    for i, (label, pcoll) in enumerate(visitor.inputs):
        _ = pcoll | f"Tap{i}" >> beam.Map(_note, label)
    CROSSED.clear()
    p.run().wait_until_finish()
    return list(CROSSED)


def test_only_file_references_cross_the_spilled_shuffles(raw, tmp_path):
    inline = crossing_elements(raw, tmp_path / "inline", spilled=False)
    assert sum(_holds_record(e) for _, e in inline) >= 4 * len(raw.rows)  # the check sees records when they cross
    spilled = crossing_elements(raw, tmp_path / "spilled", spilled=True)
    assert not [label for label, e in spilled if _holds_record(e)]
    folder = str(tmp_path / "spilled" / "_tmp_spill") + "/"
    refs = [e for label, e in spilled if "SpilledRefs" in label]
    assert len(refs) >= 6  # uid, sha256, band, near, listed, shards... each one file reference or more
    assert all(isinstance(path, str) and path.startswith(folder) and 0 <= first <= last for path, first, last in refs)
