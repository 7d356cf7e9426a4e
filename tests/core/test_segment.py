"""Word segmentation shared by stages 1 and 2 (wit_builder.core.segment): spaceless scripts split into words by
ICU, every other text exactly as textnorm makes it, idempotent, and a clear error when ICU is missing."""

from __future__ import annotations

import builtins
import itertools
import json
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wit_builder.core import segment, textnorm
from wit_builder.core.errors import UsageError
from wit_builder.core.segment import needs_segmentation, normalize, script_of, segmenter_id, tokenize

# Short sentences written for these tests in the manner of Wikipedia's openings (ja: 北海道, zh: 北京市,
# th: ประเทศไทย, lo: ປະເທດລາວ, km: ប្រទេសកម្ពុជា, my: မြန်မာနိုင်ငံ), and the words each must yield as tokens;
# real treebank text follows below.
SENTENCES = [
    ("ja", "北海道は、日本の北部に位置する島である。", ["北海道", "日本", "北部", "位置", "島"]),
    ("ja", "東京都の人口は約1400万人です。", ["東京", "人口", "1400", "万人"]),
    ("zh", "北京市，简称京，是中华人民共和国的首都。", ["北京市", "简称", "中华", "人民", "共和国", "首都"]),
    ("zh", "臺灣位於東亞，是一個島嶼。", ["臺灣", "位於", "東亞", "島嶼"]),
    ("th", "ประเทศไทยมีกรุงเทพมหานครเป็นเมืองหลวง", ["ประเทศไทย", "กรุงเทพมหานคร", "เป็น"]),
    ("lo", "ປະເທດລາວມີນະຄອນຫຼວງວຽງຈັນ", ["ປະເທດ", "ລາວ"]),
    ("km", "ប្រទេសកម្ពុជាមានរាជធានីភ្នំពេញ", ["ប្រទេស", "កម្ពុជា", "រាជធានី", "ភ្នំពេញ"]),
    ("my", "မြန်မာနိုင်ငံသည် အရှေ့တောင်အာရှတွင် တည်ရှိသည်။", ["မြန်မာနိုင်ငံ", "အရှေ့တောင်"]),
]


@pytest.mark.parametrize(("lang", "text", "words"), SENTENCES)
def test_spaceless_sentences_split_into_words(lang: str, text: str, words: list[str]) -> None:
    tokens = tokenize(text, lang)
    assert [w for w in words if w not in tokens] == []
    assert tokenize(text) == tokens  # the language hint changes nothing (module docstring)
    assert "".join(tokens) == "".join(textnorm.tokenize(text))  # nothing but the spaces added or lost


def test_a_clause_becomes_words_and_matches_its_nouns() -> None:
    # issue 20's example: one token before, words now; issue 21: captions containing 北海道 match it.
    assert textnorm.tokenize("犬の顔の折り紙") == ["犬の顔の折り紙"]
    assert tokenize("犬の顔の折り紙") == ["犬", "の", "顔", "の", "折り紙"]
    padded = f" {normalize('北海道の旭山動物園で撮影したシロクマ')} "
    assert " 北海道 " in padded


# Text with no character of a spaceless script is textnorm's own, language by language.
SPACED = [
    ("de", "Die Donaudampfschifffahrt auf der Donau"),
    ("ko", "서울특별시는 대한민국의 수도이다."),
    ("hi", "भारत गणराज्य दक्षिण एशिया में स्थित देश है"),
    ("fa", "زبان فارسی یکی از زبان\u200cهای هندواروپایی است"),
    ("ar", "القاهرة هي عاصمة جمهورية مصر العربية"),
    ("en", "State-of-the-art COVID-19 vaccines don't ship"),
]


@pytest.mark.parametrize(("lang", "text"), SPACED)
def test_spaced_languages_are_textnorm(lang: str, text: str) -> None:
    assert not needs_segmentation(text)
    assert tokenize(text, lang) == textnorm.tokenize(text)


def test_korean_keeps_its_eojeol() -> None:
    assert tokenize("서울특별시는 대한민국의 수도이다.", "ko") == ["서울특별시는", "대한민국의", "수도이다"]


def test_mixed_text_splits_where_the_script_changes() -> None:
    # Full-width Latin and digits fold to ASCII first (NFKC), then split from the kana/kanji around them.
    assert tokenize("２０２０年の東京タワーとＴＯＫＹＯ　ＳＫＹＴＲＥＥ", "ja") == [
        "2020", "年", "の", "東京タワー", "と", "tokyo", "skytree"]
    assert tokenize("iPhone15を買った")[:2] == ["iphone15", "を"]
    assert tokenize("我在Google工作")[1:] == ["google", "工作"]
    assert tokenize("北京's") == ["北京", "s"]  # ICU gives the apostrophe a piece of its own


def test_supplementary_characters_keep_their_offsets() -> None:
    # 𠮷 (U+20BB7, CJK Extension B) is two UTF-16 units in ICU: the pieces must still be whole characters.
    tokens = tokenize("𠮷野家の牛丼")
    assert "".join(tokens) == "𠮷野家の牛丼"
    assert "の" in tokens


def test_tibetan_comes_out_as_syllables() -> None:
    # ICU has no Tibetan dictionary; the tsheg (U+0F0B, punctuation) separates syllables.
    assert tokenize("བོད་ཡིག་", "bo") == ["བོད", "ཡིག"]


def test_thai_and_lao_am_words_stay_whole_after_nfkc() -> None:
    # NFKC decomposes SARA AM (U+0E33 -> U+0E4D U+0E32; Lao U+0EB3 likewise); ICU's dictionaries spell words with
    # the one character, so the decomposed form cut ตำแหน่ง into ตํา แหน่ ง and สำหรับ into สําห รับ.
    for word in ("ตำแหน่ง", "สำหรับ", "จำกัด", "กำลัง", "ສຳລັບ"):
        assert tokenize(word, "th") == [textnorm.fold(word)]
    assert tokenize("เขาทำงานที่นี่สำหรับเด็ก", "th") == [textnorm.fold(w) for w in (
        "เขา", "ทำงาน", "ที่", "นี่", "สำหรับ", "เด็ก")]
    assert all("\u0e33" not in t for t in tokenize("น้ำตำแหน่ง", "th"))  # tokens stay NFKC


def test_format_characters_inside_spaceless_text() -> None:
    assert tokenize("北海\u00ad道") == tokenize("北海道") == ["北海道"]
    assert tokenize("ภาษา\u200bไทย") == ["ภาษา", "ไทย"]  # ZWSP: Thai writers' invisible space


def test_script_of_and_needs_segmentation() -> None:
    assert [script_of(c) for c in "北ひカกລកမབaー한1"] == [
        "Han", "Hiragana", "Katakana", "Thai", "Lao", "Khmer", "Myanmar", "Tibetan", None, None, None, None]
    assert needs_segmentation("a 猫") and not needs_segmentation("cat 한국 ١٢")
    with pytest.raises(ValueError, match="one character"):
        script_of("ab")


def test_segmenter_id_names_textnorm_unicode_and_icu_versions() -> None:
    import unicodedata

    import icu

    ident = segmenter_id("ja")
    assert ident == f"textnorm-u{unicodedata.unidata_version}+icu-{icu.ICU_VERSION}"
    assert segmenter_id("en") == segmenter_id("th") == segmenter_id() == ident


def test_missing_icu_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_icu(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "icu":
            raise ImportError("No module named 'icu'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_icu)
    monkeypatch.setattr(segment, "_local", type(segment._local)())  # no breaker made yet in this thread
    segment.clear_cache()
    segment._icu_version.cache_clear()
    assert tokenize("English stays without ICU") == ["english", "stays", "without", "icu"]
    with pytest.raises(UsageError, match=r"pip install 'wit-builder\[segment\]'"):
        tokenize("北海道の犬")
    with pytest.raises(UsageError, match="pyicu-wheels"):
        segmenter_id("ja")
    segment._icu_version.cache_clear()


SPACELESS_CHARS = "北海道日本東京の犬顔折り紙をはがタワーカナイトライダーประเทศไทยภาษาເມືອງລາວកម្ពុជាမြန်မာབོད་ཡིག"
texts = st.text(
    alphabet=st.one_of(st.sampled_from(SPACELESS_CHARS), st.sampled_from(" 1a'\u00ad\u200b\u200c、。ー"),
                       st.characters()),
    max_size=40,
)


@settings(max_examples=400, deadline=None)
@given(texts)
def test_normalize_is_idempotent_and_keeps_every_character(text: str) -> None:
    once = normalize(text)
    assert normalize(once) == once
    # nothing but spaces added, and apostrophes that ICU cut off a segmented token (北京's -> 北京 s)
    assert once.replace(" ", "").replace("'", "") == textnorm.normalize(text).replace(" ", "").replace("'", "")
    assert all(t == textnorm.normalize(t) for t in once.split())  # every token is a valid textnorm token


# Real text with gold words: the first 300 test sentences of UD Japanese GSD, UD Chinese GSDSimp (Wikipedia)
# and UD Thai PUD (tests/data/README.md). benchmarks/segmenters.py measures the same samples side by side.
SAMPLES = Path(__file__).resolve().parents[1] / "data" / "segment"
TREEBANKS = {"ja": "ja_gsd_test300.jsonl", "zh": "zh_gsdsimp_test300.jsonl", "th": "th_pud_test300.jsonl"}


def treebank(lang: str) -> list[dict[str, Any]]:
    with open(SAMPLES / TREEBANKS[lang], encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def inner_boundaries(words: list[str]) -> set[int]:
    """Inner word boundaries (character offsets) of the words as textnorm keeps them (folded, no punctuation)."""
    pieces = [p for w in words for p in textnorm.tokenize(w)]
    return set(itertools.accumulate(len(p) for p in pieces[:-1]))


@pytest.mark.parametrize("lang", sorted(TREEBANKS))
def test_real_sentences_segment_close_to_the_treebank(lang: str) -> None:
    rows = treebank(lang)
    hits = got = want = 0
    for row in rows:
        ours, gold = inner_boundaries(tokenize(row["text"], lang)), inner_boundaries(row["words"])
        hits, got, want = hits + len(ours & gold), got + len(ours), want + len(gold)
    assert 2 * hits / (got + want) > 0.85  # measured 0.89-0.91 with ICU 77.1 (docs/ARCHITECTURE.md)


@pytest.mark.parametrize("lang", sorted(TREEBANKS))
def test_real_sentences_give_words_not_clauses(lang: str) -> None:
    # issue 20: 30-62% of tokens of spaceless text were 10+ characters; the frequent tokens must be words.
    rows = treebank(lang)
    before = [t for row in rows for t in textnorm.tokenize(row["text"])]
    after = [t for row in rows for t in tokenize(row["text"], lang)]
    assert sum(len(t) >= 10 for t in before) / len(before) > 0.4
    assert sum(len(t) >= 10 for t in after) / len(after) < 0.01
    gold = {textnorm.normalize(w) for row in rows for w in row["words"] + row.get("luw", [])}
    frequent = [w for w, _ in Counter(t for t in after if len(t) >= 2 and not t.isdigit()).most_common(15)]
    assert len([w for w in frequent if w in gold]) >= 13, frequent


def test_japanese_nouns_come_out_whole() -> None:
    # Of the treebank's long-unit nouns (不快感, 東京タワー, ...) that are one textnorm token, the share that is a
    # token of its sentence: what a query of that noun needs (make bench-segment: 0.651 at the same position,
    # MeCab with UniDic 0.648).
    whole = nouns = 0
    for row in treebank("ja"):
        tokens = set(tokenize(row["text"], "ja"))
        for word, pos in zip(row["luw"], row["luw_pos"], strict=True):
            if pos.startswith("名詞") and len(textnorm.tokenize(word)) == 1:
                nouns += 1
                whole += textnorm.normalize(word) in tokens
    assert nouns > 1000 and whole / nouns > 0.6
    tokens_of_sample = {t for row in treebank("ja") for t in tokenize(row["text"], "ja")}
    assert {"日本", "東京", "住民", "政府", "アメリカ"} <= tokens_of_sample


def test_every_code_point_beside_spaceless_text_is_stable() -> None:
    # Exhaustive over the letters, marks and digits (a few seconds): any of them between Han and Thai normalizes
    # to a form that normalizes to itself (found: ICU breaks before the marks U+16FF0/1 after Han).
    import sys
    import unicodedata

    for cp in range(sys.maxunicode + 1):
        c = chr(cp)
        if unicodedata.category(c)[0] not in "LMN":  # every other character separates tokens (textnorm's tests)
            continue
        text = "日本" + c + "ไทย"
        once = normalize(text)
        assert normalize(once) == once, (hex(cp), text)


# Real sentences of languages written with spaces, from Universal Dependencies test sets (tests/data/README.md):
# German GSD, Korean GSD, Hindi PUD, Persian Seraji (70 of its first 100 sentences hold a ZWNJ).
SPACED_TREEBANKS = {"de": "de_gsd_test100.jsonl", "ko": "ko_gsd_test100.jsonl", "hi": "hi_pud_test100.jsonl",
                    "fa": "fa_seraji_test100.jsonl"}


@pytest.mark.parametrize("lang", sorted(SPACED_TREEBANKS))
def test_spaced_treebank_words_stay_whole(lang: str) -> None:
    with open(SAMPLES / SPACED_TREEBANKS[lang], encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    whole = single = 0
    for row in rows:
        tokens = tokenize(row["text"], lang)
        if not needs_segmentation(row["text"]):  # Korean text may quote Hanja: "효공왕(孝恭王)" splits the Han run
            assert tokens == textnorm.tokenize(row["text"])
        words = [textnorm.tokenize(w) for w in row["words"]]
        single += sum(1 for w in words if len(w) == 1)
        whole += sum(1 for w in words if len(w) == 1 and w[0] in tokens)
    # A gold word that is one token under the spec is a token of its sentence (marks, virama, Hangul, ZWNJ);
    # the few others are spec decisions: an apostrophe used as a quote joins ("수용소'에서"), "221bn" is one token.
    assert single > 1000 and whole / single > 0.98


def test_persian_zwnj_words_are_one_token_in_real_sentences() -> None:
    # Seraji writes the ZWNJ inside words (می‌گوید "says", نمی‌رساند); under the spec it joins, never splits.
    with open(SAMPLES / SPACED_TREEBANKS["fa"], encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    zwnj_words = [(w, row["text"]) for row in rows for w in row["words"] if "\u200c" in w.strip("\u200c")]
    assert len(zwnj_words) > 70
    for word, text in zwnj_words:
        assert tokenize(word, "fa") == [word.replace("\u200c", "")]
        assert word.replace("\u200c", "") in tokenize(text, "fa")


@pytest.mark.parametrize("lang", sorted(TREEBANKS))
def test_written_form_is_each_real_run_as_written(lang: str) -> None:
    """``written_form`` undoes segmentation: every run of a spaceless script in the real sentences (a ``textnorm``
    token, written without spaces: ja 694, zh 966, th 794 runs, 166 of them holding Thai SARA AM) comes back
    exactly as written from its normalized words, up to case (``Twitterアカウント`` -> ``twitterアカウント``)."""
    runs = [run for row in treebank(lang) for run in textnorm.TOKEN.findall(unicodedata.normalize("NFC", row["text"]))
            if needs_segmentation(run)]
    split = [normalize(run, lang) for run in runs]
    assert len(runs) > 600 and sum(" " in q for q in split) > 0.9 * len(runs)  # most runs are several words
    assert [segment.written_form(q) for q in split] == [run.casefold() for run in runs]
    if lang == "th":
        am = [q for q in split if "\u0e4d\u0e32" in q]  # NFKC's split SARA AM in the normalized form
        assert len(am) > 100 and all("\u0e33" in segment.written_form(q) for q in am)


def test_written_form_of_spaced_text_is_the_query() -> None:
    """Queries with no spaceless-script character are their own written form (English is unchanged); a space next
    to a Latin word or number stays in Thai and goes in Japanese and Chinese, as those scripts write it."""
    for query in ("new york", "boston terrier", "c 3po", "über straße", "서울 대학교", "москва"):
        assert segment.written_form(query) == query
    assert segment.written_form("マリ 共和国") == "マリ共和国"
    assert segment.written_form("2020 年 tokyo タワー") == "2020年tokyoタワー"
    assert segment.written_form(normalize("ทำ 2 ครั้ง")) == "ทำ 2 ครั้ง"
