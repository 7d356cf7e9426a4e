"""``wit build-pairs``'s settings: one frozen dataclass tree; the flags, defaults and ``--help`` are generated
from it (:mod:`wit_builder.core.options`), each nested config an argument group.

    BuildPairsOptions: --queries --pool --out --match-rule --shuffle-buckets --rows-per-file
      balance: BalanceOptions     --balance --per-query-cap --seed --oversample  (is a core.balance.BalanceConfig)
      pool_files: PoolFileOptions --pool-format --url-col --caption-col --no-header --pool-preset --pool-layout
                                  --max-url-length  (-> readers.layouts.PoolOptions: the preset and layouts resolved)

Errors: ``ValueError`` naming the field (the ``wit`` command names the flag: ``with_flag_names``).
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.queries import QUERIES_PARQUET
from wit_builder.core.balance import MODES, BalanceConfig
from wit_builder.core.options import option
from wit_builder.pairs.match_rules import DEFAULT_RULE, MATCH_RULES
from wit_builder.pairs.readers.layouts import FORMATS, LAYOUTS, PoolOptions, parse_layout


@dataclass(frozen=True)
class BalanceOptions(BalanceConfig):
    """The per-query cap as flags; it is the :class:`~wit_builder.core.balance.BalanceConfig` the rules take
    (same fields, defaults and checks), so no conversion stands between the command line and the rules."""

    mode: str = option(BalanceConfig.mode, flag="--balance", choices=MODES,
                       help="hard: each query keeps its cap smallest-ranked pairs; probabilistic: MetaCLIP's "
                            "p = min(1, cap / matched)")
    per_query_cap: int = option(BalanceConfig.per_query_cap, unit="pairs", help="pairs kept per query")
    seed: int = option(BalanceConfig.seed, help="seed of the ranks and draws")
    oversample: float = option(BalanceConfig.oversample, unit="x cap",
                               help="keep this many times the cap, for download losses; stage 4 caps again")


@dataclass(frozen=True)
class PoolFileOptions:
    """How the pool files are read: one layout for every file (a preset, or format and columns), then per-input
    layouts that override it for the files their glob matches."""

    pool_format: str = option(PoolOptions.fmt, choices=("auto", *FORMATS),
                              help="format of every pool file (auto: from the name; the content is checked)")
    url_col: str = option(PoolOptions.url_col, help="URL column of table pools; a 0-based position with --no-header")
    caption_col: str = option(PoolOptions.caption_col,
                              help="caption column of table pools; a 0-based position with --no-header")
    header: bool = option(True, negate="--no-header",
                          help="csv/tsv pools have no header line; --url-col/--caption-col are positions")
    pool_preset: str | None = option(None, choices=tuple(LAYOUTS),
                                     help="the layout of a well-known pool for every file: cc3m (caption<TAB>url, "
                                          "no header), cc12m (url<TAB>caption, no header), laion (URL, TEXT), "
                                          "datacomp/coyo (url, text), img2dataset (url, caption)")
    pool_layout: tuple[str, ...] = option((), metavar="PATTERN=LAYOUT",
                                          help="per-input layout for mixed pools: files whose path or name matches "
                                               "the glob PATTERN use LAYOUT, a preset name or items like "
                                               "'url=URL,caption=TEXT[,format=tsv,header=no]'; repeatable, the "
                                               "first match wins; other files use the options above")
    max_url_length: int = option(PoolOptions.max_url_length, unit="characters",
                                 help="longer URLs are reported and dropped")

    def __post_init__(self) -> None:
        self.reader_options()  # a bad layout or length is refused with the settings, before any work

    def reader_options(self) -> PoolOptions:
        """The readers' :class:`~wit_builder.pairs.readers.layouts.PoolOptions`: the preset (its format only where
        ``--pool-format`` is auto) or the format/column flags, then each ``PATTERN=LAYOUT`` parsed.

        Raises ValueError naming the bad item (``--pool-layout 'x': expected PATTERN=LAYOUT``) or value.
        """
        fmt, url_col, caption_col, header = self.pool_format, self.url_col, self.caption_col, self.header
        if self.pool_preset:
            preset = LAYOUTS[self.pool_preset]
            fmt = preset.fmt if fmt == "auto" else fmt
            url_col, caption_col, header = preset.url_col, preset.caption_col, preset.header
        layouts = []
        for item in self.pool_layout:
            pattern, sep, spec = item.partition("=")
            if not sep or not pattern.strip():
                raise ValueError(f"--pool-layout {item!r}: expected PATTERN=LAYOUT")
            layouts.append((pattern.strip(), parse_layout(spec)))
        return PoolOptions(fmt, url_col, caption_col, self.max_url_length, header, tuple(layouts))


@dataclass(frozen=True)
class BuildPairsOptions:
    """``wit build-pairs``'s settings; the flags, defaults and help are generated from these fields."""

    queries: str = option(help=f"directory holding stage 1's {QUERIES_PARQUET}")
    pool: tuple[str, ...] = option(help="pool file or glob (WAT .warc.wat.gz, WARC .warc.gz, parquet, jsonl[.gz], "
                                        "csv, tsv); repeatable")
    out: str = option(help="output directory")
    match_rule: str = option(DEFAULT_RULE, choices=MATCH_RULES,
                             help="normalized: case-folded tokens, wit_builder.core.textnorm; metaclip: MetaCLIP v1's "
                                  "rule, entries and text as written (the queries' query_as_written column when "
                                  "present, else query); see docs/ARCHITECTURE.md")
    shuffle_buckets: int | None = option(None, unit="buckets",
                                         help="uid buckets matched pairs are grouped into; one worker holds one "
                                              "bucket's pairs at a time (about 0.5 KB each); none: from the pool's "
                                              "size, one per 64 MiB of pool files, at least 256 "
                                              "(wit_builder.pairs.batches.buckets_for)")
    rows_per_file: int = option(500_000, unit="rows", help="rows per pairs-*.parquet file")
    balance: BalanceOptions = option(default_factory=BalanceOptions, group="balance",
                                     help="the per-query cap (wit_builder.core.balance)")
    pool_files: PoolFileOptions = option(default_factory=PoolFileOptions, group="pool files",
                                         help="how the pool files are read (wit_builder.pairs.readers)")

    def __post_init__(self) -> None:
        if self.rows_per_file < 1:
            raise ValueError(f"rows_per_file must be at least 1, not {self.rows_per_file}")
        if self.shuffle_buckets is not None and self.shuffle_buckets < 1:
            raise ValueError(f"shuffle_buckets must be at least 1, not {self.shuffle_buckets}")


OPTIONS = BuildPairsOptions
