"""``OUT/gallery/`` (issue 24): written by ``wit finalize`` from the real-photo raw fixture, checked in a real
headless browser (Debian's chromium: a screenshot that is not blank, every link and image resolved by the
browser itself), its bounded sample, and the gallery of a dataset with no samples."""

from __future__ import annotations

import io
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from tests.conftest import BEAM_IN_PROCESS, SPACE_CAP
from wit_builder.cli import main
from wit_builder.finalize import gallery

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")


def finalize(raw_dir: Path, out: Path, *extra: str) -> int:
    return main(["finalize", "--raw", str(raw_dir), "--out", str(out), "--samples-per-shard", "4",
                 "--per-query-cap", str(SPACE_CAP), *extra, *BEAM_IN_PROCESS])


@pytest.fixture(scope="module")
def finalized(raw, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gallery") / "out"
    assert finalize(raw.root, out, "--decontaminate", str(raw.eval_dir), "--gallery-samples", "3") == 0
    return out


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.images: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        values = dict(attrs)
        if tag == "a" and values.get("href"):
            self.links.append(values["href"])
        if tag == "img":
            self.images.append(values["src"])

    def handle_data(self, data):
        self.text.append(data)


def parse(path: Path) -> _Links:
    parser = _Links()
    parser.feed(path.read_text())
    return parser


def chromium(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           "--allow-file-access-from-files", "--virtual-time-budget=5000", *args],
                          capture_output=True, text=True, timeout=120, check=False)


# The browser's own verdict: how many images decoded (naturalWidth > 0) and how many did not, written into the
# DOM that --dump-dom prints. Added to a copy of each page; the gallery itself carries no script.
PROBE = ("<script>window.addEventListener('load',()=>{const i=[...document.images];document.body.insertAdjacentHTML("
         "'beforeend','<p id=probe>loaded='+i.filter(x=>x.complete&&x.naturalWidth>0).length+' broken='+"
         "i.filter(x=>!(x.complete&&x.naturalWidth>0)).length+'</p>')});</script>")


def test_the_gallery_shows_kept_samples_per_query_and_dropped_rows_by_reason(finalized):
    folder = finalized / "gallery"
    index = parse(folder / "index.html")
    text = " ".join(index.text)
    assert "samples kept of" in text
    pages = [link for link in index.links if link.startswith("q/")]
    assert pages, index.links
    # every link and every image resolves to a file of the gallery (relative links only: no network)
    for page in [folder / "index.html", folder / "dropped.html", *(folder / p for p in pages)]:
        parsed = parse(page)
        for target in parsed.links + parsed.images:
            assert "://" not in target, target
            assert (page.parent / target.split("#")[0]).is_file(), (page, target)
    # the "space" query (over the cap) shows at most --gallery-samples samples, each a real thumbnail
    space = next(p for p in pages if "space" in (folder / p).read_text().split("<h1>")[1].split("</h1>")[0])
    images = parse(folder / space).images
    assert 1 <= len(images) <= 3
    for src in images:
        thumb = Image.open(folder / "q" / src)
        assert thumb.format == "JPEG" and max(thumb.size) <= gallery.THUMB_PX
    # dropped rows: duplicates beside their survivor, decontaminated (naming the evaluation image), over the cap
    dropped = (folder / "dropped.html").read_text()
    for reason in gallery.DROP_REASONS:
        section = dropped.split(f'id="{reason}"')[1].split("<h2")[0]
        assert "<img" in section, reason
    duplicates = dropped.split('id="duplicate"')[1].split("<h2")[0]
    assert duplicates.count('class="pair"') >= 1 and "kept" in duplicates
    assert "launch/rocket.png" in dropped.split('id="decontaminated"')[1].split("<h2")[0]


@needs_chromium
def test_the_gallery_renders_in_a_headless_browser(finalized, tmp_path):
    folder = tmp_path / "gallery"
    shutil.copytree(finalized / "gallery", folder)
    shot = tmp_path / "index.png"
    result = chromium(f"--screenshot={shot}", "--window-size=1200,900", (folder / "index.html").as_uri())
    assert shot.is_file(), result.stderr[-2000:]
    image = Image.open(shot).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 20) or []
    assert image.size == (1200, 900) and len(colours) > 20  # text, table rules, not a blank page
    for page in [folder / "index.html", folder / "dropped.html", *sorted((folder / "q").glob("*.html"))]:
        probed = page.with_name(f"probe-{page.name}")
        probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
        dom = chromium("--dump-dom", probed.as_uri()).stdout
        probed.unlink()
        assert 'id="probe">loaded=' in dom, (page, dom[-500:])
        loaded, broken = (int(part.split("=")[1]) for part in dom.split('id="probe">')[1].split("<")[0].split())
        expected = len(parse(page).images)
        assert (loaded, broken) == (expected, 0), page
    # a screenshot of a query page shows its thumbnails: more colours than a page of text
    query_page = sorted((folder / "q").glob("*.html"))[0]
    shot = tmp_path / "query.png"
    chromium(f"--screenshot={shot}", "--window-size=1200,900", query_page.as_uri())
    assert len(Image.open(shot).convert("RGB").getcolors(maxcolors=1 << 20) or []) > 1000


def test_a_dataset_without_samples_says_so(raw, tmp_path):
    # every success of the fixture's raw shards turned into a failure: nothing to keep
    raw_dir = tmp_path / "raw"
    shutil.copytree(raw.root, raw_dir)
    for path in raw_dir.glob("*.parquet"):
        table = pq.read_table(path)
        statuses = ["failed_to_download"] * table.num_rows
        table = table.set_column(table.schema.get_field_index("status"), "status",
                                 __import__("pyarrow").array(statuses))
        pq.write_table(table, path)
    out = tmp_path / "out"
    assert finalize(raw_dir, out) == 3  # finished with an empty output (README's exit statuses)
    index = (out / "gallery" / "index.html").read_text()
    assert 'id="empty"' in index and "This dataset holds no samples" in index
    assert not list((out / "gallery" / "q").glob("*")) if (out / "gallery" / "q").exists() else True


def test_a_rerun_replaces_the_earlier_gallery_and_zero_samples_removes_it(finalized, raw, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(finalized, out)
    (out / "gallery" / "t" / "final-stale.jpg").write_bytes(b"an earlier run's thumbnail")
    (out / "gallery" / "q" / "99999.html").write_text("an earlier run's page")
    (out / "notes.txt").write_text("not ours")
    assert finalize(raw.root, out, "--decontaminate", str(raw.eval_dir), "--gallery-samples", "1") == 0
    assert not (out / "gallery" / "t" / "final-stale.jpg").exists()
    assert not (out / "gallery" / "q" / "99999.html").exists()
    for page in (out / "gallery" / "q").glob("*.html"):
        assert len(parse(page).images) == 1
    assert finalize(raw.root, out, "--decontaminate", str(raw.eval_dir), "--gallery-samples", "0") == 0
    assert not (out / "gallery").exists()  # no empty gallery/q/ and gallery/t/ folders left either
    assert (out / "notes.txt").read_text() == "not ours"


def test_chosen_queries_and_the_bounded_sample():
    counts = [("a", 9, 5), ("b", 3, 1), ("c", 4, 0), ("d", 8, 8), ("e", 2, 2)]
    most, fewest = gallery.chosen_queries(counts, shown=2)
    assert [q for q, _, _ in most] == ["d", "a"] and [q for q, _, _ in fewest] == ["b", "e"]
    smallest = gallery._Smallest(2)
    for rank in (5, 1, 9, 3):
        smallest.add(rank, {"rank": rank})
    assert [item["rank"] for item in smallest.items()] == [1, 3]
    assert gallery.thumbnail(b"not an image") is None
    buf = io.BytesIO()
    Image.new("RGB", (640, 320), "red").save(buf, "PNG")
    assert Image.open(io.BytesIO(gallery.thumbnail(buf.getvalue()))).size == (160, 80)


def test_a_caption_carries_its_language_for_the_browser():
    # Japanese captions marked lang="ja" (Japanese glyphs for shared kanji); no or odd language: no attribute
    row = {"key": "0000000001", "shard": "00000", "caption": "富士山の写真 <b>"}
    html_ja = gallery._figure(gallery._Shown({**row, "lang": "ja"}, "final-u1.jpg"), "../")
    assert '<span lang="ja">富士山の写真 &lt;b&gt;</span>' in html_ja
    for lang in (None, "", 'ja" onload="x'):
        assert "lang=" not in gallery._figure(gallery._Shown({**row, "lang": lang}, "final-u1.jpg"), "../")
