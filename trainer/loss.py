"""Contrastive losses over a batch's image/text similarity matrix, with features gathered from every rank.

CLIP: symmetric cross-entropy (the paper's Figure 3 pseudocode). Other ranks' features are all-gathered without
gradient and the local slice is put back with its gradient, so each rank back-propagates through its own
samples against the whole global batch (open_clip's default, with the 1/world_size of DDP's gradient averaging
undone so the gradient equals that of the global loss).

SigLIP (Zhai et al. 2023): a sigmoid over every image/text pair with a learnable bias; text features are
gathered with autograd so the gradient of the global loss reaches the rank that owns each text.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _sizes(local: torch.Tensor) -> list[int]:
    # Ranks may hold different batch sizes (the GPU-decode path drops images nvJPEG rejects).
    size = torch.tensor([local.shape[0]], device=local.device)  # (1,)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]  # world x (1,)
    dist.all_gather(sizes, size)
    return [int(s.item()) for s in sizes]


def _padded(local: torch.Tensor, rows: int) -> torch.Tensor:
    return torch.cat([local, local.new_zeros(rows - local.shape[0], *local.shape[1:])]) if rows > len(local) else local


def gather_without_grad(local: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(b, D) on every rank -> ((N, D) global rows, offset of the local rows); the local rows keep their gradient."""
    if not _distributed():
        return local, 0
    sizes, rank = _sizes(local), dist.get_rank()
    parts = [local.new_empty(max(sizes), *local.shape[1:]) for _ in sizes]  # world x (max b, D)
    dist.all_gather(parts, _padded(local.detach(), max(sizes)).contiguous())
    parts = [p[:n] for p, n in zip(parts, sizes, strict=True)]  # rank r: (b_r, D)
    parts[rank] = local
    return torch.cat(parts), sum(sizes[:rank])  # (N, D), N = sum of b_r


def gather_with_grad(local: torch.Tensor) -> tuple[torch.Tensor, int]:
    """As gather_without_grad, but gradients flow back to the rank that owns each row."""
    if not _distributed():
        return local, 0
    import torch.distributed.nn.functional as dist_fn

    sizes, rank = _sizes(local), dist.get_rank()
    with warnings.catch_warnings():  # deprecated in favour of a private API; still the public autograd gather
        warnings.simplefilter("ignore", FutureWarning)
        parts = dist_fn.all_gather(_padded(local, max(sizes)).contiguous())  # world x (max b, D)
    return torch.cat([p[:n] for p, n in zip(parts, sizes, strict=True)]), sum(sizes[:rank])  # (N, D)


def full_precision(like: torch.Tensor) -> torch.autocast:
    """Autocast off: with a logit scale near 100, bf16 logits would be off by about 0.5."""
    return torch.autocast(like.device.type, enabled=False)


def _fp32(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


class ClipLoss(nn.Module):
    """Mean of image->text and text->image cross-entropy; labels are the diagonal of the global batch
    (Radford et al. 2021, Figure 3)."""

    def forward(self, image_features: torch.Tensor, text_features: torch.Tensor,
                logit_scale: torch.Tensor) -> torch.Tensor:
        """(b, D) L2-normalised image and text features of this rank and the scalar scale -> the scalar loss of
        the global batch of N (computed in fp32)."""
        with full_precision(image_features):
            all_images, _ = gather_without_grad(_fp32(image_features))  # (N, D)
            all_texts, _ = gather_without_grad(_fp32(text_features))  # (N, D)
            logits = _fp32(logit_scale) * all_images @ all_texts.t()  # (N, N)
            labels = torch.arange(logits.shape[0], device=logits.device)  # (N,)
            return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2

    @staticmethod
    def gradient_scale() -> float:
        """The factor on the loss before ``backward``: world_size under DDP, else 1.

        DDP averages gradients over ranks, but each rank's backward only covers its own slice of the global
        loss; multiplying by world_size makes the averaged gradient the global loss's gradient (open_clip's
        default gathering leaves that 1/world_size in; see the module docstring).
        """
        return float(dist.get_world_size()) if _distributed() else 1.0


class SigLipLoss(nn.Module):
    """-1/N * sum_ij log sigmoid(z_ij (t x_i.y_j + b)), z_ij = 1 on matching pairs and -1 elsewhere (Zhai et al.
    2023, Algorithm 1; bias initialised at -10 as there)."""

    def __init__(self, bias_init: float = -10.0):
        super().__init__()
        self.logit_bias = nn.Parameter(torch.tensor(bias_init))

    def forward(self, image_features: torch.Tensor, text_features: torch.Tensor,
                logit_scale: torch.Tensor) -> torch.Tensor:
        """(b, D) image and text features of this rank and the scalar scale -> this rank's scalar loss (its b
        images against all N texts; DDP's gradient average makes it the global loss)."""
        with full_precision(image_features):
            all_texts, offset = gather_with_grad(_fp32(text_features))  # (N, D)
            logits = _fp32(logit_scale) * _fp32(image_features) @ all_texts.t() + self.logit_bias  # (b, N)
        signs = -torch.ones_like(logits)  # (b, N)
        rows = torch.arange(logits.shape[0], device=logits.device)  # (b,)
        signs[rows, rows + offset] = 1.0
        # Normalised by the local batch; DDP's average over ranks turns it into the global 1/N.
        return -F.logsigmoid(signs * logits).sum() / image_features.shape[0]

    @staticmethod
    def gradient_scale() -> float:
        """1: each rank's loss already covers its own images against every text."""
        return 1.0


def make_loss(name: str) -> ClipLoss | SigLipLoss:
    """The loss named by ``--loss`` ("clip" or "siglip"); raises ValueError for another name."""
    if name == "clip":
        return ClipLoss()
    if name == "siglip":
        return SigLipLoss()
    raise ValueError(f"unknown loss {name!r}: choose clip or siglip")


SIGLIP_SCALE_INIT = math.log(10.0)  # SigLIP's t' = log 10 (Zhai et al. 2023); CLIP starts at log(1 / 0.07)
