"""The per-process shard worker: one host chain's url shards downloaded into raw shards, one after another.

A shard whose three files exist is complete (an earlier run made it) and is read back, not downloaded (with
``--retry-failed``, its rows that failed for a transient reason are fetched again: ``retry``). Else
the worker removes what a killed attempt left, reads the shard's rows, downloads them with the chosen engine
(``shard.download_rows`` for ``native``, ``img2dataset_engine`` for ``img2dataset``) and writes
``{shard}.tar``, ``{shard}.parquet`` and, last, ``{shard}_stats.json``, each temp-then-rename. The result of
the URL at a shard boundary is handed to the next shard of the chain, so a run fetches each URL once.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from typing import Any

from wit_builder.beam import fileio
from wit_builder.core import progress
from wit_builder.download import raw_folder, raw_shards, retry
from wit_builder.download.fetch import Fetcher
from wit_builder.download.host_shards import url_key
from wit_builder.download.img2dataset_engine import download_rows_img2dataset
from wit_builder.download.inputs import read_shard_rows
from wit_builder.download.options import DownloadOptions
from wit_builder.download.plan import ShardSpec
from wit_builder.download.shard import download_rows, shared_result
from wit_builder.download.stats import ShardOutcome

logger = logging.getLogger(__name__)


class ShardWorker:
    """Downloads url shards into ``options.out``; one per worker process, so the native engine's Fetcher (its
    per-host limits, DNS and robots.txt caches) is shared by every shard the process runs. ``close`` it."""

    def __init__(self, options: DownloadOptions) -> None:
        self.options = options
        self.fetcher = Fetcher(options.network) if options.engine == "native" else None

    def close(self) -> None:
        """Close the fetcher's pooled connections."""
        if self.fetcher is not None:
            self.fetcher.close()

    def run_chain(self, specs: Iterable[ShardSpec]) -> Iterator[ShardOutcome]:
        """One host chain: its shards in shard order, one after another (``wit_builder.download.host_shards``)."""
        carry: dict[str, raw_shards.RawSample] = {}  # the URL at a shard boundary, handed to the next shard
        for spec in sorted(specs, key=lambda s: s.shard_id):
            yield self.run_shard(spec, carry)

    def run_shard(self, spec: ShardSpec, carry: dict[str, raw_shards.RawSample]) -> ShardOutcome:
        """Download one shard (or read back a complete one); ``carry`` is updated for the chain's next shard."""
        out = self.options.out
        tar_path, parquet_path, stats_path = raw_folder.shard_paths(out, spec.shard_id)
        if raw_folder.shard_complete(out, spec.shard_id):
            carry.clear()
            if self.options.retry_failed:
                return self.retry_shard(spec)
            return ShardOutcome(fileio.read_json(stats_path), downloaded=False)
        started = time.monotonic()
        raw_folder.remove_leftovers(out, spec.shard_id)
        rows = read_shard_rows(spec)
        samples = self._download(spec, rows, carry)
        if len(samples) != len(rows):
            raise AssertionError(f"shard {spec.shard_id}: {len(rows)} rows in, {len(samples)} out")
        carry.clear()
        if samples:
            carry[url_key(rows[-1].get("url"))] = samples[-1]
        stats = self._write_shard(spec, samples)
        progress.reporter("download", "rows").add(len(rows), success=stats["successes"])
        elapsed = time.monotonic() - started
        logger.info("shard %s: %d rows, %d ok in %.1fs (%.1f rows/s)", raw_shards.shard_name(spec.shard_id),
                    len(rows), stats["successes"], elapsed, len(rows) / max(elapsed, 1e-9))
        return ShardOutcome(stats, downloaded=True)

    def retry_shard(self, spec: ShardSpec) -> ShardOutcome:
        """A complete shard with its transiently failed rows (``--retry-reasons``) fetched again and the shard
        rewritten (``retry``); read back unchanged when it has none."""
        out = self.options.out
        tar_path, parquet_path, stats_path = raw_folder.shard_paths(out, spec.shard_id)
        rows = retry.read_rows(parquet_path)
        indices = retry.rows_to_retry(rows, self.options.retry_reasons)
        if not indices:  # the tar is not read: nothing to rewrite
            return ShardOutcome(fileio.read_json(stats_path), downloaded=False)
        started = time.monotonic()
        old = retry.restore_block_reasons(retry.read_samples(tar_path, rows),
                                          fileio.read_json(stats_path).get("blocked_reasons", {}))
        raw_folder.remove_leftovers(out, spec.shard_id)
        inputs = read_shard_rows(spec)
        if len(inputs) != len(old):
            raise raw_shards.RawInputError(f"{parquet_path}: {len(old)} rows, but the plan gives shard "
                                           f"{spec.shard_id} {len(inputs)}; rerun with --overwrite")
        fetched = self._download(spec, [inputs[i] for i in indices], {})
        # The engines number the rows they get from 0: each result takes back the key of the row it retries.
        again = {i: shared_result(inputs[i], old[i].row["key"], sample)
                 for i, sample in zip(indices, fetched, strict=True)}
        stats = self._write_shard(spec, retry.merge(old, again))
        recovered = retry.recovered(again.values())
        progress.reporter("download", "rows").add(len(indices), success=recovered)
        logger.info("shard %s: retried %d rows, %d ok now in %.1fs", raw_shards.shard_name(spec.shard_id),
                    len(indices), recovered, time.monotonic() - started)
        return ShardOutcome(stats, downloaded=True, retried=len(indices), recovered=recovered)

    def _write_shard(self, spec: ShardSpec, samples: list[raw_shards.RawSample]) -> dict[str, Any]:
        """The shard's tar, parquet and stats (last: its presence marks the shard complete), each temp-then-rename;
        the stats document."""
        tar_path, parquet_path, stats_path = raw_folder.shard_paths(self.options.out, spec.shard_id)
        with fileio.atomic_create(tar_path) as f:
            raw_shards.write_tar(f, samples)
        fileio.write_parquet(parquet_path, raw_shards.rows_table(samples))
        stats = raw_shards.shard_stats(spec.shard_id, samples, self.options.engine)
        fileio.write_json(stats_path, stats)
        return stats

    def _download(self, spec: ShardSpec, rows: list[dict[str, Any]],
                  carry: dict[str, raw_shards.RawSample]) -> list[raw_shards.RawSample]:
        o = self.options
        if self.fetcher is not None:
            return download_rows(rows, spec.shard_id, o.rows_per_shard, self.fetcher, o.image, o.threads,
                                 known=carry)
        workdir = tempfile.mkdtemp(prefix=f"wit-img2dataset-{spec.shard_id}-")
        try:
            return download_rows_img2dataset(rows, spec.shard_id, o.rows_per_shard, o.network, o.image, o.threads,
                                             workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
