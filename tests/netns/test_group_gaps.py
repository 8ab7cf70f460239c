"""Issue 10, "What it must show", first point: how long the virtual address goes unanswered on a real link
when two members are briefly active. A 3-member and a 5-member group (tests/netns/group_link.py) with a
router that resolves the virtual address by ARP and probes it every 10 ms; for each trigger the longest gap
between two answered probes is printed with the probes left unanswered, and the test fails above 1 s (the
goal is under 0.5 s). Printed too: every role change each member logged and every change of the router's
neighbour entry for the virtual address, so that a flap, or a cache left on a loser's MAC, shows.

The triggers:
  1. partition and heal: {ha1, ha2} | {ha3} (5 members: {ha1, ha2, ha3} | {ha4, ha5}) for 3 s, the router
     still reaching every member; each half has an active member, and at the heal one of them steps down;
  2. SIGSTOP of the active member for 1 s, then SIGCONT: the next member takes over, then the first, which
     outranks it, is active again;
  3. kill -9 of a standby (ha2, the next in line) and its restart 1 s later, under 2,000 registrations a
     second at the virtual address.

On main before the fixes for points 1 and 2 (ac9818f) all six failed: 5.4 s after a heal (3 and 5
members), 7.3-7.5 s after the 1 s pause, 7.8-8.1 s at the kill and restart, each time the router's entry
left on the MAC of the member that stood down until it failed its unicast probes (delay_first_probe_time 5 s
+ 3 probes of 1 s) and was resolved again. After the fixes (a quiet host): 0.02-0.03 s at the heal,
0.28-0.30 s for the pause, 0.07-0.24 s at the kill and restart under 2,000/s with 3 members, 0.06-0.07 s
with 5 (0.10-0.70 s, once 1.9-2.4 s, before the start-up and reconciliation fixes of 0bd4ba8 and 0d3decd).

Needs root and iproute2 (tc's u32 and mirred for the partition). Run with ``-s`` to see the figures.
"""

from __future__ import annotations

import json
import time

import pytest

from netns.group_link import (
    PROBE_INTERVAL,
    ROUTER,
    VIP,
    Gaps,
    Group,
    NeighbourWatch,
    Prober,
    group,
)
from netns.lan import can_run

from daemons import wait

pytestmark = [pytest.mark.root, pytest.mark.skipif(not can_run(), reason="needs root and iproute2")]

GAP_BOUND = 1.0  # seconds: the "fails above 1 s"
GAP_GOAL = 0.5  # seconds: the goal, printed beside the figure
LEAD = 1.0  # seconds probed before the trigger: the address answers steadily first
SETTLE = 8.0  # seconds probed after the trigger ends: long enough to see a stale ARP entry run out
HALVES = {3: (("ha1", "ha2"), ("ha3",)), 5: (("ha1", "ha2", "ha3"), ("ha4", "ha5"))}
PARTITION = 3.0  # seconds the halves stay apart
PAUSE = 1.0  # seconds the active member stays stopped
DOWN = 1.0  # seconds between the kill -9 of a standby and its restart
LOAD_RATE = 2000  # registrations a second during the kill and restart
LOAD_LEAD = 2.0  # seconds probed under load before the kill: what the load alone does, before the trigger


SIZES = [pytest.param(size, id=f"{size}-members") for size in (3, 5)]
# Five members under load were an xfail until the table exchanges stopped flooding (core/missed.py and the
# start-up fixes): 0.056-0.067 s on a busy host, three runs in a row.
UNDER_LOAD_SIZES = SIZES


def report(g: Group, name: str, probe: Prober, watch: NeighbourWatch, begin: float, trigger: float,
           trigger_wall: float) -> Gaps:
    """Print what the scenario showed, times in seconds from the trigger; the probe's figures."""
    gaps = probe.gaps(begin)
    if (share := probe.cpu_pressure()) is not None:
        print(f"\n   host CPU pressure while probing (PSI some): a task waited for a CPU {share:.0%} "
              "of the time")
    baseline = probe.gaps(begin, trigger, grace=0.0)
    verdict = "ok" if gaps.longest <= GAP_GOAL else "over the goal" if gaps.longest <= GAP_BOUND else "FAIL"
    print(f"\n== {name}, {len(g.members)} members: longest gap {gaps.longest:.3f} s "
          f"(from {gaps.longest_from - trigger:+.2f} s{', still dark at the end' * gaps.still_dark}); "
          f"goal {GAP_GOAL} s, bound {GAP_BOUND} s: {verdict}")
    print(f"   probes every {PROBE_INTERVAL * 1000:.0f} ms for {gaps.window:.1f} s: {gaps.sent} sent, "
          f"{gaps.answered} answered, {gaps.unanswered} unanswered, "
          f"refusals {dict(gaps.refusals) or 'none'}; the prober's longest pause {gaps.prober_pause:.3f} s; "
          f"before the trigger: longest gap {baseline.longest:.3f} s")
    macs = {g.lan.mac(m): m for m in g.members}
    entries = ", ".join(f"{at - trigger:+.2f} {' '.join(macs.get(w, w) for w in what.split())}"
                        for at, what in watch.changes if at >= begin)
    print(f"   router's entry for the virtual address: {entries or 'unchanged'}")
    for m in g.members:
        changes = g.role_changes(m, trigger_wall - (trigger - begin))
        listed = "; ".join(f"{at - trigger_wall:+.2f} {what}" for at, what in changes)
        print(f"   {m} role changes: {listed or 'none'}")
    return gaps


def probing(g: Group) -> tuple[Prober, NeighbourWatch]:
    watch = NeighbourWatch(g.lan)
    probe = Prober(g.lan).__enter__()
    try:
        wait("the virtual address to answer the probe", lambda: probe.answered, timeout=3)
    except BaseException:
        probe.stop()
        watch.close()
        raise
    return probe, watch


def took_over(g: Group, hosts: tuple[str, ...], since_wall: float, until_wall: float) -> bool:
    """Whether one of ``hosts`` logged becoming active in the window: the trigger did what it is for (a
    partition the tc filters failed to make, or a pause too short to notice, would pass the gap check)."""
    return any(since_wall <= at <= until_wall and what.split(":")[0].endswith("-> active")
               for h in hosts for at, what in g.role_changes(h, since_wall))


def check(g: Group, gaps: Gaps) -> None:
    """The gap within the bound; then the group as preempt leaves it: ha1 (first in rank) the one active
    member, and the router's entry for the virtual address on ha1's MAC."""
    assert gaps.longest <= GAP_BOUND, f"the virtual address went unanswered for {gaps.longest:.2f} s"
    assert wait("one active member", lambda: len(a := g.active()) == 1 and a, timeout=5) == ["ha1"]
    assert g.lan.neighbour(ROUTER, VIP) == g.lan.mac("ha1"), "the router's entry names another member's MAC"


@pytest.mark.parametrize("size", SIZES)
def test_partition_and_heal(tmp_path, size):
    with group(tmp_path, size) as g:
        g.formed()
        probe, watch = probing(g)
        try:
            begin = time.monotonic()
            time.sleep(LEAD)
            trigger, trigger_wall = time.monotonic(), time.time()
            g.lan.partition(*HALVES[size])
            time.sleep(PARTITION)
            healed_wall = time.time()
            g.lan.heal()
            time.sleep(SETTLE)
        finally:
            probe.stop()
            watch.close()
        print(f"\n   router ARP settings (kernel defaults, untouched): {g.router_arp_settings()}")
        gaps = report(g, f"partition {' | '.join('{' + ', '.join(h) + '}' for h in HALVES[size])} for "
                      f"{PARTITION:.0f} s and heal", probe, watch, begin, trigger, trigger_wall)
        assert took_over(g, HALVES[size][1], trigger_wall, healed_wall), "no active member in the other half"
        check(g, gaps)


@pytest.mark.parametrize("size", SIZES)
def test_sigstop_of_the_active_member(tmp_path, size):
    with group(tmp_path, size) as g:
        g.formed()
        probe, watch = probing(g)
        try:
            begin = time.monotonic()
            time.sleep(LEAD)
            trigger, trigger_wall = time.monotonic(), time.time()
            g.pause("ha1")
            time.sleep(PAUSE)
            g.resume("ha1")
            time.sleep(SETTLE)
        finally:
            probe.stop()
            watch.close()
        gaps = report(g, f"SIGSTOP of the active member (ha1) for {PAUSE:.0f} s", probe, watch, begin,
                      trigger, trigger_wall)
        assert took_over(g, ("ha2",), trigger_wall, trigger_wall + PAUSE), "nobody noticed the pause"
        check(g, gaps)


@pytest.mark.parametrize("size", UNDER_LOAD_SIZES)
def test_kill_and_restart_of_a_standby_under_load(tmp_path, size):
    with group(tmp_path, size) as g:
        g.formed()
        load = g.load(LOAD_RATE, duration=LOAD_LEAD + DOWN + SETTLE + 1.5)
        try:
            probe, watch = probing(g)
            try:
                begin = time.monotonic()
                time.sleep(LOAD_LEAD)
                trigger, trigger_wall = time.monotonic(), time.time()
                g.kill("ha2")
                time.sleep(DOWN)
                g.start("ha2")
                time.sleep(SETTLE)
            finally:
                probe.stop()
                watch.close()
            out, err = load.communicate(timeout=30)
        finally:
            if load.poll() is None:
                load.kill()
                load.wait()
        result = json.loads(out) if out.strip() else {"error": err[-500:]}
        gaps = report(g, f"kill -9 of a standby (ha2), restarted {DOWN:.0f} s later, under {LOAD_RATE}/s",
                      probe, watch, begin, trigger, trigger_wall)
        print(f"   load: {result}")
        check(g, gaps)
        # The load's own figures are printed, not asserted: what a member answers at 2,000/s depends on the
        # CPU the host leaves it (a two-CPU host shared with other runs answered 52-680 a second).
        assert g.role("ha2") == "standby" and VIP not in g.lan.addresses("ha2")
