"""Members of a redundancy group and the seal on their messages (core/peers.py, docs/protocol.md).

A message changes nothing unless it comes from an address a Home Agent - Home Agent association covers,
verifies with that association, carries a timestamp within ``replay_tolerance`` of our clock, and neither
repeats a timestamp nor falls more than a second behind the newest one from that sender. Every refusal
counts in ``redundancy.security_violations``.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections import Counter
from ipaddress import IPv4Address, IPv4Network

import pytest

from homeagent.core.peers import NTP_ONE_SECOND, REORDER_WINDOW, Membership, ReplayWindow
from homeagent.wire.auth import Algorithm, SecurityAssociation
from homeagent.wire.redundancy import unseal

NTP_EPOCH_OFFSET = 2_208_988_800
T0 = 1_700_000_000.0
OWN = int(IPv4Address("192.0.2.1"))
PEER = int(IPv4Address("192.0.2.2"))
OTHER = int(IPv4Address("192.0.2.3"))  # covered by the association, not configured
STRANGER = int(IPv4Address("203.0.113.9"))  # covered by nothing
KEY = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
SPI = 1000
SA = SecurityAssociation(SPI, Algorithm.HMAC_MD5, KEY)
SHA_SA = SecurityAssociation(1001, Algorithm.HMAC_SHA256, bytes(range(32)))
COVERED = IPv4Network("192.0.2.0/24")
VIOLATIONS = "redundancy.security_violations"
BODY = struct.pack("!BBBBHH", 205, 100, 1, 0, 100, 0)  # an Advertisement, built by hand


def ntp(now: float) -> int:
    seconds = (int(now) + NTP_EPOCH_OFFSET) & 0xFFFFFFFF
    return (seconds << 32) | int((now % 1.0) * (1 << 32))


def hand_seal(body: bytes, timestamp: int, sa: SecurityAssociation = SA, key: bytes | None = None) -> bytes:
    """docs/protocol.md: body, then Type 100, Length 12 + digest, SPI, Timestamp, HMAC of all of that."""
    digest = hashlib.md5 if sa.algorithm is Algorithm.HMAC_MD5 else hashlib.sha256
    covered = body + struct.pack("!BBIQ", 100, 12 + sa.digest_size, sa.spi, timestamp)
    return covered + hmac.new(sa.key if key is None else key, covered, digest).digest()


def association_for(address: int) -> SecurityAssociation | None:
    return SA if IPv4Address(address) in COVERED else None


def membership(configured=(PEER,), tolerance: float = 7) -> Membership:
    return Membership(OWN, list(configured), association_for, tolerance, Counter())


# -- ReplayWindow ----------------------------------------------------------------------------------


def test_replay_window_refuses_repeats():
    w = ReplayWindow()
    t = ntp(T0)
    assert w.accept(t)
    assert not w.accept(t)
    assert w.accept(t + 1)
    assert not w.accept(t + 1)
    assert not w.accept(t)
    assert w.newest == t + 1


def test_replay_window_is_one_second():
    assert REORDER_WINDOW == NTP_ONE_SECOND == 1 << 32


def test_replay_window_refuses_what_is_a_second_or_more_behind_the_newest():
    w = ReplayWindow()
    t = ntp(T0 + 10)
    assert w.accept(t)
    assert not w.accept(t - NTP_ONE_SECOND)  # exactly a second behind: outside
    assert not w.accept(t - 2 * NTP_ONE_SECOND)
    assert not w.accept(t - 3600 * NTP_ONE_SECOND)
    assert w.accept(t - NTP_ONE_SECOND + 1)  # just inside
    assert w.newest == t


def test_replay_window_accepts_reordering_within_the_window():
    w = ReplayWindow()
    base = ntp(T0)
    step = NTP_ONE_SECOND // 10  # 100 ms
    arrival = [5, 1, 3, 2, 9, 4, 0, 8, 6, 7]  # all within 0.9 s of each other
    assert all(w.accept(base + i * step) for i in arrival)
    assert w.newest == base + 9 * step
    # Each of them again: repeats, refused.
    assert not any(w.accept(base + i * step) for i in arrival)


def test_replay_window_forgets_what_falls_out_but_still_refuses_it():
    w = ReplayWindow()
    base = ntp(T0)
    for i in range(100):
        assert w.accept(base + i * (NTP_ONE_SECOND // 10))  # 10 s of messages, in order
    # Only the last second's timestamps are remembered; everything older is refused by age.
    assert len(w._seen) <= 11
    assert not w.accept(base)
    assert not w.accept(base + 50 * (NTP_ONE_SECOND // 10))
    assert not w.accept(base + 99 * (NTP_ONE_SECOND // 10))
    assert w.accept(base + 99 * (NTP_ONE_SECOND // 10) - 1)


def test_replay_window_is_per_sender():
    a, b = ReplayWindow(), ReplayWindow()
    t = ntp(T0)
    assert a.accept(t) and b.accept(t)


# -- Membership.learn ------------------------------------------------------------------------------


def test_configured_peers_are_members_down_until_heard():
    m = membership(configured=(PEER,))
    [peer] = list(m)
    assert (peer.address, peer.configured, peer.up, peer.association) == (PEER, True, False, SA)
    assert peer.name == "192.0.2.2"
    assert m.others_exist()
    assert m.up() == []
    assert not membership(configured=()).others_exist()


def test_learn_needs_an_association_and_never_takes_ourselves_or_special_addresses():
    m = membership(configured=())
    assert m.learn(STRANGER) is None
    assert m.learn(OWN) is None
    assert m.learn(0) is None
    assert m.learn(0xFFFFFFFF) is None
    assert list(m) == []
    member = m.learn(OTHER)
    assert member is not None and member.address == OTHER and not member.configured
    assert m.learn(OTHER) is member  # learnt once
    assert [x.address for x in m] == [OTHER]


# -- Membership.open -------------------------------------------------------------------------------


def test_open_accepts_a_sealed_fresh_message_from_a_member():
    m = membership()
    opened = m.open(hand_seal(BODY, ntp(T0)), PEER, T0)
    assert opened is not None
    member, body = opened
    assert member.address == PEER and body == BODY
    assert m.counters[VIOLATIONS] == 0


def test_open_refuses_a_non_member_and_counts_it():
    m = membership()
    assert m.open(hand_seal(BODY, ntp(T0)), STRANGER, T0) is None
    assert m.counters[VIOLATIONS] == 1
    assert STRANGER not in m.members


def test_open_refuses_our_own_address():
    m = membership()
    assert m.open(hand_seal(BODY, ntp(T0)), OWN, T0) is None
    assert m.counters[VIOLATIONS] == 1
    assert OWN not in m.members


@pytest.mark.parametrize("damage", ["key", "flip-body", "flip-timestamp", "flip-authenticator", "truncated",
                                    "appended", "spi", "algorithm", "unsealed", "empty"])
def test_open_refuses_a_bad_seal_and_counts_it(damage):
    m = membership()
    t = ntp(T0)
    good = hand_seal(BODY, t)
    data = {
        "key": hand_seal(BODY, t, key=bytes(16)),
        "flip-body": bytes([good[0], good[1] ^ 1]) + good[2:],
        "flip-timestamp": good[:len(BODY) + 6] + bytes([good[len(BODY) + 6] ^ 0x80]) + good[len(BODY) + 7:],
        "flip-authenticator": good[:-1] + bytes([good[-1] ^ 1]),
        "truncated": good[:-1],
        "appended": good + b"\x00",
        "spi": hand_seal(BODY, t, SecurityAssociation(SPI + 1, Algorithm.HMAC_MD5, KEY)),
        "algorithm": hand_seal(BODY, t, SecurityAssociation(SPI, Algorithm.HMAC_SHA256, KEY)),
        "unsealed": BODY,
        "empty": b"",
    }[damage]
    assert m.open(data, PEER, T0) is None
    assert m.counters[VIOLATIONS] == 1
    # A good message with the same timestamp still opens: the refused one left no trace in the window.
    assert m.open(good, PEER, T0) is not None
    assert m.counters[VIOLATIONS] == 1


def test_open_refuses_a_message_sealed_with_another_members_association():
    other_sa = SecurityAssociation(2000, Algorithm.HMAC_MD5, bytes(range(16)))
    m = Membership(OWN, [PEER, OTHER], lambda a: other_sa if a == OTHER else association_for(a), 7, Counter())
    assert m.open(hand_seal(BODY, ntp(T0), other_sa), PEER, T0) is None
    assert m.open(hand_seal(BODY, ntp(T0), SA), OTHER, T0) is None
    assert m.counters[VIOLATIONS] == 2
    assert m.open(hand_seal(BODY, ntp(T0), other_sa), OTHER, T0) is not None


@pytest.mark.parametrize("offset", [-7, -3, 0, 0.5, 3, 7])
def test_open_accepts_a_timestamp_within_the_tolerance(offset):
    m = membership(tolerance=7)
    assert m.open(hand_seal(BODY, ntp(T0 + offset)), PEER, T0) is not None
    assert m.counters[VIOLATIONS] == 0


@pytest.mark.parametrize("offset", [-9, -8, -7.5, 8, 9, 60, -3600, 1 << 31])
def test_open_refuses_a_timestamp_outside_the_tolerance(offset):
    m = membership(tolerance=7)
    assert m.open(hand_seal(BODY, ntp(T0 + offset)), PEER, T0) is None
    assert m.counters[VIOLATIONS] == 1


def test_tolerance_survives_the_ntp_era_rollover():
    # 2036-02-07T06:28:16Z: NTP seconds wrap to 0. A sender just past it and a receiver just before agree.
    rollover = (1 << 32) - NTP_EPOCH_OFFSET
    m = membership(tolerance=7)
    assert m.open(hand_seal(BODY, ntp(rollover + 2)), PEER, rollover - 2) is not None
    assert m.open(hand_seal(BODY, ntp(rollover - 1)), PEER, rollover + 1) is not None
    assert m.open(hand_seal(BODY, ntp(rollover + 100)), PEER, rollover - 1) is None


def test_open_refuses_a_replayed_datagram_and_counts_it():
    m = membership()
    data = hand_seal(BODY, ntp(T0))
    assert m.open(data, PEER, T0) is not None
    assert m.open(data, PEER, T0 + 0.1) is None
    assert m.counters[VIOLATIONS] == 1
    # The same body sealed again with a newer timestamp is fine: it is the timestamp that must be new.
    assert m.open(hand_seal(BODY, ntp(T0) + 1), PEER, T0 + 0.1) is not None


def test_open_refuses_a_message_more_than_a_second_older_than_the_newest():
    m = membership()
    assert m.open(hand_seal(BODY, ntp(T0 + 2)), PEER, T0 + 2) is not None
    assert m.open(hand_seal(BODY, ntp(T0 + 0.5)), PEER, T0 + 2) is None  # 1.5 s behind, within tolerance
    assert m.open(hand_seal(BODY, ntp(T0 + 1.5)), PEER, T0 + 2) is not None  # 0.5 s behind: reordered
    assert m.counters[VIOLATIONS] == 1


def test_a_member_is_learnt_only_when_its_message_verifies():
    m = membership(configured=())
    bad = hand_seal(BODY, ntp(T0), key=bytes(16))
    assert m.open(bad, OTHER, T0) is None
    assert OTHER not in m.members
    stale = hand_seal(BODY, ntp(T0 - 60))
    assert m.open(stale, OTHER, T0) is None
    assert OTHER not in m.members
    assert m.counters[VIOLATIONS] == 2
    opened = m.open(hand_seal(BODY, ntp(T0)), OTHER, T0)
    assert opened is not None and opened[0] is m.members[OTHER]
    assert not m.members[OTHER].configured
    # Learnt with its replay window: the same datagram again is a replay.
    assert m.open(hand_seal(BODY, ntp(T0)), OTHER, T0) is None
    assert m.counters[VIOLATIONS] == 3


def test_replay_state_is_per_member():
    m = membership(configured=(PEER, OTHER))
    t = ntp(T0)
    assert m.open(hand_seal(BODY, t), PEER, T0) is not None
    assert m.open(hand_seal(BODY, t), OTHER, T0) is not None


# -- sealing ---------------------------------------------------------------------------------------


def test_seal_uses_the_members_association_and_the_clock():
    m = membership()
    [peer] = list(m)
    data = m.seal(BODY, peer, T0 + 0.25)
    body, timestamp = unseal(data, SA)
    assert body == BODY and timestamp == ntp(T0 + 0.25)
    assert data == hand_seal(BODY, ntp(T0 + 0.25))


def test_seal_timestamps_strictly_increase_even_with_the_same_now():
    m = membership()
    [peer] = list(m)
    stamps = [unseal(m.seal(BODY, peer, T0), SA)[1] for _ in range(5)]
    assert stamps == [ntp(T0) + i for i in range(5)]
    # A clock that steps back changes nothing either: still one past the last.
    assert unseal(m.seal(BODY, peer, T0 - 5), SA)[1] == ntp(T0) + 5
    # And across associations: one counter per sender.
    assert unseal(m.seal_with(BODY, SHA_SA, T0), SHA_SA)[1] == ntp(T0) + 6
    assert unseal(m.seal(BODY, peer, T0 + 1), SA)[1] == ntp(T0 + 1)


def test_a_receiver_accepts_every_message_sealed_in_one_instant():
    sender, receiver = membership(), Membership(PEER, [OWN], association_for, 7, Counter())
    [peer] = list(sender)
    datagrams = [sender.seal(BODY, peer, T0) for _ in range(50)]
    assert all(receiver.open(d, OWN, T0) is not None for d in reversed(datagrams))  # reordered, even
    assert receiver.counters[VIOLATIONS] == 0


def test_group_association_is_the_one_covering_our_own_address():
    assert membership().group_association is SA
    assert Membership(STRANGER, [], association_for, 7, Counter()).group_association is None
