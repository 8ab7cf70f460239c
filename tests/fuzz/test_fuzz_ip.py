"""The IPv4 and IP-in-IP parsers under arbitrary and near-valid input: PacketError (a ParseError with a drop
reason) is the only exception that may escape; what does decapsulate agrees with scapy; what we build
parses back; ICMP errors and fragments stay within their bounds."""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP
from scapy.packet import raw

from homeagent.wire.ip import (ICMP_ERROR_SIZE, Drop, IPv4Header, PacketError, checksum, decapsulate,
                               encapsulate, fragment, fragmentation_needed, time_exceeded)

FAST = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ADDRESSES = st.one_of(st.sampled_from([0, 0x7F000001, 0xE0000001, 0xFFFFFFFF, 0x0A010032]),
                      st.integers(0, 2**32 - 1))


@st.composite
def header(draw: st.DrawFn, protocol: st.SearchStrategy[int], payload: bytes) -> bytes:
    """An IPv4 header in front of ``payload`` with any field possibly wrong."""
    ihl = draw(st.sampled_from([5, 5, 5, 6, 4, 15, 0]))
    options = draw(st.binary(min_size=max(0, ihl * 4 - 20), max_size=max(0, ihl * 4 - 20)))
    total = 20 + len(options) + len(payload)
    total = draw(st.one_of(st.just(total), st.integers(0, 0xFFFF)))
    fields = [(draw(st.sampled_from([4, 4, 6, 0])) << 4) | ihl, draw(st.integers(0, 255)), total,
              draw(st.integers(0, 0xFFFF)), draw(st.sampled_from([0, 0x4000, 0x2000, 0x0001, 0xFFFF])),
              draw(st.integers(0, 255)), draw(protocol), 0, draw(ADDRESSES).to_bytes(4, "big"),
              draw(ADDRESSES).to_bytes(4, "big")]
    head = struct.pack("!BBHHHBBH4s4s", *fields) + options
    if draw(st.booleans()):
        csum = checksum(head)
        head = head[:10] + csum.to_bytes(2, "big") + head[12:]
    return head + payload


@st.composite
def near_valid(draw: st.DrawFn) -> bytes:
    """IP-in-IP with either header possibly wrong, cut short or padded."""
    inner = draw(header(st.sampled_from([1, 6, 17, 4]), draw(st.binary(max_size=64))))
    data = draw(header(st.sampled_from([4, 4, 4, 17, 41]), inner))
    if draw(st.booleans()):
        return data[:draw(st.integers(0, len(data)))]
    return data + draw(st.binary(max_size=16))


def decap(data: bytes):
    try:
        return decapsulate(data)
    except PacketError as exc:
        assert isinstance(exc.drop, Drop)
        return None


@FAST
@given(st.one_of(st.binary(max_size=128), near_valid()))
def test_decapsulate_raises_only_packet_error_and_agrees_with_scapy(data):
    result = decap(data)
    if result is None:
        return
    outer, inner = result
    assert data[9] == 4 and checksum(data[:outer.header_length]) == 0
    seen = IP(data)
    assert (seen.src, seen.dst, seen.len, seen.proto) == (
        ".".join(map(str, data[12:16])), ".".join(map(str, data[16:20])), outer.total_length, 4)
    inner_header = IPv4Header.parse(inner, verify_checksum=False)
    assert len(inner) == inner_header.total_length
    assert data[outer.header_length:outer.header_length + len(inner)] == inner


@FAST
@given(st.one_of(st.binary(max_size=128), near_valid()), ADDRESSES, st.integers(68, 1500))
def test_icmp_errors_and_fragments_never_fail_and_stay_bounded(data, source, mtu):
    for reply in (time_exceeded(data, source), fragmentation_needed(data, source, mtu)):
        if reply is not None:
            assert len(reply) <= ICMP_ERROR_SIZE and checksum(reply[:20]) == 0
            assert checksum(reply[20:]) == 0
            assert reply[16:20] == data[12:16]  # to the sender
    try:
        pieces = fragment(data, mtu)
    except PacketError:
        return
    assert all(len(p) <= max(mtu, len(data)) for p in pieces)


@FAST
@given(near_valid(), ADDRESSES, ADDRESSES, st.integers(1, 255), st.integers(0, 0xFFFF))
def test_what_we_encapsulate_decapsulates_to_itself(inner, source, destination, ttl, ident):
    try:
        packet = encapsulate(inner, source, destination, ttl, ident)
    except PacketError:
        return
    assert raw(IP(packet))[:20] == packet[:20]
    result = decap(packet)
    if result is not None:
        outer, got = result
        assert (outer.source, outer.destination) == (source, destination)
        assert (outer.ttl, outer.identification) == (ttl, ident)
        assert inner.startswith(got)
