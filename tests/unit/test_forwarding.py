"""``runtime.forwarding.Forwarding.when_in_effect``: what holds a registration reply until the data plane
has the latest change to its home address's tunnels, and lets it go after ``BARRIER_TIMEOUT`` when the data
plane does not say so (a hung forwarder must not hold registrations), counted. A reply whose home address
has no change waiting (a renewal) never waits."""

from __future__ import annotations

import asyncio
from collections import Counter

from homeagent.config import DataplaneConfig
from homeagent.core.effects import Serve, Tunnel, TunnelSet
from homeagent.dataplane.fake import FakeDataplane
from homeagent.runtime import forwarding
from homeagent.runtime.forwarding import Forwarding

HOME, OTHER = 0x0A010001, 0x0A010002
TUNNEL = Tunnel(0xC0000201, 0x0A010101, False)


def make(serving: bool = True) -> tuple[Forwarding, FakeDataplane, Counter[str]]:
    counters: Counter[str] = Counter()
    fw = Forwarding(DataplaneConfig(), counters)
    fake = FakeDataplane()
    fake.holding = True
    fw.dataplane = fake
    fw.defers = True
    fw.apply(Serve(serving))
    return fw, fake, counters


def test_a_reply_goes_at_once_when_its_home_address_has_no_change_waiting():
    async def scenario() -> list[str]:
        fw, _, _ = make()
        fw.apply(TunnelSet(OTHER, (TUNNEL,)))  # another node's change waits: not ours
        done: list[str] = []
        fw.when_in_effect(HOME, lambda: done.append("renewal"))
        return done

    assert asyncio.run(scenario()) == ["renewal"]


def test_replies_wait_for_their_change_and_go_in_order_when_it_is_in_effect():
    async def scenario() -> tuple[list[str], list[str], Counter[str]]:
        fw, fake, counters = make()
        fw.apply(TunnelSet(HOME, (TUNNEL,)))
        done: list[str] = []
        fw.when_in_effect(HOME, lambda: done.append("first"))
        fw.when_in_effect(HOME, lambda: done.append("second"))
        await asyncio.sleep(0.01)
        before = list(done)
        fake.release()
        await asyncio.sleep(0)
        fw.when_in_effect(HOME, lambda: done.append("renewal"))  # the change is through: no wait
        return before, done, counters

    before, after, counters = asyncio.run(scenario())
    assert before == [] and after == ["first", "second", "renewal"]
    assert counters["dataplane.barrier_timeouts"] == 0


def test_a_member_that_does_not_serve_makes_no_reply_wait():
    async def scenario() -> list[str]:
        fw, _, _ = make(serving=False)
        fw.apply(TunnelSet(HOME, (TUNNEL,)))
        done: list[str] = []
        fw.when_in_effect(HOME, lambda: done.append("reply"))
        return done

    assert asyncio.run(scenario()) == ["reply"]


def test_a_barrier_that_never_passes_lets_the_replies_go_after_the_timeout(monkeypatch):
    monkeypatch.setattr(forwarding, "BARRIER_TIMEOUT", 0.05)

    async def scenario() -> tuple[list[str], list[str], Counter[str]]:
        fw, fake, counters = make()
        fw.apply(TunnelSet(HOME, (TUNNEL,)))
        done: list[str] = []
        fw.when_in_effect(HOME, lambda: done.append("reply"))
        await asyncio.sleep(0.02)
        early = list(done)
        await asyncio.sleep(0.1)
        fake.release()  # too late: nothing runs twice
        await asyncio.sleep(0)
        return early, done, counters

    early, done, counters = asyncio.run(scenario())
    assert early == [] and done == ["reply"]
    assert counters["dataplane.barrier_timeouts"] == 1


def test_the_virtual_macs_lease_outlasts_the_groups_takeover():
    """Renewed every quarter of it, the lease must cover the longest a takeover takes after the last
    renewal: five advertisement intervals with the internal election, ``EXTERNAL_TAKEOVER`` with an
    external one; never under ``VIRTUAL_MAC_LEASE``."""
    from ipaddress import IPv4Address

    from homeagent.config import ElectionKind, RedundancyConfig
    from homeagent.dataplane.ebpf import VIRTUAL_MAC_LEASE

    def lease(interval: float, election: ElectionKind = ElectionKind.INTERNAL) -> float:
        return forwarding.virtual_mac_lease(RedundancyConfig(
            virtual_address=IPv4Address("10.1.0.10"), security_associations=(), advertisement_interval=interval,
            election=election))

    assert forwarding.virtual_mac_lease(None) == lease(0.1) == VIRTUAL_MAC_LEASE
    for interval in (0.1, 0.5, 2.0):
        assert lease(interval) * 0.75 >= 5 * interval
    assert lease(0.1, ElectionKind.EXTERNAL) * 0.75 >= forwarding.EXTERNAL_TAKEOVER


def test_the_home_links_announcements_are_paced_at_the_configured_rate():
    """``[dataplane] announce_rate`` reaches the gratuitous ARPs' pacing, with either backend that has a
    home link; 1,000 frames a second unless configured."""
    from homeagent.config import parse
    from unit.test_config import HOME_AGENT

    for backend, rate in (("userspace", "announce_rate = 20000\n"), ("ebpf", "announce_rate = 250.5\n"), ("ebpf", "")):
        config = parse(HOME_AGENT + f'[dataplane]\nbackend = "{backend}"\ninterface = "lo"\n{rate}')
        fw = Forwarding(config.dataplane, Counter())
        assert fw.neighbours is not None
        assert fw.neighbours.rate == (float(rate.split("= ")[1]) if rate else 1000.0), backend
