"""A minimal HTTP/1.1 server on the event loop for one resource, ``GET /metrics``.

prometheus-client's own server runs in a thread, and its collectors would then read the core's tables
while the loop changes them; served here, a scrape runs on the loop between two bursts of datagrams, and
reads everything as of one moment without a lock. It is as small as a scrape needs: one request per
connection (``Connection: close``), no body, the head read within ``READ_TIMEOUT`` and at most
``MAX_HEAD`` bytes, at most ``MAX_CLIENTS`` connections at once (the others are closed at once); anything
else is answered 400, 404 or 405 and closed. Nothing a client sends can do more than that.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

MAX_HEAD = 8192  # bytes of request line and headers
READ_TIMEOUT = 5.0  # seconds to send the head
WRITE_TIMEOUT = 10.0  # seconds to take the answer
MAX_CLIENTS = 16  # connections served at once
PATH = "/metrics"

Render = Callable[[str], Awaitable[tuple[bytes, str]]]  # the Accept header -> (body, content type)


class BadRequest(ValueError):
    """A request head that is not HTTP/1.x: answered 400."""


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # without the query
    accept: str  # the Accept header, "" without one


def parse_request(head: bytes) -> Request:
    """The request line and the Accept header of an HTTP/1.x request head (RFC 9112 section 3: ``method SP
    target SP version``, then ``name: value`` lines). Raises BadRequest for anything else."""
    text = head.decode("latin-1")  # every byte is a character: never fails
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0].isalpha() or not parts[1].startswith("/") or parts[2] not in (
        "HTTP/1.0", "HTTP/1.1"
    ):
        raise BadRequest("not an HTTP/1.x request line")
    accept = ""
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise BadRequest("a header line without a name")
        if name.lower() == "accept":
            accept = value.strip()
    return Request(parts[0], parts[1].partition("?")[0], accept)


class Server:
    """Serves ``render``'s answer at ``PATH`` on ``host``:``port``."""

    def __init__(self, host: str, port: int, render: Render) -> None:
        self.host = host
        self.port = port
        self._render = render
        self._server: asyncio.Server | None = None
        self._clients = 0

    async def open(self) -> None:
        """Listen; OSError when the address cannot be bound."""
        self._server = await asyncio.start_server(self._client, self.host, self.port, limit=MAX_HEAD)

    @property
    def bound(self) -> tuple[str, int]:
        """The address and port listened on (the port chosen, when 0 was asked)."""
        assert self._server is not None and self._server.sockets
        name = self._server.sockets[0].getsockname()
        return name[0], name[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._clients >= MAX_CLIENTS:
            writer.close()
            return
        self._clients += 1
        try:
            await self._answer(reader, writer)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, TimeoutError, OSError):
            pass  # a client that went away, sent too much, or too slowly: nothing to answer
        finally:
            self._clients -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
        try:
            request = parse_request(head)
        except BadRequest:
            await self._send(writer, "400 Bad Request", b"bad request\n")
            return
        if request.path != PATH:
            await self._send(writer, "404 Not Found", b"not found: the metrics are at /metrics\n")
        elif request.method not in ("GET", "HEAD"):
            await self._send(writer, "405 Method Not Allowed", b"GET or HEAD only\n", extra="Allow: GET, HEAD\r\n")
        else:
            body, content_type = await self._render(request.accept)
            await self._send(writer, "200 OK", body, content_type, head_only=request.method == "HEAD")

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, status: str, body: bytes,
                    content_type: str = "text/plain; charset=utf-8", head_only: bool = False, extra: str = "") -> None:
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n{extra}"
            "Connection: close\r\n\r\n".encode("latin-1")
        )
        if not head_only:
            writer.write(body)
        await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)
