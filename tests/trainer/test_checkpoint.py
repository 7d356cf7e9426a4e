"""Checkpoints: written atomically, loaded from the file or the run directory into the same model and
tokenizer; truncated and missing files named; random generators restored exactly."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from trainer.checkpoint import load_model, rng_state, save_checkpoint, set_rng_state
from trainer.config import MODEL_CONFIGS
from trainer.model import CLIP
from trainer.tokenizer import Tokenizer

torch.set_num_threads(1)


def test_checkpoint_round_trip_and_bad_files(tmp_path):
    tokenizer = Tokenizer.train(["a red fox", "a blue bird"] * 20, 300, context_length=32)
    config = MODEL_CONFIGS["tiny"].with_vocab_size(tokenizer.vocab_size)
    model = CLIP(config)
    save_checkpoint(tmp_path / "checkpoint.pt", model=model, model_config=config, tokenizer=tokenizer, step=7)
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary left behind
    loaded, loaded_tokenizer = load_model(tmp_path)  # the directory works as well as the file
    assert not loaded.training and loaded.config == config
    tokens = loaded_tokenizer(["a red fox"])
    images = torch.randn(1, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_text(tokens), model.encode_text(tokens))
        torch.testing.assert_close(loaded.encode_image(images), model.encode_image(images))
    truncated = tmp_path / "cut.pt"
    truncated.write_bytes((tmp_path / "checkpoint.pt").read_bytes()[:1000])
    with pytest.raises(ValueError, match="cut.pt: not a readable checkpoint"):
        load_model(truncated)
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.pt")


def test_rng_state_round_trip():
    saved = rng_state()
    drawn = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(saved)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == drawn
