"""Word segmenters side by side on real Japanese, Chinese and Thai text: speed and agreement (make bench-segment).

Text: the first 300 sentences of three Universal Dependencies test sets kept in tests/data/segment/ (Japanese
GSD, Chinese GSDSimp from Wikipedia, Thai PUD; CC BY-SA, tests/data/README.md), each with the treebank's gold
words. Candidates:

- ``textnorm``: no segmentation (spaces and punctuation only: what stages 1 and 2 did before), for reference;
- ``icu``: ICU's word break iterator alone (pyicu-wheels, ICU 77.1: UAX #29 + its CJ/Thai dictionaries);
- ``wit``: ``wit_builder.core.segment.tokenize``, what stages 1 and 2 use (textnorm folding, ICU on the runs of
  spaceless scripts, pieces re-split until stable), with its word cache cleared before every pass (cold);
- per-language analyzers: MeCab with UniDic (fugashi + unidic-lite) for Japanese, jieba (precise mode, HMM on)
  for Chinese, PyThaiNLP's newmm (dictionary maximal matching) for Thai.

Speed is tokens (each segmenter's own) and characters of text per CPU-second (``time.process_time``, this process
only, after one warm-up pass that loads dictionaries), over enough passes to take at least ``--min-cpu`` seconds.
Agreement is measured on the characters every segmenter keeps: each segmenter's words are folded and stripped of
punctuation by ``textnorm.tokenize`` (so punctuation and spacing conventions do not count), and two segmentations of
a sentence are compared by their word boundaries (boundary F1: the inner boundaries in common) and by their words
(word F1: a word counts when both its ends agree, the SIGHAN bakeoff measure). Each segmenter is compared with the
gold words and with ``wit``. For Japanese the gold comes in two granularities: UniDic short units (what MeCab/UniDic
produces) and long units (compounds such as 不快感 whole).

    .venv/bin/python benchmarks/segmenters.py [--min-cpu 1.0]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from wit_builder.core import segment, textnorm

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "segment"
SAMPLES = {"ja": "ja_gsd_test300.jsonl", "zh": "zh_gsdsimp_test300.jsonl", "th": "th_pud_test300.jsonl"}

Segmenter = Callable[[str], list[str]]


def load(lang: str) -> list[dict[str, object]]:
    with open(DATA / SAMPLES[lang], encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def icu_raw() -> Segmenter:
    import icu

    breaker = icu.BreakIterator.createWordInstance(icu.Locale.getRoot())

    def run(text: str) -> list[str]:
        units = icu.UnicodeString(text)
        breaker.setText(units)
        bounds = [0, *breaker]
        return [str(units[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]

    return run


def wit() -> Segmenter:
    def run(text: str) -> list[str]:
        return segment.tokenize(text)

    return run


def mecab_unidic() -> Segmenter:
    import fugashi

    tagger = fugashi.Tagger()  # unidic-lite: the dictionary the wheel installs
    return lambda text: [word.surface for word in tagger(text)]


def jieba_precise() -> Segmenter:
    import jieba

    jieba.setLogLevel(60)
    jieba.initialize()
    return lambda text: list(jieba.cut(text, HMM=True))


def thai_newmm() -> Segmenter:
    from pythainlp.tokenize import word_tokenize

    return lambda text: word_tokenize(text, engine="newmm", keep_whitespace=False)


PEERS: dict[str, tuple[str, Callable[[], Segmenter]]] = {
    "ja": ("mecab-unidic (fugashi)", mecab_unidic),
    "zh": ("jieba", jieba_precise),
    "th": ("pythainlp newmm", thai_newmm),
}


def comparable(words: Sequence[str]) -> list[str]:
    """The words as textnorm keeps them (folded, punctuation dropped, a word holding punctuation split there)."""
    return [piece for word in words for piece in textnorm.tokenize(word)]


def spans(words: Sequence[str]) -> set[tuple[int, int]]:
    out: set[tuple[int, int]] = set()
    start = 0
    for word in words:
        out.add((start, start + len(word)))
        start += len(word)
    return out


def f1(hits: int, got: int, want: int) -> float:
    return 2 * hits / (got + want) if got + want else 1.0


class Agreement:
    """Boundary and word F1 of ``candidate`` against ``reference``, summed over sentences."""

    def __init__(self) -> None:
        self.bound = [0, 0, 0]  # hits, candidate's, reference's
        self.word = [0, 0, 0]
        self.skipped = 0

    def add(self, candidate: Sequence[str], reference: Sequence[str]) -> None:
        a, b = comparable(candidate), comparable(reference)
        if "".join(a) != "".join(b):  # the two kept different characters (folding across a word edge): not comparable
            self.skipped += 1
            return
        sa, sb = spans(a), spans(b)
        ends_a, ends_b = {e for _, e in sa} - {len("".join(a))}, {e for _, e in sb} - {len("".join(b))}
        for acc, x, y in ((self.bound, ends_a, ends_b), (self.word, sa, sb)):
            acc[0] += len(x & y)
            acc[1] += len(x)
            acc[2] += len(y)

    def text(self) -> str:
        skipped = f" ({self.skipped} skipped)" if self.skipped else ""
        return f"{f1(*self.bound):.3f} / {f1(*self.word):.3f}{skipped}"


class NounRecall:
    """Of the gold long-unit nouns (Japanese LUWPOS 名詞-*, e.g. 不快感, 東京タワー), how many come out as one
    token of the candidate: the words a query of that noun needs whole."""

    def __init__(self) -> None:
        self.hits = self.nouns = 0

    def add(self, candidate: Sequence[str], luw: Sequence[str], luw_pos: Sequence[str]) -> None:
        a = comparable(candidate)
        units = [(comparable([w]), pos) for w, pos in zip(luw, luw_pos, strict=True)]
        b = [piece for pieces, _ in units for piece in pieces]
        if "".join(a) != "".join(b):
            return
        got = spans(a)
        start = 0
        for pieces, pos in units:
            width = sum(len(p) for p in pieces)
            if pos.startswith("名詞") and len(pieces) == 1:
                self.nouns += 1
                self.hits += (start, start + width) in got
            start += width

    def text(self) -> str:
        return f"nouns whole: {self.hits}/{self.nouns} = {self.hits / max(self.nouns, 1):.3f}"


def speed(run: Segmenter, texts: Sequence[str], min_cpu: float, cold: Callable[[], None] | None) -> tuple[int, float]:
    """(tokens of one pass, passes per CPU-second over passes taking at least ``min_cpu`` seconds)."""
    run(texts[0])  # warm-up: load dictionaries
    tokens = passes = 0
    spent = 0.0
    while spent < min_cpu:
        if cold is not None:
            cold()
        start = time.process_time()
        tokens = sum(len(run(t)) for t in texts)
        spent += time.process_time() - start
        passes += 1
    return tokens, passes / spent


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--min-cpu", type=float, default=1.0, help="CPU seconds to time each segmenter for")
    args = parser.parse_args(argv)

    print(f"segmenter id: {segment.segmenter_id()}")
    header = (f"{'lang':4} {'segmenter':24} {'sentences':>9} {'tokens':>7} {'tokens/CPU-s':>12} {'chars/CPU-s':>11}  "
              f"{'vs gold (boundary / word F1)':30} {'vs wit':20}")
    print(header)
    print("-" * len(header))
    for lang in SAMPLES:
        rows = load(lang)
        texts = [str(r["text"]) for r in rows]
        chars = sum(len(t) for t in texts)
        peer_name, make_peer = PEERS[lang]
        candidates: list[tuple[str, Segmenter, Callable[[], None] | None]] = [
            ("textnorm (no segmenter)", textnorm.tokenize, None),
            ("icu", icu_raw(), None),
            ("wit (segment.tokenize)", wit(), segment.clear_cache),
            (peer_name, make_peer(), None),
        ]
        outputs = {name: [run(t) for t in texts] for name, run, _ in candidates}
        for name, run, cold in candidates:
            tokens, rate = speed(run, texts, args.min_cpu, cold)
            gold, versus = Agreement(), Agreement()
            for got, row, ours in zip(outputs[name], rows, outputs["wit (segment.tokenize)"], strict=True):
                gold.add(got, row["words"])  # type: ignore[arg-type]
                versus.add(got, ours)
            vs_wit = "-" if name.startswith("wit") else versus.text()
            print(f"{lang:4} {name:24} {len(texts):9d} {tokens:7d} {tokens * rate:12,.0f} {chars * rate:11,.0f}  "
                  f"{gold.text():30} {vs_wit:20}")
            if lang == "ja":
                luw, nouns = Agreement(), NounRecall()
                for got, row in zip(outputs[name], rows, strict=True):
                    luw.add(got, row["luw"])  # type: ignore[arg-type]
                    nouns.add(got, row["luw"], row["luw_pos"])  # type: ignore[arg-type]
                print(f"{'':4} {'':24} {'':9} {'':7} {'':12} {'':11}  {'long units: ' + luw.text():30} {nouns.text()}")
    print("\nF1 pairs are boundary F1 / word F1 on the characters textnorm keeps; 'vs wit' compares with the "
          "segmentation stages 1 and 2 use.")


if __name__ == "__main__":
    main()
