"""``wit build-queries``' settings: one frozen dataclass tree, from which the flags, defaults and ``--help`` are
generated (:mod:`wit_builder.core.options`). Each nested group is the config a rule module takes as it is:

    BuildQueriesOptions            --dump, --out, --wordnet-dir, --omw-file, --pageviews
      .thresholds: Thresholds      --min-unigram-count, --min-bigram-count          (selection.py)
      .budgets: Budgets            --max-queries, --<source>-budget                 (selection.py)
      .reading: ReadOptions        --split-bytes, --parse-timeout, --parse-memory-mb, --sketch-width (pipeline.py)
      .traffic: Traffic            --wiki, --pageview-sites                         (pageviews.py)

Every group checks its values in ``__post_init__`` and names the field; the CLI shows the field as its flag
(``with_flag_names``), so a bad setting is exit 2 naming the flag, before any work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wit_builder.core.options import as_parameters, option
from wit_builder.queries.pageviews import Traffic
from wit_builder.queries.parse_budget import DEFAULT_PARSE_MEMORY_BYTES, DEFAULT_PARSE_SECONDS, MIN_PARSE_MEMORY_BYTES
from wit_builder.queries.selection import Budgets, Thresholds
from wit_builder.queries.wikidump import DEFAULT_TARGET_BYTES

MIN_SKETCH_WIDTH = 1024
# The sketch's column hashes are crc32 values (ngram_sketch.CountMinSketch._columns): row 0 reaches no counter past
# 2^32, so a wider sketch buys nothing (it is 160 GiB per worker already; full enwiki takes 2^28).
MAX_SKETCH_WIDTH = 1 << 32
MIN_PARSE_MEMORY_MB = MIN_PARSE_MEMORY_BYTES >> 20  # the parser's own floor, in the flag's unit


@dataclass(frozen=True)
class ReadOptions:
    """How the dumps are read, parsed and counted: parallel ranges, the per-page parse budget
    (``parse_budget.BoundedParser``) and the width of the count-min sketches (``ngram_sketch``).

    Raises ValueError naming the field of a value out of range.
    """

    split_bytes: int = option(DEFAULT_TARGET_BYTES, unit="bytes",
                              help="bytes of a multistream dump per parallel read (64 MiB)")
    parse_timeout: float = option(DEFAULT_PARSE_SECONDS, unit="s", metavar="SECONDS",
                                  help="most seconds one page's wikitext may take to parse; a page over it is "
                                       "skipped and counted as pages_parse_timeout")
    parse_memory_mb: int = option(DEFAULT_PARSE_MEMORY_BYTES >> 20, unit="MiB", metavar="MiB",
                                  help="address-space limit of the page parser process; a page over it is "
                                       "skipped like a timeout")
    sketch_width: int | None = option(None, unit="counters", metavar="COUNTERS",
                                      help="counters per row of the bigram count-min sketch (4 rows of 8-byte "
                                           "counters; the unigram sketch has a quarter: 40 bytes per counter, held "
                                           "once per worker); wider = fewer n-grams below the thresholds counted "
                                           "exactly in pass 2; none: from the dumps' size (at least 2^20, "
                                           "ngram_sketch.width_for; full enwiki ~2^28, docs/deploy.md); 2^10 to 2^32")

    def __post_init__(self) -> None:
        if self.sketch_width is not None and self.sketch_width < MIN_SKETCH_WIDTH:
            raise ValueError(f"sketch_width must be >= {MIN_SKETCH_WIDTH}, got {self.sketch_width}")
        if self.sketch_width is not None and self.sketch_width > MAX_SKETCH_WIDTH:
            raise ValueError(f"sketch_width must be <= {MAX_SKETCH_WIDTH} (2^32: the sketch's 32-bit hashes reach no "
                             f"counter beyond; 160 GiB per worker), got {self.sketch_width}")
        if self.split_bytes < 1:
            raise ValueError(f"split_bytes must be >= 1, got {self.split_bytes}")
        if not self.parse_timeout > 0:
            raise ValueError(f"parse_timeout must be > 0 seconds, got {self.parse_timeout}")
        if self.parse_memory_mb < MIN_PARSE_MEMORY_MB:
            raise ValueError(f"parse_memory_mb must be >= {MIN_PARSE_MEMORY_MB}, got {self.parse_memory_mb}")

    @property
    def parse_memory_bytes(self) -> int:
        """The parser process's address-space limit in bytes."""
        return self.parse_memory_mb << 20


@dataclass(frozen=True)
class BuildQueriesOptions:
    """``wit build-queries``' settings; the flags, defaults and help are generated from these fields."""

    dump: tuple[str, ...] = option(
        help="MediaWiki XML dump (.xml, .xml.bz2, multistream .xml.bz2 with its -index.txt[.bz2] beside it); "
             "repeat or use globs", metavar="PATH")
    out: str = option(help="output folder (local path or gs://, s3://, ...)")
    overwrite: bool = option(False, help="write into an --out that holds files wit did not write (no run marker "
                                         ".wit-run.json) or another command's output; files named like this "
                                         "command's outputs are replaced (without it such an --out is refused)")
    wordnet_dir: str | None = option(None, help="WordNet 3.0 dict folder, e.g. /usr/share/wordnet; without it no "
                                                "WordNet queries are built")
    omw_file: tuple[str, ...] = option((), metavar="PATH",
                                       help="Open Multilingual Wordnet tab file(s) in the dump's language "
                                            "(wn-data-jpn.tab of OMW 1.4, wn-cldr-jpn.tab, ...; repeat): their "
                                            "lemmas become WordNet queries")
    pageviews: tuple[str, ...] = option((), metavar="PATH",
                                        help="Wikimedia pageview files: hourly pageviews-*.gz, daily or monthly "
                                             "pageview_complete (.gz/.bz2/plain; repeat or globs) to rank titles "
                                             "by traffic; without them titles rank by incoming links")
    thresholds: Thresholds = option(default_factory=Thresholds, group="count thresholds",
                                    help="occurrence floors of unigram and bigram queries")
    budgets: Budgets = option(default_factory=Budgets, group="budgets", help="queries per source and in all")
    reading: ReadOptions = option(default_factory=ReadOptions, group="reading and counting the dumps",
                                  help="parallel reads, the per-page parse budget, the count-min sketch")
    traffic: Traffic = option(default_factory=Traffic, group="title traffic (--pageviews rows)",
                              help="which pageview rows count")


OPTIONS = BuildQueriesOptions
GROUPS = ("thresholds", "budgets", "reading", "traffic")  # the nested groups of BuildQueriesOptions


def parameters(options: BuildQueriesOptions) -> dict[str, Any]:
    """stats.json's ``parameters``: every setting by its field name (the flag without dashes), the groups
    flattened as the flags are, ``--out`` and ``--overwrite`` left out (how the output was written, not what)."""
    flat = as_parameters(options, skip=("out", "overwrite", *GROUPS))
    for group in GROUPS:
        flat |= as_parameters(getattr(options, group))
    return flat
