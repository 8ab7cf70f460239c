"""The patent's replication (US 7,227,863 FIG 3 to 9): one member's view of its redundancy group, and
the one place that routes a member's datagram to the part that handles it.

* Table exchanges (FIG 4 and 5: start-up, catch-up, reconciliation): ``core/exchange.py``.
* Registration and de-registration (FIG 6 to 9): ``core/replication.py``.
* Messages to members, packed and sealed: ``core/outbox.py``.
* Liveness: every member advertises every ``advertisement_interval``; one not heard for its master-down
  interval is down; one heard again is asked for what changed meanwhile (``core/exchange.py``), which is
  how both halves of a healed partition catch up.
* The election (``core/election.py``) decides who holds the virtual address; ``core/sync.py`` keeps a
  member that missed what the group answered from being elected while an in-sync member is up.
* Trust and bounds (docs/security.md): only configured members are heard (``core/peers.py``); a member
  whose seal fails is reported, and two active members are logged as an error on both and counted.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
from collections import Counter
from collections.abc import Callable
from ipaddress import IPv4Address
from typing import Any, cast

from homeagent.config import ADVERTISEMENT_INTERVALS
from homeagent.core import events
from homeagent.core.bindings import BindingTable, Source
from homeagent.core.effects import ClaimAddress, Effect, ReleaseAddress, Send, Serve
from homeagent.core.election import Election, Event, Role, Transition, master_down_interval
from homeagent.core.exchange import TableExchange
from homeagent.core.missed import Missed
from homeagent.core.settings import GroupSettings, Mode
from homeagent.core.outbox import Outbox
from homeagent.core.peers import Member, Membership, Refused
from homeagent.core.registrar import Acceptance
from homeagent.core.replication import Replication
from homeagent.core.split_brain import SplitBrain
from homeagent.core.sync import SyncState
from homeagent.core.timers import Timers
from homeagent.core.transfer import state_of
from homeagent.wire.redundancy import (
    AckCode,
    OUT_OF_SYNC,
    STOOD_DOWN,
    YOU_LAG,
    Advertisement,
    BindingTableReply,
    BindingTableReplyAck,
    BindingTableRequest,
    BindingUpdate,
    BindingUpdateAck,
    MobileNodeBindings,
    RedundancyMessage,
    read_messages,
)

log = logging.getLogger("homeagent.redundancy")

UNKNOWN_ROLE = -1  # of a member heard again after a silence, until its next advertisement
KEY_HINT_EVERY = 10.0  # seconds between two "check the keys" errors about one member
# A transition's reason as a label (``redundancy.role_changes.<reason>``, the metrics' and the log's): the
# election's event, by name.
REASONS = {e.value: e.name.lower() for e in Event}


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
        self.sync_state = SyncState(counters)
        self.election = Election(
            settings.own_address, settings.priority, settings.advertisement_interval, settings.preempt, now,
            settings.external_election, self.sync_state, settle=settings.startup_wait + 4 * settings.advertisement_interval,
            preempt_delay=settings.preempt_delay,
        )
        self._virtual = str(IPv4Address(settings.virtual_address))
        self.outbox = Outbox(membership, settings.own_address, settings.port, settings.max_datagram,
                             settings.multicast_group)
        self.missed = Missed()  # our acceptances each member has not acknowledged
        self.replication = Replication(membership, bindings, self.outbox, self.missed, counters, settings,
                                       self.mark_down)
        self.exchange = TableExchange(self, membership, bindings, self.outbox, self.election, self.sync_state,
                                      self.missed, counters, self.timers, settings)
        self.split_brain = SplitBrain(self._virtual, counters)
        # Started as a standby with no active member heard: the data plane may hold a killed daemon's
        # "serving" (the ebpf backend's pinned program), left on until this member takes over or hears an
        # active member, when Serve(False) is said (``_apply_transitions``, ``_on_advertisement``).
        self._serve_false_due = False
        self._handlers: dict[type, Callable[[Member, Any, float], list[Effect]]] = {
            BindingUpdate: self._on_update,
            BindingUpdateAck: self._on_update_ack,
            Advertisement: self._on_advertisement,
            BindingTableRequest: self.exchange.on_request,
            BindingTableReply: self.exchange.on_reply,
            BindingTableReplyAck: self.exchange.on_reply_ack,
        }

    # -- state ----------------------------------------------------------------------------------------

    @property
    def role(self) -> str:
        if self.election.role is Role.INIT:
            return "init"
        return "peer" if self.settings.mode is Mode.PEER else self.election.role.label

    @property
    def serving(self) -> bool:
        """Whether this member answers registrations (every peer; in active-standby, the active member).
        Its data plane serves by ``forwarding``."""
        if self.election.role is Role.INIT:
            return False
        return self.settings.mode is Mode.PEER or self.election.role is Role.ACTIVE

    @property
    def forwarding(self) -> bool:
        """Whether this member's data plane serves (``Serve``): the holder of the virtual address, in peer
        mode too. Every peer answers registrations, but only one member may answer ARP for the home
        addresses on the link (two would make the neighbours' caches follow whichever answered last), and
        every member holds every tunnel, so the one that does can forward for all."""
        return self.election.role is Role.ACTIVE

    def status(self) -> dict[str, Any]:
        """Times as wall-clock Unix seconds, for people."""
        wall = self.membership.clock
        return {
            "role_since": wall(self.election.since),
            "in_sync": not self.sync_state.out_of_sync,
            "transitions": [
                {"from": t.old.label, "to": t.new.label, "reason": t.reason, "at": wall(t.at)}
                for t in self.election.history
            ],
            "peers": [
                {
                    "address": m.name,
                    "state": "up" if m.up else "down",
                    "priority": m.priority,
                    "role": Role(m.role).label if m.role in Role._value2member_map_ else "unknown",
                    "configured": True,
                    "in_sync": not m.out_of_sync,
                    "lagging": m.lagging_since is not None,
                    "last_heard": None if m.last_heard is None else wall(m.last_heard),
                    "advertisement_interval": m.interval,  # as it advertises it; None until heard
                }
                for m in self.membership
            ],
        }

    # -- start and stop -------------------------------------------------------------------------------

    def start(self, now: float) -> list[Effect]:
        """FIG 4: ask the group for its tables before serving; advertise from now on."""
        self.timers.schedule("advertise", now)
        return self.outbox.done(self.exchange.start(now), now)

    def told(self, active: bool, now: float) -> list[Effect]:
        """The external election's verdict (``homeagent role active|standby``, from keepalived's notify)."""
        if not self.election.external:
            raise ValueError("this member runs its own election (redundancy.election = \"internal\")")
        transitions = self.election.told(Role.ACTIVE if active else Role.STANDBY, now)
        return self.outbox.done(self._apply_transitions(transitions), now)

    def stop(self, now: float) -> list[Effect]:
        """Resign: advertise priority 0 so a standby takes over at once, and give the address back."""
        was_active = self.election.role is Role.ACTIVE
        effects = self._advertise(now, priority=0) if was_active else []
        effects += self._apply_transitions(self.election.stop(now))
        return self.outbox.done(effects, now)

    # -- registrations --------------------------------------------------------------------------------

    def replicate(self, accepted: Acceptance, reply: Send | None, now: float) -> list[Effect]:
        """FIG 6 and 8 (core/replication.py): the reply first, or held for the acks in sync mode."""
        return self.outbox.done(self.replication.replicate(accepted, reply, now), now)

    def holding(self, home_address: int, identification: int) -> bool:
        """Whether a sync reply to this registration is still waiting for acks."""
        return self.replication.holding(home_address, identification)

    def removed(self, home_address: int, care_of_address: int | None, identification: int, now: float) -> list[Effect]:
        """An administrative removal the table has made: replicated as a de-registration would be."""
        coa = home_address if care_of_address is None else care_of_address
        marker = Acceptance(home_address, coa, self.settings.virtual_address, 0, 0, identification)
        return self.replicate(marker, None, now)

    # -- datagrams from members -----------------------------------------------------------------------

    def receive(self, datagram: bytes, source: str, destination: str, now: float) -> list[Effect]:
        """A datagram from a member to ``destination`` (our address, or the multicast group's): one
        message, or several back to back, under one seal."""
        try:
            member, body = self.membership.open(datagram, _address(source), _address(destination), now)
        except Refused as refused:
            if refused.member is not None:
                self._unauthenticated(refused.member, datagram, now)
            return []
        messages, errors = read_messages(body)
        if errors:  # the bad messages only: the others in the datagram count (issue 10 point 4)
            self.counters["redundancy.messages_rejected"] += len(errors)
            log.debug("%d malformed message(s) from %s: %s", len(errors), member.name, errors[0].reason)
            if not messages:
                self.counters["redundancy.malformed"] += 1
                return []
        messages = self._bounded(messages)
        effects = self._heard(member, now)
        for message in messages:
            handler = self._handlers.get(type(message))
            if handler is not None:
                effects += handler(member, message, now)
        return self.outbox.done(effects, now)

    def _bounded(self, messages: list[RedundancyMessage]) -> list[RedundancyMessage]:
        """At most one Binding Table Request per datagram, the newest: a member has one transfer from us at a
        time, and a sender never packs two (docs/protocol.md, "Bounds")."""
        requests = [m for m in messages if type(m) is BindingTableRequest]
        if len(requests) <= 1:
            return messages
        self.counters["redundancy.table_requests_dropped"] += len(requests) - 1
        newest = max(requests, key=lambda r: cast(BindingTableRequest, r).identification)
        return [m for m in messages if type(m) is not BindingTableRequest or m is newest]

    def _unauthenticated(self, member: Member, datagram: bytes, now: float) -> None:
        """A configured member's address sent what its association does not verify: a forgery, or two
        configurations that disagree. While its genuine messages keep verifying it is a forgery (a
        reflection, say), counted and logged as every violation is. Otherwise say what to check, now and
        then; and if what it says (not to be acted on) is that it is active while we are, log the split
        brain it causes."""
        heard = member.last_heard
        if member.up and heard is not None and now - heard <= self._master_down_of(member):
            return
        if member.seal_failures_logged_at is None or now - member.seal_failures_logged_at >= KEY_HINT_EVERY:
            member.seal_failures_logged_at = now
            log.error("messages from member %s fail authentication: unless they are forged, the two members' "
                      "[[redundancy.security_association]] for each other (SPI, algorithm, key) or their "
                      "versions differ", member.name)
        if self.election.role is Role.ACTIVE:
            self.split_brain.unverified(member, datagram, self.election.master_down_interval, now)

    def _heard(self, member: Member, now: float) -> list[Effect]:
        first = member.last_heard is None
        member.last_heard = now
        if member.up:
            return []
        member.up = True
        member.role = UNKNOWN_ROLE  # what it became while we could not hear it, its next advertisement says
        events.emit(events.INFO, "peer_up", f"member {member.name} is up", peer=member.name)
        self.exchange.heard(member, first, now)
        return []

    def _on_update(self, member: Member, update: BindingUpdate, now: float) -> list[Effect]:
        self.counters["redundancy.updates_received"] += 1
        state = update.state()
        effects: list[Effect] = []
        if not self.settings.holds(state.home_address):
            code = AckCode.REFUSED
        else:
            code = AckCode.APPLIED if self.take(state, now) else AckCode.NOT_NEWER
        ack = BindingUpdateAck(code, update.home_address, update.identification)
        self.outbox.send(ack.body(), member)
        return effects

    def take(self, state: MobileNodeBindings, now: float, source: Source = Source.UPDATE) -> bool:
        """Merge a member's state for one node into ours (docs/protocol.md, "Merging after a partition");
        whether it told us anything new. What it changes reaches the data plane by the table's change
        stream (``BindingTable.changes``). ``source``: a Binding Update's, or a table download's."""
        return self.bindings.merge(state.home_address, state_of(state, now), now, source) is not None

    def _on_update_ack(self, member: Member, ack: BindingUpdateAck, now: float) -> list[Effect]:
        return self.replication.on_ack(member, ack, now)

    def _on_advertisement(self, member: Member, advert: Advertisement, now: float) -> list[Effect]:
        was = member.role
        member.priority, member.role = advert.priority, advert.role
        if advert.interval_ms:  # within what a member can be configured with (another version's, a typo)
            low, high = ADVERTISEMENT_INTERVALS
            member.interval = min(max(advert.interval_ms / 1000, low), high)
        member.out_of_sync = bool(advert.flags & OUT_OF_SYNC)
        if not self.exchange.starting:  # a starting member downloads everything, and is no candidate
            self.sync_state.advertised(member.address, bool(advert.flags & YOU_LAG))
        claims = advert.role == Role.ACTIVE or advert.flags & STOOD_DOWN
        if claims and advert.priority and self.election.role is Role.ACTIVE:
            ours = (self.settings.priority, self.settings.own_address)
            self.split_brain.advertised_active(member, was, advert.flags, ours, self.election.master_down_interval,
                                               now)
        resigned = self.mark_down(member, "resigned", now) if advert.priority == 0 else []
        transitions = self.election.advertisement(
            member.address, advert.priority, advert.role, now, in_sync=not member.out_of_sync,
            interval=member.interval,
        )
        if any(t.new is Role.ACTIVE for t in transitions):
            self.split_brain.preempted(member, now)
        effects = resigned + self._apply_transitions(transitions)
        if self._serve_false_due and self.election.role is Role.STANDBY and self.election.active_member is not None:
            self._serve_false_due = False  # an active member serves: a killed daemon's program must not
            effects.append(Serve(False))
        if claims and advert.priority and not transitions and self.election.role is Role.ACTIVE \
                and self.split_brain.announce_again(member, self.election.master_down_interval, now):
            effects.append(ClaimAddress(self._virtual, announce=True))
        return effects

    def unreachable(self, address: int, now: float) -> list[Effect]:
        """A datagram to ``address`` came back as ICMP port or protocol unreachable."""
        if address not in self.membership.members:
            return []
        self.counters["redundancy.member_unreachable"] += 1
        return self.outbox.done(self._apply_transitions(self.election.unreachable(address, now)), now)

    # -- table transfer -------------------------------------------------------------------------------

    # -- timers ---------------------------------------------------------------------------------------

    def next_timer(self) -> float | None:
        times = [self.timers.next(), self.election.next_timer(), self.replication.next_timer()]
        due = [t for t in times if t is not None]
        return min(due) if due else None

    def handle_timer(self, now: float) -> list[Effect]:
        effects = self._apply_transitions(self.election.handle_timer(now))
        effects += self.replication.handle_timer(now)
        for key in self.timers.due(now):
            if key == "advertise":
                effects += self._advertise(now)
                effects += self._check_liveness(now)
                self.exchange.remind(now)
                if self.election.role is Role.ACTIVE:  # again and again: a claim the address refused heals
                    effects.append(ClaimAddress(self._virtual))
                self.timers.schedule("advertise", now + self.settings.advertisement_interval)
            elif key == "startup":
                effects += self.exchange.startup_tick(now)
            else:
                kind, arg = cast(tuple[str, object], key)
                effects += self.exchange.on_timer(kind, arg, now)
        return self.outbox.done(effects, now)

    def _advertise(self, now: float, priority: int | None = None) -> list[Effect]:
        """To every member; a member that lags is told so in its own (``core/sync.py``)."""
        flags = OUT_OF_SYNC if self.sync_state.out_of_sync else 0
        flags |= self.split_brain.flags(self.election.master_down_interval, now)
        advert = Advertisement(
            self.settings.priority if priority is None else priority,
            int(self.election.role),
            int(self.settings.advertisement_interval * 1000),
            flags,
        )
        body, lagging = advert.body(), dataclasses.replace(advert, flags=flags | YOU_LAG).body()
        for m in self.membership:
            self.outbox.send(lagging if m.lagging_since is not None else body, m)
        return []

    def _check_liveness(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        for m in self.membership:
            if not m.up or m.last_heard is None:
                continue
            if now - m.last_heard > self._master_down_of(m):
                effects += self.mark_down(m, "not heard", now)
        return effects

    def _master_down_of(self, member: Member) -> float:
        """How long ``member`` may go unheard: by its own interval, as it advertises it (ours till heard),
        as a VRRPv3 backup times its master (RFC 5798 6.4.2)."""
        return master_down_interval(member.interval or self.settings.advertisement_interval, member.priority)

    def mark_down(self, member: Member, why: str, now: float, reconcile: bool = True) -> list[Effect]:
        if not member.up:
            return []
        member.up = False
        member.down_since = now
        if self.serving:
            self.sync_state.lags(member, now)
        events.emit(events.WARNING, "peer_down", f"member {member.name} is down: {why}", peer=member.name, reason=why)
        if member.address in self.sync_state.told_by and not self.exchange.starting:
            self.exchange.ask_whole_table(now)  # what it said we missed, another member must give us
        self.counters["redundancy.members_marked_down"] += 1
        if reconcile and self.election.role is Role.ACTIVE and not self.exchange.starting:
            self.exchange.reconcile(now)  # what it sent last may have reached only some of us
        return self.replication.lost(member)

    # -- helpers --------------------------------------------------------------------------------------

    def downloaded(self, now: float) -> list[Effect]:
        """The start-up download is done: the election may now make this member a candidate."""
        return self._apply_transitions(self.election.ready(now))

    def _apply_transitions(self, transitions: list[Transition]) -> list[Effect]:
        effects: list[Effect] = []
        vip = self._virtual
        for n, t in enumerate(transitions):
            reason = REASONS.get(t.reason, "other")
            events.emit(events.INFO, "role_change", f"role {t.old.label} -> {t.new.label}: {t.reason}",
                        **{"from": t.old.label, "to": t.new.label, "reason": reason})
            self.counters[f"redundancy.became_{t.new.label}"] += 1
            self.counters[f"redundancy.role_changes.{reason}"] += 1
            if t.new is Role.ACTIVE:
                if self.sync_state.out_of_sync:
                    self.counters["redundancy.stale_takeovers"] += 1
                    log.error("taking over out of sync: no in-sync member is up, and registrations answered while "
                              "this member lagged may be missing until their mobile nodes register again")
                for m in self.membership:
                    if not m.up:
                        self.sync_state.lags(m, t.at)  # what we answer from now on, the members down miss
                lost = self.membership.members.get(t.replaced) if t.replaced is not None else None
                if lost is not None:  # sync replies must not wait for its ack any more (reconciled below)
                    effects += self.mark_down(lost, "the active member was lost", t.at, reconcile=False)
                effects.append(ClaimAddress(vip, announce=True))
                effects += self._advertise(t.at)  # at once, as VRRP does: a second claimant steps down sooner
                self.exchange.reconcile(t.at)
                effects.append(Serve(True))
            elif t.old is Role.ACTIVE:
                if t.reason == Event.BETTER_ACTIVE.value:
                    self.split_brain.stood_down(t.at)
                effects.append(ReleaseAddress(vip))
                effects.append(Serve(False))
            elif t.old is Role.INIT and all(u.new is not Role.ACTIVE for u in transitions[n + 1:]):
                # A start as standby: the data plane may hold a killed daemon's "serving". (Not on the
                # way to active in the same step: what serves goes on serving.) With nobody active heard
                # it goes on serving too, until the takeover one master-down interval later: a member
                # restarted alone forwards throughout; one that hears an active member stops then.
                if self.election.external or self.election.active_member is not None:
                    effects.append(Serve(False))
                else:
                    self._serve_false_due = True
            if t.new is not Role.STANDBY:
                self._serve_false_due = False  # active: Serve(True) said; init: stopping
        return effects


def _address(dotted: str) -> int:
    return int.from_bytes(socket.inet_aton(dotted), "big")
