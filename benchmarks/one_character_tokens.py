"""The measurement behind stage 1's one-character rule (``queries.selection.is_one_character_query``).

For real text of each language (the Universal Dependencies sentences of tests/data/segment and the plain text
of the real jawiki excerpt of tests/data/wiki), tokenized as stage 1 and stage 2 tokenize (``core.segment``),
it reports per script of the one-character tokens: their share of all tokens, how many distinct ones there
are, and the most frequent with the share of sentences (lines) that contain each, i.e. how much of its
language a query of that one character would match.

    python benchmarks/one_character_tokens.py
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from pathlib import Path

from wit_builder.core import segment
from wit_builder.core.languages import resolve
from wit_builder.queries.selection import is_one_character_query
from wit_builder.queries.wikidump import DumpRange, read_pages
from wit_builder.queries.wikitext import plain_text, site_rules

DATA = Path(__file__).parent.parent / "tests" / "data"


def script(ch: str) -> str:
    """A coarse script name from the character's Unicode name ("CJK UNIFIED IDEOGRAPH-732B" -> "CJK")."""
    name = unicodedata.name(ch, "?")
    for word in ("CJK", "HIRAGANA", "KATAKANA", "THAI", "HANGUL", "DEVANAGARI", "ARABIC", "LATIN"):
        if name.startswith(word):
            return "Han" if word == "CJK" else word.title()
    return name.split()[0].title()


def sentences() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for path in sorted((DATA / "segment").glob("*.jsonl")):
        out[path.stem.split("_")[0] + " (UD " + path.stem + ")"] = [
            json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    lines = []
    ja = site_rules(resolve("ja"))
    dump = DATA / "wiki" / "jawiki-country-excerpt.xml.bz2"
    for page in read_pages(DumpRange(str(dump)), lambda p: open(p, "rb")):  # noqa: SIM115 (closed by read_pages)
        lines += [line for line in plain_text(page.text, ja).split("\n") if re.search(r"\w", line)]
    out["ja (jawiki excerpt, lines)"] = lines
    return out


def main() -> None:
    for name, texts in sentences().items():
        lang = name.split()[0]
        per_script: dict[str, Counter[str]] = {}
        coverage: Counter[str] = Counter()
        total = 0
        for text in texts:
            tokens = segment.tokenize(text, lang)
            total += len(tokens)
            singles = {t for t in tokens if len(t) == 1 and t.isalpha()}
            for t in tokens:
                if len(t) == 1 and t.isalpha():
                    per_script.setdefault(script(t), Counter())[t] += 1
            coverage.update(singles)
        print(f"{name}: {len(texts)} sentences, {total} tokens")
        for sc, counts in sorted(per_script.items(), key=lambda kv: -sum(kv[1].values())):
            n = sum(counts.values())
            top = ", ".join(f"{t} {100 * coverage[t] / len(texts):.0f}%" for t, _ in counts.most_common(8))
            rule = "query" if is_one_character_query(next(iter(counts))) else "not a query"
            print(f"  {sc:<10} {n:5d} tokens ({100 * n / max(total, 1):4.1f}%), {len(counts):4d} distinct -> {rule}; "
                  f"sentences containing: {top}")


if __name__ == "__main__":
    main()
