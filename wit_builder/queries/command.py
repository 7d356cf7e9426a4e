"""``wit build-queries``: stage 1 as a :class:`~wit_builder.beam.launcher.Stage`; ``run_stage`` owns the sequence
(checks, ``--out``, the pipeline, the counts, the summary line, the exit code)."""

from __future__ import annotations

import sys
from dataclasses import replace

from schemas.queries import STATS_JSON
from wit_builder.beam import fileio
from wit_builder.beam.launcher import Outcome, Pipeline, Stage, run_stage
from wit_builder.beam.spill import SPILL_DIR, refuse_link, remove_spill
from wit_builder.core import segment
from wit_builder.core.errors import StageFailed
from wit_builder.queries import inputs, stats
from wit_builder.queries.inputs import QueryInputs
from wit_builder.queries.ngram_sketch import sketches_bytes
from wit_builder.queries.options import OPTIONS, BuildQueriesOptions
from wit_builder.queries.pipeline import TEXT_CACHE, BuildQueries
from wit_builder.queries.wikitext import site_rules

__all__ = ["OPTIONS", "BuildQueriesStage", "run"]


class BuildQueriesStage(Stage[BuildQueriesOptions, QueryInputs]):
    """Stage 1: dumps (+ pageviews, WordNet) -> queries.parquet, queries.txt, stats.json."""

    name = "build-queries"
    namespace = stats.NAMESPACE
    count_names = stats.COUNT_NAMES

    def resolve(self) -> QueryInputs:
        """The dumps (with their multistream indexes), pageview files and WordNet lemmas (``inputs.resolve``)."""
        return inputs.resolve(self.options)

    def settings(self) -> BuildQueriesOptions:
        """The options with the sketch width (``QueryInputs.sketch_width``) and the traffic (``--wiki``, or the
        project the dumps' siteinfo names) resolved: what runs and what stats.json records."""
        reading = replace(self.options.reading, sketch_width=self.inputs.sketch_width)
        return replace(self.options, reading=reading, traffic=self.inputs.traffic)

    def announce(self) -> list[str]:
        """The language and its segmenter, one line per dump, and the sketch width with its memory; a warning on
        stderr, before any work, when ``--sketch-width`` is below the width the dumps' size asks for."""
        i = self.inputs
        given = self.options.reading.sketch_width
        if given is not None and given < i.suggested_width:
            print(f"wit {self.name}: warning: --sketch-width {given:,} is small for the ~{i.bigrams:,} bigrams "
                  f"estimated from the dumps' size (more than --min-bigram-count per counter): pass 2 then counts "
                  f"far more n-grams exactly (same queries, more CPU and memory); use --sketch-width "
                  f"{i.suggested_width} ({_mib(sketches_bytes(i.suggested_width))} of sketches per worker)",
                  file=sys.stderr, flush=True)
        how = "--sketch-width" if given is not None else f"chosen for ~{i.bigrams:,} bigrams"
        lang = i.language
        return [f"language {lang.code} ({lang.name}), segmenter {segment.segmenter_id(lang.code)}"] + [
            f"dump {d.path}" + (f" (multistream, index {d.index})" if d.index else "") for d in i.dumps] + [
            f"sketch width {i.sketch_width:,} ({how}): {_mib(sketches_bytes(i.sketch_width))} of sketches per "
            "worker"]

    def build(self, pipeline: Pipeline) -> None:
        i = self.inputs
        site = site_rules(i.language, dict(i.namespaces))
        _ = pipeline | "BuildQueries" >> BuildQueries(list(i.dumps), self.out, self.settings(), list(i.pageviews),
                                                      list(i.wordnet), site, segment.segmenter_id(i.language.code))

    def on_failure(self, error: StageFailed) -> StageFailed:
        return StageFailed(f"{error}. No output was written.")

    def clean_rerun(self) -> list[str]:
        """Nothing to remove before the run, but the folders it deletes after it must not be links (``refuse_link``):
        checked before pass 1 writes its text cache through one."""
        refuse_link(fileio.join(self.out, TEXT_CACHE))
        refuse_link(fileio.join(self.out, SPILL_DIR))
        return []

    def after_run(self) -> None:
        """Pass 1's text cache and, in-process, the sketch files (``OUT/_tmp_spill``) are only for pass 2:
        removed whether the run succeeded or not."""
        path = fileio.join(self.out, TEXT_CACHE)
        refuse_link(path)
        if fileio.exists(path):
            fileio.delete([path])
        remove_spill(self.out)  # also object by object on an object store (no folders there)

    def finish(self, counts: dict[str, int], seconds: float) -> Outcome:
        """stats.json from the counts and the pipeline's details file (removed after); the summary line."""
        details_path = fileio.join(self.out, stats.DETAILS_JSON)
        details = fileio.read_json(details_path)
        i = self.inputs
        sha256 = {path: fileio.sha256_file(path) for path in stats.input_paths(i.dumps, i.pageviews)}
        document = stats.stats_document(self.settings(), i.dumps, i.pageviews, counts, details, sha256, seconds)
        fileio.write_json(fileio.join(self.out, STATS_JSON), document)
        fileio.delete([details_path])
        return Outcome(summary=stats.summary(counts, len(i.dumps)))


def _mib(n: int) -> str:
    return f"{n / (1 << 20):,.0f} MiB"


def run(options: BuildQueriesOptions, beam_argv: list[str]) -> int:
    """``wit build-queries``: exit 0 done; 2 bad input or settings before any work; a failed run raises
    StageFailed (exit 1) and leaves no queries file."""
    return run_stage(BuildQueriesStage(options), beam_argv)
