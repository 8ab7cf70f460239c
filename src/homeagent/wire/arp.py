"""ARP for IPv4 over Ethernet (RFC 826), as the interface method sends and reads it on the home link.

Three frames go out: the announcement (gratuitous ARP, RFC 5944 section 4.6, RFC 5227 section 2.3: an
ARP request with sender and target protocol address both the address announced, target hardware address
zero, broadcast), the probe (RFC 5227 section 2.1.1: an ARP request with sender protocol address zero and
the target protocol address the one asked about, broadcast: it asks "who holds this address?" without
putting anything in anyone's cache) and, read back, whatever other hosts say. Only Ethernet (hardware type
1, 6-byte addresses) carrying IPv4 (protocol type 0x0800, 4-byte addresses) is ARP for us; anything else on
the socket is refused by ``parse`` with a ``ParseError`` (never answered: ARP has no error reply).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from homeagent.wire.errors import ParseError

ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
HTYPE_ETHERNET = 1
BROADCAST = b"\xff" * 6
_FRAME = struct.Struct("!6s6sHHHBBH6s4s6s4s")  # Ethernet header, then the ARP packet for IPv4 over Ethernet
SIZE = _FRAME.size  # 42: shorter frames are cut; longer ones carry the link's padding, ignored


class Operation(IntEnum):
    REQUEST = 1
    REPLY = 2


@dataclass(frozen=True, slots=True)
class ArpFrame:
    """One ARP frame with its Ethernet header; addresses as bytes (MAC) and integers (IPv4)."""

    destination: bytes  # Ethernet destination
    source: bytes  # Ethernet source
    operation: Operation
    sender_mac: bytes
    sender_address: int
    target_mac: bytes
    target_address: int

    @classmethod
    def parse(cls, frame: bytes) -> ArpFrame:
        if len(frame) < SIZE:
            raise ParseError(f"ARP frame of {len(frame)} bytes, shorter than {SIZE}")
        dst, src, ethertype, htype, ptype, hlen, plen, op, sha, spa, tha, tpa = _FRAME.unpack_from(frame)
        if ethertype != ETH_P_ARP:
            raise ParseError(f"Ethernet type {ethertype:#06x}, not ARP")
        if (htype, ptype, hlen, plen) != (HTYPE_ETHERNET, ETH_P_IP, 6, 4):
            raise ParseError(f"ARP for hardware type {htype} / protocol {ptype:#06x} ({hlen}, {plen}), "
                             "not IPv4 over Ethernet")
        if op not in (Operation.REQUEST, Operation.REPLY):
            raise ParseError(f"ARP operation {op}")
        return cls(dst, src, Operation(op), sha, int.from_bytes(spa, "big"), tha, int.from_bytes(tpa, "big"))

    def to_bytes(self) -> bytes:
        return _FRAME.pack(self.destination, self.source, ETH_P_ARP, HTYPE_ETHERNET, ETH_P_IP, 6, 4,
                           self.operation, self.sender_mac, self.sender_address.to_bytes(4, "big"),
                           self.target_mac, self.target_address.to_bytes(4, "big"))

    @property
    def broadcast(self) -> bool:
        return self.destination == BROADCAST


def announcement(mac: bytes, address: int) -> bytes:
    """Gratuitous ARP announcing ``address`` at ``mac``: a neighbour holding an entry for it takes ours."""
    return ArpFrame(BROADCAST, mac, Operation.REQUEST, mac, address, bytes(6), address).to_bytes()


def probe(mac: bytes, address: int) -> bytes:
    """An ARP probe for ``address`` from ``mac``: a host holding the address answers it to us (Linux does,
    unicast), and no neighbour's cache changes, since the sender protocol address is zero."""
    return ArpFrame(BROADCAST, mac, Operation.REQUEST, mac, 0, bytes(6), address).to_bytes()
