"""Pageview files in the formats Wikimedia publishes, for any project (issue 10).

Lines: the hourly line ``en Main_Page 242332 4737756101`` is the sample line of Wikimedia's own pagecounts-raw
page (dumps.wikimedia.org/other/pagecounts-raw); the others reproduce the documented formats field for field
(hourly ``pageviews-YYYYMMDD-HHMMSS.gz``: response size 0 since 2016; ``pageview_complete`` daily and monthly
``*-user.bz2``: ``wiki_code title page_id access total counts``), as no real file could be fetched offline.
"""

from __future__ import annotations

import bz2
import gzip
import io

import pytest

from wit_builder.queries.pageviews import (
    MALFORMED,
    OTHER,
    FileTally,
    LineParser,
    PageviewError,
    Traffic,
    check_readable,
    open_text,
    read_pageviews,
)

HOURLY_RAW = "en Main_Page 242332 4737756101"
HOURLY = "en.m Albert_Einstein 1523 0"
DAILY = ("en.wikipedia Albert_Einstein 736 desktop 7563 A326B291C298D301E304F290G312H330I335J342K351L345M338N333"
         "O327P320Q316R312S309T305U302V298W290X295")
DAILY_NULL_ID = "en.wikipedia Caf%C3%A9_society null mobile-web 12 C3J9"
MONTHLY = "en.wikipedia Albert_Einstein 736 mobile-app 234410 A7563B7211C7020"


def test_each_format_gives_title_and_views():
    parser = LineParser(Traffic("en.wikipedia"))
    assert parser.parse(HOURLY_RAW) == ("Main Page", 242332)
    assert parser.parse(HOURLY + "\n") == ("Albert Einstein", 1523)
    assert parser.parse(DAILY) == ("Albert Einstein", 7563)
    assert parser.parse(DAILY_NULL_ID) == ("Café society", 12)
    assert parser.parse(MONTHLY) == ("Albert Einstein", 234410)


def test_other_projects_and_sites_are_skipped_not_malformed():
    parser = LineParser(Traffic("en.wikipedia"))
    for line in ("en.d Paris 999 0", "de Paris 5 0", "de.wikipedia Paris 1 desktop 5 A5",
                 "en.wiktionary Paris 1 desktop 5 A5", "commons.m File:X.jpg 3 0"):
        assert parser.parse(line) == OTHER, line
    for line in ("broken line", "en Paris many 0", "en.wikipedia Paris 1 tablet 5 A5", ""):
        assert parser.parse(line) == MALFORMED, line


def test_any_project_and_sites():
    german = LineParser(Traffic("de.wikipedia"))
    assert german.parse("de Berlin 5 0") == ("Berlin", 5) and german.parse("de.m Berlin 7 0") == ("Berlin", 7)
    assert german.parse("de.wikipedia Berlin 1 mobile-web 9 A9") == ("Berlin", 9)
    assert german.parse("en Berlin 5 0") == OTHER
    wiktionary = LineParser(Traffic("en.wiktionary"))
    assert wiktionary.parse("en.d word 4 0") == ("Word", 4) and wiktionary.parse("en.m.d word 2 0") == ("Word", 2)
    desktop = LineParser(Traffic("en.wikipedia", pageview_sites="desktop"))
    assert desktop.parse("en.m Paris 4 0") == OTHER and desktop.parse("en Paris 4 0") == ("Paris", 4)
    assert desktop.parse("en.wikipedia Paris 1 mobile-app 9 A9") == OTHER
    assert Traffic("en.wikipedia").domain_codes() == {"en", "en.m", "en.mw"}
    for bad in ("english", "en.wikipedia.org", "en.myspace"):
        with pytest.raises(ValueError, match="--wiki"):
            Traffic(bad)
    for sites in ("tablet", "desktop,tablet", " , "):
        with pytest.raises(ValueError, match="pageview_sites must name a non-empty subset"):
            Traffic("en.wikipedia", pageview_sites=sites)
    both = Traffic("en.wikipedia", pageview_sites="mobile, desktop").sites
    assert both == {"desktop", "mobile"} == Traffic("en.wikipedia").sites


@pytest.mark.parametrize(("name", "compress"), [
    ("pageviews-20240101-000000.gz", gzip.compress),
    ("pageviews-20240101-user.bz2", bz2.compress),
    ("pageviews-202401-user.bz2", bz2.compress),
    ("pageviews-20240101-000000", lambda b: b),
])
def test_files_of_each_kind(name, compress):
    data = compress("\n".join([HOURLY_RAW, HOURLY, DAILY, MONTHLY, "de Paris 3 0", "junk"]).encode() + b"\n")
    tally = FileTally()
    rows = list(read_pageviews(open_text(io.BytesIO(data), name), Traffic("en.wikipedia"), tally, name))
    assert rows == [("Main Page", 242332), ("Albert Einstein", 1523), ("Albert Einstein", 7563),
                    ("Albert Einstein", 234410)]
    assert (tally.rows, tally.other, tally.malformed) == (4, 1, 1) and "line 6" in tally.first_malformed
    check_readable(name, tally)


def test_a_file_of_which_no_line_can_be_read_fails():
    tally = FileTally()
    list(read_pageviews(io.StringIO("<html>Not Found</html>\nnope\n"), Traffic("en.wikipedia"), tally, "pv.txt"))
    with pytest.raises(PageviewError, match=r"pv.txt: no line could be read .*2 malformed lines, the first line 1"):
        check_readable("pv.txt", tally)
    with pytest.raises(PageviewError, match="no line"):
        check_readable("empty.gz", FileTally())


def test_a_corrupt_compressed_file_names_itself():
    data = gzip.compress(b"en Paris 3 0\n" * 1000)[:-40]
    with pytest.raises(PageviewError, match="pv.gz: unreadable pageview file after line"):
        list(read_pageviews(open_text(io.BytesIO(data), "pv.gz"), Traffic("en.wikipedia"), FileTally(), "pv.gz"))
