"""`wit export`: ViT checkpoints in open_clip's state-dict layout, checked against a module built the way
open_clip builds its CLIP (nn.MultiheadAttention, sequence-first blocks, causal mask buffer), against our own
CLIP through the inverse mapping, and against open_clip itself where it is installed."""

from __future__ import annotations

import json
from collections import OrderedDict

import pytest
import torch
from torch import nn

from trainer.checkpoint import load_model, read_checkpoint, save_checkpoint
from trainer.config import ModelConfig, TextConfig, VisionConfig
from trainer.export import (
    export,
    hf_tokenizer,
    open_clip_model_config,
    open_clip_vit_layout,
    to_open_clip_state_dict,
)
from trainer.model import CLIP
from wit_builder.cli import main as wit

# ---- a reference written the way open_clip's model.py / transformer.py write CLIP with a ViT tower ----


class RefBlock(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(width, hidden)), ("gelu", nn.GELU()),
                                              ("c_proj", nn.Linear(hidden, width))]))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:  # (L, N, D)
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False, attn_mask=attn_mask)[0]
        return x + self.mlp(self.ln_2(x))


class RefTransformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.resblocks = nn.ModuleList([RefBlock(width, heads, mlp_ratio) for _ in range(layers)])

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x.transpose(0, 1)  # NLD -> LND
        for block in self.resblocks:
            x = block(x, attn_mask)
        return x.transpose(0, 1)


class RefVisionTransformer(nn.Module):
    def __init__(self, image_size: int, patch: int, width: int, layers: int, heads: int, mlp_ratio: float, dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch, stride=patch, bias=False)
        self.class_embedding = nn.Parameter(torch.zeros(width))
        self.positional_embedding = nn.Parameter(torch.zeros((image_size // patch) ** 2 + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = RefTransformer(width, layers, heads, mlp_ratio)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(torch.zeros(width, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x).reshape(x.shape[0], self.conv1.out_channels, -1).permute(0, 2, 1)
        x = torch.cat([self.class_embedding.expand(x.shape[0], 1, -1), x], dim=1) + self.positional_embedding
        x = self.ln_post(self.transformer(self.ln_pre(x)))
        return x[:, 0] @ self.proj


class OpenClipReference(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        v, t = cfg["vision_cfg"], cfg["text_cfg"]
        self.visual = RefVisionTransformer(v["image_size"], v["patch_size"], v["width"], v["layers"],
                                           v["width"] // v["head_width"], v["mlp_ratio"], cfg["embed_dim"])
        self.transformer = RefTransformer(t["width"], t["layers"], t["heads"])
        self.token_embedding = nn.Embedding(t["vocab_size"], t["width"])
        self.positional_embedding = nn.Parameter(torch.zeros(t["context_length"], t["width"]))
        self.ln_final = nn.LayerNorm(t["width"])
        self.text_projection = nn.Parameter(torch.zeros(t["width"], cfg["embed_dim"]))
        self.logit_scale = nn.Parameter(torch.ones([]))
        mask = torch.full((t["context_length"], t["context_length"]), float("-inf")).triu_(1)
        self.register_buffer("attn_mask", mask, persistent=False)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual(images)

    def encode_text(self, text: torch.Tensor) -> torch.Tensor:
        x = self.token_embedding(text) + self.positional_embedding
        x = self.ln_final(self.transformer(x, attn_mask=self.attn_mask))
        return x[torch.arange(x.shape[0]), text.argmax(dim=-1)] @ self.text_projection


CAPTIONS = ["a photo of a cat.", "a rocket on the launch pad", "", "hot coffee " * 30]


def _inputs(model: CLIP, tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    size = model.config.image_size
    images = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(0))
    return images, tokenizer(CAPTIONS)


def test_layout_names_and_shapes_are_open_clips(tiny_checkpoint):
    model, _ = load_model(tiny_checkpoint)
    config = model.config
    layout = open_clip_vit_layout(config)
    w, t = config.vision.width, config.text.width
    expected_spot_checks = {
        "visual.conv1.weight": (w, 3, 8, 8), "visual.class_embedding": (w,), "visual.positional_embedding": (17, w),
        "visual.ln_pre.weight": (w,), "visual.transformer.resblocks.1.attn.in_proj_weight": (3 * w, w),
        "visual.transformer.resblocks.0.attn.in_proj_bias": (3 * w,),
        "visual.transformer.resblocks.0.attn.out_proj.weight": (w, w),
        "visual.transformer.resblocks.1.mlp.c_fc.weight": (4 * w, w),
        "visual.transformer.resblocks.1.mlp.c_proj.bias": (w,), "visual.ln_post.bias": (w,),
        "visual.proj": (w, config.embed_dim), "token_embedding.weight": (config.text.vocab_size, t),
        "positional_embedding": (32, t), "transformer.resblocks.1.ln_2.weight": (t,),
        "ln_final.weight": (t,), "text_projection": (t, config.embed_dim), "logit_scale": (),
    }
    for key, shape in expected_spot_checks.items():
        assert layout[key] == shape, key
    reference = OpenClipReference(open_clip_model_config(config))
    assert {k: tuple(v.shape) for k, v in reference.state_dict().items()} == layout
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == layout


def test_export_writes_weights_config_and_tokenizer_that_reproduce_the_model(tmp_path, tiny_checkpoint):
    done = export(str(tiny_checkpoint), tmp_path / "out" / "weights.pt", model_name="wit-test")
    assert done.config == tmp_path / "out" / "wit-test.json" and done.tokenizer.is_dir()
    cfg = json.loads(done.config.read_text())
    assert set(cfg) == {"embed_dim", "quick_gelu", "vision_cfg", "text_cfg"}
    assert cfg["vision_cfg"] == {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "mlp_ratio": 4.0,
                                 "patch_size": 8}
    assert cfg["text_cfg"]["hf_tokenizer_name"] == str(done.tokenizer.resolve())
    weights = torch.load(done.weights, weights_only=True)
    assert len(weights) == done.tensors and all(v.dtype == torch.float32 for v in weights.values())

    ours, tokenizer = load_model(tiny_checkpoint)
    images, tokens = _inputs(ours, tokenizer)
    reference = OpenClipReference(cfg).eval()
    reference.load_state_dict(weights, strict=True)
    with torch.no_grad():
        torch.testing.assert_close(reference.encode_image(images), ours.encode_image(images), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(reference.encode_text(tokens), ours.encode_text(tokens), atol=1e-5, rtol=1e-4)

    # the names are ours too: the exported file loads back into our CLIP strictly, bit for bit
    again = CLIP(ours.config).eval()
    again.load_state_dict(weights, strict=True)
    with torch.no_grad():
        assert torch.equal(again.encode_image(images), ours.encode_image(images))
        assert torch.equal(again.encode_text(tokens), ours.encode_text(tokens))

    # the exported tokenizer adds start/end, truncates and pads exactly like ours
    from tokenizers import Tokenizer as HFTokenizer

    exported = HFTokenizer.from_file(str(done.tokenizer / "tokenizer.json"))
    assert [e.ids for e in exported.encode_batch(CAPTIONS)] == tokens.tolist()
    assert [e.ids for e in hf_tokenizer(tokenizer).encode_batch(CAPTIONS)] == tokens.tolist()
    assert json.loads((done.tokenizer / "tokenizer_config.json").read_text())["pad_token"] == "<pad>"


def test_mapping_strips_wrappers_and_rejects_foreign_state_dicts(tiny_checkpoint):
    state = read_checkpoint(tiny_checkpoint)
    config = ModelConfig.from_dict(state["model_config"])
    plain = to_open_clip_state_dict(state["model"], config)
    wrapped = to_open_clip_state_dict({f"module._orig_mod.{k}": v for k, v in state["model"].items()}, config)
    assert list(plain) == list(wrapped) == list(open_clip_vit_layout(config))
    assert all(torch.equal(plain[k], wrapped[k]) for k in plain)
    broken = dict(state["model"])
    broken.pop("visual.proj")
    broken["visual.head.weight"] = torch.zeros(1)
    broken["ln_final.weight"] = torch.zeros(3)
    with pytest.raises(ValueError, match=r"missing \['visual.proj'\], unexpected \['visual.head.weight'\], "
                                         r"wrong shapes \['ln_final.weight \(3,\) != \(64,\)'\]"):
        to_open_clip_state_dict(broken, config)


def test_wit_export_cli_and_refusal_of_resnets(tmp_path, tiny_checkpoint, capsys):
    assert wit(["export", "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "e" / "tiny.pt")]) == 0
    out = capsys.readouterr().out
    assert "open_clip.add_model_config" in out and out.strip().splitlines()[-1].startswith("wit export: wit-tiny:")
    assert (tmp_path / "e" / "wit-tiny.json").exists() and (tmp_path / "e" / "tiny.pt").exists()

    resnet = ModelConfig(name="tiny-rn", embed_dim=32, image_size=64,
                         vision=VisionConfig(width=8, heads=2, patch_size=None, resnet_layers=(1, 1, 1, 1)),
                         text=TextConfig(context_length=16, vocab_size=320, width=32, heads=2, layers=1))
    _, tokenizer = load_model(tiny_checkpoint)
    save_checkpoint(tmp_path / "rn.pt", model=CLIP(resnet), model_config=resnet, tokenizer=tokenizer, step=0)
    assert wit(["export", "--checkpoint", str(tmp_path / "rn.pt"), "--out", str(tmp_path / "rn-out.pt")]) == 2
    assert "ResNet image tower" in capsys.readouterr().err and not (tmp_path / "rn-out.pt").exists()
    assert wit(["export", "--checkpoint", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "x.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_open_clip_loads_the_export(tmp_path, tiny_checkpoint):
    open_clip = pytest.importorskip("open_clip")
    done = export(str(tiny_checkpoint), tmp_path / "wit-oc.pt", model_name="wit-oc-test")
    open_clip.add_model_config(str(done.config))
    model, _, _ = open_clip.create_model_and_transforms("wit-oc-test", pretrained=str(done.weights))
    model.eval()
    ours, tokenizer = load_model(tiny_checkpoint)
    images, tokens = _inputs(ours, tokenizer)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image(images), ours.encode_image(images), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(model.encode_text(tokens), ours.encode_text(tokens), atol=1e-5, rtol=1e-4)
