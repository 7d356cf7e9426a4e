"""Languages in the trainer: the language of a sample's caption, a BPE training sample that is fair to every
language present, and tokens per caption per language (what the 77-token context costs each language).

* A sample's language is its ``.json`` member's ``lang`` (stage 2 tells each caption's language; stage 4 keeps
  it); ``und`` (BCP 47's "undetermined") when the sample has none.
* The BPE learns its merges from a sample in which every language is drawn with the smoothed probability of
  XLM (Lample and Conneau 2019, "Cross-lingual Language Model Pretraining", sec. 3.1: "we learn the BPE splits on
  the concatenation of sentences sampled randomly from the monolingual corpora ... q_i = p_i^a / sum_j p_j^a,
  a = 0.5"): a language with 1% of the captions gets ~9% of a two-language sample instead of 1%, so its words
  get merges of their own, while the large language still gets most of them. Drawing is a seeded repeat or
  thinning of each language's captions, so the sample is the same on every run.
* ``token_figures`` measures, per language, text tokens per caption (mean, median, p95, max) and the share of
  captions cut at the model's context (context - 2 positions: start and end tokens); ``unfair_languages`` names
  the languages cut far more often than English (our rule: more than twice English's share plus one point).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

UNDETERMINED = "und"  # BCP 47: no language recorded for the sample
SMOOTHING = 0.5  # XLM's exponent a for the BPE sample (Lample and Conneau 2019, sec. 3.1)
REFERENCE = "en"  # truncation of the other languages is compared with this one's, when present


def sample_language(meta_json: bytes | str | None) -> str:
    """The ``lang`` of a sample's ``.json`` member (lower-cased), ``und`` when absent, empty or unreadable."""
    if meta_json is None:
        return UNDETERMINED
    try:
        meta = json.loads(meta_json)
    except (ValueError, UnicodeDecodeError):
        return UNDETERMINED
    lang = meta.get("lang") if isinstance(meta, dict) else None
    return lang.strip().lower() if isinstance(lang, str) and lang.strip() else UNDETERMINED


def group_by_language(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """(caption, language) pairs -> language -> captions, in reading order; languages sorted by name."""
    groups: dict[str, list[str]] = {}
    for caption, lang in pairs:
        groups.setdefault(lang, []).append(caption)
    return dict(sorted(groups.items()))


def smoothed_weights(counts: dict[str, int], alpha: float = SMOOTHING) -> dict[str, float]:
    """XLM's sampling probabilities q_i = p_i^alpha / sum_j p_j^alpha from captions per language (alpha 1: the
    data's own shares; 0: every language alike). Raises ValueError for alpha outside [0, 1] or no captions."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"the smoothing exponent must lie in [0, 1], got {alpha}")
    total = sum(counts.values())
    if total <= 0:
        raise ValueError("no captions to weigh")
    powered = {lang: (n / total) ** alpha for lang, n in counts.items() if n > 0}
    norm = sum(powered.values())
    return {lang: value / norm for lang, value in powered.items()}


@dataclass
class SampleReport:
    """What the BPE was learnt from: captions read and drawn per language, and each language's weight."""

    alpha: float
    read: dict[str, int] = field(default_factory=dict)
    drawn: dict[str, int] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-able: ``alpha`` and per language ``read``, ``weight``, ``drawn``."""
        return {"alpha": self.alpha, "languages": {
            lang: {"read": self.read[lang], "weight": round(self.weights[lang], 6), "drawn": self.drawn[lang]}
            for lang in self.read}}


def smoothed_sample(groups: dict[str, list[str]], alpha: float = SMOOTHING, seed: int = 0,
                    report: SampleReport | None = None) -> Iterator[str]:
    """The captions of ``groups`` (language -> captions) drawn so that language i makes q_i of the sample
    (``smoothed_weights``) while the sample keeps the size of the input: every caption of language i is given
    q_i * N / N_i times on average (the whole part always, one more with the fractional part's probability,
    a seeded coin per caption). ``report`` (optional) receives the counts as they are drawn."""
    counts = {lang: len(captions) for lang, captions in groups.items() if captions}
    weights = smoothed_weights(counts, alpha)
    total = sum(counts.values())
    if report is not None:
        report.alpha, report.read, report.weights = alpha, dict(counts), dict(weights)
        report.drawn = dict.fromkeys(counts, 0)
    for lang, captions in groups.items():
        if not captions:
            continue
        factor = weights[lang] * total / len(captions)  # mean copies of each caption of this language
        whole, fraction = math.floor(factor), factor - math.floor(factor)
        rng = random.Random(f"{seed}/bpe-sample/{lang}")
        for caption in captions:
            copies = whole + (rng.random() < fraction)
            if report is not None:
                report.drawn[lang] += copies
            for _ in range(copies):
                yield caption


def token_figures(lengths_by_language: dict[str, list[int]], context_length: int) -> dict[str, dict]:
    """Per language, from text tokens per caption (start/end excluded): ``captions``, ``mean_tokens``,
    ``median_tokens``, ``p95_tokens``, ``max_tokens``, ``truncated`` (captions longer than the
    ``context_length - 2`` text positions) and ``truncated_share``."""
    room = context_length - 2
    figures = {}
    for lang, lengths in sorted(lengths_by_language.items()):
        if not lengths:
            continue
        ordered = sorted(lengths)
        cut = sum(n > room for n in ordered)
        figures[lang] = {
            "captions": len(ordered),
            "mean_tokens": round(sum(ordered) / len(ordered), 2),
            "median_tokens": ordered[len(ordered) // 2],
            "p95_tokens": ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)],
            "max_tokens": ordered[-1],
            "truncated": cut,
            "truncated_share": round(cut / len(ordered), 6),
        }
    return figures


def unfair_languages(figures: dict[str, dict], reference: str = REFERENCE) -> dict[str, str]:
    """Languages whose captions are cut at the context far more often than the reference language's (English
    when present, else the least-cut language): more than twice its share plus one percentage point. Returns
    language -> one sentence saying so; {} when all are fair (or one language only)."""
    if len(figures) < 2:
        return {}
    ref = reference if reference in figures else min(figures, key=lambda k: figures[k]["truncated_share"])
    base = figures[ref]["truncated_share"]
    return {lang: (f"{lang} captions are cut at the context {f['truncated_share']:.1%} of the time against "
                   f"{base:.1%} for {ref} ({f['mean_tokens']:.1f} vs {figures[ref]['mean_tokens']:.1f} tokens "
                   f"per caption)")
            for lang, f in figures.items() if lang != ref and f["truncated_share"] > 2 * base + 0.01}


def describe_figures(figures: dict[str, dict], context_length: int) -> list[str]:
    """One line per language: 'ja: 1,000 captions, 21.4 tokens per caption (p95 40), 0.3% cut at 77'."""
    return [f"{lang}: {f['captions']:,} captions, {f['mean_tokens']:.1f} tokens per caption (p95 "
            f"{f['p95_tokens']}), {f['truncated_share']:.1%} cut at {context_length}"
            for lang, f in figures.items()]


# ---- reading captions and writing the run's tokenizer figures (rank 0 of ``wit train``) ----

TOKENIZER_STATS = "tokenizer_stats.json"  # beside the checkpoint: the BPE sample and the figures per language
MEASURED_PER_LANGUAGE = 20_000  # captions per language whose token counts are measured


def read_captions(shard_urls: list[str], limit: int) -> dict[str, list[str]]:
    """The first ``limit`` captions (``.txt``) of the shards, grouped by the sample's language; unreadable parts
    of a shard are skipped (the loader counts them when it trains)."""
    from trainer.shards import raw_samples  # the shard reader (webdataset) only where captions are read

    def pairs() -> Iterator[tuple[str, str]]:
        read = 0
        for sample in raw_samples(iter(shard_urls), lambda exn: True):
            if read >= limit:
                return
            if "txt" in sample:
                read += 1
                yield sample["txt"].decode("utf-8", "replace"), sample_language(sample.get("json"))

    return group_by_language(pairs())


def tokenizer_report(lengths_of: Callable[[list[str]], list[int]], groups: dict[str, list[str]],
                     context_length: int, source: str, sample: SampleReport | None) -> dict:
    """The run's ``tokenizer_stats.json``: where the tokenizer came from, the BPE sample (``sample``, None for a
    given tokenizer), tokens per caption per language (the first ``MEASURED_PER_LANGUAGE`` captions of each)
    and the languages cut far more often than English."""
    lengths = {lang: lengths_of(captions[:MEASURED_PER_LANGUAGE]) for lang, captions in groups.items()}
    figures = token_figures(lengths, context_length)
    return {"source": source, "context_length": context_length,
            "bpe_sample": sample.to_dict() if sample is not None else None,
            "languages": figures, "unfair": unfair_languages(figures)}
