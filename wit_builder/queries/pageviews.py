"""Wikipedia traffic from Wikimedia's pageview dump files, in every format Wikimedia publishes.

Two line formats, told apart line by line, so a file's name does not matter:

- **hourly** (``pageviews-YYYYMMDD-HHMMSS.gz``, and the older ``pagecounts-raw`` / ``pagecounts-all-sites``
  ``pagecounts-YYYYMMDD-HHMMSS.gz``): 4 space-separated fields ``domain_code page_title count_views
  total_response_size``, e.g. ``en Main_Page 242332 4737756101``. The domain code names the project and the
  site: ``en`` is English Wikipedia's desktop site, ``en.m`` its mobile site (``en.mw`` in
  pagecounts-all-sites), ``en.d`` English Wiktionary, ``en.m.d`` its mobile site (see ``domain_codes``).
- **complete** (``pageview_complete``: daily ``pageviews-YYYYMMDD-user.bz2`` and monthly
  ``pageviews-YYYYMM-user.bz2``): 6 fields ``wiki_code page_title page_id access total counts``, e.g.
  ``en.wikipedia Main_Page 15580374 desktop 563122 A21088B23577...``; ``page_id`` may be ``null``, ``access``
  is ``desktop``, ``mobile-web`` or ``mobile-app``, ``total`` the views of the day (month) and ``counts`` the
  same views per hour (per day) as letter-number runs, which we do not need.

A ``Traffic`` says which project (``wiki``, e.g. ``en.wikipedia``, ``de.wikipedia``, ``en.wiktionary``) and
sites count; by default English Wikipedia, desktop and mobile. Other rows are skipped, not errors. Titles
become canonical page titles (percent-escapes decoded, underscores to spaces, first letter upper-cased) so
they join with the dump's titles and redirects.
"""

from __future__ import annotations

import bz2
import gzip
import io
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO
from urllib.parse import unquote

from wit_builder.core.errors import InputError
from wit_builder.core.options import option
from wit_builder.queries.wikitext import canonical_title

# Project suffixes of the hourly domain codes (Wikipedia has none).
PROJECT_CODES = {
    "wikipedia": "", "wiktionary": "d", "wikibooks": "b", "wikinews": "n", "wikiquote": "q",
    "wikisource": "s", "wikiversity": "v", "wikivoyage": "voy", "wikimedia": "m", "mediawiki": "w",
    "wikidata": "wd",
}
ACCESS_SITES = {"desktop": "desktop", "mobile-web": "mobile", "mobile-app": "mobile"}
SITES = frozenset({"desktop", "mobile"})
_WIKI = re.compile(r"^([a-z][a-z0-9-]*)\.([a-z]+)$")


class PageviewError(InputError):
    """A pageview input cannot be used; the message names the file (and the line)."""


@dataclass(frozen=True)
class Traffic:
    """Which rows of pageview files count: the project (``wiki``) and the sites (``pageview_sites``: desktop,
    mobile, comma-separated as on the command line); an argument group of ``wit build-queries``.

    Raises ValueError for a ``wiki`` that is not LANGUAGE.PROJECT or sites outside desktop, mobile.
    """

    wiki: str | None = option(None, help="the dump's project, as LANGUAGE.PROJECT (ja.wikipedia): its language "
                                         "(core/languages.py) and the --pageviews rows that count; without it, "
                                         "the dump's <siteinfo> names it", metavar="LANG.PROJECT")
    pageview_sites: str = option("desktop,mobile", help="comma-separated sites whose --pageviews rows count: "
                                                        "desktop, mobile (mobile web and apps)")

    def __post_init__(self) -> None:
        if self.wiki is not None:
            _wiki_parts(self.wiki)
        if not self.sites or not self.sites <= SITES:
            raise ValueError(f"pageview_sites must name a non-empty subset of {sorted(SITES)}, got "
                             f"{sorted(self.sites)}")

    @property
    def sites(self) -> frozenset[str]:
        """The chosen sites, as a set (``"desktop,mobile"`` -> {desktop, mobile})."""
        return frozenset(s.strip() for s in self.pageview_sites.split(",") if s.strip())

    def domain_codes(self) -> frozenset[str]:
        """The hourly files' domain codes of this project's chosen sites (``en.wikipedia`` -> en, en.m, en.mw).
        Raises ValueError when no project is set (``inputs.resolve`` sets it from the dump before any work)."""
        if self.wiki is None:
            raise ValueError("no --wiki project set")
        language, project = _wiki_parts(self.wiki)
        suffix = PROJECT_CODES[project]
        codes = set()
        if "desktop" in self.sites:
            codes.add(f"{language}.{suffix}" if suffix else language)
        if "mobile" in self.sites:
            codes |= {f"{language}.m.{suffix}", f"{language}.m{suffix}"} if suffix else {f"{language}.m",
                                                                                        f"{language}.mw"}
        return frozenset(codes)


def _wiki_parts(wiki: str) -> tuple[str, str]:
    """(language, project) of ``en.wikipedia``; raises ValueError for another spelling or an unknown project."""
    m = _WIKI.match(wiki)
    if m is None or m.group(2) not in PROJECT_CODES:
        raise ValueError(f"--wiki must be LANGUAGE.PROJECT with PROJECT one of {sorted(PROJECT_CODES)} "
                         f"(e.g. en.wikipedia), got {wiki!r}{_bare_language_hint(wiki)}")
    return m.group(1), m.group(2)


def _bare_language_hint(wiki: str) -> str:
    """"; did you mean 'ja.wikipedia'?" for a bare language code or name (``ja``, ``jp``, ``Deutsch``), else ""."""
    from wit_builder.core import languages

    if "." in wiki or not wiki.strip():
        return ""
    code = languages.nearest(wiki)
    return f"; did you mean '{code}.wikipedia'?" if code else ""


def open_text(raw: BinaryIO, path: str) -> io.TextIOWrapper:
    """The lines of a pageview file, decompressed by its suffix (``.gz``, ``.bz2`` or none).

    Undecodable bytes become U+FFFD (the line then fails to parse and is counted as malformed); a corrupt
    compressed stream raises OSError/EOFError when read, which ``read_pageviews`` names.
    """
    stream: BinaryIO | gzip.GzipFile | bz2.BZ2File = raw
    if path.endswith(".gz"):
        stream = gzip.GzipFile(fileobj=raw)
    elif path.endswith(".bz2"):
        stream = bz2.BZ2File(raw)
    return io.TextIOWrapper(stream, encoding="utf-8", errors="replace", newline="\n")


MALFORMED = "malformed"
OTHER = "other"


class LineParser:
    """Parses lines of either format for one ``Traffic``."""

    def __init__(self, traffic: Traffic) -> None:
        self.traffic = traffic
        self.codes = traffic.domain_codes()
        self.sites = traffic.sites  # parsed once, not per line

    def parse(self, line: str) -> tuple[str, int] | str:
        """(canonical title, views) for a row that counts; ``OTHER`` for another project's or site's row;
        ``MALFORMED`` for a line of neither format."""
        fields = line.rstrip("\r\n").split(" ")
        if len(fields) == 4 and fields[2].isdigit() and fields[3].isdigit():  # hourly
            if fields[0] not in self.codes:
                return OTHER
            title, views = fields[1], int(fields[2])
        elif len(fields) >= 6 and fields[-2].isdigit() and fields[-3] in ACCESS_SITES and (
            fields[-4].isdigit() or fields[-4] == "null"
        ):  # pageview_complete; a title with a space in it spans several fields
            if fields[0] != self.traffic.wiki or ACCESS_SITES[fields[-3]] not in self.sites:
                return OTHER
            title, views = " ".join(fields[1:-4]), int(fields[-2])
        else:
            return MALFORMED
        title = canonical_title(unquote(title) if "%" in title else title)
        return (title, views) if title else MALFORMED


@dataclass
class FileTally:
    """What reading one pageview file gave: rows that count, rows of other projects/sites, bad lines."""

    rows: int = 0
    views: int = 0
    other: int = 0
    malformed: int = 0
    first_malformed: str | None = None  # "line N: '...'"


def read_pageviews(lines: Iterable[str], traffic: Traffic, tally: FileTally,
                   path: str = "") -> Iterator[tuple[str, int]]:
    """(title, views) per row of ``lines`` that counts for ``traffic``; fills ``tally``.

    Raises PageviewError naming ``path`` and the line when the file cannot be decompressed or decoded.
    """
    parser = LineParser(traffic)
    lineno = 0
    try:
        for lineno, line in enumerate(lines, start=1):  # noqa: B007 (lineno is used after the loop)
            parsed = parser.parse(line)
            if parsed == OTHER:
                tally.other += 1
            elif isinstance(parsed, str):  # MALFORMED
                if line.strip():
                    tally.malformed += 1
                    if tally.first_malformed is None:
                        tally.first_malformed = f"line {lineno}: {line.rstrip()[:100]!r}"
            else:
                tally.rows += 1
                tally.views += parsed[1]
                yield parsed
    except (OSError, EOFError, ValueError) as err:
        raise PageviewError(f"{path}: unreadable pageview file after line {lineno}: {err}") from err


def check_readable(path: str, tally: FileTally) -> None:
    """Raise PageviewError when no line of the file could be read as a pageview line of either format."""
    if tally.rows + tally.other == 0:
        why = f"{tally.malformed} malformed lines, the first {tally.first_malformed}" if tally.malformed else "no line"
        raise PageviewError(
            f"{path}: no line could be read as a Wikimedia pageview line ('domain title views bytes' hourly or "
            f"'wiki title page_id access total counts' pageview_complete): {why}"
        )
