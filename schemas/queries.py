"""Stage 1 (build-queries) outputs: ``queries.parquet`` and the ``source`` vocabulary.

One ``queries.parquet`` holds one Wikipedia language (``wit build-queries`` runs once per language, each into
its own folder). The language is in every row (``lang``) and, with the word segmenter that made the tokens,
in the file's schema metadata (``wit.lang``, ``wit.segmenter``; :func:`language_schema`) and in stats.json's
``details`` (``lang``, ``segmenter``): stage 2 refuses query folders whose segmenters differ from its own.

``query_as_written`` is each query as its source text writes it (``wit_builder.core.segment.written_form``): the
entry MetaCLIP 2's rule matches against raw captions (stage 2's ``--match-rule metaclip``). It equals ``query``
for every query without a character of a script written without spaces (all of English). Files written before
the column existed are still read (stage 2 then matches ``query`` under that rule).
"""

from __future__ import annotations

import pyarrow as pa

SOURCES: tuple[str, ...] = ("unigram", "bigram", "title", "wordnet")
AS_WRITTEN = "query_as_written"  # the column of each query's written form (MetaCLIP 2's entry)

QUERIES = pa.schema(
    [
        pa.field("query", pa.string(), nullable=False),   # normalized per wit_builder.core.segment (textnorm for
                                                          # languages written with spaces)
        pa.field("source", pa.string(), nullable=False),  # one of SOURCES
        pa.field("count", pa.int64(), nullable=False),    # occurrences in the dump's plain text
        pa.field("score", pa.float64(), nullable=False),  # the source's ranking score
        pa.field("lang", pa.string(), nullable=False),    # the Wikipedia language code (wit_builder.core.languages)
        pa.field(AS_WRITTEN, pa.string(), nullable=False),  # the query as written (core.segment.written_form)
    ],
    metadata={"wit.table": "queries"},
)
LANG_METADATA = "wit.lang"            # schema metadata: the Wikipedia language code of every row
SEGMENTER_METADATA = "wit.segmenter"  # schema metadata: core.segment.segmenter_id(lang) of the run


def language_schema(lang: str, segmenter: str) -> pa.Schema:
    """``QUERIES`` with the run's language and segmenter id in its metadata (what a writer writes)."""
    return QUERIES.with_metadata({**(QUERIES.metadata or {}), LANG_METADATA.encode(): lang.encode(),
                                  SEGMENTER_METADATA.encode(): segmenter.encode()})


QUERIES_PARQUET = "queries.parquet"
QUERIES_TXT = "queries.txt"
STATS_JSON = "stats.json"
