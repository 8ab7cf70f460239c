"""The defence of the virtual address (runtime/defence.py), frames and times in, actions out: a host that
claims an address we hold is heard, counted, warned about and answered with an announcement, within the
bounds docs/operations.md gives; a member alone on its address announces nothing."""

from __future__ import annotations

from collections import Counter
from ipaddress import IPv4Address

from homeagent.runtime.defence import DEFEND_GAP, MAX_OFFENDERS, PROBE_GAP, SETTLE, WARN_GAP
from homeagent.runtime.defence import WARNINGS_PER_SECOND
from homeagent.runtime.defence import Announce, Defence, Probe, Warn
from homeagent.wire.arp import BROADCAST, ArpFrame, Operation

OURS = bytes.fromhex("02000000aa01")
STALE = bytes.fromhex("02000000bb02")
ROUTER = bytes.fromhex("02000000cc03")
VIP = int(IPv4Address("10.1.255.10"))
ROUTER_IP = int(IPv4Address("10.1.255.254"))


def holding(now: float = 0.0) -> tuple[Defence, Counter[str]]:
    counters: Counter[str] = Counter()
    defence = Defence(OURS, counters)
    assert defence.hold(VIP, now) == [Probe(VIP, now + SETTLE)]  # a host that kept the address answers it
    return defence, counters


def reply(mac: bytes, to: bytes = OURS, sender: int = VIP) -> ArpFrame:
    return ArpFrame(to, mac, Operation.REPLY, mac, sender, to, 0)


def request(mac: bytes, sender: int, target: int, to: bytes = BROADCAST) -> ArpFrame:
    return ArpFrame(to, mac, Operation.REQUEST, mac, sender, bytes(6), target)


def test_a_reply_from_another_mac_for_our_address_is_a_conflict():
    defence, counters = holding()
    assert defence.heard(reply(STALE), 1.0) == [Announce(VIP, 1.0), Warn(VIP, STALE, 1)]
    assert counters["redundancy.address_conflicts"] == 1


def test_an_announcement_or_a_request_from_our_address_by_another_host_is_a_conflict():
    defence, counters = holding()
    assert Announce(VIP, 1.0) in defence.heard(request(STALE, VIP, VIP), 1.0)  # gratuitous ARP
    assert Announce(VIP, 2.0) in defence.heard(request(STALE, VIP, ROUTER_IP), 2.0)  # resolving the router
    assert counters["redundancy.address_conflicts"] == 2


def test_our_own_frames_and_addresses_not_held_are_no_conflict():
    defence, counters = holding()
    assert defence.heard(reply(OURS, to=ROUTER), 1.0) == []
    assert defence.heard(reply(STALE, sender=VIP + 1), 1.0) == []
    defence.release(VIP)
    assert defence.heard(reply(STALE), 2.0) == []
    assert counters["redundancy.address_conflicts"] == 0


def test_a_neighbour_resolving_our_address_by_broadcast_draws_a_probe_and_nothing_else():
    defence, counters = holding()
    assert defence.heard(request(ROUTER, ROUTER_IP, VIP), 1.0) == [Probe(VIP, 1.0)]
    # Unicast to us: the neighbour has our MAC already, and no other host hears it.
    assert defence.heard(request(ROUTER, ROUTER_IP, VIP, to=OURS), 2.0) == []
    assert counters["redundancy.address_conflicts"] == 0


def test_probes_are_spaced_and_a_burst_of_requests_sends_one_more_at_most():
    defence, _ = holding()
    assert defence.heard(request(ROUTER, ROUTER_IP, VIP), 1.0) == [Probe(VIP, 1.0)]
    assert defence.heard(request(ROUTER, ROUTER_IP, VIP), 1.01) == [Probe(VIP, 1.0 + PROBE_GAP)]
    for i in range(100):
        assert defence.heard(request(ROUTER, ROUTER_IP, VIP), 1.02 + i * 0.0005) == []
    later = 1.0 + 2.5 * PROBE_GAP  # past the one due: sent at once
    assert defence.heard(request(ROUTER, ROUTER_IP, VIP), later) == [Probe(VIP, later)]


def test_re_announcements_are_spaced_deferred_not_dropped_and_counted_all():
    defence, counters = holding()
    assert Announce(VIP, 1.0) in defence.heard(reply(STALE), 1.0)
    # Sooner than the gap: one announcement at the gap's end answers this one and all until then.
    assert defence.heard(reply(STALE), 1.1) == [Announce(VIP, 1.0 + DEFEND_GAP)]
    other = bytes.fromhex("02000000dd04")
    assert defence.heard(reply(other), 1.2) == [Warn(VIP, other, 1)]  # a second host: still one announcement
    assert defence.heard(reply(STALE), 1.3) == []
    later = 1.0 + 2.5 * DEFEND_GAP
    assert defence.heard(reply(STALE), later) == [Announce(VIP, later)]
    assert counters["redundancy.address_conflicts"] == 5


def test_two_hosts_answering_each_other_announce_at_most_once_per_gap():
    defence, _ = holding()
    heard = [a for i in range(1000) for a in defence.heard(reply(STALE), i * 0.01)]
    times = [a.at for a in heard if isinstance(a, Announce)]
    assert all(b - a >= DEFEND_GAP - 1e-9 for a, b in zip(times, times[1:]))
    assert len(times) <= 10 / DEFEND_GAP + 1


def test_warnings_per_mac_say_how_many_conflicts_they_stand_for():
    defence, _ = holding()
    assert Warn(VIP, STALE, 1) in defence.heard(reply(STALE), 1.0)
    for t in (2.0, 3.0, 4.0):
        assert not any(isinstance(a, Warn) for a in defence.heard(reply(STALE), t))
    assert Warn(VIP, STALE, 4) in defence.heard(reply(STALE), 1.0 + WARN_GAP)


def test_offending_macs_remembered_are_bounded():
    defence, counters = holding()
    for i in range(10 * MAX_OFFENDERS):
        defence.heard(reply(i.to_bytes(6, "big")), 1.0 + i * 1e-6)
    assert len(defence._offenders) == MAX_OFFENDERS
    assert counters["redundancy.address_conflicts"] == 10 * MAX_OFFENDERS


def test_warnings_in_all_are_bounded_and_a_mac_left_out_is_told_later():
    defence, _ = holding()
    macs = [i.to_bytes(6, "big") for i in range(1, 11)]
    warned = [a for mac in macs for a in defence.heard(reply(mac), 1.5) if isinstance(a, Warn)]
    assert len(warned) == WARNINGS_PER_SECOND
    left_out = macs[-1]
    assert Warn(VIP, left_out, 2) in defence.heard(reply(left_out), 2.5)  # the next second: both conflicts
