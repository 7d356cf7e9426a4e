"""``balance.png``: matched and kept pairs per query as a log-log rank plot, so the head cut at the cap shows."""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib
import numpy as np

matplotlib.use("Agg")  # no display on workers or CI

import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)


def balance_png(matched: Sequence[int], kept: Sequence[int], cap: int, target: int, title: str = "") -> bytes:
    """PNG bytes of the rank plot. Queries with no match are left out (log axes); the same input gives the
    same bytes (no timestamp in the metadata)."""
    m, k = np.asarray(matched, np.int64), np.asarray(kept, np.int64)
    order = np.lexsort((-k, -m))  # most matched first, then most kept (numpy: 500k queries in milliseconds)
    m, k = m[order], k[order]
    rows = m > 0
    m, k = m[rows], k[rows]
    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    if len(m):
        ranks = np.arange(1, len(m) + 1)
        ax.plot(ranks, m, label="matched", color="tab:blue", linewidth=1.5)
        ax.plot(ranks, np.maximum(k, 0.8), label="kept", color="tab:orange", linewidth=1.5)
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.axhline(cap, color="gray", linestyle="--", linewidth=1, label=f"per-query cap ({cap:,})")
    if target != cap:
        ax.axhline(target, color="gray", linestyle=":", linewidth=1, label=f"kept now, oversampled ({target:,})")
    ax.set_xlabel("query rank (by matched pairs)")
    ax.set_ylabel("pairs")
    ax.set_title(title or f"pairs per query: {len(m):,} queries matched")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="upper right")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()
