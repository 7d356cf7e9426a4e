"""Final WebDataset shards (wit_builder.finalize.shards): names, keys, the equal-count plan, reproducible tars."""

from __future__ import annotations

import io
import tarfile

from wit_builder.finalize import shards as final_shards


def test_shard_plan_and_tar_bytes_are_reproducible():
    assert final_shards.shard_sizes(10, 4) == {"00000": 4, "00001": 4, "00002": 2}
    assert final_shards.shard_sizes(8, 4) == {"00000": 4, "00001": 4}
    assert final_shards.shard_sizes(0, 4) == {}
    row = {"key": final_shards.sample_key(7), "uid": "u", "caption": "a cat", "status": "success"}
    members = final_shards.sample_members(row, "webp", b"RIFF....WEBP")
    assert [name for name, _ in members] == ["0000000007.json", "0000000007.txt", "0000000007.webp"]
    first, second = io.BytesIO(), io.BytesIO()
    final_shards.write_tar(first, members)
    final_shards.write_tar(second, members)
    assert first.getvalue() == second.getvalue() and len(first.getvalue()) % tarfile.RECORDSIZE == 0
