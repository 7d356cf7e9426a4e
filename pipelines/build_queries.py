"""``wit build-queries``: stage 1, the query list from Wikipedia dumps, pageviews and WordNet.

The rules (what counts as text, eligibility, scores, budgets) live in ``wit_builder``; this module wires them:

    dump files -> ranges (multistream: runs of bz2 streams) -> Reshuffle -> pages -> plain text
      -> unigram / bigram counts (CombinePerKey)       -> unigram candidates, bigram candidates (NPMI)
      -> links (or pageviews), redirects, titles       -> title candidates
    WordNet lemmas (read before the pipeline)          -> wordnet candidates (+ counts of their phrases)
    each source pruned to the best it could take (Top) -> select -> queries.parquet, queries.txt
    counters                                           -> stats.json (after the run)
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import apache_beam as beam
import pyarrow as pa
from apache_beam.pvalue import AsDict, AsSingleton, TaggedOutput

from pipelines import common
from schemas import stats as stats_schema
from schemas.queries import QUERIES, QUERIES_PARQUET, QUERIES_TXT, SOURCES, STATS_JSON
from wit_builder import options, progress
from wit_builder import query_selection as qs
from wit_builder.errors import StageFailed
from wit_builder.options import option
from wit_builder.pageviews import open_text, read_pageviews
from wit_builder.wikidump import (
    DEFAULT_TARGET_BYTES,
    DumpError,
    DumpRange,
    index_candidates,
    is_index_file,
    plan_ranges,
    read_pages,
)
from wit_builder.wikitext import WikitextError, canonical_title, parse_article
from wit_builder.wordnet_source import WordNetError, wordnet_candidates

NAMESPACE = "build_queries"
LOG = logging.getLogger(__name__)
# Why a page, range or title is not used; each is a counter and a key of stats.json's "skipped".
SKIP_REASONS = (
    "pages_malformed",  # a <page> without title, ns or id
    "pages_not_main_namespace",
    "pages_redirect",  # not text; its traffic counts for its target
    "pages_wikitext_rejected",  # mwparserfromhell failed, or the text is over MediaWiki's 2 MiB limit
    "titles_disambiguation",  # the article is text, its title names no single thing
    "titles_without_letters",  # "1990", "!!!"
    "dump_ranges_empty",  # an empty dump (or a range of one without pages)
)
# Partial n-gram counts leave a worker when this many distinct keys have piled up (memory stays flat).
FLUSH_KEYS = 200_000


@dataclass(frozen=True)
class QueryConfig:
    thresholds: qs.Thresholds
    budgets: qs.Budgets
    split_bytes: int = DEFAULT_TARGET_BYTES

    def __post_init__(self) -> None:
        if self.split_bytes < 1:
            raise ValueError(f"--split-bytes must be >= 1, got {self.split_bytes}")


# ---- reading dumps ----

@dataclass(frozen=True)
class DumpInput:
    path: str
    index: str | None  # the multistream index beside it, when there is one


def find_dump_inputs(patterns: list[str]) -> list[DumpInput]:
    """Dump files matching ``patterns``; index files among them are paired with their dumps, not read as dumps."""
    paths = common.expand_patterns(patterns, what="--dump")
    dumps = [p for p in paths if not is_index_file(p)]
    if not dumps:
        raise FileNotFoundError(f"--dump {patterns!r} names only multistream index files, no dump")
    inputs = []
    for path in dumps:
        index = next((c for c in index_candidates(path) if common.exists(c)), None)
        inputs.append(DumpInput(path, index))
    return inputs


class PlanRanges(beam.DoFn):
    def __init__(self, split_bytes: int) -> None:
        self.split_bytes = split_bytes

    def process(self, dump: DumpInput) -> Iterator[DumpRange]:
        yield from plan_ranges(dump.path, common.open_read, dump.index, self.split_bytes)


class ExtractPages(common.CountingDoFn):
    """Pages of one range -> partial n-gram counts, links, article titles and redirects (tagged outputs)."""

    OUTPUTS = ("bigrams", "links", "articles", "redirects", common.COUNTS)
    namespace = NAMESPACE

    def setup(self) -> None:
        self.pages_read = self.counter("pages_read")
        self.skipped = {reason: self.counter(reason) for reason in SKIP_REASONS}
        self.articles = self.counter("articles")
        self.articles_empty = self.counter("articles_without_text")

    def process(self, rng: DumpRange) -> Iterator:
        self.count("dump_ranges")  # each planned range is extracted exactly once
        unigrams: Counter[str] = Counter()
        bigrams: Counter[str] = Counter()
        pages = 0
        for page in read_pages(rng, common.open_read):
            pages += 1
            self.pages_read.inc()
            if page.problem is not None:
                self._skip("pages_malformed", page, page.problem)
                continue
            if page.ns != 0:
                self.skipped["pages_not_main_namespace"].inc()
                continue
            title = canonical_title(page.title)
            if page.redirect is not None:
                self.skipped["pages_redirect"].inc()
                yield TaggedOutput("redirects", (title, canonical_title(page.redirect)))
                continue
            try:
                article = parse_article(page.text)
            except WikitextError as err:
                self._skip("pages_wikitext_rejected", page, str(err))
                continue
            self.articles.inc()
            if qs.count_ngrams(article.text, unigrams, bigrams) == 0:
                self.articles_empty.inc()
            for target in article.links:
                if target != title:
                    yield TaggedOutput("links", (target, 1))
            if article.disambiguation:
                self.skipped["titles_disambiguation"].inc()
            elif (query := qs.title_query(title)) is None:
                self.skipped["titles_without_letters"].inc()
            else:
                yield TaggedOutput("articles", (title, query))
            if len(unigrams) + len(bigrams) >= FLUSH_KEYS:
                yield from self._flush(unigrams, bigrams)
        progress.reporter("build-queries", "pages").add(pages)
        if pages == 0:
            self.skipped["dump_ranges_empty"].inc()
            LOG.warning("%s: no <page> in bytes %d..%s (an empty dump?)", rng.path, rng.start, rng.end or "end")
        else:
            LOG.info("%s: read %d pages from bytes %d..%s", rng.path, pages, rng.start, rng.end or "end")
        yield from self._flush(unigrams, bigrams)

    def _skip(self, reason: str, page, why: str) -> None:
        self.skipped[reason].inc()
        LOG.warning("%s: skipped page id %s %r (bz2 stream / chunk at byte %d): %s",
                    page.path, page.page_id, page.title, page.offset, why)

    @staticmethod
    def _flush(unigrams: Counter[str], bigrams: Counter[str]) -> Iterator:
        yield from unigrams.items()
        for item in bigrams.items():
            yield TaggedOutput("bigrams", item)
        unigrams.clear()
        bigrams.clear()


class ReadDumps(beam.PTransform):
    """Dump inputs -> ranges -> (fan out) -> extracted pages, as tagged outputs of ExtractPages."""

    def __init__(self, dumps: list[DumpInput], split_bytes: int) -> None:
        super().__init__()
        self.dumps = dumps
        self.split_bytes = split_bytes

    def expand(self, pbegin):
        return (
            pbegin
            | "DumpFiles" >> beam.Create(self.dumps)
            | "PlanRanges" >> beam.ParDo(PlanRanges(self.split_bytes))
            | "SpreadRanges" >> beam.Reshuffle()
            | "ExtractPages" >> beam.ParDo(ExtractPages()).with_outputs(*ExtractPages.OUTPUTS, main="unigrams")
        )


class ReadPageviewFile(common.CountingDoFn):
    """A pageview dump file -> (canonical title, views) rows; malformed lines are counted."""

    namespace = NAMESPACE

    def process(self, path: str) -> Iterator[tuple[str, int]]:
        malformed = self.counter("pageview_lines_malformed")
        rows = self.counter("pageview_rows")
        with common.open_read(path) as raw:
            for parsed in read_pageviews(open_text(raw, path)):
                if isinstance(parsed, str):
                    malformed.inc()
                else:
                    rows.inc()
                    yield parsed


class ReadPageviews(beam.PTransform):
    """Pageview dump files -> {"views": (canonical title, total views), COUNTS: (name, n)}."""

    def __init__(self, paths: list[str]) -> None:
        super().__init__()
        self.paths = paths

    def expand(self, pbegin):
        read = (
            pbegin
            | "PageviewFiles" >> beam.Create(self.paths)
            | "SpreadPageviewFiles" >> beam.Reshuffle()
            | "ReadPageviews" >> beam.ParDo(ReadPageviewFile()).with_outputs(common.COUNTS, main="rows")
        )
        return {"views": read.rows | "SumViews" >> beam.CombinePerKey(sum), common.COUNTS: read[common.COUNTS]}


# ---- candidates per source ----

def _with_token_count(element) -> Iterator[tuple]:
    """(token, {count: [c], rows: [(bigram, n, ...)]}) -> each row with the token's count appended."""
    _, grouped = element
    count = grouped["count"][0] if grouped["count"] else 0
    for row in grouped["rows"]:
        yield (*row, count)


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


def _resolve_redirect(element) -> Iterator[tuple[str, int]]:
    """(title, {traffic: [...], redirect: [target...]}) -> (the title it lands on, its traffic)."""
    title, grouped = element
    traffic = sum(grouped["traffic"])
    if traffic:
        targets = sorted(grouped["redirect"])
        yield (targets[0] if targets else title), traffic


def _article_scores(element) -> Iterator[tuple[str, int]]:
    """(title, {article: [query], traffic: [...]}) -> (query, traffic) for a title that is an article."""
    _, grouped = element
    for query in sorted(set(grouped["article"])):
        yield query, sum(grouped["traffic"])


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


def _short_phrases(candidates: list[qs.Candidate]) -> frozenset[str]:
    """The one- and two-token queries among ``candidates``: the ones whose count can be looked up."""
    return frozenset(c.query for c in candidates if c.query.count(" ") <= 1)


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

class WriteQueries(common.CountingDoFn):
    """Select from the pruned candidates of every source and write queries.parquet and queries.txt."""

    def __init__(self, out_dir: str, budgets: dict[str, int], wordnet: list[tuple[str, float]]) -> None:
        self.out_dir = out_dir
        self.budgets = budgets
        self.wordnet = wordnet

    namespace = NAMESPACE

    def process(
        self, _, best: dict, eligible: dict, phrase_counts: dict, total_tokens: int, dumps: list[str]
    ) -> Iterator[int]:
        if total_tokens == 0:  # fail loudly rather than write a quietly empty list
            raise DumpError(f"no main-namespace article text in the dumps {dumps}: nothing to build queries from")
        titles = [c._replace(count=qs.phrase_count(c.query, phrase_counts)) for c in best["title"]]
        wordnet = [qs.Candidate(q, qs.phrase_count(q, phrase_counts), score) for q, score in self.wordnet]
        eligible = {**eligible, "wordnet": len(wordnet)}
        rows, summary = qs.select({**best, "title": titles, "wordnet": wordnet}, self.budgets)
        for source in SOURCES:
            self.count(f"eligible_{source}", eligible.get(source, 0))
            self.count(f"selected_{source}", summary[source].selected)
            self.count(f"already_taken_{source}", summary[source].already_taken)
        table = pa.Table.from_pylist(
            [{"query": c.query, "source": source, "count": c.count, "score": c.score} for source, c in rows],
            schema=QUERIES,
        )
        common.write_parquet(common.join(self.out_dir, QUERIES_PARQUET), table)
        common.write_bytes(common.join(self.out_dir, QUERIES_TXT), "".join(f"{c.query}\n" for _, c in rows).encode())
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
        pages = pbegin | "ReadDumps" >> ReadDumps(self.dumps, self.config.split_bytes)
        unigram_counts = pages.unigrams | "SumUnigrams" >> beam.CombinePerKey(sum)
        bigram_counts = pages.bigrams | "SumBigrams" >> beam.CombinePerKey(sum)
        total_tokens = unigram_counts | "Values" >> beam.Values() | "TotalTokens" >> beam.CombineGlobally(sum)

        unigrams = unigram_counts | "UnigramCandidates" >> beam.FlatMap(
            lambda kv, t: [c] if (c := qs.unigram_candidate(kv[0], kv[1], t)) else [], thresholds
        )
        bigrams = bigram_counts | "ScoreBigrams" >> ScoreBigrams(unigram_counts, AsSingleton(total_tokens), thresholds)

        counts = [pages[common.COUNTS]]
        if self.pageviews:
            pageviews = pbegin | "Pageviews" >> ReadPageviews(self.pageviews)
            traffic = pageviews["views"]
            counts.append(pageviews[common.COUNTS])
        else:
            traffic = pages.links | "CountInlinks" >> beam.CombinePerKey(sum)
        title_scores = pages.articles | "ScoreTitles" >> ScoreTitles(traffic, pages.redirects)
        titles = title_scores | "TitleCandidates" >> beam.MapTuple(lambda q, score: qs.Candidate(q, 0, float(score)))

        # Each source can lose at most as many candidates to earlier sources as those took, so the best
        # (budget + budgets before it) candidates are all that selection can ever need.
        sources = {"unigram": unigrams, "bigram": bigrams, "title": titles}
        best, eligible, before = {}, [], 0
        for source in sources:
            before += budgets[source]
            best[source], count = sources[source] | f"Best_{source}" >> Best(before, source)
            eligible.append(count | f"Tag_{source}" >> beam.Map(lambda n, s: (s, n), source))

        # Counts of the one- and two-token titles that could be selected and of the WordNet lemmas (small,
        # known up front), picked out of the n-gram counts: no join of every n-gram with every title.
        phrase_counts = (unigram_counts, bigram_counts) | "PhraseCounts" >> beam.Flatten()
        title_phrases = best["title"] | "TitlePhrases" >> beam.Map(_short_phrases)
        wordnet_phrases = frozenset(q for q, _ in self.wordnet if q.count(" ") <= 1)
        looked_up = (
            phrase_counts | "TitleCounts" >> beam.ParDo(KeepPhrases(), AsSingleton(title_phrases)),
            phrase_counts | "WordNetCounts" >> beam.ParDo(KeepPhrases(wordnet_phrases)),
        ) | "LookedUpCounts" >> beam.Flatten()
        best_lists = (
            [best[s] | f"Key_{s}" >> beam.Map(lambda top, s: (s, top), s) for s in sources]
            | "AllSources" >> beam.Flatten()
        )
        written = (
            pbegin
            | "Once" >> beam.Create([None])
            | "SelectAndWrite" >> beam.ParDo(
                WriteQueries(self.out_dir, budgets, self.wordnet),
                AsDict(best_lists),
                AsDict(eligible | "AllEligible" >> beam.Flatten()),
                AsDict(looked_up),
                AsSingleton(total_tokens),
                [d.path for d in self.dumps],
            ).with_outputs(common.COUNTS, main="written")
        )
        # stats.json's counts: summed from the DoFns' COUNTS outputs (exact under retries), not from metrics
        _ = (
            [*counts, written[common.COUNTS]]
            | "AllCounts" >> beam.Flatten()
            | "WriteCounts" >> common.WriteCounts(common.join(self.out_dir, common.COUNTS_FILE))
        )
        return written.written


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
                                        help="Wikimedia pageview dump files (.gz/.bz2/plain; repeat or globs) to "
                                             "rank titles by traffic; without them titles rank by incoming links")
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

    def __post_init__(self) -> None:
        self.config()  # every threshold and budget checked before any work

    def config(self) -> QueryConfig:
        return QueryConfig(
            thresholds=qs.Thresholds(self.min_unigram_count, self.min_bigram_count),
            budgets=qs.Budgets(
                **{source: getattr(self, f"{source}_budget") for source in SOURCES}, max_queries=self.max_queries
            ),
            split_bytes=self.split_bytes,
        )


OPTIONS = BuildQueriesOptions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    options.add_arguments(parser, OPTIONS)


def _config(args: BuildQueriesOptions) -> QueryConfig:
    return args.config()


def _stats(args: BuildQueriesOptions, config: QueryConfig, dumps: list[DumpInput], pageviews: list[str],
           counts: dict[str, int], seconds: float) -> dict:
    """stats.json in the declared layout (schemas/stats.py): per-source table and budgets under ``details``."""
    budgets = config.budgets.per_source()
    inputs = [d.path for d in dumps] + [d.index for d in dumps if d.index] + pageviews
    sources = {
        source: {k: counts.get(f"{k}_{source}", 0) for k in ("eligible", "selected", "already_taken")}
        | {"budget": budgets[source]}
        for source in SOURCES
    }
    names = ("pages_read", "articles", "articles_without_text", "dump_ranges", "pageview_rows",
             *SKIP_REASONS, "pageview_lines_malformed")
    flat = {name: counts.get(name, 0) for name in names}
    flat |= {f"{k}_{source}": v for source, table in sources.items() for k, v in table.items() if k != "budget"}
    flat["queries"] = sum(s["selected"] for s in sources.values())
    return stats_schema.envelope(
        "build-queries",
        inputs=[stats_schema.input_entry(p, common.sha256_file(p)) for p in inputs],
        parameters=options.as_parameters(args, skip=("out",)),
        counts=flat,
        outputs=[stats_schema.output_entry(QUERIES_PARQUET, flat["queries"]),
                 stats_schema.output_entry(QUERIES_TXT, flat["queries"])],
        seconds=seconds,
        details={"wordnet_dir": args.wordnet_dir, "title_traffic": "pageviews" if pageviews else "inlinks",
                 "thresholds": asdict(config.thresholds),
                 "budgets": {"requested": asdict(config.budgets), "applied": budgets}, "sources": sources},
    )


def run(args: BuildQueriesOptions, beam_argv: list[str]) -> int:
    started = time.time()
    try:
        config = _config(args)
        dumps = find_dump_inputs(list(args.dump))
        pageviews = common.expand_patterns(args.pageviews, what="--pageviews") if args.pageviews else []
        wordnet = wordnet_candidates(args.wordnet_dir) if args.wordnet_dir else []
    except (ValueError, FileNotFoundError, WordNetError) as err:
        print(f"wit build-queries: error: {err}", file=sys.stderr)
        return 2
    for d in dumps:
        print(f"dump {d.path}" + (f" (multistream, index {d.index})" if d.index else ""), flush=True)
    common.makedirs(args.out)
    pipeline = beam.Pipeline(options=common.pipeline_options(beam_argv))
    _ = pipeline | "BuildQueries" >> BuildQueries(dumps, args.out, config, pageviews, wordnet)
    try:
        result = common.run_pipeline(pipeline, args.out)
    except StageFailed as err:
        raise StageFailed(f"{err}. No output was written.") from err
    counts = common.read_counts(args.out)
    differ = {k: (n, v) for k, v in common.counters(result, NAMESPACE).items() if (n := counts.get(k, 0)) != v}
    if differ:  # metrics are for monitoring; a retried bundle can inflate them
        LOG.info("monitoring counters differ from the data-derived counts (counts, counter): %s", differ)
    stats = _stats(args, config, dumps, pageviews, counts, time.time() - started)
    common.write_json(common.join(args.out, STATS_JSON), stats)
    counts = stats["counts"]
    per_source = ", ".join(f"{s} {v['selected']}" for s, v in stats["details"]["sources"].items())
    bad = ("pages_malformed", "pages_wikitext_rejected", "dump_ranges_empty", "pageview_lines_malformed")
    skipped = sum(counts[reason] for reason in bad)
    print(progress.summary_line("build-queries", [
        f"{counts['queries']:,} queries ({per_source}) from {counts['articles']:,} articles in {len(dumps)} dump(s)",
        f"{skipped:,} bad records skipped"], time.time() - started, args.out), flush=True)
    return 0
