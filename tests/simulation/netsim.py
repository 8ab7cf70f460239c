"""A deterministic simulation of a redundancy group: 3 to 5 sans-I/O Home Agent cores (``HomeAgent``, built
from a TOML config each), a fake network and a fake clock, mobile nodes that register, renew, de-register
and hold simultaneous bindings, and an oracle that says what every member's binding table must hold once
the network has healed.

Everything random comes from one ``random.Random(seed)``, so a seed names a run: the same seed replays the
same run, event for event. Every loop is bounded (``MAX_EVENTS``, ``TIMER_STORM``).

The network
    An event queue ordered by (time, insertion order). Each datagram may be lost (``loss``), duplicated
    (``duplicate``) and delayed by a random amount, a share of them (``reorder``) by much more than the rest,
    which reorders them. A datagram sent to the virtual address goes, when it arrives, to the member that
    holds that address (the last ``ClaimAddress`` without a later ``ReleaseAddress``); with two holders (a
    split brain) to one of them at random. A datagram to the multicast group goes to every other member,
    which receives it at the group's address (what its seal covers as the receiver, protocol version 2).
    Every member is configured with every other as a peer: members come only from configuration.
    Partitions cut member-to-member traffic, both ways (a split) or one way, and heal; a lossy link loses
    most datagrams from one member to another and none the other way; mobile nodes reach every member. A
    crash drops the member's core on the floor (no ``stop``); a graceful stop lets it say goodbye first; a
    restart is a new ``HomeAgent`` with an empty table, started at a later ``now`` (a quick restart comes
    back before the others can mark it down). With ``batch`` a
    member's arrivals are drained in bursts between ``begin_batch`` and ``end_batch``, as the daemon does.

The mobile nodes and the operator
    Each mobile node sends signed Registration Requests with strictly increasing NTP Identifications on the
    shared clock, to the virtual address (or, in peer mode, mostly to one member's own address): short,
    medium and long lifetimes, the S and T flags, de-registrations of every binding (care-of address = home
    address) or of one, and a byte-for-byte retransmission when no reply came within a second. Now and then
    the operator removes a binding on some member (``HomeAgent.remove``).

The oracle
    ``reference.py``'s model: for each home address, every accepted operation (registration with or without
    S, de-registration of one care-of address or of all, operator removal) applied in Identification order,
    with the expiry its acceptance granted; one request accepted twice is one operation whose later
    acceptance sets the expiry. The simulation records each acceptance as it happens and follows which
    member knows which (the accepting member, and every member whose core takes a datagram naming the node
    from a member that knew it); an operation no member that is up knows any more is lost with a crash, and
    may be left out of the answer (the module docstring says why left out, not cut off at). Every
    Registration Reply with code 0 or 1 a member sends must name an acceptance. After the network has healed
    (no loss, no partition, every member up) and been quiet for a while, every member that is up must hold,
    for every home address, the same last Identification, no older than the newest known operation and no
    other than one accepted, and the model's bindings minus those whose lifetime has ended (expiries within
    ``EXPIRY_TOLERANCE``; the comparison is made at a moment when no binding is within ``COMPARE_MARGIN`` of
    its end).

Checks, besides the tables: no exception leaves a core; no timer fires forever at one instant; after
healing exactly one member holds the virtual address and (active-standby) it is the one whose role is
active; nobody is stuck in ``init``; every member's data plane holds exactly its bindings' tunnels, and
serves iff the member holds the virtual address; every
reply a mobile node gets parses, verifies with its association and answers a request it sent.

Failures are strings tagged with their kind: ``[divergence]`` (members disagree on a last Identification),
``[split-state]`` (same Identification, different bindings), ``[state]`` (a member's bindings are not the
model's), ``[lost]``, ``[phantom]``, ``[vip]``, ``[init]``, ``[tunnels]``, ``[mn]``, ``[rejected]``,
``[exception]``, ``[storm]``, ``[budget]``.
"""

from __future__ import annotations

import heapq
import random
import struct
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address

from homeagent.config import Config
from homeagent.config import parse as parse_config
from homeagent.core.effects import ClaimAddress, ReleaseAddress, Send, Serve, TunnelSet
from homeagent.core.home_agent import HomeAgent
from homeagent.core.replay import ntp_identification
from homeagent.wire.auth import Algorithm, SecurityAssociation
from homeagent.wire.era import from_wire
from homeagent.wire.errors import ParseError
from homeagent.wire.extensions import ExtensionType
from homeagent.wire.registration import RegistrationReply, RegistrationRequest

from .reference import (
    DEREGISTER,
    DEREGISTER_ALL,
    EXPIRY_TOLERANCE,
    REGISTER,
    Knowledge,
    Operation,
    ReferenceModel,
)
from .reference import diff as diff_model

T0 = 1_700_000_000.0
VIP = "127.0.0.100"
MULTICAST = "239.1.2.3"
PORT = 434
HOME_NETWORK = "10.1.0.0/16"
MN_SPI = 256
MN_KEY = bytes.fromhex("00112233445566778899aabbccddeeff")
MN_SA = SecurityAssociation(MN_SPI, Algorithm.HMAC_MD5, MN_KEY)
PEER_SPI = 300
PEER_KEY = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100"

S_FLAG, T_FLAG = 0x80, 0x02
REQUEST_TYPE, REPLY_TYPE = 1, 3
_REQ = struct.Struct("!BBHIIIQ")
COMPARE_MARGIN = 1.2  # no binding should expire this close before the comparison (the wheel's second)
MAX_EVENTS = 3_000_000  # a run that needs more is a failure, not a hang
TIMER_STORM = 2_000  # handle_timer calls at one instant before a member is said to spin

DELIVER, TIMER, CALL, DRAIN = 0, 1, 2, 3


def addr(i: int) -> str:
    """Member ``i``'s own address."""
    return f"127.0.0.{i + 1}"


def ip(text: str) -> int:
    return int(IPv4Address(text))


class Aborted(Exception):
    """A run ended early: a core raised, spun, or the event budget ran out."""


@dataclass(frozen=True)
class Scenario:
    seed: int
    members: int = 3
    mode: str = "active-standby"  # or "peer"
    replication: str = "async"  # or "sync"
    loss: float = 0.3
    duplicate: float = 0.05
    reorder: float = 0.1  # share of datagrams held back up to ``reorder_delay`` more
    min_delay: float = 0.0005
    max_delay: float = 0.005
    reorder_delay: float = 0.03
    chaos: float = 20.0  # seconds of traffic and faults
    quiet: float = 15.0  # seconds of a healed network before the tables are compared
    mobile_nodes: int | None = None  # None: 6, 12 or 40 by the seed
    request_rate: float = 8.0  # registrations a second, all mobile nodes together
    max_datagram: int | None = None  # None: 576 (a table takes several replies) or 1400 by the seed
    simultaneous_bindings: int | None = None  # None: 3, 1 or 0 by the seed
    batch: bool | None = None  # drain each member's arrivals in batches (begin_batch/end_batch), as the
    #                            daemon does; None: by the seed (when the core has the batch interface)
    crashes: int | None = None  # None: 0 to members - 1, chosen by the seed
    partitions: int | None = None  # None: 0 to 3 (both ways or one way, each healing before the end)
    lossy_links: int | None = None  # None: 0 to 2 spells of one-way loss between two members
    link_loss: float = 0.8  # what a lossy link loses, on top of ``loss``
    restarts: int | None = None  # None: 0 to 2 quick restarts (back within 0.3 s)
    graceful: float = 0.2  # share of crashes that are a graceful stop
    advertisement_interval: float | None = None  # None: 0.1, 0.2 or 0.3 by the seed
    sa_style: str | None = None  # "prefix" or "per-peer"; None: by the seed
    priorities: tuple[int, ...] | None = None  # None: by the seed
    preempt: bool | None = None  # None: by the seed (mostly True)
    multicast: bool | None = None  # also a multicast_group (prefix associations only); None: by the seed
    removals: bool = True  # the operator removes a binding now and then (HomeAgent.remove)
    mn_retransmit: float = 0.5  # share of unanswered requests a mobile node sends again, byte for byte
    random_traffic: bool = True
    random_faults: bool = True
    restart_on_heal: bool = True  # healing brings every crashed member back
    rejections_allowed: bool = False  # the scenario corrupts member datagrams on purpose: skip [rejected]

    def describe(self) -> str:
        return (f"seed={self.seed} members={self.members} mode={self.mode} replication={self.replication} "
                f"loss={self.loss}")


CONFIGURATIONS = (
    ("active-standby", "async"),
    ("active-standby", "sync"),
    ("peer", "async"),
    ("peer", "sync"),
)


def scenario_for(seed: int, **overrides) -> Scenario:
    """The bench's scenario for a seed: the configuration cycles with the seed, 3 to 5 members."""
    mode, replication = CONFIGURATIONS[seed % len(CONFIGURATIONS)]
    members = 3 + (seed // len(CONFIGURATIONS)) % 3
    return replace(Scenario(seed, members, mode, replication), **overrides)


# -- configs ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupShape:
    """What the seed chose for the whole group."""

    interval: float
    sa_style: str
    priorities: tuple[int, ...]
    max_datagram: int
    simultaneous_bindings: int
    preempt: bool
    multicast: bool


def member_config(i: int, n: int, scenario: Scenario, shape: GroupShape) -> str:
    peers = ", ".join(f'"{addr(j)}"' for j in range(n) if j != i)
    text = f"""
[home_agent]
address = "{addr(i)}"
port = {PORT}
home_network = "{HOME_NETWORK}"
max_lifetime = 1800
replay_tolerance = 7
state_dir = "/nonexistent/homeagent-sim"
simultaneous_bindings = {shape.simultaneous_bindings}

[[security_association]]
home_addresses = "{HOME_NETWORK}"
spi = {MN_SPI}
algorithm = "hmac-md5"
key = "{MN_KEY.hex()}"

[redundancy]
virtual_address = "{VIP}"
mode = "{scenario.mode}"
priority = {shape.priorities[i]}
peers = [{peers}]
replication = "{scenario.replication}"
advertisement_interval = {shape.interval}
max_datagram = {shape.max_datagram}
preempt = {"true" if shape.preempt else "false"}
"""
    if shape.multicast:
        text += f'multicast_group = "{MULTICAST}"\n'
    if shape.sa_style == "prefix":
        text += f"""
[[redundancy.security_association]]
peer = "127.0.0.0/24"
spi = {PEER_SPI}
algorithm = "hmac-sha256"
key = "{PEER_KEY}"
"""
    else:  # one key per pair of members, the same on both sides
        for j in range(n):
            if j == i:
                continue
            a, b = min(i, j), max(i, j)
            text += f"""
[[redundancy.security_association]]
peer = "{addr(j)}"
spi = {PEER_SPI + 16 * a + b}
algorithm = "{'hmac-md5' if (a + b) % 2 else 'hmac-sha256'}"
key = "{(a * 16 + b + 1):02x}{'5a' * 15}"
"""
    return text


# -- the parts ------------------------------------------------------------------------------------------


Carried = tuple[Knowledge, int] | None  # a member datagram's sender's knowledge and its size at the send


@dataclass
class Member:
    index: int
    address: str
    config: Config
    ha: HomeAgent | None = None
    incarnation: int = 0
    timer_token: int = 0
    timer_at: float | None = None
    tunnels: set[tuple[int, int]] = field(default_factory=set)
    serving: bool = False  # as the Serve effects said
    last_timer_now: float = -1.0
    timer_repeats: int = 0
    inbox: list[tuple[bytes, tuple[str, int], str, Carried]] = field(default_factory=list)  # for a drain
    knowledge: Knowledge = field(default_factory=Knowledge)  # what this incarnation knows (reference.py)


@dataclass
class MobileNode:
    index: int
    hoa: int
    coas: list[int]
    last_ident: int = 0
    sent: dict[int, int] = field(default_factory=dict)  # low 32 bits of an Identification -> Identification
    answered: set[int] = field(default_factory=set)  # low 32 bits of the Identifications answered
    datagrams: dict[int, tuple[bytes, str]] = field(default_factory=dict)  # Identification -> (request, to)
    replies: Counter[int] = field(default_factory=Counter)

    @property
    def name(self) -> str:
        return str(IPv4Address(self.hoa))


@dataclass
class Result:
    scenario: Scenario
    failures: list[str]
    stats: Counter[str]
    seconds: float
    trace: list[str]

    @property
    def ok(self) -> bool:
        return not self.failures

    def kinds(self) -> set[str]:
        """The tags of the failures: {'state', 'rejected', ...}."""
        return {f.split("[", 1)[1].split("]", 1)[0] for f in self.failures if "[" in f}

    def summary(self) -> str:
        head = f"{self.scenario.describe()}: " + ("ok" if self.ok else f"{len(self.failures)} failure(s)")
        return "\n  ".join([head, *self.failures[:10]])


State = tuple[int | None, tuple]  # (last Identification, bindings) as BindingTable.lookup returns it


class Simulation:
    def __init__(self, scenario: Scenario, trace: bool = False) -> None:
        self.scenario = s = scenario
        self.rng = rng = random.Random(scenario.seed)
        self.now = T0
        self.queue: list[tuple] = []
        self._seq = 0
        self.events = 0
        self.failures: list[str] = []
        self.stats: Counter[str] = Counter()
        self.tracing = trace
        self.trace: deque[str] = deque(maxlen=4000)
        # The network.
        self.loss, self.duplicate, self.reorder = s.loss, s.duplicate, s.reorder
        self.blocked: set[tuple[int, int]] = set()  # (from member, to member) pairs a partition cuts
        self._partitions: dict[int, set[tuple[int, int]]] = {}
        self.lossy: dict[tuple[int, int], float] = {}  # (from member, to member) -> extra loss, one way
        self.drop_rule: Callable[[float, str, str, bytes], bool] | None = None  # scripted losses
        self.holders: set[int] = set()  # members holding the virtual address
        self.vip_to: int | None = None  # a scripted run's pick when two members hold it (else at random)
        self.traffic = s.random_traffic
        # The members.
        self.shape = GroupShape(
            s.advertisement_interval or rng.choice((0.1, 0.2, 0.3)),
            s.sa_style or rng.choice(("prefix", "per-peer")),
            s.priorities or tuple(rng.choice((100, 100, 50 + 10 * i)) for i in range(s.members)),
            s.max_datagram or rng.choice((576, 1400)),
            rng.choice((3, 3, 1, 0)) if s.simultaneous_bindings is None else s.simultaneous_bindings,
            rng.random() < 0.75 if s.preempt is None else s.preempt,
            False,
        )
        multicast = rng.random() < 0.3 if s.multicast is None else s.multicast
        if multicast and self.shape.sa_style == "prefix":  # a multicast is sealed with the group's key
            self.shape = replace(self.shape, multicast=True)
        self.members = [
            Member(i, addr(i), parse_config(member_config(i, s.members, s, self.shape)))
            for i in range(s.members)
        ]
        self.by_address = {m.address: m for m in self.members}
        batchable = hasattr(HomeAgent, "begin_batch") and hasattr(HomeAgent, "end_batch")
        self.batch = batchable and (rng.random() < 0.5 if s.batch is None else s.batch)
        # The mobile nodes: a home address each, three care-of addresses each.
        count = rng.choice((6, 12, 40)) if s.mobile_nodes is None else s.mobile_nodes
        self.mobile_nodes = [
            MobileNode(k, ip("10.1.0.1") + k, [ip("198.51.100.1") + ((3 * k + c) % 250) for c in range(3)])
            for k in range(count)
        ]
        self.request_interval = count / s.request_rate  # mean seconds between one node's requests
        self.by_hoa = {mn.hoa: mn for mn in self.mobile_nodes}
        # The oracle.
        self.model = ReferenceModel()
        self.replied: set[tuple[int, int]] = set()
        self.lost: set[int] = set()  # acceptances no member that is up knows any more (when it last went)
        self.rejections: Counter[str] = Counter()  # member datagrams rejected, over every incarnation
        self.heal_at = T0 + s.chaos
        self.compared_at: float | None = None

    # -- the run ----------------------------------------------------------------------------------------

    def run(self) -> Result:
        started = time.perf_counter()
        try:
            self.setup()
            self.run_until(self.heal_at)
            self.heal()
            self.run_until(self.heal_at + self.scenario.quiet)
            self.run_until(self.pick_compare_time())
            self.check()
        except Aborted:
            pass
        self.stats["events"] = self.events
        seconds = time.perf_counter() - started
        return Result(self.scenario, self.failures, self.stats, seconds, list(self.trace))

    def setup(self) -> None:
        s, rng = self.scenario, self.rng
        for m in self.members:
            self.at(T0 + rng.uniform(0, 0.5), self.restart, m.index)
        if s.random_traffic:
            for mn in self.mobile_nodes:
                self.at(T0 + rng.uniform(0.5, 2.0), self._mobile_node_tick, mn.index)
        if s.random_traffic and s.removals:
            self.at(T0 + rng.uniform(2, 5), self._random_removal)
        if s.random_faults:
            crashes = rng.randint(0, s.members - 1) if s.crashes is None else s.crashes
            for _ in range(crashes):
                self.at(T0 + rng.uniform(2, s.chaos - 2), self._random_crash)
            partitions = rng.randint(0, 3) if s.partitions is None else s.partitions
            for n in range(partitions):
                start = rng.uniform(1, s.chaos - 2)
                end = T0 + min(start + rng.uniform(0.5, 6), s.chaos - 0.1)
                self.at(T0 + start, self._random_partition, n, end)
            links = rng.randint(0, 2) if s.lossy_links is None else s.lossy_links
            for _ in range(links):
                start = rng.uniform(1, s.chaos - 2)
                end = T0 + min(start + rng.uniform(0.5, 5), s.chaos - 0.1)
                self.at(T0 + start, self._random_lossy_link, end)
            restarts = rng.randint(0, 2) if s.restarts is None else s.restarts
            for _ in range(restarts):
                self.at(T0 + rng.uniform(2, s.chaos - 2), self._random_restart)

    def heal(self) -> None:
        """No loss, no duplicates, no partitions; every member up; the mobile nodes stop."""
        self.note("heal")
        self.loss = self.duplicate = self.reorder = 0.0
        self._partitions.clear()
        self.blocked = set()
        self.lossy.clear()
        self.drop_rule = None
        self.traffic = False
        if self.scenario.restart_on_heal:
            for m in self.members:
                if m.ha is None:
                    self.restart(m.index)

    def pick_compare_time(self) -> float:
        """The first moment from now on when no binding ends within COMPARE_MARGIN before (or just after)."""
        expiries = [b.expires for m in self.members if m.ha for b in m.ha.bindings]
        expiries += [a.binding.expires for a in self.model.acceptances if a.binding is not None]
        for step in range(100):
            t = self.now + 0.1 * step
            if not any(t - COMPARE_MARGIN <= e <= t + 0.3 for e in expiries):
                return t
        return self.now

    # -- the event loop ---------------------------------------------------------------------------------

    def push(self, at: float, kind: int, *args) -> None:
        self._seq += 1
        heapq.heappush(self.queue, (at, self._seq, kind, args))

    def at(self, when: float, fn: Callable, *args) -> None:
        self.push(when, CALL, fn, args)

    def run_until(self, end: float) -> None:
        queue = self.queue
        while queue and queue[0][0] <= end:
            at, _, kind, args = heapq.heappop(queue)
            self.now = at
            self.events += 1
            if self.events > MAX_EVENTS:
                self.fail(f"[budget] more than {MAX_EVENTS} events: the run does not settle")
            if kind == DELIVER:
                self._deliver(*args)
            elif kind == TIMER:
                self._timer(*args)
            elif kind == DRAIN:
                self._drain(*args)
            else:
                fn, fargs = args
                fn(*fargs)
        self.now = max(self.now, end)

    def fail(self, what: str, abort: bool = True) -> None:
        self.failures.append(f"t=+{self.now - T0:.4f} {what}")
        if abort:
            raise Aborted(what)

    def note(self, what: str) -> None:
        if self.tracing:
            self.trace.append(f"+{self.now - T0:9.4f} {what}")

    # -- members ----------------------------------------------------------------------------------------

    def restart(self, index: int) -> None:
        m = self.members[index]
        if m.ha is not None:
            return
        self.note(f"start {m.address}")
        self.stats["starts"] += 1
        m.incarnation += 1
        m.tunnels, m.serving = set(), False
        m.knowledge = Knowledge()
        m.ha = HomeAgent(m.config, self.now)
        effects = self._guard(m, "start", m.ha.start, self.now)
        self._apply(m, effects, None)
        self._rearm(m)

    def crash(self, index: int, graceful: bool = False) -> None:
        m = self.members[index]
        if m.ha is None:
            return
        self.note(f"{'stop' if graceful else 'crash'} {m.address}")
        self.stats["stops" if graceful else "crashes"] += 1
        if graceful:
            effects = self._guard(m, "stop", m.ha.stop, self.now)
            self._apply(m, effects, None)
        self._tally_rejections(m)
        m.ha = None
        m.incarnation += 1
        m.timer_at = None
        m.tunnels, m.serving = set(), False
        m.inbox = []
        self.holders.discard(index)
        self._write_off_lost()

    def _write_off_lost(self) -> None:
        """Count the acceptances no member that is up knows any more: they died with a crash (reference.py
        says what that means for the answer). A late datagram from the dead may still bring one back."""
        live = [m.knowledge for m in self.members if m.ha is not None]
        for a in self.model.acceptances:
            if a.number not in self.lost and not any(k.knows(a.number) for k in live):
                self.lost.add(a.number)
                self.stats["acceptances_lost_with_crash"] += 1

    REJECTION_COUNTERS = ("redundancy.malformed", "redundancy.messages_rejected")

    def _tally_rejections(self, m: Member) -> None:
        """Add what an incarnation rejected as malformed to the run's count (its core is about to go)."""
        assert m.ha is not None
        for name in self.REJECTION_COUNTERS:
            if m.ha.counters[name]:
                self.rejections[f"{m.address} {name}"] += m.ha.counters[name]

    def _guard(self, m: Member, what: str, fn: Callable, *args) -> list:
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 - any exception leaving a core is the finding
            tb = traceback.format_exc(limit=-3).strip().replace("\n", " | ")
            self.fail(f"[exception] {m.address} {what} raised {type(exc).__name__}: {exc} [{tb}]")
            raise  # unreachable: fail() aborts

    def _rearm(self, m: Member) -> None:
        ha = m.ha
        if ha is None:
            return
        t = self._guard(m, "next_timer", ha.next_timer)
        if t == m.timer_at:
            return
        m.timer_token += 1
        m.timer_at = t
        if t is not None:
            self.push(max(t, self.now), TIMER, m.index, m.incarnation, m.timer_token)

    def _timer(self, index: int, incarnation: int, token: int) -> None:
        m = self.members[index]
        if m.ha is None or m.incarnation != incarnation or m.timer_token != token:
            return
        m.timer_at = None
        if self.now == m.last_timer_now:
            m.timer_repeats += 1
            if m.timer_repeats > TIMER_STORM:
                self.fail(f"[storm] {m.address}: handle_timer called {TIMER_STORM} times at one instant")
        else:
            m.last_timer_now, m.timer_repeats = self.now, 0
        effects = self._guard(m, "handle_timer", m.ha.handle_timer, self.now)
        self._apply(m, effects, None)
        self._rearm(m)

    def _receive(self, m: Member, data: bytes, source: tuple[str, int], local: str,
                 carried: Carried = None) -> None:
        ha = m.ha
        assert ha is not None
        registration = data[0] == REQUEST_TYPE and len(data) >= _REQ.size
        if registration:
            counters = ha.counters
            before = counters["accepted"] + counters["accepted.deregistration"]
        effects = self._guard(m, "receive_datagram", ha.receive_datagram, data, source, local, self.now)
        if registration and counters["accepted"] + counters["accepted.deregistration"] > before:
            self._accepted(m, data)
        elif carried is not None:
            self._learn(m, data, carried)
        self._apply(m, effects, local)
        self._rearm(m)

    def _accepted(self, m: Member, request: bytes) -> None:
        """Member ``m`` accepted this Registration Request: one operation for the model."""
        assert m.ha is not None
        _, flags, lifetime, hoa, _, coa, ident = _REQ.unpack_from(request)
        ident = from_wire(ident)  # the NTP timestamp sent, as the members hold it (wire/era.py)
        state = m.ha.bindings.lookup(hoa)
        if state[0] != ident:
            self.fail(f"[oracle] {m.address} accepted {IPv4Address(hoa)} #{fmt_id(ident)} but holds "
                      f"#{fmt_id(state[0])}", False)
        binding = None
        if lifetime == 0:
            op = Operation(hoa, ident, DEREGISTER_ALL if coa == hoa else DEREGISTER, coa)
        else:
            simultaneous = bool(flags & S_FLAG) and self.shape.simultaneous_bindings > 0
            op = Operation(hoa, ident, REGISTER, coa, simultaneous)
            binding = next((b for b in state[1] if (b.care_of_address, b.identification) == (coa, ident)),
                           None)
            if binding is None:
                self.fail(f"[oracle] {m.address} accepted {IPv4Address(hoa)} #{fmt_id(ident)} but holds no "
                          f"binding for {IPv4Address(coa)}: {fmt_state(state)}", False)
        self.model.accept(op, m.index, self.now, binding, m.knowledge)
        self.stats["accepted"] += 1
        self.note(f"{m.address} accepts {IPv4Address(hoa)} #{fmt_id(ident)} {op} -> {fmt_state(state)}")

    def _learn(self, m: Member, data: bytes, carried: tuple[Knowledge, int]) -> None:
        """What a datagram from a member taught ``m``'s core: for each node it names with an Identification
        (a Binding Update, a node's state in a table reply or any other message that carries one) that
        ``m`` now holds at or above, what the sender knew of that node up to it when it sent the datagram.
        Acknowledgements name a node but carry nothing."""
        sender, size = carried
        if not size:
            return
        bindings = m.ha.bindings  # type: ignore[union-attr]
        for hoa, ident in named_nodes(data):
            last = bindings.last_identification(hoa)
            if last is not None and last >= ident:
                m.knowledge.learn_from(sender, size, hoa, ident)

    def _apply(self, m: Member, effects: list, local: str | None) -> None:
        for e in effects:
            t = type(e)
            if t is Send:
                data = e.datagram
                if data and data[0] == REPLY_TYPE:
                    self._reply_sent(m, data)
                self.transmit(data, e.source or local or m.address, e.address[0])
            elif t is ClaimAddress:
                if e.address != VIP:
                    self.fail(f"[vip] {m.address} claims {e.address}, not the virtual address")
                if m.index not in self.holders:
                    self.note(f"{m.address} claims the virtual address")
                    self.stats["claims"] += 1
                    self.holders.add(m.index)
            elif t is ReleaseAddress:
                if m.index in self.holders:
                    self.note(f"{m.address} releases the virtual address")
                    self.holders.discard(m.index)
            elif t is Serve:
                m.serving = e.serving
            elif t is TunnelSet:
                m.tunnels = {k for k in m.tunnels if k[0] != e.home_address}
                m.tunnels.update((e.home_address, tunnel.care_of_address) for tunnel in e.tunnels)
            else:
                self.fail(f"[effect] {m.address} returned an unexpected effect {e!r}")

    def _reply_sent(self, m: Member, data: bytes) -> None:
        try:
            reply = RegistrationReply.parse(data)
        except ParseError as exc:
            self.fail(f"[reply] {m.address} sent an unparseable Registration Reply: {exc}")
            return
        self.stats[f"replies_sent.{reply.code}"] += 1
        if reply.code < 64:
            key = (reply.home_address, reply.identification)
            if key[1] not in self.model.identifications(key[0]):
                self.fail(f"[phantom] {m.address} sent code {reply.code} for {IPv4Address(key[0])} "
                          f"#{fmt_id(key[1])}, "
                          "which no member accepted", False)
            self.replied.add(key)

    # -- the network ------------------------------------------------------------------------------------

    def transmit(self, data: bytes, source: str, destination: str, count: bool = True,
                 local: str | None = None, carried: Carried = None) -> None:
        """``data`` from ``source`` on its way to ``destination``, where it arrives at ``local`` (the
        destination itself, or the multicast group a copy was sent to). A datagram from a member carries
        what its sender knew as it sent it (``carried``), for the oracle."""
        rng = self.rng
        sender = self.by_address.get(source)
        if count:
            self.stats["datagrams"] += 1
            if sender is not None and sender.ha is not None and data[0] >= 200:
                carried = (sender.knowledge, sender.knowledge.size())
        if self.drop_rule is not None and self.drop_rule(self.now, source, destination, data):
            self.stats["dropped_by_rule"] += 1
            return
        if self.loss and rng.random() < self.loss:
            self.stats["lost"] += 1
            if self.tracing:
                self.note(f"lose {source} -> {destination}: {describe(data)}")
            return
        if self.lossy and sender is not None and destination in self.by_address:
            extra = self.lossy.get((sender.index, self.by_address[destination].index), 0.0)
            if extra and rng.random() < extra:
                self.stats["lost_on_lossy_link"] += 1
                return
        copies = 2 if self.duplicate and rng.random() < self.duplicate else 1
        for _ in range(copies):
            delay = rng.uniform(self.scenario.min_delay, self.scenario.max_delay)
            if self.reorder and rng.random() < self.reorder:
                delay += rng.uniform(0, self.scenario.reorder_delay)
            self.push(self.now + delay, DELIVER, data, source, destination, local or destination, carried)

    def _deliver(self, data: bytes, source: str, destination: str, local: str, carried: Carried) -> None:
        if self.tracing:
            self.note(f"deliver {source} -> {destination}: {describe(data)}")
        if destination == MULTICAST:  # every other member, each copy lost or not on its own
            self.stats["multicasts"] += 1
            for m in self.members:
                if m.address != source:
                    self.transmit(data, source, m.address, count=False, local=MULTICAST, carried=carried)
            return
        if destination == VIP:
            holders = sorted(i for i in self.holders if self.members[i].ha is not None)
            if not holders:
                self.stats["no_holder"] += 1
                return
            if len(holders) > 1:
                self.stats["split_brain_deliveries"] += 1
            if self.vip_to in holders:
                m = self.members[self.vip_to]
            else:
                m = self.members[holders[0] if len(holders) == 1 else self.rng.choice(holders)]
        else:
            m = self.by_address.get(destination)  # type: ignore[assignment]
            if m is None:
                self._mobile_node_receive(data, destination)
                return
            if m.ha is None:
                self.stats["to_a_dead_member"] += 1
                return
        sender = self.by_address.get(source)
        if sender is not None and (sender.index, m.index) in self.blocked:
            self.stats["partitioned"] += 1
            return
        if self.batch:
            if not m.inbox:
                self.push(self.now + self.rng.uniform(0, 0.002), DRAIN, m.index, m.incarnation)
            m.inbox.append((data, (source, PORT), local, carried))
            return
        self._receive(m, data, (source, PORT), local, carried)

    def _drain(self, index: int, incarnation: int) -> None:
        """What a member's sockets hold, received in one batch (the daemon's drain)."""
        m = self.members[index]
        inbox, m.inbox = m.inbox, []
        if m.ha is None or m.incarnation != incarnation:
            return
        self.stats["drains"] += 1
        self._guard(m, "begin_batch", m.ha.begin_batch)
        for data, source, local, carried in inbox:
            self._receive(m, data, source, local, carried)
            if m.ha is None:
                return
        effects = self._guard(m, "end_batch", m.ha.end_batch, self.now)
        self._apply(m, effects, None)
        self._rearm(m)

    def partition(self, name: int, blocked: set[tuple[int, int]]) -> None:
        self.note(f"partition {name}: {sorted(blocked)}")
        self._partitions[name] = blocked
        self.blocked = set().union(*self._partitions.values())

    def unpartition(self, name: int) -> None:
        if self._partitions.pop(name, None) is not None:
            self.note(f"partition {name} ends")
            self.blocked = set().union(*self._partitions.values()) if self._partitions else set()

    # -- random faults ----------------------------------------------------------------------------------

    def _random_crash(self) -> None:
        rng = self.rng
        up = [m for m in self.members if m.ha is not None]
        if len(up) < 2:
            return  # keep one member up: with nobody left the oracle has nothing to say
        m = rng.choice(up)
        self.crash(m.index, graceful=rng.random() < self.scenario.graceful)
        back = min(self.now + rng.uniform(0.2, 5.0), self.heal_at)
        self.at(back, self.restart, m.index)

    def _random_restart(self) -> None:
        """A member crashes (or stops) and comes straight back, before the others can mark it down: it
        returns with an empty table while they still count on it."""
        rng = self.rng
        up = [m for m in self.members if m.ha is not None]
        if len(up) < 2:
            return
        m = rng.choice(up)
        self.crash(m.index, graceful=rng.random() < self.scenario.graceful)
        self.stats["quick_restarts"] += 1
        self.at(min(self.now + rng.uniform(0.01, 0.3), self.heal_at), self.restart, m.index)

    def _random_lossy_link(self, end: float) -> None:
        """Datagrams from one member to another are mostly lost, the other way not at all, until ``end``."""
        rng = self.rng
        a, b = rng.sample(range(len(self.members)), 2)
        self.note(f"lossy link {addr(a)} -> {addr(b)}")
        self.stats["lossy_links"] += 1
        self.lossy[(a, b)] = self.scenario.link_loss
        self.at(end, self.lossy.pop, (a, b), None)

    def _random_partition(self, name: int, end: float) -> None:
        rng, n = self.rng, len(self.members)
        indices = list(range(n))
        rng.shuffle(indices)
        cut = rng.randint(1, n - 1)
        a, b = indices[:cut], indices[cut:]
        pairs = {(x, y) for x in a for y in b}
        if rng.random() < 0.3:  # one way only
            self.partition(name, pairs)
        else:
            self.partition(name, pairs | {(y, x) for x, y in pairs})
        self.at(end, self.unpartition, name)

    # -- mobile nodes -----------------------------------------------------------------------------------

    def identification(self, mn: MobileNode) -> int:
        """A fresh NTP timestamp on the shared clock, random low bits, always increasing (RFC 5944 5.7.1)."""
        ident = (ntp_identification(self.now) & ~0xFF) | self.rng.getrandbits(8)
        if ident <= mn.last_ident:
            ident = mn.last_ident + 1
        mn.last_ident = ident
        return ident

    def send_request(self, k: int, care_of: int | None, lifetime: int, flags: int = 0,
                     destination: str = VIP, home_agent: str = VIP) -> int:
        """Mobile node ``k`` sends a signed Registration Request; care_of None: its home address (with
        lifetime 0, a de-registration of every binding). Returns the Identification."""
        mn = self.mobile_nodes[k]
        coa = mn.hoa if care_of is None else care_of
        ident = self.identification(mn)
        request = RegistrationRequest(flags, lifetime, mn.hoa, ip(home_agent), coa, ident)
        datagram = MN_SA.sign(request.header_bytes())
        mn.sent[ident & 0xFFFFFFFF] = ident
        mn.datagrams[ident] = (datagram, destination)
        self.stats["requests"] += 1
        self.note(f"{mn.name} sends #{fmt_id(ident)} coa={IPv4Address(coa)} life={lifetime} "
                  f"flags={flags:#x} to {destination}")
        self.transmit(datagram, str(IPv4Address(coa)), destination)
        if self.traffic and self.scenario.mn_retransmit:
            self.at(self.now + 1.0, self._mobile_node_retransmit, k, ident, datagram, destination)
        return ident

    def _mobile_node_retransmit(self, k: int, ident: int, datagram: bytes, destination: str) -> None:
        """No reply within a second: send the same request again (once), as a mobile node may."""
        mn = self.mobile_nodes[k]
        answered = ident & 0xFFFFFFFF in mn.answered
        if not self.traffic or answered or self.rng.random() >= self.scenario.mn_retransmit:
            return
        self.resend(k, ident)

    def resend(self, k: int, ident: int) -> None:
        """Mobile node ``k`` sends its request ``ident`` again, byte for byte (its reply was lost, 3.6.3)."""
        mn = self.mobile_nodes[k]
        datagram, destination = mn.datagrams[ident]
        self.stats["mn_retransmissions"] += 1
        self.note(f"{mn.name} sends #{fmt_id(ident)} again")
        _, _, _, _, _, coa, _ = _REQ.unpack_from(datagram)
        self.transmit(datagram, str(IPv4Address(coa)), destination)

    def remove(self, index: int, hoa: int, care_of: int | None) -> None:
        """The operator removes a binding (or all of a node's) on member ``index``."""
        m = self.members[index]
        if m.ha is None:
            return
        before = m.ha.bindings.last_identification(hoa)
        effects = self._guard(m, "remove", m.ha.remove, hoa, care_of, self.now)
        state = m.ha.bindings.lookup(hoa)
        if before is not None and state[0] is not None and state[0] > before:
            op = (Operation(hoa, state[0], DEREGISTER_ALL, hoa) if care_of is None
                  else Operation(hoa, state[0], DEREGISTER, care_of))
            self.model.accept(op, m.index, self.now, None, m.knowledge)
            self.stats["removals"] += 1
            self.note(f"operator removes {IPv4Address(hoa)} on {m.address} -> {fmt_state(state)}")
        self._apply(m, effects, None)
        self._rearm(m)

    def _random_removal(self) -> None:
        rng = self.rng
        if self.traffic:
            up = [m for m in self.members if m.ha is not None]
            if up:
                m = rng.choice(up)
                mn = rng.choice(self.mobile_nodes)
                self.remove(m.index, mn.hoa, None if rng.random() < 0.5 else rng.choice(mn.coas))
            self.at(self.now + rng.expovariate(1 / 3.0), self._random_removal)

    def _mobile_node_tick(self, k: int) -> None:
        if not self.traffic:
            return
        rng, mn = self.rng, self.mobile_nodes[k]
        r = rng.random()
        if r < 0.6:
            flags = (S_FLAG if rng.random() < 0.4 else 0) | (T_FLAG if rng.random() < 0.2 else 0)
            band = rng.random()
            lifetime = rng.randint(*(2, 8) if band < 0.4 else (9, 30) if band < 0.75 else (60, 600))
            coa: int | None = rng.choice(mn.coas)
        elif r < 0.85:
            flags, lifetime, coa = 0, 0, None  # every binding
        else:
            flags, lifetime, coa = 0, 0, rng.choice(mn.coas)  # one binding
        home_agent = destination = VIP
        if self.scenario.mode == "peer" and rng.random() < 0.75:
            destination = rng.choice(self.members).address
            if rng.random() < 0.3:
                home_agent = destination
        self.send_request(k, coa, lifetime, flags, destination, home_agent)
        self.at(self.now + rng.expovariate(1 / self.request_interval), self._mobile_node_tick, k)

    def _mobile_node_receive(self, data: bytes, destination: str) -> None:
        self.stats["to_mobile_nodes"] += 1
        try:
            reply = RegistrationReply.parse(data)
        except ParseError as exc:
            self.fail(f"[mn] {destination} got a datagram that is no Registration Reply: {exc}")
            return
        mn = self.by_hoa.get(reply.home_address)
        if mn is None:
            self.fail(f"[mn] {destination} got a reply for {IPv4Address(reply.home_address)}: not ours")
            return
        mhae = reply.extension(ExtensionType.MOBILE_HOME_AUTH)
        if mhae is None or not MN_SA.verify(reply.raw, mhae):
            self.fail(f"[mn] {mn.name} got a reply that does not verify (code {reply.code})")
        if reply.identification & 0xFFFFFFFF not in mn.sent:
            self.fail(f"[mn] {mn.name} got a reply (code {reply.code}) to no request it sent")
        if reply.code < 64 and reply.identification not in mn.sent.values():
            self.fail(f"[mn] {mn.name} got code {reply.code} naming an Identification it never sent")
        if reply.code not in (0, 1, 133, 135):
            self.fail(f"[mn] {mn.name} got unexpected code {reply.code}", False)
        mn.replies[reply.code] += 1
        mn.answered.add(reply.identification & 0xFFFFFFFF)
        self.stats[f"mn_replies.{reply.code}"] += 1

    # -- the oracle -------------------------------------------------------------------------------------

    def check(self) -> None:
        now = self.compared_at = self.now
        live = [m for m in self.members if m.ha is not None]
        mode = self.scenario.mode
        # Roles and the virtual address.
        roles = {m.address: m.ha.role for m in live}
        if any(r == "init" for r in roles.values()):
            self.fail(f"[init] members stuck in init after healing: {roles}", False)
        holders = sorted(self.members[i].address for i in self.holders)
        if len(holders) != 1:
            self.fail(f"[vip] {len(holders)} members hold the virtual address after healing: {holders}, "
                      f"roles {roles}", False)
        if mode == "active-standby":
            actives = [a for a, r in roles.items() if r == "active"]
            if len(actives) != 1 or actives != holders:
                self.fail(f"[vip] active members {actives} vs holders {holders} roles {roles}", False)
        # Tunnels: every member's data plane holds its bindings' tunnels, and serves iff the member does.
        for m in live:
            if m.serving != m.ha.group.forwarding:
                self.fail(f"[tunnels] {m.address} ({roles[m.address]}) forwards {m.ha.group.forwarding}, its "
                          f"data plane was told {m.serving}", False)
            want = {(b.home_address, b.care_of_address) for b in m.ha.bindings}
            if m.tunnels != want:
                extra, missing = m.tunnels - want, want - m.tunnels
                self.fail(f"[tunnels] {m.address} ({roles[m.address]}) tunnels differ from its bindings: "
                          f"extra {fmt_pairs(extra)} missing {fmt_pairs(missing)}", False)
        # Datagrams between members rejected as malformed, by every incarnation.
        for m in live:
            self._tally_rejections(m)
        if self.rejections and not self.scenario.rejections_allowed:
            self.fail(f"[rejected] member datagrams rejected as malformed: {dict(self.rejections)}", False)
        # The tables.
        knowledge = [m.knowledge for m in live]
        self.stats["acceptances_lost"] = sum(not any(k.knows(a.number) for k in knowledge)
                                             for a in self.model.acceptances)
        hoas = set(self.model.home_addresses())
        for m in live:
            hoas.update(m.ha.bindings.home_addresses())
        for hoa in sorted(hoas):
            self._check_node(hoa, live, knowledge, now)

    def _check_node(self, hoa: int, live: list[Member], knowledge: list[Knowledge], now: float) -> None:
        name = str(IPv4Address(hoa))
        lasts = {m.address: m.ha.bindings.last_identification(hoa) for m in live}
        distinct = set(lasts.values())
        if len(distinct) > 1:
            self.fail(f"[divergence] {name}: members disagree on the last Identification: "
                      + ", ".join(f"{a}=#{fmt_id(v)}" for a, v in lasts.items())
                      + "; tables " + "; ".join(f"{m.address}: {fmt_state(m.ha.bindings.lookup(hoa))}"
                                                for m in live), False)
        final = max((v for v in distinct if v is not None), default=None)
        known, lost = self.model.split(hoa, knowledge)
        missing = [i for i in known if final is None or i > final]
        if missing:
            replied = (hoa, missing[-1]) in self.replied
            self.fail(f"[lost] {name}: accepted #{fmt_id(missing[-1])} (replied: {replied}) "
                      f"but the members hold #{fmt_id(final)}", False)
        if final is None:
            return
        if final not in self.model.identifications(hoa):
            self.fail(f"[phantom] {name}: members hold #{fmt_id(final)}, which no member accepted", False)
            return
        holders = [m for m in live if m.ha.bindings.last_identification(hoa) == final]
        for m in holders[1:]:  # the same Identification must mean the same bindings everywhere
            first = holders[0].ha.bindings.bindings_of(hoa)
            apart = diff_bindings(m.ha.bindings.bindings_of(hoa), first, now)
            if apart:
                self.fail(f"[split-state] {name}: {m.address} and {holders[0].address} both hold "
                          f"#{fmt_id(final)} "
                          f"but differ: {apart}", False)
        answers = self.model.expected(hoa, knowledge, final)
        for m in holders:
            state = m.ha.bindings.lookup(hoa)
            problems = [diff_model(state[1], answer, now) for answer in answers]
            if all(problems):
                self.fail(f"[state] {name} on {m.address}: holds {fmt_state(state)}, the model says "
                          f"{answers[0].describe(fmt_id, T0)}: {problems[0]}; operations: "
                          f"{self.describe_operations(hoa, known)}", False)

    def describe_operations(self, hoa: int, known: list[int]) -> str:
        """A node's operations in Identification order, where each was accepted, which are lost."""
        return "; ".join(f"#{fmt_id(i)} {a[0].operation} at {addr(a[0].member)} +{a[0].at - T0:.3f}"
                         + ("" if i in known else " (lost)")
                         for i, a in sorted(self.model.identifications(hoa).items()))


# -- comparing and printing -----------------------------------------------------------------------------


def named_nodes(data: bytes) -> list[tuple[int, int]]:
    """(home address, Identification) of every node a member datagram carries state for: a Binding Update,
    a node of a table reply, or any message with a ``node`` or ``nodes``; acknowledgements carry none."""
    out: list[tuple[int, int]] = []
    for message in messages(data):
        if "Ack" in type(message).__name__:
            continue
        hoa, ident = getattr(message, "home_address", None), getattr(message, "identification", None)
        if isinstance(hoa, int) and isinstance(ident, int):
            out.append((hoa, ident))
        node = getattr(message, "node", None)
        nodes = (node,) if node is not None else getattr(message, "nodes", None)
        for n in nodes or ():
            if hasattr(n, "home_address") and hasattr(n, "identification"):
                out.append((n.home_address, n.identification))
    return out


def diff_bindings(actual: tuple, expected: tuple, now: float) -> str:
    """'' when ``actual`` (one member's bindings of a node) is what ``expected`` (another's) leaves at
    ``now``; else what differs. A binding within a second of its end may be there or not."""
    have = {b.care_of_address: b for b in actual}
    want = {b.care_of_address: b for b in expected}
    out = []
    for coa in sorted(set(have) | set(want)):
        h, w = have.get(coa), want.get(coa)
        if w is None:
            out.append(f"unexpected {IPv4Address(coa)}")
        elif h is None:
            if w.expires > now + EXPIRY_TOLERANCE:
                out.append(f"missing {IPv4Address(coa)} (expires +{w.expires - now:.3f})")
        elif w.expires <= now - 1 - EXPIRY_TOLERANCE:
            out.append(f"{IPv4Address(coa)} should have expired {now - w.expires:.3f} s ago")
        elif (h.identification, h.lifetime, h.flags, h.home_agent) != (
                w.identification, w.lifetime, w.flags, w.home_agent):
            out.append(f"{IPv4Address(coa)} differs: {h} vs {w}")
        elif abs(h.expires - w.expires) > EXPIRY_TOLERANCE:
            out.append(f"{IPv4Address(coa)} expires {h.expires - w.expires:+.3f} s off")
    return "; ".join(out)


_NTP_T0 = ntp_identification(T0)


def fmt_id(ident: int | None) -> str:
    """An Identification as seconds after T0 on the NTP clock (they are timestamps)."""
    return "none" if ident is None else f"{(ident - _NTP_T0) / (1 << 32):.6f}"


def fmt_state(state: State) -> str:
    last, bindings = state
    inner = ", ".join(
        f"{IPv4Address(b.care_of_address)} #{fmt_id(b.identification)} life={b.lifetime} "
        f"exp=+{b.expires - T0:.3f}" for b in bindings)
    return f"#{fmt_id(last)} [{inner}]"


def _bodies(data: bytes) -> list:
    """The redundancy messages of a sealed datagram (the seal, of this version, is found from the end: its
    16-byte head and a 16- or 32-byte authenticator)."""
    from homeagent.wire import redundancy

    for digest in (16, 32):
        start = len(data) - 16 - digest
        head = data[start:start + 3]
        if start >= 1 and tuple(head) == (100, 14 + digest, redundancy.VERSION):
            parse = getattr(redundancy, "parse_messages", None)
            return parse(data[:start]) if parse else [redundancy.parse_body(data[:start])]
    raise ParseError("no seal")


def messages(data: bytes) -> list:
    """The redundancy messages of a datagram (parsed without checking its seal); [] if it holds none."""
    try:
        return _bodies(data)
    except (ParseError, ValueError):
        return []


def _describe_message(m) -> str:
    name = type(m).__name__
    if name == "BindingUpdate":
        extra = f" +{len(m.node.bindings)} bindings" if m.node is not None else ""
        return (f"BU {IPv4Address(m.home_address)} #{fmt_id(m.identification)} "
                f"coa={IPv4Address(m.care_of_address)} life={m.lifetime} rem={m.remaining_ms}ms{extra}")
    if name == "BindingUpdateAck":
        return f"BUAck {IPv4Address(m.home_address)} #{fmt_id(m.identification)} code={m.code}"
    if name == "BindingTableRequest":
        return f"TableReq id={fmt_id(m.identification)}"
    if name == "BindingTableReply":
        return f"TableReply id={fmt_id(m.identification)} seq={m.sequence} n={len(m.nodes)} more={m.more}"
    if name == "BindingTableReplyAck":
        return f"TableAck id={fmt_id(m.identification)} seq={m.sequence}"
    if name == "Advertisement":
        return f"Advert prio={m.priority} role={m.role}"
    return name


def describe(data: bytes) -> str:
    """A datagram in a trace line."""
    kind = data[0] if data else -1
    try:
        if kind == REQUEST_TYPE:
            _, flags, life, hoa, _, coa, ident = _REQ.unpack_from(data)
            ident = from_wire(ident)
            where = f"coa={IPv4Address(coa)} life={life} flags={flags:#x}"
            return f"RRQ {IPv4Address(hoa)} #{fmt_id(ident)} {where}"
        if kind == REPLY_TYPE:
            _, code, life, hoa, _, ident = struct.unpack_from("!BBHIIQ", data)
            return f"RRP {IPv4Address(hoa)} #{fmt_id(from_wire(ident))} code={code} life={life}"
        return " + ".join(_describe_message(m) for m in _bodies(data))
    except (struct.error, ParseError, ValueError):
        return f"type {kind} ({len(data)} bytes)"


def fmt_pairs(pairs: set[tuple[int, int]]) -> str:
    return "{" + ", ".join(f"{IPv4Address(h)}->{IPv4Address(c)}" for h, c in sorted(pairs)) + "}"


def run_seed(seed: int, **overrides) -> Result:
    return Simulation(scenario_for(seed, **overrides)).run()


def scripted(seed: int = 1, members: int = 3, mode: str = "active-standby", replication: str = "async",
             chaos: float = 12.0, quiet: float = 10.0, **overrides) -> Simulation:
    """A quiet, lossless group with member 0 the preferred active member and two mobile nodes, for a
    scenario written by hand: schedule requests and faults with ``sim.at``, drop datagrams with
    ``sim.drop_rule``, then ``sim.run()`` (it heals the network at ``chaos``, checks after ``quiet``)."""
    fields = dict(
        loss=0.0, duplicate=0.0, reorder=0.0, min_delay=0.0005, max_delay=0.0005, chaos=chaos, quiet=quiet,
        mobile_nodes=2, crashes=0, partitions=0, advertisement_interval=0.1, sa_style="prefix",
        priorities=tuple(200 - 10 * i for i in range(members)), max_datagram=1400, simultaneous_bindings=3,
        batch=False, random_traffic=False, random_faults=False, preempt=True, multicast=False,
    )
    fields.update(overrides)
    return Simulation(Scenario(seed, members, mode, replication, **fields))


_TYPES = {"BindingUpdate": 200, "BindingUpdateAck": 201, "BindingTableRequest": 202, "BindingTableReply": 203,
          "BindingTableReplyAck": 204, "Advertisement": 205}


def kinds(data: bytes) -> set[int]:
    """The message types in a datagram (several when messages share one)."""
    if data[:1] in (b"\x01", b"\x03"):
        return {data[0]}
    try:
        return {_TYPES.get(type(m).__name__, -1) for m in _bodies(data)}
    except (ParseError, ValueError):
        return set()


def drop_first(count: int, source: str, destination: str, kind: int, after: float = T0):
    """A drop rule: the first ``count`` datagrams from ``source`` to ``destination`` sent after ``after``
    that hold a message of type ``kind`` (200 Binding Update, 202 Table Request, 203 Table Reply ...)."""
    left = [count]

    def rule(now: float, src: str, dst: str, data: bytes) -> bool:
        if left[0] and now >= after and src == source and dst == destination and kind in kinds(data):
            left[0] -= 1
            return True
        return False

    return rule


def drop_all(source: str, destination: str, kind: int):
    """A drop rule: every datagram from ``source`` to ``destination`` holding a message of type ``kind``."""
    return lambda now, src, dst, data: src == source and dst == destination and kind in kinds(data)


def any_of(*rules):
    return lambda *args: any(rule(*args) for rule in rules)


def expiry_spread(sim: Simulation, hoa: int) -> float:
    """How far apart the members that are up expire the bindings of ``hoa`` (0.0 if they hold none)."""
    spread = 0.0
    by_coa: dict[int, list[float]] = {}
    for m in sim.members:
        if m.ha is not None:
            for b in m.ha.bindings.bindings_of(hoa):
                by_coa.setdefault(b.care_of_address, []).append(b.expires)
    for times in by_coa.values():
        spread = max(spread, max(times) - min(times))
    return spread
