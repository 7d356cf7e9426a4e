"""``wit download --retry-failed`` (issue 24) against a loopback server that fails some rows first and serves them
later: only transient failures are fetched again, every earlier success keeps its bytes, the shard ends as a
first run that had met no failure would have written it; the reasons read from stored rows; bad input."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests import hostile_server as hs
from tests.conftest import BEAM_IN_PROCESS, encode, photo
from tests.download.conftest import FAST_FLAGS, read_raw, write_pairs
from wit_builder.cli import main as wit
from wit_builder.download import retry
from wit_builder.download.raw_shards import RawSample


def _hang_up_first(server: hs.HostileServer, path: str, data: bytes) -> str:
    """The first request's connection is closed without an answer (a reset), later ones get ``data``."""
    count = [0]

    def handler(h: BaseHTTPRequestHandler) -> None:
        count[0] += 1
        if count[0] == 1:
            h.close_connection = True
            return
        hs.send(h, hs.Response(200, data, content_type="image/jpeg"))

    server.routes[path] = handler
    return server.url(path)


@pytest.fixture
def flaky():
    """Rows that fail first and are served later (503, 429, a hung-up connection), permanent failures (404,
    robots.txt, an HTML page) and plain successes."""
    with hs.HostileServer() as s:
        s.serve("/robots.txt", hs.Response(200, b"User-agent: *\nDisallow: /private/\n", content_type="text/plain"))
        photos = {name: encode(photo(name).resize((160, 120)), "JPEG") for name in ("astronaut", "coffee", "rocket",
                                                                                     "chelsea", "camera")}
        cases = [
            ("ok-1", s.image("/astronaut.jpg", photos["astronaut"]), "success", "success"),
            ("503", s.sequence("/coffee.jpg", [hs.Response(503), hs.Response(200, photos["coffee"])]),
             "failed_to_download", "success"),
            ("404", s.url("/missing.jpg"), "failed_to_download", "failed_to_download"),
            ("429", s.sequence("/rocket.jpg", [hs.Response(429), hs.Response(200, photos["rocket"])]),
             "failed_to_download", "success"),
            ("robots", s.image("/private/cat.jpg", photos["chelsea"]), "blocked", "blocked"),
            ("reset", _hang_up_first(s, "/camera.jpg", photos["camera"]), "failed_to_download", "success"),
            ("html", s.image("/page.jpg", b"<!doctype html><p>hi</p>"), "failed_to_decode", "failed_to_decode"),
            ("ok-2", s.image("/chelsea.jpg", photos["chelsea"]), "success", "success"),
        ]
        yield s, cases


def _download(pairs: Path, out: Path, *extra: str) -> int:
    # --retries 0: a transient failure is final within the run, so the first run leaves it failed
    flags = [f for f in FAST_FLAGS]
    flags[flags.index("--retries") + 1] = "0"
    return wit(["download", "--pairs", str(pairs), "--out", str(out), *flags, "--rows-per-shard", "4",
                *extra, *BEAM_IN_PROCESS])


def _files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.name[:1].isdigit()}


def test_retry_failed_refetches_only_transient_failures_and_keeps_successes(flaky, tmp_path, capsys):
    server, cases = flaky
    pairs = write_pairs(tmp_path / "pairs-00000.parquet", [
        {"uid": f"uid-{name}", "url": url, "caption": f"photo {name}", "queries": [name]} for name, url, _, _ in cases])
    out = tmp_path / "raw"
    assert _download(pairs, out) == 0
    rows, members = read_raw(out)
    assert [r["status"] for r in rows] == [first for _, _, first, _ in cases]
    assert [retry.failure_reason(r) for r in rows] == [None, "http_5xx", None, "http_429", None, "connection",
                                                      None, None]
    before_rows = {r["uid"]: r for r in rows}
    before = _files(out)
    capsys.readouterr()

    assert _download(pairs, out, "--retry-failed") == 0
    summary = capsys.readouterr().out
    assert "retried 3 failed rows, 3 succeeded now" in summary
    rows, after_members = read_raw(out)
    assert [r["status"] for r in rows] == [then for _, _, _, then in cases]
    # every earlier success is unchanged, row and members, byte for byte
    for uid in ("uid-ok-1", "uid-ok-2"):
        row = next(r for r in rows if r["uid"] == uid)
        assert row == before_rows[uid]
        assert after_members[row["key"]] == members[row["key"]]
    # permanent failures were not asked for again; the transient ones once more
    assert len(server.requests_to("/missing.jpg")) == 1
    assert len(server.requests_to("/page.jpg")) == 1
    assert server.requests_to("/private/cat.jpg") == []
    for path in ("/coffee.jpg", "/rocket.jpg", "/camera.jpg"):
        assert len(server.requests_to(path)) == 2
    # the same layout: shard names, keys, and a stats.json that counts the folder as it is now
    assert set(_files(out)) == set(before)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["counts"]["status_success"] == 5 and stats["counts"]["rows"] == len(cases)
    assert stats["parameters"]["retry_failed"] is True

    # the shards are those a first run that met no failure writes: fetch everything again into a fresh folder
    fresh = tmp_path / "fresh"
    assert _download(pairs, fresh) == 0
    assert _files(out) == _files(fresh)

    # nothing left to retry: a second --retry-failed downloads nothing and changes no byte
    kept = _files(out)
    assert _download(pairs, out, "--retry-failed") == 0
    assert "this run downloaded 0 rows in 0 shards" in capsys.readouterr().out
    assert _files(out) == kept


def test_retry_reasons_limit_what_is_retried(flaky, tmp_path):
    server, cases = flaky
    pairs = write_pairs(tmp_path / "pairs-00000.parquet", [
        {"uid": f"uid-{name}", "url": url, "caption": name, "queries": [name]} for name, url, _, _ in cases])
    out = tmp_path / "raw"
    assert _download(pairs, out) == 0
    assert _download(pairs, out, "--retry-failed", "--retry-reasons", "http_5xx") == 0
    rows, _ = read_raw(out)
    by_uid = {r["uid"]: r["status"] for r in rows}
    assert by_uid["uid-503"] == "success"
    assert by_uid["uid-429"] == by_uid["uid-reset"] == "failed_to_download"
    assert len(server.requests_to("/rocket.jpg")) == 1 and len(server.requests_to("/camera.jpg")) == 1


def test_retry_failed_bad_input(flaky, tmp_path, capsys):
    _, cases = flaky
    pairs = write_pairs(tmp_path / "pairs-00000.parquet", [
        {"uid": f"uid-{name}", "url": url, "caption": name, "queries": [name]} for name, url, _, _ in cases[:2]])
    # no earlier run to retry
    assert _download(pairs, tmp_path / "empty", "--retry-failed") == 2
    assert "holds no download run to retry" in capsys.readouterr().err
    # a folder made with other settings is refused like any rerun, naming what differs
    out = tmp_path / "raw"
    assert _download(pairs, out) == 0
    before = _files(out)
    assert _download(pairs, out, "--retry-failed", "--image-size", "128") == 2
    err = capsys.readouterr().err
    assert "--image-size: was 256, now 128" in err and err.count("\n") == 1
    assert _files(out) == before
    # contradictory and unknown flags
    assert _download(pairs, out, "--retry-failed", "--overwrite") == 2
    assert "--retry-failed" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:  # argparse's own refusal of a value outside the choices
        _download(pairs, out, "--retry-failed", "--retry-reasons", "http_404")
    assert exited.value.code == 2 and "invalid choice: 'http_404'" in capsys.readouterr().err
    # --retry-reasons alone would retry nothing and say nothing: refused, naming the missing flag
    assert _download(pairs, out, "--retry-reasons", "http_5xx") == 2
    err = capsys.readouterr().err
    assert "--retry-reasons" in err and "add --retry-failed" in err and err.count("\n") == 1, err
    assert _files(out) == before


@pytest.mark.parametrize(("row", "reason"), [
    ({"status": "failed_to_download", "http_status": 503, "error_message": "HTTP 503 from <url>"}, "http_5xx"),
    ({"status": "failed_to_download", "http_status": 429, "error_message": "HTTP 429 from <url>"}, "http_429"),
    ({"status": "failed_to_download", "http_status": 408, "error_message": "HTTP 408 from <url>"}, "http_429"),
    ({"status": "failed_to_download", "http_status": 404, "error_message": "HTTP 404 from <url>"}, None),
    ({"status": "failed_to_download", "http_status": 403, "error_message": "HTTP 403 from <url>"}, None),
    ({"status": "failed_to_download", "error_message": "DNS failure for http://x.invalid/a.jpg: Failed to "
      "resolve 'x.invalid' ([Errno -2] Name or service not known)"}, "dns"),
    ({"status": "failed_to_download", "error_message": "timeout fetching http://h/a.jpg: read timed out"}, "timeout"),
    ({"status": "failed_to_download", "error_message": "deadline of 20.0s exceeded reading http://h/a"}, "timeout"),
    ({"status": "failed_to_download", "error_message": "connection failed for http://h/a: ('Connection aborted.', "
      "RemoteDisconnected('Remote end closed connection without response'))"}, "connection"),
    ({"status": "failed_to_download", "error_message": "redirect loop at http://h/loop/a"}, None),
    ({"status": "failed_to_download", "error_message": "body exceeds max_bytes=1048576 from http://h/a"}, None),
    ({"status": "failed_to_download", "error_message": "empty url"}, None),
    # img2dataset keeps the exception text only
    ({"status": "failed_to_download", "error_message": "HTTP Error 502: Bad Gateway"}, "http_5xx"),
    ({"status": "failed_to_download", "error_message": "<urlopen error [Errno -3] Temporary failure in name "
      "resolution> getaddrinfo"}, "dns"),
    ({"status": "blocked", "error_message": "robots.txt disallows http://h/private/a"}, None),
    ({"status": "failed_to_decode", "error_message": "timeout decoding"}, None),
    ({"status": "success"}, None),
])
def test_failure_reason(row, reason):
    assert retry.failure_reason(row) == reason


def test_merge_keeps_the_layout():
    old = [RawSample({"key": "000", "status": "success"}, b"a", "jpg"), RawSample({"key": "001", "status": "x"})]
    new = RawSample({"key": "001", "status": "success"}, b"b", "jpg")
    assert retry.merge(old, {1: new}) == [old[0], new]
    with pytest.raises(ValueError, match="does not replace"):
        retry.merge(old, {0: new})


def test_blocked_rows_keep_the_reasons_their_shard_counted():
    samples = [RawSample({"key": "0", "status": "blocked"}), RawSample({"key": "1", "status": "success"}),
               RawSample({"key": "2", "status": "blocked"})]
    back = retry.restore_block_reasons(samples, {"x_robots_tag": 1, "robots_txt": 1})
    assert [s.reason for s in back] == ["robots_txt", None, "x_robots_tag"]
    assert [s.reason for s in retry.restore_block_reasons(samples, {})] == [None, None, None]


def test_read_samples_needs_every_success_image(tmp_path):
    from wit_builder.download import raw_shards

    rows = [{"key": "000", "uid": "u", "url": "http://h/a", "status": "success"}]
    sample = RawSample(rows[0], b"\xff\xd8jpeg", "jpg")
    with open(tmp_path / "00000.tar", "wb") as f:
        raw_shards.write_tar(f, [sample])
    pq.write_table(raw_shards.rows_table([sample]), tmp_path / "00000.parquet")
    rows = retry.read_rows(str(tmp_path / "00000.parquet"))
    back = retry.read_samples(str(tmp_path / "00000.tar"), rows)
    assert back[0].image == b"\xff\xd8jpeg" and back[0].image_ext == "jpg"
    with open(tmp_path / "00000.tar", "wb") as f:
        raw_shards.write_tar(f, [])
    with pytest.raises(raw_shards.RawInputError, match="no image for success 000"):
        retry.read_samples(str(tmp_path / "00000.tar"), rows)
