"""Stage 1 in languages other than English: the language told and recorded, localized links and file options
dropped, converter markup, early-closed templates, truncation at a stream boundary, MetaCLIP 2's per-language
budgets, one-character queries, Open Multilingual Wordnet lemmas, and real jawiki / dewiki / zhwiki / arwiki / hiwiki
pages end to end (tests/data/wiki, tests/data/omw: sources and licences in tests/data/README.md)."""

from __future__ import annotations

import bz2
import html
import json
import re
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from schemas.queries import LANG_METADATA, QUERIES, SEGMENTER_METADATA
from tests.queries.conftest import build, page_xml, small_pages, stats, write_dump, write_multistream
from wit_builder.core import segment
from wit_builder.core.errors import UsageError
from wit_builder.core.languages import image_option_words, namespace_names, resolve
from wit_builder.queries import selection as qs
from wit_builder.queries.inputs import dump_language
from wit_builder.queries.ngram_sketch import DistinctSketch
from wit_builder.queries.wikidump import DumpError, DumpInput, SiteInfo, plan_ranges
from wit_builder.queries.wikitext import ENGLISH, plain_text, resolve_converter, site_rules
from wit_builder.queries.wordnet import WordNetError, omw_candidates

DATA = Path(__file__).parent.parent / "data"
JAWIKI = DATA / "wiki" / "jawiki-country-excerpt.xml.bz2"
DEWIKI = DATA / "wiki" / "dewiki-excerpt.xml.bz2"
ZHWIKI = DATA / "wiki" / "zhwiki-excerpt.xml.bz2"
ARWIKI = DATA / "wiki" / "arwiki-excerpt.xml.bz2"
HIWIKI = DATA / "wiki" / "hiwiki-fragments.xml.bz2"
# Markup words that must never become tokens: file options, namespace names, converter codes.
MARKUP = {"thumb", "thumbnail", "px", "360px", "right", "left", "upright", "mini", "miniatur", "hochkant", "datei",
          "bild", "kategorie", "category", "file", "image", "ファイル", "画像", "カテゴリ", "サムネイル", "تصغير",
          "ملف", "تصنيف", "섬네일", "분류", "파일", "zh", "hans", "hant", "cn", "tw"}


def site(code: str):
    return site_rules(resolve(code))


def tokens(text: str, code: str) -> set[str]:
    return set(segment.tokenize(plain_text(text, site(code)), code))


# ---- localized links: the examples and their neighbours ----

@pytest.mark.parametrize("code, wikitext, kept", [
    ("ja", "本文[[ファイル:Foo.jpg|thumb|360px|北海道の地図]]です", "本文です"),
    ("ja", "本文[[画像:Foo.jpg|サムネイル|左|説明]]です", "本文です"),
    ("ja", "本文[[File:Foo.jpg|thumb|説明]][[Image:B.png|right]]です", "本文です"),
    ("ja", "本文[[ 画像 : Foo.jpg |250px]]です[[Category:日本]][[カテゴリ:アジア|あ]]", "本文です"),
    ("ja", "本文[[メディア:Sound.ogg|音声]]です", "本文です"),
    ("de", "Text [[Datei:X.jpg|mini|hochkant|Ein Bild]] und [[Bild:Y.png|miniatur|links]] mehr", "Text  und  mehr"),
    ("de", "Text [[Kategorie:Physik]][[category:X]]", "Text "),
    ("ar", "نص [[ملف:A.jpg|تصغير|يسار|وصف]] و[[صورة:B.png|تصغير]] [[تصنيف:علم]]", "نص  و "),
    ("ko", "본문 [[분류:한국]] [[파일:A.png|섬네일|설명]] [[그림:B.png|섬네일]]", "본문   "),
    ("th", "เนื้อหา[[ไฟล์:A.jpg|thumb|คำอธิบาย]][[ภาพ:B.png]][[หมวดหมู่:ประเทศไทย]]", "เนื้อหา"),
    ("hi", "पाठ [[चित्र:A.jpg|अंगूठाकार|विवरण]] [[श्रेणी:भारत]]", "पाठ  "),
    ("zh", "正文[[File:A.jpg|thumb|说明]][[文件:B.png|缩略图]][[分类:中国]][[分類:中國]]", "正文"),
])
def test_file_and_category_links_are_dropped_whole(code, wikitext, kept):
    assert plain_text(wikitext, site(code)) == kept


def test_a_visible_link_to_a_category_stays_prose():
    assert plain_text("[[:カテゴリ:アジア|アジアの一覧]]", site("ja")) == "アジアの一覧"


@pytest.mark.parametrize("code, wikitext", [
    ("ja", "<gallery>\nファイル:A.jpg|サムネイル説明\n画像:B.jpg|thumb\n</gallery>\n本文"),
    ("de", "<gallery widths=\"200\">\nDatei:A.jpg|mini|Beschreibung\nBild:B.jpg\n</gallery>\nText"),
    ("ar", "<gallery>\nملف:A.jpg|تصغير\n</gallery>\nنص"),
])
def test_galleries_are_dropped_in_any_language(code, wikitext):
    assert not tokens(wikitext, code) & MARKUP
    assert plain_text(wikitext, site(code)).strip() in ("本文", "Text", "نص")


def test_a_gallery_line_the_tokenizer_left_as_text_is_dropped():
    assert plain_text("<gallery\nファイル:A.jpg|説明\n本文", site("ja")).strip().endswith("本文")
    assert "説明" not in plain_text("<gallery\nファイル:A.jpg|説明\n本文", site("ja"))


def test_the_dumps_own_namespace_names_count_too():
    rules = site_rules(resolve("ja"), {6: "Fichier local", 14: "Kat local"})
    assert plain_text("a [[Fichier local:x.png|thumb]] b [[Kat local:y]]", rules) == "a  b "


def test_localized_behaviour_switches_are_removed():
    assert plain_text("__目次非表示__本文__NOTOC__", site("ja")) == "本文"
    assert plain_text("__INHALTSVERZEICHNIS_ERZWINGEN__Text", site("de")) == "Text"


def test_english_rules_are_the_default():
    assert plain_text("[[File:a.jpg|thumb|x]]y[[ファイル:b.jpg|thumb|z]]") == "ythumb|z"  # ja names need ja's site
    assert site("en").media >= ENGLISH.media


# ---- language-converter markup ----

@pytest.mark.parametrize("markup, text", [
    ("-{zh-hans:计算机; zh-hant:計算機}-", "计算机"),
    ("-{zh-hant:計算機; zh-hans:计算机;}-", "计算机"),
    ("-{zh-cn:中国; zh-tw:中國;}-", "中国"),
    ("-{zh-tw:串流控制傳輸協定; zh-hk:串流}-", "串流控制傳輸協定"),
    ("-{H|zh-hans:软件;zh-hant:軟體}-", ""),
    ("-{A|zh-hans:鼠标;zh-hant:滑鼠}-", "鼠标"),
    ("-{T|zh-hans:标题;zh-hant:標題}-", ""),
    ("-{-|zh-hans:软件}-", ""),
    ("-{纯文本}-", "纯文本"),
    ("-{R|zh-hans:原样}-", "zh-hans:原样"),
    ("連-{zh-hans:接;zh-hant:線}-", "連接"),
    ("-{zh-hans:外-{层}-; zh-hant:外層}-", "外层"),
])
def test_converter_markup_keeps_one_variant(markup, text):
    assert resolve_converter(markup) == text


def test_converter_codes_never_reach_the_tokens():
    wikitext = ("'''快速UDP網路連-{zh-hans:接;zh-hant:線}-'''是协议。-{H|zh-cn:软件; zh-tw:軟體;}-"
                "* [[流控制传输协议|-{zh-tw:串流控制傳輸協定; zh-cn:流控制传输协议;}-]]")
    found = tokens(wikitext, "zh")
    assert not found & {"zh", "hans", "hant", "cn", "tw", "h"}
    assert "协议" in "".join(found) or "协议" in plain_text(wikitext, site("zh"))


# ---- a template the parser closes early ----

@pytest.mark.parametrize("wikitext, text", [
    ("x {{hello|foo={{A}, {B}}|bar=123}} y", "x  y"),
    ("x {{hello|foo={{A}, {B}}|bar=[[Link]] and {{c}}}} y", "x  y"),
    ("x {{hello|foo={{A}}|bar=123}} y", "x  y"),
    ("x {{hello}}|not a parameter\n\ny", "x |not a parameter\n\ny"),
    ("x {{hello|foo={{A}, {B}}|bar=123\n\nnext paragraph", "x |bar=123\n\nnext paragraph"),
])
def test_early_closed_template_leaves_no_parameter(wikitext, text):
    assert plain_text(wikitext) == text


# ---- the language of a dump ----

def _site(db: str | None, base: str | None = None):
    return lambda path, opener: SiteInfo(db, base, {}) if db or base else None


@pytest.mark.parametrize("wiki, sites, code", [
    (None, ["jawiki"], "ja"), ("ja.wikipedia", ["jawiki"], "ja"), ("ja.wikipedia", [None], "ja"),
    (None, ["zh_yuewiki", "zh_yuewiki"], "zh-yue"), ("ko.wikipedia", ["kowiki"], "ko"),
])
def test_language_from_wiki_and_siteinfo(wiki, sites, code):
    dumps = [DumpInput(f"d{i}.xml", None) for i in range(len(sites))]
    reads = iter(sites)
    lang, _ = dump_language(dumps, wiki, read=lambda path, opener: _site(next(reads))(path, opener))
    assert lang.code == code


@pytest.mark.parametrize("wiki, sites, message", [
    (None, [None], "cannot tell the language of d0.xml: it has no <siteinfo>.*--wiki ja.wikipedia"),
    (None, ["enwiktionary"], "names no Wikipedia.*--wiki"),
    ("ja.wikipedia", ["dewiki"], "--wiki ja.wikipedia is ja .* says dewiki \\(de"),
    (None, ["jawiki", "dewiki"], "2 languages .*once per language"),
    ("jp.wikipedia", ["jawiki"], "unknown Wikipedia language 'jp'; did you mean 'ja'"),
])
def test_a_dump_of_unknown_or_contradicting_language_is_refused(wiki, sites, message):
    dumps = [DumpInput(f"d{i}.xml", None) for i in range(len(sites))]
    reads = iter(sites)
    with pytest.raises(UsageError, match=message):
        dump_language(dumps, wiki, read=lambda path, opener: _site(next(reads))(path, opener))


def test_the_command_refuses_before_work(tmp_path, capsys):
    dump = write_dump(tmp_path / "x.xml", small_pages(), header="<mediawiki>\n")
    assert build(tmp_path / "q", [dump]) == 2
    assert "--wiki LANG.wikipedia" in capsys.readouterr().err
    assert not (tmp_path / "q").exists() or not any((tmp_path / "q").iterdir())
    assert build(tmp_path / "q2", [JAWIKI], "--wiki", "de.wikipedia") == 2
    assert "says jawiki (ja" in capsys.readouterr().err


@pytest.mark.parametrize(("wiki", "hint"),
                         [("ja", "ja.wikipedia"), ("jp", "ja.wikipedia"), ("Deutsch", "de.wikipedia")])
def test_a_bare_language_for_wiki_gets_the_project_suggested(tmp_path, capsys, wiki, hint):
    # a user naming only the language (`--wiki ja`) is told the spelling --wiki wants, with the nearest code
    assert build(tmp_path / "q", [JAWIKI], "--wiki", wiki) == 2
    assert f"got {wiki!r}; did you mean {hint!r}?" in capsys.readouterr().err


# ---- a multistream dump cut at a stream boundary ----

def _open(path):
    return open(path, "rb")  # noqa: SIM115 (the callers close it)


def test_cut_at_a_stream_boundary_is_truncation(tmp_path, capsys):
    xml = "<mediawiki><siteinfo><dbname>enwiki</dbname></siteinfo>\n" + "".join(small_pages() * 50) + "</mediawiki>\n"
    dump = tmp_path / "enwiki-x-multistream.xml.bz2"
    index = write_multistream(dump, xml, pages_per_stream=20)
    offsets = sorted({int(line.split(":")[0]) for line in bz2.decompress(index.read_bytes()).decode().splitlines()})
    assert len(plan_ranges(str(dump), _open, str(index), target_bytes=1)) == len(offsets)  # whole: fine
    dump.write_bytes(dump.read_bytes()[: offsets[4]])  # streams 5.. and the footer gone: every stream left is whole
    with pytest.raises(DumpError, match=rf"{re.escape(str(dump))}: truncated: the file ends at byte {offsets[4]}, "
                                        rf"but its index .* lists {len(offsets) - 4} more bz2 stream\(s\) starting "
                                        rf"at bytes {offsets[4]}..{offsets[-1]}"):
        plan_ranges(str(dump), _open, str(index))
    assert build(tmp_path / "q", [dump]) == 1
    err = capsys.readouterr().err
    assert str(dump) in err and f"bytes {offsets[4]}..{offsets[-1]}" in err
    assert not (tmp_path / "q" / "queries.parquet").exists()


# ---- selection per language ----

def test_metaclip2_budgets_per_language():
    caps = {"unigram": 251_465, "bigram": 100_646, "title": 61_235, "wordnet": 86_654}
    assert qs.language_budgets(caps, "en", 10, 10) == caps  # English keeps MetaCLIP 1's split
    assert qs.language_budgets(caps, "ja", 1_000_000, 1_000) == {"unigram": 100_000, "bigram": 40_000,
                                                                 "title": 760, "wordnet": 86_654}
    assert qs.language_budgets(caps, "de", 9_000_000, 2_000_000) == {"unigram": 251_465, "bigram": 100_586,
                                                                     "title": 61_235, "wordnet": 86_654}
    assert qs.language_budgets({**caps, "unigram": 10}, "th", 1_000_000, 0)["bigram"] == 4


def test_distinct_estimate():
    small = DistinctSketch(k=64)
    small.add(["a", "b", "a", "c"])
    assert small.estimate() == 3  # exact below k
    parts = [DistinctSketch() for _ in range(3)]
    for i, part in enumerate(parts):  # overlapping ranges: 250,000 distinct keys in all
        part.add(f"w{j}" for j in range(i * 50_000, i * 50_000 + 150_000))
    merged = DistinctSketch()
    for part in parts:
        merged.merge(part)
    assert abs(merged.estimate() - 250_000) < 250_000 * 0.025


@pytest.mark.parametrize("token, ok", [("猫", True), ("山", True), ("は", False), ("の", False), ("ア", False),
                                       ("ก", False), ("것", True),
                                       ("산", True), ("ᄀ", False), ("و", False), ("क", False), ("a", False),
                                       ("猫犬", True), ("1990", False)])
def test_one_character_query_tokens(token, ok):
    assert qs.is_query_token(token) is ok


# ---- Open Multilingual Wordnet ----

def test_omw_lemmas_of_a_real_cldr_file():
    rows = dict(omw_candidates([str(DATA / "omw" / "wn-cldr-jpn.tab")], resolve("ja")))
    assert len(rows) > 400
    assert any("語" in q for q in rows)
    assert all(q == segment.normalize(q.replace(" ", ""), "ja") or " " in q for q in list(rows)[:50])
    thai = dict(omw_candidates([str(DATA / "omw" / "wn-cldr-tha.tab")], resolve("th")))
    assert len(thai) > 400 and not any(len(q) == 1 for q in thai)


def test_omw_file_of_another_language_or_format_is_refused(tmp_path):
    with pytest.raises(WordNetError, match="is in jpn \\(ja\\), but the dump is de"):
        omw_candidates([str(DATA / "omw" / "wn-cldr-jpn.tab")], resolve("de"))
    bad = tmp_path / "x.tab"
    bad.write_text("not a header\n")
    with pytest.raises(WordNetError, match="not an Open Multilingual Wordnet tab file"):
        omw_candidates([str(bad)], resolve("ja"))
    with pytest.raises(WordNetError, match="not found"):
        omw_candidates([str(tmp_path / "missing.tab")], resolve("ja"))


# ---- real pages end to end ----

@pytest.fixture(scope="module")
def jawiki_out(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ja") / "q"
    assert build(out, [JAWIKI], "--min-unigram-count", "5", "--min-bigram-count", "5",
                 "--omw-file", str(DATA / "omw" / "wn-cldr-jpn.tab")) == 0
    return out


def test_japanese_unigrams_are_words_not_clauses(jawiki_out):
    table = pq.read_table(jawiki_out / "queries.parquet")
    assert table.schema.equals(QUERIES, check_metadata=False)
    rows = table.to_pylist()
    unigrams = [r["query"] for r in rows if r["source"] == "unigram"]
    top = unigrams[:30]
    print("top Japanese unigrams:", top)
    assert {"日本", "政府", "大統領", "経済"} <= set(unigrams[:100])
    assert all(len(q) <= 5 for q in top), top  # words, not clauses such as "犬の顔の折り紙"
    long = [q for q in unigrams if len(q) >= 10]
    assert len(long) <= len(unigrams) * 0.01, long
    every = {t for r in rows for t in r["query"].split()}
    assert not every & MARKUP


def test_the_language_is_recorded(jawiki_out):
    rows = pq.read_table(jawiki_out / "queries.parquet").to_pylist()
    assert {r["lang"] for r in rows} == {"ja"}
    meta = pq.read_schema(jawiki_out / "queries.parquet").metadata
    assert meta[LANG_METADATA.encode()] == b"ja"
    assert meta[SEGMENTER_METADATA.encode()].decode() == segment.segmenter_id("ja")
    s = stats(jawiki_out)
    assert s["details"]["lang"] == "ja" and s["details"]["segmenter"] == segment.segmenter_id("ja")
    assert s["parameters"]["wiki"] == "ja.wikipedia"
    distinct = s["details"]["distinct_unigrams"]
    assert s["details"]["budgets"]["applied"]["unigram"] == min(251_465, int(distinct * 0.1))
    assert Counter(r["source"] for r in rows)["wordnet"] > 100  # the CLDR lemmas


def test_german_pages_lose_their_file_options(tmp_path):
    out = tmp_path / "de"
    assert build(out, [DEWIKI], "--min-unigram-count", "2", "--min-bigram-count", "2") == 0
    rows = pq.read_table(out / "queries.parquet").to_pylist()
    assert {r["lang"] for r in rows} == {"de"}
    every = {t for r in rows for t in r["query"].split()}
    assert not every & MARKUP
    assert {"keilwelle", "botschafter"} <= every
    assert json.loads((out / "stats.json").read_text())["details"]["lang"] == "de"


def test_german_plain_text_of_a_real_page_keeps_prose():
    xml = bz2.decompress(DEWIKI.read_bytes()).decode()
    text = re.search(r"<title>Keilwelle</title>.*?<text[^>]*>(.*?)</text>", xml, re.S).group(1)
    import html
    plain = plain_text(html.unescape(text), site("de"))
    assert "Keilwelle" in plain and "mini" not in plain.split() and "[[" not in plain


# Real zhwiki / arwiki / hiwiki pages (tests/data/README.md): per page, words that occur in its wikitext only inside a
# file link (caption and options), a category link, a template's name or parameters (infobox, citations, navboxes)
# or a hatnote; and words of its prose. Each markup word is checked to be in the raw wikitext, so the test can fail.
REAL_PAGES = {
    "zh": (ZHWIKI, {"牛熊", "基座", "標誌", "应急", "鷹", "thumb", "right", "200px", "175px", "file", "category",
                    "infobox", "company", "sehk", "nyse", "reflist", "commonscat", "hang", "seng", "index", "chl",
                    "cny", "increase", "url", "cite", "accessdate", "publisher", "language", "news", "web", "title"},
           {"中国", "移动", "香港", "收购", "电话", "通信", "公司"}),
    "ar": (ARWIKI, {"ديسكفر", "التقاطها", "الرخام", "مفلطح", "المائي", "تصغير", "ملف", "24px", "16px", "svg",
                    "gif", "atmosphere", "yes", "text", "align", "display", "none", "توضيح", "فيلم", "استشهاد", "مسار",
                    "عنوان", "ناشر", "تاريخ", "ucs", "ref", "nbsp", "كلفن", "نيتروجين"},
           {"الأرض", "الشمس", "الأوزون", "الكواكب", "الغلاف"}),
    # Two real fragments of hiwiki's महात्मा गांधी, no prose: a file link whose caption nests a link and an
    # interlanguage link, and two categories (one with a blank sort key). Nothing of them is text.
    "hi": (HIWIKI, {"चित्र", "thumb", "left", "gandhis", "jpg", "राज", "घाट", "स्मारक", "raj", "ghat", "memorials",
                    "अस्थियां", "पुणे", "पैलेस", "श्रेणी", "अर्थशास्त्री", "महात्मा", "गांधी", "भारत"}, set()),
}


def _real_text(path: Path) -> str:
    xml = bz2.decompress(path.read_bytes()).decode()
    return html.unescape(re.search(r"<text[^>]*>(.*?)</text>", xml, re.S).group(1))


@pytest.mark.parametrize("code", sorted(REAL_PAGES))
def test_real_page_plain_text_loses_links_templates_and_captions(code):
    path, markup, prose = REAL_PAGES[code]
    wikitext = _real_text(path)
    assert markup <= set(segment.tokenize(wikitext, code))  # each is there to lose
    plain = plain_text(wikitext, site(code))
    words = set(segment.tokenize(plain, code))
    assert not words & markup, words & markup
    assert prose <= words
    assert not re.search(r"\[\[|\]\]|\{\{|\}\}|<ref|\|", plain), re.findall(r".{20}(?:\[\[|\{\{|<ref|\|).{20}", plain)


def test_chinese_page_gives_words_not_clauses(tmp_path):
    out = tmp_path / "zh"
    assert build(out, [ZHWIKI], "--min-unigram-count", "2", "--min-bigram-count", "2") == 0
    rows = pq.read_table(out / "queries.parquet").to_pylist()
    assert {r["lang"] for r in rows} == {"zh"}
    s = stats(out)
    assert s["details"]["lang"] == "zh" and s["details"]["segmenter"] == segment.segmenter_id("zh")
    unigrams = [r["query"] for r in rows if r["source"] == "unigram"]
    print("top Chinese unigrams:", unigrams[:30])
    assert {"中国", "移动", "通信", "公司", "香港"} <= set(unigrams[:15])
    assert all(len(q) <= 4 for q in unigrams[:30]), unigrams[:30]  # words, not clauses
    assert max(len(q) for q in unigrams if not q.isascii()) <= 6, unigrams
    every = {t for r in rows for t in r["query"].split()}
    markup = REAL_PAGES["zh"][1] | MARKUP - {"cn"}  # "cn": the prose names the domain 10086.cn
    assert not every & markup, every & markup


def test_arabic_page_gives_its_words_without_markup(tmp_path):
    out = tmp_path / "ar"
    assert build(out, [ARWIKI], "--min-unigram-count", "2", "--min-bigram-count", "2") == 0
    rows = pq.read_table(out / "queries.parquet").to_pylist()
    assert {r["lang"] for r in rows} == {"ar"}
    assert stats(out)["details"]["lang"] == "ar"
    unigrams = {r["query"] for r in rows if r["source"] == "unigram"}
    assert {"الأرض", "الشمس", "الأوزون"} <= unigrams
    bigrams = {r["query"] for r in rows if r["source"] == "bigram"}
    assert {"طبقة الأوزون", "المجال المغناطيسي"} <= bigrams
    every = {t for r in rows for t in r["query"].split()}
    assert not every & (REAL_PAGES["ar"][1] | MARKUP)


def test_page_xml_helper_still_builds_english(tmp_path):
    dump = write_dump(tmp_path / "e.xml", [page_xml(1, "Paris", "Paris is a city. " * 40)])
    assert build(tmp_path / "q", [dump], "--min-unigram-count", "2", "--min-bigram-count", "2") == 0
    assert stats(tmp_path / "q")["details"]["lang"] == "en"


# ---- real sentences of other languages, wrapped in their wikis' own markup ----

UD = {"zh": "zh_gsdsimp_test300", "th": "th_pud_test300", "ko": "ko_gsd_test100", "hi": "hi_pud_test100",
      "de": "de_gsd_test100", "ja": "ja_gsd_test300", "ar": "ar_pud_test100"}


def _real_page(code: str) -> tuple[str, list[dict]]:
    """A page of real Universal Dependencies sentences (tests/data/segment) of ``code``, paragraph by paragraph,
    with the language's own file, gallery and category markup (its local namespace names and file options,
    from MediaWiki's table) between them, and for Chinese converter markup around a real word."""
    lang = resolve(code)
    rows = [json.loads(line) for line in (DATA / "segment" / f"{UD[code]}.jsonl").read_text().splitlines()][:60]
    file_ns = sorted(n for n in namespace_names(lang, 6) if not n.isascii())
    cat_ns = sorted(n for n in namespace_names(lang, 14) if not n.isascii()) or ["category"]
    options = sorted(w for w in image_option_words(lang) if "$1" not in w and not w.isascii()) or ["thumb"]
    ns = (file_ns or ["file"])[0]
    parts = []
    for i, row in enumerate(rows):
        text = row["text"]
        if code == "zh" and i % 5 == 0 and len(row["words"]) > 2:
            word = row["words"][0]
            text = text.replace(word, f"-{{zh-hans:{word}; zh-hant:{word}}}-", 1)
        parts.append(text)
        if i % 7 == 3:
            parts.append(f"[[{ns}:Example {i}.jpg|{options[0]}|{options[-1]}|250px|{rows[i - 1]['text']}]]")
        if i % 11 == 5:
            parts.append(f"<gallery>\n{ns}:G{i}.jpg|{options[0]}\n{ns}:H{i}.png|{rows[i - 2]['text']}\n</gallery>")
    parts.append(f"[[{cat_ns[0]}:{rows[0]['words'][0]}]]")
    return "\n\n".join(parts), rows


@pytest.mark.parametrize("code", sorted(UD))
def test_real_sentences_keep_their_words_and_lose_the_markup(code):
    wikitext, rows = _real_page(code)
    lang = resolve(code)
    text = plain_text(wikitext, site(code))
    unigrams: Counter[str] = Counter()
    qs.count_ngrams(text, unigrams, Counter(), code)
    markup = {w.casefold() for w in image_option_words(lang) if "$1" not in w}
    markup |= {n.casefold() for number in (6, 14) for n in namespace_names(lang, number)}
    markup |= {"zh", "hans", "hant", "250px", "px", "jpg", "png", "gallery"}
    gold = Counter(segment.normalize(w, code) for row in rows for w in row["words"])
    prose = {t for row in rows for t in segment.tokenize(row["text"], code)}  # "왼쪽" (left) is prose too
    assert not set(unigrams) & (markup - prose), set(unigrams) & (markup - prose)
    assert "[[" not in text and "-{" not in text and "gallery" not in text
    frequent = [w for w, n in gold.most_common(40) if w and qs.is_query_token(w)]
    found = [w for w in frequent if unigrams[w]]
    assert len(found) >= 0.7 * len(frequent), (frequent, found)  # ICU vs the gold units: ja agrees least
