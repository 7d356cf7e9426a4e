"""Per-language load-time balance (``wit train --per-query-cap N --language-caps en=A,ja=B``): the entries are
(language, query) pairs, each language capped at its own cap (MetaCLIP 2's per-language rule), and every epoch
in ``epochs.jsonl`` counts the samples trained and left over the cap per language."""

from __future__ import annotations

import hashlib
import io
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image

from tests import references
from trainer.balance import entry, parse_language_caps
from trainer.data import Loader, describe_epoch, make_plan
from trainer.tokenizer import Tokenizer
from wit_builder.cli import main as wit

torch.set_num_threads(1)
# The same written query in two languages is two entries: "cat" is also matched by Japanese captions here.
QUERIES = {"en": ["cat", "dog", "moon"], "ja": ["猫", "犬", "cat"]}


def _jpeg(seed: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(out, "JPEG")
    return out.getvalue()


@pytest.fixture(scope="module")
def worldwide(tmp_path_factory) -> tuple[Path, list[tuple[str, list[str], str]], Tokenizer]:
    """2 shards of 50 samples: 70 English and 30 Japanese captions (json ``lang``), 1-2 queries each, skewed to
    the first query of each language."""
    out = tmp_path_factory.mktemp("worldwide")
    rng = random.Random(5)
    samples, sizes = [], {}
    for s in range(2):
        with wds.TarWriter(str(out / f"{s:05d}.tar")) as sink:
            for i in range(50):
                lang = "en" if rng.random() < 0.7 else "ja"
                uid = hashlib.sha1(f"{s}/{i}".encode()).hexdigest()[:16]
                first = QUERIES[lang][0] if rng.random() < 0.6 else rng.choice(QUERIES[lang][1:])
                queries = sorted({first, *rng.sample(QUERIES[lang], rng.randint(0, 1))})
                samples.append((uid, queries, lang))
                key = f"{s:05d}{i:04d}"
                sink.write({"__key__": key, "jpg": _jpeg(s * 50 + i), "txt": f"uid {uid}",
                            "json": {"key": key, "uid": uid, "queries": queries, "lang": lang}})
        sizes[f"{s:05d}"] = 50
    (out / "sizes.json").write_text(json.dumps(sizes))
    tokenizer = Tokenizer.train([f"uid {u}" for u, _, _ in samples] * 3, vocab_size=400, context_length=40)
    return out, samples, tokenizer


def _reference(samples, caps: dict[str, int], default: int, seed: int) -> set[str]:
    """Brute force: each (language, query) entry keeps its language cap's smallest-ranked samples; a sample stays
    when any of its entries keeps it."""
    kept = set()
    for lang in {lang for _, _, lang in samples}:
        in_lang = [(uid, queries) for uid, queries, sample_lang in samples if sample_lang == lang]
        kept |= references.reference_kept(in_lang, caps.get(lang, default), seed)
    return kept


def _uids(loader: Loader, tokenizer: Tokenizer) -> list[str]:
    return [tokenizer.decode(row.tolist()).strip().removeprefix("uid ").replace(" ", "")
            for batch in loader.epoch_batches() for row in batch["tokens"]]


@pytest.mark.parametrize("caps,default,workers", [({"en": 6, "ja": 3}, 100, 0), ({"ja": 2}, 9, 2)])
def test_each_language_is_capped_at_its_own_cap(worldwide, caps, default, workers):
    shards, samples, tokenizer = worldwide
    expected = _reference(samples, caps, default, seed=1)
    plan = make_plan(str(shards), batch_size=1, image_size=16, workers=workers, shuffle_buffer=8, seed=1,
                     per_query_cap=default, language_caps=caps)
    assert plan.balance.kept == len(expected) < 100
    by_language = {lang: sum(1 for uid, _, sample_lang in samples if uid in expected and sample_lang == lang)
                   for lang in ("en", "ja")}
    assert plan.balance.kept_by_language == by_language
    loader = Loader(plan, tokenizer)
    kept = _uids(loader, tokenizer)
    assert len(kept) == len(set(kept)) and set(kept) == expected
    report = loader.reports[-1]
    assert {lang: n["trained"] for lang, n in report["languages"].items()} == by_language
    dropped = {lang: sum(1 for uid, _, sample_lang in samples if uid not in expected and sample_lang == lang)
               for lang in ("en", "ja")}
    over_cap = {lang: n["over_cap"] for lang, n in report["languages"].items()}
    # once the last kept sample is trained, the stream's trailing samples are counted as not reached (unread)
    assert all(over_cap[lang] <= dropped[lang] for lang in dropped)
    assert sum(over_cap.values()) + report["left_out"].get("not_reached", 0) == sum(dropped.values())
    assert "trained per language: en " in describe_epoch(report)


def test_a_language_caps_language_absent_from_the_shards_is_warned_about(worldwide, caplog):
    shards, _, _ = worldwide
    with caplog.at_level("WARNING", logger="trainer.balance"):
        plan = make_plan(str(shards), batch_size=1, image_size=16, workers=0, seed=0, per_query_cap=4,
                         language_caps={"en": 4, "jp": 2})  # 'jp': a typo for 'ja'
    assert "--language-caps names jp, but no sample has that lang (the shards' languages: en, ja)" in caplog.text
    assert set(plan.balance.kept_by_language) == {"en", "ja"}


def test_one_cap_for_all_languages_still_separates_them(worldwide):
    """'cat' matched in English and in Japanese captions are two entries: each keeps up to the cap."""
    shards, samples, _ = worldwide
    plan = make_plan(str(shards), batch_size=1, image_size=16, workers=0, seed=0, per_query_cap=4,
                     language_caps={"en": 4})
    assert plan.balance.kept == len(_reference(samples, {}, 4, seed=0))
    cut_keys = set(plan.balance.cuts)
    assert entry("en", "cat") in cut_keys and all(":" in key for key in cut_keys)
    bare = make_plan(str(shards), batch_size=1, image_size=16, workers=0, seed=0, per_query_cap=4)
    assert "cat" in bare.balance.cuts and plan.balance.kept > bare.balance.kept  # merged: fewer kept


def test_language_caps_parse_inline_and_from_a_file(tmp_path):
    assert parse_language_caps("en=20000, JA=1200") == {"en": 20000, "ja": 1200}
    path = tmp_path / "caps.json"
    path.write_text(json.dumps({"en": 20000, "th": 300}))
    assert parse_language_caps(str(path)) == {"en": 20000, "th": 300}
    for bad, message in (("en=0", "'en=0' is not"), ("en=many", "'en=many'"), (str(tmp_path / "none.json"),
                                                                                "neither 'lang=cap"),
                         ("=5", "'=5'"), ("en=\u00b2", "'en=\u00b2' is not"), ("en=5,EN=6", "'en' is given twice")):
        with pytest.raises(ValueError, match=message):
            parse_language_caps(bad)
    stats = tmp_path / "stats.json"  # build-pairs' stats.json: the caps it used per language
    stats.write_text(json.dumps({"stage": "build-pairs", "details": {"languages": {
        "en": {"cap": 80, "kept": 754, "matched": 760}, "ja": {"cap": 30, "kept": 428}, "zh": {"kept": 0}}}}))
    assert parse_language_caps(str(stats)) == {"en": 80, "ja": 30}
    path.write_text('{"en": -3}')
    with pytest.raises(ValueError, match=f"{path}: 'en=-3'"):
        parse_language_caps(str(path))


def test_wit_train_writes_languages_to_epochs_and_refuses_other_caps_on_resume(worldwide, tmp_path, capsys):
    shards, _, _ = worldwide
    args = ["train", "--shards", str(shards), "--out", str(tmp_path), "--model", "tiny", "--batch-size", "4",
            "--steps", "30", "--workers", "0", "--vocab-size", "300", "--per-query-cap", "50",
            "--language-caps", "ja=3"]
    assert wit(args) == 0
    epochs = [json.loads(line) for line in (tmp_path / "epochs.jsonl").read_text().splitlines()]
    assert epochs and all(set(e["languages"]) == {"en", "ja"} for e in epochs)
    assert all(e["languages"]["ja"]["trained"] <= 3 * 3 for e in epochs)  # 3 Japanese entries, 3 each at most
    assert sum(n["trained"] for n in epochs[0]["languages"].values()) == epochs[0]["samples_trained"]
    stats = json.loads((tmp_path / "tokenizer_stats.json").read_text())
    assert set(stats["languages"]) == {"en", "ja"} and stats["bpe_sample"]["alpha"] == 0.5
    assert wit([*args[:-1], "ja=4", "--steps", "31", "--resume"]) == 2
    assert "--language-caps is 'ja=4' but the checkpoint ran with 'ja=3'" in capsys.readouterr().err
    assert wit([*args[:-4], "--language-caps", "ja=3", "--out", str(tmp_path / "b")]) == 2
    assert "--language-caps needs --per-query-cap" in capsys.readouterr().err


def test_wit_train_with_a_tokenizer_file_measures_it_and_a_resume_keeps_it(worldwide, tmp_path, capsys):
    """A tokenizer.json made elsewhere is measured per language like a learnt one; a resume with another
    --tokenizer than the checkpoint's is refused in one line."""
    shards, samples, _ = worldwide
    made = Tokenizer.train([f"uid {u}" for u, _, _ in samples], vocab_size=350)
    made.save(tmp_path / "made.json")
    other = Tokenizer.train(["something else entirely"] * 3, vocab_size=320)
    other.save(tmp_path / "other.json")
    args = ["train", "--shards", str(shards), "--out", str(tmp_path / "run"), "--model", "tiny", "--batch-size", "4",
            "--steps", "2", "--workers", "0", "--tokenizer", str(tmp_path / "made.json")]
    assert wit(args) == 0
    stats = json.loads((tmp_path / "run" / "tokenizer_stats.json").read_text())
    assert stats["source"] == str(tmp_path / "made.json") and stats["bpe_sample"] is None
    assert {lang: f["captions"] for lang, f in stats["languages"].items()} == {
        "en": sum(lang == "en" for *_, lang in samples), "ja": sum(lang == "ja" for *_, lang in samples)}
    assert "wit train: tokenizer: ja: " in capsys.readouterr().out
    assert wit([*args[:-1], str(tmp_path / "other.json"), "--steps", "3", "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is not the tokenizer the checkpoint was trained with" in err
