"""What the forwarder decides for each packet, without any I/O: the tunnel table, the two directions and the
counters. ``dataplane.forwarder`` reads the packets and gives this engine the functions that send them.

Home network -> mobile node (the tunnel entry point, RFC 2003 / RFC 5944 4.2.3). The kernel routed the
datagram into the TUN device by a /32 route for the home address, so it has done a router's work already:
TTL decremented (Time Exceeded at 1), DF datagrams larger than the TUN's MTU (the link's less 20) answered
with Fragmentation Needed, the others fragmented to fit. What reaches the engine is looked up by its
destination and sent once per care-of address in an outer header (``wire.ip.OuterHeader``). The engine
still checks what the kernel would not: an inner TTL of 0 (from a local raw sender) gets Time Exceeded,
and a datagram the tunnel cannot carry gets Fragmentation Needed if DF is set and is carried in outer
fragments otherwise (RFC 2003 5.1). What a tunnel can carry is the link's MTU less 20, until a router on the
way to the care-of address says less with ICMP Fragmentation Needed about one of our outer datagrams: the
engine keeps that path MTU per care-of address for 10 minutes (the tunnel soft state of RFC 2003 4.1, aged
as RFC 1191 6.3 asks), so the sender's path MTU discovery works through the tunnel. The other half of that
soft state is reachability: a router that says a care-of address cannot be reached (Destination Unreachable
network, host or protocol unreachable, Time Exceeded) about one of our outer datagrams marks it unreachable
for ``UNREACHABLE_AGE`` seconds, and while every care-of address of a home address is marked, a datagram for
it earns its sender Host Unreachable (at most one a second per home address) and is still tunnelled: the
router's message quotes only our outer header and 8 bytes, too little to find whose datagram it was, and a
mark may be stale (RFC 2003 4.1: answer the sender "but also encapsulate the datagram").

Mobile node -> anywhere (the tunnel exit point, reverse tunnelling, RFC 3024). IP-in-IP read from the raw
socket is forwarded only if its outer source is a registered care-of address, its outer destination the
address the node registered with, and its inner source a home address bound to that care-of address with
reverse tunnelling on: the key of one dictionary lookup. Everything else is dropped and counted, so the
Home Agent is never an open relay that unwraps and forwards whatever anyone sends it. The inner datagram is
handed back to the kernel through the TUN device, which forwards it like any datagram that arrived on a
link: TTL, ICMP, routing, rp_filter and netfilter all apply.

A member that does not serve drops both directions (``not_serving``): it has no routes into its TUN and
must not answer for the home addresses, but it keeps its tunnels for the moment it takes over.

A new binding is taken as it comes and made into per-tunnel state (outer header, counters, the indexes by
reverse key and care-of address) only when something needs it (``_settle``): a datagram for or from the
home address, ICMP about a tunnel, a counters request, a change to it. A burst of first registrations then
costs the forwarder a dictionary write each (~5 us less per new binding, on the CPUs the registrations
need), and with the ebpf backend, whose program carries nearly every datagram, most never need more. A
change is never settled later than the first thing that would see it.
"""

from __future__ import annotations

import socket
import struct
import time
from collections import Counter
from collections.abc import Callable
from ipaddress import IPv4Address

from homeagent.dataplane import Tunnel
from homeagent.wire.ip import (DEFAULT_TTL, HEADER_SIZE, ICMP_DEST_UNREACHABLE, ICMP_FRAGMENTATION_NEEDED,
                               ICMP_TIME_EXCEEDED, ICMP_TTL_EXCEEDED_IN_TRANSIT, MAX_PACKET, Drop,
                               OuterHeader, PacketError, fragment, fragmentation_needed, host_unreachable,
                               resegment, time_exceeded)

PATH_MTU_AGE = 600.0  # seconds a path MTU learnt from ICMP holds (RFC 1191 6.3: "no less than 10 minutes")
MIN_PATH_MTU = 576  # no ICMP message, forged or not, shrinks a path below what every host accepts (RFC 791)
PLATEAUS = (32000, 17914, 8166, 4352, 2002, 1492, 1006, 576)  # RFC 1191 section 7, from 576 up
# Seconds a care-of address stays marked unreachable after the last ICMP that said so. Much shorter than a
# path MTU's age: a stale path MTU costs a few bytes per datagram, a stale mark tells senders something false
# (Linux ends a TCP connection attempt on a host unreachable). Long enough to span the gaps of a sparse flow
# (TCP retries a SYN after 1, 3, 7, 15 s) and the router's own ICMP rate limit (Linux: one a second per
# destination after a burst): while the address stays unreachable, each datagram still tunnelled to it
# draws a fresh ICMP from the router, which renews the mark.
UNREACHABLE_AGE = 30.0
# At most one Host Unreachable a second per home address, whatever the rate of datagrams for it: one per
# datagram would be no amplifier (each answers a datagram received, and is smaller), but the kernel limits
# its own ICMP errors likewise (icmp_ratelimit), and one a second tells a sender all it needs.
REPORT_INTERVAL = 1.0
# Destination Unreachable codes about an outer datagram that say its care-of address cannot be reached:
# network, host and protocol unreachable (RFC 2003 4.1: relay the first two, answer the third with network
# or host unreachable, since the sender did not send IP-in-IP), and RFC 1812 5.2.7.1's later codes that
# mean the same to a tunnel's sender: network/host unknown (6, 7), administratively prohibited (9, 10, 13),
# unreachable for the TOS (11, 12). Never port unreachable (3) nor source route failed (5): RFC 2003 4.1
# says neither is to be relayed; fragmentation needed (4) is the path MTU's.
UNREACHABLE_CODES = frozenset({0, 1, 2, 6, 7, 9, 10, 11, 12, 13})

ANY = bytes(4)  # a tunnel source of 0.0.0.0: the kernel fills in the outer source (raw(7))

_reverse_key = struct.Struct("!III").pack  # outer source (care-of), outer destination (source), inner source (home)

Send = Callable[[bytes, tuple[str, int]], object]  # socket.sendto of a raw socket with IP_HDRINCL
Deliver = Callable[[bytes], object]  # os.write to the TUN device


class TunnelState:
    """One tunnel with its outer header ready and its counters."""

    __slots__ = ("home", "care_of", "source", "reverse", "header", "headers", "address", "packets", "bytes",
                 "reverse_packets", "reverse_bytes", "mtu", "mtu_until", "unreachable_until", "reported")

    def __init__(self, home: int, tunnel: Tunnel, ttl: int, mtu: int, mtu_until: float = 0.0) -> None:
        self.home = home
        self.care_of = tunnel.care_of_address
        self.source = tunnel.source
        self.reverse = tunnel.reverse
        self.header = OuterHeader(tunnel.source, tunnel.care_of_address, ttl)
        self.headers: dict[int, bytes] = {}  # TOS << 1 | DF -> header for the raw socket: a lookup a packet
        self.address = (socket.inet_ntoa(tunnel.care_of_address.to_bytes(4, "big")), 0)  # IPv4Address's str, 4x dearer
        self.packets = self.bytes = self.reverse_packets = self.reverse_bytes = 0
        self.mtu = mtu  # the largest outer datagram the path to the care-of address carries
        self.mtu_until = mtu_until  # when a path MTU learnt from ICMP is forgotten (0: not learnt)
        self.unreachable_until = 0.0  # when the care-of address's unreachable mark goes (0: not marked)
        self.reported = float("-inf")  # when a sender was last told ``home`` cannot be reached

    def reverse_key(self) -> bytes:
        """Outer source, outer destination, inner source of what the mobile node reverse-tunnels."""
        return _reverse_key(self.care_of, self.source, self.home)

    def as_dict(self, now: float) -> dict[str, object]:
        return {"home_address": str(IPv4Address(self.home)), "care_of_address": self.address[0],
                "source": str(IPv4Address(self.source)), "reverse": self.reverse, "packets": self.packets,
                "bytes": self.bytes, "reverse_packets": self.reverse_packets,
                "reverse_bytes": self.reverse_bytes, "mtu": self.mtu,
                "unreachable": self.unreachable_until > now}


class Engine:
    """The tunnel table and the per-packet decisions of one forwarder."""

    def __init__(self, send: Send, deliver: Deliver, mtu: int = 1500, ttl: int = DEFAULT_TTL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """``mtu``: the largest outer datagram the tunnels carry (the link's MTU), until ICMP says a path
        carries less; ``ttl``: the outer TTL; ``clock``: for the age of a learnt path MTU."""
        if mtu < 68 + HEADER_SIZE:
            raise ValueError(f"MTU {mtu}: the tunnel must carry 68-byte datagrams (RFC 791)")
        self.send = send
        self.deliver = deliver
        self.clock = clock
        self.mtu = mtu
        self.ttl = ttl
        self.serving = False
        self.drops: Counter[str] = Counter()
        self._tunnels: dict[bytes, list[TunnelState]] = {}  # home address (4 bytes) -> its tunnels
        self._unsettled: dict[bytes, tuple[Tunnel, ...]] = {}  # home address -> its latest tunnels, not in state yet
        self._reverse: dict[bytes, TunnelState] = {}  # TunnelState.reverse_key() -> tunnel with T
        self._care_ofs: Counter[bytes] = Counter()  # registered care-of addresses, for the drop reason
        self._by_care_of: dict[bytes, set[TunnelState]] = {}  # care-of address -> its tunnels, for ICMP
        self._path_mtu: dict[bytes, tuple[int, float]] = {}  # care-of address -> learnt MTU, until when
        self._identification = 0
        self.path_mtu_learnt = 0
        self.reverse_resegmented = 0  # reverse-tunnelled datagrams the receiving side merged (GRO), cut again
        self.unreachable_learnt = 0  # ICMP from the path that marked a care-of address unreachable
        self.unreachable_reported = 0  # Host Unreachable sent to the senders of datagrams for marked ones

    # -- the table ------------------------------------------------------------------------------------

    def set_tunnels(self, home: int, tunnels: tuple[Tunnel, ...]) -> None:
        """Replace the tunnels of ``home``; a tunnel that stays (same care-of address and source) keeps
        its counters. A home address with no state yet (a new binding) is made into state when first
        needed (``_settle``); one with state (a move, a de-registration) at once, so that what was learnt
        of the old tunnels goes with them as it would have."""
        key = home.to_bytes(4, "big")
        self._unsettled[key] = tunnels
        if key in self._tunnels:  # never in both: a home address is settled or not
            self._settle(key)

    def _settle_all(self) -> None:
        """Every change taken into state: before what looks at the whole table (ICMP by care-of address,
        a drop's reason, the counters). Each change is settled once, so this costs no more in all than
        settling each as it came."""
        unsettled = self._unsettled
        while unsettled:
            self._settle(next(iter(unsettled)))

    def _settle(self, key: bytes) -> None:
        """The latest tunnels taken for home address ``key`` (4 bytes), made into state."""
        tunnels = self._unsettled.pop(key)
        home = int.from_bytes(key, "big")
        old = {(t.care_of, t.source): t for t in self._tunnels.pop(key, ())}
        for state in old.values():
            care_of = state.care_of.to_bytes(4, "big")
            self._care_ofs[care_of] -= 1
            self._reverse.pop(state.reverse_key(), None)
            self._by_care_of[care_of].discard(state)
        new = []
        unique: dict[tuple[int, int], Tunnel] = {}
        for tunnel in tunnels:  # one copy per care-of address and source (not one per T), with T if any has
            if tunnel.reverse or (tunnel.care_of_address, tunnel.source) not in unique:
                unique[(tunnel.care_of_address, tunnel.source)] = tunnel
        for tunnel in unique.values():
            kept = old.get((tunnel.care_of_address, tunnel.source))
            care_of = tunnel.care_of_address.to_bytes(4, "big")
            if kept is not None and kept.reverse == tunnel.reverse:
                state = kept
            else:
                state = TunnelState(home, tunnel, self.ttl, *self._path_mtu.get(care_of, (self.mtu, 0.0)))
                if kept is not None:
                    state.packets, state.bytes = kept.packets, kept.bytes
            new.append(state)
            self._care_ofs[care_of] += 1
            self._by_care_of.setdefault(care_of, set()).add(state)
            if tunnel.reverse:
                self._reverse[state.reverse_key()] = state
        if new:
            self._tunnels[key] = new
        gone = [state.care_of.to_bytes(4, "big") for state in old.values()]
        if self._unsettled and any(not self._by_care_of.get(care_of, True) for care_of in gone):
            self._settle_all()  # a new binding not in state yet may use it: then its path stays
        for care_of in gone:  # a care-of address no tunnel uses any more: forget it and its path
            if not self._by_care_of.get(care_of, True):
                del self._by_care_of[care_of]
                self._path_mtu.pop(care_of, None)
            if self._care_ofs.get(care_of, 1) <= 0:
                del self._care_ofs[care_of]  # this one only: rebuilding the Counter cost O(care-of addresses)

    def homes(self) -> list[int]:
        self._settle_all()
        return [int.from_bytes(key, "big") for key in self._tunnels]

    def has_tunnels(self, home: int) -> bool:
        key = home.to_bytes(4, "big")
        if key in self._unsettled:
            return bool(self._unsettled[key])
        return key in self._tunnels

    # -- home network -> mobile node ------------------------------------------------------------------

    def from_tun(self, packet: bytes) -> None:
        """One datagram the kernel routed into the TUN device."""
        length = len(packet)
        if length < HEADER_SIZE or packet[0] & 0xF0 != 0x40:
            self.drops[Drop.TRUNCATED if length < HEADER_SIZE else Drop.NOT_IPV4] += 1
            return
        destination = packet[16:20]
        if destination in self._unsettled:
            self._settle(destination)
        tunnels = self._tunnels.get(destination)
        if tunnels is None:
            self.drops[Drop.NO_TUNNEL] += 1
            return
        if not self.serving:
            self.drops[Drop.NOT_SERVING] += 1
            return
        if packet[8] == 0:
            self.drops[Drop.TTL_EXCEEDED] += 1
            self._answer(time_exceeded(packet, tunnels[0].source))
            return
        total = length + HEADER_SIZE
        key = packet[1] << 1 | packet[6] >> 6 & 1  # TOS and DF: all the outer header takes per packet
        send = self.send
        answered = False
        for tunnel in tunnels:
            if total > tunnel.mtu:
                answered = self._too_big(packet, tunnel, answered)
                continue
            header = tunnel.headers.get(key)
            if header is None:
                header = tunnel.headers[key] = tunnel.header.for_raw_socket(packet[1], packet[6] & 0x40)
            try:
                send(header + packet, tunnel.address)
            except OSError:
                self.drops[Drop.SEND_FAILED] += 1
                continue
            tunnel.packets += 1
            tunnel.bytes += length
        if tunnels[0].unreachable_until and not answered:  # the first unmarked: not every one is
            self._unreachable(packet, tunnels)

    def _unreachable(self, packet: bytes, tunnels: list[TunnelState]) -> None:
        """The sender of a datagram just tunnelled is told its destination cannot be reached, when the path
        to every care-of address of the home address has said so lately (with simultaneous bindings one
        reachable copy is enough), at most once per ``REPORT_INTERVAL`` per home address."""
        now = self.clock()
        for tunnel in tunnels:
            if not tunnel.unreachable_until:
                return
            if now >= tunnel.unreachable_until:  # aged: the care-of address may be back
                tunnel.unreachable_until = 0.0
                return
        first = tunnels[0]
        if now - first.reported < REPORT_INTERVAL:
            return
        first.reported = now
        if self._answer(host_unreachable(packet, first.source)):
            self.unreachable_reported += 1

    def _too_big(self, packet: bytes, tunnel: TunnelState, answered: bool) -> bool:
        """The slow path: a datagram the path to ``tunnel``'s care-of address cannot carry whole (RFC 2003
        5.1). With DF set the sender is told the tunnel's MTU (once per datagram, however many copies);
        without, the outer datagram goes in fragments. True once the sender has been answered."""
        if tunnel.mtu_until and self.clock() >= tunnel.mtu_until:  # RFC 1191 6.3: try the larger MTU again
            self._forget_path_mtu(tunnel.care_of.to_bytes(4, "big"))
            if len(packet) + HEADER_SIZE <= tunnel.mtu:
                header = tunnel.header.for_raw_socket(packet[1], packet[6] & 0x40)
                self._send_pieces(packet, tunnel, [header + packet])
                return answered
        if packet[6] & 0x40:
            self.drops[Drop.TOO_BIG] += 1
            if not answered:
                self._answer(fragmentation_needed(packet, tunnel.source, tunnel.mtu - HEADER_SIZE))
            return True
        if len(packet) + HEADER_SIZE > MAX_PACKET:  # no outer header can say its length
            self.drops[Drop.TOO_BIG] += 1
            return answered
        # One identification for all the pieces, never 0 (the kernel would give each piece its own).
        ident = self._identification = self._identification % 0xFFFF + 1
        outer = tunnel.header.build(len(packet) + HEADER_SIZE, ident, packet[1], False) + packet
        try:
            pieces = fragment(outer, tunnel.mtu)
        except PacketError as exc:
            self.drops[exc.drop] += 1
            return answered
        self._send_pieces(packet, tunnel, pieces)
        return answered

    def _send_pieces(self, packet: bytes, tunnel: TunnelState, pieces: list[bytes]) -> None:
        try:
            for piece in pieces:
                self.send(piece, tunnel.address)
        except OSError:
            self.drops[Drop.SEND_FAILED] += 1
            return
        tunnel.packets += 1
        tunnel.bytes += len(packet)

    def _answer(self, reply: bytes | None) -> bool:
        """Send an ICMP error (None: none may be sent); True when it went."""
        if reply is None:
            return False
        try:
            self.send(reply, (socket.inet_ntoa(reply[16:20]), 0))
        except OSError:
            self.drops[Drop.SEND_FAILED] += 1
            return False
        return True

    # -- what the path to a care-of address says (RFC 2003 4, RFC 1191) --------------------------------

    def from_icmp(self, packet: bytes) -> None:
        """An ICMP message read from the raw ICMP socket (IP header first), taken only when it is about one
        of our outer datagrams: the header it quotes is from a tunnel's source to a care-of address,
        protocol 4, and the inner header, where the router quoted that far, is for a home address tunnelled
        to that care-of address. That is the tunnel's soft state (RFC 2003 4.1):

        - Fragmentation Needed lowers the MTU of the path to that care-of address for ``PATH_MTU_AGE``
          seconds; the next datagram too big for it gets Fragmentation Needed with the tunnel's MTU. Nothing
          lowers a path below ``MIN_PATH_MTU``.
        - Destination Unreachable of a code in ``UNREACHABLE_CODES``, or Time Exceeded in transit (a loop
          inside the tunnel, RFC 2003 4.1), marks the care-of address unreachable for
          ``UNREACHABLE_AGE`` seconds (see ``_unreachable``).

        Nothing else is taken from ICMP."""
        if len(packet) < HEADER_SIZE:
            return
        icmp = packet[(packet[0] & 0x0F) << 2:]
        if len(icmp) < 8 + HEADER_SIZE:
            return
        kind, code = icmp[0], icmp[1]
        if kind == ICMP_DEST_UNREACHABLE:
            if code != ICMP_FRAGMENTATION_NEEDED and code not in UNREACHABLE_CODES:
                return
        elif kind != ICMP_TIME_EXCEEDED or code != ICMP_TTL_EXCEEDED_IN_TRANSIT:
            return
        quoted = icmp[8:]
        self._settle_all()  # the tunnels are found by care-of address
        states = self._about_our_tunnel(quoted)
        if not states:
            return
        if kind == ICMP_DEST_UNREACHABLE and code == ICMP_FRAGMENTATION_NEEDED:
            self._learn_path_mtu(icmp, quoted, states)
            return
        until = self.clock() + UNREACHABLE_AGE
        for state in states:
            state.unreachable_until = until
        self.unreachable_learnt += 1

    def _about_our_tunnel(self, quoted: bytes) -> set[TunnelState] | None:
        """The tunnels to the care-of address of the outer datagram ``quoted`` (what an ICMP error quotes),
        if it is one of ours: IPv4, protocol 4, from the source of a tunnel to that care-of address; and if
        the quote reaches the inner header's destination, a home address tunnelled there. Else None: an ICMP
        error that does not quote one of our own datagrams says nothing about our tunnels."""
        ihl = (quoted[0] & 0x0F) << 2
        if quoted[0] >> 4 != 4 or quoted[9] != 4 or ihl < HEADER_SIZE:
            return None
        states = self._by_care_of.get(bytes(quoted[16:20]))
        if not states:
            return None
        source = int.from_bytes(quoted[12:16], "big")
        if not any(s.source == source for s in states):
            return None
        if len(quoted) >= ihl + HEADER_SIZE:
            if quoted[ihl] >> 4 != 4:
                return None
            home = int.from_bytes(quoted[ihl + 16:ihl + 20], "big")
            if not any(s.home == home for s in states):
                return None
        return states

    def _learn_path_mtu(self, icmp: bytes, quoted: bytes, states: set[TunnelState]) -> None:
        care_of = bytes(quoted[16:20])
        mtu = (icmp[6] << 8) | icmp[7]
        sent = (quoted[2] << 8) | quoted[3]
        if mtu == 0:  # a router older than RFC 1191: the next plateau below what it could not forward
            mtu = next((p for p in PLATEAUS if p < sent), MIN_PATH_MTU)
        mtu = max(mtu, MIN_PATH_MTU)
        if mtu >= min(s.mtu for s in states) or mtu >= sent:
            return
        until = self.clock() + PATH_MTU_AGE
        self._path_mtu[care_of] = (mtu, until)
        for state in states:
            state.mtu, state.mtu_until = mtu, until
        self.path_mtu_learnt += 1

    def _forget_path_mtu(self, care_of: bytes) -> None:
        self._path_mtu.pop(care_of, None)
        for state in self._by_care_of.get(care_of, ()):
            state.mtu, state.mtu_until = self.mtu, 0.0

    # -- mobile node -> anywhere (reverse tunnel) -----------------------------------------------------

    def from_network(self, packet: bytes) -> None:
        """One IP-in-IP datagram read from the raw socket (the kernel reassembled it and checked its
        header checksum)."""
        length = len(packet)
        if length < 2 * HEADER_SIZE:
            self.drops[Drop.TRUNCATED] += 1
            return
        first = packet[0]
        ihl = (first & 0x0F) << 2
        if first & 0xF0 != 0x40 or ihl < HEADER_SIZE or length < ihl + HEADER_SIZE or packet[9] != 4:
            self.drops[Drop.NOT_IPV4 if first & 0xF0 != 0x40 else Drop.NOT_IPIP if packet[9] != 4
                       else Drop.BAD_HEADER_LENGTH] += 1
            return
        home = packet[ihl + 12:ihl + 16]
        if home in self._unsettled:
            self._settle(home)
        tunnel = self._reverse.get(packet[12:20] + home)
        if tunnel is None:  # a tunnel of source 0 (the kernel's choice) takes any local outer destination
            tunnel = self._reverse.get(packet[12:16] + ANY + home)
        if tunnel is None:
            self._settle_all()  # the reason: whether any binding has that care-of address
            known = packet[12:16] in self._care_ofs
            self.drops[Drop.NOT_REVERSE_TUNNEL if known else Drop.UNKNOWN_CARE_OF] += 1
            return
        if not self.serving:
            self.drops[Drop.NOT_SERVING] += 1
            return
        inner = packet[ihl:]
        inner_ihl = (inner[0] & 0x0F) << 2
        inner_total = (inner[2] << 8) | inner[3]
        if inner[0] & 0xF0 != 0x40 or inner_ihl < HEADER_SIZE or not inner_ihl <= inner_total <= len(inner):
            self.drops[Drop.INNER_MALFORMED] += 1
            return
        if inner_total != len(inner):
            inner = inner[:inner_total]
        try:
            if inner_total > self.mtu - HEADER_SIZE:  # segments the receiving side merged (GRO)?
                self._deliver_merged(inner)
            else:
                self.deliver(inner)
        except OSError:
            self.drops[Drop.SEND_FAILED] += 1
            return
        tunnel.reverse_packets += 1
        tunnel.reverse_bytes += inner_total
        if tunnel.unreachable_until:  # the node sends from its care-of address: reachable again, surely
            for state in self._by_care_of.get(tunnel.care_of.to_bytes(4, "big"), ()):
                state.unreachable_until = 0.0

    def _deliver_merged(self, inner: bytes) -> None:
        """A reverse-tunnelled datagram larger than the TUN's MTU: TCP segments a link that merges what it
        receives (GRO) put together, cut again into pieces that fit (``resegment``); anything else whole,
        for the kernel to answer as any datagram too big."""
        pieces = resegment(inner, self.mtu - HEADER_SIZE)
        if pieces is None:
            self.deliver(inner)
            return
        for piece in pieces:
            self.deliver(piece)
        self.reverse_resegmented += 1

    # -- counters -------------------------------------------------------------------------------------

    def counters(self, tunnels: bool = True) -> dict[str, object]:
        """Totals and drops; with ``tunnels``, every tunnel's own counters too (the long part)."""
        self._settle_all()
        states = [t for ts in self._tunnels.values() for t in ts]
        now = self.clock()
        totals: dict[str, object] = {
            "serving": self.serving,
            "home_addresses": len(self._tunnels),
            "packets": sum(t.packets for t in states),
            "bytes": sum(t.bytes for t in states),
            "reverse_packets": sum(t.reverse_packets for t in states),
            "reverse_bytes": sum(t.reverse_bytes for t in states),
            "drops": dict(self.drops),
            "path_mtu_learnt": self.path_mtu_learnt,
            "reverse_resegmented": self.reverse_resegmented,
            "unreachable_learnt": self.unreachable_learnt,
            "unreachable_reported": self.unreachable_reported,
            "unreachable_care_ofs": len({t.care_of for t in states if t.unreachable_until > now}),
        }
        if tunnels:
            totals["tunnels"] = [t.as_dict(now) for t in states]
        return totals
