"""The merge rules (core/node_state.py; docs/protocol.md, "Merging after a partition") against the sequential
model: members that each apply some of a node's operations, and exchange their states in any order, any
number of times, through the wire's encoding, end with what applying every operation in Identification order
gives; and with the same record, so the same digest.

The sequential model is a dict, care-of address -> Identification of the registration that made its binding:
  register C at X without S: {C: X};  with S: [C] = X;  de-register C: pop C;  de-register all: {}.
"""

from __future__ import annotations

import itertools
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from homeagent.core.bindings import BindingTable, node_digest
from homeagent.core.node_state import (
    EMPTY,
    MAX_RECORDS,
    Binding,
    NodeState,
    Tombstone,
    deregistered,
    expired,
    fitted,
    merged,
    records,
    registered,
)
from homeagent.core.transfer import node_state, state_of
from homeagent.wire.redundancy import BindingTableReply, encode_node, parse_body

HOA = 0x0A010005
A, B, C = 0xC6336401, 0xC6336402, 0xC6336403
T0 = 1_700_000_000.0
KEEP = 100.0  # seconds a tombstone is kept, in these tests


def ident(n: int) -> int:
    """The n-th Identification of the node: NTP seconds of T0, n as the fraction (they only increase)."""
    return ((int(T0) + 2_208_988_800) << 32) | n


# -- operations, the sequential model, and members ------------------------------------------------------

# An operation: ("register", care-of, simultaneous) | ("deregister", care-of) | ("deregister", None)
Op = tuple


def sequential(ops: list[Op]) -> dict[int, int]:
    """The reference: every operation in Identification order (the order of ``ops``)."""
    model: dict[int, int] = {}
    for n, op in enumerate(ops, start=1):
        if op[0] == "register":
            if not op[2]:
                model = {}
            model[op[1]] = ident(n)
        elif op[1] is None:
            model = {}
        else:
            model.pop(op[1], None)
    return model


def accept(table: BindingTable, n: int, op: Op, now: float = T0) -> None:
    """Operation ``n`` accepted by the member holding ``table``, as the registrar makes it."""
    if op[0] == "register":
        table.register(HOA, op[1], 600, ident(n), now, flags=0x80 if op[2] else 0, simultaneous=op[2])
    else:
        table.deregister(HOA, op[1], ident(n), now)


def send(sender: BindingTable, receiver: BindingTable, now: float = T0) -> None:
    """The sender's state of the node to the receiver, through the wire (as a Binding Table Reply)."""
    node = node_state(sender, HOA, now)
    if node is None:
        return
    [arrived] = parse_body(BindingTableReply(0, False, 0, 1, (node,)).body()).nodes
    receiver.merge(HOA, state_of(arrived, now), now)


def held(table: BindingTable) -> dict[int, int]:
    return {b.care_of_address: b.identification for b in table.bindings_of(HOA)}


def table() -> BindingTable:
    return BindingTable(tombstone_lifetime=KEEP)


# -- issue 10 point 5, and the orders that matter -------------------------------------------------------


def test_a_replaced_binding_does_not_come_back_after_a_partition_heals():
    """Register A at member 1; cut {1, 2} | {3}; register B at member 1 (replaces A); de-register B at member
    3, which holds only A; heal. Before the merge rules all three ended with A; the answer is no binding."""
    m1, m2, m3 = table(), table(), table()
    accept(m1, 1, ("register", A, False))
    send(m1, m2)
    send(m1, m3)
    accept(m1, 2, ("register", B, False))
    send(m1, m2)
    accept(m3, 3, ("deregister", B))
    assert held(m3) == {A: ident(1)}  # member 3 holds A: the de-registration of B removes nothing there
    for sender, receiver in itertools.permutations((m1, m2, m3), 2):
        send(sender, receiver)
    assert sequential([("register", A, False), ("register", B, False), ("deregister", B)]) == {}
    for m in (m1, m2, m3):
        assert held(m) == {} and m.last_identification(HOA) == ident(3)
    assert m1.digests() == m2.digests() == m3.digests()


SCRIPTS = {
    # side 0's operations | side 1's, after a common start; the Identifications follow the listed order.
    "re-register on one side, de-register the old address on the other": (
        [("register", A, False)], [(0, ("register", B, False)), (1, ("deregister", A))]),
    "de-register all on the stale side": (
        [("register", A, False)], [(0, ("register", B, False)), (1, ("deregister", None))]),
    "de-register all, then register again on the other side": (
        [("register", A, False)], [(0, ("deregister", None)), (1, ("register", B, True))]),
    "simultaneous registrations on both sides": (
        [("register", A, False)], [(0, ("register", B, True)), (1, ("register", C, True))]),
    "simultaneous on one side, without S later on the other": (
        [("register", A, False)], [(0, ("register", B, True)), (1, ("register", C, False))]),
    "without S on one side, simultaneous later on the other": (
        [("register", A, False)], [(0, ("register", C, False)), (1, ("register", B, True))]),
    "de-register one simultaneous binding where it is not held": (
        [("register", A, True)], [(0, ("register", B, True)), (1, ("deregister", B))]),
    "re-register an address after its de-registration on the other side": (
        [("register", A, True), ("register", B, True)], [(0, ("deregister", B)), (1, ("register", B, True))]),
    "register again an address de-registered on the other side, older": (
        [("register", A, True)], [(1, ("register", B, True)), (0, ("deregister", B))]),
}


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_order_of_operations_on_either_side_of_a_partition(name):
    common, split = SCRIPTS[name]
    sides = [table(), table()]
    ops: list[Op] = []
    for op in common:
        ops.append(op)
        accept(sides[0], len(ops), op)
    send(sides[0], sides[1])
    for side, op in split:
        ops.append(op)
        accept(sides[side], len(ops), op)
    send(sides[0], sides[1])
    send(sides[1], sides[0])
    want = sequential(ops)
    assert held(sides[0]) == held(sides[1]) == want
    assert sides[0].digests() == sides[1].digests()


# -- the property: any split, any exchanges, any merge order ---------------------------------------------

operations = st.one_of(
    st.tuples(st.just("register"), st.sampled_from([A, B, C]), st.booleans()),
    st.tuples(st.just("deregister"), st.sampled_from([A, B, C, None])),
)
# An event: an operation accepted by member ``side``, or member ``a`` sending its state to member ``b``.
events = st.lists(
    st.one_of(st.tuples(st.just("op"), st.integers(0, 2), operations),
              st.tuples(st.just("send"), st.integers(0, 2), st.integers(0, 2))),
    max_size=24,
)


@settings(max_examples=400, deadline=None)
@given(events, st.sampled_from([2, 3]))
def test_members_converge_on_the_sequential_application_in_any_merge_order(script, members):
    ops: list[Op] = []
    finals = []
    sides = [table() for _ in range(members)]
    for event in script:
        if event[0] == "op":
            ops.append(event[2])
            accept(sides[event[1] % members], len(ops), event[2])
        elif event[1] % members != event[2] % members:
            send(sides[event[1] % members], sides[event[2] % members])
    want = sequential(ops)
    states = [s.state(HOA) for s in sides]
    for order in itertools.permutations(range(members)):
        # Merge every member's state into a fresh copy of the first's, in this order, through the wire.
        copies = [table() for _ in range(members)]
        for copy, side in zip(copies, sides):
            send(side, copy)
        for i, j in zip(order, order[1:]):
            send(copies[i], copies[j])
        last = copies[order[-1]]
        finals.append(last)
        assert held(last) == want, (order, ops)
    if ops:
        assert all(f.state(HOA) == finals[0].state(HOA) for f in finals)
        assert all(f.digests() == finals[0].digests() for f in finals)
        assert finals[0].last_identification(HOA) == ident(len(ops))
    # And the plain merge of states is commutative and idempotent.
    present = [s for s in states if s is not None]
    for x, y in itertools.product(present, repeat=2):
        assert merged(x, y) == merged(y, x)
        assert merged(x, x) == x


# -- lattice laws of the pure functions ------------------------------------------------------------------


def history_state(ops: list[Op], taken: list[bool], expiry: list[float]) -> NodeState:
    """A member's state after accepting the operations of one history it is given (``taken``)."""
    state = EMPTY
    for n, (op, take, extra) in enumerate(zip(ops, taken, expiry), start=1):
        if not take:
            continue
        if op[0] == "register":
            binding = Binding(HOA, op[1], 600, T0 + 600 + extra, ident(n), 0, 0)
            state = registered(state, binding, op[2], T0, KEEP)
        else:
            state = deregistered(state, op[1], ident(n), T0, KEEP)
    return state


@st.composite
def three_members(draw):
    """Three members' states of one history: every Identification names one operation, which each member
    may or may not have accepted (a request accepted twice: with expiries a second apart)."""
    ops = draw(st.lists(operations, max_size=10))
    expiry = draw(st.lists(st.sampled_from([0.0, 1.0]), min_size=len(ops), max_size=len(ops)))
    return [history_state(ops, draw(st.lists(st.booleans(), min_size=len(ops), max_size=len(ops))),
                          [e * k for e in expiry]) for k in range(3)]


@settings(max_examples=300, deadline=None)
@given(three_members())
def test_merged_is_a_join(members):
    """Over the states of one history (two operations never share an Identification)."""
    x, y, z = members
    assert merged(x, x) == x
    assert merged(x, y) == merged(y, x)
    assert merged(merged(x, y), z) == merged(x, merged(y, z))
    assert merged(merged(x, y), y) == merged(x, y)
    assert node_digest(HOA, merged(x, y)) == node_digest(HOA, merged(y, x))


# -- time: expiry leaves tombstones where needed, and tombstones are forgotten -----------------------------


def test_an_expired_simultaneous_binding_leaves_a_tombstone_so_an_older_one_does_not_come_back():
    m1, m3 = table(), table()
    m1.register(HOA, A, 1000, ident(1), T0, 0x80, simultaneous=True)  # A, long
    send(m1, m3)
    m1.register(HOA, A, 10, ident(2), T0, 0x80, simultaneous=True)  # A renewed, short: m3 never hears it
    [gone] = m1.expire(T0 + 10)
    assert gone.identification == ident(2)
    assert m1.state(HOA).tombstones == (Tombstone(A, ident(2), T0 + 10 + KEEP),)
    send(m3, m1, T0 + 20)  # the partition heals: m3 still holds A from Identification 1, 980 s left
    send(m1, m3, T0 + 20)
    assert held(m1) == held(m3) == {}  # sequentially: A@2 replaced A@1, then ended


def test_the_binding_that_cleared_leaves_no_tombstone_when_it_expires():
    t = table()
    t.register(HOA, A, 10, ident(1), T0)
    t.expire(T0 + 10)
    assert t.state(HOA) == NodeState(ident(1), ident(1))
    assert HOA not in t._extra  # the usual node, even with no binding left


def test_a_tombstone_is_forgotten_after_the_tombstone_lifetime_and_no_sooner():
    t = table()
    t.register(HOA, A, 600, ident(1), T0, 0x80, simultaneous=True)
    t.register(HOA, B, 600, ident(2), T0, 0x80, simultaneous=True)
    t.deregister(HOA, A, ident(3), T0 + 5)
    assert t.state(HOA).tombstones == (Tombstone(A, ident(3), T0 + 5 + KEEP),)
    assert t.next_expiry() == T0 + 5 + KEEP  # the first deadline: the tombstone's, before the bindings'
    t.expire(T0 + 5 + KEEP - 0.001)
    assert t.state(HOA).tombstones
    before = t.digests()
    assert t.expire(T0 + 5 + KEEP) == []
    assert t.state(HOA).tombstones == () and held(t) == {B: ident(2)}
    assert t.digests() != before  # forgetting is a change of state, so of the digest


def test_a_tombstone_received_keeps_the_senders_forget_time():
    m1, m2 = table(), BindingTable(tombstone_lifetime=5000)
    m1.deregister(HOA, A, ident(1), T0)
    send(m1, m2, T0 + 30)
    assert m2.state(HOA).tombstones == (Tombstone(A, ident(1), T0 + KEEP),)


# -- bounds -------------------------------------------------------------------------------------------


def test_past_the_bound_the_oldest_tombstones_are_forgotten_first():
    state = NodeState(ident(20), 0, tuple(Binding(HOA, 0xC6330000 + k, 600, T0 + 600, ident(10 + k))
                                          for k in range(4)),
                      tuple(Tombstone(0xCB000000 + k, ident(k), T0 + 100) for k in range(1, 9)))
    assert records(state) == 4 + 8 + 1
    fit, given_up = fitted(state)
    assert records(fit) == MAX_RECORDS and given_up == 3
    assert [t.identification for t in fit.tombstones] == [ident(4), ident(5), ident(6), ident(7), ident(8)]
    assert fit.bindings == state.bindings and fit.cleared == 0


def test_ten_bindings_and_a_cleared_record_raise_cleared_to_the_oldest_of_them():
    bindings = tuple(Binding(HOA, 0xC6330000 + k, 600, T0 + 600, ident(10 + k)) for k in range(11))
    fit, _ = fitted(NodeState(ident(20), ident(1), bindings))
    assert records(fit) == MAX_RECORDS and len(fit.bindings) == 10
    assert fit.cleared == ident(11) and min(b.identification for b in fit.bindings) == ident(11)


def test_the_table_keeps_every_node_within_the_bound_and_counts_what_it_gave_up():
    t = table()
    for k in range(12):
        t.register(HOA, 0xC6330000 + k, 600, ident(2 * k + 1), T0, 0x80, simultaneous=True)
        t.deregister(HOA, 0xC6330000 + k, ident(2 * k + 2), T0)
    assert records(t.state(HOA)) == MAX_RECORDS and t.records_given_up > 0
    encode_node(node_state(t, HOA, T0))  # fits one extension


# -- memory: the usual node stays as small as before -----------------------------------------------------


def test_the_usual_node_is_one_record_of_36_bytes_and_38_on_the_wire():
    t = table()
    t.register(HOA, A, 600, ident(1), T0)
    t.register(HOA, B, 600, ident(2), T0)  # re-registration without S: still the usual node
    assert len(t._records[HOA]) == 8 + 28 and not t._extra
    # the binding's source (its 28th byte) costs nothing: 36 bytes take the allocation 35 took (pymalloc
    # rounds to 16 bytes)
    assert -(-sys.getsizeof(t._records[HOA]) // 16) == -(-sys.getsizeof(bytes(8 + 27)) // 16)
    assert len(encode_node(node_state(t, HOA, T0))) == 38
    t.deregister(HOA, None, ident(3))
    assert len(t._records[HOA]) == 8 and not t._extra
    assert len(encode_node(node_state(t, HOA, T0))) == 14
    t.register(HOA, A, 600, ident(4), T0)
    t.deregister(HOA, A, ident(5), T0)  # one address: a tombstone, and cleared is no longer the default
    assert len(t._extra[HOA]) == 8 + 20
    assert len(encode_node(node_state(t, HOA, T0))) == 14 + 2 * 24


def test_a_registration_without_s_drops_older_tombstones():
    t = table()
    t.register(HOA, A, 600, ident(1), T0, 0x80, simultaneous=True)
    t.deregister(HOA, A, ident(2), T0)
    t.register(HOA, B, 600, ident(3), T0)
    assert t.state(HOA) == NodeState(ident(3), ident(3), t.bindings_of(HOA)) and not t._extra


@pytest.mark.parametrize("now", [T0, T0 + 0.5])
def test_expired_is_what_expire_does(now):
    state = registered(EMPTY, Binding(HOA, A, 10, T0 + 0.2, ident(1)), True, T0, KEEP)
    after, gone = expired(state, now, KEEP)
    assert (gone == [] and after == state) if now < T0 + 0.2 else (after.tombstones == (
        Tombstone(A, ident(1), T0 + 0.2 + KEEP),) and len(gone) == 1)
