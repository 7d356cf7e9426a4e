"""Checkpoints: one self-contained file (model config, weights, optimizer, scheduler, step, RNG states, data
position, tokenizer) written to a temporary name, flushed and renamed, so a killed run never leaves a half file
under the final name."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer.atomic import write_atomic
from trainer.config import ModelConfig
from trainer.model import CLIP
from trainer.tokenizer import Tokenizer

CHECKPOINT_NAME = "checkpoint.pt"
TOKENIZER_NAME = "tokenizer.json"
FORMAT = "wit-clip-checkpoint/1"


def save_checkpoint(path: str | os.PathLike, *, model: torch.nn.Module, model_config: ModelConfig,
                    tokenizer: Tokenizer, step: int, optimizer: torch.optim.Optimizer | None = None,
                    scheduler: Any = None, train_config: dict | None = None,
                    data_state: list[dict] | None = None, rng_state: list[dict] | None = None,
                    extra: dict | None = None) -> None:
    """Write everything a resume or an evaluation needs to ``path``, atomically (temporary file, fsync, rename).

    ``data_state`` and ``rng_state`` hold one entry per rank (index = rank); ``extra`` keys join the top level.
    """
    state = {
        "format": FORMAT,
        "model_config": model_config.to_dict(),
        "model": unwrap(model).state_dict(),
        "tokenizer": tokenizer.to_json(),
        "step": step,
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "train_config": train_config,
        "data_state": data_state,
        "rng_state": rng_state,
        **(extra or {}),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())

    write_atomic(path, write)


def rng_state() -> dict:
    """This process's random generators (Python, NumPy, torch, every CUDA device): what a checkpoint stores per
    rank so that a resume draws the same numbers as the run it continues."""
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict) -> None:
    """Put the random generators back where ``rng_state`` found them (CUDA's only where a device is visible)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain CLIP under DDP (``.module``) and torch.compile (``._orig_mod``) wrappers."""
    while True:
        compiled = getattr(model, "_orig_mod", None)  # torch.compile's OptimizedModule keeps the original here
        if isinstance(compiled, torch.nn.Module):
            model = compiled
        elif isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def read_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict:
    """The whole checkpoint dict (``save_checkpoint``'s keys), tensors on ``device``; ``path`` a file or a directory
    holding ``checkpoint.pt``. Raises FileNotFoundError when absent, ValueError for a truncated or foreign file.

    Unpickles with ``weights_only=False`` (RNG states, optimizer): load only checkpoints you trust.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=device, weights_only=False)
    except Exception as e:  # a truncated or foreign file: say which
        raise ValueError(f"{path}: not a readable checkpoint ({e})") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} file")
    return state


def load_model(checkpoint_path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[CLIP, Tokenizer]:
    """The trained CLIP (eval mode, on ``device``) and its tokenizer. ``checkpoint_path`` may be the file or the
    training output directory. The tokenizer comes from inside the checkpoint, else from tokenizer.json beside it."""
    state = read_checkpoint(checkpoint_path, device)
    config = ModelConfig.from_dict(state["model_config"])
    model = CLIP(config)
    model.load_state_dict(state["model"])
    model.to(device).eval()
    if state.get("tokenizer"):
        tokenizer = Tokenizer.from_json(state["tokenizer"])
    else:
        base = Path(checkpoint_path)
        tokenizer = Tokenizer.load((base if base.is_dir() else base.parent) / TOKENIZER_NAME)
    tokenizer.context_length = config.text.context_length
    return model, tokenizer
