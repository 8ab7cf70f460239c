"""``runtime.forwarding.Forwarding.when_in_effect``: what holds a registration reply until the data plane
has the changes made before it, and lets it go after ``BARRIER_TIMEOUT`` when the data plane does not say
so (a hung forwarder must not hold registrations), counted."""

from __future__ import annotations

import asyncio
from collections import Counter

from homeagent.config import DataplaneConfig
from homeagent.dataplane.fake import FakeDataplane
from homeagent.runtime import forwarding
from homeagent.runtime.forwarding import Forwarding


def make() -> tuple[Forwarding, FakeDataplane, Counter[str]]:
    counters: Counter[str] = Counter()
    fw = Forwarding(DataplaneConfig(), counters)
    fake = FakeDataplane()
    fw.dataplane = fake
    return fw, fake, counters


def test_an_action_runs_at_once_when_nothing_waits():
    async def scenario() -> list[str]:
        fw, _, _ = make()
        done: list[str] = []
        fw.when_in_effect(lambda: done.append("reply"))
        return done

    assert asyncio.run(scenario()) == ["reply"]


def test_actions_wait_for_the_barrier_and_go_in_order_when_it_passes():
    async def scenario() -> tuple[list[str], list[str], Counter[str]]:
        fw, fake, counters = make()
        fake.holding = True
        done: list[str] = []
        fw.when_in_effect(lambda: done.append("first"))
        fw.when_in_effect(lambda: done.append("second"))
        await asyncio.sleep(0.01)
        before = list(done)
        fake.release()
        await asyncio.sleep(0)
        return before, done, counters

    before, after, counters = asyncio.run(scenario())
    assert before == [] and after == ["first", "second"]
    assert counters["dataplane.barrier_timeouts"] == 0


def test_a_barrier_that_never_passes_lets_the_actions_go_after_the_timeout(monkeypatch):
    monkeypatch.setattr(forwarding, "BARRIER_TIMEOUT", 0.05)

    async def scenario() -> tuple[list[str], list[str], Counter[str]]:
        fw, fake, counters = make()
        fake.holding = True
        done: list[str] = []
        fw.when_in_effect(lambda: done.append("reply"))
        await asyncio.sleep(0.02)
        early = list(done)
        await asyncio.sleep(0.1)
        fake.release()  # too late: nothing runs twice
        await asyncio.sleep(0)
        return early, done, counters

    early, done, counters = asyncio.run(scenario())
    assert early == [] and done == ["reply"]
    assert counters["dataplane.barrier_timeouts"] == 1
