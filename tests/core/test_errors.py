"""Our errors (wit_builder.core.errors): one base class, exit codes by class, and the message of one of ours found
in an exception, its causes, or a runner's text (the names matched there derived from the classes)."""

from __future__ import annotations

from wit_builder.core import errors
from wit_builder.download.raw_shards import RawInputError
from wit_builder.queries.wikidump import DumpError


def test_known_error_messages():
    assert errors.known_error_message(ValueError("x")) is None
    # A runner's text names a stage's class: known once its module is loaded (as its stage loads it).
    assert issubclass(RawInputError, errors.InputError) and "RawInputError" in errors.known_names()
    runner_text = RuntimeError("Pipeline failed:\nTraceback (most recent call last):\n  File \"x.py\", line 1\n"
                               "wit_builder.download.raw_shards.RawInputError: 00001.parquet: row 3: "
                               "unknown status 'exploded' "
                               "[while running 'Finalize/ReadRawShards']\n")
    assert errors.known_error_message(runner_text) == "00001.parquet: row 3: unknown status 'exploded'"
    wrapped = errors.StageFailed("b.xml: truncated")
    assert errors.known_error_message(wrapped) == "b.xml: truncated" and errors.exit_code(wrapped) == 1
    assert errors.exit_code(DumpError("x")) == 2 and errors.exit_code(DumpError("x"), during_run=True) == 1


def test_names_matched_in_a_runners_text_come_from_the_classes():
    class ShardOfTestsError(errors.InputError):
        """A stage's own error class, defined after the launcher was imported."""

    assert {"WitError", "UsageError", "InputError", "StageFailed", "ShardOfTestsError",
            "FileNotFoundError"} <= errors.known_names()
    text = RuntimeError("Traceback (most recent call last):\n  File \"w.py\", line 9\n"
                        "tests.core.test_errors.ShardOfTestsError: s.tar: member 4 is cut\n")
    assert errors.known_error_message(text) == "s.tar: member 4 is cut"
    assert errors.known_error_message(RuntimeError("Traceback...\nMysteryError: s.tar: x\n")) is None


def test_one_of_ours_is_found_behind_the_errors_that_wrap_it():
    try:
        try:
            raise errors.InputError("a.parquet: row 2: no url [while running 'Pairs/Read']")
        except errors.InputError as inner:
            raise RuntimeError("the runner's wrapper") from inner
    except RuntimeError as outer:
        assert errors.known_error_message(outer) == "a.parquet: row 2: no url"
    assert errors.known_error_message(FileNotFoundError("--pool 'x*' matches no file")) == "--pool 'x*' matches no file"
    assert errors.is_ours(errors.StageFailed("x")) and not errors.is_ours(ZeroDivisionError("a bug"))


def test_exit_codes_by_class_and_moment():
    assert issubclass(errors.UsageError, errors.WitError) and issubclass(errors.InputError, errors.WitError)
    assert issubclass(errors.InputError, ValueError)  # a stage's checks may raise either
    assert errors.exit_code(errors.UsageError("x")) == errors.EXIT_USAGE == 2
    assert errors.exit_code(errors.InputError("x")) == 2  # found before any work
    assert errors.exit_code(errors.InputError("x"), during_run=True) == errors.EXIT_FAILED == 1
    assert errors.exit_code(errors.StageFailed("x")) == 1
    assert errors.exit_code(FileNotFoundError("x")) == 2


def test_stable_text_drops_memory_addresses_only():
    assert errors.stable_text("cannot identify image file <_io.BytesIO object at 0x7f3a9c1b2e80>") == \
        "cannot identify image file <_io.BytesIO>"
    assert errors.stable_text("offset 0x1f in <foo>") == "offset 0x1f in <foo>"


def test_a_full_disk_names_the_path():
    import errno

    full = errors.disk_full("out/00001.tar", OSError(errno.ENOSPC, "No space left on device"))
    assert isinstance(full, errors.DiskFull) and full.exit_code == errors.EXIT_FAILED
    assert str(full).startswith("no space left on the device while writing out/00001.tar; free space")
    quota = errors.disk_full("o/x", OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert quota is not None and str(quota).startswith("disk quota exceeded while writing o/x")
    assert errors.disk_full("o/x", OSError(errno.EACCES, "Permission denied")) is None
