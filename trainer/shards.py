"""Shards on disk or behind a URL: resolving ``--shards`` to shard URLs, their sample counts (``sizes.json``),
the match rule they were built under, and their raw samples (tar members grouped by key).

Shards are stage 4's final shards or img2dataset's raw ones, on local disk or behind gs://, s3:// and http(s)://
(webdataset's gopen pipes). Used by the loader (``trainer.data``), the load-time balance (``trainer.balance``),
the tokenizer's captions (``trainer.train``) and retrieval evaluation (``trainer.eval.retrieval``).
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re
import stat
import string
from collections.abc import Callable, Iterator
from typing import Any

import webdataset as wds
from webdataset import tariterators

from schemas.finalize import SIZES_JSON, STATS_JSON
from trainer.tarstream import group_samples, tar_members
from wit_builder.core.errors import InputError

log = logging.getLogger(__name__)

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")
TEXT_KEYS = ("txt",)
REMOTE_PREFIXES = ("gs://", "s3://", "http://", "https://", "pipe:", "htgs://", "hf://", "ais://")


class DataError(InputError):
    """Bad shards or an impossible request (what, which file, what to do)."""


# ---- shard lists and sizes ----

def _pipe_url(url: str) -> str:
    # webdataset has no s3 handler; the AWS CLI streams the object to stdout, as open_clip's docs recommend.
    return f"pipe:aws s3 cp {url} -" if url.startswith("s3://") else url


MAX_SHARD_URLS = 1_000_000  # the most shards one --shards may name: a mistyped brace range must fail, not fill memory


_INT_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)(?:\.\.-?(\d+))?$")  # braceexpand 0.1.7's own
_CHAR_RANGE = re.compile(r"^([A-Za-z])\.\.([A-Za-z])(?:\.\.-?(\d+))?$")
_ALPHABET = string.ascii_uppercase + string.ascii_lowercase


def _brace_count(pattern: str) -> int:
    """How many names ``braceexpand.braceexpand(pattern)`` yields, computed without expanding: it is not lazy
    (``itertools.product`` holds each range whole before the first name, 10^8 strings for ``{00000..99999999}``).
    Mirrors braceexpand 0.1.7's parser (escapes, nesting, int and char ranges, sequences, literal braces); raises
    ValueError for unbalanced braces, as braceexpand does."""
    count, start, depth, pos = 1, 0, 0, 0
    while pos < len(pattern):
        if pattern[pos] == "\\":
            pos += 2
            continue
        if pattern[pos] == "{":
            start = pos if depth == 0 else start
            depth += 1
        elif pattern[pos] == "}":
            depth -= 1
            if depth == 0:
                inner = _brace_expression_count(pattern[start + 1:pos])
                count *= _brace_count(pattern[start + 1:pos]) if inner is None else inner
        pos += 1
    if depth != 0:
        raise ValueError(f"Unbalanced braces: {pattern!r}")
    return count


def _brace_expression_count(expr: str) -> int | None:
    """Names of one ``{...}``: a range's length, a sequence's sum, None for literal braces (no top-level comma)."""
    ints = _INT_RANGE.match(expr)
    if ints:
        first, last, step = int(ints.group(1)), int(ints.group(2)), int(ints.group(3) or 1) or 1
        return abs(last - first) // step + 1
    chars = _CHAR_RANGE.match(expr)
    if chars:
        first, last = _ALPHABET.index(chars.group(1)), _ALPHABET.index(chars.group(2))
        return abs(last - first) // (int(chars.group(3) or 1) or 1) + 1
    parts, start, depth, pos = [], 0, 0, 0
    while pos < len(expr):
        if expr[pos] == "\\":
            pos += 2
            continue
        depth += {"{": 1, "}": -1}.get(expr[pos], 0)
        if expr[pos] == "," and depth == 0:
            parts.append(expr[start:pos])
            start = pos + 1
        pos += 1
    if depth != 0 or not parts:
        return None
    return sum(_brace_count(part) for part in [*parts, expr[start:]])


def _expand_bounded(spec: str) -> Iterator[str]:
    """webdataset's ``expand_urls`` (``::``-joined parts, ``WDS_`` variables, braces), lazily and bounded:
    DataError naming the pattern once it names more than :data:`MAX_SHARD_URLS` shards (``{00000..99999999}``,
    a digit too many, would be 10^8 strings)."""
    import braceexpand  # webdataset's own dependency; not lazy, hence _brace_count first

    named = 0
    for part in spec.split("::"):
        for _ in range(10):
            last, part = part, wds.shardlists.envsubst(part)
            if part == last:
                break
        try:
            count = _brace_count(part)
        except ValueError:  # braceexpand's UnbalancedBracesError is one
            raise DataError(f"--shards {spec!r}: unbalanced braces in {part!r}; close every '{{' with '}}' (or "
                            "escape it as '\\{')") from None
        if named + count > MAX_SHARD_URLS:
            raise DataError(f"--shards {spec!r} names more than {MAX_SHARD_URLS:,} shards; check its brace "
                            "ranges (a digit too many?)")
        for url in braceexpand.braceexpand(part):
            named += 1
            if named > MAX_SHARD_URLS:
                raise DataError(f"--shards {spec!r} names more than {MAX_SHARD_URLS:,} shards; check its brace "
                                "ranges (a digit too many?)")
            yield url


def resolve_shards(spec: str) -> list[str]:
    """A directory (its *.tar), a local glob, or brace patterns / URLs joined by '::' -> sorted shard URLs.

    Raises DataError for an empty directory, a pattern matching nothing or a missing local file (remote URLs are
    not checked here).
    """
    if os.path.isdir(spec):
        found = sorted(glob.glob(os.path.join(spec, "*.tar")))
        if not found:
            raise DataError(f"shard directory {spec} holds no .tar files; point --shards at stage 4's output")
        return _regular_files(found)
    urls: list[str] = []
    for url in _expand_bounded(spec):
        if url.startswith(REMOTE_PREFIXES):
            urls.append(url)
        elif any(c in url for c in "*?["):
            matched = sorted(glob.glob(url))
            if not matched:
                raise DataError(f"shard pattern {url!r} matches no file")
            urls.extend(matched)
        elif os.path.exists(url):
            urls.append(url)
        else:
            raise DataError(f"shard {url!r} does not exist")
    return _regular_files(urls)


def _regular_files(urls: list[str]) -> list[str]:
    """``urls``, once every local one is a regular file: a named pipe (or socket, device) among the shards would
    block the reader forever, so it is refused by name before any work (remote URLs are files by construction)."""
    for url in urls:
        if url.startswith(REMOTE_PREFIXES) or os.path.isfile(url):
            continue
        mode = os.stat(url).st_mode
        kind = ("a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a folder" if stat.S_ISDIR(mode)
                else "not a regular file")
        raise DataError(f"shard {url!r} is {kind}, not a regular file; name regular .tar files only")
    return urls


def _read_json(url: str) -> Any | None:
    try:
        if url.startswith(REMOTE_PREFIXES):
            with wds.gopen(_pipe_url(url)) as f:
                return json.loads(f.read())
        if os.path.exists(url):
            with open(url, encoding="utf-8") as f:
                return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:  # present but broken: never "no sizes" in silence
        raise DataError(f"{url}: not valid JSON ({e}); rewrite it or remove it") from e
    except Exception as e:  # an absent remote file surfaces as a pipe error: treat it as "no sizes"
        log.debug("cannot read %s: %s", url, e)
    return None


def shard_sizes(shards: list[str]) -> dict[str, int] | None:
    """Samples per shard, from ``sizes.json`` beside the shards (stage 4; open_clip's convention) or else from
    img2dataset's ``{shard}_stats.json`` ("successes"). None when any shard's count is unknown."""
    sizes: dict[str, int] = {}
    by_dir: dict[str, dict] = {}
    for url in shards:
        directory, name = url.rsplit("/", 1) if "/" in url else (".", url)
        if directory not in by_dir:
            sizes_url = f"{directory}/{SIZES_JSON}"
            by_dir[directory] = _checked_sizes(sizes_url, _read_json(sizes_url))
        table = by_dir[directory]
        count = table.get(name, table.get(name.removesuffix(".tar")))
        if count is None:
            stats_url = f"{directory}/{name.removesuffix('.tar')}_stats.json"
            stats = _read_json(stats_url)
            count = stats.get("successes") if isinstance(stats, dict) else None
            if count is not None and not _is_count(count):
                raise DataError(f"{stats_url}: \"successes\" must be a non-negative integer, got {count!r}")
        if count is None:
            return None
        sizes[url] = int(count)
    return sizes


def check_match_rules(shards: list[str]) -> str | None:
    """The one match rule (wit_builder.pairs.match_rules) of the folders the shards come from, read from finalize's
    ``stats.json`` beside them (``details.match_rule``); DataError when two folders differ. Folders without
    a recorded rule (img2dataset output, older runs) are not counted."""
    rules: dict[str, list[str]] = {}
    for directory in sorted({url.rsplit("/", 1)[0] if "/" in url else "." for url in shards}):
        stats = _read_json(f"{directory}/{STATS_JSON}")
        details = stats.get("details") if isinstance(stats, dict) else None
        rule = details.get("match_rule") if isinstance(details, dict) else None
        if rule:
            rules.setdefault(rule, []).append(directory)
    if len(rules) > 1:
        listing = "; ".join(f"{rule}: {', '.join(dirs)}" for rule, dirs in sorted(rules.items()))
        raise DataError(f"the shards mix pairs matched under different match rules ({listing}); "
                        "train on shards of one --match-rule")
    return next(iter(rules), None)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _checked_sizes(url: str, table: Any) -> dict[str, int]:
    """``sizes.json`` must map shard names to non-negative integer counts; anything else names the file."""
    if table is None:
        return {}
    if not isinstance(table, dict):
        raise DataError(f"{url}: expected a JSON object of shard name -> sample count, got a "
                        f"{type(table).__name__}; rewrite it (finalize writes it) or remove it")
    bad = {name: count for name, count in table.items() if not _is_count(count)}
    if bad:
        name, count = next(iter(bad.items()))
        raise DataError(f"{url}: the sample count of {name!r} must be a non-negative integer, got {count!r}"
                        f"{f' (and {len(bad) - 1} more)' if len(bad) > 1 else ''}; rewrite it or remove it")
    return table


# ---- raw samples ----

def raw_samples(urls: Iterator[str], on_error: Callable[[Exception], bool]) -> Iterator[dict]:
    """Grouped tar members (``__key__``, ``__url__``, ``jpg``, ``txt``, ...) of the shards in order.

    A shard that cannot be opened or read on (truncated, a failing pipe) is handed to ``on_error`` and the next
    one follows; the samples read before the error stay. A damaged tar header inside a shard is logged with the
    shard and byte offset and skipped to the next valid header (``trainer.tarstream``): the samples after it
    are read, and the samples next to it carry ``"__damaged__": True`` (a member of one of them was lost).
    """
    for source in tariterators.url_opener(({"url": _pipe_url(u)} for u in urls), handler=on_error):
        url, stream = source["url"], source["stream"]
        try:
            yield from group_samples(_members(stream, url), url)
        except Exception as e:  # a truncated shard, a failing pipe, two members of one sample with one name
            if url not in str(e):  # the handler's message names the shard
                e.args = (f"{url}: {e.args[0] if e.args else type(e).__name__}", *e.args[1:])
            if not on_error(e):
                return
        finally:
            try:
                stream.close()
            except Exception as e:  # a pipe's command failed (gopen checks its exit status on close)
                on_error(e)


def _members(stream: Any, url: str) -> Iterator[tuple[str, bytes] | None]:
    """The shard's (name, data) members, with None where a damaged header was skipped (logged with the shard)."""
    damage: list[tuple[int, str]] = []
    for member in tar_members(stream, lambda offset, message: damage.append((offset, message))):
        yield from _damage_marks(url, damage)
        yield member
    yield from _damage_marks(url, damage)


def _damage_marks(url: str, damage: list[tuple[int, str]]) -> Iterator[None]:
    for offset, message in damage:
        log.warning("%s: %s at byte %d; skipped to the next valid header", url, message, offset)
        yield None
    damage.clear()


def first_member(sample: dict, keys: tuple[str, ...]) -> Any:
    """The first of ``keys`` (member extensions, in order of preference) that the sample holds, else None."""
    return next((sample[k] for k in keys if k in sample), None)


def sample_where(sample: dict) -> str:
    """``shard-url:key``, to name a sample in warnings."""
    return f"{sample.get('__url__', '?')}:{sample.get('__key__', '?')}"
