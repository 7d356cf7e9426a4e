"""Builders for stage 2 test inputs: WAT files written with warcio's own writer, queries.parquet."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from warcio.warcwriter import WARCWriter

from schemas.queries import QUERIES, QUERIES_PARQUET
from wit_builder.core.textnorm import normalize


def wat_payload(page: str, links: list[dict], base: str | None = None) -> bytes:
    """The JSON of a Common Crawl WAT metadata record for an HTML response."""
    head: dict = {"Title": "a page", "Metas": []}
    if base is not None:
        head["Base"] = base
    doc = {
        "Container": {"Filename": "CC-MAIN-test.warc.gz", "Compressed": True},
        "Envelope": {
            "Format": "WARC",
            "WARC-Header-Metadata": {"WARC-Type": "response", "WARC-Target-URI": page},
            "Payload-Metadata": {
                "Actual-Content-Type": "application/http; msgtype=response",
                "HTTP-Response-Metadata": {
                    "Response-Message": {"Status": "200"},
                    "HTML-Metadata": {"Head": head, "Links": links},
                },
            },
        },
    }
    return json.dumps(doc).encode()


class WatBuilder:
    """Appends WAT records (one gzip member each, like Common Crawl's) and remembers their offsets."""

    def __init__(self) -> None:
        self.buffer = io.BytesIO()
        self.writer = WARCWriter(self.buffer, gzip=True)
        self.offsets: list[int] = []

    def _add(self, uri: str, payload: bytes, rec_type: str = "metadata") -> int:
        self.offsets.append(self.buffer.tell())
        record = self.writer.create_warc_record(uri, rec_type, payload=io.BytesIO(payload),
                                                warc_content_type="application/json")
        self.writer.write_record(record)
        return self.offsets[-1]

    def page(self, page: str, links: list[dict], base: str | None = None) -> int:
        return self._add(page, wat_payload(page, links, base))

    def raw(self, uri: str, payload: bytes, rec_type: str = "metadata") -> int:
        return self._add(uri, payload, rec_type)

    def request_record(self, page: str) -> int:
        doc = {"Envelope": {"WARC-Header-Metadata": {"WARC-Type": "request", "WARC-Target-URI": page},
                            "Payload-Metadata": {"HTTP-Request-Metadata": {"Request-Message": {}}}}}
        return self._add(page, json.dumps(doc).encode())

    def bytes(self) -> bytes:
        return self.buffer.getvalue()

    def write(self, path: Path) -> Path:
        path.write_bytes(self.bytes())
        return path


def img(url: str, alt: str | None) -> dict:
    link = {"path": "IMG@/src", "url": url}
    if alt is not None:
        link["alt"] = alt
    return link


def write_queries(directory: Path, queries: list[str]) -> Path:
    """queries.parquet as stage 1 writes it (queries normalized, schema schemas.queries.QUERIES)."""
    directory.mkdir(parents=True, exist_ok=True)
    normalized = list(dict.fromkeys(normalize(q) for q in queries if normalize(q)))
    table = pa.table(
        {
            "query": normalized,
            "source": ["unigram" if " " not in q else "bigram" for q in normalized],
            "count": [100] * len(normalized),
            "score": [1.0] * len(normalized),
        },
        schema=QUERIES,
    )
    pq.write_table(table, directory / QUERIES_PARQUET)
    return directory


class WarcBuilder:
    """Appends WARC response records (HTTP headers and body, one gzip member each) like a crawler's WARC."""

    def __init__(self) -> None:
        self.buffer = io.BytesIO()
        self.writer = WARCWriter(self.buffer, gzip=True)
        self.offsets: list[int] = []

    def response(self, uri: str, body: bytes, content_type: str = "text/html; charset=utf-8") -> int:
        from warcio.statusandheaders import StatusAndHeaders

        self.offsets.append(self.buffer.tell())
        http = StatusAndHeaders("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))],
                                protocol="HTTP/1.1")
        record = self.writer.create_warc_record(uri, "response", payload=io.BytesIO(body), http_headers=http)
        self.writer.write_record(record)
        return self.offsets[-1]

    def request(self, uri: str) -> int:
        from warcio.statusandheaders import StatusAndHeaders

        self.offsets.append(self.buffer.tell())
        http = StatusAndHeaders("GET / HTTP/1.1", [("Host", "example")], is_http_request=True)
        record = self.writer.create_warc_record(uri, "request", payload=io.BytesIO(b""), http_headers=http)
        self.writer.write_record(record)
        return self.offsets[-1]

    def bytes(self) -> bytes:
        return self.buffer.getvalue()

    def write(self, path: Path) -> Path:
        path.write_bytes(self.bytes())
        return path
