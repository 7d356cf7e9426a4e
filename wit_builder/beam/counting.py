"""Counts as data: DoFns tally what they see per bundle and emit the tally on a tagged output; a combiner sums
the tallies into one file that the launcher reads back for ``stats.json``. Beam metrics only cross-check."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.metrics.metricbase import Counter
from apache_beam.transforms.window import GlobalWindows

from wit_builder.beam.fileio import join, take_counts, write_json
from wit_builder.core.verdicts import Drop  # rules return it without importing Beam

COUNTS = "counts"  # tagged output of a CountingDoFn: (name, n) pairs that become stats.json's counts
COUNTS_FILE = "_counts.json"  # written by WriteCounts, read by the launcher, removed once stats.json is written


@functools.cache
def _beam_counter(namespace: str, name: str) -> Counter:
    """The Beam counter ``namespace/name``, made once per process: ``count`` runs per record, and a Beam counter
    finds the running step's metrics container when it is incremented, so one object serves every DoFn."""
    return Metrics.counter(namespace, name)


class _Count:
    def __init__(self, dofn: CountingDoFn, name: str) -> None:
        self._dofn, self._name = dofn, name

    def inc(self, n: int = 1) -> None:
        self._dofn.count(self._name, n)


class CountingDoFn(beam.DoFn):
    """A DoFn whose counts are data, not only metrics.

    ``self.count(name, n)`` adds to a per-bundle tally and to the Beam counter ``namespace/name`` (monitoring).
    ``finish_bundle`` emits the tally on the tagged output :data:`COUNTS` as ``(name, n)`` pairs. A failed
    bundle's outputs are discarded by the runner and its retry starts a fresh tally, so summing that output
    (:class:`WriteCounts`) counts every record once, on any runner, where attempted metrics would count a
    retried bundle twice. Subclasses that define ``start_bundle``/``finish_bundle`` call ``super()``.
    """

    namespace = "wit"

    def start_bundle(self) -> None:
        """Start an empty tally for the bundle."""
        self._tally: dict[str, int] = {}

    def counter(self, name: str) -> _Count:
        """A handle with Beam's counter interface (``.inc(n=1)``) that counts through :meth:`count`."""
        return _Count(self, name)

    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to ``name`` in the bundle's tally and to the Beam counter of that name (monitoring)."""
        if not hasattr(self, "_tally"):
            self._tally = {}
        self._tally[name] = self._tally.get(name, 0) + n
        _beam_counter(self.namespace, name).inc(n)

    def judge(self, verdict: Any) -> bool:
        """Count a rule's :class:`Drop` under its reason and return False; True for anything else (kept)."""
        if isinstance(verdict, Drop):
            self.count(verdict.reason)
            return False
        return True

    def finish_bundle(self) -> Iterator[beam.pvalue.TaggedOutput]:
        """Emit the bundle's tally as ``(name, n)`` on the COUNTS output (dropped with the bundle if it is retried)."""
        tally, self._tally = getattr(self, "_tally", {}), {}
        for name, n in tally.items():
            yield beam.pvalue.TaggedOutput(COUNTS, GlobalWindows.windowed_value((name, n)))


DROPPED = "dropped"  # tagged output of a RuleDoFn built with keep_dropped=True: its Drop values


class RuleDoFn(CountingDoFn):
    """The frame around a pure rule: ``rule(element, *args) -> Iterable[output | Drop]``.

    Every :class:`Drop` is counted under its reason (and emitted on :data:`DROPPED` when ``keep_dropped``);
    every other value goes to the main output, counted under ``kept_as`` when that is given.
    """

    def __init__(self, rule: Callable[..., Iterable[Any]], *args: Any, kept_as: str | None = None,
                 keep_dropped: bool = False, namespace: str = "wit") -> None:
        super().__init__()
        self._rule, self._args = rule, args
        self._kept_as, self._keep_dropped = kept_as, keep_dropped
        self.namespace = namespace

    def process(self, element: Any) -> Iterator[Any]:
        for verdict in self._rule(element, *self._args):
            if not self.judge(verdict):
                if self._keep_dropped:
                    yield beam.pvalue.TaggedOutput(DROPPED, verdict)
                continue
            if self._kept_as:
                self.count(self._kept_as)
            yield verdict


class WriteCounts(beam.PTransform):
    """``(name, n)`` pairs (from any number of COUNTS outputs, flattened) -> ``{name: total}`` in one JSON file.

    The sum is a combiner over the pipeline's own outputs, so it is exact under bundle retries.
    """

    def __init__(self, path: str) -> None:
        super().__init__()
        self._path = path

    def expand(self, pairs):
        return (
            pairs
            | "SumCounts" >> beam.CombinePerKey(sum)
            | "CountsToDict" >> beam.combiners.ToDict()
            | "WriteCountsFile" >> beam.Map(lambda counts, path: write_json(path, dict(sorted(counts.items()))),
                                            self._path)
        )


def read_counts(folder: str, names: Iterable[str] = ()) -> dict[str, int]:
    """The counts a pipeline wrote with :class:`WriteCounts` into ``folder`` (zeros for ``names`` not seen);
    the file is removed after reading (it is rewritten by every run)."""
    counts = {name: 0 for name in names} | take_counts(join(folder, COUNTS_FILE))
    return dict(sorted(counts.items()))


def counters(result: beam.runners.runner.PipelineResult, namespace: str) -> dict[str, int]:
    """Committed values of every counter in ``namespace``, summed over steps, sorted by name (attempted values
    where a runner reports no committed ones: then a retried bundle counts twice, so use these for monitoring
    and cross-checks only; stats come from :class:`WriteCounts`)."""
    totals: dict[str, int] = {}
    for c in result.metrics().query(MetricsFilter().with_namespace(namespace))["counters"]:
        value = c.committed if c.committed is not None else c.attempted
        totals[c.key.metric.name] = totals.get(c.key.metric.name, 0) + int(value or 0)
    return dict(sorted(totals.items()))
