"""core/languages: the Wikipedia codes, resolving what a user types, MediaWiki's localized names."""

from __future__ import annotations

import pytest

from tools.mediawiki_languages import php_variable
from wit_builder.core import languages as L
from wit_builder.core.errors import UsageError


def test_every_wikipedia_is_known_and_named():
    langs = L.all_languages()
    assert len(langs) >= 330
    by_code = {lang.code: lang for lang in langs}
    assert by_code["ja"].name == "日本語" and by_code["ja"].unspaced
    assert by_code["de"].name == "Deutsch" and not by_code["de"].unspaced
    assert by_code["simple"].mediawiki_code == "en"
    assert by_code["zh-yue"].mediawiki_code == "yue" and by_code["zh-yue"].dbname == "zh_yuewiki"
    assert {"th", "lo", "km", "my", "bo", "zh", "ja"} <= {lang.code for lang in langs if lang.unspaced}


@pytest.mark.parametrize("typed, code", [("ja", "ja"), ("JA", "ja"), ("ja.wikipedia", "ja"), ("jawiki", "ja"),
                                         ("zh_yue", "zh-yue"), ("be-x-old", "be-tarask"),
                                         ("be_x_oldwiki", "be-tarask")])
def test_resolve_reads_codes_projects_and_dbnames(typed, code):
    assert L.resolve(typed).code == code


@pytest.mark.parametrize("typed, suggestion", [("jp", "'ja'"), ("cn", "'zh'"), ("Deutsch", "'de'"), ("thh", "'th'")])
def test_unknown_code_is_refused_with_the_nearest(typed, suggestion):
    with pytest.raises(UsageError, match=f"unknown Wikipedia language .*did you mean {suggestion}"):
        L.resolve(typed)


def test_project_and_siteinfo_name_the_language():
    assert L.from_project("ja.wikipedia").code == "ja"
    assert L.from_project("ko.m.wikipedia").code == "ko"
    assert L.from_project("en.wiktionary") is None
    assert L.from_siteinfo("thwiki", None).code == "th"
    assert L.from_siteinfo(None, "https://ar.wikipedia.org/wiki/%D8%A7") .code == "ar"
    assert L.from_siteinfo("enwiktionary", "https://en.wiktionary.org/wiki/x") is None
    assert L.from_siteinfo(None, None) is None


@pytest.mark.parametrize("code, number, names", [
    ("ja", 6, {"ファイル", "画像", "file", "image"}),
    ("de", 6, {"datei", "bild"}),
    ("ar", 6, {"ملف", "صورة"}),
    ("ko", 14, {"분류"}),
    ("zh", 14, {"分类", "分類", "category"}),
    ("hi", 14, {"श्रेणी"}),
    ("th", 6, {"ไฟล์", "ภาพ"}),
])
def test_namespace_names_include_aliases_and_english(code, number, names):
    assert names <= L.namespace_names(L.resolve(code), number)


def test_image_options_of_the_language_and_its_fallbacks():
    assert {"mini", "hochkant", "thumb", "$1px"} <= L.image_option_words(L.resolve("de"))
    assert {"تصغير", "thumb"} <= L.image_option_words(L.resolve("ar"))
    assert {"섬네일", "$1픽셀"} <= L.image_option_words(L.resolve("ko"))
    assert {"サムネイル"} <= L.magic_words(L.resolve("ja"), "img_thumbnail")


def test_generator_reads_php_array_literals():
    text = """<?php
$fallback = 'zh-hans, zh';
$namespaceNames = [ NS_FILE => 'ファイル', NS_CATEGORY => "カテゴリ" ]; // a comment
$magicWords = [ 'img_thumbnail' => [ '1', 'サムネイル', 'thumb' ], 'redirect' => [ 0, '#転送' ] ];
"""
    assert php_variable(text, "fallback") == "zh-hans, zh"
    assert php_variable(text, "namespaceNames") == {6: "ファイル", 14: "カテゴリ"}
    assert php_variable(text, "magicWords") == {"img_thumbnail": ["1", "サムネイル", "thumb"], "redirect": [0, "#転送"]}
