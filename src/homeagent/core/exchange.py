"""Table exchanges between members (US 7,227,863 FIG 4 and 5, claim 3): every Binding Table Request this
member sends or answers, and every transfer of bindings that follows.

* Start-up: before serving, ask every member for its table and load the replies; done when every member
  not given up on has sent all of it, or when nobody answered within ``startup_wait``.
* Requests are resent until the member's first reply comes; a download that stalls is asked for again.
* Catch-up: a member heard again after being down is asked for what differs (Digest, Ask Back).
* Reconciliation: after a loss, or on taking over, the active member gathers what differs from every
  member and then hands its merged copy back (two rounds).

What differs is found by digest (docs/protocol.md, "Reconciliation by digest"): a request carries the
digest of each of the requester's 256 buckets of home addresses, and the answer holds only the nodes of
the buckets whose digests differ, so a reconciliation costs in proportion to what differs, not to the
size of the table or to how many nodes changed lately (issue 10 point 3: the "Recent" window it replaces
sent ~9,300 of 10,000 nodes at 2,000 registrations a second, to and from every member).

The group owns the members, the seal and the outbox; this object owns only the state of the exchanges.

Bounded whatever a member sends (docs/protocol.md, "Bounds"): one transfer to each member at a time (a
newer request from it replaces the older; an older one is stale), one request of ours open to each member
at a time (a new one takes over the purposes of the one it replaces), and what is remembered of finished
downloads, to acknowledge their late resends, is forgotten after ``CLOSED_MEMORY`` seconds.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from collections import Counter
from ipaddress import IPv4Address
from typing import Protocol

from homeagent.core.bindings import BindingTable, Source
from homeagent.core.effects import Effect
from homeagent.core.election import Election, Role
from homeagent.core.missed import Missed
from homeagent.core.outbox import Outbox
from homeagent.core.peers import Member, Membership
from homeagent.core.settings import GroupSettings
from homeagent.core.sync import SyncState
from homeagent.core.timers import Timers
from homeagent.core.replay import ntp_identification
from homeagent.core.transfer import IDLE_LIMIT, RETRANSMIT_AFTER, IncomingTransfer, OutgoingTransfer
from homeagent.wire.era import to_wire
from homeagent.wire.redundancy import (
    ASK_BACK,
    DEFERRED,
    DIGEST,
    DIGEST_BUCKETS,
    NOT_TAKEN,
    START,
    BindingTableReply,
    BindingTableReplyAck,
    BindingTableRequest,
    MobileNodeBindings,
    reply_capacity,
)


class Host(Protocol):
    """What an exchange needs of the group it works for (core/group.py): to merge a node's state a member
    sent, to give up on a member, and to be told that the start-up download is done."""

    def take(self, state: MobileNodeBindings, now: float, source: Source = ...) -> bool: ...

    def mark_down(self, member: Member, why: str, now: float) -> list[Effect]: ...

    def downloaded(self, now: float) -> list[Effect]: ...

log = logging.getLogger("homeagent.redundancy")

REQUEST_RETRANSMIT = 0.5  # seconds between resends of a Binding Table Request nobody has answered
REQUEST_TRIES = 10  # then a silent member is not waited for any more
TRANSFER_IDLE = IDLE_LIMIT  # seconds without a reply before an incoming transfer is abandoned
CLOSED_MEMORY = 2 * IDLE_LIMIT  # seconds a finished download's late replies are still acknowledged
REMIND_EVERY = 2.0  # seconds between looks for members that missed acceptances of ours and do not ask
UNKNOWN_LISTED_LOGGED = 64  # listed addresses we do not know that are logged (once each); then no more


@dataclass
class _Startup:
    identifications: set[int]  # of the start-up requests (a stalled download is asked for again)
    deadline: float  # when a lone first member gives up waiting
    answered: set[int] = field(default_factory=set)  # members whose whole table we hold
    given_up: set[int] = field(default_factory=set)  # members that never answered
    deferred: set[int] = field(default_factory=set)  # members that left it to the active member (DEFERRED)


@dataclass
class _Asking:
    """A Binding Table Request to one member, resent until its first reply comes."""

    request: BindingTableRequest
    sent_at: float
    tries: int = 1


def _merged(old: BindingTableRequest, new: BindingTableRequest) -> BindingTableRequest:
    """One request for what two asked of one member: the whole table unless both asked only for what
    differs (then from the newer digests, ours as of now), and Ask Back if either did."""
    flags = (old.flags | new.flags) & ASK_BACK
    if old.flags & new.flags & DIGEST:
        return BindingTableRequest(new.identification, new.home_agents, flags | DIGEST, new.digests)
    return BindingTableRequest(new.identification, new.home_agents, flags)


def _covers(old: BindingTableRequest, new: BindingTableRequest) -> bool:
    """Whether what ``old`` asks for includes what ``new`` does: the whole table includes what differs,
    and Ask Back is asked for by both or not by ``new``."""
    return (not old.flags & DIGEST or bool(new.flags & DIGEST)) and (bool(old.flags & ASK_BACK) or not new.flags & ASK_BACK)


def differing(theirs: tuple[int, ...], ours: list[int]) -> set[int]:
    """The buckets whose digests differ."""
    return {b for b in range(DIGEST_BUCKETS) if theirs[b] != ours[b]}


class TableExchange:
    def __init__(self, host: Host, membership: Membership, bindings: BindingTable, outbox: Outbox,
                 election: Election, sync_state: SyncState, missed: Missed, counters: Counter[str],
                 timers: Timers, settings: GroupSettings) -> None:
        self.host = host
        self.membership = membership
        self.bindings = bindings
        self.outbox = outbox
        self.election = election
        self.sync_state = sync_state
        self.missed = missed
        self.counters = counters
        self.timers = timers
        self.settings = settings
        self.startup: _Startup | None = None
        self.requested: dict[int, int] = {}  # identification of an open request -> member it went to (0: all)
        self.open: dict[int, BindingTableRequest] = {}  # member -> our request to it not yet fully answered
        self.asking: dict[tuple[int, int], _Asking] = {}  # (member, identification) not answered yet
        self.closed: dict[tuple[int, int], float] = {}  # (member, identification) done or abandoned -> when
        self._closing: deque[tuple[float, tuple[int, int]]] = deque()  # the same, oldest first, to forget
        self.outgoing: dict[int, OutgoingTransfer] = {}  # member -> our table on its way to it
        self.incoming: dict[tuple[int, int], IncomingTransfer] = {}
        self._reconciling: set[int] | None = None  # reconciling downloads still gathering
        self._unknown_listed: set[int] = set()  # addresses a member listed that we do not know (logged once)
        self._started: dict[int, int] = {}  # member -> Identification of its last start-up request heard
        self._remind_at = 0.0  # when ``remind`` looks again
        self._after: set[int] = set()  # members to ask for what differs once our start-up ends
        self._last_request = 0

    @property
    def starting(self) -> bool:
        return self.startup is not None

    def start(self, now: float) -> list[Effect]:
        """FIG 4: ask the group for its tables before serving. The request says we start (START): the
        active member sends its table, and the others answer DEFERRED (as Cisco's active Home Agent alone
        downloads the table); once that table is in, each of them is asked for what differs from it
        (``check_startup``). So a member that starts gets the table once, not once from every member
        (issue 10: with five members and 2,000 nodes, a restart cost 16,800 nodes)."""
        ident = self._request_identification(now)
        self.startup = _Startup({ident}, now + self.settings.startup_wait)
        self.timers.schedule("startup", now + min(REQUEST_RETRANSMIT, self.settings.startup_wait))
        self.requested[ident] = 0  # anyone may answer: members met by multicast too
        effects = self.outbox.multicast(self._request_for(ident, START).body(), now)
        for m in self.membership:
            self._ask(m, self._request_for(ident, START), now)
        return effects

    def heard(self, member: Member, first: bool, now: float) -> None:
        """A member is up again (or for the first time): what to ask it for."""
        startup = self.startup
        if startup is not None:
            # The start-up request covers it, if it went to it: one met only now (it started after our
            # multicast request, say) is asked now, under the start-up's Identification.
            asked = any(m == member.address and i in startup.identifications for m, i in self.asking)
            receiving = any(m == member.address and i in startup.identifications for m, i in self.incoming)
            if not (asked or receiving or member.address in startup.answered | startup.deferred):
                startup.given_up.discard(member.address)  # not heard in time, but here now: waited for
                ident = min(startup.identifications)
                if (member.address, ident) in self.closed:  # given up on under it: its answers to that
                    ident = self._request_identification(now)  # one are ignored, so a new one
                    startup.identifications.add(ident)
                self._ask(member, self._request_for(ident, START), now)
            return
        ident = self._request_identification(now)
        if first and not self.missed.has(member.address):
            # A member we meet for the first time: its whole table (it asks for ours if it starts, and we
            # accepted nothing it could not hear; else as below, simulation seed 1657).
            self._ask(member, self._request_for(ident), now)
        else:
            # Back after being down: it may hold registrations we missed, and it missed the updates we did
            # not send it meanwhile. Ask for what differs, and ask it to ask for what differs of ours.
            self._ask(member, self._request_for(ident, ASK_BACK | DIGEST), now)

    def on_timer(self, kind: str, arg: object, now: float) -> list[Effect]:
        if kind == "ask":
            return self._ask_again(arg, now)  # type: ignore[arg-type]
        if kind == "transfer":
            return self._retransmit(arg, now)  # type: ignore[arg-type]
        if kind == "incoming":
            self._abandon(arg, now)  # type: ignore[arg-type]
        return []

    def remind(self, now: float) -> None:
        """Members that are up and missed acceptances of ours (core/missed.py), with no exchange with us
        running, are asked to ask for what differs (Ask Back), every ``REMIND_EVERY`` seconds: the paths
        that make them ask (heard again, start-up ends, an Ask Back) can all be lost or absorbed, and
        without an ask what they missed stays apart for good."""
        if now < self._remind_at or self.startup is not None or not len(self.missed):
            return
        self._remind_at = now + REMIND_EVERY
        for m in self.membership.up():
            if m.address not in self.open and m.address not in self.outgoing and self.missed.has(m.address):
                self._ask(m, self._request_for(self._request_identification(now), ASK_BACK | DIGEST), now)

    def startup_tick(self, now: float) -> list[Effect]:
        effects = self.check_startup(now)
        if self.startup is not None:
            self.timers.schedule("startup", now + REQUEST_RETRANSMIT)
        return effects

    def _request_identification(self, now: float) -> int:
        """A new request's Identification: its NTP time, and never one already used."""
        self._last_request = max(ntp_identification(self.membership.clock(now)), self._last_request + 1)
        return self._last_request

    def _request_for(self, ident: int, flags: int = 0) -> BindingTableRequest:
        """A Binding Table Request listing every member we know, ourselves first (FIG 12); with DIGEST,
        carrying our table's digests as of now."""
        digests = tuple(self.bindings.digests()) if flags & DIGEST else ()
        return BindingTableRequest(
            ident, (self.settings.own_address, *(m.address for m in self.membership)), flags, digests
        )

    def _ask(self, member: Member, request: BindingTableRequest, now: float, asked_back: bool = False) -> int:
        """Send ``member`` a Binding Table Request, and again until it starts answering; the Identification
        of the request that answers the purpose (what waits for it must wait for that one).

        While we start, our start-up request still open to it, if it asks for as much, is kept: a
        replacement would make the member start its transfer over (issue 10: a restarted member, asked back
        while its start-up download ran, had four members send it their whole table twice). But its answer
        may have been packed before what the new request is for (an Ask Back says the member gave up
        updates to us just now, simulation seeds 519 and 697), so the new request goes out when our
        start-up ends (``_after``), with digests of all we then hold.
        Otherwise the open one is replaced (the member keeps one transfer to us at a time): the new one asks
        for what both asked for and stands for the old one wherever that was awaited. ``asked_back``: this
        answers the member's Ask Back, so it is getting our table already and is not asked to ask again
        (else two members that both asked back would ask each other back for ever)."""
        if asked_back and request.flags & ASK_BACK:
            request = BindingTableRequest(request.identification, request.home_agents, request.flags & ~ASK_BACK,
                                          request.digests)
        previous = self.open.get(member.address)
        if previous is not None and previous.identification != request.identification:
            startup = self.startup
            if startup is not None and previous.identification in startup.identifications \
                    and _covers(previous, request):
                asking = self.asking.get((member.address, previous.identification))
                # Once it is in, ask: even unanswered here, the answer may be packed and lost on its way
                # (simulation seed 697).
                self._after.add(member.address)
                if asking is not None and asking.sent_at < now:  # not answered yet: again now, then
                    asking.sent_at = now
                    self.counters["redundancy.table_requests_sent"] += 1
                    self.outbox.send(previous.body(), member)
                return previous.identification
            request = _merged(previous, request)
            if asked_back:  # (the old one's Ask Back must not come back with the merge: ping-pong)
                request = BindingTableRequest(request.identification, request.home_agents,
                                              request.flags & ~ASK_BACK, request.digests)
            self._replace(member.address, previous.identification, request.identification, now)
        self.open[member.address] = request
        key = (member.address, request.identification)
        self.requested.setdefault(request.identification, member.address)
        self.asking[key] = _Asking(request, now)
        self.counters["redundancy.table_requests_sent"] += 1
        self.outbox.send(request.body(), member)
        self.timers.schedule(("ask", key), now + REQUEST_RETRANSMIT)
        return request.identification

    def _replace(self, address: int, old: int, new: int, now: float) -> None:
        """Our request ``old`` to a member gives way to ``new``: whatever waited for the one waits for the
        other, and the old download is closed (late replies to it are acknowledged and ignored)."""
        if self.asking.pop((address, old), None) is not None:
            self.timers.cancel(("ask", (address, old)))
        if self.incoming.pop((address, old), None) is not None:
            self.timers.cancel(("incoming", (address, old)))
        self._close((address, old), now)
        startup = self.startup
        if startup is not None and old in startup.identifications:
            startup.identifications.add(new)
        if self._reconciling is not None and old in self._reconciling:
            self._reconciling.discard(old)
            self._reconciling.add(new)

    def _close(self, key: tuple[int, int], now: float) -> None:
        """A download of ours is over (done, abandoned, replaced or never answered); forget old ones."""
        address, ident = key
        if self.requested.get(ident) == address:
            del self.requested[ident]
        request = self.open.get(address)
        if request is not None and request.identification == ident:
            del self.open[address]
        self.closed[key] = now
        self._closing.append((now, key))
        while self._closing and self._closing[0][0] < now - CLOSED_MEMORY:
            _, old = self._closing.popleft()
            if self.closed.get(old, now) < now - CLOSED_MEMORY:
                del self.closed[old]

    def _ask_again(self, key: tuple[int, int], now: float) -> list[Effect]:
        asking = self.asking.get(key)
        address, ident = key
        member = self.membership.members.get(address)
        if asking is None or member is None:
            return []
        startup = self.startup if self.startup is not None and ident in self.startup.identifications else None
        if asking.tries >= REQUEST_TRIES and startup is None and member.up:
            # We hear it, so it is there: a lossy path, or it was busy. Not given up on, or what it holds
            # and we lack would stay apart for good (simulation seed 1152): asked anew, our digests as of now.
            log.warning("table request %x to %s not answered after %d tries; asking again", to_wire(ident),
                        member.name, asking.tries)
            self._ask(member, self._request_for(self._request_identification(now), asking.request.flags), now)
            return []
        if asking.tries >= REQUEST_TRIES or (startup is not None and not member.up and now >= startup.deadline):
            del self.asking[key]  # it never answered: not waited for any more
            self._close(key, now)
            self._gathered(ident, now)
            if startup is not None:
                startup.given_up.add(address)
                return self.check_startup(now)
            return []
        asking.tries += 1
        asking.sent_at = now
        self.counters["redundancy.table_requests_sent"] += 1
        self.outbox.send(asking.request.body(), member)
        self.timers.schedule(("ask", key), now + REQUEST_RETRANSMIT)
        return []

    def reconcile(self, now: float) -> None:
        """After a member is lost (and on taking over): make every member that is up hold the merged state
        of every mobile node.

        A Binding Update a member sent just before it died may have reached some members and not others;
        none of them can know. The active member gathers what differs from its table from every member
        (Digest), and once it holds all of it, has every member ask for what differs of its merged copy
        (Ask Back). Two rounds, so that no member is answered before the active member has heard from all.
        """
        waiting = set()
        for m in self.membership.up():
            waiting.add(self._ask(m, self._request_for(self._request_identification(now), DIGEST), now))
        self._reconciling = waiting or None

    def ask_whole_table(self, now: float) -> None:
        """Out of sync, and the member that told us so is gone: ask an in-sync member that is up (the
        active one first) for the whole table, which puts us back in sync (``core/sync.py``)."""
        candidates = [m for m in self.membership.up() if not m.out_of_sync]
        if not candidates:
            return
        source = max(candidates, key=lambda m: (m.role, m.priority, m.address))
        log.info("asking %s for the whole table, to be in sync again", source.name)
        self._ask(source, self._request_for(self._request_identification(now)), now)

    def _gathered(self, ident: int, now: float) -> None:
        """A reconciling download ended (done or given up): once all have, hand the merged copy back."""
        waiting = self._reconciling
        if waiting is None or ident not in waiting:
            return
        waiting.discard(ident)
        if waiting:
            return
        self._reconciling = None
        for m in self.membership.up():
            self._ask(m, self._request_for(self._request_identification(now), ASK_BACK | DIGEST), now)

    def on_request(self, member: Member, request: BindingTableRequest, now: float) -> list[Effect]:
        self.counters["redundancy.table_requests_received"] += 1
        log.debug("table request %x from %s (flags %#x)", to_wire(request.identification), member.name,
                  request.flags)
        self._check_listed(member, request)
        running = self.outgoing.get(member.address)
        if running is not None:
            if running.identification == request.identification:
                return []  # a resend of a request we are answering: the replies in flight answer it
            if running.identification > request.identification:
                self.counters["redundancy.table_requests_stale"] += 1  # its newer one replaced it
                return []
            self.timers.cancel(("transfer", (member.address, running.identification)))
            self.counters["redundancy.table_transfers_replaced"] += 1
        code = 0
        missed: set[int] | None = set()
        if request.flags & START and self.election.role is not Role.ACTIVE:
            addresses, what, code = [], "deferred to the active member", DEFERRED
        elif request.flags & DIGEST:
            buckets = differing(request.digests, self.bindings.digests())
            missed = self.missed.of(member.address)
            if missed is None:  # more than was counted: every node (core/missed.py)
                buckets = set(range(DIGEST_BUCKETS))
            addresses = self.bindings.home_addresses_in(buckets) if buckets else []
            if missed:  # our acceptances it missed, in buckets whose digests agree (core/missed.py)
                addresses += [a for a in missed if a % DIGEST_BUCKETS not in buckets and a in self.bindings]
            what = f"the {len(buckets)} of {DIGEST_BUCKETS} buckets that differ and {len(missed or ())} missed"
        else:
            addresses, what = self.bindings.home_addresses(), "the whole table"
            missed = self.missed.of(member.address)
        capacity = reply_capacity(self.settings.max_datagram, member.association.digest_size)
        transfer = OutgoingTransfer(member.address, request.identification, addresses, capacity, code=code,
                                    missed=missed)
        self.outgoing[member.address] = transfer
        log.info("sending %d mobile nodes to %s: %s", len(addresses), member.name, what)
        effects = self._pump(transfer, member, now)
        if request.flags & START and self._started.get(member.address) != request.identification:
            self._started[member.address] = request.identification
            if self.election.role is Role.ACTIVE and self._reconciling is None:
                # It (re)started: what it accepted before, if it crashed, may have reached only some of us,
                # and a quick restart is never noticed as a loss (simulation seed 1974).
                self.reconcile(now)
        if request.flags & ASK_BACK:  # ask back, without the flag: no ping-pong
            again = self._request_for(self._request_identification(now), request.flags & DIGEST)
            self._ask(member, again, now, asked_back=True)
        return effects

    def _check_listed(self, member: Member, request: BindingTableRequest) -> None:
        """FIG 12's list of the Home Agents the requester knows. Members are never learnt from it (trust is
        configured); an address we do not know means the two configurations differ: say so, once."""
        for address in request.home_agents:
            if address != self.settings.own_address and address not in self.membership.members:
                if address not in self._unknown_listed and len(self._unknown_listed) < UNKNOWN_LISTED_LOGGED:
                    self._unknown_listed.add(address)
                    log.warning("member %s lists %s as a member, which is not among our peers: the members' "
                                "configurations differ", member.name, IPv4Address(address))

    def _pump(self, transfer: OutgoingTransfer, member: Member, now: float) -> list[Effect]:
        sends = transfer.fill(self.bindings, now)
        self.counters["redundancy.table_replies_sent"] += len(sends)
        for _, body in sends:
            self.counters["redundancy.table_reply_bytes_sent"] += len(body)
            self.outbox.send(body, member)
        effects: list[Effect] = []
        key = (member.address, transfer.identification)
        if transfer.in_flight:
            if ("transfer", key) not in self.timers:  # one timer per transfer; overdue() finds what is late
                self.timers.schedule(("transfer", key), now + RETRANSMIT_AFTER)
        elif transfer.done:
            del self.outgoing[member.address]
            self.timers.cancel(("transfer", key))
            self.missed.sent(member.address, transfer.missed)
            if not self.missed.has(member.address):  # nothing it missed is left out: a transfer packed
                self.sync_state.sent_table(member)  # before we gave up on it, or refused (Code 1), is not that
            self.counters["redundancy.table_transfers_sent"] += 1
            log.info("table sent to %s: %d mobile nodes", member.name, transfer.nodes_sent)
        return effects

    def on_reply(self, member: Member, reply: BindingTableReply, now: float) -> list[Effect]:
        key = (member.address, reply.identification)
        closed = key in self.closed  # a late resend of a download done (its ack was lost), abandoned or replaced
        ack = BindingTableReplyAck(NOT_TAKEN if closed else 0, reply.more, reply.sequence, reply.identification)
        if closed:  # stop its resends, but say we did not read it
            self.counters["redundancy.table_replies_received"] += 1
            self.outbox.send(ack.body(), member)
            return []
        wanted = self.requested.get(reply.identification)
        if wanted is None or wanted not in (0, member.address):
            self.counters["redundancy.table_replies_dropped"] += 1  # answers nothing we asked
            return []
        self.counters["redundancy.table_replies_received"] += 1
        if self.asking.pop(key, None) is not None:  # it is answering
            self.timers.cancel(("ask", key))
        transfer = self.incoming.get(key)
        if transfer is None:
            transfer = self.incoming[key] = IncomingTransfer(member.address, reply.identification)
        effects: list[Effect] = []
        if transfer.receive(reply, now):
            for node in reply.nodes:
                if self.settings.holds(node.home_address):  # else not ours to hold
                    self.host.take(node, now, Source.DOWNLOAD)
        self.timers.schedule(("incoming", key), now + TRANSFER_IDLE)
        self.outbox.send(ack.body(), member)
        if transfer.done:
            self.counters["redundancy.table_transfers_received"] += 1
            log.info("table %x received from %s: %d mobile nodes", to_wire(reply.identification), member.name,
                     transfer.nodes)
            if reply.code != DEFERRED:  # whole or what differed: we hold everything it held when it answered
                gone = {m.address for m in self.membership if not m.up}
                self.sync_state.whole_table_received(member, gone)
            del self.incoming[key]
            self._close(key, now)
            self.timers.cancel(("incoming", key))
            self._gathered(reply.identification, now)
            startup = self.startup
            if startup is not None and reply.identification in startup.identifications:
                (startup.deferred if reply.code == DEFERRED else startup.answered).add(member.address)
                effects += self.check_startup(now)
        return effects

    def on_reply_ack(self, member: Member, ack: BindingTableReplyAck, now: float) -> list[Effect]:
        transfer = self.outgoing.get(member.address)
        if transfer is None or transfer.identification != ack.identification or not transfer.ack(ack.sequence):
            return []
        if ack.code == NOT_TAKEN:  # what it missed did not get there with this transfer (core/missed.py)
            transfer.missed = set()
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
        complete = expected <= startup.answered | startup.deferred and not receiving
        if complete and startup.deferred:  # the active member's table is in (or there is none): the rest
            for m in self.membership:
                if m.address in startup.deferred:
                    startup.deferred.discard(m.address)
                    if m.up:
                        request = self._request_for(self._request_identification(now), DIGEST)
                        startup.identifications.add(self._ask(m, request, now))
                    else:
                        startup.given_up.add(m.address)
            return []
        if not (complete and (startup.answered or now >= startup.deadline)):
            return []
        self.startup = None
        for ident in startup.identifications:
            if self.requested.get(ident) == 0:
                del self.requested[ident]
        for key in [k for k in self.asking if k[1] in startup.identifications]:  # members given up on: a
            del self.asking[key]  # member heard later is asked anew (``heard``)
            self.timers.cancel(("ask", key))
            self._close(key, now)
        self.timers.cancel("startup")
        log.info("table download done: %d bindings from %d member(s)", len(self.bindings), len(startup.answered))
        after, self._after = self._after, set()
        for m in self.membership.up():
            if m.address in after:  # asked of it while we started: what differs from all we now hold
                self._ask(m, self._request_for(self._request_identification(now), DIGEST), now)
            if self.missed.has(m.address):  # what we changed while starting (an operator's
                # removal) and they missed: they ask for it (core/missed.py)
                self._ask(m, self._request_for(self._request_identification(now), ASK_BACK | DIGEST), now)
        return self.host.downloaded(now)

    def _retransmit(self, key: tuple[int, int], now: float) -> list[Effect]:
        transfer = self.outgoing.get(key[0])
        member = self.membership.members.get(key[0])
        if transfer is None or member is None or transfer.identification != key[1]:
            return []
        try:
            again = transfer.overdue(now)
        except TimeoutError:
            del self.outgoing[key[0]]
            return self.host.mark_down(member, "table replies not acknowledged", now)
        self.counters["redundancy.table_replies_retransmitted"] += len(again)
        for _, body in again:
            self.outbox.send(body, member)
        if transfer.in_flight:
            self.timers.schedule(("transfer", key), now + RETRANSMIT_AFTER / 2)
        return self._pump(transfer, member, now)

    def _abandon(self, key: tuple[int, int], now: float) -> None:
        """A download stalled: ask the member again for the whole of it, with a new request (a part of a
        table is no table); ``_ask`` gives up on a member that never answers."""
        transfer = self.incoming.pop(key, None)
        if transfer is None:
            return
        asked = self.open.get(key[0])
        flags = asked.flags & DIGEST if asked is not None and asked.identification == key[1] else 0
        self._close(key, now)
        address, ident = key
        log.warning("table transfer %x from %s stalled; asking again", to_wire(ident), IPv4Address(address))
        self.counters["redundancy.table_transfers_abandoned"] += 1
        member = self.membership.members.get(address)
        startup = self.startup
        for_startup = startup is not None and ident in startup.identifications
        if member is None or not member.up:
            if for_startup:
                startup.given_up.add(address)  # type: ignore[union-attr]
            self._gathered(ident, now)
            return
        request = self._request_for(self._request_identification(now), flags)
        if for_startup:  # still the start-up download: the new request stands for the old
            startup.identifications.add(request.identification)  # type: ignore[union-attr]
        self._ask(member, request, now)
