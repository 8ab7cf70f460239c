"""The Home Agent core: one thin object that routes inputs to the machines that decide (the registrar,
the binding table, and with redundancy the group), and collects their effects. The runtime owns sockets
and clocks; this object owns neither."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import fields, replace
from ipaddress import IPv4Address
from typing import Any, NamedTuple, cast

from homeagent import __version__
from homeagent.config import Config, ElectionKind, Replication
from homeagent.core import events
from homeagent.core.bindings import BindingTable, NodeState, Source
from homeagent.core.clock import WallClock
from homeagent.core.violations import SecurityViolations
from homeagent.core.effects import Address, Effect, Send, Serve
from homeagent.core.group import Group
from homeagent.core.settings import GroupSettings, Mode
from homeagent.core.peers import Membership
from homeagent.core.registrar import Registrar, RegistrarSettings
from homeagent.core.replay import TimestampReplayProtection, ntp_identification
from homeagent.core.security import SecurityAssociations
from homeagent.wire.era import from_wire, to_wire
from homeagent.wire.registration import MessageType
from homeagent.wire.redundancy import RedundancyType

_REGISTRATION = MessageType.REGISTRATION_REQUEST


class Counts(Counter[str]):
    """The Home Agent's counters: a Counter whose item assignment is dict's own. Counter defines
    ``__delitem__`` in Python, and that alone sends every ``counters[key] += 1`` through a Python-level
    dispatch that doubles its cost; the core counts twice or more per datagram. The one difference: ``del``
    of a key that is not there raises KeyError, as for a dict (nothing deletes counters)."""

    __setitem__ = dict.__setitem__
    __delitem__ = dict.__delitem__  # type: ignore[assignment]
_REDUNDANCY = frozenset(int(t) for t in RedundancyType)
# The [home_agent] keys a reload applies (besides the associations); every other changed key needs a restart.
RELOADABLE = ("max_lifetime", "replay_tolerance", "simultaneous_bindings")


class Restored(NamedTuple):
    """What ``HomeAgent.restore`` loaded: the tunnels to set up, and the nodes to write back."""

    tunnels: list[Effect]
    changed: list[int]  # home addresses whose state the load changed: the store's record is stale


class HomeAgent:
    def __init__(self, config: Config, now: float) -> None:
        ha, red = config.home_agent, config.redundancy
        self.config = config
        self.counters: Counter[str] = Counts()
        self.clock = WallClock()  # the runtime keeps its offset current; ``now`` is always monotonic
        self.violations = SecurityViolations(self.counters)  # one count and one log budget for all kinds
        self.bindings = BindingTable()
        self.started = now
        self.counters_since = now  # the start, or the last ``reset_counters``
        self._own = str(ha.address)
        self._virtual = str(red.virtual_address) if red else None
        own = int(ha.address)
        self.registrar = Registrar(
            RegistrarSettings(
                home_agent_addresses=frozenset({own, int(red.virtual_address)} if red else {own}),
                unicast_address=int(red.virtual_address) if red else own,  # what a 136 reply names
                home_network=ha.home_network,
                max_lifetime=ha.max_lifetime,
                simultaneous_bindings=ha.simultaneous_bindings,
                reserved_home_addresses=frozenset(int(a) for a in config.reserved_home_addresses),
            ),
            SecurityAssociations((sa.home_addresses, sa.association) for sa in config.security_associations),
            self.bindings,
            TimestampReplayProtection(ha.replay_tolerance, self.clock),
            self.counters,
            self.violations,
        )
        self.group: Group | None = None
        if red is not None:
            membership = Membership(
                own,
                [int(p) for p in red.peers],
                SecurityAssociations((psa.peers, psa.association) for psa in red.security_associations).first_covering,
                ha.replay_tolerance,
                self.counters,
                self.clock,
                self.violations,
            )
            settings = GroupSettings(
                own_address=own,
                virtual_address=int(red.virtual_address),
                port=ha.port,
                mode=red.mode,
                priority=red.priority,
                sync=red.replication is Replication.SYNC,
                sync_timeout=red.sync_timeout,
                advertisement_interval=red.advertisement_interval,
                preempt=red.preempt,
                preempt_delay=red.preempt_delay,
                startup_wait=red.startup_wait,
                max_datagram=red.max_datagram,
                home_network=ha.home_network,
                multicast_group=int(red.multicast_group) if red.multicast_group else None,
                external_election=red.election is ElectionKind.EXTERNAL,
            )
            self.group = Group(settings, membership, self.bindings, self.counters, now)
            self.registrar.report_accepted = True

    @property
    def role(self) -> str:
        return self.group.role if self.group else "active"  # a lone Home Agent serves from the start

    # -- inputs ---------------------------------------------------------------------------------------

    def start(self, now: float) -> list[Effect]:
        """A lone Home Agent serves from the start; a member once the group says so (``Serve``)."""
        return self.group.start(now) if self.group else [Serve(True)]

    def stop(self, now: float) -> list[Effect]:
        return self.group.stop(now) if self.group else []

    def begin_batch(self) -> None:
        """Hold messages to members until ``end_batch``, so a burst of registrations replicates in a few
        datagrams (the runtime brackets each drain of its sockets with these)."""
        if self.group is not None:
            self.group.outbox.batching = True

    def end_batch(self, now: float) -> list[Effect]:
        if self.group is None:
            return []
        self.group.outbox.batching = False
        return self.group.outbox.flush(now)

    def receive_datagram(self, data: bytes, source: Address, local: str, now: float) -> list[Effect]:
        """A datagram that arrived on ``local`` (our own address or the virtual address) from ``source``."""
        if self.group is None:  # a lone Home Agent: everything that arrives is for the registrar
            effects = self.registrar.receive(data, source, now)
        else:
            kind = data[0] if data else -1
            if kind == _REGISTRATION:
                if not self._serves(local):
                    self.counters["discarded.not_serving"] += 1
                    if events.enabled(events.DEBUG):
                        events.discarded(events.DEBUG, "discarded", now, f"discarded from {events.source(source)}: "
                                         f"a registration on {local}, which this member does not serve now",
                                         reason="not_serving", source=events.source(source))
                    return []
                return self.receive_registration(data, source, now, local)
            if kind not in _REDUNDANCY or local == self._virtual:
                self.counters["discarded.malformed"] += 1
                if events.enabled(events.DEBUG):
                    events.discarded(events.DEBUG, "discarded", now, f"discarded from {events.source(source)}: "
                                     f"neither a registration nor a member's message on {local}",
                                     reason="malformed", source=events.source(source))
                return []
            effects = self.group.receive(data, source[0], local, now)
        effects += self.bindings.changes()
        return effects

    def _serves(self, local: str) -> bool:
        group = self.group
        assert group is not None
        if not group.serving:
            return False
        return local == self._virtual or (group.settings.mode is Mode.PEER and local == self._own)

    def receive_registration(
        self, data: bytes, source: Address, now: float, local: str | None = None
    ) -> list[Effect]:
        registrar = self.registrar
        effects = registrar.receive(data, source, now)
        effects += self.bindings.changes()
        if self.group is None:
            return effects
        accepted = registrar.accepted
        if accepted is not None:
            registrar.accepted = None
            reply = cast(Send, effects[0])
            # A reply held for acks leaves later, from whatever socket is then at hand: name its address.
            held = Send(reply.datagram, reply.address, local)
            return self.group.replicate(accepted, held, now) + effects[1:]
        if (
            self.group is not None
            and self.group.settings.sync
            and effects
            and len(data) >= 24
            and self.group.holding(int.from_bytes(data[4:8], "big"), from_wire(int.from_bytes(data[16:24], "big")))
        ):
            return []  # a retransmission of a request whose reply waits for acks: that reply answers it
        return effects

    def restore(self, states: Iterable[tuple[int, NodeState]], now: float) -> Restored:
        """Load the store's states at start, before ``start`` (runtime/persistence.py): each merged into the
        table as a member's state is (core/node_state.py), so bindings ended by ``now`` are dropped (each
        leaving its tombstone) and the timer wheel gets the rest; in a group the start-up download then
        merges the group's states on top, which the Identification ordering makes safe whichever is newer.
        A home address this configuration does not serve any more (outside ``home_network``, or reserved)
        is left out. Returns the tunnels of what was loaded, and the nodes whose state the load changed (a
        binding ended, a tombstone due, while no daemon ran), for the store to write again: otherwise
        every later start would load, and count as ended, the same bindings again."""
        ha = self.config.home_agent
        mask, prefix = int(ha.home_network.netmask), int(ha.home_network.network_address)
        reserved = {int(a) for a in self.config.reserved_home_addresses}
        table, counters = self.bindings, self.counters
        merge = table.merge
        held, nodes, bindings, not_served = len(table), 0, 0, 0
        changed: list[int] = []
        for home_address, state in states:
            if home_address & mask != prefix or home_address in reserved:
                not_served += 1
                continue
            nodes += 1
            bindings += len(state.bindings)
            merged = merge(home_address, state, now, Source.STORE)
            if (len(merged[1]) if merged else 0) < len(state.bindings) or (
                    state.tombstones and any(t.forget_at <= now for t in state.tombstones)):
                changed.append(home_address)
        counters["store.loaded_nodes"] += nodes
        counters["store.loaded_bindings"] += len(table) - held
        counters["store.expired_at_load"] += bindings - (len(table) - held)
        counters["store.not_served"] += not_served
        return Restored(list(table.changes()), changed)

    def remove(self, home_address: int, care_of_address: int | None, now: float) -> list[Effect]:
        """An operator removes a binding (or all of a node's): replicated like a de-registration.

        It takes the current time as its Identification (one above the node's last if that is ahead),
        which orders it after every registration seen so far and before any the node sends later. A
        timestamp of now, rather than the last one plus one, keeps it inside the Recent window of the
        exchanges that reconcile members after a failover or a partition.
        """
        last = self.bindings.last_identification(home_address)
        if last is None:
            return []
        identification = max(last + 1, ntp_identification(self.clock(now)))
        removed = self.bindings.deregister(home_address, care_of_address, identification, now)
        self.counters["removed"] += len(removed)
        if events.enabled(events.INFO):
            for b in removed:
                events.binding(events.INFO, "binding_removed", "binding removed by the operator", b.home_address,
                               b.care_of_address, identification=to_wire(identification))
        effects: list[Effect] = list(self.bindings.changes())
        if self.group is not None:
            effects += self.group.removed(home_address, care_of_address, identification, now)
        return effects

    def reset_counters(self, now: float) -> None:
        """``homeagent status --reset-counters``: every counter back to zero, in place (the machines that
        count hold this very Counter). Counters only: bindings, replay state, peers, the role and its
        history are state, and stay. ``counters_since`` in the status says from when they count. The
        replication lag histogram is counts too, and goes with them."""
        self.counters.clear()
        if self.group is not None:
            self.group.replication.lag.reset()
        self.counters_since = now

    def set_role(self, role: str, now: float) -> list[Effect]:
        """``active`` or ``standby``, as an external election decided."""
        if self.group is None:
            raise ValueError("a lone Home Agent has no role to change")
        if role not in ("active", "standby"):
            raise ValueError(f"role must be active or standby, not {role!r}")
        return self.group.told(role == "active", now)

    def unreachable(self, address: str, now: float) -> list[Effect]:
        """ICMP said nothing listens at ``address`` (our port): a member whose process is gone."""
        return self.group.unreachable(int(IPv4Address(address)), now) if self.group else []

    def handle_timer(self, now: float) -> list[Effect]:
        expired = self.bindings.expire(now)
        self.counters["expired"] += len(expired)
        if expired and events.enabled(events.INFO):
            for b in expired:
                events.binding(events.INFO, "binding_expired", "binding expired", b.home_address, b.care_of_address,
                               lifetime=b.lifetime, identification=to_wire(b.identification))
        effects: list[Effect] = self.group.handle_timer(now) if self.group is not None else []
        effects += self.bindings.changes()
        return effects

    def next_timer(self) -> float | None:
        times = [t for t in (self.bindings.next_expiry(), self.group.next_timer() if self.group else None) if t]
        return min(times) if times else None

    # -- reload ---------------------------------------------------------------------------------------

    def reload(self, config: Config) -> list[str]:
        """Take from ``config`` what can change while bindings are held, and return the keys that differ
        but need a restart (``home_agent.port``...), which keep their running values.

        What changes: the mobile nodes' associations, ``max_lifetime``, ``replay_tolerance`` and
        ``simultaneous_bindings`` (each judges only requests still to come: a binding keeps the lifetime
        it was granted), and the members' associations. Everything else shapes sockets, the election or
        the addresses reserved from mobile nodes, which the running daemon has already built on.
        """
        old, ha, red = self.config, self.config.home_agent, self.config.redundancy
        new_ha, new_red = config.home_agent, config.redundancy
        restart = [
            f"home_agent.{f.name}" for f in fields(ha)
            if f.name not in RELOADABLE and getattr(ha, f.name) != getattr(new_ha, f.name)
        ]
        if (red is None) != (new_red is None):
            restart.append("redundancy")
        elif red is not None and new_red is not None:
            restart += [
                f"redundancy.{f.name}" for f in fields(red)
                if f.name != "security_associations" and getattr(red, f.name) != getattr(new_red, f.name)
            ]
        restart += [
            f"dataplane.{f.name}" for f in fields(old.dataplane)
            if getattr(old.dataplane, f.name) != getattr(config.dataplane, f.name)
        ]
        if old.metrics != config.metrics:
            restart.append("metrics.listen")

        applied_ha = replace(
            ha,
            max_lifetime=new_ha.max_lifetime,
            replay_tolerance=new_ha.replay_tolerance,
            simultaneous_bindings=new_ha.simultaneous_bindings,
        )
        applied_red = red
        if red is not None and new_red is not None:
            applied_red = replace(red, security_associations=new_red.security_associations)
        registrar = self.registrar
        settings = replace(
            registrar.settings,
            max_lifetime=applied_ha.max_lifetime,
            simultaneous_bindings=applied_ha.simultaneous_bindings,
        )
        security = SecurityAssociations((sa.home_addresses, sa.association) for sa in config.security_associations)
        if self.group is not None and applied_red is not None:
            members = SecurityAssociations((psa.peers, psa.association) for psa in applied_red.security_associations)
            self.group.membership.rekey(members.first_covering)
            self.group.membership.tolerance = applied_ha.replay_tolerance
        registrar.replay.tolerance = applied_ha.replay_tolerance
        registrar.reconfigure(settings, security)
        self.config = replace(
            old,
            home_agent=applied_ha,
            security_associations=config.security_associations,
            redundancy=applied_red,
            log=config.log,
        )
        return restart

    # -- views ----------------------------------------------------------------------------------------

    def status(self, now: float) -> dict[str, Any]:
        ha = self.config.home_agent
        out: dict[str, Any] = {
            "version": __version__,
            "role": self.role,
            "role_since": self.clock(self.started),
            "uptime": round(now - self.started, 3),
            "address": str(ha.address),
            "port": ha.port,
            "bindings": len(self.bindings),
            "security_violations": self.violations.total,
            "peers": [],
            "counters": dict(sorted(self.counters.items())),
            "counters_since": self.clock(self.counters_since),
        }
        if self.group is not None:
            out.update(self.group.status())
            out["virtual_address"] = self._virtual
            out["mode"] = self.group.settings.mode.value
            out["replication"] = "sync" if self.group.settings.sync else "async"
        return out

    def binding_list(self, now: float, home_address: IPv4Address | None = None) -> list[dict[str, Any]]:
        """The table (or one mobile node's bindings) as rows, in one go. For one node, or a caller that can
        wait: the control socket walks the whole table a page at a time instead (core/listing.py), and
        this gives the same rows in the same order."""
        from homeagent.core.listing import BindingWalk

        return BindingWalk(self.bindings, None if home_address is None else int(home_address)).rest(now)
