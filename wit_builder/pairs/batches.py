"""Stage 2's matched pairs in Arrow columns: the pure steps between matching and writing, one batch at a time.

Stage 2 moves matched pairs between its steps as Arrow tables serialized to IPC bytes (``to_bytes`` /
``from_bytes``), a few thousand elements for any pool size, so Beam never codes a record. A table of
``MATCHED`` rows holds one matched candidate each; its queries are ids, positions in the matcher's sorted
distinct entries (``wit_builder.pairs.matcher.sorted_entries``), so id order is string order.

    matched_table ─► collapse (one copy per uid, seeded rank) ─► query_counts / capped_queries /
      capped_smallest_ranks ─► cut_table ─► balance_table ─► assign_files ─► pairs_table (query ids as strings)
      matched and kept counts by id ─► query_counts_table

Every function keeps the per-record rules of earlier versions of the stage (the tests compare them): the
copy of a uid kept is the one from the earliest (source_file, source_record); hard balance keeps a pair for a
query when its rank is at most the query's ``target``-th smallest rank; probabilistic keeps it when the
(uid, query) coin is under ``target / matched``; a pair is kept when any of its queries keeps it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.pairs import PAIRS, QUERY_COUNTS
from wit_builder.core.balance import BalanceConfig, language_caps, scaled_target
from wit_builder.core.uid import draw

# One matched candidate a row; ``key`` is the uid's first 15 hex digits as an integer (bucket and file choice).
MATCHED = pa.schema([
    pa.field("uid", pa.string()),
    pa.field("key", pa.int64()),
    pa.field("url", pa.string()),
    pa.field("caption", pa.string()),
    pa.field("queries", pa.list_(pa.int32())),  # ids of every query found, sorted
    pa.field("source_file", pa.dictionary(pa.int32(), pa.string())),  # one value per file: 4 bytes a row
    pa.field("source_record", pa.int64()),
    pa.field("page_url", pa.string()),
    pa.field("lang", pa.string()),  # the caption's language (wit_builder.pairs.langid), "und" when unsure
    pa.field("lang_score", pa.float32()),  # the language ID model's probability of that language
])
# Kept rows on their way to the files: PAIRS's columns but ``match_rule``, query ids, and the uid's ``key``.
KEPT = pa.schema([*(MATCHED.field(n) for n in ("uid", "url", "caption", "queries", "source_file", "source_record",
                                              "page_url")),
                  pa.field("matched_queries", pa.list_(pa.int32())), MATCHED.field("key"), MATCHED.field("lang"),
                  MATCHED.field("lang_score")])
NO_CUT = np.iinfo(np.int64).max  # hard mode's threshold of a query that keeps every match (ranks are < 2**63)


def to_bytes(table: pa.Table) -> bytes:
    """A table as Arrow IPC stream bytes (what crosses Beam's shuffles)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def from_bytes(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(data).read_all()


def concat(blobs: Iterable[bytes], schema: pa.Schema) -> pa.Table:
    """The rows of every non-empty blob in one table (an empty one of ``schema`` when there are none)."""
    tables = [from_bytes(b) for b in blobs if b]
    return pa.concat_tables(tables).unify_dictionaries().combine_chunks() if tables else schema.empty_table()


def uid_keys(urls: Sequence[str], captions: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """(uids, keys) of cleaned pairs: ``wit_builder.core.uid.pair_uid`` and its first 15 hex digits as int64."""
    blake2b = hashlib.blake2b
    digests = [blake2b(f"{u}\n{c}".encode(), digest_size=16).digest() for u, c in zip(urls, captions, strict=True)]
    # The key from the digest's first 8 bytes at once (the top 60 bits = the uid's first 15 hex digits).
    keys = np.frombuffer(b"".join([d[:8] for d in digests]), ">u8") >> np.uint64(4)
    return [d.hex() for d in digests], keys.astype(np.int64)


MIN_BUCKETS = 256
MAX_BUCKETS = 1 << 16
POOL_BYTES_PER_BUCKET = 64 << 20


def buckets_for(pool_bytes: int) -> int:
    """The shuffle's uid bucket count for pool files of ``pool_bytes`` in all: one bucket per 64 MiB of pool, at
    least 256, at most 2^16. A bucket of a url/caption parquet pool then holds at most ~0.6M rows (~0.3 GiB of
    matched pairs in memory, 0.5 KB each); WAT files carry far fewer alt-texts per byte. The outputs do not
    depend on the count (a uid's copies share a bucket; files are chosen by uid)."""
    return min(MAX_BUCKETS, max(MIN_BUCKETS, -(-pool_bytes // POOL_BYTES_PER_BUCKET)))


def bucket_of_keys(keys: np.ndarray, buckets: int) -> np.ndarray:
    """The shuffle bucket of each key: ``int(uid[:8], 16) % buckets`` (the key's top 32 of 60 bits)."""
    return (keys >> 28) % buckets


def matched_table(source_file: str, records: pa.Array, urls: pa.Array, captions: pa.Array, page_urls: pa.Array,
                  rows: np.ndarray, lengths: np.ndarray, ids: np.ndarray, langs: pa.Array,
                  scores: pa.Array) -> pa.Table:
    """``MATCHED`` rows of a candidate batch's matched ``rows`` (``QueryMatcher.match_ids``'s answer; ``langs`` and
    ``scores`` are the batch's caption languages and their probabilities)."""
    index = pa.array(rows)
    urls, captions = urls.take(index), captions.take(index)
    uids, keys = uid_keys(urls.to_pylist(), captions.to_pylist())
    return pa.Table.from_arrays([
        pa.array(uids, pa.string()), pa.array(keys, pa.int64()), urls, captions, _id_lists(ids, lengths),
        pa.DictionaryArray.from_arrays(pa.array(np.zeros(len(rows), np.int32)), pa.array([source_file], pa.string())),
        records.take(index), page_urls.take(index), langs.take(index), scores.take(index),
    ], schema=MATCHED)


def split_by_key(table: pa.Table, groups: np.ndarray) -> Iterator[tuple[int, pa.Table]]:
    """(group, its rows) for each distinct value of ``groups`` (one int per row), groups ascending."""
    if not len(groups):
        return
    order = np.argsort(groups, kind="stable")
    ordered = groups[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(ordered)]
    table = table.take(pa.array(order))
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
        yield int(ordered[start]), table.slice(start, end - start)


def hash_ranks(uids: Sequence[str], seed: int) -> np.ndarray:
    """``wit_builder.core.uid.hash_rank`` of each uid, as int64."""
    keyed = hashlib.blake2b(digest_size=8, key=seed.to_bytes(16, "big", signed=True))

    def digest(uid: str) -> bytes:
        h = keyed.copy()  # the key's block is hashed once
        h.update(uid.encode())
        return h.digest()

    return (np.frombuffer(b"".join(map(digest, uids)), ">u8") >> 1).astype(np.int64)


def _file_ranks(column: pa.Array) -> np.ndarray:
    """Per row, the rank of its source_file among the column's distinct files (string order; equal names, equal
    ranks, also when a dictionary holds a name twice)."""
    if pa.types.is_dictionary(column.type):
        rank = pc.rank(column.dictionary, sort_keys="ascending", tiebreaker="dense").to_numpy().astype(np.int64)
        return rank[column.indices.to_numpy(zero_copy_only=False)]
    return pc.rank(column, sort_keys="ascending", tiebreaker="dense").to_numpy().astype(np.int64)


def collapse(table: pa.Table, seed: int) -> pa.Table:
    """One row per uid, the copy from the earliest (source_file, source_record), sorted by uid, with a ``rank``.

    Copies of one uid from the same record are the same image and caption on one page: identical rows.
    Sorted by (key, file, record) in numpy; the key is the uid's prefix, so uid order follows unless two
    uids share 60 bits, which the check after the sort catches (then Arrow sorts by the uid itself).
    """
    if not table.num_rows:
        return table.append_column("rank", pa.array([], pa.int64()))
    order = np.lexsort((table.column("source_record").to_numpy(),
                        _file_ranks(table.column("source_file").combine_chunks()),
                        table.column("key").to_numpy()))
    uids = table.column("uid").combine_chunks().take(pa.array(order))
    n = len(uids)
    if n > 1 and not pc.all(pc.greater_equal(uids.slice(1), uids.slice(0, n - 1))).as_py():
        files = table.column("source_file").combine_chunks()
        decoded = table.set_column(table.schema.get_field_index("source_file"), "source_file",
                                   files.cast(pa.string()) if pa.types.is_dictionary(files.type) else files)
        order = pc.sort_indices(decoded, sort_keys=[("uid", "ascending"), ("source_file", "ascending"),
                                                    ("source_record", "ascending")]).to_numpy()
        uids = table.column("uid").combine_chunks().take(pa.array(order))
    first = np.ones(n, bool)
    if n > 1:
        first[1:] = pc.not_equal(uids.slice(1), uids.slice(0, n - 1)).to_numpy(zero_copy_only=False)
    table = table.take(pa.array(order[first]))
    return table.append_column("rank", pa.array(hash_ranks(table.column("uid").to_pylist(), seed), pa.int64()))


def _flat(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """(query ids of every row, one after another; the row of each)."""
    queries = table.column("queries").combine_chunks()
    ids = pc.list_flatten(queries).to_numpy(zero_copy_only=False).astype(np.int64)
    return ids, pc.list_parent_indices(queries).to_numpy(zero_copy_only=False).astype(np.int64)


def query_counts(table: pa.Table, column: str = "queries") -> tuple[np.ndarray, np.ndarray]:
    """(distinct query ids, rows holding each) of an id-list column."""
    ids = pc.list_flatten(table.column(column).combine_chunks()).to_numpy(zero_copy_only=False)
    found, counts = np.unique(ids, return_counts=True)
    return found.astype(np.int64), counts.astype(np.int64)


def add_counts(total: np.ndarray, ids: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``total`` (a dense per-id count, grown as needed) plus the sparse (ids, counts)."""
    if len(ids) and ids[-1] >= len(total):
        total = np.concatenate([total, np.zeros(int(ids.max()) + 1 - len(total), np.int64)])
    np.add.at(total, ids, counts)
    return total


def _per_id(k: int | np.ndarray, ids: np.ndarray) -> int | np.ndarray:
    """``k`` for each of ``ids``: one number for all, or ``k[id]`` from a dense array by id."""
    return k if isinstance(k, int | np.integer) else np.asarray(k)[ids]


def smallest_per_query(ids: np.ndarray, ranks: np.ndarray, k: int | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` smallest ranks of each id among (id, rank) pairs, sorted by (id, rank); ``k`` is one number or a
    dense array by id (each language's target)."""
    order = np.lexsort((ranks, ids))
    ids, ranks = ids[order], ranks[order]
    if not len(ids):
        return ids, ranks
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    within = np.arange(len(ids)) - np.repeat(starts, np.diff(np.r_[starts, len(ids)]))
    keep = within < _per_id(k, ids)
    return ids[keep], ranks[keep]


def capped_smallest_ranks(table: pa.Table, capped: np.ndarray, k: int | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For the capped query ids (a bool mask by id) matched in ``table``: each one's ``k`` smallest ranks (``k``:
    one number, or a dense array by id)."""
    ids, parent = _flat(table)
    mask = capped[ids] if len(capped) else np.zeros(len(ids), bool)
    ranks = table.column("rank").to_numpy()[parent[mask]]
    return smallest_per_query(ids[mask], ranks, k)


def thresholds(ids: np.ndarray, ranks: np.ndarray, k: int | np.ndarray, size: int) -> np.ndarray:
    """Per id, the ``k``-th smallest rank (``NO_CUT`` for ids with ``k`` ranks or fewer), as a dense array; ``k``
    is one number or a dense array by id."""
    ids, ranks = smallest_per_query(ids, ranks, k)
    out = np.full(size, NO_CUT, np.int64)
    if len(ids):
        last = np.r_[ids[1:] != ids[:-1], True]
        ends = np.flatnonzero(last)
        full = np.diff(np.r_[-1, ends]) >= _per_id(k, ids[ends])  # k ranks; fewer means never over k
        out[ids[ends[full]]] = ranks[ends[full]]
    return out


def id_targets(matched: np.ndarray, sizes: Sequence[int], langs: Sequence[str], config: BalanceConfig,
               rule: str, kept: Sequence[str] | None = None) -> np.ndarray:
    """Each query id's target (pairs kept in this stage) from its language's cap
    (``wit_builder.core.balance.language_caps`` over the matched counts by id; languages' ids one range after
    another, ``sizes`` long), times ``--oversample``. int64, one per id. ``kept``: the languages whose captions
    the run matches (``QuerySet.languages``; None: all); see :func:`id_language_caps`."""
    caps = id_language_caps(matched, sizes, langs, config.per_query_cap, rule, kept)
    return np.repeat(np.array([scaled_target(caps.get(lang, config.per_query_cap), config.oversample)
                               for lang in langs], np.int64), np.asarray(sizes, np.int64))


def id_language_caps(matched: np.ndarray, sizes: Sequence[int], langs: Sequence[str], cap: int,
                     rule: str, kept: Sequence[str] | None = None) -> dict[str, int]:
    """``language_caps`` of a run whose matched counts are by query id, languages one range after another; only
    the languages in ``kept`` (None: all) are capped: a filtered language (``--languages``) matches nothing, has no
    cap, and must not set the others' (a filtered English would carry a tail share of 0 to every language)."""
    offsets = np.cumsum([0, *sizes])
    counts = np.zeros(int(offsets[-1]), np.int64)
    counts[: min(len(matched), len(counts))] = matched[: len(counts)]
    return language_caps({lang: counts[offsets[i]: offsets[i + 1]] for i, lang in enumerate(langs)
                          if kept is None or lang in kept}, cap, rule)


def cut_array(matched: np.ndarray, threshold: np.ndarray, config: BalanceConfig,
              targets: np.ndarray | None = None) -> np.ndarray:
    """Per id, the cut of ``wit_builder.core.balance.cut_value``: hard: the rank threshold (``NO_CUT``: keep all);
    probabilistic: the keep probability (``inf``: keep all). Only ids matched more than their target (``targets``
    by id, else ``config.target``) are cut."""
    target = _targets(targets, config, len(matched))
    over = matched > target
    if config.mode == "hard":
        cuts = np.full(len(matched), NO_CUT, np.int64)
        cuts[over] = threshold[: len(matched)][over] if len(threshold) else NO_CUT
        return cuts
    cuts = np.full(len(matched), np.inf)
    cuts[over] = target[over] / matched[over]
    return cuts


def _targets(targets: np.ndarray | None, config: BalanceConfig, size: int) -> np.ndarray:
    """The first ``size`` per-id targets, or ``config.target`` for every id when there are none."""
    if targets is None:
        return np.full(size, config.target, np.int64)
    out = np.full(size, config.target, np.int64)
    out[: min(size, len(targets))] = targets[:size]
    return out


def balance_table(table: pa.Table, cuts: np.ndarray, config: BalanceConfig,
                  entries: pa.Array | None = None) -> tuple[pa.Table, np.ndarray]:
    """A bucket's collapsed rows -> (kept rows: ``KEPT``; the ids that keep them, row after row).

    A query keeps a pair by ``wit_builder.core.balance.kept_queries``; a pair's ``queries`` become the ids that keep
    it, ``matched_queries`` all it matched; pairs no query keeps are dropped. ``entries`` (id -> string) is
    needed for probabilistic coins only.
    """
    ids, parent = _flat(table)
    if config.mode == "hard":
        keep = table.column("rank").to_numpy()[parent] <= cuts[ids]
    else:
        keep = np.ones(len(ids), bool)
        cut = cuts[ids]
        coins = np.flatnonzero(np.isfinite(cut))
        if len(coins):
            if entries is None:
                raise ValueError("probabilistic balance needs the entries (id -> query) for its coins")
            uids = table.column("uid").to_pylist()
            names = entries.take(pa.array(ids[coins])).to_pylist()
            seed = config.seed
            keep[coins] = [draw(uids[p], q, seed) < c
                           for p, q, c in zip(parent[coins].tolist(), names, cut[coins].tolist(), strict=True)]
    per_row = np.bincount(parent[keep], minlength=table.num_rows)
    kept_rows = np.flatnonzero(per_row > 0)
    kept_ids = ids[keep]
    all_ids = ids[(per_row > 0)[parent]]
    matched_per_row = np.bincount(parent, minlength=table.num_rows)[kept_rows]
    rows = table.take(pa.array(kept_rows))
    out = pa.Table.from_arrays([
        rows.column("uid"), rows.column("url"), rows.column("caption"), _id_lists(kept_ids, per_row[kept_rows]),
        rows.column("source_file"), rows.column("source_record"), rows.column("page_url"),
        _id_lists(all_ids, matched_per_row), rows.column("key"), rows.column("lang"), rows.column("lang_score"),
    ], schema=KEPT)
    return out, kept_ids


def _id_lists(values: np.ndarray, lengths: np.ndarray) -> pa.Array:
    """int32 id lists: row ``i`` holds the next ``lengths[i]`` of ``values``."""
    offsets = np.zeros(len(lengths) + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values.astype(np.int32)))


def pairs_table(table: pa.Table, match_rule: str, entries: pa.Array) -> pa.Table:
    """Kept rows (``KEPT``) of one output file -> a PAIRS table sorted by uid, query ids as strings."""
    if not table.num_rows:
        return PAIRS.empty_table()
    table = table.take(pc.sort_indices(table.select(["uid"]), sort_keys=[("uid", "ascending")]))

    def strings(column: str) -> pa.Array:
        lists = table.column(column).combine_chunks()
        offsets = np.zeros(len(lists) + 1, np.int32)
        np.cumsum(pc.list_value_length(lists).to_numpy(zero_copy_only=False), out=offsets[1:])
        return pa.ListArray.from_arrays(pa.array(offsets), entries.take(pc.list_flatten(lists)))

    columns = {"queries": strings("queries"), "matched_queries": strings("matched_queries"),
               "source_file": table.column("source_file").cast(pa.string()),
               "match_rule": pa.array([match_rule] * table.num_rows, pa.string())}
    return pa.Table.from_arrays([columns[f.name] if f.name in columns else table.column(f.name).cast(f.type)
                                 for f in PAIRS], schema=PAIRS)


def capped_queries(matched: np.ndarray, config: BalanceConfig, targets: np.ndarray | None = None) -> np.ndarray:
    """Mask by id of the queries matched more often than their target (``targets`` by id, else ``config.target``;
    hard mode: the only ones that need rank thresholds; probabilistic cuts need the matched counts only)."""
    if config.mode != "hard":
        return np.zeros(len(matched), bool)
    return matched > _targets(targets, config, len(matched))


def ranks_per_query(config: BalanceConfig) -> int:
    """How many smallest ranks of a capped query the balance keeps: hard mode's threshold is the ``target``-th;
    probabilistic mode caps by counts alone (no query is capped by rank: 1 keeps the combiner trivial)."""
    return config.target if config.mode == "hard" else 1


def cut_table(matched: np.ndarray, smallest: tuple[np.ndarray, np.ndarray], config: BalanceConfig,
              targets: np.ndarray | None = None) -> np.ndarray:
    """The cut of every id (:func:`cut_array`) from the matched counts by id and the capped queries' (ids,
    smallest ranks); ``targets`` by id (each language's), else ``config.target`` for all."""
    k: int | np.ndarray = ranks_per_query(config)
    if targets is not None and config.mode == "hard":
        k = _targets(targets, config, max(len(matched), len(targets)))
    return cut_array(matched, thresholds(smallest[0], smallest[1], k, len(matched)), config, targets)


def file_count(kept: int, rows_per_file: int) -> int:
    """Pairs files for ``kept`` rows: at least one, so a run that keeps nothing still writes one (empty) file."""
    return max(1, math.ceil(kept / rows_per_file))


def pairs_file_name(index: int, count: int) -> str:
    """``pairs-00003-of-00012.parquet``: file ``index`` (0-based) of ``count``, five digits each."""
    return f"pairs-{index:05d}-of-{count:05d}.parquet"


def assign_files(element: tuple[int, bytes], num_files: int) -> Iterator[tuple[int, bytes]]:
    """(row count, IPC bytes of kept rows) -> (file index, IPC bytes of its rows): the file of a pair is its uid's
    ``key`` modulo ``num_files``, so it depends on the uid alone."""
    n, blob = element
    if not n:
        return
    table = from_bytes(blob)
    for index, rows in split_by_key(table, table.column("key").to_numpy() % num_files):
        yield index, to_bytes(rows)


def query_counts_table(matched: np.ndarray, kept: np.ndarray, entries: pa.Array,
                       langs: pa.Array | None = None) -> pa.Table:
    """All queries (the entries the rule matched with), matched or not, most matched first (ties by language, then
    query), each with its language (``langs``: one code per id; English when None).

    ``matched`` and ``kept`` are counts by query id (shorter arrays: the ids past their end count 0).
    """
    n = len(entries)
    m = np.zeros(n, np.int64)
    m[: len(matched)] = matched[:n]
    k = np.zeros(n, np.int64)
    k[: len(kept)] = kept[:n]
    order = np.argsort(-m, kind="stable")  # ids are in query order, so ties stay by query
    lang = langs.take(pa.array(order)) if langs is not None else pa.array(["en"] * n, pa.string())
    return pa.table({"query": entries.take(pa.array(order)), "lang": lang, "matched": m[order], "kept": k[order]},
                    schema=QUERY_COUNTS)
