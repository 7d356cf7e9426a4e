"""``wit build-pairs``: the stage as the launcher runs it (``wit_builder.beam.launcher.run_stage``): checks before
work, a rerun's clean-up, the pipeline (``wit_builder.pairs.pipeline.BuildPairs``), and stats.json from the counts.

Exit codes: 0; 1 when the run failed or no candidate matched any query (the summary line still comes, and a
line on stderr says what to check); 2 for bad settings or inputs found before any work.
"""

from __future__ import annotations

import itertools
import json

from schemas.pairs import BALANCE_PNG, PAIRS_GLOB, QUERY_COUNTS_PARQUET, STATS_JSON
from wit_builder.beam import fileio
from wit_builder.beam.launcher import Outcome, Pipeline, Stage, run_stage
from wit_builder.beam.spill import SPILL_DIR
from wit_builder.core import errors
from wit_builder.pairs import inputs, stats
from wit_builder.pairs.balance_plot import balance_png
from wit_builder.pairs.batches import buckets_for
from wit_builder.pairs.options import OPTIONS, BuildPairsOptions
from wit_builder.pairs.pipeline import NAMESPACE, BuildPairs

__all__ = ["OPTIONS", "BuildPairsStage", "run"]


class BuildPairsStage(Stage[BuildPairsOptions, inputs.PairsInputs]):
    """Stage 2 for :func:`~wit_builder.beam.launcher.run_stage`."""

    name = "build-pairs"
    namespace = NAMESPACE
    count_names = stats.COUNTS

    def resolve(self) -> inputs.PairsInputs:
        """The queries file (present, its entries usable by the rule) and every pool file (format and columns)
        checked."""
        o = self.options
        pool = o.pool_files.reader_options()
        path = inputs.queries_path(o.queries)
        n_queries = inputs.check_entries(path, o.match_rule)
        files = inputs.pool_files(o.pool, pool)
        buckets = o.shuffle_buckets or buckets_for(sum(fileio.size(f) for f in files))
        return inputs.PairsInputs(inputs.QueriesFile(path, fileio.sha256_file(path), o.match_rule), n_queries,
                                  tuple(files), pool, buckets)

    def announce(self) -> list[str]:
        """The line saying what the run will do."""
        o, balance, i = self.options, self.options.balance, self.inputs
        return [f"build-pairs: {len(i.pool_files)} pool file(s), {i.query_count:,} queries, balance={balance.mode} "
                f"cap={balance.per_query_cap} target={balance.target} seed={balance.seed} match_rule={o.match_rule} "
                f"shuffle_buckets={i.buckets}"]

    def clean_rerun(self) -> list[str]:
        """A rerun replaces the previous output: stale files of another run must not mix in."""
        out = self.out
        named = [fileio.join(out, name) for name in (STATS_JSON, QUERY_COUNTS_PARQUET, stats.BAD_RECORDS_JSONL,
                                                     BALANCE_PNG)]
        named.append(fileio.join(out, SPILL_DIR))  # a killed run's spilled buckets
        fileio.delete([*fileio.match(fileio.join(out, PAIRS_GLOB)), *filter(fileio.exists, named)])
        return []

    def after_run(self) -> None:
        """The spilled buckets (``wit_builder.beam.spill``) are only for the run: removed whether it succeeded
        or not."""
        spilled = fileio.join(self.out, SPILL_DIR)
        if fileio.exists(spilled):
            fileio.delete([spilled])

    def build(self, pipeline: Pipeline) -> None:
        """``BuildPairs`` on ``pipeline`` (a ``beam.Pipeline``: Beam itself stays in ``pipeline.py``)."""
        o, i = self.options, self.inputs
        _ = pipeline | "BuildPairs" >> BuildPairs(list(i.pool_files), i.queries, o.out, i.pool, o.balance,
                                                  o.rows_per_file, i.buckets)

    def finish(self, counts: dict[str, int], seconds: float) -> Outcome:
        """balance.png, then stats.json (last: its presence marks a complete output) from ``counts``; exit 1 when
        nothing matched."""
        o, i, out = self.options, self.inputs, self.out
        query_counts = fileio.read_parquet(fileio.join(out, QUERY_COUNTS_PARQUET))
        matched = query_counts.column("matched").to_numpy()
        kept = query_counts.column("kept").to_numpy()
        fileio.write_bytes(fileio.join(out, BALANCE_PNG),
                           balance_png(matched, kept, o.balance.per_query_cap, o.balance.target))
        pair_files = sorted(path.rsplit("/", 1)[-1] for path in fileio.match(fileio.join(out, PAIRS_GLOB)))
        with fileio.open_read(fileio.join(out, stats.BAD_RECORDS_JSONL)) as f:
            first_bad = [json.loads(line) for line in itertools.islice(f, stats.FIRST_BAD_RECORDS)]
        document = stats.document(
            queries_path=i.queries.path, queries_sha256=i.queries.sha256, pool_files=i.pool_files,
            parameters=stats.parameters(o.balance, i.pool, o.rows_per_file, o.match_rule), counts=counts,
            pair_files=pair_files, max_matched=int(matched.max(initial=0)), max_kept=int(kept.max(initial=0)),
            first_bad=first_bad, seconds=seconds)
        fileio.write_json(fileio.join(out, STATS_JSON), document)
        if counts["matched"] == 0:
            return Outcome(stats.summary(counts), errors.EXIT_FAILED, error=stats.NO_MATCH_ERROR)
        return Outcome(stats.summary(counts))


def run(options: BuildPairsOptions, beam_argv: list[str]) -> int:
    """Run ``wit build-pairs``; the exit status."""
    return run_stage(BuildPairsStage(options), beam_argv)
