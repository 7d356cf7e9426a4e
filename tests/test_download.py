"""``wit download`` end to end against the hostile server: statuses, layout, resume after SIGKILL, both engines."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import imagehash
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.cli import main as wit
from schemas.download import RAW_ROWS, RAW_STATUSES
from schemas.stats import prefixed, stats_without_timings
from schemas.stats import validate as validate_stats
from tests import hostile_server as hs
from tests.conftest import BEAM_IN_PROCESS, BEAM_MULTI_PROCESS

FAST_FLAGS = ["--allow-private-networks", "--timeout", "0.5", "--deadline", "0.8", "--retries", "1",
              "--backoff-base", "0.01", "--backoff-max", "2", "--max-bytes", str(1 << 20), "--threads", "8"]


def write_pairs(path: Path, rows: list[dict]) -> Path:
    schema = pa.schema([("uid", pa.string()), ("url", pa.string()), ("caption", pa.string()),
                        ("queries", pa.list_(pa.string()))])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path, row_group_size=5)
    return path


def read_raw(out: Path) -> tuple[list[dict], dict[str, dict[str, bytes]]]:
    """Every parquet row and every tar member of a raw output folder."""
    rows, members = [], {}
    for parquet in sorted(out.glob("*.parquet")):
        table = pq.read_table(parquet)
        assert table.schema.equals(RAW_ROWS, check_metadata=False)
        rows += table.to_pylist()
        with tarfile.open(parquet.with_suffix(".tar")) as tar:
            for m in tar:
                assert m.mtime == 0 and m.uid == 0 and m.mode == 0o644
                key, ext = m.name.split(".", 1)
                members.setdefault(key, {})[ext] = tar.extractfile(m).read()
    return rows, members


@pytest.fixture(scope="module")
def hostile():
    """The issue's list of hostile cases, each row with the status it must end with."""
    with hs.HostileServer() as s:
        s.serve("/robots.txt", hs.Response(200, b"User-agent: *\nDisallow: /private/\n", content_type="text/plain"))
        astronaut = hs.jpeg()
        exif_data, _ = hs.exif_rotated_jpeg()
        tiny = hs.encode(hs.photo("coffee").resize((30, 20)), "JPEG")
        cases = [
            ("jpeg", s.image("/good.jpg", astronaut), "success"),
            ("png", s.image("/alpha.png", hs.png_with_alpha(), "image/png"), "success"),
            ("webp", s.image("/rocket.webp", hs.webp(), "image/webp"), "success"),
            ("gif", s.image("/anim.gif", hs.animated_gif(), "image/gif"), "success"),
            ("cmyk", s.image("/cmyk.jpg", hs.cmyk_jpeg()), "success"),
            ("png16", s.image("/gray16.png", hs.png_16bit(), "image/png"), "success"),
            ("exif", s.image("/rotated.jpg", exif_data), "success"),
            ("404", s.url("/missing.jpg"), "failed_to_download"),
            ("500-200", s.sequence("/flaky.jpg", [hs.Response(500), hs.Response(200, astronaut)]), "success"),
            ("429", s.sequence("/busy.jpg", [hs.Response(429, headers={"Retry-After": "1"}),
                                             hs.Response(200, astronaut)]), "success"),
            ("slow", s.slow_drip("/slow.jpg"), "failed_to_download"),
            ("endless", s.endless("/endless.jpg"), "failed_to_download"),
            ("html", s.image("/page.jpg", b"<!doctype html><html><body>hi</body></html>"), "failed_to_decode"),
            ("truncated", s.image("/truncated.jpg", astronaut[:7000]), "failed_to_decode"),
            ("bomb", s.image("/bomb.png", hs.png_bomb(), "image/png"), "failed_to_decode"),
            ("loop", s.redirect("/loop/a", "/loop/b") and s.redirect("/loop/b", "/loop/a"), "failed_to_download"),
            ("metadata", s.redirect("/meta.jpg", "http://169.254.169.254/latest/meta-data/"), "blocked"),
            ("noai", s.image("/noai.jpg", astronaut, **{"X-Robots-Tag": "noai"}), "blocked"),
            ("robots", s.image("/private/secret.jpg", astronaut), "blocked"),
            ("copy", s.image("/copy-of-good.jpg", astronaut), "success"),
            ("resized", s.image("/small-good.jpg", hs.encode(hs.photo().resize((320, 320)), "JPEG")), "success"),
            ("tiny", s.image("/tiny.jpg", tiny), "filtered"),
            ("empty-url", "", "failed_to_download"),
            ("ftp", "ftp://127.0.0.1/a.jpg", "blocked"),
        ]
        yield s, cases


def run_download(pairs: Path, out: Path, *extra: str) -> int:
    return wit(["download", "--pairs", str(pairs), "--out", str(out), *FAST_FLAGS, "--min-image-size", "64",
                *extra, *BEAM_IN_PROCESS])


def test_every_hostile_case_ends_with_its_status(hostile, tmp_path):
    server, cases = hostile
    inputs = [{"uid": f"uid-{name}", "url": url, "caption": f"a photo: {name}", "queries": [name]}
              for name, url, _ in cases]
    pairs = write_pairs(tmp_path / "pairs-00000.parquet", inputs)
    out = tmp_path / "raw"
    assert run_download(pairs, out, "--rows-per-shard", "7") == 0

    rows, members = read_raw(out)
    assert sorted(r["uid"] for r in rows) == sorted(r["uid"] for r in inputs)  # every row exactly once
    by_uid = {r["uid"]: r for r in rows}
    got = {name: by_uid[f"uid-{name}"]["status"] for name, _, _ in cases}
    assert got == {name: status for name, _, status in cases}, {n: by_uid[f"uid-{n}"]["error_message"] for n in got}
    assert len({r["key"] for r in rows}) == len(rows) and all("." not in r["key"] for r in rows)

    successes = {r["key"]: r for r in rows if r["status"] == "success"}
    assert set(members) == set(successes)
    for key, files in members.items():
        assert set(files) == {"jpg", "json", "txt"}
        assert json.loads(files["json"]) == successes[key]
        assert files["txt"].decode() == successes[key]["caption"]
        assert hashlib.sha256(files["jpg"]).hexdigest() != successes[key]["sha256"]  # re-encoded, hash of original

    import webdataset

    tars = [str(p) for p in sorted(out.glob("*.tar"))]
    read = list(webdataset.WebDataset(tars, shardshuffle=False, empty_check=False))
    assert sorted(s["__key__"] for s in read) == sorted(successes)
    assert all(json.loads(s["json"]) == successes[s["__key__"]] for s in read)

    good, copy, resized = by_uid["uid-jpeg"], by_uid["uid-copy"], by_uid["uid-resized"]
    assert good["sha256"] == copy["sha256"] == hashlib.sha256(hs.jpeg()).hexdigest()
    assert imagehash.hex_to_hash(good["phash"]) - imagehash.hex_to_hash(resized["phash"]) <= 4
    assert good["sha256"] != resized["sha256"]
    assert by_uid["uid-exif"]["original_width"] > by_uid["uid-exif"]["original_height"]  # upright chelsea
    assert by_uid["uid-404"]["http_status"] == 404
    assert "169.254.169.254" in by_uid["uid-metadata"]["error_message"]

    stats = json.loads((out / "stats.json").read_text())
    expected = {s: sum(1 for *_, st in cases if st == s) for s in RAW_STATUSES}
    validate_stats(stats)
    assert stats["details"]["statuses"] == expected == prefixed(stats["counts"], "status_")
    assert stats["counts"]["rows"] == len(cases) and stats["counts"]["shards"] == 4
    shard_stats = json.loads((out / "00000_stats.json").read_text())
    assert shard_stats["count"] == 7 and sum(shard_stats["statuses"].values()) == 7

    # A rerun finds every shard complete and changes nothing.
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert run_download(pairs, out, "--rows-per-shard", "7") == 0
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    # ... but refuses to mix in a run cut differently.
    assert run_download(pairs, out, "--rows-per-shard", "5") == 2


def test_url_caption_tables_without_uid_and_bad_input(tmp_path, capsys):
    table = pa.table({"url": ["http://127.0.0.1:1/a.jpg"], "caption": ["a cat"]})
    pq.write_table(table, tmp_path / "pool.parquet")
    assert run_download(tmp_path / "pool.parquet", tmp_path / "raw", "--retries", "0") == 0
    rows, _ = read_raw(tmp_path / "raw")
    assert len(rows) == 1 and len(rows[0]["uid"]) == 32 and rows[0]["status"] == "blocked"
    assert "robots.txt unreachable" in rows[0]["error_message"]  # RFC 9309: no robots.txt answer, no fetch

    pq.write_table(pa.table({"link": ["x"]}), tmp_path / "nourl.parquet")
    assert run_download(tmp_path / "nourl.parquet", tmp_path / "raw2") == 2
    assert "no 'url' column" in capsys.readouterr().err
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    assert run_download(tmp_path / "junk.parquet", tmp_path / "raw3") == 2
    assert run_download(tmp_path / "nothing-*.parquet", tmp_path / "raw4") == 2


@pytest.mark.slow
def test_img2dataset_engine_writes_the_same_layout(hostile, tmp_path):
    server, _ = hostile
    urls = [server.url("/good.jpg"), server.url("/missing.jpg"), server.url("/page.jpg"), server.url("/noai.jpg")]
    inputs = [{"uid": f"u{i}", "url": u, "caption": f"c{i}", "queries": ["q"]} for i, u in enumerate(urls)]
    pairs = write_pairs(tmp_path / "pairs.parquet", inputs)
    out = tmp_path / "raw"
    assert run_download(pairs, out, "--engine", "img2dataset", "--rows-per-shard", "10") == 0
    rows, members = read_raw(out)
    assert [r["status"] for r in sorted(rows, key=lambda r: r["uid"])] == [
        "success", "failed_to_download", "failed_to_decode", "failed_to_download"]  # img2dataset: noai is a failure
    (good,) = [r for r in rows if r["status"] == "success"]
    assert good["sha256"] == hashlib.sha256(hs.jpeg()).hexdigest() and len(good["phash"]) == 16
    assert set(members) == {good["key"]} and json.loads(members[good["key"]]["json"]) == good


@pytest.mark.slow
def test_sigkill_midway_then_rerun_equals_an_uninterrupted_run(tmp_path):
    with hs.HostileServer() as server:
        photos = {name: hs.jpeg(name) for name in ("astronaut", "coffee", "chelsea", "rocket")}

        def slow_image(data):
            def handler(h):
                time.sleep(0.15)
                hs.send(h, hs.Response(200, data, content_type="image/jpeg"))
            return handler

        inputs = []
        for i in range(24):
            path = f"/img{i}.jpg" if i % 6 else f"/gone{i}.jpg"
            if i % 6:
                server.routes[path] = slow_image(photos[list(photos)[i % 4]])
            inputs.append({"uid": f"u{i:02d}", "url": server.url(path), "caption": f"photo {i}", "queries": ["q"]})
        pairs = write_pairs(tmp_path / "pairs.parquet", inputs)
        command = [sys.executable, "-m", "pipelines.cli", "download", "--pairs", str(pairs), *FAST_FLAGS,
                   "--threads", "2", "--rows-per-shard", "4", *BEAM_IN_PROCESS]
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}

        killed = tmp_path / "killed"
        proc = subprocess.Popen([*command, "--out", str(killed)], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not list(killed.glob("*_stats.json")) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        done_at_kill = len(list(killed.glob("*_stats.json")))
        assert 1 <= done_at_kill < 6, "the kill should land after the first shard and before the last"
        assert subprocess.run([*command, "--out", str(killed)], env=env, capture_output=True).returncode == 0

        clean = tmp_path / "clean"  # uninterrupted, and on two worker processes: the same bytes regardless
        multi = [a for a in command if a not in BEAM_IN_PROCESS] + BEAM_MULTI_PROCESS
        assert subprocess.run([*multi, "--out", str(clean)], env=env, capture_output=True).returncode == 0

    def contents(folder: Path) -> dict[str, object]:
        files: dict[str, object] = {p.name: p.read_bytes() for p in sorted(folder.iterdir())}
        files["stats.json"] = stats_without_timings(folder / "stats.json")  # the same but for how long it took
        return files

    resumed = contents(killed)  # the rerun also removed the temporary files the kill left behind
    assert resumed == contents(clean)
    assert len([n for n in resumed if n.endswith(".tar")]) == 6 and not [n for n in resumed if ".tmp-" in n]


def test_shards_are_cut_in_row_order_across_files_and_row_groups(tmp_path):
    from pipelines.download import plan_shards, read_shard_rows

    first = write_pairs(tmp_path / "a.parquet", [{"uid": f"a{i}", "url": f"http://h/{i}"} for i in range(12)])
    second = write_pairs(tmp_path / "b.parquet", [{"uid": f"b{i}", "url": f"http://h/{i}"} for i in range(5)])
    specs = plan_shards([str(first), str(second)], rows_per_shard=7)
    assert [s.rows for s in specs] == [7, 7, 3]
    assert specs[1].slices == ((str(first), 7, 12), (str(second), 0, 2))
    uids = [[r["uid"] for r in read_shard_rows(s)] for s in specs]
    assert uids == [[f"a{i}" for i in range(7)], [f"a{i}" for i in range(7, 12)] + ["b0", "b1"], ["b2", "b3", "b4"]]
    assert plan_shards([str(first), str(second)], rows_per_shard=7) == specs


def test_a_pairs_folder_means_its_pairs_files_not_its_other_tables(tmp_path):
    from pipelines.download import input_files

    folder = tmp_path / "pairs"
    folder.mkdir()
    pairs = [write_pairs(folder / f"pairs-0000{i}-of-00002.parquet", [{"uid": f"u{i}", "url": f"http://h/{i}"}])
             for i in range(2)]
    pq.write_table(pa.table({"query": ["cat"], "matched": [1], "kept": [1]}), folder / "query_counts.parquet")
    assert input_files(str(folder)) == [str(p) for p in pairs]
    # a folder of other url tables still works, and a folder without parquet is named in the error
    other = tmp_path / "tables"
    other.mkdir()
    table = write_pairs(other / "laion.parquet", [{"uid": "x", "url": "http://h/x"}])
    assert input_files(str(other)) == [str(table)]
    with pytest.raises(FileNotFoundError, match="empty"):
        (tmp_path / "empty").mkdir()
        input_files(str(tmp_path / "empty"))
