"""Stage 2 as a whole vs a raw pyahocorasick loop, and the WAT reader vs a plain warcio + json loop.

    .venv/bin/python benchmarks/bench_match.py [--texts 1000000] [--queries 500000] [--files 8] [--wat-pages 2000]
        [--mixed-texts 200000] [--wat-only]
    (or BENCH_MATCH_TEXTS / BENCH_MATCH_QUERIES / BENCH_MATCH_REPEATS in the environment)

1. Stage vs matcher. Peer: the loop MetaCLIP and most re-implementations run, one automaton over the
   space-padded queries and ``automaton.iter(" " + text + " ")`` per text, over texts already in memory. Ours:
   ``wit build-pairs`` itself on the in-process runner (FnApiRunner), over a pool of parquet files holding the
   same texts: read, clean, tell each caption's language (fastText, ``wit_builder.pairs.langid``), match,
   collapse duplicates, balance and write pairs-*.parquet, query_counts and stats.json. The generated texts
   are word-like but in no language, so this pool runs ``--no-language-routing`` (every caption against the one
   queries folder, as the peer does; the language is still identified: its cost is in the figure).
1b. A mixed-language pool of real captions, side by side in the same run: the LAION alt texts (mostly English),
   the human image captions of ``tests/data/captions/image_captions.tsv`` (en/de/es/id/ja/ru/tr/zh/fr/ko/ar) and
   the ja/zh/th sentences of ``tests/data/segment``, repeated (each copy with its own URL) to ``--mixed-texts``;
   one queries folder per language (every token of 2+ characters of that language's texts, segmented by
   ``core.segment``), the stage routed by language against the raw loop over all queries in one automaton
   (language-blind).
   The stage runs in a child process (one worker: the in-process runner), so its CPU time and its peak resident
   memory are its own. Throughput is texts per CPU-second (per core), so load from other processes on a shared
   machine hits both sides alike; the raw loop runs before and after the stage and its best round counts.
2. WAT reading, records (image links) per CPU-second, three readers side by side over the same generated
   Common Crawl-layout WAT files (one gzip member per record, 20 image links and 10 anchors per page, image
   URLs relative with ``&amp;``): the named peer, ``warcio.ArchiveIterator`` + ``json.loads`` + the IMG@/src
   filter (it does less than a pool reader must); a second peer, the same loop plus the per-link rules every
   pool reader needs (entity-decode src and alt, resolve src against ``<base href>``/the page URL with
   urllib, keep http(s), normalize the URL and clean the alt with wit_builder.core.uid); and ``read_pool_file``
   (FastWARC records, the same rules, Candidate objects, bad input reported). ``--wat-only`` runs this part
   alone; ``--wat-layout cc`` writes pages as a Common Crawl WAT holds them (see ``write_wat``).

Texts and queries come from one word-like vocabulary with Zipfian frequencies, so frequent words are both
queries and common in texts (as with Wikipedia queries against web alt texts).
"""

from __future__ import annotations

import argparse
import csv
import gc
import html
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import ahocorasick
import pyarrow as pa
import pyarrow.parquet as pq
from warcio.archiveiterator import ArchiveIterator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from schemas.queries import AS_WRITTEN, QUERIES  # noqa: E402
from wit_builder.pairs.readers.formats import read_pool_file  # noqa: E402
from wit_builder.pairs.readers.layouts import PoolOptions  # noqa: E402
from wit_builder.pairs.readers.records import Candidate  # noqa: E402

ONSETS = ["", "b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "st", "tr", "br",
          "ch", "sh", "th", "pl", "gr", "cl", "fr", "sp"]
VOWELS = ["a", "e", "i", "o", "u", "ea", "ou", "ai", "io", "y"]
CODAS = ["", "", "n", "r", "s", "t", "l", "m", "nd", "st", "ng", "ck", "rt", "x"]


def vocabulary(size: int, rng: random.Random) -> list[str]:
    """Distinct word-like strings of 1-4 syllables, shorter words first (they get the frequent ranks)."""
    words: dict[str, None] = {}
    while len(words) < size:
        syllables = min(4, 1 + int(rng.expovariate(0.9)))
        words["".join(rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS) for _ in range(syllables))] = None
    return sorted(words, key=lambda w: (len(w) + rng.random() * 6))


def zipf_weights(n: int, exponent: float = 1.07) -> list[float]:
    cumulative, total = [], 0.0
    for rank in range(1, n + 1):
        total += rank**-exponent
        cumulative.append(total)
    return cumulative


def make_queries(words: list[str], cum: list[float], count: int, rng: random.Random) -> list[str]:
    """60% unigrams (the most frequent words, as stage 1's count threshold picks), 40% 2-3 word phrases."""
    unigrams = words[: int(count * 0.6)]
    phrases: dict[str, None] = {}
    while len(phrases) < count - len(unigrams):
        phrases[" ".join(rng.choices(words, cum_weights=cum, k=rng.choice((2, 2, 2, 3))))] = None
    return unigrams + list(phrases)


def make_texts(words: list[str], cum: list[float], count: int, rng: random.Random) -> list[str]:
    """Alt-text-like strings: 3-20 Zipfian words, some capitalized, some punctuation."""
    texts = []
    for _ in range(count):
        k = min(20, 3 + int(rng.expovariate(1 / 7)))
        tokens = rng.choices(words, cum_weights=cum, k=k)
        if rng.random() < 0.3:
            tokens[0] = tokens[0].capitalize()
        if rng.random() < 0.2:
            tokens[-1] += rng.choice((".", "!", ",", " -", " |"))
        if rng.random() < 0.1:
            tokens[rng.randrange(k)] = tokens[rng.randrange(k)].upper()
        texts.append(" ".join(tokens))
    return texts


def raw_loop(automaton: ahocorasick.Automaton, texts: list[str]) -> int:
    """The peer: MetaCLIP-style loop, padded raw text, a set of hits per text."""
    total = 0
    for text in texts:
        total += len({value for _, value in automaton.iter(f" {text} ")})
    return total


def timed(fn, *args) -> tuple[float, float, int]:
    gc.collect()
    cpu, wall = time.process_time(), time.perf_counter()
    result = fn(*args)
    return time.process_time() - cpu, time.perf_counter() - wall, result


# The child: `wit build-pairs` in-process; CPU and peak RSS of the stage alone (imports excluded).
STAGE_CHILD = """
import cProfile, json, os, pstats, resource, sys, time
from wit_builder import cli
import wit_builder.pairs.command
profile = os.environ.get("BENCH_MATCH_PROFILE")
profiler = cProfile.Profile(time.process_time) if profile else None  # CPU time: the machine may be shared
cpu, wall = time.process_time(), time.perf_counter()
if profiler:
    profiler.enable()
code = cli.main(sys.argv[1:])
if profiler:
    profiler.disable()
    profiler.dump_stats(profile)
cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
print("STAGE " + json.dumps({"code": code, "cpu": cpu, "wall": wall,
                             "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_stage(queries_dir: str | list[str], pool_glob: str, out: str, cap: int, profile: str | None = None,
              *extra: str) -> dict:
    folders = [queries_dir] if isinstance(queries_dir, str) else queries_dir
    argv = [sys.executable, "-c", STAGE_CHILD, "build-pairs", *(a for f in folders for a in ("--queries", f)),
            "--pool", pool_glob, "--out", out, "--per-query-cap", str(cap), "--runner=FnApiRunner", *extra]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if profile:  # cProfile slows the stage: a profiled run's times are for the profile, not the ratio
        env["BENCH_MATCH_PROFILE"] = profile
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    line = next((x for x in done.stdout.splitlines() if x.startswith("STAGE ")), None)
    if line is None or done.returncode != 0:
        sys.exit(f"the stage failed (exit {done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    result = json.loads(line[6:])
    result["summary"] = next((x for x in done.stdout.splitlines() if "records ->" in x), "")
    return result


def real_captions() -> list[tuple[str, str]]:
    """(language, caption) of the real texts in tests/data: LAION alt texts (language unknown: ``None``),
    human image captions (tests/data/captions), UD sentences."""
    data = ROOT / "tests" / "data"
    rows: list[tuple[str, str]] = [("", c) for c in
                                   pq.read_table(data / "laion_captions_10000.parquet").column("caption").to_pylist()]
    with (data / "captions" / "image_captions.tsv").open(encoding="utf-8", newline="") as f:
        rows += [(r["lang"], r["caption"]) for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
    for lang, name in (("ja", "ja_gsd_test300"), ("zh", "zh_gsdsimp_test300"), ("th", "th_pud_test300")):
        rows += [(lang, json.loads(line)["text"]) for line in (data / "segment" / f"{name}.jsonl").read_text(
            encoding="utf-8").splitlines()]
    return rows


def bench_mixed(args: argparse.Namespace, tmp: str) -> str:
    """Part 1b: the stage routed by language against the raw loop, on a mixed pool of real captions."""
    from wit_builder.core import segment
    from wit_builder.pairs.langid import LanguageIdentifier

    rows = real_captions()
    lid = LanguageIdentifier()
    langs = [lang or lid.identify_one(text)[0] for lang, text in rows]  # LAION's languages as the model says
    kept = ("ar", "de", "en", "es", "fr", "id", "ja", "ko", "ru", "th", "tr", "zh")
    folders, all_queries = [], set()
    for lang in kept:
        tokens = {t for (_, text), found in zip(rows, langs, strict=True) if found == lang
                  for t in segment.tokenize(text, lang) if len(t) >= 2}
        folder = os.path.join(tmp, f"mixed-queries-{lang}")
        os.makedirs(folder)
        queries = sorted(tokens)
        all_queries.update(queries)
        n = len(queries)
        pq.write_table(pa.table({"query": queries, "source": ["bench"] * n, "count": [1] * n, "score": [1.0] * n,
                                 "lang": [lang] * n, AS_WRITTEN: [segment.written_form(q) for q in queries]},
                                schema=QUERIES), os.path.join(folder, "queries.parquet"))
        folders.append(folder)
    texts = [rows[i % len(rows)][1] for i in range(args.mixed_texts)]
    pool_dir = os.path.join(tmp, "mixed-pool")
    os.makedirs(pool_dir)
    per_file = -(-len(texts) // args.files)
    for i in range(args.files):
        part = texts[i * per_file: (i + 1) * per_file]
        urls = [f"https://m{(i * per_file + j) % 1000}.example/{i * per_file + j}.jpg" for j in range(len(part))]
        pq.write_table(pa.table({"url": urls, "caption": part}), os.path.join(pool_dir, f"part-{i:03d}.parquet"))
    raw = ahocorasick.Automaton()
    for q in all_queries:
        raw.add_word(f" {q} ", q)
    raw.make_automaton()
    raw_cpu = min(timed(raw_loop, raw, texts)[0] for _ in range(max(1, args.repeats)))
    stage = run_stage(folders, os.path.join(pool_dir, "*.parquet"), os.path.join(tmp, "mixed-out"), args.cap)
    share = {lang: langs.count(lang) / len(langs) for lang in sorted(set(langs))}
    top = ", ".join(f"{k} {v:.1%}" for k, v in sorted(share.items(), key=lambda kv: -kv[1])[:8])
    raw_rate, stage_rate = len(texts) / raw_cpu, len(texts) / stage["cpu"]
    return (f"mixed-language pool of real captions: {len(texts):,} texts ({top}), {len(all_queries):,} queries in "
            f"{len(kept)} languages\n"
            f"{'raw pyahocorasick loop (language-blind)':44}{raw_rate:>12,.0f} texts/s per core\n"
            f"{'wit build-pairs, routed by language':44}{stage_rate:>12,.0f} texts/s per core "
            f"({stage['cpu']:.1f} cpu-s; {stage['summary']})\n"
            f"ratio stage / raw matcher on the mixed pool: {stage_rate / raw_rate:.3f}x")


def write_wat(path: Path, pages: int, words: list[str], rng: random.Random, layout: str = "small") -> int:
    """A WAT file of ``pages`` pages with 20 image links each; the number of image links.

    ``small``: one metadata record per page, 20 images and 10 anchors, a minimal head. ``cc``: what a Common
    Crawl WAT holds per page: the request's and the response's metadata records, the response with its HTTP
    headers, 15 metas, scripts and stylesheets and 100 anchors beside the 20 images (the JSON per image
    link grows about fivefold, so the record and JSON layer weighs more against the per-link work).
    """
    from tests.pairs.conftest import WatBuilder, img, wat_payload

    wat = WatBuilder()
    links = 0
    for page in range(pages):
        url = f"https://site{page % 97}.example/page/{page}.html"
        items = [img(f"/img/{page}/{i}.jpg?w=1&amp;h=2", " ".join(rng.choices(words[:5000], k=6)))
                 for i in range(20)]
        anchors = 10 if layout == "small" else 100
        items += [{"path": "A@/href", "url": f"/p/{i}", "text": " ".join(rng.choices(words[:5000], k=3))}
                  for i in range(anchors)]
        if layout == "small":
            wat.page(url, items)
        else:
            wat.request_record(url)
            rng.shuffle(items)
            items += [{"path": "SCRIPT@/src", "url": f"/js/{i}.js", "type": "text/javascript"} for i in range(8)]
            doc = json.loads(wat_payload(url, items))
            envelope = doc["Envelope"]
            envelope["WARC-Header-Metadata"].update({
                "WARC-Date": "2024-05-18T01:58:10Z", "WARC-Record-ID": f"<urn:uuid:{page:032x}>",
                "Content-Length": "70000", "Content-Type": "application/http; msgtype=response",
                "WARC-IP-Address": "192.0.2.1", "WARC-Payload-Digest": "sha1:" + "A" * 32})
            response = envelope["Payload-Metadata"]["HTTP-Response-Metadata"]
            response["Headers"] = {f"X-Header-{i}": "v" * 30 for i in range(15)}
            response["HTML-Metadata"]["Head"]["Metas"] = [
                {"name": f"meta{i}", "content": " ".join(rng.choices(words[:5000], k=8))} for i in range(15)]
            response["HTML-Metadata"]["Head"]["Link"] = [
                {"path": "LINK@/href", "url": f"/css/{i}.css", "rel": "stylesheet"} for i in range(6)]
            wat.raw(url, json.dumps(doc).encode())
        links += 20
    wat.write(path)
    return links


def warcio_loop(paths: list[str]) -> int:
    """The peer: warcio + json over the WAT files, image links with their alt text, nothing else."""
    found = 0
    for path in paths:
        with open(path, "rb") as f:
            for record in ArchiveIterator(f):
                if record.rec_type != "metadata":
                    continue
                doc = json.loads(record.content_stream().read())
                meta = doc["Envelope"]["Payload-Metadata"].get("HTTP-Response-Metadata", {}).get("HTML-Metadata")
                for link in (meta or {}).get("Links", []):
                    if link.get("path") == "IMG@/src" and link.get("alt"):
                        found += 1
    return found


def warcio_rules_loop(paths: list[str]) -> int:
    """Second peer: the warcio + json loop plus the per-link rules of a pool reader, written plainly
    (html.unescape, urllib's urljoin, wit_builder.core.uid's normalize_url and clean_caption), pairs kept."""
    from wit_builder.core.uid import clean_caption, normalize_url

    pairs: list[tuple[str, str]] = []
    for path in paths:
        with open(path, "rb") as f:
            for record in ArchiveIterator(f):
                if record.rec_type != "metadata":
                    continue
                envelope = json.loads(record.content_stream().read())["Envelope"]
                page = envelope.get("WARC-Header-Metadata", {}).get("WARC-Target-URI")
                meta = envelope["Payload-Metadata"].get("HTTP-Response-Metadata", {}).get("HTML-Metadata")
                if not meta:
                    continue
                base = page
                if declared := meta.get("Head", {}).get("Base"):
                    base = urllib.parse.urljoin(page, declared.strip())
                for link in meta.get("Links", []):
                    if link.get("path") != "IMG@/src" or not link.get("alt") or not link.get("url"):
                        continue
                    url = urllib.parse.urljoin(base, html.unescape(link["url"]).strip())
                    if not url.startswith(("http://", "https://")):
                        continue
                    caption = clean_caption(html.unescape(link["alt"]))
                    if caption:
                        pairs.append((normalize_url(url), caption))
    return len(pairs)


def our_wat_reader(paths: list[str]) -> int:
    found = 0
    for path in paths:  # the same plain file object as the peer
        items = read_pool_file(path, lambda p: open(p, "rb"), PoolOptions())  # noqa: SIM115 (the reader closes it)
        found += sum(1 for item in items if isinstance(item, Candidate))
    return found


def bench_wat(args: argparse.Namespace, words: list[str], rng: random.Random,
              tmp: str) -> tuple[str, int, float, float]:
    """Part 2: the three WAT readers, alternating rounds, the best of each: (report table, image links,
    CPU seconds of the warcio + json peer and of read_pool_file)."""
    wat_paths = []
    links = 0
    for i in range(args.wat_files):
        path = Path(tmp) / f"CC-MAIN-{i}.warc.wat.gz"
        links += write_wat(path, args.wat_pages, words, rng, args.wat_layout)
        wat_paths.append(str(path))
    readers = {"warcio + json": warcio_loop, "warcio + json + the same per-link rules": warcio_rules_loop,
               "read_pool_file (FastWARC)": our_wat_reader}
    rounds: dict[str, list[tuple[float, float, int]]] = {name: [] for name in readers}
    for _ in range(args.wat_rounds):
        for name, reader in readers.items():
            rounds[name].append(timed(reader, wat_paths))
    best = {name: min(r) for name, r in rounds.items()}
    assert all(found == links for _, _, found in best.values()), {n: b[2] for n, b in best.items()}
    peer_cpu, rules_cpu, ours_cpu = (best[name][0] for name in readers)
    lines = [f"WAT reading, {links:,} image links in {args.wat_files} files ({args.wat_pages:,} pages each, "
             f"{args.wat_layout} layout), "
             f"best of {args.wat_rounds} rounds:", f"{'':44}{'links/s per core':>18}{'cpu s':>9}"]
    lines += [f"{name:44}{links / best[name][0]:>18,.0f}{best[name][0]:>9.2f}" for name in readers]
    lines.append(f"ratio read_pool_file / warcio+json: {peer_cpu / ours_cpu:.2f}x; "
                 f"/ warcio+json+rules: {rules_cpu / ours_cpu:.2f}x")
    return "\n".join(lines), links, peer_cpu, ours_cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=int(os.environ.get("BENCH_MATCH_TEXTS", 1_000_000)))
    parser.add_argument("--queries", type=int, default=int(os.environ.get("BENCH_MATCH_QUERIES", 500_000)))
    parser.add_argument("--repeats", type=int, default=int(os.environ.get("BENCH_MATCH_REPEATS", 2)),
                        help="raw loop rounds (before and after the stage)")
    parser.add_argument("--files", type=int, default=8, help="parquet files the pool is split into")
    parser.add_argument("--cap", type=int, default=20_000, help="--per-query-cap of the stage")
    parser.add_argument("--wat-rounds", type=int, default=3, help="rounds of each WAT reader (the best counts)")
    parser.add_argument("--wat-only", action="store_true", help="run part 2 (WAT reading) alone")
    parser.add_argument("--wat-layout", choices=("small", "cc"), default="small",
                        help="WAT pages: small records, or Common Crawl's layout (request record, headers, "
                             "metas, 100 anchors)")
    parser.add_argument("--wat-pages", type=int, default=2000, help="pages (20 image links each) per WAT file")
    parser.add_argument("--wat-files", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mixed-texts", type=int, default=int(os.environ.get("BENCH_MATCH_MIXED", 200_000)),
                        help="texts of the mixed-language pool of real captions (part 1b; 0 skips it)")
    parser.add_argument("--profile", metavar="PATH",
                        help="run the stage under cProfile, write its stats to PATH and print the top functions "
                             "(the ratio of such a run is not a measurement)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    if args.wat_only:
        with tempfile.TemporaryDirectory() as tmp:
            print(bench_wat(args, vocabulary(50_000, rng), rng, tmp)[0])
        return 0

    t0 = time.perf_counter()
    words = vocabulary(max(args.queries, 50_000), rng)
    cum = zipf_weights(len(words))
    queries = make_queries(words, cum, args.queries, rng)
    texts = make_texts(words, cum, args.texts, rng)
    print(f"generated {len(texts):,} texts (mean {statistics.fmean(len(t) for t in texts[:100_000]):.0f} chars) "
          f"and {len(queries):,} queries in {time.perf_counter() - t0:.1f}s", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        queries_dir = os.path.join(tmp, "queries")
        os.makedirs(queries_dir)
        n = len(queries)
        pq.write_table(pa.table({"query": queries, "source": ["bench"] * n, "count": [1] * n, "score": [1.0] * n,
                                 "lang": ["en"] * n, AS_WRITTEN: queries}, schema=QUERIES),
                       os.path.join(queries_dir, "queries.parquet"))
        pool_dir = os.path.join(tmp, "pool")
        os.makedirs(pool_dir)
        per_file = -(-len(texts) // args.files)
        for i in range(args.files):
            part = texts[i * per_file : (i + 1) * per_file]
            urls = [f"https://img{(i * per_file + j) % 1000}.example/{i * per_file + j}.jpg" for j in range(len(part))]
            pq.write_table(pa.table({"url": urls, "caption": part}), os.path.join(pool_dir, f"part-{i:03d}.parquet"))

        raw = ahocorasick.Automaton()  # the peer's automaton: keys padded, the query string as the value
        for q in queries:
            raw.add_word(f" {q} ", q)
        raw.make_automaton()
        del queries

        raw_rounds = [timed(raw_loop, raw, texts)]
        print(f"raw loop: {raw_rounds[-1][0]:.1f} cpu-s", flush=True)
        del raw
        gc.collect()
        stage = run_stage(queries_dir, os.path.join(pool_dir, "*.parquet"), os.path.join(tmp, "out"), args.cap,
                          args.profile, "--no-language-routing")
        print(f"stage: {stage['cpu']:.1f} cpu-s, {stage['wall']:.1f} s wall; {stage['summary']}", flush=True)
        raw = ahocorasick.Automaton()
        for q in pq.read_table(os.path.join(queries_dir, "queries.parquet")).column("query").to_pylist():
            raw.add_word(f" {q} ", q)
        raw.make_automaton()
        for _ in range(max(1, args.repeats - 1)):
            raw_rounds.append(timed(raw_loop, raw, texts))
            print(f"raw loop: {raw_rounds[-1][0]:.1f} cpu-s", flush=True)
        del raw
        raw_cpu, raw_wall, raw_hits = min(raw_rounds)
        mixed = bench_mixed(args, tmp) if args.mixed_texts else None
        wat_report, links, peer_cpu, ours_cpu = bench_wat(args, words, rng, tmp)

    raw_rate, stage_rate = len(texts) / raw_cpu, len(texts) / stage["cpu"]
    print()
    print(f"{len(texts):,} texts x {n:,} queries, pool of {args.files} parquet files; "
          f"{raw_hits / len(texts):.2f} matches per text")
    print(f"{'':34}{'texts/s per core':>18}{'cpu s':>9}{'wall s':>9}")
    print(f"{'raw pyahocorasick loop':34}{raw_rate:>18,.0f}{raw_cpu:>9.1f}{raw_wall:>9.1f}")
    print(f"{'wit build-pairs (FnApiRunner)':34}{stage_rate:>18,.0f}{stage['cpu']:>9.1f}{stage['wall']:>9.1f}")
    print(f"ratio stage / raw matcher: {stage_rate / raw_rate:.3f}x (target >= 0.25x)")
    if mixed:
        print(mixed)
    print(f"peak memory of the stage's worker (the in-process runner, one process): {stage['maxrss_mb']:,.0f} MB; "
          f"this process (texts, peer automaton): "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB")
    if args.profile:
        import pstats

        print(f"profiled run (ratio not a measurement); stage functions by own time, stats in {args.profile}:")
        pstats.Stats(args.profile).sort_stats("tottime").print_stats(15)
    print(f"WAT reading, {links:,} image links in {args.wat_files} files: warcio+json loop "
          f"{links / peer_cpu:,.0f} links/s, read_pool_file {links / ours_cpu:,.0f} links/s per core; "
          f"ratio {peer_cpu / ours_cpu:.2f}x")
    print(wat_report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
