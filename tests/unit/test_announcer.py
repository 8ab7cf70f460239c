"""The pacing of gratuitous ARP (dataplane.announcer): the order, the repetition, and the token bucket's
bound whatever the calls, with the time given (no clock, no socket); the frame read back by scapy."""

from __future__ import annotations

import asyncio
import errno
from collections import Counter
from ipaddress import IPv4Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.l2 import ARP, Ether

from homeagent.dataplane.announcer import Announcer, Pacer, gratuitous_arp
from homeagent.dataplane.fake_neighbours import FakeNeighbours
from homeagent.dataplane.neighbours import Neighbours, NeighboursError
from homeagent.wire.arp import ArpFrame

OURS = bytes.fromhex("02aabbccddee")
MN = bytes.fromhex("020000000b0b")


def addresses(taken: list[tuple[int, int]]) -> list[int]:
    return [a for a, _ in taken]


def test_urgent_goes_first_then_the_takeover_then_the_repetitions_after_again():
    pacer = Pacer(rate=1000, burst=10, again=1.0)
    pacer.bulk([1, 2, 3])
    pacer.urgent(9)
    assert addresses(pacer.take(0.0)) == [9, 1, 2, 3]
    assert pacer.take(0.5) == []  # repetitions are not due yet, whatever the tokens
    assert pacer.due(0.5) == 1.0
    assert pacer.take(1.0) == [(9, 2), (1, 3), (2, 3), (3, 3)]  # kind + 2: the repetition
    assert pacer.take(5.0) == [] and pacer.due(5.0) is None and len(pacer) == 0


def test_an_address_asked_for_twice_is_announced_once():
    pacer = Pacer(rate=1000, burst=10, again=1.0)
    pacer.urgent(7)
    pacer.urgent(7)
    assert addresses(pacer.take(0.0)) == [7]


def test_the_bucket_lets_burst_then_rate():
    pacer = Pacer(rate=100, burst=5, again=60)
    pacer.bulk(range(1000))
    assert len(pacer.take(0.0)) == 5
    assert pacer.take(0.0) == []
    assert pacer.due(0.0) == 0.01  # one token a hundredth of a second
    assert len(pacer.take(0.1)) == 5  # ten tokens earned, five kept: the bucket holds ``burst``
    assert len(pacer.take(0.13)) == 3


def test_what_the_socket_refused_goes_first_next_time_and_is_repeated_once():
    pacer = Pacer(rate=1000, burst=4, again=1.0)
    pacer.bulk([1, 2, 3, 4])
    taken = pacer.take(0.0)
    pacer.untake(taken[2:], 0.0)  # 3 and 4 were not sent
    assert addresses(pacer.take(0.01)) == [3, 4]
    assert sorted(addresses(pacer.take(2.0))) == [1, 2, 3, 4]  # each repetition once


def test_clear_forgets_everything():
    pacer = Pacer()
    pacer.bulk(range(100))
    pacer.urgent(5)
    pacer.take(0.0)
    pacer.clear()
    assert len(pacer) == 0 and pacer.take(10.0) == []


operations = st.lists(st.one_of(
    st.tuples(st.just("urgent"), st.integers(0, 50)),
    st.tuples(st.just("bulk"), st.lists(st.integers(0, 50), max_size=80)),
    st.tuples(st.just("take"), st.floats(0, 0.2)),
    st.tuples(st.just("untake"), st.floats(0, 0.2)),
    st.tuples(st.just("clear"), st.none()),
), max_size=60)


@settings(max_examples=300, deadline=None)
@given(operations, st.floats(1, 10_000), st.integers(1, 50))
def test_never_more_than_burst_plus_rate_times_elapsed(ops, rate, burst):
    pacer = Pacer(rate=rate, burst=burst, again=0.05)
    now, sent = 0.0, 0
    for op, arg in ops:
        if op == "urgent":
            pacer.urgent(arg)
        elif op == "bulk":
            pacer.bulk(arg)
        elif op == "clear":
            pacer.clear()
        else:
            now += arg
            taken = pacer.take(now)
            if op == "untake" and taken:
                pacer.untake(taken[len(taken) // 2:], now)
                taken = taken[:len(taken) // 2]
            sent += len(taken)
            assert sent <= burst + rate * now + 1e-6
            due = pacer.due(now)
            assert due is None or due >= now


def test_gratuitous_arp_for_a_returned_mobile_node_carries_its_mac_from_our_port():
    frame = Ether(gratuitous_arp(OURS, int(IPv4Address("10.1.0.9")), MN))
    assert frame.src == "02:aa:bb:cc:dd:ee" and frame.dst == "ff:ff:ff:ff:ff:ff"  # switches learn our port
    arp = frame[ARP]
    assert arp.op == 1 and arp.psrc == arp.pdst == "10.1.0.9"
    assert arp.hwsrc == "02:00:00:00:0b:0b"  # the neighbours' entries go back to the mobile node


class FakeSocket:
    def __init__(self, refuse_after: int | None = None) -> None:
        self.frames: list[bytes] = []
        self.refuse_after = refuse_after

    def getsockname(self) -> tuple[str, int, int, int, bytes]:
        return ("eth0", 0, 0, 1, OURS)

    def send(self, frame: bytes) -> int:
        if self.refuse_after is not None and len(self.frames) >= self.refuse_after:
            raise BlockingIOError(errno.EAGAIN, "full")
        self.frames.append(frame)
        return len(frame)

    def close(self) -> None:
        pass


def test_announcer_reads_the_mac_when_sending_and_keeps_what_the_socket_refused():
    async def scenario() -> None:
        macs = {1: OURS, 2: None, 3: MN}
        counters: Counter[str] = Counter()
        heard: list[tuple[int, bool]] = []
        sock = FakeSocket(refuse_after=1)
        announcer = Announcer(sock, macs.get, counters,  # type: ignore[arg-type]
                              rate=1000, burst=10, again=0.05, sent=lambda a, last: heard.append((a, last)))
        announcer.bulk([1, 2, 3])
        announcer.start()
        await asyncio.sleep(0.03)
        assert [ArpFrame.parse(f).sender_address for f in sock.frames] == [1]
        sock.refuse_after = None  # room again: 3 goes (2 has no MAC: let go)
        await asyncio.sleep(0.2)
        announcer.close()
        sent = [(ArpFrame.parse(f).sender_address, ArpFrame.parse(f).sender_mac) for f in sock.frames]
        assert sent == [(1, OURS), (3, MN), (1, OURS), (3, MN)]
        assert heard == [(1, False), (3, False), (1, True), (3, True)]
        assert counters["neighbours.gratuitous_arp_sent"] == 4
        assert counters["neighbours.gratuitous_arp_send_errors"] >= 1

    asyncio.run(scenario())


def test_with_a_virtual_mac_every_frame_comes_from_it_and_an_away_address_is_announced_at_it():
    """The group's virtual MAC (docs/dataplane.md, "A virtual MAC"): the source of every frame, so that
    the switches learn the new active member's port from its first; what an away address is announced with;
    a returned mobile node's frame still carries the mobile node's MAC."""
    group = bytes.fromhex("02484101000a")

    async def scenario() -> None:
        sock = FakeSocket()
        announcer = Announcer(sock, lambda a: {1: group, 3: MN}.get(a), rate=1000, burst=10,  # type: ignore[arg-type]
                              again=10, mac=group)
        assert announcer.mac == group and announcer.interface_mac == OURS
        announcer.bulk([1, 3])
        announcer.start()
        await asyncio.sleep(0.05)
        announcer.close()
        frames = [Ether(f) for f in sock.frames]
        assert [f.src for f in frames] == ["02:48:41:01:00:0a"] * 2
        assert [(f[ARP].psrc, f[ARP].hwsrc) for f in frames] == [("0.0.0.1", "02:48:41:01:00:0a"),
                                                                 ("0.0.0.3", "02:00:00:00:0b:0b")]

    asyncio.run(scenario())


def test_fake_neighbours_adds_up_the_calls():
    async def scenario() -> None:
        fake = FakeNeighbours()
        await fake.open()
        fake.away(1)
        assert fake.entries == frozenset() and fake.announced == []  # standing by
        fake.serve(True)
        fake.away(2)
        fake.away(2)  # a renewal: nothing new
        fake.home(1, MN)
        assert fake.entries == {2}
        assert fake.announced == [(1, FakeNeighbours.MAC), (2, FakeNeighbours.MAC), (1, MN)]
        await fake.close()
        assert fake.entries == frozenset()

    asyncio.run(scenario())


def test_neighbours_on_a_missing_interface_says_so_and_close_holds_nothing():
    async def scenario() -> None:
        neighbours = Neighbours("nb-nowhere0")
        with pytest.raises(NeighboursError, match="no interface"):
            await neighbours.open()
        neighbours.away(1)  # state only, before or without open
        neighbours.serve(True)
        await neighbours.close()

    asyncio.run(scenario())


def test_a_rate_above_what_the_default_burst_allows_per_tick_is_reached():
    """The task wakes every TICK and the bucket holds ``burst``: at 20,000 frames a second a burst of 100
    would cap it at 10,000. The announcer's bucket holds at least a tick's worth."""
    from homeagent.dataplane.announcer import TICK

    announcer = Announcer(FakeSocket(), lambda a: OURS, rate=20_000, burst=100)  # type: ignore[arg-type]
    assert announcer.pacer.burst == 200
    assert Announcer(FakeSocket(), lambda a: OURS, rate=1000, burst=100).pacer.burst == 100  # type: ignore[arg-type]

    def sent_in_a_second(pacer: Pacer) -> int:
        pacer.bulk(range(1, 100_000))
        steps = round(1 / TICK)
        return sum(len(pacer.take(n * TICK)) for n in range(1, steps + 1))

    assert 19_800 <= sent_in_a_second(announcer.pacer) <= 20_200  # fractions of a token, left in the bucket
    assert sent_in_a_second(Pacer(rate=20_000, burst=100, again=60)) <= 10_000  # what it was
