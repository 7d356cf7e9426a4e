"""Decode, check, orient, resize and re-encode one downloaded image: the native engine's image half.

``process_image(data, config)`` never raises for bad bytes; it returns an ImageResult whose status is
``success``, ``failed_to_decode`` (not an image, truncated, a decompression bomb) or ``filtered`` (too small,
too elongated). Resize modes follow img2dataset's (``no``, ``border``, ``keep_ratio``,
``keep_ratio_largest``, ``center_crop``); unlike img2dataset, EXIF orientation is applied first, so rotated
photos are stored upright, and width/height are those of the upright picture.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass

import imagehash
import numpy as np
from PIL import Image, ImageOps

RESIZE_MODES: tuple[str, ...] = ("no", "border", "keep_ratio", "keep_ratio_largest", "center_crop")
ENCODE_FORMATS: dict[str, str] = {"jpg": "JPEG", "webp": "WEBP"}


@dataclass(frozen=True)
class ImageConfig:
    image_size: int = 256
    resize_mode: str = "keep_ratio"
    encode_format: str = "jpg"
    encode_quality: int = 95
    min_image_size: int = 0          # smallest side, in original pixels
    max_aspect_ratio: float = math.inf
    max_image_pixels: int = 89_478_485  # Pillow's own bomb threshold; refused from the header
    jpeg_draft: bool = True          # let libjpeg decode at 1/2, 1/4, 1/8 scale when that still covers the target

    def __post_init__(self) -> None:
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {self.resize_mode!r}")
        if self.encode_format not in ENCODE_FORMATS:
            raise ValueError(f"encode_format must be one of {tuple(ENCODE_FORMATS)}, got {self.encode_format!r}")
        if not 1 <= self.encode_quality <= 100:
            raise ValueError(f"encode_quality must be in 1..100, got {self.encode_quality}")
        if self.image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {self.image_size}")
        if self.min_image_size < 0 or self.max_aspect_ratio < 1 or self.max_image_pixels < 1:
            raise ValueError("min_image_size must be >= 0, max_aspect_ratio >= 1, max_image_pixels >= 1")


@dataclass(frozen=True)
class ImageResult:
    status: str                      # success | failed_to_decode | filtered
    error_message: str | None = None
    encoded: bytes | None = None
    width: int | None = None
    height: int | None = None
    original_width: int | None = None
    original_height: int | None = None
    phash: str | None = None


def process_image(data: bytes, config: ImageConfig) -> ImageResult:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return _process(data, config)
    except _Refused as e:
        return ImageResult(e.status, str(e), original_width=e.size[0], original_height=e.size[1])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        return ImageResult("failed_to_decode", f"decompression bomb: {e}")
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError, TypeError, IndexError, KeyError,
            ZeroDivisionError) as e:
        # Pillow reports bad data through many exception types; all mean "not a usable image".
        return ImageResult("failed_to_decode", f"{type(e).__name__}: {e}")


class _Refused(Exception):
    def __init__(self, status: str, message: str, size: tuple[int | None, int | None]) -> None:
        super().__init__(message)
        self.status = status
        self.size = size


def _process(data: bytes, cfg: ImageConfig) -> ImageResult:
    img = Image.open(io.BytesIO(data))
    header_w, header_h = img.size
    if header_w * header_h > cfg.max_image_pixels:
        # Refuse from the header: decoding would allocate width*height*channels bytes.
        raise _Refused("failed_to_decode",
                       f"decompression bomb: {header_w}x{header_h} exceeds {cfg.max_image_pixels} pixels",
                       (header_w, header_h))
    transposed = _exif_orientation(img) in (5, 6, 7, 8)
    original_w, original_h = (header_h, header_w) if transposed else (header_w, header_h)
    _check_filters(original_w, original_h, cfg)
    if cfg.jpeg_draft and img.format == "JPEG" and cfg.resize_mode != "no":
        scale = _scale(original_w, original_h, cfg)
        if scale < 0.5:
            img.draft(img.mode, (math.ceil(header_w * scale), math.ceil(header_h * scale)))
    img.seek(0)  # animated images: the first frame
    img.load()
    img = ImageOps.exif_transpose(img)
    img = _to_rgb(img)
    img = _resize(img, cfg)
    phash = str(imagehash.phash(img))  # on the resized picture: cheap, and the same for any copy's size
    if cfg.resize_mode == "border":
        img = _pad(img, cfg.image_size)
    out = io.BytesIO()
    img.save(out, ENCODE_FORMATS[cfg.encode_format], quality=cfg.encode_quality)
    return ImageResult("success", None, out.getvalue(), img.width, img.height, original_w, original_h, phash)


def _exif_orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(0x0112, 1))
    except (ValueError, TypeError, OSError, SyntaxError):
        return 1


def _check_filters(width: int, height: int, cfg: ImageConfig) -> None:
    if min(width, height) < max(cfg.min_image_size, 1):
        raise _Refused("filtered", f"image too small: {width}x{height} < {cfg.min_image_size}", (width, height))
    if max(width, height) / min(width, height) > cfg.max_aspect_ratio:
        raise _Refused("filtered", f"aspect ratio too large: {width}x{height} > {cfg.max_aspect_ratio}",
                       (width, height))


def _to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB: 16/32-bit scaled (not clipped), alpha and palette transparency composited on white."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        img = Image.fromarray(np.clip(arr * (255.0 / top), 0, 255).round().astype(np.uint8), "L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


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
