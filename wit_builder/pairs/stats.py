"""Stage 2's figures as pure functions: the count names, the per-query totals, the bad-records list, the
``stats.json`` document and the summary line, all computed from the pipeline's own data (``wit_builder/pairs/
pipeline.py`` counts, ``wit_builder/pairs/command.py`` writes).

Accounting of ``counts`` (every pool record ends in exactly one of the first kind):
``records`` = filter reasons + bad-record reasons (``bad_records`` of them, the first ``MAX_BAD_RECORDS`` by file
and offset listed in ``bad_records.jsonl``) +
``candidates``; ``candidates`` = ``language_filtered`` + ``no_match`` + ``matched`` (``language_filtered``:
a caption in a language the run does not keep, ``wit_builder.pairs.routing``); ``matched`` = ``duplicates`` +
``unique_pairs``;
``unique_pairs`` = ``kept`` + ``over_cap``. ``matches`` and ``kept_matches`` count (pair, query) links;
``queries``, ``queries_matched``, ``queries_capped`` the rows of ``query_counts.parquet``; ``pair_files`` the
``pairs-*.parquet`` files; ``pool_files`` the files read; ``unsegmented_script`` the candidates holding a
spaceless script no segmenter covers (matched by the textnorm fallback). Per caption language ``lang.CODE.WHAT``
(:func:`language_count`) counts ``candidates``, ``language_filtered``, ``matched`` (before duplicates collapse),
``unique_pairs`` and ``kept``; stats.json's ``details.languages`` gathers them with each language's queries hit and
cap, and closes the accounting per language (``no_match``, ``duplicates``, ``over_cap`` by the equations above).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from schemas import stats as stats_schema
from schemas.pairs import QUERY_COUNTS_PARQUET
from wit_builder.core.balance import BalanceConfig
from wit_builder.pairs.readers.layouts import PoolOptions
from wit_builder.pairs.readers.records import BAD_REASONS, FILTER_REASONS, Rejection

BAD_RECORDS_JSONL = "bad_records.jsonl"
FIRST_BAD_RECORDS = 20  # bad records quoted in stats.json's details
# bad_records.jsonl lists the first this many bad records by (file, offset); counts hold them all, by reason.
# Bounded so that memory does not follow the input: 1M blank TSV lines are 1M bad records.
MAX_BAD_RECORDS = 1000
QUERY_TOTALS = ("queries", "queries_matched", "queries_capped")
# Every count, so that stats.json lists zeros too (the accounting above).
COUNTS: tuple[str, ...] = (
    "pool_files", "records", *FILTER_REASONS, *BAD_REASONS, "bad_records", "candidates", "language_filtered",
    "no_match", "matched", "unsegmented_script",
    "duplicates", "unique_pairs", "matches", "over_cap", "kept", "kept_matches", *QUERY_TOTALS, "pair_files",
)
NO_MATCH_ERROR = "no candidate matched any query; check --caption-col, --pool-format and the queries"


def empty_pool_error(files: int) -> str:
    """The line for a pool that holds no record at all (``counts["records"] == 0``): not a matching problem."""
    return (f"the pool holds no records ({files} file(s) read, 0 records): nothing to match; check --pool "
            "(empty files?)")


def no_candidate_error(counts: dict[str, int]) -> str:
    """The line for a pool whose records were all dropped before matching (``candidates == 0``, ``records > 0``):
    bad or filtered records, not a matching problem; names the largest reasons."""
    reasons = sorted(((counts.get(r, 0), r) for r in (*BAD_REASONS, *FILTER_REASONS)), reverse=True)
    top = ", ".join(f"{reason} {n:,}" for n, reason in reasons[:3] if n)
    hint = " (pool text must be UTF-8: convert it, e.g. iconv -f SHIFT_JIS -t UTF-8)" if counts.get("non_utf8") else ""
    return (f"none of the pool's {counts['records']:,} records is a candidate ({top}); see {BAD_RECORDS_JSONL}"
            f"{hint}, --url-col, --caption-col and --pool-format")


LANGUAGE_PREFIX = "lang."
LANGUAGE_COUNTS = ("candidates", "language_filtered", "matched", "unique_pairs", "kept")
# details.languages' statuses that are the others' differences (the equations of the module's docstring)
LANGUAGE_DERIVED = {"no_match": ("candidates", "language_filtered", "matched"),
                    "duplicates": ("matched", "unique_pairs"), "over_cap": ("unique_pairs", "kept")}


def language_count(lang: str, what: str) -> str:
    """The count name of ``what`` (one of :data:`LANGUAGE_COUNTS`) for captions in ``lang``: ``lang.de.matched``."""
    return f"{LANGUAGE_PREFIX}{lang}.{what}"


def languages(counts: Mapping[str, int], query_counts: Any, caps: Mapping[str, int],
              targets: Mapping[str, int]) -> dict[str, dict[str, int]]:
    """stats.json's ``details.languages``: per caption language (every language seen or queried), its
    :data:`LANGUAGE_COUNTS` and :data:`LANGUAGE_DERIVED`, the distinct queries of that language it hit
    (``queries_hit``), the queries of that language (``queries``), and for a language whose captions the run
    matched (``caps``' keys) the cap used (``cap``) and the stage's target (``target``: the cap times
    ``--oversample``). A language with queries that ``--languages`` filtered has no ``cap``/``target`` (absent:
    nothing of it was capped), only its counts. ``query_counts`` is query_counts.parquet as a table."""
    out: dict[str, dict[str, int]] = {}
    for name, n in counts.items():
        if name.startswith(LANGUAGE_PREFIX):
            lang, _, what = name[len(LANGUAGE_PREFIX):].rpartition(".")
            out.setdefault(lang, dict.fromkeys(LANGUAGE_COUNTS, 0))[what] = int(n)
    for row in out.values():
        for what, (whole, *parts) in LANGUAGE_DERIVED.items():
            row[what] = row[whole] - sum(row[part] for part in parts)
    langs = np.asarray(query_counts.column("lang").to_pylist(), object)
    matched = query_counts.column("matched").to_numpy()
    for lang in sorted(set(langs.tolist())):
        row = out.setdefault(lang, dict.fromkeys(LANGUAGE_COUNTS, 0))
        mine = langs == lang
        row.update(queries=int(mine.sum()), queries_hit=int((matched[mine] > 0).sum()))
        if lang in caps:
            row.update(cap=int(caps[lang]), target=int(targets[lang]))
    return dict(sorted(out.items()))


def query_totals(matched: np.ndarray, target: int | np.ndarray) -> dict[str, int]:
    """The query counts of ``query_counts.parquet``'s ``matched`` column (one int per query): queries, those
    matched at least once, and those matched more than ``target`` times (capped; one target, or one per
    query)."""
    return {"queries": len(matched), "queries_matched": int((matched > 0).sum()),
            "queries_capped": int((matched > target).sum())}


def bad_record_key(rejection: Rejection) -> tuple[str, int, str, str]:
    """The order of ``bad_records.jsonl``: (file, offset, reason, detail)."""
    return rejection.source_file, rejection.source_record, rejection.reason, rejection.detail


def bad_records_jsonl(rejections: Iterable[Rejection]) -> bytes:
    """``bad_records.jsonl``: one JSON object per bad record given (``file``, ``offset``, ``reason``,
    ``detail``), sorted by :func:`bad_record_key` so the bytes do not depend on the runner."""
    rows = sorted((r.source_file, r.source_record, r.reason, r.detail) for r in rejections)
    lines = [json.dumps({"file": f, "offset": o, "reason": reason, "detail": d}, ensure_ascii=False)
             for f, o, reason, d in rows]
    return "".join(line + "\n" for line in lines).encode()


def parameters(balance: BalanceConfig, pool: PoolOptions, rows_per_file: int, match_rule: str,
               language: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """stats.json's ``parameters``: the settings as the run used them (a preset resolved into its columns);
    ``language``: the languages kept, the language ID model and score, the cap rule, the segmenter."""
    return {**(language or {}), "balance": balance.mode, "per_query_cap": balance.per_query_cap, "seed": balance.seed,
            "oversample": balance.oversample, "target": balance.target, "pool_format": pool.fmt,
            "url_col": pool.url_col, "caption_col": pool.caption_col, "max_url_length": pool.max_url_length,
            "rows_per_file": rows_per_file, "header": pool.header,
            "pool_layouts": [[pattern, vars(layout)] for pattern, layout in pool.layouts], "match_rule": match_rule}


def document(*, queries: Sequence[tuple[str, str, int]], pool_files: Sequence[str], parameters: Mapping[str, Any],
             counts: Mapping[str, int], pair_files: Sequence[str], max_matched: int, max_kept: int,
             first_bad: Sequence[dict], seconds: float, languages: Mapping[str, Any] | None = None) -> dict:
    """The ``stats.json`` document (``schemas.stats`` envelope). ``counts`` hold every name of :data:`COUNTS`
    (summed from the pipeline's data); ``pair_files`` are the written files' names; ``max_matched``/``max_kept``
    the largest per-query counts; ``first_bad`` the first bad records of ``bad_records.jsonl``; ``queries`` the
    (path, sha256, rows) of each language's queries file; ``languages`` stats.json's ``details.languages``
    (:func:`languages`). Raises ``schemas.stats.StatsError`` when the document does not follow the layout."""
    return stats_schema.envelope(
        "build-pairs",
        inputs=[*(stats_schema.input_entry(path, sha256, rows=rows) for path, sha256, rows in queries),
                *(stats_schema.input_entry(f) for f in pool_files)],
        parameters=parameters,
        counts=counts,
        outputs=[*(stats_schema.output_entry(name) for name in pair_files),
                 stats_schema.output_entry(QUERY_COUNTS_PARQUET, counts["queries"]),
                 stats_schema.output_entry(BAD_RECORDS_JSONL, min(counts["bad_records"], MAX_BAD_RECORDS))],
        seconds=seconds,
        details={
            "match_rule": parameters["match_rule"],
            "languages": dict(languages or {}),
            "queries": {"max_matched": max_matched, "max_kept": max_kept},
            "pairs": {"file_names": list(pair_files)},
            "bad_records": {"file": BAD_RECORDS_JSONL, "listed": min(counts["bad_records"], MAX_BAD_RECORDS),
                            "first": list(first_bad)},
        },
    )


def summary(counts: Mapping[str, int]) -> list[str]:
    """The parts of the summary line: the record funnel, the bad records, the capped queries."""
    return [f"{counts['records']:,} records -> {counts['candidates']:,} candidates -> {counts['matched']:,} matched "
            f"-> {counts['unique_pairs']:,} unique -> {counts['kept']:,} kept in {counts['pair_files']} file(s)",
            f"{counts['bad_records']:,} bad records", f"{counts['queries_capped']:,} queries capped"]
