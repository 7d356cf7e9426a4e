"""The run's log files: metrics.jsonl and epochs.jsonl appended on rank 0 only, cut back to the checkpoint's
step on resume, the epoch in progress recorded when the run ends on its last step, left-out samples summed over
the run, loss.png drawn."""

from __future__ import annotations

import json
from pathlib import Path

from trainer.run_log import EPOCHS_NAME, METRICS_NAME, RunLog


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _record(step: int) -> dict:
    return {"step": step, "epoch": 0, "loss": 1.0 / step, "lr": 1e-3, "logit_scale": 14.0, "samples_per_s": 10.0,
            "data_wait": 0.1, "dropped": {}}


def _epoch(epoch: int, complete: bool, left: dict) -> dict:
    return {"epoch": epoch, "steps": 2, "complete": complete, "samples_planned": 40, "samples_trained": 32,
            "left_out": left, "unlisted": 0, "unreadable_shards": 0, "uncounted_streams": 0}


def test_a_resumed_run_cuts_its_logs_back_to_the_checkpoint(tmp_path):
    logs = RunLog(tmp_path, 0, master=True)
    for step in (1, 2, 3, 4):
        logs.metrics(_record(step))
    logs.epochs([_epoch(0, True, {"partial_batch_dropped": 8})], 3)  # epoch 0's end seen at step 3
    logs.epochs([_epoch(1, True, {"corrupt_image": 1})], 4)
    RunLog(tmp_path, 3, master=True)  # resumed from the checkpoint of step 3
    assert [r["step"] for r in _lines(tmp_path / METRICS_NAME)] == [1, 2, 3]
    # An epoch line is written at the step its end was seen, after that step's checkpoint: kept only if earlier.
    assert _lines(tmp_path / EPOCHS_NAME) == []
    # ...and an epoch whose end was seen before the checkpoint's step stays, whole.
    logs.epochs([_epoch(0, True, {"partial_batch_dropped": 8})], 2)
    logs.epochs([_epoch(1, True, {"corrupt_image": 1})], 3)
    RunLog(tmp_path, 3, master=True)
    assert _lines(tmp_path / EPOCHS_NAME) == [{"step": 2, **_epoch(0, True, {"partial_batch_dropped": 8})}]


def test_the_end_records_a_completed_epoch_and_sums_what_was_left_out(tmp_path, capsys):
    logs = RunLog(tmp_path, 0, master=True)
    logs.metrics(_record(1))
    logs.epochs([_epoch(0, True, {"partial_batch_dropped": 8})], 2)
    assert "wit train: epoch 0: trained 32 of 40 samples in 2 steps" in capsys.readouterr().out
    left = logs.close(_epoch(1, True, {"partial_batch_dropped": 2, "over_cap": 6}), 4)
    assert left == {"partial_batch_dropped": 10, "over_cap": 6}
    assert [(e["step"], e["epoch"]) for e in _lines(tmp_path / EPOCHS_NAME)] == [(2, 0), (4, 1)]
    assert (tmp_path / "loss.png").stat().st_size > 0
    # An epoch still in progress is counted, not recorded.
    assert RunLog(tmp_path, 5, master=True).close(_epoch(2, False, {"not_reached": 5}), 6)["not_reached"] == 5
    assert len(_lines(tmp_path / EPOCHS_NAME)) == 2


def test_other_ranks_write_nothing(tmp_path):
    logs = RunLog(tmp_path, 0, master=False)
    logs.metrics(_record(1))
    logs.epochs([_epoch(0, True, {})], 1)
    assert logs.close(_epoch(1, True, {}), 2) == {} and list(tmp_path.iterdir()) == []
