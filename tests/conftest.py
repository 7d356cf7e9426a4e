"""Shared fixtures of every test package, each defined once: the real data the tests use (the enwiki sample from
gensim, WordNet from Debian), the photo loader (scikit-image and scikit-learn photos), the static file server on
127.0.0.1, a ``wit probe`` command for the launcher's contract, and realistic raw shards (stage 3's output, stage
4's input). Beam runner flags for the tests.

The raw shards (:func:`raw`), three of them under one folder:

- ``00000`` and ``00001`` as our download engine writes them (schemas.download.RAW_ROWS, sha256 of the
  original bytes, pHash, JPEG and WebP images resized to 256 px);
- ``00002`` as img2dataset writes it (its own columns, ``uid``/``queries`` as additional columns, no
  sha256 and no pHash, ``failed_to_resize``), plus a success whose image is missing from the tar.

Photos come from ``skimage.data``. The set holds an exact duplicate (same original bytes under another
URL), a resized and cropped near duplicate in another raw shard, the same pair twice, failures of every raw
status, and a query ("space") with more samples than the cap used by the tests. ``expected_statuses``
states the outcome of every raw row.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import sys
import tarfile
import threading
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from schemas.download import RAW_ROWS
from wit_builder import cli
from wit_builder.core.balance import sample_rank
from wit_builder.core.dedup import image_phash
from wit_builder.core.options import option
from wit_builder.core.uid import pair_uid

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

WORDNET_DIR = Path("/usr/share/wordnet")
BEAM_IN_PROCESS = ["--runner=FnApiRunner"]
BEAM_MULTI_PROCESS = ["--runner=FnApiRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=2"]


# ---- real data: the enwiki sample, WordNet ----

@pytest.fixture(scope="session")
def enwiki_sample() -> Path:
    """The real 206-page English Wikipedia dump sample shipped in the gensim wheel."""
    import gensim

    name = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
    path = Path(gensim.__file__).parent / "test" / "test_data" / name
    assert path.exists(), path
    return path


@pytest.fixture(scope="session")
def wordnet_dir() -> Path:
    """WordNet 3.0 dict files from Debian's wordnet-base (.ci/run installs it)."""
    if not (WORDNET_DIR / "data.noun").exists():
        pytest.skip("Debian's wordnet-base is not installed")
    return WORDNET_DIR


# ---- the photo loader: real photos from scikit-image and scikit-learn ----

def photo(name: str, mode: str = "RGB") -> Image.Image:
    """A real photo in PIL ``mode``: ``name`` is a ``skimage.data`` image (``astronaut``, ``coffee``, ``camera``,
    ...) or a scikit-learn sample image's file name (``china.jpg``, ``flower.jpg``). ``mode="L"`` keeps a gray
    photo (``camera``) gray."""
    if name.endswith(".jpg"):
        from sklearn.datasets import load_sample_image

        array = load_sample_image(name)
    else:
        import skimage.data

        array = getattr(skimage.data, name)()
    return Image.fromarray(array).convert(mode)


def encode(img: Image.Image, fmt: str, **params: Any) -> bytes:
    """``img`` saved in the PIL format ``fmt`` (``JPEG``, ``PNG``, ``WEBP``, ...) with ``params``, as bytes."""
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


# ---- the static file server ----

class _QuietFileHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:  # keep test output free of access logs
        pass


@pytest.fixture
def static_server() -> Iterator[Callable[[str | Path], str]]:
    """``static_server(root)`` serves the files under ``root`` on 127.0.0.1 and returns the base URL
    (``http://127.0.0.1:PORT``); every server it started stops when the test ends."""
    servers: list[ThreadingHTTPServer] = []

    def serve(root: str | Path) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietFileHandler, directory=str(root)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


# ---- a command of the wit launcher whose run() the test writes ----

@dataclass(frozen=True)
class ProbeOptions:
    """The options of ``wit probe``: an output folder, and whether to take over one we did not write."""

    out: str = option(".", help="output folder")
    overwrite: bool = option(False, help="write into a folder wit did not write")


@pytest.fixture
def probe_command(monkeypatch: pytest.MonkeyPatch) -> Callable[[Callable[[Any, list[str]], int]], Callable[..., int]]:
    """``probe_command(run)`` registers a ``wit probe`` command (a Beam command with :class:`ProbeOptions`) whose
    ``run(options, beam_argv)`` is ``run``, and returns ``wit probe ARGV...`` as a function of ``*argv`` -> the exit
    status of :func:`wit_builder.cli.main`."""
    module = types.ModuleType("probe_command")
    module.OPTIONS = ProbeOptions
    monkeypatch.setitem(sys.modules, "probe_command", module)
    monkeypatch.setitem(cli.COMMANDS, "probe", ("probe_command", "a test command", True))

    def use(run: Callable[[Any, list[str]], int]) -> Callable[..., int]:
        module.run = run
        return lambda *argv: cli.main(["probe", *argv])

    return use


def run_failing_pipeline(error: Exception, out: str, beam_argv: list[str]) -> int:
    """Run, through the launcher's ``run_pipeline``, a one-element Beam pipeline whose only step raises ``error``
    (as a DoFn of a stage would on a bad record); returns 0 if it did not fail."""
    import apache_beam as beam

    from wit_builder.beam import launcher

    def fail(_: object) -> None:
        raise error

    pipeline = beam.Pipeline(options=launcher.pipeline_options(beam_argv))
    _ = pipeline | beam.Create([7]) | beam.Map(fail)
    launcher.run_pipeline(pipeline, out)
    return 0


# ---- raw shards of real photos: stage 3's output, stage 4's input ----

STORED_SIDE = 256
SPACE_CAP = 2  # the --per-query-cap under which "space" is over the cap


def stored(img: Image.Image) -> Image.Image:
    """``img`` shrunk to fit :data:`STORED_SIDE` px, as the download engine stores an image."""
    small = img.copy()
    small.thumbnail((STORED_SIDE, STORED_SIDE))
    return small


@dataclass
class Sample:
    name: str                       # photo name in skimage.data, or "" for failures
    status: str                     # raw status as the engine wrote it
    queries: list[str] | None
    url_tag: str = ""               # makes the url (and so the uid) different for the same photo
    uid: str | None = None          # set to repeat another sample's uid
    ext: str = "jpg"
    transform: str = ""             # "near": crop 1% and shrink to half before storing; "small": a smaller original
    error: str | None = None
    in_tar: bool = True


@dataclass
class RawFixture:
    root: Path
    eval_dir: Path
    rows: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)  # (raw shard, row) -> raw row

    def uid(self, shard: str, row: int) -> str:
        return self.rows[(shard, row)]["uid"]


SHARDS: dict[str, list[Sample]] = {
    "00000": [
        Sample("astronaut", "success", ["astronaut", "space"]),
        Sample("coffee", "success", ["coffee", "cup"]),
        Sample("chelsea", "success", ["cat"]),
        Sample("astronaut", "success", ["astronaut"], url_tag="mirror"),          # exact duplicate of row 0
        Sample("", "failed_to_download", ["space"], error="HTTP 404"),
        Sample("", "failed_to_decode", ["cat"], error="cannot identify image file"),
        Sample("", "blocked", ["space"], error="robots.txt disallows /img"),
        Sample("", "filtered", ["cat"], error="image too small: 40x30"),
        Sample("rocket", "success", ["space"]),
        Sample("moon", "success", ["space"], ext="webp"),
    ],
    "00001": [
        Sample("coffee", "success", ["coffee"], url_tag="thumb", transform="near"),  # near dup of 00000/1
        Sample("chelsea", "success", ["cat"], uid="00000/2"),                       # the same pair again
        Sample("hubble_deep_field", "success", ["space"]),
        Sample("camera", "success", ["camera"]),
        Sample("coins", "success", ["coin"], ext="webp"),
        Sample("", "failed_to_download", ["coin"], error="timed out after 10s"),
        Sample("", "blocked", ["clock"], error="X-Robots-Tag: noai"),
        Sample("clock", "success", ["clock"]),
    ],
    "00002": [  # img2dataset's layout
        Sample("page", "success", ["text"]),
        Sample("", "failed_to_resize", ["cat"], error="image file is truncated"),
        Sample("", "failed_to_download", ["space"], error="<urlopen error [Errno 111] Connection refused>"),
        Sample("astronaut", "success", ["astronaut"], url_tag="small", transform="small"),  # near dup, smaller
        Sample("cell", "success", ["cell"]),
        Sample("gravel", "success", None),
        Sample("brick", "success", ["brick"], in_tar=False),                      # image lost from the tar
    ],
}
IMG2DATASET_SHARD = "00002"


def _images(sample: Sample) -> tuple[bytes, Image.Image, bytes]:
    """(original download bytes, original image, stored bytes) of a success."""
    img = photo(sample.name)
    if sample.transform == "small":
        img = img.resize((img.width // 2, img.height // 2), Image.Resampling.LANCZOS)
    original = encode(img, "PNG")
    keep = img
    if sample.transform == "near":
        dx, dy = img.width // 100, img.height // 100  # pHash distance 2 from the full photo
        keep = img.crop((dx, dy, img.width - dx, img.height - dy)).resize((img.width // 2, img.height // 2))
        original = encode(keep, "JPEG", quality=80)
    small = stored(keep)
    data = encode(small, "WEBP", quality=85) if sample.ext == "webp" else encode(small, "JPEG", quality=90)
    return original, keep, data


@pytest.fixture(scope="session")
def raw(tmp_path_factory: pytest.TempPathFactory) -> RawFixture:
    """Three raw shards (both engines' layouts) and an evaluation folder; read-only for the tests."""
    return write_raw_fixture(tmp_path_factory.mktemp("raw-shards"))


def write_raw_fixture(root: Path) -> RawFixture:
    """Write the three raw shards and an evaluation folder (holding the rocket photo) under ``root``."""
    raw = root / "raw"
    raw.mkdir(parents=True)
    fixture = RawFixture(raw, root / "eval")
    for shard_id, (shard, samples) in enumerate(SHARDS.items()):
        img2dataset = shard == IMG2DATASET_SHARD
        rows, members = [], []
        for i, sample in enumerate(samples):
            url = f"https://upload.example.org/{sample.name or 'missing'}{sample.url_tag}/{shard}-{i}.jpg"
            caption = f"{sample.name or 'unknown'} photo {sample.url_tag}".strip()
            if sample.uid:  # the same pair as an earlier row
                first = fixture.rows[tuple_key(sample.uid)]
                url, caption = first["url"], first["caption"]
            uid = pair_uid(url, caption)
            key = f"{shard_id:05d}{i:04d}"
            row: dict[str, Any] = {
                "key": key, "uid": uid, "url": url, "caption": caption, "queries": sample.queries,
                "status": sample.status, "error_message": sample.error, "http_status": None,
                "width": None, "height": None, "original_width": None, "original_height": None,
                "sha256": None, "phash": None, "bytes": None,
            }
            if sample.status == "success":
                original, img, data = _images(sample)
                small = Image.open(io.BytesIO(data))
                row.update(http_status=200, width=small.width, height=small.height, original_width=img.width,
                           original_height=img.height, sha256=hashlib.sha256(original).hexdigest(),
                           phash=image_phash(data), bytes=len(original))
                if sample.in_tar:
                    members += [(f"{key}.{sample.ext}", data), (f"{key}.json", json.dumps(row).encode()),
                                (f"{key}.txt", caption.encode())]
            elif sample.status == "failed_to_download" and "404" in (sample.error or ""):
                row["http_status"] = 404
            rows.append(row)
            fixture.rows[(shard, i)] = dict(row, _image=sample.name, _ext=sample.ext)
        _write_tar(raw / f"{shard}.tar", members)
        if img2dataset:
            table = pa.Table.from_pylist([
                {"url": r["url"], "caption": r["caption"], "uid": r["uid"], "queries": r["queries"],
                 "key": r["key"], "status": r["status"], "error_message": r["error_message"],
                 "width": r["width"], "height": r["height"], "original_width": r["original_width"],
                 "original_height": r["original_height"], "exif": None}
                for r in rows
            ], schema=pa.schema([("url", pa.string()), ("caption", pa.string()), ("uid", pa.string()),
                                 ("queries", pa.list_(pa.string())), ("key", pa.string()), ("status", pa.string()),
                                 ("error_message", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
                                 ("original_width", pa.int32()), ("original_height", pa.int32()),
                                 ("exif", pa.string())]))
        else:
            table = pa.Table.from_pylist(rows, schema=RAW_ROWS)
        pq.write_table(table, raw / f"{shard}.parquet")
        stats = {"shard": shard, "count": len(rows)}
        (raw / f"{shard}_stats.json").write_text(json.dumps(stats))
    fixture.eval_dir.mkdir()
    (fixture.eval_dir / "launch").mkdir()
    photo("rocket").resize((320, 214)).save(fixture.eval_dir / "launch" / "rocket.png")
    photo("retina").resize((200, 200)).save(fixture.eval_dir / "retina.jpg")
    return fixture


def tuple_key(ref: str) -> tuple[str, int]:
    shard, row = ref.split("/")
    return shard, int(row)


def _write_tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def expected_statuses(fixture: RawFixture, cap: int | None, decontaminate: bool) -> dict[tuple[str, int], str]:
    """The final status of every raw row, derived by hand from the fixture's story."""
    expected = {
        ("00000", 4): "failed_to_download", ("00000", 5): "failed_to_decode", ("00000", 6): "blocked",
        ("00000", 7): "filtered", ("00001", 5): "failed_to_download", ("00001", 6): "blocked",
        ("00002", 1): "failed_to_decode", ("00002", 2): "failed_to_download",
        ("00002", 6): "failed_to_decode",                       # image missing from the tar
        ("00000", 2): "success", ("00001", 1): "duplicate",     # the same pair twice: the first row stays
        ("00000", 1): "success", ("00001", 0): "duplicate",     # near duplicate, smaller original loses
        ("00002", 3): "duplicate",                              # astronaut at half size: near duplicate
        ("00001", 3): "success", ("00001", 4): "success", ("00001", 7): "success",
        ("00002", 0): "success", ("00002", 4): "success", ("00002", 5): "success",
    }
    # Exact duplicates (same original bytes, same size): the smaller uid survives.
    astronauts = sorted([("00000", 0), ("00000", 3)], key=lambda k: fixture.uid(*k))
    expected[astronauts[0]], expected[astronauts[1]] = "success", "duplicate"
    space_only = [("00000", 8), ("00000", 9), ("00001", 2)]  # rocket, moon, hubble
    if decontaminate:
        expected[("00000", 8)] = "filtered"
        space_only.remove(("00000", 8))
    for k in space_only:
        expected[k] = "success"
    if cap is not None:
        space = space_only + [astronauts[0]]
        keep = sorted(space, key=lambda k: sample_rank(fixture.uid(*k), 0))[:cap]
        for k in space_only:
            expected[k] = "success" if k in keep else "over_cap"
    assert len(expected) == len(fixture.rows)
    return expected


@pytest.fixture
def full_disk(monkeypatch):
    """``full_disk(on)``: from now on, every file Beam's FileSystems creates at a path for which ``on(path)`` holds
    fails its first write with ENOSPC, as a full disk does (its close still works)."""
    import errno

    from wit_builder.beam import fileio

    real_create = fileio.FileSystems.create

    class FullFile:
        def __init__(self, inner):
            self.inner = inner

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self):
            self.inner.close()

    def install(on):
        monkeypatch.setattr(fileio.FileSystems, "create",
                            lambda path, *a, **k: FullFile(real_create(path, *a, **k)) if on(path)
                            else real_create(path, *a, **k))
    return install
