"""A hostile HTTP server on 127.0.0.1 for the download tests, and the images it serves (real photos in the
formats the web serves, image bombs). The well-behaved static file server is ``tests.conftest.static_server``.

``HostileServer`` is a ThreadingHTTPServer whose paths are scripted per test: fixed bodies, status sequences
(500 then 200, 429 with Retry-After then 200), slow drips, endless bodies, redirects. It logs every request
(path, time, headers) so tests can check what the client did, not only what it returned.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import struct
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image

from tests.conftest import encode, photo

Handler = Callable[[BaseHTTPRequestHandler], None]


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/octet-stream"


@dataclass
class LoggedRequest:
    path: str
    time: float
    headers: dict[str, str]


class HostileServer:
    def __init__(self) -> None:
        self.routes: dict[str, Handler] = {}
        self.log: list[LoggedRequest] = []
        self._lock = threading.Lock()
        server = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def handle(self) -> None:
                # The client hangs up on endless and slow bodies, as it should.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    super().handle()

            def do_GET(self) -> None:
                with server._lock:
                    server.log.append(LoggedRequest(self.path, time.monotonic(), dict(self.headers)))
                handler = server.routes.get(self.path)
                try:
                    if handler is None:
                        send(self, Response(404, b"not found", content_type="text/plain"))
                    else:
                        handler(self)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> HostileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def requests_to(self, path: str) -> list[LoggedRequest]:
        with self._lock:
            return [r for r in self.log if r.path == path]

    # ---- scripted routes ----

    def serve(self, path: str, response: Response) -> str:
        self.routes[path] = lambda h: send(h, response)
        return self.url(path)

    def image(self, path: str, data: bytes, content_type: str = "image/jpeg", **headers: str) -> str:
        return self.serve(path, Response(200, data, headers, content_type))

    def sequence(self, path: str, responses: list[Response]) -> str:
        """Answer the n-th request with responses[n] (the last one repeats)."""
        count = [0]

        def handler(h: BaseHTTPRequestHandler) -> None:
            with self._lock:
                n = count[0]
                count[0] += 1
            send(h, responses[min(n, len(responses) - 1)])

        self.routes[path] = handler
        return self.url(path)

    def redirect(self, path: str, location: str, status: int = 302) -> str:
        return self.serve(path, Response(status, b"", {"Location": location}, "text/plain"))

    def slow_drip(self, path: str, total: int = 100_000, interval_s: float = 0.05) -> str:
        """A body that arrives one byte per ``interval_s``: never finishes within a short deadline."""

        def handler(h: BaseHTTPRequestHandler) -> None:
            h.send_response(200)
            h.send_header("Content-Type", "image/jpeg")
            h.send_header("Content-Length", str(total))
            h.send_header("Connection", "close")
            h.end_headers()
            for _ in range(total):
                h.wfile.write(b"\xff")
                h.wfile.flush()
                time.sleep(interval_s)

        self.routes[path] = handler
        return self.url(path)

    def short_body(self, path: str, declared: int = 50_000, sent: int = 1000) -> str:
        """Declares ``declared`` bytes, sends ``sent``, hangs up."""

        def handler(h: BaseHTTPRequestHandler) -> None:
            h.send_response(200)
            h.send_header("Content-Type", "image/jpeg")
            h.send_header("Content-Length", str(declared))
            h.end_headers()
            h.wfile.write(bytes(sent))
            h.close_connection = True

        self.routes[path] = handler
        return self.url(path)

    def stall(self, path: str, seconds: float = 3.0) -> str:
        """Headers, then silence for ``seconds``: a read timeout."""

        def handler(h: BaseHTTPRequestHandler) -> None:
            h.send_response(200)
            h.send_header("Content-Type", "image/jpeg")
            h.send_header("Content-Length", "1000")
            h.end_headers()
            h.wfile.flush()
            time.sleep(seconds)
            h.close_connection = True

        self.routes[path] = handler
        return self.url(path)

    def endless(self, path: str) -> str:
        """An image/jpeg body without a length that never ends (until the client hangs up)."""

        def handler(h: BaseHTTPRequestHandler) -> None:
            h.send_response(200)
            h.send_header("Content-Type", "image/jpeg")
            h.send_header("Connection", "close")
            h.end_headers()
            h.close_connection = True
            block = b"\xff\xd8" + bytes(65534)
            while True:
                h.wfile.write(block)

        self.routes[path] = handler
        return self.url(path)

    # ---- network-side hostile cases (issue 13): trickles, odd redirects, request counting ----

    def trickle(self, path: str, part: str = "headers", interval_s: float = 1.0, total_s: float = 60.0) -> str:
        """A response trickled one byte per ``interval_s`` for up to ``total_s``: ``part`` is "status" (the
        status line itself), "headers" (a status line, then endless header bytes) or "body"."""

        def handler(h: BaseHTTPRequestHandler) -> None:
            h.close_connection = True
            if part == "status":
                stream = b"HTTP/1.1 200 OK\r\n"
                stream = stream[:-2] + b" " * 10_000  # a status line that never ends
            elif part == "headers":
                stream = b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nX-Slow: " + b"a" * 10_000
            else:
                stream = b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 10000\r\n\r\n" + bytes(10_000)
            ends = time.monotonic() + total_s
            for byte in stream:
                if time.monotonic() > ends:
                    break
                h.wfile.write(bytes([byte]))
                h.wfile.flush()
                time.sleep(interval_s)

        self.routes[path] = handler
        return self.url(path)

    def raw_redirect(self, path: str, location: bytes, status: int = 302) -> str:
        """A redirect whose Location header is sent as these exact bytes (not UTF-8, control characters...)."""

        def handler(h: BaseHTTPRequestHandler) -> None:
            h.wfile.write(b"HTTP/1.1 %d Found\r\nLocation: " % status + location
                          + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            h.close_connection = True

        self.routes[path] = handler
        return self.url(path)

    # ---- bodies that must be bounded, opt-out headers (issue 23) ----

    def endless_redirect(self, path: str, location: str, status: int = 301) -> str:
        """A redirect to ``location`` whose body never ends: a client must follow it without reading the body."""

        def handler(h: BaseHTTPRequestHandler) -> None:
            h.close_connection = True
            h.wfile.write(b"HTTP/1.1 %d Moved\r\nLocation: %s\r\nContent-Type: text/html\r\nConnection: close\r\n"
                          b"\r\n" % (status, location.encode()))
            block = b"<p>moved</p>" * 5000
            while True:
                h.wfile.write(block)

        self.routes[path] = handler
        return self.url(path)

    def encoded(self, path: str, body: bytes, encoding: str, content_type: str = "image/jpeg",
                with_length: bool = True) -> str:
        """``body`` sent as it is with ``Content-Encoding: encoding`` (a compression bomb, for one)."""

        def handler(h: BaseHTTPRequestHandler) -> None:
            h.send_response(200)
            h.send_header("Content-Type", content_type)
            h.send_header("Content-Encoding", encoding)
            if with_length:
                h.send_header("Content-Length", str(len(body)))
            else:
                h.send_header("Connection", "close")
                h.close_connection = True
            h.end_headers()
            h.wfile.write(body)

        self.routes[path] = handler
        return self.url(path)

    def with_headers(self, path: str, body: bytes, headers: list[tuple[str, str]], status: int = 200,
                     content_type: str = "image/jpeg") -> str:
        """``body`` with these header lines, repeated names kept as separate lines."""

        def handler(h: BaseHTTPRequestHandler) -> None:
            h.send_response(status)
            h.send_header("Content-Type", content_type)
            h.send_header("Content-Length", str(len(body)))
            for name, value in headers:
                h.send_header(name, value)
            h.end_headers()
            h.wfile.write(body)

        self.routes[path] = handler
        return self.url(path)

    def counted_image(self, path: str, data: bytes, delay_s: float = 0.0) -> str:
        """An image served after ``delay_s``; ``requests_to(path)`` counts the GETs."""

        def handler(h: BaseHTTPRequestHandler) -> None:
            time.sleep(delay_s)
            send(h, Response(200, data, content_type="image/jpeg"))

        self.routes[path] = handler
        return self.url(path)


def send(h: BaseHTTPRequestHandler, response: Response) -> None:
    h.send_response(response.status)
    h.send_header("Content-Type", response.content_type)
    h.send_header("Content-Length", str(len(response.body)))
    for name, value in response.headers.items():
        h.send_header(name, value)
    h.end_headers()
    h.wfile.write(response.body)


# ---- compression bombs: a few hundred KB on the wire, hundreds of MB decoded ----

def gzip_bomb(decoded_mib: int = 512, prefix: bytes = b"") -> bytes:
    """``prefix`` then zeros, ``decoded_mib`` MiB in all, as a multi-member gzip stream (members of 8 MiB of
    zeros, compressed once and repeated: RFC 1952 allows members back to back, urllib3 decodes them all)."""
    member = gzip.compress(bytes(8 << 20), compresslevel=9, mtime=0)
    head = gzip.compress(prefix, mtime=0) if prefix else b""
    return head + member * max(1, decoded_mib // 8)


def deflate_bomb(decoded_mib: int = 64) -> bytes:
    """``decoded_mib`` MiB of zeros as one zlib stream (``Content-Encoding: deflate``)."""
    z = zlib.compressobj(1)
    return b"".join(z.compress(bytes(1 << 20)) for _ in range(decoded_mib)) + z.flush()


def brotli_bomb(decoded_mib: int = 512) -> bytes:
    """``decoded_mib`` MiB of zeros as brotli (``Content-Encoding: br``), compressed 1 MiB at a time."""
    import brotli  # urllib3 decodes br only where brotli is installed, as it is here

    c = brotli.Compressor(quality=5)
    return b"".join(c.process(bytes(1 << 20)) for _ in range(decoded_mib)) + c.finish()


def zstd_bomb(decoded_mib: int = 512) -> bytes:
    """``decoded_mib`` MiB of zeros as one zstd frame (``Content-Encoding: zstd``), compressed 1 MiB at a time."""
    import zstandard

    c = zstandard.ZstdCompressor(level=3).compressobj()
    return b"".join(c.compress(bytes(1 << 20)) for _ in range(decoded_mib)) + c.flush()


# ---- real photos (tests.conftest.photo) in the formats the web serves ----

def jpeg(name: str = "astronaut", quality: int = 90) -> bytes:
    return encode(photo(name), "JPEG", quality=quality)


def png_with_alpha() -> bytes:
    """chelsea with an alpha ramp: left edge fully transparent (must come out white)."""
    img = photo("chelsea").convert("RGBA")
    alpha = np.tile(np.linspace(0, 255, img.width, dtype=np.uint8), (img.height, 1))
    img.putalpha(Image.fromarray(alpha, "L"))
    return encode(img, "PNG")


def webp() -> bytes:
    return encode(photo("rocket"), "WEBP", quality=85)


def animated_gif() -> bytes:
    """Two frames: a red first frame, then the astronaut."""
    first = Image.new("RGB", (200, 150), (255, 0, 0))
    second = photo("astronaut").resize((200, 150))
    buf = io.BytesIO()
    first.save(buf, "GIF", save_all=True, append_images=[second], duration=100, loop=0)
    return buf.getvalue()


def cmyk_jpeg() -> bytes:
    return encode(photo("coffee").convert("CMYK"), "JPEG", quality=90)


def png_16bit() -> bytes:
    """camera (gray) stored as 16-bit: values scaled by 257 so 8-bit 255 is 16-bit 65535."""
    arr = photo("camera", mode="L")
    arr16 = np.asarray(arr, dtype=np.uint16) * 257
    return encode(Image.fromarray(arr16, "I;16"), "PNG")


def exif_rotated_jpeg() -> tuple[bytes, tuple[int, int]]:
    """chelsea stored sideways with EXIF orientation 6 (rotate 90 CW to view); returns bytes, upright size."""
    upright = photo("chelsea")  # 451 x 300
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what a camera writes: pixels sideways
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(stored, "JPEG", quality=90, exif=exif.tobytes()), upright.size


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header declares width x height pixels (10 gigapixels by default)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    idat = zlib.compress(bytes(width + 1) * 4, 9)  # a few rows of zeros; the rest is "missing"
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


# ---- image bombs whose pixel data is complete (the decoder really produces every pixel) ----

_PNG_COLOR = {"L": (0, 1), "RGB": (2, 3), "RGBA": (6, 4)}  # mode -> (PNG colour type, channels)


def png_complete(width: int, height: int, mode: str = "L", bit_depth: int = 8) -> bytes:
    """A valid PNG of width x height zero pixels, streamed through zlib (a 1 x 100,000 gray PNG is ~500 bytes,
    2 x 40,000,000 is ~120 KB): unlike png_bomb, it decodes completely."""
    color_type, channels = _PNG_COLOR[mode]
    row = bytes(1 + width * channels * bit_depth // 8)  # filter byte 0, then zeros
    rows_per_chunk = max(1, (1 << 20) // len(row))
    block = row * rows_per_chunk
    z = zlib.compressobj(9)
    parts, left = [], height
    while left:
        take = min(left, rows_per_chunk)
        parts.append(z.compress(block if take == rows_per_chunk else row * take))
        left -= take
    parts.append(z.flush())

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


def animated_tall(fmt: str, width: int = 1, height: int = 60_000) -> bytes:
    """A two-frame animated GIF or APNG of width x height (GIF sides stop at 65,535)."""
    first = Image.new("RGBA" if fmt == "PNG" else "P", (width, height), 0)
    second = Image.new(first.mode, (width, height), 1)
    buf = io.BytesIO()
    first.save(buf, fmt, save_all=True, append_images=[second], duration=100, loop=0)
    return buf.getvalue()


def cmyk_jpeg_tall(width: int = 1, height: int = 60_000) -> bytes:
    return encode(Image.new("CMYK", (width, height), (0, 0, 0, 0)), "JPEG", quality=90)
