"""Labelled image folders: labels line up with class names (plain and mapped --classnames files), unreadable
images are skipped and listed, missing and empty folders are refused; end to end with an oracle encoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trainer.eval import image_folder, zeroshot

COLOURS = {"red_apple": (220, 20, 20), "green_leaf": (20, 200, 30), "blue_sea": (10, 30, 230)}


def _colour_folder(root: Path) -> Path:
    for name, rgb in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (20 + i, 16), tuple(max(0, c - 10 * i) for c in rgb)).save(root / name / f"{i}.png")
    (root / "red_apple" / "truncated.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "blue_sea" / "README.md").write_text("not an image")
    return root


def _oracle(names: list[str]):
    """'Encoders' that map an image to its mean colour and a prompt to the colour its class name says."""
    colours = (torch.tensor([COLOURS[n.replace(" ", "_")] for n in names], dtype=torch.float32) / 255 - 0.45) / 0.27

    def encode_image(images: torch.Tensor) -> torch.Tensor:
        return images.mean(dim=(2, 3))  # (B, 3)

    def tokenize(texts: list[str]) -> torch.Tensor:
        return torch.tensor([[next(i for i, n in enumerate(names) if n in t)] for t in texts])  # (B, 1)

    def encode_text(tokens: torch.Tensor) -> torch.Tensor:
        return colours[tokens[:, 0]]  # (B, 3)

    return encode_image, tokenize, encode_text


def _to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy((np.asarray(image.convert("RGB").resize((8, 8)), dtype=np.float32) / 255 - 0.45) / 0.27
                            ).permute(2, 0, 1)


def test_image_folder_labels_line_up_with_class_names(tmp_path):
    folder = image_folder.scan_image_folder(_colour_folder(tmp_path / "colours"))
    assert folder.classnames == ["blue sea", "green leaf", "red apple"]
    assert len(folder.samples) == 10 and [p.name for p in folder.ignored] == ["README.md"]
    encode_image, tokenize, encode_text = _oracle(folder.classnames)
    features, labels, errors = image_folder.encode_image_folder(folder, encode_image, _to_tensor, batch_size=4)
    assert len(errors) == 1 and "truncated.jpg" in errors[0]
    assert features.shape == (9, 3) and labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    classifier = zeroshot.build_classifier(encode_text, tokenize, folder.classnames, ["a photo of a {}."])
    metrics = zeroshot.classification_metrics(zeroshot.zeroshot_logits(features, classifier), labels)
    assert metrics == {"acc1": 1.0, "acc5": 1.0, "mean_per_class_recall": 1.0}


def test_classnames_file_plain_and_mapped(tmp_path):
    root = _colour_folder(tmp_path / "colours")
    plain = tmp_path / "plain.txt"
    plain.write_text("ocean\nleaf\napple\n")
    assert image_folder.scan_image_folder(root, plain).classnames == ["ocean", "leaf", "apple"]
    mapped = tmp_path / "mapped.txt"
    mapped.write_text("red_apple\tred apple\nsomething_else\tpurple grape\n"
                      "blue_sea\tblue sea\ngreen_leaf\tgreen leaf\n")
    folder = image_folder.scan_image_folder(root, mapped)
    assert folder.classnames == ["red apple", "purple grape", "blue sea", "green leaf"]
    assert sorted({label for _, label in folder.samples}) == [0, 2, 3]  # the extra class competes, has no images
    short = tmp_path / "short.txt"
    short.write_text("ocean\nleaf\n")
    with pytest.raises(ValueError, match=r"short.txt:3: no class name for folder 'red_apple' \(2 names, 3 class"):
        image_folder.scan_image_folder(root, short)
    long = tmp_path / "long.txt"
    long.write_text("ocean\n# a comment\nleaf\napple\ngrape\n")
    with pytest.raises(ValueError, match=r"long.txt:5: class name 'grape' has no image folder \(4 names, 3 class"):
        image_folder.scan_image_folder(root, long)
    twice = tmp_path / "twice.txt"
    twice.write_text("red_apple\tred apple\nblue_sea\tsea\ngreen_leaf\tleaf\nblue_sea\tocean\n")
    with pytest.raises(ValueError, match=r"twice.txt:4: folder 'blue_sea' is listed twice \(first on line 2\)"):
        image_folder.scan_image_folder(root, twice)
    bom = tmp_path / "bom.txt"  # as Windows Notepad saves UTF-8: the mark is not part of the first name
    bom.write_text("ocean\nleaf\napple\n", encoding="utf-8-sig")
    assert image_folder.scan_image_folder(root, bom).classnames == ["ocean", "leaf", "apple"]
    partial = tmp_path / "partial.txt"
    partial.write_text("red_apple\tred apple\n")
    with pytest.raises(ValueError, match="does not list the class folder"):
        image_folder.scan_image_folder(root, partial)


def test_scan_rejects_missing_and_empty_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        image_folder.scan_image_folder(tmp_path / "nope")
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="no class folders"):
        image_folder.scan_image_folder(tmp_path / "flat")
    (tmp_path / "flat" / "cat").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        image_folder.scan_image_folder(tmp_path / "flat")
