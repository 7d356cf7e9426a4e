"""Identity (wit_builder.core.uid): the pair uid of a normalized URL and caption, the seeded rank and draw; the
values are pinned, since a change silently changes every uid and selection made with these seeds."""

from __future__ import annotations

from wit_builder.core.uid import draw, hash_rank, normalize_url, pair_uid


def test_seeded_ranks_and_draws_are_stable() -> None:
    uid = pair_uid(normalize_url("HTTP://Example.COM:80/a.jpg#x"), "a dog")
    assert uid == pair_uid("http://example.com/a.jpg", "a dog")
    # Pinned values: a change here silently changes every uid and selection made with these seeds.
    assert uid == "2f17d9958e9e0347007905d6ff619ba7"
    assert hash_rank(uid, 0) == 6365089246226153563 and hash_rank(uid, 1) != hash_rank(uid, 0)
    assert draw(uid, "dog", 0) == 0.9744954149239536 and draw(uid, "cat", 0) != draw(uid, "dog", 0)
