"""``wit demo``'s settings: one frozen dataclass; the flags, defaults and ``--help`` are generated from it."""

from __future__ import annotations

from dataclasses import dataclass

from wit_builder.core.options import option

DEFAULT_PORT = 18765  # fixed, so that every fresh demo run draws the same sample (the port is in every uid)


@dataclass(frozen=True)
class DemoOptions:
    """``wit demo``'s settings; the flags, defaults and help are generated from these fields."""

    out: str = option(help="folder for every output of the demo (make demo: out/demo)")
    wordnet_dir: str = option("/usr/share/wordnet",
                              help="WordNet 3.0 dict folder (Debian's wordnet-base); skipped when absent")
    port: int = option(0, help=f"port of the loopback image server (0: the last run's, else {DEFAULT_PORT})")
    seed: int = option(0, help="seed of the corpus, the balancing and training")
    per_query_cap: int = option(80, unit="pairs",
                                help="pairs kept per query (small so that the demo's flooded class is capped)")
    image_size: int = option(64, unit="px", help="side of the stored images (the tiny model uses 32)")
    steps: int = option(200, unit="steps", help="training steps of the tiny model")
    batch_size: int = option(64, unit="samples", help="training batch size")
    workers: int = option(1, unit="processes", help="data loader processes for train and eval")
    force: bool = option(False, help="rerun every stage even when its outputs are complete")
    overwrite: bool = option(False, help="use an --out that holds files wit did not write (no run marker "
                                         ".wit-run.json); the demo's own folders in it are replaced")
    languages: str = option("en", metavar="en[,ja]",
                            help="languages of the chain: en (English WIT), or en,ja (adds Japanese queries from a "
                                 "real jawiki excerpt, Japanese captions, zero-shot in both languages)")

    def __post_init__(self) -> None:
        for name in ("per_query_cap", "image_size", "steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        from wit_builder.demo.languages import parse

        parse(self.languages)  # an unknown language fails here, one line
        if not 0 <= self.port < 65536 or self.workers < 0:
            raise ValueError(f"--port must be 0-65535 and --workers >= 0, got {self.port}, {self.workers}")


OPTIONS = DemoOptions
