"""``wit build-pairs``: the stage as the launcher runs it (``wit_builder.beam.launcher.run_stage``): checks before
work, a rerun's clean-up, the pipeline (``wit_builder.pairs.pipeline.BuildPairs``), and stats.json from the counts.

Exit codes: 0; 1 when the run failed; 2 for bad settings or inputs found before any work; 3 (``EXIT_EMPTY``)
when the pool held no record or no candidate matched any query (the summary line and stats.json still come,
and a line on stderr says which and what to check).
"""

from __future__ import annotations

import itertools
import json

from schemas.pairs import BALANCE_PNG, PAIRS_GLOB, QUERY_COUNTS_PARQUET, STATS_JSON
from wit_builder.beam import fileio
from wit_builder.beam.launcher import Outcome, Pipeline, Stage, run_stage
from wit_builder.beam.spill import remove_spill
from wit_builder.core import errors, segment
from wit_builder.core.balance import language_caps, scaled_target
from wit_builder.pairs import inputs, stats
from wit_builder.pairs.balance_plot import balance_png
from wit_builder.pairs.batches import buckets_for
from wit_builder.pairs.langid import LanguageIdentifier, model_id
from wit_builder.pairs.match_rules import NORMALIZED
from wit_builder.pairs.options import OPTIONS, BuildPairsOptions
from wit_builder.pairs.pipeline import NAMESPACE, BuildPairs

__all__ = ["OPTIONS", "BuildPairsStage", "run"]


class BuildPairsStage(Stage[BuildPairsOptions, inputs.PairsInputs]):
    """Stage 2 for :func:`~wit_builder.beam.launcher.run_stage`."""

    name = "build-pairs"
    namespace = NAMESPACE
    count_names = stats.COUNTS

    def resolve(self) -> inputs.PairsInputs:
        """Every queries folder (present, its entries usable by the rule, its language and segmenter known; one
        folder per language), the languages kept, the language ID model, and every pool file (format and
        columns) checked."""
        o = self.options
        pool = o.pool_files.reader_options()
        found: list[tuple[inputs.QueriesFile, int, int]] = []
        for folder in o.queries:
            path = inputs.queries_path(folder)
            rows = inputs.check_entries(path, o.match_rule)
            lang, segmenter = inputs.folder_language(folder, path)
            if o.match_rule == NORMALIZED:
                inputs.check_segmenter(folder, lang, segmenter, segment.segmenter_id(lang))
            found.append((inputs.QueriesFile(path, fileio.sha256_file(path), o.match_rule, lang), rows,
                          inputs.distinct_entries(path, o.match_rule)))
        kept = inputs.check_languages([(f.lang, folder) for (f, _, _), folder in zip(found, o.queries, strict=True)],
                                      o.language.codes)
        found.sort(key=lambda item: item[0].lang)
        if not o.language.routing and len(found) > 1:
            raise errors.UsageError(f"--no-language-routing matches every caption against one --queries folder, "
                                    f"not {len(found)}; give one, or route by language")
        identifier = LanguageIdentifier(o.language.min_language_score)  # loads here, or the error names the package
        if o.language.routing:
            for (f, _, _), folder in zip(found, o.queries, strict=True):
                inputs.check_identifiable(folder, f.lang, identifier.languages)
        files = inputs.pool_files(o.pool, pool)
        query_set = inputs.QuerySet(tuple(f for f, _, _ in found), tuple(n for _, _, n in found), kept,
                                    o.language.routing)
        buckets = o.shuffle_buckets or buckets_for(sum(fileio.size(f) for f in files))
        return inputs.PairsInputs(query_set, sum(rows for _, rows, _ in found), tuple(files), pool, buckets)

    def announce(self) -> list[str]:
        """The line saying what the run will do."""
        o, balance, i = self.options, self.options.balance, self.inputs
        return [f"build-pairs: {len(i.pool_files)} pool file(s), {i.query_count:,} queries "
                f"({', '.join(i.queries.langs)}; "
                f"{'keeping ' + ', '.join(i.queries.languages) if i.queries.routing else 'every caption'}), "
                f"balance={balance.mode} "
                f"cap={balance.per_query_cap} target={balance.target} seed={balance.seed} match_rule={o.match_rule} "
                f"shuffle_buckets={i.buckets}"]

    def clean_rerun(self) -> list[str]:
        """A rerun replaces the previous output: stale files of another run must not mix in."""
        out = self.out
        named = [fileio.join(out, name) for name in (STATS_JSON, QUERY_COUNTS_PARQUET, stats.BAD_RECORDS_JSONL,
                                                     BALANCE_PNG)]
        fileio.delete([*fileio.match(fileio.join(out, PAIRS_GLOB)), *filter(fileio.exists, named)])
        remove_spill(out)  # a killed run's spilled buckets (object by object on an object store)
        return []

    def after_run(self) -> None:
        """The spilled buckets (``wit_builder.beam.spill``) are only for the run: removed whether it succeeded
        or not."""
        remove_spill(self.out)

    def build(self, pipeline: Pipeline) -> None:
        """``BuildPairs`` on ``pipeline`` (a ``beam.Pipeline``: Beam itself stays in ``pipeline.py``)."""
        o, i = self.options, self.inputs
        _ = pipeline | "BuildPairs" >> BuildPairs(list(i.pool_files), i.queries, o.out, i.pool, o.balance,
                                                  o.rows_per_file, i.buckets,
                                                  o.language.min_language_score, o.language.language_caps)

    def finish(self, counts: dict[str, int], seconds: float) -> Outcome:
        """balance.png, then stats.json (last: its presence marks a complete output) from ``counts``; exit 3 when
        the pool held no record or nothing matched, saying which."""
        o, i, out = self.options, self.inputs, self.out
        query_counts = fileio.read_parquet(fileio.join(out, QUERY_COUNTS_PARQUET))
        matched = query_counts.column("matched").to_numpy()
        kept = query_counts.column("kept").to_numpy()

        pair_files = sorted(path.rsplit("/", 1)[-1] for path in fileio.match(fileio.join(out, PAIRS_GLOB)))
        with fileio.open_read(fileio.join(out, stats.BAD_RECORDS_JSONL)) as f:
            first_bad = [json.loads(line) for line in itertools.islice(f, stats.FIRST_BAD_RECORDS)]
        langs = query_counts.column("lang").to_pylist()
        # the kept languages' caps, as the pipeline's (batches.id_targets): a filtered language has none
        by_lang = {lang: matched[[x == lang for x in langs]] for lang in i.queries.langs if lang in i.queries.languages}
        caps = language_caps(by_lang, o.balance.per_query_cap, o.language.language_caps)
        targets = {lang: scaled_target(cap, o.balance.oversample) for lang, cap in caps.items()}
        fileio.write_bytes(fileio.join(out, BALANCE_PNG),
                           balance_png(matched, kept, o.balance.per_query_cap, o.balance.target, langs=langs,
                                       caps=caps))
        language = {"languages": list(i.queries.languages), "query_languages": list(i.queries.langs),
                    "language_routing": i.queries.routing,
                    "language_id": model_id(), "min_language_score": o.language.min_language_score,
                    "language_caps": o.language.language_caps,
                    "segmenter": segment.segmenter_id() if o.match_rule == NORMALIZED else None}
        document = stats.document(
            queries=[(f.path, f.sha256, n) for f, n in zip(i.queries.files, self._rows(), strict=True)],
            pool_files=i.pool_files,
            parameters=stats.parameters(o.balance, i.pool, o.rows_per_file, o.match_rule, language), counts=counts,
            pair_files=pair_files, max_matched=int(matched.max(initial=0)), max_kept=int(kept.max(initial=0)),
            first_bad=first_bad, seconds=seconds,
            languages=stats.languages(counts, query_counts, caps, targets))
        fileio.write_json(fileio.join(out, STATS_JSON), document)
        if counts["records"] == 0:
            return Outcome(stats.summary(counts), errors.EXIT_EMPTY, error=stats.empty_pool_error(len(i.pool_files)))
        if counts["candidates"] == 0:
            return Outcome(stats.summary(counts), errors.EXIT_EMPTY, error=stats.no_candidate_error(counts))
        if counts["matched"] == 0:
            return Outcome(stats.summary(counts), errors.EXIT_EMPTY, error=stats.NO_MATCH_ERROR)
        return Outcome(stats.summary(counts))

    def _rows(self) -> list[int]:
        """Rows (queries) of each language's queries file, in the query set's order."""
        return [fileio.read_parquet(f.path).num_rows for f in self.inputs.queries.files]


def run(options: BuildPairsOptions, beam_argv: list[str]) -> int:
    """Run ``wit build-pairs``; the exit status."""
    return run_stage(BuildPairsStage(options), beam_argv)
