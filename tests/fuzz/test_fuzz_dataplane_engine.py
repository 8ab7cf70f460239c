"""The data plane's per-packet parsers under arbitrary and near-valid packets: the forwarder's engine and the
mobile node's decapsulator never raise, count every packet they do not pass on, and pass on only what
their policy allows: the Home Agent relays a reverse-tunnelled datagram only from a registered care-of
address, to the address the node registered with, from a home address bound to it with T; the mobile node
takes only its Home Agent's datagrams for its home address. What they pass on is a well-formed datagram."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.packet import Raw, raw

from homeagent.dataplane import Tunnel
from homeagent.dataplane.decap import Decapsulator
from homeagent.dataplane.engine import UNREACHABLE_CODES, Engine

FAST = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
HOME, HA, COA, CN = 0x0A010032, 0x0A010001, 0x0A02000A, 0x0A090002
ADDRESS = st.one_of(st.sampled_from([HOME, HA, COA, CN, 0x0A010077]), st.integers(0, 2**32 - 1))


def dotted(address: int) -> str:
    return ".".join(str(b) for b in address.to_bytes(4, "big"))


@st.composite
def tunnelled(draw: st.DrawFn) -> bytes:
    """IP-in-IP with addresses mostly ours, any length field or version possibly wrong, cut or padded."""
    inner = raw(IP(src=dotted(draw(ADDRESS)), dst=dotted(draw(ADDRESS)), ttl=draw(st.integers(0, 255)))
                / UDP() / Raw(draw(st.binary(max_size=40))))
    if draw(st.booleans()):
        inner = bytearray(inner)
        where = draw(st.integers(0, len(inner) - 1))
        inner[where] = draw(st.integers(0, 255))
        inner = bytes(inner)
    protocol = draw(st.sampled_from([4, 4, 17]))
    outer = raw(IP(src=dotted(draw(ADDRESS)), dst=dotted(draw(ADDRESS)), proto=protocol) / Raw(inner))
    if draw(st.booleans()):
        outer = outer[:draw(st.integers(0, len(outer)))]
    return outer + draw(st.binary(max_size=8))


def engine() -> tuple[Engine, list[bytes], list[bytes]]:
    sent: list[bytes] = []
    delivered: list[bytes] = []
    e = Engine(lambda packet, address: sent.append(packet), delivered.append, mtu=576)
    e.set_tunnels(HOME, (Tunnel(COA, HA, True), Tunnel(CN, HA, False)))
    e.serving = True
    return e, sent, delivered


def well_formed(packet: bytes) -> bool:
    ihl = (packet[0] & 0x0F) * 4
    total = int.from_bytes(packet[2:4], "big")
    return packet[0] >> 4 == 4 and 20 <= ihl <= len(packet) and total == len(packet)


@FAST
@given(st.one_of(tunnelled(), st.binary(max_size=80)))
def test_the_reverse_tunnel_relays_only_what_a_binding_with_t_allows(packet):
    e, _, delivered = engine()
    e.from_network(packet)
    assert len(delivered) + sum(e.drops.values()) == 1
    if delivered:
        ihl = (packet[0] & 0x0F) * 4
        assert (packet[12:16], packet[16:20], packet[ihl + 12:ihl + 16]) == (
            COA.to_bytes(4, "big"), HA.to_bytes(4, "big"), HOME.to_bytes(4, "big"))
        assert well_formed(delivered[0]) and packet[ihl:].startswith(delivered[0])


@FAST
@given(st.one_of(tunnelled().map(lambda p: p[20:] if len(p) > 20 else p), st.binary(max_size=80),
                 st.integers(21, 70000).map(lambda n: raw(IP(dst=dotted(HOME), flags=0) / Raw(bytes(1)))[:20]
                                             + bytes(n - 20))))
def test_the_tunnel_entry_point_never_fails_and_counts_what_it_drops(packet):
    e, sent, _ = engine()
    e.from_tun(packet)
    copies = e.counters()["packets"]
    assert copies in (0, 2)
    if copies == 0:
        assert sum(e.drops.values()) >= 1
    assert all(len(p) <= 576 for p in sent)


@FAST
@given(st.one_of(tunnelled(), st.binary(max_size=80)), st.booleans())
def test_the_mobile_node_takes_only_its_home_agents_datagrams_for_its_home_address(packet, reverse):
    delivered: list[bytes] = []
    d = Decapsulator(HOME, HA, COA, reverse, delivered.append, lambda packet, address: None)
    d.from_network(packet)
    assert len(delivered) + sum(v for k, v in d.counters.items() if k.startswith("drops.")) == 1
    if delivered:
        assert packet[12:16] == HA.to_bytes(4, "big")
        assert delivered[0][16:20] == HOME.to_bytes(4, "big") and well_formed(delivered[0])
    d.from_tun(packet)  # what the node sends: never fails


@FAST
@given(st.one_of(st.binary(max_size=80), tunnelled().map(
    lambda p: raw(IP(dst=dotted(HA)) / Raw(bytes([3, 4, 0, 0, 0, 0]) + p[:2] + p)))))
def test_icmp_never_fails_and_never_shrinks_a_path_below_576(packet):
    e, _, _ = engine()
    e.from_icmp(packet)
    assert all(t["mtu"] >= 576 for t in e.counters()["tunnels"])  # type: ignore[union-attr]


MARKING = [(3, 0), (3, 1), (3, 2), (3, 13), (11, 0)]
ICMP_KIND = [st.sampled_from(MARKING), st.sampled_from(MARKING),  # half the time one that marks
             st.sampled_from([(3, 3), (3, 4), (3, 5), (11, 1)]),
             st.tuples(st.integers(0, 255), st.integers(0, 255))]


@st.composite
def icmp_about_a_tunnel(draw: st.DrawFn) -> bytes:
    """An ICMP error quoting an outer datagram, mostly one of ours (HA to a care-of address, IP-in-IP, for
    the home address), cut anywhere (RFC 792 routers quote 8 bytes past the header), a byte possibly
    changed."""
    ours = st.sampled_from([HA, HA, HA, CN])
    quoted = raw(IP(src=dotted(draw(ours)), dst=dotted(draw(st.sampled_from([COA, CN, HA]))),
                    proto=draw(st.sampled_from([4, 4, 4, 17])))
                 / IP(src=dotted(draw(ADDRESS)), dst=dotted(draw(st.sampled_from([HOME, HOME, HOME, CN]))))
                 / UDP() / Raw(draw(st.binary(max_size=20))))
    quoted = quoted[:draw(st.sampled_from([len(quoted), 28, draw(st.integers(0, len(quoted)))]))]
    if quoted and draw(st.integers(0, 3)) == 0:
        changed = bytearray(quoted)
        changed[draw(st.integers(0, len(quoted) - 1))] = draw(st.integers(0, 255))
        quoted = bytes(changed)
    kind, code = draw(ICMP_KIND[draw(st.integers(0, len(ICMP_KIND) - 1))])
    return raw(IP(dst=dotted(HA)) / Raw(bytes([kind, code, 0, 0, 0, 0, 0, 0]) + quoted))


@FAST
@given(st.one_of(st.binary(max_size=80), icmp_about_a_tunnel(), tunnelled().map(
    lambda p: raw(IP(dst=dotted(HA)) / Raw(bytes([3, 1, 0, 0, 0, 0, 0, 0]) + p)))))
def test_icmp_marks_a_care_of_address_only_when_it_quotes_our_own_datagram(packet):
    """Whatever arrives on the ICMP socket, from_icmp never raises; a care-of address is marked unreachable
    only by an error that quotes IP-in-IP from the tunnel's source to it (and, where the quote goes that
    far, for the home address tunnelled there); then a datagram for the home address is still tunnelled
    to both care-of addresses, and its sender gets no Host Unreachable: one ICMP marks one of the two."""
    e, sent, _ = engine()
    e.from_icmp(packet)
    if e.counters()["unreachable_care_ofs"]:
        ihl = (packet[0] & 0x0F) * 4
        quoted = packet[ihl + 8:]
        assert (packet[ihl], packet[ihl + 1]) in {(3, c) for c in UNREACHABLE_CODES} | {(11, 0)}
        assert (quoted[0] >> 4, quoted[9], quoted[12:16]) == (4, 4, HA.to_bytes(4, "big"))
        assert quoted[16:20] in (COA.to_bytes(4, "big"), CN.to_bytes(4, "big"))
        inner = quoted[(quoted[0] & 0x0F) * 4:]
        assert len(inner) < 20 or inner[16:20] == HOME.to_bytes(4, "big")
    e.from_tun(raw(IP(src=dotted(0x0A090063), dst=dotted(HOME)) / UDP() / Raw(bytes(20))))
    assert e.counters()["packets"] == 2
    assert len(sent) == 2 and e.counters()["unreachable_reported"] == 0
