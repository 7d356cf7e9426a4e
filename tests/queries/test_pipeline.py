"""``wit build-queries`` end to end: the real enwiki sample, multistream, runners, and bad input."""

from __future__ import annotations

import bz2
import gzip
import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from schemas.queries import QUERIES
from schemas.stats import stats_without_timings
from schemas.stats import validate as validate_stats
from tests.conftest import BEAM_IN_PROCESS, BEAM_MULTI_PROCESS
from tests.queries_fixtures import page_xml, write_dump, write_multistream
from wit_builder.cli import main
from wit_builder.core.textnorm import is_query_token, tokenize
from wit_builder.queries.selection import title_query
from wit_builder.queries.wikidump import DumpRange, read_pages
from wit_builder.queries.wikitext import MAX_WIKITEXT_CHARS, parse_article, plain_text

OUTPUTS = ("queries.parquet", "queries.txt", "stats.json")
# Lowered thresholds; budgets that add up to 101,700 under --max-queries 50,000, so that every budget is scaled
# by 0.4916 and then binds for bigrams and WordNet but not for unigrams and titles on the 206-page sample.
SAMPLE_ARGS = [
    "--min-unigram-count", "3", "--min-bigram-count", "3", "--unigram-budget", "100000", "--bigram-budget", "300",
    "--title-budget", "1000", "--wordnet-budget", "400", "--max-queries", "50000",
]
APPLIED = {"unigram": 49164, "bigram": 147, "title": 492, "wordnet": 197}  # largest remainders


def build(out: Path, dumps: list[Path], *args: str, beam: list[str] = BEAM_IN_PROCESS) -> int:
    return main(["build-queries", *[f"--dump={d}" for d in dumps], "--out", str(out), *args, *beam])


def rows(out: Path) -> list[dict]:
    table = pq.read_table(out / "queries.parquet")
    assert table.schema.equals(QUERIES, check_metadata=False)
    return table.to_pylist()


def stats(out: Path) -> dict:
    return json.loads((out / "stats.json").read_text())


def _open_binary(path):
    return open(path, "rb")  # noqa: SIM115 (read_pages closes what its opener returns)


@pytest.fixture(scope="module")
def sample_pages(enwiki_sample):
    return list(read_pages(DumpRange(str(enwiki_sample)), _open_binary))


@pytest.fixture(scope="module")
def sample_out(tmp_path_factory, enwiki_sample, wordnet_dir) -> Path:
    out = tmp_path_factory.mktemp("sample") / "queries"
    assert build(out, [enwiki_sample], *SAMPLE_ARGS, "--wordnet-dir", str(wordnet_dir)) == 0
    return out


def test_unigram_counts_equal_an_independent_count(sample_out, sample_pages):
    counts = Counter()
    for page in sample_pages:
        if page.ns == 0 and page.redirect is None:
            counts.update(tokenize(plain_text(page.text)))
    expected = {t: n for t, n in counts.items() if n >= 3 and is_query_token(t)}
    got = {r["query"]: r["count"] for r in rows(sample_out) if r["source"] == "unigram"}
    assert got == expected  # the unigram budget does not bind: every eligible token, with its exact count
    assert len(got) > 5000


def test_titles_appear_and_redirect_titles_do_not(sample_out, sample_pages):
    table = rows(sample_out)
    queries = {r["query"]: r for r in table}
    articles = {title_query(p.title) for p in sample_pages if p.ns == 0 and p.redirect is None} - {None}
    redirects = {title_query(p.title) for p in sample_pages if p.redirect is not None} - {None}
    text_tokens = {r["query"] for r in table if r["source"] in ("unigram", "bigram", "wordnet")}
    titles = {r["query"] for r in table if r["source"] == "title"}
    # every article title is a query (from an earlier source when the text already gave it), except
    # disambiguation pages, which the stage drops on purpose
    disambiguation = {title_query(p.title) for p in sample_pages
                      if p.ns == 0 and p.redirect is None and parse_article(p.text).disambiguation}
    assert len(disambiguation) == stats(sample_out)["counts"]["titles_disambiguation"] == 8
    assert articles - set(queries) <= disambiguation
    assert {"anarchism", "autism", "albedo", "alabama"} <= set(queries)
    assert "accessiblecomputing" in redirects and "accessiblecomputing" not in queries
    assert not (titles & (redirects - articles)), "a redirect title became a title query"
    assert titles and not (titles & text_tokens)


def test_budgets_and_max_queries_hold_and_stats_agree(sample_out):
    table, s = rows(sample_out), stats(sample_out)
    assert s["details"]["budgets"]["applied"] == APPLIED and sum(APPLIED.values()) == 50_000
    per_source = Counter(r["source"] for r in table)
    assert per_source["bigram"] == APPLIED["bigram"] and per_source["wordnet"] == APPLIED["wordnet"]  # bind
    for source in ("unigram", "title"):  # fewer eligible than the budget: all of them taken
        v = s["details"]["sources"][source]
        assert per_source[source] == v["eligible"] - v["already_taken"] < APPLIED[source]
    assert {src: v["selected"] for src, v in s["details"]["sources"].items()} == dict(per_source)
    assert s["counts"]["queries"] == len(table) <= 50_000
    assert len({r["query"] for r in table}) == len(table)
    assert (sample_out / "queries.txt").read_text().splitlines() == [r["query"] for r in table]
    assert s["details"]["thresholds"] == {"min_unigram_count": 3, "min_bigram_count": 3}
    pages = {k: s["counts"][k] for k in ("pages_read", "articles", "articles_without_text", "dump_ranges")}
    assert pages == {"pages_read": 206, "articles": 106, "articles_without_text": 0, "dump_ranges": 1}
    assert s["counts"]["pages_redirect"] == 99 and s["counts"]["pages_not_main_namespace"] == 1
    validate_stats(s)
    assert len(s["inputs"][0]["sha256"]) == 64
    # ranked best first within each source (bigrams by NPMI); every stored query is normalized
    bigram_scores = [r["score"] for r in table if r["source"] == "bigram"]
    assert bigram_scores == sorted(bigram_scores, reverse=True) and -1 <= min(bigram_scores) <= 1.0
    assert all(" ".join(tokenize(r["query"])) == r["query"] for r in table)
    wordnet = [r for r in table if r["source"] == "wordnet"]
    assert [r["score"] for r in wordnet] == sorted((r["score"] for r in wordnet), reverse=True)


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


# ---- bad input ----

def small_pages(first_id: int = 1) -> list[str]:
    text = "The [[Eiffel Tower|tower]] stands in [[Paris]]. Paris is a city. The tower is tall."
    return [
        page_xml(first_id, "Paris", text * 3),
        page_xml(first_id + 1, "Eiffel Tower", "The tower in [[Paris]] is made of iron. " * 3),
        page_xml(first_id + 2, "Tour Eiffel", "", redirect="Eiffel Tower"),
        page_xml(first_id + 3, "Louvre", "A museum in [[Paris]]. The museum is big. " * 3),
    ]


def test_bad_records_are_skipped_and_counted_with_pageviews(tmp_path):
    rejected = page_xml(50, "Huge", "x " * (MAX_WIKITEXT_CHARS // 2 + 1))
    missing_id = "  <page><title>No id</title><ns>0</ns><revision><text>words</text></revision></page>\n"
    good = write_dump(tmp_path / "good.xml.bz2", [*small_pages(), rejected, missing_id])
    empty = tmp_path / "empty.xml"
    empty.write_bytes(b"")
    views = tmp_path / "pageviews-20240101-000000.gz"
    views.write_bytes(gzip.compress(
        b"en Louvre 5 0\nen.m Louvre 4 0\nen Tour_Eiffel 30 0\nen.d Paris 999 0\nen Paris 10 0\nbroken line\n"
    ))
    out = tmp_path / "q"
    assert build(out, [good, empty], "--min-unigram-count", "2", "--min-bigram-count", "2",
                 "--pageviews", str(views)) == 0
    s = stats(out)
    c = s["counts"]
    assert c["pages_wikitext_rejected"] == 1 and c["pages_malformed"] == 1
    assert c["dump_ranges_empty"] == 1 and c["pageview_lines_malformed"] == 1
    assert c["pageview_rows"] == 4 and s["details"]["title_traffic"] == "pageviews"  # en + en.m rows only
    scores = {r["query"]: r["score"] for r in rows(out) if r["source"] == "title"}
    # the redirect's 30 views count for its target; the Wiktionary row (en.d) is not English Wikipedia
    assert scores == {"eiffel tower": 30.0, "louvre": 9.0}  # "paris" is already a unigram
    assert "huge" not in {r["query"] for r in rows(out)}


@pytest.mark.parametrize("kind", ["malformed", "truncated", "only_empty"])
def test_fatal_input_fails_before_any_output(tmp_path, capsys, kind):
    if kind == "malformed":
        dump = write_dump(tmp_path / "bad.xml", [*small_pages(), "  <page><title>Oops</title>\n"])
        expected = [str(dump), "malformed XML at line", "after page id 4"]
    elif kind == "truncated":
        whole = bz2.compress(("<mediawiki>" + "".join(small_pages() * 40) + "</mediawiki>").encode())
        dump = tmp_path / "cut.xml.bz2"
        dump.write_bytes(whole[: len(whole) // 2])
        expected = [str(dump), "truncated bz2 stream starting at byte 0"]
    else:
        dump = write_dump(tmp_path / "empty.xml.bz2", [])
        expected = ["no main-namespace article text", str(dump)]
    out = tmp_path / "q"
    assert build(out, [dump]) == 1
    err = capsys.readouterr().err
    for text in expected:
        assert text in err
    assert "while running" not in err and "No output was written" in err
    assert not any((out / name).exists() for name in OUTPUTS)


def test_missing_wordnet_folder_fails_before_anything(tmp_path, capsys):
    dump = write_dump(tmp_path / "d.xml", small_pages())
    out = tmp_path / "q"
    assert build(out, [dump], "--wordnet-dir", str(tmp_path / "nowhere")) == 2
    assert f"--wordnet-dir '{tmp_path / 'nowhere'}' is not a folder" in capsys.readouterr().err
    assert not out.exists()
    (tmp_path / "notwn").mkdir()
    assert build(out, [dump], "--wordnet-dir", str(tmp_path / "notwn")) == 2
    assert "is not a WordNet dict folder: it lacks data.noun" in capsys.readouterr().err


def test_missing_dump_fails_before_anything(tmp_path, capsys):
    assert build(tmp_path / "q", [tmp_path / "nothing-*.xml.bz2"]) == 2
    assert "matches no file" in capsys.readouterr().err


def test_misspelled_runner_fails_before_anything(tmp_path, capsys):
    dump = write_dump(tmp_path / "d.xml", small_pages())
    out = tmp_path / "q"
    assert build(out, [dump], beam=["--runner=FnApiRuner"]) == 2
    err = capsys.readouterr().err
    assert "unknown --runner 'FnApiRuner'; did you mean 'FnApiRunner'?" in err and "Traceback" not in err
    assert not out.exists()


def test_out_that_is_a_file_fails_before_anything(tmp_path, capsys):
    dump = write_dump(tmp_path / "d.xml", small_pages())
    out = tmp_path / "q"
    out.write_bytes(b"")  # an existing file where the output folder should go
    assert build(out, [dump]) == 2
    err = capsys.readouterr().err
    assert f"--out '{out}' is a file, not a folder" in err and "Traceback" not in err
    assert out.read_bytes() == b""


# ---- issue 10: parse budget, rejected runs, pageview formats ----

def test_page_over_the_parse_budget_is_skipped_counted_with_its_id(tmp_path):
    slow = page_xml(77, "Slow page", "{{a|[[b|<i>" * 4000)  # 74 s unbounded
    dump = write_dump(tmp_path / "d.xml.bz2", [*small_pages(), slow])
    out = tmp_path / "q"
    assert build(out, [dump], "--min-unigram-count", "2", "--min-bigram-count", "2", "--parse-timeout", "1") == 0
    s = stats(out)
    assert s["counts"]["pages_parse_timeout"] == 1 and s["counts"]["pages_parse_timeout"] == 1
    assert s["counts"]["articles"] == 3 and s["counts"]["pages_read"] == 5
    [example] = s["details"]["rejected_pages"]["pages_parse_timeout"]
    assert example["page_id"] == 77 and example["title"] == "Slow page" and "1 s budget" in example["why"]
    assert {"paris", "tower"} <= {r["query"] for r in rows(out)}
    assert not (out / "_build_queries_details.json").exists()


def test_every_page_rejected_says_so(tmp_path, capsys):
    huge = [page_xml(i, f"Huge {i}", "x " * (MAX_WIKITEXT_CHARS // 2 + 1)) for i in (3, 4)]
    dump = write_dump(tmp_path / "d.xml", [*huge, page_xml(9, "Talk:X", "chat", ns=1)])
    out = tmp_path / "q"
    assert build(out, [dump]) == 1
    err = capsys.readouterr().err
    assert "every page of the dumps" in err and "3 pages read: 2 pages_wikitext_rejected" in err
    assert "the first, page id 3 'Huge 3'" in err and "2 MiB" in err
    assert "no main-namespace article text" not in err
    assert not any((out / name).exists() for name in OUTPUTS)


@pytest.mark.parametrize(("name", "compress", "lines"), [
    ("pageviews-20240101-000000.gz", gzip.compress, b"en Louvre 5 0\nen.m Louvre 4 0\nen Tour_Eiffel 30 0\n"),
    ("pageviews-20240101-user.bz2", bz2.compress,
     b"en.wikipedia Louvre 4 desktop 5 A5\nen.wikipedia Louvre 4 mobile-web 4 B4\n"
     b"en.wikipedia Tour_Eiffel null desktop 30 C30\nde.wikipedia Louvre 8 desktop 900 A900\n"),
    ("pageviews-202401-user.bz2", bz2.compress,
     b"en.wikipedia Louvre 4 mobile-app 9 A9\nen.wikipedia Tour_Eiffel 2 desktop 30 A20B10\n"),
])
def test_pageview_formats_rank_titles(tmp_path, name, compress, lines):
    dump = write_dump(tmp_path / "d.xml.bz2", small_pages())
    views = tmp_path / name
    views.write_bytes(compress(lines))
    out = tmp_path / "q"
    assert build(out, [dump], "--min-unigram-count", "2", "--min-bigram-count", "2", "--pageviews", str(views)) == 0
    s = stats(out)
    assert s["details"]["title_traffic"] == "pageviews" and s["details"]["traffic"]["wiki"] == "en.wikipedia"
    assert s["details"]["traffic"]["files"][str(views)]["rows"] == s["counts"]["pageview_rows"] == 3 - (
        name == "pageviews-202401-user.bz2")
    scores = {r["query"]: r["score"] for r in rows(out) if r["source"] == "title"}
    assert scores == {"eiffel tower": 30.0, "louvre": 9.0}


@pytest.mark.parametrize(("content", "expected"), [
    (b"<html>404 Not Found</html>\n", ["no line could be read as a Wikimedia pageview line", "line 1"]),
    (b"", ["no line could be read"]),
    (b"de Louvre 5 0\nfr.m Louvre 3 0\n", ["no row of the pageview files", "is for en.wikipedia", "2 rows"]),
])
def test_unusable_pageviews_fail_the_run(tmp_path, capsys, content, expected):
    dump = write_dump(tmp_path / "d.xml.bz2", small_pages())
    views = tmp_path / "pageviews-20240101-000000.gz"
    views.write_bytes(gzip.compress(content))
    out = tmp_path / "q"
    assert build(out, [dump], "--pageviews", str(views)) == 1
    err = capsys.readouterr().err
    for text in expected:
        assert text in err, err
    assert not any((out / n).exists() for n in OUTPUTS)


def test_pageviews_of_another_wiki(tmp_path):
    dump = write_dump(tmp_path / "d.xml.bz2", small_pages())
    views = tmp_path / "pageviews-20240101-000000.gz"
    views.write_bytes(gzip.compress(b"de Louvre 50 0\nde.m Louvre 4 0\nen Louvre 1 0\n"))
    out = tmp_path / "q"
    assert build(out, [dump], "--min-unigram-count", "2", "--min-bigram-count", "2", "--pageviews", str(views),
                 "--wiki", "de.wikipedia") == 0
    scores = {r["query"]: r["score"] for r in rows(out) if r["source"] == "title"}
    assert scores == {"louvre": 54.0, "eiffel tower": 0.0}  # the "en" row is not German Wikipedia
    assert stats(out)["details"]["traffic"]["wiki"] == "de.wikipedia"


def test_bounded_counting_selects_what_exact_counting_selects(sample_out, sample_pages):
    """The sketch + second pass (issue 10) against the old method, every n-gram counted exactly: the same
    unigram and bigram queries with the same counts and scores, and exact counts for title / WordNet phrases."""
    from wit_builder.queries import selection as qs

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
def test_a_retried_bundle_leaves_the_stats_unchanged(tmp_path, monkeypatch):
    """BundleBasedDirectRunner retries a failed bundle (and its metrics count it twice); the stats do not."""
    from wit_builder.queries import pipeline as build_queries

    dump = write_dump(tmp_path / "d.xml.bz2", [*small_pages(), *small_pages(10)])
    args = ["--min-unigram-count", "2", "--min-bigram-count", "2"]
    assert build(tmp_path / "plain", [dump], *args) == 0
    original = build_queries.ExtractPages.process
    failed = tmp_path / "failed-once"

    def flaky(self, rng):
        yield from original(self, rng)  # every page counted, then the bundle is lost
        if not failed.exists():
            failed.touch()
            raise RuntimeError("a worker lost on purpose")

    monkeypatch.setattr(build_queries.ExtractPages, "process", flaky)
    assert build(tmp_path / "retried", [dump], *args, beam=["--runner=BundleBasedDirectRunner"]) == 0
    assert failed.exists()
    plain, retried = stats(tmp_path / "plain"), stats(tmp_path / "retried")
    assert retried["counts"] == plain["counts"] and retried["counts"]["pages_read"] == 8
    retried_rows, plain_rows = (tmp_path / "retried" / "queries.parquet"), (tmp_path / "plain" / "queries.parquet")
    assert retried_rows.read_bytes() == plain_rows.read_bytes()
