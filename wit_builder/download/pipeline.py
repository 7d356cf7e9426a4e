"""Stage 3's Beam wiring: every url shard of the plan -> raw shards on disk -> the counts of every shard.

```
url shards ─► (host chain, shard) ─► GroupByKey ─► ShardWorker.run_chain ─► ShardOutcome per shard
  ─► counted (stats.shard_counts) ─► OUT/_counts.json;  shards' top errors ─► OUT/_error_kinds.json
```

A host chain is one element: its shards run one after another in one worker, so per-host limits hold for the
whole run (``host_shards``). Every shard of the plan flows through, complete ones read back, so the counts
cover the whole folder however many runs made it. The only module of the stage that imports Beam.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apache_beam as beam

from wit_builder.beam import counting, fileio
from wit_builder.download import stats
from wit_builder.download.options import DownloadOptions
from wit_builder.download.plan import ShardSpec
from wit_builder.download.raw_folder import ERROR_KINDS_FILE
from wit_builder.download.worker import ShardWorker

NAMESPACE = "download"  # Beam counters (monitoring): download/<count name>


def _by_chain(spec: ShardSpec) -> tuple[int, ShardSpec]:
    return spec.chain, spec


class _DownloadChainFn(beam.DoFn):
    """(chain, its shards) -> one ShardOutcome per shard; one ShardWorker per DoFn instance."""

    def __init__(self, options: DownloadOptions) -> None:
        self._options = options
        self._worker: ShardWorker | None = None

    def setup(self) -> None:
        self._worker = ShardWorker(self._options)

    def teardown(self) -> None:
        if self._worker is not None:
            self._worker.close()

    def process(self, element: tuple[int, Any]) -> Iterator[stats.ShardOutcome]:
        if self._worker is None:
            raise RuntimeError("_DownloadChainFn: process() before setup() made the worker")
        _, specs = element
        yield from self._worker.run_chain(specs)


class _CountShardFn(counting.CountingDoFn):
    """ShardOutcome -> its counts (``stats.shard_counts``) on the COUNTS output, its top errors' (kind, rows)."""

    namespace = NAMESPACE

    def process(self, outcome: stats.ShardOutcome) -> Iterator[tuple[str, int]]:
        for name, n in stats.shard_counts(outcome).items():
            self.count(name, n)
        yield from outcome.stats.get("top_errors", {}).items()


class DownloadShards(beam.PTransform):
    """url shards (ShardSpec) -> their raw shards written to ``options.out`` -> one ShardOutcome per shard.

    Shards are grouped by host chain: the group is the unit of parallelism, so no two workers ever serve one host
    at the same time. A complete shard (its three files exist) is read back, not downloaded again.

    Args:
        options: the command's settings (``out``, ``engine``, ``rows_per_shard``, ``threads``, ``image``,
            ``network``); picklable, validated.
    """

    def __init__(self, options: DownloadOptions) -> None:
        super().__init__()
        self._options = options

    def expand(self, specs):
        return (
            specs
            | "ByHostChain" >> beam.Map(_by_chain)
            | "GroupHostChains" >> beam.GroupByKey()  # also spreads the chains over workers
            | "DownloadChain" >> beam.ParDo(_DownloadChainFn(self._options))
        )


class Download(beam.PTransform):
    """The stage on a pipeline's root: every url shard of the plan downloaded (or read back when complete), its
    counts written to ``OUT/_counts.json`` (``counting.WriteCounts``: ``stats.COUNT_NAMES``) and its top errors
    summed per kind into ``OUT/_error_kinds.json`` (``raw_folder.ERROR_KINDS_FILE``).

    Args:
        specs: every shard of the plan (``inputs.plan_shards``), complete ones included.
        options: the command's settings; ``options.out`` is the raw folder.
    """

    def __init__(self, specs: list[ShardSpec], options: DownloadOptions) -> None:
        super().__init__()
        self._specs = specs
        self._options = options

    def expand(self, root):
        out = self._options.out
        counted = (
            root
            | "UrlShards" >> beam.Create(self._specs)
            | "DownloadShards" >> DownloadShards(self._options)
            | "CountShards" >> beam.ParDo(_CountShardFn()).with_outputs(counting.COUNTS, main="error_kinds")
        )
        _ = counted[counting.COUNTS] | "WriteCounts" >> counting.WriteCounts(fileio.join(out, counting.COUNTS_FILE))
        return counted.error_kinds | "WriteErrorKinds" >> counting.WriteCounts(fileio.join(out, ERROR_KINDS_FILE))
