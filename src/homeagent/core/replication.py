"""Registration and de-registration replicated (US 7,227,863 FIG 6 to 9): after the registrar accepts one,
and if any other member is up (claim 1), every member that is up is sent a Binding Update with the node's
resulting state; each is resent until acked, with backoff, and a member that never acks is given up on
(the group marks it down). In ``sync`` replication the reply to the mobile node waits for the acks
(``sync_timeout`` at most). What a member could not be told is recorded (core/missed.py).

A resend carries the very state first sent (aged to the moment of the resend): state that changed
meanwhile, from another member say, goes in its own update under its own Identification; one made of the
newer state under the old Identification would be malformed (issue 10 point 4).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from homeagent.core.bindings import BindingTable
from homeagent.core.effects import Effect, Send
from homeagent.core.histogram import Histogram
from homeagent.core.missed import Missed
from homeagent.core.outbox import Outbox
from homeagent.core.peers import Member, Membership
from homeagent.core.registrar import Acceptance
from homeagent.core.settings import GroupSettings
from homeagent.core.timers import Queue
from homeagent.core.transfer import node_state
from homeagent.wire.redundancy import BindingUpdate, BindingUpdateAck

UPDATE_RETRANSMIT = 0.25  # seconds before the first resend of a Binding Update; doubles each time
UPDATE_TRIES = 5  # sends of one Binding Update before its member is marked down

GiveUp = Callable[[Member, str, float], list[Effect]]  # the group's: mark a member down, for this reason


@dataclass
class _PendingUpdate:
    """A Binding Update sent and not yet acked."""

    update: BindingUpdate
    sent_at: float
    tries: int = 1


@dataclass
class _SyncReply:
    reply: Send
    waiting: set[int]  # members whose ack the reply waits for
    home_address: int
    identification: int


class Replication:
    def __init__(self, membership: Membership, bindings: BindingTable, outbox: Outbox, missed: Missed,
                 counters: Counter[str], settings: GroupSettings, give_up: GiveUp) -> None:
        self.membership = membership
        self.bindings = bindings
        self.outbox = outbox
        self.missed = missed
        self.counters = counters
        self.settings = settings
        self.give_up = give_up
        self._pending: dict[tuple[int, int], _PendingUpdate] = {}  # (member, home address)
        # Resend deadlines, one queue per send count (each has its own fixed delay), and sync deadlines.
        self._resends = [Queue() for _ in range(UPDATE_TRIES)]
        self._sync_deadlines = Queue()
        self._sync: dict[int, _SyncReply] = {}
        self._sync_by_node: dict[int, list[int]] = {}  # home address -> tokens of replies waiting
        self._sync_token = 0
        # Seconds from a Binding Update's first send to its member's ack, resends included: how far each
        # member lags behind what this one accepted (the metrics' replication lag).
        self.lag = Histogram()

    def replicate(self, accepted: Acceptance, reply: Send | None, now: float) -> list[Effect]:
        """FIG 6 and 8: tell every member that is up; in sync mode, hold the reply until they ack."""
        targets = self.membership.up()
        if len(targets) < len(self.membership.members):
            for m in self.membership:
                if not m.up:
                    self.missed.add(m.address, accepted.home_address)
        if not targets:  # claim 1: nobody else in the group, nothing to send
            return [reply] if reply else []
        update = self._update_for(accepted, now)
        body = update.body()
        for m in targets:
            key = (m.address, accepted.home_address)
            self._pending[key] = _PendingUpdate(update, now)
            self._resends[0].add(now + UPDATE_RETRANSMIT, (key, accepted.identification))
            self.outbox.send(body, m)
        self.counters["redundancy.updates_sent"] += len(targets)
        if reply is None:
            return []
        if not self.settings.sync:
            return [reply]
        token = self._sync_token = self._sync_token + 1
        hoa = accepted.home_address
        self._sync[token] = _SyncReply(reply, {m.address for m in targets}, hoa, accepted.identification)
        self._sync_by_node.setdefault(hoa, []).append(token)
        self._sync_deadlines.add(now + self.settings.sync_timeout, token)
        return []

    def holding(self, home_address: int, identification: int) -> bool:
        """Whether a sync reply to this registration is still waiting for acks."""
        return any(self._sync[t].identification == identification for t in self._sync_by_node.get(home_address, ()))

    def on_ack(self, member: Member, ack: BindingUpdateAck, now: float) -> list[Effect]:
        self.counters["redundancy.updates_acked"] += 1
        key = (member.address, ack.home_address)
        pending = self._pending.get(key)
        if pending is not None and pending.update.identification <= ack.identification:
            del self._pending[key]
            self.lag.observe(now - pending.sent_at)
        return self._sync_acked(member.address, ack.home_address, ack.identification)

    def lost(self, member: Member) -> list[Effect]:
        """``member`` is down: what it did not ack it missed, and no reply waits for it any more."""
        for key in [k for k in self._pending if k[0] == member.address]:
            del self._pending[key]
            self.missed.add(member.address, key[1])
        released: list[Effect] = []
        for token, waiter in list(self._sync.items()):
            waiter.waiting.discard(member.address)
            if not waiter.waiting:
                released.append(self._release(token))
        return released

    def next_timer(self) -> float | None:
        due = [t for t in (self._sync_deadlines.next(), *(q.next() for q in self._resends)) if t is not None]
        return min(due) if due else None

    def handle_timer(self, now: float) -> list[Effect]:
        """Binding Updates whose ack is late: send again (backing off), or give up on their member; sync
        replies whose members did not ack in time: out anyway, and those members given up on."""
        effects: list[Effect] = []
        for level, queue in enumerate(self._resends):
            for key, ident in cast(list[tuple[tuple[int, int], int]], queue.due(now)):
                pending = self._pending.get(key)
                if pending is None or pending.update.identification != ident or pending.tries != level + 1:
                    continue  # acked, superseded by a newer update, or its member given up on
                member = self.membership.members.get(key[0])
                if member is None:
                    continue
                if pending.tries >= UPDATE_TRIES:
                    self.counters["redundancy.updates_failed"] += 1
                    effects += self.give_up(member, "Binding Updates not acknowledged", now)
                    continue
                pending.tries += 1
                self.counters["redundancy.updates_retransmitted"] += 1
                self._resends[level + 1].add(now + UPDATE_RETRANSMIT * 2 ** (level + 1), (key, ident))
                self.outbox.send(pending.update.aged(int((now - pending.sent_at) * 1000)).body(), member)
        for token in self._sync_deadlines.due(now):
            effects += self._sync_timeout(cast(int, token), now)
        return effects

    def _update_for(self, accepted: Acceptance, now: float) -> BindingUpdate:
        node = node_state(self.bindings, accepted.home_address, now)
        assert node is not None
        plain = not node.tombstones and node.cleared is None  # what the fixed part alone implies
        alone = (
            plain
            and len(node.bindings) == 1
            and accepted.lifetime
            and node.bindings[0].care_of_address == accepted.care_of_address
            and node.bindings[0].identification == accepted.identification
        )
        gone = plain and not node.bindings and not accepted.lifetime
        remaining = node.bindings[0].remaining_ms if alone else 0
        return BindingUpdate(
            accepted.flags, accepted.lifetime, remaining, accepted.home_address, accepted.home_agent,
            accepted.care_of_address, accepted.identification, None if (alone or gone) else node,
        )

    def _sync_acked(self, member: int, home_address: int, identification: int) -> list[Effect]:
        """Replies waiting for this member's ack: it now holds this state or a newer one of the node."""
        tokens = self._sync_by_node.get(home_address)
        if not tokens:
            return []
        released: list[Effect] = []
        for token in list(tokens):
            waiter = self._sync[token]
            if waiter.identification <= identification:
                waiter.waiting.discard(member)
                if not waiter.waiting:
                    released.append(self._release(token))
        return released

    def _release(self, token: int) -> Send:
        waiter = self._sync.pop(token)
        tokens = self._sync_by_node[waiter.home_address]
        tokens.remove(token)
        if not tokens:
            del self._sync_by_node[waiter.home_address]
        return waiter.reply

    def _sync_timeout(self, token: int, now: float) -> list[Effect]:
        waiter = self._sync.get(token)
        if waiter is None:
            return []
        self.counters["redundancy.sync_timeouts"] += 1
        effects: list[Effect] = []
        for address in list(waiter.waiting):
            member = self.membership.members.get(address)
            if member is not None:
                effects += self.give_up(member, "no ack within sync_timeout", now)
        if token in self._sync:
            effects.append(self._release(token))
        return effects
