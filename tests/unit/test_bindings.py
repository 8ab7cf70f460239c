"""The mobility binding table (RFC 5944 3.8.1, 4.2.3), its timer wheel, driven only by ``now``, and its
per-bucket digests. The merge rules themselves: tests/unit/test_node_state.py."""

from __future__ import annotations

import math

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from homeagent.core.bindings import DIGEST_BUCKETS, Binding, BindingTable, NodeState, Tombstone, node_digest

HOA, HOA2 = 0x0A010005, 0x0A010006
COA, COA2, COA3 = 0xC6336407, 0xC6336408, 0xC6336409
T0 = 1_700_000_000.0


def coas(table, hoa=HOA):
    return {b.care_of_address for b in table.bindings_of(hoa)}


def test_empty_table():
    t = BindingTable()
    assert len(t) == 0 and list(t) == [] and t.bindings_of(HOA) == ()
    assert t.last_identification(HOA) is None and t.next_expiry() is None
    assert t.expire(T0 + 1e9) == []


def test_register_returns_the_binding_and_what_it_replaced():
    t = BindingTable()
    b, removed = t.register(HOA, COA, 600, 10, T0 + 0.5, flags=0x02)
    assert b == Binding(HOA, COA, 600, T0 + 600.5, 10, 0x02)
    assert removed == [] and t.bindings_of(HOA) == (b,) and list(t) == [b]
    b2, removed = t.register(HOA, COA2, 300, 11, T0 + 1)
    assert removed == [b] and t.bindings_of(HOA) == (b2,)
    assert b2.remaining(T0 + 101) == 200 and b2.remaining(T0 + 10_000) == 0
    d = b2.as_dict(T0 + 101)
    assert d["home_address"] == "10.1.0.5" and d["care_of_address"] == "198.51.100.8" and d["remaining"] == 200


def test_bind_leaves_what_register_leaves_and_returns_what_it_replaced():
    # The registrar's bind() and register() must not differ but in what they return: states, digests,
    # the change stream and the wheel, for the usual path and the general one (S, an older Identification).
    steps = [(HOA, COA, 600, 10, 0x02, False), (HOA, COA, 600, 11, 0x02, False), (HOA, COA2, 300, 12, 0, False),
             (HOA, COA3, 300, 13, 0x80, True), (HOA, COA, 300, 12, 0, False), (HOA2, COA, 60, 5, 0, False)]
    by_register, by_bind = BindingTable(), BindingTable()
    for i, (hoa, coa, lifetime, ident, flags, s) in enumerate(steps):
        now = T0 + i
        _, replaced = by_register.register(hoa, coa, lifetime, ident, now, flags, s)
        assert list(by_bind.bind(hoa, coa, lifetime, ident, now, flags, s)) == replaced
        assert by_bind.state(hoa) == by_register.state(hoa)
        assert by_bind.changes() == by_register.changes()
    assert by_bind.digests() == by_register.digests() and len(by_bind) == len(by_register)
    assert by_bind.expire(T0 + 1e6) == by_register.expire(T0 + 1e6)


def test_expiry_never_early_at_most_one_second_late():
    t = BindingTable()
    t.register(HOA, COA, 10, 1, T0 + 0.3)  # ends at T0 + 10.3
    assert t.next_expiry() == T0 + 11
    assert t.expire(T0 + 10.29) == []
    assert t.expire(T0 + 10.999) == []  # wheel granularity: the second after the end
    [gone] = t.expire(T0 + 11)
    assert gone.care_of_address == COA and gone.expires == T0 + 10.3
    assert len(t) == 0 and t.bindings_of(HOA) == ()


def test_expiry_on_a_whole_second_is_exact():
    t = BindingTable()
    t.register(HOA, COA, 10, 1, T0)
    assert t.expire(T0 + 9.999) == []
    assert len(t.expire(T0 + 10)) == 1


@pytest.mark.parametrize("start", [T0, T0 + 0.001, T0 + 0.5, T0 + 0.999])
@pytest.mark.parametrize("lifetime", [1, 2, 59, 1800, 65534])
def test_expiry_window(start, lifetime):
    t = BindingTable()
    t.register(HOA, COA, lifetime, 1, start)
    end = start + lifetime
    assert t.expire(math.nextafter(end, 0)) == []
    assert len(t.expire(end + 1)) == 1  # at most one second late


def test_renewal_moves_expiry_and_the_stale_wheel_entry_is_ignored():
    t = BindingTable()
    t.register(HOA, COA, 10, 1, T0)
    renewed, removed = t.register(HOA, COA, 100, 2, T0 + 5)
    assert [r.identification for r in removed] == [1]
    assert t.next_expiry() == T0 + 10  # the stale entry is still on the wheel ...
    assert t.expire(T0 + 10) == []  # ... and finds nothing due
    assert t.bindings_of(HOA) == (renewed,)
    assert t.next_expiry() == T0 + 105
    assert t.expire(T0 + 105) == [renewed]


def test_renewal_to_a_shorter_lifetime():
    t = BindingTable()
    t.register(HOA, COA, 100, 1, T0)
    t.register(HOA, COA, 10, 2, T0)
    assert t.next_expiry() == T0 + 10
    assert len(t.expire(T0 + 10)) == 1
    assert t.expire(T0 + 100) == [] and len(t) == 0


def test_simultaneous_bindings_expire_independently():
    t = BindingTable()
    a, _ = t.register(HOA, COA, 10, 1, T0, simultaneous=True)
    b, _ = t.register(HOA, COA2, 20, 2, T0, simultaneous=True)
    c, _ = t.register(HOA, COA3, 30, 3, T0, simultaneous=True)
    other, _ = t.register(HOA2, COA, 20, 1, T0)
    assert len(t) == 4
    assert t.expire(T0 + 10) == [a]
    assert coas(t) == {COA2, COA3} and len(t) == 3
    assert sorted(t.expire(T0 + 20), key=lambda x: x.home_address) == [b, other]
    assert coas(t) == {COA3} and t.bindings_of(HOA2) == ()
    assert t.expire(T0 + 30) == [c]
    assert len(t) == 0


def test_simultaneous_renewal_of_one_keeps_the_others():
    t = BindingTable()
    a, _ = t.register(HOA, COA, 10, 1, T0, simultaneous=True)
    b, _ = t.register(HOA, COA2, 10, 2, T0, simultaneous=True)
    a2, removed = t.register(HOA, COA, 50, 3, T0 + 5, simultaneous=True)
    assert removed == [a] and set(t.bindings_of(HOA)) == {b, a2} and len(t) == 2
    assert t.expire(T0 + 10) == [b]
    assert t.bindings_of(HOA) == (a2,)


def test_without_simultaneous_every_other_binding_is_replaced():
    t = BindingTable()
    a, _ = t.register(HOA, COA, 10, 1, T0, simultaneous=True)
    b, _ = t.register(HOA, COA2, 10, 2, T0, simultaneous=True)
    c, removed = t.register(HOA, COA3, 10, 3, T0)
    assert sorted(removed) == sorted([a, b]) and t.bindings_of(HOA) == (c,) and len(t) == 1


def test_next_expiry_is_the_earliest_bucket():
    t = BindingTable()
    t.register(HOA, COA, 50, 1, T0 + 0.5)
    t.register(HOA2, COA, 20, 1, T0 + 0.5)
    assert t.next_expiry() == T0 + 21
    t.expire(T0 + 21)
    assert t.next_expiry() == T0 + 51
    t.expire(T0 + 51)
    assert t.next_expiry() is None


def test_deregister_one_and_all():
    t = BindingTable()
    a, _ = t.register(HOA, COA, 10, 1, T0, simultaneous=True)
    b, _ = t.register(HOA, COA2, 10, 2, T0, simultaneous=True)
    c, _ = t.register(HOA, COA3, 10, 3, T0, simultaneous=True)
    assert t.deregister(HOA, COA2, 4, T0) == [b]
    assert coas(t) == {COA, COA3} and len(t) == 2
    assert t.deregister(HOA, COA2, 5, T0) == []
    with pytest.raises(ValueError):
        t.deregister(HOA, COA3, 6)  # one address: its tombstone needs the time
    assert sorted(t.deregister(HOA, None, 6)) == sorted([a, c])
    assert len(t) == 0 and t.bindings_of(HOA) == ()
    assert t.expire(T0 + 100) == []  # their wheel entries are stale now


def test_last_identification_outlives_deregistration_and_expiry():
    t = BindingTable()
    t.register(HOA, COA, 10, 100, T0)
    assert t.last_identification(HOA) == 100
    t.deregister(HOA, None, 200)
    assert t.last_identification(HOA) == 200 and len(t) == 0
    t.register(HOA, COA, 10, 300, T0)
    t.expire(T0 + 10)
    assert t.last_identification(HOA) == 300 and len(t) == 0
    assert t.last_identification(HOA2) is None
    # A deregistration of a node that never registered still records its Identification.
    t.deregister(HOA2, COA, 7, T0)
    assert t.last_identification(HOA2) == 7 and len(t) == 0


def test_last_identification_survives_another_bindings_expiry():
    t = BindingTable()
    t.register(HOA, COA, 5, 1, T0, simultaneous=True)
    t.register(HOA, COA2, 600, 2, T0, simultaneous=True)
    t.register(HOA, COA3, 600, 3, T0, simultaneous=True)
    t.deregister(HOA, COA3, 4, T0)
    t.expire(T0 + 5)
    assert coas(t) == {COA2}
    assert t.last_identification(HOA) == 4


def test_last_identification_never_goes_down_and_an_older_operation_is_merged_as_one():
    t = BindingTable()
    t.deregister(HOA, None, 50)
    # The registrar refuses it; were it accepted, it would count as the operations' order says: older than
    # the de-registration of all, so it makes no binding.
    t.register(HOA, COA, 10, 40, T0)
    assert t.last_identification(HOA) == 50 and len(t) == 0


def test_a_million_seconds_of_wheel():
    t = BindingTable()
    for i in range(200):
        t.register(0x0A000000 + i, COA, 1 + i % 37, i, T0 + i * 0.37)
    assert len(t) == 200
    total = 0
    now = T0
    while len(t):
        now += 1
        for b in t.expire(now):
            assert b.expires <= now < b.expires + 1
            total += 1
    assert total == 200 and t.next_expiry() is None


# -- merge: a replica takes a member's state -----------------------------------------------------------


def test_merge_takes_newer_state_and_ignores_older_or_equal():
    t = BindingTable()
    mine, _ = t.register(HOA, COA, 100, 10, T0)
    update = Binding(HOA, COA2, 50, T0 + 50, 20, 0x02, 0xC0000201)
    assert t.merge(HOA, NodeState(20, 20, (update,))) == ([mine], [update])
    assert t.bindings_of(HOA) == (update,) and t.last_identification(HOA) == 20 and len(t) == 1
    stale = Binding(HOA, COA3, 500, T0 + 500, 15)
    assert t.merge(HOA, NodeState(15, 15, (stale,))) is None
    shorter = Binding(HOA, COA3, 40, T0 + 40, 20)
    assert t.merge(HOA, NodeState(20, 20, (shorter,))) is None  # equal, and ending sooner: no news
    assert t.merge(HOA, NodeState(20, 20, (update._replace(expires=T0 + 50.2),))) is None  # transit time
    assert t.bindings_of(HOA) == (update,)
    # The merged binding expires on the wheel like any other; the replaced one's entry is stale.
    assert t.expire(T0 + 100) == [update] and len(t) == 0


OLDER = Binding(HOA, COA2, 25, T0 + 40, 15)  # outlasts the binding the request made, the same in both states


@pytest.mark.parametrize(("first", "again"), [
    # A retransmission accepted again after a failover: one Identification, two states. Every member keeps
    # the one that lasts longer, whichever it heard first.
    (NodeState(20, 20, (Binding(HOA, COA, 600, T0 + 600, 20),)),
     NodeState(20, 20, (Binding(HOA, COA, 600, T0 + 602, 20),))),
    # Simultaneous bindings: the request's own binding tells the later acceptance, not the state's
    # longest-lived one (simulation seed 967).
    (NodeState(20, 0, (Binding(HOA, COA, 20, T0 + 36, 20), OLDER)),
     NodeState(20, 0, (Binding(HOA, COA, 20, T0 + 37, 20), OLDER))),
], ids=["one binding", "judged by the binding it made"])
def test_one_request_accepted_twice_converges_on_the_later_acceptance(first, again):
    a, b = BindingTable(), BindingTable()
    a.merge(HOA, first)
    assert a.merge(HOA, again) is not None
    b.merge(HOA, again)
    assert b.merge(HOA, first) is None
    assert a.state(HOA) == b.state(HOA) == again
    assert a.digests() == b.digests()


def test_merge_a_deregistration_and_an_already_ended_binding():
    t = BindingTable()
    t.register(HOA, COA, 100, 10, T0)
    assert t.merge(HOA, NodeState(11, 11))[1] == []
    assert len(t) == 0 and t.last_identification(HOA) == 11
    ended = Binding(HOA2, COA, 5, T0 - 1, 3)
    t.merge(HOA2, NodeState(3, 3, (ended,)))
    assert t.expire(T0) == [ended] and len(t) == 0
    assert sorted(t.home_addresses()) == [HOA, HOA2]
    # With now, an ended binding goes at once (a member sends one it has not swept yet with 0 ms left).
    t.merge(HOA2, NodeState(4, 0, (ended._replace(identification=4, care_of_address=COA2),)), T0)
    assert t.bindings_of(HOA2) == () and t.state(HOA2).tombstones == (Tombstone(COA2, 4, T0 - 1 + t.tombstone_lifetime),)


# -- digests ------------------------------------------------------------------------------------------


def recomputed(t: BindingTable) -> list[int]:
    """The bucket digests from scratch, from each node's state."""
    out = [0] * DIGEST_BUCKETS
    for hoa in t.home_addresses():
        out[hoa % DIGEST_BUCKETS] = (out[hoa % DIGEST_BUCKETS] + node_digest(hoa, t.state(hoa))) & 0xFFFFFFFF
    return out


def test_digests_are_256_sums_of_node_digests_and_a_copy():
    t = BindingTable()
    assert t.digests() == [0] * 256 and DIGEST_BUCKETS == 256
    t.register(HOA, COA, 100, 10, T0)
    t.register(HOA + 256, COA, 100, 11, T0)
    d = t.digests()
    assert d == recomputed(t) and d[HOA % 256] != 0 and sum(1 for x in d if x) == 1
    d[HOA % 256] = 0
    assert t.digests() != d  # a copy
    assert sorted(t.home_addresses_in({HOA % 256})) == [HOA, HOA + 256]
    assert t.home_addresses_in({(HOA + 1) % 256}) == [] and t.home_addresses_in(set()) == []


def test_the_same_state_has_the_same_digest_whatever_the_clocks():
    a, b = BindingTable(), BindingTable()
    a.register(HOA, COA, 100, 10, T0, 0x02, home_agent=0xC0000201)
    b.register(HOA, COA, 100, 10, T0 + 1234.5, 0x02, home_agent=0xC0000201)
    assert a.digests() == b.digests()
    b.register(HOA, COA, 100, 10, T0, 0x02, home_agent=0xC0000202)  # another home agent: another state
    assert a.digests() != b.digests()


def test_every_change_keeps_the_digests_up_to_date():
    t = BindingTable(tombstone_lifetime=30)
    t.register(HOA, COA, 10, 1, T0)
    t.register(HOA, COA2, 20, 2, T0, simultaneous=True)
    t.deregister(HOA, COA, 3, T0)
    t.register(HOA2, COA, 10, 1, T0)
    assert t.digests() == recomputed(t)
    t.merge(HOA2, NodeState(5, 4, (Binding(HOA2, COA3, 5, T0 + 5, 5),), (Tombstone(COA2, 4, T0 + 9),)))
    assert t.digests() == recomputed(t)
    for now in (T0 + 5, T0 + 10, T0 + 20, T0 + 40, T0 + 60):
        t.expire(now)
        assert t.digests() == recomputed(t), now
    assert len(t) == 0


def test_a_new_node_merged_in_the_usual_state_is_held_as_the_long_way_holds_it():
    """``merge`` takes a node it does not know, in the usual state (one binding, which cleared, no
    tombstone: most of a download or a store), by a short way: the state, the digests, the count, the
    wheel and the change stream are those of the long way (a node it knows already)."""
    usual = NodeState(9, 7, (Binding(HOA, COA, 100, T0 + 100, 7, 0x02, 0xC0000201),))
    short, long = BindingTable(), BindingTable()
    long.register(HOA, COA2, 50, 1, T0)  # known: the long way; then its state is what the short way's is
    long.changes()
    assert short.merge(HOA, usual, T0) == ([], list(usual.bindings))
    long.merge(HOA, usual, T0)
    assert short.state(HOA) == long.state(HOA) == usual
    assert short.digests() == long.digests() == recomputed(short)
    assert len(short) == len(long) == 1 and short.next_expiry() == math.ceil(T0 + 100)
    assert [c.tunnels for c in short.changes()] == [c.tunnels for c in long.changes()]
    ended = NodeState(9, 7, (Binding(HOA2, COA, 100, T0 - 1, 7),))  # ended by now: not held as a binding
    short.merge(HOA2, ended, T0)
    assert short.bindings_of(HOA2) == () and short.last_identification(HOA2) == 9
    assert short.digests() == recomputed(short)


# -- a model check ------------------------------------------------------------------------------------

NODES = [HOA, HOA2, 0x0A01FFFE]
CAREOF = [COA, COA2, COA3, 0xCB007101]


class BindingTableMachine(RuleBasedStateMachine):
    """BindingTable against a dict of dicts, under random register / deregister / expire / time steps."""

    def __init__(self):
        super().__init__()
        self.table = BindingTable()
        self.model: dict[int, dict[int, tuple]] = {}  # hoa -> coa -> (lifetime, expires, ident, flags, home agent)
        self.last: dict[int, int] = {}
        self.now = T0
        self.ident = 0

    def _next_ident(self) -> int:
        self.ident += 1
        return self.ident

    @rule(hoa=st.sampled_from(NODES), coa=st.sampled_from(CAREOF), lifetime=st.integers(1, 40),
          simultaneous=st.booleans(), flags=st.integers(0, 255), home_agent=st.sampled_from([0, 0xC0000201]))
    def register(self, hoa, coa, lifetime, simultaneous, flags, home_agent):
        ident = self._next_ident()
        current = self.model.get(hoa, {})
        # A registration also drops the node's bindings whose lifetime has ended but that no expire() swept.
        expected_removed = {c for c, v in current.items() if c == coa or not simultaneous or v[1] <= self.now}
        binding, removed = self.table.register(hoa, coa, lifetime, ident, self.now, flags, simultaneous, home_agent)
        assert binding == Binding(hoa, coa, lifetime, self.now + lifetime, ident, flags, home_agent)
        assert {b.care_of_address for b in removed} == expected_removed
        if not simultaneous:
            current = {}
        current = {c: v for c, v in current.items() if c != coa and v[1] > self.now}
        current[coa] = (lifetime, self.now + lifetime, ident, flags, home_agent)
        self.model[hoa] = current
        self.last[hoa] = ident

    @rule(hoa=st.sampled_from(NODES), coa=st.one_of(st.none(), st.sampled_from(CAREOF)))
    def deregister(self, hoa, coa):
        ident = self._next_ident()
        current = self.model.get(hoa, {})
        gone = set(current) if coa is None else {c for c in current if c == coa}
        removed = self.table.deregister(hoa, coa, ident, self.now)
        assert {b.care_of_address for b in removed} == gone
        self.model[hoa] = {c: v for c, v in current.items() if c not in gone}
        self.last[hoa] = ident

    @rule(seconds=st.one_of(st.integers(0, 30), st.floats(0, 5, allow_nan=False)))
    def advance(self, seconds):
        self.now += seconds

    @rule()
    def expire(self):
        expired = self.table.expire(self.now)
        got = {(b.home_address, b.care_of_address) for b in expired}
        assert len(got) == len(expired)
        # Due on the wheel (the whole second at or after the end has come): must go now.
        must = {(h, c) for h, bs in self.model.items() for c, v in bs.items() if math.ceil(v[1]) <= self.now}
        # Ended, but its second has not come: may go now (a stale wheel entry of the node found it ended).
        may = {(h, c) for h, bs in self.model.items() for c, v in bs.items() if v[1] <= self.now}
        assert must <= got <= may
        for b in expired:
            assert b.expires <= self.now  # never early
            assert b == Binding(b.home_address, b.care_of_address, *self.model[b.home_address][b.care_of_address])
        for h, c in got:
            del self.model[h][c]

    @precondition(lambda self: any(self.model.values()))
    @rule(data=st.data())
    def expire_exactly_at_an_end(self, data):
        # Jump to exactly the whole second a binding is due: it must go then, not later.
        ends = sorted(math.ceil(v[1]) for bs in self.model.values() for v in bs.values())
        target = data.draw(st.sampled_from(ends))
        if target > self.now:
            self.now = float(target)
        self.expire()

    @invariant()
    def same_bindings(self):
        got = {(b.home_address, b.care_of_address): (b.lifetime, b.expires, b.identification, b.flags, b.home_agent)
               for b in self.table}
        want = {(h, c): v for h, bs in self.model.items() for c, v in bs.items()}
        assert got == want
        assert len(self.table) == len(want)
        for h in NODES:
            assert {b.care_of_address for b in self.table.bindings_of(h)} == set(self.model.get(h, {}))
            assert self.table.last_identification(h) == self.last.get(h)

    @invariant()
    def digests_are_kept_up_to_date(self):
        assert self.table.digests() == recomputed(self.table)

    @invariant()
    def next_expiry_is_not_after_any_binding(self):
        ends = [math.ceil(v[1]) for bs in self.model.values() for v in bs.values()]
        nxt = self.table.next_expiry()
        if ends:
            assert nxt is not None and nxt <= min(ends)


TestBindingTableModel = BindingTableMachine.TestCase
TestBindingTableModel.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
