"""The contrastive losses against float64 references of the papers' pseudocode, gradient accumulation against
the whole batch, and the all-gathered loss on two gloo ranks against one process."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trainer.config import MODEL_CONFIGS
from trainer.loss import ClipLoss, SigLipLoss, make_loss
from trainer.model import CLIP
from trainer.train import _train_step

torch.set_num_threads(1)


def _log_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    x = x - x.max(axis=axis, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=axis, keepdims=True))


def paper_clip_loss(image_features: np.ndarray, text_features: np.ndarray, t: float) -> float:
    """Figure 3 of the CLIP paper, in float64 numpy: I_e, T_e normalised, logits scaled by exp(t)."""
    i_e = image_features / np.linalg.norm(image_features, axis=1, keepdims=True)
    t_e = text_features / np.linalg.norm(text_features, axis=1, keepdims=True)
    logits = i_e @ t_e.T * np.exp(t)
    n = logits.shape[0]
    labels = np.arange(n)
    loss_i = -_log_softmax(logits, axis=0)[labels, labels].mean()  # cross_entropy_loss(logits, labels, axis=0)
    loss_t = -_log_softmax(logits, axis=1)[labels, labels].mean()  # axis=1
    return (loss_i + loss_t) / 2


def paper_siglip_loss(image_features: np.ndarray, text_features: np.ndarray, t: float, b: float) -> float:
    """Algorithm 1 of the SigLIP paper in float64."""
    zimg = image_features / np.linalg.norm(image_features, axis=1, keepdims=True)
    ztxt = text_features / np.linalg.norm(text_features, axis=1, keepdims=True)
    logits = zimg @ ztxt.T * np.exp(t) + b
    n = logits.shape[0]
    labels = 2 * np.eye(n) - 1
    return float(np.sum(np.logaddexp(0, -labels * logits)) / n)


@pytest.mark.parametrize("n,d,t", [(8, 16, np.log(1 / 0.07)), (33, 64, 0.0), (5, 7, np.log(100.0))])
def test_clip_loss_matches_float64_paper_pseudocode(n, d, t):
    rng = np.random.default_rng(n)
    img, txt = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    expected = paper_clip_loss(img, txt, t)
    got = ClipLoss()(F.normalize(torch.tensor(img), dim=-1).float(), F.normalize(torch.tensor(txt), dim=-1).float(),
                     torch.tensor(np.exp(t)).float())
    assert got.dtype == torch.float32  # computed in float32 like training; compared to the float64 reference
    assert abs(float(got) - expected) < 1e-5 * max(1.0, expected)
    # Matching pairs make the loss small; shuffled pairs make it large.
    matched = ClipLoss()(F.normalize(torch.tensor(img), dim=-1), F.normalize(torch.tensor(img), dim=-1),
                         torch.tensor(100.0))
    assert float(matched) < 1e-3 < expected


@pytest.mark.parametrize("loss_name", ["clip", "siglip"])
def test_losses_run_in_fp32_under_bf16_autocast(loss_name):
    torch.manual_seed(0)
    img = F.normalize(torch.randn(64, 32), dim=-1).bfloat16()
    txt = F.normalize(torch.randn(64, 32), dim=-1).bfloat16()
    loss_fn = make_loss(loss_name)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = loss_fn(img, txt, torch.tensor(100.0))
    exact = loss_fn(img.float(), txt.float(), torch.tensor(100.0))  # the same bf16 features, fp32 arithmetic
    assert mixed.dtype == torch.float32
    assert abs(mixed.item() - exact.item()) < 1e-5 * exact.item()


def test_siglip_loss_matches_float64_reference():
    rng = np.random.default_rng(0)
    img, txt = rng.normal(size=(12, 32)), rng.normal(size=(12, 32))
    loss = SigLipLoss(bias_init=-3.0)
    got = loss(F.normalize(torch.tensor(img), dim=-1), F.normalize(torch.tensor(txt), dim=-1), torch.tensor(10.0))
    assert abs(got.item() - paper_siglip_loss(img, txt, np.log(10.0), -3.0)) < 1e-4
    assert [n for n, _ in loss.named_parameters()] == ["logit_bias"]
    with pytest.raises(ValueError, match="clip or siglip"):
        make_loss("triplet")


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("loss_name", ["clip", "siglip"])
def test_accumulation_gives_the_whole_batch_gradient(loss_name):
    torch.manual_seed(0)
    config = MODEL_CONFIGS["tiny"].with_vocab_size(300)
    model = CLIP(config).double()
    loss_fn = make_loss(loss_name).double()
    images = torch.randn(8, 3, 32, 32, dtype=torch.float64)
    tokens = torch.randint(1, 299, (8, 32))
    tokens[:, 10] = 299  # the end token: the highest id
    off = torch.autocast("cpu", enabled=False)
    whole = _train_step(model, loss_fn, images, tokens, 1, off, ddp=False)
    g1 = {**_grads(model), **_grads(loss_fn)}  # the loss's own: SigLIP's bias, once per batch like the temperature
    model.zero_grad()
    loss_fn.zero_grad()
    _train_step(model, loss_fn, images, tokens, 4, off, ddp=False)
    g4 = {**_grads(model), **_grads(loss_fn)}
    assert ("logit_bias" in g4) == (loss_name == "siglip")
    assert set(g1) == set(g4)
    for name in g1:
        torch.testing.assert_close(g4[name], g1[name], rtol=1e-8, atol=1e-10, msg=name)
    assert whole.item() > 0


def _ddp_worker(rank: int, world: int, init_file: str, features: torch.Tensor, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    img_all, txt_all = features
    b = img_all.shape[0] // world
    for name in ("clip", "siglip"):
        img = img_all[rank * b:(rank + 1) * b].clone().requires_grad_(True)
        txt = txt_all[rank * b:(rank + 1) * b].clone().requires_grad_(True)
        loss_fn = make_loss(name).double()
        loss = loss_fn(img, txt, torch.tensor(14.0, dtype=torch.float64))
        (loss * loss_fn.gradient_scale()).backward()
        # DDP would average parameter gradients; average these feature gradients the same way.
        grads = torch.cat([img.grad, txt.grad], dim=1)
        summed = loss.detach().clone()
        dist.all_reduce(summed)
        torch.save({"loss": float(summed) / world, "grad": grads / world}, os.path.join(out_dir, f"{name}{rank}.pt"))
    dist.destroy_process_group()


def test_all_gathered_loss_on_two_ranks_equals_the_global_batch():
    torch.manual_seed(1)
    img = F.normalize(torch.randn(8, 16, dtype=torch.float64), dim=-1)
    txt = F.normalize(torch.randn(8, 16, dtype=torch.float64), dim=-1)
    with tempfile.TemporaryDirectory() as tmp:
        torch.multiprocessing.spawn(_ddp_worker, args=(2, os.path.join(tmp, "init"), (img, txt), tmp), nprocs=2)
        for name in ("clip", "siglip"):
            i = img.clone().requires_grad_(True)
            t = txt.clone().requires_grad_(True)
            loss = make_loss(name).double()(i, t, torch.tensor(14.0, dtype=torch.float64))
            loss.backward()
            expected = torch.cat([i.grad, t.grad], dim=1)
            parts = [torch.load(os.path.join(tmp, f"{name}{r}.pt")) for r in range(2)]
            assert all(abs(p["loss"] - loss.item()) < 1e-6 * loss.item() for p in parts), name
            # Each rank's (averaged) gradient of its own rows equals the global loss's gradient of those rows.
            got = torch.cat([parts[0]["grad"], parts[1]["grad"]])
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-9, msg=name)


def _ddp_accumulation_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    generator = torch.Generator().manual_seed(10 + rank)  # each rank its own 4 samples
    images = torch.randn(4, 3, 32, 32, dtype=torch.float64, generator=generator)
    tokens = torch.randint(1, 299, (4, 32), generator=generator)
    tokens[:, 10] = 299
    off = torch.autocast("cpu", enabled=False)
    out = {}
    for name in ("clip", "siglip"):
        torch.manual_seed(0)  # the same model on both ranks
        model = CLIP(MODEL_CONFIGS["tiny"].with_vocab_size(300)).double()
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        loss_fn = make_loss(name).double()
        # This rank's own bias gradient, before any averaging (the plain module, no DDP).
        image_features, text_features, scale = model(images, tokens)
        loss_fn(image_features, text_features, scale).backward()
        local_bias = [p.grad.clone() for p in loss_fn.parameters()]
        grads = {}
        for accum in (1, 2):
            for _ in range(2):  # a second step: DDP checks that the previous one finished its reduction
                model.zero_grad()
                loss_fn.zero_grad()
                _train_step(ddp, loss_fn, images, tokens, accum, off, ddp=True)
            grads[accum] = {**_grads(model), **_grads(loss_fn)}
        out[name] = {"grads": grads, "local_bias": local_bias}
    torch.save(out, os.path.join(out_dir, f"accum{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.slow
def test_accumulation_under_ddp_gives_the_whole_batch_gradient():
    """--accum-steps under DDP: the micro-batches before the last skip the all-reduce (no_sync); every parameter,
    the temperature included, gets its gradient in the synced last one, equal to the unsplit batch's. SigLIP's
    bias (a parameter of the loss, outside DDP) gets the mean of the ranks' gradients, the same on every rank."""
    with tempfile.TemporaryDirectory() as tmp:
        torch.multiprocessing.spawn(_ddp_accumulation_worker, args=(2, os.path.join(tmp, "init"), tmp), nprocs=2)
        ranks = [torch.load(os.path.join(tmp, f"accum{rank}.pt")) for rank in range(2)]
        for name in ("clip", "siglip"):
            for rank in range(2):
                grads = ranks[rank][name]["grads"]
                assert set(grads[1]) == set(grads[2]) and "logit_scale" in grads[2]
                for key in grads[1]:
                    torch.testing.assert_close(grads[2][key], grads[1][key], rtol=1e-8, atol=1e-10, msg=key)
        local = [ranks[rank]["siglip"]["local_bias"][0] for rank in range(2)]
        assert not torch.equal(local[0], local[1])  # the ranks' own gradients differ...
        for rank in range(2):  # ...and each rank steps with their mean
            torch.testing.assert_close(ranks[rank]["siglip"]["grads"][1]["logit_bias"], (local[0] + local[1]) / 2,
                                       rtol=1e-8, atol=1e-12)
