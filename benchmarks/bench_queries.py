"""Stage 1 extraction + counting speed against wikiextractor, side by side on the same dump, one core each.

Both sides read the same bz2 dump from disk and turn every main-namespace, non-redirect article into plain
text; both texts are then tokenized and counted with the same code (``query_selection.count_ngrams``), so
the ratio compares the reading + extraction that differ. Ours: ``wikidump.read_pages`` (streaming XML) and
``wikitext.parse_article`` (mwparserfromhell). Peer: wikiextractor 3.1's own page reader (``collect_pages``
over ``decode_open``) and ``Extractor.extract``, as its ``--article`` mode runs them, without templates.

Ours parses each page under the pipeline's per-page budget (``parse_budget.BoundedParser``: a helper
process), so its CPU time includes the helper's. Rates are pages per CPU-second (this process and its
children, ``resource.getrusage``), i.e. pages/s per core, so that other load on a shared machine does not
tilt the ratio; the two run alternately, best of ``--repeat``.

Then a **scaling run** of the whole stage (``wit build-queries``, in-process FnApiRunner, in a subprocess of
its own) on generated dumps of ``--pages`` and 4x as many pages, whose words are Zipf-distributed
(exponent 1.05) over ``--types`` types, so that, as in real text, distinct unigrams and bigrams keep growing
with the input. It reports each run's peak RSS (the largest process: ``ru_maxrss`` of the children) and
pages/s per core, and checks the issue's bounds: peak RSS at 4x <= 1.25x peak RSS at 1x, and pages/s per
core at 4x not below 1x (within 10% for timing noise).

Then **English and Japanese side by side**: the whole stage on the gensim enwiki sample and on the real jawiki
excerpt of tests/data/wiki (21 articles, real jawiki pages), each in a fresh process, reporting pages and
tokens per CPU-second (the stage's own ``pages_read`` and ``total_tokens`` counts over the process tree's CPU
time) and peak RSS. Japanese text is segmented (``core.segment``, ICU) in pass 1 only: pass 2 reads pass 1's
tokens from the text cache.

With ``--sketch-memory`` it measures instead the sketches' share of the peak: the same generated dump
(``--pages``) through ``wit build-queries`` (in-process FnApiRunner, a fresh process per run) at ``--sketch-width``
2^20 and 2^23; the growth of the peak RSS over the growth of one range's sketches (``ngram_sketch.sketches_bytes``:
40 bytes per counter) is how many copies of the sketches the run holds at its peak (docs/deploy.md's memory plan
uses it). Peak RSS is taken two ways: the largest process's (the kernel's VmHWM, read at each sample) and the
process tree's (the largest sum of VmRSS over the ``wit`` process and its descendants, e.g. the parse helper,
sampled every 20 ms). ``--peer DIR`` runs another checkout (e.g. a worktree of the main branch) side by side on
the same dump, alternating, and checks that both wrote the same queries.parquet and queries.txt bytes (exit 1
otherwise).

    python benchmarks/bench_queries.py [--dump PATH] [--ja-dump PATH] [--repeat 3] [--pages 2000]
                                       [--types 5000000]
    python benchmarks/bench_queries.py --sketch-memory [--pages 300] [--peer DIR]
"""

from __future__ import annotations

import argparse
import bz2
import io
import logging
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

from wit_builder.queries.parse_budget import BoundedParser
from wit_builder.queries.selection import count_ngrams
from wit_builder.queries.wikidump import DumpRange, read_pages


def default_dump() -> Path:
    import gensim

    name = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
    return Path(gensim.__file__).parent / "test" / "test_data" / name


PARSER = BoundedParser()  # the pipeline's default budget; started once, like a worker's (see cpu_seconds)


def ours(dump: Path) -> tuple[int, int]:
    unigrams, bigrams, pages = Counter(), Counter(), 0
    for page in read_pages(DumpRange(str(dump)), lambda p: open(p, "rb")):  # noqa: SIM115 (closed by read_pages)
        if page.ns == 0 and page.redirect is None and page.problem is None:
            count_ngrams(PARSER.parse(page.text).text, unigrams, bigrams)
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


def cpu_seconds() -> float:
    """CPU seconds of this process, of its children that have been waited for, and of the running parser
    helper (from /proc: its one-time start is outside the timed runs, as it is once per worker)."""
    own = sum(r.ru_utime + r.ru_stime for r in map(resource.getrusage, (resource.RUSAGE_SELF,
                                                                        resource.RUSAGE_CHILDREN)))
    if PARSER.pid is None:
        return own
    with open(f"/proc/{PARSER.pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return own + (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(fn, dump: Path) -> tuple[float, int, int, float]:
    cpu, wall = cpu_seconds(), time.perf_counter()
    pages, tokens = fn(dump)
    return cpu_seconds() - cpu, pages, tokens, time.perf_counter() - wall


# ---- the scaling run ----

def _word(rank: int) -> str:
    """A distinct lower-case word per rank (base 26, at least two letters)."""
    letters = []
    rank += 26
    while rank:
        rank, digit = divmod(rank, 26)
        letters.append(chr(97 + digit))
    return "".join(reversed(letters))


def generate_dump(path: Path, pages: int, types: int, seed: int = 0, words_per_page: int = 600) -> None:
    """A bz2 dump of ``pages`` articles of Zipf(1.05) words over ``types`` types, in lines of 12-30 words,
    with a few links and a heading each, so that the parser has markup to read."""
    rng = np.random.default_rng(seed)
    header = ('<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" version="0.10">\n'
              "<siteinfo><sitename>Wikipedia</sitename><dbname>enwiki</dbname></siteinfo>\n")
    with bz2.open(path, "wt", encoding="utf-8", compresslevel=1) as f:
        f.write(header)
        for page_id in range(1, pages + 1):
            ranks = rng.zipf(1.05, words_per_page)
            ranks[ranks > types] = rng.integers(1, types, int((ranks > types).sum()))
            words = [_word(int(r)) for r in ranks]
            lines, i = [], 0
            while i < len(words):
                n = int(rng.integers(12, 31))
                line = words[i:i + n]
                if line:
                    line[0] = f"[[{line[0]}]]"
                lines.append(" ".join(line) + ".")
                i += n
            text = f"== {words[0]} ==\n" + "\n".join(lines)
            f.write(f"<page><title>Page {page_id} {words[1]}</title><ns>0</ns><id>{page_id}</id><revision>"
                    f'<text xml:space="preserve">{text}</text></revision></page>\n')
        f.write("</mediawiki>\n")


def scaling_run(dump: Path, out: Path, *args: str) -> tuple[float, float, float]:
    """(peak RSS in MiB, CPU seconds, wall seconds) of ``wit build-queries`` on ``dump`` in a fresh process."""
    code = ("import sys; from wit_builder.cli import main; "
            f"sys.exit(main(['build-queries', '--dump', {str(dump)!r}, '--out', {str(out)!r}, *{list(args)!r}, "
            "'--runner=FnApiRunner']))")
    wall = time.perf_counter()
    # a fresh process per run: ru_maxrss of the children is then this run's peak (the biggest process)
    child = subprocess.run(  # noqa: S603 (our own interpreter and code)
        [sys.executable, "-c", f"import resource, subprocess, sys; r = subprocess.run([sys.executable, '-c', "
                               f"{code!r}], stdout=subprocess.DEVNULL); "
                               "u = resource.getrusage(resource.RUSAGE_CHILDREN); "
                               "print(u.ru_maxrss, u.ru_utime + u.ru_stime, r.returncode)"],
        capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    rss_kib, cpu, rc = child.stdout.split()
    if rc != "0":
        raise SystemExit(f"build-queries failed on {dump}: {child.stderr[-2000:]}")
    return int(rss_kib) / 1024, float(cpu), time.perf_counter() - wall


def scaling(pages: int, types: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-queries-") as tmp:
        results = {}
        for factor in (1, 4):
            dump = Path(tmp) / f"zipf-{factor}x.xml.bz2"
            generate_dump(dump, pages * factor, types, seed=factor)
            results[factor] = scaling_run(dump, Path(tmp) / f"out-{factor}x")
        print(f"scaling: generated dumps of {pages} and {4 * pages} pages (600 Zipf(1.05) words each over "
              f"{types:,} types), wit build-queries in-process (FnApiRunner), default thresholds and sketch")
        for factor, (rss, cpu, wall) in results.items():
            print(f"  {factor}x {pages * factor:6d} pages: peak RSS {rss:7.1f} MiB, {pages * factor / cpu:6.1f} "
                  f"pages/s per core (cpu {cpu:.1f} s, wall {wall:.1f} s)")
        rss_ratio = results[4][0] / results[1][0]
        speed_ratio = (4 * pages / results[4][1]) / (pages / results[1][1])
        print(f"  peak RSS 4x / 1x: {rss_ratio:.2f} (bound 1.25: {'ok' if rss_ratio <= 1.25 else 'FAILED'}); "
              f"pages/s per core 4x / 1x: {speed_ratio:.2f} ({'ok' if speed_ratio >= 0.9 else 'FAILED'})")


def _tree_rss_kib(root: int) -> tuple[int, int]:
    """(the summed VmRSS, the largest VmHWM: the kernel's peak so far) in KiB over ``root`` and its descendants."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    hwm: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
            parents[int(entry.name)] = int(fields["PPid"])
            rss[int(entry.name)] = int(fields.get("VmRSS", "0 kB").split()[0])
            hwm[int(entry.name)] = int(fields.get("VmHWM", "0 kB").split()[0])
        except (OSError, KeyError, ValueError):
            continue
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        for child, parent in parents.items():
            if parent == pid and child not in tree:
                tree.add(child)
                frontier.append(child)
    return sum(rss.get(pid, 0) for pid in tree), max(hwm.get(pid, 0) for pid in tree)


def tree_run(dump: Path, out: Path, code: Path, *args: str) -> tuple[float, float, float]:
    """(peak RSS of the process tree, peak RSS of its largest process, both in MiB; CPU seconds) of ``wit
    build-queries`` from the checkout ``code`` on ``dump``, in-process FnApiRunner, in a fresh process."""
    argv = [sys.executable, "-c",
            "import sys; from wit_builder.cli import main; sys.exit(main(sys.argv[1:]))",
            "build-queries", "--dump", str(dump), "--out", str(out), *args, "--runner=FnApiRunner"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen(argv, cwd=code, env={**os.environ, "PYTHONPATH": str(code)},  # noqa: S603
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak, done = [0, 0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            tree, largest = _tree_rss_kib(proc.pid)
            peak[:] = max(peak[0], tree), max(peak[1], largest)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, stderr = proc.communicate()
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"build-queries ({code}) failed on {dump}: {stderr.decode()[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return peak[0] / 1024, peak[1] / 1024, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def sketch_memory(pages: int, types: int, peer: Path | None = None) -> int:
    """Peak RSS at two sketch widths on one dump, and the copies of the sketches that the difference implies;
    with ``peer``, that checkout side by side (same dump, alternating runs) and its outputs compared. Returns the
    exit code (1 when the outputs differ)."""
    from wit_builder.queries.ngram_sketch import sketches_bytes

    root = Path(__file__).resolve().parent.parent
    codes = {"this": root, **({"peer": peer.resolve()} if peer else {})}
    widths = (1 << 20, 1 << 23)
    grown_bytes = sketches_bytes(widths[1]) - sketches_bytes(widths[0])
    code = 0
    with tempfile.TemporaryDirectory(prefix="bench-sketch-") as tmp:
        dump = Path(tmp) / "zipf.xml.bz2"
        generate_dump(dump, pages, types, seed=1)
        peaks: dict[str, dict[int, tuple[float, float, float]]] = {name: {} for name in codes}
        for w in widths:
            for name, checkout in codes.items():  # alternating: the same load on both sides
                peaks[name][w] = tree_run(dump, Path(tmp) / f"{name}-{w}", checkout, "--sketch-width", str(w))
            for output in ("queries.parquet", "queries.txt"):
                if len({(Path(tmp) / f"{name}-{w}" / output).read_bytes() for name in codes}) != 1:
                    print(f"  DIFFERENT {output} at --sketch-width {w} between {' and '.join(codes)}")
                    code = 1
    print(f"sketch memory: {pages} generated pages, wit build-queries in-process (FnApiRunner), one range; "
          "peak RSS of the process tree (and of its largest process)")
    for name, checkout in codes.items():
        print(f"  {name} ({checkout}):")
        for w, (tree, largest, cpu) in peaks[name].items():
            print(f"    --sketch-width 2^{w.bit_length() - 1}: sketches {sketches_bytes(w) / 2**20:6.0f} MiB, peak "
                  f"RSS {tree:7.1f} MiB tree ({largest:7.1f} MiB largest process), cpu {cpu:.1f} s")
        tree_copies = (peaks[name][widths[1]][0] - peaks[name][widths[0]][0]) * 2**20 / grown_bytes
        largest_copies = (peaks[name][widths[1]][1] - peaks[name][widths[0]][1]) * 2**20 / grown_bytes
        print(f"    peak RSS grows {tree_copies:.2f}x the sketches' growth ({largest_copies:.2f}x for the largest "
              f"process): ~{tree_copies:.1f} copies of the sketches at peak")
    if len(codes) > 1:
        print(f"  outputs: {'the same bytes' if code == 0 else 'DIFFERENT'} (queries.parquet, queries.txt)")
    return code


def extraction(dump: Path, code: str) -> tuple[int, int]:
    """Pass 1's per-page work in ``code``'s rules: read, parse (in the helper), segment and count."""
    from wit_builder.core.languages import resolve
    from wit_builder.queries.wikitext import site_rules

    site = site_rules(resolve(code))
    parser = BoundedParser(site=site)
    unigrams, bigrams, pages, tokens = Counter(), Counter(), 0, 0
    try:
        for page in read_pages(DumpRange(str(dump)), lambda p: open(p, "rb")):  # noqa: SIM115 (closed by read_pages)
            if page.ns == 0 and page.redirect is None and page.problem is None:
                tokens += count_ngrams(parser.parse(page.text).text, unigrams, bigrams, code)
                pages += 1
    finally:
        parser.close()
    return pages, tokens


def languages(en_dump: Path, ja_dump: Path, repeat: int) -> None:
    """English and Japanese side by side: pass 1's per-page work (read, parse, segment, count) and the whole
    stage, pages and tokens per CPU-second, and the whole stage's peak RSS."""
    import json

    print(f"languages: pass 1's per-page work (read, parse in the helper, segment, count), best of {repeat}")
    for name, dump, code in (("English", en_dump, "en"), ("Japanese", ja_dump, "ja")):
        runs = []
        for _ in range(repeat):
            before = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
            pages, tokens = extraction(dump, code)
            after = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
            runs.append((sum(a.ru_utime + a.ru_stime - b.ru_utime - b.ru_stime for a, b in zip(after, before,
                                                                                                strict=True)),
                         pages, tokens))
        cpu, pages, tokens = min(runs)
        print(f"  {name:<8} {dump.name}: {pages} pages, {tokens:,} tokens: {pages / cpu:6.1f} pages/s, "
              f"{tokens / cpu:9,.0f} tokens/s per CPU-second (cpu {cpu:.1f} s)")

    print("languages: wit build-queries (in-process FnApiRunner, a fresh process per run, --min-unigram-count 5 "
          f"--min-bigram-count 5), best of {repeat}")
    with tempfile.TemporaryDirectory(prefix="bench-queries-lang-") as tmp:
        for name, dump in (("English", en_dump), ("Japanese", ja_dump)):
            best = None
            for i in range(repeat):
                out = Path(tmp) / f"{name}-{i}"
                rss, cpu, wall = scaling_run(dump, out, "--min-unigram-count", "5", "--min-bigram-count", "5")
                if best is None or cpu < best[1]:
                    counts = json.loads((out / "stats.json").read_text())["counts"]
                    best = (rss, cpu, wall, counts["pages_read"], counts["total_tokens"], counts["queries"])
            assert best is not None
            rss, cpu, wall, pages, tokens, queries = best
            print(f"  {name:<8} {dump.name}: {pages} pages, {tokens:,} tokens, {queries:,} queries: "
                  f"{pages / cpu:6.1f} pages/s, {tokens / cpu:9,.0f} tokens/s per CPU-second; peak RSS {rss:6.1f} MiB "
                  f"(cpu {cpu:.1f} s, wall {wall:.1f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dump", type=Path, default=None)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pages", type=int, default=2000, help="pages of the 1x generated dump (0: no scaling run)")
    parser.add_argument("--types", type=int, default=5_000_000, help="word types of the generated dumps")
    parser.add_argument("--sketch-memory", action="store_true", help="only the sketch memory run (two widths)")
    parser.add_argument("--peer", type=Path, default=None,
                        help="with --sketch-memory: another checkout run side by side (e.g. the main branch)")
    parser.add_argument("--ja-dump", type=Path, default=Path(__file__).parent.parent / "tests" / "data" / "wiki"
                        / "jawiki-country-excerpt.xml.bz2", help="the Japanese dump of the side-by-side run")
    parser.add_argument("--only-languages", action="store_true", help="run only the English/Japanese comparison")
    args = parser.parse_args()
    if args.sketch_memory:
        sys.exit(sketch_memory(args.pages if args.pages != 2000 else 300, args.types, args.peer))
    dump = args.dump or default_dump()
    logging.getLogger("wikiextractor").setLevel(logging.ERROR)
    logging.disable(logging.WARNING)
    if args.only_languages:
        languages(dump, args.ja_dump, args.repeat)
        return
    PARSER.parse("warm up")  # start the helper before the timed runs
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
    languages(dump, args.ja_dump, args.repeat)
    if args.pages:
        scaling(args.pages, args.types)


if __name__ == "__main__":
    main()
