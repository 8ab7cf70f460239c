"""The redundancy group under attack from the home link (issue 9, docs/security.md), with real daemons on
loopback. 127.0.0.5 is configured as a member on every daemon but runs none: the test listens there to
capture genuine datagrams as an attacker on the link would, and plays an insider where one is needed.

* Reflection without a key: a captured datagram re-sent from another address (an unconfigured one ranked
  above every member, another member's, the receiver's own) or to another member opens nowhere: the seal
  covers the sender and the receiver. The virtual address stays served; nothing changes role.
* The table leak: a captured Binding Table Request re-sent from an address where no member lives makes
  nobody stream a table.
* Phantom members: captured datagrams from 121 other addresses add no member and draw no datagram.
* The packed datagram: one authenticated datagram packing Binding Table Requests costs one transfer.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from ipaddress import IPv4Address

import pytest

from homeagent.mobile_node import LoadGenerator, MobileNode
from homeagent.wire.era import from_wire
from homeagent.wire.redundancy import (
    Advertisement,
    BindingTableRequest,
    parse_messages,
    seal,
    unseal,
)
from tests.integration.group_support import (
    GROUP_SA,
    MEMBER_ADDRESSES,
    MN_SA,
    VIP,
    counter,
    ip,
    make_group,
    wait_until,
)

A, B, C = MEMBER_ADDRESSES
INSIDER = "127.0.0.5"
ABOVE_ALL = "127.0.0.9"  # ranks above every member on a priority tie (the higher address wins)


@pytest.fixture
def group(tmp_path_factory):
    yield from make_group(tmp_path_factory)


class Tap:
    """A socket at the insider's address: what the members send it, kept as an attacker would keep it."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((INSIDER, port))
        self.sock.settimeout(0.2)

    def capture(self, sender: str, kind: type, timeout: float = 5.0) -> bytes:
        """The next datagram from ``sender`` carrying a message of type ``kind``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data, (source, _) = self.sock.recvfrom(65536)
            except (TimeoutError, socket.timeout):
                continue
            if source != sender:
                continue
            body, _ = unseal(data, GROUP_SA, ip(sender), ip(INSIDER))
            if any(type(m) is kind for m in parse_messages(body)):
                return data
        raise AssertionError(f"no {kind.__name__} from {sender} within {timeout} s")

    def close(self) -> None:
        self.sock.close()


def send_from(source: str, datagram: bytes, target: tuple[str, int]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        s.sendto(datagram, target)


def pair(group, **kw):
    a = group.add(A, priority=200, peers=[B, INSIDER], **kw)
    b = group.add(B, priority=100, peers=[A, INSIDER], **kw)
    group.start(a)
    wait_until(lambda: a.role() == "active", 5, "A to become active")
    group.start(b)
    wait_until(lambda: b.role() == "standby", 8, "B to stand by")
    return a, b


def registered(node: MobileNode, care_of: IPv4Address, timeout: float) -> bool:
    try:
        return node.register(care_of, 600, timeout=timeout, retries=0).code == 0
    except TimeoutError:
        return False


def violations(member) -> int:
    return counter(member.status(), "redundancy.security_violations")


def test_a_reflected_advertisement_moves_nothing(group) -> None:
    tap = Tap(group.port)
    try:
        a, b = pair(group)
        advert = tap.capture(A, Advertisement)  # A's own, active, priority 200, sealed for the insider
        transitions = {m.address: len(m.status()["transitions"]) for m in (a, b)}
        before = {m.address: violations(m) for m in (a, b)}
        answered = 0
        node = MobileNode(IPv4Address("10.1.7.1"), IPv4Address(VIP), MN_SA, group.port)
        deadline = time.monotonic() + 2.0
        sent = 0
        while time.monotonic() < deadline:
            # From above every member (old main: a better active member, so A stood down), from B's and the
            # insider's addresses (back to its sender), and to B.
            for source, target in ((ABOVE_ALL, A), (ABOVE_ALL, B), (B, A), (INSIDER, A), (A, B), (INSIDER, B)):
                send_from(source, advert, (target, group.port))
                sent += 1
            answered += registered(node, IPv4Address("192.0.2.77"), 0.3)
        assert answered >= 10
        assert a.role() == "active" and b.role() == "standby"
        for m in (a, b):
            st = m.status()
            assert len(st["transitions"]) == transitions[m.address], f"{m.address} changed role"
            assert {p["address"] for p in st["peers"]} == {A, B, INSIDER} - {m.address}
        assert violations(a) - before[A] + violations(b) - before[B] >= sent * 0.9  # loopback loses none
        for m, other in ((a, B), (b, A)):  # a forgery from a healthy member's address: no key mismatch
            assert counter(m.status(), "redundancy.dual_active") == 0
            assert f"messages from member {other} fail authentication" not in m.stderr()
    finally:
        tap.close()


def test_a_reflected_table_request_leaks_no_table(group) -> None:
    tap = Tap(group.port)
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind((ABOVE_ALL, group.port))
    listener.settimeout(1.0)
    try:
        a = group.add(A, priority=200, peers=[B, INSIDER])
        b = group.add(B, priority=100, peers=[A, INSIDER])
        group.start(a)
        wait_until(lambda: a.role() == "active", 5, "A to become active")
        load = LoadGenerator(IPv4Address(VIP), group.port, MN_SA,
                             [IPv4Address("10.1.0.0") + 256 + i for i in range(2000)], IPv4Address("192.0.2.9"))
        assert load.run(count=2000).accepted == 2000
        group.start(b)
        request = tap.capture(B, BindingTableRequest)  # B's start-up request to the insider
        wait_until(lambda: b.role() == "standby" and b.status()["bindings"] == 2000, 8, "B to download")
        sent_before = counter(a.status(), "redundancy.table_replies_sent")
        for source in (ABOVE_ALL, INSIDER, B):
            send_from(source, request, (A, group.port))
        with pytest.raises((TimeoutError, socket.timeout)):
            listener.recvfrom(65536)  # not one reply to where no member lives
        time.sleep(0.3)
        assert counter(a.status(), "redundancy.table_replies_sent") == sent_before
        assert violations(a) >= 3
    finally:
        tap.close()
        listener.close()


def test_phantom_members_are_never_learnt_nor_sent_to(group) -> None:
    tap = Tap(group.port)
    phantoms = [f"127.0.0.{i}" for i in range(50, 171)]  # 121 addresses the group's association covers
    sinks = []
    try:
        a, b = pair(group)
        for address in phantoms[:20]:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((address, group.port))
            s.setblocking(False)
            sinks.append(s)
        advert = tap.capture(A, Advertisement)
        for address in phantoms:
            send_from(address, advert, (B, group.port))
            send_from(address, advert, (A, group.port))
        time.sleep(1.0)
        for m in (a, b):
            assert {p["address"] for p in m.status()["peers"]} == {A, B, INSIDER} - {m.address}
        received = 0
        for s in sinks:
            try:
                while s.recv(65536):
                    received += 1
            except BlockingIOError:
                pass
        assert received == 0
        assert b.role() == "standby" and a.role() == "active"
    finally:
        tap.close()
        for s in sinks:
            s.close()


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


@pytest.mark.parametrize("requests", [256, 600])
def test_a_packed_datagram_of_table_requests_costs_one_transfer(group, requests) -> None:
    """600 requests overflow the 256 messages a datagram may hold (refused whole); 256 are parsed and
    cost one transfer. Either way memory stays flat and registrations keep being answered at once."""
    tap = Tap(group.port)
    try:
        a = group.add(A, priority=200, peers=[B, INSIDER])
        group.start(a)
        wait_until(lambda: a.role() == "active", 5, "A to become active")
        nodes = [IPv4Address("10.1.0.0") + 256 + i for i in range(20000)]
        assert LoadGenerator(IPv4Address(VIP), group.port, MN_SA, nodes, IPv4Address("192.0.2.9"),
                             window=128).run(count=20000).accepted == 20000
        rss_before = rss_kib(a.pid)
        base = time.time_ns()
        latencies: list[float] = []
        stop = threading.Event()

        def register() -> None:
            node = MobileNode(IPv4Address("10.1.200.1"), IPv4Address(VIP), MN_SA, group.port)
            while not stop.is_set():
                t0 = time.monotonic()
                ok = registered(node, IPv4Address("192.0.2.78"), 2.0)
                latencies.append(time.monotonic() - t0 if ok else 99.0)
                time.sleep(0.01)

        thread = threading.Thread(target=register)
        thread.start()
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as insider:
                insider.bind((INSIDER, 0))
                for d in range(10):
                    body = b"".join(BindingTableRequest(base + d * requests + i).body() for i in range(requests))
                    stamp = from_wire(((int(time.time()) + 2_208_988_800) << 32) + d)
                    insider.sendto(seal(body, GROUP_SA, stamp, ip(INSIDER), ip(A)), (A, group.port))
                    time.sleep(0.05)
            time.sleep(1.0)
        finally:
            stop.set()
            thread.join(timeout=10)
        growth_mib = (rss_kib(a.pid) - rss_before) / 1024
        st = a.status()
        print(f"\n{requests} requests a datagram: RSS +{growth_mib:.1f} MiB, registration latency max "
              f"{max(latencies) * 1000:.1f} ms over {len(latencies)}; transfers replaced "
              f"{counter(st, 'redundancy.table_transfers_replaced')}, requests dropped "
              f"{counter(st, 'redundancy.table_requests_dropped')}, malformed {counter(st, 'redundancy.malformed')}")
        assert growth_mib < 40
        assert max(latencies) < 0.5
        assert st["role"] == "active"
        if requests == 256:
            assert counter(st, "redundancy.table_requests_dropped") == 10 * 255
            assert counter(st, "redundancy.table_requests_received") == 10
        else:
            assert counter(st, "redundancy.malformed") == 10
    finally:
        tap.close()
