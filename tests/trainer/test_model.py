"""The CLIP model: the paper's architectures (parameter counts of OpenAI's releases), open_clip's parameter
names, the text tower's causal mask and end-token pooling, the temperature, no decay on gains and biases."""

from __future__ import annotations

import math

import pytest
import torch

from trainer.config import MODEL_CONFIGS, ModelConfig, TextConfig, VisionConfig
from trainer.model import CLIP, parameter_groups

torch.set_num_threads(1)

TINY_RESNET = ModelConfig(
    name="tiny-rn", embed_dim=32, image_size=64,
    vision=VisionConfig(width=16, heads=8, patch_size=None, resnet_layers=(1, 1, 1, 1)),
    text=TextConfig(context_length=16, vocab_size=300, width=32, heads=2, layers=1),
)


@pytest.mark.parametrize("name,params", [("ViT-B/32", 151_277_313), ("ViT-B/16", 149_620_737),
                                         ("RN50", 102_007_137), ("RN101", 119_688_033)])
def test_paper_configs_have_openai_parameter_counts(name, params):
    with torch.device("meta"):
        model = CLIP(MODEL_CONFIGS[name])
    assert sum(p.numel() for p in model.parameters()) == params


def test_parameter_names_follow_openai_clip():
    names = set(CLIP(MODEL_CONFIGS["tiny"]).state_dict())
    for key in ("visual.conv1.weight", "visual.class_embedding", "visual.positional_embedding", "visual.ln_pre.weight",
                "visual.transformer.resblocks.0.attn.in_proj_weight", "visual.transformer.resblocks.1.mlp.c_fc.bias",
                "visual.ln_post.bias", "visual.proj", "token_embedding.weight", "positional_embedding",
                "transformer.resblocks.0.attn.out_proj.weight", "ln_final.weight", "text_projection", "logit_scale"):
        assert key in names, key
    rn = set(CLIP(TINY_RESNET).state_dict())
    for key in ("visual.conv3.weight", "visual.bn3.running_mean", "visual.layer2.0.downsample.0.weight",
                "visual.attnpool.positional_embedding", "visual.attnpool.q_proj.weight", "visual.attnpool.c_proj.bias"):
        assert key in rn, key


@pytest.mark.parametrize("config", [MODEL_CONFIGS["tiny"], TINY_RESNET], ids=["vit", "resnet"])
def test_encoders_shapes_and_forward(config):
    model = CLIP(config).eval()
    images = torch.randn(3, 3, config.image_size, config.image_size)
    tokens = torch.randint(1, config.text.vocab_size - 1, (3, config.text.context_length))
    tokens[:, 5] = config.text.vocab_size - 1
    with torch.no_grad():
        assert model.encode_image(images).shape == (3, config.embed_dim)
        assert model.encode_text(tokens).shape == (3, config.embed_dim)
        img, txt, scale = model(images, tokens)
    torch.testing.assert_close(img.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(txt.norm(dim=-1), torch.ones(3))
    assert math.isclose(float(scale), 1 / 0.07, rel_tol=1e-5)


def test_text_is_causal_and_pooled_at_the_end_token():
    config = MODEL_CONFIGS["tiny"]
    model = CLIP(config).eval()
    end = config.text.vocab_size - 1
    tokens = torch.zeros(2, config.text.context_length, dtype=torch.long)
    tokens[:, :4] = torch.tensor([end - 1, 17, 42, end])
    tokens[1, 6:9] = torch.tensor([5, 6, 7])  # anything after the end token cannot reach it
    with torch.no_grad():
        out = model.encode_text(tokens)
        torch.testing.assert_close(out[0], out[1])
        changed = tokens.clone()
        changed[0, 1] = 18  # but a token before it does
        assert not torch.allclose(model.encode_text(changed)[0], out[0])
    with pytest.raises(ValueError, match="context length"):
        model.encode_text(torch.zeros(1, config.text.context_length + 1, dtype=torch.long))


def test_temperature_is_clamped_at_100():
    model = CLIP(MODEL_CONFIGS["tiny"])
    assert math.isclose(model.logit_scale.item(), math.log(1 / 0.07), rel_tol=1e-6)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(1000.0))
    assert model.scale().item() == 100.0


def test_no_weight_decay_on_gains_biases_and_temperature():
    model = CLIP(MODEL_CONFIGS["tiny"])
    decay, no_decay = parameter_groups(model, 0.2)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    exempt = {names[id(p)] for p in no_decay["params"]}
    assert "logit_scale" in exempt and "ln_final.weight" in exempt and "visual.proj" in decayed
    assert all(not n.endswith("bias") for n in decayed)
    assert decay["weight_decay"] == 0.2 and no_decay["weight_decay"] == 0.0
    assert len(decayed) + len(exempt) == len(list(model.parameters()))


def test_grad_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = CLIP(MODEL_CONFIGS["tiny"]).double()
    images = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    tokens = torch.randint(1, 1023, (4, 32))

    def grads():
        model.zero_grad()
        img, txt, scale = model(images, tokens)
        (scale * img @ txt.t()).sum().backward()
        return [p.grad.clone() for p in model.parameters()]

    plain = grads()
    model.set_grad_checkpointing(True)
    for a, b in zip(plain, grads(), strict=True):
        torch.testing.assert_close(a, b)


