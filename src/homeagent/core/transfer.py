"""Moving a whole mobility binding table between members (FIG 4 and FIG 5, claim 3).

The sender walks a snapshot of the home addresses, packs each mobile node's current state into Binding
Table Replies of at most ``max_datagram`` bytes, and keeps a window of them in flight, each retransmitted
until its ack comes. The receiver merges what it gets into its table (core/node_state.py: a reply that
arrives twice, late, or after a live Binding Update changes nothing wrong), acks every reply, and is
done when it holds every part up to the one without MoreBind.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from homeagent.core.bindings import Binding, BindingTable, NodeState, Tombstone
from homeagent.wire.redundancy import (
    BindingRecord,
    BindingTableReply,
    MobileNodeBindings,
    TombstoneRecord,
    cleared_of,
    encode_node_fields,
    reply_capacity,
)

WINDOW = 128  # replies in flight per transfer
BURST = 8  # replies packed at one time (about 300 nodes): the window fills as acks come
RETRANSMIT_AFTER = 0.5  # seconds without an ack before a reply is sent again (then 1 s, 1 s, ...)
MAX_TRIES = 6  # then the transfer is abandoned and the peer marked down (after 4.5 s)
IDLE_LIMIT = 2 * MAX_TRIES * RETRANSMIT_AFTER  # a receiver waits longer than the sender keeps resending


def node_state(table: BindingTable, home_address: int, now: float) -> MobileNodeBindings | None:
    """A mobile node's state as it travels: remaining lifetimes relative to ``now``; ``cleared`` None when
    it is the default (so a node with just one binding, or none, compares equal to the short form)."""
    state = table.export(home_address, now)
    if state is None:
        return None
    last, cleared, bindings, tombstones = state
    node = MobileNodeBindings(home_address, last, tuple(map(BindingRecord._make, bindings)),
                              tuple(map(TombstoneRecord._make, tombstones)))
    return node if cleared == cleared_of(node) else node._replace(cleared=cleared)


def state_of(node: MobileNodeBindings, now: float) -> NodeState:
    """The table's state for one received from a member: expiries and forget times from the remaining
    milliseconds, on our clock."""
    hoa = node.home_address
    return NodeState(
        node.identification,
        cleared_of(node),
        tuple(Binding(hoa, r.care_of_address, r.lifetime, now + r.remaining_ms / 1000.0, r.identification,
                      r.flags, r.home_agent) for r in node.bindings),
        tuple(Tombstone(t.care_of_address, t.identification, now + t.remaining_ms / 1000.0)
              for t in node.tombstones),
    )


_Record = tuple[int, int, int, int, int, int]  # care-of, home agent, identification, lifetime, flags, ms left
_Tomb = tuple[int, int, int]  # care-of, identification, ms left
_State = tuple[int, int, int, list[_Record], list[_Tomb]]  # home address, last, cleared, bindings, tombstones


@dataclass
class _InFlight:
    more: bool
    states: list[_State]  # what the reply carries, so a resend can say what is left *then*
    packed_at: float
    sent_at: float
    tries: int = 1


@dataclass
class OutgoingTransfer:
    """Our table, on its way to ``member`` in answer to its request ``identification``."""

    member: int
    identification: int
    home_addresses: list[int]
    capacity: int  # bytes of extensions per reply
    next_index: int = 0
    next_sequence: int = 0
    finished_sending: bool = False
    in_flight: dict[int, _InFlight] = field(default_factory=dict)
    nodes_sent: int = 0
    code: int = 0  # of every reply: 0, or DEFERRED (a start-up request that the active member answers)
    missed: set[int] | None = field(default_factory=set)  # what it had missed that this sends (core/missed.py)

    @classmethod
    def start(
        cls, member: int, identification: int, table: BindingTable, max_datagram: int, digest_size: int
    ) -> OutgoingTransfer:
        """A transfer of the whole table."""
        return cls(member, identification, table.home_addresses(), reply_capacity(max_datagram, digest_size))

    @property
    def done(self) -> bool:
        return self.finished_sending and not self.in_flight

    def fill(self, table: BindingTable, now: float) -> list[tuple[int, bytes]]:
        """New replies to send, as (sequence, body), while the window has room: at most ``BURST`` at a
        time, so that packing never holds the sender's event loop for long (its advertisements must go
        out on time while it sends a large table: issue 10); each ack lets more go."""
        out: list[tuple[int, bytes]] = []
        while not self.finished_sending and len(self.in_flight) < WINDOW and len(out) < BURST:
            sequence, states, parts = self._next_reply(table, now)
            self.in_flight[sequence] = _InFlight(not self.finished_sending, states, now, now)
            out.append((sequence, self._body(sequence, not self.finished_sending, parts)))
        return out

    def _next_reply(self, table: BindingTable, now: float) -> tuple[int, list[_State], list[bytes]]:
        parts: list[bytes] = []
        states: list[_State] = []
        size = 0
        addresses = self.home_addresses
        i = self.next_index
        export = table.export
        while i < len(addresses):
            state = export(addresses[i], now)
            if state is None:  # gone since the snapshot (never happens: last Identifications stay)
                i += 1
                continue
            last, cleared, bindings, tombstones = state
            encoded = encode_node_fields(addresses[i], last, bindings, cleared, tombstones)
            if size + len(encoded) > self.capacity and parts:
                break
            parts.append(encoded)
            states.append((addresses[i], last, cleared, bindings, tombstones))
            size += len(encoded)
            i += 1
        self.next_index = i
        self.finished_sending = i >= len(addresses)
        sequence = self.next_sequence
        self.next_sequence += 1
        self.nodes_sent += len(parts)
        return sequence, states, parts

    def _body(self, sequence: int, more: bool, parts: list[bytes]) -> bytes:
        return BindingTableReply.header(self.code, len(parts), more, sequence, self.identification) + b"".join(parts)

    def ack(self, sequence: int) -> bool:
        return self.in_flight.pop(sequence, None) is not None

    def overdue(self, now: float) -> list[tuple[int, bytes]]:
        """Replies to send again, their lifetimes aged to ``now`` (as wire/redundancy.py ``aged_node`` ages
        a node: a binding that ran out goes with Remaining 0, a tombstone that ran out is left out, so a
        reply never grows); raises TimeoutError when one has been tried too often."""
        out = []
        for sequence, f in self.in_flight.items():
            if now - f.sent_at >= RETRANSMIT_AFTER * min(f.tries, 2):
                if f.tries >= MAX_TRIES:
                    raise TimeoutError(f"reply {sequence} never acknowledged")
                f.tries += 1
                f.sent_at = now
                aged = int((now - f.packed_at) * 1000)
                f.states = [
                    (hoa, last, cleared, [(*r[:5], max(0, r[5] - aged)) for r in records],
                     [(coa, ident, ms - aged) for coa, ident, ms in tombs if ms > aged])
                    for hoa, last, cleared, records, tombs in f.states
                ]
                f.packed_at = now
                parts = [encode_node_fields(hoa, last, records, cleared, tombs)
                         for hoa, last, cleared, records, tombs in f.states]
                out.append((sequence, self._body(sequence, f.more, parts)))
        return out


@dataclass
class IncomingTransfer:
    """A member's table arriving in answer to our request."""

    member: int
    identification: int
    received: set[int] = field(default_factory=set)
    last_sequence: int | None = None
    last_heard: float = 0.0
    nodes: int = 0

    def receive(self, reply: BindingTableReply, now: float) -> bool:
        """Record a reply; True if it is new (its nodes should be applied)."""
        self.last_heard = now
        if not reply.more:
            self.last_sequence = reply.sequence
        if reply.sequence in self.received:
            return False
        self.received.add(reply.sequence)
        self.nodes += len(reply.nodes)
        return True

    @property
    def done(self) -> bool:
        return self.last_sequence is not None and len(self.received) == self.last_sequence + 1
