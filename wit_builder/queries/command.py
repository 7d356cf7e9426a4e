"""``wit build-queries``: stage 1 as a :class:`~wit_builder.beam.launcher.Stage`; ``run_stage`` owns the sequence
(checks, ``--out``, the pipeline, the counts, the summary line, the exit code)."""

from __future__ import annotations

from schemas.queries import STATS_JSON
from wit_builder.beam import fileio
from wit_builder.beam.launcher import Outcome, Pipeline, Stage, run_stage
from wit_builder.core.errors import StageFailed
from wit_builder.queries import stats
from wit_builder.queries.options import OPTIONS, BuildQueriesOptions
from wit_builder.queries.pipeline import TEXT_CACHE, BuildQueries
from wit_builder.queries.wikidump import DumpInput, dump_inputs
from wit_builder.queries.wordnet import wordnet_candidates

__all__ = ["OPTIONS", "BuildQueriesStage", "run"]


class BuildQueriesStage(Stage):
    """Stage 1: dumps (+ pageviews, WordNet) -> queries.parquet, queries.txt, stats.json."""

    name = "build-queries"
    namespace = stats.NAMESPACE
    count_names = stats.COUNT_NAMES
    options: BuildQueriesOptions

    def __init__(self, options: BuildQueriesOptions) -> None:
        super().__init__(options)
        self.dumps: list[DumpInput] = []
        self.pageviews: list[str] = []
        self.wordnet: list[tuple[str, float]] = []

    def prepare(self) -> list[str]:
        """Resolve ``--dump`` (paired with the multistream indexes beside them), ``--pageviews`` and read
        WordNet; FileNotFoundError / WordNetError name the flag. Returns one line per dump."""
        o = self.options
        self.dumps = dump_inputs(fileio.expand_patterns(list(o.dump), what="--dump"), fileio.exists)
        if not self.dumps:
            raise FileNotFoundError(f"--dump {list(o.dump)!r} names only multistream index files, no dump")
        self.pageviews = fileio.expand_patterns(o.pageviews, what="--pageviews") if o.pageviews else []
        self.wordnet = wordnet_candidates(o.wordnet_dir) if o.wordnet_dir else []
        return [f"dump {d.path}" + (f" (multistream, index {d.index})" if d.index else "") for d in self.dumps]

    def build(self, pipeline: Pipeline) -> None:
        _ = pipeline | "BuildQueries" >> BuildQueries(self.dumps, self.out, self.options, self.pageviews, self.wordnet)

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
        inputs = [d.path for d in self.dumps] + [d.index for d in self.dumps if d.index] + self.pageviews
        sha256 = {path: fileio.sha256_file(path) for path in inputs}
        document = stats.stats_document(self.options, self.dumps, self.pageviews, counts, details, sha256, seconds)
        fileio.write_json(fileio.join(self.out, STATS_JSON), document)
        fileio.delete([details_path])
        return Outcome(summary=stats.summary(counts, len(self.dumps)))


def run(options: BuildQueriesOptions, beam_argv: list[str]) -> int:
    """``wit build-queries``: exit 0 done; 2 bad input or settings before any work; a failed run raises
    StageFailed (exit 1) and leaves no queries file."""
    return run_stage(BuildQueriesStage(options), beam_argv)
