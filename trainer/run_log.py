"""What a training run writes beside its checkpoint, on rank 0 only: ``metrics.jsonl`` (one JSON line every
``--log-every`` steps), ``epochs.jsonl`` (one line per finished epoch: samples planned, trained and left out by
reason; ``trainer.data.Loader.epoch_report``), TensorBoard scalars (only when tensorboard is importable) and
``loss.png`` at the end. A resumed run first cuts both files back to its checkpoint's step, so each reads as one
run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from trainer.atomic import WriteFailed, write_atomic
from trainer.data import describe_epoch
from wit_builder.core import strict_json

METRICS_NAME = "metrics.jsonl"
LOSS_PLOT = "loss.png"
EPOCHS_NAME = "epochs.jsonl"  # one line per finished epoch: samples planned, trained and left out by reason
BOARD_SCALARS = ("loss", "lr", "logit_scale", "samples_per_s", "data_wait")  # of a metrics line


class RunLog:
    """The run's log files under ``out``, continued from optimizer step ``step`` (0: a new run). On ranks other
    than 0 (``master`` False) every method does nothing."""

    def __init__(self, out: Path, step: int, master: bool):
        self.out, self.master = out, master
        self.metrics_path, self.epochs_path = out / METRICS_NAME, out / EPOCHS_NAME
        self.board: Any = None
        if master:
            _truncate(self.metrics_path, step)
            # An epoch line carries the steps done when its end was seen, after that step's checkpoint: keep < step.
            _truncate(self.epochs_path, step - 1)
            self.board = _tensorboard(out)

    def metrics(self, record: dict) -> None:
        """Append one metrics line (``step``, ``epoch``, ``loss``, ``lr``, ``logit_scale``, ``samples_per_s``,
        ``data_wait``, ``dropped``) and its scalars to TensorBoard."""
        if not self.master:
            return
        _append(self.metrics_path, record)
        if self.board is not None:
            for key in BOARD_SCALARS:
                self.board.add_scalar(f"train/{key}", record[key], record["step"])

    def epochs(self, reports: list[dict], step: int) -> None:
        """Print the finished epochs' reports and append them to epochs.jsonl with ``step``, the steps done when
        their end was seen."""
        if not self.master:
            return
        for report in reports:
            tqdm.write(f"wit train: {describe_epoch(report)}", file=sys.stdout)
            _append(self.epochs_path, {"step": step, **report})

    def close(self, current: dict, step: int) -> dict[str, int]:
        """End the run at ``step`` with ``current``, the report of the epoch in progress: record it when it just
        completed, draw loss.png, close TensorBoard. Returns the samples left out over the whole run, by reason
        (every recorded epoch, and the current one when incomplete)."""
        if not self.master:
            return {}
        if current["complete"]:  # the run ended on the epoch's last step: that epoch is finished, record it
            _append(self.epochs_path, {"step": step, **current})
        left: dict[str, int] = {}
        for report in _read_jsonl(self.epochs_path) + ([] if current["complete"] else [current]):
            for reason, n in report["left_out"].items():
                left[reason] = left.get(reason, 0) + n
        if self.metrics_path.exists():
            _plot_loss(self.metrics_path, self.out / LOSS_PLOT)
        if self.board is not None:
            self.board.close()
        return left


def _append(path: Path, record: dict) -> None:
    """One strict JSON line (a non-finite number is null); a full disk is one line naming the file."""
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(strict_json.dumps(record) + "\n")
    except OSError as e:
        raise WriteFailed(f"cannot append to {path}: {e.strerror or e}") from e


def _read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _truncate(path: Path, step: int) -> None:
    """Drop the lines of steps after ``step`` (written after the checkpoint we resume from), so the file reads as
    one run."""
    if not path.exists():
        return
    if step <= 0:  # a new run: nothing of an earlier one is kept (nor read: --overwrite may leave any file here)
        path.unlink()
        return
    kept = [line for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line)["step"] <= step]
    write_atomic(path, lambda tmp: tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8"))


def _tensorboard(out: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(out / "tensorboard"))


def _plot_loss(metrics_path: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = _read_jsonl(metrics_path)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["step"] for r in records], [r["loss"] for r in records])
    ax.set_xlabel("step")
    ax.set_ylabel("contrastive loss")
    ax.set_title("wit train")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    write_atomic(png, lambda tmp: fig.savefig(tmp, dpi=100))
    plt.close(fig)
