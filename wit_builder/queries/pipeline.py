"""``wit build-queries``' Beam graph: composites that wire stage 1's rules; the only module of the stage that
imports Beam. Reads and writes stay at the edges (the dumps, the text cache, the outputs).

    BuildQueries
      ReadDumps        dumps -> ranges -> Reshuffle -> _ExtractPages (pass 1, pages.judge_page per page):
                       one sketch pair per bundle, links, articles, redirects, rejected pages, counts; plain text
                       -> OUT/_tmp_text; in-process the sketches -> OUT/_tmp_spill/sketches (only names cross Beam)
      MergeSketches    per-bundle sketch files -> one file (summed in place), else 1 MiB chunks summed per place
      TitleTraffic     --pageviews rows (ReadPageviews), else inlinks -> traffic per title
      TitleCandidates  articles + redirects + traffic -> ScoreTitles -> Best (titles.py)
      CountKept        pass 2: cached text -> exact counts of the n-grams the sketches let through (+ phrases)
      Unigrams/Bigrams counts -> candidates (selection.py; bigrams: ScoreBigrams, two joins, NPMI) -> Best
      SelectAndWrite   the best lists + phrase counts + WordNet -> queries.parquet, queries.txt, details file
      WriteCounts      every CountingDoFn's counts -> OUT/_counts.json (stats.json's counts, as data)
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.pvalue import AsDict, AsList, AsSingleton, TaggedOutput
from apache_beam.transforms.window import GlobalWindows

from schemas.queries import AS_WRITTEN, QUERIES_PARQUET, QUERIES_TXT, language_schema
from wit_builder.beam import fileio
from wit_builder.beam.counting import COUNTS, COUNTS_FILE, CountingDoFn, WriteCounts
from wit_builder.beam.spill import spill_folder, stable_name
from wit_builder.core import progress, segment
from wit_builder.core.verdicts import Drop
from wit_builder.queries import selection as qs
from wit_builder.queries import stats, titles
from wit_builder.queries.ngram_sketch import (
    DEFAULT_SKETCH_WIDTH,
    ChunkKey,
    DistinctSketch,
    NgramSketches,
    add_and_clear,
    add_sketches_from,
    assemble_sketches,
    mapped_sketches,
    ngram_sketches,
    read_sketches,
    sketch_chunks,
    write_sketches,
)
from wit_builder.queries.options import BuildQueriesOptions, ReadOptions
from wit_builder.queries.pages import ArticleText, PageVerdict, Redirect, TitleQuery, judge_page
from wit_builder.queries.pageviews import FileTally, Traffic, check_readable, open_text, read_pageviews
from wit_builder.queries.parse_budget import BoundedParser
from wit_builder.queries.wikidump import DumpError, DumpInput, DumpRange, plan_ranges, read_pages
from wit_builder.queries.wikitext import ENGLISH, Site

LOG = logging.getLogger(__name__)
# Partial n-gram counts leave a worker when this many distinct keys have piled up (memory stays flat).
FLUSH_KEYS = 200_000
TEXT_CACHE = "_tmp_text"  # pass 1's plain text per range, for pass 2; removed when the run ends
SKETCH_FILES = "sketches"  # under the spill folder (OUT/_tmp_spill): per-bundle and merged sketch files


def text_cache_path(cache_dir: str, rng: DumpRange) -> str:
    """Where pass 1 leaves a range's plain text for pass 2 (a name fixed by the range: a retry overwrites it)."""
    key = hashlib.sha1(f"{rng.path}\0{rng.start}\0{rng.end}".encode()).hexdigest()[:20]
    return fileio.join(cache_dir, f"text-{key}.txt.gz")


# ---- pass 1: dumps -> pages -> text, sketches, titles ----

def _plan_ranges(dump: DumpInput, split_bytes: int) -> list[DumpRange]:
    """A dump -> its ranges (``wikidump.plan_ranges``: runs of whole bz2 streams of about ``split_bytes`` bytes
    with an index, else the whole file)."""
    return plan_ranges(dump.path, fileio.open_read, dump.index, split_bytes)


class _ExtractPages(CountingDoFn):
    """Pass 1 over one range: every page judged by ``pages.judge_page`` under the parse budget
    (``parse_budget.BoundedParser``), each verdict counted or routed: article text into partial n-gram counts
    (flushed into the bundle's sketches) and the text cache; links, titles, redirects and rejected pages
    (``(reason, RejectedPage)``) on tagged outputs.

    One (unigram, bigram) sketch pair per bundle, whatever its number of ranges (a worker holds one pair, not one
    per range), leaves in ``finish_bundle`` as the main output: with ``sketch_dir`` written to a file named by the
    bundle's ranges (a retried bundle rewrites the same name; a lost bundle's file is named by no element) and
    its path emitted, else as ``sketch_chunks`` records. A retried bundle starts a fresh pair (``start_bundle``).
    """

    namespace = stats.NAMESPACE
    OUTPUTS = ("links", "articles", "redirects", "rejected", "distinct", COUNTS)

    def __init__(self, reading: ReadOptions, cache_dir: str, site: Site = ENGLISH,
                 sketch_dir: str | None = None) -> None:
        super().__init__()
        self.reading = reading
        self.cache_dir = cache_dir
        self.site = site
        self.sketch_dir = sketch_dir
        self.parser: BoundedParser | None = None
        self._sketches: NgramSketches | None = None
        self._ranges: list[str] = []

    def setup(self) -> None:
        self.parser = BoundedParser(self.reading.parse_timeout, self.reading.parse_memory_bytes, self.site)

    def teardown(self) -> None:
        if self.parser is not None:
            self.parser.close()

    def start_bundle(self) -> None:
        super().start_bundle()
        self._sketches, self._ranges = None, []

    def finish_bundle(self) -> Iterator:
        yield from super().finish_bundle()
        sketches, self._sketches = self._sketches, None
        if sketches is None:  # no range in the bundle
            return
        if self.sketch_dir is None:
            for chunk in sketch_chunks(sketches):
                yield GlobalWindows.windowed_value(chunk)
            return
        name = stable_name("\n".join(sorted(self._ranges)))  # the bundle's ranges: the same name on a retry
        path = fileio.join(self.sketch_dir, f"bundle-{name}.i64")
        with fileio.atomic_create(path) as f:
            write_sketches(sketches, f)
        del sketches  # freed before the next step of a fused stage runs
        yield GlobalWindows.windowed_value(path)

    def process(self, rng: DumpRange) -> Iterator:
        with fileio.atomic_create(text_cache_path(self.cache_dir, rng)) as raw, \
                gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0) as cache:
            yield from self._pages(rng, cache)

    def _pages(self, rng: DumpRange, cache: gzip.GzipFile) -> Iterator:
        assert self.parser is not None  # set up in setup()
        unigrams: Counter[str] = Counter()
        bigrams: Counter[str] = Counter()
        if self._sketches is None:
            # The command resolves a width from the dumps' size (inputs.resolve); the composite alone takes the
            # default.
            self._sketches = ngram_sketches(self.reading.sketch_width or DEFAULT_SKETCH_WIDTH)
        sketches = self._sketches
        self._ranges.append(f"{rng.path}\0{rng.start}\0{rng.end}")
        distinct = DistinctSketch()  # the range's distinct tokens (MetaCLIP 2's budgets take 10% of them)
        pages_read = 0
        pages = progress.reporter("build-queries", "pages")  # moves page by page, within a range too
        for page in read_pages(rng, fileio.open_read):
            pages_read += 1
            pages.add(1)
            for verdict in judge_page(page, self.parser.parse, self.site.lang):
                yield from self._take(verdict, unigrams, bigrams, cache)
            if len(unigrams) + len(bigrams) >= FLUSH_KEYS:
                distinct.add(unigrams)
                add_and_clear(sketches, unigrams, bigrams)
        if pages_read == 0:
            self.count("dump_ranges_empty")
            LOG.warning("%s: no <page> in bytes %d..%s (an empty dump?)", rng.path, rng.start, rng.end or "end")
        else:
            LOG.info("%s: read %d pages from bytes %d..%s", rng.path, pages_read, rng.start, rng.end or "end")
        distinct.add(unigrams)
        add_and_clear(sketches, unigrams, bigrams)
        yield TaggedOutput("distinct", distinct)
        self.count("pages_read", pages_read)
        self.count("dump_ranges")  # each planned range is extracted once (a retried bundle's counts are dropped)

    def _take(self, verdict: PageVerdict, unigrams: Counter[str], bigrams: Counter[str],
              cache: gzip.GzipFile) -> Iterator[TaggedOutput]:
        match verdict:
            case Drop(reason=reason, record=record):
                self.count(reason)
                if record is not None:
                    path, offset, page_id, title, why = record
                    LOG.warning("%s: skipped page id %s %r (bz2 stream / chunk at byte %d): %s",
                                path, page_id, title, offset, why)
                    yield TaggedOutput("rejected", (reason, record))
            case Redirect(title=title, target=target):
                yield TaggedOutput("redirects", (title, target))
            case ArticleText(text=text, links=links):
                lines = qs.token_lines(text, self.site.lang)  # segmented once: pass 2 reads the tokens
                tokens = qs.count_token_lines(lines, unigrams, bigrams)
                self.count("articles")
                self.count("total_tokens", tokens)
                if tokens == 0:
                    self.count("articles_without_text")
                else:
                    cache.write("".join(" ".join(line) + "\n" for line in lines).encode())
                for target in links:
                    yield TaggedOutput("links", (target, 1))
            case TitleQuery(title=title, query=query):
                yield TaggedOutput("articles", (title, query))


class ReadDumps(beam.PTransform):
    """Dumps -> (their ranges, the outputs of pass 1 over them).

    The outputs (a DoOutputsTuple) are ``sketches`` (the main output: each bundle's (unigram, bigram)
    ``CountMinSketch`` pair, as the path of its file under ``sketch_dir``, else as ``sketch_chunks`` records),
    ``links`` ((target title, 1)), ``articles`` ((title, query)), ``redirects``
    ((title, target)), ``rejected`` ((reason, RejectedPage)) and ``counts`` (``counting.COUNTS``); each range's
    plain text is cached under ``cache_dir`` for pass 2.

    Args:
        dumps: the dump files, each with its multistream index or None.
        reading: the range size, parse budget and sketch width.
        cache_dir: the folder of the text cache (``OUT/_tmp_text``).
        site: the wiki's language rules (``wikitext.site_rules``: namespaces, magic words, converter variant,
            the language whose segmenter tokenizes the text).
        sketch_dir: where the bundles' sketch files go (in-process runners: ``OUT/_tmp_spill/sketches``), or
            None for sketches that travel as chunks.
    """

    def __init__(self, dumps: list[DumpInput], reading: ReadOptions, cache_dir: str, site: Site = ENGLISH,
                 sketch_dir: str | None = None) -> None:
        super().__init__()
        self.dumps = dumps
        self.reading = reading
        self.cache_dir = cache_dir
        self.site = site
        self.sketch_dir = sketch_dir

    def expand(self, pbegin):
        ranges = (
            pbegin
            | "DumpFiles" >> beam.Create(self.dumps)
            | "PlanRanges" >> beam.FlatMap(_plan_ranges, self.reading.split_bytes)
            | "SpreadRanges" >> beam.Reshuffle()
        )
        pages = ranges | "ExtractPages" >> beam.ParDo(
            _ExtractPages(self.reading, self.cache_dir, self.site, self.sketch_dir)
        ).with_outputs(*_ExtractPages.OUTPUTS, main="sketches")
        return ranges, pages


class _SumChunks(beam.CombineFn):
    """Slices of the same place in every bundle's sketch -> their sum (merging chunks merges the sketches).

    Memory: one slice per accumulator. An input is copied once (inputs are not ours to change); accumulators
    are ours, so ``merge_accumulators`` adds into the first one in place and returns it (Beam lets a CombineFn
    mutate and return its first accumulator) rather than allocating another slice per merge."""

    def create_accumulator(self):
        return None

    def add_input(self, acc, counters):
        if acc is None:
            return counters.copy()  # inputs are not ours to change
        np.add(acc, counters, out=acc)
        return acc

    def merge_accumulators(self, accs):
        merged = None
        for acc in accs:
            if acc is None:
                continue
            if merged is None:
                merged = acc  # ours: summed into in place
            else:
                np.add(merged, acc, out=merged)
        return merged

    def extract_output(self, acc):
        return acc


def _merge_sketch_files(paths: list[str], width: int, folder: str) -> str | None:
    """The bundles' sketch files -> the file of their sum (None without any; the file itself when there is one):
    the first read into memory and the others added into it 1 MiB at a time, so merging holds one sketch pair
    however many files there are. The merged file is named by its inputs (a retry rewrites the same name)."""
    paths = sorted(paths)
    if len(paths) <= 1:
        return paths[0] if paths else None
    with fileio.open_read(paths[0]) as f:
        merged = read_sketches(width, f)
    for path in paths[1:]:
        with fileio.open_read(path) as f:
            add_sketches_from(merged, f)
    name = stable_name("\n".join(paths))
    out = fileio.join(folder, f"merged-{name}.i64")
    with fileio.atomic_create(out) as f:
        write_sketches(merged, f)
    return out


class MergeSketches(beam.PTransform):
    """Every bundle's (unigram, bigram) sketches -> the merged sketches, in the form pass 2 reads
    (``_CountKept``):

    - with ``sketch_dir`` (the bundles wrote files): one element, the path of the summed file (or None without
      any range), made by one step that holds one sketch pair (``_merge_sketch_files``);
    - else ((sketch index, width, depth, start), summed 1 MiB slice) records: pieces that every engine can move
      (``ngram_sketch.assemble_sketches`` rebuilds them).

    Args:
        width: the bigram sketch width of the run.
        sketch_dir: the folder of the sketch files, or None for chunks.
    """

    def __init__(self, width: int = DEFAULT_SKETCH_WIDTH, sketch_dir: str | None = None) -> None:
        super().__init__()
        self.width = width
        self.sketch_dir = sketch_dir

    def expand(self, sketches):
        if self.sketch_dir is None:
            return sketches | "SumChunks" >> beam.CombinePerKey(_SumChunks())
        return (
            sketches
            | "SketchFiles" >> beam.combiners.ToList()
            | "SumFiles" >> beam.Map(_merge_sketch_files, self.width, self.sketch_dir)
        )


def _is_count(kv: tuple[str, int], name: str) -> bool:
    return kv[0] == name


class TotalTokens(beam.PTransform):
    """Summed page counts ((name, n)) -> the number of tokens of all article text (0 without any), the ``N`` of
    NPMI."""

    def expand(self, page_counts):
        return (
            page_counts
            | "TokenCount" >> beam.Filter(_is_count, "total_tokens")
            | "Tokens" >> beam.Values()
            | "Total" >> beam.CombineGlobally(sum)
        )


class _MergeDistinct(beam.CombineFn):
    """Every range's ``DistinctSketch`` -> the estimated number of distinct tokens of all the text."""

    def create_accumulator(self):
        return DistinctSketch()

    def add_input(self, acc, sketch):
        return acc.merge(sketch)

    def merge_accumulators(self, accs):
        merged = DistinctSketch()
        for acc in accs:
            merged.merge(acc)
        return merged

    def extract_output(self, acc):
        return acc.estimate()


# ---- titles: traffic (pageviews or inlinks), redirects, scores ----

class _ReadPageviewFile(CountingDoFn):
    """One pageview file -> (canonical title, views) rows for the chosen project and sites, its table
    (``files`` output: (path, FileTally as a dict)) and its counted rows and malformed lines. A file of which
    no line can be read fails the run (``pageviews.check_readable``)."""

    namespace = stats.NAMESPACE

    def __init__(self, traffic: Traffic) -> None:
        super().__init__()
        self.traffic = traffic

    def process(self, path: str) -> Iterator:
        tally = FileTally()
        with fileio.open_read(path) as raw:
            yield from read_pageviews(open_text(raw, path), self.traffic, tally, path)
        check_readable(path, tally)
        self.count("pageview_rows", tally.rows)
        self.count("pageview_lines_malformed", tally.malformed)
        yield TaggedOutput("files", (path, asdict(tally)))


class ReadPageviews(beam.PTransform):
    """Pageview dump files -> (canonical title, total views), the files' tables ((path, tally dict)) and the
    counts (``counting.COUNTS``).

    Args:
        paths: the pageview files (hourly, daily or monthly; any compression ``pageviews.open_text`` reads).
        traffic: which project's and sites' rows count.
    """

    def __init__(self, paths: list[str], traffic: Traffic) -> None:
        super().__init__()
        self.paths = paths
        self.traffic = traffic

    def expand(self, pbegin):
        read = (
            pbegin
            | "PageviewFiles" >> beam.Create(self.paths)
            | "SpreadPageviewFiles" >> beam.Reshuffle()
            | "ReadPageviews" >> beam.ParDo(_ReadPageviewFile(self.traffic)).with_outputs("files", COUNTS,
                                                                                          main="rows")
        )
        return read.rows | "SumViews" >> beam.CombinePerKey(sum), read.files, read[COUNTS]


class TitleTraffic(beam.PTransform):
    """Links ((target title, 1)) -> (traffic per title, the pageview files' tables, their counts): pageviews
    when files are given, else the number of incoming links.

    Args:
        pageviews: the pageview files (none: titles rank by incoming links).
        traffic: which pageview rows count.
    """

    def __init__(self, pageviews: list[str], traffic: Traffic) -> None:
        super().__init__()
        self.pageviews = pageviews
        self.traffic = traffic

    def expand(self, links):
        pbegin = beam.pvalue.PBegin(links.pipeline)
        if self.pageviews:
            return pbegin | "Pageviews" >> ReadPageviews(self.pageviews, self.traffic)
        return (links | "CountInlinks" >> beam.CombinePerKey(sum),
                pbegin | "NoPageviewFiles" >> beam.Create([]),
                pbegin | "NoPageviewCounts" >> beam.Create([]))


def _resolve_redirect(element) -> list[tuple[str, int]]:
    """(title, {traffic: [...], redirect: [target...]}) -> (the title it lands on, its traffic)."""
    title, grouped = element
    landed = titles.landing_title(title, grouped["traffic"], grouped["redirect"])
    return [] if landed is None else [landed]


def _article_scores(element) -> list[tuple[str, int]]:
    """(title, {article: [query], traffic: [...]}) -> (query, traffic) for a title that is an article."""
    _, grouped = element
    return titles.article_scores(grouped["article"], grouped["traffic"])


class ScoreTitles(beam.PTransform):
    """Article titles ((title, query)) -> (query, score): the traffic landed on the title, a redirect's traffic
    on its target (``titles.py``), summed over the articles of one query.

    Args:
        traffic: (title, traffic) pairs: inlinks or pageviews.
        redirects: (title, target) pairs.
    """

    def __init__(self, traffic, redirects) -> None:
        super().__init__()
        self.traffic = traffic
        self.redirects = redirects

    def expand(self, articles):
        landed = (
            {"traffic": self.traffic, "redirect": self.redirects}
            | "JoinRedirects" >> beam.CoGroupByKey()
            | "FollowRedirects" >> beam.FlatMap(_resolve_redirect)
            | "SumLandedTraffic" >> beam.CombinePerKey(sum)
        )
        return (
            {"article": articles, "traffic": landed}
            | "JoinArticles" >> beam.CoGroupByKey()
            | "TrafficPerQuery" >> beam.FlatMap(_article_scores)
            | "SumPerQuery" >> beam.CombinePerKey(sum)
        )


def _title_candidate(query: str, score: int) -> qs.Candidate:
    return qs.Candidate(query, 0, float(score))  # its count is looked up after pass 2


class Best(beam.PTransform):
    """A source's candidates -> ((source, its ``n`` best as one list), (source, how many were eligible)).

    Args:
        n: how many to keep (``selection.prune_sizes``: all that selection can need).
        source: the source, a key of ``selection.RANK_KEYS`` (its ranking).
    """

    def __init__(self, n: int, source: str) -> None:
        super().__init__()
        self.n = n
        self.source = source

    def expand(self, candidates):
        best = (
            candidates
            | "Top" >> beam.combiners.Top.Of(self.n, key=qs.RANK_KEYS[self.source], reverse=True)
            | "KeyBest" >> beam.WithKeys(self.source)
        )
        eligible = (
            candidates
            | "CountEligible" >> beam.combiners.Count.Globally()
            | "KeyEligible" >> beam.WithKeys(self.source)
        )
        return best, eligible


class TitleCandidates(beam.PTransform):
    """{articles, redirects, traffic} -> (("title", the ``n`` best title candidates), ("title", how many were
    eligible)). Candidates rank by score (``selection.title_rank_key``); their counts are looked up later.

    Args:
        n: how many to keep.
    """

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def expand(self, pages):
        return (
            pages["articles"]
            | "ScoreTitles" >> ScoreTitles(pages["traffic"], pages["redirects"])
            | "Candidates" >> beam.MapTuple(_title_candidate)
            | "Best" >> Best(self.n, "title")
        )


# ---- pass 2: exact counts of the n-grams that can pass, and their candidates ----

class _CountKept(beam.DoFn):
    """Pass 2: a range's cached text -> exact counts of the n-grams ``selection.keep_ngrams`` keeps (unigrams
    as the main output, ``bigrams`` tagged). Memory: the merged sketches once per DoFn instance (a file is
    memory-mapped, chunks are assembled once, not once per range), and at most FLUSH_KEYS distinct n-grams
    before they leave."""

    def __init__(self, cache_dir: str, thresholds: qs.Thresholds, width: int = DEFAULT_SKETCH_WIDTH) -> None:
        self.cache_dir = cache_dir
        self.thresholds = thresholds
        self.width = width
        self._held: tuple[object, NgramSketches | None] | None = None  # (the side input, its sketches)

    def _sketches(self, merged: dict[ChunkKey, np.ndarray] | str | None) -> NgramSketches | None:
        """The merged sketches for the side input ``merged`` (chunks, or the merged file's path, or None),
        loaded once while the runner hands the same side input."""
        held = self._held
        if held is not None and (held[0] is merged or (isinstance(merged, str) and held[0] == merged)):
            return held[1]
        self._held = None  # the old sketches go before the new ones load
        if merged is None:
            sketches = None
        elif isinstance(merged, str):
            local = fileio.local_path_or_none(merged)
            if local is not None:
                sketches = mapped_sketches(self.width, local)
            else:
                with fileio.open_read(merged) as f:
                    sketches = read_sketches(self.width, f)
        else:
            sketches = assemble_sketches(merged)
        self._held = (merged, sketches)
        return sketches

    def process(self, rng: DumpRange, merged: dict[ChunkKey, np.ndarray] | str | None,
                phrases: frozenset[str]) -> Iterator:
        sketches = self._sketches(merged)
        if sketches is None:
            return
        unigrams: Counter[str] = Counter()
        bigrams: Counter[str] = Counter()
        with fileio.open_read(text_cache_path(self.cache_dir, rng)) as raw, gzip.GzipFile(fileobj=raw) as cache:
            for line in io.TextIOWrapper(cache, encoding="utf-8"):
                qs.count_token_lines([line.split()], unigrams, bigrams)  # pass 1 wrote tokens, space-separated
                if len(unigrams) + len(bigrams) >= FLUSH_KEYS:
                    yield from self._flush(unigrams, bigrams, sketches, phrases)
        yield from self._flush(unigrams, bigrams, sketches, phrases)

    def _flush(self, unigrams: Counter[str], bigrams: Counter[str], sketches: NgramSketches,
               phrases: frozenset[str]) -> Iterator:
        unigram_sketch, bigram_sketch = sketches
        kept_unigrams, kept_bigrams = qs.keep_ngrams(unigrams, bigrams, unigram_sketch, bigram_sketch,
                                                     self.thresholds, phrases)
        yield from kept_unigrams
        for item in kept_bigrams:
            yield TaggedOutput("bigrams", item)
        unigrams.clear()
        bigrams.clear()


class CountKept(beam.PTransform):
    """Ranges -> (unigram counts, bigram counts): pass 2 over the cached text, exact counts of the n-grams that
    can reach the thresholds by the merged sketches, and of ``phrases``, summed over the ranges.

    Args:
        cache_dir: the text cache pass 1 wrote.
        thresholds: the count thresholds.
        sketches: the merged sketches (``MergeSketches``): chunk records, or one merged file's path.
        phrases: one set of the one- and two-token phrases to count whatever their estimate.
        width: the bigram sketch width of the run.
        files: whether ``sketches`` is a file's path (``MergeSketches`` with a ``sketch_dir``), not chunks.
    """

    def __init__(self, cache_dir: str, thresholds: qs.Thresholds, sketches, phrases,
                 width: int = DEFAULT_SKETCH_WIDTH, files: bool = False) -> None:
        super().__init__()
        self.cache_dir = cache_dir
        self.thresholds = thresholds
        self.sketches = sketches
        self.phrases = phrases
        self.width = width
        self.files = files

    def expand(self, ranges):
        merged = AsSingleton(self.sketches) if self.files else AsDict(self.sketches)
        kept = ranges | "CountRange" >> beam.ParDo(
            _CountKept(self.cache_dir, self.thresholds, self.width), merged, AsSingleton(self.phrases)
        ).with_outputs("bigrams", main="unigrams")
        return (kept.unigrams | "SumUnigrams" >> beam.CombinePerKey(sum),
                kept.bigrams | "SumBigrams" >> beam.CombinePerKey(sum))


def _unigram_candidates(kv: tuple[str, int], thresholds: qs.Thresholds) -> list[qs.Candidate]:
    candidate = qs.unigram_candidate(kv[0], kv[1], thresholds)
    return [candidate] if candidate else []


def _bigram_is_eligible(kv: tuple[str, int], thresholds: qs.Thresholds) -> bool:
    return qs.bigram_is_eligible(kv[0], kv[1], thresholds)


def _with_token_count(element) -> list[tuple]:
    """(token, {count: [c], rows: [(bigram, n, ...)]}) -> each row with the token's count appended."""
    _, grouped = element
    return qs.with_token_count(grouped["count"], grouped["rows"])


def _key_by_token(row: tuple, position: int) -> tuple[str, tuple]:
    return row[0].split(" ")[position], row


def _bigram_candidate(row: tuple[str, int, int, int], total_tokens: int) -> qs.Candidate:
    """(bigram, count, left token's count, right token's count) -> the bigram scored by NPMI."""
    bigram, count, count_a, count_b = row
    return qs.bigram_candidate(bigram, count, count_a, count_b, total_tokens)


class ScoreBigrams(beam.PTransform):
    """Bigram counts -> bigram Candidates scored by NPMI: two joins with the unigram counts, no big side input.

    Args:
        unigram_counts: (token, count) pairs.
        total_tokens: the number of tokens (``TotalTokens``), the ``N`` of NPMI.
        thresholds: the count thresholds (``selection.bigram_is_eligible``).
    """

    def __init__(self, unigram_counts, total_tokens, thresholds: qs.Thresholds) -> None:
        super().__init__()
        self.unigram_counts = unigram_counts
        self.total_tokens = total_tokens
        self.thresholds = thresholds

    def expand(self, bigram_counts):
        eligible = bigram_counts | "EligibleBigrams" >> beam.Filter(_bigram_is_eligible, self.thresholds)
        with_left = (
            {"count": self.unigram_counts, "rows": eligible | "KeyByLeft" >> beam.Map(_key_by_token, 0)}
            | "JoinLeftCount" >> beam.CoGroupByKey()
            | "AddLeftCount" >> beam.FlatMap(_with_token_count)
        )
        return (
            {"count": self.unigram_counts, "rows": with_left | "KeyByRight" >> beam.Map(_key_by_token, 1)}
            | "JoinRightCount" >> beam.CoGroupByKey()
            | "AddRightCount" >> beam.FlatMap(_with_token_count)
            | "Npmi" >> beam.Map(_bigram_candidate, AsSingleton(self.total_tokens))
        )


def _in_phrases(kv: tuple[str, int], phrases: frozenset[str]) -> bool:
    return kv[0] in phrases


def _phrases(best_titles: tuple[str, list[qs.Candidate]], wordnet_phrases: frozenset[str]) -> frozenset[str]:
    """The phrases counted whatever their estimate: the best titles' and the WordNet lemmas' one- and two-token
    queries."""
    return qs.short_phrases(best_titles[1]) | wordnet_phrases


# ---- selection and outputs ----

class _WriteQueries(CountingDoFn):
    """Select from the pruned candidates of every source (``selection.select``), write queries.parquet and
    queries.txt and the details file (``stats.DETAILS_JSON``), and count what selection did. Raises DumpError
    when there is no article text (``stats.no_text_message``), PageviewError when no pageview row counted."""

    namespace = stats.NAMESPACE

    def __init__(self, out_dir: str, budgets: dict[str, int], wordnet: list[tuple[str, float]],
                 traffic: Traffic | None, dumps: list[str], lang: str = "en", segmenter: str = "textnorm") -> None:
        super().__init__()
        self.out_dir = out_dir
        self.budgets = budgets
        self.wordnet = wordnet
        self.traffic = traffic  # None: titles rank by inlinks
        self.dumps = dumps
        self.lang = lang
        self.segmenter = segmenter

    def process(self, _, best: dict, eligible: dict, phrase_counts: dict, total_tokens: int, page_counts: dict,
                rejected: dict, pageview_files: list, distinct_unigrams: int) -> None:
        if total_tokens == 0:  # fail loudly rather than write a quietly empty list
            raise DumpError(stats.no_text_message(self.dumps, page_counts, rejected))
        files = dict(sorted(pageview_files))
        stats.check_pageview_rows(files, self.traffic)
        budgets = qs.language_budgets(self.budgets, self.lang, distinct_unigrams, eligible.get("title", 0))
        title_candidates = [c._replace(count=qs.phrase_count(c.query, phrase_counts)) for c in best["title"]]
        wordnet = [qs.Candidate(q, qs.phrase_count(q, phrase_counts), score) for q, score in self.wordnet]
        rows, summary = qs.select({**best, "title": title_candidates, "wordnet": wordnet}, budgets)
        table = pa.Table.from_pylist(
            [{"query": c.query, "source": source, "count": c.count, "score": c.score, "lang": self.lang,
              AS_WRITTEN: segment.written_form(c.query)} for source, c in rows],
            schema=language_schema(self.lang, self.segmenter),
        )
        fileio.write_parquet(fileio.join(self.out_dir, QUERIES_PARQUET), table)
        fileio.write_bytes(fileio.join(self.out_dir, QUERIES_TXT), "".join(f"{c.query}\n" for _, c in rows).encode())
        for name, n in stats.selection_counts({**eligible, "wordnet": len(wordnet)}, summary).items():
            self.count(name, n)
        language = {"lang": self.lang, "segmenter": self.segmenter, "distinct_unigrams": distinct_unigrams,
                    "budgets": budgets}
        fileio.write_json(fileio.join(self.out_dir, stats.DETAILS_JSON),
                          stats.details_document(rejected, self.traffic, files, language))


class SelectAndWrite(beam.PTransform):
    """The pruned candidates and what selection needs -> queries.parquet, queries.txt and the details file in
    ``out_dir``; returns the counts of selection (``counting.COUNTS``).

    The input is a dict of PCollections: ``best`` ((source, best list)), ``eligible`` ((source, n)),
    ``phrase_counts`` ((phrase, count)), ``total_tokens`` (one int), ``page_counts`` ((name, n)), ``rejected``
    ((reason, [RejectedPage...])), ``pageview_files`` ((path, tally dict)).

    Args:
        out_dir: the output folder.
        budgets: the applied budget per source.
        wordnet: (query, score) of every WordNet lemma (none without ``--wordnet-dir``).
        traffic: the pageview rows that count, or None when titles rank by inlinks.
        dumps: the dump paths (for the message of a run without text).
        lang: the dumps' Wikipedia language code (the ``lang`` column; MetaCLIP 2's per-language budgets).
        segmenter: ``core.segment.segmenter_id(lang)``, recorded in the file's metadata.
    """

    def __init__(self, out_dir: str, budgets: dict[str, int], wordnet: list[tuple[str, float]],
                 traffic: Traffic | None, dumps: list[str], lang: str = "en", segmenter: str = "textnorm") -> None:
        super().__init__()
        self.writer = _WriteQueries(out_dir, budgets, wordnet, traffic, dumps, lang, segmenter)

    def expand(self, inputs):
        return (
            beam.pvalue.PBegin(inputs["best"].pipeline)
            | "Once" >> beam.Create([None])
            | "Write" >> beam.ParDo(
                self.writer,
                AsDict(inputs["best"]),
                AsDict(inputs["eligible"]),
                AsDict(inputs["phrase_counts"]),
                AsSingleton(inputs["total_tokens"]),
                AsDict(inputs["page_counts"]),
                AsDict(inputs["rejected"]),
                AsList(inputs["pageview_files"]),
                AsSingleton(inputs["distinct_unigrams"]),
            ).with_outputs(COUNTS, main="written")
        )[COUNTS]


class BuildQueries(beam.PTransform):
    """Stage 1 as one composite: dumps (+ pageviews, WordNet candidates) -> queries.parquet, queries.txt and
    the details file in ``out``, the counts in ``OUT/_counts.json``, the text cache in ``OUT/_tmp_text`` (and
    in-process the sketch files in ``OUT/_tmp_spill/sketches``; the command removes both).

    Args:
        dumps: the dump files, each with its multistream index or None.
        out: the output folder.
        options: the stage's settings (thresholds, budgets, reading, traffic).
        pageviews: the pageview files (none: titles rank by incoming links).
        wordnet: (query, score) of every WordNet lemma (``wordnet.wordnet_candidates``; none without WordNet).
        site: the wiki's language rules (``wikitext.site_rules``); English Wikipedia's by default.
        segmenter: ``core.segment.segmenter_id`` of the site's language, recorded with the queries.
    """

    def __init__(self, dumps: list[DumpInput], out: str, options: BuildQueriesOptions,
                 pageviews: list[str], wordnet: list[tuple[str, float]], site: Site = ENGLISH,
                 segmenter: str = "textnorm") -> None:
        super().__init__()
        self.dumps = dumps
        self.out = out
        self.options = options
        self.pageviews = pageviews
        self.wordnet = wordnet
        self.site = site
        self.segmenter = segmenter

    def expand(self, pbegin):
        o = self.options
        budgets = o.budgets.per_source()
        before = qs.prune_sizes(budgets)  # the best (budget + budgets before it) are all selection can need
        cache_dir = fileio.join(self.out, TEXT_CACHE)
        wordnet_phrases = frozenset(q for q, _ in self.wordnet if qs.is_short_phrase(q))

        # In-process, the sketches travel as files and only their names cross Beam (the runner's buffers would
        # hold several copies of each: issue 25); on a cluster, as chunks through the runner's shuffle.
        runner = pbegin.pipeline.options.view_as(beam.options.pipeline_options.StandardOptions).runner
        spill = spill_folder(runner, self.out)
        sketch_dir = fileio.join(spill, SKETCH_FILES) if spill else None
        width = o.reading.sketch_width or DEFAULT_SKETCH_WIDTH
        ranges, pages = pbegin | "ReadDumps" >> ReadDumps(self.dumps, o.reading, cache_dir, self.site, sketch_dir)
        sketches = pages.sketches | "MergeSketches" >> MergeSketches(width, sketch_dir)
        page_counts = pages[COUNTS] | "SumPageCounts" >> beam.CombinePerKey(sum)
        total_tokens = page_counts | "TotalTokens" >> TotalTokens()
        traffic, pageview_files, pageview_counts = pages.links | "TitleTraffic" >> TitleTraffic(self.pageviews,
                                                                                                o.traffic)
        best_titles, eligible_titles = (
            {"articles": pages.articles, "redirects": pages.redirects, "traffic": traffic}
            | "Titles" >> TitleCandidates(before["title"])
        )
        phrases = best_titles | "Phrases" >> beam.Map(_phrases, wordnet_phrases)
        unigram_counts, bigram_counts = ranges | "CountKept" >> CountKept(cache_dir, o.thresholds, sketches, phrases,
                                                                          width, files=sketch_dir is not None)
        best_unigrams, eligible_unigrams = (
            unigram_counts
            | "UnigramCandidates" >> beam.FlatMap(_unigram_candidates, o.thresholds)
            | "Best_unigram" >> Best(before["unigram"], "unigram")
        )
        best_bigrams, eligible_bigrams = (
            bigram_counts
            | "ScoreBigrams" >> ScoreBigrams(unigram_counts, total_tokens, o.thresholds)
            | "Best_bigram" >> Best(before["bigram"], "bigram")
        )
        phrase_counts = (
            (unigram_counts, bigram_counts)
            | "NgramCounts" >> beam.Flatten()
            | "PhraseCounts" >> beam.Filter(_in_phrases, AsSingleton(phrases))
        )
        selected = {
            "best": (best_unigrams, best_bigrams, best_titles) | "AllBest" >> beam.Flatten(),
            "eligible": (eligible_unigrams, eligible_bigrams, eligible_titles) | "AllEligible" >> beam.Flatten(),
            "phrase_counts": phrase_counts,
            "total_tokens": total_tokens,
            "page_counts": page_counts,
            "rejected": pages.rejected | "FirstRejected" >> beam.combiners.Top.SmallestPerKey(stats.REJECTED_EXAMPLES),
            "pageview_files": pageview_files,
            "distinct_unigrams": pages.distinct | "DistinctUnigrams" >> beam.CombineGlobally(_MergeDistinct()),
        } | "SelectAndWrite" >> SelectAndWrite(self.out, budgets, self.wordnet, o.traffic if self.pageviews else None,
                                               [d.path for d in self.dumps], self.site.lang, self.segmenter)
        return (
            (pages[COUNTS], pageview_counts, selected)
            | "AllCounts" >> beam.Flatten()
            | "WriteCounts" >> WriteCounts(fileio.join(self.out, COUNTS_FILE))
        )
