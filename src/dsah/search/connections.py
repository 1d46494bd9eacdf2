"""The connections of `dsah serve`: uvicorn on a socket bound here, with one deadline per request.

uvicorn has per-read timeouts only, so a client that sends a byte a second could hold a connection for ever;
the deadline below is mixed into both of its HTTP/1.1 protocols (httptools: C; h11: pure Python)."""

from __future__ import annotations

import json
import socket
import threading
from typing import Any, Callable

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


def problem_body(status: int, message: str) -> bytes:
    """Every error's JSON, from the app and from the connection alike: {"error": what went wrong, "status": ...}."""
    return json.dumps({"error": message, "status": status}).encode()


class _Deadline:
    """One deadline per request, from the connection's first byte (or the previous answer on a kept-alive
    connection) to the request's last body byte: a per-read timeout alone would let a client that sends a
    byte a second hold its connection for ever. Past the deadline a request whose headers are in gets 408;
    one without is dropped unanswered. The app's own time is not counted. Mixed into uvicorn's protocols."""

    seconds: float
    deadline: Any = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.arm()

    def arm(self) -> None:
        self.disarm()
        self.deadline = self.loop.call_later(self.seconds, self.too_late)

    def disarm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def request_in(self) -> None:
        """Called once the parser has run: with the whole request in, the rest is the server's time."""
        if self.cycle is not None and not self.cycle.response_complete and not self.cycle.more_body:
            self.disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self.arm()  # the next request on this connection

    def connection_lost(self, exc) -> None:
        self.disarm()
        super().connection_lost(exc)

    def too_late(self) -> None:
        self.deadline = None
        cycle = self.cycle
        if self.transport.is_closing():
            return
        if cycle is not None and not cycle.response_complete:
            if not cycle.more_body:
                return  # the request is in; the app is answering
            if not cycle.response_started:
                body = problem_body(408, f"the request was not received within {self.seconds:g} s (dsah serve "
                                         "--timeout)")
                cycle.disconnected = True  # the app's reads end; its answer, if any, is not sent
                cycle.message_event.set()
                self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                                     b"content-length: %d\r\nconnection: close\r\nx-content-type-options: nosniff"
                                     b"\r\n\r\n%s" % (len(body), body))
        self.transport.close()


class _H11Deadline(_Deadline, H11Protocol):
    def handle_events(self) -> None:
        super().handle_events()
        self.request_in()


class _HttpToolsDeadline(_Deadline, HttpToolsProtocol):
    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.request_in()


PARSERS = {"h11": _H11Deadline, "httptools": _HttpToolsDeadline}


def deadline_protocol(seconds: float, parser: str = "httptools") -> type[H11Protocol]:
    """uvicorn's HTTP/1.1 protocol (httptools: C; h11: pure Python) with one deadline per request."""
    return type(f"Deadline{PARSERS[parser].__name__}", (PARSERS[parser],), {"seconds": seconds})


class Server:
    """A listening socket and the uvicorn server that answers on it. Binding happens here, so a busy port is
    an error before serving starts and port 0's choice is known (`server_address`)."""

    def __init__(self, app: Any, host: str, port: int, timeout: float, limit: int, backlog: int,
                 parser: str = "httptools", on_close: Callable[[], None] = lambda: None):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind((host, port))
            self.socket.listen(backlog)
        except OSError:
            self.socket.close()
            raise
        self.server_address = self.socket.getsockname()
        self.on_close = on_close  # what the app holds beside the socket (its worker threads)
        config = uvicorn.Config(app, http=deadline_protocol(timeout, parser), lifespan="off", log_config=None,
                                access_log=False, limit_concurrency=limit, backlog=backlog, server_header=False,
                                timeout_keep_alive=max(1, int(timeout)))
        self.uvicorn = uvicorn.Server(config)
        self.stopped = threading.Event()

    def serve_forever(self) -> None:
        """Answer until Ctrl-C (in the main thread) or `shutdown()`."""
        try:
            self.uvicorn.run(sockets=[self.socket])
        finally:
            self.stopped.set()

    def shutdown(self) -> None:  # from another thread than serve_forever's: it stops, and is waited for
        self.uvicorn.should_exit = True
        self.stopped.wait()

    def server_close(self) -> None:
        self.socket.close()
        self.on_close()
