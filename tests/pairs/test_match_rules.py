"""``wit_builder.pairs.match_rules``: entries checked per rule, the matcher of a rule, rules never mixed."""

from __future__ import annotations

import pyarrow as pa
import pytest

from wit_builder.pairs.match_rules import check_one_rule, entries_column, make_matcher, validate
from wit_builder.pairs.matcher import QueryMatcher
from wit_builder.pairs.metaclip_rule import MetaClipMatcher


def test_entries_are_validated_per_rule() -> None:
    validate(["New York", "Classical"], "metaclip", "entries")
    with pytest.raises(ValueError, match="not normalized"):
        validate(["New York"], "normalized", "queries.parquet")
    with pytest.raises(ValueError, match="entry #1"):
        validate(["dog", ""], "metaclip", "entries")
    with pytest.raises(ValueError, match="match rule must be one of"):
        make_matcher(["dog"], "clip")


def test_rules_never_mix() -> None:
    assert check_one_rule({"a.parquet": ["metaclip"], "b.parquet": ["metaclip"]}) == "metaclip"
    assert check_one_rule({"old.parquet": [None], "new.parquet": ["normalized"]}) == "normalized"
    assert check_one_rule({}) is None
    with pytest.raises(ValueError, match=r"metaclip: b\.parquet; normalized: a\.parquet"):
        check_one_rule({"a.parquet": ["normalized"], "b.parquet": ["metaclip"]}, "raw shards")


def test_the_rule_picks_the_column_and_the_matcher() -> None:
    plain = pa.table({"query": ["dog"]})
    written = pa.table({"query": ["new york"], "query_as_written": ["New York"]})
    assert entries_column(plain, "metaclip") == entries_column(written, "normalized") == "query"
    assert entries_column(written, "metaclip") == "query_as_written"
    assert isinstance(make_matcher(["dog"], "normalized"), QueryMatcher)
    assert isinstance(make_matcher(["Dog"], "metaclip"), MetaClipMatcher)
