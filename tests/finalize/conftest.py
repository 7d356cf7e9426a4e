"""Stage 4's shared fixture: realistic raw shards of real photos (``tests.raw_fixtures``), written once."""

from __future__ import annotations

import pytest

from tests.raw_fixtures import RawFixture, write_raw_fixture


@pytest.fixture(scope="session")
def raw(tmp_path_factory: pytest.TempPathFactory) -> RawFixture:
    """Three raw shards (both engines' layouts) and an evaluation folder; read-only for the tests."""
    return write_raw_fixture(tmp_path_factory.mktemp("finalize"))
