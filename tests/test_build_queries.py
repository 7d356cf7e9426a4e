"""``wit build-queries`` end to end: the real enwiki sample, multistream, runners, and bad input."""

from __future__ import annotations

import bz2
import gzip
import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.cli import main
from schemas.queries import QUERIES
from schemas.stats import stats_without_timings
from schemas.stats import validate as validate_stats
from tests.conftest import BEAM_IN_PROCESS, BEAM_MULTI_PROCESS
from tests.queries_fixtures import page_xml, write_dump, write_multistream
from wit_builder.query_selection import title_query
from wit_builder.textnorm import is_query_token, tokenize
from wit_builder.wikidump import DumpRange, read_pages
from wit_builder.wikitext import MAX_WIKITEXT_CHARS, parse_article, plain_text

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


@pytest.mark.slow
def test_a_retried_bundle_leaves_the_stats_unchanged(tmp_path, monkeypatch):
    """BundleBasedDirectRunner retries a failed bundle (and its metrics count it twice); the stats do not."""
    from pipelines import build_queries

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
