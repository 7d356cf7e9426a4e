"""Linear probes: few-shot sampling, the validation split, the C search."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.eval import linear_probe


def _blobs(per_class: int, seed: int, classes: int = 4, dim: int = 12, spread: float = 0.3):
    """Linearly separable features: one tight Gaussian blob per class around distant centres."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(size=(classes, dim)) * 5
    labels = np.repeat(np.arange(classes), per_class)
    return centres[labels] + spread * rng.normal(size=(len(labels), dim)), labels


def test_fewshot_draw_is_exactly_k_per_class_and_deterministic():
    labels = np.array([0] * 10 + [1] * 4 + [2] * 7 + [5] * 3)
    draw = linear_probe.fewshot_indices(labels, 3, seed=7)
    assert np.bincount(labels[draw]).tolist() == [3, 3, 3, 0, 0, 3]
    assert draw.tolist() == sorted(draw.tolist()) and len(set(draw.tolist())) == 12
    assert np.array_equal(draw, linear_probe.fewshot_indices(labels, 3, seed=7))
    assert not np.array_equal(draw, linear_probe.fewshot_indices(labels, 3, seed=8))
    with pytest.raises(ValueError, match="class 5 has 3 training images, fewer than --fewshot-k 4"):
        linear_probe.fewshot_indices(labels, 4, seed=0)
    with pytest.raises(ValueError, match="must be positive"):
        linear_probe.fewshot_indices(labels, 0, seed=0)


def test_validation_split_is_stratified_and_disjoint():
    labels = np.array([0] * 10 + [1] * 5 + [2] * 1)
    train, val = linear_probe.validation_split(labels, 0.2, seed=0)
    assert sorted(train.tolist() + val.tolist()) == list(range(16))
    assert np.bincount(labels[val], minlength=3).tolist() == [2, 1, 0]  # the singleton class stays in train
    assert np.array_equal(val, linear_probe.validation_split(labels, 0.2, seed=0)[1])


def test_separable_features_probe_perfectly_full_data_and_few_shot():
    train_x, train_y = _blobs(20, seed=0)
    test_x, test_y = _blobs(10, seed=1)
    full = linear_probe.linear_probe(train_x, train_y, test_x, test_y, num_classes=4, max_iter=100)
    assert full.lp_acc1 == 1.0 and full.lp_acc5 == 1.0 and full.lp_mean_per_class_recall == 1.0
    assert full.c_selection == "validation" and full.n_train == 80 and full.n_val == 16 and full.n_test == 40
    # the paper's sweep: 7 coarse values, then halving the step 4 times down to 1/8 decade
    assert 7 < len(full.c_sweep) <= 7 + 8
    assert full.c in dict(full.c_sweep) and dict(full.c_sweep)[full.c] == max(acc for _, acc in full.c_sweep)
    few = linear_probe.linear_probe(train_x, train_y, test_x, test_y, num_classes=4, fewshot_k=2, seed=3,
                                    max_iter=100)
    assert few.n_train == 8 and few.n_val == 72 and few.fewshot_k == 2
    assert few.lp_acc1 == 1.0


def test_search_c_prefers_the_best_validation_accuracy():
    # Noisy labels in a high-dimensional space: a weakly regularised probe overfits, so C is not the largest.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 60))
    y = (x[:, 0] + 0.8 * rng.normal(size=120) > 0).astype(int)
    c, sweep = linear_probe.search_c(x[:80], y[:80], x[80:], y[80:])
    assert sweep[c] == max(sweep.values())
    assert min(sweep) == pytest.approx(1e-6) and max(sweep) == pytest.approx(1e6)  # the paper's range
    assert c < 1e6


def test_probe_scores_classes_missing_from_training_as_never_predicted():
    train_x, train_y = _blobs(6, seed=0, classes=3)
    test_x, test_y = _blobs(4, seed=1, classes=4)  # class 3 has test images but no training images
    result = linear_probe.linear_probe(train_x, train_y, test_x, test_y, num_classes=4, c=1.0)
    assert result.c_selection == "given" and result.c_sweep == []
    assert result.lp_acc1 == pytest.approx(12 / 16)
    assert result.lp_mean_per_class_recall == pytest.approx(3 / 4)
