"""Generate ``wit_builder/core/data/mediawiki_languages.json`` from MediaWiki's per-language message files.

    python tools/mediawiki_languages.py MEDIAWIKI_TREE [--source "MediaWiki 1.39.0-alpha, ..."]

``MEDIAWIKI_TREE`` is a MediaWiki checkout (a folder with ``languages/messages/Messages*.php`` and
``includes/languages/data/Names.php``). For every message file, the table keeps what stage 1 needs to read a
wiki of that content language without the wiki's own configuration:

- ``name``: the autonym (``Names.php``; a language with a name but no message file has only its name),
- ``fallback``: the fallback chain (``$fallback``),
- ``namespaces``: namespace number -> local names and aliases (``$namespaceNames``, ``$namespaceAliases``;
  ``$1`` in a project namespace is the wiki's name, unknown here, so those entries are left out),
- ``magic``: the magic words stage 1 uses, by MediaWiki's id (``$magicWords``): the image options ``img_*``
  (``thumb``, ``mini``, ``サムネイル``, ``تصغير``, ``$1px``), ``redirect`` (``#転送``) and the behaviour
  switches ``__NOTOC__``-like (``notoc``, ``toc``, ``forcetoc``, ``noeditsection``, ...).

The PHP is read with a small parser of the array literals these files use (strings, constants, nested
arrays); no PHP interpreter is needed. The output is sorted, so running it again on the same tree gives the
same bytes.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

NS = {
    "NS_MEDIA": -2, "NS_SPECIAL": -1, "NS_MAIN": 0, "NS_TALK": 1, "NS_USER": 2, "NS_USER_TALK": 3,
    "NS_PROJECT": 4, "NS_PROJECT_TALK": 5, "NS_FILE": 6, "NS_IMAGE": 6, "NS_FILE_TALK": 7, "NS_IMAGE_TALK": 7,
    "NS_MEDIAWIKI": 8, "NS_MEDIAWIKI_TALK": 9, "NS_TEMPLATE": 10, "NS_TEMPLATE_TALK": 11, "NS_HELP": 12,
    "NS_HELP_TALK": 13, "NS_CATEGORY": 14, "NS_CATEGORY_TALK": 15,
}
SWITCHES = ("notoc", "nogallery", "forcetoc", "toc", "noeditsection", "newsectionlink", "nonewsectionlink",
            "hiddencat", "index", "noindex", "staticredirect", "notitleconvert", "nocontentconvert",
            "expectunusedcategory", "disambiguation", "nocc", "notc")
_TOKEN = re.compile(r"""\s*(?:(?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")|(?P<arrow>=>)|(?P<open>\[|array\s*\()
    |(?P<close>\]|\))|(?P<comma>,)|(?P<word>[A-Za-z_][A-Za-z0-9_:]*|-?\d+))""", re.X)
_COMMENT = re.compile(r"(?m)(?:^|(?<=[\s,\[(]))(?://|#)[^\n]*$|/\*.*?\*/", re.S)


def _unquote(s: str) -> str:
    body = s[1:-1]
    if s[0] == "'":
        return body.replace("\\'", "'").replace("\\\\", "\\")
    return bytes(body, "utf-8").decode("unicode_escape").encode("latin-1").decode("utf-8")


def _parse_array(text: str, pos: int) -> tuple[object, int]:
    """The PHP array literal starting at ``pos`` (after the opening bracket) -> (dict or list, end position)."""
    items: list[tuple[object, object]] = []
    key: object = None
    value: object = None
    have_value = False
    while True:
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ValueError(f"cannot parse PHP at {text[pos:pos + 60]!r}")
        pos = m.end()
        if m["close"]:
            if have_value:
                items.append((key, value))
            break
        if m["comma"]:
            if have_value:
                items.append((key, value))
            key, value, have_value = None, None, False
        elif m["arrow"]:
            key, have_value = value, False
        elif m["open"]:
            value, pos = _parse_array(text, pos)
            have_value = True
        elif m["str"]:
            value, have_value = _unquote(m["str"]), True
        else:
            word = m["word"]
            value = NS.get(word, int(word) if word.lstrip("-").isdigit() else word)
            have_value = True
    if items and all(k is None for k, _ in items):
        return [v for _, v in items], pos
    return {k: v for k, v in items}, pos


def php_variable(text: str, name: str) -> object:
    """The value of ``$name = ...;`` in a PHP file's text (an array, a string), or None when absent."""
    m = re.search(rf"\${name}\s*=\s*", text)
    if m is None:
        return None
    rest = text[m.end():]
    opening = re.match(r"\[|array\s*\(", rest)
    if opening:
        value, _ = _parse_array(text, m.end() + opening.end())
        return value
    s = re.match(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"", rest)
    return _unquote(s.group()) if s else None


def language_code(path: Path) -> str:
    """``MessagesZh_hans.php`` -> ``zh-hans``."""
    return path.stem.removeprefix("Messages").lower().replace("_", "-")


def read_messages(path: Path) -> dict:
    """One message file -> its table entry (the module docstring's fields; empty ones left out)."""
    text = _COMMENT.sub("", path.read_text(encoding="utf-8"))
    entry: dict = {}
    fallback = php_variable(text, "fallback")
    if isinstance(fallback, str) and fallback.strip():
        entry["fallback"] = [c.strip() for c in fallback.split(",") if c.strip()]
    namespaces: dict[int, set[str]] = {}
    names = php_variable(text, "namespaceNames") or {}
    aliases = php_variable(text, "namespaceAliases") or {}
    for number, name in dict(names).items():
        if isinstance(number, int) and isinstance(name, str) and "$1" not in name:
            namespaces.setdefault(number, set()).add(name)
    for name, number in dict(aliases).items():
        if isinstance(number, int) and isinstance(name, str) and "$1" not in name:
            namespaces.setdefault(number, set()).add(name)
    if namespaces:
        entry["namespaces"] = {str(k): sorted(v) for k, v in sorted(namespaces.items())}
    magic = php_variable(text, "magicWords") or {}
    kept = {}
    for word_id, synonyms in dict(magic).items():
        if isinstance(word_id, str) and (word_id.startswith("img_") or word_id == "redirect"
                                         or word_id in SWITCHES) and isinstance(synonyms, list):
            kept[word_id] = sorted({s for s in synonyms[1:] if isinstance(s, str)})
    if kept:
        entry["magic"] = dict(sorted(kept.items()))
    return entry


def autonyms(names_php: Path) -> dict[str, str]:
    """``Names.php``'s ``$names``: language code -> autonym."""
    value = php_variable(_COMMENT.sub("", names_php.read_text(encoding="utf-8")), "names")
    return {k: v for k, v in dict(value or {}).items() if isinstance(k, str) and isinstance(v, str)}


def build(tree: Path, source: str) -> dict:
    """The whole table: ``{"source": ..., "languages": {code: entry}}``."""
    names = autonyms(tree / "includes/languages/data/Names.php")
    languages: dict[str, dict] = {code: {"name": name} for code, name in names.items()}
    for path in sorted((tree / "languages/messages").glob("Messages*.php")):
        code = language_code(path)
        languages[code] = {**languages.get(code, {}), **read_messages(path)}
    return {"source": source, "languages": dict(sorted(languages.items()))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tree", type=Path, help="a MediaWiki checkout")
    parser.add_argument("--source", required=True, help="where the tree came from (version, repository, commit)")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent.parent / "wit_builder/core/data/mediawiki_languages.json")
    args = parser.parse_args(argv)
    table = build(args.tree, args.source)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(table, ensure_ascii=False, sort_keys=False, indent=0) + "\n", encoding="utf-8")
    print(f"{len(table['languages'])} languages -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
