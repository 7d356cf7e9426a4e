"""``wit finalize``: the stage's launch (``wit_builder.beam.launcher.run_stage``): the inputs resolved and
checked before any work, the completion files of an earlier run removed, the pipeline
(``wit_builder.finalize.pipeline.Finalize``), then stats.json, sizes.json and the card from its counts.

Exit 0 done, 2 bad input or settings found before any work (one line on stderr), 1 a failed run (our error in
one line; ``AccountingError`` when rows went missing).
"""

from __future__ import annotations

from schemas.finalize import ROWS_DIR
from wit_builder.beam import fileio
from wit_builder.beam.launcher import Outcome, Pipeline, Stage, run_stage
from wit_builder.beam.spill import SPILL_DIR, remove_spill
from wit_builder.core import errors
from wit_builder.finalize import gallery, outputs, rebuild, stats
from wit_builder.finalize import inputs as stage_inputs
from wit_builder.finalize.options import OPTIONS, FinalizeOptions
from wit_builder.finalize.pipeline import NAMESPACE, Finalize

__all__ = ["OPTIONS", "FinalizeStage", "run"]


class FinalizeStage(Stage[FinalizeOptions, stage_inputs.Inputs]):
    """Stage 4 for the launcher: raw shards -> final shards, accounting, stats.json, sizes.json and the card."""

    name = "finalize"
    namespace = NAMESPACE
    count_names = stats.COUNT_NAMES

    def resolve(self) -> stage_inputs.Inputs:
        """Resolve and check the inputs (``wit_builder.finalize.inputs.resolve``) and the ``--uids`` list
        (``rebuild.check_uid_list``); nothing is written."""
        if self.options.uids is not None:
            rebuild.check_uid_list(self.options.uids)
        return stage_inputs.resolve(self.options)

    def announce(self) -> list[str]:
        """The line saying what the run reads."""
        listed = f" (rebuild: the samples of --uids {self.options.uids})" if self.options.uids else ""
        return [f"finalize: {len(self.inputs.raw_files)} raw shards, {self.inputs.rows} rows -> {self.out}{listed}"]

    def clean_rerun(self) -> list[str]:
        """The completion files and ``*.tmp-*`` files of an earlier run go first (``outputs.start_rerun``), and a
        killed run's spilled shuffle files (``OUT/_tmp_spill``, ``wit_builder.beam.spill``)."""
        removed = outputs.start_rerun(self.out)
        if remove_spill(self.out):
            removed.append(fileio.join(self.out, SPILL_DIR))
        return [f"finalize: removed {len(removed)} completion and temporary files of an earlier run"] if removed else []

    def after_run(self) -> None:
        """The spilled shuffle files are only for the run: removed whether it succeeded or not."""
        remove_spill(self.out)

    def build(self, pipeline: Pipeline) -> None:
        _ = pipeline | "Finalize" >> Finalize(self.options, self.inputs)

    def finish(self, counts: dict[str, int], seconds: float) -> Outcome:
        """The accounting checks (AccountingError), then the plots, sizes.json, the card and stats.json (last),
        computed from ``counts`` and the tables the pipeline wrote; the summary line and the warnings."""
        inputs, out = self.inputs, self.out
        summary, sizes = stats.summarize(
            counts, outputs.read_written_sizes(out), raw_names=[name for _, name in inputs.raw_names],
            expected_rows=inputs.rows, samples_per_shard=self.options.samples_per_shard)
        if self.options.gallery_samples:  # before the completion files: a killed run never looks complete
            raw_tars = {name: path[: -len(".parquet")] + ".tar" for path, name in inputs.raw_names}
            written = gallery.write_gallery(out, raw_tars, self.options.gallery_samples)
            summary_gallery = [f"gallery {fileio.join(out, gallery.GALLERY_DIR, 'index.html')} "
                               f"({len(written)} files, {sum(written.values()) / 1e6:.1f} MB)"]
        else:
            summary_gallery = []
            gallery.remove_gallery(out)  # an earlier run's gallery would show other samples
        parameters = stats.parameters(self.options, inputs)
        if self.options.uids:
            parameters["uids"] = self.options.uids
        document = stats.stats_document(summary, raw_files=inputs.raw_files, settings=parameters, sizes=sizes,
                                        seconds=seconds, match_rule=inputs.match_rule)
        rebuilt = []
        if self.options.uids:
            listed, missing = counts.get("uids_listed", 0), counts.get("uids_missing", 0)
            document["counts"].update(uids_listed=listed, uids_missing=missing)
            document["details"]["rebuild"] = {"uid_list": self.options.uids, "listed": listed, "missing": missing,
                                              "missing_file": rebuild.MISSING_UIDS}
            rebuilt = [f"rebuilt {listed - missing:,} of {listed:,} listed uids"
                       + (f"; {missing:,} not found as successes: {fileio.join(out, rebuild.MISSING_UIDS)}"
                          if missing else "")]
        else:
            fileio.delete([p for p in [fileio.join(out, rebuild.MISSING_UIDS)] if fileio.exists(p)])
        outputs.write_summary(out, {**summary, "settings": parameters}, outputs.read_query_counts(out), sizes,
                              document)
        empty = not document["counts"].get("samples")  # finished, nothing to train on: exit 3, as stages 2 and 3
        return Outcome(summary=stats.summary(document["counts"], seconds) + rebuilt + summary_gallery,
                       exit_code=errors.EXIT_EMPTY if empty else errors.EXIT_OK,
                       warnings=stats.run_warnings(counts, self.monitoring, fileio.join(out, ROWS_DIR)),
                       error=("the dataset holds no samples: " + ("no listed uid is a success in the raw shards"
                              if self.options.uids else "every raw row failed or was dropped") + "; see "
                              + fileio.join(out, "stats.json") + " for the reasons") if empty else None)


def run(options: FinalizeOptions, beam_argv: list[str]) -> int:
    """``wit finalize``: the exit status (the launcher and the ``wit`` command map our errors to one line)."""
    return run_stage(FinalizeStage(options), beam_argv)
