"""Pool layouts: presets, per-input layouts, headerless tables and the checks of PoolOptions."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.pairs.readers.conftest import candidates, read
from wit_builder.beam.fileio import open_read
from wit_builder.pairs.readers.formats import check_pool_file, read_pool_file
from wit_builder.pairs.readers.layouts import LAYOUTS, PoolOptions, parse_layout
from wit_builder.pairs.readers.records import PoolFormatError


def test_url_and_caption_cannot_be_one_column() -> None:
    """One column named for both (with a header too) is refused up front, not an IndexError mid-pipeline."""
    for spec in ({"url_col": "text", "caption_col": "text"}, {"url_col": "1", "caption_col": "1", "header": False}):
        with pytest.raises(ValueError, match="same column"):
            PoolOptions(**spec)
    with pytest.raises(ValueError, match="same column"):
        parse_layout("url=TEXT,caption=TEXT")


def test_headerless_cc3m_and_cc12m_layouts(tmp_path: Path) -> None:
    # Conceptual Captions ship without a header: CC3M caption<TAB>url, CC12M url<TAB>caption.
    (tmp_path / "Train_GCC-training.tsv").write_text(
        "a very typical bus station\thttp://lh6.example/-bus.jpg\n"
        "sierra looked stunning in this top and this skirt\thttp://cdn.example/skirt.jpg\n", encoding="utf-8")
    (tmp_path / "cc12m.tsv").write_text(
        "http://www.example/a.jpg\t<PERSON> with a \"cat\" on the lawn\n", encoding="utf-8")
    cc3m = read(tmp_path / "Train_GCC-training.tsv", fmt="tsv", header=False, url_col="1", caption_col="0")
    assert candidates(cc3m) == [("http://lh6.example/-bus.jpg", "a very typical bus station"),
                                ("http://cdn.example/skirt.jpg", "sierra looked stunning in this top and this skirt")]
    preset = LAYOUTS["cc3m"]
    assert candidates(read(tmp_path / "Train_GCC-training.tsv", fmt=preset.fmt, header=preset.header,
                           url_col=preset.url_col, caption_col=preset.caption_col)) == candidates(cc3m)
    options = PoolOptions(layouts=(("cc12m*", parse_layout("cc12m")),))
    items = list(read_pool_file(str(tmp_path / "cc12m.tsv"), open_read, options))
    assert candidates(items) == [("http://www.example/a.jpg", '<PERSON> with a "cat" on the lawn')]
    # Without --no-header the first data row would be the header: the check says so before any work.
    with pytest.raises(PoolFormatError, match="'url'"):
        check_pool_file(str(tmp_path / "cc12m.tsv"), open_read, PoolOptions())
    with pytest.raises(ValueError, match="position"):
        PoolOptions(header=False, url_col="url", caption_col="0")
    with pytest.raises(ValueError):
        parse_layout("cc99m")


def test_mixed_pool_per_input_layouts(tmp_path: Path) -> None:
    pq.write_table(pa.table({"URL": ["http://l.example/1.jpg"], "TEXT": ["laion row"], "similarity": [0.3]}),
                   tmp_path / "laion-part-0.parquet")
    pq.write_table(pa.table({"uid": ["a" * 32], "url": ["http://d.example/1.jpg"], "text": ["datacomp row"]}),
                   tmp_path / "datacomp-0.parquet")
    pq.write_table(pa.table({"caption": ["img2dataset row"], "url": ["http://i.example/1.jpg"], "key": ["000"],
                             "status": ["success"]}), tmp_path / "00000.parquet")
    (tmp_path / "own.csv").write_text("image,alt\nhttp://o.example/1.jpg,own row\n")
    options = PoolOptions(layouts=(
        ("laion-*.parquet", parse_layout("laion")),
        (str(tmp_path / "datacomp-*"), parse_layout("datacomp")),
        ("*.csv", parse_layout("url=image,caption=alt")),
    ))
    got = []
    for name in ("laion-part-0.parquet", "datacomp-0.parquet", "00000.parquet", "own.csv"):
        path = str(tmp_path / name)
        check_pool_file(path, open_read, options)
        got += candidates(read_pool_file(path, open_read, options))
    assert got == [("http://l.example/1.jpg", "laion row"), ("http://d.example/1.jpg", "datacomp row"),
                   ("http://i.example/1.jpg", "img2dataset row"), ("http://o.example/1.jpg", "own row")]
    with pytest.raises(PoolFormatError, match="'URL'"):  # without the mapping, laion's columns are missing
        check_pool_file(str(tmp_path / "laion-part-0.parquet"), open_read, PoolOptions())
