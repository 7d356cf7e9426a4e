"""The stage's form of the readers' answers: :class:`CandidateBatch`, the candidates of up to ``BATCH_ROWS``
records in Arrow columns with those records' rejections, and :func:`clean_columns`, the pair rule
(:func:`wit_builder.pairs.readers.clean.judge`) applied column-wise where that is exact. Parquet files are
cleaned column by column (:func:`parquet_batches`); other formats are read record by record and gathered
(:func:`wit_builder.pairs.readers.formats.read_pool_batches`). The tests hold the two paths equal.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from wit_builder.pairs.readers.clean import judge
from wit_builder.pairs.readers.layouts import PoolOptions
from wit_builder.pairs.readers.records import Candidate, PoolFormatError, Rejection
from wit_builder.pairs.readers.tables import check_schema, column_as_text

BATCH_ROWS = 262_144  # records per CandidateBatch: per-batch costs (Arrow kernels, lookups) amortized

# The vectorized form of clean_pair's fast path, in RE2 (Arrow's regex engine): clean._PLAIN_URL, anchored.
_PLAIN_HOST_RE2 = r"https?://[a-z0-9_-]+(?:\.[a-z0-9_-]+)*"
_PLAIN_URL_RE2 = rf"^{_PLAIN_HOST_RE2}(?:[/?][^#\\\x00-\x20\x7f]*)?$"
_ADD_SLASH_RE2 = rf"^({_PLAIN_HOST_RE2})(\?|$)"  # a bare host, or a host and a query: "/" goes after the host
# Python's str.split() whitespace among ASCII characters: \t \n \v \f \r, \x1c-\x1f and the space.
_ASCII_SPACE_RUN_RE2 = "[\t-\r\x1c-\x1f ]+"


@dataclass(frozen=True)
class CandidateBatch:
    """The candidates of up to ``BATCH_ROWS`` records of one pool file, in columns, and those records' rejections.

    Row ``i`` is ``Candidate(urls[i], captions[i], source_file, records[i], page_urls[i], raw_captions[i])``;
    every record of the span is either a row or one of ``rejections`` (``read_pool_file``'s per-record answer).
    """

    source_file: str
    records: pa.Array  # int64, the candidates' source_record
    urls: pa.Array  # string, normalized
    captions: pa.Array  # string, cleaned, non-empty
    raw_captions: pa.Array  # string, as read
    page_urls: pa.Array  # string, null for tables
    rejections: tuple[Rejection, ...] = ()

    def __len__(self) -> int:
        return len(self.records)

    def candidates(self) -> Iterator[Candidate]:
        """The rows as Candidate objects (for tests and the per-record path)."""
        columns = (self.urls, self.captions, self.records, self.page_urls, self.raw_captions)
        for url, caption, record, page_url, raw in zip(*(c.to_pylist() for c in columns), strict=True):
            yield Candidate(url, caption, self.source_file, record, page_url, raw)

    @staticmethod
    def of(path: str, items: list[Candidate | Rejection]) -> CandidateBatch:
        """A batch of per-record answers (``read_pool_file``'s items)."""
        found = [c for c in items if isinstance(c, Candidate)]
        return CandidateBatch(
            path, pa.array([c.source_record for c in found], pa.int64()),
            pa.array([c.url for c in found], pa.string()), pa.array([c.caption for c in found], pa.string()),
            pa.array([c.caption if c.raw_caption is None else c.raw_caption for c in found], pa.string()),
            pa.array([c.page_url for c in found], pa.string()),
            tuple(r for r in items if isinstance(r, Rejection)))


def parquet_batches(path: str, fh: BinaryIO, options: PoolOptions, rows: int) -> Iterator[CandidateBatch]:
    """The parquet file ``fh`` in batches of up to ``rows`` records, cleaned column-wise; a file Arrow cannot
    read is one ``unreadable_file`` (or, after some rows, ``truncated_file``). Raises PoolFormatError as
    ``check_schema`` does."""
    row = 0
    try:
        parquet = pq.ParquetFile(fh)
        check_schema(path, parquet.schema_arrow, options)
        for batch in parquet.iter_batches(batch_size=rows, columns=[options.url_col, options.caption_col]):
            yield clean_columns(path, row, batch.column(0), batch.column(1), options.max_url_length)
            row += batch.num_rows
    except PoolFormatError:
        raise
    except (pa.ArrowException, OSError, ValueError) as e:
        reason = "unreadable_file" if row == 0 else "truncated_file"
        yield CandidateBatch.of(path, [Rejection(reason, path, row, f"{type(e).__name__}: {e}")])


def _as_string(column: pa.Array) -> pa.Array | None:
    """A text column as ``string``; None for binary columns (their values may not be UTF-8)."""
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    if pa.types.is_string(column.type):
        return column
    if pa.types.is_large_string(column.type) or pa.types.is_string_view(column.type):
        return column.cast(pa.string())
    return None


def clean_columns(path: str, first_record: int, raw_urls: pa.Array, raw_captions: pa.Array,
                  max_url_length: int) -> CandidateBatch:
    """``judge`` over table columns (record numbers from ``first_record``), vectorized where that is exact.

    A row takes the column-wise path when its URL is ASCII in ``_PLAIN_URL``'s form and shorter than the
    limit and its caption is ASCII with a word: then ``clean_pair`` reduces to adding a missing "/" after the
    host and folding ASCII whitespace runs (Python's ``str.split`` set). Every other row (non-ASCII, a URL to
    normalize or resolve, a rejection) goes through ``judge`` itself. The tests hold the two paths equal.
    """
    urls, captions = _as_string(raw_urls), _as_string(raw_captions)
    if urls is None or captions is None:  # binary columns: the per-record path decodes and reports them
        url_values, caption_values = column_as_text(raw_urls), column_as_text(raw_captions)
        items = [Rejection("non_utf8", path, first_record + i, "binary column value is not UTF-8")
                 if isinstance(u, bytes) or isinstance(c, bytes)
                 else judge(u, c, None, PoolOptions(max_url_length=max_url_length), path, first_record + i)
                 for i, (u, c) in enumerate(zip(url_values, caption_values, strict=True))]
        return CandidateBatch.of(path, items)
    folded = pc.utf8_trim(pc.replace_substring_regex(captions, _ASCII_SPACE_RUN_RE2, " "), " ")
    fast = pc.and_(pc.and_(pc.string_is_ascii(urls), pc.string_is_ascii(captions)),
                   pc.and_(pc.match_substring_regex(urls, _PLAIN_URL_RE2),
                           pc.and_(pc.less(pc.binary_length(urls), max_url_length),
                                   pc.greater(pc.binary_length(folded), 0))))
    fast_rows = fast.fill_null(False).to_numpy(zero_copy_only=False)
    fast_index = np.flatnonzero(fast_rows)
    slow_index = np.flatnonzero(~fast_rows)
    parts = []
    if len(fast_index):
        fixed = pc.replace_substring_regex(urls.take(fast_index), _ADD_SLASH_RE2, r"\1/\2", max_replacements=1)
        parts.append((fast_index, fixed, folded.take(fast_index), captions.take(fast_index)))
    rejections: list[Rejection] = []
    if len(slow_index):
        options = PoolOptions(max_url_length=max_url_length)
        found: list[Candidate] = []
        for i, url, caption in zip(slow_index.tolist(), urls.take(slow_index).to_pylist(),
                                   captions.take(slow_index).to_pylist(), strict=True):
            judged = judge(url, caption, None, options, path, first_record + i)
            if isinstance(judged, Candidate):
                found.append(judged)
            else:
                rejections.append(judged)
        if found:
            parts.append((np.array([c.source_record - first_record for c in found], np.int64),
                          pa.array([c.url for c in found], pa.string()),
                          pa.array([c.caption for c in found], pa.string()),
                          pa.array([c.raw_caption for c in found], pa.string())))
    if not parts:
        empty = pa.array([], pa.string())
        return CandidateBatch(path, pa.array([], pa.int64()), empty, empty, empty, empty, tuple(rejections))
    index = np.concatenate([p[0] for p in parts])
    order = pa.array(np.argsort(index, kind="stable"))  # record order, as read_pool_file yields them
    column = [pa.concat_arrays([p[k] for p in parts]).take(order) for k in (1, 2, 3)]
    return CandidateBatch(path, pa.array(index[order.to_numpy()] + first_record, pa.int64()), column[0], column[1],
                          column[2], pa.nulls(len(index), pa.string()), tuple(rejections))
