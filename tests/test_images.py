"""wit_builder.images on real photos (scikit-image) in the formats and shapes the web serves."""

from __future__ import annotations

import hashlib
import io

import imagehash
import numpy as np
import pytest
from PIL import Image

from tests import hostile_server as hs
from wit_builder.images import RESIZE_MODES, ImageConfig, process_image


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
    expected = np.asarray(hs.photo("chelsea").convert("RGB"), dtype=np.float64)
    assert np.abs(np.asarray(img, dtype=np.float64) - expected).mean() < 6  # upright, not sideways


def test_alpha_goes_on_white_and_16_bit_is_scaled_not_clipped():
    alpha = decoded(process_image(hs.png_with_alpha(), ImageConfig(resize_mode="no")))
    assert all(c >= 250 for c in alpha.getpixel((0, alpha.height // 2)))  # transparent column -> white
    gray16 = decoded(process_image(hs.png_16bit(), ImageConfig(resize_mode="no")))
    original = np.asarray(hs.photo("camera"), dtype=np.float64)
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
    big = hs.encode(hs.photo("astronaut").resize((2048, 2048)), "JPEG", quality=92)
    fast = decoded(process_image(big, ImageConfig(image_size=256)))
    exact = decoded(process_image(big, ImageConfig(image_size=256, jpeg_draft=False)))
    diff = np.abs(np.asarray(fast, dtype=np.float64) - np.asarray(exact, dtype=np.float64)).mean()
    assert fast.size == exact.size == (256, 256) and diff < 4


def test_phash_is_stable_under_resizing_and_differs_between_photos():
    a = process_image(hs.jpeg("astronaut"), ImageConfig()).phash
    resized = hs.encode(hs.photo("astronaut").resize((300, 300)), "JPEG", quality=70)
    b = process_image(resized, ImageConfig()).phash
    other = process_image(hs.jpeg("coffee"), ImageConfig()).phash
    distance = imagehash.hex_to_hash(a) - imagehash.hex_to_hash(b)
    assert distance <= 4 < imagehash.hex_to_hash(a) - imagehash.hex_to_hash(other)


def test_config_is_validated():
    with pytest.raises(ValueError, match="resize_mode"):
        ImageConfig(resize_mode="stretch")
    with pytest.raises(ValueError, match="encode_format"):
        ImageConfig(encode_format="gif")
    with pytest.raises(ValueError, match="encode_quality"):
        ImageConfig(encode_quality=0)
    assert set(RESIZE_MODES) == {"no", "border", "keep_ratio", "keep_ratio_largest", "center_crop"}


def test_same_input_same_output_bytes():
    data = hs.jpeg("coffee")
    first, second = process_image(data, ImageConfig()), process_image(data, ImageConfig())
    assert hashlib.sha256(first.encoded).digest() == hashlib.sha256(second.encoded).digest()
