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

import torch
import torch.nn.functional as F
from torch import nn

from trainer.distributed import gather_with_grad, gather_without_grad, world_size


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
        return float(world_size())


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
