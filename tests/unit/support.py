"""Helpers shared by the unit and fuzz tests: build requests by hand, drive a HomeAgent, snapshot bindings.

Requests are packed with struct and signed with hmac here, not with homeagent's encoder, so a bug in the
encoder or in SecurityAssociation cannot hide itself.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from ipaddress import IPv4Address

from homeagent.config import parse as parse_config
from homeagent.core.effects import Send, Tunnel, TunnelSet
from homeagent.core.home_agent import HomeAgent
from homeagent.wire.auth import Algorithm, SecurityAssociation
from homeagent.wire.extensions import ExtensionType
from homeagent.wire.registration import RegistrationReply

NTP_EPOCH_OFFSET = 2_208_988_800
T0 = 1_700_000_000.0  # Unix time every test starts from

KEY = bytes.fromhex("00112233445566778899aabbccddeeff")
WIDE_KEY = bytes.fromhex("a0a1a2a3a4a5a6a7a8a9aaabacadaeaf")
SPI = 256
WIDE_SPI = 257
SA = SecurityAssociation(SPI, Algorithm.HMAC_MD5, KEY)
WIDE_SA = SecurityAssociation(WIDE_SPI, Algorithm.HMAC_MD5, WIDE_KEY)
ZERO_KEY = bytes.fromhex("b0b1b2b3b4b5b6b7b8b9babbbcbdbebf")
ZERO_SPI = 258
ZERO_SA = SecurityAssociation(ZERO_SPI, Algorithm.HMAC_MD5, ZERO_KEY)


def ip(text: str) -> int:
    return int(IPv4Address(text))


HA = ip("192.0.2.1")  # our unicast address
HOA = ip("10.1.0.5")  # a home address in home_network
COA = ip("198.51.100.7")
COA2 = ip("198.51.100.8")
COA3 = ip("198.51.100.9")
COA4 = ip("198.51.100.10")
SOURCE = ("198.51.100.7", 434)

CONFIG = """
[home_agent]
address = "192.0.2.1"
home_network = "10.1.0.0/16"
max_lifetime = {max_lifetime}
replay_tolerance = 7
state_dir = "/nonexistent/homeagent-test"
simultaneous_bindings = {simultaneous_bindings}

# The home network's mobile nodes.
[[security_association]]
home_addresses = "10.1.0.0/16"
spi = 256
algorithm = "hmac-md5"
key = "00112233445566778899aabbccddeeff"

# A wider association, so that a home address outside home_network still authenticates (then gets 129).
[[security_association]]
home_addresses = "10.0.0.0/8"
spi = 257
algorithm = "hmac-md5"
key = "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf"

# Home address 0.0.0.0 only (a node asking for a dynamic home address), to reach 129 for it.
[[security_association]]
home_addresses = "0.0.0.0/32"
spi = 258
algorithm = "hmac-md5"
key = "b0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
"""


def make_ha(max_lifetime: int = 1800, simultaneous_bindings: int = 3, now: float = T0) -> HomeAgent:
    text = CONFIG.format(max_lifetime=max_lifetime, simultaneous_bindings=simultaneous_bindings)
    return HomeAgent(parse_config(text), now)


UNIX_2000 = 946_684_800  # 2000-01-01 00:00:00 UTC: Identifications are counted from it inside (wire/era.py)


def ntp(now: float, fraction: int = 0) -> int:
    """A timestamp Identification (RFC 5944 5.7.1) for Unix time ``now``, as the Home Agent holds it:
    counted from 2000 (``wire_ntp`` is the timestamp the wire carries)."""
    return (((int(now) - UNIX_2000) & 0xFFFFFFFF) << 32) | fraction


def wire_ntp(identification: int) -> int:
    """The NTP timestamp (seconds since 1900) of an Identification counted from 2000, computed here apart
    from wire/era.py."""
    return (identification + ((UNIX_2000 + NTP_EPOCH_OFFSET) << 32)) & 0xFFFFFFFFFFFFFFFF


def held(timestamp: int) -> int:
    """The Identification (counted from 2000) the Home Agent holds for an NTP ``timestamp`` on the wire."""
    return (timestamp - ((UNIX_2000 + NTP_EPOCH_OFFSET) << 32)) & 0xFFFFFFFFFFFFFFFF


def header(flags: int = 0, lifetime: int = 600, hoa: int = HOA, ha: int = HA, coa: int = COA,
           ident: int | None = None, now: float = T0) -> bytes:
    if ident is None:
        ident = ntp(now, 0x1000)
    return struct.pack("!BBHIIIQ", 1, flags, lifetime, hoa, ha, coa, wire_ntp(ident))


def mhae(message: bytes, spi: int = SPI, key: bytes = KEY) -> bytes:
    """``message`` with an HMAC-MD5 Mobile-Home Authentication Extension appended (RFC 5944 3.5.1)."""
    covered = message + bytes((32, 20)) + spi.to_bytes(4, "big")
    return covered + hmac.new(key, covered, hashlib.md5).digest()


def ext(ext_type: int, data: bytes) -> bytes:
    return bytes((ext_type, len(data))) + data


def request(flags: int = 0, lifetime: int = 600, hoa: int = HOA, ha: int = HA, coa: int = COA,
            ident: int | None = None, now: float = T0, before: bytes = b"", after: bytes = b"",
            spi: int = SPI, key: bytes = KEY) -> bytes:
    """A signed Registration Request: fixed part, ``before`` extensions, MHAE, ``after`` extensions."""
    return mhae(header(flags, lifetime, hoa, ha, coa, ident, now) + before, spi, key) + after


def sends(effects) -> list[Send]:
    return [e for e in effects if isinstance(e, Send)]


def tunnels(effects) -> list:
    return [e for e in effects if isinstance(e, TunnelSet)]


def tset(*coas: int, hoa: int | None = None, reverse: bool = False, source: int | None = None,
         home: bool = False) -> TunnelSet:
    """The TunnelSet of a node bound to ``coas`` (none: no tunnel left), each from ``source``."""
    return TunnelSet(HOA if hoa is None else hoa,
                     tuple(Tunnel(c, HA if source is None else source, reverse) for c in sorted(coas)), home)


def only_reply(effects, sa: SecurityAssociation = SA, source=SOURCE) -> RegistrationReply:
    """The one reply among ``effects``, checked to go back to ``source`` and to carry a valid MHAE."""
    out = sends(effects)
    assert len(out) == 1, effects
    assert out[0].address == source
    reply = RegistrationReply.parse(out[0].datagram)
    auth = [e for e in reply.extensions if e.type == ExtensionType.MOBILE_HOME_AUTH]
    assert len(auth) == 1, "exactly one Mobile-Home Authentication Extension (RFC 5944 3.6.2.1 b)"
    assert reply.extensions[-1] is auth[0]
    assert sa.verify(reply.raw, auth[0]), "reply MHAE must verify with the association"
    return reply


def snapshot(ha: HomeAgent) -> tuple:
    """Everything a binding holds, plus each node's last Identification: any change shows."""
    table = ha.bindings
    rows = sorted((b.home_address, b.care_of_address, b.lifetime, b.expires, b.identification, b.flags)
                  for b in table)
    nodes = sorted({r[0] for r in rows} | {HOA, ip("10.2.0.5"), 0})
    return tuple(rows), len(table), tuple((n, table.last_identification(n)) for n in nodes)
