"""The match rules stage 2 can use, and the check that pairs matched under different rules never mix.

- ``normalized`` (the default): ``wit_builder.core.textnorm`` — text and queries NFKC-normalized, case-folded and
  split into letter/mark/digit tokens; a query matches on token boundaries (``wit_builder.pairs.matcher``).
- ``metaclip``: MetaCLIP 2's rule (v1's on spaced scripts), entries and text as written
  (``wit_builder.pairs.metaclip_rule``).

The rule a build-pairs run used goes into its stats.json (``details.match_rule``) and into every pair
(the ``match_rule`` column of ``schemas.pairs.PAIRS``); finalize and the trainer refuse inputs whose rules
differ (``check_one_rule``), because the same query means a different set of captions under each rule,
and caps or balances computed over a mix would count two different things as one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import pyarrow as pa

from schemas.queries import AS_WRITTEN
from wit_builder.pairs.matcher import QueryMatcher, validate_queries
from wit_builder.pairs.metaclip_rule import MetaClipMatcher, validate_entries

NORMALIZED = "normalized"
METACLIP = "metaclip"
MATCH_RULES: tuple[str, ...] = (NORMALIZED, METACLIP)
DEFAULT_RULE = NORMALIZED
# Under ``metaclip``, a queries table's entries come from this column when it has one (entries as written:
# stage 1 writes it, ``core.segment.written_form``; or MetaCLIP's own metadata list), else from ``query``
# (the normalized, lower-case form of older files, which MetaCLIP's rule then matches only where a caption
# has it in lower case, and never where segmentation put spaces into it).
AS_WRITTEN_COLUMN = AS_WRITTEN


def check_rule(rule: str) -> str:
    """``rule`` itself, or ValueError naming the known rules."""
    if rule not in MATCH_RULES:
        raise ValueError(f"match rule must be one of {', '.join(MATCH_RULES)}, not {rule!r}")
    return rule


def entries_column(table: pa.Table, rule: str) -> str:
    """The column of a queries table whose strings the matcher uses under ``rule``."""
    check_rule(rule)
    if rule == METACLIP and AS_WRITTEN_COLUMN in table.column_names:
        return AS_WRITTEN_COLUMN
    return "query"


def validate(entries: Sequence[object], rule: str, where: str) -> None:
    """Raise ValueError naming the first entry ``rule`` cannot use (normalized form, or non-empty string)."""
    if check_rule(rule) == NORMALIZED:
        validate_queries(entries, where)
    else:
        validate_entries(entries, where)


def make_matcher(entries: Iterable[str], rule: str, lang: str | None = None) -> QueryMatcher | MetaClipMatcher:
    """The automaton for ``rule``; both have ``match(text)``, ``match_batch(texts)`` and ``num_queries``. ``lang``
    (stage 1 queries of that language) makes ``normalized`` segment texts as stage 1 segmented the queries
    (``QueryMatcher``); MetaCLIP's rule matches text as written."""
    return QueryMatcher(entries, lang) if check_rule(rule) == NORMALIZED else MetaClipMatcher(entries)


def check_one_rule(rules_by_source: Mapping[str, Iterable[str | None]], what: str = "inputs") -> str | None:
    """The one match rule shared by every source, or ValueError naming the sources of each rule.

    ``rules_by_source`` maps a source (a file, a folder) to the rules its rows carry; ``None`` means the
    source predates the rule's recording (pairs from before ``match_rule`` existed, matched under the only
    rule there was, ``normalized``). Returns None when no source has any row.
    """
    seen: dict[str, list[str]] = {}
    for source, rules in rules_by_source.items():
        for rule in set(rules):
            seen.setdefault(NORMALIZED if rule is None else rule, []).append(source)
    if len(seen) > 1:
        listing = "; ".join(f"{rule}: {', '.join(sorted(sources)[:3])}"
                            + (f" and {len(sources) - 3} more" if len(sources) > 3 else "")
                            for rule, sources in sorted(seen.items()))
        raise ValueError(f"{what} mix pairs matched under different match rules ({listing}); "
                         "rebuild them with one --match-rule")
    return next(iter(seen), None)
