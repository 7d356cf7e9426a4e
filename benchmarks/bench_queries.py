"""Stage 1 extraction + counting speed against wikiextractor, side by side on the same dump, one core each.

Both sides read the same bz2 dump from disk and turn every main-namespace, non-redirect article into plain
text; both texts are then tokenized and counted with the same code (``query_selection.count_ngrams``), so
the ratio compares the reading + extraction that differ. Ours: ``wikidump.read_pages`` (streaming XML) and
``wikitext.parse_article`` (mwparserfromhell). Peer: wikiextractor 3.1's own page reader (``collect_pages``
over ``decode_open``) and ``Extractor.extract``, as its ``--article`` mode runs them, without templates.

Rates are pages per CPU-second of this process (``time.process_time``), i.e. pages/s per core, so that other
load on a shared machine does not tilt the ratio; the two run alternately, best of ``--repeat``.

    python benchmarks/bench_queries.py [--dump PATH] [--repeat 3]
"""

from __future__ import annotations

import argparse
import io
import logging
import time
from collections import Counter
from pathlib import Path

from wit_builder.query_selection import count_ngrams
from wit_builder.wikidump import DumpRange, read_pages
from wit_builder.wikitext import parse_article


def default_dump() -> Path:
    import gensim

    name = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
    return Path(gensim.__file__).parent / "test" / "test_data" / name


def ours(dump: Path) -> tuple[int, int]:
    unigrams, bigrams, pages = Counter(), Counter(), 0
    for page in read_pages(DumpRange(str(dump)), lambda p: open(p, "rb")):  # noqa: SIM115 (closed by read_pages)
        if page.ns == 0 and page.redirect is None and page.problem is None:
            count_ngrams(parse_article(page.text).text, unigrams, bigrams)
            pages += 1
    return pages, sum(unigrams.values())


def wikiextractor(dump: Path) -> tuple[int, int]:
    from wikiextractor import WikiExtractor
    from wikiextractor.extract import Extractor

    WikiExtractor.templateNamespace = "Template"  # what process_dump reads from <siteinfo>
    unigrams, bigrams, pages = Counter(), Counter(), 0
    with WikiExtractor.decode_open(str(dump)) as lines:
        for page_id, revid, title, page in WikiExtractor.collect_pages(lines):
            out = io.StringIO()
            Extractor(page_id, revid, "", title, page, to_text=True).extract(out)
            count_ngrams(out.getvalue(), unigrams, bigrams)
            pages += 1
    return pages, sum(unigrams.values())


def timed(fn, dump: Path) -> tuple[float, int, int, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    pages, tokens = fn(dump)
    return time.process_time() - cpu, pages, tokens, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dump", type=Path, default=None)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    dump = args.dump or default_dump()
    logging.getLogger("wikiextractor").setLevel(logging.ERROR)
    logging.disable(logging.WARNING)
    best: dict[str, tuple[float, int, int, float]] = {}
    for _ in range(args.repeat):
        for name, fn in (("ours", ours), ("wikiextractor", wikiextractor)):
            result = timed(fn, dump)
            if name not in best or result[0] < best[name][0]:
                best[name] = result
    print(f"dump: {dump} ({dump.stat().st_size / 1e6:.1f} MB), best of {args.repeat}, one core each")
    for name, (cpu, pages, tokens, wall) in best.items():
        print(f"  {name:<14} {pages} articles, {tokens} tokens: {pages / cpu:7.1f} pages/s per core "
              f"(cpu {cpu:.2f} s, wall {wall:.2f} s)")
    ratio = (best["ours"][1] / best["ours"][0]) / (best["wikiextractor"][1] / best["wikiextractor"][0])
    print(f"ratio ours / wikiextractor: {ratio:.2f}x pages/s per core")


if __name__ == "__main__":
    main()
