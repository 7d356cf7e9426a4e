"""Fixtures of the trainer's tests: numbered shards with their tokenizer, and one tiny checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.trainer_fixtures import CLASSES, write_numbered
from trainer.checkpoint import save_checkpoint
from trainer.config import MODEL_CONFIGS
from trainer.eval.zeroshot import load_templates
from trainer.model import CLIP
from trainer.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def numbered(tmp_path_factory) -> tuple[Path, Tokenizer]:
    """4 shards of 16 samples captioned 'sample N' (sizes.json in open_clip's convention), and a BPE of them."""
    out = tmp_path_factory.mktemp("numbered")
    captions = write_numbered(out, shards=4, per_shard=16)
    return out, Tokenizer.train(captions * 5, vocab_size=300, context_length=8)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A randomly initialised ``tiny`` CLIP checkpoint whose tokenizer knows the test captions and prompts."""
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint.pt"
    captions = [c for _, templates in CLASSES.values() for c in templates]
    prompts = [t.format(name) for name in CLASSES for t in load_templates("imagenet")]
    tokenizer = Tokenizer.train(captions * 20 + prompts, vocab_size=400, context_length=32)
    config = MODEL_CONFIGS["tiny"].with_vocab_size(tokenizer.vocab_size)
    torch.manual_seed(0)
    save_checkpoint(path, model=CLIP(config), model_config=config, tokenizer=tokenizer, step=0)
    return path
