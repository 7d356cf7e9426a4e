"""The native engine on one shard (wit_builder.download.shard), with a fake fetcher: one fetch per distinct URL,
results in row order under each row's own key, uid and caption."""

from __future__ import annotations

import threading

from tests import hostile_server as hs
from wit_builder.download.fetch import FetchResult
from wit_builder.download.host_shards import url_key
from wit_builder.download.options import ImageConfig
from wit_builder.download.raw_shards import RawSample, sample_key
from wit_builder.download.shard import base_row, download_rows, host_interleaved, input_uid, shared_result


class FakeFetcher:
    """Answers every URL with ``data`` (404 for URLs containing "missing"), recording what was asked."""

    def __init__(self, data: bytes) -> None:
        self.data, self.asked, self._lock = data, [], threading.Lock()

    def fetch(self, url: str) -> FetchResult:
        with self._lock:
            self.asked.append(url)
        if "missing" in url:
            return FetchResult("failed_to_download", f"HTTP 404 from {url}", 404)
        return FetchResult("success", None, 200, self.data)


def test_host_interleaved_takes_one_row_per_host_in_turn():
    urls = ["http://a/1", "http://a/2", "http://b/1", "http://a/3", "http://c/1", "http://b/2", "not a url"]
    assert host_interleaved(urls) == [0, 2, 4, 6, 1, 5, 3]


def test_base_row_keeps_the_input_and_derives_a_missing_uid():
    row = base_row({"url": "  http://h/a.jpg ", "caption": "a cat", "queries": ["cat"], "lang": "en",
                    "lang_score": 0.75}, "000000")
    assert row == {"key": "000000", "uid": input_uid("http://h/a.jpg", "a cat"), "url": "http://h/a.jpg",
                   "caption": "a cat", "queries": ["cat"], "lang": "en", "lang_score": 0.75}  # stage 2's language
    assert len(row["uid"]) == 32 and base_row({"uid": "given", "url": None}, "k")["uid"] == "given"
    assert base_row({"uid": "u", "url": None}, "k")["url"] == ""


def test_rows_sharing_a_url_are_fetched_once_and_keep_their_own_fields():
    fetcher = FakeFetcher(hs.jpeg())
    rows = [{"uid": "u0", "url": "http://h/a.jpg", "caption": "first"},
            {"uid": "u1", "url": "HTTP://h/a.jpg#fragment", "caption": "second"},
            {"uid": "u2", "url": "http://h/missing.jpg", "caption": "gone"},
            {"uid": "u3", "url": "", "caption": "no url"}]
    samples = download_rows(rows, 3, 10, fetcher, ImageConfig(image_size=32), threads=2)
    assert sorted(fetcher.asked) == ["http://h/a.jpg", "http://h/missing.jpg"]  # one fetch per distinct URL
    assert [s.row["key"] for s in samples] == [sample_key(3, i, 10) for i in range(4)]
    assert [s.row["uid"] for s in samples] == ["u0", "u1", "u2", "u3"]
    assert [s.row["caption"] for s in samples] == ["first", "second", "gone", "no url"]
    assert [s.row["status"] for s in samples] == ["success", "success", "failed_to_download", "failed_to_download"]
    assert samples[0].image == samples[1].image and samples[0].row["sha256"] == samples[1].row["sha256"]
    assert samples[3].row["error_message"] == "empty url"


def test_a_url_known_from_the_previous_shard_is_not_fetched_again():
    fetcher = FakeFetcher(hs.jpeg())
    first = download_rows([{"uid": "a", "url": "http://h/a.jpg"}], 0, 10, fetcher, ImageConfig(image_size=32), 1)
    known = {url_key("http://h/a.jpg"): first[0]}
    again = download_rows([{"uid": "b", "url": "http://h/a.jpg"}], 1, 10, fetcher, ImageConfig(image_size=32), 1,
                          known=known)
    assert fetcher.asked == ["http://h/a.jpg"] and again[0].row["uid"] == "b"
    assert again[0].row["key"] == sample_key(1, 0, 10) and again[0].image == first[0].image


def test_a_shared_result_is_the_same_sample_for_its_own_row():
    result = RawSample({"key": "k0", "uid": "u0", "url": "http://h/a", "caption": "c0", "queries": None,
                        "status": "success", "width": 8}, b"img", "jpg")
    assert shared_result({"uid": "u0", "url": "http://h/a", "caption": "c0"}, "k0", result) is result
    other = shared_result({"uid": "u1", "url": "http://h/a#x", "caption": "c1"}, "k1", result)
    assert other.row == {**result.row, "key": "k1", "uid": "u1", "url": "http://h/a#x", "caption": "c1", "lang": None,
                         "lang_score": None}
    assert (other.image, other.image_ext) == (b"img", "jpg")


def test_progress_moves_with_each_fetch_not_only_when_the_shard_ends():
    """The progress reporter counts every fetched URL as it completes: a long shard shows movement in log files
    (a download logged to a file used to print only its start and end)."""
    from wit_builder.core import progress

    class Watching(FakeFetcher):
        def fetch(self, url: str) -> FetchResult:
            seen.append(reporter.count)  # what the reporter had counted when this fetch began
            return super().fetch(url)

    progress.close_all()
    reporter = progress.reporter("download", "URLs fetched")
    seen: list[int] = []
    rows = [{"uid": f"u{i}", "url": f"http://h/{i}.jpg", "caption": "c"} for i in range(6)]
    download_rows(rows, 0, 10, Watching(hs.jpeg()), ImageConfig(image_size=32), threads=1)
    assert reporter.count == 6 and seen == [0, 1, 2, 3, 4, 5]  # one thread: each fetch saw the ones before it
    progress.close_all()
