"""Shared helpers of stage 3's tests: pairs files, the fast network flags, reading a raw folder back."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.download import RAW_ROWS

FAST_FLAGS = ["--allow-private-networks", "--timeout", "0.5", "--deadline", "0.8", "--retries", "1",
              "--backoff-base", "0.01", "--backoff-max", "2", "--max-bytes", str(1 << 20), "--threads", "8"]


def write_pairs(path: Path, rows: list[dict]) -> Path:
    """A pairs parquet (uid, url, caption, queries) of ``rows``, in row groups of 5 rows."""
    schema = pa.schema([("uid", pa.string()), ("url", pa.string()), ("caption", pa.string()),
                        ("queries", pa.list_(pa.string()))])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path, row_group_size=5)
    return path


def read_raw(out: Path) -> tuple[list[dict], dict[str, dict[str, bytes]]]:
    """Every parquet row and every tar member of a raw output folder."""
    rows, members = [], {}
    for parquet in sorted(out.glob("*.parquet")):
        table = pq.read_table(parquet)
        assert table.schema.equals(RAW_ROWS, check_metadata=False)
        rows += table.to_pylist()
        with tarfile.open(parquet.with_suffix(".tar")) as tar:
            for m in tar:
                assert m.mtime == 0 and m.uid == 0 and m.mode == 0o644
                key, ext = m.name.split(".", 1)
                members.setdefault(key, {})[ext] = tar.extractfile(m).read()
    return rows, members
