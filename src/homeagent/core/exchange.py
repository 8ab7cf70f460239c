"""Table exchanges between members (US 7,227,863 FIG 4 and 5, claim 3): every Binding Table Request this
member sends or answers, and every transfer of bindings that follows.

* Start-up: before serving, ask every member for its table and load the replies; done when every member
  not given up on has sent all of it, or when nobody answered within ``startup_wait``.
* Requests are resent until the member's first reply comes; a download that stalls is asked for again.
* Catch-up: a member heard again after being down is asked for what changed since (Recent, Ask Back).
* Reconciliation: after a loss, or on taking over, the active member gathers what changed lately from
  every member and then hands its merged copy back (two rounds).

The group owns the members, the seal and the outbox; this object owns only the state of the exchanges.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import TYPE_CHECKING

from homeagent.core.effects import Effect
from homeagent.core.peers import Member
from homeagent.core.replay import NTP_EPOCH_OFFSET, ntp_identification
from homeagent.core.transfer import IDLE_LIMIT, RETRANSMIT_AFTER, IncomingTransfer, OutgoingTransfer
from homeagent.wire.redundancy import (
    ASK_BACK,
    RECENT,
    BindingTableReply,
    BindingTableReplyAck,
    BindingTableRequest,
)

if TYPE_CHECKING:
    from homeagent.core.group import Group

log = logging.getLogger("homeagent.redundancy")

REQUEST_RETRANSMIT = 0.5  # seconds between resends of a Binding Table Request nobody has answered
REQUEST_TRIES = 10  # then a silent member is not waited for any more
RECENT_WINDOW = 10.0  # seconds of changes exchanged on a takeover: longer than any update's resends
TRANSFER_IDLE = IDLE_LIMIT  # seconds without a reply before an incoming transfer is abandoned


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


def ntp_seconds(unix: float) -> int:
    return (int(unix) + NTP_EPOCH_OFFSET) & 0xFFFFFFFF


class TableExchange:
    def __init__(self, group: Group) -> None:
        self.group = group
        self.membership = group.membership
        self.bindings = group.bindings
        self.counters = group.counters
        self.timers = group.timers
        self.settings = group.settings
        self.startup: _Startup | None = None
        self.requested: dict[int, int] = {}  # identification of a request -> member it went to (0: all)
        self.asking: dict[tuple[int, int], _Asking] = {}  # (member, identification) not answered yet
        self.closed: set[tuple[int, int]] = set()  # (member, identification) of downloads done or abandoned
        self.outgoing: dict[tuple[int, int], OutgoingTransfer] = {}  # (member, identification)
        self.incoming: dict[tuple[int, int], IncomingTransfer] = {}
        self._reconciling: tuple[int, set[int]] | None = None  # (since, downloads still gathering)
        self._last_request = 0

    @property
    def starting(self) -> bool:
        return self.startup is not None

    def start(self, now: float) -> list[Effect]:
        """FIG 4: ask the group for its tables before serving."""
        ident = self._request_identification(now)
        self.startup = _Startup({ident}, now + self.settings.startup_wait)
        self.timers.schedule("startup", now + min(REQUEST_RETRANSMIT, self.settings.startup_wait))
        self.requested[ident] = 0  # anyone may answer: members met by multicast too
        effects = self.group._multicast(self._request_for(ident).body(), now)
        for m in self.membership:
            self._ask(m, self._request_for(ident), now)
        return effects

    def heard(self, member: Member, first: bool, now: float) -> None:
        """A member is up again (or for the first time): what to ask it for."""
        startup = self.startup
        if startup is not None:
            # The start-up request covers it, if it went to it: one met only now (it started after our
            # multicast request, say) is asked now, under the start-up's Identification.
            asked = any(m == member.address and i in startup.identifications for m, i in self.asking)
            receiving = any(m == member.address and i in startup.identifications for m, i in self.incoming)
            if not (asked or receiving or member.address in startup.answered):
                self._ask(member, self._request_for(min(startup.identifications)), now)
            return
        ident = self._request_identification(now)
        if first:  # a member we meet for the first time: its whole table (it asks for ours if it starts)
            self._ask(member, self._request_for(ident), now)
        else:
            # Back after being down: it may hold registrations we missed, and it missed the updates we did
            # not send it meanwhile. Ask for what changed since it went down, and ask it to ask for ours.
            since = ntp_seconds(self.membership.clock(member.down_since) - RECENT_WINDOW - self.membership.tolerance)
            self._ask(member, self._request_for(ident, ASK_BACK | RECENT, since), now)

    def on_timer(self, kind: str, arg: object, now: float) -> list[Effect]:
        if kind == "ask":
            return self._ask_again(arg, now)  # type: ignore[arg-type]
        if kind == "transfer":
            return self._retransmit(arg, now)  # type: ignore[arg-type]
        if kind == "incoming":
            self._abandon(arg, now)  # type: ignore[arg-type]
        return []

    def startup_tick(self, now: float) -> list[Effect]:
        effects = self.check_startup(now)
        if self.startup is not None:
            self.timers.schedule("startup", now + REQUEST_RETRANSMIT)
        return effects

    def _request_identification(self, now: float) -> int:
        """A new request's Identification: its NTP time, and never one already used."""
        self._last_request = max(ntp_identification(self.membership.clock(now)), self._last_request + 1)
        return self._last_request

    def _request_for(self, ident: int, flags: int = 0, since: int = 0) -> BindingTableRequest:
        """A Binding Table Request listing every member we know, ourselves first (FIG 12)."""
        return BindingTableRequest(
            ident, (self.settings.own_address, *(m.address for m in self.membership)), flags, since
        )

    def _ask(self, member: Member, request: BindingTableRequest, now: float) -> None:
        """Send ``member`` a Binding Table Request, and again until it starts answering."""
        key = (member.address, request.identification)
        self.requested.setdefault(request.identification, member.address)
        self.asking[key] = _Asking(request)
        self.counters["redundancy.table_requests_sent"] += 1
        self.group._send(request.body(), member)
        self.timers.schedule(("ask", key), now + REQUEST_RETRANSMIT)

    def _ask_again(self, key: tuple[int, int], now: float) -> list[Effect]:
        asking = self.asking.get(key)
        address, ident = key
        member = self.membership.members.get(address)
        if asking is None or member is None:
            return []
        startup = self.startup
        for_startup = startup is not None and ident in startup.identifications
        if asking.tries >= REQUEST_TRIES or (for_startup and not member.up and now >= startup.deadline):
            del self.asking[key]  # it never answered: not waited for any more
            self._gathered(ident, now)
            if for_startup:
                startup.given_up.add(address)  # type: ignore[union-attr]
                return self.check_startup(now)
            return []
        asking.tries += 1
        self.counters["redundancy.table_requests_sent"] += 1
        self.group._send(asking.request.body(), member)
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
        since = ntp_seconds(self.membership.clock(now) - RECENT_WINDOW - self.membership.tolerance)
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

    def on_request(self, member: Member, request: BindingTableRequest, now: float) -> list[Effect]:
        self.counters["redundancy.table_requests_received"] += 1
        log.debug("table request %x from %s (flags %#x)", request.identification, member.name, request.flags)
        for address in request.home_agents:  # FIG 5: the list of Home Agents in the group
            self.membership.learn(address)
        key = (member.address, request.identification)
        if key in self.outgoing:
            return []  # a resend of a request we are answering: the replies in flight answer it
        since = request.since if request.flags & RECENT else None
        transfer = OutgoingTransfer.start(
            member.address, request.identification, self.bindings, self.settings.max_datagram,
            member.association.digest_size, since,
        )
        self.outgoing[key] = transfer
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
            self.group._send(body, member)
        effects: list[Effect] = []
        key = (member.address, transfer.identification)
        if transfer.in_flight:
            if ("transfer", key) not in self.timers:  # one timer per transfer; overdue() finds what is late
                self.timers.schedule(("transfer", key), now + RETRANSMIT_AFTER)
        elif transfer.done:
            self.outgoing.pop(key, None)
            self.timers.cancel(("transfer", key))
            log.info("table sent to %s: %d mobile nodes", member.name, transfer.nodes_sent)
        return effects

    def on_reply(self, member: Member, reply: BindingTableReply, now: float) -> list[Effect]:
        wanted = self.requested.get(reply.identification)
        if wanted is None or wanted not in (0, member.address):
            self.counters["redundancy.table_replies_dropped"] += 1  # answers nothing we asked
            return []
        self.counters["redundancy.table_replies_received"] += 1
        key = (member.address, reply.identification)
        if self.asking.pop(key, None) is not None:  # it is answering
            self.timers.cancel(("ask", key))
        ack = BindingTableReplyAck(0, reply.more, reply.sequence, reply.identification)
        if key in self.closed:  # a late resend of a download done (its ack was lost) or abandoned
            self.group._send(ack.body(), member)
            return []
        transfer = self.incoming.get(key)
        if transfer is None:
            transfer = self.incoming[key] = IncomingTransfer(member.address, reply.identification)
        effects: list[Effect] = []
        if transfer.receive(reply, now):
            for node in reply.nodes:
                if self.group._home(node.home_address):
                    effects += self.group._take(node, now) or []
        self.timers.schedule(("incoming", key), now + TRANSFER_IDLE)
        self.group._send(ack.body(), member)
        if transfer.done:
            del self.incoming[key]
            self.closed.add(key)
            self.timers.cancel(("incoming", key))
            log.info("table %x received from %s: %d mobile nodes", reply.identification, member.name, transfer.nodes)
            self._gathered(reply.identification, now)
            if self.startup is not None and reply.identification in self.startup.identifications:
                self.startup.answered.add(member.address)
                effects += self.check_startup(now)
        return effects

    def on_reply_ack(self, member: Member, ack: BindingTableReplyAck, now: float) -> list[Effect]:
        transfer = self.outgoing.get((member.address, ack.identification))
        if transfer is None or not transfer.ack(ack.sequence):
            return []
        return self._pump(transfer, member, now)

    def check_startup(self, now: float) -> list[Effect]:
        """FIG 4 ends: every member that is up has sent its table, or nobody answered in time."""
        startup = self.startup
        if startup is None:
            return []
        if now >= startup.deadline:  # nobody waits past the deadline for a member it cannot hear
            for m in self.membership:
                if not m.up and m.address not in startup.answered:
                    startup.given_up.add(m.address)
        receiving = any(i in startup.identifications for _, i in self.incoming)
        expected = {m.address for m in self.membership} - startup.given_up
        complete = expected <= startup.answered and not receiving
        if not (complete and (startup.answered or now >= startup.deadline)):
            return []
        self.startup = None
        self.timers.cancel("startup")
        log.info("table download done: %d bindings from %d member(s)", len(self.bindings), len(startup.answered))
        return self.group.downloaded(now)

    def _retransmit(self, key: tuple[int, int], now: float) -> list[Effect]:
        transfer = self.outgoing.get(key)
        member = self.membership.members.get(key[0])
        if transfer is None or member is None:
            return []
        try:
            again = transfer.overdue(now)
        except TimeoutError:
            del self.outgoing[key]
            return self.group._mark_down(member, "table replies not acknowledged", now)
        self.counters["redundancy.table_replies_retransmitted"] += len(again)
        for _, body in again:
            self.group._send(body, member)
        if transfer.in_flight:
            self.timers.schedule(("transfer", key), now + RETRANSMIT_AFTER / 2)
        return self._pump(transfer, member, now)

    def _abandon(self, key: tuple[int, int], now: float) -> None:
        """A download stalled: ask the member again for the whole of it, with a new request (a part of a
        table is no table); ``_ask`` gives up on a member that never answers."""
        transfer = self.incoming.pop(key, None)
        if transfer is None:
            return
        self.closed.add(key)
        address, ident = key
        log.warning("table transfer %x from %s stalled; asking again", ident, IPv4Address(address))
        self.counters["redundancy.table_transfers_abandoned"] += 1
        member = self.membership.members.get(address)
        startup = self.startup
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
