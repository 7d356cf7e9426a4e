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
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from pipelines import common
from pipelines.match_rule_check import raw_match_rule
from schemas import stats as stats_schema
from schemas.finalize import (
    ACCOUNTING_DIR,
    DATASET_CARD,
    FINAL_ROWS,
    FINAL_STATUSES,
    IMAGE_SIZES_PNG,
    QUERY_COUNTS,
    QUERY_COUNTS_PARQUET,
    QUERY_COUNTS_PNG,
    ROWS_DIR,
    SIZES_JSON,
    STATS_JSON,
)
from wit_builder import balance, dataset_card, dedup, final_shards, options, progress
from wit_builder.crawl import raw_shards
from wit_builder.options import option

NAMESPACE = "finalize"
# Written last, removed first: their presence says the folder holds a complete run.
COMPLETION_FILES = (STATS_JSON, SIZES_JSON, DATASET_CARD)
logger = logging.getLogger(__name__)

DECIDED = "decided"  # tagged output: rows whose final status is settled (all but the survivors)
# Reasons finalize itself drops a row for; each is a counter and a key of stats.json's "reasons".
DROP_REASONS = ("raw_image_unreadable", "repeated_uid", "decontaminated", "exact_duplicate", "near_duplicate",
                "over_cap")
EVAL_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def check_settings(samples_per_shard: int, per_query_cap: int | None, phash_distance: int) -> None:
    """The user settings' rules, shared by the command's options and the resolved config (ValueError)."""
    if samples_per_shard < 1:
        raise ValueError(f"--samples-per-shard must be >= 1, got {samples_per_shard}")
    if per_query_cap is not None and per_query_cap < 1:
        raise ValueError(f"--per-query-cap must be >= 1, got {per_query_cap}")
    dedup.bands(phash_distance)  # validates the range


@dataclass(frozen=True)
class FinalizeConfig:
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
    match_rule: str | None = None      # the rule the pairs were matched under (pipelines.match_rule_check)

    def __post_init__(self) -> None:
        check_settings(self.samples_per_shard, self.per_query_cap, self.phash_distance)
        if self.decontaminate and not self.eval_files:
            raise ValueError(f"--decontaminate {self.decontaminate}: no image files found there")

    def settings(self) -> dict[str, Any]:
        return {
            # No output path: the same inputs give the same bytes wherever they are written.
            "raw": " ".join(self.raw), "samples_per_shard": self.samples_per_shard,
            "per_query_cap": self.per_query_cap, "phash_distance": self.phash_distance, "seed": self.seed,
            "decontaminate": self.decontaminate, "eval_images": len(self.eval_files),
            "match_rule": self.match_rule,
        }


def _count(name: str, n: int = 1) -> None:
    Metrics.counter(NAMESPACE, name).inc(n)


def _decide(row: dict[str, Any], status: str, reason: str, message: str,
            duplicate_of: str | None = None) -> beam.pvalue.TaggedOutput:
    """The row with its final status; counts the reason (the counter names match stats.json's reasons)."""
    _count(reason)
    row = dict(row, status=status, _reason=reason, error_message=message, duplicate_of=duplicate_of)
    return beam.pvalue.TaggedOutput(DECIDED, row)


# ---- reading ----

class ReadRawShard(beam.DoFn):
    """One raw parquet (+ its tar) -> row dicts, every row of the parquet, in order."""

    def __init__(self, names: dict[str, str]) -> None:
        self._names = names

    def process(self, parquet_path: str) -> Iterator[dict[str, Any]]:
        rows = raw_shards.table_rows(common.read_parquet(parquet_path).to_pydict(), parquet_path,
                                   self._names[parquet_path])
        if any(r["status"] == "success" for r in rows):
            self._attach_images(rows, parquet_path[: -len(".parquet")] + ".tar")
        _count("raw_rows", len(rows))
        progress.reporter("finalize", "rows").add(len(rows))
        for row in rows:
            _count(f"raw_{row['_raw_status']}")
            yield row

    @staticmethod
    def _attach_images(rows: list[dict[str, Any]], tar_path: str) -> None:
        if not common.exists(tar_path):
            raw_shards.attach_images(rows, tar_path, {}, 0, "the tar file does not exist", lambda o, s: b"")
            return
        with common.open_read(tar_path) as f:
            members, error = raw_shards.index_tar(f)
            size = FileSystems.match([tar_path])[0].metadata_list[0].size_in_bytes

            def read_member(offset: int, length: int) -> bytes:
                f.seek(offset)
                return f.read(length)

            raw_shards.attach_images(rows, tar_path, members, size, error, read_member)


# ---- dedup, decontamination, re-balance: each splits rows into survivors (main) and DECIDED ----

def _pick_uid(uid_rows: tuple[str, Iterable[dict[str, Any]]]) -> Iterator[Any]:
    """One row per uid: a success first, then the earliest raw row; the other rows are duplicates."""
    uid, rows = uid_rows
    ordered = sorted(rows, key=lambda r: (r["status"] != "success", r["raw_shard"], r["_row"]))
    first = ordered[0]
    yield beam.pvalue.TaggedOutput("uids", uid)
    for row in ordered[1:]:
        yield _decide(row, "duplicate", "repeated_uid",
                      f"uid repeated: kept raw row {first['raw_shard']}:{first['_row']}", duplicate_of=uid)
    if first["status"] == "success":
        yield first
    else:
        if first["_reason"] == "raw_image_unreadable":  # counted here, where the status becomes final
            _count("raw_image_unreadable")
        yield beam.pvalue.TaggedOutput(DECIDED, first)


class DropRepeatedUids(beam.PTransform):
    """The same pair in several raw rows (a uid seen twice) keeps one row; also emits each uid once."""

    def expand(self, rows):
        return (
            rows
            | "KeyByUid" >> beam.Map(lambda r: (r["uid"], r))
            | "GroupByUid" >> beam.GroupByKey()
            | "PickOnePerUid" >> beam.FlatMap(_pick_uid).with_outputs(DECIDED, "uids", main="kept")
        )


class Decontaminate(beam.PTransform):
    """Successes within the pHash distance of any evaluation image become ``filtered``."""

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
        return rows | "DropEvalNearDuplicates" >> beam.FlatMap(
            _check_eval, beam.pvalue.AsSingleton(index)).with_outputs(DECIDED, main="kept")


def _hash_eval_image(path: str, root: str) -> tuple[str, str]:
    name = path[len(root):] if path.startswith(root) else path
    with common.open_read(path) as f:
        data = f.read()
    try:
        return name, dedup.image_phash(data)
    except Exception as exc:
        raise ValueError(f"--decontaminate: evaluation image {path} does not decode ({exc}); "
                         "remove it or fix it") from exc


def _check_eval(row: dict[str, Any], index: dedup.HashIndex) -> Iterator[Any]:
    hit = index.nearest(dedup.phash_to_int(row["phash"]))
    if hit is None:
        yield row
    else:
        yield _decide(row, "filtered", "decontaminated",
                      f"within pHash distance {hit[1]} of evaluation image {hit[0]}")


def _survivor_key(row: dict[str, Any]) -> tuple[int, str]:
    return dedup.survivor_key(row["uid"], row["original_width"], row["original_height"])


def _pick_exact(sha_rows: tuple[str, Iterable[dict[str, Any]]]) -> Iterator[Any]:
    sha256, rows = sha_rows
    ordered = sorted(rows, key=_survivor_key)
    yield ordered[0]
    for row in ordered[1:]:
        yield _decide(row, "duplicate", "exact_duplicate",
                      f"same sha256 as uid {ordered[0]['uid']}", duplicate_of=ordered[0]["uid"])


class DropExactDuplicates(beam.PTransform):
    """Same sha256: the survivor_key-smallest sample stays, the others become duplicates of it."""

    def expand(self, rows):
        return (
            rows
            | "KeyBySha256" >> beam.Map(lambda r: (r["sha256"], r))
            | "GroupBySha256" >> beam.GroupByKey()
            | "KeepOnePerSha256" >> beam.FlatMap(_pick_exact).with_outputs(DECIDED, main="kept")
        )


def _band_entries(row: dict[str, Any], distance: int) -> Iterator[tuple[tuple[int, int], tuple]]:
    value = dedup.phash_to_int(row["phash"])
    for key in dedup.band_keys(value, distance):
        yield key, (row["uid"], value, _survivor_key(row))


def _bucket_edges(bucket: tuple[tuple[int, int], Iterable[tuple]], distance: int) -> Iterator[tuple]:
    (band, _), members = bucket
    members = list(members)
    if len(members) < 2:
        return
    keys = {uid: skey for uid, _, skey in members}
    for a, b in dedup.bucket_pairs(band, [(uid, value) for uid, value, _ in members], distance):
        yield keys[a], keys[b]


def _apply_near(uid_joined: tuple[str, dict[str, list]], distance: int) -> Iterator[Any]:
    _, joined = uid_joined
    for row in joined["row"]:
        if joined["survivor"]:
            survivor = joined["survivor"][0]
            yield _decide(row, "duplicate", "near_duplicate",
                          f"pHash within distance {distance} of uid {survivor} (cluster survivor)",
                          duplicate_of=survivor)
        else:
            yield row


class DropNearDuplicates(beam.PTransform):
    """Banded pHash keys -> candidate buckets -> edges within the distance -> clusters -> one survivor each.

    Only the edges (pairs of near duplicates, usually a small share of the samples) meet in one place for
    the union-find; the samples themselves are joined back by uid.
    """

    def __init__(self, distance: int) -> None:
        super().__init__()
        self._distance = distance

    def expand(self, rows):
        removed = (
            rows
            | "BandKeys" >> beam.FlatMap(_band_entries, self._distance)
            | "GroupByBand" >> beam.GroupByKey()
            | "EdgesInBucket" >> beam.FlatMap(_bucket_edges, self._distance)
            | "CollectEdges" >> beam.combiners.ToList()
            | "ResolveClusters" >> beam.FlatMap(lambda edges: sorted(dedup.resolve_clusters(edges).items()))
        )
        return (
            {"row": rows | "KeyRowsByUid" >> beam.Map(lambda r: (r["uid"], r)), "survivor": removed}
            | "JoinSurvivors" >> beam.CoGroupByKey()
            | "MarkNearDuplicates" >> beam.FlatMap(_apply_near, self._distance).with_outputs(DECIDED, main="kept")
        )


def _query_ranks(row: dict[str, Any], seed: int) -> Iterator[tuple[str, balance.Rank]]:
    rank = balance.sample_rank(row["uid"], seed)
    for query in row["queries"]:
        yield query, rank


def _apply_cap(row: dict[str, Any], table: dict[str, balance.Rank], seed: int, cap: int) -> Iterator[Any]:
    dropped = balance.over_cap_queries(row["uid"], row["queries"], table, seed)
    if dropped is None:
        yield row
    else:
        shown = ", ".join(dropped[:5]) + (f" and {len(dropped) - 5} more" if len(dropped) > 5 else "")
        yield _decide(row, "over_cap", "over_cap", f"every query is over the cap of {cap}: {shown}")


class Rebalance(beam.PTransform):
    """Cap each query at ``cap`` again: the cap+1 smallest ranks per query (a bounded combiner) give the
    threshold of every query over the cap; that small table is a side input to the keep/drop step."""

    def __init__(self, cap: int, seed: int) -> None:
        super().__init__()
        self._cap, self._seed = cap, seed

    def expand(self, rows):
        cap = self._cap
        thresholds = (
            rows
            | "QueryRanks" >> beam.FlatMap(_query_ranks, self._seed)
            | "SmallestRanksPerQuery" >> beam.combiners.Top.SmallestPerKey(cap + 1)
            | "ThresholdsOverCap" >> beam.FlatMap(
                lambda kv: [(kv[0], balance.threshold_from_smallest(kv[1], cap))] if len(kv[1]) > cap else [])
        )
        result = rows | "DropOverCap" >> beam.FlatMap(
            _apply_cap, beam.pvalue.AsDict(thresholds), self._seed, cap).with_outputs(DECIDED, main="kept")
        over_cap = thresholds | "CountQueriesOverCap" >> beam.combiners.Count.Globally()
        return {"kept": result.kept, DECIDED: result[DECIDED], "queries_over_cap": over_cap}


# ---- order, accounting and shard writing ----

def _prefix_offsets(counts: list[tuple[str, int]]) -> dict[str, int]:
    """raw shard name -> global index of its first survivor (raw shards in name order)."""
    offsets, total = {}, 0
    for name, n in sorted(counts):
        offsets[name] = total
        total += n
    return offsets


def _final_row(row: dict[str, Any]) -> dict[str, Any]:
    return {f.name: row.get(f.name) for f in FINAL_ROWS}


class AccountRawShard(beam.DoFn):
    """All rows of one raw shard -> accounting parquet (every row, input order, final status); the survivors
    get their global index, key and final shard and go on keyed by final shard."""

    def __init__(self, out: str, samples_per_shard: int) -> None:
        self._out, self._per_shard = out, samples_per_shard

    def process(self, element, offsets: dict[str, int]) -> Iterator[tuple[int, dict[str, Any]]]:
        raw_shard, rows = element
        rows = sorted(rows, key=lambda r: r["_row"])
        expected = rows[0]["_raw_rows"]
        if [r["_row"] for r in rows] != list(range(expected)):
            seen = Counter(r["_row"] for r in rows)
            lost = [i for i in range(expected) if i not in seen][:10]
            doubled = [i for i, n in seen.items() if n > 1][:10]
            raise RuntimeError(f"finalize accounting failed for raw shard {raw_shard}: {len(rows)} final rows for "
                               f"{expected} raw rows (missing rows {lost}, doubled rows {doubled})")
        index = offsets.get(raw_shard, 0)
        final = []
        for row in rows:
            if row["status"] == "success":
                shard = final_shards.shard_of(index, self._per_shard)
                row = dict(row, key=final_shards.sample_key(index), shard=final_shards.shard_name(shard), _index=index)
                index += 1
                yield shard, row
            _count(f"status_{row['status']}")
            final.append(_final_row(row))
        table = pa.Table.from_pylist(final, schema=FINAL_ROWS)
        common.write_parquet(common.join(self._out, ROWS_DIR, f"{raw_shard}.parquet"), table)


class WriteFinalShard(beam.DoFn):
    """One final shard: its tar (image bytes read from the raw tars by offset) and its parquet."""

    def __init__(self, out: str) -> None:
        self._out = out

    def process(self, element) -> Iterator[tuple[str, int]]:
        shard, rows = element
        rows = sorted(rows, key=lambda r: r["_index"])
        name = final_shards.shard_name(shard)
        with common.atomic_create(common.join(self._out, f"{name}.tar")) as f:
            final_shards.write_tar(f, self._members(rows))
        table = pa.Table.from_pylist([_final_row(r) for r in rows], schema=FINAL_ROWS)
        common.write_parquet(common.join(self._out, f"{name}.parquet"), table)
        _count("shards_written")
        _count("samples_written", len(rows))
        yield name, len(rows)

    @staticmethod
    def _members(rows: list[dict[str, Any]]) -> Iterator[tuple[str, bytes]]:
        # Rows come in raw-shard order, so one open raw tar serves a whole run of samples.
        open_path, handle = None, None
        try:
            for row in rows:
                if row["_image_path"] != open_path:
                    if handle is not None:
                        handle.close()
                    open_path = row["_image_path"]
                    handle = FileSystems.open(open_path, compression_type="uncompressed")
                handle.seek(row["_image_offset"])
                image = handle.read(row["_image_size"])
                if len(image) != row["_image_size"]:
                    raise RuntimeError(f"{open_path}: member {row['raw_key']}.{row['_image_ext']} is shorter than "
                                       "when finalize indexed it; the raw shard changed during the run")
                yield from final_shards.sample_members(row, row["_image_ext"], image)
        finally:
            if handle is not None:
                handle.close()


# ---- statistics ----

def _input_facts(row: dict[str, Any]) -> Iterator[tuple[str, str]]:
    yield "input_rows", ""
    yield "raw_status", row["_raw_status"]


def _candidate_facts(row: dict[str, Any]) -> Iterator[tuple[str, str]]:
    yield "hash_source", row["_hash_source"]
    for query in row["queries"]:
        yield "query_input", query


def _final_facts(row: dict[str, Any]) -> Iterator[tuple[str, str]]:
    yield "status", row["status"]
    yield "reason", row["_reason"] if row["status"] != "success" else "success"
    if row["status"] == "success":
        yield "size_width", dataset_card.size_bin(row["original_width"])
        yield "size_height", dataset_card.size_bin(row["original_height"])
        for query in row["queries"]:
            yield "query_final", query


def write_summary(_, facts: list[tuple[tuple[str, str], int]], sizes: list[tuple[str, int]],
                  uids: int, capped_queries: int, config: FinalizeConfig, started: float) -> dict[str, Any]:
    """stats.json, sizes.json, query counts, the card and its plots; fails loudly when rows went missing."""
    by: dict[str, dict[str, int]] = {}
    for (category, name), n in facts:
        by.setdefault(category, {})[name] = n
    statuses = {s: by.get("status", {}).get(s, 0) for s in FINAL_STATUSES}
    input_rows = by.get("input_rows", {}).get("", 0)
    sizes_map = dict(sorted(sizes))
    problems = []
    if sum(statuses.values()) != config.expected_rows or input_rows != config.expected_rows:
        problems.append(f"{config.expected_rows} rows in the raw parquets, {input_rows} read, "
                        f"{sum(statuses.values())} with a final status")
    if sum(sizes_map.values()) != statuses["success"]:
        problems.append(f"{statuses['success']} successes but {sum(sizes_map.values())} samples in shards")
    expected_sizes = final_shards.shard_sizes(statuses["success"], config.samples_per_shard)
    if sizes_map != expected_sizes:
        problems.append(f"shard sizes {sizes_map} differ from the plan {expected_sizes}")
    if problems:
        raise RuntimeError("finalize accounting failed: " + "; ".join(problems))

    reasons = dict(sorted(by.get("reason", {}).items()))
    query_rows = sorted(
        (q, by.get("query_input", {}).get(q, 0), by.get("query_final", {}).get(q, 0))
        for q in set(by.get("query_input", {})) | set(by.get("query_final", {}))
    )
    stats: dict[str, Any] = {
        "input": {"raw_shards": len(config.raw_files), "rows": input_rows, "uids": uids,
                  "files": [name for _, name in config.raw_names]},
        "raw_statuses": dict(sorted(by.get("raw_status", {}).items())),
        "statuses": statuses,
        "reasons": reasons,
        "hash_sources": dict(sorted(by.get("hash_source", {}).items())),
        "dedup": {
            "candidates": sum(by.get("hash_source", {}).values()),
            "repeated_uids": reasons.get("repeated_uid", 0),
            "exact_duplicates": reasons.get("exact_duplicate", 0),
            "near_duplicates": reasons.get("near_duplicate", 0),
            "decontaminated": reasons.get("decontaminated", 0),
        },
        "rebalance": {"over_cap": reasons.get("over_cap", 0), "queries_over_cap": capped_queries},
        "output": {"samples": statuses["success"], "shards": len(sizes_map),
                   "samples_per_shard": config.samples_per_shard},
        "image_sizes": {side: dict(sorted(by.get(f"size_{side}", {}).items())) for side in ("width", "height")},
    }
    out = config.out
    common.write_parquet(common.join(out, QUERY_COUNTS_PARQUET),
                         pa.Table.from_pylist([{"query": q, "input": i, "final": f} for q, i, f in query_rows],
                                              schema=QUERY_COUNTS))
    common.write_bytes(common.join(out, IMAGE_SIZES_PNG), dataset_card.plot_image_sizes(stats["image_sizes"]))
    common.write_bytes(common.join(out, QUERY_COUNTS_PNG),
                       dataset_card.plot_query_counts(query_rows, config.per_query_cap))
    stale = remove_stale_outputs(out, sizes_map, [name for _, name in config.raw_names])
    if stale:
        logger.info("finalize: removed %d files of an earlier run that this run did not write", len(stale))
    # The completion files last, stats.json very last: a run killed before them never looks complete.
    common.write_json(common.join(out, SIZES_JSON), sizes_map)
    common.write_bytes(common.join(out, DATASET_CARD),
                       dataset_card.render_card({**stats, "settings": config.settings()}, query_rows).encode())
    document = stats_document(stats, config, sizes_map, time.time() - started)
    common.write_json(common.join(out, STATS_JSON), document)
    return document


def stats_document(stats: dict[str, Any], config: FinalizeConfig, sizes: dict[str, int],
                   seconds: float) -> dict[str, Any]:
    """stats.json in the declared layout (schemas/stats.py): every status and drop reason under ``counts``."""
    counts = {"rows": stats["input"]["rows"], "uids": stats["input"]["uids"], "raw_shards": len(config.raw_files),
              "samples": stats["output"]["samples"], "shards": stats["output"]["shards"],
              "dedup_candidates": stats["dedup"]["candidates"],
              "queries_over_cap": stats["rebalance"]["queries_over_cap"],
              **{f"status_{k}": v for k, v in stats["statuses"].items()},
              **{f"reason_{k}": v for k, v in stats["reasons"].items()},
              **{f"raw_status_{k}": v for k, v in stats["raw_statuses"].items()},
              **{f"hash_source_{k}": v for k, v in stats["hash_sources"].items()}}
    return stats_schema.envelope(
        "finalize",
        inputs=[stats_schema.input_entry(path) for path in config.raw_files],
        parameters=config.settings(),
        counts=counts,
        outputs=[stats_schema.output_entry(f"{name}.tar", n) for name, n in sizes.items()],
        seconds=seconds,
        details={**{k: stats[k] for k in ("input", "dedup", "rebalance", "output", "image_sizes")},
                 "match_rule": config.match_rule},
    )


class SelectSurvivors(beam.PTransform):
    """Rows -> the survivors (``kept``) and every other row with its final status (``decided``), in this order:
    repeated uids, decontamination, exact duplicates, near duplicates, re-balance. Also ``candidates`` (the
    successes entering dedup), ``uids`` (count of distinct uids) and ``queries_over_cap``."""

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
            "kept": kept,
            DECIDED: decided | "AllDecided" >> beam.Flatten(),
            "candidates": by_uid.kept,
            "uids": by_uid.uids | "CountUids" >> beam.combiners.Count.Globally(),
            "queries_over_cap": queries_over_cap,
        }


class WriteShards(beam.PTransform):
    """Survivors and decided rows -> accounting parquets and final shards; produces (shard name, count).

    Survivors are numbered in (raw shard, raw row) order: a small side input gives each raw shard the global
    index of its first survivor, so numbering needs no global sort.
    """

    def __init__(self, config: FinalizeConfig) -> None:
        super().__init__()
        self._config = config

    def expand(self, selected):
        config = self._config
        offsets = (
            selected["kept"]
            | "SurvivorRawShard" >> beam.Map(lambda r: r["raw_shard"])
            | "SurvivorsPerRawShard" >> beam.combiners.Count.PerElement()
            | "CollectSurvivorCounts" >> beam.combiners.ToList()
            | "PrefixOffsets" >> beam.Map(_prefix_offsets)
        )
        return (
            (selected[DECIDED], selected["kept"])
            | "AllRows" >> beam.Flatten()
            | "KeyByRawShard" >> beam.Map(lambda r: (r["raw_shard"], r))
            | "GroupByRawShard" >> beam.GroupByKey()
            | "AccountRawShards" >> beam.ParDo(AccountRawShard(config.out, config.samples_per_shard),
                                               beam.pvalue.AsSingleton(offsets))
            | "GroupByFinalShard" >> beam.GroupByKey()
            | "WriteFinalShards" >> beam.ParDo(WriteFinalShard(config.out))
        )


class Finalize(beam.PTransform):
    """Raw shards -> final shards, accounting and statistics. Produces the stats dict (one element)."""

    def __init__(self, config: FinalizeConfig) -> None:
        super().__init__()
        self._config = config

    def expand(self, pbegin):
        config = self._config
        rows = (
            pbegin
            | "RawParquets" >> beam.Create(list(config.raw_files))
            | "SpreadRawShards" >> beam.Reshuffle()
            | "ReadRawShards" >> beam.ParDo(ReadRawShard(dict(config.raw_names)))
        )
        selected = rows | "SelectSurvivors" >> SelectSurvivors(config)
        sizes = selected | "WriteShards" >> WriteShards(config)
        facts = (
            (
                rows | "InputFacts" >> beam.FlatMap(_input_facts),
                selected["candidates"] | "CandidateFacts" >> beam.FlatMap(_candidate_facts),
                selected[DECIDED] | "DecidedFacts" >> beam.FlatMap(_final_facts),
                selected["kept"] | "SurvivorFacts" >> beam.FlatMap(_final_facts),
            )
            | "AllFacts" >> beam.Flatten()
            | "CountFacts" >> beam.combiners.Count.PerElement()
        )
        return (
            pbegin
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
    seed: int = option(FinalizeConfig.seed, help="seed of the re-balance hash rank (stage 2's seed)")

    def __post_init__(self) -> None:
        check_settings(self.samples_per_shard, self.per_query_cap, self.phash_distance)


OPTIONS = FinalizeOptions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    options.add_arguments(parser, OPTIONS)


def raw_parquets(patterns: Iterable[str]) -> list[str]:
    """The raw parquets named by folders, files or globs (a folder means its ``*.parquet``)."""
    expanded = []
    for pattern in patterns:
        is_file_or_glob = pattern.endswith(".parquet") or any(c in pattern for c in "*?[")
        expanded.append(pattern if is_file_or_glob else common.join(pattern, "*.parquet"))
    files = [f for f in common.expand_patterns(expanded, "--raw") if f.endswith(".parquet")]
    if not files:
        raise FileNotFoundError(f"--raw {' '.join(patterns)}: no .parquet files")
    return files


def eval_images(folder: str) -> list[str]:
    matches = FileSystems.match([common.join(folder, "**")])[0].metadata_list
    return sorted(m.path for m in matches if m.path.lower().endswith(EVAL_IMAGE_EXTENSIONS))


def parquet_rows(path: str) -> int:
    """Rows in a raw parquet, from its footer; fails early, naming the file, when it is no raw shard."""
    with common.open_read(path) as f:
        try:
            footer = pq.ParquetFile(io.BytesIO(f.read())).metadata
        except (pa.ArrowInvalid, OSError) as exc:
            raise raw_shards.RawInputError(f"{path}: not a readable parquet file ({exc})") from exc
    raw_shards.check_columns(footer.schema.to_arrow_schema().names, path)
    return footer.num_rows


def _folder_key(path: str) -> str:
    return path.rstrip("/") if "://" in path else os.path.realpath(path)


def check_out_apart_from_raw(out: str, files: Iterable[str]) -> None:
    """--out may not be a folder holding raw shards: final shards share their NNNNN.tar/.parquet names, and a
    rerun deletes stats.json and "stale" shards there, so the raw input would be overwritten or deleted."""
    out_key = _folder_key(out)
    for f in files:
        if _folder_key(f.rsplit("/", 1)[0] if "/" in f else ".") == out_key:
            raise ValueError(f"--out {out} is the folder of the raw shard {f}: finalize would overwrite or delete "
                             "the raw shards there; choose another --out")


def build_config(args: FinalizeOptions) -> FinalizeConfig:
    files = raw_parquets(args.raw)
    check_out_apart_from_raw(args.out, files)
    names = raw_shards.raw_shard_names(files)
    expected = sum(parquet_rows(f) for f in files)
    if expected == 0:
        raise raw_shards.RawInputError(f"--raw {' '.join(args.raw)}: the raw parquets hold no rows")
    evals = tuple(eval_images(args.decontaminate)) if args.decontaminate else ()
    return FinalizeConfig(
        raw=tuple(args.raw), out=args.out, raw_files=tuple(files), raw_names=tuple(sorted(names.items())),
        expected_rows=expected, samples_per_shard=args.samples_per_shard, per_query_cap=args.per_query_cap,
        phash_distance=args.phash_distance, seed=args.seed, decontaminate=args.decontaminate, eval_files=evals,
        match_rule=raw_match_rule(files),  # ValueError when the pairs behind the shards mix match rules
    )


def remove_stale_outputs(out: str, keep_shards: Iterable[str], keep_raw_names: Iterable[str]) -> list[str]:
    """Delete final shards and accounting parquets of an earlier run that this run did not write."""
    keep_shards, keep_raw = set(keep_shards), set(keep_raw_names)
    stale = []
    for ext in ("tar", "parquet"):
        for m in FileSystems.match([common.join(out, f"*.{ext}")])[0].metadata_list:
            name = m.path.rsplit("/", 1)[-1][: -len(ext) - 1]
            if name.isdigit() and name not in keep_shards:
                stale.append(m.path)
    for m in FileSystems.match([common.join(out, ROWS_DIR, "*.parquet")])[0].metadata_list:
        if m.path.rsplit("/", 1)[-1][: -len(".parquet")] not in keep_raw:
            stale.append(m.path)
    if stale:
        FileSystems.delete(stale)
    return stale


def start_rerun(out: str) -> list[str]:
    """Before writing anything: delete the completion files of an earlier run (stats.json first), so that a
    killed rerun never looks complete, and the ``*.tmp-*`` files killed writers left behind."""
    removed = [p for p in (common.join(out, name) for name in COMPLETION_FILES) if common.exists(p)]
    if removed:
        FileSystems.delete(removed)
    folders = (out, common.join(out, ACCOUNTING_DIR), common.join(out, ROWS_DIR))
    orphans = [m.path for folder in folders
               for m in FileSystems.match([common.join(folder, "*.tmp-*")])[0].metadata_list]
    if orphans:
        FileSystems.delete(orphans)
    return removed + orphans


def run(args: FinalizeOptions, beam_argv: list[str]) -> int:
    try:
        config = build_config(args)
    except (FileNotFoundError, ValueError) as exc:
        print(f"wit finalize: {exc}", file=sys.stderr)
        return 2
    print(f"finalize: {len(config.raw_files)} raw shards, {config.expected_rows} rows -> {config.out}", flush=True)
    common.makedirs(config.out)
    removed = start_rerun(config.out)
    if removed:
        print(f"finalize: removed {len(removed)} completion and temporary files of an earlier run", flush=True)
    started = time.monotonic()
    pipeline = beam.Pipeline(options=common.pipeline_options(beam_argv))
    _ = pipeline | "Finalize" >> Finalize(config)
    result = common.run_pipeline(pipeline, config.out)
    elapsed = time.monotonic() - started
    stats = common.read_json(common.join(config.out, STATS_JSON))
    counts = stats["counts"]
    statuses = stats_schema.prefixed(counts, "status_")
    counted = common.counters(result, NAMESPACE)
    expected = {f"status_{s}": n for s, n in statuses.items()}
    expected.update({r: counts.get(f"reason_{r}", 0) for r in DROP_REASONS})
    mismatched = {name: (n, counted.get(name, 0)) for name, n in expected.items() if counted.get(name, 0) != n}
    if mismatched:  # stats.json comes from the data; a retried bundle can inflate attempted-only counters
        print(f"wit finalize: warning: monitoring counters differ from stats.json (stats, counter): {mismatched}",
              file=sys.stderr)
    shown = ", ".join(f"{s} {n}" for s, n in statuses.items() if n)
    print(progress.summary_line("finalize", [
        f"{counts['rows']:,} rows -> {counts['samples']:,} samples in {counts['shards']} shards ({shown})",
        f"{counts['rows'] / max(elapsed, 1e-9):.0f} rows/s"], elapsed, config.out), flush=True)
    return 0
