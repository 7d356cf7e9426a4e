"""Stage 2's columnar steps (wit_builder.pairs.batches) against the per-record rules they replace."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.references import reference_hard_selection
from wit_builder.core.balance import BalanceConfig, SmallestRanks, cut_value, kept_queries
from wit_builder.core.uid import hash_rank, pair_uid
from wit_builder.pairs import batches as pb

ENTRIES = sorted(f"q{i}" for i in range(10))
ENTRY_ARRAY = pa.array(ENTRIES, pa.string())


def matched_rows(copies: list[tuple[int, int, int, list[int]]]) -> pa.Table:
    """MATCHED rows from (pair number, file number, record, query ids) copies, through matched_table."""
    tables = []
    for file in sorted({f for _, f, _, _ in copies}):
        mine = [c for c in copies if c[1] == file]
        urls = pa.array([f"http://h.example/{n}.jpg" for n, _, _, _ in mine])
        captions = pa.array([f"caption {n}" for n, _, _, _ in mine])
        ids = [sorted(set(q)) for *_, q in mine]
        tables.append(pb.matched_table(
            f"file-{file}", pa.array([r for _, _, r, _ in mine], pa.int64()), urls, captions,
            pa.array([f"https://page/{r}" for _, _, r, _ in mine]), np.arange(len(mine)),
            np.array([len(q) for q in ids]), np.array([i for q in ids for i in q]),
            pa.array(["en"] * len(mine)), pa.array([0.9] * len(mine), pa.float32())))
    return pa.concat_tables(tables)


def test_matched_table_uids_keys_and_buckets() -> None:
    table = matched_rows([(3, 0, 5, [2, 0]), (4, 1, 9, [1])])
    uid = pair_uid("http://h.example/3.jpg", "caption 3")
    assert table.column("uid").to_pylist()[0] == uid
    assert table.column("key").to_pylist()[0] == int(uid[:15], 16)
    assert table.column("queries").to_pylist() == [[0, 2], [1]]
    keys = table.column("key").to_numpy()
    assert pb.bucket_of_keys(keys, 7).tolist() == [int(u[:8], 16) % 7 for u in table.column("uid").to_pylist()]
    assert pb.hash_ranks(table.column("uid").to_pylist(), -5).tolist() == \
        [hash_rank(u, -5) for u in table.column("uid").to_pylist()]
    assert pb.from_bytes(pb.to_bytes(table)).equals(table)


copies_st = st.lists(st.tuples(st.integers(0, 40), st.integers(0, 3), st.integers(0, 50),
                               st.lists(st.integers(0, 9), min_size=1, max_size=4)), min_size=1, max_size=120)


@settings(max_examples=150, deadline=None)
@given(copies=copies_st, seed=st.integers(-(2**31), 2**31), cap=st.integers(1, 12),
       mode=st.sampled_from(["hard", "probabilistic"]), buckets=st.integers(1, 6), order=st.integers(0, 99))
def test_columnar_stage_equals_the_per_record_rules(copies, seed, cap, mode, buckets, order) -> None:
    """Collapse, per-query counts, capped ranks merged from several buckets, cuts and balance: the same kept
    pairs and queries as the per-record rules (earliest copy, SmallestRanks, cut_value, kept_queries)."""
    # A pair's copies share its queries (one caption); the copies differ in file and record.
    queries_of = {}
    for n, _, _, q in copies:
        queries_of.setdefault(n, q)
    copies = [(n, f, r, queries_of[n]) for n, f, r, _ in copies]
    random.Random(order).shuffle(copies)
    config = BalanceConfig(mode, cap, seed)
    table = matched_rows(copies)
    groups = pb.bucket_of_keys(table.column("key").to_numpy(), buckets)
    ranked = {b: pb.collapse(t, seed) for b, t in pb.split_by_key(table, groups)}

    # per-record reference: the earliest copy of each uid, its rank, counts per query
    best: dict[str, tuple] = {}
    for n, f, r, q in copies:
        uid = pair_uid(f"http://h.example/{n}.jpg", f"caption {n}")
        if uid not in best or (f"file-{f}", r) < best[uid][:2]:
            best[uid] = (f"file-{f}", r, [ENTRIES[i] for i in sorted(set(q))])
    got = {u: (s, r) for t in ranked.values()
           for u, s, r in zip(*(t.column(c).to_pylist() for c in ("uid", "source_file", "source_record")),
                              strict=True)}
    assert got == {u: v[:2] for u, v in best.items()}
    assert all(t.column("uid").to_pylist() == sorted(t.column("uid").to_pylist()) for t in ranked.values())

    matched = np.zeros(0, np.int64)
    for t in ranked.values():
        matched = pb.add_counts(matched, *pb.query_counts(t))
    expected = {q: sum(q in v[2] for v in best.values()) for q in ENTRIES}
    assert {ENTRIES[i]: int(n) for i, n in enumerate(matched)} == {q: n for q, n in expected.items()
                                                                   if n or ENTRIES.index(q) < len(matched)}

    k = config.target if mode == "hard" else 1
    capped = matched > config.target if mode == "hard" else np.zeros(len(matched), bool)
    parts = [pb.capped_smallest_ranks(t, capped, k) for t in ranked.values()]
    ids = np.concatenate([p[0] for p in parts])
    ranks = np.concatenate([p[1] for p in parts])
    cuts = pb.cut_array(matched, pb.thresholds(ids, ranks, k, len(matched)), config)

    smallest = SmallestRanks(k)
    reference_cuts = {}
    for q, n in expected.items():
        acc = smallest.create()
        for uid, v in best.items():
            if q in v[2]:
                acc = smallest.add(acc, hash_rank(uid, seed))
        if (cut := cut_value(config, n, smallest.extract(acc)[1])) is not None:
            reference_cuts[q] = cut
    kept = {}
    for t in ranked.values():
        rows, kept_ids = pb.balance_table(t, cuts, config, ENTRY_ARRAY)
        assert kept_ids.tolist() == [i for q in rows.column("queries").to_pylist() for i in q]
        for uid, queries, found in zip(*(rows.column(c).to_pylist() for c in ("uid", "queries", "matched_queries")),
                                       strict=True):
            kept[uid] = ([ENTRIES[i] for i in queries], [ENTRIES[i] for i in found])
    reference = {uid: kept_queries(uid, hash_rank(uid, seed), v[2], reference_cuts, config)
                 for uid, v in best.items()}
    assert kept == {uid: (q, best[uid][2]) for uid, q in reference.items() if q}
    if mode == "hard":
        selection = reference_hard_selection({u: v[2] for u, v in best.items()}, config.target, seed)
        for q, uids in selection.items():
            assert {u for u, (qs, _) in kept.items() if q in qs} == uids


def test_pairs_table_is_sorted_and_typed() -> None:
    table = matched_rows([(n, 0, n, [n % 10]) for n in range(30)])
    rows, _ = pb.balance_table(pb.collapse(table, 0), pb.cut_array(np.ones(10, np.int64),
                                                                   np.zeros(10, np.int64),
                                                                   BalanceConfig()), BalanceConfig(), ENTRY_ARRAY)
    from schemas.pairs import PAIRS

    for part in (rows, rows.slice(3, 20)):  # a slice: list offsets that do not start at 0
        out = pb.pairs_table(part, "normalized", ENTRY_ARRAY)
        assert out.schema.equals(PAIRS, check_metadata=True)
        assert out.column("uid").to_pylist() == sorted(part.column("uid").to_pylist())
        assert set(out.column("match_rule").to_pylist()) == {"normalized"}
        by_uid = dict(zip(part.column("uid").to_pylist(), part.column("queries").to_pylist(), strict=True))
        assert out.column("queries").to_pylist() == [[ENTRIES[i] for i in by_uid[u]]
                                                     for u in out.column("uid").to_pylist()]
        assert set(out.column("source_file").to_pylist()) == {"file-0"}
    assert out.num_rows == 20
    assert pb.pairs_table(rows.slice(0, 0), "normalized", ENTRY_ARRAY).schema.equals(PAIRS)


def test_collapse_falls_back_when_two_uids_share_a_key() -> None:
    """The numpy sort orders by the uid's 60-bit key; two uids with one key must still come out in uid order."""
    table = matched_rows([(1, 0, 1, [0]), (2, 1, 2, [1]), (3, 0, 3, [2])])
    uids = table.column("uid").to_pylist()
    forged = table.set_column(1, "key", pa.array([7, 7, 7], pa.int64()))  # every uid on one key
    out = pb.collapse(forged, 0)
    assert out.column("uid").to_pylist() == sorted(uids)


def test_file_order_with_a_dictionary_that_names_a_file_twice() -> None:
    """Copies from one file compare by record even when the dictionary lists that file twice."""
    table = matched_rows([(1, 0, 9, [0]), (1, 0, 2, [0]), (1, 1, 0, [0])])
    files = pa.DictionaryArray.from_arrays(pa.array([1, 0, 2], pa.int32()), pa.array(["file-0", "file-0", "file-1"]))
    table = table.set_column(table.schema.get_field_index("source_file"), "source_file", files)
    out = pb.collapse(table, 0)
    assert out.num_rows == 1 and out.column("source_record").to_pylist() == [2]


def test_caps_cuts_and_files() -> None:
    matched = np.array([5, 1, 3], np.int64)
    hard, prob = BalanceConfig("hard", 2, 0), BalanceConfig("probabilistic", 2, 0)
    assert pb.capped_queries(matched, hard).tolist() == [True, False, True]
    assert not pb.capped_queries(matched, prob).any()  # probabilistic cuts need the matched counts only
    smallest = (np.array([0, 0, 0, 2, 2, 2]), np.array([9, 4, 7, 1, 8, 3]))
    assert pb.cut_table(matched, smallest, hard).tolist() == [7, pb.NO_CUT, 3]  # each capped query's 2nd rank
    assert pb.cut_table(matched, smallest, prob).tolist() == [2 / 5, np.inf, 2 / 3]
    assert (pb.ranks_per_query(hard), pb.ranks_per_query(BalanceConfig("hard", 2, 0, 1.5)),
            pb.ranks_per_query(prob)) == (2, 3, 1)  # the target-th rank is hard mode's threshold
    assert [pb.file_count(n, 10) for n in (0, 10, 11)] == [1, 1, 2]
    assert pb.pairs_file_name(3, 12) == "pairs-00003-of-00012.parquet"
    table = matched_rows([(n, 0, n, [n % 10]) for n in range(30)])
    files = dict(pb.assign_files((table.num_rows, pb.to_bytes(table)), 4))
    keys = {i: pb.from_bytes(blob).column("key").to_pylist() for i, blob in files.items()}
    assert sorted(k for ks in keys.values() for k in ks) == sorted(table.column("key").to_pylist())
    assert all(k % 4 == i for i, ks in keys.items() for k in ks)
    assert list(pb.assign_files((0, b""), 4)) == []


def test_query_counts_table_lists_every_query_most_matched_first() -> None:
    table = pb.query_counts_table(np.array([1, 4, 0, 4]), np.array([1, 2]), ENTRY_ARRAY)
    assert table.to_pylist()[:5] == [
        {"query": "q1", "lang": "en", "matched": 4, "kept": 2}, {"query": "q3", "lang": "en", "matched": 4, "kept": 0},
        {"query": "q0", "lang": "en", "matched": 1, "kept": 1}, {"query": "q2", "lang": "en", "matched": 0, "kept": 0},
        {"query": "q4", "lang": "en", "matched": 0, "kept": 0}]
    assert table.num_rows == len(ENTRIES)


def test_buckets_for_grows_with_the_pool_between_bounds():
    assert pb.buckets_for(0) == pb.buckets_for(16 << 30) == 256  # up to 16 GiB of pool: the floor
    assert pb.buckets_for((16 << 30) + 1) == 257
    assert pb.buckets_for(1 << 40) == 16384  # 1 TiB of pool: 64 MiB per bucket
    assert pb.buckets_for(1 << 50) == 1 << 16
