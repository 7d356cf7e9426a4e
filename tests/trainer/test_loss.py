"""The contrastive losses against float64 references of the papers' pseudocode, and the all-gathered loss on two
gloo ranks against one process (gradient accumulation: ``test_train.py``)."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trainer.loss import ClipLoss, SigLipLoss, make_loss

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


