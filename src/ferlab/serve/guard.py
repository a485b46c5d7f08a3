"""What keeps slow, idle and greedy clients of ``ferlab serve`` from locking others out.

Two small layers, each doing what the other cannot see:

- :class:`GuardedH11Protocol` is uvicorn's h11 protocol with a time limit on a request's headers,
  a cap on the connections one client address (and all clients) hold in one worker, and JSON
  answers where uvicorn answers in plain text. It works below the app, where a request that has
  not finished its headers lives.
- :class:`UploadGuard` is an ASGI middleware that receives each request's whole body before the
  app sees it: at most ``per_client`` bodies arriving at once from one address, ``memory`` bytes
  of arriving bodies in all, ``max_body`` bytes each, and a body must keep coming (after a grace
  at least ``min_rate`` bytes/s, as Kestrel's ``MinRequestBodyDataRate``, with no more than
  ``read_timeout`` seconds banked, so no pause over that). So the app's work queue counts only
  requests whose body has fully arrived.

Every refusal is the server's JSON error ``{"error": {"code", "message"}}`` with its status (408,
413, 429 with ``Retry-After``, 431, 503 with ``Retry-After``), closes the connection, and is
logged once on the ``ferlab.serve`` logger.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import anyio
import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

HEADER_BYTES = 16 * 1024  # request line and headers, at most (h11's limit): beyond, 431
RETRY_AFTER_SECONDS = 1
log = logging.getLogger("ferlab.serve")


def error_body(code: str, message: str) -> bytes:
    """The server's JSON error, encoded."""
    return json.dumps({"error": {"code": code, "message": message}}).encode()


async def send_error(
    send: Send, status: int, code: str, message: str, retry_after: int | None = None
) -> None:
    """Answer ``status`` with the JSON error through ASGI ``send``, closing the connection."""
    body = error_body(code, message)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def raw_error(status: int, code: str, message: str) -> bytes:
    """The JSON error as a whole HTTP/1.1 response, for a connection without a request cycle."""
    body = error_body(code, message)
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


def peer(scope_or_client: Any) -> str:
    """``host:port`` of a client tuple, or of an ASGI scope's client."""
    client = scope_or_client.get("client") if isinstance(scope_or_client, dict) else scope_or_client
    return f"{client[0]}:{client[1]}" if client else "unknown client"


def refusal(status: int, code: str, message: str) -> ASGIApp:
    """An ASGI app that answers every request with one JSON error (and ``Retry-After``)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        log.warning("%s: %s (%d)", peer(scope), message, status)
        await send_error(send, status, code, message, RETRY_AFTER_SECONDS)

    return app


@dataclass
class ConnectionLimits:
    """One worker's connection limits and the connections it holds per client address.

    Handed to :class:`GuardedH11Protocol` with :func:`functools.partial`; each worker process gets
    its own copy, so the caps count per worker.
    """

    header_timeout: float
    per_client: int
    total: int
    open: Counter[str] = field(default_factory=Counter)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, guarded (pass as ``uvicorn.run(http=partial(cls, limits=...))``).

    - A request's line and headers must all arrive within ``header_timeout`` seconds of the
      connection opening or of the request's first bytes: else 408, or a quiet close when the
      connection never sent a byte (a browser's spare connection, an idle client).
    - A client address with more than ``per_client`` connections open, or a worker with more
      than ``total``, gets 429 (503 for ``total``) with ``Retry-After`` on the extra connection.
    - Malformed requests and headers over :data:`HEADER_BYTES` get JSON 400 and 431 instead of
      uvicorn's plain text.
    """

    def __init__(self, *args: Any, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self.address = ""
        self.header_timer: asyncio.TimerHandle | None = None
        self.header_bytes = 0  # bytes received of the request whose headers are due

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.address = self.client[0] if self.client else ""
        open_ = self.limits.open
        open_[self.address] += 1
        if open_[self.address] > self.limits.per_client:
            self.app = refusal(
                429,
                "too_many_requests",
                f"{self.address} holds {open_[self.address] - 1} connections already, the most "
                f"one address may; retry after {RETRY_AFTER_SECONDS} s",
            )
        elif open_.total() > self.limits.total:
            self.app = refusal(
                503,
                "overloaded",
                f"the server holds {self.limits.total} connections already; retry shortly",
            )
        self.arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self.cancel_header_timer()
        self.limits.open[self.address] -= 1
        if self.limits.open[self.address] <= 0:
            del self.limits.open[self.address]
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:
            self.header_bytes += len(data)
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE or self.transport.is_closing():
            self.cancel_header_timer()
        elif self.header_timer is None:  # the next request on a kept-alive connection began
            self.arm_header_timer()

    def on_response_complete(self) -> None:
        self.header_bytes = 0
        super().on_response_complete()

    def send_400_response(self, msg: str) -> None:
        if len(self.conn.trailing_data[0]) > HEADER_BYTES:
            status, code = 431, "headers_too_large"
            message = f"the request's line and headers pass {HEADER_BYTES:,} bytes"
        else:
            status, code, message = 400, "bad_request", "malformed HTTP request"
        log.warning("%s: %s (%d)", peer(self.client), message, status)
        self.transport.write(raw_error(status, code, message))
        self.transport.close()

    def arm_header_timer(self) -> None:
        self.cancel_header_timer()
        self.header_timer = self.loop.call_later(self.limits.header_timeout, self.headers_late)

    def cancel_header_timer(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def headers_late(self) -> None:
        """The header time limit passed: 408 if the request had begun, else a quiet close."""
        self.header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        seconds = self.limits.header_timeout
        if self.header_bytes:
            message = f"the request's headers took over {seconds:g} s"
            log.warning("%s: %s (408)", peer(self.client), message)
            self.transport.write(raw_error(408, "timeout", message))
        else:
            log.info("%s: no request within %g s; connection closed", peer(self.client), seconds)
        self.transport.close()


class Refused(Exception):
    """A request the upload guard answers itself."""

    def __init__(
        self, status: int, code: str, message: str, retry_after: int | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.retry_after = status, code, message, retry_after


class UploadGuard:
    """ASGI middleware: receive each request's body whole, within limits, before ``app`` runs.

    ``max_body`` bounds one body (413 at once when its Content-Length says more), ``memory`` the
    bytes of all bodies still arriving (503 beyond: bytes counted as they arrive, not as declared,
    so a declared size reserves nothing), ``per_client`` the bodies arriving at once from one
    client address (429). A body must keep arriving (:meth:`receive_body`: ``min_rate`` bytes/s
    after ``grace`` seconds, no pause over ``read_timeout``), else 408. A request that
    declares no body (no Content-Length or Transfer-Encoding) is not counted as an upload.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body: int,
        memory: int,
        per_client: int,
        read_timeout: float,
        min_rate: float,
        grace: float,
    ) -> None:
        self.app = app
        self.max_body = max_body
        self.memory = memory
        self.per_client = per_client
        self.read_timeout = read_timeout
        self.min_rate = min_rate
        self.grace = grace
        self.arriving = 0  # bytes of bodies still arriving, in all
        self.uploads: Counter[str] = Counter()  # bodies arriving, per client address

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length", b"")
        declared = bool(length.strip(b"0")) or b"transfer-encoding" in headers  # a body comes
        address = scope["client"][0] if scope.get("client") else ""
        try:
            if declared and self.uploads[address] >= self.per_client:
                raise Refused(
                    429,
                    "too_many_requests",
                    f"{address} is sending {self.per_client} uploads already, the most one "
                    f"address may; retry after {RETRY_AFTER_SECONDS} s",
                    RETRY_AFTER_SECONDS,
                )
            if length.isdigit() and int(length) > self.max_body:
                raise too_large(int(length), self.max_body)
            self.uploads[address] += declared
            try:
                body = await self.receive_body(receive)
            finally:
                self.uploads[address] -= declared
                if self.uploads[address] <= 0:
                    del self.uploads[address]
        except Refused as refused:
            if refused.status in (408, 429, 503):
                log.warning("%s: %s (%d)", peer(scope), refused.message, refused.status)
            await send_error(
                send, refused.status, refused.code, refused.message, refused.retry_after
            )
            return
        if body is None:
            return  # the client left: nobody to answer
        await self.app(scope, replay(body, receive), send)

    async def receive_body(self, receive: Receive) -> bytes | None:
        """The whole body, or None when the client disconnects; raises :class:`Refused`.

        The body starts with ``grace`` seconds in hand, each byte adds ``1 / min_rate`` s, and
        it never holds more than ``read_timeout`` s: running out is 408. So it may pause at most
        ``read_timeout`` s, and one that starts fast, then trickles, is cut within that.
        """
        start = last = time.monotonic()
        deadline = start + self.grace
        chunks: list[bytes] = []
        size = 0
        try:
            while True:
                now = time.monotonic()
                if now >= deadline:
                    if now - last >= self.read_timeout - 0.01:
                        reason = f"the upload sent nothing for {self.read_timeout:g} s"
                    else:
                        reason = (
                            f"the upload is arriving slower than {self.min_rate:g} bytes/s "
                            f"({size:,} bytes in {now - start:.1f} s)"
                        )
                    raise Refused(408, "timeout", reason)
                with anyio.move_on_after(deadline - now) as waited:
                    message = await receive()
                if waited.cancelled_caught:
                    deadline = min(deadline, time.monotonic())
                    continue  # refused above
                if message["type"] == "http.disconnect":
                    return None
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.max_body:
                    raise too_large(size, self.max_body)
                if self.arriving + len(chunk) > self.memory:
                    raise Refused(
                        503,
                        "overloaded",
                        "the server is receiving too many uploads at once; retry shortly",
                        RETRY_AFTER_SECONDS,
                    )
                self.arriving += len(chunk)
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)
                last = time.monotonic()
                deadline = min(deadline + len(chunk) / self.min_rate, last + self.read_timeout)
        finally:
            self.arriving -= sum(len(chunk) for chunk in chunks)


def too_large(size: int, limit: int) -> Refused:
    return Refused(
        413, "too_large", f"the upload has {size:,} bytes or more, more than the {limit:,} accepted"
    )


def replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives ``body`` whole once, then passes on to ``receive`` (which tells
    the app when the client disconnects)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


def log_config() -> dict:
    """uvicorn's logging configuration, with the ``ferlab.serve`` logger on its console handler."""
    from uvicorn.config import LOGGING_CONFIG

    config = {**LOGGING_CONFIG, "loggers": dict(LOGGING_CONFIG["loggers"])}
    config["loggers"]["ferlab.serve"] = {
        "handlers": ["default"],
        "level": "INFO",
        "propagate": False,
    }
    return config
