"""``wit build-queries``: stage 1 as a :class:`~wit_builder.beam.launcher.Stage`; ``run_stage`` owns the sequence
(checks, ``--out``, the pipeline, the counts, the summary line, the exit code)."""

from __future__ import annotations

from dataclasses import replace

from schemas.queries import STATS_JSON
from wit_builder.beam import fileio
from wit_builder.beam.launcher import Outcome, Pipeline, Stage, run_stage
from wit_builder.core import segment
from wit_builder.core.errors import StageFailed
from wit_builder.queries import inputs, stats
from wit_builder.queries.inputs import QueryInputs
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

    def announce(self) -> list[str]:
        """The language and its segmenter; one line per dump."""
        lang = self.inputs.language
        return [f"language {lang.code} ({lang.name}), segmenter {segment.segmenter_id(lang.code)}"] + [
            f"dump {d.path}" + (f" (multistream, index {d.index})" if d.index else "") for d in self.inputs.dumps]

    def build(self, pipeline: Pipeline) -> None:
        i = self.inputs
        options = replace(self.options, traffic=i.traffic)  # --wiki, or the project the dumps' siteinfo names
        site = site_rules(i.language, dict(i.namespaces))
        _ = pipeline | "BuildQueries" >> BuildQueries(list(i.dumps), self.out, options, list(i.pageviews),
                                                      list(i.wordnet), site, segment.segmenter_id(i.language.code))

    def on_failure(self, error: StageFailed) -> StageFailed:
        return StageFailed(f"{error}. No output was written.")

    def after_run(self) -> None:
        """Pass 1's text cache is only for pass 2: removed whether the run succeeded or not."""
        cache_dir = fileio.join(self.out, TEXT_CACHE)
        if fileio.exists(cache_dir):
            fileio.delete([cache_dir])

    def finish(self, counts: dict[str, int], seconds: float) -> Outcome:
        """stats.json from the counts and the pipeline's details file (removed after); the summary line."""
        details_path = fileio.join(self.out, stats.DETAILS_JSON)
        details = fileio.read_json(details_path)
        i = self.inputs
        sha256 = {path: fileio.sha256_file(path) for path in stats.input_paths(i.dumps, i.pageviews)}
        options = replace(self.options, traffic=i.traffic)
        document = stats.stats_document(options, i.dumps, i.pageviews, counts, details, sha256, seconds)
        fileio.write_json(fileio.join(self.out, STATS_JSON), document)
        fileio.delete([details_path])
        return Outcome(summary=stats.summary(counts, len(i.dumps)))


def run(options: BuildQueriesOptions, beam_argv: list[str]) -> int:
    """``wit build-queries``: exit 0 done; 2 bad input or settings before any work; a failed run raises
    StageFailed (exit 1) and leaves no queries file."""
    return run_stage(BuildQueriesStage(options), beam_argv)
