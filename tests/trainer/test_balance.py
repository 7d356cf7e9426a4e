"""Load-time balancing (``wit train --per-query-cap N --balance hard|probabilistic``): the loader keeps exactly
the samples finalize's re-balance keeps with that cap and seed (``wit_builder.core.balance``), the same set on every
worker layout and across a resume, and the probabilistic rule is stage 2's seeded coin."""

from __future__ import annotations

import hashlib
import io
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image

from tests import references
from trainer.balance import balance_from_samples
from trainer.data import Loader, make_plan
from trainer.tokenizer import Tokenizer
from wit_builder.cli import main as wit
from wit_builder.core import balance
from wit_builder.core import balance as stage2_balance
from wit_builder.core.uid import hash_rank as stage2_rank

torch.set_num_threads(1)
QUERIES = ["cat", "dog", "space", "car", "tree", "moon"]


def _jpeg(seed: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(out, "JPEG")
    return out.getvalue()


@pytest.fixture(scope="module")
def matched(tmp_path_factory) -> tuple[Path, list[tuple[str, list[str]]], Tokenizer]:
    """3 shards of 40 samples in stage 4's format; each sample json carries a uid and 0-3 queries (skewed: 'cat'
    is in about half), the caption names the uid."""
    out = tmp_path_factory.mktemp("matched")
    rng = random.Random(11)
    samples, sizes = [], {}
    for s in range(3):
        with wds.TarWriter(str(out / f"{s:05d}.tar")) as sink:
            for i in range(40):
                uid = hashlib.sha1(f"{s}/{i}".encode()).hexdigest()[:16]
                queries = sorted({"cat"} if rng.random() < 0.5 else set()) + rng.sample(QUERIES[1:], rng.randint(0, 2))
                samples.append((uid, queries))
                key = f"{s:05d}{i:04d}"
                sink.write({"__key__": key, "jpg": _jpeg(s * 40 + i), "txt": f"uid {uid}",
                            "json": {"key": key, "uid": uid, "queries": queries, "caption": f"uid {uid}"}})
        sizes[f"{s:05d}"] = 40
    (out / "sizes.json").write_text(json.dumps(sizes))
    tokenizer = Tokenizer.train([f"uid {u}" for u, _ in samples] * 3, vocab_size=400, context_length=40)
    return out, samples, tokenizer


def _finalize_keeps(samples, cap: int, seed: int) -> set[str]:
    """finalize's re-balance rule (wit_builder/finalize/pipeline.py Rebalance: thresholds, then over_cap_queries)."""
    table = references.thresholds(samples, cap, seed)
    return {uid for uid, queries in samples if balance.over_cap_queries(uid, queries, table, seed) is None}


def _uids(loader: Loader, tokenizer: Tokenizer) -> list[str]:
    return [tokenizer.decode(row.tolist()).strip().removeprefix("uid ").replace(" ", "")
            for batch in loader.epoch_batches() for row in batch["tokens"]]


@pytest.mark.parametrize("cap,seed,workers", [(5, 0, 0), (12, 3, 2), (1, 7, 3), (1000, 0, 1)])
def test_hard_balance_keeps_exactly_what_finalize_keeps(matched, cap, seed, workers):
    shards, samples, tokenizer = matched
    expected = _finalize_keeps(samples, cap, seed)
    plan = make_plan(str(shards), batch_size=1, image_size=16, workers=workers, shuffle_buffer=8, seed=seed,
                     per_query_cap=cap, balance_mode="hard")
    assert plan.samples_per_epoch == plan.balance.kept == len(expected) and plan.balance.total == 120
    loader = Loader(plan, tokenizer)
    kept = _uids(loader, tokenizer)
    assert len(kept) == len(set(kept)) and set(kept) == expected
    report = loader.reports[-1]
    # every sample is trained or counted; once the epoch's last kept sample is trained, the stream's trailing
    # samples (all over the cap) are counted as not reached, as nothing read them
    assert set(report["left_out"]) <= {"over_cap", "not_reached"}
    assert report["left_out"].get("over_cap", 0) + report["left_out"].get("not_reached", 0) == 120 - len(expected)
    assert report["samples_trained"] + sum(report["left_out"].values()) == 120
    if cap < 1000:
        assert len(expected) < 120  # the cap bites: 'cat' alone has ~60 samples


def test_the_plan_is_finalizes_thresholds(matched):
    _, samples, _ = matched
    for cap in (1, 4, 30):
        plan = balance_from_samples(iter(samples), cap, "hard", seed=2)
        assert plan.cuts == references.thresholds(samples, cap, 2)


def test_probabilistic_balance_is_stage_twos_coin(matched):
    shards, samples, tokenizer = matched
    cap, seed = 8, 4
    counts: dict[str, int] = {}
    for _, queries in samples:
        for q in set(queries):
            counts[q] = counts.get(q, 0) + 1
    config = stage2_balance.BalanceConfig(mode="probabilistic", per_query_cap=cap, seed=seed)
    cuts = {q: c for q, n in counts.items() if (c := stage2_balance.cut_value(config, n, None)) is not None}
    expected = {uid for uid, queries in samples
                if not queries or stage2_balance.kept_queries(uid, stage2_rank(uid, seed), sorted(set(queries)), cuts,
                                                              config)}
    plan = make_plan(str(shards), batch_size=1, image_size=16, workers=2, shuffle_buffer=8, seed=seed,
                     per_query_cap=cap, balance_mode="probabilistic")
    first = _uids(Loader(plan, tokenizer), tokenizer)
    assert set(first) == expected and len(expected) < 120
    again = make_plan(str(shards), batch_size=1, image_size=16, workers=0, seed=seed, per_query_cap=cap,
                      balance_mode="probabilistic")
    assert set(_uids(Loader(again, tokenizer), tokenizer)) == expected  # same set with another worker layout


def test_balanced_loader_resumes_exactly(matched):
    shards, samples, tokenizer = matched
    plan = make_plan(str(shards), batch_size=4, image_size=16, workers=2, shuffle_buffer=8, seed=1,
                     per_query_cap=6)
    loader, whole, state = Loader(plan, tokenizer), [], None
    for i, (batch, _) in enumerate(loader):
        whole.append(batch["tokens"])
        if i == 2:
            state = json.loads(json.dumps(loader.state()))
        if i == 9:
            break
    resumed = []
    for batch, _ in Loader(plan, tokenizer, state):
        resumed.append(batch["tokens"])
        if len(resumed) == 7:
            break
    assert all(torch.equal(a, b) for a, b in zip(resumed, whole[3:], strict=True))


def test_wit_train_balances_and_refuses_another_cap_on_resume(matched, tmp_path, capsys):
    shards, _, _ = matched
    args = ["train", "--shards", str(shards), "--out", str(tmp_path), "--model", "tiny", "--batch-size", "4",
            "--steps", "2", "--workers", "0", "--vocab-size", "300", "--per-query-cap", "5"]
    assert wit(args) == 0
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert state["data_plan"]["balance"]["cap"] == 5 and state["train_config"]["per_query_cap"] == 5
    assert wit([*args[:-1], "9", "--steps", "3", "--resume"]) == 2
    assert "--per-query-cap is 9 but the checkpoint ran with 5" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:  # argparse: invalid choice
        wit([*args, "--balance", "sometimes"])
    assert exited.value.code == 2
