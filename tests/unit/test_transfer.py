"""Moving a whole binding table between members (core/transfer.py; FIG 4, 5 and 13, docs/protocol.md).

A table of 10,000 mobile nodes (single bindings, up to ten simultaneous bindings, nodes that only have a
last Identification left, and nodes with a tombstone and a cleared that is not the default) goes from an OutgoingTransfer to an IncomingTransfer through an in-memory network
that loses, delays and reorders datagrams both ways; the receiving table must end equal to the sender's.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from homeagent.core.bindings import BindingTable
from homeagent.core.transfer import (
    IDLE_LIMIT,
    MAX_TRIES,
    RETRANSMIT_AFTER,
    BURST,
    WINDOW,
    IncomingTransfer,
    OutgoingTransfer,
    node_state,
    state_of,
)
from homeagent.wire.redundancy import (
    AUTH_HEAD_SIZE,
    BindingRecord,
    BindingTableReply,
    MobileNodeBindings,
    TombstoneRecord,
    encoded_node_size,
    parse_body,
    reply_capacity,
)

NTP_EPOCH_OFFSET = 2_208_988_800
T0 = 1_700_000_000.0
MEMBER = 0xC0000202
REQUEST = ((int(T0) + NTP_EPOCH_OFFSET) << 32) | 0x1234
BASE_HOA = 0x0A010000  # 10.1.0.0
VIRTUAL = 0xC0000264
S_FLAG, T_FLAG = 0x80, 0x02


def ntp(now: float, fraction: int = 0) -> int:
    return ((int(now) + NTP_EPOCH_OFFSET) << 32) | fraction


def make_table(n: int, now: float, seed: int = 1) -> BindingTable:
    """``n`` mobile nodes: 60 % one binding, 20 % 2 to 10 simultaneous bindings, 10 % only a last
    Identification (de-registered), 10 % one simultaneous binding left beside a tombstone of the other."""
    rng = random.Random(seed)
    table = BindingTable()
    for i in range(n):
        hoa = BASE_HOA + 1 + i
        kind = i % 10
        ident = ntp(now - 500, i)
        if kind < 6:
            table.register(hoa, 0xC6330000 + i, rng.randint(60, 1800), ident, now - rng.uniform(0, 50),
                           rng.choice([0, T_FLAG]), home_agent=VIRTUAL)
        elif kind < 8:
            for k in range(2 + i % 9):
                table.register(hoa, 0xCB000000 + (i << 4) + k, rng.randint(60, 1800), ident + k,
                               now - rng.uniform(0, 50), S_FLAG | rng.choice([0, T_FLAG]), simultaneous=True,
                               home_agent=VIRTUAL)
        elif kind == 8:
            table.register(hoa, 0xC6330000 + i, 600, ident, now - 100, home_agent=VIRTUAL)
            table.deregister(hoa, None, ident + 1)
        else:
            for k in range(2):
                table.register(hoa, 0xCB000000 + (i << 4) + k, 600, ident + k, now - 100, S_FLAG, simultaneous=True,
                               home_agent=VIRTUAL)
            table.deregister(hoa, 0xCB000000 + (i << 4), ident + 2, now - rng.uniform(0, 50))
    return table


def assert_equal_tables(sent: BindingTable, got: BindingTable, now_sent: float, slack: float) -> None:
    """Same nodes, same states (last, cleared, bindings, tombstones), so the same digests; expiries and
    forget times within ``slack`` (+1 ms truncation)."""
    assert sorted(got.home_addresses()) == sorted(sent.home_addresses())
    assert len(got) == len(sent)
    for hoa in sent.home_addresses():
        s, g = sent.state(hoa), got.state(hoa)
        assert (g.last, g.cleared) == (s.last, s.cleared), hex(hoa)
        assert [(b.care_of_address, b.home_agent, b.identification, b.lifetime, b.flags) for b in g.bindings] == [
            (b.care_of_address, b.home_agent, b.identification, b.lifetime, b.flags) for b in s.bindings]
        assert [t[:2] for t in g.tombstones] == [t[:2] for t in s.tombstones]
        for a, b in zip(s.bindings + s.tombstones, g.bindings + g.tombstones):
            assert a[-1] - 0.001 <= b[-1] <= a[-1] + slack + 1e-6, (hex(hoa), a, b)
    assert got.digests() == sent.digests()


@dataclass
class Link:
    """One direction of a lossy, delaying, reordering in-memory network."""

    rng: random.Random
    loss: float
    max_delay: float
    queue: list[tuple[float, int, bytes]] = field(default_factory=list)
    sent: int = 0
    lost: int = 0
    _n: int = 0

    def send(self, data: bytes, now: float) -> None:
        self.sent += 1
        if self.rng.random() < self.loss:
            self.lost += 1
            return
        self._n += 1
        self.queue.append((now + self.rng.uniform(0, self.max_delay), self._n, data))

    def deliver(self, now: float) -> list[bytes]:
        due = [q for q in self.queue if q[0] <= now]
        self.queue = [q for q in self.queue if q[0] > now]
        self.rng.shuffle(due)  # reordered, beyond what the delays already do
        return [d for _, _, d in due]


def same_part(a: BindingTableReply, b: BindingTableReply) -> bool:
    """The same part of the table: header and nodes alike (Remaining Lifetimes may have run down since)."""
    return (a.code, a.more, a.sequence, a.identification) == (b.code, b.more, b.sequence, b.identification) and [
        (n.home_address, n.identification) for n in a.nodes] == [(n.home_address, n.identification) for n in b.nodes]


@dataclass
class Outcome:
    received: BindingTable
    replies: dict[int, BindingTableReply]
    sends: dict[int, list[float]]
    datagram_sizes: list[int]
    max_in_flight: int
    finished_at: float
    outgoing: OutgoingTransfer
    incoming: IncomingTransfer


def transfer(table: BindingTable, now: float, loss: float = 0.0, max_delay: float = 0.0, seed: int = 2,
             max_datagram: int = 1400, digest: int = 16, ack_loss: float | None = None,
             step: float = 0.05, limit: float = 120.0) -> Outcome:
    rng = random.Random(seed)
    forward = Link(rng, loss, max_delay)
    backward = Link(rng, loss if ack_loss is None else ack_loss, max_delay)
    out = OutgoingTransfer.start(MEMBER, REQUEST, table, max_datagram, digest)
    inc = IncomingTransfer(MEMBER, REQUEST)
    received = BindingTable()
    replies: dict[int, BindingTableReply] = {}
    sends: dict[int, list[float]] = {}
    sizes: list[int] = []
    max_in_flight = 0
    t = now

    def emit(batch):
        for sequence, body in batch:
            sends.setdefault(sequence, []).append(t)
            sizes.append(len(body) + AUTH_HEAD_SIZE + digest)  # what goes out, sealed
            forward.send(body, t)

    while not (out.done and inc.done):
        assert t - now < limit, "transfer did not finish"
        emit(fill_window(out, table, t))
        max_in_flight = max(max_in_flight, len(out.in_flight))
        for body in forward.deliver(t):
            reply = parse_body(body)
            assert isinstance(reply, BindingTableReply) and reply.identification == REQUEST
            if reply.sequence in replies:
                assert same_part(replies[reply.sequence], reply)  # a resend is the same part of the table
            replies[reply.sequence] = reply
            if inc.receive(reply, t):
                for node in reply.nodes:
                    received.merge(node.home_address, state_of(node, t), t)
            backward.send(reply.sequence.to_bytes(4, "big"), t)
        for ack in backward.deliver(t):
            out.ack(int.from_bytes(ack, "big"))
        emit(out.overdue(t))
        t += step
    return Outcome(received, replies, sends, sizes, max_in_flight, t, out, inc)


# -- the big one ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big():
    table = make_table(10_000, T0)
    assert len(table.home_addresses()) == 10_000
    return table, transfer(table, T0, loss=0.05, max_delay=0.2, seed=3)


def test_a_10000_node_table_arrives_whole_through_a_lossy_reordering_network(big):
    table, o = big
    assert_equal_tables(table, o.received, T0, slack=o.finished_at - T0)
    assert o.outgoing.nodes_sent == 10_000 and o.incoming.nodes == 10_000
    assert o.outgoing.done and o.incoming.done and not o.outgoing.in_flight


def test_the_big_table_holds_every_kind_of_node(big):
    table, _ = big
    counts = [len(table.bindings_of(h)) for h in table.home_addresses()]
    assert counts.count(0) == 1000 and counts.count(1) == 7000
    assert sum(bool(table.state(h).tombstones) for h in table.home_addresses()) == 1000
    assert max(counts) == 10 and min(c for c in counts if c > 1) == 2


def test_every_datagram_fits_max_datagram_and_replies_are_packed_full(big):
    _, o = big
    assert max(o.datagram_sizes) <= 1400
    ordered = [o.replies[s] for s in sorted(o.replies)]
    capacity = reply_capacity(1400, 16)
    for this, following in zip(ordered, ordered[1:]):
        used = len(this.body()) - 20
        assert used <= capacity
        # As many as fit: the next reply's first node would not have.
        first = following.nodes[0]
        records = len(first.bindings) + len(first.tombstones) + (first.cleared is not None)
        assert used + encoded_node_size(records) > capacity


def test_morebind_on_every_reply_but_the_last(big):
    _, o = big
    last = max(o.replies)
    assert sorted(o.replies) == list(range(last + 1))
    assert [s for s, r in o.replies.items() if not r.more] == [last]
    assert o.incoming.last_sequence == last


def test_the_window_is_never_exceeded(big):
    _, o = big
    assert o.max_in_flight == WINDOW  # it was used, and never more
    assert len(o.replies) > 2 * WINDOW


def test_lost_replies_were_resent_no_sooner_than_retransmit_after(big):
    _, o = big
    resent = {s: times for s, times in o.sends.items() if len(times) > 1}
    assert resent, "with 5 % loss some replies must have been resent"
    for times in resent.values():
        assert len(times) <= MAX_TRIES
        for k, (a, b) in enumerate(zip(times, times[1:]), start=1):
            assert b - a >= RETRANSMIT_AFTER * min(k, 2) - 1e-9  # backoff: 0.5 s, then 1 s each


# -- smaller, exact cases ------------------------------------------------------------------------------


def test_without_loss_or_delay_every_expiry_is_kept_to_the_millisecond():
    table = make_table(500, T0, seed=5)
    o = transfer(table, T0)
    assert_equal_tables(table, o.received, T0, slack=0.0)
    assert all(len(times) == 1 for times in o.sends.values())


@pytest.mark.parametrize(("max_datagram", "digest"), [(576, 16), (576, 32), (1400, 32), (9000, 16), (65000, 32)])
def test_any_max_datagram_and_digest(max_datagram, digest):
    table = make_table(2000, T0, seed=max_datagram)
    o = transfer(table, T0, loss=0.02, max_delay=0.1, max_datagram=max_datagram, digest=digest, seed=digest)
    assert max(o.datagram_sizes) <= max_datagram
    assert_equal_tables(table, o.received, T0, slack=o.finished_at - T0)


def test_an_empty_table_is_one_reply_without_morebind():
    o = transfer(BindingTable(), T0)
    assert list(o.replies) == [0]
    assert o.replies[0] == BindingTableReply(0, False, 0, REQUEST, ())
    assert len(o.received.home_addresses()) == 0


def test_a_node_with_ten_bindings_fits_the_smallest_datagram():
    assert encoded_node_size(10) == 2 + 12 + 240 <= reply_capacity(576, 32)


def test_reordered_lost_and_duplicated_acks_finish_the_transfer():
    table = make_table(3000, T0, seed=9)
    o = transfer(table, T0, loss=0.0, ack_loss=0.3, max_delay=0.3, seed=11)
    assert_equal_tables(table, o.received, T0, slack=o.finished_at - T0)
    assert any(len(times) > 1 for times in o.sends.values())


def fill_window(out: OutgoingTransfer, table, now: float) -> list:
    """Everything the window takes: ``fill`` packs at most ``BURST`` replies a call."""
    sent: list = []
    while batch := out.fill(table, now):
        assert len(batch) <= BURST
        sent += batch
    return sent


def test_retransmission_timing_and_timeout_after_max_tries():
    table = make_table(5000, T0, seed=4)
    out = OutgoingTransfer.start(MEMBER, REQUEST, table, 576, 16)
    first = fill_window(out, table, T0)
    assert len(first) == WINDOW == len(out.in_flight) and not out.finished_sending
    assert out.fill(table, T0) == []  # the window is full
    assert out.overdue(T0 + RETRANSMIT_AFTER - 1e-6) == []
    t = T0
    for tries in range(1, MAX_TRIES):
        t += RETRANSMIT_AFTER * min(tries, 2)
        assert out.overdue(t - 1e-6) == []
        again = out.overdue(t)
        assert [s for s, _ in again] == [s for s, _ in first]  # the same replies, in the same order
        assert all(same_part(parse_body(a), parse_body(b)) for (_, a), (_, b) in zip(again, first))
    with pytest.raises(TimeoutError):
        out.overdue(t + RETRANSMIT_AFTER * MAX_TRIES)
    assert sum(min(k, 2) for k in range(1, MAX_TRIES)) * RETRANSMIT_AFTER == pytest.approx(t - T0)
    assert t - T0 < IDLE_LIMIT  # the receiver waits longer than the sender keeps trying


def test_an_ack_frees_room_in_the_window_and_unknown_acks_are_ignored():
    table = make_table(5000, T0, seed=4)
    out = OutgoingTransfer.start(MEMBER, REQUEST, table, 576, 16)
    first = fill_window(out, table, T0)
    assert out.ack(first[3][0]) and not out.ack(first[3][0]) and not out.ack(10_000)
    [(sequence, _)] = out.fill(table, T0 + 0.1)
    assert sequence == WINDOW
    assert len(out.in_flight) == WINDOW


def test_a_node_changed_after_the_snapshot_travels_as_it_is_when_packed():
    table = make_table(100, T0)
    out = OutgoingTransfer.start(MEMBER, REQUEST, table, 1400, 16)
    hoa = BASE_HOA + 1
    table.register(hoa, 0xC633FFFF, 900, ntp(T0 + 1), T0 + 1)
    # And a node registered after the snapshot is not sent (the requester gets it as a Binding Update).
    table.register(BASE_HOA + 5000, 0xC633FFFE, 900, ntp(T0 + 1), T0 + 1)
    bodies = out.fill(table, T0 + 2)
    nodes = {n.home_address: n for _, b in bodies for n in parse_body(b).nodes}
    assert nodes[hoa].identification == ntp(T0 + 1)
    assert nodes[hoa].bindings == (BindingRecord(0xC633FFFF, 0, ntp(T0 + 1), 900, 0, 899_000),)
    assert BASE_HOA + 5000 not in nodes and len(nodes) == 100


# -- node_state and state_of ---------------------------------------------------------------------------


def test_node_state_carries_remaining_lifetime_in_ms_and_what_has_ended_with_none_left():
    table = BindingTable()
    table.register(BASE_HOA + 1, 0xC6330001, 600, ntp(T0), T0, T_FLAG, home_agent=VIRTUAL)
    table.register(BASE_HOA + 1, 0xC6330002, 10, ntp(T0, 1), T0, S_FLAG, simultaneous=True, home_agent=VIRTUAL)
    assert node_state(table, BASE_HOA + 1, T0 + 0.25) == MobileNodeBindings(BASE_HOA + 1, ntp(T0, 1), (
        BindingRecord(0xC6330001, VIRTUAL, ntp(T0), 600, T_FLAG, 599_750),
        BindingRecord(0xC6330002, VIRTUAL, ntp(T0, 1), 10, S_FLAG, 9_750),
    ))
    # The 10 s one has ended (not yet swept): it goes with 0 ms left, for the receiver's expiry to take as
    # ours will (a tombstone at its Identification: it was a simultaneous binding).
    state = node_state(table, BASE_HOA + 1, T0 + 10.5)
    assert [(r.care_of_address, r.remaining_ms) for r in state.bindings] == [(0xC6330001, 589_500), (0xC6330002, 0)]
    received = BindingTable()
    received.merge(BASE_HOA + 1, state_of(state, T0 + 10.5), T0 + 10.5)
    assert [b.care_of_address for b in received.bindings_of(BASE_HOA + 1)] == [0xC6330001]
    assert received.state(BASE_HOA + 1).tombstones[0][:2] == (0xC6330002, ntp(T0, 1))
    assert node_state(table, BASE_HOA + 2, T0) is None


def test_node_state_carries_tombstones_and_a_cleared_that_is_not_the_default():
    table = BindingTable(tombstone_lifetime=100)
    table.register(BASE_HOA + 1, 0xC6330001, 600, ntp(T0), T0, home_agent=VIRTUAL)
    table.register(BASE_HOA + 1, 0xC6330002, 600, ntp(T0, 1), T0, S_FLAG, simultaneous=True, home_agent=VIRTUAL)
    table.deregister(BASE_HOA + 1, 0xC6330001, ntp(T0, 2), T0 + 1)
    node = node_state(table, BASE_HOA + 1, T0 + 2)
    assert node == MobileNodeBindings(
        BASE_HOA + 1, ntp(T0, 2), (BindingRecord(0xC6330002, VIRTUAL, ntp(T0, 1), 600, S_FLAG, 598_000),),
        (TombstoneRecord(0xC6330001, ntp(T0, 2), 99_000),), cleared=ntp(T0),
    )
    state = state_of(node, T0 + 2)
    assert state == table.state(BASE_HOA + 1)
    # The usual node: cleared is the default, and says nothing.
    table.register(BASE_HOA + 2, 0xC6330001, 600, ntp(T0), T0)
    assert node_state(table, BASE_HOA + 2, T0).cleared is None


def test_state_of_makes_expiry_and_forget_times_from_the_receivers_clock():
    node = MobileNodeBindings(BASE_HOA + 1, ntp(T0, 5), (BindingRecord(0xC6330001, VIRTUAL, ntp(T0), 600, 2, 1500),),
                              (TombstoneRecord(0xC6330002, ntp(T0, 5), 2500),))
    state = state_of(node, T0 + 7)
    [b] = state.bindings
    assert (b.home_address, b.care_of_address, b.lifetime, b.identification, b.flags, b.home_agent) == (
        BASE_HOA + 1, 0xC6330001, 600, ntp(T0), 2, VIRTUAL)
    assert b.expires == T0 + 7 + 1.5
    assert state.tombstones == ((0xC6330002, ntp(T0, 5), T0 + 7 + 2.5),)
    assert (state.last, state.cleared) == (ntp(T0, 5), ntp(T0))  # the default: the oldest binding's
    empty = state_of(MobileNodeBindings(BASE_HOA + 1, ntp(T0)), T0)
    assert empty.bindings == () and empty.cleared == empty.last == ntp(T0)


# -- IncomingTransfer ---------------------------------------------------------------------------------


def reply(sequence: int, more: bool, nodes: int = 1) -> BindingTableReply:
    return BindingTableReply(0, more, sequence, REQUEST,
                             tuple(MobileNodeBindings(BASE_HOA + sequence * 10 + k, ntp(T0)) for k in range(nodes)))


def test_incoming_is_done_only_with_every_part_up_to_the_last():
    inc = IncomingTransfer(MEMBER, REQUEST)
    assert not inc.done
    assert inc.receive(reply(3, False), T0)  # the last first
    assert not inc.done and inc.last_sequence == 3
    assert inc.receive(reply(1, True), T0 + 1)
    assert not inc.receive(reply(1, True), T0 + 2)  # a duplicate: nothing to apply
    assert inc.receive(reply(0, True), T0 + 3)
    assert not inc.done
    assert inc.receive(reply(2, True, nodes=0), T0 + 4)
    assert inc.done and inc.nodes == 3 and inc.last_heard == T0 + 4


def test_incoming_single_reply():
    inc = IncomingTransfer(MEMBER, REQUEST)
    assert inc.receive(reply(0, False, nodes=0), T0) and inc.done


# -- the stale remaining lifetime of a resent reply ------------------------------------------------------


def test_a_resent_reply_still_expires_bindings_with_the_sender():
    table = BindingTable()
    table.register(BASE_HOA + 1, 0xC6330001, 60, ntp(T0), T0, home_agent=VIRTUAL)
    out = OutgoingTransfer.start(MEMBER, REQUEST, table, 1400, 16)
    [(_, lost)] = out.fill(table, T0)  # lost on the way
    t = T0
    for tries in range(1, MAX_TRIES - 1):  # lost four more times
        t += RETRANSMIT_AFTER * min(tries, 2)
        assert len(out.overdue(t)) == 1
    t += RETRANSMIT_AFTER * (MAX_TRIES - 1)
    [(_, body)] = out.overdue(t)  # this one arrives, 7.5 s after the first try
    received = BindingTable()
    [node] = parse_body(body).nodes
    received.merge(node.home_address, state_of(node, t), t)
    [sent], [got] = table.bindings_of(BASE_HOA + 1), received.bindings_of(BASE_HOA + 1)
    assert got.expires == pytest.approx(sent.expires, abs=0.002)  # it is 7.5 s later


@pytest.mark.parametrize("simultaneous", [False, True], ids=["the binding that cleared", "a simultaneous binding"])
def test_a_resent_reply_never_grows_and_a_binding_that_ran_out_ends_as_the_senders(simultaneous):
    """A binding that runs out between two sends of a reply still goes, with 0 ms left: were it left out, the
    default cleared of what is sent would move (the oldest binding's Identification), and a cleared record
    would make the reply grow. The receiver's expiry then makes of it what the sender's made."""
    table = BindingTable(tombstone_lifetime=100)
    hoa = BASE_HOA + 1
    table.register(hoa, 0xC6330001, 600 if simultaneous else 1, ntp(T0), T0)
    table.register(hoa, 0xC6330002, 1 if simultaneous else 600, ntp(T0, 1), T0, S_FLAG, simultaneous=True)
    out = OutgoingTransfer.start(MEMBER, REQUEST, table, 1400, 16)
    [(_, first)] = out.fill(table, T0)
    [(_, again)] = out.overdue(T0 + RETRANSMIT_AFTER)  # both bindings still run
    t = T0 + RETRANSMIT_AFTER + RETRANSMIT_AFTER * 2
    [(_, late)] = out.overdue(t)  # the 1 s one has run out
    assert len(first) == len(again) == len(late)
    [node] = parse_body(late).nodes
    assert sorted(r.remaining_ms for r in node.bindings) == [0, int((600 - (t - T0)) * 1000)]
    table.expire(t)
    received = BindingTable(tombstone_lifetime=100)
    received.merge(hoa, state_of(node, t), t)
    assert received.state(hoa)[:3] == table.state(hoa)[:3]
    assert [x[:2] for x in received.state(hoa).tombstones] == [x[:2] for x in table.state(hoa).tombstones]
    assert received.digests() == table.digests()
