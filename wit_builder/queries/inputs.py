"""What stage 1's flags name, resolved and checked before any work (no Beam): the dumps paired with the
multistream indexes beside them, the pageview files, WordNet's lemmas."""

from __future__ import annotations

from dataclasses import dataclass

from wit_builder.beam import fileio
from wit_builder.queries.options import BuildQueriesOptions
from wit_builder.queries.wikidump import DumpInput, dump_inputs
from wit_builder.queries.wordnet import wordnet_candidates


@dataclass(frozen=True)
class QueryInputs:
    """What ``--dump``, ``--pageviews`` and ``--wordnet-dir`` name, resolved by :func:`resolve`."""

    dumps: tuple[DumpInput, ...]               # each dump with the multistream index beside it, or None
    pageviews: tuple[str, ...] = ()            # the pageview files (none: titles rank by incoming links)
    wordnet: tuple[tuple[str, float], ...] = ()  # (query, score) of every WordNet lemma (none without WordNet)


def resolve(o: BuildQueriesOptions) -> QueryInputs:
    """Resolve ``--dump`` (paired with the multistream indexes beside them), ``--pageviews`` and read
    WordNet; FileNotFoundError / WordNetError name the flag."""
    dumps = dump_inputs(fileio.expand_patterns(list(o.dump), what="--dump"), fileio.exists)
    if not dumps:
        raise FileNotFoundError(f"--dump {list(o.dump)!r} names only multistream index files, no dump")
    pageviews = fileio.expand_patterns(o.pageviews, what="--pageviews") if o.pageviews else []
    wordnet = wordnet_candidates(o.wordnet_dir) if o.wordnet_dir else []
    return QueryInputs(tuple(dumps), tuple(pageviews), tuple(wordnet))
