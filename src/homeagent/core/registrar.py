"""Registration processing at the Home Agent (RFC 5944 section 3.8).

The order of checks follows section 3.8.2.1 (authentication, then Identification) and then the
administrative checks of 3.8.2.3 and RFC 3024; ``docs/registration.md`` gives the whole order and the
reason for each decision the RFC leaves open. A denied request never changes a binding. Silently
discarded messages (RFC 5944 section 1.6) are counted, never answered.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import NamedTuple

from homeagent.core import events
from homeagent.core.bindings import Binding, BindingTable
from homeagent.core.effects import Address, Effect, Send
from homeagent.core.replay import TimestampReplayProtection
from homeagent.core.security import SecurityAssociations
from homeagent.core.violations import SecurityViolations
from homeagent.wire.auth import SecurityAssociation
from homeagent.wire.era import to_wire
from homeagent.wire.errors import ParseError
from homeagent.wire.extensions import ExtensionType
from homeagent.wire.registration import Flags, RegistrationRequest, ReplyCode, reply_header


# Plain ints: IntFlag arithmetic costs more than the rest of the hot path's flag tests together.
_S, _T = int(Flags.S), int(Flags.T)
_RESERVED = int(Flags.r | Flags.x)
_UNOFFERED_ENCAPSULATION = int(Flags.M | Flags.G)  # we tunnel with IP-in-IP only (RFC 5944 section 4.1)
_NOT_CARE_OF_NETWORKS = frozenset({0, 127})  # 0/8 "this network" and 127/8 loopback (RFC 1122 3.2.1.3)
_MHAE = int(ExtensionType.MOBILE_HOME_AUTH)
_FHAE = int(ExtensionType.FOREIGN_HOME_AUTH)
_UNKNOWN_HOME_AGENT = int(ReplyCode.UNKNOWN_HOME_AGENT_ADDRESS)
_new = tuple.__new__  # a reply's Send, without the named tuple's Python-level __new__ (wire/registration.py)
_DEBUG, _INFO = events.DEBUG, events.INFO
_enabled = events.enabled


class Acceptance(NamedTuple):
    """A registration or de-registration the registrar accepted: what the group replicates. Reported
    beside the effects (``Registrar.accepted``), never among them: the runtime has nothing to do with it."""

    home_address: int
    care_of_address: int
    home_agent: int
    flags: int
    lifetime: int  # granted; 0 for a de-registration
    identification: int


@dataclass(frozen=True)
class RegistrarSettings:
    home_agent_addresses: frozenset[int]  # a request naming any of these in its Home Agent field is ours
    unicast_address: int  # what a 136 reply names (RFC 5944 section 3.8.3.2)
    home_network: IPv4Network
    max_lifetime: int
    simultaneous_bindings: int  # most bindings per mobile node; 0: unsupported, accepted with code 1
    reserved_home_addresses: frozenset[int] = frozenset()  # refused with 129 (Config.reserved_home_addresses)


class Registrar:
    def __init__(
        self,
        settings: RegistrarSettings,
        security: SecurityAssociations,
        bindings: BindingTable,
        replay: TimestampReplayProtection,
        counters: Counter[str],
        violations: SecurityViolations | None = None,
    ) -> None:
        self.bindings = bindings
        self.replay = replay
        self.counters = counters
        self.violations = violations or SecurityViolations(counters)
        self.report_accepted = False  # keep each acceptance in ``accepted`` (for replication)
        self.accepted: Acceptance | None = None  # the last one, until the caller takes it
        self._tombstone_lifetime = 0.0
        self.reconfigure(settings, security)

    def reconfigure(self, settings: RegistrarSettings, security: SecurityAssociations) -> None:
        """New settings and associations (at start, and on a reload): they judge the requests to come; the
        bindings already granted stay as they are."""
        self.settings = settings
        self.security = security
        # What every request reads, as plain attributes: one lookup each, not two.
        self._home_agent_addresses = settings.home_agent_addresses
        self._reserved = settings.reserved_home_addresses
        self._max_lifetime = settings.max_lifetime
        self._simultaneous = settings.simultaneous_bindings
        net = settings.home_network
        self._home_mask = int(net.netmask)
        self._home_prefix = int(net.network_address)
        self._accept_code = (
            ReplyCode.ACCEPTED if settings.simultaneous_bindings else ReplyCode.ACCEPTED_NO_SIMULTANEOUS_BINDINGS
        )
        # A de-registration's tombstone must outlive every binding it can cancel (docs/protocol.md, "Merging
        # after a partition"): one granted at most max_lifetime, and accepted, with an older Identification,
        # at most two replay tolerances after the de-registration. Never shortened while we run: bindings
        # granted before a reload keep the lifetimes granted then.
        self._tombstone_lifetime = max(self._tombstone_lifetime,
                                       float(settings.max_lifetime + 2 * self.replay.tolerance))
        self.bindings.tombstone_lifetime = self._tombstone_lifetime

    def receive(self, data: bytes, source: Address, now: float) -> list[Effect]:
        """Process one Registration Request from ``source``; return the reply and binding changes."""
        counters = self.counters
        counters["requests"] += 1
        try:
            request = RegistrationRequest.parse(data)
        except ParseError as exc:
            counters["discarded.malformed"] += 1
            self._discarded(now, source, "malformed", exc.reason)
            return []

        # RFC 5944 3.8.2.1 (a): an association, and an authorization-enabling extension, or silence.
        associations = self.security.covering(request.home_address)
        if associations is None:
            counters["discarded.no_security_association"] += 1
            self._discarded(now, source, "no_security_association", "no security association covers the home address",
                            request.home_address)
            return []
        extensions = request.extensions
        mhae = extensions[0] if len(extensions) == 1 and extensions[0].type == _MHAE else request.extension(_MHAE)
        if mhae is None:
            counters["discarded.no_authentication"] += 1
            self._discarded(now, source, "no_authentication", "no Mobile-Home Authentication Extension",
                            request.home_address)
            return []
        sa = associations.get(mhae.spi)
        if sa is None or not sa.verify(request.raw, mhae):
            self._security_event(now, "authentication failed", request, source)
            return self._deny(request, source, ReplyCode.MOBILE_NODE_FAILED_AUTHENTICATION,
                              sa or next(iter(associations.values())), None, now)
        # (d): we share no association with any foreign agent, so a Foreign-Home extension is refused.
        if len(extensions) > 1 and request.extension(_FHAE) is not None:
            counters["discarded.foreign_home_authentication"] += 1
            self._discarded(now, source, "foreign_home_authentication",
                            "a Foreign-Home Authentication Extension from a foreign agent we share nothing with",
                            request.home_address)
            return []

        # (b): the Identification. An exact duplicate of the current registration, its timestamp within the
        # tolerance, is answered again without extending its lifetime (3.8.2.2); anything else stale is a
        # replay or a clock skew.
        hoa, coa = request.home_address, request.care_of_address
        held = self.bindings.lookup(hoa)
        last, current = held
        if current and (len(current) > 1 or current[0].expires <= now):
            current = tuple(b for b in current if b.expires > now)  # ended, not yet swept by the timer
        for b in current:
            if (
                b.identification == request.identification
                and b.care_of_address == coa
                and b.flags == request.flags
                and request.lifetime
                and b.lifetime == min(request.lifetime, self._max_lifetime)
                and self.replay.is_fresh(request.identification, None, now)  # a copy from longer ago: a replay
            ):
                counters["accepted.duplicate"] += 1
                # Whole seconds left, but never 0, which would read as "deregistered" (RFC 5944 3.4).
                remaining = max(1, int(b.remaining(now)))
                if _enabled(_DEBUG):
                    events.binding(_DEBUG, "binding_duplicate", "retransmitted registration answered again", hoa, coa,
                                   remaining=remaining, identification=to_wire(request.identification),
                                   source=events.source(source))
                return [self._reply(request, source, self._accept_code, remaining, sa)]
        if not self.replay.is_fresh(request.identification, last, now):
            self._security_event(now, "identification mismatch", request, source)
            ident = self.replay.mismatch_identification(request.identification, now)
            return self._deny(request, source, ReplyCode.IDENTIFICATION_MISMATCH, sa, ident, now)

        code = self._administrative_check(request, current)
        if code is not None:
            return self._deny(request, source, code, sa, None, now)
        if request.lifetime == 0:
            return self._deregister(request, source, sa, now)
        return self._register(request, source, sa, now, held)

    # -- decisions ------------------------------------------------------------------------------------

    def _administrative_check(self, request: RegistrationRequest, current: tuple[Binding, ...]) -> ReplyCode | None:
        flags, lifetime, hoa, home_agent, coa, _, extensions, _ = request
        if home_agent not in self._home_agent_addresses:
            return ReplyCode.UNKNOWN_HOME_AGENT_ADDRESS
        if flags & _RESERVED:  # 3.8.2.3: non-zero reserved bits MUST be rejected with 134
            return ReplyCode.POORLY_FORMED_REQUEST
        if len(extensions) > 1 and sum(e.type == _MHAE for e in extensions) > 1:
            return ReplyCode.POORLY_FORMED_REQUEST  # 3.5.2: exactly one Mobile-Home Authentication Extension
        if lifetime and (coa == hoa or coa >> 24 in _NOT_CARE_OF_NETWORKS or coa >> 28 >= 0xE
                         or (self._home_mask and coa & self._home_mask == self._home_prefix)
                         or coa in self._reserved):  # ours, the virtual address, the members'
            return ReplyCode.POORLY_FORMED_REQUEST  # a care-of address no tunnel can reach (decision B)
        if hoa == 0 or hoa & self._home_mask != self._home_prefix:
            return ReplyCode.ADMINISTRATIVELY_PROHIBITED  # 3.8.3.2: we assign no home addresses
        if hoa in self._reserved:
            return ReplyCode.ADMINISTRATIVELY_PROHIBITED  # a router's address or the network's own
        if lifetime and flags & _UNOFFERED_ENCAPSULATION:
            return ReplyCode.ENCAPSULATION_UNAVAILABLE  # RFC 3024 section 4.2.2
        limit = self._simultaneous
        if lifetime and flags & _S and limit:
            if len(current) >= limit and all(b.care_of_address != coa for b in current):
                return ReplyCode.TOO_MANY_SIMULTANEOUS_BINDINGS
        return None

    def _register(
        self,
        request: RegistrationRequest,
        source: Address,
        sa: SecurityAssociation,
        now: float,
        held: tuple[int | None, tuple[Binding, ...]],
    ) -> list[Effect]:
        flags, requested, hoa, home_agent, coa, identification, _, _ = request
        lifetime = min(requested, self._max_lifetime)
        simultaneous = flags & _S != 0 and self._simultaneous > 0
        self.bindings.bind(hoa, coa, lifetime, identification, now, flags, simultaneous, home_agent, held)
        self.counters["accepted"] += 1
        if _enabled(_INFO):  # a new binding logs at info, a renewal (its care-of address bound) at debug
            current = held[1]
            if len(current) == 1:
                renewed = current[0][1] == coa and current[0][3] > now
            else:
                renewed = any(b.care_of_address == coa and b.expires > now for b in current)
            if not renewed or _enabled(_DEBUG):
                self._log_binding(_DEBUG if renewed else _INFO, request, source, lifetime)
        if self.report_accepted:
            self.accepted = Acceptance(hoa, coa, home_agent, flags, lifetime, identification)
        return [self._reply(request, source, self._accept_code, lifetime, sa)]

    def _deregister(
        self, request: RegistrationRequest, source: Address, sa: SecurityAssociation, now: float
    ) -> list[Effect]:
        hoa, coa = request.home_address, request.care_of_address
        # The home address as care-of address: every binding (RFC 5944 3.8.2.2); else that one's, and its
        # tombstone, forgotten after bindings.tombstone_lifetime.
        removed = self.bindings.deregister(hoa, None if coa == hoa else coa, request.identification, now,
                                           returned_home=coa == hoa)
        self.counters["accepted.deregistration"] += 1
        if _enabled(_INFO):
            events.binding(_INFO, "binding_deregistered", "binding de-registered", hoa, coa,
                           removed=len(removed), identification=to_wire(request.identification),
                           source=events.source(source))
        if self.report_accepted:
            self.accepted = Acceptance(hoa, coa, request.home_agent, request.flags, 0, request.identification)
        return [self._reply(request, source, self._accept_code, 0, sa)]

    # -- replies --------------------------------------------------------------------------------------

    def _deny(
        self,
        request: RegistrationRequest,
        source: Address,
        code: ReplyCode,
        sa: SecurityAssociation,
        identification: int | None = None,
        now: float = 0.0,
    ) -> list[Effect]:
        self.counters[f"denied.{int(code)}"] += 1
        if _enabled(_DEBUG):
            home, sender = events.dotted(request.home_address), events.source(source)
            events.discarded(_DEBUG, "denied", now, f"denied {home} from {sender}: {code.name}", code=int(code),
                             home_address=home, care_of_address=events.dotted(request.care_of_address), source=sender)
        lifetime = min(request.lifetime, self._max_lifetime)  # 3.8.3.2 sets it for every reply
        return [self._reply(request, source, code, lifetime, sa, identification)]

    def _reply(
        self,
        request: RegistrationRequest,
        source: Address,
        code: int,
        lifetime: int,
        sa: SecurityAssociation,
        identification: int | None = None,
    ) -> Send:
        _, _, home_address, home_agent, _, ident, _, _ = request
        if code == _UNKNOWN_HOME_AGENT:
            home_agent = self.settings.unicast_address
        if identification is not None:
            ident = identification
        header = reply_header(code, lifetime, home_address, home_agent, ident)
        return _new(Send, (sa.sign(header), source, None))

    def _security_event(self, now: float, what: str, request: RegistrationRequest, source: Address) -> None:
        """A security exception (3.8.2.1): counted, and logged with the source within the shared budget."""
        self.violations.report("security_violations", now, logging.WARNING, "%s: home address %s from %s:%d",
                               what, IPv4Address(request.home_address), *source, reason=what.replace(" ", "_"),
                               home_address=events.dotted(request.home_address), source=events.source(source))

    def _log_binding(self, level: int, request: RegistrationRequest, source: Address, lifetime: int) -> None:
        """A binding accepted (new: its care-of address was not bound) or renewed, as an event."""
        renewed = level == _DEBUG
        events.binding(level, "binding_renewed" if renewed else "binding_accepted",
                       "binding renewed" if renewed else "binding accepted", request.home_address,
                       request.care_of_address, lifetime=lifetime, identification=to_wire(request.identification),
                       flags=f"{request.flags:#04x}", source=events.source(source))

    @staticmethod
    def _discarded(now: float, source: Address, reason: str, why: str, home_address: int | None = None) -> None:
        """A request discarded without a reply (RFC 5944 1.6), at debug within the budget (core/events.py)."""
        if not _enabled(_DEBUG):
            return
        fields: dict[str, object] = {"reason": reason, "source": events.source(source)}
        if home_address is not None:
            fields["home_address"] = events.dotted(home_address)
        events.discarded(_DEBUG, "discarded", now, f"discarded from {fields['source']}: {why}", **fields)
