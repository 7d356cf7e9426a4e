"""``wit download`` (stage 3): the :class:`DownloadStage` that ``run_stage`` runs.

Before any work: the inputs are checked and cut into url shards (``inputs.plan_shards``), and the plan is
checked against ``--out``'s plan.json (``raw_folder.check_plan``: a folder made with other inputs or settings is
refused, exit 2, unless ``--overwrite``; ``--retry-failed`` needs a run there made with the same ones). Then the
earlier run is deleted (``--overwrite``) and the plan recorded,
the pipeline downloads the shards not yet complete and counts every shard (``pipeline.Download``), and
``finish`` writes stats.json from those counts.

Exit status: 0 when the run finished and some row succeeded; 1 when the run failed; 2 for bad input or
settings found before any work (including a folder made with other settings); 3 when the run finished but
no row succeeded (every row refused or failed: the top reasons and a hint follow the summary line).
"""

from __future__ import annotations

from wit_builder.beam.launcher import Outcome, Pipeline, Stage, run_stage
from wit_builder.core.errors import EXIT_EMPTY, UsageError
from wit_builder.download import inputs, plan, raw_folder, stats
from wit_builder.download.img2dataset_engine import INSTALL_HINT, img2dataset_available
from wit_builder.download.options import EPILOG, OPTIONS, DownloadOptions
from wit_builder.download.pipeline import NAMESPACE, Download

__all__ = ["EPILOG", "OPTIONS", "DownloadStage", "run"]

EXIT_NOTHING_SUCCEEDED = EXIT_EMPTY  # 3: the run finished, no row succeeded


class DownloadStage(Stage[DownloadOptions, inputs.DownloadInputs]):
    """``wit download``'s checks, plan, clean-up, pipeline and stats.json (see the module docstring)."""

    name = "download"
    namespace = NAMESPACE
    count_names = stats.COUNT_NAMES

    def resolve(self) -> inputs.DownloadInputs:
        """The engine's extra, the inputs and the shard cut, and the plan against ``--out``'s plan.json.
        UsageError, PairsInputError, RawFolderError, FileNotFoundError, ValueError (exit 2)."""
        o = self.options
        if o.engine == "img2dataset" and not img2dataset_available():
            raise UsageError(INSTALL_HINT)
        paths = list(dict.fromkeys(p for pattern in o.pairs for p in inputs.input_files(pattern)))
        specs = inputs.plan_shards(paths, o.rows_per_shard)
        if not any(s.rows for s in specs):
            raise inputs.PairsInputError(f"--pairs {' '.join(o.pairs)}: the pairs files hold no rows ({len(paths)} "
                                         "file(s), 0 rows): nothing to download; check the build-pairs run")
        document = plan.plan_document(paths, o.rows_per_shard, specs,
                                      plan.output_settings(o.engine, o.image, o.network))
        resume = raw_folder.check_plan(o.out, document, o.overwrite)
        if o.retry_failed and not resume:
            raise raw_folder.RawFolderError(f"--retry-failed: {o.out} holds no download run to retry (no "
                                            f"{plan.PLAN_JSON}); run without --retry-failed first")
        complete = sum(raw_folder.shard_complete(o.out, s.shard_id) for s in specs) if resume else 0
        return inputs.DownloadInputs(tuple(specs), document, resume, complete)

    def announce(self) -> list[str]:
        """The plan's line."""
        o, i = self.options, self.inputs
        return [f"wit download: {sum(s.rows for s in i.specs)} rows in {len(i.specs)} shards of <= "
                f"{o.rows_per_shard} ({i.complete} already complete), engine {o.engine}"
                + (f"; --retry-failed: {', '.join(o.retry_reasons)} failures of complete shards fetched again"
                   if o.retry_failed else "")]

    def clean_rerun(self) -> list[str]:
        """A folder started afresh: ``--overwrite`` deletes the earlier run's files, then the plan is recorded."""
        if self.inputs.resume:
            return []
        removed = raw_folder.remove_run(self.out) if self.options.overwrite else []
        raw_folder.write_plan(self.out, self.inputs.plan)
        if not removed:
            return []
        return [f"wit download: --overwrite: deleted {len(removed)} files of the earlier run in {self.out}"]

    def build(self, pipeline: Pipeline) -> None:
        """Attach ``pipeline.Download`` (every url shard of the plan) to ``pipeline``."""
        _ = pipeline | "Download" >> Download(list(self.inputs.specs), self.options)

    def finish(self, counts: dict[str, int], seconds: float) -> Outcome:
        """stats.json from the counts of every shard of the plan and the run's error kinds; exit 3 with the top
        reasons and hints when the folder has rows but not one success."""
        errors = stats.top_errors(raw_folder.take_error_kinds(self.out))
        doc = stats.stats_document(self.options, self.inputs.specs, counts, errors, seconds)
        raw_folder.write_stats(self.out, doc, unchanged_run=not counts["shards_downloaded"])
        summary = stats.summary(counts, len(self.inputs.specs))
        if stats.nothing_succeeded(counts):
            return Outcome(summary, exit_code=EXIT_NOTHING_SUCCEEDED,
                           error=stats.nothing_succeeded_report(counts, errors))
        return Outcome(summary)


def run(options: DownloadOptions, beam_argv: list[str]) -> int:
    """``wit download``: the exit status (module docstring); our errors are raised for the ``wit`` command to
    print in one line."""
    return run_stage(DownloadStage(options), beam_argv)
