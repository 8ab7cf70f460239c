"""The limit a Python Home Agent cannot beat: a UDP server that does only what no Home Agent can skip.

Parse the 24-byte Registration Request header, verify its HMAC-MD5 Mobile-Home authenticator, sign and send
a 20-byte reply, nothing else: no binding table, no replay check, no extension walk. Written as fast as
Python allows: a non-blocking socket drained in a loop from ``loop.add_reader``, locals bound outside the
loop, and HMAC-MD5 from keyed inner/outer MD5 states prepared once (a third of the cost of
``hmac.digest``, which sets the key up on every call), of CPython's built-in MD5 where there is one (its
state copy is a memory copy; OpenSSL's allocates a context), as the Home Agent's are (wire/auth.py).
``bench/registrations.py`` runs it beside the real daemon with the same client.

    python bench/baseline_server.py ADDRESS PORT SPI KEYHEX
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import signal
import socket
import struct
import sys
from collections.abc import Callable

try:
    from _md5 import md5
except ImportError:
    md5 = hashlib.md5


def handler(spi: int, key: bytes) -> Callable[[bytes], bytes | None]:
    """The minimal handling of one request: its reply, or None (too short, or the authenticator fails).
    ``bench/registrations.py`` also times it in process, beside the Home Agent's."""
    header = struct.Struct("!BBHIIIQ")
    reply = struct.Struct("!BBHIIQ")
    ext = struct.pack("!BBI", 32, 20, spi)
    padded = key.ljust(64, b"\0")
    inner_copy = md5(bytes(b ^ 0x36 for b in padded)).copy
    outer_copy = md5(bytes(b ^ 0x5C for b in padded)).copy
    compare = hmac.compare_digest

    def hmac_md5(data: bytes) -> bytes:
        inner = inner_copy()
        inner.update(data)
        outer = outer_copy()
        outer.update(inner.digest())
        return outer.digest()

    def handle(data: bytes) -> bytes | None:
        if len(data) < 46:
            return None
        _, _, lifetime, hoa, ha, _, ident = header.unpack_from(data)
        if not compare(hmac_md5(data[:30]), data[30:46]):
            return None
        covered = reply.pack(3, 0, lifetime, hoa, ha, ident) + ext
        return covered + hmac_md5(covered)

    return handle


def serve(address: str, port: int, spi: int, key: bytes) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((address, port))
    sock.setblocking(False)
    handle = handler(spi, key)
    recvfrom = sock.recvfrom
    sendto = sock.sendto

    def drain() -> None:
        for _ in range(512):
            try:
                data, source = recvfrom(2048)
            except BlockingIOError:
                return
            answer = handle(data)
            if answer is not None:
                sendto(answer, source)

    loop = asyncio.new_event_loop()
    loop.add_reader(sock.fileno(), drain)
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    loop.add_signal_handler(signal.SIGINT, loop.stop)
    loop.run_forever()


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), bytes.fromhex(sys.argv[4]))
