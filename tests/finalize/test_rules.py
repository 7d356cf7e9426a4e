"""Stage 4's pure rules (wit_builder.finalize.rules) and the row type they act on (schemas.finalize.RawRecord),
without Beam: realistic records in, decisions and numbering out."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pytest

from schemas.finalize import FINAL_ROWS, RawRecord
from tests.finalize.examples import PHASH, flip, record
from wit_builder.core import balance, dedup
from wit_builder.core.uid import hash_rank
from wit_builder.finalize import rules

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
    edges = [e for _, members in sorted(buckets.items()) for e in rules.bucket_edges(members, distance)]
    # A star in each bucket the two share (02 -> 01, the larger image): 4 of the 5 bands, as 3 flipped
    # low bits change band 0 only.
    assert edges == [((-400 * 300, "02"), (-800 * 600, "01"))] * 4
    assert dedup.resolve_clusters(edges) == {"02": "01"}
    marked = rules.near_duplicate(rows[1], "01", distance)
    assert (marked.status, marked.reason, marked.duplicate_of) == ("duplicate", "near_duplicate", "01")
    assert rules.bucket_edges([("01", 1, (0, "01"))], distance) == []
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


def test_an_evaluation_image_is_hashed_or_skipped_by_name():
    """An image that decodes gives (name, pHash); one that does not, or could not be read, is a Drop counted as
    ``eval_images_unreadable`` naming it (skipped, as ``wit eval`` skips its images), never an error ending the run.
    The reason holds no memory address: the same bytes every run."""
    from tests.conftest import encode, photo
    from wit_builder.core.verdicts import Drop

    data = encode(photo("astronaut"), "PNG")
    assert list(rules.eval_image_hash("/data/eval/launch/rocket.png", "/data/eval/", data)) == [
        ("launch/rocket.png", dedup.image_phash(data))]
    [bad] = rules.eval_image_hash("/data/eval/notes.png", "/data/eval/", b"not an image")
    assert isinstance(bad, Drop) and bad.reason == rules.EVAL_IMAGE_UNREADABLE == "eval_images_unreadable"
    assert bad.record.startswith("notes.png: does not decode (UnidentifiedImageError: cannot identify image file")
    assert " at 0x" not in bad.record
    [gone] = rules.eval_image_hash("/data/eval/gone.jpg", "/data/eval/", None, "cannot be read (No such file)")
    assert gone == Drop("eval_images_unreadable", "gone.jpg: cannot be read (No such file)")


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



def test_a_query_has_a_threshold_only_when_it_is_over_the_cap():
    ranks = sorted(balance.sample_rank(f"{i:032x}", 3) for i in range(4))
    assert rules.threshold_over_cap(("space", ranks[:3]), 2) == [("space", ranks[1])]  # the cap-th smallest
    assert rules.threshold_over_cap(("moon", ranks[:2]), 2) == []                      # at the cap: all stay


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


def test_re_cap_per_language_keys_each_query_by_its_language() -> None:
    """Stage 2's per-language caps (issue 21): a word that is a query of two languages is capped once per
    language, each at its language's cap; und and rows without a language count as English."""
    from tests.references import reference_kept

    seed, caps = 5, {"en": 3, "de": 1}
    uids = [f"{i:032x}" for i in range(1, 9)]
    rows = [record(u, queries=("boston",)).replace(lang="en" if i % 2 else "de") for i, u in enumerate(uids)]
    rows.append(record(f"{99:032x}", queries=("boston",)).replace(lang="und"))
    keys = [k for r in rows for k in rules.query_ranks(r, seed, caps)]
    assert {k for k, _ in keys} == {"en\tboston", "de\tboston"}
    by_key: dict[str, list] = {}
    for key, rank in keys:
        by_key.setdefault(key, []).append(rank)
    table = dict(t for key, ranks in by_key.items() for t in rules.threshold_over_cap((key, sorted(ranks)), 20, caps))
    kept = {r.uid for r in rows if rules.over_cap(r, table, seed, 20, caps) is None}
    english = [(r.uid, ("boston",)) for r in rows if rules.query_language(r) == "en"]
    german = [(r.uid, ("boston",)) for r in rows if r.lang == "de"]
    assert kept == reference_kept(english, 3, seed) | reference_kept(german, 1, seed)
    assert len(kept) == 4
    dropped = next(r for r in rows if r.lang == "de" and r.uid not in kept)
    assert "over the cap of 1: boston" in rules.over_cap(dropped, table, seed, 20, caps).error_message


def test_language_recaps_follow_stage_two(tmp_path) -> None:
    """finalize's caps per language are stage 2's rule over stage 2's query_counts.parquet, English at the
    finalize cap: with stage 2's cap they are stage 2's caps."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from schemas.pairs import QUERY_COUNTS
    from wit_builder.core.balance import language_caps
    from wit_builder.finalize.inputs import language_recaps

    en, ja = [0, 5, 20, 50, 100, 300, 525], [0, 1, 2, 3, 4, 10, 30, 50]
    pq.write_table(pa.table({"query": [f"e{i}" for i in range(7)] + [f"j{i}" for i in range(8)],
                             "lang": ["en"] * 7 + ["ja"] * 8, "matched": en + ja, "kept": [0] * 15},
                            schema=QUERY_COUNTS), tmp_path / "query_counts.parquet")
    stats = {str(tmp_path / "stats.json"): {"stage": "build-pairs", "parameters": {"language_caps": "metaclip2"}}}
    assert language_recaps(100, stats) == {"en": 100, "ja": 3} == language_caps(
        {"en": np.array(en), "ja": np.array(ja)}, 100)
    assert language_recaps(100, {str(tmp_path / "stats.json"): {"stage": "build-pairs", "parameters": {}}}) == {}
    # a language stage 2 filtered (--languages ja: English queries given, no English caption matched) has no cap
    # and does not set the others' (its zero counts would carry a tail share of 0: ja's cap 1)
    only_ja = {str(tmp_path / "stats.json"): {"stage": "build-pairs",
                                              "parameters": {"language_caps": "metaclip2", "languages": ["ja"]}}}
    assert language_recaps(100, only_ja) == {"ja": 100} == language_caps({"ja": np.array(ja)}, 100)
