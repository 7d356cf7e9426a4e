"""Linear probes on frozen image features, as in the CLIP paper (section 3.2 and appendix A.3).

The paper trains scikit-learn's L-BFGS logistic regression (at most 1,000 iterations) and picks the L2
regularisation strength on a validation split with a parametric search: start from 1e-6, 1e-4, ..., 1e6
and halve the interval around the best value until the resolution is 8 steps per decade. We search the
inverse strength ``C`` in the same way, then refit on train + validation. The few-shot variant trains on
exactly k images per class (seeded draw) and validates on the training images not drawn.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from trainer.eval.zeroshot import classification_metrics

COARSE_LOG10_C: tuple[float, ...] = (-6, -4, -2, 0, 2, 4, 6)
FINEST_LOG10_STEP = 1 / 8
DEFAULT_C = 1.0  # used only when no validation image is left to choose C with


def fewshot_indices(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Sorted indices of exactly ``k`` samples of every class in ``labels``, drawn without replacement by a
    generator seeded with ``seed`` (the same inputs always give the same draw)."""
    if k <= 0:
        raise ValueError(f"--fewshot-k must be positive, got {k}")
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) < k:
            raise ValueError(f"class {label} has {len(members)} training images, fewer than --fewshot-k {k}")
        chosen.append(rng.choice(members, size=k, replace=False))
    return np.sort(np.concatenate(chosen))


def validation_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) indices: ``fraction`` of every class with at least two samples, at least one image
    each side; classes with one sample stay in train. Seeded and stratified."""
    rng = np.random.default_rng(seed)
    val = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        if len(members) >= 2:
            val.append(members[: min(len(members) - 1, max(1, round(len(members) * fraction)))])
    val_idx = np.sort(np.concatenate(val)) if val else np.empty(0, dtype=np.int64)
    return np.setdiff1d(np.arange(len(labels)), val_idx), val_idx


def _fit(x: np.ndarray, y: np.ndarray, c: float, max_iter: int) -> LogisticRegression:
    with warnings.catch_warnings():
        # a sweep visits C values where L-BFGS stops at max_iter; the chosen C's fit is what counts
        warnings.simplefilter("ignore", ConvergenceWarning)
        return LogisticRegression(C=c, max_iter=max_iter, random_state=0).fit(x, y)


def search_c(
    train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray, *, max_iter: int = 1000
) -> tuple[float, dict[float, float]]:
    """The C with the best validation accuracy (the smaller C on ties) and every C tried with its accuracy."""
    tried: dict[float, float] = {}

    def score(log10_c: float) -> float:
        if log10_c not in tried:
            tried[log10_c] = float(_fit(train_x, train_y, 10.0**log10_c, max_iter).score(val_x, val_y))
        return tried[log10_c]

    low, high = COARSE_LOG10_C[0], COARSE_LOG10_C[-1]
    best = max(COARSE_LOG10_C, key=lambda e: (score(e), -e))
    step = 2.0
    while step > FINEST_LOG10_STEP:
        step /= 2
        neighbours = [e for e in (best - step, best, best + step) if low <= e <= high]
        best = max(neighbours, key=lambda e: (score(e), -e))
    return 10.0**best, {10.0**e: acc for e, acc in sorted(tried.items())}


@dataclass
class ProbeResult:
    """One linear-probe evaluation: accuracies in [0, 1] on the test split and how C was chosen."""

    lp_acc1: float
    lp_acc5: float
    lp_mean_per_class_recall: float
    c: float
    c_selection: str  # "validation", "given" or "default"
    c_sweep: list[tuple[float, float]]  # every C tried on the validation split, with its accuracy
    n_train: int
    n_val: int
    n_test: int
    fewshot_k: int | None
    seed: int

    def to_dict(self) -> dict:
        return asdict(self)


def linear_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    num_classes: int,
    fewshot_k: int | None = None,
    seed: int = 0,
    val_fraction: float = 0.2,
    c: float | None = None,
    max_iter: int = 1000,
) -> ProbeResult:
    """Train a logistic-regression probe on (train_x, train_y) and score it on the test features.

    Labels are class indices in ``range(num_classes)``. ``fewshot_k``: train on k images per class instead
    of all. ``c``: skip the search and use this inverse regularisation strength.
    """
    if len(train_x) == 0 or len(test_x) == 0:
        raise ValueError("the linear probe needs training and test images")
    all_idx = np.arange(len(train_y))
    if fewshot_k is not None:
        fit_idx = fewshot_indices(train_y, fewshot_k, seed)
        search_idx, val_idx = fit_idx, np.setdiff1d(all_idx, fit_idx)
    else:
        search_idx, val_idx = validation_split(train_y, val_fraction, seed)
        fit_idx = all_idx  # refit on train + validation once C is chosen
    sweep: dict[float, float] = {}
    if c is not None:
        selection = "given"
    elif len(val_idx) and len(np.unique(train_y[search_idx])) > 1:
        c, sweep = search_c(train_x[search_idx], train_y[search_idx], train_x[val_idx], train_y[val_idx],
                        max_iter=max_iter)
        selection = "validation"
    else:
        c, selection = DEFAULT_C, "default"
    if len(np.unique(train_y[fit_idx])) < 2:
        raise ValueError("the linear probe needs training images of at least two classes")
    model = _fit(train_x[fit_idx], train_y[fit_idx], c, max_iter)

    # Probabilities over every class; classes absent from training score -1, below any probability.
    scores = np.full((len(test_x), num_classes), -1.0)
    scores[:, model.classes_] = model.predict_proba(test_x)
    metrics = classification_metrics(torch.from_numpy(scores), torch.from_numpy(np.asarray(test_y)).long())
    return ProbeResult(
        lp_acc1=metrics["acc1"], lp_acc5=metrics["acc5"], lp_mean_per_class_recall=metrics["mean_per_class_recall"],
        c=float(c), c_selection=selection, c_sweep=sorted(sweep.items()), n_train=len(fit_idx),
        n_val=len(val_idx) if selection == "validation" else 0, n_test=len(test_x), fewshot_k=fewshot_k, seed=seed,
    )
