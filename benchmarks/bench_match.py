"""Stage 2 match step vs a raw pyahocorasick loop, side by side on the same generated alt texts.

    .venv/bin/python benchmarks/bench_match.py [--texts 1000000] [--queries 500000] [--repeats 3]
    (or BENCH_MATCH_TEXTS / BENCH_MATCH_QUERIES / BENCH_MATCH_REPEATS in the environment)

Peer: the loop MetaCLIP and most re-implementations run, one automaton over the space-padded queries and
``automaton.iter(" " + text + " ")`` per text. Ours: the ``MatchQueries`` DoFn the pipeline ships, called on
batches of ``Candidate`` records (normalization per the shared spec, automaton, uid hash, output records),
with its automaton built by ``setup()`` from a queries.parquet file exactly as on a worker.

Texts and queries come from one word-like vocabulary with Zipfian frequencies, so frequent words are both
queries and common in texts (as with Wikipedia queries against web alt texts). Throughput is texts per
CPU-second of this process (per core), measured in interleaved rounds so that load from other processes
on the machine hits both sides alike; the best round of each side is reported.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import os
import random
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import ahocorasick
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipelines.build_pairs import MatchQueries  # noqa: E402
from schemas.queries import QUERIES  # noqa: E402
from wit_builder.pool_readers import Candidate  # noqa: E402

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


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def raw_loop(automaton: ahocorasick.Automaton, texts: list[str]) -> int:
    """The peer: MetaCLIP-style loop, padded raw text, a set of hits per text."""
    total = 0
    for text in texts:
        total += len({value for _, value in automaton.iter(f" {text} ")})
    return total


def pipeline_step(dofn: MatchQueries, batches: list[list[Candidate]]) -> int:
    total = 0
    for batch in batches:
        for _, pair in dofn.process(batch):
            total += len(pair.queries)
    return total


def timed(fn, *args) -> tuple[float, float, int]:
    gc.collect()
    cpu, wall = time.process_time(), time.perf_counter()
    result = fn(*args)
    return time.process_time() - cpu, time.perf_counter() - wall, result


def traced_build(path: str, queue: multiprocessing.Queue) -> None:
    """In a child: tracemalloc's view of the automaton build (pyahocorasick allocates via PyMem)."""
    from pipelines.build_pairs import load_matcher

    tracemalloc.start()
    matcher = load_matcher(path)
    current, peak = tracemalloc.get_traced_memory()
    queue.put((current / 1e6, peak / 1e6, matcher.num_queries))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=int(os.environ.get("BENCH_MATCH_TEXTS", 1_000_000)))
    parser.add_argument("--queries", type=int, default=int(os.environ.get("BENCH_MATCH_QUERIES", 500_000)))
    parser.add_argument("--repeats", type=int, default=int(os.environ.get("BENCH_MATCH_REPEATS", 3)))
    parser.add_argument("--batch-size", type=int, default=1024, help="texts per DoFn batch (BatchElements' max 2048)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)

    t0 = time.perf_counter()
    words = vocabulary(max(args.queries, 50_000), rng)
    cum = zipf_weights(len(words))
    queries = make_queries(words, cum, args.queries, rng)
    texts = make_texts(words, cum, args.texts, rng)
    del words, cum
    print(f"generated {len(texts):,} texts (mean {statistics.fmean(len(t) for t in texts[:100_000]):.0f} chars) "
          f"and {len(queries):,} queries in {time.perf_counter() - t0:.1f}s", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        queries_path = os.path.join(tmp, "queries.parquet")
        n = len(queries)
        pq.write_table(pa.table({"query": queries, "source": ["bench"] * n, "count": [1] * n, "score": [1.0] * n},
                                schema=QUERIES), queries_path)

        # Memory: RSS delta of the worker-side build (setup() reads the parquet and builds the automaton).
        gc.collect()
        before = rss_mb()
        t0 = time.perf_counter()
        dofn = MatchQueries(queries_path, "bench")
        dofn.setup()
        build_s = time.perf_counter() - t0
        gc.collect()
        automaton_rss = rss_mb() - before
        stats = dofn._matcher.automaton_stats()
        queue: multiprocessing.Queue = multiprocessing.get_context("fork").Queue()
        child = multiprocessing.get_context("fork").Process(target=traced_build, args=(queries_path, queue))
        child.start()
        traced_now, traced_peak, _ = queue.get()
        child.join()

    # The peer's automaton: keys padded, the query string as the value (its usual form).
    raw = ahocorasick.Automaton()
    for q in queries:
        raw.add_word(f" {q} ", q)
    raw.make_automaton()
    del queries

    candidates = [Candidate(f"https://img.example/{i}.jpg", t, "bench.parquet", i) for i, t in enumerate(texts)]
    batches = [candidates[i : i + args.batch_size] for i in range(0, len(candidates), args.batch_size)]

    raw_rounds, ours_rounds = [], []
    for round_no in range(args.repeats):
        raw_rounds.append(timed(raw_loop, raw, texts))
        ours_rounds.append(timed(pipeline_step, dofn, batches))
        print(f"round {round_no + 1}: raw {raw_rounds[-1][0]:.2f} cpu-s, pipeline {ours_rounds[-1][0]:.2f} cpu-s",
              flush=True)
    raw_cpu, raw_wall, raw_hits = min(raw_rounds)
    ours_cpu, ours_wall, ours_hits = min(ours_rounds)
    raw_rate, ours_rate = len(texts) / raw_cpu, len(texts) / ours_cpu

    print()
    print(f"{'':28}{'texts/s per core':>18}{'wall s':>9}{'matches/text':>14}")
    print(f"{'raw pyahocorasick loop':28}{raw_rate:>18,.0f}{raw_wall:>9.2f}{raw_hits / len(texts):>14.2f}")
    print(f"{'pipeline MatchQueries DoFn':28}{ours_rate:>18,.0f}{ours_wall:>9.2f}{ours_hits / len(texts):>14.2f}")
    print(f"ratio pipeline / raw: {ours_rate / raw_rate:.2f}x (target >= 0.5x)")
    print(f"automaton: {stats['words_count']:,} queries, {stats['nodes_count']:,} nodes, built in {build_s:.1f}s; "
          f"memory: RSS delta {automaton_rss:.0f} MB, tracemalloc {traced_now:.0f} MB (peak during build "
          f"{traced_peak:.0f} MB), pyahocorasick's own estimate {stats['total_size'] / 1e6:.0f} MB (target <= 200 MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
