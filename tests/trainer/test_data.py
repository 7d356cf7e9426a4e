"""Streaming shards into batches: the refusal to over-ask, corrupt input skipped and counted, one epoch seeing
every sample once, an exact restart from a saved position, the GPU-decode path, honest epoch accounting."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
import tarfile
from pathlib import Path

import pytest
import torch
import webdataset as wds
from PIL import Image

from tests.trainer.conftest import jpeg_bytes, to_uint8_tensor, write_sized
from trainer.data import Loader, crop_resize_normalize, describe_epoch, make_plan
from trainer.shards import DataError
from trainer.tokenizer import Tokenizer
from trainer.transforms import normalize_uint8

torch.set_num_threads(1)


def _captions(batch: dict, tokenizer: Tokenizer) -> list[str]:
    return [tokenizer.decode(row.tolist()).strip() for row in batch["tokens"]]


def test_asking_for_more_samples_than_exist_is_refused(numbered, caplog):
    shards_dir, _ = numbered
    with pytest.raises(DataError, match="asked for 65 samples per epoch but the 4 shards hold 64"):
        make_plan(str(shards_dir), batch_size=8, image_size=16, workers=1, samples_per_epoch=65)
    with caplog.at_level(logging.WARNING):
        plan = make_plan(str(shards_dir), batch_size=8, image_size=16, workers=1, samples_per_epoch=65,
                         allow_repeat=True)
    assert plan.resampled and "repeating on purpose" in caplog.text
    # Fewer shards than workers: fewer workers (each stream needs a shard of its own) ...
    assert make_plan(str(shards_dir), batch_size=8, image_size=16, workers=5).workers == 4
    assert make_plan(str(shards_dir), batch_size=8, image_size=16, workers=5, resampled=True).workers == 5
    # ... but fewer shards than ranks cannot work without repeating.
    with pytest.raises(DataError, match="4 shards cannot feed 5 ranks"):
        make_plan(str(shards_dir), batch_size=8, image_size=16, workers=1, world_size=5)


def test_one_epoch_sees_every_sample_once(numbered):
    shards_dir, tokenizer = numbered
    plan = make_plan(str(shards_dir), batch_size=8, image_size=16, workers=2, shuffle_buffer=10, seed=3)
    assert plan.steps_per_epoch == 8
    seen: dict[int, list[str]] = {}
    for batch, epoch in Loader(plan, tokenizer):
        assert batch["images"].shape == (8, 3, 16, 16) and batch["tokens"].shape == (8, 8)
        assert batch["images"].dtype == torch.uint8  # normalised on the training device
        seen.setdefault(epoch, []).extend(_captions(batch, tokenizer))
        if epoch == 2:
            break
    for epoch in (0, 1):
        assert sorted(seen[epoch]) == sorted(f"sample {n}" for n in range(64))
    assert seen[0] != seen[1]  # reshuffled per epoch


def _fingerprint(batch: dict) -> str:
    return hashlib.sha1(batch["images"].numpy().tobytes() + batch["tokens"].numpy().tobytes()).hexdigest()


@pytest.mark.parametrize("workers,cut", [(2, 5), (0, 11)])
def test_restart_from_a_saved_position_continues_exactly(numbered, workers, cut):
    shards_dir, tokenizer = numbered
    plan = make_plan(str(shards_dir), batch_size=8, image_size=16, workers=workers, shuffle_buffer=20, seed=7)
    uninterrupted, state = [], None
    loader = Loader(plan, tokenizer)
    for i, (batch, epoch) in enumerate(loader):
        uninterrupted.append((_fingerprint(batch), epoch))
        if i + 1 == cut:
            state = json.loads(json.dumps(loader.state()))  # as stored in a checkpoint
        if i + 1 == 20:  # crosses two epoch boundaries
            break
    resumed = []
    for batch, epoch in Loader(plan, tokenizer, state):
        resumed.append((_fingerprint(batch), epoch))
        if len(resumed) == 20 - cut:
            break
    assert resumed == uninterrupted[cut:]
    assert len(set(f for f, _ in uninterrupted)) == 20  # distinct crops and orders: not a trivial stream


def _truncated_tar(path: Path, samples: list[dict]) -> int:
    """A shard cut in the middle of its last image; returns how many samples precede the cut."""
    with wds.TarWriter(str(path)) as sink:
        for sample in samples:
            sink.write(sample)
    with tarfile.open(path) as tar:
        last_jpg = [m for m in tar.getmembers() if m.name.endswith(".jpg")][-1]
    data = path.read_bytes()
    path.write_bytes(data[: last_jpg.offset_data + last_jpg.size // 2])
    return len(samples) - 1


def test_corrupt_and_incomplete_samples_are_skipped_and_counted(tmp_path, caplog):
    good = [{"__key__": f"g{i:03d}", "jpg": jpeg_bytes(i), "txt": f"good {i}"} for i in range(6)]
    bad = [
        {"__key__": "b000", "jpg": jpeg_bytes(100)[:300], "txt": "truncated jpeg"},
        {"__key__": "b001", "jpg": b"<html>not an image</html>", "txt": "html served as jpeg"},
        {"__key__": "b002", "jpg": jpeg_bytes(101)},  # no caption
        {"__key__": "b003", "txt": "no image"},
        {"__key__": "b004", "jpg": jpeg_bytes(102), "txt": "   "},
        {"__key__": "b005", "jpg": jpeg_bytes(103), "txt": b"\xff\xfe\xfa"},
    ]
    with wds.TarWriter(str(tmp_path / "00000.tar")) as sink:
        for sample in good[:3] + bad + good[3:]:
            sink.write(sample)
    complete = _truncated_tar(tmp_path / "00001.tar", [{"__key__": f"t{i:03d}", "jpg": jpeg_bytes(200 + i),
                                                        "txt": f"cut {i}"} for i in range(5)])
    (tmp_path / "00002.tar").write_bytes(b"this is not a tar file at all" * 20)
    tokenizer = Tokenizer.train(["good", "cut", "sample"] * 10, vocab_size=300, context_length=8)
    plan = make_plan(str(tmp_path), batch_size=1, image_size=16, workers=0, shuffle_buffer=4)
    loader = Loader(plan, tokenizer)
    with caplog.at_level(logging.WARNING):
        captions = [_captions(batch, tokenizer)[0] for batch in loader.epoch_batches()]
    assert sorted(captions) == sorted([f"good {i}" for i in range(6)] + [f"cut {i}" for i in range(complete)])
    assert loader.totals == {"corrupt_image": 2, "incomplete": 2, "bad_caption": 2, "unreadable_shard": 2}
    assert "00000.tar:b001" in caplog.text  # the log names the shard and the sample


def test_an_epoch_without_a_single_batch_fails_instead_of_looping(tmp_path):
    with wds.TarWriter(str(tmp_path / "00000.tar")) as sink:
        for i in range(5):
            sink.write({"__key__": f"k{i}", "jpg": b"broken" if i else jpeg_bytes(i), "txt": "x"})
    tokenizer = Tokenizer.train(["x"] * 10, vocab_size=300, context_length=8)
    plan = make_plan(str(tmp_path), batch_size=2, image_size=16, workers=0)
    with pytest.raises(DataError, match="epoch 0 produced no batch.*'corrupt_image': 4"):
        next(iter(Loader(plan, tokenizer)))


@pytest.mark.skipif(shutil.which("curl") is None, reason="webdataset streams http(s) through curl")
def test_streams_shards_over_http(static_server, numbered):
    shards_dir, tokenizer = numbered
    plan = make_plan(f"{static_server(shards_dir)}/{{00000..00003}}.tar", batch_size=8, image_size=16, workers=2,
                     shuffle_buffer=10)
    assert plan.samples_per_epoch == 64  # sizes.json read over http too
    seen = [c for batch in Loader(plan, tokenizer).epoch_batches() for c in _captions(batch, tokenizer)]
    assert sorted(seen) == sorted(f"sample {n}" for n in range(64))


def test_gpu_decode_path_without_the_gpu(numbered):
    """The GPU path's worker half (JPEG headers, seeded crop boxes) and its crop/resize/normalise half, with PIL
    standing in for nvJPEG: the batches match the CPU path's up to the resampling filter."""
    shards_dir, tokenizer = numbered
    kwargs = {"batch_size": 8, "image_size": 16, "workers": 1, "shuffle_buffer": 10, "seed": 2}
    cpu_batch = next(iter(Loader(make_plan(str(shards_dir), **kwargs), tokenizer)))[0]
    gpu_batch = next(iter(Loader(make_plan(str(shards_dir), gpu_decode=True, **kwargs), tokenizer)))[0]
    assert set(gpu_batch) == {"jpeg", "boxes", "tokens"} and gpu_batch["boxes"].shape == (8, 4)
    assert torch.equal(gpu_batch["tokens"], cpu_batch["tokens"])  # same samples, same order
    decoded = [to_uint8_tensor(Image.open(io.BytesIO(bytes(j.numpy())))) for j in gpu_batch["jpeg"]]
    decoded[3] = None  # an image the decoder rejects is dropped with its caption
    images, keep = crop_resize_normalize(decoded, gpu_batch["boxes"], 16)
    assert keep == [0, 1, 2, 4, 5, 6, 7] and images.shape == (7, 3, 16, 16)
    reference = normalize_uint8(cpu_batch["images"][keep])
    assert (images - reference).abs().mean() < 0.1  # bicubic in torch vs PIL; values span about 4
    with pytest.raises(DataError, match="rerun without --gpu-decode"):
        crop_resize_normalize([None] * 8, gpu_batch["boxes"], 16)


def _one_epoch(plan, tokenizer) -> tuple[list[str], dict]:
    loader = Loader(plan, tokenizer)
    seen = [c for batch in loader.epoch_batches() for c in _captions(batch, tokenizer)]
    return seen, loader.reports[-1]


@pytest.mark.parametrize("workers", [2, 3])
def test_an_epoch_over_unequal_shards_accounts_for_every_sample(tmp_path, numbered, workers):
    _, tokenizer = numbered
    write_sized(tmp_path, [20, 20, 20])  # 60 samples; streams of 40 + 20 or 3 x 20: short last batches
    plan = make_plan(str(tmp_path), batch_size=8, image_size=16, workers=workers, shuffle_buffer=8, seed=1)
    seen, report = _one_epoch(plan, tokenizer)
    assert len(seen) == len(set(seen)) == report["samples_trained"] < 60
    left = report["left_out"]
    assert report["samples_planned"] == 60 and report["complete"]
    assert report["samples_trained"] + sum(left.values()) == 60  # every sample: trained or counted with a reason
    assert set(left) == {"partial_batch_dropped"}
    assert describe_epoch(report).startswith(f"epoch 0: trained {len(seen)} of 60 samples in {len(seen) // 8} "
                                             f"steps; left out {60 - len(seen)} (partial_batch_dropped")
    assert "none" not in describe_epoch(report)


def test_an_epoch_cut_by_samples_per_epoch_counts_the_rest_as_not_reached(tmp_path, numbered):
    _, tokenizer = numbered
    write_sized(tmp_path, [16, 16, 16, 8])
    plan = make_plan(str(tmp_path), batch_size=8, image_size=16, workers=2, shuffle_buffer=8,
                     samples_per_epoch=24)
    seen, report = _one_epoch(plan, tokenizer)
    assert len(seen) == 24 and report["steps"] == 3 and report["samples_planned"] == 56
    assert report["samples_trained"] + sum(report["left_out"].values()) == 56
    assert report["left_out"]["not_reached"] >= 56 - 24 - 16  # the shuffle buffers held some already read


def test_a_shard_shorter_than_sizes_json_says_counts_missing_samples(tmp_path, numbered):
    _, tokenizer = numbered
    write_sized(tmp_path, [16, 12])
    (tmp_path / "sizes.json").write_text(json.dumps({"00000": 16, "00001": 16}))  # 4 promised, never written
    plan = make_plan(str(tmp_path), batch_size=8, image_size=16, workers=0, shuffle_buffer=4)
    seen, report = _one_epoch(plan, tokenizer)
    assert len(seen) == 24 and report["left_out"] == {"missing": 4, "partial_batch_dropped": 4}
    assert report["samples_trained"] + 8 == report["samples_planned"] == 32


def test_without_sizes_json_the_unread_rest_is_never_reported_as_none(tmp_path, numbered):
    _, tokenizer = numbered
    write_sized(tmp_path, [16, 16, 16])
    (tmp_path / "sizes.json").unlink()
    plan = make_plan(str(tmp_path), batch_size=8, image_size=16, workers=2, shuffle_buffer=4)
    loader = Loader(plan, tokenizer)
    for _ in zip(range(2), loader.epoch_batches(), strict=False):
        pass
    report = loader.epoch_report()  # the run ends here: mid-epoch
    assert not report["complete"] and report["samples_planned"] is None and report["uncounted_streams"] == 2
    assert "(in progress)" in describe_epoch(report) and "not counted: no sizes.json" in describe_epoch(report)


def test_a_malformed_sizes_json_fails_wit_train_with_exit_2(tmp_path, capsys):
    from wit_builder.cli import main as wit

    write_sized(tmp_path / "shards", [16])
    (tmp_path / "shards" / "sizes.json").write_text('{"00000": "sixteen"}')
    assert wit(["train", "--shards", str(tmp_path / "shards"), "--out", str(tmp_path / "out"), "--steps", "1",
                "--vocab-size", "300", "--workers", "0", "--batch-size", "8"]) == 2
    err = capsys.readouterr().err
    assert "sizes.json: the sample count of '00000'" in err and "Traceback" not in err




_TAKE_A_FEW = """
import sys
sys.path.insert(0, {root!r})
from trainer.data import Loader, make_plan
from trainer.tokenizer import Tokenizer
tokenizer = Tokenizer.train(["sample"] * 10, vocab_size=300, context_length=8)
plan = make_plan({shards!r}, batch_size=4, image_size=16, workers={workers}, resampled=True,
                 samples_per_epoch=64)
{body}
print("returned", flush=True)
"""


@pytest.mark.parametrize("body", [
    "batches = iter(Loader(plan, tokenizer))\nfor _ in range(3): next(batches)",  # kept until exit
    "batches = Loader(plan, tokenizer).epoch_batches()\nnext(batches); next(batches)",
    "with Loader(plan, tokenizer) as loader:\n    next(iter(loader))\nimport time; time.sleep(0.1)",
], ids=["iterator-kept-until-exit", "epoch-iterator-kept", "context-manager"])
def test_a_script_that_takes_a_few_batches_and_returns_exits(numbered, body):
    """The workers ignore SIGTERM (a preemption reaches the training process first): without the loader's own
    exit handler, Python's multiprocessing exit handler waited on them forever."""
    import subprocess
    import sys

    shards, _ = numbered
    root = str(Path(__file__).resolve().parents[2])
    script = _TAKE_A_FEW.format(root=root, shards=str(shards), workers=1, body=body)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "returned" in done.stdout, done.stderr[-2000:]


def test_workers_stop_when_the_iterator_is_dropped_or_closed(numbered):
    import multiprocessing

    shards, tokenizer = numbered
    plan = make_plan(str(shards), batch_size=4, image_size=16, workers=2, resampled=True, samples_per_epoch=64)
    loader = Loader(plan, tokenizer)
    batches = iter(loader)
    next(batches)
    assert len(multiprocessing.active_children()) == 2
    del batches  # dropped mid-epoch
    assert multiprocessing.active_children() == []
    batches = iter(loader)
    next(batches)
    batches.close()
    assert multiprocessing.active_children() == []
    next(iter(loader))
    loader.close()
    assert multiprocessing.active_children() == []
