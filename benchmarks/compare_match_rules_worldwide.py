"""The two match rules on real Japanese, Chinese and Thai text, with each extra match put down to its cause
(docs/ARCHITECTURE.md, "Match rule": scripts without spaces).

Text: the Universal Dependencies sentences of ``tests/data/segment`` (Japanese and Chinese Wikipedia, Thai
news/Wikipedia; 300 each). Queries, as stage 1 would make unigram queries: the treebank's gold words of two
characters or more, written in a spaceless script, found in at least ``--min-sentences`` sentences, normalized by
``core.segment`` for the normalized rules and as written for MetaCLIP's. Rules:

- ``textnorm``: the rule before issue 21 (captions tokenized by ``textnorm`` alone: a run of CJK/Thai letters is
  one token);
- ``normalized``: ours, captions segmented by ``core.segment`` with their language, token-boundary match;
- ``metaclip``: MetaCLIP 2's published rule (``metaclip_rule``: entries as written, CJK/Thai ends unpadded).

    python benchmarks/compare_match_rules_worldwide.py [--min-sentences 2]
"""

from __future__ import annotations

import argparse
import json
import unicodedata
from collections import Counter
from pathlib import Path

from wit_builder.core import segment
from wit_builder.core.textnorm import normalize as textnorm_normalize
from wit_builder.pairs.matcher import QueryMatcher
from wit_builder.pairs.metaclip_rule import MetaClipMatcher, is_cjk_or_similar

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "segment"
SETS = {"ja": "ja_gsd_test300", "zh": "zh_gsdsimp_test300", "th": "th_pud_test300"}


def load(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()]


def queries_of(rows: list[dict], min_sentences: int) -> list[str]:
    """Gold words of 2+ characters in a spaceless script, in at least ``min_sentences`` sentences."""
    seen: Counter[str] = Counter()
    for row in rows:
        seen.update({w for w in row["words"] if len(w) >= 2 and segment.needs_segmentation(w)})
    return sorted(w for w, n in seen.items() if n >= min_sentences)


def cause_of_metaclip_only(word: str, lang: str, text: str) -> str:
    """Why MetaCLIP's substring rule finds ``word`` where the token-boundary rule does not."""
    tokens = segment.tokenize(text, lang)
    target = segment.tokenize(word, lang)
    if len(target) > 1:
        return "query split by the segmenter, tokens not adjacent in the text"
    if any(target[0] in t and target[0] != t for t in tokens):
        return "inside a longer word of the segmenter (compound, name, inflection)"
    return "across a word boundary of the segmenter"


def cause_of_ours_only(word: str, text: str) -> str:
    """Why the token-boundary rule finds ``word`` where MetaCLIP's rule does not."""
    if word not in text:
        folded = unicodedata.normalize("NFKC", text).casefold()
        return "NFKC/case (full-width letters, compatibility forms)" if word in folded else "normalization (other)"
    if not is_cjk_or_similar(word[0]) or not is_cjk_or_similar(word[-1]):
        ends = {segment.script_of(word[0]), segment.script_of(word[-1])} - {"Han"}
        kind = "hiragana" if ends == {"Hiragana"} else "katakana" if "Katakana" in ends else "Latin/digit"
        return f"MetaCLIP pads a {kind} end with a space (outside its CJK ranges)"
    return "other"


def compare(lang: str, rows: list[dict], min_sentences: int) -> dict:
    words = queries_of(rows, min_sentences)
    normalized = sorted({segment.normalize(w, lang) for w in words})
    back = {segment.normalize(w, lang): w for w in words}
    old = QueryMatcher(sorted({textnorm_normalize(w) for w in words}))
    ours = QueryMatcher(normalized, lang)
    meta = MetaClipMatcher(words)
    texts = [r["text"] for r in rows]
    result: dict = {"lang": lang, "sentences": len(texts), "queries": len(words), "rules": {}, "causes": Counter()}
    totals = {name: [0, 0] for name in ("textnorm", "normalized", "metaclip")}
    for text in texts:
        found = {"textnorm": set(old.match_normalized(textnorm_normalize(text))),
                 "normalized": {back.get(q, q) for q in ours.match_normalized(segment.normalize(text, lang))},
                 "metaclip": set(meta.match(text))}
        for name, hits in found.items():
            totals[name][0] += bool(hits)
            totals[name][1] += len(hits)
        for word in found["metaclip"] - found["normalized"]:
            result["causes"]["metaclip only: " + cause_of_metaclip_only(word, lang, text)] += 1
        for word in found["normalized"] - found["metaclip"]:
            result["causes"]["ours only: " + cause_of_ours_only(word, text)] += 1
    result["rules"] = totals
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-sentences", type=int, default=2)
    args = parser.parse_args()
    results = [compare(lang, load(name), args.min_sentences) for lang, name in SETS.items()]
    print("| language | sentences | queries | textnorm (before) | normalized (ours) | metaclip (MetaCLIP 2) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        cells = [f"{r['rules'][k][0]} ({r['rules'][k][1]} pairs)" for k in ("textnorm", "normalized", "metaclip")]
        print(f"| {r['lang']} | {r['sentences']} | {r['queries']} | {' | '.join(cells)} |")
    print("\n| language | cause of an extra (sentence, query) pair | pairs |")
    print("| --- | --- | ---: |")
    for r in results:
        for cause, n in r["causes"].most_common():
            print(f"| {r['lang']} | {cause} | {n} |")


if __name__ == "__main__":
    main()
