"""``wit export``: a ViT checkpoint as open_clip weights, so open_clip and CLIP_benchmark can evaluate it.

Writes, next to each other:
  FILE                     the state dict in open_clip's ``CLIP`` layout (a plain ``{name: tensor}`` file)
  <model-name>.json        an open_clip model config (``open_clip.add_model_config`` registers it by file stem)
  <model-name>-tokenizer/  the project's BPE as a Hugging Face ``tokenizer.json`` with the start/end template,
                           truncation and padding of ``trainer.tokenizer`` (the config points open_clip at it
                           through ``text_cfg.hf_tokenizer_name``)

Our parameter names were chosen to be OpenAI's and open_clip's, so the mapping renames nothing; what it does
is check every key and shape against open_clip's layout (written out below from open_clip's
VisionTransformer / TextTransformer), strip DDP / torch.compile wrappers and refuse anything else.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer as HFTokenizer
from tokenizers.processors import TemplateProcessing

from trainer.atomic import check_out_file, write_atomic
from trainer.checkpoint import read_checkpoint
from trainer.config import ModelConfig
from trainer.tokenizer import END, PAD, START, Tokenizer
from wit_builder.core import options, strict_json
from wit_builder.core.errors import UsageError
from wit_builder.core.options import option

WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DDP and torch.compile


def _block_layout(prefix: str, width: int, hidden: int) -> dict[str, tuple[int, ...]]:
    """One open_clip ResidualAttentionBlock (nn.MultiheadAttention + c_fc/c_proj MLP)."""
    return {
        f"{prefix}.ln_1.weight": (width,), f"{prefix}.ln_1.bias": (width,),
        f"{prefix}.attn.in_proj_weight": (3 * width, width), f"{prefix}.attn.in_proj_bias": (3 * width,),
        f"{prefix}.attn.out_proj.weight": (width, width), f"{prefix}.attn.out_proj.bias": (width,),
        f"{prefix}.ln_2.weight": (width,), f"{prefix}.ln_2.bias": (width,),
        f"{prefix}.mlp.c_fc.weight": (hidden, width), f"{prefix}.mlp.c_fc.bias": (hidden,),
        f"{prefix}.mlp.c_proj.weight": (width, hidden), f"{prefix}.mlp.c_proj.bias": (width,),
    }


def open_clip_vit_layout(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every key of open_clip's ``CLIP(embed_dim, vision_cfg, text_cfg).state_dict()`` for a ViT image tower
    (learnable positional embeddings, class-token pooling, no attention pooler, text projection without
    bias), with its shape. Non-persistent buffers (the causal ``attn_mask``) are not in a state dict."""
    v, t, d = config.vision, config.text, config.embed_dim
    patch = v.patch_size
    if patch is None:
        raise ValueError(f"model {config.name!r} has a ResNet image tower; only ViT towers are exported")
    grid = config.image_size // patch
    layout: dict[str, tuple[int, ...]] = {
        "visual.class_embedding": (v.width,),
        "visual.positional_embedding": (grid * grid + 1, v.width),
        "visual.proj": (v.width, d),
        "visual.conv1.weight": (v.width, 3, patch, patch),
        "visual.ln_pre.weight": (v.width,), "visual.ln_pre.bias": (v.width,),
    }
    for i in range(v.layers):
        layout.update(_block_layout(f"visual.transformer.resblocks.{i}", v.width, int(v.width * v.mlp_ratio)))
    layout.update({
        "visual.ln_post.weight": (v.width,), "visual.ln_post.bias": (v.width,),
        "positional_embedding": (t.context_length, t.width),
        "text_projection": (t.width, d),
        "logit_scale": (),
        "token_embedding.weight": (t.vocab_size, t.width),
    })
    for i in range(t.layers):
        layout.update(_block_layout(f"transformer.resblocks.{i}", t.width, 4 * t.width))
    layout.update({"ln_final.weight": (t.width,), "ln_final.bias": (t.width,)})
    return layout


def _strip_wrappers(name: str) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in WRAPPER_PREFIXES:
            if name.startswith(prefix):
                name, stripped = name[len(prefix):], True
    return name


def _check_layout(state_dict: Mapping[str, torch.Tensor], layout: Mapping[str, tuple[int, ...]],
                  what: str) -> None:
    missing = [k for k in layout if k not in state_dict]
    unexpected = [k for k in state_dict if k not in layout]
    wrong = [f"{k} {tuple(state_dict[k].shape)} != {layout[k]}" for k in layout
             if k in state_dict and tuple(state_dict[k].shape) != layout[k]]
    if missing or unexpected or wrong:
        raise ValueError(f"{what} does not match open_clip's ViT layout: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}, wrong shapes {wrong[:5]}")


def to_open_clip_state_dict(state_dict: Mapping[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """Our CLIP's state dict (possibly saved from a DDP or compiled model) in open_clip's layout and key order,
    as float32 CPU tensors that own their memory. Raises ValueError naming missing, unexpected or mis-shaped
    keys (at most five of each)."""
    layout = open_clip_vit_layout(config)
    renamed = {_strip_wrappers(k): v for k, v in state_dict.items()}
    _check_layout(renamed, layout, f"the {config.name} checkpoint")
    return {k: renamed[k].detach().to("cpu", torch.float32).contiguous().clone() for k in layout}


def open_clip_model_config(config: ModelConfig, tokenizer_dir: str | None = None) -> dict:
    """open_clip's model-config JSON (``embed_dim``, ``vision_cfg``, ``text_cfg``) for our ViT config."""
    v, t = config.vision, config.text
    text_cfg: dict[str, int | str] = {"context_length": t.context_length, "vocab_size": t.vocab_size, "width": t.width,
                "heads": t.heads, "layers": t.layers}
    if tokenizer_dir is not None:
        text_cfg["hf_tokenizer_name"] = tokenizer_dir
    return {
        "embed_dim": config.embed_dim,
        "quick_gelu": False,  # our blocks use nn.GELU
        "vision_cfg": {"image_size": config.image_size, "layers": v.layers, "width": v.width,
                       "head_width": v.width // v.heads, "mlp_ratio": v.mlp_ratio, "patch_size": v.patch_size},
        "text_cfg": text_cfg,
    }


def hf_tokenizer(tokenizer: Tokenizer) -> HFTokenizer:
    """The project tokenizer as a stand-alone ``tokenizers`` object that adds the start and end tokens,
    truncates and pads to the context length itself (what open_clip's HFTokenizer expects)."""
    bpe = HFTokenizer.from_str(json.loads(tokenizer.to_json())["bpe"])
    bpe.post_processor = TemplateProcessing(
        single=f"{START} $A {END}", special_tokens=[(START, tokenizer.start_id), (END, tokenizer.end_id)])
    bpe.enable_truncation(max_length=tokenizer.context_length)
    bpe.enable_padding(pad_id=tokenizer.pad_id, pad_token=PAD, length=tokenizer.context_length)
    return bpe


@dataclass(frozen=True)
class Exported:
    """What ``export`` wrote: the weights file, the model config JSON, the tokenizer directory, tensors written."""

    weights: Path
    config: Path
    tokenizer: Path
    tensors: int


def export(checkpoint: str, out: str | Path, model_name: str | None = None) -> Exported:
    """Write the weights, the model config and the tokenizer directory (module docstring), each atomically.

    Raises ValueError for a ResNet checkpoint, one without a tokenizer or a state dict off open_clip's layout,
    FileNotFoundError when ``checkpoint`` does not exist.
    """
    state = read_checkpoint(checkpoint)
    config = ModelConfig.from_dict(state["model_config"])
    if not config.vision.is_vit:
        raise ValueError(f"{checkpoint}: model {config.name!r} has a ResNet image tower; wit export writes ViT "
                         "checkpoints only (open_clip's layout for the modified ResNet is not produced)")
    if not state.get("tokenizer"):
        raise ValueError(f"{checkpoint}: holds no tokenizer; re-save it with the trainer of this version")
    weights = to_open_clip_state_dict(state["model"], config)
    tokenizer = Tokenizer.from_json(state["tokenizer"])
    tokenizer.context_length = config.text.context_length
    name = model_name or f"wit-{config.name.replace('/', '-')}"
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tokenizer_dir = out.parent / f"{name}-tokenizer"
    tokenizer_dir.mkdir(exist_ok=True)
    config_path = out.parent / f"{name}.json"

    write_atomic(out, lambda p: torch.save(weights, p))
    hf = hf_tokenizer(tokenizer)
    write_atomic(tokenizer_dir / "tokenizer.json", lambda p: hf.save(str(p)))
    tokenizer_config = {"tokenizer_class": "PreTrainedTokenizerFast", "pad_token": PAD, "bos_token": START,
                        "eos_token": END, "model_max_length": tokenizer.context_length}
    write_atomic(tokenizer_dir / "tokenizer_config.json",
                  lambda p: p.write_text(strict_json.dumps(tokenizer_config, indent=2) + "\n", encoding="utf-8"))
    model_cfg = open_clip_model_config(config, str(tokenizer_dir.resolve()))
    write_atomic(config_path, lambda p: p.write_text(strict_json.dumps(model_cfg, indent=2) + "\n", encoding="utf-8"))
    return Exported(out, config_path, tokenizer_dir, len(weights))


@dataclass(frozen=True)
class ExportOptions:
    """``wit export``'s settings; the flags, defaults and help are generated from these fields."""

    checkpoint: str = option(help="checkpoint file or training output directory")
    out: str = option(metavar="FILE", help="weights file to write, e.g. out/wit-B-32.pt")
    model_name: str | None = option(None, help="open_clip model name (the config's file stem); none: wit-<model>")


OPTIONS = ExportOptions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``wit export``'s flags, generated from ``ExportOptions``."""
    options.add_arguments(parser, OPTIONS)


def run(args: ExportOptions | argparse.Namespace, beam_argv: list[str]) -> int:
    """``wit export``: exit 0 with the files written and how to load them printed.

    Raises UsageError (exit 2, one line) for an unusable checkpoint (``export``'s ValueErrors), FileNotFoundError
    (exit 2, one line) for a missing one.
    """
    try:
        # before reading the checkpoint: fail in a second, leave nothing behind
        check_out_file(args.out, example="open_clip.pt")
        done = export(args.checkpoint, args.out, args.model_name)
    except ValueError as e:  # a checkpoint that cannot be exported; the message names it and why
        raise UsageError(str(e)) from e
    name = done.config.stem
    print("to load in open_clip:\n"
          f"  open_clip.add_model_config({str(done.config)!r})\n"
          f"  model, _, preprocess = open_clip.create_model_and_transforms(\n"
          f"      {name!r}, pretrained={str(done.weights)!r})\n"
          f"  tokenizer = open_clip.get_tokenizer({name!r})  # needs transformers; or trainer.tokenizer.Tokenizer")
    print(f"wit export: {name}: {done.tensors} tensors -> {done.weights}, config {done.config}, "
          f"tokenizer {done.tokenizer}", flush=True)
    return 0
