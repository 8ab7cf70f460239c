"""A load client that never makes the server wait for it: it busy-polls.

``homeagent mn load`` blocks in ``select`` when its window is full, so each burst of replies has to wake
it, and a server that answers faster than the client wakes measures the client. This one spins on a
non-blocking socket instead: every request is built and signed before the clock starts, ``window`` of them
are kept in flight, and the loop does nothing but send, receive and note which request a reply answers.
Every reply is authenticated (its Mobile-Home authenticator verified with the key, its home address and
Identification those of a request we sent, its code an acceptance) before it is counted: after the timed
part, so that the client's own work stays off the server's path. The rate counts only what verified.

    python bench/busy_client.py ADDRESS PORT [--spi 256] [--key HEX] [--first-home-address 10.1.0.1]
        [--mobile-nodes 10000] [--care-of 192.0.2.1] [--duration 3] [--window 128] [--ceiling 300000]

Prints one JSON line: sent, replies, accepted, invalid, lost, seconds, rate (accepted per second), and
``cpu`` (the client's CPU seconds over the timed part: near ``seconds``, as a busy-poller's should be).
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from ipaddress import IPv4Address
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import KEY, SPI  # noqa: E402

from homeagent.core.replay import LOW32, ntp_identification  # noqa: E402
from homeagent.wire.auth import Algorithm, SecurityAssociation  # noqa: E402
from homeagent.wire.errors import ParseError  # noqa: E402
from homeagent.wire.registration import RegistrationReply, RegistrationRequest  # noqa: E402

SWEEP = 0.25  # seconds a request may wait for its reply before it counts as lost and frees its slot


def build(sa: SecurityAssociation, home_agent: int, first: int, nodes: int, care_of: int, count: int,
          at: float, lifetime: int = 600) -> tuple[list[bytes], list[int]]:
    """``count`` signed requests, mobile nodes in turn, Identifications strictly increasing from the wall
    time ``at`` (so every one is newer than its node's last), and their home addresses."""
    base = ntp_identification(at)
    datagrams, homes = [], []
    for k in range(count):
        hoa = first + k % nodes
        request = RegistrationRequest(0, lifetime, hoa, home_agent, care_of, base + k)
        datagrams.append(sa.sign(request.header_bytes()))
        homes.append(hoa)
    return datagrams, homes


def run(address: str, port: int, datagrams: list[bytes], duration: float, window: int) -> dict:
    """Send and receive as fast as the server answers for ``duration`` seconds, then collect what is still
    in flight for up to ``SWEEP`` seconds. Returns the raw replies with the request index each answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.connect((address, port))
    sock.setblocking(False)
    send, recv, clock = sock.send, sock.recv, time.monotonic
    first_low = int.from_bytes(datagrams[0][20:24], "big")  # the low 32 bits of request 0's Identification
    pending: dict[int, float] = {}  # request index -> sent at
    replies: list[tuple[int, bytes]] = []
    total = len(datagrams)
    sent = lost = 0
    cpu = time.process_time()
    start = now = clock()
    end, next_sweep = start + duration, start + SWEEP
    try:
        while True:
            if now < end:
                while len(pending) < window and sent < total:
                    try:
                        send(datagrams[sent])
                    except (BlockingIOError, ConnectionRefusedError):
                        break
                    pending[sent] = now
                    sent += 1
            if not pending and (now >= end or sent == total):
                break
            try:
                data = recv(2048)
            except (BlockingIOError, ConnectionRefusedError):
                now = clock()
                if now >= next_sweep:
                    stale = [i for i, at in pending.items() if now - at > SWEEP]
                    for i in stale:
                        del pending[i]
                    lost += len(stale)
                    next_sweep = now + SWEEP / 4
                    if now >= end + SWEEP:
                        lost += len(pending)
                        break
                continue
            index = (int.from_bytes(data[16:20], "big") - first_low) & LOW32 if len(data) >= 20 else -1
            if pending.pop(index, None) is not None:
                replies.append((index, data))
            now = clock()
        seconds = clock() - start
    finally:
        sock.close()
    return {"sent": sent, "lost": lost, "seconds": seconds, "cpu": time.process_time() - cpu,
            "replies": replies, "exhausted": sent >= total}


def authenticated(sa: SecurityAssociation, homes: list[int], first_ident: int,
                  replies: list[tuple[int, bytes]]) -> tuple[int, int]:
    """(accepted, invalid): replies whose authenticator verifies and that answer the request they claim to
    (its home address and whole Identification), accepted or not."""
    accepted = invalid = 0
    for index, data in replies:
        try:
            reply = RegistrationReply.parse(data)
        except ParseError:
            invalid += 1
            continue
        mhae = reply.extensions[0] if len(reply.extensions) == 1 else None
        if (mhae is None or reply.home_address != homes[index] or reply.identification != first_ident + index
                or not sa.verify(reply.raw, mhae)):
            invalid += 1
        elif reply.code < 64:
            accepted += 1
    return accepted, invalid


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("address")
    p.add_argument("port", type=int)
    p.add_argument("--spi", type=int, default=SPI)
    p.add_argument("--key", default=KEY)
    p.add_argument("--first-home-address", type=IPv4Address, default=IPv4Address("10.1.0.1"))
    p.add_argument("--mobile-nodes", type=int, default=10000)
    p.add_argument("--care-of", type=IPv4Address, default=IPv4Address("192.0.2.1"))
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--window", type=int, default=128)
    p.add_argument("--ceiling", type=float, default=300_000,
                   help="the most requests a second to prepare for (prepared before the clock starts)")
    args = p.parse_args()

    sa = SecurityAssociation(args.spi, Algorithm.HMAC_MD5, bytes.fromhex(args.key))
    count = int(args.ceiling * args.duration)
    # The Identifications carry the time of the run's middle, so that all of them are within the Home
    # Agent's replay tolerance (7 s by default) of its clock while they arrive, even on a long run.
    shape = (sa, int(IPv4Address(args.address)), int(args.first_home_address), args.mobile_nodes,
             int(args.care_of))
    t = time.perf_counter()
    build(*shape, 1000, time.time())
    building = (time.perf_counter() - t) * count / 1000
    datagrams, homes = build(*shape, count, time.time() + building + args.duration / 2)
    first_ident = int.from_bytes(datagrams[0][16:24], "big")
    out = run(args.address, args.port, datagrams, args.duration, args.window)
    accepted, invalid = authenticated(sa, homes, first_ident, out.pop("replies"))
    if out["exhausted"]:
        print("busy_client: every prepared request was sent before the time was up (the rate is over the "
              "shorter run): raise --ceiling", file=sys.stderr)
    print(json.dumps({**out, "replies": accepted + invalid, "accepted": accepted, "invalid": invalid,
                      "rate": accepted / out["seconds"] if out["seconds"] else 0.0}))


if __name__ == "__main__":
    main()
