"""``wit build-queries``' Beam graph: composites that wire stage 1's rules; the only module of the stage that
imports Beam. Reads and writes stay at the edges (the dumps, the text cache, the outputs).

    BuildQueries
      ReadDumps        dumps -> ranges -> Reshuffle -> _ExtractPages (pass 1, pages.judge_page per page):
                       sketches, links, articles, redirects, rejected pages, counts; plain text -> OUT/_tmp_text
      MergeSketches    per-range sketches -> 1 MiB chunks summed per place
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

from schemas.queries import AS_WRITTEN, QUERIES_PARQUET, QUERIES_TXT, language_schema
from wit_builder.beam import fileio
from wit_builder.beam.counting import COUNTS, COUNTS_FILE, CountingDoFn, WriteCounts
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
    assemble_sketches,
    ngram_sketches,
    sketch_chunks,
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
    (flushed into the range's sketches, the main output at the end) and the text cache; links, titles,
    redirects and rejected pages (``(reason, RejectedPage)``) on tagged outputs."""

    namespace = stats.NAMESPACE
    OUTPUTS = ("links", "articles", "redirects", "rejected", "distinct", COUNTS)

    def __init__(self, reading: ReadOptions, cache_dir: str, site: Site = ENGLISH) -> None:
        super().__init__()
        self.reading = reading
        self.cache_dir = cache_dir
        self.site = site
        self.parser: BoundedParser | None = None

    def setup(self) -> None:
        self.parser = BoundedParser(self.reading.parse_timeout, self.reading.parse_memory_bytes, self.site)

    def teardown(self) -> None:
        if self.parser is not None:
            self.parser.close()

    def process(self, rng: DumpRange) -> Iterator:
        with fileio.atomic_create(text_cache_path(self.cache_dir, rng)) as raw, \
                gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0) as cache:
            yield from self._pages(rng, cache)

    def _pages(self, rng: DumpRange, cache: gzip.GzipFile) -> Iterator:
        assert self.parser is not None  # set up in setup()
        unigrams: Counter[str] = Counter()
        bigrams: Counter[str] = Counter()
        # The command resolves a width from the dumps' size (inputs.resolve); the composite alone takes the default.
        sketches = ngram_sketches(self.reading.sketch_width or DEFAULT_SKETCH_WIDTH)
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
        yield sketches

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

    The outputs (a DoOutputsTuple) are ``sketches`` (the main output: a range's (unigram, bigram)
    ``CountMinSketch`` pair), ``links`` ((target title, 1)), ``articles`` ((title, query)), ``redirects``
    ((title, target)), ``rejected`` ((reason, RejectedPage)) and ``counts`` (``counting.COUNTS``); each range's
    plain text is cached under ``cache_dir`` for pass 2.

    Args:
        dumps: the dump files, each with its multistream index or None.
        reading: the range size, parse budget and sketch width.
        cache_dir: the folder of the text cache (``OUT/_tmp_text``).
        site: the wiki's language rules (``wikitext.site_rules``: namespaces, magic words, converter variant,
            the language whose segmenter tokenizes the text).
    """

    def __init__(self, dumps: list[DumpInput], reading: ReadOptions, cache_dir: str, site: Site = ENGLISH) -> None:
        super().__init__()
        self.dumps = dumps
        self.reading = reading
        self.cache_dir = cache_dir
        self.site = site

    def expand(self, pbegin):
        ranges = (
            pbegin
            | "DumpFiles" >> beam.Create(self.dumps)
            | "PlanRanges" >> beam.FlatMap(_plan_ranges, self.reading.split_bytes)
            | "SpreadRanges" >> beam.Reshuffle()
        )
        pages = ranges | "ExtractPages" >> beam.ParDo(
            _ExtractPages(self.reading, self.cache_dir, self.site)
        ).with_outputs(*_ExtractPages.OUTPUTS, main="sketches")
        return ranges, pages


class _SumChunks(beam.CombineFn):
    """Slices of the same place in every range's sketch -> their sum (merging chunks merges the sketches)."""

    def create_accumulator(self):
        return None

    def add_input(self, acc, counters):
        if acc is None:
            return counters.copy()  # inputs are not ours to change
        acc += counters
        return acc

    def merge_accumulators(self, accs):
        merged = None
        for acc in accs:
            if acc is not None:
                merged = self.add_input(merged, acc)
        return merged

    def extract_output(self, acc):
        return acc


class MergeSketches(beam.PTransform):
    """Every range's (unigram, bigram) sketches -> ((sketch index, width, depth, start), summed 1 MiB slice):
    the merged sketches in pieces that every engine can move (``ngram_sketch.assemble_sketches`` rebuilds them)."""

    def expand(self, sketches):
        return (
            sketches
            | "SketchChunks" >> beam.FlatMap(sketch_chunks)
            | "SumChunks" >> beam.CombinePerKey(_SumChunks())
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
    as the main output, ``bigrams`` tagged). Memory: at most FLUSH_KEYS distinct n-grams before they leave."""

    def __init__(self, cache_dir: str, thresholds: qs.Thresholds) -> None:
        self.cache_dir = cache_dir
        self.thresholds = thresholds

    def process(self, rng: DumpRange, chunks: dict[ChunkKey, np.ndarray], phrases: frozenset[str]) -> Iterator:
        sketches = assemble_sketches(chunks)
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
        sketches: the merged sketch chunks (``MergeSketches``).
        phrases: one set of the one- and two-token phrases to count whatever their estimate.
    """

    def __init__(self, cache_dir: str, thresholds: qs.Thresholds, sketches, phrases) -> None:
        super().__init__()
        self.cache_dir = cache_dir
        self.thresholds = thresholds
        self.sketches = sketches
        self.phrases = phrases

    def expand(self, ranges):
        kept = ranges | "CountRange" >> beam.ParDo(
            _CountKept(self.cache_dir, self.thresholds), AsDict(self.sketches), AsSingleton(self.phrases)
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
    the details file in ``out``, the counts in ``OUT/_counts.json``, the text cache in ``OUT/_tmp_text``.

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

        ranges, pages = pbegin | "ReadDumps" >> ReadDumps(self.dumps, o.reading, cache_dir, self.site)
        sketches = pages.sketches | "MergeSketches" >> MergeSketches()
        page_counts = pages[COUNTS] | "SumPageCounts" >> beam.CombinePerKey(sum)
        total_tokens = page_counts | "TotalTokens" >> TotalTokens()
        traffic, pageview_files, pageview_counts = pages.links | "TitleTraffic" >> TitleTraffic(self.pageviews,
                                                                                                o.traffic)
        best_titles, eligible_titles = (
            {"articles": pages.articles, "redirects": pages.redirects, "traffic": traffic}
            | "Titles" >> TitleCandidates(before["title"])
        )
        phrases = best_titles | "Phrases" >> beam.Map(_phrases, wordnet_phrases)
        unigram_counts, bigram_counts = ranges | "CountKept" >> CountKept(cache_dir, o.thresholds, sketches, phrases)
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
