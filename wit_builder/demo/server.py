"""A loopback HTTP server for the demo corpus: static files with their content types, robots.txt, redirects.

It serves a folder as it is, so the hostile cases are files (an HTML page named ``.jpg`` goes out as
``image/jpeg``, a truncated JPEG, a path that ``robots.txt`` disallows); missing files answer 404; the
redirect map sends chosen paths elsewhere (e.g. to the cloud-metadata address a crawler must refuse).
"""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path
from types import TracebackType


class _Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real image hosts do
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".txt": "text/plain"}

    def __init__(self, *args, redirects: dict[str, str], **kwargs) -> None:
        self.redirects = redirects
        super().__init__(*args, **kwargs)

    def send_head(self):
        target = self.redirects.get(self.path.split("?", 1)[0])
        if target is None:
            return super().send_head()
        self.send_response(302)
        self.send_header("Location", target)
        self.send_header("Content-Length", "0")
        self.end_headers()
        return None

    def list_directory(self, path):  # a folder is not a page of this site
        self.send_error(404, "Not Found")
        return None

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's signature
        pass  # the crawler reports every status itself; a line per request would drown the demo's output


class DemoServer:
    """``with DemoServer(folder) as server:`` serves ``folder`` at ``server.base_url`` until the block ends."""

    def __init__(self, folder: str | Path, redirects: dict[str, str] | None = None,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        root = Path(folder)
        if not root.is_dir():
            raise FileNotFoundError(f"demo server: {root} is not a folder")
        handler = functools.partial(_Handler, directory=str(root), redirects=dict(redirects or {}))
        self._server = http.server.ThreadingHTTPServer((host, port), handler)
        self._host = host  # server_address is typed str | bytes; the host we bound is a str
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="demo-http", daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self.port}"

    def __enter__(self) -> DemoServer:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()
