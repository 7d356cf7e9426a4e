"""Configuration: every model config survives the round trip through a checkpoint's dict; inconsistent sizes
and bad training options are refused with a message naming them."""

from __future__ import annotations

import dataclasses

import pytest

from trainer.config import MODEL_CONFIGS, ModelConfig, TextConfig, TrainConfig, VisionConfig


def test_config_validation_and_round_trip():
    for config in MODEL_CONFIGS.values():
        assert ModelConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="not a multiple of patch_size"):
        dataclasses.replace(MODEL_CONFIGS["tiny"], image_size=36)
    with pytest.raises(ValueError, match="divisible by heads"):
        TextConfig(width=100, heads=3)
    with pytest.raises(ValueError, match="four positive stage depths"):
        VisionConfig(width=64, patch_size=None, resnet_layers=(3, 4))
    with pytest.raises(ValueError, match="unknown model 'ViT-Z'"):
        TrainConfig(shards="x", out="y", model="ViT-Z")
    with pytest.raises(ValueError, match="--accum-steps 3 must divide --batch-size 64"):
        TrainConfig(shards="x", out="y", accum_steps=3)
