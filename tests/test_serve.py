"""`dsah serve` against bad clients, on a real server on a free loopback port: image bombs refused from
their header, stalled and trickling clients dropped, more connections than workers all answered, forged
Host headers refused, unexpected errors answered as JSON. Fast: a small index with a classic model (ITQ on
pixels), no pipeline."""

import http.client
import io
import json
import select
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest
from PIL import Image

from conftest import ROOT
from dsah.data.imaging import ImageTooLargeError, decode_square
from dsah.search.image_encoder import ImageEncoder
from dsah.search.index import HammingIndex
from dsah.search.serve import SearchService, make_server
from fixtures import build_search_index

BITS = 16


@pytest.fixture(scope="module")
def search_index(tmp_path_factory):
    """(index folder, model file, a query PNG's bytes): 60 images of 6 classes (fixtures.build_search_index)."""
    return build_search_index(tmp_path_factory.mktemp("serve"), BITS)


@contextmanager
def serving(search_index, **options):
    """A real server on a free loopback port, in a thread; -> its port."""
    index, model, _ = search_index
    service = SearchService(HammingIndex.load(index), ImageEncoder(model), max_upload=200_000)
    server = make_server(service, "127.0.0.1", 0, **options)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def request(port, method, path, body=None, host="default"):
    """-> (status, JSON or bytes). host: the Host header to send ("default": 127.0.0.1:port, None: none)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.putrequest(method, path, skip_host=host != "default")
        if host not in ("default", None):
            connection.putheader("Host", host)
        if body is not None:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        data = response.read()
        if response.getheader("Content-Type") == "application/json":
            return response.status, json.loads(data)
        return response.status, data
    finally:
        connection.close()


def png_declaring(width, height):
    """A valid 16x16 PNG whose IHDR is patched to declare width x height (its CRC fixed): a few hundred
    bytes. Decoding it would fail (its data holds 16x16 pixels), so a 413 naming the size shows the
    refusal came from the header, before decoding."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def test_an_image_bomb_is_refused_from_its_header_with_413(search_index, tmp_path):
    patched = png_declaring(8000, 8000)
    # A genuine bomb too: a valid 1-bit 6400 x 6400 PNG compresses to a few KB.
    genuine = io.BytesIO()
    Image.new("1", (6400, 6400)).save(genuine, format="PNG")
    assert len(patched) < 1000 and len(genuine.getvalue()) < 20_000
    with serving(search_index) as port:
        status, payload = request(port, "POST", "/api/search", patched)
        assert status == 413, payload
        assert "8000x8000 = 64,000,000 pixels, over the limit of 40,000,000 pixels; refused before decoding" in \
            payload["error"]
        status, payload = request(port, "POST", "/api/search", genuine.getvalue())
        assert status == 413 and "6400x6400 = 40,960,000 pixels" in payload["error"]
        # Past PIL's own guard (about 179 MP), PIL refuses at open; the answer is the same 413.
        status, payload = request(port, "POST", "/api/search", png_declaring(20000, 20000))
        assert status == 413 and "PIL's decompression-bomb guard" in payload["error"], payload
        assert request(port, "POST", "/api/search?k=3", search_index[2])[0] == 200  # a real image still works
    with pytest.raises(ImageTooLargeError, match="32x32 = 1,024 pixels, over the limit of 1,000 pixels"):
        decode_square(search_index[2], 32, max_pixels=1000)  # the limit is configurable

    # `dsah search` of a file goes through the same decoding and gets the same refusal.
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(patched)
    index, model, _ = search_index
    run = subprocess.run([sys.executable, "-m", "dsah.cli", "search", "--index", str(index), "--model", str(model),
                          str(bomb)], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 2 and f"{bomb}: 8000x8000 = 64,000,000 pixels, over the limit" in run.stderr


def until_closed(sock, within):
    """What the server sends until it closes the connection (EOF or reset), or None when it is still open
    after `within` seconds."""
    sock.settimeout(within)
    received = b""
    try:
        while chunk := sock.recv(4096):
            received += chunk
        return received
    except ConnectionResetError:
        return received
    except TimeoutError:
        return None


@pytest.mark.parametrize("parser", ["httptools", "h11"])
def test_stalled_and_trickling_clients_are_dropped_while_others_are_served(search_index, parser):
    with serving(search_index, threads=4, timeout=1.5, parser=parser) as port:
        half_header = socket.create_connection(("127.0.0.1", port))
        half_header.sendall(b"GET /api/samples HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Fill")
        half_body = socket.create_connection(("127.0.0.1", port))
        half_body.sendall(b"POST /api/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5000\r\n\r\n"
                          + search_index[2][:100])
        time.sleep(0.2)
        # Two workers are held; the others answer at once, while both stalled clients are still connected.
        assert request(port, "GET", "/api/search?id=img3&k=5")[0] == 200
        assert request(port, "POST", "/api/search?k=5", search_index[2])[0] == 200
        assert select.select([half_header, half_body], [], [], 0)[0] == []  # nothing from the server yet
        assert until_closed(half_header, within=10) == b""  # dropped after the timeout, without an answer
        answer = until_closed(half_body, within=10)  # the headers came: a 408 says why
        assert answer.startswith(b"HTTP/1.1 408") and b"not received within 1.5 s" in answer

        # A byte every 0.2 s would pass a per-read timeout for ever; the request's deadline drops it.
        trickle = socket.create_connection(("127.0.0.1", port))
        line, sent = b"GET /api/samples HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 200, 0
        try:
            for byte in line:
                trickle.send(bytes([byte]))
                sent += 1
                time.sleep(0.2)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert sent < len(line) and until_closed(trickle, within=10) is not None, sent
        assert request(port, "GET", "/api/samples?n=3")[0] == 200
        for sock in (half_header, half_body, trickle):
            sock.close()


def test_more_clients_than_workers_are_all_answered_by_at_most_that_many_workers(search_index, monkeypatch):
    query, active, most, count = search_index[2], [0], [0], threading.Lock()
    real = SearchService.results

    def counted(self, *args):  # the real search, its concurrency recorded
        with count:
            active[0] += 1
            most[0] = max(most[0], active[0])
        time.sleep(0.005)
        try:
            return real(self, *args)
        finally:
            with count:
                active[0] -= 1

    monkeypatch.setattr(SearchService, "results", counted)
    with serving(search_index, threads=2, backlog=64) as port:
        def client(i):
            if i % 2:
                return request(port, "POST", "/api/search?k=5", query)
            return request(port, "GET", f"/api/search?id=img{i % 60}&k=5")

        with ThreadPoolExecutor(40) as clients:
            answers = list(clients.map(client, range(120)))
    assert [status for status, _ in answers] == [200] * 120
    assert all(len(payload["results"]) == 5 for _, payload in answers)
    assert answers[1][1]["results"][0]["distance"] == 0  # the query image is in the index
    assert most[0] == 2, most  # 40 clients at once, never more than the 2 workers


def test_connections_past_threads_and_backlog_get_503_until_some_close(search_index):
    with serving(search_index, threads=1, backlog=1) as port:
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
        time.sleep(0.2)
        status, body = request(port, "GET", "/api/samples?n=2")
        assert status == 503, body
        for sock in idle:
            sock.close()
        time.sleep(0.2)
        assert request(port, "GET", "/api/samples?n=2")[0] == 200


def test_a_forged_host_is_refused_on_loopback(search_index):
    with serving(search_index, allowed_hosts=("search.example.org",)) as port:
        for host in (f"127.0.0.1:{port}", "localhost", f"LOCALHOST:{port}", f"[::1]:{port}",
                     "search.example.org:443"):
            assert request(port, "GET", "/api/samples?n=2", host=host)[0] == 200, host
        status, payload = request(port, "GET", "/api/samples", host=f"attacker.example:{port}")
        assert status == 421 and "does not answer for host 'attacker.example'" in payload["error"]
        assert "--allowed-host" in payload["error"]
        status, payload = request(port, "POST", "/api/search", search_index[2], host="attacker.example")
        assert status == 421
        status, payload = request(port, "GET", "/", host=None)
        assert status == 421 and "(no Host header)" in payload["error"]
        with socket.create_connection(("127.0.0.1", port)) as old_client:  # HTTP/1.0, whose Host is optional
            old_client.sendall(b"GET / HTTP/1.0\r\n\r\n")
            answer = until_closed(old_client, within=10)
        assert answer.startswith(b"HTTP/1.1 421") and b"(no Host header)" in answer, answer
    with serving(search_index) as port:  # without --allowed-host, only this machine's names
        assert request(port, "GET", "/api/samples", host="search.example.org")[0] == 421


def test_an_unexpected_error_is_a_500_with_json_and_its_traceback_logged(search_index, monkeypatch, caplog):
    def broken_save(self, *args, **kwargs):
        raise RuntimeError("the PNG encoder broke")

    with serving(search_index) as port:
        monkeypatch.setattr(Image.Image, "save", broken_save)  # a third-party failure inside a request
        status, payload = request(port, "GET", "/image/3")
        monkeypatch.undo()
        assert status == 500 and payload == {
            "error": "internal error (RuntimeError); the server's log has the details", "status": 500}
        record = next(r for r in caplog.records if r.name == "dsah.search.serve")
        assert "GET /image/3 failed" in record.getMessage() and "the PNG encoder broke" in caplog.text
        status, body = request(port, "GET", "/image/3")  # the server lives on
        assert status == 200 and body.startswith(b"\x89PNG")


def test_server_options_are_checked(search_index):
    index, model, _ = search_index
    service = SearchService(HammingIndex.load(index), ImageEncoder(model))
    for options, message in (({"threads": 0}, "threads (0)"), ({"timeout": 0}, "timeout must be positive")):
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            make_server(service, "127.0.0.1", 0, **options)


def test_the_api_in_process_schema_page_and_streamed_uploads(search_index):
    from fastapi.testclient import TestClient

    from dsah.search.serve import create_app

    index, model, query = search_index
    loaded = HammingIndex.load(index)
    loaded.meta["method"] = "<script>alert(1)</script>"  # whatever the index's meta says stays text
    service = SearchService(loaded, ImageEncoder(model), max_upload=200_000)
    with TestClient(create_app(service, threads=2, allowed_hosts=frozenset({"testserver"}))) as client:
        schema = client.get("/openapi.json").json()
        assert {"/api/search", "/api/samples", "/image/{row}"} <= set(schema["paths"])
        assert set(schema["paths"]["/api/search"]) == {"get", "post"}
        # The query parameters are read by the routes themselves (FastAPI's reading cost a quarter of a
        # search): the schema still names them, with their bounds.
        by_id = {p["name"]: p["schema"] for p in schema["paths"]["/api/search"]["get"]["parameters"]}
        assert set(by_id) == {"id", "k"} and by_id["k"]["maximum"] == 100
        assert [p["name"] for p in schema["paths"]["/api/samples"]["get"]["parameters"]] == ["n"]
        assert client.get("/docs").status_code == 404 and client.get("/redoc").status_code == 404  # no CDN page
        page = client.get("/")
        assert page.headers["x-content-type-options"] == "nosniff"
        assert "60 images, 16-bit codes (&lt;script&gt;alert(1)&lt;/script&gt;)" in page.text
        assert "<script>alert(1)" not in page.text

        answer = client.post("/api/search?k=3", content=query)
        assert answer.status_code == 200 and answer.json()["results"][0]["distance"] == 0  # img7 is in the index
        # A chunked upload declares no length: it is refused while it streams, past the limit.
        chunks = (b"x" * 50_000 for _ in range(10))
        refused = client.post("/api/search", content=chunks)
        assert refused.status_code == 413 and "over the limit of 200000 bytes" in refused.json()["error"]
        assert client.post("/api/search", content=b"").json() == {
            "error": "empty upload: send the image file as the request body", "status": 400}
        assert client.get("/api/search?k=3").json()["error"] == "give ?id=<database id>, or POST an image"
        assert client.get("/api/search?id=img3&k=101").json()["error"] == "k must be between 1 and 100"
        assert client.get("/api/samples?n=2.5").json() == {"error": "n must be an integer", "status": 400}
        assert client.get("/image/x").json()["status"] == 404  # not a row number: no route
        assert client.get("/nowhere").json() == {"error": "no such page: /nowhere", "status": 404}
        assert client.get("/api/samples", headers={"Host": "elsewhere.example"}).status_code == 421
