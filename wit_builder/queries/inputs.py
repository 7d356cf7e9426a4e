"""What stage 1's flags name, resolved and checked before any work (no Beam): the dumps paired with the
multistream indexes beside them, the pageview files, WordNet's lemmas, and the sketch width (``--sketch-width``,
or chosen from the dumps' size)."""

from __future__ import annotations

from dataclasses import dataclass

from wit_builder.beam import fileio
from wit_builder.queries.ngram_sketch import estimated_bigrams, width_for
from wit_builder.queries.options import BuildQueriesOptions
from wit_builder.queries.wikidump import DumpInput, dump_inputs
from wit_builder.queries.wordnet import wordnet_candidates


@dataclass(frozen=True)
class QueryInputs:
    """What ``--dump``, ``--pageviews`` and ``--wordnet-dir`` name, resolved by :func:`resolve`."""

    dumps: tuple[DumpInput, ...]               # each dump with the multistream index beside it, or None
    pageviews: tuple[str, ...] = ()            # the pageview files (none: titles rank by incoming links)
    wordnet: tuple[tuple[str, float], ...] = ()  # (query, score) of every WordNet lemma (none without WordNet)
    bigrams: int = 0                           # bigrams the dumps will add, estimated from their size
    sketch_width: int = 0                      # the bigram sketch width to use: --sketch-width, else width_for
    suggested_width: int = 0                   # width_for(bigrams): what --sketch-width should be at least


def resolve(o: BuildQueriesOptions) -> QueryInputs:
    """Resolve ``--dump`` (paired with the multistream indexes beside them), ``--pageviews`` and read
    WordNet; the sketch width (``--sketch-width``, else ``ngram_sketch.width_for`` the bigrams estimated from the
    dumps' size); FileNotFoundError / WordNetError name the flag."""
    dumps = dump_inputs(fileio.expand_patterns(list(o.dump), what="--dump"), fileio.exists)
    if not dumps:
        raise FileNotFoundError(f"--dump {list(o.dump)!r} names only multistream index files, no dump")
    pageviews = fileio.expand_patterns(o.pageviews, what="--pageviews") if o.pageviews else []
    wordnet = wordnet_candidates(o.wordnet_dir) if o.wordnet_dir else []
    bigrams = estimated_bigrams((d.path, fileio.size(d.path)) for d in dumps)
    suggested = width_for(bigrams, o.thresholds.min_bigram_count)
    width = o.reading.sketch_width or suggested
    return QueryInputs(tuple(dumps), tuple(pageviews), tuple(wordnet), bigrams, width, suggested)
