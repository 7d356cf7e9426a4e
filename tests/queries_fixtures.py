"""Hand-made MediaWiki dumps for the stage 1 tests: plain, bz2, truncated, and multistream with an index."""

from __future__ import annotations

import bz2
import re
from pathlib import Path

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
