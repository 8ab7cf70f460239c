"""The virtual address on a real link (runtime/address.py): it comes off the interface even when the kernel
refuses the first time (a standby that kept it would answer ARP for the group's address and draw its
traffic: RFC 5944 4.6, RFC 5227 2.4), and without a data plane the home addresses announced at a takeover are
paced and read again for the repetition."""

from __future__ import annotations

import asyncio
import errno
from collections import Counter

from pyroute2.netlink.exceptions import NetlinkError

from homeagent.runtime import address
from homeagent.runtime.address import InterfaceAddress


class FakeRoute:
    """The interface's addresses; the first ``refuse`` deletions fail as the kernel may (EBUSY)."""

    def __init__(self, refuse: int) -> None:
        self.on: set[str] = set()
        self.refuse = refuse
        self.deletions = 0

    async def addr(self, op: str, index: int = 0, address: str = "", prefixlen: int = 32) -> None:
        if op == "replace":
            self.on.add(address)
        elif op == "del":
            self.deletions += 1
            if self.refuse:
                self.refuse -= 1
                raise NetlinkError(errno.EBUSY, "busy")
            if address not in self.on:
                raise NetlinkError(errno.EADDRNOTAVAIL, "not there")
            self.on.discard(address)


def test_a_refused_removal_is_tried_again_until_the_address_is_off(monkeypatch):
    monkeypatch.setattr(address, "RETRY", 0.05)

    async def scenario() -> tuple[set[str], int, bool, Counter[str]]:
        counters: Counter[str] = Counter()
        keeper = InterfaceAddress("eth0", list, counters)
        keeper._ipr = route = FakeRoute(refuse=2)

        async def quiet(*args: object, **kwargs: object) -> None:
            pass

        keeper._announce = quiet  # type: ignore[method-assign]
        keeper._task = asyncio.get_running_loop().create_task(keeper._work())
        keeper.want("192.0.2.10", True)
        await asyncio.sleep(0.02)
        assert route.on == {"192.0.2.10"}
        keeper.want("192.0.2.10", False)  # stepping down: asked once
        await asyncio.wait_for(keeper._settled.wait(), 2)
        keeper._task.cancel()
        return route.on, route.deletions, keeper._settled.is_set(), counters

    on, deletions, settled, counters = asyncio.run(scenario())
    assert on == set() and settled, "off at last, without being asked again"
    assert deletions == 3 and counters["release_failed"] == 2


class FakeArp:
    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def send(self, frame: bytes) -> None:
        self.frames.append(frame)


def announced(frames: list[bytes]) -> list[str]:
    return [str(address.IPv4Address(frame[28:32])) for frame in frames]  # the sender protocol address


def test_without_a_data_plane_the_home_addresses_are_paced_and_read_again_for_the_repetition(monkeypatch):
    """A takeover announces the virtual address and every home address served on the link, at most the
    announce rate a second, twice; a node that came home between the two is not announced at our MAC again
    (RFC 5944 4.6: the reverse when it returns), and nothing goes once the address is let go."""
    from ipaddress import IPv4Network

    monkeypatch.setattr(address, "ANNOUNCE_AGAIN", 0.01)
    bound = [int(address.IPv4Address("10.1.0.0")) + 1 + n for n in range(512)]

    async def scenario() -> tuple[list[str], float]:
        keeper = InterfaceAddress("eth0", lambda: list(bound), Counter(), announce_rate=512 / 0.2)
        keeper._ipr = FakeRoute(refuse=0)
        keeper._arp = arp = FakeArp()  # type: ignore[assignment]
        keeper._mac = bytes(6)
        keeper._links = [IPv4Network("10.1.0.0/16")]
        keeper._wanted["10.1.255.10"] = True
        keeper._held.add("10.1.255.10")
        loop = asyncio.get_running_loop()
        started = loop.time()
        task = loop.create_task(keeper._announce(int(address.IPv4Address("10.1.255.10"))))
        await asyncio.sleep(0.05)  # within the first pass: it takes 0.2 s at this rate
        del bound[0]  # that node came home
        await task
        return announced(arp.frames), loop.time() - started

    sent, took = asyncio.run(scenario())
    virtual = [n for n, a in enumerate(sent) if a == "10.1.255.10"]
    assert virtual[0] == 0 and len(virtual) == 2
    assert virtual[1] < 1 + 512, "the virtual address's repetition does not wait for the paced pass"
    served = [a for a in sent if a != "10.1.255.10"]
    first, second = served[:512], served[512:]
    assert "10.1.0.1" in first and len(second) == 511 and "10.1.0.1" not in second
    assert took >= 0.4, "two passes of 512 at 2,560 a second: paced"


def test_nothing_more_is_announced_once_the_address_is_let_go(monkeypatch):
    from ipaddress import IPv4Network

    monkeypatch.setattr(address, "ANNOUNCE_AGAIN", 0.01)

    async def scenario() -> list[str]:
        keeper = InterfaceAddress("eth0", lambda: [int(address.IPv4Address("10.1.0.0")) + 1 + n for n in range(2048)],
                                  Counter(), announce_rate=256 / 0.05)
        keeper._arp = arp = FakeArp()  # type: ignore[assignment]
        keeper._mac = bytes(6)
        keeper._links = [IPv4Network("10.1.0.0/16")]
        keeper._wanted["10.1.255.10"] = True
        keeper._held.add("10.1.255.10")
        task = asyncio.get_running_loop().create_task(keeper._announce(int(address.IPv4Address("10.1.255.10"))))
        await asyncio.sleep(0.07)  # two chunks of 256 out, of 8
        keeper._wanted["10.1.255.10"] = False  # stood down
        await task
        return announced(arp.frames)

    sent = asyncio.run(scenario())
    served = [a for a in sent if a != "10.1.255.10"]
    assert 256 <= len(served) <= 3 * 256, "stopped within a chunk of standing down, no second pass"
    assert sent.count("10.1.255.10") <= 2
