"""Stage 2's shared fixtures and input builders: WAT and WARC files written with warcio's own writer,
queries.parquet as stage 1 writes it; a pool of real Wikipedia sentences as alt texts over WAT, parquet, jsonl.gz
and csv files (with bad records, duplicates and refused URLs), its queries, and helpers to run the stage on it."""

from __future__ import annotations

import bz2
import collections
import csv
import gzip
import io
import itertools
import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from warcio.warcwriter import WARCWriter

from schemas.pairs import PAIRS
from schemas.queries import AS_WRITTEN, QUERIES_PARQUET, language_schema
from wit_builder.cli import main as wit
from wit_builder.core import segment
from wit_builder.core.textnorm import tokenize

# ---- input builders: WAT and WARC records, queries.parquet ----

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


def write_queries(directory: Path, queries: list[str], lang: str = "en") -> Path:
    """queries.parquet as stage 1 writes it (queries normalized by core.segment for ``lang``, schema
    schemas.queries.QUERIES with the language and segmenter in its metadata)."""
    directory.mkdir(parents=True, exist_ok=True)
    normalized = list(dict.fromkeys(segment.normalize(q, lang) for q in queries if segment.normalize(q, lang)))
    table = pa.table(
        {
            "query": normalized,
            "source": ["unigram" if " " not in q else "bigram" for q in normalized],
            "count": [100] * len(normalized),
            "score": [1.0] * len(normalized),
            "lang": [lang] * len(normalized),
            AS_WRITTEN: [segment.written_form(q) for q in normalized],
        },
        schema=language_schema(lang, segment.segmenter_id(lang)),
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


# ---- the pool of real sentences ----

CAP = 12


@pytest.fixture(scope="session")
def wiki_captions(enwiki_sample: Path) -> list[str]:
    """1,200 real sentences from the enwiki sample, standing in for alt texts."""
    from gensim.corpora.wikicorpus import extract_pages, filter_wiki

    captions: list[str] = []
    with bz2.BZ2File(enwiki_sample) as dump:
        for _, text, _ in extract_pages(dump):
            for sentence in re.split(r"(?<=[.!?])\s+|\n+", filter_wiki(text)):
                sentence = sentence.strip().replace("'''", "")
                if 4 <= len(sentence.split()) <= 25 and not sentence.startswith(("|", "{", "*", "=")):
                    captions.append(sentence)
            if len(captions) >= 1200:
                return captions[:1200]
    return captions


@pytest.fixture(scope="session")
def pool(tmp_path_factory: pytest.TempPathFactory, wiki_captions: list[str]) -> dict:
    """Queries (frequent words and bigrams of the captions) and a pool spread over WAT, parquet, jsonl.gz, csv."""
    root = tmp_path_factory.mktemp("pairs-pool")
    words = collections.Counter(t for c in wiki_captions for t in set(tokenize(c)) if len(t) >= 4)
    bigrams = collections.Counter(" ".join(b) for c in wiki_captions for b in itertools.pairwise(tokenize(c)))
    queries = [w for w, _ in words.most_common(60)[10:]] + [b for b, _ in bigrams.most_common(40)[20:]]
    queries += ["zebra crossing", "quokka"]  # match nothing: they still get a query_counts row
    queries_dir = write_queries(root / "queries", queries)

    n = len(wiki_captions)
    files = root / "files"
    files.mkdir()
    wat = WatBuilder()
    for page in range(0, 400, 10):
        links = [img(f"img/{i}.jpg" if i % 2 else f"/abs/{i}.png", wiki_captions[i]) for i in range(page, page + 10)]
        links.append(img("data:image/gif;base64,R0lGODlhAQABAAAAACw=", "a pixel"))
        wat.page(f"https://wiki.example/page{page}/index.html", links)
    wat.raw("https://wiki.example/broken", b'{"Envelope": {"x": "\xff\xfe"}}')
    wat.page("https://wiki.example/long", [img("/" + "L" * 10_000, wiki_captions[0])])
    good = wat.bytes()
    (files / "CC-MAIN-0.warc.wat.gz").write_bytes(good + good[wat.offsets[3] : wat.offsets[4] - 30])
    pq.write_table(pa.table({"url": [f"https://t.example/{i}.jpg" for i in range(400, 800)],
                             "caption": wiki_captions[400:800]}), files / "part-0.parquet")
    jsonl = [json.dumps({"url": f"https://t.example/{i}.jpg", "caption": wiki_captions[i]}) for i in range(800, n)]
    # Exact duplicates of parquet rows (same url and caption), a bad line and a non-UTF-8 line.
    jsonl += [json.dumps({"url": f"https://t.example/{i}.jpg", "caption": wiki_captions[i]}) for i in range(400, 450)]
    lines = [line.encode() for line in jsonl] + [b'{"url": ', b'{"url": "https://t.example/x.jpg", "caption": "\xe9"}']
    (files / "part-1.jsonl.gz").write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))
    with open(files / "part-2.csv", "w", encoding="utf-8", newline="") as f:
        rows = csv.writer(f)
        rows.writerow(["url", "caption"])
        rows.writerows([f"ftp://old.example/{i}.jpg", wiki_captions[i]] for i in range(100))  # dropped: not http(s)
    return {"queries": queries_dir, "pool": [str(files / "*.warc.wat.gz"), str(files / "part-*")], "files": files}


def build(pool: dict, out: Path, beam: list[str], *extra: str) -> int:
    """``wit build-pairs`` on the ``pool`` fixture with a cap of :data:`CAP`, every caption matched against the
    English queries (``--no-language-routing``: the references know no language); the exit status."""
    argv = ["build-pairs", "--queries", str(pool["queries"]), "--out", str(out), "--per-query-cap", str(CAP),
            "--no-language-routing"]
    for pattern in pool["pool"]:
        argv += ["--pool", pattern]
    return wit([*argv, *extra, *beam])


def read_pairs(out: Path) -> pa.Table:
    """Every pairs file of ``out`` in one table, in file order."""
    files = sorted(out.glob("pairs-*.parquet"))
    return pa.concat_tables([pq.read_table(f, schema=PAIRS) for f in files])
