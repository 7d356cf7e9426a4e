"""Column checks of a table before any work (stage 3's url tables and stage 2's pairs layout here; stage 2's pool
tables are checked in tests/pairs/readers/test_tables.py)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from schemas.pairs import PAIRS
from wit_builder.core.table_checks import ColumnTypeError, check_pairs_input, check_pairs_schema


def test_pairs_schema_check_for_download() -> None:
    check_pairs_schema("pairs.parquet", PAIRS)
    bad = pa.schema([("uid", pa.int64()), ("url", pa.string()), ("caption", pa.string()),
                     ("queries", pa.list_(pa.string()))])
    with pytest.raises(ColumnTypeError, match=r"pairs.parquet: column 'uid' has type int64, expected string"):
        check_pairs_schema("pairs.parquet", bad)
    bad = pa.schema([("uid", pa.string()), ("url", pa.string()), ("caption", pa.string()), ("queries", pa.string())])
    with pytest.raises(ColumnTypeError, match=r"column 'queries' has type string, expected list<string>"):
        check_pairs_schema("p.parquet", bad)
    with pytest.raises(ColumnTypeError, match=r"no column 'queries'"):
        check_pairs_schema("p.parquet", pa.schema([("uid", pa.string()), ("url", pa.string()),
                                                   ("caption", pa.string())]))


def test_downloads_input_check_needs_a_url_and_checks_the_rest_when_present() -> None:
    """``check_pairs_input``, what ``wit download`` runs on every footer: a plain url table is enough."""
    check_pairs_input("urls.parquet", pa.schema([("url", pa.string())]))
    check_pairs_input("pairs.parquet", PAIRS)
    check_pairs_input("d.parquet", pa.schema([("url", pa.dictionary(pa.int32(), pa.string())),
                                              ("queries", pa.large_list(pa.large_string()))]))
    with pytest.raises(ColumnTypeError, match=r"^urls.parquet: no column 'url' \(columns: 'link'\)$"):
        check_pairs_input("urls.parquet", pa.schema([("link", pa.string())]))
    with pytest.raises(ColumnTypeError, match=r"^u.parquet: column 'url' appears 2 times; which one is meant"):
        check_pairs_input("u.parquet", pa.schema([("url", pa.string()), ("url", pa.string())]))
    with pytest.raises(ColumnTypeError, match=r"^u.parquet: column 'caption' has type int64, expected string$"):
        check_pairs_input("u.parquet", pa.schema([("url", pa.string()), ("caption", pa.int64())]))
    with pytest.raises(ColumnTypeError, match=r"column 'matched_queries' has type string, expected list<string>"):
        check_pairs_input("u.parquet", pa.schema([("url", pa.string()), ("matched_queries", pa.string())]))
