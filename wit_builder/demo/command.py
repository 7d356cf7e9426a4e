"""``wit demo``: the whole chain on data that ships offline, served from a loopback HTTP server.

    enwiki sample (gensim) + WordNet ──► build-queries ──► queries/
    demo corpus (wit_builder.demo.corpus) ──► corpus/www served on 127.0.0.1 ──► pool.parquet
    build-pairs ──► pairs/ ──► download ──► raw/ ──► finalize (decontaminated against heldout/) ──► shards/
    train (tiny CLIP, CPU) ──► train/ ──► eval (zero-shot, prompt ensembling, on heldout/) ──► eval.json

Each stage runs through ``wit_builder.cli.main`` with the same flags a user would type. A stage records a
fingerprint of its inputs when it finishes; a rerun skips finished stages whose fingerprint still matches,
resumes a stage interrupted with the same inputs (download and train pick up where they stopped), and starts
over (its folder emptied) when an upstream stage changed. The server always stops, also on errors.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from schemas import stats as stats_schema
from schemas.download import RAW_STATUSES
from schemas.finalize import DATASET_CARD, SIZES_JSON
from schemas.pairs import PAIRS_GLOB
from schemas.queries import QUERIES_PARQUET
from schemas.stats import STATS_JSON
from wit_builder import cli
from wit_builder.beam import fileio
from wit_builder.core import errors, run_folder
from wit_builder.demo import corpus as demo_corpus
from wit_builder.demo import languages as demo_languages
from wit_builder.demo.options import DEFAULT_PORT, DemoOptions
from wit_builder.demo.options import OPTIONS as OPTIONS  # the cli generates the flags from it
from wit_builder.demo.server import DemoServer

ENWIKI = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
WIKI_CAPTIONS = 40  # real file-link captions per language added to the pool with --languages en,ja
DONE = ".wit-demo-done.json"        # written when a stage finished: its fingerprint and duration
STARTED = ".wit-demo-started.json"  # written when a stage starts: a rerun with the same fingerprint resumes
SERVER_JSON = "server.json"         # the port the pool's URLs point at, reused by reruns
ACCOUNTING_ROWS = "accounting/rows"  # finalize: every raw row with its final status
# Pool row kinds that never reach the download, and why.
DROPPED_BY_PAIRS = {
    "duplicate_pair": "merged with the identical train row by build-pairs (same uid)",
    "distractor": "matched no query: dropped by build-pairs",
    "filtered": "refused by build-pairs: empty caption, data: URI, ftp:// URL, URL over 2048 characters",
}

POOL_SCHEMA = pa.schema([pa.field("url", pa.string()), pa.field("caption", pa.string()),
                         pa.field("kind", pa.string())])


# ---- stage bookkeeping ----

def _fingerprint(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class DemoStep:
    """One step of the chain and its folder: decides skip / resume / fresh start, records completion."""

    def __init__(self, name: str, folder: Path, fingerprint: str, force: bool) -> None:
        self.name, self.folder, self.fingerprint, self.force = name, folder, fingerprint, force

    def _read(self, marker: str) -> dict | None:
        path = self.folder / marker
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def done(self) -> bool:
        record = self._read(DONE)
        return not self.force and record is not None and record.get("fingerprint") == self.fingerprint

    def begin(self) -> None:
        started = self._read(STARTED)
        resume = not self.force and started is not None and started.get("fingerprint") == self.fingerprint
        if not resume and self.folder.exists():
            shutil.rmtree(self.folder)  # outputs of other inputs must not mix with this run's
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / DONE).unlink(missing_ok=True)
        (self.folder / STARTED).write_text(json.dumps({"fingerprint": self.fingerprint}) + "\n")
        print(f"\n==> {self.name}: {'resuming' if resume else 'running'} (outputs in {self.folder})", flush=True)

    def finish(self, seconds: float) -> None:
        (self.folder / DONE).write_text(json.dumps({"fingerprint": self.fingerprint, "seconds": seconds}) + "\n")

    def seconds(self) -> float:
        return float((self._read(DONE) or {}).get("seconds", 0.0))


def _wit(argv: list[str]) -> None:
    print("$ wit " + " ".join(argv), flush=True)
    code = cli.main(argv)
    if code != 0:
        raise DemoError(f"'wit {argv[0]}' failed with exit status {code}; its message is above")


class DemoError(errors.WitError):
    """A step of the demo failed (its own message is above) or its bundled inputs are missing (exit 1)."""


# ---- inputs ----

def enwiki_sample() -> Path:
    try:
        import gensim
    except ImportError:
        raise DemoError("the demo reads the enwiki sample in the gensim wheel: pip install -e '.[test]'") from None
    path = Path(gensim.__file__).parent / "test" / "test_data" / ENWIKI
    if not path.exists():
        raise DemoError(f"{path} is missing from the installed gensim; reinstall gensim==4.4.0")
    return path


def start_server(corpus_dir: Path, wanted: int) -> DemoServer:
    """The corpus server on ``wanted``; with 0, on the port an earlier run recorded, else DEFAULT_PORT, else any.

    The port is part of every URL, so of every pair's uid and hash rank: the same port gives the same balanced
    sample (and a rerun reuses build-pairs and download).
    """
    www, redirects = corpus_dir / demo_corpus.WWW, json.loads((corpus_dir / demo_corpus.REDIRECTS).read_text())
    if wanted:
        try:
            return DemoServer(www, redirects, port=wanted)
        except OSError as e:
            raise DemoError(f"cannot serve the corpus on port {wanted} ({e}); pass another --port or 0") from None
    recorded = corpus_dir / SERVER_JSON
    for port in ([json.loads(recorded.read_text())["port"]] if recorded.exists() else []) + [DEFAULT_PORT]:
        with contextlib.suppress(OSError):
            return DemoServer(www, redirects, port=port)
    print(f"note: port {DEFAULT_PORT} is taken; serving on another, so the sample differs slightly from the "
          f"reference run (pass --port to choose)", flush=True)
    return DemoServer(www, redirects, port=0)


def prepare_corpus(corpus_dir: Path, cfg: demo_corpus.CorpusConfig,
                   langs: tuple[str, ...] = demo_languages.DEFAULT) -> dict:
    """Generate (or reuse) the served files and held-out images; the manifest tells what is where. With Japanese
    (``langs``), the Japanese rows, real captions of both dumps and per-language class-name files are added
    (``demo.languages``); the manifest then records the languages."""
    manifest_path = corpus_dir / demo_corpus.MANIFEST
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("config") == asdict(cfg) and manifest.get("languages", ["en"]) == list(langs) and all(
                (corpus_dir / rel).exists() for rel in manifest["sha256"]):
            return manifest
    started = time.monotonic()
    corpus = demo_corpus.generate(cfg)
    if "ja" in langs:
        wiki = {"en": demo_languages.dump_captions(enwiki_sample(), WIKI_CAPTIONS),
                "ja": demo_languages.dump_captions(demo_languages.JAWIKI, WIKI_CAPTIONS)}
        demo_corpus.add_japanese(corpus, cfg, wiki, per_class=cfg.train_per_class // 2)
    manifest = demo_corpus.write_files(corpus, corpus_dir)
    if langs != demo_languages.DEFAULT:
        manifest["languages"] = list(langs)
        for lang in langs:
            (corpus_dir / f"classnames-{lang}.txt").write_text(
                demo_languages.classnames_file(corpus.classes, lang), encoding="utf-8")
    manifest["config"] = asdict(cfg)
    manifest["rows"] = [asdict(r) for r in corpus.rows]
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    print(f"corpus: {len(corpus.files)} served files, {len(corpus.rows)} pool rows, {len(corpus.classes)} classes, "
          f"{sum(len(v) for v in corpus.heldout.values())} held-out images in {time.monotonic() - started:.1f}s",
          flush=True)
    return manifest


def write_pool(corpus_dir: Path, manifest: dict, base_url: str) -> Path:
    """pool.parquet for this server address (rewritten only when the address changed)."""
    rows = [demo_corpus.PoolRow(**r) for r in manifest["rows"]]
    records = demo_corpus.pool_records(demo_corpus.Corpus(manifest["classes"], {}, {}, rows), base_url)
    table = pa.Table.from_pylist(records, schema=POOL_SCHEMA)
    path = corpus_dir / demo_corpus.POOL
    if not path.exists() or not pq.read_table(path).equals(table):
        fileio.write_parquet(str(path), table)
    return path


def check_classes(queries_dir: Path, classes: list[str], lang: str = "en") -> list[str]:
    """Class words stage 1 did not list as queries (their images can never be matched); in Japanese the class's
    word normalized as stage 1 normalizes text (``core.segment``)."""
    listed = set(pq.read_table(queries_dir / QUERIES_PARQUET, columns=["query"]).column("query").to_pylist())
    if lang == "en":
        return [c for c in classes if c not in listed]
    from wit_builder.core import segment

    return [c for c in classes if segment.normalize(demo_languages.JAPANESE[c], lang) not in listed]


# ---- the chain ----

def run(args: DemoOptions, beam_argv: list[str]) -> int:
    """``wit demo``: exit 0 done; a failed step raises :class:`DemoError` (the cli prints it, exit 1)."""
    started = time.monotonic()
    out = Path(args.out).resolve()
    with _take_folder(out, args.overwrite):
        return _run_chain(args, beam_argv, out, started)


@contextlib.contextmanager
def _take_folder(out: Path, overwrite: bool) -> Iterator[None]:
    """The demo's --out as every stage takes its own (``wit_builder.core.run_folder``): refused when it holds
    files wit did not write (unless ``overwrite``: its subfolders are emptied when a stage starts afresh),
    locked for one run at a time, marked as the demo's."""
    names = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    marker_path = out / run_folder.MARKER
    marker = run_folder.marker_command(marker_path.read_text()) if marker_path.exists() else None
    problem = run_folder.ownership_problem(str(out), "demo", names, marker)
    if problem is not None and not overwrite:
        raise errors.UsageError(problem)
    out.mkdir(parents=True, exist_ok=True)
    lock = run_folder.FolderLock(str(out), "demo")
    try:
        lock.acquire()
    except run_folder.LockedError as exc:
        raise errors.UsageError(str(exc)) from None
    try:
        fileio.write_marker(str(out), "demo")
        yield
    finally:
        lock.release()


def _run_chain(args: DemoOptions, beam_argv: list[str], out: Path, started: float) -> int:
    """The chain itself, in ``out`` (taken by :func:`_take_folder`)."""
    dirs = {name: out / name for name in ("corpus", "queries", "pairs", "raw", "shards", "train", "eval")}
    langs = demo_languages.parse(args.languages)
    cfg = demo_corpus.CorpusConfig(seed=args.seed)
    manifest = prepare_corpus(dirs["corpus"], cfg, langs)
    heldout = dirs["corpus"] / demo_corpus.HELDOUT
    timings: dict[str, float] = {}

    # Stage 1 does not depend on the corpus; its fingerprint is its inputs.
    dump = enwiki_sample()
    wordnet = Path(args.wordnet_dir)
    has_wordnet = (wordnet / "data.noun").exists()
    if not has_wordnet:
        print(f"note: no WordNet at {wordnet}; queries come from the dump only and some demo classes may not be "
              f"queries (make wordnet installs Debian's wordnet-base)", flush=True)
    queries = DemoStep("build-queries", dirs["queries"], _fingerprint("queries", str(dump), has_wordnet), args.force)
    _stage(queries, timings, ["build-queries", "--dump", str(dump), "--out", str(queries.folder),
                              *(["--wordnet-dir", str(wordnet)] if has_wordnet else []), *beam_argv])
    missing = check_classes(queries.folder, manifest["classes"])
    if missing:
        print(f"warning: demo classes that are not queries (no training pairs will match them): {missing}",
              flush=True)
    # Every further language: its own queries folder (stage 1 on the shipped dump of that language).
    more_queries = [_language_queries(lang, out, manifest["classes"], timings, args.force, beam_argv)
                    for lang in langs if lang != "en"]
    language_parts = [step.fingerprint for step in more_queries]  # [] for English: fingerprints unchanged

    with start_server(dirs["corpus"], args.port) as server:
        (dirs["corpus"] / SERVER_JSON).write_text(json.dumps({"port": server.port}) + "\n")
        print(f"serving {dirs['corpus'] / demo_corpus.WWW} at {server.base_url}", flush=True)
        pool = write_pool(dirs["corpus"], manifest, server.base_url)

        pairs = DemoStep("build-pairs", dirs["pairs"],
                      _fingerprint(queries.fingerprint, fileio.sha256_file(str(pool)), args.per_query_cap, args.seed,
                                   *language_parts),
                      args.force)
        _stage(pairs, timings, ["build-pairs", "--queries", str(queries.folder),
                                *[arg for step in more_queries for arg in ("--queries", str(step.folder))],
                                "--pool", str(pool),
                                "--out", str(pairs.folder), "--per-query-cap", str(args.per_query_cap),
                                "--seed", str(args.seed), "--rows-per-file", "400", *beam_argv])
        raw = DemoStep("download", dirs["raw"], _fingerprint(pairs.fingerprint, args.image_size), args.force)
        _stage(raw, timings, ["download", "--pairs", str(pairs.folder / PAIRS_GLOB), "--out", str(raw.folder),
                              "--image-size", str(args.image_size), "--rows-per-shard", "250",
                              "--allow-private-networks", "--retries", "1", "--timeout", "5", *beam_argv])
    print(f"server at {server.base_url} stopped", flush=True)

    shards = DemoStep("finalize", dirs["shards"], _fingerprint(raw.fingerprint, args.per_query_cap), args.force)
    _stage(shards, timings, ["finalize", "--raw", str(raw.folder), "--out", str(shards.folder),
                             "--samples-per-shard", "200", "--per-query-cap", str(args.per_query_cap),
                             "--decontaminate", str(heldout), "--seed", str(args.seed), *beam_argv])
    train = DemoStep("train", dirs["train"], _fingerprint(shards.fingerprint, args.steps, args.batch_size, args.seed),
                  args.force)
    _stage(train, timings, ["train", "--shards", str(shards.folder), "--out", str(train.folder), "--model", "tiny",
                            "--batch-size", str(args.batch_size), "--steps", str(args.steps), "--device", "cpu",
                            "--workers", str(args.workers), "--seed", str(args.seed), "--resume"])
    evaluation = DemoStep("eval", dirs["eval"], _fingerprint(train.fingerprint, *language_parts), args.force)
    eval_json = evaluation.folder / "eval.json"
    names = [arg for lang in langs if len(langs) > 1
             for arg in ("--classnames", f"{lang}={dirs['corpus'] / f'classnames-{lang}.txt'}")]
    _stage(evaluation, timings, ["eval", "--checkpoint", str(train.folder), "--zeroshot", str(heldout), *names,
                                 "--retrieval", str(shards.folder), "--workers", str(args.workers),
                                 "--device", "cpu", "--out", str(eval_json)])

    report(out, dirs, manifest, eval_json, timings, time.monotonic() - started)
    return 0


def _language_queries(lang: str, out: Path, classes: list[str], timings: dict[str, float], force: bool,
                      beam_argv: list[str]) -> DemoStep:
    """Stage 1 for a language other than English, on the shipped dump and WordNet lemmas of that language
    (``demo.languages``) -> ``OUT/queries-<lang>``; warns about class words that did not become queries."""
    dump, lemmas = demo_languages.JAWIKI, demo_languages.JA_WORDNET
    step = DemoStep(f"build-queries [{lang}]", out / f"queries-{lang}",
                    _fingerprint("queries", lang, fileio.sha256_file(str(dump)), fileio.sha256_file(str(lemmas))),
                    force)
    _stage(step, timings, ["build-queries", "--dump", str(dump), "--omw-file", str(lemmas), "--out",
                           str(step.folder), *beam_argv])
    missing = check_classes(step.folder, classes, lang)
    if missing:
        print(f"warning: {lang} class words that are not queries (no {lang} pairs will match them): {missing}",
              flush=True)
    return step


def _stage(stage: DemoStep, timings: dict[str, float], argv: list[str]) -> None:
    if stage.done():
        timings[stage.name] = 0.0
        print(f"\n==> {stage.name}: complete from an earlier run, reused ({stage.folder})", flush=True)
        return
    stage.begin()
    started = time.monotonic()
    _wit(argv)
    timings[stage.name] = time.monotonic() - started
    stage.finish(timings[stage.name])


# ---- the report ----

def kind_table(pool_path: Path, pairs_dir: Path, shards_dir: Path) -> list[tuple[str, int, int, str]]:
    """Per pool row kind: rows in the pool, rows kept as pairs, and their final statuses (with a reason)."""
    pool = pq.read_table(pool_path).to_pylist()
    kept_urls: Counter = Counter()
    for path in sorted(pairs_dir.glob(PAIRS_GLOB)):
        kept_urls.update(pq.read_table(path, columns=["url"]).column("url").to_pylist())
    final: dict[str, list[tuple[str, str]]] = {}
    for path in sorted((shards_dir / ACCOUNTING_ROWS).glob("*.parquet")):
        for row in pq.read_table(path, columns=["url", "status", "error_message"]).to_pylist():
            final.setdefault(row["url"], []).append((row["status"], row["error_message"] or ""))
    rows = []
    for kind in (*demo_corpus.KINDS, *demo_corpus.LANGUAGE_KINDS):
        urls = sorted({r["url"] for r in pool if r["kind"] == kind})
        if not urls:
            continue
        if kind in DROPPED_BY_PAIRS:
            rows.append((kind, sum(r["kind"] == kind for r in pool), 0, DROPPED_BY_PAIRS[kind]))
            continue
        outcomes = [o for url in urls for o in final.get(url, [])]
        statuses = Counter(status for status, _ in outcomes)
        text = ", ".join(f"{s} {n}" for s, n in statuses.most_common())
        if len(outcomes) == 1 and outcomes[0][1]:  # a single hostile URL: say why
            text += f" ({outcomes[0][1][:90]})"
        rows.append((kind, sum(r["kind"] == kind for r in pool), sum(kept_urls[u] for u in urls), text or "-"))
    return rows


def stage_counts(dirs: dict[str, Path]) -> list[str]:
    """One line of counts per stage, from the stats.json each stage wrote (one layout: schemas/stats.py)."""
    def load(path: Path) -> dict:
        doc = json.loads(path.read_text())
        stats_schema.validate(doc)
        return doc

    queries = load(dirs["queries"] / STATS_JSON)
    per_source = ", ".join(f"{k} {v['selected']:,}" for k, v in queries["details"]["sources"].items())
    more = []  # --languages en,ja: the other languages' queries folders
    for folder in sorted(dirs["queries"].parent.glob("queries-*")):
        other = load(folder / STATS_JSON)
        sources = ", ".join(f"{k} {v['selected']:,}" for k, v in other["details"]["sources"].items())
        label = f"  [{folder.name.removeprefix('queries-')}]"
        more.append(f"{label:<15}{other['counts']['queries']:,} queries ({sources})")
    pairs_doc = load(dirs["pairs"] / STATS_JSON)
    pairs = pairs_doc["counts"]
    # stage 2 of a worldwide run: pairs kept and the cap per caption language (details.languages)
    by_language = {lang: row for lang, row in (pairs_doc.get("details") or {}).get("languages", {}).items()
                   if row.get("kept")} if len(more) else {}
    raw_counts = stats_schema.prefixed(load(dirs["raw"] / STATS_JSON)["counts"], "status_")
    raw = {s: raw_counts[s] for s in RAW_STATUSES if s in raw_counts}  # the schema's order, not alphabetical
    final = load(dirs["shards"] / STATS_JSON)["counts"]
    reasons = stats_schema.prefixed(final, "reason_")
    steps = [json.loads(line) for line in (dirs["train"] / "metrics.jsonl").read_text().splitlines() if line]
    return [
        f"build-queries  {queries['counts']['queries']:,} queries ({per_source})",
        *more,
        f"build-pairs    {pairs['records']:,} pool rows -> {pairs['candidates']:,} candidates -> {pairs['matched']:,} "
        f"matched ({pairs['no_match']:,} no match) -> {pairs['unique_pairs']:,} unique -> {pairs['kept']:,} kept "
        f"({pairs['over_cap']:,} over the cap)",
        *([f"{'':<15}kept per caption language: " + ", ".join(
            f"{lang} {row['kept']:,}" + (f" (cap {row['cap']})" if "cap" in row else "")
            for lang, row in by_language.items())] if by_language else []),
        "download       " + ", ".join(f"{k} {v:,}" for k, v in raw.items() if v),
        "finalize       " + ", ".join(f"{k} {v:,}" for k, v in reasons.items() if v)
        + f" -> {final['samples']:,} samples in {final['shards']} shards",
        f"train          {steps[-1]['step']} steps, loss {steps[0]['loss']:.3f} -> {steps[-1]['loss']:.3f}",
    ]


def report(out: Path, dirs: dict[str, Path], manifest: dict, eval_json: Path, timings: dict[str, float],
           total: float) -> None:
    card = dirs["shards"] / DATASET_CARD
    print("\n" + "=" * 100)
    print(f"DATASET CARD ({card})\n" + "=" * 100)
    print(card.read_text())
    print("=" * 100)
    print("Counts per stage:")
    for line in stage_counts(dirs):
        print(f"  {line}")
    print("\nWhat happened to each kind of pool row (pool rows -> kept by build-pairs -> final statuses):")
    for kind, n, kept, statuses in kind_table(dirs["corpus"] / demo_corpus.POOL, dirs["pairs"], dirs["shards"]):
        print(f"  {kind:<24} {n:>5} -> {kept:>5} -> {statuses}")
    sizes = json.loads((dirs["shards"] / SIZES_JSON).read_text())
    result = json.loads(eval_json.read_text())
    classes = result["results"][0]["inputs"]["classes"]
    chance = 1 / classes
    print("\nOutputs:")
    for label, path in (("corpus (served files, held-out images, pool)", dirs["corpus"]),
                        ("queries", dirs["queries"] / QUERIES_PARQUET), ("pairs", dirs["pairs"]),
                        ("raw download shards", dirs["raw"]), ("final WebDataset shards", dirs["shards"]),
                        ("dataset card", card), ("final statistics", dirs["shards"] / STATS_JSON),
                        ("checkpoint and training metrics", dirs["train"]), ("evaluation", eval_json)):
        print(f"  {label:<46} {path}")
    print("\nStage times: " + ", ".join(f"{k} {v:.0f}s" if v else f"{k} reused" for k, v in timings.items()))
    retrieval = [r for r in result["results"] if r["task"] == "zeroshot_retrieval"]
    for record in retrieval:  # English is named too beside '[all]' and '[ja]', lest it read as the overall figure
        m = record["metrics"]
        lang = "" if len(retrieval) == 1 else f" [{record['language']}]"
        print(f"Retrieval on the training shards{lang}: image R@1 {m['image_retrieval_recall@1']:.3f}, "
              f"text R@1 {m['text_retrieval_recall@1']:.3f}")
    acc1 = result["acc1"]
    zeroshot = [r for r in result["results"] if r["task"] == "zeroshot_classification"]
    print(f"\nZero-shot top-1 on {result['results'][0]['inputs']['images']} held-out images of {classes} classes "
          f"(never in the training shards): {acc1:.1%} vs chance {chance:.1%} ({acc1 / chance:.1f}x chance)")
    if len(zeroshot) > 1:  # --languages en,ja: the same images, class names and prompts in each language
        for record in zeroshot:
            lang_acc1 = record["metrics"]["acc1"]
            print(f"  [{record['language']}] class names and {record['inputs']['templates']} prompt templates in "
                  f"{record['language']}: {lang_acc1:.1%} vs chance {chance:.1%} ({lang_acc1 / chance:.1f}x chance)")
    summary = {"seconds": round(total, 1), "stages": {k: round(v, 1) for k, v in timings.items()},
               "classes": manifest["classes"], "samples": sum(sizes.values()) if isinstance(sizes, dict) else sizes,
               "zeroshot_acc1": acc1, "chance": chance}
    if len(zeroshot) > 1:
        summary["zeroshot_acc1_per_language"] = {r["language"]: r["metrics"]["acc1"] for r in zeroshot}
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wit demo: done in {total:.0f}s; zero-shot acc1 {acc1:.3f} (chance {chance:.3f}) -> {out}", flush=True)
