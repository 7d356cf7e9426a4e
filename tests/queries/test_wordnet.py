"""WordNet lemmas as query candidates (wit_builder.queries.wordnet): read from a local dict folder, refused
before any work when the folder is not one."""

from __future__ import annotations

import pytest

from wit_builder.core.errors import InputError
from wit_builder.queries.wordnet import REQUIRED_FILES, WordNetError, check_wordnet_dir, wordnet_candidates


def test_every_lemma_becomes_a_normalized_candidate_scored_by_semcor(wordnet_dir):
    candidates = dict(wordnet_candidates(str(wordnet_dir)))
    assert len(candidates) > 100_000
    assert candidates["dog"] > candidates["dachshund"] >= 0  # SemCor tag counts: the general word is more frequent
    assert "ice cream" in candidates and "ice_cream" not in candidates  # underscores as spaces
    assert list(candidates) == sorted(candidates)


def test_a_folder_that_is_not_wordnet_is_refused(tmp_path):
    with pytest.raises(WordNetError, match="is not a folder"):
        check_wordnet_dir(str(tmp_path / "nowhere"))
    with pytest.raises(WordNetError, match=f"it lacks {', '.join(REQUIRED_FILES)}"):
        check_wordnet_dir(str(tmp_path))
    for name in REQUIRED_FILES:
        (tmp_path / name).write_text("  1 this is not a WordNet file\n")
    with pytest.raises(WordNetError, match="cannot read WordNet|lists no lemma"):
        wordnet_candidates(str(tmp_path))
    assert issubclass(WordNetError, InputError)  # exit 2 before any work, one line
