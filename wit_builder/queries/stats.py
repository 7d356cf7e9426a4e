"""Stage 1's joins, failure messages and statistics as pure functions (``wit_builder/queries/pipeline.py`` wires them).

The n-gram, title and WordNet rules themselves are in ``wit_builder.queries.selection``; this module holds what the
pipeline does around them: following redirects for title traffic (:func:`landing_title`), how many candidates
each source keeps before selection (:func:`prune_sizes`), why a run has nothing to build from
(:func:`no_text_message`, :func:`check_pageview_rows`), and the figures of stats.json (:func:`selection_counts`,
:func:`details_document`, :func:`stats_counts`), all computed from the pipeline's own data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from schemas.queries import SOURCES
from wit_builder.queries import selection as qs
from wit_builder.queries.pageviews import PageviewError, Traffic

RejectedPage = tuple[str, int, Any, Any, str]  # (path, byte offset, page id, title, why)
BAD_PAGE_REASONS = ("pages_malformed", "pages_wikitext_rejected", "pages_parse_timeout")
TALLY_NAMES = ("pages_read", "articles", "articles_without_text", "dump_ranges")


def landing_title(title: str, traffic: Iterable[int], redirect_targets: Iterable[str]) -> tuple[str, int] | None:
    """(the title a page's traffic lands on, the traffic): the redirect's target when ``title`` is a redirect
    (the smallest target if a dump names several), else the title itself; None without traffic."""
    total = sum(traffic)
    if not total:
        return None
    targets = sorted(redirect_targets)
    return (targets[0] if targets else title), total


def article_scores(queries: Iterable[str], traffic: Iterable[int]) -> list[tuple[str, int]]:
    """(query, traffic) for each distinct query of a title that is an article (sorted); none for a title that
    only has traffic."""
    total = sum(traffic)
    return [(query, total) for query in sorted(set(queries))]


def with_token_count(token_count: Sequence[int], rows: Iterable[tuple]) -> list[tuple]:
    """Each bigram row with the count of one of its tokens appended (0 when the token was not counted)."""
    count = token_count[0] if token_count else 0
    return [(*row, count) for row in rows]


def short_phrases(candidates: Iterable[qs.Candidate]) -> frozenset[str]:
    """The one- and two-token queries among ``candidates``: the ones whose count can be looked up in pass 2."""
    return frozenset(c.query for c in candidates if c.query.count(" ") <= 1)


def prune_sizes(budgets: Mapping[str, int]) -> dict[str, int]:
    """Source -> how many of its best candidates selection can ever need: its budget plus the budgets of the
    sources before it in SOURCES' order (each source can lose at most as many candidates to earlier sources as
    those took). KeyError for a source without a budget."""
    sizes, total = {}, 0
    for source in SOURCES:
        total += budgets[source]
        sizes[source] = total
    return sizes


def no_text_message(dumps: Sequence[str], tally: Mapping[str, int], rejected: Mapping[str, Sequence[RejectedPage]]) \
        -> str:
    """Why there is nothing to build queries from: every page rejected (the counts and the first rejected page,
    by file, offset and page id), or no main-namespace article at all."""
    read = tally.get("pages_read", 0)
    bad = {r: tally.get(r, 0) for r in BAD_PAGE_REASONS}
    if read and sum(bad.values()) and tally.get("articles", 0) == 0:
        first = min(example for examples in rejected.values() for example in examples)
        reason = next(r for r, examples in rejected.items() if first in examples)
        counts = ", ".join(f"{n} {r}" for r, n in bad.items() if n)
        return (f"every page of the dumps {list(dumps)} was rejected ({read} pages read: {counts}); the first, page "
                f"id {first[2]} {first[3]!r} in {first[0]} at byte {first[1]}, for {reason}: {first[4]}")
    others = ", ".join(f"{tally.get(r, 0)} {r}" for r in ("pages_not_main_namespace", "pages_redirect") if tally.get(r))
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
    """``eligible_<source>``, ``selected_<source>``, ``already_taken_<source>`` for every source."""
    return {f"{k}_{source}": int(n) for source in SOURCES for k, n in (
        ("eligible", eligible.get(source, 0)), ("selected", summary[source].selected),
        ("already_taken", summary[source].already_taken))}


def details_document(tally: Mapping[str, int], total_tokens: int, selection: Mapping[str, int],
                     rejected: Mapping[str, Iterable[RejectedPage]], traffic: Traffic | None,
                     files: Mapping[str, Any]) -> dict[str, Any]:
    """The data-derived figures the pipeline hands to stats.json: counts (the page tally, ``total_tokens``, the
    selection counts), the rejected pages (kept examples per reason, sorted, as dicts) and the traffic source
    (``inlinks``, or ``pageviews`` with the project, sites and per-file tallies)."""
    return {
        "counts": {**{k: int(v) for k, v in sorted(tally.items())}, "total_tokens": int(total_tokens), **selection},
        "rejected_pages": {
            reason: [dict(zip(("path", "offset", "page_id", "title", "why"), e, strict=True)) for e in sorted(examples)]
            for reason, examples in sorted(rejected.items())
        },
        "traffic": {"source": "inlinks"} if traffic is None else {
            "source": "pageviews", "wiki": traffic.wiki, "sites": sorted(traffic.sites), "files": dict(files),
        },
    }


def stats_counts(details: Mapping[str, Any], budgets: Mapping[str, int],
                 skip_reasons: Sequence[str]) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """stats.json's flat ``counts`` and per-source table from :func:`details_document`'s figures: the tally
    names, every skip reason, ``total_tokens``, pageview rows and malformed lines, per source eligible /
    selected / already taken (+ its applied budget in the table), and ``queries`` = all selected."""
    data = details["counts"]
    files = details["traffic"].get("files", {})
    sources = {
        source: {k: data.get(f"{k}_{source}", 0) for k in ("eligible", "selected", "already_taken")}
        | {"budget": budgets[source]}
        for source in SOURCES
    }
    names = (*TALLY_NAMES, *skip_reasons, "total_tokens")
    flat = {name: int(data.get(name, 0)) for name in names}
    flat["pageview_rows"] = sum(f["rows"] for f in files.values())
    flat["pageview_lines_malformed"] = sum(f["malformed"] for f in files.values())
    flat |= {f"{k}_{source}": v for source, table in sources.items() for k, v in table.items() if k != "budget"}
    flat["queries"] = sum(s["selected"] for s in sources.values())
    return flat, sources
