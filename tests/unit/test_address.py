"""The gratuitous ARP the interface method sends, read back by scapy (an independent ARP implementation):
RFC 5944 section 4.6 / RFC 5227 announcement, sender and target protocol address both the one announced."""

from __future__ import annotations

from ipaddress import IPv4Address

from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.l2 import ARP, Ether

from homeagent.runtime.address import arp_announcement

MAC = bytes.fromhex("02aabbccddee")


def test_announcement_is_a_broadcast_arp_request_for_the_address_itself():
    frame = Ether(arp_announcement(MAC, int(IPv4Address("10.77.0.10"))))
    assert frame.dst == "ff:ff:ff:ff:ff:ff" and frame.src == "02:aa:bb:cc:dd:ee"
    arp = frame[ARP]
    assert (arp.hwtype, arp.ptype, arp.hwlen, arp.plen, arp.op) == (1, 0x0800, 6, 4, 1)
    assert arp.hwsrc == "02:aa:bb:cc:dd:ee" and arp.hwdst == "00:00:00:00:00:00"
    assert arp.psrc == arp.pdst == "10.77.0.10"
    assert len(bytes(frame)) == 42  # no padding of ours: the NIC pads to the minimum frame


@given(st.binary(min_size=6, max_size=6), st.integers(0, 2**32 - 1))
def test_any_mac_and_address_round_trip(mac, address):
    arp = Ether(arp_announcement(mac, address))[ARP]
    assert arp.psrc == arp.pdst == str(IPv4Address(address))
    assert bytes.fromhex(arp.hwsrc.replace(":", "")) == mac
