"""``wit build-queries``: stage 1, the query list from Wikipedia dumps, pageviews and WordNet.

The rules (what counts as text, eligibility, scores, budgets) live in ``wit_builder``; this module wires them:

    dump files -> ranges (multistream: runs of bz2 streams) -> Reshuffle -> pages -> plain text
      pass 1: -> count-min sketches of unigram and bigram counts (one fixed-size array each, summed)
              -> the plain text, cached per range (gzip, under OUT/_tmp_text, removed at the end)
              -> links (or pageviews), redirects, titles  -> title candidates
      pass 2: cached text -> exact counts of only the n-grams that can pass the thresholds by the sketches
              (and of the title / WordNet phrases) (CombinePerKey) -> unigram, bigram candidates (NPMI)
    WordNet lemmas (read before the pipeline)          -> wordnet candidates (+ counts of their phrases)
    each source pruned to the best it could take (Top) -> select -> queries.parquet, queries.txt
    counters                                           -> stats.json (after the run)
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.pvalue import AsDict, AsList, AsSingleton, TaggedOutput

from schemas import stats as stats_schema
from schemas.queries import QUERIES, QUERIES_PARQUET, QUERIES_TXT, SOURCES, STATS_JSON
from wit_builder.beam import counting, fileio, launcher
from wit_builder.core import options, progress
from wit_builder.core.errors import StageFailed
from wit_builder.core.options import option
from wit_builder.queries import selection as qs
from wit_builder.queries import stats as query_stats
from wit_builder.queries.ngram_sketch import CountMinSketch
from wit_builder.queries.pageviews import FileTally, Traffic, check_readable, open_text, read_pageviews
from wit_builder.queries.parse_budget import (
    DEFAULT_PARSE_MEMORY_BYTES,
    DEFAULT_PARSE_SECONDS,
    BoundedParser,
    ParseTimeout,
)
from wit_builder.queries.wikidump import (
    DEFAULT_TARGET_BYTES,
    DumpError,
    DumpRange,
    index_candidates,
    is_index_file,
    plan_ranges,
    read_pages,
)
from wit_builder.queries.wikitext import WikitextError, canonical_title
from wit_builder.queries.wordnet import WordNetError, wordnet_candidates

NAMESPACE = "build_queries"
LOG = logging.getLogger(__name__)
# Why a page, range or title is not used; each is a counter and a key of stats.json's "skipped".
SKIP_REASONS = (
    "pages_malformed",  # a <page> without title, ns or id
    "pages_not_main_namespace",
    "pages_redirect",  # not text; its traffic counts for its target
    "pages_wikitext_rejected",  # mwparserfromhell failed, or the text is over MediaWiki's 2 MiB limit
    "pages_parse_timeout",  # the parse ran past --parse-timeout seconds (or its memory limit): page skipped
    "titles_disambiguation",  # the article is text, its title names no single thing
    "titles_without_letters",  # "1990", "!!!"
    "dump_ranges_empty",  # an empty dump (or a range of one without pages)
)
# Partial n-gram counts leave a worker when this many distinct keys have piled up (memory stays flat).
FLUSH_KEYS = 200_000
DEFAULT_SKETCH_WIDTH = 1 << 20  # counters per row of the bigram sketch (4 rows x 8 bytes: 32 MiB)
TEXT_CACHE = "_tmp_text"
# Rejected pages kept as examples per reason in stats.json (the smallest by file, offset and page id).
REJECTED_EXAMPLES = 20


@dataclass(frozen=True)
class QueryConfig:
    """Stage 1's resolved settings; ValueError from ``__post_init__`` naming the flag of one out of range."""

    thresholds: qs.Thresholds
    budgets: qs.Budgets
    split_bytes: int = DEFAULT_TARGET_BYTES
    parse_seconds: float = DEFAULT_PARSE_SECONDS
    parse_memory_bytes: int = DEFAULT_PARSE_MEMORY_BYTES
    traffic: Traffic = Traffic()
    sketch_width: int = DEFAULT_SKETCH_WIDTH

    def __post_init__(self) -> None:
        if self.sketch_width < 1024:
            raise ValueError(f"--sketch-width must be >= 1024, got {self.sketch_width}")
        if self.split_bytes < 1:
            raise ValueError(f"--split-bytes must be >= 1, got {self.split_bytes}")
        if not self.parse_seconds > 0:
            raise ValueError(f"--parse-timeout must be > 0 seconds, got {self.parse_seconds}")
        if self.parse_memory_bytes < 64 << 20:
            raise ValueError(f"--parse-memory-mb must be >= 64, got {self.parse_memory_bytes >> 20}")


def _counter(name: str):
    return Metrics.counter(NAMESPACE, name)


# ---- reading dumps ----

@dataclass(frozen=True)
class DumpInput:
    """A dump file to read and the multistream index found beside it (None: read it as one stream)."""

    path: str
    index: str | None  # the multistream index beside it, when there is one


def find_dump_inputs(patterns: list[str]) -> list[DumpInput]:
    """Dump files matching ``patterns``; index files among them are paired with their dumps, not read as dumps."""
    paths = fileio.expand_patterns(patterns, what="--dump")
    dumps = [p for p in paths if not is_index_file(p)]
    if not dumps:
        raise FileNotFoundError(f"--dump {patterns!r} names only multistream index files, no dump")
    inputs = []
    for path in dumps:
        index = next((c for c in index_candidates(path) if fileio.exists(c)), None)
        inputs.append(DumpInput(path, index))
    return inputs


class PlanRanges(beam.DoFn):
    """A dump -> its ranges (``wit_builder.queries.wikidump.plan_ranges``: runs of whole bz2 streams of about
    ``split_bytes`` bytes with an index, else the whole file)."""

    def __init__(self, split_bytes: int) -> None:
        self.split_bytes = split_bytes

    def process(self, dump: DumpInput) -> Iterator[DumpRange]:
        ranges = plan_ranges(dump.path, fileio.open_read, dump.index, self.split_bytes)
        _counter("dump_ranges").inc(len(ranges))
        yield from ranges


class ExtractPages(beam.DoFn):
    """Pages of one range -> partial n-gram counts, links, article titles and redirects (tagged outputs), plus
    a tally of what happened to the range's pages (``tally``: (name, n)) and every rejected page
    (``rejected``: (reason, (path, offset, page_id, title, why))), so that stats.json is computed from data.

    Each page is parsed under a time and memory budget (``parse_budget.BoundedParser``): a page over it is
    skipped and counted as ``pages_parse_timeout``, and the range goes on.
    """

    OUTPUTS = ("links", "articles", "redirects", "tally", "rejected")

    def __init__(self, config: QueryConfig, cache_dir: str) -> None:
        self.parse_seconds = config.parse_seconds
        self.parse_memory_bytes = config.parse_memory_bytes
        self.sketch_width = config.sketch_width
        self.cache_dir = cache_dir
        self.parser: BoundedParser | None = None

    def setup(self) -> None:
        self.pages_read = _counter("pages_read")
        self.skipped = {reason: _counter(reason) for reason in SKIP_REASONS}
        self.articles = _counter("articles")
        self.articles_empty = _counter("articles_without_text")
        self.parser = BoundedParser(self.parse_seconds, self.parse_memory_bytes)

    def teardown(self) -> None:
        if self.parser is not None:
            self.parser.close()

    def process(self, rng: DumpRange) -> Iterator:
        with fileio.atomic_create(text_cache_path(self.cache_dir, rng)) as raw, \
                gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0) as cache:
            yield from self._pages(rng, cache)

    def _pages(self, rng: DumpRange, cache) -> Iterator:
        unigrams: Counter[str] = Counter()
        bigrams: Counter[str] = Counter()
        tally: Counter[str] = Counter()
        sketches = (CountMinSketch(self.sketch_width // 4), CountMinSketch(self.sketch_width))
        for page in read_pages(rng, fileio.open_read):
            tally["pages_read"] += 1
            self.pages_read.inc()
            if page.problem is not None:
                yield self._skip("pages_malformed", page, page.problem, tally)
                continue
            if page.ns != 0:
                self._count("pages_not_main_namespace", tally)
                continue
            title = canonical_title(page.title)
            if page.redirect is not None:
                self._count("pages_redirect", tally)
                yield TaggedOutput("redirects", (title, canonical_title(page.redirect)))
                continue
            assert self.parser is not None  # set up in setup()
            try:
                article = self.parser.parse(page.text)
            except ParseTimeout as err:
                yield self._skip("pages_parse_timeout", page, str(err), tally)
                continue
            except WikitextError as err:
                reason = "pages_parse_timeout" if "memory limit" in str(err) else "pages_wikitext_rejected"
                yield self._skip(reason, page, str(err), tally)
                continue
            tally["articles"] += 1
            self.articles.inc()
            tokens = qs.count_ngrams(article.text, unigrams, bigrams)
            tally["tokens"] += tokens
            if tokens == 0:
                tally["articles_without_text"] += 1
                self.articles_empty.inc()
            else:
                cache.write(article.text.encode() + b"\n")  # pass 2 counts from this text
            for target in article.links:
                if target != title:
                    yield TaggedOutput("links", (target, 1))
            if article.disambiguation:
                self._count("titles_disambiguation", tally)
            elif (query := qs.title_query(title)) is None:
                self._count("titles_without_letters", tally)
            else:
                yield TaggedOutput("articles", (title, query))
            if len(unigrams) + len(bigrams) >= FLUSH_KEYS:
                _sketch(sketches, unigrams, bigrams)
        if tally["pages_read"] == 0:
            self._count("dump_ranges_empty", tally)
            LOG.warning("%s: no <page> in bytes %d..%s (an empty dump?)", rng.path, rng.start, rng.end or "end")
        else:
            LOG.info("%s: read %d pages from bytes %d..%s", rng.path, tally["pages_read"], rng.start,
                     rng.end or "end")
        _sketch(sketches, unigrams, bigrams)
        progress.reporter("build-queries", "pages").add(tally["pages_read"])
        tally["dump_ranges"] += 1  # each planned range is extracted once (a retried bundle's outputs are dropped)
        yield sketches
        for name in ("pages_read", "articles", "articles_without_text", "tokens", "dump_ranges", *SKIP_REASONS):
            yield TaggedOutput("tally", (name, tally[name]))  # zeros too: every name is in the totals

    def _count(self, reason: str, tally: Counter[str]) -> None:
        tally[reason] += 1
        self.skipped[reason].inc()

    def _skip(self, reason: str, page, why: str, tally: Counter[str]) -> TaggedOutput:
        self._count(reason, tally)
        LOG.warning("%s: skipped page id %s %r (bz2 stream / chunk at byte %d): %s",
                    page.path, page.page_id, page.title, page.offset, why)
        return TaggedOutput("rejected", (reason, (page.path, page.offset, page.page_id, page.title, why)))


def text_cache_path(cache_dir: str, rng: DumpRange) -> str:
    """Where pass 1 leaves a range's plain text for pass 2 (a name fixed by the range: a retry overwrites it)."""
    key = hashlib.sha1(f"{rng.path}\0{rng.start}\0{rng.end}".encode()).hexdigest()[:20]
    return fileio.join(cache_dir, f"text-{key}.txt.gz")


def _sketch(sketches: tuple[CountMinSketch, CountMinSketch], unigrams: Counter[str], bigrams: Counter[str]) -> None:
    """Add partial counts to the (unigram, bigram) sketches and clear them."""
    for sketch, counts in zip(sketches, (unigrams, bigrams), strict=True):
        sketch.add(list(counts), counts.values())
        counts.clear()


def sketch_chunks(sketches: tuple[CountMinSketch, CountMinSketch]) -> Iterator[tuple[tuple, object]]:
    """A range's (unigram, bigram) sketches -> ((sketch index, width, depth, start), 1 MiB slice) records: one
    whole sketch is 32 MiB at the default width, more than Flink's sorter takes as one record."""
    for index, sketch in enumerate(sketches):
        for start, counters in sketch.chunks():
            yield (index, sketch.width, sketch.depth, start), counters


class SumChunks(beam.CombineFn):
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


def assemble_sketches(chunks: dict[tuple, object]) -> tuple[CountMinSketch, CountMinSketch] | None:
    """The merged sketch chunks (side input) -> the (unigram, bigram) sketches; None when there is no range."""
    if not chunks:
        return None
    parts: dict[tuple[int, int, int], dict] = {}
    for (index, width, depth, start), counters in chunks.items():
        parts.setdefault((index, width, depth), {})[start] = counters
    shapes = sorted(parts)
    if [index for index, _, _ in shapes] != [0, 1]:  # every range sketches with the same widths
        raise ValueError(f"expected one unigram and one bigram sketch shape, got {shapes}")
    unigram, bigram = (CountMinSketch.from_chunks(width, depth, parts[(index, width, depth)])
                       for index, width, depth in shapes)
    return unigram, bigram


class CountKept(beam.DoFn):
    """Pass 2: a range's cached text -> exact counts of the n-grams ``qs.keep_ngrams`` keeps (unigrams as the
    main output, ``bigrams`` tagged). Memory: at most FLUSH_KEYS distinct n-grams before they leave."""

    def __init__(self, cache_dir: str, thresholds: qs.Thresholds) -> None:
        self.cache_dir = cache_dir
        self.thresholds = thresholds

    def process(self, rng: DumpRange, chunks: dict, phrases: frozenset[str]) -> Iterator:
        sketches = assemble_sketches(chunks)
        if sketches is None:
            return
        unigrams: Counter[str] = Counter()
        bigrams: Counter[str] = Counter()
        with fileio.open_read(text_cache_path(self.cache_dir, rng)) as raw, gzip.GzipFile(fileobj=raw) as cache:
            for line in io.TextIOWrapper(cache, encoding="utf-8"):
                qs.count_ngrams(line.rstrip("\n"), unigrams, bigrams)
                if len(unigrams) + len(bigrams) >= FLUSH_KEYS:
                    yield from self._flush(unigrams, bigrams, sketches, phrases)
        yield from self._flush(unigrams, bigrams, sketches, phrases)

    def _flush(self, unigrams, bigrams, sketches, phrases) -> Iterator:
        unigram_sketch, bigram_sketch = sketches
        kept_unigrams, kept_bigrams = qs.keep_ngrams(unigrams, bigrams, unigram_sketch, bigram_sketch,
                                                     self.thresholds, phrases)
        yield from kept_unigrams
        for item in kept_bigrams:
            yield TaggedOutput("bigrams", item)
        unigrams.clear()
        bigrams.clear()


class ReadDumps(beam.PTransform):
    """Dump inputs -> ranges -> (fan out) -> (the ranges, the tagged outputs of ExtractPages: main = sketches)."""

    def __init__(self, dumps: list[DumpInput], config: QueryConfig, cache_dir: str) -> None:
        super().__init__()
        self.dumps = dumps
        self.config = config
        self.cache_dir = cache_dir

    def expand(self, pbegin):
        ranges = (
            pbegin
            | "DumpFiles" >> beam.Create(self.dumps)
            | "PlanRanges" >> beam.ParDo(PlanRanges(self.config.split_bytes))
            | "SpreadRanges" >> beam.Reshuffle()
        )
        pages = ranges | "ExtractPages" >> beam.ParDo(
            ExtractPages(self.config, self.cache_dir)
        ).with_outputs(*ExtractPages.OUTPUTS, main="sketches")
        return ranges, pages


class ReadPageviewFile(beam.DoFn):
    """One pageview file -> (canonical title, views) rows for the chosen project and sites, and its tally
    (``files`` output: (path, FileTally as a dict)). A file of which no line can be read fails the run."""

    def __init__(self, traffic: Traffic) -> None:
        self.traffic = traffic

    def process(self, path: str) -> Iterator:
        tally = FileTally()
        with fileio.open_read(path) as raw:
            yield from read_pageviews(open_text(raw, path), self.traffic, tally, path)
        _counter("pageview_rows").inc(tally.rows)
        _counter("pageview_lines_malformed").inc(tally.malformed)
        check_readable(path, tally)
        yield TaggedOutput("files", (path, asdict(tally)))


class ReadPageviews(beam.PTransform):
    """Pageview dump files -> (canonical title, total views), and a tally per file (see ReadPageviewFile)."""

    def __init__(self, paths: list[str], traffic: Traffic) -> None:
        super().__init__()
        self.paths = paths
        self.traffic = traffic

    def expand(self, pbegin):
        read = (
            pbegin
            | "PageviewFiles" >> beam.Create(self.paths)
            | "SpreadPageviewFiles" >> beam.Reshuffle()
            | "ReadPageviews" >> beam.ParDo(ReadPageviewFile(self.traffic)).with_outputs("files", main="rows")
        )
        return read.rows | "SumViews" >> beam.CombinePerKey(sum), read.files


# ---- candidates per source ----

def _with_token_count(element) -> list[tuple]:
    """(token, {count: [c], rows: [(bigram, n, ...)]}) -> each row with the token's count appended."""
    _, grouped = element
    return query_stats.with_token_count(grouped["count"], grouped["rows"])


def _key_by_token(row: tuple, position: int) -> tuple[str, tuple]:
    return row[0].split(" ")[position], row


class ScoreBigrams(beam.PTransform):
    """Bigram counts -> bigram Candidates scored by NPMI: two joins with the unigram counts, no big side input."""

    def __init__(self, unigram_counts, total_tokens, thresholds: qs.Thresholds) -> None:
        super().__init__()
        self.unigram_counts = unigram_counts
        self.total_tokens = total_tokens
        self.thresholds = thresholds

    def expand(self, bigram_counts):
        eligible = bigram_counts | "EligibleBigrams" >> beam.Filter(
            lambda kv, t: qs.bigram_is_eligible(kv[0], kv[1], t), self.thresholds
        )
        with_left = (
            {"count": self.unigram_counts, "rows": eligible | "KeyByLeft" >> beam.Map(_key_by_token, 0)}
            | "JoinLeftCount" >> beam.CoGroupByKey()
            | "AddLeftCount" >> beam.FlatMap(_with_token_count)
        )
        return (
            {"count": self.unigram_counts, "rows": with_left | "KeyByRight" >> beam.Map(_key_by_token, 1)}
            | "JoinRightCount" >> beam.CoGroupByKey()
            | "AddRightCount" >> beam.FlatMap(_with_token_count)
            | "Npmi" >> beam.Map(lambda row, total: qs.bigram_candidate(*row, total), self.total_tokens)
        )


def _resolve_redirect(element) -> list[tuple[str, int]]:
    """(title, {traffic: [...], redirect: [target...]}) -> (the title it lands on, its traffic)."""
    title, grouped = element
    landed = query_stats.landing_title(title, grouped["traffic"], grouped["redirect"])
    return [] if landed is None else [landed]


def _article_scores(element) -> list[tuple[str, int]]:
    """(title, {article: [query], traffic: [...]}) -> (query, traffic) for a title that is an article."""
    _, grouped = element
    return query_stats.article_scores(grouped["article"], grouped["traffic"])


class ScoreTitles(beam.PTransform):
    """Article titles + traffic (inlinks or pageviews, keyed by title) + redirects -> (query, score)."""

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


class KeepPhrases(beam.DoFn):
    """Keep the (phrase, count) rows of a phrase set: WordNet's lemmas, fixed, or the titles that could be
    selected, as a side input (at most the sum of the budgets, so a few MB)."""

    def __init__(self, phrases: frozenset[str] = frozenset()) -> None:
        self.phrases = phrases

    def process(self, row: tuple[str, int], phrases: frozenset[str] | None = None) -> Iterator[tuple[str, int]]:
        if row[0] in (self.phrases if phrases is None else phrases):
            yield row


class TitleCandidates(beam.PTransform):
    """ExtractPages' outputs (``links``, ``articles``, ``redirects``) -> (the best title candidates as one list,
    how many were eligible, the pageview files' tallies). Titles rank by pageviews when files are given, else by
    incoming links; a redirect's traffic counts for its target (``wit_builder.queries.stats.landing_title``)."""

    def __init__(self, pageviews: list[str], traffic: Traffic, n: int) -> None:
        super().__init__()
        self.pageviews, self.traffic, self.n = pageviews, traffic, n

    def expand(self, pages):
        pbegin = beam.pvalue.PBegin(pages["links"].pipeline)
        if self.pageviews:
            traffic, pageview_files = pbegin | "Pageviews" >> ReadPageviews(self.pageviews, self.traffic)
        else:
            traffic = pages["links"] | "CountInlinks" >> beam.CombinePerKey(sum)
            pageview_files = pbegin | "NoPageviewFiles" >> beam.Create([])
        best, count = (
            pages["articles"]
            | "ScoreTitles" >> ScoreTitles(traffic, pages["redirects"])
            | "TitleCandidates" >> beam.MapTuple(lambda q, score: qs.Candidate(q, 0, float(score)))
            | "Best_title" >> Best(self.n, "title")
        )
        return best, count, pageview_files


class Best(beam.PTransform):
    """The ``n`` best candidates of a source as one list, and how many were eligible."""

    def __init__(self, n: int, source: str) -> None:
        super().__init__()
        self.n = n
        self.source = source

    def expand(self, candidates):
        key = qs.RANK_KEYS[self.source]
        best = candidates | "Top" >> beam.combiners.Top.Of(self.n, key=key, reverse=True)
        eligible = candidates | "CountEligible" >> beam.combiners.Count.Globally()
        return best, eligible


# ---- selection and outputs ----

DETAILS_JSON = "_build_queries_details.json"  # written by the pipeline, merged into stats.json, then removed


class WriteQueries(beam.DoFn):
    """Select from the pruned candidates of every source and write queries.parquet and queries.txt, and the
    data-derived figures for stats.json (``DETAILS_JSON``)."""

    def __init__(self, out_dir: str, budgets: dict[str, int], wordnet: list[tuple[str, float]],
                 traffic: Traffic | None) -> None:
        self.out_dir = out_dir
        self.budgets = budgets
        self.wordnet = wordnet
        self.traffic = traffic  # None: titles rank by inlinks

    def process(
        self, _, best: dict, eligible: dict, phrase_counts: dict, total_tokens: int, dumps: list[str],
        tally: dict, rejected: dict, pageview_files: list,
    ) -> Iterator[int]:
        if total_tokens == 0:  # fail loudly rather than write a quietly empty list
            raise DumpError(query_stats.no_text_message(dumps, tally, rejected))
        files = dict(sorted(pageview_files))
        query_stats.check_pageview_rows(files, self.traffic)
        titles = [c._replace(count=qs.phrase_count(c.query, phrase_counts)) for c in best["title"]]
        wordnet = [qs.Candidate(q, qs.phrase_count(q, phrase_counts), score) for q, score in self.wordnet]
        eligible = {**eligible, "wordnet": len(wordnet)}
        rows, summary = qs.select({**best, "title": titles, "wordnet": wordnet}, self.budgets)
        for source in SOURCES:
            _counter(f"eligible_{source}").inc(eligible.get(source, 0))
            _counter(f"selected_{source}").inc(summary[source].selected)
            _counter(f"already_taken_{source}").inc(summary[source].already_taken)
        table = pa.Table.from_pylist(
            [{"query": c.query, "source": source, "count": c.count, "score": c.score} for source, c in rows],
            schema=QUERIES,
        )
        fileio.write_parquet(fileio.join(self.out_dir, QUERIES_PARQUET), table)
        fileio.write_bytes(fileio.join(self.out_dir, QUERIES_TXT), "".join(f"{c.query}\n" for _, c in rows).encode())
        details = query_stats.details_document(tally, total_tokens, query_stats.selection_counts(eligible, summary),
                                               rejected, self.traffic, files)
        fileio.write_bytes(fileio.join(self.out_dir, DETAILS_JSON), json.dumps(details).encode())
        yield len(rows)


class BuildQueries(beam.PTransform):
    """Stage 1 as one composite: dumps (+ pageviews, WordNet candidates) -> queries.parquet, queries.txt."""

    def __init__(self, dumps: list[DumpInput], out_dir: str, config: QueryConfig,
                 pageviews: list[str], wordnet: list[tuple[str, float]]) -> None:
        super().__init__()
        self.dumps = dumps
        self.out_dir = out_dir
        self.config = config
        self.pageviews = pageviews
        self.wordnet = wordnet

    def expand(self, pbegin):
        budgets = self.config.budgets.per_source()
        thresholds = self.config.thresholds
        cache_dir = fileio.join(self.out_dir, TEXT_CACHE)
        ranges, pages = pbegin | "ReadDumps" >> ReadDumps(self.dumps, self.config, cache_dir)
        sketches = (pages.sketches
                    | "SketchChunks" >> beam.FlatMap(sketch_chunks)
                    | "MergeSketches" >> beam.CombinePerKey(SumChunks()))
        tally = pages.tally | "SumTally" >> beam.CombinePerKey(sum)
        rejected = pages.rejected | "FirstRejected" >> beam.combiners.Top.SmallestPerKey(REJECTED_EXAMPLES)
        total_tokens = (
            pages.tally
            | "TokenTally" >> beam.Filter(lambda kv: kv[0] == "tokens")
            | "TokenCounts" >> beam.Values()
            | "TotalTokens" >> beam.CombineGlobally(sum)
        )
        # The best (budget + budgets before it) candidates are all that selection can ever need.
        before = query_stats.prune_sizes(budgets)
        best_title, count, pageview_files = (
            {"links": pages.links, "articles": pages.articles, "redirects": pages.redirects}
            | "Titles" >> TitleCandidates(self.pageviews, self.config.traffic, before["title"])
        )
        best = {"title": best_title}
        eligible = [count | "Tag_title" >> beam.Map(lambda n: ("title", n))]

        # Pass 2: exact counts of the n-grams the sketches let through, and of the one- and two-token titles
        # that could be selected and the WordNet lemmas (small, known before pass 2), from the cached text.
        title_phrases = best["title"] | "TitlePhrases" >> beam.Map(query_stats.short_phrases)
        wordnet_phrases = frozenset(q for q, _ in self.wordnet if q.count(" ") <= 1)
        phrases = title_phrases | "AllPhrases" >> beam.Map(lambda titles, w: titles | w, wordnet_phrases)
        kept = ranges | "CountKept" >> beam.ParDo(
            CountKept(cache_dir, thresholds), AsDict(sketches), AsSingleton(phrases)
        ).with_outputs("bigrams", main="unigrams")
        unigram_counts = kept.unigrams | "SumUnigrams" >> beam.CombinePerKey(sum)
        bigram_counts = kept.bigrams | "SumBigrams" >> beam.CombinePerKey(sum)
        unigrams = unigram_counts | "UnigramCandidates" >> beam.FlatMap(
            lambda kv, t: [c] if (c := qs.unigram_candidate(kv[0], kv[1], t)) else [], thresholds
        )
        bigrams = bigram_counts | "ScoreBigrams" >> ScoreBigrams(unigram_counts, AsSingleton(total_tokens), thresholds)
        for source, candidates in (("unigram", unigrams), ("bigram", bigrams)):
            best[source], count = candidates | f"Best_{source}" >> Best(before[source], source)
            eligible.append(count | f"Tag_{source}" >> beam.Map(lambda n, s: (s, n), source))
        sources = ("unigram", "bigram", "title")

        phrase_counts = (unigram_counts, bigram_counts) | "PhraseCounts" >> beam.Flatten()
        looked_up = (
            phrase_counts | "TitleCounts" >> beam.ParDo(KeepPhrases(), AsSingleton(title_phrases)),
            phrase_counts | "WordNetCounts" >> beam.ParDo(KeepPhrases(wordnet_phrases)),
        ) | "LookedUpCounts" >> beam.Flatten()
        best_lists = (
            [best[s] | f"Key_{s}" >> beam.Map(lambda top, s: (s, top), s) for s in sources]
            | "AllSources" >> beam.Flatten()
        )
        return (
            pbegin
            | "Once" >> beam.Create([None])
            | "SelectAndWrite" >> beam.ParDo(
                WriteQueries(self.out_dir, budgets, self.wordnet, self.config.traffic if self.pageviews else None),
                AsDict(best_lists),
                AsDict(eligible | "AllEligible" >> beam.Flatten()),
                AsDict(looked_up),
                AsSingleton(total_tokens),
                [d.path for d in self.dumps],
                AsDict(tally),
                AsDict(rejected),
                AsList(pageview_files),
            )
        )


# ---- the command ----

@dataclass(frozen=True)
class BuildQueriesOptions:
    """``wit build-queries``'s settings; the flags, defaults and help are generated from these fields."""

    dump: tuple[str, ...] = option(
        help="MediaWiki XML dump (.xml, .xml.bz2, multistream .xml.bz2 with its -index.txt[.bz2] beside it); "
             "repeat or use globs", metavar="PATH")
    out: str = option(help="output folder (local path or gs://, s3://, ...)")
    wordnet_dir: str | None = option(None, help="WordNet 3.0 dict folder, e.g. /usr/share/wordnet; without it no "
                                                "WordNet queries are built")
    pageviews: tuple[str, ...] = option((), metavar="PATH",
                                        help="Wikimedia pageview files: hourly pageviews-*.gz, daily or monthly "
                                             "pageview_complete (.gz/.bz2/plain; repeat or globs) to rank titles "
                                             "by traffic; without them titles rank by incoming links")
    min_unigram_count: int = option(qs.Thresholds.min_unigram_count, unit="occurrences",
                                    help="occurrences a word needs to become a query")
    min_bigram_count: int = option(qs.Thresholds.min_bigram_count, unit="co-occurrences",
                                   help="co-occurrences a bigram needs before its NPMI is trusted")
    max_queries: int = option(qs.Budgets.max_queries, unit="queries",
                              help="most queries in all; the sources' budgets scale down to fit")
    unigram_budget: int = option(qs.Budgets.unigram, unit="queries", help="most unigram queries (MetaCLIP's split)")
    bigram_budget: int = option(qs.Budgets.bigram, unit="queries", help="most bigram queries (MetaCLIP's split)")
    title_budget: int = option(qs.Budgets.title, unit="queries", help="most title queries (MetaCLIP's split)")
    wordnet_budget: int = option(qs.Budgets.wordnet, unit="queries", help="most wordnet queries (MetaCLIP's split)")
    split_bytes: int = option(DEFAULT_TARGET_BYTES, unit="bytes",
                              help="bytes of a multistream dump per parallel read (64 MiB)")
    parse_timeout: float = option(DEFAULT_PARSE_SECONDS, unit="s", metavar="SECONDS",
                                  help="most seconds one page's wikitext may take to parse; a page over it is "
                                       "skipped and counted as pages_parse_timeout")
    parse_memory_mb: int = option(DEFAULT_PARSE_MEMORY_BYTES >> 20, unit="MiB", metavar="MiB",
                                  help="address-space limit of the page parser process; a page over it is "
                                       "skipped like a timeout")
    sketch_width: int = option(DEFAULT_SKETCH_WIDTH, unit="counters", metavar="COUNTERS",
                               help="counters per row of the bigram count-min sketch (4 rows of 8-byte counters; "
                                    "the unigram sketch has a quarter); wider = fewer n-grams below the thresholds "
                                    "counted exactly in pass 2 (the default is 32 MiB; full enwiki wants ~2^27, "
                                    "docs/deploy.md)")
    wiki: str = option("en.wikipedia", help="project whose --pageviews rows count, as LANGUAGE.PROJECT")
    pageview_sites: str = option("desktop,mobile", help="comma-separated sites whose --pageviews rows count: "
                                                        "desktop, mobile (mobile web and apps)")

    def __post_init__(self) -> None:
        self.config()  # every threshold, budget and limit checked before any work

    def config(self) -> QueryConfig:
        """The validated QueryConfig of these options (ValueError naming the flag of a bad setting)."""
        return QueryConfig(
            thresholds=qs.Thresholds(self.min_unigram_count, self.min_bigram_count),
            budgets=qs.Budgets(
                **{source: getattr(self, f"{source}_budget") for source in SOURCES}, max_queries=self.max_queries
            ),
            split_bytes=self.split_bytes,
            parse_seconds=self.parse_timeout,
            parse_memory_bytes=self.parse_memory_mb << 20,
            sketch_width=self.sketch_width,
            traffic=Traffic(self.wiki, frozenset(s.strip() for s in self.pageview_sites.split(",") if s.strip())),
        )


OPTIONS = BuildQueriesOptions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``wit build-queries``' flags (generated from BuildQueriesOptions) to ``parser``."""
    options.add_arguments(parser, OPTIONS)


def _config(args: BuildQueriesOptions) -> QueryConfig:
    return args.config()


def _stats(args: BuildQueriesOptions, config: QueryConfig, dumps: list[DumpInput], pageviews: list[str],
           details: dict, seconds: float) -> dict:
    """stats.json in the declared layout (schemas/stats.py). Every count comes from the pipeline's own data
    (``details``, written by WriteQueries from combined tallies), never from runner metrics."""
    budgets = config.budgets.per_source()
    files = details["traffic"].get("files", {})
    flat, sources = query_stats.stats_counts(details, budgets, SKIP_REASONS)
    inputs = [d.path for d in dumps] + [d.index for d in dumps if d.index] + pageviews
    rows_per_file = {path: f["rows"] for path, f in files.items()}
    return stats_schema.envelope(
        "build-queries",
        inputs=[stats_schema.input_entry(p, fileio.sha256_file(p), rows=rows_per_file.get(p)) for p in inputs],
        parameters=options.as_parameters(args, skip=("out",)),
        counts=flat,
        outputs=[stats_schema.output_entry(QUERIES_PARQUET, flat["queries"]),
                 stats_schema.output_entry(QUERIES_TXT, flat["queries"])],
        seconds=seconds,
        details={"wordnet_dir": args.wordnet_dir, "title_traffic": details["traffic"]["source"],
                 "traffic": details["traffic"], "rejected_pages": details["rejected_pages"],
                 "parse_budget": {"seconds": config.parse_seconds, "memory_bytes": config.parse_memory_bytes},
                 "thresholds": asdict(config.thresholds),
                 "budgets": {"requested": asdict(config.budgets), "applied": budgets}, "sources": sources},
    )


def run(args: BuildQueriesOptions, beam_argv: list[str]) -> int:
    """``wit build-queries``: exit 0 done, 2 bad input or settings before any work (one line on stderr); a
    failed run raises StageFailed (the launcher's exit 1) and leaves no queries file."""
    started = time.time()
    try:
        config = _config(args)
        options.check_out_folder(args.out)
        dumps = find_dump_inputs(list(args.dump))
        pageviews = fileio.expand_patterns(args.pageviews, what="--pageviews") if args.pageviews else []
        wordnet = wordnet_candidates(args.wordnet_dir) if args.wordnet_dir else []
        beam_options = launcher.pipeline_options(beam_argv)
    except (ValueError, FileNotFoundError, WordNetError) as err:
        print(f"wit build-queries: error: {err}", file=sys.stderr)
        return 2
    for d in dumps:
        print(f"dump {d.path}" + (f" (multistream, index {d.index})" if d.index else ""), flush=True)
    fileio.makedirs(args.out)
    pipeline = beam.Pipeline(options=beam_options)
    _ = pipeline | "BuildQueries" >> BuildQueries(dumps, args.out, config, pageviews, wordnet)
    try:
        result = launcher.run_pipeline(pipeline, args.out)
    except StageFailed as err:
        raise StageFailed(f"{err}. No output was written.") from err
    finally:
        cache_dir = fileio.join(args.out, TEXT_CACHE)
        if fileio.exists(cache_dir):  # pass 1's text cache: only pass 2 needs it
            FileSystems.delete([cache_dir])
    details_path = fileio.join(args.out, DETAILS_JSON)
    details = fileio.read_json(details_path)
    stats = _stats(args, config, dumps, pageviews, details, time.time() - started)
    differ = {k: (stats["counts"].get(k, 0), v) for k, v in counting.counters(result, NAMESPACE).items()
              if stats["counts"].get(k, 0) != v}
    if differ:  # metrics are for monitoring; a retried bundle can inflate them
        LOG.info("monitoring counters differ from the data-derived counts (counts, counter): %s", differ)
    fileio.write_json(fileio.join(args.out, STATS_JSON), stats)
    FileSystems.delete([details_path])
    counts = stats["counts"]
    per_source = ", ".join(f"{s} {v['selected']}" for s, v in stats["details"]["sources"].items())
    bad = ("pages_malformed", "pages_wikitext_rejected", "pages_parse_timeout", "dump_ranges_empty",
           "pageview_lines_malformed")
    skipped = sum(counts[reason] for reason in bad)
    print(progress.summary_line("build-queries", [
        f"{counts['queries']:,} queries ({per_source}) from {counts['articles']:,} articles in {len(dumps)} dump(s)",
        f"{skipped:,} bad records skipped"], time.time() - started, args.out), flush=True)
    return 0
