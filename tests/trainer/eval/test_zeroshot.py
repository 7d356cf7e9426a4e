"""Zero-shot classification: prompt ensembling, metrics, templates."""

from __future__ import annotations

import math

import pytest
import torch
from sklearn.metrics import balanced_accuracy_score

from trainer.eval import zeroshot

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
    bom = tmp_path / "bom.txt"  # as Windows Notepad saves UTF-8: the mark is not part of the first template
    bom.write_text("{}の写真\n", encoding="utf-8-sig")
    assert zeroshot.load_templates(bom) == ["{}の写真"]
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
    with pytest.raises(FileNotFoundError, match="en, imagenet, ja, simple, zh"):
        zeroshot.load_templates("no-such-set")
    with pytest.raises(ValueError, match="cannot read templates file"):
        zeroshot.load_templates(tmp_path)  # a directory
