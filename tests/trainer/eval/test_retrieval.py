"""Image-text retrieval: recall@K math (multi-caption, chunked), shard reading with bad samples."""

from __future__ import annotations

import io
import json

import pytest
import torch
import webdataset as wds
from PIL import Image

from trainer.eval import retrieval


def test_recall_on_hand_made_features():
    e1, e2, e3 = torch.eye(3)
    images = torch.stack([e1, e2, e3])
    texts = torch.stack([e1, e2 + 0.5 * e1, e3, e3 + 0.1 * e1])
    owners = torch.tensor([0, 0, 1, 2])  # image 0 has two captions
    # text -> image ranks: t0 0, t1 1 (image 1 beats its image 0), t2 1 (image 2 beats image 1), t3 0
    # image -> text ranks: i0 0 (t0), i1 1 (t1 beats its t2, scored 0), i2 1 (t2 beats its t3)
    for chunk in (1, 2, 1000):
        metrics = retrieval.retrieval_recall(images, texts, owners, ks=(1, 2, 5), chunk_size=chunk)
        assert metrics == {
            "image_retrieval_recall@1": 0.5, "text_retrieval_recall@1": pytest.approx(1 / 3),
            "image_retrieval_recall@2": 1.0, "text_retrieval_recall@2": 1.0,
            "image_retrieval_recall@5": 1.0, "text_retrieval_recall@5": 1.0,
        }


def _brute_force(images, texts, owners, k):
    sims = torch.nn.functional.normalize(texts, dim=-1) @ torch.nn.functional.normalize(images, dim=-1).T  # (T, N)
    t2i = [(owners[t].item() in sims[t].topk(k).indices.tolist()) for t in range(len(texts))]
    i2t = [bool(set(sims[:, i].topk(k).indices.tolist()) & set((owners == i).nonzero().flatten().tolist()))
           for i in range(len(images))]
    return sum(t2i) / len(t2i), sum(i2t) / len(i2t)


def test_chunked_recall_matches_brute_force_on_random_features():
    g = torch.Generator().manual_seed(0)
    images = torch.randn(40, 16, generator=g)
    owners = torch.cat([torch.arange(40), torch.randint(0, 40, (50,), generator=g)])  # 1-3 captions per image
    texts = images[owners] + 3.0 * torch.randn(len(owners), 16, generator=g)  # noisy captions
    for chunk in (3, 17, 4096):
        metrics = retrieval.retrieval_recall(images, texts, owners, chunk_size=chunk)
        for k in (1, 5, 10):
            t2i, i2t = _brute_force(images, texts, owners, k)
            assert metrics[f"image_retrieval_recall@{k}"] == pytest.approx(t2i)
            assert metrics[f"text_retrieval_recall@{k}"] == pytest.approx(i2t)
    assert 0 < metrics["image_retrieval_recall@1"] < metrics["image_retrieval_recall@10"] < 1


def test_recall_rejects_images_without_captions():
    with pytest.raises(ValueError, match="at least one caption"):
        retrieval.retrieval_recall(torch.randn(3, 4), torch.randn(2, 4), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match=r"must lie in \[0, 3\)"):
        retrieval.retrieval_recall(torch.randn(3, 4), torch.randn(4, 4), torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="one image index per caption"):
        retrieval.retrieval_recall(torch.randn(3, 4), torch.randn(2, 4), torch.tensor([0, 1, 2]))


def _jpeg(rgb: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), rgb).save(out, format="JPEG")
    return out.getvalue()


COLOURS = {"red": (230, 10, 10), "green": (10, 220, 10), "blue": (10, 10, 230), "white": (240, 240, 240)}


def _write_colour_shards(tmp_path):
    """One good shard (multi-line and json captions) with four bad samples, and a truncated shard."""
    good = tmp_path / "00000.tar"
    with wds.TarWriter(str(good)) as sink:
        sink.write({"__key__": "s0", "jpg": _jpeg(COLOURS["red"]), "txt": "a red square\nsomething red"})
        sink.write({"__key__": "s1", "jpg": _jpeg(COLOURS["green"]), "txt": "green"})
        sink.write({"__key__": "s2", "png": _jpeg(COLOURS["blue"]), "json": json.dumps({"caption": "blue"})})
        sink.write({"__key__": "bad0", "jpg": b"\xff\xd8\xff not a jpeg", "txt": "broken"})
        sink.write({"__key__": "bad1", "txt": "caption without image"})
        sink.write({"__key__": "bad2", "jpg": _jpeg(COLOURS["white"]), "txt": "  \n "})
        sink.write({"__key__": "s3", "jpg": _jpeg(COLOURS["white"]),
                    "json": json.dumps({"captions": ["white", "snow"]})})
    data = good.read_bytes()
    (tmp_path / "00001.tar").write_bytes(data[: len(data) // 2])  # cut mid-member
    return [str(good), str(tmp_path / "00001.tar")]


def test_shard_reading_skips_and_counts_bad_samples(tmp_path):
    urls = _write_colour_shards(tmp_path)
    stats = retrieval.ReadStats()
    samples = list(retrieval.read_shard_samples(urls, stats))
    assert [(s.key, s.captions) for s in samples[:4]] == [
        ("s0", ["a red square", "something red"]), ("s1", ["green"]), ("s2", ["blue"]), ("s3", ["white", "snow"])]
    # The truncated copy yields its complete leading samples again, then a read error naming it.
    assert [s.key for s in samples[4:]] == ["s0", "s1", "s2"] and stats.samples == 7
    assert stats.skipped["no_image"] == 1 and stats.skipped["no_caption"] == 1 and stats.skipped["corrupt_image"] == 1
    assert stats.skipped["unreadable_shard"] >= 1
    assert any("00001.tar" in e for e in stats.examples if "unreadable_shard" in e)
    assert any(e.endswith("00000.tar:bad1: no_image") for e in stats.examples)


def test_encode_shards_with_oracle_encoders_retrieves_perfectly(tmp_path):
    urls = _write_colour_shards(tmp_path)[:1]
    vocabulary = list(COLOURS) + ["square", "something", "snow", "a"]

    def transform(image: Image.Image) -> torch.Tensor:
        return torch.tensor(image.getpixel((8, 8)), dtype=torch.float32)  # (3,)

    def tokenize(texts: list[str]) -> torch.Tensor:
        return torch.tensor([[vocabulary.index(w) for w in t.split()][:1] for t in texts])  # first word

    colour_of = {"red": "red", "a": "red", "something": "red", "green": "green", "blue": "blue", "white": "white",
                 "snow": "white"}

    def encode_text(tokens: torch.Tensor) -> torch.Tensor:
        return torch.tensor([COLOURS[colour_of[vocabulary[i]]] for i in tokens[:, 0]], dtype=torch.float32) - 120

    images, texts, owners, stats = retrieval.encode_shards(
        urls, lambda x: x - 120, encode_text, transform, tokenize, batch_size=2)
    assert images.shape == (4, 3) and texts.shape == (6, 3) and owners.tolist() == [0, 0, 1, 2, 3, 3]
    metrics = retrieval.retrieval_recall(images, texts, owners)
    assert metrics["image_retrieval_recall@1"] == 1.0 and metrics["text_retrieval_recall@1"] == 1.0
    assert stats.samples == 4 and stats.skipped == {"corrupt_image": 1, "no_image": 1, "no_caption": 1}


def test_encode_shards_in_worker_processes_counts_every_skip(tmp_path):
    urls = _write_colour_shards(tmp_path)
    second = tmp_path / "00002.tar"
    second.write_bytes((tmp_path / "00000.tar").read_bytes())

    def transform(image: Image.Image) -> torch.Tensor:
        return torch.tensor(image.getpixel((8, 8)), dtype=torch.float32)

    def tokenize(texts: list[str]) -> torch.Tensor:
        return torch.tensor([[len(t)] for t in texts])

    args = ([urls[0], str(second)], lambda x: x, lambda t: t.float().repeat(1, 3), transform, tokenize)
    one = retrieval.encode_shards(*args, batch_size=3)
    two = retrieval.encode_shards(*args, batch_size=3, workers=2)
    assert two[3].samples == one[3].samples == 8 and two[3].skipped == one[3].skipped == {
        "corrupt_image": 2, "no_image": 2, "no_caption": 2}
    # the same samples, whatever the interleaving of the two workers
    assert sorted(map(tuple, two[0].tolist())) == sorted(map(tuple, one[0].tolist()))
    assert two[1].shape == one[1].shape == (12, 3)
