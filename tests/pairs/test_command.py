"""``wit build-pairs`` end to end (``wit_builder.pairs.command``): real Wikipedia sentences as alt texts, WAT +
table pools, bad input, the exact reference selection, determinism across runners, img2dataset reading the
output; and the stage's ``finish`` on given counts."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas.pairs import BALANCE_PNG, QUERY_COUNTS, QUERY_COUNTS_PARQUET, STATS_JSON
from schemas.stats import stats_without_timings
from schemas.stats import validate as validate_stats
from tests.conftest import BEAM_IN_PROCESS, BEAM_MULTI_PROCESS, photo
from tests.pairs.conftest import CAP, WarcBuilder, build, read_pairs, write_queries
from tests.references import reference_hard_selection, reference_match
from wit_builder.beam.fileio import open_read
from wit_builder.cli import main as wit
from wit_builder.core import errors
from wit_builder.core.run_folder import MARKER
from wit_builder.core.uid import pair_uid
from wit_builder.pairs.readers.formats import read_pool_file
from wit_builder.pairs.readers.layouts import PoolOptions
from wit_builder.pairs.readers.records import BAD_REASONS, FILTER_REASONS, Candidate
from wit_builder.pairs.stats import BAD_RECORDS_JSONL


def reference(pool: dict, target: int, seed: int) -> dict[str, dict]:
    """The whole stage in plain Python: read, brute-force match, collapse duplicates, hard-cap selection."""
    queries = pq.read_table(pool["queries"] / "queries.parquet").column("query").to_pylist()
    best: dict[str, Candidate] = {}
    matched: dict[str, list[str]] = {}
    for path in sorted(str(p) for p in pool["files"].iterdir()):
        for item in read_pool_file(path, open_read, PoolOptions()):
            if not isinstance(item, Candidate) or not (found := reference_match(queries, item.caption)):
                continue
            uid = pair_uid(item.url, item.caption)
            key = (item.source_file, item.source_record, item.url, item.caption)
            if uid not in best or key < (best[uid].source_file, best[uid].source_record, best[uid].url,
                                         best[uid].caption):
                best[uid] = item
            matched[uid] = found
    selection = reference_hard_selection(matched, target, seed)
    rows = {}
    for uid, item in best.items():
        keeping = [q for q in matched[uid] if uid in selection[q]]
        if keeping:
            rows[uid] = {"uid": uid, "url": item.url, "caption": item.caption, "queries": keeping,
                         "source_file": item.source_file, "source_record": item.source_record,
                         "page_url": item.page_url, "matched_queries": matched[uid], "match_rule": "normalized"}
    return {"rows": rows, "matched": matched}


def test_build_pairs_matches_the_reference(pool: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert build(pool, out, BEAM_IN_PROCESS, "--seed", "11", "--rows-per-file", "40") == 0
    expected = reference(pool, CAP, 11)
    table = read_pairs(out)
    assert len(list(out.glob("pairs-*.parquet"))) == -(-len(expected["rows"]) // 40)
    rows = {r["uid"]: r for r in table.to_pylist()}
    assert {uid: {k: v for k, v in r.items() if k not in ("lang", "lang_score")} for uid, r in rows.items()} == \
        expected["rows"]
    assert all(r["lang"] and 0 <= r["lang_score"] <= 1 for r in rows.values())  # every pair has its language
    for f in out.glob("pairs-*.parquet"):  # each file sorted by uid, img2dataset's columns present
        uids = pq.read_table(f).column("uid").to_pylist()
        assert uids == sorted(uids)

    counts = pq.read_table(out / QUERY_COUNTS_PARQUET)
    assert counts.schema.equals(QUERY_COUNTS, check_metadata=False)
    by_query = {r["query"]: r for r in counts.to_pylist()}
    kept_per_query = collections.Counter(q for r in expected["rows"].values() for q in r["queries"])
    matched_per_query = collections.Counter(q for qs in expected["matched"].values() for q in qs)
    assert len(by_query) == len(pq.read_table(pool["queries"] / "queries.parquet"))
    for q, row in by_query.items():
        assert (row["matched"], row["kept"]) == (matched_per_query[q], kept_per_query[q])
        assert row["kept"] <= CAP
    assert by_query["quokka"] == {"query": "quokka", "lang": "en", "matched": 0, "kept": 0}
    assert sum(1 for r in by_query.values() if r["matched"] > CAP) >= 5  # the cap really bites

    stats = json.loads((out / STATS_JSON).read_text())
    c = stats["counts"]
    validate_stats(stats)
    assert c["records"] == c["candidates"] + sum(c[r] for r in (*FILTER_REASONS, *BAD_REASONS))
    assert c["bad_records"] == sum(c[r] for r in BAD_REASONS)
    assert c["candidates"] == c["no_match"] + c["matched"] and c["language_filtered"] == 0
    assert c["matched"] == c["duplicates"] + c["unique_pairs"] == c["duplicates"] + c["kept"] + c["over_cap"]
    assert c["kept"] == len(expected["rows"]) and c["unique_pairs"] == len(expected["matched"])
    assert (c["data_uri"], c["non_http_url"], c["url_too_long"], c["non_utf8"]) == (40, 100, 1, 2)
    assert c["duplicates"] >= 1 and c["malformed_json"] == 1 and c["truncated_file"] == 1
    bad = [json.loads(line) for line in (out / BAD_RECORDS_JSONL).read_text().splitlines()]
    assert sorted((Path(b["file"]).name, b["reason"]) for b in bad) == [
        ("CC-MAIN-0.warc.wat.gz", "non_utf8"), ("CC-MAIN-0.warc.wat.gz", "truncated_file"),
        ("CC-MAIN-0.warc.wat.gz", "url_too_long"), ("part-1.jsonl.gz", "malformed_json"),
        ("part-1.jsonl.gz", "non_utf8"),
    ]
    assert c["bad_records"] == 5
    assert (out / BALANCE_PNG).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_same_bytes_across_runs_and_runners(pool: dict, tmp_path: Path) -> None:
    outputs = {}
    for name, beam in (("first", BEAM_IN_PROCESS), ("again", BEAM_IN_PROCESS), ("multi", BEAM_MULTI_PROCESS)):
        assert build(pool, tmp_path / name, beam, "--rows-per-file", "50") == 0
        outputs[name] = {p.name: p.read_bytes() for p in sorted((tmp_path / name).iterdir()) if p.name != STATS_JSON}
        outputs[name][STATS_JSON] = stats_without_timings(tmp_path / name / STATS_JSON)
    assert len([n for n in outputs["first"] if n.startswith("pairs-")]) > 1
    assert outputs["first"] == outputs["again"] == outputs["multi"]


def test_rerun_replaces_stale_output_and_seed_changes_selection(pool: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert build(pool, out, BEAM_IN_PROCESS, "--rows-per-file", "20") == 0
    many = sorted(p.name for p in out.glob("pairs-*.parquet"))
    first = {r["uid"] for r in read_pairs(out).to_pylist()}
    assert build(pool, out, BEAM_IN_PROCESS, "--seed", "99", "--balance", "probabilistic") == 0
    assert sorted(p.name for p in out.glob("pairs-*.parquet")) == ["pairs-00000-of-00001.parquet"] != many
    rows = read_pairs(out).to_pylist()
    assert {r["uid"] for r in rows} != first
    counts = {r["query"]: r for r in pq.read_table(out / QUERY_COUNTS_PARQUET).to_pylist()}
    kept = collections.Counter(q for r in rows for q in r["queries"])
    assert all(counts[q]["kept"] == kept[q] <= counts[q]["matched"] for q in counts)
    assert json.loads((out / STATS_JSON).read_text())["parameters"]["balance"] == "probabilistic"


def test_missing_caption_column_fails_before_any_work(pool: dict, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "never"
    assert build(pool, out, BEAM_IN_PROCESS, "--caption-col", "alt") == 2
    err = capsys.readouterr().err
    assert "'alt'" in err and "part-0.parquet" in err and "--caption-col" in err
    assert not out.exists()


def test_bad_arguments_and_inputs_exit_2(pool: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert build(pool, tmp_path / "o", BEAM_IN_PROCESS, "--oversample", "0.5") == 2
    assert "oversample" in capsys.readouterr().err
    assert wit(["build-pairs", "--queries", str(tmp_path), "--pool", str(pool["files"] / "*"), "--out",
                str(tmp_path / "o")]) == 2
    assert "queries.parquet" in capsys.readouterr().err
    assert wit(["build-pairs", "--queries", str(pool["queries"]), "--pool", str(tmp_path / "nothing-*.wat.gz"),
                "--out", str(tmp_path / "o")]) == 2
    assert "matches no file" in capsys.readouterr().err
    unnormalized = tmp_path / "q"
    unnormalized.mkdir()
    pq.write_table(pa.table({"query": ["New York"], "source": ["title"], "count": [1], "score": [1.0]}),
                   unnormalized / "queries.parquet")
    assert wit(["build-pairs", "--queries", str(unnormalized), "--pool", str(pool["files"] / "*"), "--out",
                str(tmp_path / "o")]) == 2
    assert "'New York' is not normalized" in capsys.readouterr().err


# ---- img2dataset reads what we write ----

@pytest.fixture
def image_server(tmp_path: Path, static_server) -> str:
    """Three real photos (scikit-image) served over HTTP on loopback; the base URL."""
    root = tmp_path / "www"
    root.mkdir()
    for name in ("astronaut", "coffee", "chelsea"):
        photo(name).save(root / f"{name}.jpg", quality=90)
    return static_server(root)


@pytest.mark.slow
def test_img2dataset_downloads_from_pairs_parquet(image_server: str, tmp_path: Path) -> None:
    import img2dataset

    queries = write_queries(tmp_path / "q", ["astronaut", "coffee", "cat"])
    pool_file = tmp_path / "pool.jsonl"
    pool_file.write_text("".join(json.dumps(r) + "\n" for r in [
        {"url": f"{image_server}/astronaut.jpg", "caption": "Portrait of an astronaut in a space suit"},
        {"url": f"{image_server}/coffee.jpg", "caption": "A cup of coffee on a saucer"},
        {"url": f"{image_server}/chelsea.jpg", "caption": "Chelsea the cat"},
        {"url": f"{image_server}/dog.jpg", "caption": "no query in this one"},
    ]))
    out = tmp_path / "pairs"
    assert wit(["build-pairs", "--queries", str(queries), "--pool", str(pool_file), "--out", str(out),
                *BEAM_IN_PROCESS]) == 0
    pairs_file = next(out.glob("pairs-*.parquet"))
    img2dataset.download(
        url_list=str(pairs_file), input_format="parquet", url_col="url", caption_col="caption",
        save_additional_columns=["uid", "queries"], output_folder=str(tmp_path / "images"), output_format="files",
        image_size=64, processes_count=1, thread_count=2, distributor="multiprocessing", timeout=3, retries=0,
        enable_wandb=False,
    )
    # img2dataset's per-shard parquet holds every input row with its status and our extra columns.
    rows = pa.concat_tables(pq.read_table(p) for p in (tmp_path / "images").glob("*.parquet")).to_pylist()
    assert sorted((r["caption"], r["status"]) for r in rows) == [
        ("A cup of coffee on a saucer", "success"), ("Chelsea the cat", "success"),
        ("Portrait of an astronaut in a space suit", "success"),
    ]
    by_caption = {r["caption"]: r for r in rows}
    assert list(by_caption["Chelsea the cat"]["queries"]) == ["cat"]
    assert by_caption["Chelsea the cat"]["uid"] == pair_uid(f"{image_server}/chelsea.jpg", "Chelsea the cat")
    assert len(list((tmp_path / "images").rglob("*.jpg"))) == 3


def test_metaclip_rule_with_probabilistic_balance_is_metaclips_curation(pool: dict, tmp_path: Path) -> None:
    """``--match-rule metaclip --balance probabilistic``: entries as written (``query_as_written``) matched by
    MetaCLIP's rule, each entry keeping a text with p = min(1, cap / count), a text kept when any entry keeps it."""
    from tests.references import reference_metaclip_match as metaclip_match
    from wit_builder.core.uid import draw

    table = pq.read_table(pool["queries"] / "queries.parquet")
    written = [q.title() if i % 2 else q for i, q in enumerate(table.column("query").to_pylist())]
    queries_dir = tmp_path / "queries"
    queries_dir.mkdir()
    column = table.schema.get_field_index("query_as_written")  # stage 1's form (the query itself in English)
    pq.write_table(table.set_column(column, "query_as_written", pa.array(written)), queries_dir / "queries.parquet")
    out = tmp_path / "out"
    argv = ["build-pairs", "--queries", str(queries_dir), "--out", str(out), "--per-query-cap", str(CAP),
            "--match-rule", "metaclip", "--balance", "probabilistic", "--seed", "5", "--no-language-routing"]
    for pattern in pool["pool"]:
        argv += ["--pool", pattern]
    assert wit([*argv, *BEAM_IN_PROCESS]) == 0

    matched: dict[str, list[str]] = {}
    for path in sorted(str(p) for p in pool["files"].iterdir()):
        for item in read_pool_file(path, open_read, PoolOptions()):
            if isinstance(item, Candidate) and (found := metaclip_match(written, item.raw_caption)):
                matched[pair_uid(item.url, item.caption)] = found
    count = collections.Counter(q for qs in matched.values() for q in qs)
    assert any(q[0].isupper() for q in count) and any(n > CAP for n in count.values())
    expected = {}
    for uid, entries in matched.items():
        keeping = [q for q in entries if count[q] <= CAP or draw(uid, q, 5) < CAP / count[q]]
        if keeping:
            expected[uid] = keeping
    rows = read_pairs(out).to_pylist()
    assert {r["uid"]: r["queries"] for r in rows} == expected
    assert {r["match_rule"] for r in rows} == {"metaclip"}
    stats = json.loads((out / STATS_JSON).read_text())
    assert stats["details"]["match_rule"] == stats["parameters"]["match_rule"] == "metaclip"
    assert stats["counts"]["unique_pairs"] == len(matched)
    counts = {r["query"]: r["matched"] for r in pq.read_table(out / QUERY_COUNTS_PARQUET).to_pylist()}
    assert set(counts) == set(written) and all(counts[q] == count[q] for q in written)


def test_unnormalized_queries_and_unknown_rules_are_clear_errors(pool: dict, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    # The default rule needs normalized queries: as-written entries in the query column are a clear error.
    queries_dir = tmp_path / "queries"
    queries_dir.mkdir()
    pq.write_table(pa.table({"query": ["New York", "dog"]}), queries_dir / "queries.parquet")
    argv = ["build-pairs", "--queries", str(queries_dir), "--out", str(tmp_path / "out")]
    for pattern in pool["pool"]:
        argv += ["--pool", pattern]
    assert wit([*argv, *BEAM_IN_PROCESS]) == 2
    assert "'New York' is not normalized" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        wit([*argv, "--match-rule", "nonsense", *BEAM_IN_PROCESS])
    assert exit_info.value.code == 2


# ---- pools as people have them: mixed layouts, WARC, headerless TSV ----

def test_mixed_pool_layouts_warc_and_headerless_tsv(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    queries = write_queries(tmp_path / "q", ["red bus", "vinyl", "cat"])
    pool = tmp_path / "pool"
    pool.mkdir()
    (pool / "Train_GCC-training.tsv").write_text(
        '"red bus" at the station\thttp://cc3m.example/bus.jpg\n'
        'a 12" vinyl record\thttp://cc3m.example/vinyl.jpg\n'
        'nothing to see\thttp://cc3m.example/none.jpg\n', encoding="utf-8")
    pq.write_table(pa.table({"URL": ["http://laion.example/cat.jpg"], "TEXT": ["A cat on a mat"]}),
                   pool / "laion-0.parquet")
    warc = WarcBuilder()
    warc.response("https://blog.example/posts/1.html",
                  b"<html><head><base href='/media/'></head><body><img src='cat.png' alt='my cat'>"
                  b"<img src='/bus.png' alt='The red bus'></body></html>")
    warc.response("https://blog.example/cat.png", b"\x89PNG", "image/png")
    warc.write(pool / "CC-MAIN-1.warc.gz")
    out = tmp_path / "out"
    argv = ["build-pairs", "--queries", str(queries), "--pool", str(pool / "*"), "--out", str(out),
            "--pool-layout", "laion-*=laion", "--pool-layout", "*GCC*=cc3m", *BEAM_IN_PROCESS]
    assert wit(argv) == 0
    rows = {r["url"]: r for r in read_pairs(out).to_pylist()}
    assert {u: (r["caption"], r["queries"], r["matched_queries"]) for u, r in rows.items()} == {
        "http://cc3m.example/bus.jpg": ('"red bus" at the station', ["red bus"], ["red bus"]),
        "http://cc3m.example/vinyl.jpg": ('a 12" vinyl record', ["vinyl"], ["vinyl"]),
        "http://laion.example/cat.jpg": ("A cat on a mat", ["cat"], ["cat"]),
        "https://blog.example/media/cat.png": ("my cat", ["cat"], ["cat"]),
        "https://blog.example/bus.png": ("The red bus", ["red bus"], ["red bus"]),
    }
    stats = json.loads((out / STATS_JSON).read_text())
    assert stats["counts"]["records"] == 3 + 1 + 2 + 1  # tsv lines, parquet row, img tags, one non-HTML response
    assert stats["counts"]["non_html"] == 1 and stats["counts"]["no_match"] == 1
    capsys.readouterr()
    # The same pool without the layouts fails before any work, naming the file and the column.
    assert wit(["build-pairs", "--queries", str(queries), "--pool", str(pool / "*"), "--out", str(tmp_path / "o2"),
                *BEAM_IN_PROCESS]) == 2
    err = capsys.readouterr().err
    assert "Train_GCC-training.tsv" in err and "'url'" in err and not (tmp_path / "o2").exists()


def test_wrong_pool_format_exits_2_without_abort(tmp_path: Path) -> None:
    """The `wit` process itself (not main() in-process): exit 2 and the message, never an abort at teardown."""
    import os
    import subprocess
    import sys

    queries = write_queries(tmp_path / "q", ["cat"])
    warc = WarcBuilder()
    warc.response("https://blog.example/", b"<img src='cat.png' alt='my cat'>")
    path = warc.write(tmp_path / "crawl.warc.gz")
    code = "import sys; from wit_builder.cli import main; sys.argv[0] = 'wit'; main()"
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", code, "build-pairs", "--queries", str(queries), "--pool",
                               str(path), "--pool-format", "wat", "--out", str(tmp_path / "o")],
                              capture_output=True, text=True, timeout=300, check=False,
                              env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2])))
        assert done.returncode == 2, done.stderr[-2000:]
        assert "read as wat but its content is a WARC file" in done.stderr
        assert "terminate called" not in done.stderr


def test_metaclip_rule_matches_captions_as_written_not_as_cleaned(tmp_path: Path) -> None:
    """MetaCLIP's rule reads the pool's text as written: the caption cleaning of stored pairs (NFC, runs of
    whitespace folded to one space, no-break and other Unicode spaces included) must not change what matches.
    The captions are of the kinds found in the real LAION parquet (429 of its 10,000 captions hold a double
    space or a no-break space: "Martín  Berasategui", "Hartford\\xa0Slim-Fit")."""
    from tests.references import reference_metaclip_match as metaclip_match

    captions = ["La cocina de Martín  Berasategui", "Hartford\xa0Slim-Fit Linen Trousers", "cafe\u0301 au lait",
                "dog\u2028cat", "x\x0by", "  New York  ", "Martín Berasategui, chef"]
    entries = ["Martín Berasategui", "Martín", "Hartford", "Linen Trousers", "café", "cafe\u0301", "dog", "cat",
               "x", "y", "New York", " New York"]
    pool_file = tmp_path / "pool.jsonl"
    pool_file.write_text("".join(json.dumps({"url": f"http://e.com/{i}.jpg", "caption": c}) + "\n"
                                 for i, c in enumerate(captions)))
    queries_dir = tmp_path / "queries"
    queries_dir.mkdir()
    pq.write_table(pa.table({"query": [f"q{i}" for i in range(len(entries))], "query_as_written": entries}),
                   queries_dir / "queries.parquet")
    out = tmp_path / "out"
    assert wit(["build-pairs", "--queries", str(queries_dir), "--pool", str(pool_file), "--out", str(out),
                "--match-rule", "metaclip", "--no-language-routing", *BEAM_IN_PROCESS]) == 0
    got = {r["source_record"]: sorted(r["matched_queries"]) for r in read_pairs(out).to_pylist()}
    expected = {i: found for i, c in enumerate(captions) if (found := metaclip_match(entries, c))}
    assert got == expected
    assert got[0] == ["Martín"] and got[1] == ["Linen Trousers"] and got[2] == ["cafe\u0301"]


def test_nothing_matched_is_exit_3_with_a_complete_output(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    queries = write_queries(tmp_path / "q", ["quokka"])
    pool = tmp_path / "pool.jsonl"
    pool.write_text(json.dumps({"url": "http://e.com/1.jpg", "caption": "a cat"}) + "\n")
    out = tmp_path / "out"
    assert wit(["build-pairs", "--queries", str(queries), "--pool", str(pool), "--out", str(out),
                *BEAM_IN_PROCESS]) == errors.EXIT_EMPTY == 3
    captured = capsys.readouterr()
    assert "1 records -> 1 candidates -> 0 matched" in captured.out
    assert "wit build-pairs: no candidate matched any query; check --caption-col" in captured.err
    assert json.loads((out / STATS_JSON).read_text())["counts"]["no_match"] == 1
    assert sorted(p.name for p in out.iterdir()) == sorted([BALANCE_PNG, BAD_RECORDS_JSONL, QUERY_COUNTS_PARQUET,
                                                            "pairs-00000-of-00001.parquet", STATS_JSON, MARKER])


@pytest.mark.parametrize("content", [b"", b"url,caption\n"])
def test_an_empty_pool_says_so_not_no_match(content: bytes, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A pool of 0 records (an empty file, a header alone) is exit 3 saying the pool is empty, not "no candidate
    matched" (which sends the user to check columns and queries)."""
    queries = write_queries(tmp_path / "q", ["cat"])
    pool = tmp_path / "pool.csv"
    pool.write_bytes(content)
    assert wit(["build-pairs", "--queries", str(queries), "--pool", str(pool), "--out", str(tmp_path / "out"),
                *BEAM_IN_PROCESS]) == 3
    err = capsys.readouterr().err
    assert "the pool holds no records (1 file(s) read, 0 records): nothing to match" in err
    assert "no candidate matched" not in err


def test_lone_surrogates_and_repeated_keys_are_bad_records_not_a_crash(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    """``"\\ud800"`` in a caption (valid JSON) crashed the run with a 150-line traceback; a repeated key after the
    first 1,000 lines was "last wins": both are bad records with file and line, the rest is matched."""
    queries = write_queries(tmp_path / "q", ["cat"])
    lines = [json.dumps({"url": f"http://e.com/{i}.jpg", "caption": f"a cat {i}"}) for i in range(1500)]
    lines[3] = '{"url": "http://e.com/s.jpg", "caption": "a cat \\ud800"}'
    lines[1200] = '{"url": "http://e.com/d.jpg", "caption": "a cat", "caption": "a dog"}'
    pool = tmp_path / "pool.jsonl"
    pool.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    assert wit(["build-pairs", "--queries", str(queries), "--pool", str(pool), "--out", str(out),
                *BEAM_IN_PROCESS]) == 0
    assert "Traceback" not in capsys.readouterr().err
    bad = [json.loads(line) for line in (out / BAD_RECORDS_JSONL).read_text().splitlines()]
    assert [(b["offset"], b["reason"]) for b in bad] == [(3, "non_utf8"), (1200, "malformed_record")]
    assert all(b["file"] == str(pool) for b in bad) and "line 1201: key 'caption' appears 2 times" in bad[1]["detail"]
    counts = json.loads((out / STATS_JSON).read_text())["counts"]
    assert (counts["records"], counts["bad_records"], counts["candidates"]) == (1500, 2, 1498)
    assert read_pairs(out).num_rows == counts["kept"] > 0


def test_bad_records_are_counted_all_and_listed_bounded(tmp_path: Path) -> None:
    """Blank TSV lines are bad records: every one counted, the first MAX_BAD_RECORDS (by file and line) listed."""
    from wit_builder.pairs.stats import MAX_BAD_RECORDS

    queries = write_queries(tmp_path / "q", ["cat"])
    pool = tmp_path / "pool.tsv"
    pool.write_bytes(b"url\tcaption\nhttp://e.com/a.jpg\ta cat\n" + b"\n" * (MAX_BAD_RECORDS + 500))
    out = tmp_path / "out"
    assert wit(["build-pairs", "--queries", str(queries), "--pool", str(pool), "--out", str(out),
                *BEAM_IN_PROCESS]) == 0
    doc = json.loads((out / STATS_JSON).read_text())
    assert doc["counts"]["malformed_record"] == doc["counts"]["bad_records"] == MAX_BAD_RECORDS + 500
    listed = [json.loads(line)["offset"] for line in (out / BAD_RECORDS_JSONL).read_text().splitlines()]
    assert listed == list(range(1, MAX_BAD_RECORDS + 1)) and doc["details"]["bad_records"]["listed"] == MAX_BAD_RECORDS


def test_a_users_file_in_out_is_never_touched(pool: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """``--out`` holding a user's ``pairs-2023-final.parquet`` (our own file pattern) and no run marker: refused
    before any work, the file untouched; ``--overwrite`` takes the folder over."""
    out = tmp_path / "out"
    out.mkdir()
    theirs = out / "pairs-2023-final.parquet"
    theirs.write_bytes(b"their curated pairs")
    args = ["build-pairs", "--queries", str(pool["queries"]), "--pool", str(pool["files"] / "*"), "--out", str(out),
            *BEAM_IN_PROCESS]
    assert wit(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"wit build-pairs: error: --out {out} holds files that wit did not write "
                          "('pairs-2023-final.parquet')") and "--overwrite" in err
    assert [p.name for p in out.iterdir()] == ["pairs-2023-final.parquet"] and theirs.read_bytes().startswith(b"their")
    # another stage's folder is refused too
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / MARKER).write_text(json.dumps({"command": "download", "format": 1}))
    (raw / "00000.parquet").write_bytes(b"raw")
    assert wit([*args[:6], str(raw), *BEAM_IN_PROCESS]) == 2
    assert "is the output folder of 'wit download'" in capsys.readouterr().err
    assert (raw / "00000.parquet").read_bytes() == b"raw"
    assert wit([*args, "--overwrite"]) == 0


def test_a_killed_runs_temporaries_are_removed_and_never_read_as_pairs(pool: dict, tmp_path: Path) -> None:
    """A killed build-pairs leaves ``*.tmp-*`` files: the rerun removes them (ours by name, in our folder), and a
    ``pairs-*`` glob given to the next stage never matches one."""
    from wit_builder.download.inputs import input_files

    out = tmp_path / "out"
    args = ["build-pairs", "--queries", str(pool["queries"]), "--pool", str(pool["files"] / "*"), "--out", str(out),
            *BEAM_IN_PROCESS]
    assert wit(args) == 0
    written = sorted(p.name for p in out.glob("pairs-*"))
    left = out / f"{written[0]}.tmp-{'0f' * 16}"
    left.write_bytes(b"half a parquet")
    assert input_files(str(out / "pairs-*")) == [str(out / name) for name in written]  # the glob skips it
    assert wit(args) == 0
    assert not left.exists() and sorted(p.name for p in out.glob("pairs-*")) == written


def test_a_full_disk_is_one_line_naming_the_file(pool: dict, tmp_path: Path, capsys: pytest.CaptureFixture,
                                                 full_disk) -> None:
    """ENOSPC while the pairs are written (inside the pipeline) is one line naming the file, exit 1, no
    temporary left."""
    full_disk(lambda path: "/pairs-" in path)
    out = tmp_path / "out"
    assert wit(["build-pairs", "--queries", str(pool["queries"]), "--pool", str(pool["files"] / "*"), "--out",
                str(out), *BEAM_IN_PROCESS]) == 1
    err = capsys.readouterr().err
    assert err.startswith("wit build-pairs: error: no space left on the device while writing ") and \
        "/pairs-" in err and err.count("\n") == 1, err
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]


# ---- the stage's own hooks, on given counts ----

def test_finish_makes_stats_json_from_the_counts(tmp_path: Path) -> None:
    """``BuildPairsStage.finish``: stats.json's counts are the counts given (the data's), balance.png and the
    bad-records quote come from the files; no match at all is exit 3 with a line saying what to check."""
    from wit_builder.pairs.command import BuildPairsStage
    from wit_builder.pairs.options import BuildPairsOptions
    from wit_builder.pairs.stats import COUNTS, NO_MATCH_ERROR

    queries = write_queries(tmp_path / "q", ["cat", "dog"])
    pool = tmp_path / "pool.jsonl"
    pool.write_text(json.dumps({"url": "http://e.com/1.jpg", "caption": "a cat"}) + "\n")
    out = tmp_path / "out"
    stage = BuildPairsStage(BuildPairsOptions((str(queries),), (str(pool),), str(out)))
    stage.inputs = stage.resolve()
    assert stage.announce() == ["build-pairs: 1 pool file(s), 2 queries (en; keeping en), balance=hard cap=20000 "
                               "target=20000 seed=0 match_rule=normalized shuffle_buckets=256"]  # tiny pool: the floor
    out.mkdir()
    pq.write_table(pa.table({"query": ["cat", "dog"], "lang": ["en", "en"], "matched": [3, 0], "kept": [2, 0]},
                            schema=QUERY_COUNTS),
                   out / QUERY_COUNTS_PARQUET)
    (out / BAD_RECORDS_JSONL).write_text("".join(json.dumps({"file": "x", "offset": i}) + "\n" for i in range(25)))
    pq.write_table(pa.table({"uid": ["a"]}), out / "pairs-00000-of-00001.parquet")
    counts = dict.fromkeys(COUNTS, 0) | {"records": 30, "candidates": 5, "matched": 3, "unique_pairs": 3, "kept": 2,
                                         "over_cap": 1, "bad_records": 25, "queries": 2, "pair_files": 1}
    outcome = stage.finish(counts, 2.5)
    doc = json.loads((out / STATS_JSON).read_text())
    validate_stats(doc)
    assert doc["counts"] == counts and doc["timings"] == {"seconds": 2.5}
    assert doc["details"]["queries"] == {"max_matched": 3, "max_kept": 2}
    assert doc["details"]["bad_records"]["first"] == [{"file": "x", "offset": i} for i in range(20)]
    assert doc["details"]["pairs"] == {"file_names": ["pairs-00000-of-00001.parquet"]}
    assert doc["inputs"][0]["path"] == str(queries / "queries.parquet") and doc["inputs"][1]["path"] == str(pool)
    assert (out / BALANCE_PNG).read_bytes()[:4] == b"\x89PNG"
    assert (outcome.exit_code, outcome.error) == (errors.EXIT_OK, None)
    assert outcome.summary[0] == "30 records -> 5 candidates -> 3 matched -> 3 unique -> 2 kept in 1 file(s)"
    nothing = stage.finish(counts | {"matched": 0}, 1.0)
    assert (nothing.exit_code, nothing.error) == (errors.EXIT_EMPTY, NO_MATCH_ERROR)
    # records but no candidate (all bad, e.g. a Shift_JIS file): says so with the reasons, not "no candidate matched"
    all_bad = stage.finish(counts | {"candidates": 0, "matched": 0, "non_utf8": 25, "empty_caption": 5}, 1.0)
    assert all_bad.exit_code == errors.EXIT_EMPTY
    assert all_bad.error == ("none of the pool's 30 records is a candidate (non_utf8 25, empty_caption 5); see "
                             "bad_records.jsonl (pool text must be UTF-8: convert it, e.g. iconv -f SHIFT_JIS -t "
                             "UTF-8), --url-col, --caption-col and --pool-format")


def test_clean_rerun_removes_the_stage_outputs_only(tmp_path: Path) -> None:
    """``BuildPairsStage.clean_rerun``: every pairs file and named output of an earlier run goes (a rerun that writes
    fewer files must not leave stale ones), other files stay."""
    from wit_builder.pairs.command import BuildPairsStage
    from wit_builder.pairs.options import BuildPairsOptions

    out = tmp_path / "out"
    out.mkdir()
    stale = ["pairs-00000-of-00002.parquet", "pairs-00001-of-00002.parquet", STATS_JSON, QUERY_COUNTS_PARQUET,
             BAD_RECORDS_JSONL, BALANCE_PNG]
    for name in [*stale, "notes.txt", "pairs.csv"]:
        (out / name).write_bytes(b"x")
    (out / "_tmp_spill" / "ranked").mkdir(parents=True)  # a killed run's spilled buckets
    (out / "_tmp_spill" / "ranked" / "b00001.arrow").write_bytes(b"x")
    stage = BuildPairsStage(BuildPairsOptions(("q",), ("p.jsonl",), str(out)))
    assert stage.clean_rerun() == []
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "pairs.csv"]
    assert stage.clean_rerun() == []  # nothing left to remove: no error
