"""``wit build-pairs``'s settings: one frozen dataclass tree; the flags, defaults and ``--help`` are generated
from it (:mod:`wit_builder.core.options`), each nested config an argument group.

    BuildPairsOptions: --queries --pool --out --match-rule --shuffle-buckets --rows-per-file
      languages: LanguageOptions  --languages --min-language-score --language-caps
      balance: BalanceOptions     --balance --per-query-cap --seed --oversample  (is a core.balance.BalanceConfig)
      pool_files: PoolFileOptions --pool-format --url-col --caption-col --no-header --pool-preset --pool-layout
                                  --max-url-length  (-> readers.layouts.PoolOptions: the preset and layouts resolved)

Errors: ``ValueError`` naming the field (the ``wit`` command names the flag: ``with_flag_names``).
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.queries import QUERIES_PARQUET
from wit_builder.core import languages as wikipedia_languages
from wit_builder.core.balance import LANGUAGE_CAP_RULES, MODES, BalanceConfig
from wit_builder.core.options import option
from wit_builder.pairs.langid import DEFAULT_MIN_SCORE, UNDETERMINED
from wit_builder.pairs.match_rules import DEFAULT_RULE, MATCH_RULES
from wit_builder.pairs.readers.layouts import FORMATS, LAYOUTS, PoolOptions, parse_layout

MAX_SHUFFLE_BUCKETS = 1 << 20  # --shuffle-buckets' ceiling: 16x the automatic one (batches.MAX_BUCKETS)


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
class LanguageOptions:
    """Which captions are kept, by their language (``wit_builder.pairs.langid``), and each language's cap."""

    languages: str = option("", metavar="CODE[,CODE...]",
                            help="keep captions in these languages only (Wikipedia codes; each needs a --queries "
                                 "folder), e.g. 'en' for CLIP's English WIT; default: every --queries folder's "
                                 "language. Others end as language_filtered")
    min_language_score: float = option(DEFAULT_MIN_SCORE, unit="probability",
                                       help="a caption whose language ID probability is lower is 'und' "
                                            "(matched as English when English is kept, else language_filtered)")
    routing: bool = option(True, negate="--no-language-routing",
                           help="match every caption against the one --queries folder whatever its language "
                                "(CLIP's and MetaCLIP v1's language-blind rule; the language is still recorded)")
    language_caps: str = option(LANGUAGE_CAP_RULES[0], choices=LANGUAGE_CAP_RULES,
                                help="metaclip2: English at --per-query-cap, every other language at the cap "
                                     "that leaves it English's tail share (MetaCLIP 2's p_to_t); same: "
                                     "--per-query-cap for every language")

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_language_score <= 1.0:
            raise ValueError(f"min_language_score must be within [0, 1], not {self.min_language_score}")
        if UNDETERMINED in self.codes:  # no language: und captions follow English (docs/stages/pairs.md)
            raise ValueError(f"languages: {UNDETERMINED!r} (no language found) is not kept on its own: such captions "
                             "are matched against English's queries when 'en' is kept, else language_filtered")
        for code in self.codes:  # as build-queries' --wiki: an unknown code is refused with the nearest known one
            if (near := wikipedia_languages.nearest(code)) != code:
                hint = f"; did you mean {near!r} ({wikipedia_languages.resolve(near).name})?" if near else ""
                raise ValueError(f"languages: {code!r} is not a Wikipedia language code{hint} "
                                 "(codes as in https://CODE.wikipedia.org: en, ja, zh-yue)")

    @property
    def codes(self) -> tuple[str, ...]:
        """The ``--languages`` codes, sorted, each once; empty for every folder's language."""
        return tuple(sorted({c.strip() for c in self.languages.split(",") if c.strip()}))


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

    queries: tuple[str, ...] = option(help=f"directory holding stage 1's {QUERIES_PARQUET}, one per language; "
                                           "repeatable (each caption is matched against its language's queries)")
    pool: tuple[str, ...] = option(help="pool file or glob (WAT .warc.wat.gz, WARC .warc.gz, parquet, jsonl[.gz], "
                                        "csv, tsv); repeatable")
    out: str = option(help="output directory")
    overwrite: bool = option(False, help="write into an --out that holds files wit did not write (no run marker "
                                         ".wit-run.json) or another command's output; files named like this "
                                         "command's outputs are replaced (without it such an --out is refused)")
    match_rule: str = option(DEFAULT_RULE, choices=MATCH_RULES,
                             help="normalized: case-folded tokens, segmented as stage 1 does "
                                  "(wit_builder.core.segment); metaclip: MetaCLIP 2's rule (v1's on spaced scripts), "
                                  "entries and text as written (the queries' query_as_written column when present, "
                                  "else query); see docs/ARCHITECTURE.md")
    shuffle_buckets: int | None = option(None, unit="buckets",
                                         help="uid buckets matched pairs are grouped into; one worker holds one "
                                              "bucket's pairs at a time (about 0.5 KB each); none: from the pool's "
                                              "size, one per 64 MiB of pool files, at least 256 "
                                              "(wit_builder.pairs.batches.buckets_for); at most 2^20 (in-process "
                                              "each bucket becomes a spill file)")
    rows_per_file: int = option(500_000, unit="rows", help="rows per pairs-*.parquet file")
    language: LanguageOptions = option(default_factory=LanguageOptions, group="languages",
                                       help="caption languages (wit_builder.pairs.langid)")
    balance: BalanceOptions = option(default_factory=BalanceOptions, group="balance",
                                     help="the per-query cap (wit_builder.core.balance)")
    pool_files: PoolFileOptions = option(default_factory=PoolFileOptions, group="pool files",
                                         help="how the pool files are read (wit_builder.pairs.readers)")

    def __post_init__(self) -> None:
        if self.rows_per_file < 1:
            raise ValueError(f"rows_per_file must be at least 1, not {self.rows_per_file}")
        if self.shuffle_buckets is not None and self.shuffle_buckets < 1:
            raise ValueError(f"shuffle_buckets must be at least 1, not {self.shuffle_buckets}")
        if self.shuffle_buckets is not None and self.shuffle_buckets > MAX_SHUFFLE_BUCKETS:
            # In-process every bucket is one spill file (ranked/b<bucket>): 10^9 buckets made one file per matched
            # pair and ran 10x slower, and the automatic count stops at 2^16 (4 TiB of pool).
            raise ValueError(f"shuffle_buckets must be at most {MAX_SHUFFLE_BUCKETS} (one bucket per 64 MiB of "
                             f"pool covers 64 TiB), not {self.shuffle_buckets}")


OPTIONS = BuildPairsOptions
