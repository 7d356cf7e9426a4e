"""``wit_builder.pairs.pipeline``: the composites on small in-memory inputs (``TestPipeline`` + ``beam.Create``),
the bounded merge of capped ranks, and counts that stay exact when a bundle is retried."""

from __future__ import annotations

import json
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.utils import shared

from schemas.pairs import STATS_JSON
from tests.conftest import BEAM_IN_PROCESS
from tests.pairs.conftest import build, read_pairs, write_queries
from wit_builder.beam import fileio
from wit_builder.beam.counting import COUNTS
from wit_builder.core.balance import BalanceConfig
from wit_builder.core.uid import pair_uid
from wit_builder.pairs import batches as pb
from wit_builder.pairs import pipeline
from wit_builder.pairs.inputs import QueriesFile, QuerySet
from wit_builder.pairs.readers.layouts import PoolOptions
from wit_builder.pairs.readers.records import Rejection
from wit_builder.pairs.stats import BAD_RECORDS_JSONL


def queries_file(folder: Path, queries: list[str]) -> QuerySet:
    """An English query set of one file (what resolve makes of one --queries folder)."""
    path = str(write_queries(folder, queries) / "queries.parquet")
    return QuerySet((QueriesFile(path, fileio.sha256_file(path), "normalized", "en"),), (len(set(queries)),),
                    ("en",))


def summed(counts: beam.PCollection, label: str) -> beam.PCollection:
    """The (name, total) pairs of a COUNTS output."""
    return counts | label >> beam.CombinePerKey(sum)


def test_read_and_match_counts_each_record_by_its_verdict(tmp_path: Path) -> None:
    """Every record lands in one count: a rejection reason (bad ones also on REJECTED) or a candidate that matched
    or not; only matched rows leave, as MATCHED tables by uid bucket."""
    queries = queries_file(tmp_path / "q", ["cat", "red bus"])
    pool = tmp_path / "pool.jsonl"
    pool.write_bytes(b"".join(line + b"\n" for line in [
        json.dumps({"url": "http://e.com/1.jpg", "caption": "A cat"}).encode(),
        json.dumps({"url": "http://e.com/2.jpg", "caption": "The red bus and a cat"}).encode(),
        json.dumps({"url": "http://e.com/3.jpg", "caption": "nothing"}).encode(),
        json.dumps({"url": "ftp://e.com/4.jpg", "caption": "a cat"}).encode(),
        b'{"url": ',
    ]))
    with BeamTestPipeline(argv=BEAM_IN_PROCESS) as p:
        read = (p | beam.Create([str(pool)])
                | pipeline.ReadAndMatch(queries, PoolOptions(), buckets=4, entries=shared.Shared(),
                                        min_language_score=0.5))
        rows = (read.matched | "Rows" >> beam.FlatMap(lambda kv: pb.from_bytes(kv[1]).to_pylist())
                | "Uid" >> beam.Map(lambda r: (r["uid"], r["queries"])))
        assert_that(rows, equal_to([(pair_uid("http://e.com/1.jpg", "A cat"), [0]),
                                    (pair_uid("http://e.com/2.jpg", "The red bus and a cat"), [0, 1])]),
                    label="Matched")
        assert_that(read[pipeline.REJECTED] | "Reason" >> beam.Map(lambda r: (r.reason, r.source_record)),
                    equal_to([("malformed_json", 4)]), label="Rejected")
        totals = summed(read[COUNTS], "Sum")
        assert_that(totals | "Funnel" >> beam.Filter(lambda kv: not kv[0].startswith("lang.")), equal_to([
            ("pool_files", 1), ("records", 5), ("non_http_url", 1), ("malformed_json", 1), ("bad_records", 1),
            ("candidates", 3), ("matched", 2), ("no_match", 1)]), label="Counts")
        per_language = (totals | "PerLanguage" >> beam.Filter(lambda kv: kv[0].startswith("lang."))
                        | "What" >> beam.Map(lambda kv: (kv[0].rsplit(".", 1)[1], kv[1]))
                        | "SumWhat" >> beam.CombinePerKey(sum))
        assert_that(per_language, equal_to([("candidates", 3), ("matched", 2)]), label="Languages")


def test_collapse_and_balance_count_duplicates_and_over_cap() -> None:
    """Two copies of one pair collapse to the earliest; a cap of 1 leaves one pair per query (hard mode)."""
    def blob(copies: list[tuple[int, int, int, list[int]]]) -> bytes:
        urls = pa.array([f"http://h.example/{n}.jpg" for n, _, _, _ in copies])
        captions = pa.array([f"caption {n}" for n, _, _, _ in copies])
        ids = [q for *_, q in copies]
        return pb.to_bytes(pb.matched_table(
            "file-0", pa.array([r for _, _, r, _ in copies], pa.int64()), urls, captions,
            pa.array([None] * len(copies), pa.string()), np.arange(len(copies)), np.array([len(q) for q in ids]),
            np.array([i for q in ids for i in q]), pa.array(["en"] * len(copies)),
            pa.array([0.9] * len(copies), pa.float32())))

    config = BalanceConfig("hard", per_query_cap=1, seed=3)
    with BeamTestPipeline(argv=BEAM_IN_PROCESS) as p:
        matched = p | beam.Create([(0, blob([(1, 0, 7, [0]), (2, 0, 8, [0])])), (0, blob([(1, 0, 2, [0])]))])
        collapsed = matched | pipeline.CollapseDuplicates(seed=3)
        balanced = ({"ranked": collapsed["ranked"], "matched": collapsed["matched"]}
                    | pipeline.Balance(config, QuerySet((QueriesFile("unused", "", "normalized"),), (1,), ("en",)),
                                       shared.Shared(), "metaclip2"))
        assert_that(collapsed["matched"] | "MatchedList" >> beam.Map(list), equal_to([[2]]), label="MatchedPerQuery")
        assert_that(balanced["kept_counts"] | "KeptList" >> beam.Map(list), equal_to([[1]]), label="KeptPerQuery")
        counts = ((collapsed[COUNTS], balanced[COUNTS]) | beam.Flatten()) | "Sum" >> beam.CombinePerKey(sum)
        assert_that(counts, equal_to([("duplicates", 1), ("unique_pairs", 2), ("lang.en.unique_pairs", 2),
                                      ("matches", 2), ("over_cap", 1), ("kept", 1), ("kept_matches", 1),
                                      ("lang.en.kept", 1)]), label="Counts")
        records = collapsed["ranked"] | "Rows" >> beam.FlatMap(lambda kv: pb.from_bytes(kv[1]).to_pylist())
        assert_that(records | "Copy" >> beam.Map(lambda r: (r["url"], r["source_record"])),
                    equal_to([("http://h.example/1.jpg", 2), ("http://h.example/2.jpg", 8)]), label="Earliest")


def test_write_bad_records_sorts_them(tmp_path: Path) -> None:
    out = tmp_path / BAD_RECORDS_JSONL
    with BeamTestPipeline(argv=BEAM_IN_PROCESS) as p:
        _ = (p | beam.Create([Rejection("non_utf8", "b", 3, "x"), Rejection("malformed_json", "a", 9)])
             | pipeline.WriteBadRecords(str(out)))
    assert [json.loads(line) for line in out.read_text().splitlines()] == [
        {"file": "a", "offset": 9, "reason": "malformed_json", "detail": ""},
        {"file": "b", "offset": 3, "reason": "non_utf8", "detail": "x"},
    ]


@pytest.mark.parametrize("k", [1, 3, 50])
def test_merge_of_smallest_ranks_is_bounded_and_exact(k: int) -> None:
    """_MergeQueryStats's rule: partial (id, rank) sets merged in any grouping keep each id's k smallest."""
    rng = np.random.default_rng(k)
    ids = rng.integers(0, 20, 5000)
    ranks = rng.integers(0, 2**62, 5000)
    combine = pipeline._MergeQueryStats()
    acc = combine.create_accumulator()
    for start in range(0, 5000, 250):
        part = pb.smallest_per_query(ids[start:start + 250], ranks[start:start + 250], k)
        acc = combine.add_input(acc, (*part, np.full(len(part[0]), k)))
        assert len(acc[0]) <= 2 * k * 20 + 250 * 2
    got = combine.extract_output(acc)
    for q in range(20):
        assert got[1][got[0] == q].tolist() == sorted(ranks[ids == q].tolist())[:k]
    threshold = pb.thresholds(got[0], got[1], k, 25)
    assert threshold[20:].tolist() == [pb.NO_CUT] * 5
    assert [int(threshold[q]) for q in range(20)] == [sorted(ranks[ids == q].tolist())[k - 1] for q in range(20)]


def test_merge_keeps_each_language_its_own_number_of_ranks() -> None:
    """Per-language targets: ids 0-9 (one language) keep 3 smallest ranks, ids 10-19 (another) keep 7."""
    rng = np.random.default_rng(7)
    ids = rng.integers(0, 20, 4000)
    ranks = rng.integers(0, 2**62, 4000)
    targets = np.where(np.arange(20) < 10, 3, 7)
    combine = pipeline._MergeQueryStats()
    acc = combine.create_accumulator()
    for start in range(0, 4000, 200):
        part = pb.smallest_per_query(ids[start:start + 200], ranks[start:start + 200], targets)
        acc = combine.add_input(acc, (*part, targets[part[0]]))
    got = combine.extract_output(acc)
    for q in range(20):
        assert got[1][got[0] == q].tolist() == sorted(ranks[ids == q].tolist())[:targets[q]]
    threshold = pb.thresholds(got[0], got[1], targets, 20)
    assert [int(threshold[q]) for q in range(20)] == [sorted(ranks[ids == q].tolist())[targets[q] - 1]
                                                      for q in range(20)]


def test_a_retried_bundle_leaves_the_stats_unchanged(pool: dict, tmp_path: Path, monkeypatch) -> None:
    """Beam's BundleBasedDirectRunner retries a failed bundle; its metrics then count the bundle twice (committed
    and attempted alike), while stats.json's counts, summed from the DoFns' own outputs, do not."""
    assert build(pool, tmp_path / "plain", BEAM_IN_PROCESS) == 0
    original = pipeline._CollapseBucket.process
    failed = tmp_path / "failed-once"

    def flaky(self, element):
        yield from original(self, element)  # counted first, then the bundle is lost
        if not failed.exists():
            failed.touch()
            raise RuntimeError("a worker lost on purpose")

    monkeypatch.setattr(pipeline._CollapseBucket, "process", flaky)
    assert build(pool, tmp_path / "retried", ["--runner=BundleBasedDirectRunner"]) == 0
    assert failed.exists()
    plain, retried = (json.loads((tmp_path / name / STATS_JSON).read_text()) for name in ("plain", "retried"))
    assert retried["counts"] == plain["counts"] and retried["details"] == plain["details"]
    assert read_pairs(tmp_path / "retried") == read_pairs(tmp_path / "plain")


def test_in_process_buckets_spill_to_files_and_give_the_same_bytes(pool: dict, tmp_path: Path, monkeypatch) -> None:
    """On the in-process runner the buckets travel as files under OUT/_tmp_spill and only one reference per file
    crosses Beam (``wit_builder.beam.spill.GroupByKeySpilled``: linear in the pool, not files x buckets); the
    outputs are byte for byte those of the inline run (the cluster runners' path), with any bucket count, and the
    spill folder is gone when the run ends."""
    from wit_builder.beam import spill as spill_module

    assert build(pool, tmp_path / "spilled", BEAM_IN_PROCESS, "--rows-per-file", "50") == 0
    assert not (tmp_path / "spilled" / "_tmp_spill").exists()
    refs: list[object] = []
    original = spill_module._SpillBuckets._flush

    def recording(self):
        made = original(self)
        refs.extend(made)
        return made

    monkeypatch.setattr(spill_module._SpillBuckets, "_flush", recording)
    assert build(pool, tmp_path / "spilled-7", BEAM_IN_PROCESS, "--rows-per-file", "50",
                 "--shuffle-buckets", "7") == 0
    matched = [r for r in refs if "/_tmp_spill/matched/" in r[0]]  # type: ignore[index]
    # one (path, first bucket, last bucket) per spill file crosses Beam, never the rows, never one per bucket
    assert matched and all(isinstance(path, str) and 0 <= first <= last < 7 for path, first, last in matched)
    assert len(matched) <= len(list(pool["files"].iterdir()))  # small pool files: one spill file each at most
    monkeypatch.setattr(pipeline, "spill_folder", lambda runner, out: None)  # as on Spark, Flink, Dataflow
    refs.clear()
    assert build(pool, tmp_path / "inline", BEAM_IN_PROCESS, "--rows-per-file", "50") == 0
    assert not refs  # no spill: the plain GroupByKey

    def outputs(out: Path) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.name != STATS_JSON}

    inline = outputs(tmp_path / "inline")
    assert len([n for n in inline if n.startswith("pairs-")]) > 1
    assert outputs(tmp_path / "spilled") == inline == outputs(tmp_path / "spilled-7")
    counts = [json.loads((tmp_path / name / STATS_JSON).read_text())["counts"]
              for name in ("spilled", "spilled-7", "inline")]
    assert counts[0] == counts[1] == counts[2]


def test_spill_refs_are_paths_named_by_the_unit_and_inline_without_a_folder(tmp_path: Path) -> None:
    from wit_builder.beam.spill import Spill, spill_folder

    assert spill_folder(None, "/o") == spill_folder("FnApiRunner", "/o") == "/o/_tmp_spill"
    assert spill_folder("apache_beam.runners.direct.direct_runner.BundleBasedDirectRunner", "/o") == "/o/_tmp_spill"
    assert spill_folder("SparkRunner", "/o") is None and spill_folder("DataflowRunner", "/o") is None
    spill = Spill(str(tmp_path / "s"))
    ref = spill.put("kept/b00003.arrow", b"rows")
    assert ref == str(tmp_path / "s" / "kept" / "b00003.arrow") and Spill.get(ref) == b"rows"
    assert spill.put("kept/b00003.arrow", b"rows") == ref  # a retried bundle: same name, same bytes, one file
    assert [p.name for p in (tmp_path / "s" / "kept").iterdir()] == ["b00003.arrow"]
    assert Spill.stem(ref) == "b00003" and Spill.stem(b"x") == ""
    assert spill.put("kept/b00004.arrow", b"") == b""  # nothing to hold
    assert Spill(None).put("kept/b00005.arrow", b"rows") == b"rows"
    many = spill.put_many("matched/0123abcd-00000.arrow", [b"bucket 1", b"", b"bucket three"])
    path = str(tmp_path / "s" / "matched" / "0123abcd-00000.arrow")
    assert many == [f"{path}@0+8", b"", f"{path}@8+12"]  # one file, a byte range each
    assert [Spill.get(r) for r in many] == [b"bucket 1", b"", b"bucket three"]
    assert Spill.stem(many[0]) == "0123abcd-00000"
    assert Spill(None).put_many("x.arrow", [b"a", b"b"]) == [b"a", b"b"]


def test_hard_cap_ranks_merge_per_id_group_and_equal_one_global_merge() -> None:
    """Issue 25: the hard cap's ranks are keyed by group of ``RANK_GROUP_IDS`` query ids and merged per key, so a
    key's accumulator only ever holds its own group's ids; one threshold per capped query is gathered, and the
    cuts equal ``batches.cut_table`` over every capped query's ranks in one place (the former single combine),
    with two languages' different targets and hundreds of capped queries."""
    rng = np.random.default_rng(25)
    n_ids, rows = 700, 30_000  # 11 groups of 64 ids
    ids = rng.integers(0, n_ids, rows)
    ranks = rng.integers(0, 2**62, rows)
    targets = np.where(np.arange(n_ids) < 400, 20, 35).astype(np.int64)  # two languages' targets
    matched = np.bincount(ids, minlength=n_ids).astype(np.int64)
    config = BalanceConfig("hard", per_query_cap=20, seed=1)
    capped = pb.capped_queries(matched, config, targets)
    table = pa.table({"queries": pa.array([[int(i)] for i in ids], pa.list_(pa.int32())), "rank": ranks})
    fn, merge = pipeline._CappedRanks(), pipeline._MergeQueryStats()
    accs: dict[int, list] = {}  # two accumulators per key, merged at the end (as combiner lifting does)
    for bucket, start in enumerate(range(0, rows, 5000)):  # six buckets
        for key, element in fn.process((bucket, pb.to_bytes(table.slice(start, 5000))), capped, targets):
            pair = accs.setdefault(key, [merge.create_accumulator(), merge.create_accumulator()])
            pair[bucket % 2] = merge.add_input(pair[bucket % 2], element)
            held = np.unique(pair[bucket % 2][0])
            assert (held // pipeline.RANK_GROUP_IDS == key).all() and len(held) <= pipeline.RANK_GROUP_IDS
    assert sorted(accs) == list(range(11))
    dense = pipeline._DenseThresholds()
    gathered = []
    for key, pair in accs.items():
        merged = merge.extract_output(merge.merge_accumulators(pair))
        assert (merged[0] // pipeline.RANK_GROUP_IDS == key).all()
        gathered.append(dense.add_input(dense.create_accumulator(), pipeline._group_thresholds((key, merged))))
    threshold = dense.extract_output(dense.merge_accumulators(gathered))
    assert len(threshold) <= n_ids  # one int64 per query id is all that meets in one place
    expected = pb.cut_table(matched, pb.capped_smallest_ranks(table, capped, targets), config, targets)
    assert pipeline._cuts(matched, threshold, config, targets).tolist() == expected.tolist()
    assert capped.sum() > 300 and (expected != pb.NO_CUT).sum() == capped.sum()


def test_balance_keeps_each_capped_query_its_languages_target_across_id_groups() -> None:
    """Through Beam: 400 queries of two languages (MetaCLIP 2 caps), ranks merged per id group; every query keeps
    exactly min(matched, its language's target) pairs (hard mode, one query per pair)."""
    rng = np.random.default_rng(5)
    n = 8000
    ids = np.sort(np.r_[rng.integers(0, 400, n - 2000), rng.integers(0, 40, 2000)])  # skew: some heavy queries

    def blob(part: np.ndarray, offset: int) -> bytes:
        rows = np.arange(offset, offset + len(part))
        return pb.to_bytes(pb.matched_table(
            "file-0", pa.array(rows, pa.int64()), pa.array([f"http://h.example/{r}.jpg" for r in rows]),
            pa.array([f"caption {r}" for r in rows]), pa.array([None] * len(part), pa.string()),
            np.arange(len(part)), np.ones(len(part), np.int64), part.astype(np.int64),
            pa.array(["de" if i < 200 else "en" for i in part]), pa.array([0.9] * len(part), pa.float32())))

    order = rng.permutation(n)
    blobs = [(b, blob(ids[order[s:s + 1000]], s)) for b, s in enumerate(range(0, n, 1000))]
    config = BalanceConfig("hard", per_query_cap=15, seed=3)
    queries = QuerySet((QueriesFile("unused", "", "normalized", lang="de"),
                        QueriesFile("unused", "", "normalized", lang="en")), (200, 200), ("de", "en"))
    matched = np.bincount(ids, minlength=400).astype(np.int64)
    targets = pb.id_targets(matched, (200, 200), ("de", "en"), config, "metaclip2")
    assert targets[0] != targets[200] and pb.capped_queries(matched, config, targets).sum() > 100
    with BeamTestPipeline(argv=BEAM_IN_PROCESS) as p:
        collapsed = p | beam.Create(blobs) | pipeline.CollapseDuplicates(seed=3)
        balanced = ({"ranked": collapsed["ranked"], "matched": collapsed["matched"]}
                    | pipeline.Balance(config, queries, shared.Shared(), "metaclip2"))
        assert_that(balanced["kept_counts"] | "KeptList" >> beam.Map(list),
                    equal_to([np.minimum(matched, targets).tolist()]), label="KeptPerQuery")
