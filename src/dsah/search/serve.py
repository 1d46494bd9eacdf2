"""`dsah serve`: a local web page and JSON API over the search index (FastAPI on uvicorn).

    GET  /                      the page: upload a query image or pick one, see the top results as a grid
    POST /api/search?k=10       body: an image file (any format Pillow reads) -> JSON results
    GET  /api/search?id=ID&k=10 a database entry as the query -> JSON results
    GET  /api/samples?n=12      a spread of database entries to pick from
    GET  /image/ROW             the image of index row ROW, as PNG
    GET  /openapi.json          the API's schema (no documentation page: it would load scripts from a CDN)

Binds 127.0.0.1 unless told otherwise. Uploads over the size limit get 413 (from Content-Length, before the
body is read, or while it streams), and so do images whose header declares more pixels than the pixel limit
(refused before decoding); undecodable ones 400 with the reason. Images are served only by index row, from
the prepared image store or the index's own added/ folder, so no request can name a path.

Bad clients cannot take the server down: each request has one deadline, from its connection's first byte
(or the previous answer) to its last body byte, so a client that stalls or trickles bytes is dropped (408
once its headers are in); the work (decoding, encoding, searching, PNG) runs on `threads` worker threads,
and past `threads + backlog` open connections new requests get 503; bound to loopback, only requests naming
this machine in their Host header are answered (a web page elsewhere cannot reach the server through DNS
rebinding); an unexpected error is a 500 with a JSON message, its traceback logged here.
"""

from __future__ import annotations

import asyncio
import io
import ipaddress
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from dsah.data.imaging import ImageTooLargeError
from dsah.errors import DataError
from dsah.limits import BACKLOG, MAX_PIXELS, MAX_UPLOAD, THREADS, TIMEOUT
from dsah.search.connections import PARSERS, Server, problem_body
from dsah.search.index import HammingIndex

MAX_K = 100
MAX_SAMPLES = 100
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
PAGE = Path(__file__).with_name("templates") / "serve.html"

log = logging.getLogger("dsah.search.serve")


class SearchService:
    """What the routes call: searching by image bytes or by id, and the images of index rows."""

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

    def samples(self, n: int) -> dict[str, Any]:
        rows = np.linspace(0, len(self.index) - 1, num=min(n, len(self.index)), dtype=int)
        ids, labels = self.index.ids[rows].tolist(), self.index.labels_of(rows)
        return {"samples": [{"id": id, "row": row, "labels": names, "thumbnail": f"/image/{row}"}
                            for row, id, names in zip(rows.tolist(), ids, labels)]}

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


def problem(status: int, message: str) -> Response:
    return Response(problem_body(status, message), status_code=status, media_type="application/json")


class Guard:
    """ASGI middleware around the routes: refuses a forged Host first (421, not Starlette's TrustedHost
    400, so the message can say which names are answered), marks every answer nosniff, and turns an
    unexpected error into a JSON 500 whose traceback is logged here."""

    def __init__(self, app, allowed_hosts: frozenset[str] | None):
        self.app, self.allowed_hosts = app, allowed_hosts

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def send_nosniff(message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), (b"x-content-type-options", b"nosniff")]
            await send(message)

        if self.allowed_hosts is not None:
            host = host_name(dict(scope["headers"]).get(b"host", b"").decode("latin-1"))
            if host not in self.allowed_hosts:
                return await problem(421, f"this server does not answer for host {host or '(no Host header)'!r}; "
                                          f"allowed: {', '.join(sorted(self.allowed_hosts))} (dsah serve "
                                          f"--allowed-host)")(scope, receive, send_nosniff)
        try:
            await self.app(scope, receive, send_nosniff)
        except ClientDisconnect:  # the client went away (or ran out of time): nobody to answer
            pass
        except Exception as exc:
            log.exception("dsah serve: %s %s failed", scope["method"], scope["path"])
            if not started:
                await problem(500, f"internal error ({type(exc).__name__}); the server's log has the "
                                   f"details")(scope, receive, send_nosniff)


def query_int(request: Request, name: str, default: int, high: int) -> int:
    """A whole-number query parameter in 1..high, read here rather than by FastAPI's parameter machinery,
    which re-inspects each parameter's type annotation on every request (a quarter of an id search's time)."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HTTPException(400, f"{name} must be an integer") from None
    if not 1 <= value <= high:
        raise HTTPException(400, f"{name} must be between 1 and {high}")
    return value


def documented(*parameters: tuple[str, str, dict]) -> dict[str, Any]:
    """The OpenAPI entries of query parameters read by query_int (name, description, schema)."""
    return {"parameters": [{"name": name, "in": "query", "required": False, "description": description,
                            "schema": schema} for name, description, schema in parameters]}


K = ("k", "results wanted", {"type": "integer", "minimum": 1, "maximum": MAX_K, "default": 10})


async def read_upload(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 past `limit` bytes: from Content-Length before reading a byte,
    or as it streams (a chunked upload has none)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise HTTPException(400, "bad Content-Length")
        if int(declared) > limit:
            raise HTTPException(413, f"upload of {declared} bytes is over the limit of {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, f"upload of more than {limit} bytes is over the limit of {limit} bytes")
    if not body:
        raise HTTPException(400, "empty upload: send the image file as the request body")
    return bytes(body)


def create_app(service: SearchService, threads: int = THREADS,
               allowed_hosts: frozenset[str] | None = None) -> FastAPI:
    """The API over `service`; `allowed_hosts`: the Host names answered (None: any)."""
    import jinja2

    if threads < 1:
        raise ValueError(f"threads ({threads}) must be at least 1")
    # The CPU work at once; waiting requests cost no thread. A pool of its own: on anyio's worker threads
    # (FastAPI's default) each search and encode took 8-16 ms instead of 1-2 on a busy machine (measured).
    workers = ThreadPoolExecutor(threads, thread_name_prefix="dsah-serve")

    async def work(function, *args):
        return await asyncio.get_running_loop().run_in_executor(workers, partial(function, *args))

    app = FastAPI(title="DSAH image search", version="1", docs_url=None, redoc_url=None)
    app.state.workers = workers
    app.add_middleware(Guard, allowed_hosts=allowed_hosts)
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(PAGE.parent), autoescape=True)
    page = environment.get_template(PAGE.name).render(count=f"{len(service.index):,}", bits=service.index.bits,
                                                       method=service.index.meta.get("method", ""))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        message = exc.detail if exc.status_code != 404 or exc.detail != "Not Found" else \
            f"no such page: {request.url.path}"
        return problem(exc.status_code, message)

    @app.exception_handler(RequestValidationError)
    async def bad_parameter(request: Request, exc: RequestValidationError) -> Response:
        return problem(400, "; ".join(f"{e['loc'][-1]}: {e['msg']}" for e in exc.errors()))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index_page() -> HTMLResponse:
        return HTMLResponse(page)

    @app.post("/api/search", summary="the nearest database entries to an uploaded image",
              openapi_extra=documented(K))
    async def search_upload(request: Request) -> Response:
        k = query_int(request, "k", 10, MAX_K)
        data = await read_upload(request, service.max_upload)
        try:
            return JSONResponse(await work(service.search_image, data, k))
        except ImageTooLargeError as exc:
            return problem(413, str(exc))
        except (ValueError, DataError) as exc:
            return problem(400, str(exc))

    @app.get("/api/search", summary="the nearest database entries to a database entry",
             openapi_extra=documented(("id", "a database id", {"type": "string"}), K))
    async def search_id(request: Request) -> Response:
        id, k = request.query_params.get("id"), query_int(request, "k", 10, MAX_K)
        if id is None:
            return problem(400, "give ?id=<database id>, or POST an image")
        try:
            return JSONResponse(await work(service.search_id, id, k))
        except DataError as exc:
            return problem(404, str(exc))

    @app.get("/api/samples", summary="a spread of database entries to pick a query from",
             openapi_extra=documented(("n", "entries wanted", {"type": "integer", "minimum": 1,
                                                                "maximum": MAX_SAMPLES, "default": 12})))
    async def samples(request: Request) -> JSONResponse:
        return JSONResponse(service.samples(query_int(request, "n", 12, MAX_SAMPLES)))

    @app.get("/image/{row:int}", summary="an index entry's image, as PNG",
             responses={200: {"content": {"image/png": {}}}})
    async def image(row: int) -> Response:
        try:
            return Response(await work(service.image_png, row), media_type="image/png")
        except KeyError:
            return problem(404, "no such image")

    return app


def make_server(service: SearchService, host: str = "127.0.0.1", port: int = 8000, *, threads: int = THREADS,
                backlog: int = BACKLOG, timeout: float = TIMEOUT, allowed_hosts: tuple[str, ...] = (),
                parser: str = "httptools") -> Server:
    """The server, bound and listening. Bound to loopback, or given `allowed_hosts`, it answers only
    requests whose Host header names localhost, 127.0.0.1, [::1] or one of `allowed_hosts` (any port)."""
    if timeout <= 0:
        raise ValueError(f"timeout must be positive, not {timeout}")
    if threads < 1 or backlog < 1:
        raise ValueError(f"threads ({threads}) and backlog ({backlog}) must be at least 1")
    allowed = None
    if is_loopback(host) or allowed_hosts:
        allowed = frozenset([*LOOPBACK_NAMES, *(host_name(h) for h in allowed_hosts)])
    if parser not in PARSERS:
        raise ValueError(f"parser must be one of {', '.join(PARSERS)}, not {parser!r}")
    app = create_app(service, threads, allowed)
    return Server(app, host, port, timeout, threads + backlog, backlog, parser,
                  on_close=partial(app.state.workers.shutdown, wait=True))
