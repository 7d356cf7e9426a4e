"""How to read a pool file: its format and url/caption columns (:class:`Layout`), presets of well-known pools
(:data:`LAYOUTS`), and the readers' options (:class:`PoolOptions`), whose per-input layouts let one run mix
pools. Every value is checked on construction (ValueError naming the flag or value)."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, replace

FORMATS = ("wat", "warc", "parquet", "jsonl", "csv", "tsv")


@dataclass(frozen=True)
class Layout:
    """How to read one table: format (or auto), url and caption columns, and whether a header line names them.

    Without a header the columns are 0-based positions written as digits (``"0"``, ``"1"``).
    """

    fmt: str = "auto"
    url_col: str = "url"
    caption_col: str = "caption"
    header: bool = True

    def __post_init__(self) -> None:
        if self.fmt != "auto" and self.fmt not in FORMATS:
            raise ValueError(f"pool format must be auto or one of {', '.join(FORMATS)}, not {self.fmt!r}")
        if not self.url_col or not self.caption_col:
            raise ValueError("url and caption column names must not be empty")
        if self.url_col == self.caption_col:  # one column cannot be both (and parquet would read it once)
            raise ValueError(f"url and caption are the same column {self.url_col}")
        if not self.header:
            if self.fmt not in ("auto", "csv", "tsv"):
                raise ValueError(f"a headerless pool must be csv or tsv, not {self.fmt}")
            for flag, col in (("--url-col", self.url_col), ("--caption-col", self.caption_col)):
                if not col.isdigit():
                    raise ValueError(f"without a header {flag} is a 0-based column position, not {col!r}")


# Well-known pool layouts (--pool-preset, --pool-layout PATTERN=PRESET).
LAYOUTS: dict[str, Layout] = {
    # Conceptual Captions 3M (Train_GCC-training.tsv): caption<TAB>url, no header.
    "cc3m": Layout("tsv", url_col="1", caption_col="0", header=False),
    # Conceptual 12M (cc12m.tsv): url<TAB>caption, no header.
    "cc12m": Layout("tsv", url_col="0", caption_col="1", header=False),
    # LAION-400M/2B/5B metadata parquets: URL, TEXT.
    "laion": Layout("auto", url_col="URL", caption_col="TEXT"),
    # DataComp / COYO metadata: url, text.
    "datacomp": Layout("auto", url_col="url", caption_col="text"),
    "coyo": Layout("auto", url_col="url", caption_col="text"),
    # img2dataset output parquets (url, caption, key, status, ...).
    "img2dataset": Layout("auto", url_col="url", caption_col="caption"),
}


def parse_layout(spec: str) -> Layout:
    """A preset name, or ``key=value`` items joined by commas: ``format``, ``url``, ``caption``, ``header``.

    ``"laion"``; ``"format=tsv,header=no,url=1,caption=0"``; ``"url=URL,caption=TEXT"``. Raises ValueError.
    """
    spec = spec.strip()
    if spec in LAYOUTS:
        return LAYOUTS[spec]
    if "=" not in spec:
        raise ValueError(f"pool layout {spec!r} is neither a preset ({', '.join(LAYOUTS)}) nor key=value items")
    fields: dict[str, str] = {}
    header: bool | None = None
    for item in spec.split(","):
        key, _, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if key == "format":
            fields["fmt"] = value
        elif key in ("url", "caption"):
            fields[f"{key}_col"] = value
        elif key == "header":
            if value not in ("yes", "no", "true", "false"):
                raise ValueError(f"pool layout header={value!r}: say yes or no")
            header = value in ("yes", "true")
        elif key == "preset":
            if value not in LAYOUTS:
                raise ValueError(f"unknown pool preset {value!r} (presets: {', '.join(LAYOUTS)})")
            preset = LAYOUTS[value]
            fields.update(fmt=preset.fmt, url_col=preset.url_col, caption_col=preset.caption_col)
            header = preset.header
        else:
            raise ValueError(f"pool layout key {key!r} is not one of format, url, caption, header, preset")
    return Layout(fmt=fields.get("fmt", Layout.fmt), url_col=fields.get("url_col", Layout.url_col),
                  caption_col=fields.get("caption_col", Layout.caption_col),
                  header=Layout.header if header is None else header)


@dataclass(frozen=True)
class PoolOptions:
    """The readers' options: the default layout (the fields of :class:`Layout`), the URL length limit
    (characters, before and after normalization) and per-input layouts."""

    fmt: str = "auto"
    url_col: str = "url"
    caption_col: str = "caption"
    max_url_length: int = 2048  # longer URLs are almost always tracking junk; browsers cap around here
    header: bool = True
    # Per-input layouts: (glob pattern, Layout); a file takes the first whose pattern matches its path or
    # its base name, else the layout of the fields above.
    layouts: tuple[tuple[str, Layout], ...] = ()

    def __post_init__(self) -> None:
        Layout(self.fmt, self.url_col, self.caption_col, self.header)  # validates the default layout
        if self.max_url_length < 16:
            raise ValueError(f"max_url_length must be at least 16, not {self.max_url_length}")
        for pattern, layout in self.layouts:
            if not pattern or not isinstance(layout, Layout):
                raise ValueError(f"pool layout for {pattern!r} is not a (pattern, Layout) pair")

    def layout_for(self, path: str) -> Layout:
        """The layout of the file at ``path``: the first per-input layout that matches, else the default."""
        base = path.rsplit("/", 1)[-1]
        for pattern, layout in self.layouts:
            if fnmatch.fnmatchcase(path, pattern) or fnmatch.fnmatchcase(base, pattern) or path == pattern:
                return layout
        return Layout(self.fmt, self.url_col, self.caption_col, self.header)

    def for_file(self, path: str) -> PoolOptions:
        """These options with the file's own layout applied (no per-input layouts left)."""
        layout = self.layout_for(path)
        return replace(self, fmt=layout.fmt, url_col=layout.url_col, caption_col=layout.caption_col,
                       header=layout.header, layouts=())
