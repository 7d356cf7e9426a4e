"""The project's BPE tokenizer: lower-cased, start/end tokens, padding and truncation, save/load."""

from __future__ import annotations

import pytest
import torch

from tests.trainer.conftest import CLASSES
from trainer.tokenizer import Tokenizer

CAPTIONS = [c for _, templates in CLASSES.values() for c in templates] * 20


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.train(CAPTIONS, vocab_size=400, context_length=16)


def test_special_tokens_padding_and_case(tokenizer):
    assert tokenizer.pad_id == 0
    assert tokenizer.end_id == tokenizer.vocab_size - 1 and tokenizer.start_id == tokenizer.vocab_size - 2
    out = tokenizer(["A Ginger Tabby CAT", "a ginger tabby cat", ""])
    assert out.dtype == torch.long and out.shape == (3, 16)
    assert torch.equal(out[0], out[1])  # lower-cased
    row = out[0].tolist()
    n = row.index(tokenizer.end_id)
    assert row[0] == tokenizer.start_id and all(i == 0 for i in row[n + 1:])
    assert n - 1 < len("a ginger tabby cat") // 1.5  # learnt merges: far fewer tokens than bytes
    assert out[2, :2].tolist() == [tokenizer.start_id, tokenizer.end_id]
    assert tokenizer.decode(row).strip() == "a ginger tabby cat"


def test_truncation_keeps_the_end_token(tokenizer):
    long = " ".join(["a pagoda among green trees"] * 10)
    out = tokenizer([long])
    assert out.shape == (1, 16)
    assert out[0, -1] == tokenizer.end_id and out[0, 0] == tokenizer.start_id
    assert tokenizer([long], context_length=77).shape == (1, 77)
    # Unseen words and scripts still encode (byte-level BPE has no unknown token).
    assert (tokenizer(["Zürich 東京 🚀"])[0] > 0).sum() > 3


def test_save_load_round_trip(tokenizer, tmp_path):
    path = tmp_path / "tokenizer.json"
    tokenizer.save(path)
    loaded = Tokenizer.load(path)
    assert loaded.vocab_size == tokenizer.vocab_size and loaded.context_length == 16
    assert torch.equal(loaded(CAPTIONS[:5]), tokenizer(CAPTIONS[:5]))
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="bad.json: not a wit-tokenizer/1"):
        Tokenizer.load(bad)
    for text in ("[1, 2]", '"tokenizer"', "3"):  # JSON, but no object: one line naming the file, no traceback
        bad.write_text(text)
        with pytest.raises(ValueError, match="bad.json: not a wit-tokenizer/1 .* not an object"):
            Tokenizer.load(bad)
    with pytest.raises(ValueError, match="a directory, not a tokenizer.json"):
        Tokenizer.load(tmp_path)
    with pytest.raises(ValueError, match="at least 300"):
        Tokenizer.train(CAPTIONS, vocab_size=100)
