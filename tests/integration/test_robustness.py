"""A running daemon holding bindings takes ~2000 hostile datagrams (random bytes, bit flips of authenticated
requests, truncations, random extension TLVs, replays, stale and wrongly keyed requests) and afterwards is
still running, still accepts a valid registration, and holds exactly the binding table it held before.

Every datagram is answered by at most one reply, and every reply it sends is a well-formed Registration
Reply authenticated with the key configured for its home address."""

from __future__ import annotations

import random
import time
from ipaddress import IPv4Address, IPv4Network

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import (
    KEY,
    OTHER_KEY,
    OTHER_SPI,
    WRONG_KEY,
    B,
    G,
    M,
    R_BIT,
    S,
    T,
    X_BIT,
    core,
    ident_parts,
    ntp_now,
    parse_reply,
    rrq,
    stable,
)

BATCH = 100  # datagrams between two synchronisation probes, well inside the daemon's receive buffer
HOME = IPv4Network("10.1.0.0/16")
OTHER = IPv4Network("10.2.0.0/16")
INTERESTING_TYPES = [0, 1, 32, 33, 34, 36, 38, 100, 127, 128, 130, 131, 134, 200, 255]


class Harness:
    """Sends datagrams, keeps the daemon's replies in step, and checks every reply it gets."""

    def __init__(self, ha) -> None:
        self.ha = ha
        self.mn = ha.mn()
        self.accepted: list[bytes] = []  # requests the daemon accepted while the table was built
        self.accepted_idents: set[int] = set()
        self.sent = 0
        self.replies = 0
        self.codes: dict[int, int] = {}
        self._probe_seq = 0

    def register(self, hoa: str, coa: str, flags: int = 0, lifetime: int = 900) -> None:
        request = rrq(hoa, coa, lifetime=lifetime, flags=flags)
        reply = self.mn.exchange(request)
        self.sent += 1
        assert reply.code == 0, reply
        self.accepted.append(request)
        self.accepted_idents.add(reply.identification)

    def send(self, datagram: bytes) -> None:
        self.mn.send(datagram[:4096])
        self.sent += 1
        if self.sent % BATCH == 0:
            self.sync()

    def sync(self) -> None:
        """A stale (133) request with a unique low half; once its reply is back, everything before it was
        processed. Checks every reply received on the way."""
        self._probe_seq += 1
        marker = 0x5EED0000 | self._probe_seq
        ident = (ntp_now(offset_seconds=-300) & ~0xFFFFFFFF) | marker
        self.mn.send(rrq("10.1.0.1", "192.0.2.99", ident))
        self.sent += 1
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            data = self.mn.receive(timeout=max(0.01, deadline - time.monotonic()))
            assert data is not None, "the daemon stopped answering"
            reply = self.check(data)
            if reply.code == 133 and reply.identification & 0xFFFFFFFF == marker:
                return
        pytest.fail("no reply to the synchronisation probe")

    def check(self, data: bytes):
        reply = parse_reply(data)
        self.replies += 1
        self.codes[reply.code] = self.codes.get(reply.code, 0) + 1
        hoa = IPv4Address(reply.home_address)
        if hoa in HOME:
            assert reply.authentic(KEY), data.hex()
        elif hoa in OTHER:
            assert reply.authentic(OTHER_KEY, OTHER_SPI), data.hex()
        else:
            pytest.fail(f"a reply for {hoa}, which no association covers: {data.hex()}")
        assert reply.code in {0, 129, 131, 133, 134, 135, 136, 139}, reply
        if reply.code == 0:  # only a retransmission of a current registration may be accepted here
            assert reply.identification in self.accepted_idents, reply
        return reply

    def table(self) -> tuple[list[dict], list[float]]:
        now = time.time()
        rows = self.ha.bindings_direct()
        return stable(rows), [now + r["remaining"] for r in rows]


@pytest.fixture(scope="module")
def harness(module_daemons):
    ha = module_daemons.start("robust", simultaneous_bindings=3)
    h = Harness(ha)
    h.register("10.1.0.1", "192.0.2.1")
    for i in range(3):
        h.register("10.1.0.2", f"192.0.2.2{i}", flags=S, lifetime=600 + i)
    h.register("10.1.0.3", "192.0.2.3", flags=B | T)
    h.register("10.1.0.4", "192.0.2.4")
    h.register("10.1.0.4", "192.0.2.5")  # supersedes the previous one: its request is now a pure replay
    rows, expiries = h.table()
    assert len(rows) == 6
    h.before = (rows, expiries, ha.counters())
    yield h
    h.mn.close()


# -- generators ------------------------------------------------------------------------------------


def random_tlv(rng: random.Random) -> bytes:
    t = rng.choice(INTERESTING_TYPES + [rng.randrange(256)])
    if t in (36, 38):  # long form: Type, Sub-Type, 16-bit Length
        length = rng.choice([0, 4, 20, 300, 0xFFFF, rng.randrange(64)])
        return bytes((t, rng.randrange(256))) + length.to_bytes(2, "big") + rng.randbytes(min(length, 64))
    length = rng.choice([0, 1, 3, 4, 20, 255, rng.randrange(40)])
    body = rng.randbytes(length if rng.random() < 0.8 else rng.randrange(length + 1))  # sometimes overruns
    return bytes((t, length)) + body


def flip(data: bytes, rng: random.Random, n: int | None = None) -> bytes:
    out = bytearray(data)
    for _ in range(n or rng.randint(1, 8)):
        out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out) if bytes(out) != data else bytes(out[:-1])


def denied_but_valid(rng: random.Random) -> bytes:
    """Authenticated, fresh, and refused by policy: must not touch the table."""
    choice = rng.randrange(7)
    hoa = rng.choice(["10.1.0.1", "10.1.0.2", "10.1.0.3", "10.1.7.7"])
    if choice == 0:
        return rrq(hoa, "192.0.2.77", flags=rng.choice([G, M, G | S]))
    if choice == 1:
        return rrq(hoa, "192.0.2.77", flags=rng.choice([X_BIT, R_BIT, X_BIT | S]))
    if choice == 2:
        return rrq(hoa, "192.0.2.77", home_agent=rng.choice(["127.0.0.99", "10.1.255.255", "0.0.0.0"]))
    if choice == 3:
        return rrq("10.2.0.9", "192.0.2.77", key=OTHER_KEY, spi=OTHER_SPI)
    if choice == 4:
        return rrq("10.1.0.2", "192.0.2.77", flags=S)  # a fourth simultaneous binding: 135
    if choice == 5:
        return rrq(hoa, "192.0.2.77", ntp_now(offset_seconds=rng.choice([-3600, -60, 60, 3600])))
    return rrq(hoa, rng.choice(["192.0.2.77", hoa, "224.0.0.1", "255.255.255.255"]), key=WRONG_KEY)


def hostile(rng: random.Random, accepted: list[bytes]) -> bytes:
    op = rng.randrange(10)
    if op == 0:
        return rng.randbytes(rng.randrange(121))
    if op == 1:
        return b"\x01" + rng.randbytes(rng.randrange(23, 90))
    base = rng.choice(accepted)
    if op == 2:
        return flip(base, rng)
    if op == 3:
        return base[: rng.randrange(len(base))]
    if op == 4:  # a replay with extensions after the MHAE
        return base + b"".join(random_tlv(rng) for _ in range(rng.randint(1, 3)))
    if op == 5:  # extensions inserted before the MHAE (the authenticator no longer covers the message)
        return base[:24] + b"".join(random_tlv(rng) for _ in range(rng.randint(1, 3))) + base[24:]
    if op == 6:  # a header followed by garbage extensions
        return base[:24] + b"".join(random_tlv(rng) for _ in range(rng.randint(0, 4)))
    if op == 7:  # a fresh, correctly signed request, then damaged
        fresh = rrq(rng.choice(["10.1.0.1", "10.1.0.2", "10.1.0.9"]), "192.0.2.88", flags=rng.choice([0, S, T]))
        return flip(fresh, rng) if rng.random() < 0.7 else fresh[: rng.randrange(len(fresh))]
    if op == 8:
        return denied_but_valid(rng)
    return base  # a plain replay


# -- the tests -------------------------------------------------------------------------------------


def seeded_stream(harness, count: int, seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(count):
        harness.send(hostile(rng, harness.accepted))
    harness.sync()


def test_seeded_stream(harness):
    seeded_stream(harness, 1500, seed=5944)
    assert harness.ha.running()


datagram = st.one_of(
    st.binary(max_size=120),
    st.binary(min_size=23, max_size=80).map(lambda b: b"\x01" + b),
    st.tuples(st.integers(0, 9), st.lists(st.integers(0, 10**6), min_size=1, max_size=8), st.binary(max_size=40)),
)


@settings(max_examples=80, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(st.lists(datagram, min_size=1, max_size=8))
def test_hypothesis_stream(harness, items):
    for item in items:
        if isinstance(item, bytes):
            harness.send(item)
            continue
        which, positions, tail = item
        base = harness.accepted[which % len(harness.accepted)]
        mutated = bytearray(base)
        kind = positions[0] % 4
        if kind == 0:  # bit flips
            for p in positions:
                mutated[p % len(mutated)] ^= 1 << (p // len(mutated) % 8)
            if bytes(mutated) == base:
                mutated = mutated[:-1]
        elif kind == 1:  # truncation, then maybe a tail of garbage
            mutated = mutated[: positions[-1] % len(base)] + tail
        elif kind == 2:  # arbitrary bytes after the MHAE (extensions a foreign agent might add)
            mutated += tail
        else:  # arbitrary bytes before the MHAE
            mutated = mutated[:24] + tail + mutated[24:]
        harness.send(bytes(mutated))
    harness.sync()


def test_afterwards_same_table_and_still_serving(harness):
    """Runs after the two streams (file order); tops the stream up when run on its own."""
    ha = harness.ha
    if harness.sent < 1900:
        seeded_stream(harness, 1900 - harness.sent, seed=434)
    before_rows, before_expiries, before_counters = harness.before
    rows, expiries = harness.table()
    assert ha.running()
    assert rows == before_rows
    for was, now in zip(before_expiries, expiries, strict=True):
        assert abs(was - now) < 0.5, "a binding's lifetime was extended or shortened"

    counters = ha.counters()
    sent_since = harness.sent - 7  # the seven registrations that built the table came before the snapshot
    assert counters["requests"] - before_counters["requests"] == sent_since, "datagrams lost or double-counted"
    assert counters["accepted"] == before_counters["accepted"], "something was accepted as a new registration"
    assert counters.get("accepted.deregistration", 0) == 0
    assert harness.sent >= 1800, harness.sent
    assert set(harness.codes) >= {131, 133}, harness.codes
    assert "Traceback" not in ha.stderr() and "Exception in callback" not in ha.stderr()

    # still answers a valid registration, and only that one binding is new
    ident = ntp_now()
    reply = harness.mn.exchange(rrq("10.1.0.50", "192.0.2.50", ident))
    assert (reply.code, reply.identification) == (0, ident) and reply.authentic()
    after = stable(ha.bindings_cli())
    added = [r for r in after if r not in before_rows]
    assert [r for r in after if r in before_rows] == before_rows
    assert core(added) == [{"home_address": "10.1.0.50", "care_of_address": "192.0.2.50", "lifetime": 600,
                            "identification": ident, "flags": 0}]
    assert ident_parts(ident)[0] > 0
