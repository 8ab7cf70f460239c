"""The election (core/election.py): every transition of TRANSITIONS, the master-down interval, priority 0,
split brain, ties, preemption, and ``init`` never becoming active."""

from __future__ import annotations

from dataclasses import astuple

import pytest

from collections import Counter

from homeagent.core.election import TRANSITIONS, Election, Event, Role, Transition
from homeagent.core.sync import SyncState

T0 = 1_700_000_000.0
ME = 0xC0000202  # 192.0.2.2
LOWER, HIGHER = 0xC0000201, 0xC0000203  # addresses either side of ours


def election(priority=100, interval=1.0, preempt=True, now=T0, address=ME) -> Election:
    return Election(address, priority, interval, preempt, now)


def standby(priority=100, interval=1.0, preempt=True, now=T0) -> Election:
    e = election(priority, interval, preempt, now)
    assert e.ready(now) == [Transition(Role.INIT, Role.STANDBY, Event.READY.value, now)]
    return e


def active(priority=100, interval=1.0, preempt=True, now=T0) -> Election:
    e = standby(priority, interval, preempt, now)
    at = e.next_timer()
    assert [t.new for t in e.handle_timer(at)] == [Role.ACTIVE]
    return e


def mdi(priority: int, interval: float) -> float:
    """docs: 3 x interval + (256 - priority) / 256 x interval."""
    return 3 * interval + (256 - priority) / 256 * interval


# -- the table, transition by transition -----------------------------------------------------------


def test_the_table_is_what_the_docstring_says():
    assert TRANSITIONS == {
        Role.INIT: {Event.READY: Role.STANDBY, Event.STOP: Role.INIT},
        Role.STANDBY: {
            Event.MASTER_DOWN: Role.ACTIVE,
            Event.ACTIVE_GONE: Role.ACTIVE,
            Event.PREEMPT: Role.ACTIVE,
            Event.TOLD_ACTIVE: Role.ACTIVE,
            Event.STOP: Role.INIT,
        },
        Role.ACTIVE: {Event.BETTER_ACTIVE: Role.STANDBY, Event.TOLD_STANDBY: Role.STANDBY, Event.STOP: Role.INIT},
    }
    assert [r.value for r in Role] == [0, 1, 2]  # these travel in the Advertisement
    assert [r.label for r in Role] == ["init", "standby", "active"]


def drive(role: Role, event: Event) -> tuple[Election, list[Transition]]:
    """Put an election in ``role``, then cause ``event`` through the public inputs, at T0 + 100."""
    e = {Role.INIT: election, Role.STANDBY: standby, Role.ACTIVE: active}[role]()
    assert e.role is role
    now = T0 + 100
    if event is Event.READY:
        return e, e.ready(now)
    if event is Event.STOP:
        return e, e.stop(now)
    if event is Event.MASTER_DOWN:
        return e, e.handle_timer(now)  # nothing heard since T0: the deadline has passed
    if event is Event.ACTIVE_GONE:
        heard = now - 1.5 * e.interval
        if role is Role.STANDBY:
            e.advertisement(HIGHER, 200, Role.ACTIVE, heard)
        e.unreachable(HIGHER, heard)
        return e, e.handle_timer(now)
    if event is Event.PREEMPT:
        return e, e.advertisement(LOWER, 50, Role.ACTIVE, now)
    if event is Event.BETTER_ACTIVE:
        return e, e.advertisement(HIGHER, 200, Role.ACTIVE, now)
    if event is Event.TOLD_ACTIVE:
        return e, e.told(Role.ACTIVE, now)
    if event is Event.TOLD_STANDBY:
        return e, e.told(Role.STANDBY, now)
    raise AssertionError(event)


@pytest.mark.parametrize(
    ("role", "event"), [(r, ev) for r, row in TRANSITIONS.items() for ev in row], ids=lambda x: x.name
)
def test_every_transition_in_the_table(role, event):
    e, transitions = drive(role, event)
    new = TRANSITIONS[role][event]
    assert e.role is new
    if new is role:  # INIT + STOP: no change, so no transition is recorded
        assert transitions == []
    else:
        assert [t[:4] for t in map(astuple, transitions)] == [(role, new, event.value, T0 + 100)]
        assert e.history[-1] == transitions[0] and e.since == T0 + 100


@pytest.mark.parametrize(
    ("role", "event"),
    [(r, ev) for r in Role for ev in Event if ev not in TRANSITIONS[r]],
    ids=lambda x: x.name,
)
def test_events_a_state_has_no_entry_for_change_nothing(role, event):
    e, transitions = drive(role, event)
    assert transitions == [] and e.role is role
    since, history = e.since, list(e.history)
    assert e._fire(event, T0 + 200) == [] and e.role is role  # the table itself, too
    assert e.since == since and list(e.history) == history


# -- the master-down interval ----------------------------------------------------------------------


@pytest.mark.parametrize("priority", [1, 100, 128, 254, 255])
@pytest.mark.parametrize("interval", [0.01, 0.1, 1.0, 3.0])
def test_master_down_interval(priority, interval):
    e = election(priority, interval)
    assert e.skew == pytest.approx((256 - priority) / 256 * interval)
    assert e.master_down_interval == pytest.approx(mdi(priority, interval))


@pytest.mark.parametrize("priority", [1, 100, 254])
def test_a_standby_takes_over_at_the_master_down_interval_and_not_before(priority):
    e = standby(priority, 0.1)
    deadline = T0 + mdi(priority, 0.1)
    assert e.next_timer() == pytest.approx(deadline)
    assert e.handle_timer(T0 + 3 * 0.1) == []
    assert e.handle_timer(e.next_timer() - 1e-6) == [] and e.role is Role.STANDBY
    [t] = e.handle_timer(e.next_timer())
    assert (t.old, t.new, t.reason) == (Role.STANDBY, Role.ACTIVE, Event.MASTER_DOWN.value)
    assert e.role is Role.ACTIVE and e.next_timer() is None
    assert e.handle_timer(T0 + 100) == []


def test_hearing_the_active_member_pushes_the_deadline_back():
    e = standby(100, 1.0)
    for k in range(1, 20):  # an active member advertising every second keeps us standing by
        now = T0 + k
        assert e.advertisement(HIGHER, 200, Role.ACTIVE, now) == []
        assert e.next_timer() == pytest.approx(now + mdi(100, 1.0), abs=1e-5)
        assert e.handle_timer(now + 0.999) == []
        assert e.active_member == HIGHER
    last = T0 + 19
    assert e.handle_timer(last + mdi(100, 1.0) - 1e-6) == []
    assert [t.new for t in e.handle_timer(last + mdi(100, 1.0))] == [Role.ACTIVE]
    assert e.active_member is None


def test_adverts_of_standby_or_init_members_do_not_count():
    e = standby(100, 1.0)
    deadline = e.next_timer()
    assert e.advertisement(HIGHER, 200, Role.STANDBY, T0 + 2) == []
    assert e.advertisement(HIGHER, 200, Role.INIT, T0 + 2) == []
    assert e.advertisement(HIGHER, 200, 3, T0 + 2) == []  # peer, or anything unknown
    assert e.next_timer() == deadline and e.active_member is None


def test_the_higher_priority_standby_takes_over_first():
    a, b = standby(200, 1.0), standby(50, 1.0)
    assert a.next_timer() < b.next_timer()


# -- ICMP port unreachable from the active member's host: its process died ---------------------------


def test_port_unreachable_from_the_active_shortens_the_wait_to_one_and_a_half_intervals():
    e = standby(100, 1.0)
    e.advertisement(HIGHER, 200, Role.ACTIVE, T0 + 1)
    assert e.unreachable(HIGHER, T0 + 1.2) == []
    assert e.next_timer() == pytest.approx(T0 + 1.2 + 1.5, abs=1e-5)
    assert e.handle_timer(T0 + 2.7 - 1e-6) == []
    [t] = e.handle_timer(T0 + 2.7)
    assert t.new is Role.ACTIVE and t.reason == Event.ACTIVE_GONE.value and t.replaced == HIGHER


def test_an_advertisement_after_the_icmp_restores_the_full_interval():
    # ICMP is not authenticated: a forged one must not make a standby take over from a live active member.
    e = standby(100, 1.0)
    e.advertisement(HIGHER, 200, Role.ACTIVE, T0 + 1)
    e.unreachable(HIGHER, T0 + 1.2)
    e.advertisement(HIGHER, 200, Role.ACTIVE, T0 + 2)
    assert e.next_timer() == pytest.approx(T0 + 2 + mdi(100, 1.0), abs=1e-5)
    assert e.handle_timer(T0 + 2.7) == []
    [t] = e.handle_timer(e.next_timer())
    assert t.reason == Event.MASTER_DOWN.value


def test_port_unreachable_never_lengthens_the_wait_nor_counts_for_others():
    e = standby(100, 1.0)
    e.advertisement(HIGHER, 200, Role.ACTIVE, T0 + 1)
    e.unreachable(LOWER, T0 + 1.1)  # not the active member
    assert e.next_timer() == pytest.approx(T0 + 1 + mdi(100, 1.0), abs=1e-5)
    e.unreachable(HIGHER, T0 + 4.5)  # later than the deadline already set: changes nothing
    assert e.next_timer() == pytest.approx(T0 + 1 + mdi(100, 1.0), abs=1e-5)
    a = active(100, 1.0)
    assert a.unreachable(HIGHER, T0 + 10) == [] and a.next_timer() is None
    x = Election(ME, 100, 1.0, True, T0, external=True)
    x.ready(T0)
    x.advertisement(HIGHER, 200, Role.ACTIVE, T0 + 1)
    assert x.unreachable(HIGHER, T0 + 1.1) == [] and x.next_timer() is None


# -- priority 0: a graceful stop -------------------------------------------------------------------


def test_priority_zero_from_the_active_makes_a_standby_take_over_after_the_skew():
    e = standby(100, 1.0)
    e.advertisement(HIGHER, 200, Role.ACTIVE, T0 + 1)
    assert e.active_member == HIGHER
    assert e.advertisement(HIGHER, 0, Role.ACTIVE, T0 + 2) == []
    assert e.active_member is None
    assert e.next_timer() == pytest.approx(T0 + 2 + (256 - 100) / 256 * 1.0, abs=1e-5)
    assert e.handle_timer(T0 + 2 + e.skew - 1e-6) == []
    [t] = e.handle_timer(e.next_timer())
    assert t.new is Role.ACTIVE and t.reason == Event.MASTER_DOWN.value


def test_priority_zero_is_not_a_better_active_nor_preempted():
    e = active(100, 1.0)
    assert e.advertisement(HIGHER, 0, Role.ACTIVE, T0 + 10) == [] and e.role is Role.ACTIVE
    i = election(100, 1.0)
    assert i.advertisement(LOWER, 0, Role.ACTIVE, T0 + 10) == [] and i.role is Role.INIT
    assert i.next_timer() is None


# -- split brain: an active member hears another --------------------------------------------------


@pytest.mark.parametrize(("priority", "address"), [(101, LOWER), (255, LOWER), (100, HIGHER)])
def test_an_active_member_steps_down_on_hearing_a_better_active(priority, address):
    e = active(100, 1.0)
    [t] = e.advertisement(address, priority, Role.ACTIVE, T0 + 10)
    assert (t.old, t.new, t.reason) == (Role.ACTIVE, Role.STANDBY, Event.BETTER_ACTIVE.value)
    assert e.role is Role.STANDBY and e.active_member == address
    # It stands by as usual: takes over again if the better one falls silent.
    assert e.next_timer() == pytest.approx(T0 + 10 + mdi(100, 1.0), abs=1e-5)


@pytest.mark.parametrize(("priority", "address"), [(99, HIGHER), (1, HIGHER), (100, LOWER)])
def test_an_active_member_stays_on_hearing_a_worse_active(priority, address):
    e = active(100, 1.0)
    assert e.advertisement(address, priority, Role.ACTIVE, T0 + 10) == []
    assert e.role is Role.ACTIVE


def test_equal_priority_split_brain_ends_with_the_higher_address_active():
    low = Election(LOWER, 100, 1.0, True, T0)
    high = Election(HIGHER, 100, 1.0, True, T0)
    for e in (low, high):
        e.ready(T0)
        assert [t.new for t in e.handle_timer(e.next_timer())] == [Role.ACTIVE]
    assert low.advertisement(HIGHER, 100, Role.ACTIVE, T0 + 5) != []
    assert high.advertisement(LOWER, 100, Role.ACTIVE, T0 + 5) == []
    assert (low.role, high.role) == (Role.STANDBY, Role.ACTIVE)


# -- preemption ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("theirs", "address"), [(50, HIGHER), (99, HIGHER), (100, LOWER)])
def test_with_preemption_a_better_standby_takes_over_at_once(theirs, address):
    e = standby(100, 1.0, preempt=True)
    [t] = e.advertisement(address, theirs, Role.ACTIVE, T0 + 1)
    assert (t.old, t.new, t.reason, t.at) == (Role.STANDBY, Role.ACTIVE, Event.PREEMPT.value, T0 + 1)


@pytest.mark.parametrize(("theirs", "address"), [(50, HIGHER), (100, LOWER)])
def test_without_preemption_a_better_standby_waits(theirs, address):
    e = standby(100, 1.0, preempt=False)
    assert e.advertisement(address, theirs, Role.ACTIVE, T0 + 1) == []
    assert e.role is Role.STANDBY
    assert e.next_timer() == pytest.approx(T0 + 1 + mdi(100, 1.0), abs=1e-5)  # and keeps standing by


@pytest.mark.parametrize(("theirs", "address"), [(101, LOWER), (100, HIGHER)])
def test_a_worse_standby_never_preempts(theirs, address):
    e = standby(100, 1.0, preempt=True)
    assert e.advertisement(address, theirs, Role.ACTIVE, T0 + 1) == [] and e.role is Role.STANDBY


# -- preempt_delay (keepalived's preempt_delay, HSRP's preempt delay minimum) ------------------------------


def delayed_standby(delay: float, priority: int = 200, now: float = T0) -> Election:
    e = Election(ME, priority, 0.1, True, now, preempt_delay=delay)
    e.ready(now)
    return e


def test_preempt_delay_holds_a_better_standby_back_until_it_has_stood_by_that_long():
    e = delayed_standby(5.0)
    for at in (T0 + 0.1, T0 + 2.5, T0 + 4.99):  # the worse active member's advertisements meanwhile
        assert e.advertisement(LOWER, 100, Role.ACTIVE, at) == [] and e.role is Role.STANDBY
        assert e.next_timer() == pytest.approx(at + e.master_down_interval)  # it still follows the active one
    [t] = e.advertisement(LOWER, 100, Role.ACTIVE, T0 + 5.0)
    assert (t.old, t.new, t.reason, t.at) == (Role.STANDBY, Role.ACTIVE, Event.PREEMPT.value, T0 + 5.0)


def test_preempt_delay_zero_is_preempting_at_once():
    e = delayed_standby(0.0)
    assert [t.new for t in e.advertisement(LOWER, 100, Role.ACTIVE, T0)] == [Role.ACTIVE]


def test_preempt_delay_starts_again_at_each_standing_by():
    """Stepping down to a better member (a standby again) re-arms the delay, as a restart does."""
    e = delayed_standby(5.0)
    [t] = e.advertisement(LOWER, 100, Role.ACTIVE, T0 + 6)
    assert t.new is Role.ACTIVE
    [t] = e.advertisement(HIGHER, 250, Role.ACTIVE, T0 + 7)  # a better active member: step down at T0 + 7
    assert t.new is Role.STANDBY
    assert e.advertisement(LOWER, 100, Role.ACTIVE, T0 + 11) == []  # 4 s after standing by: not yet
    assert [t.new for t in e.advertisement(LOWER, 100, Role.ACTIVE, T0 + 12)] == [Role.ACTIVE]


def test_preempt_delay_never_delays_a_takeover_of_a_group_without_active_member():
    e = delayed_standby(60.0)
    assert e.advertisement(LOWER, 100, Role.ACTIVE, T0 + 1) == []
    due = e.next_timer()
    assert due == pytest.approx(T0 + 1 + e.master_down_interval, abs=1e-5)  # the worse active member went silent
    [t] = e.handle_timer(due)
    assert (t.new, t.reason) == (Role.ACTIVE, Event.MASTER_DOWN.value)


def test_preempt_delay_does_nothing_without_preemption_or_for_a_worse_member():
    e = Election(ME, 200, 0.1, False, T0, preempt_delay=1.0)
    e.ready(T0)
    assert e.advertisement(LOWER, 100, Role.ACTIVE, T0 + 5) == []
    worse = delayed_standby(1.0, priority=50)
    assert worse.advertisement(LOWER, 100, Role.ACTIVE, T0 + 5) == []


# -- out of sync (core/sync.py, advertisement flags OUT_OF_SYNC and YOU_LAG) -------------------------------


def synced_standby(priority: int) -> tuple[Election, SyncState]:
    """A standby whose election reads a sync state, as the group's does."""
    sync = SyncState(Counter())
    e = Election(ME, priority, 1.0, True, T0, sync=sync)
    e.ready(T0)
    return e, sync


def lagging_standby(priority: int) -> Election:
    """A standby a member told it lags (YOU_LAG): out of sync."""
    e, sync = synced_standby(priority)
    sync.advertised(HIGHER + 1, True)
    assert e.out_of_sync
    return e


def test_a_standby_is_out_of_sync_while_a_member_says_it_lags():
    e, sync = synced_standby(100)
    assert not e.out_of_sync and not election().out_of_sync  # no sync state: never
    sync.advertised(LOWER, True)
    sync.advertised(HIGHER, True)
    assert e.out_of_sync
    sync.advertised(LOWER, False)
    assert e.out_of_sync  # HIGHER still says so
    sync.advertised(HIGHER, False)
    assert not e.out_of_sync


def test_an_out_of_sync_standby_does_not_take_over_while_an_in_sync_standby_is_heard():
    e = lagging_standby(200)  # the best priority, but it missed what the group answered
    e.advertisement(LOWER, 50, Role.STANDBY, T0 + 1, in_sync=True)
    deadline = e.next_timer()
    assert e.handle_timer(deadline) == [] and e.role is Role.STANDBY  # leaves the role to the in-sync one
    assert e.next_timer() == pytest.approx(deadline + 1.0)  # and looks again an interval later
    # The in-sync standby falls silent: with no in-sync member left, it takes over (the address must be
    # served).
    now = e.next_timer()
    while e.role is Role.STANDBY:
        assert now < T0 + 20
        e.handle_timer(now)
        now = e.next_timer() or now
    assert e.history[-1].reason == Event.MASTER_DOWN.value and e.history[-1].at > T0 + 1 + mdi(200, 1.0)


def test_an_out_of_sync_standby_takes_over_when_only_out_of_sync_standbys_are_heard():
    e = lagging_standby(200)
    e.advertisement(LOWER, 50, Role.STANDBY, T0 + 1, in_sync=False)
    [t] = e.handle_timer(e.next_timer())
    assert t.new is Role.ACTIVE


def test_an_out_of_sync_standby_never_preempts():
    e, sync = synced_standby(200)
    sync.advertised(LOWER, True)  # the active member says we lag
    assert e.advertisement(LOWER, 100, Role.ACTIVE, T0 + 1) == [] and e.role is Role.STANDBY
    sync.advertised(LOWER, False)  # in sync again: the worse active member's next advertisement is preempted
    [t] = e.advertisement(LOWER, 100, Role.ACTIVE, T0 + 2)
    assert (t.new, t.reason) == (Role.ACTIVE, Event.PREEMPT.value)


def test_an_in_sync_standby_does_not_wait_for_a_better_one_that_is_out_of_sync():
    e = standby(100, 1.0)
    e.advertisement(HIGHER, 200, Role.STANDBY, T0 + 0.5, in_sync=False)
    [t] = e.handle_timer(e.next_timer())
    assert t.new is Role.ACTIVE
    # While a better standby that is in sync makes it wait one more interval, as before.
    f = standby(100, 1.0)
    f.advertisement(HIGHER, 200, Role.STANDBY, T0 + 0.5, in_sync=True)
    deadline = f.next_timer()
    assert f.handle_timer(deadline) == [] and f.next_timer() == pytest.approx(deadline + 1.0)


# -- init --------------------------------------------------------------------------------------------


def test_init_never_becomes_active():
    e = election(255, 0.01, preempt=True)
    assert e.next_timer() is None
    assert e.handle_timer(T0 + 1e6) == []
    assert e.advertisement(LOWER, 1, Role.ACTIVE, T0 + 1) == []  # would be preempted by a standby
    assert e.advertisement(LOWER, 0, Role.ACTIVE, T0 + 2) == []
    assert e.handle_timer(T0 + 1e6) == []
    assert e.role is Role.INIT and e.next_timer() is None and list(e.history) == []


def test_stop_returns_to_init_and_disarms_the_timer():
    e = standby(100, 1.0)
    [t] = e.stop(T0 + 1)
    assert (t.old, t.new, t.reason) == (Role.STANDBY, Role.INIT, Event.STOP.value)
    assert e.next_timer() is None and e.handle_timer(T0 + 1e6) == []
    a = active(100, 1.0)
    assert [t.new for t in a.stop(T0 + 50)] == [Role.INIT] and a.handle_timer(T0 + 1e6) == []
    # And it may be started again: ready, standby, active after the interval from then.
    assert [t.new for t in a.ready(T0 + 60)] == [Role.STANDBY]
    assert a.next_timer() == pytest.approx(T0 + 60 + mdi(100, 1.0), abs=1e-5)


# -- history and since -------------------------------------------------------------------------------


def test_history_and_since():
    e = election(100, 1.0, now=T0 - 5)
    assert e.since == T0 - 5 and list(e.history) == []
    e.ready(T0)
    e.handle_timer(T0 + 10)
    e.advertisement(HIGHER, 200, Role.ACTIVE, T0 + 11)
    e.stop(T0 + 12)
    assert [(t.old, t.new, t.at) for t in e.history] == [
        (Role.INIT, Role.STANDBY, T0),
        (Role.STANDBY, Role.ACTIVE, T0 + 10),
        (Role.ACTIVE, Role.STANDBY, T0 + 11),
        (Role.STANDBY, Role.INIT, T0 + 12),
    ]
    assert [t.reason for t in e.history] == [Event.READY.value, Event.MASTER_DOWN.value,
                                             Event.BETTER_ACTIVE.value, Event.STOP.value]
    assert e.since == T0 + 12


def test_history_keeps_the_last_ten():
    e = election(100, 1.0)
    now = T0
    for _ in range(8):
        now += 1
        e.ready(now)
        now += 1
        e.stop(now)
    assert len(e.history) == 10
    assert e.history[-1].at == now and e.history[0].at == now - 9


# -- an external election (keepalived decides) --------------------------------------------------------


def test_an_external_election_is_decided_by_told_alone():
    e = Election(ME, 100, 0.1, True, T0, external=True)
    assert e.told(Role.ACTIVE, T0 + 0.1) == []  # still downloading: remembered, not acted on
    assert e.role is Role.INIT
    ready = e.ready(T0 + 1)
    assert [(t.old, t.new) for t in ready] == [(Role.INIT, Role.STANDBY), (Role.STANDBY, Role.ACTIVE)]
    assert ready[1].reason == Event.TOLD_ACTIVE.value
    # Advertisements and timers decide nothing: a better active member does not make it step down...
    assert e.advertisement(HIGHER, 200, Role.ACTIVE, T0 + 2) == [] and e.role is Role.ACTIVE
    assert e.next_timer() is None and e.handle_timer(T0 + 100) == []
    # ...only the external election does.
    [t] = e.told(Role.STANDBY, T0 + 3)
    assert (t.old, t.new, t.reason) == (Role.ACTIVE, Role.STANDBY, Event.TOLD_STANDBY.value)
    assert e.handle_timer(T0 + 1000) == [] and e.role is Role.STANDBY  # no master-down takeover either


# -- issue 10: preempt only the whole field, and settle at start-up --------------------------------------

WORST, OTHER = 0xC0000200, 0xC0000204


def test_no_preemption_of_a_worse_active_member_while_a_better_one_is_active():
    """At a partition's heal two members are active: one worse and one better than us. Preempting the worse
    would make three; the better one's advertisement ends it by making the worse stand down."""
    e = standby(priority=100)
    now = T0 + 10
    e.advertisement(OTHER, 200, Role.ACTIVE, now)
    assert e.advertisement(LOWER, 50, Role.ACTIVE, now + 0.01) == []
    assert e.role is Role.STANDBY
    # Once the better one has not been heard for its master-down interval, the worse one is fair game.
    later = now + mdi(100, 1.0) + 0.1
    assert [t.reason for t in e.advertisement(LOWER, 50, Role.ACTIVE, later)] == [Event.PREEMPT.value]


def test_of_two_standbys_better_than_the_active_member_only_the_better_preempts():
    e = standby(priority=100)
    now = T0 + 10
    e.advertisement(OTHER, 150, Role.STANDBY, now)
    assert e.advertisement(LOWER, 50, Role.ACTIVE, now + 0.01) == []
    best = standby(priority=150)
    best.advertisement(ME, 100, Role.STANDBY, now)
    assert [t.new for t in best.advertisement(LOWER, 50, Role.ACTIVE, now + 0.01)] == [Role.ACTIVE]


def test_a_standby_waits_for_a_better_member_still_downloading_during_the_settle_only():
    e = Election(ME, 100, 0.1, True, T0, settle=1.5)
    e.ready(T0 + 0.2)
    e.advertisement(HIGHER, 200, Role.INIT, T0 + 0.3)
    deadline = e.next_timer()
    assert deadline is not None and e.handle_timer(deadline) == []  # waits an interval more
    heard = deadline
    while heard < T0 + 1.5:  # it keeps downloading, and says so
        e.advertisement(HIGHER, 200, Role.INIT, heard)
        assert e.handle_timer(heard) == []
        heard += 0.1
    e.advertisement(HIGHER, 200, Role.INIT, heard)
    assert [t.new for t in e.handle_timer(e.next_timer() or heard)] == [Role.ACTIVE]  # the settle is over


def test_a_worse_member_downloading_is_not_waited_for():
    e = Election(ME, 100, 0.1, True, T0, settle=1.5)
    e.ready(T0 + 0.2)
    e.advertisement(LOWER, 50, Role.INIT, T0 + 0.3)
    assert [t.new for t in e.handle_timer(e.next_timer())] == [Role.ACTIVE]


# -- the active member's interval (RFC 5798 6.4.2, Master_Adver_Interval) ----------------------------


def test_a_standby_times_the_active_member_by_the_interval_it_advertises():
    e = standby(priority=100, interval=0.1)
    e.advertisement(HIGHER, 200, Role.ACTIVE, T0 + 1, interval=2.0)
    assert e.master_adver_interval == 2.0
    assert e.skew == pytest.approx(156 / 256 * 2.0) and e.master_down_interval == pytest.approx(mdi(100, 2.0))
    assert e.next_timer() == pytest.approx(T0 + 1 + mdi(100, 2.0), abs=1e-5)
    assert e.handle_timer(T0 + 1 + mdi(100, 0.1)) == [], "its own interval's master-down is no reason"
    e.advertisement(HIGHER, 200, Role.ACTIVE, T0 + 2)  # no interval given: the last one heard stays
    assert e.master_down_interval == pytest.approx(mdi(100, 2.0))
    assert [t.new for t in e.handle_timer(T0 + 2 + mdi(100, 2.0))] == [Role.ACTIVE]
    assert e.master_adver_interval == 0.1, "active, the active member's interval is its own"


def test_an_active_member_standing_down_for_a_better_one_takes_its_interval_and_a_worse_ones_is_ignored():
    e = active(priority=100, interval=0.1)
    e.advertisement(LOWER, 50, Role.ACTIVE, T0 + 10, interval=3.0)  # worse: we stay active, on our own
    assert e.role is Role.ACTIVE and e.master_adver_interval == 0.1
    e.advertisement(HIGHER, 200, Role.ACTIVE, T0 + 11, interval=0.5)
    assert e.role is Role.STANDBY and e.master_adver_interval == 0.5
    assert e.next_timer() == pytest.approx(T0 + 11 + mdi(100, 0.5), abs=1e-5)


def test_the_wait_after_the_active_members_port_is_unreachable_is_in_its_intervals():
    e = standby(priority=100, interval=0.1)
    e.advertisement(HIGHER, 200, Role.ACTIVE, T0 + 1, interval=1.0)
    e.unreachable(HIGHER, T0 + 1.2)
    assert e.next_timer() == pytest.approx(T0 + 1.2 + 1.5 * 1.0, abs=1e-5), "a live active member advertises within one"


def test_a_worse_active_members_last_advertisement_does_not_bring_the_takeover_nearer():
    """A better member (1 s) preempts the worse active member we stood by for (0.05 s, preempt off here);
    the worse one's last advertisement, heard after, must not time us by its interval: the better one is
    alive, and taking over 0.2 s later would make two active members."""
    e = standby(priority=100, interval=0.1, preempt=False)
    e.advertisement(LOWER, 80, Role.ACTIVE, T0 + 1, interval=0.05)
    e.advertisement(HIGHER, 200, Role.ACTIVE, T0 + 1.01, interval=1.0)
    e.advertisement(LOWER, 80, Role.ACTIVE, T0 + 1.02, interval=0.05)  # it stands down after this one
    assert e.master_adver_interval == 1.0
    assert e.handle_timer(T0 + 1.02 + mdi(100, 0.05) + 0.01) == []
    assert e.next_timer() == pytest.approx(T0 + 1.01 + mdi(100, 1.0), abs=1e-5)


def test_a_better_standby_is_judged_alive_by_its_own_interval_not_the_active_members():
    """The active member advertises every 0.1 s, a better standby every 1 s: when the active one dies, we
    (1 s too) leave the role to the better standby, heard 0.86 s ago, rather than both taking over."""
    better = 0xC0000204
    e = standby(priority=100, interval=1.0)
    e.advertisement(better, 150, Role.STANDBY, T0 + 1, interval=1.0)
    for n in range(6):
        e.advertisement(HIGHER, 200, Role.ACTIVE, T0 + 1 + n * 0.1, interval=0.1)  # then it dies, at T0 + 1.5
    due = T0 + 1.5 + mdi(100, 0.1)
    assert e.next_timer() == pytest.approx(due)
    assert e.handle_timer(due) == [], "the better standby, alive by its own 1 s interval, is due first"
    e.advertisement(better, 150, Role.ACTIVE, T0 + 1.9, interval=1.0)  # it took over
    assert e.role is Role.STANDBY and e.master_adver_interval == 1.0


def test_an_active_member_back_with_a_shorter_interval_is_timed_by_it_at_once():
    """Advertising every 10 s, then restarted at 0.1 s and active again: when it dies soon after, the
    standby takes over 0.36 s later, not at the deadline its 10 s interval had set (36 s on)."""
    e = standby(priority=100, interval=0.1)
    for t in (0, 10, 20):
        e.advertisement(HIGHER, 200, Role.ACTIVE, T0 + t, interval=10.0)
    e.advertisement(HIGHER, 200, Role.INIT, T0 + 21, interval=0.1)  # restarting
    for n in range(6):
        e.advertisement(HIGHER, 200, Role.ACTIVE, T0 + 22.4 + n * 0.1, interval=0.1)  # then it dies
    assert e.next_timer() == pytest.approx(T0 + 22.9 + mdi(100, 0.1), abs=1e-5)
    assert [t.new for t in e.handle_timer(T0 + 22.9 + mdi(100, 0.1))] == [Role.ACTIVE]


def test_a_resignation_does_not_hurry_a_standby_while_another_active_member_lives():
    """A split brain: X (10 s) and Y active; Y resigns. X is alive: no takeover after the skew."""
    e = standby(priority=100, interval=1.0)
    e.advertisement(HIGHER, 200, Role.ACTIVE, T0, interval=10.0)
    e.advertisement(LOWER, 150, Role.ACTIVE, T0 + 0.5, interval=1.0)
    e.advertisement(LOWER, 0, Role.ACTIVE, T0 + 1)
    assert e.handle_timer(T0 + 1 + e.skew + 0.01) == [] and e.role is Role.STANDBY
    assert e.next_timer() >= T0 + mdi(100, 10.0) - 1e-9


def test_a_member_that_heard_the_active_one_resign_while_it_downloaded_times_by_its_own_interval():
    e = election(priority=100, interval=0.1)
    e.advertisement(HIGHER, 200, Role.ACTIVE, T0 + 0.5, interval=10.0)
    e.advertisement(HIGHER, 0, Role.ACTIVE, T0 + 0.6)  # resigns
    e.ready(T0 + 1)
    assert e.next_timer() == pytest.approx(T0 + 1 + mdi(100, 0.1), abs=1e-5)


def split_brain_standby() -> tuple[Election, float]:
    """A standby (100) hearing two active members: A (200, every 0.1 s) and W (150, every 1 s); A's last
    advertisement at T0 + 2 (then it dies, resigns or is reported gone), W's at T0 + 1.5."""
    e = standby(priority=100, interval=1.0, preempt=False)
    e.advertisement(LOWER, 150, Role.ACTIVE, T0 + 1.5, interval=1.0)
    for n in range(11):
        e.advertisement(HIGHER, 200, Role.ACTIVE, T0 + 1 + n * 0.1, interval=0.1)
    return e, T0 + 1.5 + mdi(100, 1.0)


@pytest.mark.parametrize("how", ["dies", "resigns", "gone"])
def test_a_standby_never_takes_over_while_another_active_member_lives(how):
    """Whatever ends the best active member, a worse one that still advertises (a split brain) keeps the
    standby waiting until it too has gone unheard for its own master-down interval."""
    e, w_deadline = split_brain_standby()
    if how == "resigns":
        e.advertisement(HIGHER, 0, Role.ACTIVE, T0 + 2.05)
    elif how == "gone":
        e.unreachable(HIGHER, T0 + 2.05)
    assert e.handle_timer(T0 + 2.5) == [] and e.role is Role.STANDBY
    assert e.next_timer() == pytest.approx(w_deadline, abs=1e-5)
    assert [t.new for t in e.handle_timer(w_deadline)] == [Role.ACTIVE]


def test_a_member_reported_gone_stays_left_out_until_it_advertises_again():
    """A split brain: A (10 s) and D (1 s) active, D heard last. ICMP says D's process is gone: D is left
    out, and A, alive, is waited for. D's own advertisement (as standby: it restarted) takes the report
    back, so the takeover at A's deadline is a plain master-down, not D's loss."""
    e = standby(priority=100, interval=1.0, preempt=False)
    e.advertisement(HIGHER, 200, Role.ACTIVE, T0, interval=10.0)
    e.advertisement(LOWER, 150, Role.ACTIVE, T0, interval=1.0)
    e.unreachable(LOWER, T0 + 0.5)  # D advertised last: it is the active member the report may name
    e.advertisement(HIGHER, 200, Role.ACTIVE, T0 + 1, interval=10.0)  # A lives; D's report stands
    assert e.next_timer() == pytest.approx(T0 + 1 + mdi(100, 10.0), abs=1e-5), "A, alive, is waited for"
    e.advertisement(LOWER, 150, Role.STANDBY, T0 + 2, interval=1.0)  # D says how it went: report taken back
    assert e.handle_timer(T0 + 1 + mdi(100, 10.0)) == [Transition(Role.STANDBY, Role.ACTIVE, Event.MASTER_DOWN.value,
                                                                   T0 + 1 + mdi(100, 10.0))]


def test_a_resignation_after_a_report_of_port_unreachable_does_not_undo_it():
    e = standby(priority=100, interval=1.0, preempt=False)
    e.advertisement(LOWER, 150, Role.ACTIVE, T0, interval=1.0)
    e.advertisement(HIGHER, 200, Role.ACTIVE, T0, interval=1.0)
    e.unreachable(HIGHER, T0 + 0.5)
    e.advertisement(LOWER, 0, Role.ACTIVE, T0 + 0.6)  # the other active member resigns
    assert e.next_timer() <= T0 + 0.5 + 1.5 + 1e-9, "not put off to the gone member's full deadline"
    [t] = e.handle_timer(e.next_timer())
    assert (t.new, t.reason, t.replaced) == (Role.ACTIVE, Event.ACTIVE_GONE.value, HIGHER)
