"""Stage 1's shared fixtures: hand-made MediaWiki dumps (plain, bz2, truncated, multistream with an index), a
run of the stage on the real enwiki sample, and helpers to run the stage and read what it wrote."""

from __future__ import annotations

import bz2
import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from schemas.queries import QUERIES
from tests.conftest import BEAM_IN_PROCESS
from wit_builder.cli import main
from wit_builder.queries.wikidump import DumpRange, Page, read_pages

OUTPUTS = ("queries.parquet", "queries.txt", "stats.json")
# Lowered thresholds; budgets that add up to 101,700 under --max-queries 50,000, so that every budget is scaled
# by 0.4916 and then binds for bigrams and WordNet but not for unigrams and titles on the 206-page sample.
SAMPLE_ARGS = [
    "--min-unigram-count", "3", "--min-bigram-count", "3", "--unigram-budget", "100000", "--bigram-budget", "300",
    "--title-budget", "1000", "--wordnet-budget", "400", "--max-queries", "50000",
]
APPLIED = {"unigram": 49164, "bigram": 147, "title": 492, "wordnet": 197}  # largest remainders

HEADER = """<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" version="0.10" xml:lang="en">
  <siteinfo>
    <sitename>Wikipedia</sitename>
    <dbname>enwiki</dbname>
  </siteinfo>
"""
FOOTER = "</mediawiki>\n"


def page_xml(page_id: int, title: str, text: str, ns: int = 0, redirect: str | None = None) -> str:
    from xml.sax.saxutils import escape, quoteattr

    redirect_xml = f"    <redirect title={quoteattr(redirect)} />\n" if redirect else ""
    return (
        f"  <page>\n    <title>{escape(title)}</title>\n    <ns>{ns}</ns>\n    <id>{page_id}</id>\n{redirect_xml}"
        f"    <revision>\n      <id>{page_id * 10}</id>\n      <model>wikitext</model>\n"
        f'      <text xml:space="preserve">{escape(text)}</text>\n    </revision>\n  </page>\n'
    )


def write_dump(path: Path, pages: list[str], header: str = HEADER, footer: str = FOOTER) -> Path:
    """A dump of the given page XML; bz2-compressed when ``path`` ends in .bz2."""
    data = (header + "".join(pages) + footer).encode()
    path.write_bytes(bz2.compress(data) if path.suffix == ".bz2" else data)
    return path


def split_dump(xml: str) -> tuple[str, list[str], str]:
    """A whole dump's text -> (header, page elements with their indentation, footer), bytes preserved."""
    starts = [m.start() for m in re.finditer(r"  <page>", xml)]
    end = xml.rindex("</mediawiki>")
    bounds = [*starts, end]
    return xml[: starts[0]], [xml[a:b] for a, b in zip(bounds, bounds[1:], strict=False)], xml[end:]


def write_multistream(path: Path, xml: str, pages_per_stream: int = 100) -> Path:
    """A Wikimedia-style multistream dump of ``xml`` (header stream, page streams, footer stream) and its
    ``-index.txt.bz2`` beside it; returns the index path."""
    header, pages, footer = split_dump(xml)
    blob = bytearray(bz2.compress(header.encode()))
    index_lines = []
    for i in range(0, len(pages), pages_per_stream):
        group = pages[i : i + pages_per_stream]
        offset = len(blob)
        for page in group:
            page_id = re.search(r"<id>(\d+)</id>", page).group(1)
            title = re.search(r"<title>(.*?)</title>", page).group(1)
            index_lines.append(f"{offset}:{page_id}:{title}\n")
        blob += bz2.compress("".join(group).encode())
    blob += bz2.compress(footer.encode())
    path.write_bytes(bytes(blob))
    index = path.with_name(path.name.replace(".xml.bz2", "-index.txt.bz2"))
    index.write_bytes(bz2.compress("".join(index_lines).encode()))
    return index


def small_pages(first_id: int = 1) -> list[str]:
    """Four pages: two articles about Paris, a redirect to one of them, and a third article."""
    text = "The [[Eiffel Tower|tower]] stands in [[Paris]]. Paris is a city. The tower is tall."
    return [
        page_xml(first_id, "Paris", text * 3),
        page_xml(first_id + 1, "Eiffel Tower", "The tower in [[Paris]] is made of iron. " * 3),
        page_xml(first_id + 2, "Tour Eiffel", "", redirect="Eiffel Tower"),
        page_xml(first_id + 3, "Louvre", "A museum in [[Paris]]. The museum is big. " * 3),
    ]


def build(out: Path, dumps: list[Path], *args: str, beam: list[str] = BEAM_IN_PROCESS) -> int:
    """``wit build-queries`` on ``dumps`` into ``out``; its exit status."""
    return main(["build-queries", *[f"--dump={d}" for d in dumps], "--out", str(out), *args, *beam])


def rows(out: Path) -> list[dict]:
    """The rows of ``out``'s queries.parquet (its schema checked)."""
    table = pq.read_table(out / "queries.parquet")
    assert table.schema.equals(QUERIES, check_metadata=False)
    return table.to_pylist()


def stats(out: Path) -> dict:
    """``out``'s stats.json."""
    return json.loads((out / "stats.json").read_text())


def _open_binary(path):
    return open(path, "rb")  # noqa: SIM115 (read_pages closes what its opener returns)


@pytest.fixture(scope="session")
def sample_pages(enwiki_sample) -> list[Page]:
    """Every page of the enwiki sample, as wikidump reads them."""
    return list(read_pages(DumpRange(str(enwiki_sample)), _open_binary))


@pytest.fixture(scope="session")
def sample_out(tmp_path_factory, enwiki_sample, wordnet_dir) -> Path:
    """The stage's output folder for the enwiki sample with SAMPLE_ARGS and WordNet (one run per session)."""
    out = tmp_path_factory.mktemp("sample") / "queries"
    assert build(out, [enwiki_sample], *SAMPLE_ARGS, "--wordnet-dir", str(wordnet_dir)) == 0
    return out
