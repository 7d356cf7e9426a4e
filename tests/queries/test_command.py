"""``wit build-queries`` end to end (``wit_builder.queries.command``): outputs on the real enwiki sample, bad
records counted, bad input refused before work or failing the run without output; and the Stage's own steps
(``finish`` on given counts, ``on_failure``, ``after_run``, ``resolve`` and ``announce``)."""

from __future__ import annotations

import bz2
import gzip
import json
from collections import Counter
from pathlib import Path

import pytest

from schemas.stats import validate as validate_stats
from tests.queries.conftest import (
    APPLIED,
    HEADER,
    OUTPUTS,
    build,
    page_xml,
    rows,
    small_pages,
    stats,
    write_dump,
    write_multistream,
)
from wit_builder.core import segment
from wit_builder.core.errors import StageFailed, UsageError
from wit_builder.core.run_folder import MARKER
from wit_builder.core.textnorm import is_query_token, tokenize
from wit_builder.queries import stats as query_stats
from wit_builder.queries.command import BuildQueriesStage
from wit_builder.queries.options import BuildQueriesOptions, ReadOptions
from wit_builder.queries.pageviews import Traffic
from wit_builder.queries.pipeline import TEXT_CACHE
from wit_builder.queries.selection import Thresholds, title_query
from wit_builder.queries.wikitext import MAX_WIKITEXT_CHARS, parse_article, plain_text


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


# ---- bad input ----

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
    args: list[str] = []
    if kind == "malformed":
        dump = write_dump(tmp_path / "bad.xml", [*small_pages(), "  <page><title>Oops</title>\n"])
        expected = [str(dump), "malformed XML at line", "after page id 4"]
    elif kind == "truncated":
        whole = bz2.compress(("<mediawiki>" + "".join(small_pages() * 40) + "</mediawiki>").encode())
        dump = tmp_path / "cut.xml.bz2"
        dump.write_bytes(whole[: len(whole) // 2])
        expected = [str(dump), "truncated bz2 stream starting at byte 0"]
        args = ["--wiki", "en.wikipedia"]  # no <siteinfo> before the cut: the language must be named
    else:
        dump = write_dump(tmp_path / "empty.xml.bz2", [])
        expected = ["no main-namespace article text", str(dump)]
    out = tmp_path / "q"
    assert build(out, [dump], *args) == 1
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
    assert s["counts"]["pages_parse_timeout"] == 1 and s["counts"]["pages_wikitext_rejected"] == 0  # its own reason
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
    dump = write_dump(tmp_path / "d.xml.bz2", small_pages(), header=HEADER.replace("enwiki", "dewiki"))
    views = tmp_path / "pageviews-20240101-000000.gz"
    views.write_bytes(gzip.compress(b"de Louvre 50 0\nde.m Louvre 4 0\nen Louvre 1 0\n"))
    out = tmp_path / "q"
    assert build(out, [dump], "--min-unigram-count", "2", "--min-bigram-count", "2", "--pageviews", str(views),
                 "--wiki", "de.wikipedia") == 0
    scores = {r["query"]: r["score"] for r in rows(out) if r["source"] == "title"}
    assert scores == {"louvre": 54.0, "eiffel tower": 0.0}  # the "en" row is not German Wikipedia
    assert stats(out)["details"]["traffic"]["wiki"] == "de.wikipedia"


def test_every_count_is_named_and_nothing_but_the_outputs_is_left(sample_out):
    """stats.json's counts are exactly the frame's names (zeros included); the counts file, the details file
    and the text cache are gone once stats.json is written; the run marker stays (the folder is stage 1's)."""
    assert sorted(stats(sample_out)["counts"]) == sorted(query_stats.COUNT_NAMES)
    assert sorted(p.name for p in sample_out.iterdir()) == sorted([*OUTPUTS, MARKER])


# ---- the Stage's steps, on given inputs ----

def _stage(tmp_path: Path) -> BuildQueriesStage:
    dump = write_dump(tmp_path / "d.xml", small_pages())
    return BuildQueriesStage(BuildQueriesOptions(dump=(str(dump),), out=str(tmp_path / "q")))


def test_finish_computes_stats_json_from_the_given_counts(tmp_path):
    stage = _stage(tmp_path)
    stage.inputs = stage.resolve()
    out = Path(stage.out)
    out.mkdir()
    counts = {name: 0 for name in query_stats.COUNT_NAMES} | {
        "pages_read": 4, "articles": 3, "pages_redirect": 1, "pages_malformed": 2, "total_tokens": 60,
        "eligible_unigram": 9, "selected_unigram": 5, "selected_title": 2, "already_taken_title": 1, "queries": 7}
    rejected = {"pages_malformed": [("d.xml", 0, 5, "X", "no <id>")]}
    (out / query_stats.DETAILS_JSON).write_text(json.dumps(query_stats.details_document(rejected, None, {})))
    outcome = stage.finish(counts, 2.5)
    s = stats(out)
    validate_stats(s)
    assert s["counts"] == counts and s["timings"]["seconds"] == 2.5
    assert s["outputs"] == [{"path": "queries.parquet", "rows": 7}, {"path": "queries.txt", "rows": 7}]
    assert s["details"]["sources"]["unigram"] == {"eligible": 9, "selected": 5, "already_taken": 0,
                                                  "budget": 251_465}
    assert s["details"]["rejected_pages"]["pages_malformed"][0]["why"] == "no <id>"
    assert s["details"]["title_traffic"] == "inlinks" and s["parameters"]["max_queries"] == 500_000
    assert [i["path"] for i in s["inputs"]] == [str(tmp_path / "d.xml")] and len(s["inputs"][0]["sha256"]) == 64
    assert not (out / query_stats.DETAILS_JSON).exists()
    assert outcome.exit_code == 0 and outcome.summary == [
        "7 queries (unigram 5, bigram 0, title 2, wordnet 0) from 3 articles in 1 dump(s)", "2 bad records skipped"]


def test_a_failed_run_says_no_output_was_written_and_the_cache_goes(tmp_path):
    stage = _stage(tmp_path)
    failed = stage.on_failure(StageFailed("d.xml: malformed XML at line 3"))
    assert isinstance(failed, StageFailed) and str(failed) == "d.xml: malformed XML at line 3. No output was written."
    cache = Path(stage.out) / TEXT_CACHE
    cache.mkdir(parents=True)
    (cache / "text-0.txt.gz").write_bytes(b"x")
    stage.after_run()
    assert not cache.exists()
    stage.after_run()  # nothing left: nothing to do


def test_a_link_named_like_the_text_cache_is_refused_before_pass_1_writes_through_it(tmp_path):
    stage = _stage(tmp_path)
    target = tmp_path / "photos"
    target.mkdir()
    Path(stage.out).mkdir(parents=True, exist_ok=True)
    (Path(stage.out) / TEXT_CACHE).symlink_to(target)
    with pytest.raises(UsageError, match="_tmp_text is a symbolic link"):
        stage.clean_rerun()
    assert list(target.iterdir()) == []
    (Path(stage.out) / TEXT_CACHE).unlink()
    assert stage.clean_rerun() == []


def test_resolve_pairs_each_dump_with_its_index_and_refuses_index_files_alone(tmp_path, enwiki_sample):
    dump = tmp_path / "enwiki-test-pages-articles-multistream.xml.bz2"
    index = write_multistream(dump, bz2.decompress(enwiki_sample.read_bytes()).decode(), pages_per_stream=50)
    stage = BuildQueriesStage(BuildQueriesOptions(dump=(str(tmp_path / "*.bz2"),), out=str(tmp_path / "q")))
    stage.inputs = stage.resolve()
    assert stage.announce() == [f"language en (English), segmenter {segment.segmenter_id('en')}",
                                f"dump {dump} (multistream, index {index})",
                                f"sketch width 1,048,576 (chosen for ~{stage.inputs.bigrams:,} bigrams): 40 MiB of "
                                "sketches per worker"]
    assert [d.index for d in stage.inputs.dumps] == [str(index)]
    assert stage.inputs.pageviews == () and stage.inputs.wordnet == ()
    alone = BuildQueriesStage(BuildQueriesOptions(dump=(str(index),), out=str(tmp_path / "q")))
    with pytest.raises(FileNotFoundError, match="names only multistream index files, no dump"):
        alone.resolve()


def test_sketch_width_comes_from_the_dumps_size_and_a_small_given_width_is_warned_before_work(tmp_path, capsys):
    dump = tmp_path / "d.xml"
    with dump.open("wb") as f:  # 50 MiB of plain XML by its size (a sparse file): ~2.6M bigrams estimated
        f.truncate(50 << 20)
    english = Traffic("en.wikipedia")  # --wiki: a dump of zeros names no language itself
    chosen = BuildQueriesStage(BuildQueriesOptions(dump=(str(dump),), out=str(tmp_path / "q"),
                                                   thresholds=Thresholds(100, 1), traffic=english))
    chosen.inputs = chosen.resolve()
    assert chosen.inputs.bigrams == int(dump.stat().st_size * 0.05)
    assert chosen.inputs.sketch_width == chosen.inputs.suggested_width == 1 << 22  # 2.6M / 2^22 <= 1 per counter
    assert chosen.announce()[-1] == ("sketch width 4,194,304 (chosen for ~2,621,440 bigrams): 160 MiB of sketches "
                                     "per worker")
    assert chosen.settings().reading.sketch_width == 1 << 22  # what runs and what stats.json records
    assert capsys.readouterr().err == ""
    small = ReadOptions(sketch_width=4096)
    given = BuildQueriesStage(BuildQueriesOptions(dump=(str(dump),), out=str(tmp_path / "q"),
                                                  thresholds=Thresholds(100, 1), reading=small, traffic=english))
    given.inputs = given.resolve()
    assert given.inputs.sketch_width == 4096 and given.settings().reading.sketch_width == 4096
    assert given.announce()[-1] == "sketch width 4,096 (--sketch-width): 0 MiB of sketches per worker"
    err = capsys.readouterr().err
    assert err.startswith("wit build-queries: warning: --sketch-width 4,096 is small for the ~2,621,440 bigrams")
    assert "use --sketch-width 4194304 (160 MiB of sketches per worker)" in err and err.count("\n") == 1
