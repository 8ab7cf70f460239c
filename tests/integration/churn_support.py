"""Five members under churn (issue 10, "What it must show", third point), shared by
``test_group_churn.py`` (short, asserting) and ``bench/churn.py`` (longer, printing).

A group of five ``homeagent run`` processes on loopback (127.0.0.2-6, priorities 250 to 50, preempt on,
advertisement interval 0.1 s, async replication) serves a steady registration load at the virtual address
while a schedule kills, restarts and stops members. Everything is measured from outside:

- role changes from each incarnation's own log (``role X -> Y: reason``, one log file per start, so a
  killed member's history survives it), checked against ``homeagent status --json`` "transitions";
- reconciliation cost per event from the counters ``redundancy.table_reply_bytes_sent`` and
  ``redundancy.table_replies_sent`` (summed over members, per incarnation) and from the log lines
  ``sending N mobile nodes to X: what``;
- the longest gap between registration replies at the virtual address, per event.

Each takeover (a transition to ``active``) is classified: ``kill`` (the first member to take over after the
active member was killed: one per kill), ``preemption`` (a restarted member that outranks every running
member taking the role with the reason PREEMPT: one per such restart) or ``needless`` (anything else).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from homeagent.core.election import Event as ElectionEvent
from homeagent.mobile_node import LoadGenerator, LoadResult
from homeagent.runtime import control

from .group_support import MN_SA, VIP, Group, Member, free_group_port, wait_until

ADDRESSES = ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6")
PRIORITIES = (250, 200, 150, 100, 50)  # distinct: the election never has to break a tie by address
CARE_OF = IPv4Address("192.0.2.77")
LIFETIME = 1200  # longer than any run: a binding missing at the end was lost, never expired
FIRST_HOME = IPv4Address("10.1.64.1")  # 10,000 nodes fit in 10.1.64.1 - 10.1.103.x, inside 10.1.0.0/16

# Counters printed per event beside the reconciliation cost: what a storm looks like from outside.
WATCHED = ("redundancy.table_requests_sent", "redundancy.members_marked_down",
           "redundancy.security_violations", "redundancy.dual_active", "redundancy.updates_failed",
           "redundancy.table_transfers_replaced")
TAKEOVER_REASONS = {ElectionEvent.MASTER_DOWN.value, ElectionEvent.ACTIVE_GONE.value}

_LOG_LINE = re.compile(r'^ts=(\S+) .*? msg="((?:[^"\\]|\\.)*)"')  # logfmt (docs/operations.md, "Logs")
_ROLE = re.compile(r"^role (\w+) -> (\w+): (.*)$")
_SENDING = re.compile(r"^sending (\d+) mobile nodes to (\S+): (.*)$")


# -- the load ----------------------------------------------------------------------------------------


class TimedLoad(LoadGenerator):
    """A LoadGenerator that also notes when authenticated replies arrive (one stamp per read batch: the
    generator reads whatever waits each time select wakes it, so a stamp is as precise as that wake-up)."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, record=True, **kw)
        self.reply_times: list[float] = []  # time.monotonic()

    def _receive(self, sock: Any, pending: Any, result: LoadResult) -> None:
        before = result.replies
        super()._receive(sock, pending, result)
        if result.replies > before:
            self.reply_times.append(time.monotonic())


class LoadThread:
    """The load runs on a thread of its own; the scenario only sleeps and asks the control sockets."""

    def __init__(self, port: int, nodes: int, rate: float, duration: float, window: int = 64) -> None:
        addresses = [FIRST_HOME + i for i in range(nodes)]
        self.generator = TimedLoad(IPv4Address(VIP), port, MN_SA, addresses, CARE_OF, LIFETIME, window, 0.5)
        self.rate, self.duration = rate, duration
        self.result: LoadResult | None = None
        self.error: BaseException | None = None
        self.started_mono = 0.0
        self._thread = threading.Thread(target=self._run, name="churn-load", daemon=True)

    def _run(self) -> None:
        try:
            self.result = self.generator.run(duration=self.duration, rate=self.rate)
        except BaseException as exc:  # noqa: BLE001 - reported by join()
            self.error = exc

    def start(self) -> None:
        self.started_mono = time.monotonic()
        self._thread.start()

    def join(self) -> LoadResult:
        self._thread.join(self.duration + 30)
        if self.error is not None:
            raise self.error
        assert self.result is not None, "the load thread did not finish"
        return self.result


def longest_gap(times: list[float], start: float, end: float) -> tuple[float, float]:
    """The longest silence between two replies that overlaps [start, end), and when it began (seconds after
    ``start``; negative when it began before). A window with no reply at all counts as one gap."""
    inside = [t for t in times if start <= t < end]
    before = [t for t in times if t < start]
    after = [t for t in times if t >= end]
    points = ([before[-1]] if before else [start]) + inside + ([after[0]] if after else [end])
    best, at = 0.0, 0.0
    for a, b in zip(points, points[1:], strict=False):
        if b - a > best:
            best, at = b - a, a - start
    return best, at


ASK_TIMEOUT = 1.0  # a member that cannot answer its control socket within this is noted, not waited for


def ask(m: Member, command: str = "status", timeout: float = ASK_TIMEOUT, **args: Any) -> Any:
    return control.request(m.control_socket, command, timeout=timeout, **args)


# -- what the logs say ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RoleChange:
    member: str
    incarnation: int
    at: float  # wall clock (the log's timestamp)
    old: str
    new: str
    reason: str


@dataclass(frozen=True)
class Sending:
    member: str
    at: float
    nodes: int
    to: str
    what: str


def _wall(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()  # UTC


def read_log(path: Path, member: str, incarnation: int) -> tuple[list[RoleChange], list[Sending]]:
    roles: list[RoleChange] = []
    sends: list[Sending] = []
    for line in path.read_text(errors="replace").splitlines():
        m = _LOG_LINE.match(line)
        if m is None:
            continue
        at, message = _wall(m.group(1)), json.loads(f'"{m.group(2)}"')
        if r := _ROLE.match(message):
            roles.append(RoleChange(member, incarnation, at, r.group(1), r.group(2), r.group(3)))
        elif s := _SENDING.match(message):
            sends.append(Sending(member, at, int(s.group(1)), s.group(2), s.group(3)))
    return roles, sends


# -- the scenario ----------------------------------------------------------------------------------------


@dataclass
class ChurnEvent:
    """One membership change the scenario caused, and what it cost."""

    name: str
    kind: str  # "kill-standby", "restart", "kill-active", "restart-best", "restart-standby"
    member: str
    wall: float
    mono: float
    active_before: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    reply_bytes: int = 0
    replies: int = 0
    sendings: list[Sending] = field(default_factory=list)
    gap: float = 0.0
    gap_at: float = 0.0
    formed_after: float | None = None  # seconds until the group was whole again with one active member
    counters: dict[str, int] = field(default_factory=dict)  # WATCHED deltas, summed over members

    @property
    def nodes_sent(self) -> int:
        return sum(s.nodes for s in self.sendings)


@dataclass
class Takeover:
    change: RoleChange
    cause: str  # "kill", "preemption", "needless"
    event: str | None  # the name of the event it is credited to


@dataclass
class ChurnReport:
    members: dict[str, int]  # address -> priority
    load: LoadResult
    load_seconds: float
    baseline_gap: float
    baseline_bytes: int
    events: list[ChurnEvent]
    changes: list[RoleChange]
    takeovers: list[Takeover]
    step_downs: list[RoleChange]
    status_mismatches: list[str]
    converged_after: float | None = None

    @property
    def needless(self) -> list[Takeover]:
        return [t for t in self.takeovers if t.cause == "needless"]


class Churn:
    """Drives a Group of five through a schedule of kills and restarts under load, and measures it.

    ``schedule`` is a list of (seconds after the load starts, action); the actions are the methods below.
    Waits here never fail the run: what did not happen in time is noted on its event, so that a report
    comes out whatever the core does, and the caller asserts on it.
    """

    def __init__(self, group: Group, settle: float = 4.0) -> None:
        self.group = group
        self.settle = settle
        self.members: list[Member] = []
        self.incarnations: dict[str, list[tuple[int, Path]]] = {}  # address -> [(pid, log)]
        self.events: list[ChurnEvent] = []
        self.snapshots: list[dict[tuple[str, int], dict[str, int]]] = []  # per event start, then the end
        self.started: dict[tuple[str, int], float] = {}  # (address, pid) -> time.monotonic() of its start
        self._until = float("inf")  # no wait runs past the next scheduled event

    # -- set-up ---------------------------------------------------------------------------------------

    def form(self) -> None:
        """The best member first, until active; then the other four, which download its (empty) table."""
        for address, priority in zip(ADDRESSES, PRIORITIES, strict=True):
            peers = [a for a in ADDRESSES if a != address]
            self.members.append(self.group.add(address, priority=priority, peers=peers,
                                               redundancy_extra="preempt = true\n"))
        best, rest = self.members[0], self.members[1:]
        self._start(best)
        best.wait_ready()
        wait_until(lambda: best.role() == "active", 10, "the best member to become active")
        for m in rest:
            self._start(m)
        for m in rest:
            m.wait_ready()
        self.group.wait_formed(active=best, timeout=20)

    def _start(self, m: Member) -> None:
        """Every incarnation logs to a file of its own: a killed member's log is evidence."""
        n = len(self.incarnations.setdefault(m.address, []))
        if m.proc is not None and not m._stderr.closed:  # a killed incarnation's log file
            m._stderr.close()
        m.stderr_path = m.config_path.parent / f"stderr-{n}.log"
        m.killed, m.expect_clean_exit = False, True
        m.start(wait=False)
        self.started[(m.address, m.pid)] = time.monotonic()
        self.incarnations[m.address].append((m.pid, m.stderr_path))

    # -- views ----------------------------------------------------------------------------------------

    def roles(self) -> dict[str, str]:
        out = {}
        for m in self.group.running():
            try:
                out[m.address] = ask(m)["role"]
            except (control.ControlError, OSError, ValueError):
                out[m.address] = "?"
        return out

    def snapshot(self) -> dict[tuple[str, int], dict[str, int]]:
        """Every running member's counters; one that does not answer in time is left out (and the cost of
        the events around it is then marked incomplete)."""
        snap = {}
        for m in self.group.running():
            try:
                snap[(m.address, m.pid)] = dict(ask(m, timeout=2.0)["counters"])
            except (control.ControlError, OSError, ValueError):
                pass
        return snap

    def _wait(self, event: ChurnEvent, what: str, predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = min(time.monotonic() + timeout, self._until)
        while time.monotonic() < deadline:
            try:
                if predicate():
                    return True
            except (control.ControlError, OSError, ValueError):
                pass
            time.sleep(0.1)
        event.notes.append(f"not within {deadline - event.mono:.1f} s of the event: {what}")
        return False

    def _formed(self) -> bool:
        """Every running member past init, seeing every other running member up, exactly one active."""
        running = self.group.running()
        names = {m.address for m in running}
        roles = []
        for m in running:
            st = ask(m)
            if st["role"] == "init":
                return False
            up = {p["address"] for p in st["peers"] if p["state"] == "up"}
            if not (names - {m.address}) <= up:
                return False
            roles.append(st["role"])
        return roles.count("active") == 1

    def _event(self, name: str, kind: str, member: Member) -> ChurnEvent:
        self.snapshots.append(self.snapshot())
        ev = ChurnEvent(name, kind, member.address, time.time(), time.monotonic(),
                        active_before=[a for a, r in self.roles().items() if r == "active"])
        self.events.append(ev)
        return ev

    def _by_role(self, role: str) -> list[Member]:
        roles = self.roles()
        return [m for m in self.members if roles.get(m.address) == role]

    def _member(self, priority: int) -> Member:
        return next(m for m in self.members if m.priority == priority)

    def _expect_role(self, ev: ChurnEvent, m: Member, role: str) -> None:
        """The schedule names its victims by priority; say so when one was not in the role meant for it."""
        actual = self.roles().get(m.address, "not running")
        if actual != role:
            ev.notes.append(f"{m.address} was {actual}, not {role}, when the event began")

    # -- actions ----------------------------------------------------------------------------------------

    def kill_standby(self) -> None:
        """kill -9 a standby in the middle of the ranks (priority 100 when it stands by)."""
        victim = self._member(PRIORITIES[3])
        ev = self._event(f"kill -9 standby {victim.address}", "kill-standby", victim)
        self._expect_role(ev, victim, "standby")
        victim.kill()
        others = [m for m in self.group.running()]
        if self._wait(ev, f"every member to see {victim.address} down and the rest formed",
                      lambda: all(_peer_state(m, victim.address) == "down" for m in others)
                      and self._formed(),
                      self.settle):
            ev.formed_after = time.monotonic() - ev.mono

    def restart_killed(self) -> None:
        """Start again the member killed last (its state_dir as it left it)."""
        victim = next(m for m in reversed(self.members) if m.killed and not m.running())
        self._restart(self._event(f"restart {victim.address}", "restart", victim), victim)

    def kill_active(self) -> None:
        actives = self._by_role("active")
        victim = actives[0] if len(actives) == 1 else self._member(PRIORITIES[0])
        ev = self._event(f"kill -9 active {victim.address}", "kill-active", victim)
        self._expect_role(ev, victim, "active")
        victim.kill()
        if self._wait(ev, "one member to take over and the group formed", self._formed, self.settle):
            ev.formed_after = time.monotonic() - ev.mono

    def restart_best(self) -> None:
        """Start again the killed best member: it must preempt once it has the table."""
        victim = next(m for m in self.members if m.killed and not m.running())
        self._restart(self._event(f"restart {victim.address} (preempts)", "restart-best", victim), victim)

    def restart_standby(self) -> None:
        """SIGTERM a standby not touched yet (priority 150 when it stands by) and start it again at once."""
        victim = self._member(PRIORITIES[2])
        ev = self._event(f"restart standby {victim.address} (SIGTERM, start)", "restart-standby", victim)
        self._expect_role(ev, victim, "standby")
        rc = victim.stop()
        if rc != 0:
            ev.notes.append(f"{victim.address} exited with {rc} on SIGTERM")
        self._restart(ev, victim)

    def _restart(self, ev: ChurnEvent, m: Member) -> None:
        self._start(m)
        self._wait(ev, f"{m.address} ready", lambda: ask(m) is not None, self.settle)
        best = max(r.priority for r in self.group.running()) == m.priority
        want = "active" if best else "standby"
        if self._wait(ev, f"{m.address} {want} and the group formed",
                      lambda: ask(m)["role"] == want and self._formed(), self.settle):
            ev.formed_after = time.monotonic() - ev.mono

    # -- the run ----------------------------------------------------------------------------------------

    def run(self, schedule: list[tuple[float, Callable[[], None]]], duration: float, nodes: int,
            rate: float) -> ChurnReport:
        load = LoadThread(self.group.port, nodes, rate, duration)
        start_snap = self.snapshot()
        load.start()
        for i, (offset, action) in enumerate(schedule):
            following = schedule[i + 1][0] if i + 1 < len(schedule) else duration
            self._until = load.started_mono + following
            delay = load.started_mono + offset - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif self.events:
                self.events[-1].notes.append(f"the next event started {-delay:.2f} s late")
            action()
        self._until = float("inf")
        result = load.join()
        self.snapshots.append(self.snapshot())
        end_mono, end_wall = time.monotonic(), time.time()
        report = self._report(load, result, start_snap, end_mono, end_wall)
        report.converged_after = self.converge(self.settle * 3)
        return report

    def converge(self, timeout: float) -> float | None:
        """Seconds after the load until the group is formed and every table identical; None: not in time."""
        start = time.monotonic()
        deadline = start + timeout
        while time.monotonic() < deadline:
            try:
                if self._formed() and tables_identical(self.group.running())[0]:
                    return time.monotonic() - start
            except (control.ControlError, OSError, ValueError):
                pass
            time.sleep(0.2)
        return None

    # -- the report -----------------------------------------------------------------------------------

    def _report(self, load: LoadThread, result: LoadResult, start_snap: dict[tuple[str, int], dict[str, int]],
                end_mono: float, end_wall: float) -> ChurnReport:
        changes: list[RoleChange] = []
        sendings: list[Sending] = []
        for address, lives in self.incarnations.items():
            for n, (_, path) in enumerate(lives):
                roles, sends = read_log(path, address, n)
                changes += roles
                sendings += sends
        changes.sort(key=lambda c: c.at)
        times = load.generator.reply_times
        first_event = self.events[0].mono if self.events else end_mono
        baseline_gap, _ = longest_gap(times, load.started_mono + 0.5, first_event)
        baseline_bytes = _delta(start_snap, self.snapshots[0] if self.snapshots else start_snap,
                                "redundancy.table_reply_bytes_sent")
        for i, ev in enumerate(self.events):
            end_m = self.events[i + 1].mono if i + 1 < len(self.events) else end_mono
            end_w = self.events[i + 1].wall if i + 1 < len(self.events) else end_wall
            before, after = self.snapshots[i], self.snapshots[i + 1]
            ev.reply_bytes = _delta(before, after, "redundancy.table_reply_bytes_sent")
            ev.replies = _delta(before, after, "redundancy.table_replies_sent")
            ev.counters = {name: _delta(before, after, name) for name in WATCHED}
            unseen = sorted(a for a, pid in set(after) | set(before) if self.started[(a, pid)] < ev.mono
                            and ((a, pid) not in before or ((a, pid) not in after and a != ev.member)))
            if unseen:
                ev.notes.append(f"counters incomplete: {', '.join(unseen)} did not answer at a snapshot")
            ev.sendings = [s for s in sendings if ev.wall <= s.at < end_w]
            ev.gap, ev.gap_at = longest_gap(times, ev.mono, end_m)
        takeovers, step_downs = classify(changes, self.events, self.members, load_started=_wall_of(load))
        return ChurnReport(
            members={m.address: m.priority for m in self.members},
            load=result, load_seconds=result.seconds,
            baseline_gap=baseline_gap, baseline_bytes=baseline_bytes,
            events=self.events, changes=[c for c in changes if c.at >= _wall_of(load)],
            takeovers=takeovers, step_downs=step_downs, status_mismatches=self.check_status(changes),
        )

    def check_status(self, changes: list[RoleChange]) -> list[str]:
        """``homeagent status --json`` of each running member: its "transitions" must be among what its
        current incarnation logged (the two records of one history must agree)."""
        problems = []
        for m in self.group.running():
            n = len(self.incarnations[m.address]) - 1
            logged = [c for c in changes if c.member == m.address and c.incarnation == n]
            try:
                transitions = ask(m, timeout=5.0)["transitions"]
            except (control.ControlError, OSError, ValueError) as exc:
                problems.append(f"{m.address}: no status ({exc})")
                continue
            for t in transitions:
                # The log line is written when the transition is applied, "at" is the input's time: under
                # CPU starvation the two can be a loop iteration apart.
                same = [c for c in logged if (c.old, c.new, c.reason) == (t["from"], t["to"], t["reason"])]
                if not any(abs(c.at - t["at"]) < 1.0 for c in same):
                    problems.append(f"{m.address}: status transition {t} not in its log "
                                    f"(closest: {min((abs(c.at - t['at']) for c in same), default=None)})")
        return problems


def _wall_of(load: LoadThread) -> float:
    return time.time() - (time.monotonic() - load.started_mono)


def _delta(before: dict[tuple[str, int], dict[str, int]], after: dict[tuple[str, int], dict[str, int]],
           name: str) -> int:
    """Summed over members, per incarnation: a member started in between counts from zero."""
    total = 0
    for key, counters in after.items():
        total += counters.get(name, 0) - before.get(key, {}).get(name, 0)
    return total


def classify(changes: list[RoleChange], events: list[ChurnEvent], members: list[Member],
             load_started: float) -> tuple[list[Takeover], list[RoleChange]]:
    """Each takeover after the load started gets a cause; the step-downs are returned apart (one is the
    expected consequence of each preemption; any other means two members were active at once)."""
    priority = {m.address: m.priority for m in members}
    credits: list[tuple[ChurnEvent, str, set[str]]] = []  # (event, cause, who may take it)
    for ev in events:
        if ev.kind == "kill-active":
            credits.append((ev, "kill", set(priority) - {ev.member}))
        elif ev.kind == "restart-best":
            credits.append((ev, "preemption", {ev.member}))
    used: set[str] = set()
    takeovers: list[Takeover] = []
    step_downs: list[RoleChange] = []
    for c in changes:
        if c.at < load_started:
            continue
        if c.old == "active" and c.new == "standby":
            step_downs.append(c)
            continue
        if c.new != "active":
            continue
        cause, credited = "needless", None
        for ev, kind, who in credits:
            if ev.name in used or c.at < ev.wall or c.member not in who:
                continue
            if (kind == "kill" and c.reason in TAKEOVER_REASONS) or \
                    (kind == "preemption" and c.reason == ElectionEvent.PREEMPT.value):
                cause, credited = kind, ev.name
                used.add(ev.name)
                break
        takeovers.append(Takeover(c, cause, credited))
    return takeovers, step_downs


def format_report(r: ChurnReport, rate: float, nodes: int) -> str:
    lines = [
        f"members: " + ", ".join(f"{a} (priority {p})" for a, p in r.members.items()),
        f"load: {nodes} mobile nodes at {rate:g}/s asked, {r.load.accepted} accepted "
        f"in {r.load_seconds:.1f} s "
        f"({r.load.rate:.0f}/s), {r.load.lost} unanswered, {r.load.invalid} invalid, codes {r.load.codes}",
        f"baseline (load, no event): longest reply gap {r.baseline_gap * 1000:.0f} ms, "
        f"table reply bytes {r.baseline_bytes}",
        "",
        f"{'event':44} {'reply bytes':>12} {'replies':>8} {'nodes sent':>11} {'sends':>6} "
        f"{'longest gap':>12}",
    ]
    for ev in r.events:
        lines.append(f"{ev.name:44} {ev.reply_bytes:>12} {ev.replies:>8} {ev.nodes_sent:>11} "
                     f"{len(ev.sendings):>6} "
                     f"{ev.gap * 1000:>9.0f} ms  (at {ev.gap_at:+.2f} s)")
        for s in ev.sendings:
            lines.append(f"    {s.member} sent {s.nodes} mobile nodes to {s.to}: {s.what}")
        formed = f"{ev.formed_after:.2f} s" if ev.formed_after is not None else "-"
        lines.append(f"    formed again after {formed}; "
                     + ", ".join(f"{k.removeprefix('redundancy.')} {v}" for k, v in ev.counters.items()))
        for note in ev.notes:
            lines.append(f"    note: {note}")
    lines.append("")
    lines.append("role changes after the load started:")
    for c in r.changes:
        lines.append(f"  {_clock(c.at)} {c.member}#{c.incarnation} {c.old} -> {c.new}: {c.reason}")
    lines.append("takeovers:")
    for t in r.takeovers:
        lines.append(f"  {_clock(t.change.at)} {t.change.member}: {t.cause}"
                     + (f" ({t.event})" if t.event else f" ({t.change.reason})"))
    lines.append(f"step-downs: {len(r.step_downs)}; needless takeovers: {len(r.needless)}")
    lines.append("after the load: formed with identical tables "
                 + (f"within {r.converged_after:.2f} s" if r.converged_after is not None
                    else "NOT within the wait"))
    for p in r.status_mismatches:
        lines.append(f"status/log mismatch: {p}")
    return "\n".join(lines)


def _clock(wall: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(wall)) + f".{int(wall % 1 * 1000):03d}"


def _peer_state(m: Member, address: str) -> str | None:
    return {p["address"]: p["state"] for p in ask(m)["peers"]}.get(address)


def tables_identical(members: list[Member]) -> tuple[bool, dict[str, int]]:
    """Every member's (home address, care-of address, identification) set, compared; sizes by member."""
    tables = {m.address: {(r["home_address"], r["care_of_address"], r["identification"])
                          for r in ask(m, "bindings", timeout=5.0)} for m in members}
    sizes = {a: len(t) for a, t in tables.items()}
    return len({frozenset(t) for t in tables.values()}) == 1, sizes


def free_port() -> int:
    return free_group_port((*ADDRESSES, VIP))
