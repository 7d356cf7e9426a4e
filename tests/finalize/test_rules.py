"""Stage 4's pure rules (wit_builder.finalize.rules / finalize_stats / finalize_inputs) and its row type
(schemas.finalize.RawRecord), without Beam: realistic records in, decisions, numbering and statistics out."""

from __future__ import annotations

import dataclasses
import os
import pickle

import apache_beam as beam
import pyarrow as pa
import pytest

from schemas.finalize import FINAL_ROWS, FINAL_STATUSES, ImageLocation, RawRecord
from schemas.stats import validate as validate_stats
from wit_builder.core import balance, dedup
from wit_builder.core.uid import hash_rank
from wit_builder.finalize import dataset_card, rules
from wit_builder.finalize import inputs as finalize_inputs
from wit_builder.finalize import stats as finalize_stats

PHASH = "c3a1f0e8d4b29657"


def record(uid: str, *, shard: str = "00000", row: int = 0, raw_rows: int = 1, status: str = "success",
           queries: tuple[str, ...] = ("space shuttle",), size: tuple[int, int] = (640, 480), phash: str | None = PHASH,
           sha256: str | None = None, image: ImageLocation | None = None) -> RawRecord:
    return RawRecord(
        key=None, uid=uid, url=f"https://upload.example.org/{uid}.jpg", caption=f"photo {uid}", queries=queries,
        status=status, error_message=None if status == "success" else "HTTP 404", http_status=200, width=256,
        height=192, original_width=size[0], original_height=size[1],
        sha256=sha256 or f"{int(uid, 16):064x}", phash=phash, bytes=40_000, shard=None, duplicate_of=None,
        raw_shard=shard, raw_key=f"{row:09d}", row=row, raw_rows=raw_rows, raw_status=status, reason=status,
        image=image or (ImageLocation(f"/raw/{shard}.tar", 512 * (row + 1), 40_000, "jpg")
                        if status == "success" else None))


def flip(phash: str, bits: int) -> str:
    return f"{int(phash, 16) ^ ((1 << bits) - 1):016x}"


# ---- the record type ----

def test_record_fields_start_with_the_final_rows_columns_and_final_row_matches_the_schema():
    names = [f.name for f in dataclasses.fields(RawRecord)]
    assert names[:len(FINAL_ROWS)] == FINAL_ROWS.names
    rec = record("a1")
    row = rec.final_row()
    assert list(row) == FINAL_ROWS.names and row["queries"] == ["space shuttle"]
    table = pa.Table.from_pylist([row], schema=FINAL_ROWS)  # the row is exactly writable with the schema
    assert table.num_rows == 1 and table.column("raw_key").to_pylist() == ["000000000"]
    assert "row" not in row and "image" not in row and "reason" not in row  # bookkeeping never leaves finalize


def test_record_is_frozen_and_replace_refuses_undeclared_fields():
    rec = record("a1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        rec.status = "duplicate"  # type: ignore[misc]
    with pytest.raises(TypeError):
        rec.replace(_reason="x")
    assert rec.replace(status="over_cap").status == "over_cap" and rec.status == "success"


def test_records_survive_beams_coders_and_encode_deterministically():
    from wit_builder.finalize.pipeline import KeyedRecord, RawRecordCoder

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


# ---- decisions ----

def test_a_repeated_uid_keeps_a_success_before_an_earlier_failure_and_names_the_kept_row():
    rows = [record("a1", shard="00000", row=3, status="failed_to_download"),
            record("a1", shard="00002", row=0), record("a1", shard="00001", row=5)]
    kept, duplicates = rules.pick_one_per_uid(rows)
    assert (kept.raw_shard, kept.row) == ("00001", 5)
    assert sorted((d.raw_shard, d.status, d.reason, d.duplicate_of) for d in duplicates) == [
        ("00000", "duplicate", "repeated_uid", "a1"), ("00002", "duplicate", "repeated_uid", "a1")]
    assert all(d.error_message == "uid repeated: kept raw row 00001:5" for d in duplicates)
    only_failures = [record("b2", row=1, status="blocked"), record("b2", row=0, status="failed_to_download")]
    kept, duplicates = rules.pick_one_per_uid(only_failures)
    assert kept.row == 0 and kept.status == "failed_to_download" and len(duplicates) == 1
    with pytest.raises(ValueError):
        rules.pick_one_per_uid([])


def test_exact_duplicates_keep_the_largest_original_then_the_smallest_uid():
    same = "ab" * 32
    rows = [record("0c", sha256=same, size=(640, 480)), record("0a", sha256=same, size=(320, 240)),
            record("0b", sha256=same, size=(640, 480))]
    survivor, duplicates = rules.pick_one_per_sha256(rows)
    assert survivor.uid == "0b"
    assert [(d.uid, d.duplicate_of, d.reason, d.error_message) for d in duplicates] == [
        ("0c", "0b", "exact_duplicate", "same sha256 as uid 0b"),
        ("0a", "0b", "exact_duplicate", "same sha256 as uid 0b")]


def test_near_duplicate_edges_and_clusters_from_band_entries():
    distance = 4
    rows = [record("01", phash=PHASH, size=(800, 600)), record("02", phash=flip(PHASH, 3), size=(400, 300)),
            record("03", phash=flip(PHASH, 12))]  # 12 bits away from 01: no edge
    buckets: dict[tuple[int, int], list] = {}
    for rec in rows:
        entries = rules.band_entries(rec, distance)
        assert len(entries) == distance + 1
        for key, entry in entries:
            buckets.setdefault(key, []).append(entry)
    edges = [e for (band, _), members in sorted(buckets.items()) for e in rules.bucket_edges(band, members, distance)]
    assert edges == [((-800 * 600, "01"), (-400 * 300, "02"))]  # one edge, reported once
    assert dedup.resolve_clusters(edges) == {"02": "01"}
    marked = rules.near_duplicate(rows[1], "01", distance)
    assert (marked.status, marked.reason, marked.duplicate_of) == ("duplicate", "near_duplicate", "01")
    assert rules.bucket_edges(0, [("01", 1, (0, "01"))], distance) == []
    with pytest.raises(ValueError, match="uid 09 .*without a pHash"):
        rules.band_entries(record("09", phash=None), distance)


def test_decontamination_filters_within_the_distance_and_names_the_image():
    index = dedup.HashIndex.build([("launch/rocket.png", flip(PHASH, 2)), ("retina.jpg", flip(PHASH, 40))], 4)
    hit = rules.decontaminated(record("01"), index)
    assert hit is not None and (hit.status, hit.reason) == ("filtered", "decontaminated")
    assert hit.error_message == "within pHash distance 2 of evaluation image launch/rocket.png"
    assert rules.decontaminated(record("02", phash=flip(PHASH, 20)), index) is None
    assert rules.eval_image_name("/data/eval/launch/rocket.png", "/data/eval/") == "launch/rocket.png"
    assert rules.eval_image_name("gs://other/x.png", "/data/eval/") == "gs://other/x.png"


def test_over_cap_drops_a_sample_only_when_every_query_is_over_the_cap():
    seed, cap = 7, 2
    uids = [f"{i:032x}" for i in range(6)]
    ranked = sorted(balance.sample_rank(u, seed) for u in uids)
    table = {"space": balance.threshold_from_smallest(ranked[:cap + 1], cap)}
    assert table["space"] == ranked[cap - 1] and ranked[0][0] == min(hash_rank(u, seed) for u in uids)
    kept = [u for u in uids if rules.over_cap(record(u, queries=("space",)), table, seed, cap) is None]
    assert sorted(kept) == sorted(r[1] for r in ranked[:cap])
    loser = next(u for u in uids if u not in kept)
    assert rules.over_cap(record(loser, queries=("space", "moon")), table, seed, cap) is None  # moon keeps it
    decided = rules.over_cap(record(loser, queries=("space",)), table, seed, cap)
    assert decided is not None and decided.status == decided.reason == "over_cap"
    assert decided.error_message == "every query is over the cap of 2: space"
    many = {f"q{i}": (0, "") for i in range(7)}
    message = rules.over_cap(record(loser, queries=tuple(many)), many, seed, cap)
    assert message is not None and message.error_message.endswith("q0, q1, q2, q3, q4 and 2 more")
    assert rules.query_ranks(record(loser, queries=("a", "b")), seed) == [
        ("a", balance.sample_rank(loser, seed)), ("b", balance.sample_rank(loser, seed))]


# ---- numbering ----

def test_survivors_are_numbered_in_raw_shard_then_row_order():
    assert rules.prefix_offsets([("run2-00000", 3), ("run1-00001", 2), ("run1-00000", 4)]) == {
        "run1-00000": 0, "run1-00001": 4, "run2-00000": 6}
    rows = [record("03", row=2, raw_rows=4), record("01", row=0, raw_rows=4, status="blocked"),
            record("04", row=3, raw_rows=4), record("02", row=1, raw_rows=4)]
    numbered = rules.number_raw_shard("00000", rows, first_index=9, samples_per_shard=4)
    assert [r.row for r in numbered] == [0, 1, 2, 3]
    assert [(r.index, r.key, r.shard) for r in numbered] == [
        (None, None, None), (9, "0000000009", "00002"), (10, "0000000010", "00002"), (11, "0000000011", "00002")]
    assert [r.uid for r in rules.shard_order(reversed(numbered[1:]))] == ["02", "03", "04"]
    with pytest.raises(ValueError, match="without a sample index"):
        rules.shard_order([record("05")])


def test_numbering_refuses_lost_or_doubled_rows_naming_them():
    rows = [record("01", row=0, raw_rows=4), record("02", row=2, raw_rows=4), record("03", row=2, raw_rows=4)]
    expected = r"raw shard 00007: 3 final rows for 4 raw rows \(missing rows \[1, 3\], doubled rows \[2\]\)"
    with pytest.raises(rules.AccountingError, match=expected):
        rules.number_raw_shard("00007", rows, 0, 10)
    with pytest.raises(rules.AccountingError):
        rules.number_raw_shard("00007", [], 0, 10)


# ---- statistics ----

def facts_of(read, candidates, final):
    counts: dict = {}
    for fn, recs in ((finalize_stats.input_facts, read), (finalize_stats.candidate_facts, candidates),
                     (finalize_stats.final_facts, final)):
        for rec in recs:
            for fact in fn(rec):
                counts[fact] = counts.get(fact, 0) + 1
    return sorted(counts.items())


def test_summary_counts_statuses_reasons_and_queries_from_the_facts():
    read = [record("01", queries=("moon",)), record("02", queries=("moon", "sun")),
            record("03", status="failed_to_download")]
    dup = read[1].replace(status="duplicate", reason="near_duplicate", duplicate_of="01")
    survivor = read[0].replace(index=0, key="0000000000", shard="00000")
    stats, queries, sizes = finalize_stats.summarize(
        facts_of(read, read[:2], [survivor, dup, read[2]]), [("00000", 1)], uids=3, queries_over_cap=0,
        raw_names=["00000"], expected_rows=3, samples_per_shard=4)
    assert stats["statuses"] == {s: {"success": 1, "duplicate": 1, "failed_to_download": 1}.get(s, 0)
                                 for s in FINAL_STATUSES}
    assert stats["reasons"] == {"failed_to_download": 1, "near_duplicate": 1, "success": 1}
    assert stats["dedup"] == {"candidates": 2, "repeated_uids": 0, "exact_duplicates": 0, "near_duplicates": 1,
                              "decontaminated": 0}
    assert queries == [("moon", 2, 1), ("sun", 1, 0)] and sizes == {"00000": 1}
    assert stats["image_sizes"] == {"width": {dataset_card.size_bin(640): 1}, "height": {dataset_card.size_bin(480): 1}}
    doc = finalize_stats.stats_document(stats, raw_files=["/raw/00000.parquet"], settings={"seed": 0},
                                        sizes=sizes, seconds=1.5, match_rule="normalized")
    validate_stats(doc)
    assert doc["counts"]["status_success"] == 1 and doc["counts"]["reason_near_duplicate"] == 1
    assert doc["counts"]["raw_status_success"] == 2 and doc["details"]["match_rule"] == "normalized"


def test_summary_refuses_lost_rows_and_shards_off_the_plan():
    read = [record("01"), record("02")]
    facts = facts_of(read, read, [read[0].replace(index=0)])  # one row never got a final status
    with pytest.raises(rules.AccountingError, match="2 rows in the raw parquets, 2 read, 1 with a final status"):
        finalize_stats.summarize(facts, [("00000", 1)], uids=2, queries_over_cap=0, raw_names=["00000"],
                                 expected_rows=2, samples_per_shard=4)
    facts = facts_of(read, read, read)
    with pytest.raises(rules.AccountingError, match="shard sizes .* differ from the plan"):
        finalize_stats.summarize(facts, [("00000", 1), ("00001", 1)], uids=2, queries_over_cap=0,
                                 raw_names=["00000"], expected_rows=2, samples_per_shard=4)


def test_counter_mismatches_report_only_differences():
    counts = {"status_success": 3, "status_duplicate": 1, "reason_near_duplicate": 1, "rows": 4}
    counted = {"status_success": 3, "status_duplicate": 2, "near_duplicate": 1}
    assert finalize_stats.counter_mismatches(counts, counted, ["near_duplicate", "over_cap"]) == {
        "status_duplicate": (1, 2)}


# ---- settings and inputs ----

def test_settings_checks_name_the_flag():
    finalize_inputs.check_settings(1, None, 0)
    for args, flag in (((0, None, 4), "--samples-per-shard"), ((10, 0, 4), "--per-query-cap")):
        with pytest.raises(ValueError, match=flag):
            finalize_inputs.check_settings(*args)
    with pytest.raises(ValueError):
        finalize_inputs.check_settings(10, None, 64)


def test_raw_patterns_and_out_apart_from_raw():
    join = lambda a, b: f"{a.rstrip('/')}/{b}"  # noqa: E731
    assert finalize_inputs.raw_patterns(["runs/a", "b/00001.parquet", "c/*.parquet", "gs://x/run"], join) == [
        "runs/a/*.parquet", "b/00001.parquet", "c/*.parquet", "gs://x/run/*.parquet"]
    assert finalize_inputs.raw_parquet_files(["a/0.tar", "a/0.parquet"], ["a/*"]) == ["a/0.parquet"]
    with pytest.raises(FileNotFoundError, match="--raw a/\\*: no .parquet files"):
        finalize_inputs.raw_parquet_files(["a/0.tar"], ["a/*"])
    finalize_inputs.check_out_apart_from_raw("final", ["raw/00000.parquet"], os.path.realpath)
    with pytest.raises(ValueError, match="--out raw/ is the folder of the raw shard raw/00000.parquet"):
        finalize_inputs.check_out_apart_from_raw("raw/", ["raw/00000.parquet"], os.path.realpath)
    with pytest.raises(ValueError):
        finalize_inputs.check_out_apart_from_raw(".", ["00000.parquet"], os.path.realpath)
    assert finalize_inputs.eval_images(["e/b.PNG", "e/a.jpg", "e/notes.txt", "e/c.webp"]) == [
        "e/a.jpg", "e/b.PNG", "e/c.webp"]


def pairs_stats(seed, cap=100, stage="build-pairs"):
    return {"stage": stage, "parameters": {"balance": "hard", "per_query_cap": cap, "seed": seed}}


def test_rebalance_seed_must_be_stage_twos_seed():
    seed = finalize_inputs.rebalance_seed
    assert seed(7, 50, {"pairs/stats.json": pairs_stats(7)}) == 7
    assert seed(None, 50, {"pairs/stats.json": pairs_stats(7)}) == 7     # the default follows stage 2
    assert seed(0, None, {"pairs/stats.json": pairs_stats(7)}) == 0      # no re-cap: the seed is not used
    assert seed(None, None, {"pairs/stats.json": pairs_stats(7)}) == 0
    assert seed(0, 50, {"pairs/stats.json": pairs_stats(7, cap=None)}) == 0  # stage 2 did not cap
    assert seed(None, 50, {"pairs/stats.json": pairs_stats(7, cap=None)}) == 0
    assert seed(0, 50, {"raw/stats.json": pairs_stats(7, stage="download")}) == 0
    assert seed(5, 50, {}) == 5 and seed(None, 50, {}) == 0              # untraceable: nothing to compare
    with pytest.raises(ValueError, match=r"--seed 0 differs from the seed 7 .*\(pairs/stats.json\): pass --seed 7"):
        seed(0, 50, {"pairs/stats.json": pairs_stats(7)})
    for given in (3, None):
        with pytest.raises(ValueError, match=r"different seeds \(3 in a/stats.json, 7 in b/stats.json\)"):
            seed(given, 50, {"a/stats.json": pairs_stats(3), "b/stats.json": pairs_stats(7)})
