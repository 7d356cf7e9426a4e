"""The native engine on one url shard: fetch and process every row with a thread pool, one RawSample each.

Threads rather than asyncio: requests and Pillow block, Pillow releases the GIL while decoding, resizing and
encoding, and the socket waits release it too, so a thread per in-flight request keeps both the network and
the cores busy without a second HTTP stack. Rows are submitted host-interleaved so that a host's
concurrency cap does not park every thread on one slow host; results come back in row order.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

from wit_builder.core import progress
from wit_builder.core.uid import clean_caption, normalize_url, pair_uid
from wit_builder.download.fetch import Fetcher
from wit_builder.download.host_shards import url_key
from wit_builder.download.images import process_image
from wit_builder.download.options import ImageConfig
from wit_builder.download.raw_shards import RawSample, sample_key

logger = logging.getLogger(__name__)


def input_uid(url: str, caption: str | None) -> str:
    """The pair uid of stage 2, for url/caption tables that carry none."""
    with contextlib.suppress(ValueError):  # a URL we cannot normalize keeps its raw form; the fetch reports it
        url = normalize_url(url)
    return pair_uid(url, clean_caption(caption or ""))


def base_row(row: dict[str, Any], key: str) -> dict[str, Any]:
    """The input fields every output row carries: ``key``, ``uid`` (the input's, else ``input_uid``), ``url``
    (stripped; "" when missing), ``caption``, ``queries`` and the caption's ``lang``/``lang_score`` as given."""
    url = row.get("url")
    url = "" if url is None else str(url).strip()
    caption = row.get("caption")
    return {
        "key": key,
        "uid": row.get("uid") or input_uid(url, caption),
        "url": url,
        "caption": caption,
        "queries": row.get("queries"),
        "lang": row.get("lang"),
        "lang_score": row.get("lang_score"),
    }


def process_row(row: dict[str, Any], key: str, fetcher: Fetcher, image_config: ImageConfig) -> RawSample:
    """Fetch and process one input row; every failure is a status, never an exception."""
    out = base_row(row, key)
    try:
        return _process_row(out, fetcher, image_config)
    except Exception as e:  # a bug must cost one row, not the shard; logged with its traceback
        logger.exception("row %s (%s) failed unexpectedly", key, out["url"])
        return RawSample({**out, "status": "failed_to_download", "error_message": f"internal error: {e!r}"})


def _process_row(out: dict[str, Any], fetcher: Fetcher, image_config: ImageConfig) -> RawSample:
    if not out["url"]:
        return RawSample({**out, "status": "failed_to_download", "error_message": "empty url"})
    fetched = fetcher.fetch(out["url"])
    out.update(status=fetched.status, error_message=fetched.error_message, http_status=fetched.http_status)
    if fetched.data is None:
        return RawSample(out, reason=fetched.reason)
    out.update(bytes=len(fetched.data), sha256=hashlib.sha256(fetched.data).hexdigest())
    image = process_image(fetched.data, image_config)
    out.update(status=image.status, error_message=image.error_message, width=image.width, height=image.height,
               original_width=image.original_width, original_height=image.original_height, phash=image.phash)
    if image.encoded is None:
        return RawSample(out)
    return RawSample(out, image.encoded, image_config.encode_format)


def host_interleaved(urls: Sequence[str]) -> list[int]:
    """Row indices ordered round-robin over hosts (first row of each host, then the second, ...)."""
    by_host: dict[str, list[int]] = defaultdict(list)
    for i, url in enumerate(urls):
        try:
            host = urlsplit(url or "").hostname or ""
        except ValueError:
            host = ""
        by_host[host].append(i)
    order = [(rank, i) for indices in by_host.values() for rank, i in enumerate(indices)]
    return [i for _, i in sorted(order)]


def download_rows(rows: Sequence[dict[str, Any]], shard_id: int, rows_per_shard: int, fetcher: Fetcher,
                  image_config: ImageConfig, threads: int,
                  known: Mapping[str, RawSample] | None = None) -> list[RawSample]:
    """One RawSample per input row, in row order; each distinct URL is fetched once.

    Rows are grouped by ``host_shards.url_key`` (the normalized URL); the first row of a group is fetched
    and processed, every other row of the group gets the same result under its own key, uid and caption.
    ``known`` maps URL keys to results already obtained (the previous shard of the same host chain).
    """
    keys = [sample_key(shard_id, i, rows_per_shard) for i in range(len(rows))]
    urls = [str(r.get("url") or "") for r in rows]
    fetch_keys = [url_key(url) if url.strip() else None for url in urls]  # None: an empty url, never shared
    known = known or {}
    first_of: dict[str, int] = {}
    group = [i if k is None else first_of.setdefault(k, i) for i, k in enumerate(fetch_keys)]
    leaders = [i for i in range(len(rows)) if group[i] == i]
    order = [leaders[j] for j in host_interleaved([urls[i] for i in leaders])]
    carried = {i: known[k] for i in leaders if (k := fetch_keys[i]) is not None and k in known}
    fetched = progress.reporter("download", "URLs fetched")  # moves within a shard, not only when one ends
    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="fetch") as pool:
        futures = {i: pool.submit(process_row, rows[i], keys[i], fetcher, image_config)
                   for i in order if i not in carried}
        for future in futures.values():
            future.add_done_callback(lambda _: fetched.add(1))
        results = {i: carried[i] if i in carried else futures[i].result() for i in leaders}
    return [shared_result(rows[i], keys[i], results[group[i]]) for i in range(len(rows))]


def shared_result(row: dict[str, Any], key: str, result: RawSample) -> RawSample:
    """``result`` (of a row with the same URL) for this row: its own key, uid, url, caption and queries."""
    if result.row.get("key") == key:
        return result
    return RawSample({**result.row, **base_row(row, key)}, result.image, result.image_ext, result.reason)
