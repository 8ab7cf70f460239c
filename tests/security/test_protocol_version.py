"""Members of two versions of the redundancy protocol do not mix, and say why (docs/protocol.md,
Versions): a datagram sealed in version 1's layout, or with another version number (version 2 included:
its members replace a node's state where version 3 merges it, and would take a tombstone for a binding),
is refused as a security violation and logged at error with the version, whatever its authenticator."""

from __future__ import annotations

import hashlib
import hmac
import logging
import struct
from collections import Counter

import pytest

from homeagent.core.peers import Membership, Refused
from homeagent.wire.auth import Algorithm, SecurityAssociation
from homeagent.wire.redundancy import VERSION, Advertisement, VersionError, seal, unseal

KEY = bytes(range(32))
SA = SecurityAssociation(300, Algorithm.HMAC_SHA256, KEY)
OWN, PEER = 0x7F000002, 0x7F000003
NOW = 1_700_000_000.0
STAMP = ((int(NOW) + 2_208_988_800) << 32) | 1


def version_1(body: bytes) -> bytes:
    """Version 1's seal, by hand: Type 100, Length 12 + 32, SPI, timestamp; HMAC over the datagram only."""
    covered = body + struct.pack("!BBIQ", 100, 44, 300, STAMP)
    return covered + hmac.new(KEY, covered, hashlib.sha256).digest()


def other_version(body: bytes, version: int) -> bytes:
    """A seal of today's shape (since version 2) carrying another version number, authenticated as ours is."""
    covered = body + struct.pack("!BBBxIQ", 100, 46, version, 300, STAMP)
    return covered + hmac.new(KEY, struct.pack("!II", PEER, OWN) + covered, hashlib.sha256).digest()


@pytest.mark.parametrize("datagram", [version_1(Advertisement(100, 2, 100).body()),
                                      other_version(Advertisement(100, 2, 100).body(), 2),
                                      other_version(Advertisement(100, 2, 100).body(), 4)],
                         ids=["version-1", "version-2", "version-4"])
def test_another_version_is_refused_and_logged_at_error(datagram, caplog):
    with pytest.raises(VersionError):
        unseal(datagram, SA, PEER, OWN)
    counters: Counter[str] = Counter()
    membership = Membership(OWN, [PEER], lambda a: SA, 7, counters)
    with caplog.at_level(logging.ERROR, logger="homeagent.redundancy"), pytest.raises(Refused):
        membership.open(datagram, PEER, OWN, NOW)
    assert counters["redundancy.security_violations"] == 1
    assert any("version" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)


def test_our_version_is_3():
    assert VERSION == 3
    assert seal(Advertisement(100, 2, 100).body(), SA, STAMP, PEER, OWN)[-32 - 14] == 3


def test_our_version_opens_only_for_its_own_conversation():
    datagram = seal(Advertisement(100, 2, 100).body(), SA, STAMP, PEER, OWN)
    assert unseal(datagram, SA, PEER, OWN)[1] == STAMP
    for sender, receiver in ((OWN, PEER), (PEER, PEER), (0x7F000009, OWN), (PEER, 0xEFFF2B04)):
        with pytest.raises(Exception):
            unseal(datagram, SA, sender, receiver)
