"""Stage 2's inputs, found and checked before any work (the launcher makes each error one line and exit 2),
and the queries' entries as the workers load them.

Files are read through ``wit_builder.beam.fileio`` (Beam's ``FileSystems``), so gs://, s3:// and hdfs:// inputs
work like local ones.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from schemas.queries import LANG_METADATA, QUERIES_PARQUET, SEGMENTER_METADATA
from schemas.queries import STATS_JSON as QUERIES_STATS_JSON
from wit_builder.beam import fileio
from wit_builder.core import errors
from wit_builder.core import languages as wikipedia_languages
from wit_builder.core.balance import ENGLISH
from wit_builder.pairs.match_rules import entries_column
from wit_builder.pairs.match_rules import validate as validate_entries
from wit_builder.pairs.matcher import sorted_entries_array
from wit_builder.pairs.readers.formats import check_pool_file
from wit_builder.pairs.readers.layouts import PoolOptions


@dataclass(frozen=True)
class QueriesFile:
    """The queries a run matches in one language: stage 1's ``queries.parquet``, its sha256 (the workers' cache
    tag: a changed file is loaded again), the match rule that picks its column (``wit_builder.pairs.match_rules``)
    and the language of its queries (a Wikipedia code)."""

    path: str
    sha256: str
    match_rule: str
    lang: str = ENGLISH


@dataclass(frozen=True)
class QuerySet:
    """Every language's queries of a run, one file per language, sorted by language; with ``sizes`` (distinct
    entries of each file) the query ids are one range per language: language i's ids start at
    ``sum(sizes[:i])`` (entries sorted within a language, languages in code order). ``languages`` are the
    languages captions are kept in (``--languages``, else every file's)."""

    files: tuple[QueriesFile, ...]
    sizes: tuple[int, ...]
    languages: tuple[str, ...]
    routing: bool = True  # False: every caption against the one file, whatever its language (--no-language-routing)

    @property
    def match_rule(self) -> str:
        """The rule every file's entries are matched under (one per run)."""
        return self.files[0].match_rule

    @property
    def langs(self) -> tuple[str, ...]:
        """The files' languages, in id order."""
        return tuple(f.lang for f in self.files)

    @property
    def tag(self) -> str:
        """The workers' cache tag: a changed file or rule is loaded again."""
        return (";".join(f"{f.lang}={f.path}#{f.sha256}" for f in self.files)
                + f"#{self.match_rule}#{'routed' if self.routing else 'any'}")


@dataclass(frozen=True)
class PairsInputs:
    """What a run of stage 2 reads, found and checked before any work (``BuildPairsStage.resolve``)."""

    queries: QuerySet             # every language's queries file the pairs are matched against
    query_count: int              # their rows (queries), all languages
    pool_files: tuple[str, ...]   # every pool file, sorted, each one's format and columns checked
    pool: PoolOptions             # how they are read (``PoolFileOptions.reader_options``)
    buckets: int = 256            # uid buckets of the shuffle: --shuffle-buckets, else batches.buckets_for


def queries_path(given: str) -> str:
    """The queries file ``--queries`` names: stage 1's folder (its ``queries.parquet``) or the file itself.
    FileNotFoundError saying what is missing, once (``--queries q/queries.parquet`` is that file, not a folder
    holding another); ValueError for a path that is not a regular file (a named pipe)."""
    path = given if given.endswith(".parquet") else fileio.join(given, QUERIES_PARQUET)
    if not fileio.exists(path) or fileio.local_path_or_none(path) is not None and os.path.isdir(path):
        where = "not found" if path == given else f"holds no {QUERIES_PARQUET}"
        raise FileNotFoundError(f"--queries {given}: {where}; run 'wit build-queries' first or fix --queries")
    fileio.check_regular_file(path, "--queries")
    return path


def check_entries(path: str, match_rule: str) -> int:
    """The number of queries in ``path`` (rows); ValueError naming the first entry ``match_rule`` cannot use
    (``wit_builder.pairs.match_rules.validate``) or the missing column."""
    entries = _entries(path, match_rule)
    validate_entries(entries.to_pylist(), match_rule, path)
    return len(entries)


def pool_files(patterns: Iterable[str], options: PoolOptions) -> list[str]:
    """Every pool file of ``--pool`` (paths or globs), sorted; each one's format and columns checked
    (``readers.formats.check_pool_file``: a wrong format, a missing or mistyped column fails here, before any work).
    Raises FileNotFoundError for a pattern that matches no file, ``PoolFormatError`` for a file that cannot be
    read as configured."""
    files = fileio.expand_patterns(patterns, "pool")
    for path in files:
        check_pool_file(path, fileio.open_read, options)
    return files


def load_entries(queries: QueriesFile | QuerySet) -> pa.Array:
    """The matcher's sorted distinct entries as a string array: query id i is element i (a query set's
    languages one after another, ``QuerySet.sizes`` long)."""
    files = queries.files if isinstance(queries, QuerySet) else (queries,)
    parts = [sorted_entries_array(_entries(f.path, f.match_rule)) for f in files]
    return pa.concat_arrays(parts) if parts else pa.array([], pa.string())


def distinct_entries(path: str, match_rule: str) -> int:
    """The number of distinct entries of a queries file (its range of query ids)."""
    return len(pc.unique(_entries(path, match_rule)))


def folder_language(folder: str, path: str) -> tuple[str, str | None]:
    """(language, segmenter) of a stage 1 output folder: queries.parquet's ``wit.lang`` metadata, else its ``lang``
    column (one value), else English (CLIP's queries predate the column); the segmenter stage 1 recorded
    (``wit.segmenter`` metadata, else stats.json's ``parameters``/``details.segmenter``), or None where it recorded
    none. ValueError naming the file when its ``lang`` column holds several languages."""
    table = fileio.read_parquet(path)
    metadata = table.schema.metadata or {}
    lang = ENGLISH
    if LANG_METADATA.encode() in metadata:
        lang = metadata[LANG_METADATA.encode()].decode()
    elif "lang" in table.column_names:
        langs = set(table.column("lang").to_pylist())
        if len(langs) > 1:
            raise ValueError(f"{path}: queries of several languages ({', '.join(sorted(map(str, langs)))}); "
                             "build one queries folder per language")
        lang = str(next(iter(langs), ENGLISH))
    stats_path = fileio.join(path.rsplit("/", 1)[0], QUERIES_STATS_JSON)  # beside the file (--queries may name it)
    segmenter = metadata[SEGMENTER_METADATA.encode()].decode() if SEGMENTER_METADATA.encode() in metadata else None
    if segmenter is None and fileio.exists(stats_path):
        with fileio.open_read(stats_path) as f:
            document = json.loads(f.read())
        for part in ("parameters", "details"):
            value = document.get(part, {}).get("segmenter") if isinstance(document.get(part), dict) else None
            segmenter = segmenter or (str(value) if value else None)
    return lang, segmenter


def check_segmenter(folder: str, lang: str, recorded: str | None, ours: str) -> None:
    """UsageError naming both segmenters when stage 1 made ``folder``'s queries with another segmenter than the
    one stage 2 splits ``lang`` captions with (queries and captions must split the same way); a folder that
    recorded none (made before segmentation existed) is taken as it is."""
    if recorded is not None and recorded != ours:
        raise errors.UsageError(f"--queries {folder}: its {lang!r} queries were made with segmenter {recorded}, "
                                f"this installation segments captions with {ours}; rebuild the queries with "
                                "'wit build-queries' here, or install the segmenter they were made with")


def check_identifiable(folder: str, lang: str, identified: Collection[str]) -> None:
    """UsageError when captions can never be routed to ``folder``'s queries: their language ``lang`` is no
    Wikipedia code (naming the nearest, as ``--languages`` does), or one the language ID model never gives a
    caption (``identified``; e.g. ``simple``, Simple English, whose captions are labelled ``en``)."""
    if lang in identified:
        return
    near = wikipedia_languages.nearest(lang)
    if near == lang:
        raise errors.UsageError(f"--queries {folder}: its queries are in {lang!r}, a language the language ID model "
                                "never gives a caption, so no caption could be routed to them; leave the folder out, "
                                "or match every caption against it alone with --no-language-routing")
    raise errors.UsageError(f"--queries {folder}: its language {lang!r} is no Wikipedia language code"
                            f"{f' (did you mean {near!r}?)' if near else ''}, so no caption could be routed to its "
                            "queries; rebuild them with 'wit build-queries', or match every caption against them "
                            "alone with --no-language-routing")


def check_languages(found: Sequence[tuple[str, str]], wanted: Sequence[str]) -> tuple[str, ...]:
    """The languages captions are kept in, from (language, folder) of every ``--queries`` folder and the
    ``--languages`` list (empty: every folder's language). UsageError naming both folders of a language given
    twice, or a wanted language no folder holds."""
    seen: dict[str, str] = {}
    for lang, folder in found:
        if lang in seen:
            raise errors.UsageError(f"--queries {seen[lang]} and {folder} are both {lang!r} queries; give one "
                                    "folder per language")
        seen[lang] = folder
    missing = [lang for lang in wanted if lang not in seen]
    if missing:
        raise errors.UsageError(f"--languages {','.join(missing)}: no --queries folder holds "
                                f"{'that language' if len(missing) == 1 else 'those languages'}; the folders hold "
                                f"{', '.join(f'{k} ({v})' for k, v in sorted(seen.items()))}: build the missing "
                                f"queries with 'wit build-queries --wiki {missing[0]}.wikipedia' and add them with "
                                "--queries, or leave the language out of --languages")
    return tuple(sorted(wanted)) if wanted else tuple(sorted(seen))


def _entries(path: str, match_rule: str) -> pa.Array:
    """Every entry of the queries file at ``path`` in the column ``match_rule`` matches with, as stored (a string
    array)."""
    table = fileio.read_parquet(path)
    column = table.column(entries_column(table, match_rule)).combine_chunks()
    return column.cast(pa.string()) if column.type != pa.string() else column
