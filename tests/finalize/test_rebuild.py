"""``wit finalize --uids`` (issue 24): a dataset rebuilt from a published uid list on the real-photo raw fixture is
byte-identical to the original when the raw shards are the same; unknown uids and uids without a success are
counted and listed while the rest is written; every raw row keeps a final status; bad lists are one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import BEAM_IN_PROCESS, SPACE_CAP
from wit_builder.cli import main
from wit_builder.finalize import rebuild


def finalize(raw_dir: Path, out: Path, *extra: str) -> int:
    return main(["finalize", "--raw", str(raw_dir), "--out", str(out), "--samples-per-shard", "4",
                 "--gallery-samples", "0", *extra, *BEAM_IN_PROCESS])


@pytest.fixture(scope="module")
def original(raw, tmp_path_factory) -> Path:
    """The dataset as its first team made it: dedup and a per-query cap."""
    out = tmp_path_factory.mktemp("original") / "out"
    assert finalize(raw.root, out, "--per-query-cap", str(SPACE_CAP)) == 0
    return out


def shard_files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("[0-9]*.*"))}


def sample_uids(out: Path) -> list[str]:
    """The published list: the samples' uids in key order (from the final shards' parquets)."""
    rows = [r for p in sorted(out.glob("[0-9]*.parquet")) for r in pq.read_table(p).to_pylist()]
    return [r["uid"] for r in sorted(rows, key=lambda r: r["key"])]


def test_a_rebuild_from_the_published_uids_is_byte_identical(raw, original, tmp_path, capsys):
    uids = sample_uids(original)
    listing = tmp_path / "uids.txt"
    listing.write_text("# published with the dataset\n" + "\n".join(reversed(uids)) + "\n\n")  # order does not matter
    out = tmp_path / "rebuilt"
    assert finalize(raw.root, out, "--uids", str(listing)) == 0
    assert f"rebuilt {len(uids)} of {len(uids)} listed uids" in capsys.readouterr().out
    assert shard_files(out) == shard_files(original)  # tars and parquets, byte for byte
    assert (out / "sizes.json").read_bytes() == (original / "sizes.json").read_bytes()
    assert (out / rebuild.MISSING_UIDS).read_text() == ""
    stats = json.loads((out / "stats.json").read_text())
    assert stats["counts"]["uids_listed"] == len(uids) and stats["counts"]["uids_missing"] == 0
    # every raw row has a final status: successes not listed are filtered as not_listed
    rows = [r for p in sorted((out / "accounting" / "rows").glob("*.parquet")) for r in pq.read_table(p).to_pylist()]
    assert len(rows) == len(raw.rows)
    listed = set(uids)
    assert sorted(r["uid"] for r in rows if r["status"] == "success") == sorted(uids)
    not_listed = [r for r in rows if r["status"] == "filtered" and "not in the --uids list" in (r["error_message"]
                                                                                                or "")]
    assert not_listed and all(r["uid"] not in listed for r in not_listed)


def test_unknown_uids_are_counted_and_listed_and_the_rest_is_written(raw, original, tmp_path, capsys):
    uids = sample_uids(original)
    failed = next(r["uid"] for r in raw.rows.values() if r["status"] == "failed_to_download")
    table = pa.table({"uid": uids[:6] + ["no-such-uid-1", "no-such-uid-2", failed],
                      "note": ["x"] * 9})
    listing = tmp_path / "uids.parquet"
    pq.write_table(table, listing)
    out = tmp_path / "rebuilt"
    assert finalize(raw.root, out, "--uids", str(listing)) == 0
    summary = capsys.readouterr().out
    assert "rebuilt 6 of 9 listed uids; 3 not found as successes" in summary
    missing = dict(line.split("\t") for line in (out / rebuild.MISSING_UIDS).read_text().splitlines())
    assert missing == {"no-such-uid-1": "not in the raw shards", "no-such-uid-2": "not in the raw shards",
                       failed: "no success in the raw shards (status failed_to_download)"}
    assert sorted(sample_uids(out)) == sorted(uids[:6])
    stats = json.loads((out / "stats.json").read_text())
    assert stats["counts"]["uids_missing"] == 3 and stats["details"]["rebuild"]["listed"] == 9
    # the same images as in the original shards, under the keys of the rebuilt order
    original_images = {r["uid"]: r["sha256"] for p in original.glob("[0-9]*.parquet")
                       for r in pq.read_table(p).to_pylist()}
    for p in out.glob("[0-9]*.parquet"):
        for r in pq.read_table(p).to_pylist():
            assert original_images[r["uid"]] == r["sha256"]


def test_text_lists_from_editors_and_missing_lists_read_as_uids():
    # a byte-order mark and CRLF (an editor's or a spreadsheet's export) are no part of a uid, and a
    # missing_uids.txt (uid<TAB>why) fed back as a list names its uids
    lines = "\ufeffu000\r\nu003\r\n# comment\r\n\r\nu999\tnot in the raw shards\n".splitlines()
    assert list(rebuild.uids_in_lines(lines)) == ["u000", "u003", "u999"]
    text = rebuild.missing_text([("b", "not in the raw shards"), ("a", "no success in the raw shards (status x)")])
    assert list(rebuild.uids_in_lines(text.decode().splitlines())) == ["a", "b"]


def test_bad_uid_lists_are_refused_before_any_work(raw, tmp_path, capsys):
    out = tmp_path / "out"
    cases = {
        "missing.txt": None,
        "empty.txt": b"# nothing here\n\n",
        "binary.txt": b"\x00\x01\x02uid",
        "nouid.parquet": "nouid",
        "broken.parquet": b"not parquet at all",
        "norows.parquet": "norows",
        "intuid.parquet": "intuid",
    }
    for name, content in cases.items():
        path = tmp_path / name
        if content == "nouid":
            pq.write_table(pa.table({"id": ["a"]}), path)
        elif content == "norows":  # refused as an empty text list is, not a rebuild of nothing
            pq.write_table(pa.table({"uid": pa.array([], pa.string())}), path)
        elif content == "intuid":
            pq.write_table(pa.table({"uid": [1, 2]}), path)
        elif content is not None:
            path.write_bytes(content)
        assert finalize(raw.root, out, "--uids", str(path)) == 2, name
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"--uids {path}" in err, (name, err)
        if name == "norows.parquet":
            assert "holds no uid" in err
        if name == "intuid.parquet":
            assert "uid: int64" in err
    assert not out.exists() or not list(out.iterdir())
    # the list is the selection: a cap or decontamination with it is a usage error
    listing = tmp_path / "ok.txt"
    listing.write_text("a\n")
    assert finalize(raw.root, out, "--uids", str(listing), "--per-query-cap", "2") == 2
    assert "--uids" in capsys.readouterr().err


def test_a_rerun_without_uids_removes_the_missing_list(raw, original, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(original, out)
    listing = tmp_path / "uids.txt"
    listing.write_text("no-such-uid\n")
    assert finalize(raw.root, out, "--uids", str(listing)) == 3  # finished, empty: no listed uid was found
    assert (out / rebuild.MISSING_UIDS).read_text() == "no-such-uid\tnot in the raw shards\n"
    assert not list(out.glob("[0-9]*.tar"))  # nothing listed was found: no shard
    assert finalize(raw.root, out, "--per-query-cap", str(SPACE_CAP)) == 0
    assert not (out / rebuild.MISSING_UIDS).exists()
    assert shard_files(out) == shard_files(original)
