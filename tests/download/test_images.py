"""wit_builder.download.images on real photos (scikit-image) in the formats and shapes the web serves."""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import imagehash
import numpy as np
import pytest
from PIL import Image

from tests import hostile_server as hs
from tests.conftest import encode, photo
from wit_builder.download.images import MemoryBudget, estimate_work_bytes, process_image
from wit_builder.download.options import RESIZE_MODES, ImageConfig


def decoded(result) -> Image.Image:
    assert result.status == "success", result.error_message
    img = Image.open(io.BytesIO(result.encoded))
    img.load()
    return img


@pytest.mark.parametrize("name,data", [
    ("jpeg", hs.jpeg()), ("png_alpha", hs.png_with_alpha()), ("webp", hs.webp()), ("gif", hs.animated_gif()),
    ("cmyk", hs.cmyk_jpeg()), ("png16", hs.png_16bit()),
])
def test_every_served_format_becomes_an_rgb_jpeg(name, data):
    result = process_image(data, ImageConfig(image_size=128, resize_mode="keep_ratio"))
    img = decoded(result)
    assert img.format == "JPEG" and img.mode == "RGB"
    assert min(img.size) == 128 and (result.width, result.height) == img.size
    assert len(result.phash) == 16 and int(result.phash, 16) >= 0


def test_exif_orientation_is_applied():
    data, upright_size = hs.exif_rotated_jpeg()
    result = process_image(data, ImageConfig(resize_mode="no"))
    img = decoded(result)
    assert img.size == upright_size == (result.original_width, result.original_height)
    expected = np.asarray(photo("chelsea"), dtype=np.float64)
    assert np.abs(np.asarray(img, dtype=np.float64) - expected).mean() < 6  # upright, not sideways


def test_alpha_goes_on_white_and_16_bit_is_scaled_not_clipped():
    alpha = decoded(process_image(hs.png_with_alpha(), ImageConfig(resize_mode="no")))
    assert all(c >= 250 for c in alpha.getpixel((0, alpha.height // 2)))  # transparent column -> white
    gray16 = decoded(process_image(hs.png_16bit(), ImageConfig(resize_mode="no")))
    original = np.asarray(photo("camera", mode="L"), dtype=np.float64)
    assert np.abs(np.asarray(gray16.convert("L"), dtype=np.float64) - original).mean() < 3


def test_animated_gif_takes_the_first_frame():
    img = decoded(process_image(hs.animated_gif(), ImageConfig(resize_mode="no")))
    r, g, b = img.getpixel((img.width // 2, img.height // 2))
    assert r > 200 and g < 40 and b < 40  # the red first frame, not the astronaut


@pytest.mark.parametrize("mode,expected", [
    ("no", (600, 400)), ("keep_ratio", (96, 64)), ("center_crop", (64, 64)),
    ("keep_ratio_largest", (64, 43)), ("border", (64, 64)),
])
def test_resize_modes_match_img2dataset_geometry(mode, expected):
    result = process_image(hs.jpeg("coffee"), ImageConfig(image_size=64, resize_mode=mode))
    assert decoded(result).size == expected
    assert (result.original_width, result.original_height) == (600, 400)


def test_border_pads_with_white():
    img = decoded(process_image(hs.jpeg("coffee"), ImageConfig(image_size=64, resize_mode="border")))
    assert all(c >= 245 for c in img.getpixel((32, 0)))


def test_webp_encoding_and_quality():
    cfg = ImageConfig(image_size=128, encode_format="webp", encode_quality=50)
    small = process_image(hs.jpeg(), cfg)
    assert decoded(small).format == "WEBP"
    large = process_image(hs.jpeg(), ImageConfig(image_size=128, encode_format="webp", encode_quality=95))
    assert len(large.encoded) > len(small.encoded)


@pytest.mark.parametrize("data,needle", [
    (hs.jpeg()[:6000], "truncated"), (b"<html><body>not an image</body></html>", "cannot identify"),
    (hs.png_bomb(), "decompression bomb"), (b"", "cannot identify"),
])
def test_bad_bytes_fail_to_decode_with_a_reason(data, needle):
    result = process_image(data, ImageConfig())
    assert result.status == "failed_to_decode" and result.encoded is None
    assert needle in result.error_message


def test_bomb_below_pillows_limit_is_refused_from_the_header():
    result = process_image(hs.png_bomb(5000, 5000), ImageConfig(max_image_pixels=10_000_000))
    assert result.status == "failed_to_decode" and "5000x5000" in result.error_message


def test_min_size_and_aspect_filters():
    small = process_image(hs.jpeg("coffee"), ImageConfig(min_image_size=500))
    assert small.status == "filtered" and "too small" in small.error_message
    assert (small.original_width, small.original_height) == (600, 400)
    wide = process_image(hs.jpeg("coffee"), ImageConfig(max_aspect_ratio=1.2))
    assert wide.status == "filtered" and "aspect" in wide.error_message
    assert process_image(hs.jpeg("coffee"), ImageConfig(min_image_size=400, max_aspect_ratio=1.5)).status == "success"


def test_jpeg_draft_keeps_the_picture():
    big = encode(photo("astronaut").resize((2048, 2048)), "JPEG", quality=92)
    fast = decoded(process_image(big, ImageConfig(image_size=256)))
    exact = decoded(process_image(big, ImageConfig(image_size=256, jpeg_draft=False)))
    diff = np.abs(np.asarray(fast, dtype=np.float64) - np.asarray(exact, dtype=np.float64)).mean()
    assert fast.size == exact.size == (256, 256) and diff < 4


def test_phash_is_stable_under_resizing_and_differs_between_photos():
    a = process_image(hs.jpeg("astronaut"), ImageConfig()).phash
    resized = encode(photo("astronaut").resize((300, 300)), "JPEG", quality=70)
    b = process_image(resized, ImageConfig()).phash
    other = process_image(hs.jpeg("coffee"), ImageConfig()).phash
    distance = imagehash.hex_to_hash(a) - imagehash.hex_to_hash(b)
    assert distance <= 4 < imagehash.hex_to_hash(a) - imagehash.hex_to_hash(other)


def test_same_input_same_output_bytes():
    data = hs.jpeg("coffee")
    first, second = process_image(data, ImageConfig()), process_image(data, ImageConfig())
    assert hashlib.sha256(first.encoded).digest() == hashlib.sha256(second.encoded).digest()


# ---- memory bound: the work is bounded by the pixels kept, checked from the header before decoding ----

@functools.cache
def bomb(name: str) -> bytes:
    """Small files with absurd shapes whose pixel data is complete (they really decode)."""
    return {
        "tall": lambda: hs.png_complete(1, 100_000),            # the 476-byte example (here ~270 B)
        "wide": lambda: hs.png_complete(100_000, 1),
        "overflow": lambda: hs.png_complete(2, 40_000_000),     # 80 Mpx, under Pillow's bomb limit
        "huge_both": lambda: hs.png_bomb(),                     # 10 Gpx header
        "png16_tall": lambda: hs.png_complete(1, 100_000, bit_depth=16),
        "rgba_tall": lambda: hs.png_complete(1, 100_000, "RGBA"),
        "gif_tall": lambda: hs.animated_tall("GIF"),
        "apng_tall": lambda: hs.animated_tall("PNG"),
        "cmyk_tall": lambda: hs.cmyk_jpeg_tall(),
        "cut": lambda: (lambda d: d[: len(d) // 2])(encode(photo("astronaut"), "PNG")),  # cut in IDAT
    }[name]()


# (case, mode) -> expected status and a word of the reason; the cheap cases run in this process.
ELONGATED, ENCODE_LIMIT, BOMB = "too elongated", "too large to encode", "decompression bomb"
SHAPE_CASES = {
    "tall": {"no": ENCODE_LIMIT, "keep_ratio": ELONGATED, "border": (256, 256), "keep_ratio_largest": (1, 256),
             "center_crop": (256, 256)},
    "wide": {"no": ENCODE_LIMIT, "keep_ratio": ELONGATED, "border": (256, 256), "keep_ratio_largest": (256, 1),
             "center_crop": (256, 256)},
    "huge_both": dict.fromkeys(RESIZE_MODES, BOMB),
    "png16_tall": {"no": ENCODE_LIMIT, "keep_ratio": ELONGATED, "center_crop": (256, 256)},
    "rgba_tall": {"no": ENCODE_LIMIT, "keep_ratio": ELONGATED, "keep_ratio_largest": (1, 256)},
    "gif_tall": {"no": (1, 60_000), "keep_ratio": ELONGATED, "border": (256, 256)},
    "apng_tall": {"no": (1, 60_000), "keep_ratio": ELONGATED, "center_crop": (256, 256)},
    "cmyk_tall": {"no": (1, 60_000), "keep_ratio": ELONGATED, "keep_ratio_largest": (1, 256)},
    "cut": dict.fromkeys(RESIZE_MODES, "truncated"),
}


@pytest.mark.parametrize("case,mode,expected", [
    (case, mode, expected) for case, modes in SHAPE_CASES.items() for mode, expected in modes.items()])
def test_absurd_shapes_end_with_a_status_for_every_resize_mode(case, mode, expected):
    result = process_image(bomb(case), ImageConfig(resize_mode=mode))
    if isinstance(expected, tuple):
        assert result.status == "success", result.error_message
        assert decoded(result).size == (result.width, result.height) == expected
    else:
        assert result.status == "failed_to_decode" and result.encoded is None
        assert expected in result.error_message


def test_integer_overflow_shapes_fail_to_decode_with_a_reason_before_decoding():
    """2 x 40,000,000 px: keep_ratio would make 256 x 5,120,000,000 px; refused from the header, in no time."""
    data = bomb("overflow")
    for mode, needle in (("keep_ratio", "256x5120000000"), ("no", "jpg limit of 65535")):
        result = process_image(data, ImageConfig(resize_mode=mode))
        assert result.status == "failed_to_decode" and needle in result.error_message
        assert (result.original_width, result.original_height) == (2, 40_000_000)
    webp = process_image(bomb("gif_tall"), ImageConfig(resize_mode="no", encode_format="webp"))
    assert webp.status == "failed_to_decode" and "webp limit of 16383" in webp.error_message


def test_output_budget_and_memory_budget_are_settings():
    small = ImageConfig(image_size=64, max_output_pixels=64 * 64 * 10)  # keep_ratio: aspect up to 10
    assert process_image(hs.jpeg("coffee"), small).status == "success"  # 600x400 -> 96x64
    tall = process_image(hs.png_complete(10, 1000), small)  # -> 64x6400 = 409,600 px > 40,960
    assert tall.status == "failed_to_decode" and "max_output_pixels 40960" in tall.error_message
    tight = process_image(hs.png_complete(4000, 4000), ImageConfig(memory_budget_mib=32))
    assert tight.status == "failed_to_decode" and "memory budget of 32 MiB" in tight.error_message
    with pytest.raises(ValueError, match="max_output_pixels"):
        ImageConfig(image_size=256, max_output_pixels=1000)
    with pytest.raises(ValueError, match="memory_budget_mib"):
        ImageConfig(memory_budget_mib=15)


def test_estimate_covers_the_decoded_image_and_the_resize():
    assert estimate_work_bytes(1000, "RGB", 10) >= 4 * 1000
    assert estimate_work_bytes(1000, "RGBA", 10) > estimate_work_bytes(1000, "RGB", 10)
    assert estimate_work_bytes(1000, "L", 10, reoriented=True) > estimate_work_bytes(1000, "L", 10)
    assert estimate_work_bytes(10, "L", 100_000) >= 8 * 100_000  # upscaling pays for its output


def test_memory_budget_never_lets_holders_exceed_its_capacity():
    budget = MemoryBudget(100)
    peak_seen = []

    def work(n: int) -> None:
        with budget.hold(n):
            peak_seen.append(budget.used)
            time.sleep(0.01)

    threads = [threading.Thread(target=work, args=(n,)) for n in (60, 50, 40, 30, 70, 20) * 3]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert max(peak_seen) <= 100 == budget.capacity and budget.peak <= 100 and budget.used == 0


_RSS_PROBE = r"""
import json, resource, sys, threading
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
from tests import hostile_server as hs
from tests.download.test_images import bomb
from wit_builder.download.images import MemoryBudget, _budget, process_image
from wit_builder.download.options import RESIZE_MODES, ImageConfig
cases = ["tall", "wide", "overflow", "huge_both", "png16_tall", "rgba_tall", "gif_tall", "apng_tall", "cmyk_tall"]
data = {c: bomb(c) for c in cases}
threads_data = hs.png_complete(1000, 20_000)  # 20 Mpx gray: about 100 MB of work each
kib = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
baseline = kib()
budget = int(sys.argv[2])
statuses = {}
for c in cases:
    for mode in RESIZE_MODES:
        r = process_image(data[c], ImageConfig(resize_mode=mode, memory_budget_mib=budget >> 20))
        statuses[f"{c}/{mode}"] = [r.status, r.error_message]
after_bombs = kib()
results = []
def work():
    results.append(process_image(threads_data, ImageConfig(resize_mode="center_crop", memory_budget_mib=budget >> 20)))
threads = [threading.Thread(target=work) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps({"baseline_kib": baseline, "after_bombs_kib": after_bombs, "peak_kib": kib(),
                  "statuses": statuses, "threads": [r.status for r in results],
                  "budget_peak": _budget(budget).peak}))
"""


def test_peak_rss_on_png_bombs_stays_within_the_memory_budget_under_rlimit():
    """Every bomb in every resize mode, then four threads of 20 Mpx images at once, in a child process
    whose address space is capped at 1.5 GiB: statuses say why, and peak RSS stays within baseline +
    the memory budget (128 MiB here) + slack, because the budget holds the threads one at a time."""
    budget = 128 << 20
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run([sys.executable, "-c", _RSS_PROBE, str(3 << 29), str(budget)], capture_output=True,
                          text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    statuses = report["statuses"]
    assert statuses["tall/keep_ratio"][0] == "failed_to_decode" and ELONGATED in statuses["tall/keep_ratio"][1]
    assert statuses["overflow/keep_ratio"][0] == "failed_to_decode"
    for mode in ("border", "keep_ratio_largest", "center_crop"):  # 80 Mpx: over a 128 MiB budget
        status, message = statuses[f"overflow/{mode}"]
        assert status == "failed_to_decode" and "memory budget of 128 MiB" in message
    assert all(statuses[f"huge_both/{m}"][0] == "failed_to_decode" for m in RESIZE_MODES)
    assert statuses["tall/center_crop"][0] == statuses["apng_tall/center_crop"][0] == "success"
    assert all(s[0] in ("success", "failed_to_decode") for s in statuses.values())
    assert not any("MemoryError" in (s[1] or "") for s in statuses.values())
    assert report["threads"] == ["success"] * 4 and report["budget_peak"] <= budget
    slack = 64 << 10  # KiB
    assert report["after_bombs_kib"] - report["baseline_kib"] < slack, report
    assert report["peak_kib"] - report["baseline_kib"] < (budget >> 10) + slack, report


def test_formats_that_run_external_programs_are_never_opened(monkeypatch):
    """An EPS body from a hostile server must not reach Ghostscript (Pillow's EPS loader runs the `gs` binary
    where one is installed): only web image formats are decoded, anything else fails with a reason."""
    from PIL import EpsImagePlugin

    calls = []
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *a, **k: calls.append(a) or pytest.fail("gs ran"))
    eps = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 300 300\n"
           b"newpath 0 0 moveto 300 300 lineto stroke\nshowpage\n%%EOF\n")
    result = process_image(eps, ImageConfig())
    assert result.status == "failed_to_decode" and not calls, result
    assert "cannot identify image file" in result.error_message
    # the formats the web serves still decode
    for fmt in ("BMP", "TIFF", "ICO"):
        data = encode(photo("coffee").resize((200, 150)), fmt)
        assert process_image(data, ImageConfig()).status == "success", fmt


@pytest.mark.parametrize("data", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40])
def test_error_messages_hold_no_memory_address(data):
    """Pillow says "cannot identify image file <_io.BytesIO object at 0x7f...>": stored in the raw parquet's
    error_message, it made two runs' outputs differ. The message is the same on every call."""
    first, second = process_image(data, ImageConfig()), process_image(bytes(data), ImageConfig())
    assert first.status == "failed_to_decode" and first.error_message == second.error_message
    assert first.error_message is not None and " at 0x" not in first.error_message
