"""Byte-exact vectors of the redundancy protocol (docs/protocol.md): ``redundancy-*.txt`` beside this file.

Every vector is built here by hand with ``struct``, ``hmac`` and ``hashlib`` from the layouts in
docs/protocol.md (protocol version 3), without homeagent's encoder; ``python
tests/vectors/test_redundancy_vectors.py`` writes the files from that builder (``make_vectors.py`` makes
the registration vectors). Each file records the sender and the receiver it was sealed between, and the
8-byte pseudo-header (their addresses) the authenticator covers but the datagram does not carry. The tests
check that (a) each file holds exactly the hand-built bytes, (b) our encoder and ``seal`` make the same
bytes and ``parse_body``/``unseal`` read back every field, (c) ``unseal`` accepts each vector for its own
conversation only (not with sender and receiver swapped, nor for any other pair) and refuses it with any
one byte changed, with a wrong key, SPI or algorithm, and (d) a Home Agent takes the Binding Update
vectors from a member, at the receiver's address only.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path

import pytest

try:  # under pytest (tests/ on the path), or run as a script from this folder
    from vectors import vectorfile
except ImportError:  # pragma: no cover
    import vectorfile  # type: ignore[no-redef]

from homeagent.wire.auth import Algorithm, SecurityAssociation
from homeagent.wire.errors import ParseError
from homeagent.wire.redundancy import (
    HA_HA_AUTH,
    MOBILE_NODE_BINDINGS,
    VERSION,
    Advertisement,
    BindingRecord,
    BindingTableReply,
    BindingTableReplyAck,
    BindingTableRequest,
    BindingUpdate,
    BindingUpdateAck,
    MobileNodeBindings,
    SealError,
    parse_body,
    parse_messages,
    seal,
    unseal,
)

HERE = Path(__file__).parent
NTP_EPOCH_OFFSET = 2_208_988_800
T0 = 1_700_000_000  # 2023-11-14T22:13:20Z
NTP_T0 = T0 + NTP_EPOCH_OFFSET  # 0xE8FE6F80


def ip(text: str) -> int:
    return int(IPv4Address(text))


def held(timestamp: int) -> int:
    """The Identification a member holds (and our dataclasses carry) for an NTP ``timestamp`` on the wire:
    counted from 2000-01-01 (Unix 946,684,800) rather than 1900, modulo 2**64 (wire/era.py)."""
    return (timestamp - ((946_684_800 + NTP_EPOCH_OFFSET) << 32)) & ((1 << 64) - 1)


SENDER = ip("192.0.2.1")  # the member that sends every vector
RECEIVER = ip("192.0.2.2")  # the member it is sealed for
THIRD = ip("192.0.2.3")  # another member
GROUP = ip("239.1.2.3")  # a multicast group
VIRTUAL = ip("192.0.2.100")  # the group's virtual address: what mobile nodes register with
HOA, HOA2 = ip("10.1.0.5"), ip("10.1.0.6")
COA, COA2 = ip("198.51.100.7"), ip("198.51.100.8")

IDENT = (NTP_T0 << 32) | 0x12345678  # the registration's Identification
IDENT_EARLIER = ((NTP_T0 - 60) << 32) | 0x00ABCDEF  # an older binding's, kept with S
IDENT_HOA2 = ((NTP_T0 - 3600) << 32) | 0x0000FFFF  # HOA2 de-registered an hour ago: Identification only
REQUEST_IDENT = ((NTP_T0 - 5) << 32) | 0x40000000  # the Binding Table Request's, naming the transfer
TIMESTAMP = (NTP_T0 << 32) | 0x80000000  # the seal's: T0 + 0.5 s
NOW = T0 + 0.75  # when the receiver opens them

KEYS = {  # algorithm: (SPI, key, digest size)
    "hmac-md5": (1000, bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c"), 16),
    "hmac-sha256": (1001, bytes(range(0x40, 0x60)), 32),
}
MESSAGES = (
    "binding-update",
    "binding-update-bindings",
    "binding-update-ack",
    "binding-table-request",
    "binding-table-reply",
    "binding-table-reply-ack",
    "advertisement",
)
ALL = [f"redundancy-{m}-{a}.txt" for m in MESSAGES for a in KEYS]
FIXED_SIZE = {  # docs/protocol.md: the fixed part of each message, before extensions and addresses
    200: 28, 201: 16, 202: 12, 203: 20, 204: 16, 205: 8,
}


def ipstr(value: int) -> str:
    return str(IPv4Address(value))


def ntp_comment(value: int) -> str:
    return f"NTP {value >> 32} s + fraction 0x{value & 0xFFFFFFFF:08X}"


# -- the hand-built vectors --------------------------------------------------------------------------


@dataclass
class Vector:
    name: str
    title: str = ""
    notes: list[str] = field(default_factory=list)
    meta: dict[str, str] = field(default_factory=dict)
    fields: list[tuple[str, bytes, str]] = field(default_factory=list)

    def add(self, name: str, value: bytes, comment: str = "") -> None:
        self.fields.append((name, value, comment))

    @property
    def message(self) -> bytes:
        return b"".join(v for _, v, _ in self.fields)

    def value(self, name: str) -> bytes:
        for n, v, _ in self.fields:
            if n == name:
                return v
        raise KeyError(name)

    def int(self, name: str) -> int:
        return int.from_bytes(self.value(name), "big")

    def offset(self, name: str) -> int:
        at = 0
        for n, v, _ in self.fields:
            if n == name:
                return at
            at += len(v)
        raise KeyError(name)

    def has(self, name: str) -> bool:
        return any(n == name for n, _, _ in self.fields)

    @property
    def body(self) -> bytes:
        return self.message[: self.offset("auth.type")]

    @property
    def association(self) -> SecurityAssociation:
        return SecurityAssociation(int(self.meta["spi"]), Algorithm(self.meta["algorithm"]),
                                   bytes.fromhex(self.meta["key"]))

    def render(self) -> str:
        lines = [f"# {self.name}: {self.title}"] + [f"# {n}" if n else "#" for n in self.notes] + ["#"]
        lines += [f"@{k} {v}" for k, v in self.meta.items()]
        width = max(len(n) for n, _, _ in self.fields)
        hwidth = max(len(v.hex()) for _, v, _ in self.fields)
        lines += [f"{n:<{width}}  {v.hex():<{hwidth}}  # {c}" for n, v, c in self.fields]
        return "\n".join(lines) + "\n"


def add_binding(v: Vector, prefix: str, coa: int, ha: int, ident: int, lifetime: int, flags: int, ms: int) -> None:
    """One binding of a Mobile Node Bindings extension: 24 bytes (docs/protocol.md)."""
    v.add(f"{prefix}.care_of_address", struct.pack("!I", coa), ipstr(coa))
    v.add(f"{prefix}.home_agent", struct.pack("!I", ha), ipstr(ha))
    v.add(f"{prefix}.identification", struct.pack("!Q", ident), ntp_comment(ident))
    v.add(f"{prefix}.lifetime", struct.pack("!H", lifetime), f"granted {lifetime} s")
    v.add(f"{prefix}.flags", struct.pack("!B", flags), f"registration flags 0x{flags:02X}")
    v.add(f"{prefix}.reserved", b"\x00", "reserved")
    v.add(f"{prefix}.remaining_ms", struct.pack("!I", ms), f"{ms} ms left")


def add_node(v: Vector, prefix: str, hoa: int, ident: int, bindings: list[tuple]) -> None:
    """A Mobile Node Bindings extension, type 101, Length = 12 + 24 n."""
    v.add(f"{prefix}.type", bytes([101]), "101: Mobile Node Bindings extension")
    v.add(f"{prefix}.length", bytes([12 + 24 * len(bindings)]), f"12 + 24 x {len(bindings)} binding(s)")
    v.add(f"{prefix}.home_address", struct.pack("!I", hoa), ipstr(hoa))
    v.add(f"{prefix}.identification", struct.pack("!Q", ident), f"last accepted: {ntp_comment(ident)}")
    for i, b in enumerate(bindings):
        add_binding(v, f"{prefix}.b{i}", *b)


def pseudo_header(sender: int, receiver: int) -> bytes:
    """Sender Address | Receiver Address: covered by the authenticator, never sent (docs/protocol.md)."""
    return struct.pack("!II", sender, receiver)


def add_seal(v: Vector, algorithm: str) -> None:
    """The Home Agent - Home Agent Authentication extension (version 3), type 100, last; HMAC over the
    pseudo-header (sender's and receiver's addresses) and every byte before the authenticator (the
    extension's Type, Length, Version, Reserved, SPI and Timestamp included)."""
    spi, key, size = KEYS[algorithm]
    v.add("auth.type", bytes([100]), "100: Home Agent - Home Agent Authentication extension")
    v.add("auth.length", bytes([14 + size]),
          f"{14 + size} = Version (1) + Reserved (1) + SPI (4) + Timestamp (8) + authenticator ({size})")
    v.add("auth.version", bytes([3]), "version 3 of the redundancy protocol")
    v.add("auth.reserved", bytes([0]), "reserved")
    v.add("auth.spi", struct.pack("!I", spi), f"SPI {spi}")
    v.add("auth.timestamp", struct.pack("!Q", TIMESTAMP), f"sender's clock, {ntp_comment(TIMESTAMP)} (T0 + 0.5 s)")
    digest = hashlib.md5 if algorithm == "hmac-md5" else hashlib.sha256
    name = "HMAC-MD5" if algorithm == "hmac-md5" else "HMAC-SHA256"
    covered = pseudo_header(SENDER, RECEIVER) + v.message
    v.add("auth.authenticator", hmac.new(key, covered, digest).digest(),
          f"{name}(key, @pseudo_header || every byte above)")


def build(message: str, algorithm: str) -> Vector:
    spi, key, _ = KEYS[algorithm]
    v = Vector(f"redundancy-{message}-{algorithm}.txt")
    v.meta = {"message": message, "algorithm": algorithm, "spi": str(spi), "key": key.hex(),
              "sender": ipstr(SENDER), "receiver": ipstr(RECEIVER),
              "pseudo_header": pseudo_header(SENDER, RECEIVER).hex(), "now": repr(NOW)}
    if message in ("binding-update", "binding-update-bindings"):
        with_node = message == "binding-update-bindings"
        flags, granted = (0x82, 600) if with_node else (0x02, 600)
        remaining = 0 if with_node else 599_750
        fixed = struct.pack("!BBHIIIIQ", 200, flags, granted, remaining, HOA, VIRTUAL, COA2 if with_node else COA,
                            IDENT)
        v.title = ("Binding Update (FIG 10) of simultaneous bindings, with a Mobile Node Bindings extension"
                   if with_node else "Binding Update (FIG 10): the node holds exactly the fixed part's binding")
        v.notes += ["The fixed 28-byte part, built by hand:",
                    f'  struct.pack("!BBHIIIIQ", 200, 0x{flags:02X}, {granted}, {remaining}, 0x{HOA:08X}, '
                    f"0x{VIRTUAL:08X}, 0x{(COA2 if with_node else COA):08X}, 0x{IDENT:016X})",
                    f"  == bytes.fromhex('{fixed.hex()}')"]
        v.add("type", fixed[0:1], "200: Binding Update")
        v.add("flags", fixed[1:2], f"the registration's flags 0x{flags:02X}" + (" (S, T)" if with_node else " (T)"))
        v.add("granted_lifetime", fixed[2:4], f"{granted} s")
        v.add("remaining_ms", fixed[4:8], f"{remaining} ms" + (" (the extension carries the state)" if with_node else ""))
        v.add("home_address", fixed[8:12], ipstr(HOA))
        v.add("home_agent", fixed[12:16], f"{ipstr(VIRTUAL)}, the virtual address the node registered with")
        v.add("care_of_address", fixed[16:20], ipstr(COA2 if with_node else COA))
        v.add("identification", fixed[20:28], f"the registration's: {ntp_comment(IDENT)}")
        if with_node:
            v.notes += ["The node's whole state after the registration: two simultaneous bindings."]
            add_node(v, "mnb", HOA, IDENT, [
                (COA, VIRTUAL, IDENT_EARLIER, 600, 0x80, 540_000),
                (COA2, VIRTUAL, IDENT, 600, 0x82, 599_750),
            ])
    elif message == "binding-update-ack":
        fixed = struct.pack("!BBHIQ", 201, 0, 0, HOA, IDENT)
        v.title = "Binding Update Ack (FIG 11), code 0: applied"
        v.notes += [f"  struct.pack(\"!BBHIQ\", 201, 0, 0, 0x{HOA:08X}, 0x{IDENT:016X})"]
        v.add("type", fixed[0:1], "201: Binding Update Ack")
        v.add("code", fixed[1:2], "0: applied")
        v.add("reserved", fixed[2:4], "reserved")
        v.add("home_address", fixed[4:8], ipstr(HOA))
        v.add("identification", fixed[8:16], f"echoed: {ntp_comment(IDENT)}")
    elif message == "binding-table-request":
        fixed = struct.pack("!BBHQ", 202, 2, 0, REQUEST_IDENT)
        v.title = "Binding Table Request (FIG 12), NumHA 2: the requester first"
        v.notes += [f"  struct.pack(\"!BBHQ\", 202, 2, 0, 0x{REQUEST_IDENT:016X}) + two addresses"]
        v.add("type", fixed[0:1], "202: Binding Table Request")
        v.add("num_ha", fixed[1:2], "NumHA 2")
        v.add("reserved", fixed[2:4], "reserved")
        v.add("identification", fixed[4:12], f"the requester's NTP time: {ntp_comment(REQUEST_IDENT)}")
        v.add("home_agent0", struct.pack("!I", SENDER), f"{ipstr(SENDER)}, the requester itself")
        v.add("home_agent1", struct.pack("!I", RECEIVER), f"{ipstr(RECEIVER)}, a member it knows")
    elif message == "binding-table-reply":
        fixed = struct.pack("!BBHBBHIQ", 203, 0, 2, 0x80, 0, 0, 7, REQUEST_IDENT)
        v.title = "Binding Table Reply (FIG 13), MoreBind, sequence 7, two nodes (the second with no binding)"
        v.notes += [f"  struct.pack(\"!BBHBBHIQ\", 203, 0, 2, 0x80, 0, 0, 7, 0x{REQUEST_IDENT:016X})",
                    f"  == bytes.fromhex('{fixed.hex()}')",
                    "10.1.0.6 has no binding; its last Identification travels so replay protection survives."]
        v.add("type", fixed[0:1], "203: Binding Table Reply")
        v.add("code", fixed[1:2], "code 0")
        v.add("num_bind", fixed[2:4], "NumBind 2: two Mobile Node Bindings extensions follow")
        v.add("flags", fixed[4:5], "0x80: MoreBind (not the last reply)")
        v.add("reserved8", fixed[5:6], "reserved")
        v.add("reserved16", fixed[6:8], "reserved")
        v.add("sequence", fixed[8:12], "sequence 7")
        v.add("identification", fixed[12:20], f"the request's: {ntp_comment(REQUEST_IDENT)}")
        add_node(v, "node0", HOA, IDENT, [(COA, VIRTUAL, IDENT, 600, 0x00, 599_750)])
        add_node(v, "node1", HOA2, IDENT_HOA2, [])
    elif message == "binding-table-reply-ack":
        fixed = struct.pack("!BBBBIQ", 204, 0, 0x80, 0, 7, REQUEST_IDENT)
        v.title = "Binding Table Reply Ack (FIG 14) of sequence 7, MoreBind echoed"
        v.notes += [f"  struct.pack(\"!BBBBIQ\", 204, 0, 0x80, 0, 7, 0x{REQUEST_IDENT:016X})"]
        v.add("type", fixed[0:1], "204: Binding Table Reply Ack")
        v.add("code", fixed[1:2], "code 0")
        v.add("flags", fixed[2:3], "0x80: MoreBind, echoed")
        v.add("reserved", fixed[3:4], "reserved")
        v.add("sequence", fixed[4:8], "sequence 7, echoed")
        v.add("identification", fixed[8:16], f"echoed: {ntp_comment(REQUEST_IDENT)}")
    elif message == "advertisement":
        fixed = struct.pack("!BBBBHH", 205, 100, 2, 0, 100, 0)
        v.title = "Advertisement: priority 100, active, every 100 ms"
        v.notes += ['  struct.pack("!BBBBHH", 205, 100, 2, 0, 100, 0)']
        v.add("type", fixed[0:1], "205: Advertisement")
        v.add("priority", fixed[1:2], "priority 100")
        v.add("role", fixed[2:3], "2: active")
        v.add("flags", fixed[3:4], "no flags")
        v.add("interval_ms", fixed[4:6], "100 ms")
        v.add("reserved", fixed[6:8], "reserved")
    else:
        raise ValueError(message)
    v.notes += [f"Sealed by {ipstr(SENDER)} for {ipstr(RECEIVER)} with {algorithm}, SPI {spi}, "
                f"at Unix {T0}.5.",
                "The authenticator covers @pseudo_header (sender's address, receiver's address: not sent),",
                "then every byte of the datagram before it."]
    add_seal(v, algorithm)
    return v


def load(name: str) -> Vector:
    """A vector file: ``@key value`` lines, then ``field  hex  # comment`` lines."""
    v = Vector(name)
    meta, fields = vectorfile.read(HERE / name)
    v.meta.update(meta)
    for key, value, comment in fields:
        v.add(key, value, comment)
    return v


def write_all() -> None:
    for message in MESSAGES:
        for algorithm in KEYS:
            v = build(message, algorithm)
            (HERE / v.name).write_text(v.render())


CASES = [(m, a) for m in MESSAGES for a in KEYS]
IDS = [f"{m}-{a}" for m, a in CASES]


# -- (a) the files hold the hand-built bytes -----------------------------------------------------------


def test_the_vector_set_is_complete():
    assert sorted(p.name for p in HERE.glob("redundancy-*.txt")) == sorted(ALL)


@pytest.mark.parametrize(("message", "algorithm"), CASES, ids=IDS)
def test_file_holds_the_hand_built_vector(message, algorithm):
    built = build(message, algorithm)
    v = load(built.name)
    assert v.meta == built.meta
    assert [(n, b) for n, b, _ in v.fields] == [(n, b) for n, b, _ in built.fields]
    assert all(c for _, _, c in v.fields), "one commented field per line"
    assert (HERE / built.name).read_text() == built.render()


def test_hmac_primitives_match_rfc_4231_and_rfc_2202():
    # Anchors the libraries the vectors are computed with (RFC 2202 2, RFC 4231 4.2: test case 1).
    assert hmac.new(b"\x0b" * 16, b"Hi There", hashlib.md5).hexdigest() == "9294727a3638bb1c13f48ef8158bfc9d"
    assert hmac.new(b"\x0b" * 20, b"Hi There", hashlib.sha256).hexdigest() == (
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")


@pytest.mark.parametrize(("message", "algorithm"), CASES, ids=IDS)
def test_layout_follows_docs_protocol(message, algorithm):
    v = load(f"redundancy-{message}-{algorithm}.txt")
    data = v.message
    t = data[0]
    size = KEYS[algorithm][2]
    assert 200 <= t <= 205
    # The seal is last: Type 100, Length 14 + authenticator, Version 3, and it ends the datagram.
    assert v.offset("auth.type") == len(data) - 16 - size
    assert data[v.offset("auth.type")] == HA_HA_AUTH and v.int("auth.length") == 14 + size
    assert v.int("auth.version") == VERSION == 3 and v.int("auth.reserved") == 0
    assert len(v.value("auth.authenticator")) == size
    assert v.int("auth.spi") == KEYS[algorithm][0]
    assert [n for n, _, _ in v.fields][-7:] == ["auth.type", "auth.length", "auth.version", "auth.reserved",
                                                "auth.spi", "auth.timestamp", "auth.authenticator"]
    body = v.body
    if t == 202:
        assert len(body) == FIXED_SIZE[t] + 4 * v.int("num_ha")
    else:
        extensions = body[FIXED_SIZE[t]:]
        i, count = 0, 0
        while i < len(extensions):  # every extension after the fixed part is a Mobile Node Bindings one
            assert extensions[i] == MOBILE_NODE_BINDINGS
            assert (extensions[i + 1] - 12) % 24 == 0
            i += 2 + extensions[i + 1]
            count += 1
        assert i == len(extensions)
        if t == 203:
            assert count == v.int("num_bind")
        elif t == 200:
            assert count == (1 if message == "binding-update-bindings" else 0)
        else:
            assert count == 0
    # The authenticator covers the pseudo-header (the file's sender and receiver, not in the datagram) and
    # every byte before it, the extension's own Type, Length, Version, Reserved, SPI, Timestamp too.
    _, key, _ = KEYS[algorithm]
    digest = hashlib.md5 if algorithm == "hmac-md5" else hashlib.sha256
    pseudo = bytes.fromhex(v.meta["pseudo_header"])
    assert pseudo == struct.pack("!II", ip(v.meta["sender"]), ip(v.meta["receiver"])) == bytes.fromhex(
        "c0000201c0000202")
    covered = data[: v.offset("auth.authenticator")]
    assert covered.endswith(v.value("auth.type") + v.value("auth.length") + v.value("auth.version")
                            + v.value("auth.reserved") + v.value("auth.spi") + v.value("auth.timestamp"))
    assert len(data) == v.offset("auth.authenticator") + size  # the pseudo-header is not sent
    assert hmac.new(key, pseudo + covered, digest).digest() == v.value("auth.authenticator")
    assert hmac.new(key, covered, digest).digest() != v.value("auth.authenticator")  # not version 1's rule


# -- (b) our encoder and parser --------------------------------------------------------------------------


def node_from(v: Vector, prefix: str) -> MobileNodeBindings:
    bindings = []
    i = 0
    while v.has(f"{prefix}.b{i}.care_of_address"):
        p = f"{prefix}.b{i}"
        assert v.int(f"{p}.reserved") == 0
        bindings.append(BindingRecord(v.int(f"{p}.care_of_address"), v.int(f"{p}.home_agent"),
                                      held(v.int(f"{p}.identification")), v.int(f"{p}.lifetime"), v.int(f"{p}.flags"),
                                      v.int(f"{p}.remaining_ms")))
        i += 1
    assert v.int(f"{prefix}.length") == 12 + 24 * len(bindings)
    return MobileNodeBindings(v.int(f"{prefix}.home_address"), held(v.int(f"{prefix}.identification")),
                              tuple(bindings))


def expected_message(v: Vector):
    """The message the vector's fields describe, as our dataclasses (from the fields, not from parsing)."""
    t = v.int("type")
    if t == 200:
        return BindingUpdate(v.int("flags"), v.int("granted_lifetime"), v.int("remaining_ms"), v.int("home_address"),
                             v.int("home_agent"), v.int("care_of_address"), held(v.int("identification")),
                             node_from(v, "mnb") if v.has("mnb.type") else None)
    if t == 201:
        return BindingUpdateAck(v.int("code"), v.int("home_address"), held(v.int("identification")))
    if t == 202:
        return BindingTableRequest(held(v.int("identification")),
                                   tuple(v.int(f"home_agent{i}") for i in range(v.int("num_ha"))))
    if t == 203:
        return BindingTableReply(v.int("code"), bool(v.int("flags") & 0x80), v.int("sequence"),
                                 held(v.int("identification")),
                                 tuple(node_from(v, f"node{i}") for i in range(v.int("num_bind"))))
    if t == 204:
        return BindingTableReplyAck(v.int("code"), bool(v.int("flags") & 0x80), v.int("sequence"),
                                    held(v.int("identification")))
    if t == 205:
        return Advertisement(v.int("priority"), v.int("role"), v.int("interval_ms"), v.int("flags"))
    raise AssertionError(t)


@pytest.mark.parametrize(("message", "algorithm"), CASES, ids=IDS)
def test_encoder_makes_the_vector(message, algorithm):
    v = load(f"redundancy-{message}-{algorithm}.txt")
    m = expected_message(v)
    assert m.body() == v.body
    assert seal(m.body(), v.association, held(v.int("auth.timestamp")), *conversation(v)) == v.message


@pytest.mark.parametrize(("message", "algorithm"), CASES, ids=IDS)
def test_parser_reads_every_field(message, algorithm):
    v = load(f"redundancy-{message}-{algorithm}.txt")
    body, timestamp = unseal(v.message, v.association, *conversation(v))
    assert body == v.body and timestamp == held(v.int("auth.timestamp")) == held(TIMESTAMP)
    parsed = parse_body(body)
    assert parsed == expected_message(v)
    # And field by field against the hand-built constants, so a shared misreading would still show.
    t = v.int("type")
    if t == 200:
        assert (parsed.lifetime, parsed.home_address, parsed.home_agent, parsed.identification) == (
            600, HOA, VIRTUAL, held(IDENT))
        if message == "binding-update":
            assert (parsed.flags, parsed.remaining_ms, parsed.care_of_address, parsed.node) == (
                0x02, 599_750, COA, None)
            assert parsed.state() == MobileNodeBindings(HOA, held(IDENT), (
                BindingRecord(COA, VIRTUAL, held(IDENT), 600, 0x02, 599_750),))
        else:
            assert (parsed.flags, parsed.remaining_ms, parsed.care_of_address) == (0x82, 0, COA2)
            assert parsed.state() == parsed.node == MobileNodeBindings(HOA, held(IDENT), (
                BindingRecord(COA, VIRTUAL, held(IDENT_EARLIER), 600, 0x80, 540_000),
                BindingRecord(COA2, VIRTUAL, held(IDENT), 600, 0x82, 599_750),
            ))
    elif t == 201:
        assert (parsed.code, parsed.home_address, parsed.identification) == (0, HOA, held(IDENT))
    elif t == 202:
        assert parsed == BindingTableRequest(held(REQUEST_IDENT), (SENDER, RECEIVER))
    elif t == 203:
        assert (parsed.code, parsed.more, parsed.sequence, parsed.identification) == (0, True, 7, held(REQUEST_IDENT))
        assert parsed.nodes == (
            MobileNodeBindings(HOA, held(IDENT), (BindingRecord(COA, VIRTUAL, held(IDENT), 600, 0, 599_750),)),
            MobileNodeBindings(HOA2, held(IDENT_HOA2), ()),
        )
    elif t == 204:
        assert parsed == BindingTableReplyAck(0, True, 7, held(REQUEST_IDENT))
    else:
        assert parsed == Advertisement(100, 2, 100, 0)


# -- (c) unseal accepts the vector and nothing one byte away ---------------------------------------------


def conversation(v: Vector) -> tuple[int, int]:
    """(sender, receiver) the vector was sealed between, as its file records them."""
    return ip(v.meta["sender"]), ip(v.meta["receiver"])


def opens(sa: SecurityAssociation, data: bytes, sender: int = SENDER, receiver: int = RECEIVER) -> bool:
    try:
        unseal(data, sa, sender, receiver)
    except SealError:
        return False
    return True


@pytest.mark.parametrize(("message", "algorithm"), CASES, ids=IDS)
def test_unseal_rejects_any_flipped_byte(message, algorithm):
    v = load(f"redundancy-{message}-{algorithm}.txt")
    sa, data = v.association, v.message
    assert opens(sa, data)
    for i in range(len(data)):
        for mask in (0x01, 0x80, 0xFF):
            flipped = bytearray(data)
            flipped[i] ^= mask
            assert not opens(sa, bytes(flipped)), (i, mask)
    assert not opens(sa, data[:-1])
    assert not opens(sa, data + b"\x00")
    assert not opens(sa, data[1:])
    assert not opens(sa, b"\x00" + data)


@pytest.mark.parametrize(("message", "algorithm"), CASES, ids=IDS)
def test_unseal_opens_the_vector_only_for_its_own_conversation(message, algorithm):
    v = load(f"redundancy-{message}-{algorithm}.txt")
    sa, data = v.association, v.message
    sender, receiver = conversation(v)
    assert opens(sa, data, sender, receiver)
    assert not opens(sa, data, receiver, sender)  # swapped: the reply direction, or sent back to its sender
    others = [(sender, THIRD), (THIRD, receiver), (sender, GROUP), (receiver, receiver), (sender, sender),
              (0, 0), (sender ^ 1, receiver), (sender, receiver ^ (1 << 31))]
    for pair in others:
        assert not opens(sa, data, *pair), pair
    # The authenticator does cover the pseudo-header: recomputed for the swapped pair it is another one.
    digest = hashlib.md5 if sa.algorithm is Algorithm.HMAC_MD5 else hashlib.sha256
    covered = data[: v.offset("auth.authenticator")]
    swapped = hmac.new(sa.key, struct.pack("!II", receiver, sender) + covered, digest).digest()
    assert swapped != v.value("auth.authenticator")
    assert opens(sa, covered + swapped, receiver, sender)
    assert not opens(sa, covered + swapped, sender, receiver)


@pytest.mark.parametrize(("message", "algorithm"), CASES, ids=IDS)
def test_unseal_rejects_a_wrong_key_spi_or_algorithm(message, algorithm):
    v = load(f"redundancy-{message}-{algorithm}.txt")
    sa, data = v.association, v.message
    assert not opens(SecurityAssociation(sa.spi, sa.algorithm, bytes(b ^ 1 for b in sa.key)), data)
    assert not opens(SecurityAssociation(sa.spi + 1, sa.algorithm, sa.key), data)
    assert not opens(SecurityAssociation(sa.spi - 1, sa.algorithm, sa.key), data)
    other = Algorithm.HMAC_SHA256 if sa.algorithm is Algorithm.HMAC_MD5 else Algorithm.HMAC_MD5
    assert not opens(SecurityAssociation(sa.spi, other, sa.key), data)
    # The other vector's association (its own SPI and key) does not open this one either.
    spi, key, _ = KEYS["hmac-sha256" if algorithm == "hmac-md5" else "hmac-md5"]
    assert not opens(SecurityAssociation(spi, other, key), data)


@pytest.mark.parametrize(("message", "algorithm"), CASES, ids=IDS)
def test_everything_but_the_seal_parses_only_as_itself(message, algorithm):
    v = load(f"redundancy-{message}-{algorithm}.txt")
    # Without unsealing first, the seal reads as an unexpected extension (or a length mismatch).
    with pytest.raises(ParseError):
        parse_body(v.message)


# -- (d) a Home Agent takes the Binding Update vectors from a member --------------------------------------

GROUP_CONFIG = """
[home_agent]
address = "192.0.2.2"
home_network = "10.1.0.0/16"
replay_tolerance = 7
state_dir = "/nonexistent/homeagent-test"

[[security_association]]
home_addresses = "10.1.0.0/16"
spi = 256
key = "00112233445566778899aabbccddeeff"

[redundancy]
virtual_address = "192.0.2.100"
peers = ["192.0.2.1"]

[[redundancy.security_association]]
peer = "192.0.2.0/24"
spi = {spi}
algorithm = "{algorithm}"
key = "{key}"
"""


@pytest.mark.parametrize("algorithm", list(KEYS))
@pytest.mark.parametrize("message", ["binding-update", "binding-update-bindings"])
def test_a_member_applies_the_binding_update_vector_and_acks_it(message, algorithm):
    from homeagent.config import parse as parse_config
    from homeagent.core.effects import Send
    from homeagent.core.home_agent import HomeAgent

    v = load(f"redundancy-{message}-{algorithm}.txt")
    spi, key, _ = KEYS[algorithm]
    ha = HomeAgent(parse_config(GROUP_CONFIG.format(spi=spi, algorithm=algorithm, key=key.hex())), NOW)
    effects = ha.receive_datagram(v.message, (v.meta["sender"], 434), v.meta["receiver"], NOW)
    expected = expected_message(v).state()
    last, bindings = ha.bindings.lookup(HOA)
    assert last == held(IDENT)
    assert sorted((b.care_of_address, b.home_agent, b.identification, b.lifetime, b.flags) for b in bindings) == sorted(
        (r.care_of_address, r.home_agent, r.identification, r.lifetime, r.flags) for r in expected.bindings)
    for b in bindings:
        [r] = [r for r in expected.bindings if r.care_of_address == b.care_of_address]
        assert b.expires == pytest.approx(NOW + r.remaining_ms / 1000, abs=1e-9)
    sends = [e for e in effects if isinstance(e, Send)]
    assert all(s.address == (v.meta["sender"], 434) for s in sends)
    # One message per datagram, or several back to back under one seal (docs/protocol.md, Transport).
    # Sealed by the receiver for the sender: the conversation the other way round.
    messages = [m for s in sends for m in parse_messages(
        unseal(s.datagram, v.association, ip(v.meta["receiver"]), ip(v.meta["sender"]))[0])]
    # The ack, and (the member was not known to be up) a request for the member's table.
    assert [m for m in messages if type(m) is BindingUpdateAck] == [BindingUpdateAck(0, HOA, held(IDENT))]
    assert [type(m) for m in messages if type(m) is not BindingUpdateAck] == [BindingTableRequest]
    # The same datagram again is a replay: refused, counted, nothing answered.
    assert ha.receive_datagram(v.message, (v.meta["sender"], 434), v.meta["receiver"], NOW) == []
    assert ha.counters["redundancy.security_violations"] == 1


@pytest.mark.parametrize("algorithm", list(KEYS))
def test_a_member_refuses_the_vector_outside_its_conversation(algorithm):
    from homeagent.config import parse as parse_config
    from homeagent.core.home_agent import HomeAgent

    v = load(f"redundancy-binding-update-{algorithm}.txt")
    spi, key, _ = KEYS[algorithm]
    # 192.0.2.3 is configured too here, and the association covers it: only the seal tells it apart.
    config = GROUP_CONFIG.format(spi=spi, algorithm=algorithm, key=key.hex()).replace(
        'peers = ["192.0.2.1"]', 'peers = ["192.0.2.1", "192.0.2.3"]')
    ha = HomeAgent(parse_config(config), NOW)
    # From the third member's address, and arriving at the multicast group's: neither is the conversation.
    assert ha.receive_datagram(v.message, (ipstr(THIRD), 434), v.meta["receiver"], NOW) == []
    assert ha.receive_datagram(v.message, (v.meta["sender"], 434), ipstr(GROUP), NOW) == []
    assert ha.counters["redundancy.security_violations"] == 2 and ha.bindings.lookup(HOA) == (None, ())
    # Its own conversation, still fresh: the refusals left no trace.
    ha.receive_datagram(v.message, (v.meta["sender"], 434), v.meta["receiver"], NOW)
    assert ha.bindings.lookup(HOA)[0] == held(IDENT) and ha.counters["redundancy.security_violations"] == 2


if __name__ == "__main__":
    write_all()
