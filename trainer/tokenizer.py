"""A byte-level BPE tokenizer trained by the project (no downloaded vocabulary), lower-cased, with start and end
tokens, padded and truncated to the model's context length. Byte-level BPE has no unknown token: every script
encodes; how many tokens a language takes depends on the captions the merges were learnt from
(``trainer.languages`` draws that sample fairly across languages and measures tokens per caption per language).

Ids: 0 is padding; the start and end tokens are the two highest ids, so the text tower pools at
``tokens.argmax(-1)`` exactly as OpenAI's CLIP and open_clip do. A Hugging Face ``tokenizer.json`` made
elsewhere (a multilingual BPE or unigram model) loads too: the three special tokens are added after its
vocabulary when it lacks them, so the end token is again the highest id.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable

import torch
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

from trainer.atomic import write_atomic

PAD, START, END = "<pad>", "<start_of_text>", "<end_of_text>"
FORMAT = "wit-tokenizer/1"
MIN_VOCAB = 300  # 256 byte symbols + 3 specials + a few merges


class Tokenizer:
    """The project's BPE with CLIP's framing: ``__call__`` gives (B, context_length) ids. Raises ValueError when
    ``bpe`` lacks the special tokens or the end token is not the highest id."""

    def __init__(self, bpe: HFTokenizer, context_length: int = 77):
        self._bpe = bpe
        self.context_length = context_length
        pad_id, start_id, end_id = bpe.token_to_id(PAD), bpe.token_to_id(START), bpe.token_to_id(END)
        if pad_id is None or start_id is None or end_id is None:
            raise ValueError(f"tokenizer lacks one of the special tokens {PAD}, {START}, {END}")
        self.pad_id, self.start_id, self.end_id = pad_id, start_id, end_id
        if self.end_id != bpe.get_vocab_size() - 1:
            raise ValueError("the end-of-text token must have the highest id (the text tower pools at argmax)")

    @property
    def vocab_size(self) -> int:
        """Ids in all, specials included (the text tower's embedding rows)."""
        return self._bpe.get_vocab_size()

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, context_length: int = 77) -> Tokenizer:
        """Learn a byte-level BPE of ``vocab_size`` ids (specials included) from ``texts`` (every text counts
        once per occurrence: repeat a text to weigh it, as ``trainer.languages.smoothed_sample`` does)."""
        if vocab_size < MIN_VOCAB:
            raise ValueError(f"vocab_size must be at least {MIN_VOCAB}, got {vocab_size}")
        bpe = HFTokenizer(models.BPE())
        bpe.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase(), normalizers.Strip()])
        bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        bpe.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size - 2, special_tokens=[PAD],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
        )
        bpe.train_from_iterator(texts, trainer=trainer)
        # Added after training so that they take the two highest ids.
        bpe.add_special_tokens([START, END])
        return cls(bpe, context_length)

    @classmethod
    def from_hugging_face(cls, bpe: HFTokenizer, context_length: int = 77) -> Tokenizer:
        """Wrap a Hugging Face tokenizer made elsewhere: its pre- and post-processing are kept, the special
        tokens it lacks are added after its vocabulary (padding, then start and end, so that end is the highest
        id). Raises ValueError when it has a start or end token that is not among the two highest ids."""
        bpe.post_processor = None  # the framing is ours (start, text, end, padding)
        bpe.no_truncation()  # a file may carry its own; ``__call__`` cuts at the model's context
        bpe.no_padding()
        if bpe.token_to_id(PAD) is None:
            bpe.add_special_tokens([PAD])
        missing = [token for token in (START, END) if bpe.token_to_id(token) is None]
        bpe.add_special_tokens(missing)
        return cls(bpe, context_length)

    def fingerprint(self) -> str:
        """sha256 (hex, first 16 digits) of the vocabulary, merges and normalisation: two tokenizers with the same
        fingerprint give the same ids for every text. A checkpoint records it; ``wit eval`` compares it."""
        return hashlib.sha256(self._bpe.to_str().encode("utf-8")).hexdigest()[:16]

    def lengths(self, texts: list[str]) -> list[int]:
        """Text tokens of each text, without start and end tokens and before truncation."""
        return [len(enc.ids) for enc in self._bpe.encode_batch(list(texts), add_special_tokens=False)]

    def encode(self, text: str) -> list[int]:
        """Ids of one text without start/end tokens."""
        return self._bpe.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int]) -> str:
        """The text of ``ids``, the special ids skipped (lower-cased, as ``encode`` saw it)."""
        return self._bpe.decode([i for i in ids if i not in (self.pad_id, self.start_id, self.end_id)])

    def __call__(self, texts: str | list[str], context_length: int | None = None) -> torch.Tensor:
        """(B, context_length) LongTensor: start, text ids, end, then padding. Long texts are cut so that the
        end token is kept."""
        if isinstance(texts, str):
            texts = [texts]
        length = context_length or self.context_length
        out = torch.full((len(texts), length), self.pad_id, dtype=torch.long)
        for row, enc in enumerate(self._bpe.encode_batch(list(texts), add_special_tokens=False)):
            ids = [self.start_id, *enc.ids[: length - 2], self.end_id]
            out[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out

    def to_json(self) -> str:
        """The whole tokenizer as JSON (``wit-tokenizer/1``): context length and the Hugging Face BPE."""
        return json.dumps({"format": FORMAT, "context_length": self.context_length, "bpe": self._bpe.to_str()})

    @classmethod
    def from_json(cls, text: str) -> Tokenizer:
        """The inverse of ``to_json``; a plain Hugging Face ``tokenizer.json`` (a document with a ``model``) goes
        through ``from_hugging_face``. Raises ValueError for another format, KeyError for a missing field."""
        data = json.loads(text)
        if not isinstance(data, dict):  # a list, string or number: no tokenizer document
            raise ValueError(f"not a {FORMAT} tokenizer file nor a Hugging Face tokenizer.json (a JSON "
                             f"{type(data).__name__}, not an object)")
        if data.get("format") != FORMAT and isinstance(data.get("model"), dict):
            try:
                return cls.from_hugging_face(HFTokenizer.from_str(text))
            except Exception as e:  # the tokenizers library raises its own Exception subclass
                raise ValueError(f"not a Hugging Face tokenizer.json the tokenizers library reads ({e})") from e
        if data.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} tokenizer file nor a Hugging Face tokenizer.json "
                             f"(format={data.get('format')!r})")
        return cls(HFTokenizer.from_str(data["bpe"]), int(data["context_length"]))

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically: a temporary file renamed into place."""
        write_atomic(path, lambda tmp: tmp.write_text(self.to_json(), encoding="utf-8"))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tokenizer:
        """``from_json`` of a file; raises ValueError naming ``path`` (also for a directory or a file that is not
        UTF-8), FileNotFoundError when it does not exist."""
        if os.path.isdir(path):
            raise ValueError(f"{path}: a directory, not a tokenizer.json file")
        with open(path, encoding="utf-8") as f:
            try:
                return cls.from_json(f.read())
            except (ValueError, KeyError) as e:  # UnicodeDecodeError is a ValueError
                raise ValueError(f"{path}: {e}") from e
