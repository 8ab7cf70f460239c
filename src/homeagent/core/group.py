"""The patent's replication (US 7,227,863 FIG 3 to 9): one member's view of its redundancy group.

* Start (FIG 4, claim 3): before serving any registration, ask every member for its table and load the
  replies; serve when every member that answered has sent all of it, or when nobody answered within
  ``startup_wait`` (the first member of a group).
* Answer a table request (FIG 5): learn the requester and the members it lists, send it our whole table.
* Registration and de-registration (FIG 6 to 9): after the registrar accepts one, and if any other member
  is up (claim 1), send every member that is up a Binding Update with the node's resulting state; resend
  each until it is acked, with backoff; a member that never acks is marked down. In ``sync`` replication
  the reply to the mobile node waits for the acks (``sync_timeout`` at most).
* Liveness: every member advertises every ``advertisement_interval``; one not heard for its master-down
  interval is down; a member heard again after being down is asked for its table, which is how both
  halves of a healed partition catch up (each asks the other).
* The election (``core/election.py``) decides who holds the virtual address.
"""

from __future__ import annotations

import logging
import socket
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from homeagent.core.bindings import Binding, BindingTable
from homeagent.core.effects import (
    Accepted,
    ClaimAddress,
    Effect,
    ReleaseAddress,
    Send,
    TunnelDown,
    TunnelUp,
)
from homeagent.core.election import Election, Role, Transition
from homeagent.core.peers import Member, Membership
from homeagent.core.replay import NTP_EPOCH_OFFSET, ntp_identification
from homeagent.core.timers import Queue, Timers
from homeagent.core.transfer import IDLE_LIMIT, RETRANSMIT_AFTER, IncomingTransfer, OutgoingTransfer, bindings_of, node_state
from homeagent.wire.errors import ParseError
from homeagent.wire.redundancy import (
    AckCode,
    Advertisement,
    BindingTableReply,
    BindingTableReplyAck,
    BindingTableRequest,
    BindingUpdate,
    BindingUpdateAck,
    ASK_BACK,
    RECENT,
    SEAL_OVERHEAD,
    MobileNodeBindings,
    parse_messages,
)

log = logging.getLogger("homeagent.redundancy")

UPDATE_RETRANSMIT = 0.25  # seconds before the first resend of a Binding Update; doubles each time
UPDATE_TRIES = 5  # sends of one Binding Update before its member is marked down
REQUEST_RETRANSMIT = 0.5  # seconds between resends of a Binding Table Request nobody has answered
REQUEST_TRIES = 10  # then a silent member is not waited for any more
RECENT_WINDOW = 10.0  # seconds of changes exchanged on a takeover: longer than any update's resends
TRANSFER_IDLE = IDLE_LIMIT  # seconds without a reply before an incoming transfer is abandoned
_T = 0x02


@dataclass(frozen=True)
class GroupSettings:
    own_address: int
    virtual_address: int
    port: int
    mode: str  # "active-standby" or "peer"
    priority: int
    sync: bool
    sync_timeout: float
    advertisement_interval: float
    preempt: bool
    startup_wait: float
    max_datagram: int
    home_network: IPv4Network
    multicast_group: int | None = None
    external_election: bool = False


@dataclass
class _PendingUpdate:
    accepted: Accepted  # rebuilt on each resend, so the Remaining Lifetime is what is left then
    tries: int = 1


@dataclass
class _SyncReply:
    reply: Send
    waiting: set[int]  # members whose ack the reply waits for
    home_address: int
    identification: int


@dataclass
class _Startup:
    identifications: set[int]  # of the start-up requests (a stalled download is asked for again)
    deadline: float  # when a lone first member gives up waiting
    answered: set[int] = field(default_factory=set)  # members whose whole table we hold
    given_up: set[int] = field(default_factory=set)  # members that never answered


@dataclass
class _Asking:
    """A Binding Table Request to one member, resent until its first reply comes."""

    request: BindingTableRequest
    tries: int = 1


class Group:
    def __init__(
        self,
        settings: GroupSettings,
        membership: Membership,
        bindings: BindingTable,
        counters: Counter[str],
        now: float,
    ) -> None:
        self.settings = settings
        self.membership = membership
        self.bindings = bindings
        self.counters = counters
        self.timers = Timers()
        self.election = Election(
            settings.own_address, settings.priority, settings.advertisement_interval, settings.preempt, now,
            settings.external_election,
        )
        self._pending: dict[tuple[int, int], _PendingUpdate] = {}  # (member, home address)
        # Resend deadlines, one queue per send count (each has its own fixed delay), and sync deadlines.
        self._resends = [Queue() for _ in range(UPDATE_TRIES)]
        self._sync_deadlines = Queue()
        self._sync: dict[int, _SyncReply] = {}
        self._sync_by_node: dict[int, list[int]] = {}  # home address -> tokens of replies waiting
        self._sync_token = 0
        self._outgoing: dict[tuple[int, int], OutgoingTransfer] = {}  # (member, identification)
        self._incoming: dict[tuple[int, int], IncomingTransfer] = {}
        self._startup: _Startup | None = None
        self._requested: dict[int, int] = {}  # identification of a request -> member it went to (0: all)
        self._asking: dict[tuple[int, int], _Asking] = {}  # (member, identification) not answered yet
        self._reconciling: tuple[int, set[int]] | None = None  # (since, downloads still gathering)
        self._closed: set[tuple[int, int]] = set()  # (member, identification) of downloads done or abandoned
        self._last_request = 0
        self._own = str(IPv4Address(settings.own_address))
        self._virtual = str(IPv4Address(settings.virtual_address))
        self._outbox: dict[int, list[bytes]] = {}  # member address -> message bodies waiting for flush()
        self.batching = False  # the runtime sets it while it drains a burst of datagrams, then flushes
        self._handlers: dict[type, Callable[[Member, Any, float], list[Effect]]] = {
            BindingUpdate: self._on_update,
            BindingUpdateAck: self._on_update_ack,
            Advertisement: self._on_advertisement,
            BindingTableRequest: self._on_table_request,
            BindingTableReply: self._on_table_reply,
            BindingTableReplyAck: self._on_table_reply_ack,
        }
        self._home_mask = int(settings.home_network.netmask)
        self._home_prefix = int(settings.home_network.network_address)

    # -- state ----------------------------------------------------------------------------------------

    @property
    def role(self) -> str:
        if self.election.role is Role.INIT:
            return "init"
        return "peer" if self.settings.mode == "peer" else self.election.role.label

    @property
    def serving(self) -> bool:
        """Whether this member answers registrations (and so tunnels for its bindings)."""
        if self.election.role is Role.INIT:
            return False
        return self.settings.mode == "peer" or self.election.role is Role.ACTIVE

    def status(self) -> dict[str, Any]:
        return {
            "role_since": self.election.since,
            "transitions": [
                {"from": t.old.label, "to": t.new.label, "reason": t.reason, "at": t.at} for t in self.election.history
            ],
            "peers": [
                {
                    "address": m.name,
                    "state": "up" if m.up else "down",
                    "priority": m.priority,
                    "role": Role(m.role).label if m.role in Role._value2member_map_ else "unknown",
                    "configured": m.configured,
                    "last_heard": m.last_heard,
                }
                for m in self.membership
            ],
        }

    # -- start and stop -------------------------------------------------------------------------------

    def start(self, now: float) -> list[Effect]:
        """FIG 4: ask the group for its tables before serving; advertise from now on."""
        ident = self._request_identification(now)
        self._startup = _Startup({ident}, now + self.settings.startup_wait)
        self.timers.schedule("startup", now + min(REQUEST_RETRANSMIT, self.settings.startup_wait))
        self.timers.schedule("advertise", now)
        self._requested[ident] = 0  # anyone may answer: members met by multicast too
        effects = self._multicast(self._request_for(ident).body(), now)
        for m in self.membership:
            self._ask(m, self._request_for(ident), now)
        return self._done(effects, now)

    def told(self, active: bool, now: float) -> list[Effect]:
        """The external election's verdict (``homeagent role active|standby``, from keepalived's notify)."""
        if not self.election.external:
            raise ValueError("this member runs its own election (redundancy.election = \"internal\")")
        transitions = self.election.told(Role.ACTIVE if active else Role.STANDBY, now)
        return self._done(self._apply_transitions(transitions), now)

    def stop(self, now: float) -> list[Effect]:
        """Resign: advertise priority 0 so a standby takes over at once, and give the address back."""
        was_active = self.election.role is Role.ACTIVE
        effects = self._advertise(now, priority=0) if was_active else []
        effects += self._apply_transitions(self.election.stop(now))
        return self._done(effects, now)

    # -- registrations --------------------------------------------------------------------------------

    def replicate(self, accepted: Accepted, reply: Send | None, now: float) -> list[Effect]:
        """FIG 6 and 8: tell every member that is up; in sync mode, hold the reply until they ack."""
        targets = self.membership.up()
        if not targets:  # claim 1: nobody else in the group, nothing to send
            return [reply] if reply else []
        update = self._update_for(accepted, now)
        body = update.body()
        effects: list[Effect] = []
        for m in targets:
            key = (m.address, accepted.home_address)
            self._pending[key] = _PendingUpdate(accepted)
            self._resends[0].add(now + UPDATE_RETRANSMIT, (key, accepted.identification))
            self._send(body, m)
        self.counters["redundancy.updates_sent"] += len(targets)
        if reply is None:
            return self._done(effects, now)
        if not self.settings.sync:
            effects.insert(0, reply)
            return self._done(effects, now)
        token = self._sync_token = self._sync_token + 1
        hoa = accepted.home_address
        self._sync[token] = _SyncReply(reply, {m.address for m in targets}, hoa, accepted.identification)
        self._sync_by_node.setdefault(hoa, []).append(token)
        self._sync_deadlines.add(now + self.settings.sync_timeout, token)
        return self._done(effects, now)

    def holding(self, home_address: int, identification: int) -> bool:
        """Whether a sync reply to this registration is still waiting for acks."""
        return any(self._sync[t].identification == identification for t in self._sync_by_node.get(home_address, ()))

    def _update_for(self, accepted: Accepted, now: float) -> BindingUpdate:
        node = node_state(self.bindings, accepted.home_address, now)
        assert node is not None
        alone = (
            len(node.bindings) == 1
            and accepted.lifetime
            and node.bindings[0].care_of_address == accepted.care_of_address
            and node.bindings[0].identification == accepted.identification
        )
        gone = not node.bindings and not accepted.lifetime
        remaining = node.bindings[0].remaining_ms if alone else 0
        return BindingUpdate(
            accepted.flags, accepted.lifetime, remaining, accepted.home_address, accepted.home_agent,
            accepted.care_of_address, accepted.identification, None if (alone or gone) else node,
        )

    def remove(self, home_address: int, care_of_address: int | None, now: float) -> list[Effect]:
        """An administrative removal: ordered after every registration seen so far, and replicated."""
        last = self.bindings.last_identification(home_address)
        if last is None:
            return []
        ident = last + 1
        removed = self.bindings.deregister(home_address, care_of_address, ident)
        self.counters["removed"] += len(removed)
        coa = home_address if care_of_address is None else care_of_address
        effects: list[Effect] = [TunnelDown(b.home_address, b.care_of_address) for b in removed if self.serving]
        marker = Accepted(home_address, coa, self.settings.virtual_address, 0, 0, ident)
        return effects + self.replicate(marker, None, now)

    # -- datagrams from members -----------------------------------------------------------------------

    def receive(self, datagram: bytes, source: str, now: float) -> list[Effect]:
        """A datagram from a member: one message, or several back to back, under one seal."""
        opened = self.membership.open(datagram, int.from_bytes(socket.inet_aton(source), "big"), now)
        if opened is None:
            return []
        member, body = opened
        try:
            messages = parse_messages(body)
        except ParseError as exc:
            self.counters["redundancy.malformed"] += 1
            log.debug("malformed message from %s: %s", member.name, exc.reason)
            return []
        effects = self._heard(member, now)
        for message in messages:
            handler = self._handlers.get(type(message))
            if handler is not None:
                effects += handler(member, message, now)
        return self._done(effects, now)

    def _heard(self, member: Member, now: float) -> list[Effect]:
        first = member.last_heard is None
        member.last_heard = now
        if member.up:
            return []
        member.up = True
        log.info("member %s is up", member.name)
        startup = self._startup
        if startup is not None:
            # The start-up request covers it, if it went to it: one met only now (it started after our
            # multicast request, say) is asked now, under the start-up's Identification.
            asked = any(m == member.address and i in startup.identifications for m, i in self._asking)
            receiving = any(m == member.address and i in startup.identifications for m, i in self._incoming)
            if not (asked or receiving or member.address in startup.answered):
                self._ask(member, self._request_for(min(startup.identifications)), now)
            return []
        ident = self._request_identification(now)
        if first:  # a member we meet for the first time: its whole table (it asks for ours if it starts)
            self._ask(member, self._request_for(ident), now)
        else:
            # Back after being down: it may hold registrations we missed, and it missed the updates we did
            # not send it meanwhile. Ask for what changed since it went down, and ask it to ask for ours.
            since = self._ntp_seconds(member.down_since - RECENT_WINDOW - self.membership.tolerance)
            self._ask(member, self._request_for(ident, ASK_BACK | RECENT, since), now)
        return []

    @staticmethod
    def _ntp_seconds(unix: float) -> int:
        return (int(unix) + NTP_EPOCH_OFFSET) & 0xFFFFFFFF

    def _on_update(self, member: Member, update: BindingUpdate, now: float) -> list[Effect]:
        self.counters["redundancy.updates_received"] += 1
        state = update.state()
        effects: list[Effect] = []
        if not self._home(state.home_address):
            code = AckCode.REFUSED
        else:
            changed = self._take(state, now)
            code = AckCode.APPLIED if changed is not None else AckCode.NOT_NEWER
            effects += changed or []
        ack = BindingUpdateAck(code, update.home_address, update.identification)
        self._send(ack.body(), member)
        return effects

    def _take(self, state: MobileNodeBindings, now: float) -> list[Effect] | None:
        """Make a member's state for one node ours if newer; the tunnel changes if we serve."""
        result = self.bindings.apply(state.home_address, state.identification, bindings_of(state, now))
        if result is None:
            return None
        return self._tunnel_changes(*result) if self.serving else []

    def _on_update_ack(self, member: Member, ack: BindingUpdateAck, now: float) -> list[Effect]:
        self.counters["redundancy.updates_acked"] += 1
        key = (member.address, ack.home_address)
        pending = self._pending.get(key)
        if pending is not None and pending.accepted.identification <= ack.identification:
            del self._pending[key]
        return self._sync_acked(member.address, ack.home_address, ack.identification)

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

    def _on_advertisement(self, member: Member, advert: Advertisement, now: float) -> list[Effect]:
        member.priority, member.role = advert.priority, advert.role
        resigned = self._mark_down(member, "resigned", now) if advert.priority == 0 else []
        transitions = self.election.advertisement(member.address, advert.priority, advert.role, now)
        return resigned + self._apply_transitions(transitions)

    # -- table transfer -------------------------------------------------------------------------------

    def _request_identification(self, now: float) -> int:
        """A new request's Identification: its NTP time, and never one already used."""
        self._last_request = max(ntp_identification(now), self._last_request + 1)
        return self._last_request

    def _request_for(self, ident: int, flags: int = 0, since: int = 0) -> BindingTableRequest:
        """A Binding Table Request listing every member we know, ourselves first (FIG 12)."""
        return BindingTableRequest(
            ident, (self.settings.own_address, *(m.address for m in self.membership)), flags, since
        )

    def _ask(self, member: Member, request: BindingTableRequest, now: float) -> None:
        """Send ``member`` a Binding Table Request, and again until it starts answering."""
        key = (member.address, request.identification)
        self._requested.setdefault(request.identification, member.address)
        self._asking[key] = _Asking(request)
        self.counters["redundancy.table_requests_sent"] += 1
        self._send(request.body(), member)
        self.timers.schedule(("ask", key), now + REQUEST_RETRANSMIT)

    def _ask_again(self, key: tuple[int, int], now: float) -> list[Effect]:
        asking = self._asking.get(key)
        address, ident = key
        member = self.membership.members.get(address)
        if asking is None or member is None:
            return []
        startup = self._startup
        for_startup = startup is not None and ident in startup.identifications
        if asking.tries >= REQUEST_TRIES or (for_startup and not member.up and now >= startup.deadline):
            del self._asking[key]  # it never answered: not waited for any more
            self._gathered(ident, now)
            if for_startup:
                startup.given_up.add(address)  # type: ignore[union-attr]
                return self._check_startup(now)
            return []
        asking.tries += 1
        self.counters["redundancy.table_requests_sent"] += 1
        self._send(asking.request.body(), member)
        self.timers.schedule(("ask", key), now + REQUEST_RETRANSMIT)
        return []

    def reconcile(self, now: float) -> None:
        """After a member is lost (and on taking over): make every member that is up hold the newest state
        of every mobile node that changed lately.

        A Binding Update a member sent just before it died may have reached some members and not others;
        none of them can know. The active member gathers what changed in the last RECENT_WINDOW seconds
        (plus the clock tolerance: the filter is the mobile nodes' Identifications) from every member, and
        once it holds all of it, has every member ask for its merged copy (Ask Back). Two rounds, so that no
        member is answered before the active member has heard from all.
        """
        since = self._ntp_seconds(now - RECENT_WINDOW - self.membership.tolerance)
        waiting = set()
        for m in self.membership.up():
            request = self._request_for(self._request_identification(now), RECENT, since)
            self._ask(m, request, now)
            waiting.add(request.identification)
        self._reconciling = (since, waiting)
        if not waiting:
            self._reconciling = None

    def _gathered(self, ident: int, now: float) -> None:
        """A reconciling download ended (done or given up): once all have, hand the merged copy back."""
        if self._reconciling is None or ident not in self._reconciling[1]:
            return
        since, waiting = self._reconciling
        waiting.discard(ident)
        if waiting:
            return
        self._reconciling = None
        for m in self.membership.up():
            self._ask(m, self._request_for(self._request_identification(now), ASK_BACK | RECENT, since), now)

    def _on_table_request(self, member: Member, request: BindingTableRequest, now: float) -> list[Effect]:
        self.counters["redundancy.table_requests_received"] += 1
        log.debug("table request %x from %s (flags %#x)", request.identification, member.name, request.flags)
        for address in request.home_agents:  # FIG 5: the list of Home Agents in the group
            self.membership.learn(address)
        key = (member.address, request.identification)
        if key in self._outgoing:
            return []  # a resend of a request we are answering: the replies in flight answer it
        since = request.since if request.flags & RECENT else None
        transfer = OutgoingTransfer.start(
            member.address, request.identification, self.bindings, self.settings.max_datagram,
            member.association.digest_size, since,
        )
        self._outgoing[key] = transfer
        log.info("sending %d mobile nodes to %s", len(transfer.home_addresses), member.name)
        effects = self._pump(transfer, member, now)
        if request.flags & ASK_BACK:  # ask back, without the flag: no ping-pong
            again = self._request_for(self._request_identification(now), request.flags & RECENT, request.since)
            self._ask(member, again, now)
        return effects

    def _pump(self, transfer: OutgoingTransfer, member: Member, now: float) -> list[Effect]:
        sends = transfer.fill(self.bindings, now)
        self.counters["redundancy.table_replies_sent"] += len(sends)
        for _, body in sends:
            self._send(body, member)
        effects: list[Effect] = []
        key = (member.address, transfer.identification)
        if transfer.in_flight:
            if ("transfer", key) not in self.timers:  # one timer per transfer; overdue() finds what is late
                self.timers.schedule(("transfer", key), now + RETRANSMIT_AFTER)
        elif transfer.done:
            self._outgoing.pop(key, None)
            self.timers.cancel(("transfer", key))
            log.info("table sent to %s: %d mobile nodes", member.name, transfer.nodes_sent)
        return effects

    def _on_table_reply(self, member: Member, reply: BindingTableReply, now: float) -> list[Effect]:
        wanted = self._requested.get(reply.identification)
        if wanted is None or wanted not in (0, member.address):
            self.counters["redundancy.table_replies_dropped"] += 1  # answers nothing we asked
            return []
        self.counters["redundancy.table_replies_received"] += 1
        key = (member.address, reply.identification)
        if self._asking.pop(key, None) is not None:  # it is answering
            self.timers.cancel(("ask", key))
        ack = BindingTableReplyAck(0, reply.more, reply.sequence, reply.identification)
        if key in self._closed:  # a late resend of a download done (its ack was lost) or abandoned
            self._send(ack.body(), member)
            return []
        transfer = self._incoming.get(key)
        if transfer is None:
            transfer = self._incoming[key] = IncomingTransfer(member.address, reply.identification)
        effects: list[Effect] = []
        if transfer.receive(reply, now):
            for node in reply.nodes:
                if self._home(node.home_address):
                    effects += self._take(node, now) or []
        self.timers.schedule(("incoming", key), now + TRANSFER_IDLE)
        self._send(ack.body(), member)
        if transfer.done:
            del self._incoming[key]
            self._closed.add(key)
            self.timers.cancel(("incoming", key))
            log.info("table %x received from %s: %d mobile nodes", reply.identification, member.name, transfer.nodes)
            self._gathered(reply.identification, now)
            if self._startup is not None and reply.identification in self._startup.identifications:
                self._startup.answered.add(member.address)
                effects += self._check_startup(now)
        return effects

    def _on_table_reply_ack(self, member: Member, ack: BindingTableReplyAck, now: float) -> list[Effect]:
        transfer = self._outgoing.get((member.address, ack.identification))
        if transfer is None or not transfer.ack(ack.sequence):
            return []
        return self._pump(transfer, member, now)

    def _check_startup(self, now: float) -> list[Effect]:
        """FIG 4 ends: every member that is up has sent its table, or nobody answered in time."""
        startup = self._startup
        if startup is None:
            return []
        if now >= startup.deadline:  # nobody waits past the deadline for a member it cannot hear
            for m in self.membership:
                if not m.up and m.address not in startup.answered:
                    startup.given_up.add(m.address)
        receiving = any(i in startup.identifications for _, i in self._incoming)
        expected = {m.address for m in self.membership} - startup.given_up
        complete = expected <= startup.answered and not receiving
        if not (complete and (startup.answered or now >= startup.deadline)):
            return []
        self._startup = None
        self.timers.cancel("startup")
        log.info("table download done: %d bindings from %d member(s)", len(self.bindings), len(startup.answered))
        effects = self._apply_transitions(self.election.ready(now))
        if self.settings.mode == "peer":
            effects += self._tunnel_changes([], list(self.bindings))
        return effects

    # -- timers ---------------------------------------------------------------------------------------

    def next_timer(self) -> float | None:
        times = [self.timers.next(), self.election.next_timer(), self._sync_deadlines.next()]
        times += [q.next() for q in self._resends]
        due = [t for t in times if t is not None]
        return min(due) if due else None

    def handle_timer(self, now: float) -> list[Effect]:
        effects = self._apply_transitions(self.election.handle_timer(now))
        effects += self._resend_due(now)
        for key in self.timers.due(now):
            if key == "advertise":
                effects += self._advertise(now)
                effects += self._check_liveness(now)
                if self.election.role is Role.ACTIVE:  # again and again: a claim the address refused heals
                    effects.append(ClaimAddress(self._virtual))
                self.timers.schedule("advertise", now + self.settings.advertisement_interval)
            elif key == "startup":
                effects += self._check_startup(now)
                if self._startup is not None:
                    self.timers.schedule("startup", now + REQUEST_RETRANSMIT)
            else:
                kind, arg = key  # type: ignore[misc]
                if kind == "transfer":
                    effects += self._retransmit_transfer(arg, now)
                elif kind == "ask":
                    effects += self._ask_again(arg, now)
                elif kind == "incoming":
                    self._abandon_incoming(arg, now)
        return self._done(effects, now)

    def _advertise(self, now: float, priority: int | None = None) -> list[Effect]:
        advert = Advertisement(
            self.settings.priority if priority is None else priority,
            int(self.election.role),
            int(self.settings.advertisement_interval * 1000),
        )
        body = advert.body()
        for m in self.membership:
            self._send(body, m)
        return []

    def _check_liveness(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        for m in self.membership:
            if not m.up or m.last_heard is None:
                continue
            interval = self.settings.advertisement_interval
            if now - m.last_heard > 3 * interval + (256 - m.priority) / 256 * interval:
                effects += self._mark_down(m, "not heard", now)
        return effects

    def _mark_down(self, member: Member, why: str, now: float) -> list[Effect]:
        if not member.up:
            return []
        member.up = False
        member.down_since = now
        log.warning("member %s is down: %s", member.name, why)
        self.counters["redundancy.members_marked_down"] += 1
        if self.election.role is Role.ACTIVE and self._startup is None:
            self.reconcile(now)  # what it sent last may have reached only some of us
        for key in [k for k in self._pending if k[0] == member.address]:
            del self._pending[key]
        released: list[Effect] = []
        for token, waiter in list(self._sync.items()):
            waiter.waiting.discard(member.address)
            if not waiter.waiting:
                released.append(self._release(token))
        return released

    def _resend_due(self, now: float) -> list[Effect]:
        """Binding Updates whose ack is late: send again (backing off), or give up on their member."""
        effects: list[Effect] = []
        for level, queue in enumerate(self._resends):
            for key, ident in queue.due(now):  # type: ignore[misc]
                pending = self._pending.get(key)
                if pending is None or pending.accepted.identification != ident or pending.tries != level + 1:
                    continue  # acked, superseded by a newer update, or its member given up on
                member = self.membership.members.get(key[0])
                if member is None:
                    continue
                if pending.tries >= UPDATE_TRIES:
                    self.counters["redundancy.updates_failed"] += 1
                    effects += self._mark_down(member, "Binding Updates not acknowledged", now)
                    continue
                pending.tries += 1
                self.counters["redundancy.updates_retransmitted"] += 1
                self._resends[level + 1].add(now + UPDATE_RETRANSMIT * 2 ** (level + 1), (key, ident))
                self._send(self._update_for(pending.accepted, now).body(), member)
        for token in self._sync_deadlines.due(now):
            effects += self._sync_timeout(token, now)  # type: ignore[arg-type]
        return effects

    def _sync_timeout(self, token: int, now: float) -> list[Effect]:
        waiter = self._sync.get(token)
        if waiter is None:
            return []
        self.counters["redundancy.sync_timeouts"] += 1
        effects: list[Effect] = []
        for address in list(waiter.waiting):
            member = self.membership.members.get(address)
            if member is not None:
                effects += self._mark_down(member, "no ack within sync_timeout", now)
        if token in self._sync:
            effects.append(self._release(token))
        return effects

    def _retransmit_transfer(self, key: tuple[int, int], now: float) -> list[Effect]:
        transfer = self._outgoing.get(key)
        member = self.membership.members.get(key[0])
        if transfer is None or member is None:
            return []
        try:
            again = transfer.overdue(now)
        except TimeoutError:
            del self._outgoing[key]
            return self._mark_down(member, "table replies not acknowledged", now)
        self.counters["redundancy.table_replies_retransmitted"] += len(again)
        for _, body in again:
            self._send(body, member)
        if transfer.in_flight:
            self.timers.schedule(("transfer", key), now + RETRANSMIT_AFTER / 2)
        return self._pump(transfer, member, now)

    def _abandon_incoming(self, key: tuple[int, int], now: float) -> None:
        """A download stalled: ask the member again for the whole of it, with a new request (a part of a
        table is no table); ``_ask`` gives up on a member that never answers."""
        transfer = self._incoming.pop(key, None)
        if transfer is None:
            return
        self._closed.add(key)
        address, ident = key
        log.warning("table transfer %x from %s stalled; asking again", ident, IPv4Address(address))
        self.counters["redundancy.table_transfers_abandoned"] += 1
        member = self.membership.members.get(address)
        startup = self._startup
        for_startup = startup is not None and ident in startup.identifications
        if member is None or not member.up:
            if for_startup:
                startup.given_up.add(address)  # type: ignore[union-attr]
            self._gathered(ident, now)
            return
        request = self._request_for(self._request_identification(now))
        if for_startup:  # still the start-up download: the new request stands for the old
            startup.identifications.add(request.identification)  # type: ignore[union-attr]
        self._ask(member, request, now)

    # -- helpers --------------------------------------------------------------------------------------

    def _apply_transitions(self, transitions: list[Transition]) -> list[Effect]:
        effects: list[Effect] = []
        vip = self._virtual
        for t in transitions:
            log.info("role %s -> %s: %s", t.old.label, t.new.label, t.reason)
            self.counters[f"redundancy.became_{t.new.label}"] += 1
            if t.new is Role.ACTIVE:
                effects.append(ClaimAddress(vip))
                effects += self._advertise(t.at)  # at once, as VRRP does: a second claimant steps down sooner
                self.reconcile(t.at)
                if self.settings.mode != "peer":
                    effects += self._tunnel_changes([], list(self.bindings))
            elif t.old is Role.ACTIVE:
                effects.append(ReleaseAddress(vip))
                if self.settings.mode != "peer":
                    effects += self._tunnel_changes(list(self.bindings), [])
        return effects

    @staticmethod
    def _tunnel_changes(before: list[Binding], after: list[Binding]) -> list[Effect]:
        old = {(b.home_address, b.care_of_address): b for b in before}
        new = {(b.home_address, b.care_of_address): b for b in after}
        effects: list[Effect] = [TunnelDown(*k) for k in old if k not in new]
        effects += [
            TunnelUp(k[0], k[1], bool(b.flags & _T))
            for k, b in new.items()
            if k not in old or (old[k].flags & _T) != (b.flags & _T)
        ]
        return effects

    def _send(self, body: bytes, member: Member) -> None:
        """Queue a message for ``member``; ``flush`` seals what is queued into as few datagrams as fit."""
        box = self._outbox.get(member.address)
        if box is None:
            self._outbox[member.address] = [body]
        else:
            box.append(body)

    def flush(self, now: float) -> list[Effect]:
        """The queued messages as datagrams: back to back up to ``max_datagram``, each datagram sealed once."""
        effects: list[Effect] = []
        members = self.membership.members
        limit = self.settings.max_datagram
        for address, bodies in self._outbox.items():
            member = members.get(address)
            if member is None:
                continue
            room = limit - SEAL_OVERHEAD - member.association.digest_size
            chunk: list[bytes] = []
            size = 0
            for body in bodies:
                if chunk and size + len(body) > room:
                    effects.append(self._datagram(chunk, member, now))
                    chunk, size = [], 0
                chunk.append(body)
                size += len(body)
            if chunk:
                effects.append(self._datagram(chunk, member, now))
        self._outbox.clear()
        return effects

    def _datagram(self, bodies: list[bytes], member: Member, now: float) -> Send:
        body = bodies[0] if len(bodies) == 1 else b"".join(bodies)
        return Send(self.membership.seal(body, member, now), (member.name, self.settings.port), self._own)

    def _done(self, effects: list[Effect], now: float) -> list[Effect]:
        """The end of an input: queued messages leave now, unless the runtime batches several inputs."""
        if self.batching or not self._outbox:
            return effects
        return effects + self.flush(now)

    def _multicast(self, body: bytes, now: float) -> list[Effect]:
        group = self.settings.multicast_group
        sa = self.membership.group_association
        if group is None or sa is None:
            return []
        datagram = self.membership.seal_with(body, sa, now)
        return [Send(datagram, (str(IPv4Address(group)), self.settings.port), self._own)]

    def _home(self, home_address: int) -> bool:
        return home_address & self._home_mask == self._home_prefix
