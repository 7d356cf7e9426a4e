"""``OUT/gallery/``: a static, self-contained look at a finalized dataset (HTML pages + JPEG thumbnails; no
script, no server, no network): what was kept for a query and what was dropped, without writing code.

```
gallery/index.html       counts per final status; the queries with the most and the fewest samples, each a link
gallery/q/{n}.html       one query: a grid of its samples (thumbnail, caption, key and shard)
gallery/dropped.html     dropped rows that had an image, by reason: duplicates beside the sample they duplicate,
                         decontaminated images (the evaluation image they are near), over-cap samples
gallery/t/{name}.jpg     thumbnails (longest side THUMB_PX, JPEG quality THUMB_QUALITY)
```

Bounded whatever the dataset's size (a sample, not the dataset): ``per_query`` samples for each of at most
``QUERIES_SHOWN`` queries with the most samples and as many with the fewest (of those with one or more), and at
most ``DROPPED_SHOWN`` rows per drop reason. Which ones: the smallest ``hash_rank(uid, 0)`` (the project's seeded
rank, ``core.uid``), so a rerun shows the same samples and a sample is not biased to the first raw shards. The
accounting tables are read twice, column-projected and one file at a time (memory: the kept candidates only);
images are read by member from the final tars (survivors) and the raw tars (dropped rows).

Files go through ``beam.fileio`` (local folders and object stores). The folder is the gallery's own: files of an
earlier gallery that this one does not write are deleted. A dataset with no sample gets an index that says so.
"""

from __future__ import annotations

import contextlib
import heapq
import html
import io
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow.parquet as pq
from PIL import Image

from schemas.finalize import FINAL_STATUSES, QUERY_COUNTS_PARQUET, ROWS_DIR
from wit_builder.beam import fileio
from wit_builder.core.uid import hash_rank
from wit_builder.download import raw_shards

GALLERY_DIR = "gallery"
THUMB_PX = 160
THUMB_QUALITY = 75
QUERIES_SHOWN = 50     # queries with the most samples, and as many with the fewest
DROPPED_SHOWN = 48     # rows shown per drop reason
DROP_REASONS: dict[str, str] = {
    "duplicate": "Duplicates (beside the sample they duplicate)",
    "decontaminated": "Decontaminated (near an evaluation image, named below each)",
    "over_cap": "Over the per-query cap",
}
COLUMNS = ["key", "uid", "caption", "queries", "status", "error_message", "shard", "duplicate_of", "raw_shard",
           "raw_key", "width", "height", "lang"]
_CSS = """body{font-family:sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1,h2{font-weight:600}table{border-collapse:collapse}td,th{padding:.2em .8em;border-bottom:1px solid #ddd;
text-align:left}td.n{text-align:right}.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(180px,1fr));
gap:12px}figure{margin:0;background:#fff;border:1px solid #ddd;padding:6px}figure img{display:block;margin:auto;
max-width:160px;max-height:160px}figcaption{font-size:12px;overflow-wrap:anywhere}.meta{color:#777;font-size:11px}
.pairs{grid-template-columns:repeat(auto-fill,minmax(380px,1fr))}.pair{display:flex;gap:8px}
.pair figure{flex:1;min-width:0}.empty{padding:2em;background:#fff3cd;border:1px solid #e0c36c}"""


@dataclass
class _Shown:
    """One row the gallery shows: its accounting fields and, once written, its thumbnail's file name."""

    row: dict[str, Any]
    thumb: str | None = None


@dataclass
class GallerySample:
    """What :func:`select` keeps: per chosen query its samples, per drop reason its rows, the survivors that
    duplicates name, and the dataset's counts."""

    statuses: Counter[str] = field(default_factory=Counter)
    most: list[tuple[str, int, int]] = field(default_factory=list)    # (query, input, final)
    fewest: list[tuple[str, int, int]] = field(default_factory=list)
    per_query: dict[str, list[_Shown]] = field(default_factory=dict)
    dropped: dict[str, list[_Shown]] = field(default_factory=dict)
    survivors: dict[str, _Shown] = field(default_factory=dict)         # uid -> the sample a shown duplicate names


def drop_reason(row: Mapping[str, Any]) -> str | None:
    """The gallery's drop reason of an accounting row (a key of DROP_REASONS), or None for a sample and for rows
    dropped without an image (failed downloads, blocked, filtered by the downloader)."""
    status = row.get("status")
    if status in ("duplicate", "over_cap"):
        return str(status)
    if status == "filtered" and "evaluation image" in str(row.get("error_message") or ""):
        return "decontaminated"
    return None


def chosen_queries(query_counts: Sequence[tuple[str, int, int]], shown: int = QUERIES_SHOWN,
                   ) -> tuple[list[tuple[str, int, int]], list[tuple[str, int, int]]]:
    """(most, fewest): the ``shown`` queries with the most final samples (ties by query) and the ``shown`` with
    the fewest of those with at least one, not repeating one of the first list."""
    present = [q for q in query_counts if q[2] > 0]
    most = sorted(present, key=lambda q: (-q[2], q[0]))[:shown]
    taken = {q[0] for q in most}
    fewest = [q for q in sorted(present, key=lambda q: (q[2], q[0])) if q[0] not in taken][:shown]
    return most, fewest


class _Smallest:
    """The ``n`` items of the smallest rank seen (a bounded max-heap)."""

    def __init__(self, n: int) -> None:
        self.n, self._heap, self._seen = n, [], 0  # type: ignore[var-annotated]

    def add(self, rank: int, item: dict[str, Any]) -> None:
        self._seen += 1
        entry = (-rank, self._seen, item)
        if len(self._heap) < self.n:
            heapq.heappush(self._heap, entry)
        elif -self._heap[0][0] > rank:
            heapq.heapreplace(self._heap, entry)

    def items(self) -> list[dict[str, Any]]:
        return [item for _, _, item in sorted(self._heap, key=lambda e: (-e[0], e[1]))]


def _rows(out: str, columns: list[str]) -> Iterator[dict[str, Any]]:
    for path in sorted(fileio.match(fileio.join(out, ROWS_DIR, "*.parquet"))):
        with fileio.open_read(path) as f:
            table = pq.read_table(io.BytesIO(f.read()), columns=columns)
        yield from table.to_pylist()


def select(out: str, query_counts: Sequence[tuple[str, int, int]], per_query: int) -> GallerySample:
    """The bounded sample of the finalized folder ``out`` (module docstring): two passes over its accounting."""
    sample = GallerySample()
    sample.most, sample.fewest = chosen_queries(query_counts)
    heaps = {q: _Smallest(per_query) for q, _, _ in sample.most + sample.fewest}
    dropped = {reason: _Smallest(DROPPED_SHOWN) for reason in DROP_REASONS}
    for row in _rows(out, COLUMNS):
        sample.statuses[row["status"]] += 1
        rank = hash_rank(row["uid"], 0)
        if row["status"] == "success":
            for query in row["queries"] or ():
                if query in heaps:
                    heaps[query].add(rank, row)
        elif (reason := drop_reason(row)) is not None and row.get("raw_key") is not None:
            dropped[reason].add(rank, row)
    sample.per_query = {q: [_Shown(r) for r in heap.items()] for q, heap in heaps.items()}
    sample.dropped = {reason: [_Shown(r) for r in heap.items()] for reason, heap in dropped.items()}
    wanted = {s.row["duplicate_of"] for s in sample.dropped["duplicate"] if s.row.get("duplicate_of")}
    if wanted:
        for row in _rows(out, COLUMNS):
            if row["uid"] in wanted and row["status"] == "success":
                sample.survivors[row["uid"]] = _Shown(row)
    return sample


def thumbnail(data: bytes) -> bytes | None:
    """A JPEG thumbnail (longest side THUMB_PX) of an encoded image; None when it does not decode."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.draft("RGB", (THUMB_PX, THUMB_PX))
            small = image.convert("RGB")
            small.thumbnail((THUMB_PX, THUMB_PX))
            buf = io.BytesIO()
            small.save(buf, "JPEG", quality=THUMB_QUALITY, optimize=True)
            return buf.getvalue()
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def _read_members(tar_path: str, keys: Iterable[str]) -> dict[str, bytes]:
    """key -> image bytes of those members of a tar (missing keys left out)."""
    found: dict[str, bytes] = {}
    if not fileio.exists(tar_path):
        return found
    with fileio.open_read(tar_path) as f:
        members, _ = raw_shards.index_tar(f)
        for key in sorted(set(keys)):
            ext = next((e for e in raw_shards.IMAGE_EXTENSIONS if e in members.get(key, {})), None)
            if ext is not None:
                offset, size = members[key][ext]
                f.seek(offset)
                found[key] = f.read(size)
    return found


def write_thumbnails(out: str, sample: GallerySample, raw_tars: Mapping[str, str]) -> dict[str, int]:
    """Each shown row's thumbnail written to ``gallery/t/`` (survivors from the final tars, dropped rows from
    their raw tars: ``raw_tars`` maps a raw shard name to its tar); the files written -> bytes."""
    final, raw = _group_by_tar(sample, raw_tars, out)
    written: dict[str, int] = {}
    for (tar, kind), shown in sorted({**final, **raw}.items()):
        images = _read_members(tar, (_member_key(s, kind) for s in shown))
        for s in shown:
            data = images.get(_member_key(s, kind))
            small = thumbnail(data) if data is not None else None
            if small is None:
                continue
            name = f"{kind}-{s.row['uid']}.jpg"
            if name not in written:
                fileio.write_bytes(fileio.join(out, GALLERY_DIR, "t", name), small)
                written[name] = len(small)
            s.thumb = name
    return written


def _member_key(shown: _Shown, kind: str) -> str:
    return str(shown.row["key"] if kind == "final" else shown.row["raw_key"])


def _group_by_tar(sample: GallerySample, raw_tars: Mapping[str, str], out: str,
                  ) -> tuple[dict[tuple[str, str], list[_Shown]], dict[tuple[str, str], list[_Shown]]]:
    final: dict[tuple[str, str], list[_Shown]] = {}
    raw: dict[tuple[str, str], list[_Shown]] = {}
    survivors = [s for shown in sample.per_query.values() for s in shown] + list(sample.survivors.values())
    for s in survivors:
        final.setdefault((fileio.join(out, f"{s.row['shard']}.tar"), "final"), []).append(s)
    for shown in sample.dropped.values():
        for s in shown:
            tar = raw_tars.get(s.row["raw_shard"])
            if tar is not None:
                raw.setdefault((tar, "raw"), []).append(s)
    return final, raw


# ---- HTML ----

def _page(title: str, body: str, up: str = "") -> str:
    return (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>\n<h1>{html.escape(title)}</h1>\n"
            + (f"<p><a href=\"{up}index.html\">&larr; gallery index</a></p>\n" if up else "")
            + body + "\n</body></html>\n")


def _figure(s: _Shown, up: str, note: str = "") -> str:
    row = s.row
    alt = html.escape((row.get("caption") or "")[:200])
    image = (f"<img src=\"{up}t/{html.escape(s.thumb)}\" alt=\"{alt}\">" if s.thumb
             else "<p class=\"meta\">(image not readable)</p>")
    where = (f"key {row['key']} in shard {row['shard']}" if row.get("key")
             else f"raw {row['raw_shard']}/{row['raw_key']}")
    extra = f"<br><span class=\"meta\">{html.escape(note)}</span>" if note else ""
    lang = row.get("lang") or ""
    # the caption's language (stage 2's lid): a browser picks that script's fonts (Japanese, not Chinese, glyphs
    # for shared kanji) though the page is in English
    caption = html.escape(row.get("caption") or "")
    if re.fullmatch(r"[a-z]{2,3}", lang):
        caption = f"<span lang=\"{lang}\">{caption}</span>"
    return (f"<figure>{image}<figcaption>{caption}<br><span class=\"meta\">"
            f"{html.escape(where)}</span>{extra}</figcaption></figure>")


def _query_table(rows: Sequence[tuple[str, int, int]], pages: Mapping[str, str]) -> str:
    lines = ["<table><tr><th>query</th><th>samples</th><th>before dedup and cap</th></tr>"]
    for query, entering, final in rows:
        lines.append(f"<tr><td><a href=\"{pages[query]}\">{html.escape(query)}</a></td><td class=\"n\">{final:,}"
                     f"</td><td class=\"n\">{entering:,}</td></tr>")
    return "\n".join(lines) + "</table>"


def render_index(sample: GallerySample, pages: Mapping[str, str], per_query: int) -> str:
    """index.html: the counts per final status, the queries with the most and the fewest samples."""
    total = sum(sample.statuses.values())
    kept = sample.statuses.get("success", 0)
    counts = "".join(f"<tr><td>{status}</td><td class=\"n\">{sample.statuses.get(status, 0):,}</td></tr>"
                     for status in FINAL_STATUSES)
    body = [f"<p>{kept:,} samples kept of {total:,} input rows.</p>",
            f"<table><tr><th>final status</th><th>rows</th></tr>{counts}</table>"]
    if not kept:
        body.insert(0, "<p class=\"empty\" id=\"empty\">This dataset holds no samples: "
                    + ("there were no input rows." if not total else "every input row was dropped (see the counts "
                       "below and <a href=\"dropped.html\">the dropped rows</a>).") + "</p>")
    else:
        body.append(f"<h2>Queries with the most samples</h2><p>Each page shows up to {per_query} samples "
                    "(a seeded sample, the same on every run).</p>" + _query_table(sample.most, pages))
        if sample.fewest:
            body.append("<h2>Queries with the fewest samples</h2>" + _query_table(sample.fewest, pages))
    body.append("<h2>Dropped rows</h2><ul>" + "".join(
        f"<li><a href=\"dropped.html#{reason}\">{html.escape(title)}</a>: "
        f"{len(sample.dropped.get(reason, [])):,} shown</li>" for reason, title in DROP_REASONS.items()) + "</ul>")
    return _page("Dataset gallery", "\n".join(body))


def render_query(query: str, shown: Sequence[_Shown], final: int) -> str:
    """q/{n}.html: a query's samples as a grid."""
    grid = "".join(_figure(s, "../") for s in shown)
    return _page(f"Query: {query}", f"<p>{final:,} samples; {len(shown)} shown.</p>\n<div class=\"grid\">{grid}</div>",
                 up="../")


def render_dropped(sample: GallerySample) -> str:
    """dropped.html: per drop reason, its rows (duplicates beside the sample they duplicate)."""
    parts = []
    for reason, title in DROP_REASONS.items():
        shown = sample.dropped.get(reason, [])
        items = []
        for s in shown:
            if reason == "duplicate":
                survivor = sample.survivors.get(s.row.get("duplicate_of") or "")
                kept = _figure(survivor, "", "kept") if survivor else "<p class=\"meta\">(kept sample not found)</p>"
                items.append(f"<div class=\"pair\">{_figure(s, '', 'dropped: ' + (s.row.get('error_message') or ''))}"
                             f"{kept}</div>")
            else:
                items.append(_figure(s, "", s.row.get("error_message") or ""))
        grid = "grid pairs" if reason == "duplicate" else "grid"
        listing = f"<div class=\"{grid}\">{''.join(items)}</div>" if items else "<p>None.</p>"
        parts.append(f"<h2 id=\"{reason}\">{html.escape(title)}</h2>\n{listing}")
    return _page("Dropped rows", "\n".join(parts), up="./")


def write_gallery(out: str, raw_tars: Mapping[str, str], per_query: int) -> dict[str, int]:
    """Write ``OUT/gallery/`` for the finalized folder ``out`` (its accounting, query counts and final shards
    written); ``raw_tars``: raw shard name -> its tar. Returns the files written -> bytes. Files of an earlier
    gallery that this one does not write are deleted."""
    table = fileio.read_parquet(fileio.join(out, QUERY_COUNTS_PARQUET))
    query_counts = [(r["query"], r["input"], r["final"]) for r in table.to_pylist()]
    sample = select(out, query_counts, per_query)
    written = {f"t/{name}": n for name, n in write_thumbnails(out, sample, raw_tars).items()}
    chosen = sample.most + sample.fewest
    pages = {query: f"q/{i:05d}.html" for i, (query, _, _) in enumerate(chosen)}
    documents = {"index.html": render_index(sample, pages, per_query), "dropped.html": render_dropped(sample)}
    for query, _, final in chosen:
        documents[pages[query]] = render_query(query, sample.per_query[query], final)
    for name, text in documents.items():
        data = text.encode()
        fileio.write_bytes(fileio.join(out, GALLERY_DIR, name), data)
        written[name] = len(data)
    remove_gallery(out, keep=written)
    return written


def remove_gallery(out: str, keep: Iterable[str] = ()) -> list[str]:
    """Delete the files of ``OUT/gallery/`` (the pages and thumbnails a gallery writes, and their temporaries)
    except ``keep`` (names below the gallery folder); the paths deleted."""
    folder, kept = fileio.join(out, GALLERY_DIR), set(keep)
    found = [p for pattern in ("*", "q/*", "t/*") for p in fileio.match(fileio.join(folder, pattern))]
    stale = [p for p in found if p[len(folder):].lstrip("/") not in kept and ("://" in p or not os.path.isdir(p))]
    fileio.delete(stale)
    if "://" not in folder:  # a local folder: no empty gallery/, q/ or t/ left behind (object stores have none)
        for sub in ("q", "t", ""):
            with contextlib.suppress(OSError):  # absent, or not empty
                os.rmdir(os.path.join(folder, sub) if sub else folder)
    return stale
