"""``wit finalize``'s settings: one frozen dataclass; the flags, defaults and ``--help`` are generated from its
fields (:mod:`wit_builder.core.options`). What the flags name is resolved before any work by
:func:`wit_builder.finalize.inputs.resolve`."""

from __future__ import annotations

from dataclasses import dataclass

from wit_builder.core import dedup
from wit_builder.core.options import option
from wit_builder.finalize.shards import DEFAULT_SAMPLES_PER_SHARD

DEFAULT_GALLERY_SAMPLES = 12  # samples per shown query in OUT/gallery/ (finalize/gallery.py)


@dataclass(frozen=True)
class FinalizeOptions:
    """``wit finalize``'s settings.

    ValueError from ``__post_init__``, naming the flag: ``--samples-per-shard`` < 1, ``--per-query-cap`` < 1, or
    a ``--phash-distance`` outside ``wit_builder.core.dedup.bands``' range (0..63 bits).
    """

    raw: tuple[str, ...] = option(metavar="DIR_OR_GLOB",
                                  help="stage 3 output: a folder of {shard}.parquet/.tar, a parquet file or a glob "
                                       "(repeatable)")
    out: str = option(help="output folder for the final shards")
    overwrite: bool = option(False, help="write into an --out that holds files wit did not write (no run marker "
                                         ".wit-run.json) or another command's output; files named like this "
                                         "command's outputs are replaced (without it such an --out is refused)")
    samples_per_shard: int = option(DEFAULT_SAMPLES_PER_SHARD, unit="samples", help="samples per final shard")
    per_query_cap: int | None = option(None, unit="samples",
                                       help="cap every query again after losses (none: no re-cap)")
    phash_distance: int = option(4, unit="bits", help="near duplicates: pHash Hamming distance at most this")
    decontaminate: str | None = option(None, metavar="DIR",
                                       help="folder of evaluation images (searched recursively); near duplicates "
                                            "become 'filtered'")
    seed: int | None = option(None, help="seed of the re-balance hash rank (none: stage 2's --seed, traced through "
                                         "the raw folder's plan.json to the pairs' stats.json, else 0); with "
                                         "--per-query-cap a seed other than stage 2's is refused")
    uids: str | None = option(None, metavar="FILE",
                              help="rebuild from a published uid list (a .txt, one uid per line, or a parquet with "
                                   "a uid column): exactly those samples, no dedup or re-cap; listed uids without "
                                   "a success go to OUT/missing_uids.txt")
    gallery_samples: int = option(DEFAULT_GALLERY_SAMPLES, unit="samples",
                                  help="OUT/gallery/: a static HTML gallery with this many samples per shown query "
                                       "(the 50 queries with the most samples and the 50 with the fewest) and the "
                                       "dropped rows by reason; 0: no gallery")

    def __post_init__(self) -> None:
        if self.samples_per_shard < 1:
            raise ValueError(f"--samples-per-shard must be >= 1, got {self.samples_per_shard}")
        if self.uids is not None and (self.per_query_cap is not None or self.decontaminate is not None):
            raise ValueError("--uids: the uid list is the selection; --per-query-cap and --decontaminate select "
                             "samples themselves: pass one or the other")
        if self.gallery_samples < 0:
            raise ValueError(f"--gallery-samples must be >= 0, got {self.gallery_samples}")
        if self.per_query_cap is not None and self.per_query_cap < 1:
            raise ValueError(f"--per-query-cap must be >= 1, got {self.per_query_cap}")
        try:
            dedup.bands(self.phash_distance)  # the near-duplicate index's range check
        except ValueError as exc:
            raise ValueError(f"--phash-distance: {exc}") from exc


OPTIONS = FinalizeOptions
