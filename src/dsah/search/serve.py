"""`dsah serve`: a local web page and JSON API over the search index (standard library HTTP server).

    GET  /                      the page: upload a query image or pick one, see the top results as a grid
    POST /api/search?k=10       body: an image file (any format Pillow reads) -> JSON results
    GET  /api/search?id=ID&k=10 a database entry as the query -> JSON results
    GET  /api/samples?n=12      a spread of database entries to pick from
    GET  /image/ROW             the image of index row ROW, as PNG

Binds 127.0.0.1 unless told otherwise. Uploads over the size limit get 413, and so do images whose header
declares more pixels than the pixel limit (refused before decoding); undecodable ones 400 with the reason.
Images are served only by index row, from the prepared image store or the index's own added/ folder, so no
request can name a path.

Bad clients cannot take the server down: a fixed pool of worker threads answers connections (when all are
busy, new ones wait in the listen backlog instead of each getting a thread); each connection has one
deadline to send its whole request, so a client that stalls or trickles bytes is dropped; bound to
loopback, only requests naming this machine in their Host header are answered (a web page elsewhere cannot
reach the server through DNS rebinding); an unexpected error is a 500 with a JSON message, its traceback
logged here.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import json
import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np

from dsah.data.imaging import MAX_PIXELS, ImageTooLargeError
from dsah.errors import DataError
from dsah.search.index import HammingIndex

MAX_UPLOAD = 5 * 1024 * 1024
MAX_K = 100
THREADS = 8          # worker threads: requests answered at once (encoding is one at a time anyway)
BACKLOG = 256        # connections waiting for a worker (the kernel caps it at net.core.somaxconn)
TIMEOUT = 10.0       # seconds a connection has to send its whole request
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")

log = logging.getLogger("dsah.search.serve")


class SearchService:
    """What the handlers call: searching by image bytes or by id, and the images of index rows."""

    def __init__(self, index: HammingIndex, encoder, max_upload: int = MAX_UPLOAD, max_pixels: int = MAX_PIXELS):
        self.index, self.encoder, self.max_upload, self.max_pixels = index, encoder, max_upload, max_pixels
        store = index.folder / index.meta["store"] if index.meta.get("store") else None
        self.store = np.load(store, mmap_mode="r", allow_pickle=False) if store and store.is_file() else None
        self.lock = threading.Lock()  # one encode at a time: the model is shared

    def results(self, codes: np.ndarray, k: int, query: str) -> dict[str, Any]:
        hits = self.index.search(codes, k)[0]
        return {"query": query, "k": k, "bits": self.index.bits, "count": len(self.index),
                "results": [{**vars(h), "thumbnail": f"/image/{h.row}"} for h in hits]}

    def search_image(self, data: bytes, k: int) -> dict[str, Any]:
        from dsah.search.image_encoder import read_images

        images = read_images([io.BytesIO(data)], self.index.image_size, self.max_pixels)
        with self.lock:
            codes = self.encoder(images)
        return self.results(codes, k, "uploaded image")

    def search_id(self, entry: str, k: int) -> dict[str, Any]:
        return self.results(self.index.codes_of(self.index.rows_of([entry])), k, f"id:{entry}")

    def image_png(self, row: int) -> bytes:
        from PIL import Image

        if not 0 <= row < len(self.index):
            raise KeyError(row)
        ref = str(self.index.refs[row])
        if ref.startswith("store:") and self.store is not None:
            image = Image.fromarray(np.asarray(self.store[int(ref[6:])]))
        elif ref.startswith("added/"):
            folder = (self.index.folder / "added").resolve()
            path = (self.index.folder / ref).resolve()
            if folder not in path.parents or not path.is_file():
                raise KeyError(row)
            image = Image.open(path).convert("RGB")
        else:
            raise KeyError(row)  # an image folder this server was not given
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()


class DeadlineReader(io.RawIOBase):
    """A connection's reads under one deadline for the whole request: a per-read timeout alone would let
    a client that sends a byte every few seconds hold a worker for ever."""

    def __init__(self, connection: socket.socket, seconds: float):
        self.connection, self.seconds = connection, seconds
        self.deadline = time.monotonic() + seconds

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        late = TimeoutError(f"the request was not received within {self.seconds:g} s (dsah serve --timeout)")
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise late
        self.connection.settimeout(left)
        try:
            return self.connection.recv_into(buffer)
        except TimeoutError:
            raise late from None
        finally:
            self.connection.settimeout(self.seconds)  # writing the answer gets the full timeout


def host_name(header: str) -> str:
    """A Host header without its port, lower case: "[::1]:8000" -> "[::1]", "LocalHost:80" -> "localhost"."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[:header.find("]") + 1] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def make_handler(service: SearchService, timeout: float = TIMEOUT,
                 allowed_hosts: frozenset[str] | None = None) -> type[BaseHTTPRequestHandler]:
    """The request handler; `allowed_hosts`: the Host names answered (None: any)."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "dsah-serve"

        def setup(self) -> None:
            self.timeout = timeout  # StreamRequestHandler sets it on the socket: every read and write
            super().setup()
            self.rfile.close()  # the plain reader, replaced by one under the request's deadline
            self.rfile = io.BufferedReader(DeadlineReader(self.connection, timeout))

        def log_message(self, format: str, *args: Any) -> None:  # quiet by default: errors are logged below
            pass

        def send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            self.wfile.write(body)

        def json(self, status: int, payload: dict[str, Any]) -> None:
            self.send(status, json.dumps(payload).encode(), "application/json")

        def error(self, status: int, message: str) -> None:
            self.json(status, {"error": message, "status": status})

        def k(self, query: dict[str, list[str]]) -> int:
            return self.count(query, "k", 10, MAX_K)

        def count(self, query: dict[str, list[str]], name: str, default: int, most: int) -> int:
            """A number of results asked for in the query string: an integer from 1 to `most` (400 otherwise)."""
            try:
                value = int(query.get(name, [str(default)])[0])
            except ValueError:
                raise ValueError(f"{name} must be an integer") from None
            if not 1 <= value <= most:
                raise ValueError(f"{name} must be between 1 and {most}")
            return value

        def answer(self, respond) -> None:
            """Run a request's answer: a forged Host is refused first, and an unexpected error becomes a 500
            with a JSON message (its traceback logged here) rather than a dropped connection."""
            if allowed_hosts is not None:
                host = host_name(self.headers.get("Host", ""))
                if host not in allowed_hosts:
                    self.close_connection = True
                    return self.error(HTTPStatus.MISDIRECTED_REQUEST,
                                      f"this server does not answer for host {host or '(no Host header)'!r}; "
                                      f"allowed: {', '.join(sorted(allowed_hosts))} (dsah serve --allowed-host)")
            try:
                respond()
            except TimeoutError as exc:  # the body did not arrive in time (or the answer could not be sent)
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.error(HTTPStatus.REQUEST_TIMEOUT, str(exc))
            except ConnectionError:  # the client went away: nobody to answer
                self.close_connection = True
            except Exception as exc:
                log.exception("dsah serve: %s %s failed", self.command, self.path)
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.error(HTTPStatus.INTERNAL_SERVER_ERROR,
                               f"internal error ({type(exc).__name__}); the server's log has the details")

        def do_GET(self) -> None:
            self.answer(self.get)

        def do_POST(self) -> None:
            self.answer(self.post)

        def get(self) -> None:
            url = urlparse(self.path)
            query = parse_qs(url.query)
            try:
                if url.path == "/":
                    self.send(HTTPStatus.OK, PAGE.encode(), "text/html; charset=utf-8")
                elif url.path == "/api/search":
                    if "id" not in query:
                        return self.error(HTTPStatus.BAD_REQUEST, "give ?id=<database id>, or POST an image")
                    self.json(HTTPStatus.OK, service.search_id(query["id"][0], self.k(query)))
                elif url.path == "/api/samples":
                    n = self.count(query, "n", 12, 100)
                    rows = np.linspace(0, len(service.index) - 1, num=min(n, len(service.index)), dtype=int)
                    self.json(HTTPStatus.OK, {"samples": [
                        {"id": str(service.index.ids[r]), "row": int(r), "labels": service.index.label_names(int(r)),
                         "thumbnail": f"/image/{r}"} for r in rows]})
                elif url.path.startswith("/image/") and url.path[7:].isdigit():
                    self.send(HTTPStatus.OK, service.image_png(int(url.path[7:])), "image/png")
                else:
                    self.error(HTTPStatus.NOT_FOUND, f"no such page: {url.path}")
            except KeyError:
                self.error(HTTPStatus.NOT_FOUND, "no such image")
            except ValueError as exc:
                self.error(HTTPStatus.BAD_REQUEST, str(exc))
            except DataError as exc:
                self.error(HTTPStatus.NOT_FOUND, str(exc))

        def post(self) -> None:
            url = urlparse(self.path)
            if url.path != "/api/search":
                return self.error(HTTPStatus.NOT_FOUND, f"no such endpoint: {url.path}")
            try:
                length = int(self.headers.get("Content-Length", "0"))
            except ValueError:
                return self.error(HTTPStatus.BAD_REQUEST, "bad Content-Length")
            if length > service.max_upload:
                self.close_connection = True  # the body is not read: drop the connection after answering
                return self.error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                                  f"upload of {length} bytes is over the limit of {service.max_upload} bytes")
            if length <= 0:
                return self.error(HTTPStatus.BAD_REQUEST, "empty upload: send the image file as the request body")
            data = self.rfile.read(length)
            try:
                self.json(HTTPStatus.OK, service.search_image(data, self.k(parse_qs(url.query))))
            except ImageTooLargeError as exc:
                self.error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, str(exc))
            except ValueError as exc:
                self.error(HTTPStatus.BAD_REQUEST, str(exc))
            except DataError as exc:
                self.error(HTTPStatus.BAD_REQUEST, str(exc))

    return Handler


class PoolHTTPServer(HTTPServer):
    """An HTTP server answering with a fixed pool of worker threads. A connection is accepted only when a
    worker is free; until then new connections wait in the listen backlog (`request_queue_size`), so a
    flood of clients costs queue slots, not threads."""

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], threads: int = THREADS,
                 backlog: int = BACKLOG):
        if threads < 1 or backlog < 1:
            raise ValueError(f"threads ({threads}) and backlog ({backlog}) must be at least 1")
        self.request_queue_size = backlog  # read by server_activate's listen()
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.threads = threads
        self.free = threading.BoundedSemaphore(threads)
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="dsah-serve")
        super().__init__(address, handler)

    def process_request(self, request, client_address) -> None:
        self.free.acquire()  # every worker busy: accept nothing more until one is done
        try:
            self.pool.submit(self.work, request, client_address)
        except RuntimeError:  # the pool is shut down: the server is closing
            self.free.release()
            self.shutdown_request(request)

    def work(self, request, client_address) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            self.free.release()

    def handle_error(self, request, client_address) -> None:
        log.exception("dsah serve: connection from %s failed", client_address[0])

    def server_close(self) -> None:
        super().server_close()
        self.pool.shutdown(wait=True)


def make_server(service: SearchService, host: str = "127.0.0.1", port: int = 8000, *, threads: int = THREADS,
                backlog: int = BACKLOG, timeout: float = TIMEOUT,
                allowed_hosts: tuple[str, ...] = ()) -> PoolHTTPServer:
    """The server, bound and listening. Bound to loopback, or given `allowed_hosts`, it answers only
    requests whose Host header names localhost, 127.0.0.1, [::1] or one of `allowed_hosts` (any port)."""
    if timeout <= 0:
        raise ValueError(f"timeout must be positive, not {timeout}")
    allowed = None
    if is_loopback(host) or allowed_hosts:
        allowed = frozenset([*LOOPBACK_NAMES, *(host_name(h) for h in allowed_hosts)])
    return PoolHTTPServer((host, port), make_handler(service, timeout, allowed), threads, backlog)


PAGE = """<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>DSAH image search</title>
<link rel="icon" href="data:,">
<style>
body{font-family:sans-serif;max-width:1100px;margin:24px auto;padding:0 16px;color:#222}
#samples img,#results img{width:96px;height:96px;image-rendering:pixelated;display:block}
.grid{display:flex;flex-wrap:wrap;gap:10px}.grid figure{margin:0;font-size:11px;text-align:center;width:100px}
#samples figure{cursor:pointer}#error{color:#b00020}#query img{width:128px;height:128px;image-rendering:pixelated}
</style></head><body>
<h1>DSAH image search</h1>
<p>Upload an image, or pick one of the database images below; the nearest codes by Hamming distance
come back, nearest first (ties by database order).</p>
<p><input type="file" id="file" accept="image/*"> <label>results <select id="k">
<option>10</option><option selected>20</option><option>50</option></select></label></p>
<p id="error" role="alert"></p>
<div id="query"></div>
<h2>Results</h2><div id="results" class="grid"></div>
<h2>Pick a query</h2><div id="samples" class="grid"></div>
<script>
const $ = id => document.getElementById(id);
function figure(item, caption) {
  const f = document.createElement("figure"), img = document.createElement("img"), c = document.createElement("figcaption");
  img.src = item.thumbnail; img.alt = item.id; c.textContent = caption; f.append(img, c); return f;
}
function show(payload) {
  $("error").textContent = "";
  const grid = $("results"); grid.replaceChildren();
  for (const hit of payload.results)
    grid.append(figure(hit, `#${hit.rank} d=${hit.distance} ${hit.id} [${hit.labels.join(", ")}]`));
  grid.dataset.query = payload.query;
}
async function answer(response) {
  const payload = await response.json();
  if (!response.ok) { $("error").textContent = payload.error; $("results").replaceChildren(); return; }
  show(payload);
}
$("file").addEventListener("change", async () => {
  const file = $("file").files[0]; if (!file) return;
  $("query").replaceChildren(); const img = document.createElement("img");
  img.src = URL.createObjectURL(file); img.alt = "query"; $("query").append(img);
  await answer(await fetch(`/api/search?k=${$("k").value}`, {method: "POST", body: file}));
});
fetch("/api/samples?n=12").then(r => r.json()).then(p => {
  for (const s of p.samples) {
    const f = figure(s, `${s.id} [${s.labels.join(", ")}]`);
    f.addEventListener("click", async () => {
      $("query").replaceChildren(figure(s, "query"));
      await answer(await fetch(`/api/search?id=${encodeURIComponent(s.id)}&k=${$("k").value}`));
    });
    $("samples").append(f);
  }
});
</script></body></html>
"""
