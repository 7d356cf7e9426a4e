"""Shared fixtures: the real data the tests use (enwiki sample from gensim, WordNet from Debian)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

WORDNET_DIR = Path("/usr/share/wordnet")
BEAM_IN_PROCESS = ["--runner=FnApiRunner"]
BEAM_MULTI_PROCESS = ["--runner=FnApiRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=2"]


@pytest.fixture(scope="session")
def enwiki_sample() -> Path:
    """The real 206-page English Wikipedia dump sample shipped in the gensim wheel."""
    import gensim

    name = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
    path = Path(gensim.__file__).parent / "test" / "test_data" / name
    assert path.exists(), path
    return path


@pytest.fixture(scope="session")
def wordnet_dir() -> Path:
    """WordNet 3.0 dict files from Debian's wordnet-base (.ci/run installs it)."""
    if not (WORDNET_DIR / "data.noun").exists():
        pytest.skip("Debian's wordnet-base is not installed")
    return WORDNET_DIR
