"""Fixtures for the evaluation tests: a tiny randomly initialised CLIP checkpoint (with a tokenizer trained
on the test captions) and labelled real-photo folders."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.trainer_fixtures import CLASSES
from trainer.checkpoint import save_checkpoint
from trainer.config import MODEL_CONFIGS
from trainer.model import CLIP
from trainer.tokenizer import Tokenizer
from trainer.zeroshot import load_templates


def make_tiny_checkpoint(path: Path, model_name: str = "tiny", seed: int = 0) -> Path:
    captions = [c for _, templates in CLASSES.values() for c in templates]
    prompts = [t.format(name) for name in CLASSES for t in load_templates("imagenet")]
    tokenizer = Tokenizer.train(captions * 20 + prompts, vocab_size=400, context_length=32)
    config = MODEL_CONFIGS[model_name].with_vocab_size(tokenizer.vocab_size)
    torch.manual_seed(seed)
    save_checkpoint(path, model=CLIP(config), model_config=config, tokenizer=tokenizer, step=0)
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "checkpoint.pt")
