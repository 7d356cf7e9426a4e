"""``wit build-queries``: stage 1 as a :class:`~wit_builder.beam.launcher.Stage`; ``run_stage`` owns the sequence
(checks, ``--out``, the pipeline, the counts, the summary line, the exit code)."""

from __future__ import annotations

from dataclasses import dataclass

from schemas.queries import STATS_JSON
from wit_builder.beam import fileio
from wit_builder.beam.launcher import Outcome, Pipeline, Stage, run_stage
from wit_builder.core.errors import StageFailed
from wit_builder.queries import stats
from wit_builder.queries.options import OPTIONS, BuildQueriesOptions
from wit_builder.queries.pipeline import TEXT_CACHE, BuildQueries
from wit_builder.queries.wikidump import DumpInput, dump_inputs
from wit_builder.queries.wordnet import wordnet_candidates

__all__ = ["OPTIONS", "BuildQueriesStage", "QueryInputs", "run"]


@dataclass(frozen=True)
class QueryInputs:
    """What ``--dump``, ``--pageviews`` and ``--wordnet-dir`` name, resolved by :meth:`BuildQueriesStage.resolve`."""

    dumps: tuple[DumpInput, ...]               # each dump with the multistream index beside it, or None
    pageviews: tuple[str, ...] = ()            # the pageview files (none: titles rank by incoming links)
    wordnet: tuple[tuple[str, float], ...] = ()  # (query, score) of every WordNet lemma (none without WordNet)


class BuildQueriesStage(Stage[BuildQueriesOptions, QueryInputs]):
    """Stage 1: dumps (+ pageviews, WordNet) -> queries.parquet, queries.txt, stats.json."""

    name = "build-queries"
    namespace = stats.NAMESPACE
    count_names = stats.COUNT_NAMES

    def resolve(self) -> QueryInputs:
        """Resolve ``--dump`` (paired with the multistream indexes beside them), ``--pageviews`` and read
        WordNet; FileNotFoundError / WordNetError name the flag."""
        o = self.options
        dumps = dump_inputs(fileio.expand_patterns(list(o.dump), what="--dump"), fileio.exists)
        if not dumps:
            raise FileNotFoundError(f"--dump {list(o.dump)!r} names only multistream index files, no dump")
        pageviews = fileio.expand_patterns(o.pageviews, what="--pageviews") if o.pageviews else []
        wordnet = wordnet_candidates(o.wordnet_dir) if o.wordnet_dir else []
        return QueryInputs(tuple(dumps), tuple(pageviews), tuple(wordnet))

    def announce(self) -> list[str]:
        """One line per dump."""
        return [f"dump {d.path}" + (f" (multistream, index {d.index})" if d.index else "") for d in self.inputs.dumps]

    def build(self, pipeline: Pipeline) -> None:
        i = self.inputs
        _ = pipeline | "BuildQueries" >> BuildQueries(list(i.dumps), self.out, self.options, list(i.pageviews),
                                                      list(i.wordnet))

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
        paths = [d.path for d in i.dumps] + [d.index for d in i.dumps if d.index] + list(i.pageviews)
        sha256 = {path: fileio.sha256_file(path) for path in paths}
        document = stats.stats_document(self.options, i.dumps, i.pageviews, counts, details, sha256, seconds)
        fileio.write_json(fileio.join(self.out, STATS_JSON), document)
        fileio.delete([details_path])
        return Outcome(summary=stats.summary(counts, len(i.dumps)))


def run(options: BuildQueriesOptions, beam_argv: list[str]) -> int:
    """``wit build-queries``: exit 0 done; 2 bad input or settings before any work; a failed run raises
    StageFailed (exit 1) and leaves no queries file."""
    return run_stage(BuildQueriesStage(options), beam_argv)
