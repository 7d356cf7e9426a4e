"""``wit eval`` on a real checkpoint and real photos: CLIP_benchmark-style JSON for zero-shot classification,
linear probes and retrieval, and one line with exit 2 for bad input."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from tests.trainer.conftest import write_class_folders, write_shards
from wit_builder.cli import main as wit


def test_wit_eval_zeroshot_writes_clip_benchmark_json(tmp_path, tiny_checkpoint, capsys):
    root = tmp_path / "heldout"
    classes = write_class_folders(root, per_class=3, image_px=48, classes=["cat", "coffee", "rocket", "galaxy"])
    (root / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff truncated")
    (root / "coffee" / "Thumbs.db").write_bytes(b"\x00")
    out = tmp_path / "eval" / "zeroshot.json"
    rc = wit(["eval", "--checkpoint", str(tiny_checkpoint), "--zeroshot", str(root), "--workers", "0",
              "--batch-size", "5", "--out", str(out)])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert doc["task"] == "zeroshot_classification" and doc["dataset"] == "heldout" and doc["model"] == "tiny"
    assert set(doc["metrics"]) == {"acc1", "acc5", "mean_per_class_recall"}
    for key in ("acc1", "acc5", "mean_per_class_recall"):
        assert doc[key] == doc["metrics"][key] and 0.0 <= doc[key] <= 1.0
    assert round(doc["acc1"] * 12, 6).is_integer()  # a share of the 12 readable images
    assert doc["acc5"] == 1.0  # 4 classes: the true one is always among the top 5
    assert doc["inputs"]["images"] == 12 and doc["inputs"]["skipped_unreadable"] == 1
    assert doc["inputs"]["ignored_non_image_files"] == 1 and doc["inputs"]["classes"] == len(classes)
    assert "broken.jpg" in doc["inputs"]["skipped_examples"][0]
    assert doc["results"] == [{k: doc[k] for k in doc["results"][0]}]
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert summary.startswith("wit eval: zeroshot acc1=") and str(out) in summary


def test_wit_eval_reports_bad_input(tmp_path, tiny_checkpoint, capsys):
    assert wit(["eval", "--checkpoint", str(tiny_checkpoint)]) == 2
    assert "nothing to evaluate" in capsys.readouterr().err
    assert wit(["eval", "--checkpoint", str(tiny_checkpoint), "--zeroshot", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert wit(["eval", "--checkpoint", str(tmp_path / "none.pt"), "--zeroshot", str(tmp_path)]) == 2
    assert "none.pt" in capsys.readouterr().err
    root = tmp_path / "mostly_broken"
    (root / "cat").mkdir(parents=True)
    for i in range(3):
        (root / "cat" / f"{i}.jpg").write_bytes(b"garbage")
    Image.new("RGB", (8, 8)).save(root / "cat" / "ok.png")
    assert wit(["eval", "--checkpoint", str(tiny_checkpoint), "--zeroshot", str(root), "--workers", "0"]) == 2
    assert "3 of 4 images could not be read" in capsys.readouterr().err


def test_wit_eval_linear_probe_on_real_photos(tmp_path, tiny_checkpoint, capsys):
    classes = ["cat", "coffee", "rocket"]
    write_class_folders(tmp_path / "train", per_class=4, image_px=40, seed=1, classes=classes)
    write_class_folders(tmp_path / "test", per_class=2, image_px=40, seed=2, classes=classes)
    (tmp_path / "train" / "cat" / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "lp.json"
    assert wit(["eval", "--checkpoint", str(tiny_checkpoint), "--linear-probe-train", str(tmp_path / "train"),
                "--linear-probe-test", str(tmp_path / "test"), "--fewshot-k", "1", "2", "--workers", "0",
                "--linear-probe-max-iter", "100", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert [r["task"] for r in doc["results"]] == ["linear_probe"] * 3
    assert [r["metrics"]["fewshot_k"] for r in doc["results"]] == [None, 1, 2]
    assert [r["metrics"]["n_train"] for r in doc["results"]] == [12, 3, 6]
    for record in doc["results"]:
        for key in ("lp_acc1", "lp_acc5", "lp_mean_per_class_recall"):
            assert 0 <= record["metrics"][key] <= 1
        assert record["inputs"]["train"]["skipped_unreadable"] == 1 and record["inputs"]["test"]["images"] == 6
    assert doc["lp_acc1"] == doc["results"][0]["metrics"]["lp_acc1"]
    assert "linear probe (2-shot)" in capsys.readouterr().out.splitlines()[-1]


def test_wit_eval_linear_probe_rejects_unknown_test_classes(tmp_path, tiny_checkpoint, capsys):
    write_class_folders(tmp_path / "train", per_class=2, image_px=32, classes=["cat", "coffee"])
    write_class_folders(tmp_path / "test", per_class=1, image_px=32, classes=["cat", "rocket"])
    assert wit(["eval", "--checkpoint", str(tiny_checkpoint), "--linear-probe-train", str(tmp_path / "train"),
                "--linear-probe-test", str(tmp_path / "test"), "--workers", "0"]) == 2
    assert "['rocket'] do not occur in the training folder" in capsys.readouterr().err
    assert wit(["eval", "--checkpoint", str(tiny_checkpoint), "--linear-probe-train", str(tmp_path / "train"),
                "--linear-probe-test", str(tmp_path / "train"), "--fewshot-k", "3", "--workers", "0"]) == 2
    assert "fewer than --fewshot-k 3" in capsys.readouterr().err


def test_wit_eval_retrieval_on_real_photo_shards(tmp_path, tiny_checkpoint):
    write_shards(tmp_path / "heldout", per_class=4, samples_per_shard=10, image_px=48,
                 classes=["cat", "rocket", "coffee"])
    out = tmp_path / "retrieval.json"
    assert wit(["eval", "--checkpoint", str(tiny_checkpoint), "--retrieval", str(tmp_path / "heldout"),
                "--batch-size", "5", "--retrieval-chunk", "4", "--workers", "0", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["task"] == "zeroshot_retrieval" and doc["dataset"] == "heldout"
    assert doc["inputs"]["shards"] == 2 and doc["inputs"]["images"] == 12 and doc["inputs"]["captions"] == 12
    for direction in ("image", "text"):
        recalls = [doc["metrics"][f"{direction}_retrieval_recall@{k}"] for k in (1, 5, 10)]
        assert all(0 <= r <= 1 for r in recalls) and recalls == sorted(recalls)


def test_an_unusable_out_is_refused_before_the_work_and_leaves_nothing(tmp_path, tiny_checkpoint, capsys,
                                                                      monkeypatch):
    root = tmp_path / "heldout"
    write_class_folders(root, per_class=1, image_px=16, classes=["cat", "rocket"])
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "results").mkdir()
    (cwd / "afile").write_text("x")
    monkeypatch.chdir(cwd)
    import trainer.eval.command as command

    monkeypatch.setattr(command, "evaluate", lambda args: pytest.fail("evaluated before checking --out"))
    for out, says in (("results", "is a folder"), ("afile/x.json", "is below the file")):
        assert wit(["eval", "--checkpoint", str(tiny_checkpoint), "--zeroshot", str(root), "--out", out]) == 2
        err = capsys.readouterr().err
        assert says in err and len(err.strip().splitlines()) == 1
    assert wit(["export", "--checkpoint", str(tiny_checkpoint), "--out", "results"]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert sorted(p.name for p in cwd.iterdir()) == ["afile", "results"] and not any((cwd / "results").iterdir())


@pytest.mark.parametrize("fraction", ["2", "-0.1", "1.5"])
def test_max_skipped_fraction_outside_0_to_1_is_refused_naming_the_flag(fraction, tmp_path, capsys):
    """A share of the images: ``--max-skipped-fraction 2`` could never fail, so it was a silent no-op."""
    assert wit(["eval", "--checkpoint", str(tmp_path), "--zeroshot", str(tmp_path), "--max-skipped-fraction",
                fraction]) == 2
    err = capsys.readouterr().err
    assert f"--max-skipped-fraction must be between 0 and 1, got {float(fraction)}" in err and err.count("\n") == 1
