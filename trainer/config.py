"""Typed, validated configuration: the model architecture (saved inside every checkpoint so that a resume or an
evaluation rebuilds the same network) and the training options."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from wit_builder.core.options import option


@dataclass(frozen=True)
class VisionConfig:
    """The image tower. ``patch_size`` set: a ViT with ``layers`` blocks; ``patch_size`` None: the paper's
    modified ResNet with ``resnet_layers`` bottlenecks per stage and stem width ``width``."""

    width: int                                   # ViT: channels per token; ResNet: stem width (output: 32x)
    layers: int = 12                             # ViT blocks
    heads: int = 12                              # ViT attention heads / ResNet attention-pool heads
    patch_size: int | None = 32                  # px per patch side; None: the ResNet tower
    resnet_layers: tuple[int, ...] | None = None  # bottlenecks in each of the 4 stages
    mlp_ratio: float = 4.0                       # ViT MLP hidden width / width

    @property
    def is_vit(self) -> bool:
        """A ViT tower (``patch_size`` set), else the modified ResNet."""
        return self.patch_size is not None

    def __post_init__(self) -> None:
        if self.width <= 0:
            raise ValueError(f"vision width must be positive, got {self.width}")
        if self.patch_size is not None:  # ViT
            if self.resnet_layers is not None:
                raise ValueError("a vision config has either patch_size (ViT) or resnet_layers (ResNet), not both")
            if self.layers <= 0 or self.heads <= 0 or self.patch_size <= 0:
                raise ValueError(f"ViT layers, heads and patch_size must be positive: {self}")
            if self.width % self.heads:
                raise ValueError(f"ViT width {self.width} is not divisible by heads {self.heads}")
        else:
            if not self.resnet_layers or len(self.resnet_layers) != 4 or min(self.resnet_layers) <= 0:
                raise ValueError(f"a ResNet needs four positive stage depths, got {self.resnet_layers}")
            object.__setattr__(self, "resnet_layers", tuple(self.resnet_layers))
            if (self.width * 32) % self.heads:
                raise ValueError(f"ResNet output width {self.width * 32} is not divisible by heads {self.heads}")


@dataclass(frozen=True)
class TextConfig:
    """The causal text transformer; pooled at the end-of-text token (the highest id, as in OpenAI's CLIP)."""

    context_length: int = 77
    vocab_size: int = 49408
    width: int = 512
    heads: int = 8
    layers: int = 12

    def __post_init__(self) -> None:
        if min(self.context_length, self.vocab_size, self.width, self.heads, self.layers) <= 0:
            raise ValueError(f"text config values must be positive: {self}")
        if self.context_length < 3:
            raise ValueError("context_length must hold at least the start token, one token and the end token")
        if self.width % self.heads:
            raise ValueError(f"text width {self.width} is not divisible by heads {self.heads}")


@dataclass(frozen=True)
class ModelConfig:
    """A whole CLIP: the towers, the shared embedding width and the input image side; the table below holds the
    paper's models (Radford et al. 2021, Tables 19-20) and ``tiny``. Raises ValueError for inconsistent sizes."""

    name: str
    embed_dim: int      # D, the shared embedding width
    image_size: int     # px per side of the square input
    vision: VisionConfig
    text: TextConfig = field(default_factory=TextConfig)

    def __post_init__(self) -> None:
        if self.embed_dim <= 0 or self.image_size <= 0:
            raise ValueError(f"embed_dim and image_size must be positive: {self.name}")
        if self.vision.patch_size is not None and self.image_size % self.vision.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.vision.patch_size}")
        if not self.vision.is_vit and self.image_size % 32:
            raise ValueError(f"a ResNet tower needs image_size divisible by 32, got {self.image_size}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (what checkpoints store)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """The inverse of ``to_dict``; raises KeyError/TypeError for a missing or unknown field, ValueError for bad
        values."""
        vision = dict(d["vision"])
        if vision.get("resnet_layers") is not None:
            vision["resnet_layers"] = tuple(vision["resnet_layers"])
        return cls(
            name=d["name"], embed_dim=d["embed_dim"], image_size=d["image_size"],
            vision=VisionConfig(**vision), text=TextConfig(**d["text"]),
        )

    def with_vocab_size(self, vocab_size: int) -> ModelConfig:
        """The same architecture sized for a tokenizer with ``vocab_size`` ids."""
        return dataclasses.replace(self, text=dataclasses.replace(self.text, vocab_size=vocab_size))


def _resnet(name: str, embed_dim: int, image_size: int, layers: tuple[int, ...], width: int,
            text_width: int) -> ModelConfig:
    # As in OpenAI's CLIP: attention-pool heads = width * 32 / 64, text heads = text width / 64.
    return ModelConfig(
        name=name, embed_dim=embed_dim, image_size=image_size,
        vision=VisionConfig(width=width, heads=width * 32 // 64, patch_size=None, resnet_layers=layers),
        text=TextConfig(width=text_width, heads=text_width // 64),
    )


MODEL_CONFIGS: dict[str, ModelConfig] = {
    # Trains on a laptop CPU in minutes: 32 px images in 4x4 patches of 8 px, two thin blocks per tower.
    "tiny": ModelConfig(
        name="tiny", embed_dim=64, image_size=32,
        vision=VisionConfig(width=64, layers=2, heads=2, patch_size=8),
        text=TextConfig(context_length=32, vocab_size=1024, width=64, heads=2, layers=2),
    ),
    "ViT-B/32": ModelConfig(name="ViT-B/32", embed_dim=512, image_size=224,
                            vision=VisionConfig(width=768, layers=12, heads=12, patch_size=32)),
    "ViT-B/16": ModelConfig(name="ViT-B/16", embed_dim=512, image_size=224,
                            vision=VisionConfig(width=768, layers=12, heads=12, patch_size=16)),
    "ViT-L/14": ModelConfig(name="ViT-L/14", embed_dim=768, image_size=224,
                            vision=VisionConfig(width=1024, layers=24, heads=16, patch_size=14),
                            text=TextConfig(width=768, heads=12)),
    "RN50": _resnet("RN50", 1024, 224, (3, 4, 6, 3), 64, 512),
    "RN101": _resnet("RN101", 512, 224, (3, 4, 23, 3), 64, 512),
    "RN50x4": _resnet("RN50x4", 640, 288, (4, 6, 10, 6), 80, 640),
    "RN50x16": _resnet("RN50x16", 768, 384, (6, 8, 18, 8), 96, 768),
    "RN50x64": _resnet("RN50x64", 1024, 448, (3, 15, 36, 10), 128, 1024),
}


def model_config(name: str) -> ModelConfig:
    """The named entry of ``MODEL_CONFIGS``; raises ValueError listing the known names."""
    try:
        return MODEL_CONFIGS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_CONFIGS)}") from None


@dataclass
class TrainConfig:
    """Everything ``wit train`` needs besides the model architecture; saved in every checkpoint."""

    shards: str = option(help="directory of .tar shards, a glob, or brace pattern/URLs (gs://, s3://, https://)")
    out: str = option(help="output directory: checkpoint.pt, tokenizer.json, metrics.jsonl, loss.png")
    model: str = option("tiny", help="model config name (tiny, ViT-B/32, ViT-B/16, ViT-L/14, RN50, ...)")
    batch_size: int = option(64, unit="samples", help="global batch size (split over ranks)")
    steps: int = option(300, unit="steps", help="optimizer steps in total")
    device: str = option("cpu", choices=("cpu", "cuda"), help="where to train")
    lr: float = option(5e-4, help="peak learning rate of AdamW")
    warmup: int = option(50, unit="steps", help="linear warm-up steps before the cosine decay")
    weight_decay: float = option(0.2, flag="--wd", aliases=("--weight-decay",),
                                 help="AdamW weight decay (not on gains/biases/scale)")
    beta1: float = option(0.9, cli=False, help="AdamW beta1")
    beta2: float = option(0.98, cli=False, help="AdamW beta2")
    eps: float = option(1e-6, cli=False, help="AdamW epsilon")
    grad_clip: float = option(0.0, help="clip the gradient norm (0: off)")
    on_nonfinite: str = option("stop", choices=("stop", "skip"),
                               help="a batch whose loss or gradient is not finite (nan, inf): stop the run with the "
                                    "last good checkpoint kept (exit 1), or skip the batch without an optimizer step "
                                    "(the run stops after MAX_NONFINITE_IN_A_ROW such batches in a row)")
    precision: str = option("fp32", choices=("bf16", "fp32"), help="bf16 autocast or full fp32")
    compile: bool = option(False, help="torch.compile the model")
    grad_checkpointing: bool = option(False, help="recompute activations in the backward pass")
    accum_steps: int = option(1, help="split each batch in this many micro-batches (same loss)")
    overwrite: bool = option(False, help="train into an --out that holds files wit did not write (no run marker "
                                         ".wit-run.json) or another command's output (without it such an --out is "
                                         "refused)")
    checkpoint_every: int = option(100, unit="steps", help="write OUT/checkpoint.pt every N steps (and at the end)")
    log_every: int = option(10, unit="steps", help="log a metrics line every N steps")
    workers: int = option(2, unit="processes", help="data loader processes per rank (0: read in the training process)")
    seed: int = option(0, help="seed of the model init and the data order")
    loss: str = option("clip", choices=("clip", "siglip"), help="contrastive loss")
    tokenizer: str | None = option(None, help="a tokenizer.json to use (ours, or any Hugging Face tokenizer.json, "
                                              "e.g. a multilingual one); none: learn a BPE from the shards' captions")
    vocab_size: int | None = option(None, help="vocabulary size of the BPE learnt from the captions")
    shuffle_buffer: int = option(1000, unit="samples", help="samples in each stream's shuffle buffer")
    resampled: bool = option(False, help="draw shards with replacement (open_clip's multi-GPU mode)")
    samples_per_epoch: int | None = option(None, unit="samples", help="none: the total of sizes.json")
    allow_repeat: bool = option(False, help="allow an epoch larger than the data (repeats samples, warns)")
    gpu_decode: bool = option(False, help="decode JPEGs on the GPU with torchvision/nvJPEG (needs torchvision)")
    resume: bool = option(False, help="continue exactly from OUT/checkpoint.pt when it exists")
    per_query_cap: int | None = option(None, unit="samples per query",
                                       help="load-time balance: keep at most this many samples per query "
                                            "(trainer/balance.py; finalize's rule with the same --seed)")
    balance: str = option("hard", choices=("hard", "probabilistic"),
                          help="load-time balance mode: hard (finalize's rule) or probabilistic (MetaCLIP's coin)")
    language_caps: str | None = option(None, metavar="LANG=N,...|FILE",
                                       help="load-time balance per language (MetaCLIP 2): (language, query) "
                                            "entries, each language capped at its N ('en=20000,ja=1200', a JSON "
                                            "file of language -> cap, or build-pairs' stats.json: the caps it "
                                            "used); other languages keep --per-query-cap")

    def __post_init__(self) -> None:
        checks = [  # (broken, what the user reads); every broken setting is named at once
            (self.batch_size <= 0, f"--batch-size must be positive, got {self.batch_size}"),
            (self.steps <= 0, f"--steps must be positive, got {self.steps}"),
            (self.accum_steps <= 0 or self.batch_size % max(self.accum_steps, 1) != 0,
             f"--accum-steps {self.accum_steps} must divide --batch-size {self.batch_size}"),
            (self.warmup < 0, f"--warmup must be >= 0, got {self.warmup}"),
            (self.lr <= 0, f"--lr must be positive, got {self.lr}"),
            (self.weight_decay < 0, f"--wd must be >= 0, got {self.weight_decay}"),
            (self.precision not in ("bf16", "fp32"), f"--precision must be bf16 or fp32, got {self.precision!r}"),
            (self.loss not in ("clip", "siglip"), f"--loss must be clip or siglip, got {self.loss!r}"),
            (self.device not in ("cpu", "cuda"), f"--device must be cpu or cuda, got {self.device!r}"),
            (self.checkpoint_every <= 0 or self.log_every <= 0, "--checkpoint-every and --log-every must be positive"),
            (self.workers < 0, f"--workers must be >= 0, got {self.workers}"),
            (self.vocab_size is not None and self.vocab_size < 300,
             f"--vocab-size must be at least 300 (256 bytes + specials), got {self.vocab_size}"),
            (self.samples_per_epoch is not None and self.samples_per_epoch <= 0,
             f"--samples-per-epoch must be positive, got {self.samples_per_epoch}"),
            (self.per_query_cap is not None and self.per_query_cap < 1,
             f"--per-query-cap must be >= 1, got {self.per_query_cap}"),
            (self.balance not in ("hard", "probabilistic"),
             f"--balance must be hard or probabilistic, got {self.balance!r}"),
            (self.gpu_decode and self.device != "cuda", "--gpu-decode needs --device cuda"),
            (self.language_caps is not None and self.per_query_cap is None,
             "--language-caps needs --per-query-cap (the cap of the languages it does not list)"),
        ]
        problems = [message for broken, message in checks if broken]
        if problems:
            raise ValueError("; ".join(problems))
        model_config(self.model)  # an unknown name fails here, with the list of known ones
        if self.language_caps is not None:
            from trainer.balance import parse_language_caps  # a bad item or file fails here, named

            parse_language_caps(self.language_caps)
