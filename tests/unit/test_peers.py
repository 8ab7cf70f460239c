"""Members of a redundancy group and the seal on their messages (core/peers.py, docs/protocol.md).

Members are the configured peers, never learnt. A message changes nothing unless it comes from a
configured member's address, verifies with the association covering that address for this conversation
(the seal covers the sender's and the receiver's addresses: protocol version 2), carries a timestamp
within ``replay_tolerance`` of our clock, and neither repeats a timestamp nor falls more than a second
behind the newest one from that member. Every refusal (but our own multicast looped back) counts in
``redundancy.security_violations``.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections import Counter
from ipaddress import IPv4Address, IPv4Network

import pytest

from homeagent.core.peers import NTP_ONE_SECOND, OWN_ECHO, REORDER_WINDOW, Membership, Refused, ReplayWindow
from homeagent.wire.auth import Algorithm, SecurityAssociation
from homeagent.wire.redundancy import SealError, VersionError, unseal

from .support import held

NTP_EPOCH_OFFSET = 2_208_988_800
T0 = 1_700_000_000.0
OWN = int(IPv4Address("192.0.2.1"))
PEER = int(IPv4Address("192.0.2.2"))
OTHER = int(IPv4Address("192.0.2.3"))  # covered by the association; configured only where a test says
THIRD = int(IPv4Address("192.0.2.4"))  # covered too
GROUP = int(IPv4Address("239.1.2.3"))  # a multicast group
STRANGER = int(IPv4Address("203.0.113.9"))  # covered by nothing
KEY = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
SPI = 1000
SA = SecurityAssociation(SPI, Algorithm.HMAC_MD5, KEY)
SHA_SA = SecurityAssociation(1001, Algorithm.HMAC_SHA256, bytes(range(32)))
COVERED = IPv4Network("192.0.2.0/24")
VIOLATIONS = "redundancy.security_violations"
BODY = struct.pack("!BBBBHH", 205, 100, 1, 0, 100, 0)  # an Advertisement, built by hand


def ntp(now: float) -> int:
    """The NTP timestamp on the wire for Unix time ``now`` (``held`` is what a member holds of it)."""
    seconds = (int(now) + NTP_EPOCH_OFFSET) & 0xFFFFFFFF
    return (seconds << 32) | int((now % 1.0) * (1 << 32))


def hand_seal(body: bytes, timestamp: int, sa: SecurityAssociation = SA, key: bytes | None = None,
              sender: int = PEER, receiver: int = OWN, version: int = 3) -> bytes:
    """docs/protocol.md, version 3: body, then Type 100, Length 14 + digest, Version 3, Reserved, SPI,
    Timestamp; the authenticator is the HMAC of the sender's and the receiver's addresses (covered, never
    sent) followed by all of that."""
    digest = hashlib.md5 if sa.algorithm is Algorithm.HMAC_MD5 else hashlib.sha256
    covered = body + struct.pack("!BBBBIQ", 100, 14 + sa.digest_size, version, 0, sa.spi, timestamp)
    pseudo = struct.pack("!II", sender, receiver)
    return covered + hmac.new(sa.key if key is None else key, pseudo + covered, digest).digest()


def v1_seal(body: bytes, timestamp: int, sa: SecurityAssociation = SA) -> bytes:
    """Version 1's seal (no version byte, no addresses covered): what a member not yet upgraded sends."""
    covered = body + struct.pack("!BBIQ", 100, 12 + sa.digest_size, sa.spi, timestamp)
    return covered + hmac.new(sa.key, covered, hashlib.md5).digest()


def association_for(address: int) -> SecurityAssociation | None:
    return SA if IPv4Address(address) in COVERED else None


def membership(configured=(PEER,), tolerance: float = 7, own: int = OWN) -> Membership:
    return Membership(own, list(configured), association_for, tolerance, Counter())


def opens(m: Membership, data: bytes, source: int = PEER, now: float = T0, destination: int | None = None):
    """(member, body) of a datagram from ``source`` to us (or to ``destination``)."""
    return m.open(data, source, m.own_address if destination is None else destination, now)


def refused(m: Membership, data: bytes, source: int = PEER, now: float = T0,
            destination: int | None = None) -> Refused:
    with pytest.raises(Refused) as caught:
        opens(m, data, source, now, destination)
    return caught.value


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


# -- configured members: nothing is learnt --------------------------------------------------------


def test_configured_peers_are_members_down_until_heard():
    m = membership(configured=(PEER,))
    [peer] = list(m)
    assert (peer.address, peer.up, peer.association, peer.last_heard) == (PEER, False, SA, None)
    assert peer.name == "192.0.2.2"
    assert m.others_exist()
    assert m.up() == []
    assert not membership(configured=()).others_exist()


def test_only_configured_peers_with_an_association_are_members_never_ourselves_or_special_addresses():
    # (Was: Membership.learn needed an association and never took ourselves or special addresses. Members
    # are configured only now; the same rules apply to the configured list, and there is no learn.)
    m = membership(configured=(STRANGER, OWN, 0, 0xFFFFFFFF, OTHER))
    assert [x.address for x in m] == [OTHER]
    assert not hasattr(m, "learn")
    for source in (STRANGER, 0, 0xFFFFFFFF):
        refused(m, hand_seal(BODY, ntp(T0), sender=source), source)
    assert m.counters[VIOLATIONS] == 3
    assert [x.address for x in m] == [OTHER]


# -- Membership.open -------------------------------------------------------------------------------


def test_open_accepts_a_sealed_fresh_message_from_a_member():
    m = membership()
    member, body = opens(m, hand_seal(BODY, ntp(T0)))
    assert member.address == PEER and member is m.members[PEER] and body == BODY
    assert m.counters[VIOLATIONS] == 0


def test_open_refuses_a_non_member_and_counts_it():
    m = membership()
    assert refused(m, hand_seal(BODY, ntp(T0), sender=STRANGER), STRANGER).member is None
    assert m.counters[VIOLATIONS] == 1
    assert STRANGER not in m.members


def test_open_refuses_our_own_address():
    m = membership()
    assert refused(m, hand_seal(BODY, ntp(T0), sender=OWN), OWN).member is None
    assert m.counters[VIOLATIONS] == 1
    assert OWN not in m.members


def test_our_own_multicast_looped_back_is_dropped_without_a_violation():
    m = membership()
    echo = m.seal_for(BODY, SA, GROUP, T0)
    assert str(refused(m, echo, OWN, destination=GROUP)) == OWN_ECHO
    assert m.counters[VIOLATIONS] == 0
    # Anything else from our own address is a violation: a unicast of ours reflected back to us, a multicast
    # of ours arriving at our unicast address, or one we never sent (a timestamp beyond our last).
    to_peer = m.seal(BODY, m.members[PEER], T0)
    refused(m, to_peer, OWN)
    refused(m, echo, OWN)
    refused(m, hand_seal(BODY, ntp(T0 + 1), sender=OWN, receiver=GROUP), OWN, destination=GROUP)
    assert m.counters[VIOLATIONS] == 3


@pytest.mark.parametrize("damage", ["key", "flip-body", "flip-version", "flip-reserved", "flip-timestamp",
                                    "flip-authenticator", "truncated", "appended", "spi", "algorithm",
                                    "unsealed", "empty", "sender", "receiver", "swapped", "version-1",
                                    "version-2"])
def test_open_refuses_a_bad_seal_and_counts_it(damage):
    m = membership()
    t = ntp(T0)
    good = hand_seal(BODY, t)
    head = len(BODY)  # where the seal starts: Type, Length, Version, Reserved, SPI (4), Timestamp (8)
    data = {
        "key": hand_seal(BODY, t, key=bytes(16)),
        "flip-body": bytes([good[0], good[1] ^ 1]) + good[2:],
        "flip-version": good[:head + 2] + bytes([good[head + 2] ^ 3]) + good[head + 3:],
        "flip-reserved": good[:head + 3] + bytes([good[head + 3] ^ 0x80]) + good[head + 4:],
        "flip-timestamp": good[:head + 8] + bytes([good[head + 8] ^ 0x80]) + good[head + 9:],
        "flip-authenticator": good[:-1] + bytes([good[-1] ^ 1]),
        "truncated": good[:-1],
        "appended": good + b"\x00",
        "spi": hand_seal(BODY, t, SecurityAssociation(SPI + 1, Algorithm.HMAC_MD5, KEY)),
        "algorithm": hand_seal(BODY, t, SecurityAssociation(SPI, Algorithm.HMAC_SHA256, KEY)),
        "unsealed": BODY,
        "empty": b"",
        "sender": hand_seal(BODY, t, sender=OTHER),  # sealed as if from another member
        "receiver": hand_seal(BODY, t, receiver=OTHER),  # sealed for another member
        "swapped": hand_seal(BODY, t, sender=OWN, receiver=PEER),  # our conversation, the other way round
        "version-1": v1_seal(BODY, t),
        "version-2": hand_seal(BODY, t, version=2),
    }[damage]
    assert refused(m, data).member is m.members[PEER]  # a configured member's address whose seal failed
    assert m.counters[VIOLATIONS] == 1
    # A good message with the same timestamp still opens: the refused one left no trace in the window.
    assert opens(m, good)[1] == BODY
    assert m.counters[VIOLATIONS] == 1


@pytest.mark.parametrize("version", [1, 2])
def test_another_version_is_told_apart_from_a_bad_seal(version):
    data = v1_seal(BODY, ntp(T0)) if version == 1 else hand_seal(BODY, ntp(T0), version=2)
    with pytest.raises(VersionError, match=f"version {version}"):
        unseal(data, SA, PEER, OWN)
    with pytest.raises(SealError) as caught:
        unseal(hand_seal(BODY, ntp(T0), key=bytes(16)), SA, PEER, OWN)
    assert type(caught.value) is SealError


def test_open_refuses_a_message_sealed_with_another_members_association():
    other_sa = SecurityAssociation(2000, Algorithm.HMAC_MD5, bytes(range(16)))
    m = Membership(OWN, [PEER, OTHER], lambda a: other_sa if a == OTHER else association_for(a), 7, Counter())
    refused(m, hand_seal(BODY, ntp(T0), other_sa, sender=PEER), PEER)
    refused(m, hand_seal(BODY, ntp(T0), SA, sender=OTHER), OTHER)
    assert m.counters[VIOLATIONS] == 2
    assert opens(m, hand_seal(BODY, ntp(T0), other_sa, sender=OTHER), OTHER)[0].address == OTHER


@pytest.mark.parametrize("offset", [-7, -3, 0, 0.5, 3, 7])
def test_open_accepts_a_timestamp_within_the_tolerance(offset):
    m = membership(tolerance=7)
    assert opens(m, hand_seal(BODY, ntp(T0 + offset)))[1] == BODY
    assert m.counters[VIOLATIONS] == 0


@pytest.mark.parametrize("offset", [-9, -8, -7.5, 8, 9, 60, -3600, 1 << 31])
def test_open_refuses_a_timestamp_outside_the_tolerance(offset):
    m = membership(tolerance=7)
    refused(m, hand_seal(BODY, ntp(T0 + offset)))
    assert m.counters[VIOLATIONS] == 1


def test_tolerance_survives_the_ntp_era_rollover():
    # 2036-02-07T06:28:16Z: NTP seconds wrap to 0. A sender just past it and a receiver just before agree.
    rollover = (1 << 32) - NTP_EPOCH_OFFSET
    assert opens(membership(tolerance=7), hand_seal(BODY, ntp(rollover + 2)), now=rollover - 2)
    m = membership(tolerance=7)
    assert opens(m, hand_seal(BODY, ntp(rollover - 1)), now=rollover + 1)
    refused(m, hand_seal(BODY, ntp(rollover + 100)), now=rollover - 1)
    # And the order holds across it: after a message stamped past the wrap, one stamped 3 s before it is
    # older, not newer (compared as NTP timestamps it was the larger, and was taken: before 2026-12-03).
    assert opens(m, hand_seal(BODY, ntp(rollover + 2)), now=rollover + 1)
    refused(m, hand_seal(BODY, ntp(rollover - 1) + 1), now=rollover + 1)
    assert m.members[PEER].replay.newest == held(ntp(rollover + 2))


def test_open_refuses_a_replayed_datagram_and_counts_it():
    m = membership()
    data = hand_seal(BODY, ntp(T0))
    assert opens(m, data)
    refused(m, data, now=T0 + 0.1)
    assert m.counters[VIOLATIONS] == 1
    # The same body sealed again with a newer timestamp is fine: it is the timestamp that must be new.
    assert opens(m, hand_seal(BODY, ntp(T0) + 1), now=T0 + 0.1)


def test_open_refuses_a_message_more_than_a_second_older_than_the_newest():
    m = membership()
    assert opens(m, hand_seal(BODY, ntp(T0 + 2)), now=T0 + 2)
    refused(m, hand_seal(BODY, ntp(T0 + 0.5)), now=T0 + 2)  # 1.5 s behind, within tolerance
    assert opens(m, hand_seal(BODY, ntp(T0 + 1.5)), now=T0 + 2)  # 0.5 s behind: reordered
    assert m.counters[VIOLATIONS] == 1


def test_a_covered_but_unconfigured_address_is_refused_even_with_a_valid_seal():
    # (Was: a member is learnt only when its message verifies. Nothing is learnt now: an address the
    # association covers but the configuration does not name is refused however well its message is
    # sealed, every time, and counted; it never becomes a member, nor gets a replay window.)
    m = membership(configured=(PEER,))
    good = hand_seal(BODY, ntp(T0), sender=OTHER)
    assert unseal(good, SA, OTHER, OWN) == (BODY, held(ntp(T0)))  # the seal itself is genuine
    for i in range(3):
        assert refused(m, hand_seal(BODY, ntp(T0) + i, sender=OTHER), OTHER).member is None
    refused(m, hand_seal(BODY, ntp(T0), sender=OTHER, key=bytes(16)), OTHER)
    refused(m, hand_seal(BODY, ntp(T0 - 60), sender=OTHER), OTHER)
    assert m.counters[VIOLATIONS] == 5
    assert OTHER not in m.members and [x.address for x in m] == [PEER]
    # With no member configured at all, the same.
    lonely = membership(configured=())
    refused(lonely, good, OTHER)
    assert list(lonely) == [] and lonely.counters[VIOLATIONS] == 1


def test_replay_state_is_per_member():
    m = membership(configured=(PEER, OTHER))
    t = ntp(T0)
    assert opens(m, hand_seal(BODY, t, sender=PEER), PEER)
    assert opens(m, hand_seal(BODY, t, sender=OTHER), OTHER)


def test_replay_windows_are_per_configured_sender():
    m = membership(configured=(PEER, OTHER, THIRD))
    t = ntp(T0)
    # PEER's newest moves five seconds ahead: that says nothing about OTHER's timestamps.
    assert opens(m, hand_seal(BODY, ntp(T0 + 5), sender=PEER), PEER, now=T0 + 5)
    assert opens(m, hand_seal(BODY, t, sender=OTHER), OTHER, now=T0 + 5)
    refused(m, hand_seal(BODY, t, sender=PEER), PEER, now=T0 + 5)  # five seconds behind PEER's newest
    # A repeat is a repeat only from the same sender.
    refused(m, hand_seal(BODY, t, sender=OTHER), OTHER, now=T0 + 5)
    assert opens(m, hand_seal(BODY, t, sender=THIRD), THIRD, now=T0 + 5)
    assert m.counters[VIOLATIONS] == 2
    assert m.members[PEER].replay.newest == held(ntp(T0 + 5))
    assert m.members[OTHER].replay.newest == m.members[THIRD].replay.newest == held(t)
    # A datagram refused for its seal (here OTHER's, reflected from THIRD's address) touches no window.
    later = hand_seal(BODY, t + 1, sender=OTHER)
    refused(m, later, THIRD, now=T0 + 5)
    assert m.members[THIRD].replay.newest == m.members[OTHER].replay.newest == held(t)
    assert opens(m, later, OTHER, now=T0 + 5)


# -- reflection: the seal covers the conversation ------------------------------------------------------


def three_members() -> tuple[Membership, Membership, Membership]:
    """OWN, PEER and OTHER, each configured with the other two, one association for all."""
    everyone = (OWN, PEER, OTHER)
    own, peer, other = (membership([a for a in everyone if a != me], own=me) for me in everyone)
    return own, peer, other


def test_a_message_reflected_from_another_configured_members_address_is_refused_and_counted():
    own, peer, other = three_members()
    genuine = peer.seal(BODY, peer.members[OWN], T0)  # PEER to OWN
    # Captured on the link and re-sent to OWN from OTHER's address: OTHER is a configured member with the
    # same key, but the seal says PEER sent it, so it fails as OTHER's (a forgery or a key mismatch).
    assert refused(own, genuine, OTHER).member is own.members[OTHER]
    assert own.counters[VIOLATIONS] == 1
    assert own.members[OTHER].replay.newest == 0
    # Re-sent from PEER's address to OTHER: sealed for OWN, so not for OTHER.
    assert refused(other, genuine, PEER).member is other.members[PEER]
    assert other.counters[VIOLATIONS] == 1
    # Along its own path it still opens once (the refusals left no trace), and only once.
    assert opens(own, genuine, PEER)[0] is own.members[PEER]
    refused(own, genuine, PEER)
    assert own.counters[VIOLATIONS] == 2


def test_a_message_sent_back_to_its_sender_is_refused_and_counted():
    own, peer, _ = three_members()
    genuine = peer.seal(BODY, peer.members[OWN], T0)  # PEER to OWN
    # Back to PEER from OWN's address, as if OWN had said it: the conversation is the other way round.
    assert refused(peer, genuine, OWN).member is peer.members[OWN]
    # Back to PEER from PEER's own address: not its multicast looped back, so a violation too.
    assert refused(peer, genuine, PEER).member is None
    assert peer.counters[VIOLATIONS] == 2
    assert peer.members[OWN].replay.newest == 0 and not peer.members[OWN].up
    assert opens(own, genuine, PEER)


def test_a_multicast_opens_only_as_a_multicast_from_its_sender():
    own, peer, other = three_members()
    multicast = peer.seal_for(BODY, SA, GROUP, T0)
    assert opens(own, multicast, PEER, destination=GROUP)[1] == BODY
    assert opens(other, multicast, PEER, destination=GROUP)[1] == BODY
    fresh = membership([PEER, OTHER])
    refused(fresh, multicast, PEER)  # arriving at OWN's unicast address: not sealed for it
    refused(fresh, multicast, OTHER, destination=GROUP)  # from another member's address
    assert fresh.counters[VIOLATIONS] == 2


# -- sealing ---------------------------------------------------------------------------------------


def test_seal_uses_the_members_association_the_conversation_and_the_clock():
    m = membership()
    [peer] = list(m)
    data = m.seal(BODY, peer, T0 + 0.25)
    body, timestamp = unseal(data, SA, OWN, PEER)
    assert body == BODY and timestamp == held(ntp(T0 + 0.25))
    assert data == hand_seal(BODY, ntp(T0 + 0.25), sender=OWN, receiver=PEER)
    for sender, receiver in ((PEER, OWN), (OWN, OTHER), (OTHER, PEER), (OWN, GROUP)):
        with pytest.raises(SealError):
            unseal(data, SA, sender, receiver)


def test_seal_timestamps_strictly_increase_even_with_the_same_now():
    m = membership()
    [peer] = list(m)
    stamps = [unseal(m.seal(BODY, peer, T0), SA, OWN, PEER)[1] for _ in range(5)]
    assert stamps == [held(ntp(T0)) + i for i in range(5)]
    # A clock that steps back changes nothing either: still one past the last.
    assert unseal(m.seal(BODY, peer, T0 - 5), SA, OWN, PEER)[1] == held(ntp(T0)) + 5
    # And across associations and receivers (a multicast too): one counter per sender.
    assert unseal(m.seal_for(BODY, SHA_SA, GROUP, T0), SHA_SA, OWN, GROUP)[1] == held(ntp(T0)) + 6
    assert unseal(m.seal(BODY, peer, T0 + 1), SA, OWN, PEER)[1] == held(ntp(T0 + 1))


def test_seal_timestamps_follow_the_wall_clock_not_now():
    m = membership()
    m.clock.offset = 3600.0  # ``now`` is monotonic; the wall clock is an hour ahead of it
    data = m.seal(BODY, m.members[PEER], T0)
    assert unseal(data, SA, OWN, PEER)[1] == held(ntp(T0 + 3600))
    receiver = Membership(PEER, [OWN], association_for, 7, Counter())
    refused(receiver, data, OWN, now=T0)  # an hour off the receiver's wall clock (offset 0)
    receiver.clock.offset = 3600.0  # the same wall clock: the refusal left no trace, so it opens now
    assert opens(receiver, data, OWN, now=T0)[1] == BODY


def test_a_receiver_accepts_every_message_sealed_in_one_instant():
    sender, receiver = membership(), Membership(PEER, [OWN], association_for, 7, Counter())
    [peer] = list(sender)
    datagrams = [sender.seal(BODY, peer, T0) for _ in range(50)]
    assert all(opens(receiver, d, OWN) for d in reversed(datagrams))  # reordered, even
    assert receiver.counters[VIOLATIONS] == 0


def test_group_association_is_the_one_covering_our_own_address():
    assert membership().group_association is SA
    assert Membership(STRANGER, [], association_for, 7, Counter()).group_association is None
