"""Stage 1's counts, its ``stats.json`` and summary line, and why a run has nothing to build from, as pure
functions (``command.BuildQueriesStage.finish`` and ``pipeline._WriteQueries`` call them).

Every count is data counted by the Beam frame (``CountingDoFn.count``/``judge``, summed by ``WriteCounts``
into ``OUT/_counts.json``): :data:`COUNT_NAMES` are stats.json's ``counts``, zeros included. What is not a count
travels in the details file (:data:`DETAILS_JSON`, :func:`details_document`): the first rejected pages per
reason and the traffic source with its per-file table. :func:`stats_document` puts the two together.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

from schemas import stats as stats_schema
from schemas.queries import QUERIES_PARQUET, QUERIES_TXT, SOURCES
from wit_builder.queries import selection as qs
from wit_builder.queries.options import BuildQueriesOptions, parameters
from wit_builder.queries.pages import BAD_PAGE_REASONS, SKIP_REASONS, RejectedPage
from wit_builder.queries.pageviews import PageviewError, Traffic
from wit_builder.queries.wikidump import DumpInput

NAMESPACE = "build_queries"  # of the Beam counters (monitoring only)
# counted per range by pipeline._ExtractPages (besides SKIP_REASONS)
PAGE_COUNTS = ("pages_read", "articles", "articles_without_text", "dump_ranges", "total_tokens")
PAGEVIEW_COUNTS = ("pageview_rows", "pageview_lines_malformed")  # counted per file by pipeline._ReadPageviewFile
SELECTION_KINDS = ("eligible", "selected", "already_taken")
SELECTION_COUNTS = tuple(f"{kind}_{source}" for source in SOURCES for kind in SELECTION_KINDS)
COUNT_NAMES = (*PAGE_COUNTS, *SKIP_REASONS, *PAGEVIEW_COUNTS, *SELECTION_COUNTS, "queries")
# what the summary line calls bad records: pages, ranges and pageview lines that could not be read
BAD_RECORDS = (*BAD_PAGE_REASONS, "dump_ranges_empty", "pageview_lines_malformed")
REJECTED_EXAMPLES = 20  # rejected pages kept per reason in stats.json (the smallest by file, offset and page id)
DETAILS_JSON = "_build_queries_details.json"  # written by the pipeline, merged into stats.json, then removed


def no_text_message(dumps: Sequence[str], counts: Mapping[str, int],
                    rejected: Mapping[str, Sequence[RejectedPage]]) -> str:
    """Why there is nothing to build queries from: every page rejected (the counts and the first rejected page,
    by file, offset and page id), or no main-namespace article at all. ``counts``: the page counts so far."""
    read = counts.get("pages_read", 0)
    bad = {r: counts.get(r, 0) for r in BAD_PAGE_REASONS}
    if read and sum(bad.values()) and counts.get("articles", 0) == 0:
        first = min(example for examples in rejected.values() for example in examples)
        reason = next(r for r, examples in rejected.items() if first in examples)
        listed = ", ".join(f"{n} {r}" for r, n in bad.items() if n)
        return (f"every page of the dumps {list(dumps)} was rejected ({read} pages read: {listed}); the first, page "
                f"id {first[2]} {first[3]!r} in {first[0]} at byte {first[1]}, for {reason}: {first[4]}")
    others = ", ".join(f"{counts.get(r, 0)} {r}" for r in ("pages_not_main_namespace", "pages_redirect")
                       if counts.get(r))
    return (f"no main-namespace article text in the dumps {list(dumps)} ({read} pages read"
            f"{': ' + others if others else ''}): nothing to build queries from")


def check_pageview_rows(files: Mapping[str, Mapping[str, int]], traffic: Traffic | None) -> None:
    """Raise PageviewError when pageview files were given (``traffic`` not None) but none of their rows is for
    the chosen project and sites; ``files``: path -> its tally (``rows``, ``other``, ...)."""
    if traffic is not None and not sum(f["rows"] for f in files.values()):
        raise PageviewError(
            f"no row of the pageview files {sorted(files)} is for {traffic.wiki} "
            f"({', '.join(sorted(traffic.sites))}): their {sum(f['other'] for f in files.values())} rows "
            f"are other projects or sites; titles would be ranked by nothing (check --wiki)"
        )


def selection_counts(eligible: Mapping[str, int], summary: Mapping[str, qs.SourceSummary]) -> dict[str, int]:
    """``eligible_<source>``, ``selected_<source>``, ``already_taken_<source>`` for every source, and
    ``queries`` (every selected query): what selection hands the frame to count."""
    counts = {f"{kind}_{source}": int(n) for source in SOURCES for kind, n in (
        ("eligible", eligible.get(source, 0)), ("selected", summary[source].selected),
        ("already_taken", summary[source].already_taken))}
    return counts | {"queries": sum(summary[source].selected for source in SOURCES)}


def details_document(rejected: Mapping[str, Iterable[RejectedPage]], traffic: Traffic | None,
                     files: Mapping[str, Any], language: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What the pipeline hands to stats.json besides counts: the rejected pages (kept examples per reason,
    sorted, as dicts), the traffic source (``inlinks``, or ``pageviews`` with the project, sites and per-file
    tallies) and the language (``lang``, ``segmenter``, ``distinct_unigrams``, the applied ``budgets``)."""
    return {
        "language": dict(language or {}),
        "rejected_pages": {
            reason: [dict(zip(("path", "offset", "page_id", "title", "why"), e, strict=True)) for e in sorted(examples)]
            for reason, examples in sorted(rejected.items())
        },
        "traffic": {"source": "inlinks"} if traffic is None else {
            "source": "pageviews", "wiki": traffic.wiki, "sites": sorted(traffic.sites), "files": dict(files),
        },
    }


def source_table(counts: Mapping[str, int], budgets: Mapping[str, int]) -> dict[str, dict[str, int]]:
    """Per source (SOURCES' order): its eligible / selected / already taken counts and its applied budget."""
    return {source: {kind: counts.get(f"{kind}_{source}", 0) for kind in SELECTION_KINDS} | {"budget": budgets[source]}
            for source in SOURCES}


def input_paths(dumps: Sequence[DumpInput], pageviews: Sequence[str]) -> list[str]:
    """stats.json's inputs in order: the dumps, their multistream indexes, the pageview files."""
    return [d.path for d in dumps] + [d.index for d in dumps if d.index] + list(pageviews)


def stats_document(options: BuildQueriesOptions, dumps: Sequence[DumpInput], pageviews: Sequence[str],
                   counts: Mapping[str, int], details: Mapping[str, Any], sha256: Mapping[str, str | None],
                   seconds: float) -> dict[str, Any]:
    """stats.json in the declared layout (``schemas/stats.py``): ``counts`` as the frame counted them, the
    inputs (:func:`input_paths`, each with its ``sha256``, a pageview file with the rows that counted), the settings
    (:func:`~wit_builder.queries.options.parameters`) and in ``details`` what :func:`details_document` gave,
    the thresholds, the requested and applied budgets and the per-source table. Raises StatsError."""
    language = details.get("language", {})
    budgets = language.get("budgets") or options.budgets.per_source()
    files = details["traffic"].get("files", {})
    return stats_schema.envelope(
        "build-queries",
        inputs=[stats_schema.input_entry(p, sha256.get(p), rows=files.get(p, {}).get("rows"))
                for p in input_paths(dumps, pageviews)],
        parameters=parameters(options),
        counts=counts,
        outputs=[stats_schema.output_entry(QUERIES_PARQUET, counts["queries"]),
                 stats_schema.output_entry(QUERIES_TXT, counts["queries"])],
        seconds=seconds,
        details={"lang": language.get("lang"), "segmenter": language.get("segmenter"),
                 "distinct_unigrams": language.get("distinct_unigrams"),
                 "wordnet_dir": options.wordnet_dir, "omw_files": list(options.omw_file),
                 "title_traffic": details["traffic"]["source"],
                 "traffic": details["traffic"], "rejected_pages": details["rejected_pages"],
                 "parse_budget": {"seconds": options.reading.parse_timeout,
                                  "memory_bytes": options.reading.parse_memory_bytes},
                 "thresholds": asdict(options.thresholds),
                 "budgets": {"requested": options.budgets.requested() | {"max_queries": options.budgets.max_queries},
                             "applied": budgets},
                 "sources": source_table(counts, budgets)},
    )


def summary(counts: Mapping[str, int], dumps: int) -> list[str]:
    """The parts of the stage's summary line: queries per source, articles, dumps, bad records skipped."""
    per_source = ", ".join(f"{source} {counts[f'selected_{source}']}" for source in SOURCES)
    return [f"{counts['queries']:,} queries ({per_source}) from {counts['articles']:,} articles in {dumps} dump(s)",
            f"{sum(counts[reason] for reason in BAD_RECORDS):,} bad records skipped"]
