"""``wit download`` (command.DownloadStage) end to end against the hostile server: statuses, layout, resume after
SIGKILL, both engines, reruns and exit statuses; ``finish`` on given counts."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import imagehash
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas.download import RAW_STATUSES
from schemas.stats import prefixed, stats_without_timings
from schemas.stats import validate as validate_stats
from tests import hostile_server as hs
from tests.conftest import BEAM_IN_PROCESS, BEAM_MULTI_PROCESS, encode, photo
from tests.download.conftest import FAST_FLAGS, read_raw, write_pairs
from wit_builder.cli import main as wit


@pytest.fixture(scope="module")
def hostile():
    """The issue's list of hostile cases, each row with the status it must end with."""
    with hs.HostileServer() as s:
        s.serve("/robots.txt", hs.Response(200, b"User-agent: *\nDisallow: /private/\n", content_type="text/plain"))
        astronaut = hs.jpeg()
        exif_data, _ = hs.exif_rotated_jpeg()
        tiny = encode(photo("coffee").resize((30, 20)), "JPEG")
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
            ("resized", s.image("/small-good.jpg", encode(photo("astronaut").resize((320, 320)), "JPEG")), "success"),
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
    # shards by host: 23 rows of 127.0.0.1 make a chain of 7 + 7 + 7 + 2, the empty url a shard of its own
    validate_stats(stats)
    assert stats["details"]["statuses"] == expected == prefixed(stats["counts"], "status_")
    assert stats["counts"]["rows"] == len(cases) and stats["counts"]["shards"] == 5
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
    assert run_download(tmp_path / "pool.parquet", tmp_path / "raw", "--retries", "0") == 3  # nothing succeeded
    rows, _ = read_raw(tmp_path / "raw")
    assert len(rows) == 1 and len(rows[0]["uid"]) == 32 and rows[0]["status"] == "blocked"
    assert "robots.txt unreachable" in rows[0]["error_message"]  # RFC 9309: no robots.txt answer, no fetch

    pq.write_table(pa.table({"link": ["x"]}), tmp_path / "nourl.parquet")
    assert run_download(tmp_path / "nourl.parquet", tmp_path / "raw2") == 2
    assert "no 'url' column" in capsys.readouterr().err
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    assert run_download(tmp_path / "junk.parquet", tmp_path / "raw3") == 2
    assert run_download(tmp_path / "nothing-*.parquet", tmp_path / "raw4") == 2


@pytest.mark.parametrize(("columns", "named"), [
    ({"url": ["http://a.example/x.jpg"], "caption": [7]}, "column 'caption' has type int64, expected string"),
    ({"url": [["http://a.example/x.jpg"]], "caption": ["c"]}, "column 'url' has type list<"),
    ({"url": ["http://a.example/x.jpg"], "uid": [1], "caption": ["c"]}, "column 'uid' has type int64"),
    ({"url": ["http://a.example/x.jpg"], "queries": ["cat"]}, "column 'queries' has type string, expected list"),
])
def test_pairs_columns_of_the_wrong_type_fail_before_any_work(tmp_path, capsys, columns, named):
    """The same column checks as stage 2's (wit_builder.core.table_checks): file, column and type named, exit 2."""
    pq.write_table(pa.table(columns), tmp_path / "pairs.parquet")
    assert run_download(tmp_path / "pairs.parquet", tmp_path / "raw") == 2
    err = capsys.readouterr().err
    assert named in err and "pairs.parquet" in err, err
    assert not list((tmp_path / "raw").glob("*.tar"))


def test_duplicate_pairs_columns_fail_before_any_work(tmp_path, capsys):
    schema = pa.schema([("url", pa.string()), ("url", pa.string())])
    pq.write_table(pa.Table.from_arrays([pa.array(["http://a.example/1.jpg"]), pa.array(["http://b.example/2.jpg"])],
                                        schema=schema), tmp_path / "dup.parquet")
    assert run_download(tmp_path / "dup.parquet", tmp_path / "raw") == 2
    assert "column 'url' appears 2 times" in capsys.readouterr().err


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
        command = [sys.executable, "-m", "wit_builder.cli", "download", "--pairs", str(pairs), *FAST_FLAGS,
                   "--threads", "2", "--rows-per-shard", "4", *BEAM_IN_PROCESS]
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}

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


# ---- reruns: settings are part of the output's identity; a run where nothing succeeded says so ----

def two_photos_downloaded(server: hs.HostileServer, tmp_path: Path) -> tuple[Path, Path]:
    """Two photos served behind an allowing robots.txt, downloaded at 64 px: (pairs file, raw folder)."""
    server.serve("/robots.txt", hs.Response(200, b"User-agent: *\nAllow: /\n", content_type="text/plain"))
    urls = [server.image("/a.jpg", hs.jpeg("coffee")), server.image("/b.jpg", hs.jpeg("astronaut"))]
    pairs = write_pairs(tmp_path / "pairs.parquet", [
        {"uid": f"u{i}", "url": u, "caption": f"c{i}", "queries": ["q"]} for i, u in enumerate(urls)])
    out = tmp_path / "raw"
    assert run_download(pairs, out, "--image-size", "64") == 0
    return pairs, out


def test_a_rerun_with_other_settings_refuses_and_names_them_until_overwrite(tmp_path, capsys):
    with hs.HostileServer() as server:
        pairs, out = two_photos_downloaded(server, tmp_path)
        before = {p.name: p.read_bytes() for p in out.iterdir()}
        capsys.readouterr()

        for flags, named in [
            (["--image-size", "32"], "--image-size: was 64, now 32"),
            (["--image-size", "64", "--resize-mode", "center_crop"], "--resize-mode: was 'keep_ratio', now"),
            (["--image-size", "64", "--encode-format", "webp"], "--encode-format: was 'jpg', now 'webp'"),
            (["--image-size", "64", "--no-robots"], "--no-robots: was True, now False"),
            (["--image-size", "64", "--allow-link-local"], "--allow-link-local: was False, now True"),
            (["--image-size", "64", "--engine", "img2dataset"], "--engine: was 'native', now 'img2dataset'"),
        ]:
            assert run_download(pairs, out, *flags) == 2, flags
            message = "".join(capsys.readouterr())
            assert named in message and "--overwrite" in message, message  # the flag, not plan.json's field
            assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing touched

        # Speed-only settings are no part of the identity: the rerun resumes (nothing to do).
        before_counts = json.loads(before["stats.json"])["counts"]
        assert run_download(pairs, out, "--image-size", "64", "--threads", "3", "--per-host-rate", "50") == 0
        after = {p.name: p.read_bytes() for p in out.iterdir()}
        # stats.json is rewritten by every run (this run's parameters and timings); shards and plan are untouched
        assert json.loads(after["stats.json"])["counts"] == before_counts
        assert {k: v for k, v in after.items() if k != "stats.json"} == {
            k: v for k, v in before.items() if k != "stats.json"}

        (out / "00000.tar.tmp-dead").write_bytes(b"half")
        assert run_download(pairs, out, "--image-size", "32", "--overwrite") == 0
        assert "--overwrite: deleted" in capsys.readouterr().out
        rows, members = read_raw(out)
        assert [r["status"] for r in rows] == ["success", "success"] and not list(out.glob("*.tmp-*"))
        assert {(r["width"], r["height"]) for r in rows} == {(48, 32), (32, 32)}
        plan = json.loads((out / "plan.json").read_text())
        assert plan["settings"]["image"]["image_size"] == 32 and "threads" not in plan["settings"]["network"]


def test_a_run_where_nothing_succeeded_prints_reasons_and_a_hint_and_exits_3(tmp_path, capsys):
    with hs.HostileServer() as server:
        urls = [server.image(f"/{i}.jpg", hs.jpeg()) for i in range(6)]
        pairs = write_pairs(tmp_path / "pairs.parquet", [
            {"uid": f"u{i}", "url": u, "caption": "c", "queries": ["q"]} for i, u in enumerate(urls)])
        flags = [f for f in FAST_FLAGS if f != "--allow-private-networks"]
        out = tmp_path / "raw"
        code = wit(["download", "--pairs", str(pairs), "--out", str(out), *flags, "--rows-per-shard", "4",
                    *BEAM_IN_PROCESS])
        printed = "".join(capsys.readouterr())
        assert code == 3
        assert "blocked=6" in printed and "nothing succeeded: all 6 rows were refused or failed" in printed
        assert "loopback address 127.0.0.1" in printed and "hint:" in printed
        assert "--allow-private-networks" in printed
        assert not server.log  # refused before any connection
        stats = json.loads((out / "stats.json").read_text())
        assert stats["details"]["statuses"]["blocked"] == 6 and sum(stats["details"]["top_errors"].values()) == 6

        # Every image refused by the size limits: the reason and the limits to look at.
        bombs = [server.image("/tall.png", hs.png_complete(1, 100_000), "image/png"),
                 server.image("/overflow.png", hs.png_complete(2, 40_000_000), "image/png")]
        pairs = write_pairs(tmp_path / "bombs.parquet", [
            {"uid": f"b{i}", "url": u, "caption": "c", "queries": ["q"]} for i, u in enumerate(bombs)])
        code = wit(["download", "--pairs", str(pairs), "--out", str(tmp_path / "bombs"), "--allow-private-networks",
                    "--no-robots", "--max-bytes", str(1 << 20), *BEAM_IN_PROCESS])
        printed = "".join(capsys.readouterr())
        assert code == 3 and "failed_to_decode=2" in printed and "--max-output-pixels" in printed
        rows, _ = read_raw(tmp_path / "bombs")
        assert all(r["status"] == "failed_to_decode" and "too elongated" in r["error_message"] for r in rows)
        assert {(r["original_width"], r["original_height"]) for r in rows} == {(1, 100_000), (2, 40_000_000)}
# ---- network side of issue 13: deadlines per shard, one GET per URL, per-host limits across workers ----

def test_a_shard_with_trickling_servers_ends_near_the_deadline(tmp_path):
    """Status line, headers, body and robots.txt trickled one byte a second: the shard still ends in about
    one deadline, and its good rows succeed."""
    with hs.HostileServer() as s, hs.HostileServer() as slow_robots:
        s.serve("/robots.txt", hs.Response(200, b"User-agent: *\nAllow: /\n", content_type="text/plain"))
        slow_robots.trickle("/robots.txt", "headers", interval_s=1.0)
        good = hs.jpeg()
        inputs = [
            {"uid": "good1", "url": s.image("/good1.jpg", good)},
            {"uid": "status", "url": s.trickle("/t-status.jpg", "status", interval_s=1.0)},
            {"uid": "headers", "url": s.trickle("/t-headers.jpg", "headers", interval_s=1.0)},
            {"uid": "body", "url": s.trickle("/t-body.jpg", "body", interval_s=1.0)},
            {"uid": "robots", "url": slow_robots.image("/behind-slow-robots.jpg", good)},
            {"uid": "good2", "url": s.image("/good2.jpg", good)},
            {"uid": "bad-location", "url": s.raw_redirect("/bad-location.jpg", b"/caf\xe9.jpg")},
        ]
        pairs = write_pairs(tmp_path / "pairs.parquet", [{**r, "caption": r["uid"], "queries": ["q"]} for r in inputs])
        out = tmp_path / "raw"
        deadline = 3.0
        started = time.monotonic()
        assert wit(["download", "--pairs", str(pairs), "--out", str(out), "--allow-private-networks",
                    "--timeout", "2", "--deadline", str(deadline), "--retries", "2", "--backoff-base", "0.01",
                    *BEAM_IN_PROCESS]) == 0
        elapsed = time.monotonic() - started
        rows, _ = read_raw(out)
    by_uid = {r["uid"]: r for r in rows}
    assert {u: by_uid[u]["status"] for u in by_uid} == {
        "good1": "success", "good2": "success", "status": "failed_to_download", "headers": "failed_to_download",
        "body": "failed_to_download", "robots": "blocked", "bad-location": "failed_to_download"}
    for uid in ("status", "headers", "body"):
        assert "deadline" in by_uid[uid]["error_message"]
    assert "robots.txt" in by_uid["robots"]["error_message"]
    assert "not UTF-8" in by_uid["bad-location"]["error_message"]
    # generous bound for a loaded machine (pipeline start-up included); unbounded, this took minutes
    assert elapsed < 4 * deadline + 30, elapsed


def test_rows_sharing_a_url_are_fetched_once_per_run(tmp_path):
    """2,000 rows with one URL (in several spellings), cut into shards of 300: one GET, one shared result."""
    with hs.HostileServer() as s:
        s.serve("/robots.txt", hs.Response(200, b"User-agent: *\nAllow: /\n", content_type="text/plain"))
        small = encode(photo("coffee").resize((96, 64)), "JPEG")
        url = s.counted_image("/same.jpg", small, delay_s=0.05)
        spellings = [url, url.replace("http://", "HTTP://") + "#frag", url]
        other = s.counted_image("/other.jpg", small)
        inputs = [{"uid": f"u{i:04d}", "url": spellings[i % 3], "caption": f"caption {i}", "queries": ["q"]}
                  for i in range(2000)]
        inputs += [{"uid": f"o{i}", "url": other, "caption": f"other {i}", "queries": ["q"]} for i in range(5)]
        pairs = write_pairs(tmp_path / "pairs.parquet", inputs)
        out = tmp_path / "raw"
        assert run_download(pairs, out, "--rows-per-shard", "300", "--deadline", "5") == 0
        assert len(s.requests_to("/same.jpg")) == 1 and len(s.requests_to("/other.jpg")) == 1
    rows, members = read_raw(out)
    assert len(rows) == 2005 and {r["status"] for r in rows} == {"success"}
    assert len({r["key"] for r in rows}) == 2005 and len(members) == 2005
    same = [r for r in rows if r["uid"].startswith("u")]
    assert len({r["sha256"] for r in same}) == 1
    assert {r["uid"]: r["caption"] for r in same} == {f"u{i:04d}": f"caption {i}" for i in range(2000)}
    assert len(list(out.glob("*_stats.json"))) >= 7  # several shards, still one GET


@pytest.mark.slow
def test_per_host_limits_hold_across_worker_processes(tmp_path):
    """Three worker processes, 48 rows of one host in 8 shards: the server's log shows at most
    --per-host-concurrency requests in flight and at most --per-host-rate starts per second."""
    with hs.HostileServer() as s:
        s.serve("/robots.txt", hs.Response(200, b"User-agent: *\nAllow: /\n", content_type="text/plain"))
        small = encode(photo("coffee").resize((96, 64)), "JPEG")
        in_flight, peak, lock = [0], [0], __import__("threading").Lock()

        def handler(h):
            with lock:
                in_flight[0] += 1
                peak[0] = max(peak[0], in_flight[0])
            try:
                time.sleep(0.15)
                hs.send(h, hs.Response(200, small, content_type="image/jpeg"))
            finally:
                with lock:
                    in_flight[0] -= 1

        inputs = []
        for i in range(48):
            s.routes[f"/p{i}.jpg"] = handler
            inputs.append({"uid": f"p{i:02d}", "url": s.url(f"/p{i}.jpg"), "caption": f"p {i}", "queries": ["q"]})
        pairs = write_pairs(tmp_path / "pairs.parquet", inputs)
        rate = 8.0
        command = [sys.executable, "-m", "wit_builder.cli", "download", "--pairs", str(pairs), "--out",
                   str(tmp_path / "raw"), *FAST_FLAGS, "--deadline", "5", "--rows-per-shard", "6",
                   "--per-host-concurrency", "2", "--per-host-rate", str(rate),
                   "--runner=FnApiRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=3"]
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        starts = sorted(r.time for r in s.log if r.path.startswith("/p"))
    assert len(starts) == 48 and peak[0] <= 2, peak[0]
    # rate: in any one-second window, at most rate + 1 request starts (server-side times, so a little slack)
    most = max(sum(1 for t in starts if t0 <= t < t0 + 1.0) for t0 in starts)
    assert most <= rate + 2, most
    rows, _ = read_raw(tmp_path / "raw")
    assert {r["status"] for r in rows} == {"success"} and len(rows) == 48


def test_shards_without_a_plan_are_not_reused_silently(tmp_path, capsys):
    """A folder holding raw shards but no plan.json (deleted, or made by another tool) has unknown settings:
    a rerun refuses rather than skipping those shards as complete, until --overwrite."""
    with hs.HostileServer() as server:
        pairs, out = two_photos_downloaded(server, tmp_path)
        (out / "plan.json").unlink()
        before = {p.name: p.read_bytes() for p in out.iterdir()}
        capsys.readouterr()
        assert run_download(pairs, out, "--image-size", "32") == 2
        message = "".join(capsys.readouterr())
        assert "plan.json" in message and "--overwrite" in message, message
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before
        assert run_download(pairs, out, "--image-size", "32", "--overwrite") == 0
        rows, _ = read_raw(out)
        assert {(r["width"], r["height"]) for r in rows} == {(48, 32), (32, 32)}


def test_a_truncated_plan_names_itself(tmp_path, capsys):
    """A plan.json cut short (a full disk, a killed copy) is bad input: exit 2 with one line naming the file."""
    with hs.HostileServer() as server:
        pairs, out = two_photos_downloaded(server, tmp_path)
        (out / "plan.json").write_bytes((out / "plan.json").read_bytes()[:40])
        capsys.readouterr()
        assert run_download(pairs, out, "--image-size", "32") == 2
        err = capsys.readouterr().err
        assert f"{out / 'plan.json'}: not a JSON file" in err and "Traceback" not in err, err


def test_a_raw_folder_given_as_pairs_is_refused(tmp_path, capsys):
    """`--pairs out/raw` (stage 3's own output, its parquets have url and caption too) is a mix-up, not pairs
    to fetch again: exit 2 naming the file and what --pairs takes, before anything is written."""
    with hs.HostileServer() as server:
        _, raw = two_photos_downloaded(server, tmp_path)
        capsys.readouterr()
        assert run_download(raw, tmp_path / "again") == 2
        err = capsys.readouterr().err
        assert "a raw download shard" in err and str(raw / "00000.parquet") in err and "Traceback" not in err, err
        assert not (tmp_path / "again").exists()


# ---- the Stage's hooks on their own: the plan before any work, stats.json from given counts ----

def test_finish_computes_stats_json_from_the_counts_and_exits_3_when_nothing_succeeded(tmp_path):
    from wit_builder.download import stats
    from wit_builder.download.command import EXIT_NOTHING_SUCCEEDED, DownloadStage
    from wit_builder.download.options import DownloadOptions
    from wit_builder.download.raw_folder import ERROR_KINDS_FILE

    pairs = write_pairs(tmp_path / "pairs.parquet", [{"uid": f"u{i}", "url": f"http://h{i % 2}.example/{i}.jpg"}
                                                     for i in range(5)])
    out = tmp_path / "raw"
    stage = DownloadStage(DownloadOptions(pairs=(str(pairs),), out=str(out), rows_per_shard=2))
    stage.inputs = stage.resolve()
    (planned,) = stage.announce()
    assert planned.startswith("wit download: 5 rows in 3 shards of <= 2 (0 already complete)"), planned
    assert not out.exists()  # checks only: nothing written before the launcher's makedirs
    out.mkdir()
    assert stage.clean_rerun() == [] and (out / "plan.json").exists()

    errors = {"HTTP 404 from <url>": 3, "robots.txt disallows <url>": 2}
    (out / ERROR_KINDS_FILE).write_text(json.dumps(errors))  # as pipeline.Download writes it
    counts = dict.fromkeys(stats.COUNT_NAMES, 0) | {
        "shards": 3, "rows": 5, "bytes_downloaded": 0, "status_failed_to_download": 3, "status_blocked": 2,
        "blocked_robots_txt": 2, "shards_downloaded": 3, "rows_downloaded": 5}
    outcome = stage.finish(counts, 1.5)
    assert outcome.exit_code == EXIT_NOTHING_SUCCEEDED == 3
    assert outcome.summary == ["5 rows in 3 shards: success=0 failed_to_download=3 failed_to_decode=0 blocked=2 "
                               "filtered=0 (blocked: robots_txt=2)", "this run downloaded 5 rows in 3 shards"]
    assert outcome.error is not None and outcome.error.startswith("nothing succeeded: all 5 rows were refused")
    assert "3  HTTP 404 from <url>" in outcome.error and "hint:" in outcome.error
    assert not (out / ERROR_KINDS_FILE).exists()  # read once, then removed

    doc = json.loads((out / "stats.json").read_text())
    validate_stats(doc)
    assert doc["counts"] == {k: v for k, v in counts.items() if k not in stats.RUN_COUNTS}
    assert doc["details"] == {"statuses": {"success": 0, "failed_to_download": 3, "failed_to_decode": 0,
                                           "blocked": 2, "filtered": 0},
                              "blocked_reasons": {"robots_txt": 2, "robots_txt_unreachable": 0, "x_robots_tag": 0,
                                                  "tdm_reserved": 0, "tdm_unknown": 0, "address": 0, "scheme": 0,
                                                  "other": 0},
                              "top_errors": errors}
    assert doc["inputs"] == [{"path": str(pairs), "rows": 5, "sha256": None, "bytes": None}]
    assert sum(o["rows"] for o in doc["outputs"]) == 5 and doc["parameters"]["rows_per_shard"] == 2

    # A rerun that downloaded nothing: only the timings would change, so stats.json stays as it was.
    before = (out / "stats.json").read_bytes()
    (out / ERROR_KINDS_FILE).write_text(json.dumps(errors))
    rerun = counts | {"shards_downloaded": 0, "rows_downloaded": 0}
    assert stage.finish(rerun, 9.0).summary[1] == "this run downloaded 0 rows in 0 shards"
    assert (out / "stats.json").read_bytes() == before

    (out / ERROR_KINDS_FILE).write_text("{}")
    some = rerun | {"status_success": 1, "status_blocked": 1}
    assert stage.finish(some, 2.0).exit_code == 0


def test_every_opt_out_is_its_own_count_in_stats_json(tmp_path):
    """robots.txt (with a BOM), X-Robots-Tag (none; several scopes), TDMRep (header; tdmrep.json) end to end:
    each blocked row counted under its reason in stats.json, the summary and the details (issue 23)."""
    astronaut = hs.jpeg()
    with hs.HostileServer() as a, hs.HostileServer() as b:
        a.serve("/robots.txt", hs.Response(200, b"\xef\xbb\xbfUser-agent: *\nDisallow: /private/\n"))
        b.serve("/.well-known/tdmrep.json", hs.Response(200, b'[{"location": "/", "tdm-reservation": 1}]'))
        urls = {
            "robots": a.image("/private/a.jpg", astronaut),
            "none": a.image("/none.jpg", astronaut, **{"X-Robots-Tag": "none"}),
            "scoped": a.image("/scoped.jpg", astronaut, **{"X-Robots-Tag": "googlebot: noindex, wit-builder: noai"}),
            "tdm_header": a.image("/tdm.jpg", astronaut, **{"tdm-reservation": "1"}),
            "tdm_file": b.image("/b.jpg", astronaut),
            "ok": a.image("/ok.jpg", astronaut),
        }
        pairs = write_pairs(tmp_path / "pairs.parquet", [{"uid": f"u-{k}", "url": u, "caption": k, "queries": [k]}
                                                         for k, u in urls.items()])
        assert run_download(pairs, tmp_path / "raw") == 0
        doc = json.loads((tmp_path / "raw" / "stats.json").read_text())
        assert {k: v for k, v in doc["counts"].items() if k.startswith("blocked_") and v} == {
            "blocked_robots_txt": 1, "blocked_x_robots_tag": 2, "blocked_tdm_reserved": 2}
        assert doc["counts"]["status_success"] == 1 and doc["details"]["blocked_reasons"]["tdm_reserved"] == 2
        assert a.requests_to("/private/a.jpg") == [] and b.requests_to("/b.jpg") == []
        assert doc["parameters"]["tdmrep"] is True
        # --no-tdmrep: the TDMRep rows are fetched, the others still blocked
        assert run_download(pairs, tmp_path / "lax", "--no-tdmrep") == 0
        lax = json.loads((tmp_path / "lax" / "stats.json").read_text())
        assert lax["counts"]["status_success"] == 3 and lax["counts"]["blocked_tdm_reserved"] == 0
        assert lax["parameters"]["tdmrep"] is False


# ---- one writer per --out; empty and unusual inputs (issue 23) ----

def test_a_second_download_into_the_same_out_is_refused_before_any_request(tmp_path, capsys):
    """Two downloads into one --out at once both ran (50 GETs for 40 URLs, a host's cap doubled): while one run
    holds the folder's lock, a second is refused in one line naming it, and makes no request."""
    from wit_builder.core.run_folder import FolderLock

    with hs.HostileServer() as server:
        pairs, out = two_photos_downloaded(server, tmp_path)
        asked = len(server.log)
        capsys.readouterr()
        with FolderLock(str(out), "download"):  # the first run, still going
            assert run_download(pairs, out, "--image-size", "64", "--overwrite") == 2
            err = capsys.readouterr().err
            assert f"--out {out} is being written by another run (command download, pid " in err
            assert err.count("\n") == 1
        assert len(server.log) == asked  # not one request
        assert run_download(pairs, out, "--image-size", "64") == 0  # once it ended, the folder is free


def test_pairs_without_rows_say_so_before_any_work(tmp_path, capsys):
    """A pairs folder whose files hold 0 rows is exit 2 saying exactly that; a folder with no pairs file too."""
    empty = tmp_path / "pairs"
    empty.mkdir()
    assert run_download(empty, tmp_path / "raw") == 2
    assert f"--pairs {str(empty)!r} holds no pairs-*.parquet nor any *.parquet file" in capsys.readouterr().err
    write_pairs(empty / "pairs-00000-of-00001.parquet", [])
    assert run_download(empty, tmp_path / "raw") == 2
    assert "the pairs files hold no rows (1 file(s), 0 rows): nothing to download" in capsys.readouterr().err
    assert not (tmp_path / "raw").exists()


def test_a_named_pipe_among_the_pairs_is_refused_by_name(tmp_path, capsys):
    import os

    folder = tmp_path / "pairs"
    folder.mkdir()
    write_pairs(folder / "pairs-00000-of-00002.parquet", [{"uid": "u", "url": "http://x/a.jpg", "caption": "c",
                                                           "queries": ["q"]}])
    os.mkfifo(folder / "pairs-00001-of-00002.parquet")
    assert run_download(folder, tmp_path / "raw") == 2
    err = capsys.readouterr().err
    assert f"'{folder / 'pairs-00001-of-00002.parquet'}' is a named pipe (FIFO), not a regular file" in err
