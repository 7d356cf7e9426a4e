"""What stage 1's flags name, resolved and checked before any work (no Beam): the dumps paired with the
multistream indexes beside them, the dumps' language (``--wiki`` and each dump's ``<siteinfo>``), the
pageview files, the WordNet lemmas (WordNet 3.0 or an Open Multilingual Wordnet file), and the sketch width
(``--sketch-width``, or chosen from the dumps' size)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from wit_builder.beam import fileio
from wit_builder.core import languages
from wit_builder.core.errors import UsageError
from wit_builder.core.languages import Language
from wit_builder.queries.ngram_sketch import estimated_bigrams, width_for
from wit_builder.queries.options import BuildQueriesOptions
from wit_builder.queries.pageviews import Traffic, _wiki_parts
from wit_builder.queries.wikidump import EMPTY_DUMP, DumpInput, SiteInfo, dump_inputs, read_siteinfo
from wit_builder.queries.wordnet import omw_candidates, wordnet_candidates


@dataclass(frozen=True)
class QueryInputs:
    """What ``--dump``, ``--wiki``, ``--pageviews``, ``--wordnet-dir`` and ``--omw-file`` name, resolved by
    :func:`resolve`."""

    dumps: tuple[DumpInput, ...]               # each dump with the multistream index beside it, or None
    pageviews: tuple[str, ...] = ()            # the pageview files (none: titles rank by incoming links)
    wordnet: tuple[tuple[str, float], ...] = ()  # (query, score) of every WordNet lemma (none without WordNet)
    bigrams: int = 0                           # bigrams the dumps will add, estimated from their size
    sketch_width: int = 0                      # the bigram sketch width to use: --sketch-width, else width_for
    suggested_width: int = 0                   # width_for(bigrams): what --sketch-width should be at least
    language: Language = field(default_factory=lambda: languages.resolve("en"))  # the dumps' language
    traffic: Traffic = field(default_factory=lambda: Traffic("en.wikipedia"))  # --wiki, or the dumps' project
    namespaces: tuple[tuple[int, str], ...] = ()  # the first dump's <siteinfo> namespaces (number, local name)


def _opener(path: str):
    return fileio.open_read(path)


def dump_language(dumps: list[DumpInput], wiki: str | None, read=read_siteinfo) -> tuple[Language, SiteInfo | None]:
    """The one language of ``dumps``: ``--wiki``'s, checked against each dump's ``<siteinfo>``, or, without
    ``--wiki``, the one their siteinfo names. Raises UsageError (before any work) for a dump whose language
    cannot be told, a ``--wiki`` that a siteinfo contradicts, dumps of several languages, an unknown code."""
    chosen = languages.resolve(_wiki_parts(wiki)[0]) if wiki else None
    found: dict[str, Language] = {}
    first: SiteInfo | None = None
    for dump in dumps:
        site = read(dump.path, _opener)
        if site is EMPTY_DUMP:
            continue  # an empty file gives no page: its language does not matter
        first = first or site
        lang = languages.from_siteinfo(site.dbname, site.base) if site else None
        if lang is None:
            if chosen is None:
                said = (f"its <siteinfo> names no Wikipedia (dbname {site.dbname!r}, base {site.base!r})" if site
                        else "it has no <siteinfo> before its first page")
                raise UsageError(f"cannot tell the language of {dump.path}: {said}; name it with --wiki "
                                 "LANG.wikipedia, e.g. --wiki ja.wikipedia")
            continue
        if chosen is not None and lang.code != chosen.code:
            raise UsageError(f"--wiki {wiki} is {chosen.code} ({chosen.name}), but the <siteinfo> of {dump.path} "
                             f"says {site.dbname or site.base} ({lang.code}, {lang.name}); name the dump's own wiki")
        found[dump.path] = lang
    codes = sorted({lang.code for lang in found.values()})
    if len(codes) > 1:
        listing = ", ".join(f"{path} ({lang.code})" for path, lang in found.items())
        raise UsageError(f"the dumps are of {len(codes)} languages ({listing}): run 'wit build-queries' once per "
                         "language, each into its own --out folder (stage 2 loads any set of them)")
    if chosen is None and not found:
        raise UsageError(f"cannot tell the language of {[d.path for d in dumps]}: they hold no page; name it with "
                         "--wiki LANG.wikipedia, e.g. --wiki ja.wikipedia")
    return (chosen or next(iter(found.values()))), first


def resolve(o: BuildQueriesOptions) -> QueryInputs:
    """Resolve ``--dump`` (paired with the multistream indexes beside them) and its language, ``--pageviews``
    and read WordNet / OMW; the sketch width (``--sketch-width``, else ``ngram_sketch.width_for`` the bigrams
    estimated from the dumps' size); FileNotFoundError / WordNetError / UsageError name the flag."""
    dumps = dump_inputs(fileio.expand_patterns(list(o.dump), what="--dump"), fileio.exists)
    if not dumps:
        raise FileNotFoundError(f"--dump {list(o.dump)!r} names only multistream index files, no dump")
    language, site = dump_language(dumps, o.traffic.wiki)
    traffic = o.traffic if o.traffic.wiki else replace(o.traffic, wiki=language.wiki)
    pageviews = fileio.expand_patterns(o.pageviews, what="--pageviews") if o.pageviews else []
    wordnet = wordnet_candidates(o.wordnet_dir) if o.wordnet_dir else []
    if o.omw_file:
        wordnet = omw_candidates(list(o.omw_file), language, merged=wordnet)
    namespaces = tuple(sorted(site.namespaces.items())) if site else ()
    bigrams = estimated_bigrams((d.path, fileio.size(d.path)) for d in dumps)
    suggested = width_for(bigrams, o.thresholds.min_bigram_count)
    width = o.reading.sketch_width or suggested
    return QueryInputs(tuple(dumps), tuple(pageviews), tuple(wordnet), bigrams=bigrams, sketch_width=width,
                       suggested_width=suggested, language=language, traffic=traffic, namespaces=namespaces)
