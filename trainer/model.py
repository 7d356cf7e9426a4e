"""CLIP as in the paper (Radford et al. 2021): a ViT or modified-ResNet image tower, a causal text transformer,
linear projections into a shared embedding and a learnable temperature.

Parameter names follow OpenAI's CLIP / open_clip (``conv1``, ``class_embedding``, ``transformer.resblocks.N.attn
.in_proj_weight``, ``ln_final``, ``text_projection``, ``logit_scale`` ...) so that exporting to open_clip's
state-dict layout is a near-identity mapping. Tensors are batch-first; attention goes through
``F.scaled_dot_product_attention`` (flash / memory-efficient kernels where the device has them).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from trainer.config import ModelConfig, TextConfig, VisionConfig

LOGIT_SCALE_INIT = math.log(1 / 0.07)
LOGIT_SCALE_MAX = 100.0


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32 and cast back, as OpenAI's CLIP does for fp16/bf16 activations."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        if dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps).to(dtype)


class Attention(nn.Module):
    """Multi-head self-attention with nn.MultiheadAttention's parameter names, batch-first, through SDPA.

    ``width`` (C) must be divisible by ``heads`` (H); ``forward`` maps (B, N, C) to (B, N, C), causal masking
    for the text tower.
    """

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))  # (3C, C): q, k, v stacked
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))  # (3C,)
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor, causal: bool) -> torch.Tensor:
        b, n, c = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)  # (B, N, 3C)
        q, k, v = qkv.view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)  # 3 x (B, H, N, C/H)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=causal)  # (B, H, N, C/H)
        return self.out_proj(y.transpose(1, 2).reshape(b, n, c))  # (B, N, C)


class Mlp(nn.Sequential):
    """c_fc -> GELU -> c_proj, an ``nn.Sequential`` so that the state-dict names are OpenAI's (``mlp.c_fc.weight``)."""

    # Declared for the type checker only: nn.Module.__getattr__ finds them among the registered children.
    c_fc: nn.Linear
    c_proj: nn.Linear

    def __init__(self, width: int, hidden: int):
        super().__init__(OrderedDict([
            ("c_fc", nn.Linear(width, hidden)),
            ("gelu", nn.GELU()),
            ("c_proj", nn.Linear(hidden, width)),
        ]))


class ResidualAttentionBlock(nn.Module):
    """Pre-LN transformer block (OpenAI's CLIP): x + attn(ln_1(x)), then + mlp(ln_2(x)); (B, N, C) -> (B, N, C)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.ln_1 = LayerNorm(width)
        self.attn = Attention(width, heads)
        self.ln_2 = LayerNorm(width)
        self.mlp = Mlp(width, int(width * mlp_ratio))

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), causal)  # (B, N, C)
        return x + self.mlp(self.ln_2(x))  # (B, N, C)


class Transformer(nn.Module):
    """``layers`` residual blocks of width C; (B, N, C) -> (B, N, C). ``grad_checkpointing`` recomputes each
    block's activations in the backward pass (training only)."""

    def __init__(self, width: int, layers: int, heads: int, causal: bool, mlp_ratio: float = 4.0):
        super().__init__()
        self.width, self.layers, self.causal = width, layers, causal
        self.grad_checkpointing = False
        self.resblocks = nn.ModuleList([ResidualAttentionBlock(width, heads, mlp_ratio) for _ in range(layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, self.causal, use_reentrant=False)  # (B, N, C)
            else:
                x = block(x, self.causal)  # (B, N, C)
        return x

    def init_weights(self) -> None:
        """OpenAI's CLIP initialisation (``clip/model.py``): residual projections scaled down with depth."""
        proj_std = (self.width ** -0.5) * ((2 * self.layers) ** -0.5)
        attn_std = self.width ** -0.5
        fc_std = (2 * self.width) ** -0.5
        # resblocks is built from ResidualAttentionBlock only; ModuleList iterates as plain Modules.
        for block in cast(list[ResidualAttentionBlock], list(self.resblocks)):
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)


class VisionTransformer(nn.Module):
    """The ViT image tower (Dosovitskiy et al. 2021, CLIP's variant with ``ln_pre``): (B, 3, S, S) pixels ->
    (B, ``output_dim``), S = ``image_size`` px, a multiple of ``cfg.patch_size`` (p) px. Raises ValueError when
    ``cfg`` has no patch size (a ResNet config)."""

    def __init__(self, image_size: int, cfg: VisionConfig, output_dim: int):
        super().__init__()
        if cfg.patch_size is None:
            raise ValueError(f"a VisionTransformer needs a patch size; {cfg} describes a ResNet")
        width, patch = cfg.width, cfg.patch_size
        scale = width ** -0.5
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch, stride=patch, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(width))  # (C,)
        self.positional_embedding = nn.Parameter(scale * torch.randn((image_size // patch) ** 2 + 1, width))  # (N+1, C)
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, cfg.layers, cfg.heads, causal=False, mlp_ratio=cfg.mlp_ratio)
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))  # (C, D)
        self.transformer.init_weights()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)  # (B, C, H/p, W/p)
        x = x.flatten(2).transpose(1, 2)  # (B, N, C)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)  # (B, 1, C)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)  # (B, N+1, C)
        x = self.transformer(self.ln_pre(x))  # (B, N+1, C)
        return self.ln_post(x[:, 0]) @ self.proj  # (B, D)


class Bottleneck(nn.Module):
    """The paper's ResNet bottleneck: strided convolutions replaced by an average pool before the third conv
    (anti-aliasing, Zhang 2019), and an average pool before the downsampling 1x1 conv."""

    expansion = 4  # output channels = planes * 4

    downsample: nn.Sequential | None

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu3 = nn.ReLU(inplace=True)
        self.downsample = None
        if stride > 1 or inplanes != planes * self.expansion:
            self.downsample = nn.Sequential(OrderedDict([
                ("-1", nn.AvgPool2d(stride)),
                ("0", nn.Conv2d(inplanes, planes * self.expansion, 1, stride=1, bias=False)),
                ("1", nn.BatchNorm2d(planes * self.expansion)),
            ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, inplanes, H, W) -> (B, 4 * planes, H / stride, W / stride)."""
        identity = x if self.downsample is None else self.downsample(x)  # (B, 4P, H/s, W/s)
        out = self.relu1(self.bn1(self.conv1(x)))  # (B, P, H, W)
        out = self.relu2(self.bn2(self.conv2(out)))  # (B, P, H, W)
        out = self.bn3(self.conv3(self.avgpool(out)))  # (B, 4P, H/s, W/s)
        return self.relu3(out + identity)  # (B, 4P, H/s, W/s)


class AttentionPool2d(nn.Module):
    """Attention pooling (CLIP paper, sec. 2.4): the mean of the feature map queries the map (plus itself) in one
    attention layer; (B, ``embed_dim``, S, S) with S = ``spatial`` -> (B, ``output_dim``)."""

    def __init__(self, spatial: int, embed_dim: int, heads: int, output_dim: int):
        super().__init__()
        # (HW+1, C): the mean token, then the S x S map
        self.positional_embedding = nn.Parameter(torch.randn(spatial ** 2 + 1, embed_dim) / embed_dim ** 0.5)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim)
        self.heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(2).transpose(1, 2)  # (B, HW, C)
        x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1)  # (B, HW+1, C)
        x = x + self.positional_embedding.to(x.dtype)  # (B, HW+1, C)
        b, n, c = x.shape
        h = self.heads
        q = self.q_proj(x[:, :1]).view(b, 1, h, c // h).transpose(1, 2)  # (B, H, 1, C/H)
        k = self.k_proj(x).view(b, n, h, c // h).transpose(1, 2)  # (B, H, N, C/H)
        v = self.v_proj(x).view(b, n, h, c // h).transpose(1, 2)  # (B, H, N, C/H)
        y = F.scaled_dot_product_attention(q, k, v)  # (B, H, 1, C/H)
        return self.c_proj(y.transpose(1, 2).reshape(b, c))  # (B, D)


class ModifiedResNet(nn.Module):
    """ResNet-D-like tower: a 3-conv stem with an average pool, anti-aliased bottlenecks, attention pooling
    (CLIP paper, sec. 2.4). (B, 3, S, S) pixels -> (B, ``output_dim``), S = ``image_size`` px, a multiple of 32.
    Raises ValueError when ``cfg`` has no ``resnet_layers`` (a ViT config)."""

    def __init__(self, image_size: int, cfg: VisionConfig, output_dim: int):
        super().__init__()
        if cfg.resnet_layers is None:
            raise ValueError(f"a ModifiedResNet needs resnet_layers; {cfg} describes a ViT")
        width = cfg.width
        self.conv1 = nn.Conv2d(3, width // 2, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width // 2, width // 2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(width // 2, width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.relu3 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(2)
        self._inplanes = width
        self.layer1 = self._make_layer(width, cfg.resnet_layers[0])  # -> 4W channels at S/4
        self.layer2 = self._make_layer(width * 2, cfg.resnet_layers[1], stride=2)  # 8W at S/8
        self.layer3 = self._make_layer(width * 4, cfg.resnet_layers[2], stride=2)  # 16W at S/16
        self.layer4 = self._make_layer(width * 8, cfg.resnet_layers[3], stride=2)  # 32W at S/32
        self.attnpool = AttentionPool2d(image_size // 32, width * 32, cfg.heads, output_dim)
        self.grad_checkpointing = False
        self._init_weights()

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        layers = [Bottleneck(self._inplanes, planes, stride)]
        self._inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self._inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        std = self.attnpool.c_proj.in_features ** -0.5
        for proj in (self.attnpool.q_proj, self.attnpool.k_proj, self.attnpool.v_proj, self.attnpool.c_proj):
            nn.init.normal_(proj.weight, std=std)
        # Zero-init the last BN of each block so that every residual branch starts as the identity.
        for block in self.modules():
            if isinstance(block, Bottleneck):
                nn.init.zeros_(block.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.bn1(self.conv1(x)))  # (B, W/2, S/2, S/2)
        x = self.relu2(self.bn2(self.conv2(x)))  # (B, W/2, S/2, S/2)
        x = self.avgpool(self.relu3(self.bn3(self.conv3(x))))  # (B, W, S/4, S/4)
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(stage, x, use_reentrant=False)
            else:
                x = stage(x)
        return self.attnpool(x)  # (B, 32W, S/32, S/32) -> (B, D)


class CLIP(nn.Module):
    """The two towers, their projections into D = ``config.embed_dim`` and the temperature (CLIP paper, sec. 2.5).

    Raises ValueError (from the towers) for an inconsistent vision config.
    """

    visual: VisionTransformer | ModifiedResNet

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        if config.vision.is_vit:
            self.visual = VisionTransformer(config.image_size, config.vision, config.embed_dim)
        else:
            self.visual = ModifiedResNet(config.image_size, config.vision, config.embed_dim)
        text: TextConfig = config.text
        self.token_embedding = nn.Embedding(text.vocab_size, text.width)
        self.positional_embedding = nn.Parameter(torch.empty(text.context_length, text.width))  # (L, C)
        self.transformer = Transformer(text.width, text.layers, text.heads, causal=True)
        self.ln_final = LayerNorm(text.width)
        self.text_projection = nn.Parameter(torch.empty(text.width, config.embed_dim))  # (C, D)
        self.logit_scale = nn.Parameter(torch.tensor(LOGIT_SCALE_INIT))  # () log of the inverse temperature
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.text_projection, std=text.width ** -0.5)
        self.transformer.init_weights()

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Recompute activations in the backward pass: per block (transformers), per stage (ResNet)."""
        self.transformer.grad_checkpointing = enabled
        if isinstance(self.visual, VisionTransformer):
            self.visual.transformer.grad_checkpointing = enabled
        else:
            self.visual.grad_checkpointing = enabled

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised pixels -> (B, D) unnormalised embeddings."""
        return self.visual(images)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids, padded with 0 and ending with the end-of-text token (the highest id) ->
        (B, D) unnormalised embeddings, read at the end-of-text position."""
        length = tokens.shape[1]
        if length > self.positional_embedding.shape[0]:
            raise ValueError(f"{length} tokens exceed the context length {self.positional_embedding.shape[0]}")
        x = self.token_embedding(tokens) + self.positional_embedding[:length]  # (B, L, C)
        x = self.ln_final(self.transformer(x))  # (B, L, C)
        x = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]  # (B, C)
        return x @ self.text_projection  # (B, D)

    def scale(self) -> torch.Tensor:
        """exp(logit_scale), clamped at 100 as in the paper so that the temperature cannot collapse."""
        return self.logit_scale.exp().clamp(max=LOGIT_SCALE_MAX)

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, 3, S, S) images and (B, L) tokens -> L2-normalised (B, D) image and (B, D) text features and the
        scalar logit scale, the inputs of the contrastive loss."""
        image_features = F.normalize(self.encode_image(images), dim=-1)  # (B, D)
        text_features = F.normalize(self.encode_text(tokens), dim=-1)  # (B, D)
        return image_features, text_features, self.scale()


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: no weight decay on gains, biases and the temperature (open_clip's rule, ``open_clip_train/
    main.py``: ``p.ndim < 2 or "bn"/"ln"/"bias"/"logit_scale" in name``). Frozen parameters are left out."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exempt = p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name
        (no_decay if exempt else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
