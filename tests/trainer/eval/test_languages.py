"""``wit eval`` in any language: template sets per language (English keeps CLIP's 80), class names per language,
one record per language for one image set, retrieval per language, and one-line errors (file:line) for
templates and class-name files that do not fit, a language without templates, another tokenizer."""

from __future__ import annotations

import json
import random
import re

import pytest
import webdataset as wds

from tests.conftest import photo
from tests.trainer.conftest import CLASSES, variant, write_class_folders
from trainer.checkpoint import load_model
from trainer.eval import zeroshot
from trainer.tokenizer import Tokenizer
from wit_builder.cli import main as wit

FOUR = ["cat", "coffee", "galaxy", "rocket"]  # sorted: the folder order
JAPANESE = {"cat": "猫", "coffee": "コーヒー", "galaxy": "銀河", "rocket": "ロケット"}


def test_template_sets_per_language():
    assert zeroshot.load_templates("en") == zeroshot.load_templates("imagenet")
    assert len(zeroshot.load_templates("en")) == 80
    for lang in ("ja", "zh"):
        templates = zeroshot.load_templates(lang)
        assert len(templates) >= 12 and all(t.count("{}") == 1 for t in templates)
        assert zeroshot.language_template_set(lang) == lang
    assert "{}の写真" in zeroshot.load_templates("ja")
    assert {"en", "ja", "zh", "imagenet", "simple"} <= set(zeroshot.shipped_template_sets())
    with pytest.raises(ValueError, match="no prompt template set for language 'ko' .*--templates ko=FILE"):
        zeroshot.language_template_set("ko")


@pytest.fixture
def four_classes(tmp_path):
    root = tmp_path / "heldout"
    write_class_folders(root, per_class=3, image_px=40, classes=FOUR)
    english = tmp_path / "en.txt"
    english.write_text("".join(f"{c}\n" for c in FOUR))
    japanese = tmp_path / "ja.txt"  # folder<TAB>name lines in another order than the folders
    japanese.write_text("".join(f"{c}\t{JAPANESE[c]}\n" for c in reversed(FOUR)), encoding="utf-8")
    return root, english, japanese


def test_one_image_set_evaluated_in_two_languages(four_classes, tmp_path, tiny_checkpoint, capsys):
    root, english, japanese = four_classes
    out = tmp_path / "eval.json"
    assert wit(["eval", "--checkpoint", str(tiny_checkpoint), "--zeroshot", str(root), "--classnames",
                f"en={english}", "--classnames", f"ja={japanese}", "--workers", "0", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    en, ja = doc["results"]
    assert (en["language"], ja["language"]) == ("en", "ja") and doc["language"] == "en"
    assert doc["acc1"] == en["metrics"]["acc1"]
    assert en["inputs"]["templates"] == 80 and en["inputs"]["template_source"] == "en"
    assert ja["inputs"]["templates"] == len(zeroshot.load_templates("ja")) and ja["inputs"]["template_source"] == "ja"
    assert ja["inputs"]["images"] == en["inputs"]["images"] == 12 and ja["inputs"]["classnames"] == str(japanese)
    printed = capsys.readouterr().out
    assert "zeroshot [ja]: 12 images, 4 classes" in printed
    assert "wit eval: zeroshot [en] acc1=" in printed and "; zeroshot [ja] acc1=" in printed  # each one named


def test_each_language_scores_against_its_own_class_order(four_classes, tmp_path, tiny_checkpoint):
    """The same English names listed in another order under another language code, with the same templates,
    score exactly like the English list: each image is scored against its own folder's name."""
    root, english, _ = four_classes
    shuffled = tmp_path / "xx.txt"
    shuffled.write_text("".join(f"{c}\t{c}\n" for c in ("rocket", "cat", "galaxy", "coffee")))
    out = tmp_path / "eval.json"
    assert wit(["eval", "--checkpoint", str(tiny_checkpoint), "--zeroshot", str(root), "--classnames", str(english),
                "--classnames", f"xx={shuffled}", "--templates", "simple", "--workers", "0", "--out", str(out)]) == 0
    en, xx = json.loads(out.read_text())["results"]
    assert xx["language"] == "xx" and en["metrics"] == pytest.approx(xx["metrics"])


@pytest.mark.parametrize("flag,lines,message", [
    ("--templates ja=", ["{}の写真", "no placeholder"], r"t.txt:2: template 'no placeholder' must contain '\{\}'"),
    ("--classnames ko=", ["고양이", "커피", "은하", "로켓"], "no prompt template set for language 'ko'"),
    ("--classnames ja=", ["猫", "コーヒー"], r"t.txt:3: no class name for folder 'galaxy' \(2 names, 4 class"),
    ("--templates de=", ["ein Foto von {}"], r"--templates for language\(s\) \['de'\] that no --classnames"),
])
def test_bad_language_inputs_are_one_line_errors(four_classes, tmp_path, tiny_checkpoint, capsys, flag, lines,
                                                 message):
    root, _, japanese = four_classes
    path = tmp_path / "t.txt"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    option, _, lang = flag.partition(" ")
    args = ["eval", "--checkpoint", str(tiny_checkpoint), "--zeroshot", str(root), "--workers", "0",
            option, f"{lang}{path}"]
    if option != "--classnames":
        args += ["--classnames", f"ja={japanese}"]
    assert wit(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(message, err), err


def test_a_checkpoint_is_evaluated_only_with_its_own_tokenizer(four_classes, tmp_path, tiny_checkpoint, capsys):
    root, _, _ = four_classes
    _, own = load_model(tiny_checkpoint)
    own.save(tmp_path / "own.json")
    other = Tokenizer.train(["a different vocabulary altogether"] * 5, vocab_size=400, context_length=32)
    other.save(tmp_path / "other.json")
    base = ["eval", "--checkpoint", str(tiny_checkpoint), "--zeroshot", str(root), "--workers", "0",
            "--templates", "simple", "--out", str(tmp_path / "e.json")]
    assert wit([*base, "--tokenizer", str(tmp_path / "other.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "other.json" in err
    assert "is not the tokenizer the checkpoint was trained with" in err
    assert wit([*base, "--tokenizer", str(tmp_path / "own.json")]) == 0


def test_retrieval_per_language_on_held_out_shards(tmp_path, tiny_checkpoint):
    """Samples carrying ``lang``: one record for all, then one per language (its images against its captions)."""
    rng = random.Random(3)
    shards = tmp_path / "heldout"
    shards.mkdir()
    counts = {"en": 0, "ja": 0}
    with wds.TarWriter(str(shards / "00000.tar")) as sink:
        for i, name in enumerate(["cat", "coffee", "rocket", "galaxy"] * 3):
            lang = "ja" if i % 3 == 0 else "en"
            counts[lang] += 1
            caption = JAPANESE[name] + "の写真" if lang == "ja" else CLASSES[name][1][0]
            sink.write({"__key__": f"{i:05d}", "jpg": variant(photo(CLASSES[name][0]), rng, 40), "txt": caption,
                        "json": {"uid": str(i), "lang": lang, "queries": [name]}})
    out = tmp_path / "r.json"
    assert wit(["eval", "--checkpoint", str(tiny_checkpoint), "--retrieval", str(shards), "--workers", "0",
                "--out", str(out)]) == 0
    records = json.loads(out.read_text())["results"]
    assert [r["language"] for r in records] == ["all", "en", "ja"]
    assert records[0]["inputs"]["images"] == 12
    for record in records[1:]:
        assert record["inputs"] == {"images": counts[record["language"]], "captions": counts[record["language"]]}
        assert all(0 <= v <= 1 for v in record["metrics"].values())
    # with 4 Japanese images, recall@5 and @10 are certain
    assert records[2]["metrics"]["image_retrieval_recall@5"] == 1.0
