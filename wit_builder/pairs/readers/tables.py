"""Table pool files: parquet, jsonl and csv/tsv (each optionally gzipped but parquet), read record by record;
and their column checks before any work (:func:`check_table`).

TSV is tab-separated with no quoting (the IANA ``text/tab-separated-values`` rule: a field holds no tab or
newline, and a ``"`` is an ordinary character), so every line after the header is one record. CSV follows
RFC 4180 (quoted fields may hold commas, quotes and newlines). A UTF-8 byte-order mark is skipped. Headerless
tables (CC3M, CC12M) name their columns by 0-based position (:class:`~wit_builder.pairs.readers.layouts.Layout`).
A bad row is reported with its row (or line) number and skipped; a file cut short is one ``truncated_file``.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import zlib
from collections.abc import Iterator
from typing import BinaryIO, cast

import pyarrow as pa
import pyarrow.parquet as pq

from wit_builder.core.table_checks import TEXT_OR_BINARY, ColumnTypeError, check_columns, check_header
from wit_builder.pairs.readers.clean import judge
from wit_builder.pairs.readers.layouts import PoolOptions
from wit_builder.pairs.readers.records import Candidate, PoolFormatError, Rejection


def read_table(path: str, fh: BinaryIO, fmt: str, options: PoolOptions) -> Iterator[Candidate | Rejection]:
    """Every record of the table ``fh`` (``fmt`` one of parquet, jsonl, csv, tsv) as a Candidate or a Rejection.

    Raises PoolFormatError when its columns are missing or of the wrong type (``check_table`` says so first).
    """
    if fmt == "parquet":
        yield from _read_parquet(path, fh, options)
    elif fmt == "jsonl":
        yield from _read_jsonl(path, _maybe_gunzip(fh), options)
    elif fmt == "tsv":
        yield from _read_tsv(path, _maybe_gunzip(fh), options)
    else:
        yield from _read_csv(path, _maybe_gunzip(fh), options)


def _maybe_gunzip(fh: BinaryIO) -> BinaryIO:
    """``fh`` itself, or a gzip reader over it when it starts with the gzip magic bytes."""
    head = fh.read(2)
    fh.seek(0)
    return cast(BinaryIO, gzip.GzipFile(fileobj=fh, mode="rb")) if head == b"\x1f\x8b" else fh


def _read_parquet(path: str, fh: BinaryIO, options: PoolOptions) -> Iterator[Candidate | Rejection]:
    """Rows of the url and caption columns, 8,192 at a time; a file Arrow cannot read is one report."""
    row = 0
    try:
        parquet = pq.ParquetFile(fh)
        check_schema(path, parquet.schema_arrow, options)
        for batch in parquet.iter_batches(batch_size=8192, columns=[options.url_col, options.caption_col]):
            urls = column_as_text(batch.column(0))
            captions = column_as_text(batch.column(1))
            for url, caption in zip(urls, captions, strict=True):
                if isinstance(url, bytes) or isinstance(caption, bytes):
                    yield Rejection("non_utf8", path, row, "binary column value is not UTF-8")
                else:
                    yield judge(url, caption, None, options, path, row)
                row += 1
    except PoolFormatError:
        raise
    except (pa.ArrowException, OSError, ValueError) as e:
        yield Rejection("unreadable_file" if row == 0 else "truncated_file", path, row, f"{type(e).__name__}: {e}")


def column_as_text(column: pa.Array) -> list[object]:
    """Python values of a url/caption column; binary values decode as UTF-8 or stay bytes (reported)."""
    if pa.types.is_dictionary(column.type):  # a dictionary of binary values decodes like the plain column
        column = column.dictionary_decode()
    values = column.to_pylist()
    if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type) or pa.types.is_binary_view(column.type):
        out: list[object] = []
        for value in values:
            try:
                out.append(value.decode("utf-8") if value is not None else None)
            except UnicodeDecodeError:
                out.append(value)
        return out
    return values


def _read_jsonl(path: str, fh: BinaryIO, options: PoolOptions) -> Iterator[Candidate | Rejection]:
    """One JSON object per line (blank lines skipped); bad lines are reported with their 0-based numbers."""
    line_no = 0
    try:
        for line_no, line in enumerate(fh):
            if line_no == 0 and line.startswith(codecs.BOM_UTF8):
                line = line[len(codecs.BOM_UTF8):]
            if not line.strip():
                continue
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as e:
                yield Rejection("non_utf8", path, line_no, str(e)[:300])
                continue
            try:
                doc = json.loads(text, object_pairs_hook=_Object.of)
            except ValueError as e:
                yield Rejection("malformed_json", path, line_no, str(e)[:300])
                continue
            if not isinstance(doc, _Object):  # every JSON object is one (the hook)
                yield Rejection("malformed_json", path, line_no, f"a line holds a {type(doc).__name__}, not an object")
                continue
            repeated = doc.repeated
            twice = [c for c in (options.url_col, options.caption_col) if c in repeated]
            if twice:
                yield Rejection("malformed_record", path, line_no, f"line {line_no + 1}: key {twice[0]!r} appears "
                                f"{repeated[twice[0]]} times in one object; which one is meant is ambiguous")
                continue
            url, caption = doc.get(options.url_col), doc.get(options.caption_col)
            if (wrong := _wrong_type(url, caption, options)) is not None:
                yield Rejection("wrong_type", path, line_no, wrong)
                continue
            yield judge(url, caption, None, options, path, line_no)
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        yield Rejection("truncated_file", path, line_no + 1, f"{type(e).__name__}: {e}")


class _Object(dict):
    """A JSON object as ``json.loads`` builds it (``object_pairs_hook``), with the keys it holds more than once:
    ``repeated`` maps each to its number of occurrences (RFC 8259 leaves the meaning of a repeated name open;
    Python keeps the last one silently)."""

    repeated: dict[str, int]

    @classmethod
    def of(cls, pairs: list[tuple[str, object]]) -> _Object:
        obj = cls(pairs)
        obj.repeated = {}
        if len(obj) != len(pairs):
            keys = [k for k, _ in pairs]
            obj.repeated = {k: keys.count(k) for k in set(keys) if keys.count(k) > 1}
        return obj


def _wrong_type(url: object, caption: object, options: PoolOptions) -> str | None:
    """Why a jsonl record's url/caption cannot be text (a number, a list, an object), or None."""
    for column, value in ((options.url_col, url), (options.caption_col, caption)):
        if value is not None and not isinstance(value, str):
            return f"column {column!r} holds a {type(value).__name__}, not a string"
    return None


def _column_indices(path: str, header: list[str] | None, options: PoolOptions) -> tuple[int, int]:
    """0-based (url, caption) positions: from the header's names, or the positions themselves without one."""
    if not options.header:
        return int(options.url_col), int(options.caption_col)
    try:
        url_index, caption_index = check_header(
            path, header or [], ((options.url_col, "--url-col"), (options.caption_col, "--caption-col"))
        )
    except ColumnTypeError as e:
        raise PoolFormatError(str(e)) from e
    return url_index, caption_index


def _read_tsv(path: str, fh: BinaryIO, options: PoolOptions) -> Iterator[Candidate | Rejection]:
    """One record per line, split on tabs, no quoting; bad lines are reported with their line numbers."""
    row_no = 0
    line_no = 0
    try:
        lines = iter(fh)
        header = None
        if options.header:
            first = next(lines, None)
            if first is None:
                return
            line_no = 1
            header = first.removeprefix(codecs.BOM_UTF8).rstrip(b"\r\n").decode("utf-8", "replace").split("\t")
        url_index, caption_index = _column_indices(path, header, options)
        needed = max(url_index, caption_index)
        for raw in lines:
            line_no += 1
            if line_no == 1:
                raw = raw.removeprefix(codecs.BOM_UTF8)
            fields = raw.rstrip(b"\r\n").split(b"\t")
            if len(fields) <= needed:
                yield Rejection("malformed_record", path, row_no,
                                f"line {line_no}: {len(fields)} field(s), column {needed} needed")
            else:
                try:
                    url, caption = fields[url_index].decode("utf-8"), fields[caption_index].decode("utf-8")
                except UnicodeDecodeError:
                    yield Rejection("non_utf8", path, row_no, f"line {line_no}: undecodable bytes")
                else:
                    yield judge(url, caption, None, options, path, row_no)
            row_no += 1
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        yield Rejection("truncated_file", path, row_no, f"line {line_no + 1}: {type(e).__name__}: {e}")


def _read_csv(path: str, fh: BinaryIO, options: PoolOptions) -> Iterator[Candidate | Rejection]:
    """RFC 4180 rows (quoted fields may span lines); bad rows are reported with the line they end on."""
    # surrogateescape keeps reading past undecodable bytes; rows holding them are reported below.
    text = io.TextIOWrapper(fh, encoding="utf-8-sig", errors="surrogateescape", newline="")
    rows = csv.reader(text)
    row_no = 0
    try:
        header = next(rows, None) if options.header else None
        if options.header and header is None:
            return
        url_index, caption_index = _column_indices(path, header, options)
        while True:
            try:
                fields = next(rows)
            except StopIteration:
                return
            except csv.Error as e:
                yield Rejection("malformed_record", path, row_no, f"line {rows.line_num}: {str(e)[:300]}")
                row_no += 1
                continue
            if len(fields) <= max(url_index, caption_index):
                yield Rejection("malformed_record", path, row_no,
                                f"line {rows.line_num}: {len(fields)} field(s), column "
                                f"{max(url_index, caption_index)} needed")
            elif not _is_utf8(fields[url_index]) or not _is_utf8(fields[caption_index]):
                yield Rejection("non_utf8", path, row_no, f"line {rows.line_num}: undecodable bytes")
            else:
                yield judge(fields[url_index], fields[caption_index], None, options, path, row_no)
            row_no += 1
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        yield Rejection("truncated_file", path, row_no, f"{type(e).__name__}: {e}")


def _is_utf8(value: str) -> bool:
    """False for text holding surrogate escapes (the csv reader's stand-ins for undecodable bytes)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# ---- checks run before any work ----

def check_table(path: str, fh: BinaryIO, fmt: str, options: PoolOptions) -> None:
    """Raise PoolFormatError naming the file unless the table has its url and caption columns once each, with
    text types: parquet from the footer, jsonl from the first 1,000 objects, csv/tsv from the header line."""
    if fmt == "parquet":
        try:
            schema = pq.ParquetFile(fh).schema_arrow
        except (pa.ArrowException, OSError) as e:
            raise PoolFormatError(f"{path}: not a readable parquet file ({e})") from e
        check_schema(path, schema, options)
        return
    stream = _maybe_gunzip(fh)
    if fmt == "jsonl":
        _check_jsonl_head(path, stream, options)
        return
    if not options.header:
        return
    if fmt == "tsv":
        first = stream.readline().removeprefix(codecs.BOM_UTF8).rstrip(b"\r\n")
        header = first.decode("utf-8", "replace").split("\t") if first else []
    else:
        header = next(csv.reader(io.TextIOWrapper(stream, encoding="utf-8-sig", errors="replace", newline="")), [])
    _column_indices(path, header, options)


def check_schema(path: str, schema: pa.Schema, options: PoolOptions) -> None:
    """Raise PoolFormatError unless ``schema`` (a parquet file's) has the url and caption columns once each,
    of a text or binary type."""
    try:
        check_columns(path, schema, {options.url_col: TEXT_OR_BINARY, options.caption_col: TEXT_OR_BINARY},
                      hints={options.url_col: "--url-col", options.caption_col: "--caption-col"})
    except ColumnTypeError as e:
        raise PoolFormatError(str(e)) from e


def _check_jsonl_head(path: str, stream: BinaryIO, options: PoolOptions) -> None:
    """The first 1,000 lines: the first object must name the columns. A repeated url/caption key or a value that
    is not a string is a bad record of its line (reported by the reader wherever it is), not a refused file."""
    for line_no, line in enumerate(stream):
        if line_no >= 1000:
            break
        try:
            doc = json.loads(line.removeprefix(codecs.BOM_UTF8), object_pairs_hook=list)
        except ValueError:
            continue
        if not isinstance(doc, list) or (doc and not isinstance(doc[0], tuple)):
            continue
        _column_indices(path, list(dict.fromkeys(k for k, _ in doc)), options)  # the first object names the columns
        return
    raise PoolFormatError(f"{path}: no JSON object in the first lines; is this a jsonl file?")
