"""``wit download``'s settings: one frozen dataclass tree, from which the flags, defaults and ``--help`` are
generated (:mod:`wit_builder.core.options`).

- :class:`DownloadOptions` (``OPTIONS``): inputs, output, engine, shard size, threads, ``--overwrite``;
- :class:`ImageConfig` (the ``images`` argument group): what ``images.process_image`` checks, resizes and stores;
- :class:`FetchConfig` (the ``network`` argument group): how ``fetch.Fetcher`` fetches.

The nested configs are what the engines receive, so a setting is named, defaulted and checked once. Each
field carries its flag (``deadline_s`` is ``--deadline``, with the flag's metavar ``DEADLINE``), so a settings
error names the user's flag (``--deadline must be > 0``). What decides the shards' content is recorded in ``plan.json``
(``plan.output_settings``); stats.json's ``parameters`` name every setting by its flag (:func:`parameters`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from wit_builder.core.options import flag_name, option

ENGINES: tuple[str, ...] = ("native", "img2dataset")
# --retry-reasons: the transient failures --retry-failed refetches (download/retry.py classifies a stored row)
TRANSIENT_REASONS: tuple[str, ...] = ("timeout", "connection", "dns", "http_429", "http_5xx")
RESIZE_MODES: tuple[str, ...] = ("no", "border", "keep_ratio", "keep_ratio_largest", "center_crop")
ENCODE_FORMATS: dict[str, str] = {"jpg": "JPEG", "webp": "WEBP"}  # --encode-format -> Pillow's format name
CONNECT_TIMEOUT_S, READ_TIMEOUT_S = 5.0, 10.0  # the socket timeouts when --timeout is not given
MIN_MEMORY_BUDGET_MIB = 16


@dataclass(frozen=True)
class ImageConfig:
    """The image half's settings (img2dataset's option names and resize modes); sizes in px.

    Raises ValueError for an unknown mode or format and for values out of range.
    """

    image_size: int = option(256, unit="px", help="target side")  # short side (keep_ratio, center_crop), else long
    resize_mode: str = option("keep_ratio", choices=RESIZE_MODES, help="img2dataset's resize modes")
    encode_format: str = option("jpg", choices=tuple(ENCODE_FORMATS), help="stored image format")
    encode_quality: int = option(95, help="encoder quality, 1-100")
    min_image_size: int = option(0, unit="px", help="smallest accepted side (smaller: status filtered)")
    max_aspect_ratio: float = option(math.inf,
                                     help="largest accepted long/short side ratio (larger: status filtered)")
    # Pillow's own bomb threshold; refused from the header
    max_image_pixels: int = option(89_478_485, unit="px",
                                   help="refuse images whose header declares more pixels (decompression bombs)")
    # 4096^2; resize_mode "no" keeps the source pixels
    max_output_pixels: int = option(16_777_216, unit="px",
                                    help="refuse images whose resized picture would have more pixels (keep_ratio on "
                                         "a very elongated image), checked from the header before decoding")
    memory_budget_mib: int = option(1024, unit="MiB", flag="--image-memory-budget", metavar="IMAGE_MEMORY_BUDGET",
                                    help="image decode/resize work in flight per worker process, all threads "
                                         "together; an image needing more is refused (failed_to_decode)")
    jpeg_draft: bool = option(True, cli=False, help="let libjpeg decode at 1/2, 1/4, 1/8 scale when that still "
                                                    "covers the target")

    def __post_init__(self) -> None:
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {self.resize_mode!r}")
        if self.encode_format not in ENCODE_FORMATS:
            raise ValueError(f"encode_format must be one of {tuple(ENCODE_FORMATS)}, got {self.encode_format!r}")
        if not 1 <= self.encode_quality <= 100:
            raise ValueError(f"encode_quality must be in 1..100, got {self.encode_quality}")
        if self.image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {self.image_size}")
        if self.min_image_size < 0 or self.max_aspect_ratio < 1 or self.max_image_pixels < 1:
            raise ValueError("min_image_size must be >= 0, max_aspect_ratio >= 1, max_image_pixels >= 1")
        if self.max_output_pixels < self.image_size**2:
            raise ValueError(f"max_output_pixels must be >= image_size^2 = {self.image_size**2}, "
                             f"got {self.max_output_pixels}")
        if self.memory_budget_mib < MIN_MEMORY_BUDGET_MIB:
            raise ValueError(f"memory_budget_mib must be >= {MIN_MEMORY_BUDGET_MIB} MiB, got {self.memory_budget_mib}")

    @property
    def memory_budget_bytes(self) -> int:
        """The memory budget in bytes: decode+resize work in flight in one process, all threads together."""
        return self.memory_budget_mib << 20


@dataclass(frozen=True)
class FetchConfig:
    """The network half's settings (times in seconds, sizes in bytes).

    ``timeout_s`` (``--timeout``), when given, sets both socket timeouts ``connect_timeout_s`` and
    ``read_timeout_s``, which the fetcher reads. Raises ValueError for non-positive timeouts or sizes and
    negative retries, backoffs or rates.
    """

    timeout_s: float | None = option(None, unit="s", flag="--timeout", metavar="TIMEOUT",
                                     help=f"connect and read timeout; none: the fetcher's {CONNECT_TIMEOUT_S} s "
                                          f"connect, {READ_TIMEOUT_S} s read")
    # total for one attempt, redirects and body included; it bounds every wait of the exchange
    deadline_s: float = option(30.0, unit="s", flag="--deadline", metavar="DEADLINE", help="total time per attempt")
    # a larger Content-Length or body fails the row
    max_bytes: int = option(20 * 1024 * 1024, unit="bytes", help="largest body read")
    retries: int = option(2, help="extra attempts for transient failures")
    backoff_base_s: float = option(0.5, unit="s", flag="--backoff-base", metavar="BACKOFF_BASE", help="first backoff")
    backoff_max_s: float = option(30.0, unit="s", flag="--backoff-max", metavar="BACKOFF_MAX",
                                  help="longest backoff, and the longest Retry-After honoured")
    # also the keep-alive connections kept per host: more could never be in use at once
    per_host_concurrency: int = option(16, help="requests in flight per host, for the whole run (a host is served "
                                                "by one shard at a time)")
    per_host_rate: float = option(0.0, unit="requests/s",
                                  help="request starts per second per host, for the whole run (0: unlimited)")
    user_agent_contact: str | None = option(None, help="URL or e-mail put in the User-Agent")
    allow_private_networks: bool = option(False, help="allow loopback, private and shared addresses (tests, "
                                                      "intranet mirrors); never opens a cloud metadata endpoint nor a "
                                                      "special-purpose range")
    allow_link_local: bool = option(False, help="also allow link-local addresses and cloud metadata endpoints "
                                                "(169.254.169.254, 100.100.100.200, fd00:ec2::254, ...); separate on "
                                                "purpose")
    respect_robots_txt: bool = option(True, negate="--no-robots", help="ignore robots.txt")
    respect_x_robots_tag: bool = option(True, negate="--no-x-robots-tag",
                                        help="ignore X-Robots-Tag opt-outs (noindex, none, noimageindex, noai, "
                                             "noimageai)")
    respect_tdmrep: bool = option(True, negate="--no-tdmrep",
                                  help="ignore TDMRep reservations (the tdm-reservation header and "
                                       "/.well-known/tdmrep.json), the EU text-and-data-mining opt-out")
    connect_timeout_s: float = option(CONNECT_TIMEOUT_S, cli=False, help="socket connect timeout")
    read_timeout_s: float = option(READ_TIMEOUT_S, cli=False, help="per socket wait; the deadline bounds the whole "
                                                                   "exchange")
    max_redirects: int = option(5, cli=False, help="redirects followed per URL")

    def __post_init__(self) -> None:
        if self.timeout_s is not None:  # one flag for both socket timeouts; the fetcher and plan.json read those
            object.__setattr__(self, "connect_timeout_s", self.timeout_s)
            object.__setattr__(self, "read_timeout_s", self.timeout_s)
        for name in ("timeout_s", "connect_timeout_s", "read_timeout_s", "deadline_s"):  # the flag's name first
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if self.max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {self.max_bytes}")
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")  # the cli names the flag: --retries
        if self.max_redirects < 0:
            raise ValueError(f"max_redirects must be >= 0, got {self.max_redirects}")
        for name in ("backoff_base_s", "backoff_max_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.per_host_concurrency < 1:
            raise ValueError(f"per_host_concurrency must be >= 1, got {self.per_host_concurrency}")
        if self.per_host_rate < 0:
            raise ValueError(f"per_host_rate must be >= 0 (0: unlimited), got {self.per_host_rate}")


@dataclass(frozen=True)
class DownloadOptions:
    """``wit download``'s settings; the flags, defaults and help are generated from these fields (the nested
    configs are argument groups). Raises ValueError for a value out of range."""

    pairs: tuple[str, ...] = option(help="pairs directory, parquet file or glob (needs a url column); repeatable")
    out: str = option(help="output directory for raw shards")
    engine: str = option("native", choices=ENGINES,
                         help="native (requests + Pillow, polite and safe) or img2dataset (the peer, unchanged)")
    rows_per_shard: int = option(10_000, unit="rows", help="input rows per url shard (one Beam element, one raw shard)")
    threads: int = option(64, help="requests in flight per worker")
    image: ImageConfig = option(default_factory=ImageConfig, group="images",
                                help="how an image is checked, resized and stored")
    network: FetchConfig = option(default_factory=FetchConfig, group="network", help="how a URL is fetched")
    overwrite: bool = option(False, help="the --out folder holds shards of other inputs or settings, or files wit "
                                         "did not write (no run marker .wit-run.json): delete the shards and "
                                         "download again (without it such an --out is refused)")
    retry_failed: bool = option(False, help="in shards an earlier run finished, fetch again the rows that failed for "
                                            "a transient reason (--retry-reasons); successes and permanent failures "
                                            "(404, blocked, opted out, filtered) are kept as they are")
    retry_reasons: tuple[str, ...] = option(TRANSIENT_REASONS, choices=TRANSIENT_REASONS, many=True,
                                            help="with --retry-failed: the failure reasons to retry")

    def __post_init__(self) -> None:
        if self.retry_failed and self.overwrite:
            raise ValueError("--retry-failed retries an earlier run's failed rows; --overwrite deletes that run: "
                             "pass one of them")
        if not self.retry_failed and tuple(self.retry_reasons) != TRANSIENT_REASONS:
            raise ValueError("--retry-reasons chooses what --retry-failed fetches again; without --retry-failed "
                             "nothing is retried: add --retry-failed")
        unknown = sorted(set(self.retry_reasons) - set(TRANSIENT_REASONS))
        if unknown or not self.retry_reasons:
            raise ValueError(f"--retry-reasons must name some of {', '.join(TRANSIENT_REASONS)}, got "
                             f"{', '.join(unknown) or 'none'}")
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        if self.rows_per_shard < 1:
            raise ValueError(f"rows_per_shard must be >= 1, got {self.rows_per_shard}")
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")


OPTIONS = DownloadOptions
EPILOG = ("Exit status: 0 some row succeeded; 1 the run failed; 2 bad input or settings, or --out holds shards of "
          "other inputs or settings (see --overwrite); 3 the run finished but no row succeeded (the summary lists "
          "the top reasons).")


def _parameter_name(field: dataclasses.Field) -> str:
    """A setting's name in stats.json: its flag without dashes (``--no-robots`` -> ``robots``)."""
    name = flag_name(field).removeprefix("--")
    return (name.removeprefix("no-") if field.metadata.get("negate") else name).replace("-", "_")


def parameters(options: DownloadOptions) -> dict[str, Any]:
    """stats.json's ``parameters``: every flag's value as given, named by the flag (``--image-memory-budget`` ->
    ``image_memory_budget`` in MiB, ``--timeout`` -> ``timeout``, ``None`` when not given), the groups flattened
    and ``--out`` left out (stats.json holds no output location)."""
    values: dict[str, Any] = {}
    for config in (options, options.image, options.network):
        for field in dataclasses.fields(config):
            value = getattr(config, field.name)
            if field.metadata.get("cli", True) and not dataclasses.is_dataclass(value) and field.name != "out":
                values[_parameter_name(field)] = list(value) if isinstance(value, tuple) else value
    return values
