"""runtime/persistence.py over an in-memory store: what a turn changed is written before its replies go,
every kind of change is written, a new process (new monotonic base, later wall time) loads each node as it
was with the time it has left, and the rewrite that keeps the file small never loses a node's latest state."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from homeagent.core.bindings import Binding, NodeState, Source
from homeagent.core.home_agent import HomeAgent
from homeagent.runtime import persistence
from homeagent.runtime.persistence import Persistence
from homeagent.runtime.store import MemoryStore, StoreError

from .support import COA, COA2, HOA, SOURCE, T0, ip, make_ha, ntp, only_reply, request, sends, wire_ntp

LATER = 100.0  # the new process's monotonic clock at its start: any base at all


def restarted(store: MemoryStore, wall: float) -> tuple[HomeAgent, Persistence]:
    """A new process at wall time ``wall``: its own monotonic base (LATER), the store loaded."""
    core = make_ha(now=LATER)
    core.clock.offset = wall - LATER
    p = Persistence(store, core)
    p.load(LATER)
    return core, p


def picture(core: HomeAgent, now: float) -> dict[int, tuple]:
    """Every node the table knows, times as wall-clock seconds (to the hundredth), comparable between two
    processes; a binding that has ended by ``now`` but is not swept yet is not shown."""
    wall = core.clock(now)
    out = {}
    for h in core.bindings.home_addresses():
        state = core.bindings.state(h)
        assert state is not None
        out[h] = (state.last, state.cleared,
                  tuple((b.care_of_address, b.lifetime, round(wall + b.remaining(now), 2), b.identification,
                         b.flags, b.home_agent) for b in state.bindings if b.expires > now),
                  tuple((t.care_of_address, t.identification, round(t.forget_at - now + wall, 2))
                        for t in state.tombstones if t.forget_at > now))
    return out


def test_a_turn_is_written_at_its_commit_in_one_transaction():
    """(The daemon holds the turn's replies until this commit: tests/unit/test_reply_release.py.)"""
    core, store = make_ha(), MemoryStore()
    p = Persistence(store, core)
    p.load(T0)
    for n in range(3):
        sends(core.receive_datagram(request(lifetime=600, hoa=HOA + n), SOURCE, "192.0.2.1", T0))
    assert store.rows == {}  # nothing written before the commit
    p.commit(T0)
    assert store.writes == 1 and len(store.rows) == 1, "one transaction, one row for the turn's three nodes"
    p.commit(T0 + 1)
    assert store.writes == 1  # nothing changed: no transaction


def test_a_new_process_serves_each_binding_with_the_time_it_has_left_and_drops_the_ended():
    core, store = make_ha(), MemoryStore()
    p = Persistence(store, core)
    p.load(T0)
    core.receive_datagram(request(lifetime=600, coa=COA), SOURCE, "192.0.2.1", T0)
    core.receive_datagram(request(lifetime=10, hoa=ip("10.1.0.6"), coa=COA2), SOURCE, "192.0.2.1", T0)
    p.commit(T0)
    again, _ = restarted(store, wall=T0 + 20)  # 20 s later by the wall clock
    [binding] = again.bindings.bindings_of(HOA)
    assert binding.remaining(LATER) == pytest.approx(580, abs=0.01)
    assert again.bindings.bindings_of(ip("10.1.0.6")) == ()  # ended while stopped
    assert again.bindings.last_identification(ip("10.1.0.6")) == ntp(T0, 0x1000)  # replay protection stays
    assert (again.counters["store.loaded_nodes"], again.counters["store.loaded_bindings"],
            again.counters["store.expired_at_load"]) == (2, 1, 1)
    assert again.next_timer() == pytest.approx(LATER + 580, abs=1.0)  # the wheel is armed for it
    assert again.bindings.sources_of(HOA) == bytes([Source.STORE])


def test_what_ended_while_stopped_is_written_back_at_the_first_commit_and_not_counted_again():
    """The store's record of a node whose binding ended while no daemon ran is stale once loaded: the first
    commit writes the node as the table now holds it (its last Identification, no binding), so the next
    start neither loads nor counts that binding again (before 2026-12-03 every start logged it as
    "ended while stopped"; an operator walkthrough)."""
    core, store = make_ha(), MemoryStore()
    p = Persistence(store, core)
    p.load(T0)
    core.receive_datagram(request(lifetime=10, hoa=ip("10.1.0.6"), coa=COA2), SOURCE, "192.0.2.1", T0)
    core.receive_datagram(request(lifetime=600, coa=COA), SOURCE, "192.0.2.1", T0)
    p.commit(T0)
    again, p2 = restarted(store, wall=T0 + 20)
    assert again.counters["store.expired_at_load"] == 1
    writes = store.writes
    p2.commit(LATER)  # nothing registered since: only the stale node is written
    assert store.writes == writes + 1
    third, _ = restarted(store, wall=T0 + 30)
    assert (third.counters["store.loaded_nodes"], third.counters["store.loaded_bindings"],
            third.counters["store.expired_at_load"]) == (2, 1, 0)
    assert third.bindings.last_identification(ip("10.1.0.6")) == ntp(T0, 0x1000)  # replay protection stays
    assert picture(third, LATER) == picture(again, LATER + 10)


def test_the_store_keeps_identifications_as_the_wire_carries_them():
    """Identifications are counted from 2000 in the table (wire/era.py) but stored as NTP timestamps, as
    before that choice: a store written by an earlier release loads the same. The usual node's record,
    packed here by hand (core/persisted.py's layout): home address, last, cleared, 1 binding, 0 tombstones,
    then care-of, lifetime, expires (wall), Identification, flags, home agent."""
    import struct

    core, store = make_ha(), MemoryStore()
    p = Persistence(store, core)
    p.load(T0)
    core.receive_datagram(request(lifetime=600, coa=COA, ident=ntp(T0, 0x1234)), SOURCE, "192.0.2.1", T0)
    p.commit(T0)
    stamp = wire_ntp(ntp(T0, 0x1234))  # the request's NTP timestamp, as it was sent
    [chunk] = list(store.rows.values())
    assert struct.unpack_from("!IQQBBIHdQBI", chunk)[:2] == (HOA, stamp)
    assert struct.unpack_from("!IQQBBIHdQBI", chunk)[8] == stamp
    older = struct.pack("!IQQBBIHdQBI", ip("10.1.0.9"), stamp, stamp, 1, 0, COA2, 600, T0 + 600, stamp, 0,
                        ip("192.0.2.1"))
    store.rows[max(store.rows) + 1] = older  # as an earlier release wrote it
    again, _ = restarted(store, wall=T0 + 1)
    assert again.bindings.last_identification(ip("10.1.0.9")) == ntp(T0, 0x1234)
    [binding] = again.bindings.bindings_of(ip("10.1.0.9"))
    assert (binding.care_of_address, binding.identification) == (COA2, ntp(T0, 0x1234))


def test_an_old_request_is_refused_133_after_a_restart_and_accepted_without_the_store():
    core, store = make_ha(), MemoryStore()
    p = Persistence(store, core)
    p.load(T0)
    old = request(ident=ntp(T0, 0x1000))
    core.receive_datagram(old, SOURCE, "192.0.2.1", T0)
    core.receive_datagram(request(ident=ntp(T0, 0x2000), coa=COA2), SOURCE, "192.0.2.1", T0)
    p.commit(T0)
    again, _ = restarted(store, wall=T0 + 1)
    assert only_reply(again.receive_datagram(old, SOURCE, "192.0.2.1", LATER)).code == 133
    amnesiac = make_ha(now=LATER)  # the same restart without a store: the replay is accepted
    amnesiac.clock.offset = T0 + 1 - LATER
    assert only_reply(amnesiac.receive_datagram(old, SOURCE, "192.0.2.1", LATER)).code == 0


def test_every_kind_of_change_is_written():
    core, store = make_ha(), MemoryStore()
    p = Persistence(store, core)
    p.load(T0)
    now = T0
    steps = [
        lambda: core.receive_datagram(request(lifetime=30, coa=COA), SOURCE, "192.0.2.1", now),  # registered
        lambda: core.receive_datagram(request(lifetime=300, coa=COA, ident=ntp(now, 0x3000)), SOURCE,
                                      "192.0.2.1", now),  # renewal: only the expiry moves
        lambda: core.receive_datagram(request(lifetime=0, coa=HOA, ident=ntp(now, 0x4000)), SOURCE,
                                      "192.0.2.1", now),  # de-registration
        lambda: core.bindings.merge(ip("10.1.0.9"), NodeState(7, 7, (  # a member's Binding Update
            Binding(ip("10.1.0.9"), COA2, 5, now + 5, 7),)), now, Source.UPDATE),
        lambda: core.handle_timer(now + 6),  # the expiry of that one
        lambda: core.receive_datagram(request(lifetime=600, coa=COA2, ident=ntp(now, 0x5000)), SOURCE,
                                      "192.0.2.1", now),
        lambda: core.remove(HOA, None, now + 7),  # an operator's removal
    ]
    for step in steps:
        step()
        p.commit(now + 7)
        again, _ = restarted(MemoryStore(store.rows), wall=now + 7)
        assert picture(again, LATER) == picture(core, now + 7)


def test_a_failed_write_is_counted_its_nodes_go_with_the_next_and_the_replies_still_leave():
    core, store = make_ha(), MemoryStore()
    p = Persistence(store, core)
    p.load(T0)
    sends(core.receive_datagram(request(), SOURCE, "192.0.2.1", T0))
    store.fail = True
    p.commit(T0)  # no exception: the daemon sends the turn's replies all the same
    assert core.counters["store.write_failed"] == 1 and store.rows == {}
    store.fail = False
    p.commit(T0 + 1)
    assert picture(restarted(store, T0 + 1)[0], LATER) == picture(core, T0 + 1)


def test_a_record_no_encoder_of_ours_wrote_refuses_the_load():
    core = make_ha()
    with pytest.raises(StoreError, match="corrupt"):
        Persistence(MemoryStore({1: b"\x0a\x01\x00\x05" + b"\x00" * 10}), core).load(T0)


def test_nodes_outside_the_home_network_now_are_left_out():
    core, store = make_ha(), MemoryStore()
    p = Persistence(store, core)
    p.load(T0)
    core.bindings.register(ip("10.9.0.1"), COA, 600, 5, T0)  # (served by an earlier configuration)
    core.bindings.register(HOA, COA, 600, 6, T0)
    p.commit(T0)
    again, _ = restarted(store, T0)
    assert again.bindings.home_addresses() == [HOA] and again.counters["store.not_served"] == 1


# -- the rewrite ---------------------------------------------------------------------------------------

HOMES = [ip("10.1.0.1") + i for i in range(12)]
OPERATION = st.one_of(
    st.tuples(st.just("register"), st.sampled_from(HOMES), st.sampled_from([COA, COA2]), st.integers(1, 40),
              st.booleans()),
    st.tuples(st.just("deregister"), st.sampled_from(HOMES), st.sampled_from([COA, COA2, None])),
    st.tuples(st.just("tick"), st.integers(1, 15)),
    st.tuples(st.just("commit")),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(OPERATION, max_size=80))
def test_the_rewrite_keeps_the_latest_state_of_every_node(monkeypatch, operations):
    """Whatever the operations and wherever the turns end, the store read by a new process gives the table
    as it was; with a tiny step and no slack, rewrites start, run across turns and finish meanwhile."""
    monkeypatch.setattr(persistence, "WALK_STEP", 3)
    monkeypatch.setattr(persistence, "WALK_MIN", 1)
    monkeypatch.setattr(persistence, "COMPACT_SLACK", 0)
    core, store = make_ha(), MemoryStore()
    p = Persistence(store, core)
    p.load(T0)
    now, ident = T0, 1 << 40
    for op in operations:
        ident += 1
        if op[0] == "register":
            _, home, coa, lifetime, simultaneous = op
            core.bindings.register(home, coa, lifetime, ident, now, 0x80 if simultaneous else 0, simultaneous)
        elif op[0] == "deregister":
            core.bindings.deregister(op[1], op[2], ident, now)
        elif op[0] == "tick":
            now += op[1]
            core.handle_timer(now)
        else:
            p.commit(now)
    p.commit(now)
    assert picture(restarted(MemoryStore(store.rows), core.clock(now))[0], LATER) == picture(core, now)


def records_in(store: MemoryStore) -> int:
    from homeagent.core.persisted import records

    return sum(1 for chunk in store.rows.values() for _ in records(chunk))


def test_renewals_do_not_grow_the_file_past_twice_the_nodes(monkeypatch):
    monkeypatch.setattr(persistence, "COMPACT_SLACK", 0)
    monkeypatch.setattr(persistence, "WALK_STEP", 4)
    monkeypatch.setattr(persistence, "WALK_MIN", 1)
    core, store = make_ha(), MemoryStore()
    p = Persistence(store, core)
    p.load(T0)
    homes = HOMES[:10]
    for i in range(1000):  # 10,000 records written: without the rewrite, 10,000 in the file
        for home in homes:
            core.bindings.register(home, COA, 600, (1 << 40) + i, T0 + i)
        p.commit(T0 + i)
        # a rewrite writes the N nodes and the C changes of each of its ceil(N / WALK_STEP) turns; the
        # next starts once the file is past twice the nodes and the last one's leftovers are forgotten, so
        # at most 2 (N + C ceil(N / WALK_STEP)) + 2 C; every node changes at every turn here
        assert records_in(store) <= 2 * (10 + 10 * 3) + 2 * 10
    assert core.counters["store.rewrites"] > 100
    assert picture(restarted(MemoryStore(store.rows), T0 + 999)[0], LATER) == picture(core, T0 + 999)
