"""IPv4, IP-in-IP (RFC 2003) and the tunnel's ICMP errors, read back by scapy (an independent IPv4
implementation): what we build is what scapy builds, and what scapy builds we parse."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest
from scapy.layers.inet import ICMP, IP, UDP, IPerror, UDPerror
from scapy.packet import Raw, raw

from homeagent.wire.errors import ParseError
from homeagent.wire.ip import (DEFAULT_TTL, IPPROTO_IPIP, Drop, IPv4Header, OuterHeader, PacketError,
                               checksum, decapsulate, encapsulate, fragment, fragmentation_needed,
                               time_exceeded)


def a(text: str) -> int:
    return int(IPv4Address(text))


CN, HOME, HA, COA = "10.9.0.2", "10.1.0.50", "10.1.0.1", "10.2.0.10"


def datagram(size: int = 64, ttl: int = 17, tos: int = 0x28, df: bool = True, src: str = CN,
             dst: str = HOME) -> bytes:
    packet = IP(src=src, dst=dst, ttl=ttl, tos=tos, flags="DF" if df else 0, id=4321) / UDP(sport=5000,
                                                                                          dport=7)
    return raw(packet / Raw(b"x" * (size - 28)))


def test_checksum_matches_scapy_on_odd_and_even_lengths():
    for data in (b"", b"\x01", b"\x45\x00\x00\x1c", bytes(range(37)), bytes(range(256)) * 3):
        # scapy's checksum is the same RFC 1071 sum
        from scapy.utils import checksum as scapy_checksum
        assert checksum(data) == scapy_checksum(data)


def test_header_round_trips_through_scapy():
    packet = datagram(100)
    header = IPv4Header.parse(packet)
    assert (header.ttl, header.tos, header.total_length, header.identification) == (17, 0x28, 100, 4321)
    assert header.dont_fragment and not header.more_fragments
    assert header.source == a(CN) and header.destination == a(HOME)
    assert header.to_bytes() == packet[:20]


def test_encapsulation_follows_rfc_2003():
    inner = datagram(200, tos=0xB8, df=True)
    outer = IP(encapsulate(inner, a(HA), a(COA), identification=77))
    assert outer.proto == IPPROTO_IPIP == 4
    assert (outer.src, outer.dst, outer.ttl, outer.id) == (HA, COA, DEFAULT_TTL, 77)
    assert outer.tos == 0xB8, "TOS copied from the inner header"
    assert outer.flags == "DF", "DF copied from the inner header"
    assert outer.len == 220 and outer.ihl == 5
    # scapy recomputes the checksum of what it read: ours must be the same
    recomputed = IP(raw(outer))
    del recomputed.chksum
    assert IP(raw(recomputed)).chksum == outer.chksum
    assert raw(outer[IP].payload) == inner, "the inner datagram is carried unchanged"


def test_encapsulation_without_df_and_configured_ttl():
    outer = IP(encapsulate(datagram(df=False), a(HA), a(COA), ttl=9))
    assert outer.flags == 0 and outer.ttl == 9


def test_outer_header_checksum_for_every_tos_and_length():
    header = OuterHeader(a("255.255.255.254"), a("255.255.0.1"), ttl=255)
    for length in (20, 21, 1500, 65535):
        for tos in (0, 0xFF):
            built = header.build(length, 0xFFFF, tos, True)
            assert checksum(built) == 0


def test_decapsulation_gives_back_the_inner_datagram():
    inner = datagram(90)
    outer, got = decapsulate(encapsulate(inner, a(COA), a(HA)) + b"padding")
    assert got == inner
    assert (outer.source, outer.destination) == (a(COA), a(HA))


@pytest.mark.parametrize("packet, drop", [
    (b"\x45" * 10, Drop.TRUNCATED),
    (raw(IP(version=6, proto=4) / IP()), Drop.NOT_IPV4),
    (raw(IP(ihl=4, proto=4) / IP()), Drop.BAD_HEADER_LENGTH),
    (raw(IP(proto=17) / UDP()), Drop.NOT_IPIP),
    (raw(IP(proto=4, flags="MF") / IP()), Drop.FRAGMENT),
    (raw(IP(proto=4, frag=10) / IP()), Drop.FRAGMENT),
    (raw(IP(proto=4) / Raw(b"\x45\x00")), Drop.INNER_MALFORMED),
    (raw(IP(proto=4) / Raw(raw(IP(version=6)))), Drop.INNER_MALFORMED),
    (raw(IP(proto=4, chksum=0x1234) / IP()), Drop.BAD_CHECKSUM),
])
def test_decapsulation_drops_what_is_malformed(packet, drop):
    with pytest.raises(PacketError) as info:
        decapsulate(packet)
    assert info.value.drop is drop
    assert isinstance(info.value, ParseError) and info.value.code is None


def test_time_exceeded_goes_to_the_sender_quoting_its_datagram():
    original = datagram(100, ttl=0)
    reply = IP(time_exceeded(original, a(HA)))
    assert (reply.src, reply.dst, reply.proto) == (HA, CN, 1)
    assert (reply[ICMP].type, reply[ICMP].code) == (11, 0)
    assert reply[IPerror].dst == HOME and reply[UDPerror].dport == 7
    assert raw(reply[ICMP].payload) == original  # fits 576 bytes whole
    check = ICMP(raw(reply[ICMP]))
    del check.chksum
    assert ICMP(raw(check)).chksum == reply[ICMP].chksum


def test_fragmentation_needed_carries_the_next_hop_mtu_and_fits_576_bytes():
    original = datagram(1500)
    reply = IP(fragmentation_needed(original, a(HA), 1480))
    assert (reply[ICMP].type, reply[ICMP].code, reply[ICMP].nexthopmtu) == (3, 4, 1480)
    assert reply.dst == CN and reply.len <= 576
    assert raw(reply)[28:] == original[:576 - 28]


@pytest.mark.parametrize("original", [
    raw(IP(src=CN, dst=HOME) / ICMP(type=11) / IP()),  # about an ICMP error
    raw(IP(src="0.0.0.0", dst=HOME) / UDP()),
    raw(IP(src="224.0.0.5", dst=HOME) / UDP()),
    raw(IP(src=CN, dst="239.1.1.1") / UDP()),
    raw(IP(src=CN, dst=HOME, frag=8) / Raw(b"x" * 16)),  # not the first fragment
    b"\x45",
])
def test_no_icmp_error_about_what_rfc_1122_forbids(original):
    assert time_exceeded(original, a(HA)) is None


def test_icmp_error_about_an_echo_request_is_sent():
    assert time_exceeded(raw(IP(src=CN, dst=HOME, ttl=0) / ICMP(type=8)), a(HA)) is not None


def test_fragment_matches_what_scapy_reassembles():
    from scapy.layers.inet import defragment

    packet = encapsulate(datagram(1480, df=False), a(HA), a(COA), identification=9)
    pieces = fragment(packet, 576)
    assert all(len(p) <= 576 for p in pieces) and len(pieces) == 3
    assert all(IP(p).flags == "MF" for p in pieces[:-1]) and IP(pieces[-1]).flags == 0
    whole = defragment([IP(p) for p in pieces])
    assert raw(whole[0]) == packet
    assert fragment(packet, 1500) == [packet]
    with pytest.raises(PacketError):
        fragment(encapsulate(datagram(1480, df=True), a(HA), a(COA)), 576)


# -- segments the receiving side merged (GRO), cut again as sent ---------------------------------------


@pytest.mark.parametrize("flags", ["PA", "FPA", "CPA", "A"])
@pytest.mark.parametrize("length", [1441, 2960, 4000])
def test_a_merged_tcp_datagram_is_cut_into_segments_scapy_reads_as_the_original(flags, length):
    from scapy.layers.inet import TCP

    from homeagent.wire.ip import resegment

    payload = bytes(n % 251 for n in range(length))
    merged = raw(IP(src="10.1.0.50", dst="10.9.0.2", id=100, flags="DF", ttl=63) /
                 TCP(sport=4000, dport=80, seq=0xFFFFF000, ack=7, flags=flags, window=512) / Raw(payload))
    pieces = resegment(merged, 1480)
    assert pieces is not None and all(len(p) <= 1480 for p in pieces)
    parsed = [IP(p) for p in pieces]
    for n, packet in enumerate(parsed):
        again = IP(raw(packet.copy()))  # checksums as scapy makes them
        del again.chksum, again[TCP].chksum
        again = IP(raw(again))
        assert packet.chksum == again.chksum and packet[TCP].chksum == again[TCP].chksum
        assert packet.id == 100 + n and packet.flags == "DF" and packet.ttl == 63
        assert packet[TCP].seq == (0xFFFFF000 + n * 1440) & 0xFFFFFFFF and packet[TCP].ack == 7
        last, first = n == len(parsed) - 1, n == 0
        assert ("F" in str(packet[TCP].flags)) == ("F" in flags and last)
        assert ("P" in str(packet[TCP].flags)) == ("P" in flags and last)
        assert ("C" in str(packet[TCP].flags)) == ("C" in flags and first)
    assert b"".join(bytes(p[TCP].payload) for p in parsed) == payload


def test_what_gro_does_not_make_is_not_cut():
    """Not TCP, a fragment, IP options, SYN, RST or URG (GRO merges none of them), or a TCP checksum that is
    wrong (GRO checks it: a datagram that fails it came some other way, and cut with new checksums its
    damage would reach the correspondent as good data)."""
    from scapy.layers.inet import TCP, IPOption

    from homeagent.wire.ip import resegment

    def tcp(flags: str = "A", **ip_fields: object) -> bytes:
        return raw(IP(src="10.1.0.50", dst="10.9.0.2", **ip_fields) / TCP(flags=flags) / Raw(b"x" * 3000))

    assert resegment(tcp(), 1480) is not None
    assert resegment(raw(IP(src="10.1.0.50", dst="10.9.0.2") / UDP() / Raw(b"x" * 3000)), 1480) is None
    assert resegment(raw(IP(src="10.1.0.50", dst="10.9.0.2", proto=6, flags="MF") / Raw(b"x" * 3000)), 1480) is None
    assert resegment(tcp(options=[IPOption(b"\x01\x01\x01\x00")]), 1480) is None
    for flags in ("SA", "RA", "UA"):
        assert resegment(tcp(flags), 1480) is None, flags
    damaged = bytearray(tcp())
    damaged[1000] ^= 0x40
    assert resegment(bytes(damaged), 1480) is None


def test_a_datagram_gro_merged_carries_the_pseudo_headers_sum_and_is_cut():
    """What a raw socket is handed after GRO merged segments: the TCP checksum field holds the sum of the
    pseudo-header alone (the kernel checked each segment's), which ``resegment`` takes as a merged one's."""
    from scapy.layers.inet import TCP

    from homeagent.wire.ip import checksum, resegment

    merged = bytearray(raw(IP(src="10.1.0.50", dst="10.9.0.2") / TCP(flags="A") / Raw(b"y" * 3000)))
    pseudo = bytes(merged[12:20]) + bytes((0, 6)) + (len(merged) - 20).to_bytes(2, "big")
    merged[36:38] = (~checksum(pseudo) & 0xFFFF).to_bytes(2, "big")
    pieces = resegment(bytes(merged), 1480)
    assert pieces is not None and b"".join(bytes(IP(p)[TCP].payload) for p in pieces) == b"y" * 3000
    for piece in pieces:
        again = IP(piece)
        del again[TCP].chksum
        assert IP(piece)[TCP].chksum == IP(raw(again))[TCP].chksum, "each piece's checksum whole"
