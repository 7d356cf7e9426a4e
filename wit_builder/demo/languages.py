"""``wit demo --languages en,ja``: what the demo adds for a second language (Japanese), on data that ships.

- Queries: stage 1 on a real jawiki excerpt shipped in ``data/`` (21 country articles, the same file as
  ``tests/data/wiki/jawiki-country-excerpt.xml.bz2``; source and licence in ``data/README.md``), plus the Japanese
  lemmas of the demo classes' WordNet 3.0 synsets in Open Multilingual Wordnet's tab format
  (``data/wn-demo-jpn.tab``, written for the demo, read by ``--omw-file``), as the English demo takes its class
  words from WordNet.
- Pool: Japanese captions naming each visual class (templates written for the demo, below) on images of their own
  random stream, and real image captions from both dumps' file links (``[[ファイル:...|thumb|caption]]``,
  ``[[File:...|caption]]``) on pictures of no class: text as it occurs on the web, matched or not by stage 2.
- Zero-shot: the same held-out images, class names per language (``classnames-<lang>.txt``: folder<TAB>name),
  each language with its own prompt templates (``wit eval --classnames ja=...``).

Nothing here runs for the default ``--languages en``, whose outputs stay byte-identical.
"""

from __future__ import annotations

import bz2
import random
import re
from collections.abc import Iterator
from pathlib import Path

DATA = Path(__file__).parent / "data"
JAWIKI = DATA / "jawiki-country-excerpt.xml.bz2"
JA_WORDNET = DATA / "wn-demo-jpn.tab"
LANGUAGES = ("en", "ja")  # what the demo ships data for
DEFAULT = ("en",)

# The demo's visual classes in Japanese: the lemma of the class's WordNet synset in data/wn-demo-jpn.tab.
JAPANESE = {
    "astronaut": "宇宙飛行士", "brick": "煉瓦", "cat": "猫", "circle": "円", "coffee": "コーヒー", "coin": "硬貨",
    "flower": "花", "galaxy": "銀河", "pattern": "模様", "portrait": "肖像", "rocket": "ロケット",
    "temple": "寺院", "triangle": "三角形", "vehicle": "乗り物",
}
# Japanese alt texts written for the demo: "{c}" is the class word.
JA_TEMPLATES = (
    "{c}の写真", "{c}のクローズアップ", "晴れた日の{c}", "{c}（2014年撮影）", "古いアルバムにあった{c}の写真",
    "{c}を横から見たところ", "ぼやけた{c}の写真", "壁紙：{c}", "今日見かけた{c}", "{c}の高解像度画像",
    "柔らかな光の中の{c}", "無地の背景に{c}", "自由研究で撮った{c}の写真", "お気に入りの{c}",
)
FILE_LINK = re.compile(r"\[\[(?:File|Image|ファイル|画像):", re.IGNORECASE)
# Options of a file link that are not its caption (MediaWiki's image syntax).
_OPTION = re.compile(r"^(thumb|thumbnail|frame|frameless|border|left|right|center|centre|none|upright(=.*)?|"
                     r"\d*x?\d+px|link=.*|alt=.*|lang=.*|page=.*|class=.*|サムネイル|左|右|中央)$", re.IGNORECASE)
_LINK = re.compile(r"\[\[(?:[^\]|]*\|)?([^\]]*)\]\]")  # [[target|label]] -> label, [[target]] -> target
_TEMPLATE = re.compile(r"\{\{[^{}]*\}\}")
_TAG = re.compile(r"<[^>]+>|'{2,}")


def parse(value: str) -> tuple[str, ...]:
    """``--languages``: 'en' or 'en,ja' -> ('en',) / ('en', 'ja'). Raises ValueError for another language or
    a list without English (the English chain is the demo's base)."""
    codes = tuple(dict.fromkeys(code.strip().lower() for code in value.split(",") if code.strip()))
    unknown = [code for code in codes if code not in LANGUAGES]
    if unknown or "en" not in codes:
        raise ValueError(f"--languages {value!r}: the demo ships data for {', '.join(LANGUAGES)} and needs en "
                         f"(e.g. --languages en,ja)")
    return tuple(code for code in LANGUAGES if code in codes)


def _link_end(text: str, start: int) -> int:
    """Index just past the ``]]`` closing the link opened at ``start`` (nested links counted), or -1."""
    depth, i = 0, start
    while i < len(text) - 1:
        pair = text[i:i + 2]
        if pair == "[[":
            depth, i = depth + 1, i + 2
        elif pair == "]]":
            depth, i = depth - 1, i + 2
            if depth == 0:
                return i
        else:
            i += 1
    return -1


def file_captions(wikitext: str) -> Iterator[str]:
    """The captions of the file links of one page's wikitext, as a reader sees them: the last part of the link
    that is not an option, inner links as their labels, templates and markup removed; empty ones skipped."""
    for found in FILE_LINK.finditer(wikitext):
        end = _link_end(wikitext, found.start())
        if end < 0:
            continue
        body = wikitext[found.end():end - 2]
        parts, depth, current = [], 0, ""
        for char in body:  # split on the link's own pipes, not those of nested links or templates
            depth += char in "[{"
            depth -= char in "]}"
            if char == "|" and depth == 0:
                parts.append(current)
                current = ""
            else:
                current += char
        parts.append(current)
        for part in reversed(parts[1:]):
            caption = _TAG.sub("", _TEMPLATE.sub("", _LINK.sub(r"\1", part))).strip()
            if caption and not _OPTION.match(caption):
                yield " ".join(caption.split())
                break


def dump_captions(path: Path, limit: int) -> list[str]:
    """The first ``limit`` distinct file-link captions of a bz2 MediaWiki XML dump (5 to 120 characters)."""
    from xml.etree import ElementTree

    found: dict[str, None] = {}
    with bz2.open(path, "rb") as f:
        for _, element in ElementTree.iterparse(f):
            if element.tag.rpartition("}")[2] == "text" and element.text:
                for caption in file_captions(element.text):
                    if 5 <= len(caption) <= 120:
                        found.setdefault(caption)
                if len(found) >= limit:
                    break
            element.clear()
    return list(found)[:limit]


def japanese_caption(cls: str, rng: random.Random) -> str:
    """A Japanese alt text naming class ``cls``."""
    return rng.choice(JA_TEMPLATES).format(c=JAPANESE[cls])


def classnames_file(classes: list[str], lang: str) -> str:
    """``folder<TAB>class name`` lines of the held-out folders in ``lang`` (``wit eval --classnames LANG=``)."""
    names = JAPANESE if lang == "ja" else {c: c for c in classes}
    return "".join(f"{cls}\t{names[cls]}\n" for cls in classes)
