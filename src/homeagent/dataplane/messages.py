"""The messages between the daemon's handle (``dataplane.userspace``) and the forwarding process.

They travel on a ``SOCK_SEQPACKET`` socket pair, so each message is one datagram with its boundaries kept by
the kernel and no framing of ours; a message is at most ``MAX_MESSAGE`` bytes, well under the socket's send
buffer. The first byte says what it is:

  daemon -> forwarder
    ``T`` set tunnels: one or more entries ``home(4) count(1)`` then ``count`` times
          ``care_of(4) source(4) reverse(1)``; count 0: no tunnel. Many home addresses fit one message,
          so a burst of changes (a table download, a takeover) costs few system calls.
    ``S`` serve: ``serving(1)``.
    ``C`` counters, please: ``request(4) tunnels(1)``; tunnels 1: with every tunnel's own counters (a
          table of many tunnels makes that a long piece of work for the forwarder: ask for it when shown).
    ``B`` barrier: ``mark(4)``; say ``b`` with the same mark once every change sent before it is in
          effect (the tunnels in the engine, the routes in the kernel).
    ``P`` are you there: ``mark(4)``; answered ``p`` with the same mark as soon as it is read, ahead of
          any backlog (the handle's watchdog).
  forwarder -> daemon
    ``R`` ready: the TUN device is up and the sockets open; JSON with its name, index and MTU.
    ``c`` counters: ``request(4) last(1)`` then a piece of one JSON document; the pieces of one request
          are concatenated until ``last`` is 1 (a table of many tunnels needs more than one message).
    ``b`` applied: ``mark(4)``, the answer to ``B``.
    ``p`` here: ``mark(4)``, the answer to ``P``.

Integers are big-endian. Anything else, or a message cut short, raises ``ParseError``: the forwarder logs
and ignores it, the handle restarts a forwarder that talks nonsense.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Iterator
from typing import NamedTuple

from homeagent.dataplane import Tunnel
from homeagent.wire.errors import ParseError

MAX_MESSAGE = 32768
MAX_TUNNELS = 255  # per home address: one count byte (RFC 5944 S flag bindings are few)
_ENTRY = struct.Struct("!IB")
_TUNNEL = struct.Struct("!IIB")
_ONE_TUNNEL = struct.Struct("!IBIIB")  # an entry of the usual home address, one tunnel: one pack, not three
_SERVE = struct.Struct("!B")
_REQUEST = struct.Struct("!IB")
_PART = struct.Struct("!IB")
_MARK = struct.Struct("!I")


class SetTunnels(NamedTuple):
    entries: list[tuple[int, tuple[Tunnel, ...]]]


class Serve(NamedTuple):
    serving: bool


class CountersRequest(NamedTuple):
    request: int
    tunnels: bool = False


class Barrier(NamedTuple):
    mark: int


class Applied(NamedTuple):
    mark: int


class Ping(NamedTuple):
    mark: int


class Pong(NamedTuple):
    mark: int


class Ready(NamedTuple):
    info: dict[str, object]


class CountersPart(NamedTuple):
    request: int
    last: bool
    chunk: bytes


Message = SetTunnels | Serve | CountersRequest | Barrier | Ping | Ready | CountersPart | Applied | Pong


def encode_tunnels(entries: Iterable[tuple[int, tuple[Tunnel, ...]]]) -> Iterator[bytes]:
    """As few ``T`` messages as carry ``entries``, in order."""
    parts = [b"T"]
    size = 1
    for home, tunnels in entries:
        if len(tunnels) == 1:
            t = tunnels[0]
            entry = _ONE_TUNNEL.pack(home, 1, t.care_of_address, t.source, bool(t.reverse))
        elif len(tunnels) > MAX_TUNNELS:
            raise ValueError(f"{len(tunnels)} tunnels for one home address (at most {MAX_TUNNELS})")
        else:
            entry = _ENTRY.pack(home, len(tunnels)) + b"".join(
                _TUNNEL.pack(t.care_of_address, t.source, bool(t.reverse)) for t in tunnels)
        if size + len(entry) > MAX_MESSAGE:
            yield b"".join(parts)
            parts, size = [b"T"], 1
        parts.append(entry)
        size += len(entry)
    if size > 1:
        yield b"".join(parts)


def encode_serve(serving: bool) -> bytes:
    return b"S" + _SERVE.pack(serving)


def encode_counters_request(request: int, tunnels: bool = False) -> bytes:
    return b"C" + _REQUEST.pack(request & 0xFFFFFFFF, tunnels)


def encode_barrier(mark: int) -> bytes:
    return b"B" + _MARK.pack(mark & 0xFFFFFFFF)


def encode_applied(mark: int) -> bytes:
    return b"b" + _MARK.pack(mark & 0xFFFFFFFF)


def encode_ping(mark: int) -> bytes:
    return b"P" + _MARK.pack(mark & 0xFFFFFFFF)


def encode_pong(mark: int) -> bytes:
    return b"p" + _MARK.pack(mark & 0xFFFFFFFF)


def encode_ready(info: dict[str, object]) -> bytes:
    return b"R" + json.dumps(info).encode()


def encode_counters(request: int, counters: dict[str, object]) -> Iterator[bytes]:
    """The ``c`` messages carrying ``counters`` as one JSON document."""
    document = json.dumps(counters, separators=(",", ":")).encode()
    room = MAX_MESSAGE - 1 - _PART.size
    for start in range(0, max(len(document), 1), room):
        last = start + room >= len(document)
        yield b"c" + _PART.pack(request & 0xFFFFFFFF, last) + document[start:start + room]


def decode(message: bytes) -> Message:
    if not message:
        raise ParseError("empty control message")
    kind, body = message[:1], message[1:]
    try:
        if kind == b"T":
            return SetTunnels(_decode_tunnels(body))
        if kind == b"S" and len(body) == _SERVE.size:
            return Serve(bool(body[0]))
        if kind == b"C" and len(body) == _REQUEST.size:
            request, tunnels = _REQUEST.unpack(body)
            if tunnels > 1:
                raise ParseError(f"counters request: tunnels flag {tunnels}")
            return CountersRequest(request, bool(tunnels))
        if kind == b"B" and len(body) == _MARK.size:
            return Barrier(_MARK.unpack(body)[0])
        if kind == b"b" and len(body) == _MARK.size:
            return Applied(_MARK.unpack(body)[0])
        if kind == b"P" and len(body) == _MARK.size:
            return Ping(_MARK.unpack(body)[0])
        if kind == b"p" and len(body) == _MARK.size:
            return Pong(_MARK.unpack(body)[0])
        if kind == b"R":
            info = json.loads(body)
            if not isinstance(info, dict):
                raise ParseError("ready: not a JSON object")
            return Ready(info)
        if kind == b"c" and len(body) >= _PART.size:
            request, last = _PART.unpack_from(body)
            return CountersPart(request, bool(last), bytes(body[_PART.size:]))
    except (ValueError, RecursionError) as exc:  # json.JSONDecodeError, UnicodeDecodeError are ValueErrors
        if isinstance(exc, ParseError):
            raise
        raise ParseError(f"control message {kind!r}: {exc}") from None
    raise ParseError(f"control message {kind!r} of {len(message)} bytes")


def _decode_tunnels(body: bytes) -> list[tuple[int, tuple[Tunnel, ...]]]:
    entries = []
    at = 0
    while at < len(body):
        if at + _ENTRY.size > len(body):
            raise ParseError("set tunnels: entry cut short")
        home, count = _ENTRY.unpack_from(body, at)
        at += _ENTRY.size
        if at + count * _TUNNEL.size > len(body):
            raise ParseError("set tunnels: tunnels cut short")
        tunnels = []
        for _ in range(count):
            care_of, source, reverse = _TUNNEL.unpack_from(body, at)
            at += _TUNNEL.size
            if reverse > 1:
                raise ParseError(f"set tunnels: reverse flag {reverse}")
            tunnels.append(Tunnel(care_of, source, bool(reverse)))
        entries.append((home, tuple(tunnels)))
    if not entries:
        raise ParseError("set tunnels: no entry")
    return entries
