"""``wit_builder/queries/inputs.py``: what stage 1's flags name, resolved before any work."""

from __future__ import annotations

import bz2

import pytest

from tests.queries.conftest import write_multistream
from wit_builder.queries.inputs import QueryInputs, resolve
from wit_builder.queries.options import BuildQueriesOptions


def test_resolve_pairs_dumps_with_indexes_and_expands_pageview_globs(tmp_path, enwiki_sample):
    dump = tmp_path / "enwiki-test-pages-articles-multistream.xml.bz2"
    index = write_multistream(dump, bz2.decompress(enwiki_sample.read_bytes()).decode(), pages_per_stream=50)
    for day in ("20240102", "20240101"):
        (tmp_path / f"pageviews-{day}-000000.gz").write_bytes(b"")
    got = resolve(BuildQueriesOptions(dump=(str(tmp_path / "*.bz2"),), out=str(tmp_path / "q"),
                                      pageviews=(str(tmp_path / "pageviews-*.gz"),)))
    assert isinstance(got, QueryInputs) and [(d.path, d.index) for d in got.dumps] == [(str(dump), str(index))]
    assert got.pageviews == tuple(str(tmp_path / f"pageviews-{d}-000000.gz") for d in ("20240101", "20240102"))
    assert got.wordnet == ()


def test_resolve_names_the_flag_of_what_is_missing(tmp_path, enwiki_sample):
    with pytest.raises(FileNotFoundError, match="--dump"):
        resolve(BuildQueriesOptions(dump=(str(tmp_path / "nothing-*.bz2"),), out=str(tmp_path / "q")))
    with pytest.raises(FileNotFoundError, match="--pageviews"):
        resolve(BuildQueriesOptions(dump=(str(enwiki_sample),), out=str(tmp_path / "q"),
                                    pageviews=(str(tmp_path / "none-*.gz"),)))
