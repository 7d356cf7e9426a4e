"""Stage 4's decision rules as pure functions on ``schemas.finalize.RawRecord``s; ``pipeline.py`` wires them.

Every raw row ends with exactly one final status. A rule's verdict is a value: the record it decides comes back
with its final ``status`` and ``reason`` (counted by ``pipeline.py``'s accounting step as
``status_*``/``reason_*``, ``wit_builder.finalize.stats.final_counts``), or None when the record stays. The
rules, in the order finalize applies them:

1. repeated uid (the same pair in several raw rows): :func:`pick_one_per_uid`;
2. decontamination (within the pHash distance of an evaluation image): :func:`decontaminated`;
3. exact duplicates (same sha256): :func:`pick_one_per_sha256`;
4. near duplicates (pHash within the distance; banded keys, clusters): :func:`band_entries`,
   :func:`bucket_edges` (a star per component of a bucket), :func:`near_duplicate` with
   ``wit_builder.core.dedup``'s union-find;
5. re-balance (every query over the cap again, after the losses): :func:`threshold_over_cap`, :func:`over_cap`
   with ``wit_builder.core.balance``.

Survivors are then numbered in (raw shard, raw row) order (:func:`prefix_offsets`, :func:`number_raw_shard`).
A decided row keeps its fields and gains ``status``, ``reason``, ``error_message`` and, for duplicates,
``duplicate_of`` (the uid of the row it duplicates).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping

from schemas.finalize import RawRecord
from wit_builder.core import balance, dedup, errors
from wit_builder.core.verdicts import Drop
from wit_builder.finalize import shards as final_shards
from wit_builder.pairs.langid import UNDETERMINED

SHOWN_QUERIES = 5  # queries named in an over_cap message before "and N more"

BandEntry = tuple[tuple[int, int], tuple[str, int, tuple[int, str]]]  # ((band, value), (uid, pHash, survivor key))
Edge = tuple[tuple[int, str], tuple[int, str]]  # two survivor keys within the pHash distance


class AccountingError(errors.WitError):
    """Rows were lost or doubled between reading the raw shards and writing the outputs (a bug or a changed
    input, never bad data); the message names the raw shard and the rows (exit 1)."""


def decide(record: RawRecord, status: str, reason: str, message: str, duplicate_of: str | None = None) -> RawRecord:
    """``record`` with its final ``status`` (one of schemas.finalize.FINAL_STATUSES), ``reason``, message and,
    for a duplicate, the uid it duplicates."""
    return record.replace(status=status, reason=reason, error_message=message, duplicate_of=duplicate_of)


def pick_one_per_uid(records: Iterable[RawRecord]) -> tuple[RawRecord, list[RawRecord]]:
    """The rows of one uid -> (the row that stays, the others decided ``duplicate``/``repeated_uid``).

    A success stays before any failure, then the earliest raw row (raw shard name, row). The row that stays
    may itself be a failure (it keeps its raw status). ValueError for no rows.
    """
    ordered = sorted(records, key=lambda r: (r.status != "success", r.raw_shard, r.row))
    if not ordered:
        raise ValueError("pick_one_per_uid: no rows")
    first = ordered[0]
    message = f"uid repeated: kept raw row {first.raw_shard}:{first.row}"
    return first, [decide(r, "duplicate", "repeated_uid", message, duplicate_of=r.uid) for r in ordered[1:]]


def survivor_key(record: RawRecord) -> tuple[int, str]:
    """Which of several duplicates stays: the smallest key (``wit_builder.core.dedup.survivor_key``: most original
    pixels, then the smallest uid)."""
    return dedup.survivor_key(record.uid, record.original_width, record.original_height)


def pick_one_per_sha256(records: Iterable[RawRecord]) -> tuple[RawRecord, list[RawRecord]]:
    """The successes of one sha256 -> (the survivor, the others decided ``duplicate``/``exact_duplicate`` of it).
    ValueError for no rows."""
    ordered = sorted(records, key=survivor_key)
    if not ordered:
        raise ValueError("pick_one_per_sha256: no rows")
    survivor = ordered[0]
    return survivor, [decide(r, "duplicate", "exact_duplicate", f"same sha256 as uid {survivor.uid}",
                             duplicate_of=survivor.uid) for r in ordered[1:]]


def decontaminated(record: RawRecord, index: dedup.HashIndex) -> RawRecord | None:
    """``record`` decided ``filtered``/``decontaminated`` when its pHash is within the index's distance of an
    evaluation image (the message names the image and the distance in bits), else None (it stays)."""
    hit = index.nearest(dedup.phash_to_int(_phash(record)))
    if hit is None:
        return None
    return decide(record, "filtered", "decontaminated", f"within pHash distance {hit[1]} of evaluation image {hit[0]}")


def eval_image_name(path: str, root: str) -> str:
    """An evaluation image's name in messages: its path below the ``--decontaminate`` folder ``root``
    (which ends with ``/``), else the path as given."""
    return path[len(root):] if path.startswith(root) else path


EVAL_IMAGE_UNREADABLE = "eval_images_unreadable"  # the count of evaluation images skipped (stats.json)


def eval_image_hash(path: str, root: str, data: bytes | None, problem: str = "") -> Iterator[tuple[str, str] | Drop]:
    """(name in messages, pHash as 16 hex digits) of the evaluation image ``path`` (bytes ``data``) below
    ``root``; an image that cannot be read (``data`` None, ``problem`` saying why) or decoded is skipped:
    ``Drop(EVAL_IMAGE_UNREADABLE, "name: why")``, counted and listed, as ``wit eval`` skips its images."""
    name = eval_image_name(path, root)
    if data is None:
        yield Drop(EVAL_IMAGE_UNREADABLE, f"{name}: {problem}")
        return
    try:
        phash = dedup.image_phash(data)
    except Exception as exc:  # Pillow raises many kinds for a damaged or hostile image: any one skips it
        why = errors.stable_text(f"{type(exc).__name__}: {str(exc)[:200]}")
        yield Drop(EVAL_IMAGE_UNREADABLE, f"{name}: does not decode ({why})")
        return
    yield name, phash


def band_entries(record: RawRecord, distance: int) -> list[BandEntry]:
    """The banded pHash keys of a success (``wit_builder.core.dedup.band_keys``: ``distance + 1`` bands), each with
    what the bucket needs: (uid, 64-bit pHash, survivor key). ValueError for a missing or malformed pHash."""
    value = dedup.phash_to_int(_phash(record))
    entry = (record.uid, value, survivor_key(record))
    return [(key, entry) for key in dedup.band_keys(value, distance)]


def bucket_edges(members: Iterable[tuple[str, int, tuple[int, str]]], distance: int) -> list[Edge]:
    """One candidate bucket's members (uid, pHash, survivor key) -> a star per connected component of the
    bucket's graph "within ``distance`` bits" (``wit_builder.core.dedup.bucket_components``): (member's key,
    the component's smallest key) for every other member. n - 1 edges for a component of n, never its n^2/2
    pairs; the stars of all buckets have the same connected components as all pairs within ``distance``
    (``wit_builder.core.dedup``'s module note), which ``wit_builder.core.dedup.UnionFind`` resolves."""
    members = sorted(members)  # bucket order as Beam gives it varies; the edges do not
    if len(members) < 2:
        return []
    edges: list[Edge] = []
    for component in dedup.bucket_components([value for _, value, _ in members], distance):
        keys = sorted(members[i][2] for i in component)
        edges += [(key, keys[0]) for key in keys[1:]]
    return edges


def near_duplicate(record: RawRecord, survivor: str, distance: int) -> RawRecord:
    """``record`` decided ``duplicate``/``near_duplicate`` of the cluster survivor's uid."""
    return decide(record, "duplicate", "near_duplicate",
                  f"pHash within distance {distance} of uid {survivor} (cluster survivor)", duplicate_of=survivor)


def query_language(record: RawRecord) -> str:
    """The language whose queries ``record``'s caption was matched against in stage 2: its ``lang``, English
    for ``und`` and for rows without a language (``wit_builder.pairs.routing``)."""
    return balance.ENGLISH if record.lang in (None, UNDETERMINED) else record.lang


def query_key(record: RawRecord, query: str, caps: Mapping[str, int]) -> str:
    """The re-balance key of one of ``record``'s queries: the query, or ``LANG<TAB>query`` when the caps are per
    language (one word can be a query of two languages, each under its own cap)."""
    return f"{query_language(record)}\t{query}" if caps else query


def language_cap(key: str, caps: Mapping[str, int], cap: int) -> int:
    """The cap of a re-balance key: its language's (``inputs.language_recaps``), else ``cap``."""
    return caps.get(key.partition("\t")[0], cap) if caps else cap


def query_ranks(record: RawRecord, seed: int, caps: Mapping[str, int] | None = None) -> list[tuple[str, balance.Rank]]:
    """(query key, the record's seeded re-balance rank) for each of its queries
    (``wit_builder.core.balance.sample_rank``: the rank stage 2 used with the same seed, so the re-cap keeps a
    subset of stage 2's kept set); keys as :func:`query_key`."""
    rank = balance.sample_rank(record.uid, seed)
    return [(query_key(record, query, caps or {}), rank) for query in record.queries]


def threshold_over_cap(query_ranks: tuple[str, list[balance.Rank]], cap: int,
                       caps: Mapping[str, int] | None = None) -> list[tuple[str, balance.Rank]]:
    """A query key and its smallest ranks (at least its cap + 1) -> [(key, largest rank kept)] when the query is
    over its cap (its language's in ``caps``, else ``cap``; ``wit_builder.core.balance.threshold_from_smallest``),
    else [] (every sample of the query stays)."""
    query, ranks = query_ranks
    threshold = balance.threshold_from_smallest(sorted(ranks), language_cap(query, caps or {}, cap))
    return [] if threshold is None else [(query, threshold)]


def over_cap(record: RawRecord, thresholds: Mapping[str, balance.Rank], seed: int, cap: int,
             caps: Mapping[str, int] | None = None) -> RawRecord | None:
    """``record`` decided ``over_cap`` when every one of its queries is over its cap (``thresholds``: query key ->
    largest rank kept, only for queries over their cap; ``caps``: per-language caps, keys as :func:`query_key`),
    else None (it stays).

    The rule is stage 2's hard balance (``wit_builder.core.balance.over_cap_queries``); the message names up to
    five of the queries.
    """
    caps = caps or {}
    keyed = {query_key(record, q, caps): q for q in record.queries}
    dropped_keys = balance.over_cap_queries(record.uid, keyed, thresholds, seed)
    if dropped_keys is None:
        return None
    dropped = sorted(keyed[k] for k in dropped_keys)
    if caps:
        cap = language_cap(next(iter(keyed)), caps, cap)
    shown = ", ".join(dropped[:SHOWN_QUERIES])
    if len(dropped) > SHOWN_QUERIES:
        shown += f" and {len(dropped) - SHOWN_QUERIES} more"
    return decide(record, "over_cap", "over_cap", f"every query is over the cap of {cap}: {shown}")


def prefix_offsets(counts: Iterable[tuple[str, int]]) -> dict[str, int]:
    """(raw shard name, survivors in it) -> raw shard name -> global index of its first survivor, raw shards
    in name order (so numbering needs no global sort)."""
    offsets, total = {}, 0
    for name, n in sorted(counts):
        offsets[name] = total
        total += n
    return offsets


def number_raw_shard(raw_shard: str, records: Iterable[RawRecord], first_index: int,
                     samples_per_shard: int) -> list[RawRecord]:
    """Every final row of one raw shard, in raw row order; the successes numbered from ``first_index`` with their
    final sample key, final shard name and ``index``.

    Raises AccountingError naming the raw shard and (up to 10 of) the missing and doubled rows unless the rows
    are exactly 0..raw_rows-1, each once.
    """
    rows = sorted(records, key=lambda r: r.row)
    expected = rows[0].raw_rows if rows else 0
    if not rows or [r.row for r in rows] != list(range(expected)):
        seen = Counter(r.row for r in rows)
        lost = [i for i in range(expected) if i not in seen][:10]
        doubled = [i for i, n in seen.items() if n > 1][:10]
        raise AccountingError(f"finalize accounting failed for raw shard {raw_shard}: {len(rows)} final rows for "
                              f"{expected} raw rows (missing rows {lost}, doubled rows {doubled})")
    numbered, index = [], first_index
    for row in rows:
        if row.status == "success":
            shard = final_shards.shard_of(index, samples_per_shard)
            row = row.replace(key=final_shards.sample_key(index), shard=final_shards.shard_name(shard), index=index)
            index += 1
        numbered.append(row)
    return numbered


def shard_order(records: Iterable[RawRecord]) -> list[RawRecord]:
    """The numbered survivors of one final shard in sample order (their global ``index``); ValueError naming
    the uid of a survivor that was never numbered."""
    rows = list(records)
    unnumbered = [r.uid for r in rows if r.index is None]
    if unnumbered:
        raise ValueError(f"survivors without a sample index (uid {unnumbered[0]}): number them first")
    return sorted(rows, key=lambda r: r.index or 0)


def _phash(record: RawRecord) -> str:
    if record.phash is None:
        raise ValueError(f"uid {record.uid} ({record.raw_shard}:{record.row}): a success without a pHash")
    return record.phash
