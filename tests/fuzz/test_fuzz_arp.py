"""The ARP frames the interface method reads off the link, under arbitrary and near-valid input: the parser
raises ParseError and nothing else, agrees with scapy (an independent ARP implementation) on what it
accepts, and the defence never fails on what parses nor grows without bound."""

from __future__ import annotations

import struct
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.l2 import ARP, Ether

from homeagent.runtime.defence import MAX_OFFENDERS, Announce, Defence, Probe, Warn
from homeagent.wire.arp import SIZE, ArpFrame, Operation
from homeagent.wire.errors import ParseError

FAST = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
OURS = bytes.fromhex("02000000aa01")
VIP = 0x0A01FF0A

MACS = st.one_of(st.sampled_from([OURS, b"\xff" * 6, bytes(6)]), st.binary(min_size=6, max_size=6))
ADDRESSES = st.one_of(st.sampled_from([VIP, 0, 0xFFFFFFFF]), st.integers(0, 2**32 - 1))


@st.composite
def near_valid(draw: st.DrawFn) -> bytes:
    """An ARP frame for IPv4 over Ethernet with any header field possibly wrong, cut short or padded."""
    fields = [draw(MACS), draw(MACS),
              draw(st.sampled_from([0x0806, 0x0800, 0x8100, 0])),
              draw(st.sampled_from([1, 6, 0])), draw(st.sampled_from([0x0800, 0x86DD])),
              draw(st.sampled_from([6, 8, 0])), draw(st.sampled_from([4, 16])),
              draw(st.sampled_from([1, 2, 3, 0, 0xFFFF])),
              draw(MACS), draw(ADDRESSES).to_bytes(4, "big"), draw(MACS), draw(ADDRESSES).to_bytes(4, "big")]
    data = struct.pack("!6s6sHHHBBH6s4s6s4s", *fields)
    if draw(st.booleans()):
        return data[:draw(st.integers(0, len(data)))]
    return data + draw(st.binary(max_size=40))


def parse(data: bytes) -> ArpFrame | None:
    try:
        return ArpFrame.parse(data)
    except ParseError:
        return None


@FAST
@given(st.one_of(st.binary(max_size=128), near_valid()))
def test_parse_raises_only_parse_error_and_agrees_with_scapy(data):
    frame = parse(data)
    if frame is None:
        return
    assert len(data) >= SIZE
    assert frame.to_bytes() == data[:SIZE]  # padding is not ours
    arp = Ether(data)[ARP]
    assert (arp.hwtype, arp.ptype, arp.hwlen, arp.plen, arp.op) == (1, 0x0800, 6, 4, frame.operation)
    assert bytes.fromhex(arp.hwsrc.replace(":", "")) == frame.sender_mac
    assert int.from_bytes(bytes(map(int, arp.psrc.split("."))), "big") == frame.sender_address
    assert int.from_bytes(bytes(map(int, arp.pdst.split("."))), "big") == frame.target_address


@FAST
@given(MACS, MACS, st.sampled_from(list(Operation)), MACS, ADDRESSES, MACS, ADDRESSES)
def test_every_valid_frame_round_trips(dst, src, op, sha, spa, tha, tpa):
    frame = ArpFrame(dst, src, op, sha, spa, tha, tpa)
    assert ArpFrame.parse(frame.to_bytes()) == frame


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.one_of(st.binary(max_size=64), near_valid()), st.floats(0, 0.05)), max_size=300))
def test_the_defence_takes_any_stream_of_frames_within_its_bounds(stream):
    counters: Counter[str] = Counter()
    defence = Defence(OURS, counters)
    now = 0.0
    assert all(isinstance(a, Probe) for a in defence.hold(VIP, now))
    actions: list[Announce | Probe | Warn] = []
    for data, step in stream:
        now += step
        frame = parse(data)
        if frame is not None:
            actions += defence.heard(frame, now)
    assert len(defence._offenders) <= MAX_OFFENDERS
    for kind, gap in ((Announce, 0.5), (Probe, 0.1)):
        times = sorted(a.at for a in actions if isinstance(a, kind))
        assert all(b - a >= gap - 1e-9 for a, b in zip(times, times[1:])), kind
        assert all(a.address == VIP for a in actions if isinstance(a, kind))
    assert sum(isinstance(a, Warn) for a in actions) <= counters["redundancy.address_conflicts"]
