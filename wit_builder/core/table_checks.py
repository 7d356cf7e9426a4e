"""Column checks of a table before any work: names present once, types the stage can read.

Shared by stage 2 (pool tables: url and caption columns) and stage 3 (its pairs input: ``uid``,
``url``, ``caption``, ``queries``). Each check raises ``ColumnTypeError`` naming the file, the column
and the type found, so a wrong input fails in seconds with a clear message instead of deep in a
pipeline (or, for a duplicated name, with the second column silently winning).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import pyarrow as pa

from wit_builder.core.errors import InputError


class ColumnTypeError(InputError):
    """A table whose columns cannot be read as required (missing, duplicated or of the wrong type)."""


TypeRule = tuple[str, Callable[[pa.DataType], bool]]  # (what the message calls it, predicate)


def _is_text(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        return _is_text(t.value_type)
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _is_text_or_binary(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        return _is_text_or_binary(t.value_type)
    return _is_text(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t)


def _is_text_list(t: pa.DataType) -> bool:
    return (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_list_view(t)) and _is_text(t.value_type)


TEXT: TypeRule = ("string", _is_text)
TEXT_OR_BINARY: TypeRule = ("string or UTF-8 binary", _is_text_or_binary)
TEXT_LIST: TypeRule = ("list<string>", _is_text_list)
INTEGER: TypeRule = ("integer", pa.types.is_integer)


def check_columns(path: str, schema: pa.Schema, required: Mapping[str, TypeRule],
                  optional: Mapping[str, TypeRule] | None = None, hints: Mapping[str, str] | None = None) -> None:
    """Raise ColumnTypeError unless every ``required`` column is present once with a type its rule accepts.

    ``optional`` columns are checked only when present. ``hints`` maps a column to the option that names it
    (e.g. ``{"url": "--url-col"}``), added to the message of a missing column.
    """
    names = list(schema.names)
    hints = hints or {}
    for column, rule in {**required, **(optional or {})}.items():
        count = names.count(column)
        if count == 0:
            if column not in required:
                continue
            shown = ", ".join(repr(n) for n in names[:20]) + (", ..." if len(names) > 20 else "")
            hint = f"; name the right one with {hints[column]}" if column in hints else ""
            raise ColumnTypeError(f"{path}: no column {column!r} (columns: {shown}){hint}")
        if count > 1:
            raise ColumnTypeError(f"{path}: column {column!r} appears {count} times; which one is meant is "
                                  "ambiguous (rename or drop the duplicates)")
        found = schema.field(column).type
        if not rule[1](found):
            raise ColumnTypeError(f"{path}: column {column!r} has type {found}, expected {rule[0]}")


def check_header(path: str, names: Sequence[str], columns: Sequence[tuple[str, str]]) -> list[int]:
    """Indices of ``columns`` ((name, option flag) pairs) in a text header; raises ColumnTypeError as above."""
    indices = []
    for column, flag in columns:
        count = list(names).count(column)
        if count == 0:
            shown = ", ".join(repr(n) for n in list(names)[:20])
            raise ColumnTypeError(f"{path}: no column {column!r} (columns: {shown}); name the right one with {flag}")
        if count > 1:
            raise ColumnTypeError(f"{path}: column {column!r} appears {count} times in the header; which one is "
                                  "meant is ambiguous")
        indices.append(list(names).index(column))
    return indices


# Stage 3's input: what build-pairs writes (schemas.pairs.PAIRS); matched_queries came later, so optional.
PAIRS_REQUIRED: dict[str, TypeRule] = {"uid": TEXT, "url": TEXT, "caption": TEXT, "queries": TEXT_LIST}
PAIRS_OPTIONAL: dict[str, TypeRule] = {"matched_queries": TEXT_LIST, "source_record": INTEGER}


def check_pairs_schema(path: str, schema: pa.Schema) -> None:
    """Raise ColumnTypeError unless ``schema`` (of a pairs parquet at ``path``) can feed ``wit download``."""
    check_columns(path, schema, PAIRS_REQUIRED, PAIRS_OPTIONAL)


def check_pairs_input(path: str, schema: pa.Schema) -> None:
    """``wit download``'s check of any url table: ``url`` present once as text; ``uid``, ``caption``,
    ``queries`` and ``matched_queries`` checked when present (a plain url/caption table has no uid or queries).
    Raises ColumnTypeError naming the file, the column and the type."""
    check_columns(path, schema, {"url": TEXT},
                  {"uid": TEXT, "caption": TEXT, "queries": TEXT_LIST, "matched_queries": TEXT_LIST})
