"""What a record becomes: the reasons of a Rejection, and the error class of an unreadable pool file."""

from __future__ import annotations

from wit_builder.core.errors import EXIT_USAGE, InputError, known_names
from wit_builder.pairs.readers.records import BAD_REASONS, FILTER_REASONS, PoolFormatError, Rejection


def test_a_reason_is_a_filter_or_bad_not_both() -> None:
    assert not set(FILTER_REASONS) & set(BAD_REASONS)
    assert [Rejection(r, "f", 0).is_bad for r in FILTER_REASONS] == [False] * len(FILTER_REASONS)
    assert [Rejection(r, "f", 0).is_bad for r in BAD_REASONS] == [True] * len(BAD_REASONS)


def test_pool_format_error_is_an_input_error() -> None:
    """The launcher maps it to one line and exit 2 before work; a runner's error text is searched for its name."""
    error = PoolFormatError("pool.txt: cannot tell the pool format from the name; pass --pool-format")
    assert isinstance(error, InputError) and error.exit_code == EXIT_USAGE
    assert "PoolFormatError" in known_names()
