"""Our match rule against MetaCLIP's on real captions: what each matches, and why ours matches more.

    .venv/bin/python benchmarks/compare_match_rules.py --queries out/queries \\
        [--captions tests/data/laion_captions_10000.parquet] [--samples 6] [--json out.json]

``--queries``: a folder holding stage 1's queries.parquet (``make build-queries``: the gensim enwiki sample
plus WordNet builds 88,039 queries) or the file itself. ``--captions``: a parquet with a ``caption`` (or
LAION's ``TEXT``) column; the default is the 10,000 LAION captions of img2dataset's public test parquet
(tests/data/README.md).

Both rules run with the same entries, stage 1's normalized queries as written (lower case). For each
(caption, query) pair that our rule (``normalized``) matches and MetaCLIP's (``metaclip``) does not, the
cause is the one relaxation of the caption that alone makes MetaCLIP's rule match:

- ``case``: the caption case-folded;
- ``hyphen/apostrophe``: hyphens, dashes and apostrophes (straight and curly) become spaces;
- ``brackets/quotes``: brackets and quotation marks become spaces;
- ``other separator``: every other non-letter/mark/digit character (slash, "&", "+", "|", "_", "#", emoji,
  ...) becomes a space;
- ``unicode``: NFKC (full-width forms, ligatures);
- ``combined``: no single relaxation suffices (e.g. "T-Shirt" for "shirt" needs case and hyphen).

Pairs whose query is one character long are counted apart first (``one-character query``), whatever the
separator, since the question there is whether the query is a query at all. The table is printed in
Markdown, followed by seeded random samples of each cause, so that a reader can judge real from noise.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import re
import sys
import unicodedata
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wit_builder.core.textnorm import is_query_token  # noqa: E402
from wit_builder.pairs.matcher import QueryMatcher  # noqa: E402
from wit_builder.pairs.metaclip_rule import MetaClipMatcher, spaced  # noqa: E402

DEFAULT_CAPTIONS = Path(__file__).resolve().parent.parent / "tests" / "data" / "laion_captions_10000.parquet"

_HYPHENS_APOSTROPHES = re.compile(r"[-\u2010\u2011\u2012\u2013\u2014\u2015'\u2018\u2019\u02bc]")
_BRACKETS_QUOTES = re.compile(r"[()\[\]{}<>\"\u201c\u201d\u201e\u00ab\u00bb\u2039\u203a]")


def _other_separators(text: str) -> str:
    kept = _HYPHENS_APOSTROPHES.pattern[1:-1] + _BRACKETS_QUOTES.pattern[1:-1]
    keep = re.compile(f"[{kept}]")
    return "".join(c if c.isalnum() or unicodedata.category(c)[0] == "M" or c.isspace() or keep.match(c)
                   or c in ",.;:?!`" else " " for c in text)


RELAXATIONS = {
    "case": str.casefold,
    "hyphen/apostrophe": lambda t: _HYPHENS_APOSTROPHES.sub(" ", t),
    "brackets/quotes": lambda t: _BRACKETS_QUOTES.sub(" ", t),
    "other separator": _other_separators,
    "unicode": lambda t: unicodedata.normalize("NFKC", t),
}
CAUSES = ("one-character query", *RELAXATIONS, "combined")


def cause_of(caption: str, query: str) -> str:
    """Why our rule matches ``query`` in ``caption`` where MetaCLIP's does not (see the module docstring)."""
    if len(query) == 1:
        return "one-character query"
    needle = f" {query} "
    for name, relax in RELAXATIONS.items():
        if needle in spaced(relax(caption)):
            return name
    return "combined"


def load_captions(path: str) -> list[str]:
    table = pq.read_table(path)
    column = next((c for c in ("caption", "TEXT", "text") if c in table.column_names), None)
    if column is None:
        raise SystemExit(f"{path}: no caption, TEXT or text column")
    return [c for c in table.column(column).to_pylist() if c]


def load_queries(path: str) -> list[str]:
    p = Path(path)
    return pq.read_table(p / "queries.parquet" if p.is_dir() else p).column("query").to_pylist()


def summarize(matches: list[list[str]]) -> dict[str, int]:
    return {"captions": sum(1 for m in matches if m), "pairs": sum(len(m) for m in matches)}


def compare(captions: list[str], queries: list[str], samples: int, seed: int = 0) -> dict:
    ours = QueryMatcher(queries).match_batch(captions)
    theirs = MetaClipMatcher(queries).match_batch(captions)
    extra: dict[str, list[tuple[str, str]]] = collections.defaultdict(list)
    theirs_only = 0
    for caption, o, t in zip(captions, ours, theirs, strict=True):
        theirs_only += len(set(t) - set(o))
        for query in sorted(set(o) - set(t)):
            extra[cause_of(caption, query)].append((caption, query))
    # The default rule as decided (docs/ARCHITECTURE.md): no one-letter query (textnorm.is_query_token).
    decided = [[q for q in m if " " in q or is_query_token(q)] for m in ours]
    total_extra = sum(len(v) for v in extra.values())
    rng = random.Random(seed)
    return {
        "captions": len(captions),
        "queries": len(queries),
        "normalized": summarize(ours),
        "metaclip": summarize(theirs),
        "normalized_without_one_letter_queries": summarize(decided),
        "metaclip_only_pairs": theirs_only,
        "extra_pairs": total_extra,
        "causes": {c: {"pairs": len(extra[c]), "share": len(extra[c]) / total_extra if total_extra else 0.0,
                       "captions": len({cap for cap, _ in extra[c]}),
                       "top_queries": collections.Counter(q for _, q in extra[c]).most_common(8),
                       "samples": rng.sample(extra[c], min(samples, len(extra[c])))}
                   for c in CAUSES},
    }


def markdown(result: dict) -> str:
    lines = [
        f"{result['captions']:,} captions, {result['queries']:,} queries",
        "",
        "| rule | captions matched | (caption, query) pairs |",
        "|---|---:|---:|",
    ]
    for name in ("metaclip", "normalized", "normalized_without_one_letter_queries"):
        s = result[name]
        lines.append(f"| {name} | {s['captions']:,} | {s['pairs']:,} |")
    lines += ["", f"pairs only MetaCLIP's rule matches: {result['metaclip_only_pairs']:,}", "",
              "| cause of an extra match (ours, not MetaCLIP's) | pairs | share | captions | most frequent queries |",
              "|---|---:|---:|---:|---|"]
    for cause, row in result["causes"].items():
        top = ", ".join(f"{q} {n}" for q, n in row["top_queries"][:5])
        lines.append(f"| {cause} | {row['pairs']:,} | {row['share']:.1%} | {row['captions']:,} | {top} |")
    lines.append(f"| all extra | {result['extra_pairs']:,} | 100% | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", required=True, help="folder of queries.parquet, or the file")
    parser.add_argument("--captions", default=str(DEFAULT_CAPTIONS), help="parquet of real captions")
    parser.add_argument("--samples", type=int, default=6, help="random samples printed per cause")
    parser.add_argument("--json", help="also write the full result here")
    args = parser.parse_args(argv)
    result = compare(load_captions(args.captions), load_queries(args.queries), args.samples)
    print(markdown(result))
    for cause, row in result["causes"].items():
        print(f"\n{cause}:")
        for caption, query in row["samples"]:
            print(f"  {query!r:24} <- {caption[:110]!r}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
