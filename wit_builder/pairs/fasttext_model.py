"""fastText's supervised prediction over a batch of lines, with every word's vector computed once.

``fasttext-predict`` (the library we take the ``lid.176.ftz`` model's semantics from) answers one line per call:
each call re-tokenizes the line, re-hashes every character n-gram of every word and decodes every product-
quantized row again, about 0.4 us per character. Alt texts repeat their words (Zipf), so this module reads the
same model file, decodes its input matrix once, keeps each word's summed row vector (word row + its n-gram rows,
the sum fastText adds for that word) in a bounded cache, and scores a whole batch with two matrix products.
Held equal to ``fasttext-predict`` by ``tests/pairs/test_fasttext_model.py`` (same top labels on thousands of
real captions in many languages; probabilities within 1e-5: float sums in another order).

What is reproduced, from facebookresearch/fastText v0.9.2 (``src/``): the model file (``FastText::loadModel``:
magic 793712314, version 12, ``Args``, ``Dictionary`` with ``pruneidx``, ``QuantMatrix``/``ProductQuantizer``
or ``DenseMatrix``); tokens split on the six ASCII blanks and NUL (``Dictionary::readWord``), ``</s>`` ending the
line, tokens starting with ``__label__`` ignored; a vocabulary word is its row and its n-gram rows, any other word
its n-gram rows only (``Dictionary::getLine``/``addSubwords``); n-grams of ``<word>`` of ``minn``..``maxn``
characters (UTF-8 aware), FNV-1a over signed bytes modulo ``bucket``, kept only when in ``pruneidx``
(``computeSubwords``, ``hash``, ``pushHash``); the hidden vector is the mean of the rows (``computeHidden``);
``softmax`` and hierarchical softmax losses (``Loss::predict``, ``HierarchicalSoftmaxLoss::buildTree``/``dfs``
with ``std_log(x) = log(x + 1e-5)``), word n-grams (``wordNgrams`` > 1) are not supported (lid.176 has 1).

Errors: ``ValueError`` naming the file for a file that is not a fastText supervised model this module reads.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

MAGIC, VERSION = 793712314, 12
EOS, BOW, EOW, LABEL = "</s>", "<", ">", "__label__"
LOSS_HS, LOSS_SOFTMAX = 1, 3  # fastText's loss_name enum
KSUB = 256  # centroids per sub-quantizer (8 bits)
_BLANKS = re.compile("[ \n\r\t\v\f\0]+")  # fastText's readWord separators, exactly (not Unicode spaces)
# str.split() separators that fastText does not split on, and NUL, which fastText splits on and str.split() not
_PYTHON_ONLY_BLANKS = re.compile("[^\\S \n\r\t\v\f]|\0")


def fnv1a(data: bytes) -> int:
    """fastText's ``Dictionary::hash``: 32-bit FNV-1a over the bytes read as signed chars."""
    h = 2166136261
    for b in data:
        h = ((h ^ (b | 0xFFFFFF00 if b >= 0x80 else b)) * 16777619) & 0xFFFFFFFF
    return h


class _Reader:
    def __init__(self, data: bytes, path: str):
        self.data, self.at, self.path = data, 0, path

    def take(self, fmt: str) -> tuple:
        size = struct.calcsize(fmt)
        if self.at + size > len(self.data):
            raise ValueError(f"{self.path}: not a fastText model (ends at byte {len(self.data)})")
        values = struct.unpack_from(fmt, self.data, self.at)
        self.at += size
        return values

    def array(self, dtype: type, count: int) -> np.ndarray:
        size = np.dtype(dtype).itemsize * count
        if count < 0 or self.at + size > len(self.data):
            raise ValueError(f"{self.path}: not a fastText model (ends at byte {len(self.data)})")
        values: np.ndarray = np.frombuffer(self.data, dtype, count, self.at)
        self.at += size
        return values

    def word(self) -> str:
        end = self.data.find(b"\0", self.at)
        if end < 0:
            raise ValueError(f"{self.path}: not a fastText model (unterminated word)")
        word = self.data[self.at:end].decode("utf-8", "replace")
        self.at = end + 1
        return word


def _quantized_rows(reader: _Reader) -> np.ndarray:
    """``QuantMatrix::load`` then every row decoded: (m, n) float32 (``ProductQuantizer::addcode`` times the
    row's norm when the matrix was quantized with norms)."""
    qnorm, m, n, codesize = reader.take("<?qqi")
    codes = reader.array(np.uint8, codesize)

    def product_quantizer() -> tuple[int, int, int, int, np.ndarray]:
        dim, nsubq, dsub, lastdsub = reader.take("<4i")
        return dim, nsubq, dsub, lastdsub, reader.array(np.float32, dim * KSUB)

    dim, nsubq, dsub, lastdsub, centroids = product_quantizer()
    if dim != n or codesize != m * nsubq:
        raise ValueError(f"{reader.path}: inconsistent quantized matrix ({m} x {n}, {codesize} codes)")
    codes = codes.reshape(m, nsubq).astype(np.int64)
    rows = np.empty((m, n), np.float32)
    for sub in range(nsubq):
        width = lastdsub if sub == nsubq - 1 else dsub
        table = centroids[sub * KSUB * dsub:sub * KSUB * dsub + KSUB * width].reshape(KSUB, width)
        rows[:, sub * dsub:sub * dsub + width] = table[codes[:, sub]]
    if qnorm:
        norm_codes = reader.array(np.uint8, m)
        _, _, _, _, norms = product_quantizer()  # a 1-dimensional quantizer of the norms
        rows *= norms[norm_codes.astype(np.int64)][:, None]
    return rows


def _dense_rows(reader: _Reader) -> np.ndarray:
    m, n = reader.take("<qq")
    return reader.array(np.float32, m * n).reshape(m, n).copy()


def _huffman_paths(counts: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """fastText's ``HierarchicalSoftmaxLoss::buildTree`` over the labels' counts (most frequent first) ->
    (left, right, children): (internal nodes, labels) 0/1 float32 matrices, ``left[j, i]`` is 1 when label i's
    path goes to the left child of internal node j (the sigmoid's ``1 - f``), ``right`` likewise (``f``); and
    (internal nodes, 2) int64, the node ids of each internal node's left and right child (ids < labels: leaves,
    internal node j is id labels + j, the root the last)."""
    osz = len(counts)
    count = [float(c) for c in counts] + [1e15] * (osz - 1)
    parent = [-1] * (2 * osz - 1)
    is_right = [False] * (2 * osz - 1)
    leaf, node = osz - 1, osz
    for i in range(osz, 2 * osz - 1):
        mini = [0, 0]
        for j in range(2):
            if leaf >= 0 and count[leaf] < count[node]:
                mini[j], leaf = leaf, leaf - 1
            else:
                mini[j], node = node, node + 1
        count[i] = count[mini[0]] + count[mini[1]]
        parent[mini[0]] = parent[mini[1]] = i
        is_right[mini[1]] = True
    left = np.zeros((max(osz - 1, 1), osz), np.float32)
    right = np.zeros_like(left)
    children = np.zeros((max(osz - 1, 1), 2), np.int64)
    for node in range(2 * osz - 2):
        children[parent[node] - osz, int(is_right[node])] = node
    for label in range(osz):
        child, up = label, parent[label]
        while up != -1:
            (right if is_right[child] else left)[up - osz, label] = 1.0
            child, up = up, parent[up]
    return left, right, children


def _levels(children: np.ndarray, osz: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The internal nodes level by level from the root: (internal node indices j, their left and right child
    ids), for scoring every leaf top-down as fastText's ``dfs`` sums (parent's score + the branch's log)."""
    levels = []
    current = np.array([len(children) - 1])  # the root: the last internal node
    while len(current):
        left, right = children[current, 0], children[current, 1]
        levels.append((current, left, right))
        below = np.concatenate([left, right])
        current = below[below >= osz] - osz
    return levels


class FastTextModel:
    """A fastText supervised model file, read into numpy; ``predict`` scores a batch of lines.

    Args:
        path: the ``.bin`` or ``.ftz`` file.
        max_cached_words: words whose summed rows are kept (about 100 bytes each); the cache starts over
            when full (results never depend on it).
    """

    def __init__(self, path: str, max_cached_words: int = 262_144):
        with open(path, "rb") as f:
            reader = _Reader(f.read(), path)
        magic, version = reader.take("<ii")
        if magic != MAGIC or version != VERSION:
            raise ValueError(f"{path}: not a fastText model of version {VERSION} (magic {magic}, version {version})")
        (self.dim, _, _, _, _, word_ngrams, loss, model, self.bucket, self.minn, self.maxn, _), _ = (
            reader.take("<12i"), reader.take("<d"))
        if model != 3 or loss not in (LOSS_HS, LOSS_SOFTMAX) or word_ngrams > 1:
            raise ValueError(f"{path}: a fastText model this reader does not score (model {model}, loss {loss}, "
                             f"wordNgrams {word_ngrams}); supervised hs/softmax models with wordNgrams 1 only")
        size, self.nwords, nlabels = reader.take("<3i")
        _, prune_size = reader.take("<qq")
        words: list[str] = []
        counts: list[int] = []
        for _ in range(size):
            word = reader.word()
            count, _kind = reader.take("<qb")
            words.append(word)
            counts.append(count)
        pairs = reader.array(np.int32, 2 * max(prune_size, 0)).reshape(-1, 2).astype(np.int64)
        # Hash bucket -> input row (-1: pruned away); every bucket is its own row in a model never pruned.
        if prune_size < 0:
            self._bucket_rows = np.arange(self.nwords, self.nwords + self.bucket, dtype=np.int32)
        else:
            self._bucket_rows = np.full(self.bucket, -1, np.int32)
            self._bucket_rows[pairs[:, 0]] = self.nwords + pairs[:, 1]
        self._vocabulary = {word: i for i, word in enumerate(words[:self.nwords])}
        self._vocabulary_array = pa.array(words[:self.nwords], pa.string())  # word id i is element i
        self.labels = [label.removeprefix(LABEL) for label in words[self.nwords:]]
        (quantized_input,) = reader.take("<?")
        self._input = _quantized_rows(reader) if quantized_input else _dense_rows(reader)
        (quantized_output,) = reader.take("<?")
        output = _quantized_rows(reader) if quantized_output else _dense_rows(reader)
        if reader.at != len(reader.data) or self._input.shape[1] != self.dim or nlabels != len(self.labels):
            raise ValueError(f"{path}: not a fastText model this reader understands (byte {reader.at} of "
                             f"{len(reader.data)})")
        self.loss = loss
        self._output = np.ascontiguousarray(output.T)  # (dim, rows): hidden @ this
        if loss == LOSS_HS:
            left, right, self._children = _huffman_paths(counts[self.nwords:])
            self._paths = np.concatenate([left, right])  # (2 x internal nodes, labels)
            self._depth = int((left + right).sum(axis=0).max())  # the longest path, in internal nodes
            self._levels = _levels(self._children, len(self.labels))
        self._max_cached = max_cached_words
        self._clear()

    def _clear(self) -> None:
        self._index: dict[str, int] = {}
        self._sums = np.zeros((0, self.dim), np.float32)  # row i: the summed input rows of cached word i
        self._counts = np.zeros(0, np.float32)  # how many rows were summed
        self._eos = self.word_rows([EOS])
        self._put([EOS], *self._eos)  # cached too: a "</s>" written in a line is found by its row

    def row_ids(self, word: str) -> list[int]:
        """The input rows fastText adds for one token (``Dictionary::getLine``/``addSubwords``), plainly: the
        reference for :meth:`word_rows`, which computes the same for many words at once."""
        if word.startswith(LABEL):
            return []  # a label in the text: fastText skips it
        wid = self._vocabulary.get(word)
        if word == EOS:
            return [] if wid is None else [wid]
        ids = [] if wid is None else [wid]
        data = (BOW + word + EOW).encode("utf-8", "surrogatepass")
        for i in range(len(data)):
            if data[i] & 0xC0 == 0x80:
                continue
            j, n = i, 1
            while j < len(data) and n <= self.maxn:
                j += 1
                while j < len(data) and data[j] & 0xC0 == 0x80:
                    j += 1
                if n >= self.minn and not (n == 1 and (i == 0 or j == len(data))):
                    row = self._bucket_rows[fnv1a(data[i:j]) % self.bucket]
                    if row >= 0:
                        ids.append(int(row))
                n += 1
        return ids

    def word_rows(self, words: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(sums, counts): for each word, the sum of the input rows ``row_ids`` gives ((len(words), dim)
        float32) and their number (float32), every n-gram of every word hashed in one vectorized pass."""
        array = pa.array(list(words), pa.string())
        if not len(array):
            return self._summed(np.zeros(0, np.int64), np.zeros(0, np.int64), 0)
        skipped = pc.starts_with(array, LABEL).to_numpy(zero_copy_only=False)  # labels: no row at all
        wids = pc.index_in(array, value_set=self._vocabulary_array).fill_null(-1).to_numpy().astype(np.int64)
        wids[skipped] = -1
        owners = [np.flatnonzero(wids >= 0)]
        rows = [wids[wids >= 0]]
        # "<word>" of every word but labels and </s> (no n-grams of their own): bytes and offsets, column-wise
        spelled = pc.if_else(pc.or_(pa.array(skipped), pc.equal(array, EOS)), "",
                             pc.binary_join_element_wise(BOW, array, EOW, ""))
        spelled = spelled.combine_chunks() if isinstance(spelled, pa.ChunkedArray) else spelled
        offsets = np.frombuffer(spelled.buffers()[1], np.int32, len(spelled) + 1, spelled.offset * 4).astype(np.int64)
        data = np.frombuffer(spelled.buffers()[2], np.uint8, offsets[-1] - offsets[0], offsets[0])
        sizes = np.diff(offsets)
        ends = offsets[1:] - offsets[0]
        word_of_byte = np.repeat(np.arange(len(array)), sizes)
        starts = np.flatnonzero((data & 0xC0) != 0x80)  # first byte of every character
        if not len(starts):
            return self._summed(np.concatenate(owners), np.concatenate(rows), len(words))
        # Character k of the run: its start; a word's characters end at the word's last byte (a sentinel).
        word_of_char = word_of_byte[starts]
        boundary = np.searchsorted(ends, starts, side="right")  # the word (position in kept) of each character
        last = np.r_[boundary[1:] != boundary[:-1], True]  # a word's last character
        # positions: every character start, and after each word's last character the word's end (sentinel)
        marks = np.empty(len(starts) + int(last.sum()), np.int64)
        sentinel_at = np.flatnonzero(last) + np.arange(1, int(last.sum()) + 1)
        is_char = np.ones(len(marks), bool)
        is_char[sentinel_at] = False
        marks[is_char] = starts
        marks[sentinel_at] = ends[boundary[last]]
        char_pos = np.flatnonzero(is_char)
        word_end_pos = np.repeat(sentinel_at, np.diff(np.r_[0, np.flatnonzero(last) + 1]))  # per character
        first = np.r_[True, boundary[1:] != boundary[:-1]]  # a word's first character ("<")
        signed = data.astype(np.uint64)
        signed[data >= 0x80] |= np.uint64(0xFFFFFF00)
        for n in range(max(self.minn, 1), self.maxn + 1):
            valid = char_pos + n <= word_end_pos
            if n == 1:  # fastText skips the 1-grams "<" and ">"
                valid &= ~first & (char_pos + 1 != word_end_pos)
            begin, stop = marks[char_pos[valid]], marks[char_pos[valid] + n]
            h = np.full(len(begin), 2166136261, np.uint64)
            for k in range(int((stop - begin).max(initial=0))):
                active = begin + k < stop
                byte = signed[np.minimum(begin + k, len(data) - 1)]
                h = np.where(active, ((h ^ byte) * np.uint64(16777619)) & np.uint64(0xFFFFFFFF), h)
            found = self._bucket_rows[(h % np.uint64(self.bucket)).astype(np.int64)]
            owners.append(word_of_char[valid][found >= 0])
            rows.append(found[found >= 0].astype(np.int64))
        return self._summed(np.concatenate(owners), np.concatenate(rows), len(words))

    def _summed(self, owner: np.ndarray, row: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
        """(sums, counts) of input rows ``row`` grouped by ``owner`` (0..size-1)."""
        sums = np.zeros((size, self.dim), np.float32)
        vectors = self._input[row]
        for d in range(self.dim):
            sums[:, d] = np.bincount(owner, weights=vectors[:, d], minlength=size)
        return sums, np.bincount(owner, minlength=size).astype(np.float32)

    def tokens(self, line: str) -> list[str]:
        """fastText's tokens of one line (``readWord``), without the ``</s>`` that ends it (the plain form of what
        ``log_scores`` does column-wise)."""
        tokens = line.split() if _PYTHON_ONLY_BLANKS.search(line) is None else [t for t in _BLANKS.split(line) if t]
        if EOS in tokens:  # a "</s>" written in the text ends the line there (getLine stops at its first EOS)
            del tokens[tokens.index(EOS):]
        return tokens

    def _lookup(self, words: list[str]) -> np.ndarray:
        """Cache rows of ``words`` (distinct), computing the missing ones; "" -> -1 (no row: not a token).

        When the cache would pass ``max_cached_words`` it keeps only the words of this call (the frequent words
        of a Zipfian text come back in every batch, so they stay), then adds the missing ones."""
        get = self._index.get
        found = np.array([get(w, -1) for w in words], np.int64)
        missing = [i for i in np.flatnonzero(found < 0).tolist() if words[i]]
        if len(self._index) + len(missing) > self._max_cached:
            known = np.flatnonzero(found >= 0)
            sums, counts = self._sums[found[known]], self._counts[found[known]]
            self._clear()
            base = len(self._index)
            self._put([words[i] for i in known.tolist()], sums, counts)
            found[known] = np.arange(base, base + len(known))
        if missing:
            new = [words[i] for i in missing]
            base = len(self._index)
            self._put(new, *self.word_rows(new))
            found[missing] = np.arange(base, base + len(new))
        return found

    def _put(self, words: list[str], sums: np.ndarray, counts: np.ndarray) -> None:
        """Append cache rows for ``words`` (not cached yet)."""
        base = len(self._index)
        if base + len(words) > len(self._counts):  # grow by doubling: a batch's new words cost their own size
            size = max(2 * len(self._counts), base + len(words), 1024)
            self._sums = np.concatenate([self._sums[:base], np.zeros((size - base, self.dim), np.float32)])
            self._counts = np.concatenate([self._counts[:base], np.zeros(size - base, np.float32)])
        self._sums[base:base + len(words)] = sums
        self._counts[base:base + len(words)] = counts
        self._index.update(zip(words, range(base, base + len(words)), strict=True))

    def hidden(self, lines: Sequence[str] | pa.Array) -> np.ndarray:
        """(len(lines), dim) float32: fastText's hidden vector of each line, the mean of its input rows
        (``computeHidden``) with the ``</s>`` that ends it. Each line is one line: a newline in it is a blank here
        (fastText would stop reading there). Strings, or an Arrow string array without nulls.

        Column-wise: the lines are split on fastText's blanks by Arrow (``ascii_split_whitespace``: the six ASCII
        blanks; NUL made a blank first), the tokens dictionary-encoded, and only the batch's distinct tokens
        looked up in the word cache."""
        array = lines if isinstance(lines, pa.Array) else pa.array(list(lines), pa.string())
        hidden = np.empty((len(array), self.dim), np.float32)
        if not len(array):
            return hidden
        split = pc.ascii_split_whitespace(pc.replace_substring(array, "\0", " "))
        lengths = pc.list_value_length(split).to_numpy(zero_copy_only=False).astype(np.int64)
        encoded = pc.dictionary_encode(pc.list_flatten(split))
        words = encoded.dictionary.to_pylist()
        where = self._lookup(words)[encoded.indices.to_numpy(zero_copy_only=False)]
        line_of = np.repeat(np.arange(len(array)), lengths)
        if EOS in words:  # a "</s>" written in a line ends it there: drop it and every later token of its line
            eos = (where == self._index[EOS]).astype(np.int64)
            starts = np.r_[0, np.cumsum(lengths)[:-1]]
            seen = np.cumsum(eos) - np.repeat(np.cumsum(eos)[starts] - eos[starts], lengths)
            where[seen > 0] = -1
        kept = where >= 0
        where, line_of = where[kept], line_of[kept]
        for start in range(0, len(array), self.CHUNK):
            stop = min(start + self.CHUNK, len(array))
            chosen = slice(*np.searchsorted(line_of, [start, stop]))
            rows, at = where[chosen], line_of[chosen] - start
            part = hidden[start:stop]
            tokens = np.bincount(at, minlength=stop - start)
            if len(rows):  # each line's rows summed in one pass (lines without a row: zeros)
                firsts = np.minimum(np.r_[0, np.cumsum(tokens)[:-1]], len(rows) - 1)
                part[:] = np.add.reduceat(self._sums[rows], firsts, axis=0)
                part[tokens == 0] = 0.0
            else:
                part[:] = 0.0
            total = np.bincount(at, weights=self._counts[rows], minlength=stop - start) + self._eos[1]
            part += self._eos[0]  # </s> ends every line
            part /= np.maximum(total, 1.0)[:, None].astype(np.float32)
        return hidden

    CHUNK = 8192  # lines at a time: their (CHUNK, 2 x labels) float32 temporaries stay small

    def log_scores(self, lines: Sequence[str] | pa.Array) -> np.ndarray:
        """(len(lines), labels) float32: each label's log-probability for each line (see ``hidden``), as fastText
        scores it (hs: the sum along its path of ``log(sigmoid + 1e-5)``; softmax: ``log(p + 1e-5)``)."""
        return self.scores_of(self.hidden(lines))

    def scores_of(self, hidden: np.ndarray) -> np.ndarray:
        """``log_scores`` of lines given by their ``hidden`` vectors."""
        return np.concatenate([self._leaf_scores(hidden[i:i + self.CHUNK]) for i in range(0, len(hidden), self.CHUNK)]
                              or [np.zeros((0, len(self.labels)), np.float32)])

    def best(self, lines: Sequence[str] | pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """(labels, log-scores): the top label of each line (int64 index into ``labels``) and its log-probability
        (float32), the argmax of ``log_scores`` without scoring every label.

        Hierarchical softmax: each line walks down the tree to the more probable child (a vector step per level);
        the leaf reached is the best when every branch left on the way scores below it by more than the most its
        subtree's remaining factors (each at most ``log(1 + 1e-5)``) could add; the other lines (near ties, a
        few in a hundred) are scored in full."""
        return self.best_of(self.hidden(lines))

    def best_of(self, hidden: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``best`` of lines given by their ``hidden`` vectors."""
        labels = np.empty(len(hidden), np.int64)
        scores = np.empty(len(hidden), np.float32)
        for start in range(0, len(hidden), self.CHUNK):
            part = hidden[start:start + self.CHUNK]
            if self.loss == LOSS_HS:
                found, score = self._walk(part)
            else:
                full = self._leaf_scores(part)
                found = full.argmax(axis=1)
                score = full[np.arange(len(part)), found]
            labels[start:start + len(part)], scores[start:start + len(part)] = found, score
        return labels, scores

    def _walk(self, hidden: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``best`` for a hierarchical softmax model: the greedy walk, the bound, the full score where unsure."""
        osz = len(self.labels)
        eps = np.float32(1e-5)
        with np.errstate(over="ignore"):  # exp overflows to inf: sigmoid 0, as in fastText's float code
            f = 1.0 / (1.0 + np.exp(-(hidden @ self._output)[:, :osz - 1]))
        rows = np.arange(len(hidden))
        node = np.full(len(hidden), 2 * osz - 2, np.int64)
        score = np.zeros(len(hidden), np.float32)
        alternative = np.full(len(hidden), -np.inf, np.float32)  # the best branch left on the way
        for _ in range(self._depth):
            internal = node >= osz
            if not internal.any():
                break
            j = np.where(internal, node - osz, 0)
            p = f[rows, j]
            right = p >= 0.5
            to_right, to_left = np.log(p + eps), np.log(1 - p + eps)
            taken, other = np.where(right, to_right, to_left), np.where(right, to_left, to_right)
            # The branch not taken: a leaf below it scores at most its prefix + the larger next step there.
            aside = self._children[j, (~right).astype(np.int64)]
            inner = aside >= osz
            q = f[rows, np.where(inner, aside - osz, 0)]
            other = other + np.where(inner, np.log(np.maximum(q, 1 - q) + eps), np.float32(0.0))
            alternative = np.where(internal, np.maximum(alternative, score + other), alternative)
            score = np.where(internal, score + taken, score)
            node = np.where(internal, self._children[j, right.astype(np.int64)], node)
        # Below the branch point a leaf gains at most depth x log(1 + 1e-5); 1e-4 more for float sums' order.
        unsure = np.flatnonzero(score < alternative + np.float32(self._depth * 1.0001e-5 + 1e-4))
        if len(unsure):
            full = self._leaf_scores(hidden[unsure])
            node[unsure] = full.argmax(axis=1)
            score[unsure] = full[np.arange(len(unsure)), node[unsure]]
        return node, score

    def _leaf_scores(self, hidden: np.ndarray) -> np.ndarray:
        """(lines, labels) log-scores of hidden vectors (one chunk)."""
        logits = hidden @ self._output
        if self.loss == LOSS_SOFTMAX:
            logits -= logits.max(axis=1, keepdims=True)
            np.exp(logits, out=logits)
            logits /= logits.sum(axis=1, keepdims=True)
            return np.log(logits + np.float32(1e-5))
        osz = len(self.labels)
        with np.errstate(over="ignore"):  # exp overflows to inf: sigmoid 0, as in fastText's float code
            f = 1.0 / (1.0 + np.exp(-logits[:, :osz - 1]))  # one column per internal node
        eps = np.float32(1e-5)
        to_left, to_right = np.log(1.0 - f + eps), np.log(f + eps)
        score = np.zeros((len(hidden), 2 * osz - 1), np.float32)  # every node's score: its path's sum
        for nodes, left, right in self._levels:
            base = score[:, osz + nodes]
            score[:, left] = base + to_left[:, nodes]
            score[:, right] = base + to_right[:, nodes]
        return score[:, :osz]

    def predict(self, line: str, k: int = 1) -> list[tuple[float, str]]:
        """fasttext-predict's ``predict(line, k, 0.0)`` for one line: (probability, label) pairs, best first, the
        labels without ``__label__``; labels below fastText's floor (``log(1e-5)``) are left out."""
        scores = self.log_scores([line])[0]
        best = np.argsort(-scores, kind="stable")[:k]
        floor = np.log(np.float32(1e-5))
        return [(float(np.exp(scores[i])), self.labels[i]) for i in best if scores[i] >= floor]
