"""The shard worker (wit_builder.download.worker) without Beam: a host chain's shards downloaded one after
another into the raw folder, complete shards read back, the boundary URL handed on."""

from __future__ import annotations

import json

from tests import hostile_server as hs
from tests.conftest import encode, photo
from tests.download.conftest import read_raw, write_pairs
from wit_builder.download.inputs import plan_shards
from wit_builder.download.options import DownloadOptions, FetchConfig, ImageConfig
from wit_builder.download.worker import ShardWorker


def options(out, **network) -> DownloadOptions:
    return DownloadOptions(pairs=("unused",), out=str(out), rows_per_shard=2, threads=2,
                           image=ImageConfig(image_size=32),
                           network=FetchConfig(allow_private_networks=True, timeout_s=2.0, deadline_s=5.0, **network))


def test_a_chain_is_downloaded_in_order_and_complete_shards_are_read_back(tmp_path):
    out = tmp_path / "raw"
    out.mkdir()
    with hs.HostileServer() as s:
        s.serve("/robots.txt", hs.Response(200, b"User-agent: *\nAllow: /\n", content_type="text/plain"))
        small = encode(photo("coffee").resize((48, 32)), "JPEG")
        urls = [s.image("/a.jpg", small), s.counted_image("/b.jpg", small), s.counted_image("/b.jpg", small),
                s.url("/missing.jpg")]
        pairs = write_pairs(tmp_path / "pairs.parquet", [{"uid": f"u{i}", "url": u, "caption": f"c{i}"}
                                                         for i, u in enumerate(urls)])
        specs = plan_shards([str(pairs)], rows_per_shard=2)
        assert specs[0].chain == specs[1].chain  # one host, one chain
        assert [spec.members for spec in specs] == [((0, 0), (0, 1)), ((0, 2), (0, 3))]  # /b.jpg at the boundary
        (out / "00000.tar.tmp-killed").write_bytes(b"half")  # what a killed attempt left

        worker = ShardWorker(options(out))
        try:
            outcomes = list(worker.run_chain(reversed(specs)))  # shard order, whatever the group's order
        finally:
            worker.close()
        assert len(s.requests_to("/b.jpg")) == 1  # the URL at the boundary was handed to the next shard
    assert [(o.stats["shard"], o.downloaded) for o in outcomes] == [("00000", True), ("00001", True)]
    assert [o.stats["count"] for o in outcomes] == [2, 2]
    assert sum(o.stats["successes"] for o in outcomes) == 3 and not list(out.glob("*.tmp-*"))
    rows, members = read_raw(out)
    assert sorted(r["uid"] for r in rows) == ["u0", "u1", "u2", "u3"] and len(members) == 3
    assert json.loads((out / "00001_stats.json").read_text()) == outcomes[1].stats

    before = {p.name: p.read_bytes() for p in out.iterdir()}
    worker = ShardWorker(options(out))  # no server any more: complete shards need none
    try:
        again = list(worker.run_chain(specs))
    finally:
        worker.close()
    assert [(o.stats, o.downloaded) for o in again] == [(o.stats, False) for o in outcomes]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
