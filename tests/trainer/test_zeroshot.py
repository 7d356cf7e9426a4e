"""Zero-shot classification: prompt ensembling, metrics, templates, image folders and `wit eval --zeroshot`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import balanced_accuracy_score

from tests.eval_fixtures import tiny_checkpoint  # noqa: F401  (fixture)
from tests.trainer_fixtures import write_class_folders
from trainer import image_folder, zeroshot
from wit_builder.cli import main as wit

R = 1 / math.sqrt(2)


# ---- prompt ensembling ----

def test_ensemble_normalises_each_template_then_the_mean():
    text = torch.tensor([
        [[3.0, 0.0], [0.0, 2.0]],    # class 0: unit vectors e1, e2 after normalising -> mean (.5, .5)
        [[1.0, 1.0], [-5.0, 5.0]],   # class 1: (r, r), (-r, r) -> mean (0, r)
    ])  # (C=2, T=2, D=2)
    classifier = zeroshot.ensemble_classifier(text)
    assert classifier.shape == (2, 2)  # (D, C)
    torch.testing.assert_close(classifier, torch.tensor([[R, 0.0], [R, 1.0]]))
    # Averaging before normalising would weight the longer embedding more: (1.5, 1) is not (r, r).
    assert not torch.allclose(classifier[:, 0], torch.nn.functional.normalize(text[0].mean(0), dim=0))


def test_build_classifier_encodes_every_class_in_every_template_in_batches():
    classnames, templates = ["cat", "dog", "sea lion"], ["a photo of a {}.", "a {} in a video game.", "art of the {}."]
    prompts = [t.format(c) for c in classnames for t in templates]
    table = torch.randn(len(prompts), 8, generator=torch.Generator().manual_seed(0))  # prompt -> embedding
    seen: list[str] = []

    def tokenize(texts: list[str]) -> torch.Tensor:
        seen.extend(texts)
        return torch.tensor([[prompts.index(t)] for t in texts])

    def encode_text(tokens: torch.Tensor) -> torch.Tensor:
        return table[tokens[:, 0]]

    expected = zeroshot.ensemble_classifier(table.view(3, 3, 8))
    for batch_size in (1, 4, 100):
        seen.clear()
        got = zeroshot.build_classifier(encode_text, tokenize, classnames, templates, batch_size=batch_size)
        torch.testing.assert_close(got, expected)
        assert sorted(seen) == sorted(prompts)
    torch.testing.assert_close(got.norm(dim=0), torch.ones(3))


# ---- metrics ----

def test_metrics_on_known_predictions():
    logits = torch.tensor([
        [0.9, 0.1, 0.0],  # target 0: top-1 hit
        [0.2, 0.7, 0.1],  # target 0: top-2 hit
        [0.1, 0.2, 0.7],  # target 0: top-3 hit only
        [0.0, 0.9, 0.1],  # target 1: top-1 hit
        [0.3, 0.2, 0.5],  # target 2: top-1 hit
        [0.6, 0.1, 0.3],  # target 2: top-2 hit
    ])
    targets = torch.tensor([0, 0, 0, 1, 2, 2])
    metrics = zeroshot.classification_metrics(logits, targets)
    assert metrics["acc1"] == pytest.approx(3 / 6)
    assert metrics["acc5"] == 1.0  # top-5 is capped at the 3 classes
    assert zeroshot.topk_accuracy(logits, targets, 2) == pytest.approx(5 / 6)
    # recalls: class 0 1/3, class 1 1/1, class 2 1/2
    assert metrics["mean_per_class_recall"] == pytest.approx((1 / 3 + 1 + 1 / 2) / 3)
    assert metrics["mean_per_class_recall"] == pytest.approx(balanced_accuracy_score(targets, logits.argmax(1)))


def test_mean_per_class_recall_ignores_classes_without_samples():
    predictions, targets = torch.tensor([0, 3, 3, 1]), torch.tensor([0, 3, 3, 3])
    assert zeroshot.mean_per_class_recall(predictions, targets) == pytest.approx((1 + 2 / 3) / 2)
    with pytest.raises(ValueError, match="no samples"):
        zeroshot.classification_metrics(torch.empty(0, 3), torch.empty(0, dtype=torch.long))


# ---- templates ----

def test_shipped_templates():
    imagenet = zeroshot.load_templates("imagenet")
    assert len(imagenet) == 80 == len(set(imagenet))
    assert imagenet[0] == "a bad photo of a {}." and "itap of a {}." in imagenet
    assert all(t.count("{}") == 1 for t in imagenet)
    assert zeroshot.load_templates("simple") == ["a photo of a {}."]
    assert zeroshot.load_templates() == imagenet


def test_template_file_and_bad_templates(tmp_path):
    good = tmp_path / "t.txt"
    good.write_text("# my prompts\n\na photo of a {}.\n  a drawing of the {}.  \n", encoding="utf-8")
    assert zeroshot.load_templates(good) == ["a photo of a {}.", "a drawing of the {}."]
    for line, problem in [("no placeholder here", "exactly once"), ("{} and {}", "exactly once"),
                          ("a photo of {article} {}", "exactly once"), ("a {photo of {}", "not a format string")]:
        bad = tmp_path / "bad.txt"
        bad.write_text(f"a photo of a {{}}.\n{line}\n", encoding="utf-8")
        with pytest.raises(ValueError, match=problem) as err:
            zeroshot.load_templates(bad)
        assert f"{bad}:2" in str(err.value)
    (tmp_path / "empty.txt").write_text("# nothing\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no templates"):
        zeroshot.load_templates(tmp_path / "empty.txt")
    with pytest.raises(FileNotFoundError, match="imagenet, simple"):
        zeroshot.load_templates("no-such-set")
    with pytest.raises(ValueError, match="cannot read templates file"):
        zeroshot.load_templates(tmp_path)  # a directory


# ---- image folders, end to end with an oracle encoder ----

COLOURS = {"red_apple": (220, 20, 20), "green_leaf": (20, 200, 30), "blue_sea": (10, 30, 230)}


def _colour_folder(root: Path) -> Path:
    for name, rgb in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (20 + i, 16), tuple(max(0, c - 10 * i) for c in rgb)).save(root / name / f"{i}.png")
    (root / "red_apple" / "truncated.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "blue_sea" / "README.md").write_text("not an image")
    return root


def _oracle(names: list[str]):
    """'Encoders' that map an image to its mean colour and a prompt to the colour its class name says."""
    colours = (torch.tensor([COLOURS[n.replace(" ", "_")] for n in names], dtype=torch.float32) / 255 - 0.45) / 0.27

    def encode_image(images: torch.Tensor) -> torch.Tensor:
        return images.mean(dim=(2, 3))  # (B, 3)

    def tokenize(texts: list[str]) -> torch.Tensor:
        return torch.tensor([[next(i for i, n in enumerate(names) if n in t)] for t in texts])  # (B, 1)

    def encode_text(tokens: torch.Tensor) -> torch.Tensor:
        return colours[tokens[:, 0]]  # (B, 3)

    return encode_image, tokenize, encode_text


def _to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy((np.asarray(image.convert("RGB").resize((8, 8)), dtype=np.float32) / 255 - 0.45) / 0.27
                            ).permute(2, 0, 1)


def test_image_folder_labels_line_up_with_class_names(tmp_path):
    folder = image_folder.scan_image_folder(_colour_folder(tmp_path / "colours"))
    assert folder.classnames == ["blue sea", "green leaf", "red apple"]
    assert len(folder.samples) == 10 and [p.name for p in folder.ignored] == ["README.md"]
    encode_image, tokenize, encode_text = _oracle(folder.classnames)
    features, labels, errors = image_folder.encode_image_folder(folder, encode_image, _to_tensor, batch_size=4)
    assert len(errors) == 1 and "truncated.jpg" in errors[0]
    assert features.shape == (9, 3) and labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    classifier = zeroshot.build_classifier(encode_text, tokenize, folder.classnames, ["a photo of a {}."])
    metrics = zeroshot.classification_metrics(zeroshot.zeroshot_logits(features, classifier), labels)
    assert metrics == {"acc1": 1.0, "acc5": 1.0, "mean_per_class_recall": 1.0}


def test_classnames_file_plain_and_mapped(tmp_path):
    root = _colour_folder(tmp_path / "colours")
    plain = tmp_path / "plain.txt"
    plain.write_text("ocean\nleaf\napple\n")
    assert image_folder.scan_image_folder(root, plain).classnames == ["ocean", "leaf", "apple"]
    mapped = tmp_path / "mapped.txt"
    mapped.write_text("red_apple\tred apple\nsomething_else\tpurple grape\n"
                      "blue_sea\tblue sea\ngreen_leaf\tgreen leaf\n")
    folder = image_folder.scan_image_folder(root, mapped)
    assert folder.classnames == ["red apple", "purple grape", "blue sea", "green leaf"]
    assert sorted({label for _, label in folder.samples}) == [0, 2, 3]  # the extra class competes, has no images
    short = tmp_path / "short.txt"
    short.write_text("ocean\nleaf\n")
    with pytest.raises(ValueError, match="2 names but the image folder has 3"):
        image_folder.scan_image_folder(root, short)
    partial = tmp_path / "partial.txt"
    partial.write_text("red_apple\tred apple\n")
    with pytest.raises(ValueError, match="does not list the class folder"):
        image_folder.scan_image_folder(root, partial)


def test_scan_rejects_missing_and_empty_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        image_folder.scan_image_folder(tmp_path / "nope")
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="no class folders"):
        image_folder.scan_image_folder(tmp_path / "flat")
    (tmp_path / "flat" / "cat").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        image_folder.scan_image_folder(tmp_path / "flat")


# ---- `wit eval --zeroshot` on a real checkpoint and real photos ----

def test_wit_eval_zeroshot_writes_clip_benchmark_json(tmp_path, tiny_checkpoint, capsys):  # noqa: F811
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


def test_wit_eval_reports_bad_input(tmp_path, tiny_checkpoint, capsys):  # noqa: F811
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
