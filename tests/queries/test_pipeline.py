"""``wit_builder.queries.pipeline``: the composites on small in-memory inputs (``TestPipeline`` + ``beam.Create``),
pass 1's counts as the frame counts them, the two-pass counting against exact counting, parallel reads, and
counts that stay exact when a bundle is retried."""

from __future__ import annotations

import bz2
import gzip
import tracemalloc
from collections import Counter

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from schemas.stats import stats_without_timings
from tests.conftest import BEAM_IN_PROCESS, BEAM_MULTI_PROCESS
from tests.queries.conftest import (
    APPLIED,
    OUTPUTS,
    SAMPLE_ARGS,
    build,
    page_xml,
    rows,
    small_pages,
    stats,
    write_dump,
    write_multistream,
)
from wit_builder.beam.counting import COUNTS
from wit_builder.beam.spill import SPILL_DIR
from wit_builder.core.textnorm import tokenize
from wit_builder.queries import pipeline
from wit_builder.queries import selection as qs
from wit_builder.queries.ngram_sketch import (
    add_and_clear,
    ngram_sketches,
    read_sketches,
    sketches_bytes,
    write_sketches,
)
from wit_builder.queries.options import ReadOptions
from wit_builder.queries.pageviews import Traffic
from wit_builder.queries.wikidump import DumpInput
from wit_builder.queries.wikitext import plain_text


def summed(counts: beam.PCollection, label: str) -> beam.PCollection:
    """The (name, total) pairs of a COUNTS output."""
    return counts | label >> beam.CombinePerKey(sum)


def test_read_dumps_counts_every_page_by_its_verdict(tmp_path):
    """Each page lands in the counts by what pages.judge_page said; bad records also on ``rejected``; the text
    goes to the cache, links / titles / redirects to their outputs."""
    missing_id = "  <page><title>No id</title><ns>0</ns><revision><text>words</text></revision></page>\n"
    pages = [*small_pages(), page_xml(7, "1990", "A year. [[Paris]]"), page_xml(8, "Talk:Paris", "chat", ns=1),
             missing_id]
    dump = write_dump(tmp_path / "d.xml", pages)
    empty = tmp_path / "empty.xml"
    empty.write_bytes(b"")
    cache = tmp_path / "cache"
    texts = ["The [[Eiffel Tower|tower]] stands in [[Paris]]. Paris is a city. The tower is tall." * 3,
             "The tower in [[Paris]] is made of iron. " * 3, "A museum in [[Paris]]. The museum is big. " * 3,
             "A year. [[Paris]]"]
    tokens = sum(len(tokenize(line)) for text in texts for line in plain_text(text).split("\n"))
    with BeamTestPipeline(argv=BEAM_IN_PROCESS) as p:
        _, out = p | pipeline.ReadDumps([DumpInput(str(dump), None), DumpInput(str(empty), None)],
                                        ReadOptions(parse_timeout=60), str(cache))
        assert_that(summed(out[COUNTS], "Sum"), equal_to([
            ("pages_read", 7), ("articles", 4), ("total_tokens", tokens), ("dump_ranges", 2), ("dump_ranges_empty", 1),
            ("pages_redirect", 1), ("pages_not_main_namespace", 1), ("pages_malformed", 1),
            ("titles_without_letters", 1)]), label="Counts")
        assert_that(out.redirects, equal_to([("Tour Eiffel", "Eiffel Tower")]), label="Redirects")
        assert_that(out.articles, equal_to([("Paris", "paris"), ("Eiffel Tower", "eiffel tower"),
                                            ("Louvre", "louvre")]), label="Articles")
        assert_that(out.links | beam.CombinePerKey(sum), equal_to([("Eiffel Tower", 1), ("Paris", 3)]),
                    label="Links")  # Paris's own link to Paris is no inlink
        assert_that(out.rejected | beam.Map(lambda kv: (kv[0], kv[1][4])),
                    equal_to([("pages_malformed", "missing <id>")]), label="Rejected")
    assert len(list(cache.iterdir())) == 2  # one text file per range, the empty one too


def test_score_titles_lands_redirect_traffic_on_the_target():
    with BeamTestPipeline(argv=BEAM_IN_PROCESS) as p:
        traffic = p | "Traffic" >> beam.Create([("Paris", 10), ("Tour Eiffel", 30), ("Eiffel Tower", 5),
                                                ("Nowhere", 7)])
        redirects = p | "Redirects" >> beam.Create([("Tour Eiffel", "Eiffel Tower")])
        articles = p | "Articles" >> beam.Create([("Paris", "paris"), ("Eiffel Tower", "eiffel tower"),
                                                  ("Paris (city)", "paris"), ("Louvre", "louvre")])
        scores = articles | pipeline.ScoreTitles(traffic, redirects)
        assert_that(scores, equal_to([("paris", 10), ("eiffel tower", 35), ("louvre", 0)]))


def test_best_keeps_the_n_best_by_the_source_ranking_and_counts_the_eligible():
    candidates = [qs.Candidate("b", 5, 5.0), qs.Candidate("a", 5, 5.0), qs.Candidate("c", 9, 9.0),
                  qs.Candidate("d", 1, 1.0)]
    with BeamTestPipeline(argv=BEAM_IN_PROCESS) as p:
        best, eligible = p | beam.Create(candidates) | pipeline.Best(3, "unigram")
        assert_that(best, equal_to([("unigram", [candidates[2], candidates[1], candidates[0]])]), label="Best")
        assert_that(eligible, equal_to([("unigram", 4)]), label="Eligible")


def test_score_bigrams_joins_both_token_counts_for_npmi():
    thresholds = qs.Thresholds(min_unigram_count=1, min_bigram_count=2)
    with BeamTestPipeline(argv=BEAM_IN_PROCESS) as p:
        unigrams = p | "Unigrams" >> beam.Create([("hong", 4), ("kong", 4), ("the", 50), ("city", 10)])
        total = p | "Total" >> beam.Create([100])
        bigrams = p | "Bigrams" >> beam.Create([("hong kong", 4), ("the city", 5), ("the hong", 1)])
        scored = bigrams | pipeline.ScoreBigrams(unigrams, total, thresholds)
        assert_that(scored, equal_to([qs.bigram_candidate("hong kong", 4, 4, 4, 100),
                                      qs.bigram_candidate("the city", 5, 50, 10, 100)]))


def test_read_pageviews_sums_views_and_counts_rows_and_bad_lines(tmp_path):
    views = tmp_path / "pageviews-20240101-000000.gz"
    views.write_bytes(gzip.compress(b"en Louvre 5 0\nen.m Louvre 4 0\nde Louvre 9 0\nbroken line\n"))
    with BeamTestPipeline(argv=BEAM_IN_PROCESS) as p:
        traffic, files, counts = p | pipeline.ReadPageviews([str(views)], Traffic("en.wikipedia"))
        assert_that(traffic, equal_to([("Louvre", 9)]), label="Traffic")
        assert_that(files | beam.Map(lambda kv: (kv[0], kv[1]["rows"], kv[1]["other"])),
                    equal_to([(str(views), 2, 1)]), label="Files")
        assert_that(summed(counts, "Sum"), equal_to([("pageview_rows", 2), ("pageview_lines_malformed", 1)]),
                    label="Counts")


def test_bounded_counting_selects_what_exact_counting_selects(sample_out, sample_pages):
    """The sketch + second pass (issue 10) against the old method, every n-gram counted exactly: the same
    unigram and bigram queries with the same counts and scores, and exact counts for title / WordNet phrases."""
    unigrams, bigrams = Counter(), Counter()
    for page in sample_pages:
        if page.ns == 0 and page.redirect is None:
            qs.count_ngrams(plain_text(page.text), unigrams, bigrams)
    total, t = sum(unigrams.values()), qs.Thresholds(3, 3)
    candidates = {
        "unigram": [c for k, n in unigrams.items() if (c := qs.unigram_candidate(k, n, t))],
        "bigram": [qs.bigram_candidate(b, n, unigrams[b.split(" ")[0]], unigrams[b.split(" ")[1]], total)
                   for b, n in bigrams.items() if qs.bigram_is_eligible(b, n, t)],
    }
    exact, _ = qs.select(candidates, {**APPLIED, "title": 0, "wordnet": 0})
    got = [(r["source"], r["query"], r["count"], r["score"]) for r in rows(sample_out)
           if r["source"] in ("unigram", "bigram")]
    assert got == [(source, c.query, c.count, c.score) for source, c in exact]
    counts = {**unigrams, **bigrams}
    for r in rows(sample_out):
        if r["source"] in ("title", "wordnet"):
            assert r["count"] == qs.phrase_count(r["query"], counts), r
    assert stats(sample_out)["counts"]["total_tokens"] == total


@pytest.mark.slow
def test_multistream_read_in_parallel_equals_plain_file(
    tmp_path, enwiki_sample, sample_out, wordnet_dir
):
    dump = tmp_path / "enwiki-test-pages-articles-multistream.xml.bz2"
    write_multistream(dump, bz2.decompress(enwiki_sample.read_bytes()).decode(), pages_per_stream=25)
    out = tmp_path / "multi"
    args = [*SAMPLE_ARGS, "--wordnet-dir", str(wordnet_dir), "--split-bytes", "1"]
    assert build(out, [dump], *args, beam=BEAM_MULTI_PROCESS) == 0
    for name in ("queries.parquet", "queries.txt"):
        assert (out / name).read_bytes() == (sample_out / name).read_bytes(), name
    s = stats(out)
    assert s["counts"]["dump_ranges"] == 9  # 206 pages / 25 per stream, one range per stream
    assert [i["path"] for i in s["inputs"]] == [str(dump), str(dump).replace(".xml.bz2", "-index.txt.bz2")]
    plain = stats(sample_out)
    assert {k: v for k, v in s["counts"].items() if k != "dump_ranges"} == {
        k: v for k, v in plain["counts"].items() if k != "dump_ranges"
    }
    assert {k: v for k, v in s.items() if k not in ("inputs", "counts", "parameters", "outputs", "timings")} == {
        k: v for k, v in plain.items() if k not in ("inputs", "counts", "parameters", "outputs", "timings")
    }


@pytest.mark.slow
def test_same_inputs_byte_identical_in_process_and_multi_process(tmp_path, enwiki_sample, sample_out, wordnet_dir):
    out = tmp_path / "mp"
    assert build(out, [enwiki_sample], *SAMPLE_ARGS, "--wordnet-dir", str(wordnet_dir), beam=BEAM_MULTI_PROCESS) == 0
    for name in OUTPUTS[:-1]:
        assert (out / name).read_bytes() == (sample_out / name).read_bytes(), name
    assert stats_without_timings(out / "stats.json") == stats_without_timings(sample_out / "stats.json")


@pytest.mark.slow
def test_a_retried_bundle_leaves_the_stats_unchanged(tmp_path, monkeypatch):
    """BundleBasedDirectRunner retries a failed bundle (and its metrics count it twice); the stats do not."""
    dump = write_dump(tmp_path / "d.xml.bz2", [*small_pages(), *small_pages(10)])
    args = ["--min-unigram-count", "2", "--min-bigram-count", "2"]
    assert build(tmp_path / "plain", [dump], *args) == 0
    original = pipeline._ExtractPages.process
    failed = tmp_path / "failed-once"

    def flaky(self, rng):
        yield from original(self, rng)  # every page counted, then the bundle is lost
        if not failed.exists():
            failed.touch()
            raise RuntimeError("a worker lost on purpose")

    monkeypatch.setattr(pipeline._ExtractPages, "process", flaky)
    assert build(tmp_path / "retried", [dump], *args, beam=["--runner=BundleBasedDirectRunner"]) == 0
    assert failed.exists()
    plain, retried = stats(tmp_path / "plain"), stats(tmp_path / "retried")
    assert retried["counts"] == plain["counts"] and retried["counts"]["pages_read"] == 8
    retried_rows, plain_rows = (tmp_path / "retried" / "queries.parquet"), (tmp_path / "plain" / "queries.parquet")
    assert retried_rows.read_bytes() == plain_rows.read_bytes()


def test_sketches_as_chunks_give_the_bytes_of_sketches_as_files(tmp_path, monkeypatch, enwiki_sample, sample_out,
                                                                  wordnet_dir):
    """In-process the sketches travel as files (only names cross Beam), on a cluster as chunks through the
    shuffle: the same queries, counts and stats either way, on the gensim sample; the files are gone after."""
    assert not (sample_out / SPILL_DIR).exists() and not (sample_out / "_tmp_text").exists()
    monkeypatch.setattr(pipeline, "spill_folder", lambda runner, out: None)  # a cluster runner's choice
    out = tmp_path / "chunks"
    assert build(out, [enwiki_sample], *SAMPLE_ARGS, "--wordnet-dir", str(wordnet_dir)) == 0
    for name in OUTPUTS[:-1]:
        assert (out / name).read_bytes() == (sample_out / name).read_bytes(), name
    assert stats_without_timings(out / "stats.json") == stats_without_timings(sample_out / "stats.json")


def test_sum_chunks_merges_into_its_first_accumulator_and_leaves_inputs_alone():
    """Merging accumulators adds into the first one in place (Beam allows it) instead of allocating a new slice
    per merge; an input is copied once, never changed."""
    fn = pipeline._SumChunks()
    inputs = [np.arange(4, dtype=np.int64), np.full(4, 10, dtype=np.int64)]
    first = fn.add_input(fn.create_accumulator(), inputs[0])
    assert first is not inputs[0]
    first = fn.add_input(first, inputs[1])
    others = [np.ones(4, dtype=np.int64), np.full(4, 100, dtype=np.int64)]
    merged = fn.merge_accumulators([None, first, *others])
    assert merged is first and merged.tolist() == [111, 112, 113, 114]
    assert inputs[0].tolist() == [0, 1, 2, 3] and others[0].tolist() == [1, 1, 1, 1]
    assert fn.merge_accumulators([None, None]) is None


def test_merging_k_sketch_files_holds_one_sketch_pair(tmp_path):
    """The bundles' sketch files sum into one file holding one pair in memory (the first, others added 1 MiB at
    a time), not one per file or per merge; one file is passed on as it is, none gives None."""
    width = 1 << 20  # 40 MiB per pair
    size = sketches_bytes(width)
    paths, expected = [], ngram_sketches(width)
    for k in range(4):
        pair = ngram_sketches(width)
        add_and_clear(pair, Counter({f"w{k}": k + 1, "common": 1}), Counter({f"w{k} common": 2 * k + 1}))
        expected = tuple(a.merge(b) for a, b in zip(expected, pair, strict=True))
        path = tmp_path / f"bundle-{k}.i64"
        with open(path, "wb") as f:
            write_sketches(pair, f)
        paths.append(str(path))
    tracemalloc.start()
    try:
        merged = pipeline._merge_sketch_files(list(reversed(paths)), width, str(tmp_path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1.1 * size, f"merging 4 files peaked at {peak / size:.2f} sketch pairs"
    assert merged is not None and merged not in paths
    with open(merged, "rb") as f:
        got = read_sketches(width, f)
    assert all(np.array_equal(a.table, b.table) for a, b in zip(got, expected, strict=True))
    assert got[0].estimate(["common"])[0] >= 4
    assert pipeline._merge_sketch_files(paths[:1], width, str(tmp_path)) == paths[0]
    assert pipeline._merge_sketch_files([], width, str(tmp_path)) is None


def test_in_process_sketches_leave_each_bundle_as_one_file_and_merge_into_one(tmp_path):
    """With a sketch folder every bundle writes its pair to one file and passes on only the path; the merged
    pair (one file) holds every range's counts exactly once: totals equal to the tokens and bigrams counted,
    no estimate below a true count."""
    dumps = [write_dump(tmp_path / "a.xml", small_pages()), write_dump(tmp_path / "b.xml", small_pages(10))]
    folder = tmp_path / "spill"
    width = 1 << 16
    with BeamTestPipeline(argv=BEAM_IN_PROCESS) as p:
        _, out = p | pipeline.ReadDumps([DumpInput(str(d), None) for d in dumps],
                                        ReadOptions(parse_timeout=60, sketch_width=width), str(tmp_path / "cache"),
                                        sketch_dir=str(folder))
        merged = out.sketches | pipeline.MergeSketches(width, str(folder))
        assert_that(out.sketches | "Bundles" >> beam.Map(lambda path: path.startswith(str(folder / "bundle-"))),
                    lambda found: None if found and all(found) else pytest.fail(f"not bundle files: {found}"),
                    label="BundleFiles")
        assert_that(merged | "InFolder" >> beam.Map(lambda path: path.startswith(str(folder))),
                    equal_to([True]), label="Merged")
    files = sorted(folder.iterdir())
    assert files and all(f.stat().st_size == sketches_bytes(width) for f in files)
    merged_files = [f for f in files if f.name.startswith("merged-")] or files  # one bundle: its file as it is
    assert len(merged_files) == 1
    with open(merged_files[0], "rb") as f:
        unigram, bigram = read_sketches(width, f)
    unigrams, bigrams = Counter(), Counter()
    for text in ["The [[Eiffel Tower|tower]] stands in [[Paris]]. Paris is a city. The tower is tall." * 3,
                 "The tower in [[Paris]] is made of iron. " * 3, "A museum in [[Paris]]. The museum is big. " * 3] * 2:
        for line in plain_text(text).split("\n"):
            qs.count_ngrams(line, unigrams, bigrams)
    assert unigram.total() == sum(unigrams.values()) and bigram.total() == sum(bigrams.values())
    assert all(unigram.estimate(list(unigrams)) >= np.array(list(unigrams.values())))
    assert all(bigram.estimate(list(bigrams)) >= np.array(list(bigrams.values())))
