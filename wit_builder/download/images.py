"""Decode, check, orient, resize and re-encode one downloaded image: the native engine's image half.

``process_image(data, config)`` never raises for bad bytes; it returns an ImageResult whose status is
``success``, ``failed_to_decode`` (not an image, truncated, or over a safety limit) or ``filtered`` (too
small, too elongated: the user's quality filters). Resize modes follow img2dataset's (``no``, ``border``,
``keep_ratio``, ``keep_ratio_largest``, ``center_crop``); unlike img2dataset, EXIF orientation is applied
first, so rotated photos are stored upright, and width/height are those of the upright picture.

Memory is bounded by the pixels kept, not by the file's shape. Before any pixel is decoded, from the header
alone, an image is refused (``failed_to_decode``, with the numbers in the message) when

- its header declares more than ``max_image_pixels`` source pixels (decompression bombs), or
- the resized picture would have more than ``max_output_pixels`` pixels (``keep_ratio`` scales the short side
  to ``image_size``, so a 1 x 100,000 px PNG would become 256 x 25,600,000 px), or a side longer than the
  output format allows (JPEG 65,535, WebP 16,383), or
- the work it needs (``estimate_work_bytes``: decoded pixels, colour conversion, resize) exceeds
  ``memory_budget_bytes``.

Then every image holds its estimate in a process-wide budget of ``memory_budget_bytes`` while it decodes,
converts, resizes and encodes, so the decoding threads of one worker together stay within that budget
whatever the images are: a worker's peak RSS is about its baseline (Python, Pillow, the fetch buffers)
plus ``memory_budget_bytes``.
"""

from __future__ import annotations

import contextlib
import io
import math
import struct
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import imagehash
import numpy as np
from PIL import Image, ImageOps

from wit_builder.core import errors
from wit_builder.download.options import ENCODE_FORMATS, ImageConfig

# The formats web browsers display; nothing else is opened. Pillow's other loaders include EPS, which runs
# the Ghostscript binary on the bytes where one is installed: a hostile server must never reach it.
WEB_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "GIF", "WEBP", "AVIF", "BMP", "ICO", "TIFF")
# Longest side each output format can store (libjpeg: 16-bit dimensions; libwebp: 14-bit).
ENCODE_MAX_SIDE: dict[str, int] = {"jpg": 65_535, "webp": 16_383}


@dataclass(frozen=True)
class ImageResult:
    """One image's outcome: status, why, the re-encoded bytes and the sizes (px) after and before resizing."""

    status: str                      # success | failed_to_decode | filtered
    error_message: str | None = None
    encoded: bytes | None = None     # success: the stored image in ``encode_format``
    width: int | None = None         # of the stored image (border: the padded square)
    height: int | None = None
    original_width: int | None = None  # of the upright source (EXIF orientation applied)
    original_height: int | None = None
    phash: str | None = None         # 64-bit perceptual hash (imagehash.phash) as 16 hex digits




def process_image(data: bytes, config: ImageConfig) -> ImageResult:
    """Decode, check, orient, resize and encode ``data``; never raises for bad bytes (see the module doc)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return _process(data, config)
    except _Refused as e:
        return ImageResult(e.status, errors.stable_text(str(e)), original_width=e.size[0], original_height=e.size[1])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        return ImageResult("failed_to_decode", errors.stable_text(f"decompression bomb: {e}"))
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError, TypeError, IndexError, KeyError,
            ZeroDivisionError, OverflowError, struct.error) as e:
        # Pillow reports bad data through many exception types; all mean "not a usable image".
        return ImageResult("failed_to_decode", errors.stable_text(f"{type(e).__name__}: {e}"))


class _Refused(Exception):
    def __init__(self, status: str, message: str, size: tuple[int | None, int | None]) -> None:
        super().__init__(message)
        self.status = status
        self.size = size


def _process(data: bytes, cfg: ImageConfig) -> ImageResult:
    img: Image.Image = Image.open(io.BytesIO(data), formats=WEB_FORMATS)  # an ImageFile; transforms give Images
    header_w, header_h = img.size
    if header_w < 1 or header_h < 1:
        raise _Refused("failed_to_decode", f"header declares {header_w}x{header_h} pixels", (header_w, header_h))
    if header_w * header_h > cfg.max_image_pixels:
        # Refuse from the header: decoding would allocate width*height*channels bytes.
        raise _Refused("failed_to_decode",
                       f"decompression bomb: {header_w}x{header_h} exceeds {cfg.max_image_pixels} pixels",
                       (header_w, header_h))
    orientation = _exif_orientation(img)
    transposed = orientation in (5, 6, 7, 8)
    original_w, original_h = (header_h, header_w) if transposed else (header_w, header_h)
    _check_filters(original_w, original_h, cfg)
    out_w, out_h = output_size(original_w, original_h, cfg)
    _check_output(original_w, original_h, out_w, out_h, cfg)
    if cfg.jpeg_draft and img.format == "JPEG" and cfg.resize_mode != "no":
        scale = _scale(original_w, original_h, cfg)
        if scale < 0.5:
            img.draft(img.mode, (math.ceil(header_w * scale), math.ceil(header_h * scale)))
    kept = cfg.image_size**2 if cfg.resize_mode == "border" else out_w * out_h  # border pads to a square
    work = estimate_work_bytes(img.size[0] * img.size[1], img.mode, max(kept, out_w * out_h),
                               "transparency" in img.info, orientation != 1)
    if work > cfg.memory_budget_bytes:
        raise _Refused("failed_to_decode",
                       f"image too large to process: {original_w}x{original_h} {img.mode} needs about "
                       f"{work >> 20} MiB, over the memory budget of {cfg.memory_budget_bytes >> 20} MiB",
                       (original_w, original_h))
    with _budget(cfg.memory_budget_bytes).hold(work):
        img.seek(0)  # animated images: the first frame
        img.load()
        if orientation != 1:  # exif_transpose copies even an upright image: skip that copy
            img = ImageOps.exif_transpose(img)
        if img.mode.startswith("I;16") or img.mode in ("I", "F"):
            img = _to_gray8(img)
        # Gray: resize before the RGB copy, 1 byte a source pixel instead of 4.
        img = _resize(img, cfg).convert("RGB") if img.mode == "L" else _resize(_to_rgb(img), cfg)
        phash = str(imagehash.phash(img))  # on the resized picture: cheap, and the same for any copy's size
        if cfg.resize_mode == "border":
            img = _pad(img, cfg.image_size)
        out = io.BytesIO()
        img.save(out, ENCODE_FORMATS[cfg.encode_format], quality=cfg.encode_quality)
    return ImageResult("success", None, out.getvalue(), img.width, img.height, original_w, original_h, phash)


def output_size(width: int, height: int, cfg: ImageConfig) -> tuple[int, int]:
    """(width, height) of the resized picture before any border padding, for an upright source of
    ``width`` x ``height`` px; pure arithmetic on Python ints, so absurd headers cannot overflow it."""
    if cfg.resize_mode == "no":
        return width, height
    if cfg.resize_mode == "center_crop":
        return cfg.image_size, cfg.image_size
    scale = _scale(width, height, cfg)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _check_output(width: int, height: int, out_w: int, out_h: int, cfg: ImageConfig) -> None:
    """Refuse, before decoding, a picture whose resized form is too large to make or to encode."""
    if cfg.resize_mode != "no" and out_w * out_h > cfg.max_output_pixels:
        raise _Refused("failed_to_decode",
                       f"image too elongated to resize: {cfg.resize_mode} of {width}x{height} to "
                       f"{cfg.image_size} would make {out_w}x{out_h} pixels, over max_output_pixels "
                       f"{cfg.max_output_pixels}", (width, height))
    limit = ENCODE_MAX_SIDE[cfg.encode_format]
    if max(out_w, out_h) > limit:
        raise _Refused("failed_to_decode",
                       f"image too large to encode: {out_w}x{out_h} exceeds the {cfg.encode_format} limit of "
                       f"{limit} pixels a side", (width, height))


# Bytes per pixel Pillow allocates for a decoded image of each mode (multi-band modes use 4).
_MODE_BYTES = {"1": 1, "L": 1, "P": 1, "LA": 4, "PA": 4, "La": 4, "I;16": 2, "I;16B": 2, "I;16L": 2,
               "I;16N": 2}


def estimate_work_bytes(source_pixels: int, mode: str, output_pixels: int, transparency: bool = False,
                        reoriented: bool = False) -> int:
    """Upper estimate, in bytes, of the memory one image needs at its peak: the decoded source
    (``source_pixels`` in Pillow's ``mode``; twice when EXIF says to rotate it), its RGB conversion (alpha:
    the RGBA copy, the white background and the composite; 16-bit: a 32-bit integer temporary), and the
    resize (output and one intermediate pass of at most max(source, output) pixels, 4 bytes each)."""
    decoded = _MODE_BYTES.get(mode, 4) * (2 if reoriented else 1)
    if mode.startswith("I;16") or mode in ("I", "F"):
        convert = 4 + 1      # 32-bit temporary, 8-bit gray (resized before the RGB copy)
    elif transparency or mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        convert = 4 * 4      # RGBA, background, composite, RGB
    elif mode in ("RGB", "L"):
        convert = 0          # RGB as decoded; gray resized before the RGB copy
    else:
        convert = 4
    resize = 4 * (max(source_pixels, output_pixels) + output_pixels)
    return source_pixels * (decoded + convert) + resize + output_pixels * 4  # + encoder buffers


class MemoryBudget:
    """A counting semaphore in bytes: ``hold(n)`` waits until ``n`` more bytes fit under the capacity.

    One request larger than the capacity is let through alone (callers refuse those before asking)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self.peak = 0
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def hold(self, n: int) -> Iterator[None]:
        """Hold ``n`` bytes of the budget for the block, waiting while they would not fit."""
        with self._cond:
            while self.used and self.used + n > self.capacity:
                self._cond.wait()
            self.used += n
            self.peak = max(self.peak, self.used)
        try:
            yield
        finally:
            with self._cond:
                self.used -= n
                self._cond.notify_all()


_BUDGETS: dict[int, MemoryBudget] = {}
_BUDGETS_LOCK = threading.Lock()


def _budget(capacity: int) -> MemoryBudget:
    """The process-wide budget of this capacity, shared by every thread that processes images."""
    with _BUDGETS_LOCK:
        return _BUDGETS.setdefault(capacity, MemoryBudget(capacity))


def _exif_orientation(img: Image.Image) -> int:
    """The EXIF orientation (1..8; 1 when absent), read without decoding pixels: Pillow's PNG getexif()
    loads the whole image to look for an eXIf chunk after the pixel data, which would decode a bomb before
    its checks. A PNG's orientation is read only from an eXIf chunk before the pixel data."""
    try:
        if img.format == "PNG":
            raw = img.info.get("exif")
            if not raw:
                return 1
            exif = Image.Exif()
            exif.load(raw)
            return int(exif.get(0x0112, 1))
        return int(img.getexif().get(0x0112, 1))
    except (ValueError, TypeError, OSError, SyntaxError, struct.error):
        return 1


def _check_filters(width: int, height: int, cfg: ImageConfig) -> None:
    if min(width, height) < max(cfg.min_image_size, 1):
        raise _Refused("filtered", f"image too small: {width}x{height} < {cfg.min_image_size}", (width, height))
    if max(width, height) / min(width, height) > cfg.max_aspect_ratio:
        raise _Refused("filtered", f"aspect ratio too large: {width}x{height} > {cfg.max_aspect_ratio}",
                       (width, height))


def _to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB: 16/32-bit scaled (not clipped), alpha and palette transparency composited on white."""
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        img = _to_gray8(img)
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def _to_gray8(img: Image.Image) -> Image.Image:
    """16/32-bit gray -> 8-bit, scaled by the type's range (16-bit, or 32-bit above 255) with rounding, in
    place on one 32-bit temporary (4 bytes a pixel, not float64's 8)."""
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float32).copy()
        top = 65535.0 if arr.max(initial=0) > 255 else 255.0
        arr *= 255.0 / top
        np.clip(arr, 0, 255, out=arr)
        return Image.fromarray(np.rint(arr).astype(np.uint8), "L")
    arr = np.asarray(img).astype(np.int32)  # 65535 * 255 + 32767 fits
    if img.mode.startswith("I;16") or arr.max(initial=0) > 255:
        np.clip(arr, 0, 65535, out=arr)
        arr *= 255
        arr += 32767
        arr //= 65535
    else:
        np.clip(arr, 0, 255, out=arr)
    return Image.fromarray(arr.astype(np.uint8), "L")


def _scale(width: int, height: int, cfg: ImageConfig) -> float:
    if cfg.resize_mode in ("keep_ratio", "center_crop"):
        return cfg.image_size / min(width, height)
    if cfg.resize_mode in ("border", "keep_ratio_largest"):
        return cfg.image_size / max(width, height)
    return 1.0


def _resize(img: Image.Image, cfg: ImageConfig) -> Image.Image:
    if cfg.resize_mode == "no":
        return img
    w, h = img.size
    scale = _scale(w, h, cfg)
    # Downscale: antialiased bicubic after a box reduction (fast, close to img2dataset's INTER_AREA);
    # upscale: Lanczos, as img2dataset does.
    resample = Image.Resampling.BICUBIC if scale < 1 else Image.Resampling.LANCZOS
    gap = 2.0 if scale < 1 else None
    size = cfg.image_size
    if cfg.resize_mode == "center_crop":
        # Crop in source coordinates and resize once.
        side = min(w, h)
        left, top = (w - side) / 2, (h - side) / 2
        return img.resize((size, size), resample, box=(left, top, left + side, top + side), reducing_gap=gap)
    return img.resize((max(1, round(w * scale)), max(1, round(h * scale))), resample, reducing_gap=gap)


def _pad(img: Image.Image, size: int) -> Image.Image:
    """Centre on a white square, as img2dataset's border mode does."""
    canvas = Image.new("RGB", (size, size), (255, 255, 255))
    canvas.paste(img, ((size - img.width) // 2, (size - img.height) // 2))
    return canvas
