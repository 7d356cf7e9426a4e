"""Stage 4 end to end (wit_builder.finalize.command): raw shards of real photos -> `wit finalize` -> WebDataset
shards, accounting, card; and the Stage's `finish` on given counts."""

from __future__ import annotations

import glob
import hashlib
import io
import json
import shutil
import tarfile
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from PIL import Image

from schemas.finalize import FINAL_ROWS, FINAL_STATUSES, QUERY_COUNTS
from schemas.sample import SAMPLE_JSON_FIELDS
from schemas.stats import prefixed, stats_without_timings
from schemas.stats import validate as validate_stats
from tests.conftest import (
    BEAM_IN_PROCESS,
    BEAM_MULTI_PROCESS,
    SHARDS,
    SPACE_CAP,
    encode,
    expected_statuses,
    photo,
    stored,
)
from wit_builder.cli import main
from wit_builder.download import raw_shards
from wit_builder.finalize import command, outputs
from wit_builder.finalize.options import FinalizeOptions
from wit_builder.finalize.rules import AccountingError
from wit_builder.finalize.shards import FIXED_MTIME

PER_SHARD = 4


def finalize(raw_dir, out, *extra, beam=BEAM_IN_PROCESS, per_shard=PER_SHARD):
    argv = ["finalize", "--raw", str(raw_dir), "--out", str(out), "--samples-per-shard", str(per_shard),
            "--per-query-cap", str(SPACE_CAP), *extra, *beam]
    return main(argv)


@pytest.fixture(scope="module")
def out(raw):
    out = raw.root.parent / "out"
    assert finalize(raw.root, out) == 0
    return out


def accounting(out) -> dict[tuple[str, int], dict]:
    """(raw shard, raw row) -> final row, from accounting/rows/*.parquet (rows are in input order)."""
    rows = {}
    for path in sorted(glob.glob(str(out / "accounting" / "rows" / "*.parquet"))):
        table = pq.read_table(path)
        assert table.schema.equals(FINAL_ROWS, check_metadata=False)
        for i, row in enumerate(table.to_pylist()):
            rows[(row["raw_shard"], i)] = row
    return rows


def test_every_raw_row_ends_in_its_expected_status(raw, out):
    final = accounting(out)
    assert set(final) == set(raw.rows)
    for key, row in final.items():
        assert row["uid"] == raw.rows[key]["uid"] and row["raw_key"] == raw.rows[key]["key"]
    assert {k: r["status"] for k, r in final.items()} == expected_statuses(raw, SPACE_CAP, decontaminate=False)
    assert all(r["status"] in FINAL_STATUSES for r in final.values())


def test_stats_count_every_status_and_add_up_to_the_input(raw, out):
    stats = json.loads((out / "stats.json").read_text())
    validate_stats(stats)
    counts = stats["counts"]
    expected = Counter(expected_statuses(raw, SPACE_CAP, decontaminate=False).values())
    assert prefixed(counts, "status_") == {s: expected.get(s, 0) for s in FINAL_STATUSES}
    assert sum(prefixed(counts, "status_").values()) == counts["rows"] == len(raw.rows)
    assert counts["uids"] == len({r["uid"] for r in raw.rows.values()})
    assert stats["details"]["dedup"] == {"candidates": 15, "repeated_uids": 1, "exact_duplicates": 1,
                                         "near_duplicates": 2, "decontaminated": 0, "eval_images_hashed": 0,
                                         "eval_images_unreadable": 0}
    assert counts["reason_raw_image_unreadable"] == 1          # the success whose image left the tar
    assert counts["raw_status_failed_to_decode"] == 2         # incl. img2dataset's failed_to_resize
    assert prefixed(counts, "hash_source_") == {"raw": 11, "stored_bytes": 4}  # img2dataset shard: computed here


def test_duplicates_name_their_survivor_across_raw_shards(raw, out):
    final = accounting(out)
    coffee, thumb = final[("00000", 1)], final[("00001", 0)]
    assert thumb["status"] == "duplicate" and thumb["duplicate_of"] == coffee["uid"]
    assert "pHash" in thumb["error_message"]
    repeated = final[("00001", 1)]
    assert repeated["duplicate_of"] == repeated["uid"] and "00000:2" in repeated["error_message"]
    exact = [final[("00000", 0)], final[("00000", 3)]]
    dup = next(r for r in exact if r["status"] == "duplicate")
    assert dup["duplicate_of"] == min(r["uid"] for r in exact) and "sha256" in dup["error_message"]
    assert final[("00002", 3)]["duplicate_of"] == dup["duplicate_of"]  # the half-size astronaut
    over = [r for r in final.values() if r["status"] == "over_cap"]
    assert over and all("space" in r["error_message"] for r in over)


def test_webdataset_reads_the_shards_and_every_json_matches_its_parquet_row(raw, out):
    tars = sorted(glob.glob(str(out / "0*.tar")))
    rows = {r["key"]: r for path in sorted(glob.glob(str(out / "0*.parquet"))) for r in pq.read_table(path).to_pylist()}
    seen = []
    for sample in wds.WebDataset(tars, shardshuffle=False):
        key = sample["__key__"]
        record = json.loads(sample["json"])
        row = rows[key]
        assert "." not in key and record["key"] == key
        assert list(record) == sorted(SAMPLE_JSON_FIELDS)
        assert record == {f: row[f] for f in SAMPLE_JSON_FIELDS}
        assert record["status"] == "success" and sample["__url__"].endswith(f"{row['shard']}.tar")
        assert sample["txt"].decode() == row["caption"]
        ext = "webp" if "webp" in sample else "jpg"
        image = sample[ext]
        # The bytes are the raw tar's member, untouched.
        source = raw.rows[next(k for k, r in raw.rows.items() if r["key"] == row["raw_key"])]
        assert source["_ext"] == ext
        with tarfile.open(raw.root / f"{row['raw_shard']}.tar") as raw_tar:
            assert raw_tar.extractfile(f"{row['raw_key']}.{ext}").read() == image
        assert Image.open(io.BytesIO(image)).size == (row["width"], row["height"])
        seen.append(key)
    assert seen == sorted(rows) and len(seen) == sum(
        s == "success" for s in expected_statuses(raw, SPACE_CAP, decontaminate=False).values())


def test_shards_hold_equal_counts_and_sizes_json_says_so(out):
    sizes = json.loads((out / "sizes.json").read_text())
    assert sizes == {"00000": 4, "00001": 4, "00002": 3}
    for name, count in sizes.items():
        with tarfile.open(out / f"{name}.tar") as tar:
            members = tar.getmembers()
        assert len(members) == 3 * count
        assert [m.name for m in members] == sorted(m.name for m in members)
        headers = {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in members}
        assert headers == {(FIXED_MTIME, 0, 0, "", "", 0o644)}
        assert pq.read_table(out / f"{name}.parquet").num_rows == count
    assert not list(out.glob("*.tmp-*"))


def test_global_order_follows_the_raw_input(out):
    rows = [r for path in sorted(glob.glob(str(out / "0*.parquet"))) for r in pq.read_table(path).to_pylist()]
    assert [r["key"] for r in rows] == [f"{i:010d}" for i in range(len(rows))]
    assert [(r["raw_shard"], r["raw_key"]) for r in rows] == sorted((r["raw_shard"], r["raw_key"]) for r in rows)


def test_dataset_card_and_plots(raw, out):
    card = (out / "DATASET.md").read_text()
    stats = json.loads((out / "stats.json").read_text())
    for status, n in prefixed(stats["counts"], "status_").items():
        assert f"| {status} | {n} |" in card
    assert "pHash Hamming distance <= 4" in card and f"| per-query cap | {SPACE_CAP}" in card
    final = expected_statuses(raw, SPACE_CAP, decontaminate=False)
    space_final = sum(final[k] == "success" and "space" in (r["queries"] or []) for k, r in raw.rows.items())
    assert space_final >= SPACE_CAP and f"| space | 4 | {space_final} |" in card  # entering vs final
    for png in ("image_sizes.png", "query_counts.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    counts = pq.read_table(out / "accounting" / "query_counts.parquet").to_pylist()
    assert {"query": "space", "input": 4, "final": space_final} in counts


def tree_bytes(root: Path) -> dict[str, object]:
    files: dict[str, object] = {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
                                if p.is_file()}
    files["stats.json"] = stats_without_timings(root / "stats.json")  # the same but for how long it took
    return files


@pytest.mark.slow
def test_multi_processing_and_reruns_give_identical_bytes(raw, out, tmp_path):
    multi = tmp_path / "multi"
    assert finalize(raw.root, multi, beam=BEAM_MULTI_PROCESS) == 0
    assert tree_bytes(multi) == tree_bytes(out)
    # A rerun over an earlier, differently sharded output: same bytes, the extra shards gone.
    rerun = tmp_path / "rerun"
    assert finalize(raw.root, rerun, per_shard=2) == 0
    assert len(list(rerun.glob("0*.tar"))) == 6
    assert finalize(raw.root, rerun) == 0
    assert tree_bytes(rerun) == tree_bytes(out)


def test_decontamination_filters_near_copies_of_evaluation_images(raw, tmp_path):
    out = tmp_path / "clean"
    assert finalize(raw.root, out, "--decontaminate", str(raw.eval_dir)) == 0
    final = accounting(out)
    assert {k: r["status"] for k, r in final.items()} == expected_statuses(raw, SPACE_CAP, decontaminate=True)
    rocket = final[("00000", 8)]
    assert rocket["status"] == "filtered" and "launch/rocket.png" in rocket["error_message"]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["details"]["dedup"]["decontaminated"] == 1 and stats["parameters"]["eval_images"] == 2


def copy_raw(raw, dest: Path) -> Path:
    shutil.copytree(raw.root, dest)
    return dest


def test_bad_input_fails_with_a_message_naming_the_file(raw, tmp_path, capsys):
    assert finalize(tmp_path / "nothing-here", tmp_path / "o1") == 2
    assert "matches no file" in capsys.readouterr().err

    no_uid = copy_raw(raw, tmp_path / "no_uid")
    table = pq.read_table(no_uid / "00002.parquet").drop_columns(["uid"])
    pq.write_table(table, no_uid / "00002.parquet")
    assert finalize(no_uid, tmp_path / "o2") == 2
    err = capsys.readouterr().err
    assert "00002.parquet" in err and "missing column(s) uid" in err and "save_additional_columns" in err

    bad_status = copy_raw(raw, tmp_path / "bad_status")
    table = pq.read_table(bad_status / "00001.parquet")
    statuses = table.column("status").to_pylist()
    statuses[3] = "exploded"
    table = table.set_column(table.schema.get_field_index("status"), "status", pa.array(statuses))
    pq.write_table(table, bad_status / "00001.parquet")
    assert finalize(bad_status, tmp_path / "o3") == 1
    err = capsys.readouterr().err
    assert "00001.parquet: row 3: unknown status 'exploded'" in err
    assert not (tmp_path / "o3" / "stats.json").exists()


def test_a_missing_raw_tar_turns_its_successes_into_failed_to_decode(raw, tmp_path):
    broken = copy_raw(raw, tmp_path / "broken")
    (broken / "00001.tar").unlink()
    out = tmp_path / "out"
    assert finalize(broken, out) == 0
    final = accounting(out)
    # Every success of the shard except the repeated pair (a duplicate of a success elsewhere).
    lost = [final[k] for k, r in raw.rows.items() if k[0] == "00001" and r["status"] == "success" and k != ("00001", 1)]
    assert len(lost) == sum(s.status == "success" for s in SHARDS["00001"]) - 1
    assert lost and all(r["status"] == "failed_to_decode" and "does not exist" in r["error_message"] for r in lost)
    assert sum(prefixed(json.loads((out / "stats.json").read_text())["counts"], "status_").values()) == len(raw.rows)


def test_reads_what_the_download_stage_writes(tmp_path):
    """Stage 3's own shard writer (wit_builder.download.raw_shards) in, final shards out: the contract holds."""
    from wit_builder.core.dedup import image_phash

    samples = []
    for i, name in enumerate(["astronaut", "coffee", "chelsea", "coffee"]):  # the second coffee: same bytes
        data = encode(stored(photo(name)), "JPEG", quality=90)
        row = {"key": raw_shards.sample_key(0, i, 10), "uid": f"{i:032x}", "url": f"https://example.org/{i}.jpg",
               "caption": name, "queries": [name], "status": "success", "error_message": None,
               "http_status": 200, "width": 256, "height": 256, "original_width": 512, "original_height": 512,
               "sha256": hashlib.sha256(data).hexdigest(), "phash": image_phash(data), "bytes": len(data)}
        samples.append(raw_shards.RawSample(row, data, "jpg"))
    samples.append(raw_shards.RawSample({"key": raw_shards.sample_key(0, 4, 10), "uid": "f" * 32,
                                         "url": "https://example.org/4.jpg", "caption": "gone", "queries": ["x"],
                                         "status": "failed_to_download", "error_message": "HTTP 404"}))
    raw_dir = tmp_path / "raw"
    raw_dir.mkdir()
    tar_name, parquet_name, _ = raw_shards.shard_files(0)
    with open(raw_dir / tar_name, "wb") as f:
        raw_shards.write_tar(f, samples)
    pq.write_table(raw_shards.rows_table(samples), raw_dir / parquet_name)
    out = tmp_path / "out"
    assert finalize(raw_dir, out) == 0
    statuses = [r["status"] for r in accounting(out).values()]
    assert statuses == ["success", "success", "success", "duplicate", "failed_to_download"]
    keys = [s["__key__"] for s in wds.WebDataset(str(out / "00000.tar"), shardshuffle=False)]
    assert keys == ["0000000000", "0000000001", "0000000002"]


def test_bad_settings_are_refused_before_any_work(raw, tmp_path, capsys):
    assert finalize(raw.root, tmp_path / "o", per_shard=0) == 2
    assert "--samples-per-shard must be >= 1" in capsys.readouterr().err
    empty = tmp_path / "empty_eval"
    empty.mkdir()
    assert finalize(raw.root, tmp_path / "o", "--decontaminate", str(empty)) == 2
    assert "no image files" in capsys.readouterr().err
    assert finalize(raw.root, tmp_path / "o", "--phash-distance", "64") == 2
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_reads_real_img2dataset_output(tmp_path, static_server):
    """img2dataset itself downloads from a loopback server; finalize reads its output as it is."""
    download = pytest.importorskip("img2dataset").download  # the [img2dataset] extra

    www = tmp_path / "www"
    www.mkdir()
    for name in ("astronaut", "coffee", "chelsea"):
        photo(name).save(www / f"{name}.jpg", quality=90)
    (www / "copy.jpg").write_bytes((www / "astronaut.jpg").read_bytes())
    (www / "broken.jpg").write_bytes(b"<html>not an image</html>")
    names = ["astronaut", "coffee", "chelsea", "copy", "broken", "missing"]
    base = static_server(www)
    pq.write_table(pa.table({"url": [f"{base}/{n}.jpg" for n in names], "caption": names,
                             "uid": [f"{i:032x}" for i in range(len(names))], "queries": [[n] for n in names]}),
                   tmp_path / "pairs.parquet")
    download(url_list=str(tmp_path / "pairs.parquet"), input_format="parquet", url_col="url",
             caption_col="caption", save_additional_columns=["uid", "queries"], output_format="webdataset",
             output_folder=str(tmp_path / "raw"), processes_count=1, thread_count=2, image_size=128,
             compute_hash="sha256", distributor="multiprocessing", enable_wandb=False, timeout=5)
    out = tmp_path / "out"
    assert finalize(tmp_path / "raw", out) == 0
    status = {r["uid"]: (r["status"], r["duplicate_of"]) for r in accounting(out).values()}
    assert status == {
        f"{0:032x}": ("success", None), f"{1:032x}": ("success", None), f"{2:032x}": ("success", None),
        f"{3:032x}": ("duplicate", f"{0:032x}"),                            # same bytes under another URL
        f"{4:032x}": ("failed_to_decode", None),                           # img2dataset's failed_to_resize
        f"{5:032x}": ("failed_to_download", None),
    }
    stats = json.loads((out / "stats.json").read_text())
    # img2dataset's sha256 (of the original bytes) is kept
    assert prefixed(stats["counts"], "hash_source_") == {"raw": 4}


def test_stored_images_that_do_not_decode_never_reach_the_final_shards(tmp_path, capsys):
    """Raw rows whose metadata looks complete (hashes, sizes) but whose stored bytes are cut or not an image
    become failed_to_decode; finalize decodes every stored image, not only those missing a hash."""
    from wit_builder.core.dedup import image_phash

    good = {name: encode(stored(photo(name)), "JPEG", quality=90) for name in ("astronaut", "coffee", "chelsea")}
    stored_bytes = [good["astronaut"], good["coffee"][: len(good["coffee"]) // 2],
                    b"<html><body>soft 404</body></html>", good["chelsea"]]
    samples = []
    for i, data in enumerate(stored_bytes):
        meta = good[("astronaut", "coffee", "coffee", "chelsea")[i]]  # what a healthy row would carry
        row = {"key": raw_shards.sample_key(0, i, 10), "uid": f"{i:032x}", "url": f"https://example.org/{i}.jpg",
               "caption": str(i), "queries": ["q"], "status": "success", "error_message": None,
               "http_status": 200, "width": 256, "height": 256, "original_width": 512, "original_height": 512,
               "sha256": hashlib.sha256(meta).hexdigest() if i != 2 else "a" * 64, "phash": image_phash(meta),
               "bytes": len(meta)}
        samples.append(raw_shards.RawSample(row, data, "jpg"))
    raw_dir = tmp_path / "raw"
    raw_dir.mkdir()
    tar_name, parquet_name, _ = raw_shards.shard_files(0)
    with open(raw_dir / tar_name, "wb") as f:
        raw_shards.write_tar(f, samples)
    pq.write_table(raw_shards.rows_table(samples), raw_dir / parquet_name)
    out = tmp_path / "out"
    assert finalize(raw_dir, out) == 0
    final = list(accounting(out).values())
    assert [r["status"] for r in final] == ["success", "failed_to_decode", "failed_to_decode", "success"]
    assert "does not decode" in final[1]["error_message"] and "truncated" in final[1]["error_message"]
    assert "does not decode" in final[2]["error_message"] and "00000.tar" in final[2]["error_message"]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["counts"]["reason_raw_image_unreadable"] == 2 and stats["counts"]["status_success"] == 2
    err = capsys.readouterr().err  # exit 0, but the damage is said on the terminal, not only counted
    assert "warning: 2 stored image(s) could not be read back from their raw tars" in err and "Traceback" not in err
    shipped = [s for s in wds.WebDataset(str(out / "00000.tar"), shardshuffle=False)]
    assert [json.loads(s["json"])["uid"] for s in shipped] == [f"{0:032x}", f"{3:032x}"]
    for sample in shipped:
        Image.open(io.BytesIO(sample["jpg"])).load()


COMPLETION = ("stats.json", "sizes.json", "DATASET.md")


def test_a_failed_rerun_never_looks_complete_and_orphans_are_removed(raw, out, tmp_path, monkeypatch):
    from wit_builder.finalize import pipeline as stage

    rerun = tmp_path / "rerun"
    shutil.copytree(out, rerun)
    orphans = [rerun / "00000.tar.tmp-0123abcd", rerun / "accounting" / "rows" / "00001.parquet.tmp-dead"]
    for orphan in orphans:
        orphan.write_bytes(b"half-written")

    def crash(self, element):
        raise RuntimeError("worker lost")

    monkeypatch.setattr(stage._WriteFinalShard, "process", crash)
    # An unknown error is re-raised by the CLI with its traceback (the command contract); either way it fails.
    with pytest.raises(RuntimeError, match="worker lost"):
        finalize(raw.root, rerun)
    assert not [name for name in COMPLETION if (rerun / name).exists()]
    assert not [o for o in orphans if o.exists()]
    monkeypatch.undo()
    assert finalize(raw.root, rerun) == 0
    assert tree_bytes(rerun) == tree_bytes(out)


def kill_finalize_when(raw, out: Path, ready) -> None:
    """Start a real `wit finalize` of ``raw`` into ``out`` in a child process, SIGKILL it as soon as ``ready()``
    holds (checked every few ms, at most 120 s), and check it was killed, not finished."""
    import os
    import signal
    import subprocess
    import sys
    import time

    argv = ["finalize", "--raw", str(raw.root), "--out", str(out), "--samples-per-shard", str(PER_SHARD),
            "--per-query-cap", str(SPACE_CAP), *BEAM_IN_PROCESS]
    code = "import sys; from wit_builder.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen([sys.executable, "-c", code, *argv], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"


@pytest.mark.slow
def test_a_killed_rerun_never_looks_complete_then_resumes_to_the_same_bytes(raw, out, tmp_path):
    """SIGKILL a real `wit finalize` rerun as soon as it started: the folder no longer looks complete (the old
    completion files went first), and the next rerun gives the same bytes as an uninterrupted run."""
    rerun = tmp_path / "rerun"
    shutil.copytree(out, rerun)
    kill_finalize_when(raw, rerun, lambda: not (rerun / "stats.json").exists())
    assert not [name for name in COMPLETION if (rerun / name).exists()]
    assert finalize(raw.root, rerun) == 0
    assert tree_bytes(rerun) == tree_bytes(out)


def test_out_in_the_raw_folder_is_refused_before_anything_is_deleted(raw, tmp_path, capsys):
    """--out naming the raw folder itself would delete the download's stats.json and, as "stale final shards",
    the raw shards (same NNNNN.tar/.parquet names): refused with exit 2, the raw folder untouched."""
    import shutil

    copy = tmp_path / "raw"
    shutil.copytree(raw.root, copy)
    (copy / "stats.json").write_text("{}")
    before = {p.name: p.read_bytes() for p in copy.iterdir()}
    for raw_arg in (copy, f"{copy}/*.parquet", copy / "00000.parquet"):
        for out in (copy, f"{copy}/"):
            assert finalize(raw_arg, out) == 2, (raw_arg, out)
            assert "--out" in capsys.readouterr().err
            assert {p.name: p.read_bytes() for p in copy.iterdir()} == before


def test_rebalance_seed_must_match_the_seed_stage_2_balanced_with(raw, tmp_path, capsys):
    """The seed check between stages 2 and 4: raw folder -> plan.json -> pairs folder -> stage 2's stats.json."""
    pairs_dir = tmp_path / "pairs"
    pairs_dir.mkdir()
    pq.write_table(pa.table({"uid": ["0" * 32], "url": ["https://x.example/a.jpg"], "caption": ["a dog"],
                             "queries": [["dog"]], "match_rule": ["normalized"]}),
                   pairs_dir / "pairs-00000-of-00001.parquet")
    stage2 = {"stage": "build-pairs", "parameters": {"balance": "hard", "per_query_cap": 100, "seed": 7}}
    (pairs_dir / "stats.json").write_text(json.dumps(stage2))
    raw_dir = tmp_path / "raw"
    shutil.copytree(raw.root, raw_dir)
    (raw_dir / "plan.json").write_text(json.dumps({"inputs": [str(pairs_dir / "pairs-00000-of-00001.parquet")]}))
    assert finalize(raw_dir, tmp_path / "o1", "--seed", "0") == 2
    err = capsys.readouterr().err
    assert "--seed 0 differs from the seed 7" in err and str(pairs_dir / "stats.json") in err and "--seed 7" in err
    assert not (tmp_path / "o1" / "stats.json").exists()
    assert finalize(raw_dir, tmp_path / "o2", "--seed", "7") == 0
    assert json.loads((tmp_path / "o2" / "stats.json").read_text())["parameters"]["seed"] == 7
    assert finalize(raw_dir, tmp_path / "o3") == 0  # without --seed: stage 2's, traced
    assert json.loads((tmp_path / "o3" / "stats.json").read_text())["parameters"]["seed"] == 7


@pytest.mark.parametrize(("broken", "content"), [
    ("plan.json", b"{\"inputs\": ["), ("plan.json", b"[]"), ("stats.json", b"\xff\xfe"), ("stats.json", b"[1, 2]"),
])
def test_a_broken_plan_or_pairs_stats_names_itself(raw, tmp_path, capsys, broken, content):
    """A truncated or foreign plan.json (raw folder) or stats.json (pairs folder) on the seed trace is bad input:
    exit 2, one line naming the file, no traceback, nothing written."""
    pairs_dir, raw_dir = tmp_path / "pairs", tmp_path / "raw"
    pairs_dir.mkdir()
    (pairs_dir / "stats.json").write_text(json.dumps({"stage": "build-pairs", "parameters": {"seed": 0}}))
    shutil.copytree(raw.root, raw_dir)
    (raw_dir / "plan.json").write_text(json.dumps({"inputs": [str(pairs_dir / "pairs-00000-of-00001.parquet")]}))
    bad = (raw_dir if broken == "plan.json" else pairs_dir) / broken
    bad.write_bytes(content)
    assert finalize(raw_dir, tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


# ---- the Stage's finish on given counts (no pipeline) ----

def finish_stage(raw, out: Path, counts: dict[str, int], sizes: dict[str, int],
                 monitoring: dict[str, int] | None = None) -> command.FinalizeStage:
    """A FinalizeStage prepared on the raw fixture, with the tables the pipeline would have left in ``out``."""
    stage = command.FinalizeStage(FinalizeOptions(raw=(str(raw.root),), out=str(out), samples_per_shard=2,
                                                  per_query_cap=SPACE_CAP))
    stage.inputs = stage.resolve()
    assert stage.announce() == [f"finalize: 3 raw shards, {len(raw.rows)} rows -> {out}"]
    (out / "accounting").mkdir(parents=True)
    (out / outputs.WRITTEN_SIZES).write_text(json.dumps(sizes))
    pq.write_table(pa.Table.from_pylist([{"query": "moon", "input": 3, "final": 2}, {"query": "sun", "input": 1,
                                                                                   "final": 1}], schema=QUERY_COUNTS),
                   out / "accounting" / "query_counts.parquet")
    stage.monitoring = dict(counts) if monitoring is None else monitoring
    return stage


def test_finish_computes_stats_json_from_the_counts_as_data(raw, tmp_path):
    rows = len(raw.rows)
    counts = {"rows": rows, "uids": rows - 1, "queries_over_cap": 1, "raw_status_success": rows - 2,
              "raw_status_blocked": 2, "hash_source_raw": rows - 2, "status_success": 3, "status_duplicate": rows - 5,
              "status_blocked": 2, "status_failed_to_download": 0, "reason_success": 3, "reason_blocked": 2,
              "reason_exact_duplicate": rows - 6, "reason_repeated_uid": 1, "size_width_256-511": 3,
              "size_height_128-255": 3}
    out = tmp_path / "out"
    stage = finish_stage(raw, out, counts, {"00000": 2, "00001": 1})
    outcome = stage.finish(counts, 2.0)
    doc = json.loads((out / "stats.json").read_text())
    validate_stats(doc)
    assert doc["counts"]["rows"] == rows and doc["counts"]["samples"] == 3 and doc["counts"]["shards"] == 2
    assert prefixed(doc["counts"], "status_") == {s: counts.get(f"status_{s}", 0) for s in FINAL_STATUSES}
    assert prefixed(doc["counts"], "reason_") == {"success": 3, "blocked": 2, "exact_duplicate": rows - 6,
                                                  "repeated_uid": 1}
    assert doc["counts"]["dedup_candidates"] == rows - 2 and doc["counts"]["queries_over_cap"] == 1
    assert doc["details"]["image_sizes"] == {"width": {"256-511": 3}, "height": {"128-255": 3}}
    assert doc["parameters"]["seed"] == 0 and doc["parameters"]["eval_images"] == 0
    assert json.loads((out / "sizes.json").read_text()) == {"00000": 2, "00001": 1}
    assert "| moon | 3 | 2 |" in (out / "DATASET.md").read_text()
    assert not (out / outputs.WRITTEN_SIZES).exists()  # a transient hand-over
    assert outcome.exit_code == 0 and outcome.warnings == []
    assert outcome.summary[0] == f"{rows} rows -> 3 samples in 2 shards (blocked 2, duplicate {rows - 5}, success 3)"


def test_finish_warns_of_unreadable_images_and_counters_that_differ(raw, tmp_path):
    rows = len(raw.rows)
    counts = {"rows": rows, "status_success": 1, "status_failed_to_decode": rows - 1, "reason_success": 1,
              "reason_raw_image_unreadable": rows - 1}
    stage = finish_stage(raw, tmp_path / "out", counts, {"00000": 1}, monitoring={**counts, "status_success": 2})
    warnings = stage.finish(counts, 1.0).warnings
    assert warnings[0].startswith("monitoring counters differ") and "'status_success': (1, 2)" in warnings[0]
    assert warnings[1].startswith(f"{rows - 1} stored image(s) could not be read back from their raw tars")


def test_finish_refuses_counts_that_do_not_add_up_before_writing_anything(raw, tmp_path):
    counts = {"rows": len(raw.rows), "status_success": 3}  # the other rows never got a final status
    out = tmp_path / "out"
    stage = finish_stage(raw, out, counts, {"00000": 2, "00001": 1})
    with pytest.raises(AccountingError, match=f"{len(raw.rows)} rows in the raw parquets, {len(raw.rows)} read, 3"):
        stage.finish(counts, 1.0)
    assert not [name for name in COMPLETION if (out / name).exists()]
    assert not list(out.glob("*.png"))  # nor the plots


# ---- the output folder and honest failures (issue 23) ----

def test_a_folder_of_someone_elses_shards_is_refused_and_untouched(raw, tmp_path, capsys):
    """``--out`` holding 20 WebDataset shards, a stats.json and a DATASET.md that wit did not write (no run
    marker): refused before any work, every file byte for byte as it was; ``--overwrite`` takes it over."""
    theirs = tmp_path / "their-shards"
    theirs.mkdir()
    for i in range(20):
        (theirs / f"{i:05d}.tar").write_bytes(f"their shard {i}".encode())
    (theirs / "stats.json").write_text('{"theirs": true}')
    (theirs / "DATASET.md").write_text("# Their dataset\n")
    before = {p.name: p.read_bytes() for p in theirs.iterdir()}
    assert finalize(raw.root, theirs) == 2
    err = capsys.readouterr().err
    assert f"--out {theirs} holds files that wit did not write ('00000.tar', '00001.tar', '00002.tar' and " in err
    assert "--overwrite" in err and err.count("\n") == 1
    assert {p.name: p.read_bytes() for p in theirs.iterdir()} == before
    assert finalize(raw.root, theirs, "--overwrite") == 0
    assert json.loads((theirs / "stats.json").read_text())["stage"] == "finalize"


def test_an_unreadable_evaluation_image_is_skipped_and_counted(raw, tmp_path, capsys):
    """One evaluation image that does not decode (and one that cannot be read) no longer ends the run with a Beam
    traceback: both are skipped and counted, the others still decontaminate."""
    evals = tmp_path / "eval"
    shutil.copytree(raw.eval_dir, evals)
    (evals / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg at all")
    (evals / "empty.png").write_bytes(b"")
    out = tmp_path / "clean"
    assert finalize(raw.root, out, "--decontaminate", str(evals)) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert "--decontaminate: 2 evaluation image(s) could not be read or decoded and were skipped" in captured.err
    final = accounting(out)
    assert {k: r["status"] for k, r in final.items()} == expected_statuses(raw, SPACE_CAP, decontaminate=True)
    stats = json.loads((out / "stats.json").read_text())
    assert (stats["counts"]["eval_images_unreadable"], stats["counts"]["eval_images_hashed"]) == (2, 2)
    assert stats["details"]["dedup"]["decontaminated"] == 1


def test_a_full_disk_is_one_line_naming_the_shard(raw, tmp_path, capsys, full_disk):
    """ENOSPC while a final shard is written is one line naming it (exit 1), not a traceback; no temporary stays
    and the folder does not look complete."""
    full_disk(lambda path: path.endswith(".tar") or ".tar.tmp-" in path)
    out = tmp_path / "full"
    assert finalize(raw.root, out) == 1
    err = capsys.readouterr().err
    assert err.startswith("wit finalize: error: no space left on the device while writing ") and ".tar" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (out / "stats.json").exists() and not list(out.rglob("*.tmp-*"))


# ---- in-process runners: the shuffles spilled to OUT/_tmp_spill (wit_builder.beam.spill) ----

def test_spilled_shuffles_give_the_bytes_of_inline_ones_with_any_buckets(raw, out, tmp_path, monkeypatch):
    """The in-process run spills its shuffles (``out``: one bucket); with a bucket per 3 rows and a file every few
    rows, and inline as on Spark, Flink and Dataflow, the outputs are the same bytes and no spill folder is left."""
    from wit_builder.beam import spill
    from wit_builder.finalize import pipeline as stage

    assert not (out / "_tmp_spill").exists()
    monkeypatch.setattr(stage, "ROWS_PER_BUCKET", 3)
    monkeypatch.setattr(spill, "FLUSH_BYTES", 600)
    seen: list[str] = []
    put = spill.Spill.put
    monkeypatch.setattr(spill.Spill, "put", lambda self, name, data: seen.append(name) or put(self, name, data))
    small = tmp_path / "small-buckets"
    assert finalize(raw.root, small) == 0
    steps = {name.split("/")[0] for name in seen}
    assert steps == {"uid", "sha256", "band", "near", "rebalance", "raw_shard", "final_shard"}
    assert len(seen) > 2 * len(steps)  # several flushes per step
    monkeypatch.setattr(stage, "spill_folder", lambda runner, out: None)  # as on Spark, Flink, Dataflow
    seen.clear()
    inline = tmp_path / "inline"
    assert finalize(raw.root, inline) == 0
    assert not seen
    assert tree_bytes(small) == tree_bytes(out) == tree_bytes(inline)
    assert not (small / "_tmp_spill").exists()


def test_a_killed_runs_spill_files_go_on_the_next_run_and_nothing_else(raw, out, tmp_path):
    """What a killed run spilled is removed by the next run (before its work: its buckets must not mix in);
    files of the user's in the output folder, even named like ours, stay as they are."""
    rerun = tmp_path / "rerun"
    shutil.copytree(out, rerun)
    left = rerun / "_tmp_spill" / "uid" / ("ab" * 16 + ".bin")
    left.parent.mkdir(parents=True)
    left.write_bytes(b"a killed run's bucket")
    mine = {rerun / "notes.txt": b"the user's notes", rerun / "_tmp_spill.txt": b"not our folder",
            rerun / "spill" / "uid.bin": b"someone's data"}
    for path, data in mine.items():
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
    assert finalize(raw.root, rerun) == 0
    assert not (rerun / "_tmp_spill").exists()
    assert {path: path.read_bytes() for path in mine} == mine
    for path in mine:
        path.unlink()
    (rerun / "spill").rmdir()
    assert tree_bytes(rerun) == tree_bytes(out)


@pytest.mark.slow
def test_a_run_killed_while_spilling_resumes_to_the_same_bytes(raw, out, tmp_path):
    """SIGKILL a real `wit finalize` while its spill folder exists: the folder stays behind (nothing could remove
    it), and the next run removes it and gives the bytes of an uninterrupted run."""
    killed = tmp_path / "killed"
    kill_finalize_when(raw, killed, lambda: bool(list((killed / "_tmp_spill").rglob("*.bin"))))
    assert list((killed / "_tmp_spill").rglob("*.bin"))
    assert finalize(raw.root, killed) == 0
    assert not (killed / "_tmp_spill").exists()
    assert tree_bytes(killed) == tree_bytes(out)
