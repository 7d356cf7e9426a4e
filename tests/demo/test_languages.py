"""``wit demo --languages en,ja``: the shipped jawiki excerpt and WordNet lemmas, real file-link captions, the
Japanese rows of the corpus (the English ones untouched), the per-language class names, and the chain's wiring
(a Japanese queries folder, both folders for build-pairs, zero-shot per language)."""

from __future__ import annotations

import argparse
import functools
import json
import re

import pytest

from tests.demo.conftest import SMALL, record_stage_calls
from wit_builder.core import options
from wit_builder.demo import command as demo
from wit_builder.demo import corpus as demo_corpus
from wit_builder.demo import languages
from wit_builder.demo import options as demo_options

HIRAGANA_KATAKANA_HAN = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")


def test_languages_option():
    assert languages.parse("en") == ("en",) and languages.parse("ja, en") == ("en", "ja")
    for bad in ("ja", "en,fr", ""):
        with pytest.raises(ValueError, match="the demo ships data for en, ja"):
            languages.parse(bad)
    with pytest.raises(ValueError, match="--languages 'en,xx'"):
        demo_options.DemoOptions(out="x", languages="en,xx")


def test_file_link_captions_as_a_reader_sees_them():
    text = ("intro [[File:A.jpg|thumb|250px|[[Luang Prabang|The market]] at {{lang|lo|dawn}}]] text "
            "[[ファイル:B.png|thumb|left|首都[[ビエンチャン]]の空港]] [[Image:C.svg|100px]] "
            "[[画像:D.jpg|サムネイル|右|''古い''寺院]] [[File:E.jpg|thumb|upright=1.2|alt=x|A [[b|c]] d]]")
    assert list(languages.file_captions(text)) == ["The market at", "首都ビエンチャンの空港", "古い寺院", "A c d"]


def test_the_shipped_dumps_give_real_captions():
    ja = languages.dump_captions(languages.JAWIKI, 40)
    assert len(ja) == 40 and len(set(ja)) == 40
    assert all(HIRAGANA_KATAKANA_HAN.search(c) and "[[" not in c and "|" not in c for c in ja)
    assert "ラオスの地図" in ja  # [[File:Laos 2003 CIA map.jpg|thumb|250px|ラオスの地図]]
    en = languages.dump_captions(demo.enwiki_sample(), 40)
    assert len(en) == 40 and not any(HIRAGANA_KATAKANA_HAN.search(c) for c in en)


def test_japanese_rows_leave_the_english_corpus_as_it_was():
    english = demo_corpus.generate(SMALL)
    corpus = demo_corpus.generate(SMALL)
    wiki = {"en": ["A real English caption", "Another one"], "ja": ["ラオスの地図"]}
    demo_corpus.add_japanese(corpus, SMALL, wiki, per_class=2)
    assert corpus.rows[:len(english.rows)] == english.rows and corpus.heldout == english.heldout
    assert all(corpus.files[path] == data for path, data in english.files.items())
    japanese = [r for r in corpus.rows if r.kind == "train_ja"]
    assert len(japanese) == 2 * len(corpus.classes)
    for row in japanese:
        cls = row.path.split("/")[2]
        assert languages.JAPANESE[cls] in row.caption and row.path.lstrip("/") in corpus.files
    assert sorted(r.caption for r in corpus.rows if r.kind == "wiki_caption") == sorted(wiki["en"] + wiki["ja"])
    again = demo_corpus.generate(SMALL)
    demo_corpus.add_japanese(again, SMALL, wiki, per_class=2)
    assert again.files == corpus.files  # seeded: the same bytes


def test_default_manifest_keeps_its_shape(tmp_path):
    manifest = demo_corpus.write_files(demo_corpus.generate(SMALL), tmp_path)
    assert list(manifest["kinds"]) == list(demo_corpus.KINDS)  # no key of the Japanese kinds: same bytes as before


def test_class_names_per_language_cover_every_class():
    classes = sorted(languages.JAPANESE)
    ja = languages.classnames_file(classes, "ja").splitlines()
    assert ja[0] == "astronaut\t宇宙飛行士" and len(ja) == len(classes)
    assert languages.classnames_file(classes, "en").splitlines()[2] == "cat\tcat"
    lemmas = [line.split("\t")[2] for line in languages.JA_WORDNET.read_text(encoding="utf-8").splitlines()[1:]]
    assert sorted(lemmas) == sorted(languages.JAPANESE.values())  # every class word is a WordNet lemma there


def test_the_chain_in_two_languages(monkeypatch, tmp_path):
    """Each ``wit`` call parses with the real subcommand's parser; nothing runs."""
    calls = record_stage_calls(monkeypatch)
    small = functools.partial(demo_corpus.CorpusConfig, train_per_class=2, heldout_per_class=1, flood_extra=1,
                              distractors=2, mirrors=1, near_duplicates=1, duplicate_pairs=1)
    monkeypatch.setattr(demo.demo_corpus, "CorpusConfig", small)
    monkeypatch.setattr(demo, "check_classes", lambda folder, classes, lang="en": [])
    monkeypatch.setattr(demo, "report", lambda *a, **k: None)
    parser = argparse.ArgumentParser()
    options.add_arguments(parser, demo_options.OPTIONS)
    args, beam_argv = parser.parse_known_args(["--out", str(tmp_path), "--languages", "en,ja",
                                               "--runner=FnApiRunner"])
    assert demo.run(args, beam_argv) == 0
    assert [c[0] for c in calls] == ["build-queries", "build-queries", "build-pairs", "download", "finalize",
                                     "train", "eval"]
    ja_queries = calls[1]
    assert ja_queries[ja_queries.index("--dump") + 1] == str(languages.JAWIKI)
    assert ja_queries[ja_queries.index("--omw-file") + 1] == str(languages.JA_WORDNET)
    pairs = calls[2]
    assert [pairs[i + 1] for i, a in enumerate(pairs) if a == "--queries"] == [str(tmp_path / "queries"),
                                                                                str(tmp_path / "queries-ja")]
    evaluation = calls[-1]
    assert [evaluation[i + 1] for i, a in enumerate(evaluation) if a == "--classnames"] == [
        f"en={tmp_path / 'corpus' / 'classnames-en.txt'}", f"ja={tmp_path / 'corpus' / 'classnames-ja.txt'}"]
    assert (tmp_path / "corpus" / "classnames-ja.txt").read_text(encoding="utf-8").startswith("astronaut\t宇宙飛行士\n")
    kinds = {r["kind"] for r in json.loads((tmp_path / "corpus" / "manifest.json").read_text())["rows"]}
    assert {"train", "train_ja", "wiki_caption"} <= kinds
