"""Column checks of a table before any work (stage 3's pairs input here; stage 2's pool tables are checked in
tests/pairs/readers/test_tables.py)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from schemas.pairs import PAIRS
from wit_builder.core.table_checks import ColumnTypeError, check_pairs_schema


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
