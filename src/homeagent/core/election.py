"""Who is active: an election among the members of a group, in the manner of VRRPv3 (RFC 5798).

Every member advertises its priority and state every ``interval``. A standby that hears no active member
for the master-down interval (3 × interval + skew, the skew shorter for a higher priority; the interval the
active member's advertisements carry, as RFC 5798 6.4.2's Master_Adver_Interval) becomes active;
an active member that hears a better active member (higher priority, then higher address) steps down, so a
split brain ends as soon as the halves hear each other; with preemption a standby better than every active
member it hears, and than every in-sync standby, takes over (a standby that outranks only the worse of two
active members would make a third, and two that outrank the active member would both take over); priority 0 from the active (a graceful stop) lets the standbys take over after the skew alone;
an ICMP port unreachable from the active member's host (its process died, the host did not) shortens the
wait to 1.5 intervals.
A member still downloading the table (``init``) is never elected, and a member out of sync (it missed
what the group answered: ``core/sync.py``) is not elected while an in-sync member is heard: it neither
takes over nor preempts, and the other standbys do not wait for it. Unlike VRRP, standbys advertise too, so
a standby whose master-down timer runs out while a better standby is alive waits one more interval for
that one to take over: the skews of close priorities differ by milliseconds, less than a loaded host's
scheduling delay, and without this two standbys would both take over and one step down again.
A member that has just become a standby also waits for a better member it hears still downloading (``init``)
during the start-up settle (``settle`` seconds from its own start): members started together, a few hundred
milliseconds apart, then do not take over one after another and be preempted in turn (VRRP's start-up
wait does the same with its skew). The settle is bounded, so a better member stuck downloading never keeps
the group without an active member for longer.
With ``preempt_delay`` a member preempts only once it has stood by that long, as keepalived's
``preempt_delay`` and HSRP's ``standby preempt delay minimum`` have it (RFC 5798 itself has no such delay:
its better backup preempts a master-down interval after it starts ignoring the worse master, section
6.4.2). The clock starts each time the member becomes a standby, after its table download or after
stepping down, so a member that restarts again and again
(a flapping host, a crash loop) does not pull the role back and forth at every start, and a member just
back gets the time to settle (its data plane, its routes) before it takes the load. Taking over a group
that has no active member is not preempting, and never waits for it.

The rules live in one table, as h11 keeps its state machine: ``TRANSITIONS[state][event] -> state``; an
event a state has no entry for changes nothing.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from homeagent.core.sync import SyncState


GONE_WAIT = 1.5  # intervals a standby still waits once the active member's port is unreachable


def master_down_interval(interval: float, priority: int) -> float:
    """How long a member advertising every ``interval`` with ``priority`` may go unheard before it is taken
    for dead (RFC 5798 6.1: 3 × the interval and a skew of (256 − priority) / 256 of it)."""
    return 3 * interval + (256 - priority) / 256 * interval


class Heard(NamedTuple):
    """Another member as its last advertisement showed it."""

    priority: int
    at: float
    interval: float  # its advertisement interval, as it advertises it (ours where it gives none)
    in_sync: bool = True

    def alive(self, now: float) -> bool:
        """Heard within its own master-down interval: members may advertise at different intervals."""
        return now - self.at <= master_down_interval(self.interval, self.priority)


class Role(IntEnum):
    """The states of a member; their values travel in the Advertisement."""

    INIT = 0
    STANDBY = 1
    ACTIVE = 2

    @property
    def label(self) -> str:
        return self.name.lower()


class Event(Enum):
    READY = "table downloaded"
    MASTER_DOWN = "no active member heard for the master-down interval"
    ACTIVE_GONE = "nothing listens at the active member's port any more (ICMP port unreachable)"
    PREEMPT = "preempting an active member of lower priority"
    BETTER_ACTIVE = "heard an active member of higher priority"
    TOLD_ACTIVE = "told to be active (external election)"
    TOLD_STANDBY = "told to stand by (external election)"
    STOP = "stopping"


TRANSITIONS: dict[Role, dict[Event, Role]] = {
    Role.INIT: {Event.READY: Role.STANDBY, Event.STOP: Role.INIT},
    Role.STANDBY: {
        Event.MASTER_DOWN: Role.ACTIVE,
        Event.ACTIVE_GONE: Role.ACTIVE,
        Event.PREEMPT: Role.ACTIVE,
        Event.TOLD_ACTIVE: Role.ACTIVE,
        Event.STOP: Role.INIT,
    },
    Role.ACTIVE: {Event.BETTER_ACTIVE: Role.STANDBY, Event.TOLD_STANDBY: Role.STANDBY, Event.STOP: Role.INIT},
}


@dataclass(frozen=True)
class Transition:
    old: Role
    new: Role
    reason: str
    at: float
    replaced: int | None = None  # the active member taken over from, when its host said it is gone


class Election:
    def __init__(
        self,
        address: int,
        priority: int,
        interval: float,
        preempt: bool,
        now: float,
        external: bool = False,
        sync: SyncState | None = None,
        settle: float = 0.0,
        preempt_delay: float = 0.0,
    ) -> None:
        self.address = address
        self.external = external  # another daemon (keepalived, a VRRP router) decides; see ``told``
        self._told: Role = Role.STANDBY
        self.priority = priority
        self.interval = interval
        # The active member's advertisement interval, as its advertisements give it (RFC 5798 6.4.2,
        # Master_Adver_Interval): what the master-down interval and the skew are made of, so that a standby
        # configured with another interval than the active member's neither takes over from a live one (a
        # longer interval) nor waits for a dead one longer than need be. Ours until one is heard, and while
        # we are the active member.
        self.master_adver_interval = interval
        self.preempt = preempt
        self.role = Role.INIT
        self.since = now
        self.history: deque[Transition] = deque(maxlen=10)
        self.active_member: int | None = None  # the active member we last heard, if not ourselves
        self._master_down_at: float | None = None
        self._gone: int | None = None  # the active member whose host said its port is closed (``unreachable``)
        self._standbys: dict[int, Heard] = {}  # other members heard standing by, by address
        self._actives: dict[int, Heard] = {}  # other members heard active
        self._starting: dict[int, Heard] = {}  # members heard downloading
        self._settle_until = now + settle  # until then, a better member still downloading is waited for
        self._sync = sync  # whether we missed what the group answered (``core/sync.py``); None: never
        self.preempt_delay = preempt_delay
        self._preempt_from = now  # not before then may this member preempt: set when it becomes a standby

    @property
    def skew(self) -> float:
        return (256 - self.priority) / 256 * self.master_adver_interval

    @property
    def master_down_interval(self) -> float:
        """Ours, timing the active member: its interval and our priority (RFC 5798 6.1)."""
        return master_down_interval(self.master_adver_interval, self.priority)

    @property
    def out_of_sync(self) -> bool:
        return self._sync is not None and self._sync.out_of_sync

    def _rank(self) -> tuple[int, int]:
        return (self.priority, self.address)

    # -- inputs ---------------------------------------------------------------------------------------

    def ready(self, now: float) -> list[Transition]:
        """The table is downloaded: stand by, and take over if no active member shows up (or, with an
        external election, if it was told to while it downloaded)."""
        if self.external:
            return self._fire(Event.READY, now) + self.told(self._told, now)
        others = self._actives_deadline(excluding=self._gone)
        if others is None or others <= now:
            self.master_adver_interval = self.interval  # no active member to time: a resigned one's is no guide
        self._master_down_at = max(now + self.master_down_interval, others or now)
        return self._fire(Event.READY, now)

    def told(self, role: Role, now: float) -> list[Transition]:
        """An external election's verdict. A member still downloading remembers it for when it is done."""
        self._told = role
        if self.role is Role.INIT:
            return []
        return self._fire(Event.TOLD_ACTIVE if role is Role.ACTIVE else Event.TOLD_STANDBY, now)

    def stop(self, now: float) -> list[Transition]:
        self._master_down_at = None
        return self._fire(Event.STOP, now)

    def advertisement(
        self, sender: int, priority: int, role: int, now: float, in_sync: bool = True,
        interval: float | None = None,
    ) -> list[Transition]:
        """``interval``: the sender's advertisement interval, as it advertises it (None: not given)."""
        if self.external:  # advertisements still tell who is up (for replication), but decide nothing
            self.active_member = sender if role == Role.ACTIVE and priority else self.active_member
            return []
        before = [last.interval for seen in (self._standbys, self._actives, self._starting)
                  if (last := seen.pop(sender, None)) is not None]
        interval = interval or (before[0] if before else self.interval)  # none given: as last heard
        heard = Heard(priority, now, interval, in_sync)
        if sender == self._gone:
            self._gone = None  # it lives after all (or says how it went): no longer taken for dead
        if priority and role == Role.STANDBY:
            self._standbys[sender] = heard
        elif priority and role == Role.ACTIVE:
            self._actives[sender] = heard
        elif priority and role == Role.INIT:
            self._starting[sender] = heard
        if role != Role.ACTIVE:
            return []
        if priority == 0:  # the active member resigns: take over after the skew alone (unless another serves)
            if self.active_member == sender:
                self.active_member = None
            if self.role is Role.STANDBY:
                others = self._actives_deadline(excluding=self._gone)
                self._master_down_at = others if others is not None and others > now else now + self.skew
            return []
        self.active_member = sender
        theirs = (priority, sender)
        if self.role is Role.ACTIVE:
            if theirs > self._rank():
                self.master_adver_interval = heard.interval  # the member we now stand by for
                self._master_down_at = now + self.master_down_interval
                return self._fire(Event.BETTER_ACTIVE, now)
            return []
        if self.role is Role.STANDBY and self.preempt and now >= self._preempt_from and self._outranks_actives(now) \
                and not self.out_of_sync and not self._better_standby_alive(now):
            return self._fire(Event.PREEMPT, now)
        # Timed by the best active member alive (with two, a split brain, the one that stays): its interval.
        # The deadline is the last that any active member heard sets: while one lives, none is missing.
        if max((h.priority, a) for a, h in self._actives.items() if h.alive(now)) == theirs:
            self.master_adver_interval = heard.interval
        self._master_down_at = self._actives_deadline(excluding=self._gone)
        return []

    def unreachable(self, member: int, now: float) -> list[Transition]:
        """The active member's host answered us with ICMP port unreachable: its process is gone though
        the host lives (the common crash). ICMP is not authenticated, so this only shortens the wait, to
        ``GONE_WAIT`` intervals: a live active member advertises within one, which restores the full
        master-down interval, so a forged ICMP costs nothing unless an advertisement is lost with it."""
        if self.external or self.role is not Role.STANDBY or member != self.active_member:
            return []
        due = now + GONE_WAIT * self.master_adver_interval
        if self._master_down_at is None or due < self._master_down_at:
            self._master_down_at = due
            self._gone = member
        return []

    def handle_timer(self, now: float) -> list[Transition]:
        if self.external:
            return []
        if self._master_down_at is None or now < self._master_down_at or self.role is not Role.STANDBY:
            return []
        others = self._actives_deadline(excluding=self._gone)
        if others is not None and others > now:  # another active member lives (a split brain): wait for it
            self._master_down_at = others
            return []
        if (self._better_standby_alive(now) or (self.out_of_sync and self._in_sync_standby_alive(now))
                or (now < self._settle_until and self._better_starting(now))):
            # A better standby heard lately is due first (its skew is shorter): give it an interval to
            # announce itself, rather than both taking over and one stepping down again. Out of sync, we
            # leave the role to any standby that is in sync. Settling, to a better member about to be ready.
            self._master_down_at = now + self.master_adver_interval
            return []
        self._master_down_at = None
        self.active_member = None
        gone, self._gone = self._gone, None
        event = Event.ACTIVE_GONE if gone is not None else Event.MASTER_DOWN
        # Only a member its own host says is gone is taken for dead at once; one merely not heard may be
        # behind a lossy link, and the liveness check decides about it as about any other member.
        return self._fire(event, now, gone)

    def _actives_deadline(self, excluding: int | None = None) -> float | None:
        """When every active member heard (but ``excluding``) will have gone unheard for the master-down
        interval of its own interval: the latest of their last advertisements plus that (None: none heard).
        Each member is timed by its own interval, so a worse one's shorter interval never makes us take over
        from a better one, nor a member back with a shorter interval wait for its old one."""
        deadlines = [h.at + master_down_interval(h.interval, self.priority)
                     for address, h in self._actives.items() if address != excluding]
        return max(deadlines, default=None)

    def next_timer(self) -> float | None:
        return self._master_down_at if self.role is Role.STANDBY and not self.external else None

    def _better_standby_alive(self, now: float) -> bool:
        mine = self._rank()
        return any((h.priority, a) > mine and h.alive(now) and (h.in_sync or self.out_of_sync)
                   for a, h in self._standbys.items())

    def _outranks_actives(self, now: float) -> bool:
        """Better than every member heard active lately: preempting any other would add an active member."""
        mine = self._rank()
        return all((h.priority, a) < mine for a, h in self._actives.items() if h.alive(now))

    def _better_starting(self, now: float) -> bool:
        mine = self._rank()
        return any((h.priority, a) > mine and h.alive(now) for a, h in self._starting.items())

    def _in_sync_standby_alive(self, now: float) -> bool:
        return any(h.in_sync and h.alive(now) for h in self._standbys.values())

    # -- the table ------------------------------------------------------------------------------------

    def _fire(self, event: Event, now: float, replaced: int | None = None) -> list[Transition]:
        new = TRANSITIONS[self.role].get(event)
        if new is None or new is self.role:
            return []
        t = Transition(self.role, new, event.value, now, replaced)
        self.role, self.since = new, now
        self._gone = None  # a report of the last role's, whatever it was
        if new is Role.ACTIVE:
            self.master_adver_interval = self.interval  # the active member's interval is ours now
        if new is Role.STANDBY:
            self._preempt_from = now + self.preempt_delay
        self.history.append(t)
        return [t]
