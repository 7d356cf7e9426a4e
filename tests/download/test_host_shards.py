"""Shard planning by host (politeness across workers) and URL identity for fetch-once."""

from __future__ import annotations

import pytest

from wit_builder.download.host_shards import HostPlanner, host_key, url_key


def plan(urls: list[str], rows_per_shard: int):
    planner = HostPlanner()
    planner.add(urls[: len(urls) // 2])  # two batches, as from two files or row groups
    planner.add(urls[len(urls) // 2:])
    return planner.shards(rows_per_shard)


def test_each_host_is_in_one_chain_and_every_row_in_one_shard():
    urls = [f"http://h{i % 25}.example/{i}.jpg" for i in range(100)] + [f"http://big.example/{i}" for i in range(45)]
    shards = plan(urls, rows_per_shard=10)
    rows = [r for s in shards for r in s.rows]
    assert sorted(rows) == list(range(len(urls)))
    assert all(len(s.rows) <= 10 for s in shards)
    chain_of: dict[str, int] = {}
    for s in shards:
        for r in s.rows:
            assert chain_of.setdefault(host_key(urls[r]), s.chain) == s.chain
    big = [s for s in shards if s.chain == chain_of["big.example"]]
    assert [len(s.rows) for s in big] == [10, 10, 10, 10, 5]  # spread over time in one chain, not over workers
    assert [s.chain for s in shards if len(s.rows) and s.chain != chain_of["big.example"]] == \
        [i for i, s in enumerate(shards) if s.chain != chain_of["big.example"]]  # small hosts: chains of one


def test_small_hosts_are_packed_whole_and_the_plan_is_deterministic():
    urls = [f"http://h{i % 4}.example/{i}.jpg" for i in range(12)]  # 4 hosts x 3 rows
    shards = plan(urls, rows_per_shard=7)
    assert [len(s.rows) for s in shards] == [6, 6]  # two whole hosts per shard, never a host split
    assert plan(urls, rows_per_shard=7) == shards


def test_rows_of_one_url_are_adjacent_within_the_host():
    urls = ["http://h/a.jpg", "http://h/b.jpg", "HTTP://H/a.jpg#x", "http://h:80/b.jpg", "http://h/a.jpg"]
    (shard,) = plan(urls, rows_per_shard=10)
    assert [url_key(urls[r]) for r in shard.rows] == ["http://h/a.jpg"] * 3 + ["http://h/b.jpg"] * 2


def test_url_key_and_host_key_of_odd_urls():
    assert url_key(" http://Example.ORG:80/a?b#c ") == "http://example.org/a?b"
    assert url_key("http://[::1/x") == "http://[::1/x" and host_key("http://[::1/x") == ""
    assert url_key(None) == "" and host_key("") == ""
    assert host_key("https://Example.org./x") == "example.org"
    with pytest.raises(ValueError):
        HostPlanner().shards(0)
