"""A redundancy group of HomeAgent cores (core/group.py, home_agent.py; US 7,227,863 FIG 3 to 9).

Two or three cores made from ``homeagent.config.parse`` are wired by ``Net``, an in-memory network that
delivers their datagrams at once (or drops the ones a test says), with one explicit clock. Where a test
needs full control of a member, ``FakePeer`` plays it: it seals messages by hand with the group key, for
the conversation they travel in (protocol version 2: the seal covers the sender's and receiver's addresses).
Members are the configured peers only: what comes from anywhere else is refused and counted.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from homeagent.config import parse as parse_config
from homeagent.core.bindings import BindingTable
from homeagent.core.effects import ClaimAddress, ReleaseAddress, Send, Serve, Tunnel, TunnelSet
from homeagent.core.exchange import CLOSED_MEMORY
from homeagent.core.replication import UPDATE_RETRANSMIT, UPDATE_TRIES
from homeagent.core.home_agent import HomeAgent
from homeagent.core.transfer import RETRANSMIT_AFTER
from homeagent.core.replay import ntp_identification
from homeagent.wire.auth import Algorithm, SecurityAssociation
from homeagent.wire.errors import ParseError
from homeagent.wire.redundancy import (
    ASK_BACK,
    MAX_MESSAGES,
    DEFERRED,
    DIGEST,
    DIGEST_BUCKETS,
    AckCode,
    Advertisement,
    BindingRecord,
    BindingTableReply,
    BindingTableReplyAck,
    BindingTableRequest,
    BindingUpdate,
    BindingUpdateAck,
    YOU_LAG,
    MobileNodeBindings,
    parse_messages,
    unseal,
)
from homeagent.wire.registration import RegistrationReply

from .support import COA, COA2, COA3, HOA, T0, ip, mhae, ntp, wire_ntp

HA1, HA2, HA3 = "192.0.2.1", "192.0.2.2", "192.0.2.3"
VIP = "192.0.2.100"
STRANGER = "203.0.113.9"  # no Home Agent - Home Agent association covers it
MULTICAST = "239.1.2.3"
GROUP_KEY = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
GROUP_SPI = 1000
GROUP_SA = SecurityAssociation(GROUP_SPI, Algorithm.HMAC_MD5, GROUP_KEY)
MN = ("198.51.100.7", 434)  # where mobile nodes' requests come from
PORT = 434
INTERVAL = 0.1
SETTLE = 100_000  # datagrams one deliver() may carry: more is a message loop, a failure rather than a hang

CONFIG = """
[home_agent]
address = "{address}"
port = 434
home_network = "10.1.0.0/16"
max_lifetime = 1800
replay_tolerance = 7
state_dir = "/nonexistent/homeagent-test"
simultaneous_bindings = 3

[[security_association]]
home_addresses = "10.1.0.0/16"
spi = 256
algorithm = "hmac-md5"
key = "00112233445566778899aabbccddeeff"

[redundancy]
virtual_address = "192.0.2.100"
mode = "{mode}"
priority = {priority}
peers = [{peers}]
replication = "{replication}"
sync_timeout = {sync_timeout}
advertisement_interval = {interval}
preempt = {preempt}
startup_wait = {startup_wait}
{extra}
[[redundancy.security_association]]
peer = "192.0.2.0/24"
spi = 1000
algorithm = "hmac-md5"
key = "2b7e151628aed2a6abf7158809cf4f3c"
"""


def make_config(address: str, peers: list[str], priority: int = 100, mode: str = "active-standby",
                replication: str = "async", sync_timeout: float = 0.5, preempt: bool = True,
                startup_wait: float = 1.0, multicast: str | None = None, interval: float = INTERVAL):
    return parse_config(CONFIG.format(
        address=address, peers=", ".join(f'"{p}"' for p in peers), priority=priority, mode=mode,
        replication=replication, sync_timeout=sync_timeout, preempt=str(preempt).lower(), startup_wait=startup_wait,
        interval=interval,
        extra=f'multicast_group = "{multicast}"' if multicast else "",
    ))


def registration(coa: int = COA, now: float = T0, fraction: int = 1, lifetime: int = 600, flags: int = 0,
                 hoa: int = HOA) -> bytes:
    """A Registration Request to the virtual address, built and signed by hand."""
    fixed = struct.pack("!BBHIIIQ", 1, flags, lifetime, hoa, ip(VIP), coa, wire_ntp(ntp(now, fraction)))
    return mhae(fixed)


def reply_of(send: Send) -> RegistrationReply:
    return RegistrationReply.parse(send.datagram)


@dataclass
class Datagram:
    at: float
    src: str
    dst: str
    messages: list  # the parsed body: one message, or several back to back
    raw: bytes

    def has(self, kind: type) -> bool:
        return any(type(m) is kind for m in self.messages)


@dataclass
class Message:
    at: float
    src: str
    dst: str
    message: object


class Net:
    """Home Agents on one in-memory network: datagrams between members arrive at once, in order, unless
    ``drop(datagram)`` says otherwise; anything sent elsewhere (replies to mobile nodes, datagrams to
    a member that is not running) lands in ``outside``."""

    def __init__(self, now: float = T0) -> None:
        self.now = now
        self.has: dict[str, HomeAgent] = {}
        self.queue: list[tuple[str, str, bytes]] = []
        self.log: list[Datagram] = []
        self.outside: list[tuple[float, str, Send]] = []
        self.effects: dict[str, list] = {}
        self.drop: Callable[[Datagram], bool] = lambda d: False
        self.hold: Callable[[Datagram], bool] = lambda d: False  # delayed until release()
        self.held: list[tuple[str, str, bytes]] = []
        self.taps: list[Callable[[Datagram], None]] = []

    def add(self, address: str, config, start: bool = True) -> HomeAgent:
        ha = HomeAgent(config, self.now)
        self.has[address] = ha
        self.effects[address] = []
        if start:
            self.collect(address, ha.start(self.now))
        return ha

    def collect(self, src: str, effects) -> list:
        for e in effects:
            if isinstance(e, Send):
                dst = e.address[0]
                if dst in self.has or dst.startswith("192.0.2."):
                    self.queue.append((src, dst, e.datagram))
                else:
                    self.outside.append((self.now, src, e))
            else:
                self.effects[src].append(e)
        return effects

    def deliver(self, limit: int | None = None) -> int:
        n = 0
        while self.queue and (limit is None or n < limit):
            src, dst, data = self.queue.pop(0)
            n += 1
            if n > SETTLE:
                kinds = Counter(tuple(type(m).__name__ for m in d.messages) for d in self.log[-1000:])
                raise AssertionError(f"datagrams never settle at one instant: {kinds.most_common(3)}")
            body, _ = unseal(data, GROUP_SA, ip(src), ip(dst))  # sealed for this very conversation
            d = Datagram(self.now, src, dst, parse_messages(body), data)
            if self.hold(d):
                self.held.append((src, dst, data))
                continue
            self.log.append(d)
            for tap in self.taps:
                tap(d)
            if self.drop(d) or dst not in self.has:
                continue
            self.collect(dst, self.has[dst].receive_datagram(data, (src, PORT), dst, self.now))
        return n

    def release(self) -> None:
        """Held datagrams go on their way (after what is already queued)."""
        self.queue += self.held
        self.held = []
        self.hold = lambda d: False

    def register(self, data: bytes, at: str = HA1) -> list:
        """A mobile node's request arrives at ``at`` on the virtual address."""
        return self.collect(at, self.has[at].receive_datagram(data, MN, VIP, self.now))

    def run_until(self, t: float) -> None:
        for _ in range(1_000_000):
            self.deliver()
            times = [(ha.next_timer(), a) for a, ha in self.has.items()]
            due = [x for x in times if x[0] is not None and x[0] <= t]
            if not due:
                break
            self.now = max(self.now, min(x[0] for x in due))
            for address, ha in self.has.items():
                nt = ha.next_timer()
                if nt is not None and nt <= self.now:
                    self.collect(address, ha.handle_timer(self.now))
        else:
            raise AssertionError("timers never settle")
        self.deliver()
        self.now = max(self.now, t)

    def messages(self, kind: type, src: str | None = None, dst: str | None = None) -> list[Message]:
        """Every message of ``kind`` that went between members (delivered or dropped), in order."""
        return [Message(d.at, d.src, d.dst, m) for d in self.log for m in d.messages
                if type(m) is kind and (src is None or d.src == src) and (dst is None or d.dst == dst)]

    def replies(self, src: str | None = None) -> list[RegistrationReply]:
        return [reply_of(s) for _, a, s in self.outside if s.address == MN and (src is None or a == src)]


def group(n: int = 2, replication: str = "async", mode: str = "active-standby", priorities=(200, 100, 50),
          **kw) -> tuple[Net, list[HomeAgent]]:
    """``n`` members started together at T0 and settled: the first (highest priority) is active."""
    net = Net()
    addresses = [HA1, HA2, HA3][:n]
    has = [net.add(a, make_config(a, [p for p in addresses if p != a], priorities[i], mode, replication, **kw))
           for i, a in enumerate(addresses)]
    net.run_until(T0 + 2)
    if mode == "active-standby":
        assert [ha.role for ha in has] == ["active"] + ["standby"] * (n - 1)
    return net, has


def view(ha: HomeAgent, now: float | None = None) -> dict:
    """Every node's last Identification and bindings, expiry left out (compared separately)."""
    out = {}
    for hoa in ha.bindings.home_addresses():
        last, bindings = ha.bindings.lookup(hoa)
        out[hoa] = (last, sorted((b.care_of_address, b.home_agent, b.identification, b.lifetime, b.flags)
                                 for b in bindings))
    return out


def expiries(ha: HomeAgent) -> dict:
    return {(b.home_address, b.care_of_address): b.expires for b in ha.bindings}


def redundancy_counters(ha: HomeAgent) -> dict:
    return {k: v for k, v in ha.counters.items() if k.startswith("redundancy.")}


class FakePeer:
    """A member played by hand: seals what it sends with the group key and strictly increasing timestamps.

    The seal is built here with struct and hmac (docs/protocol.md, version 3), not with our encoder: Type
    100, Length 14 + 16, Version 3, Reserved, SPI, Timestamp, then HMAC-MD5 over the sender's and the
    receiver's addresses (covered, never sent) and everything before the authenticator."""

    def __init__(self, address: str = HA2, key: bytes = GROUP_KEY, spi: int = GROUP_SPI,
                 version: int = 3) -> None:
        self.address, self.key, self.spi, self.version = address, key, spi, version
        self.last = 0

    def seal(self, body: bytes, now: float, receiver: str = HA1, sender: str | None = None) -> bytes:
        ts = max(ntp(now, int((now % 1) * (1 << 32))), self.last + 1)
        self.last = ts
        covered = body + struct.pack("!BBBBIQ", 100, 30, self.version, 0, self.spi, wire_ntp(ts))
        pseudo = struct.pack("!II", ip(self.address if sender is None else sender), ip(receiver))
        return covered + hmac.new(self.key, pseudo + covered, hashlib.md5).digest()

    def send(self, ha: HomeAgent, body: bytes, now: float, local: str = HA1) -> list:
        """``body`` sealed for ``local`` (our address, or the multicast group's) and arriving there."""
        return ha.receive_datagram(self.seal(body, now, local), (self.address, PORT), local, now)


def opened(effects, to: str | None = None) -> list:
    """The member messages among ``effects``, parsed (and checked to be sealed with the group key for the
    conversation they go in: from the member's own address to the address they are sent to)."""
    out = []
    for e in effects:
        if isinstance(e, Send) and e.address[0] != MN[0]:
            assert e.address[1] == PORT and (to is None or e.address[0] == to), e
            out += parse_messages(unseal(e.datagram, GROUP_SA, ip(e.source), ip(e.address[0]))[0])
    return out


def update(ident: int, coa: int = COA, lifetime: int = 600, remaining_ms: int = 600_000, flags: int = 0,
           node: MobileNodeBindings | None = None, hoa: int = HOA) -> bytes:
    """A Binding Update body, packed by hand (docs/protocol.md; the encoder is checked by the vectors)."""
    body = struct.pack("!BBHIIIIQ", 200, flags, lifetime, remaining_ms, hoa, ip(VIP), coa, wire_ntp(ident))
    if node is not None:
        data = struct.pack("!IQ", node.home_address, wire_ntp(node.identification)) + b"".join(
            struct.pack("!IIQHBxI", r.care_of_address, r.home_agent, wire_ntp(r.identification), r.lifetime, r.flags,
                        r.remaining_ms) for r in node.bindings)
        body += bytes((101, len(data))) + data
    return body


def lone(address: str = HA1, peers=(HA2,), **kw) -> tuple[HomeAgent, list]:
    """A member whose peers never answer: ready after startup_wait, active after the master-down interval."""
    ha = HomeAgent(make_config(address, list(peers), **kw), T0)
    effects = ha.start(T0)
    now = T0
    while ha.role != "active":
        now = ha.next_timer()
        assert now is not None and now < T0 + 10
        effects += ha.handle_timer(now)
    return ha, effects


# -- start-up (FIG 4) ------------------------------------------------------------------------------------


def test_a_lone_member_serves_after_startup_wait():
    ha = HomeAgent(make_config(HA1, [HA2], priority=100, startup_wait=1.0), T0)
    effects = ha.start(T0)
    assert ha.role == "init"
    [request] = opened(effects, to=HA2)
    assert type(request) is BindingTableRequest and request.home_agents == (ip(HA1), ip(HA2))
    assert ha.receive_datagram(registration(), MN, VIP, T0 + 0.1) == []  # not serving yet
    assert ha.counters["discarded.not_serving"] == 1
    now = T0
    resent = 0
    while ha.next_timer() < T0 + 1.0:
        now = ha.next_timer()
        resent += sum(type(m) is BindingTableRequest for m in opened(ha.handle_timer(now)))
        assert ha.role == "init", now
    assert resent >= 1  # asked again while waiting
    ha.handle_timer(T0 + 1.0)
    assert ha.role == "standby"
    mdi = 3 * INTERVAL + (256 - 100) / 256 * INTERVAL
    ha.handle_timer(T0 + 1.0 + mdi - 1e-6)
    assert ha.role == "standby"
    effects = ha.handle_timer(T0 + 1.0 + mdi)
    assert ha.role == "active" and ClaimAddress(VIP, announce=True) in effects
    [reply] = [reply_of(e) for e in ha.receive_datagram(registration(now=T0 + 2), MN, VIP, T0 + 2)
               if isinstance(e, Send) and e.address == MN]
    assert reply.code == 0
    assert ha.counters["redundancy.became_standby"] == 1 and ha.counters["redundancy.became_active"] == 1


def test_a_member_with_no_peers_configured_also_waits_then_serves():
    ha = HomeAgent(make_config(HA1, [], startup_wait=0.5), T0)
    assert [e for e in ha.start(T0) if isinstance(e, Send)] == []
    ha.handle_timer(T0 + 0.49)
    assert ha.role == "init"
    ha.handle_timer(T0 + 0.5)
    assert ha.role == "standby"


def populate(ha: HomeAgent, n: int, now: float) -> None:
    """Register ``n`` nodes straight into a member's table (some simultaneous, some de-registered)."""
    for i in range(n):
        hoa = ip("10.1.0.0") + 1 + i
        ident = ntp(now - 100, i)
        ha.bindings.register(hoa, ip("198.51.100.0") + i % 200, 600, ident, now - 10, 0, home_agent=ip(VIP))
        if i % 7 == 0:
            ha.bindings.register(hoa, ip("203.0.113.0") + i % 200, 300, ident + 1, now - 5, 0x80, True, ip(VIP))
        if i % 11 == 0:
            ha.bindings.deregister(hoa, None, ident + 2)
    ha.bindings.changes()  # made by hand: what they changed is taken here, not with the next input


@pytest.mark.parametrize("mode", ["active-standby", "peer"])
def test_a_starting_member_downloads_the_table_before_serving(mode):
    net = Net()
    ha1 = net.add(HA1, make_config(HA1, [HA2], 200, mode))
    net.run_until(T0 + 2)
    assert ha1.role == ("active" if mode == "active-standby" else "peer")
    populate(ha1, 300, net.now)
    start = net.now
    ha2 = net.add(HA2, make_config(HA2, [HA1], 100, mode))
    assert ha2.role == "init"
    # Step one datagram at a time: HA2 stays in init, serving nothing, until the last reply is in.
    steps = 0
    while ha2.role == "init":
        assert net.deliver(limit=1) == 1, "the download stalled"
        steps += 1
        if ha2.role == "init":
            assert ha2.receive_datagram(registration(now=net.now), MN, HA2, net.now) == []
            assert ha2.receive_datagram(registration(now=net.now), MN, VIP, net.now) == []
            assert not any(isinstance(e, (ClaimAddress, Serve)) for e in net.effects[HA2])
    assert ha2.counters["discarded.not_serving"] == 2 * (steps - 1)
    replies = net.messages(BindingTableReply, src=HA1, dst=HA2)
    assert len(replies) > 3 and [m.message.more for m in replies] == [True] * (len(replies) - 1) + [False]
    assert view(ha2) == view(ha1)
    for key, at in expiries(ha1).items():
        assert expiries(ha2)[key] == pytest.approx(at, abs=0.002)
    assert ha2.role == ("standby" if mode == "active-standby" else "peer")
    # Every member keeps its data plane's tunnels as its table, serving or not: one TunnelSet a node.
    assert sorted(e.home_address for e in net.effects[HA2] if isinstance(e, TunnelSet)) == sorted(ha1.bindings.bound())
    assert Serve(True) not in net.effects[HA2]  # HA1 holds the virtual address
    if mode == "peer":  # a peer answers registrations at once
        reply = [reply_of(e) for e in ha2.receive_datagram(registration(now=net.now + 1), MN, HA2, net.now + 1)
                 if isinstance(e, Send) and e.address == MN]
        assert [r.code for r in reply] == [0]
    else:
        assert not any(isinstance(e, ClaimAddress) for e in net.effects[HA2]) and Serve(True) not in net.effects[HA2]
    c2 = redundancy_counters(ha2)
    assert c2["redundancy.table_replies_received"] == len(replies)
    assert c2["redundancy.table_requests_sent"] >= 1
    assert ha1.counters["redundancy.table_requests_received"] >= 1
    assert ha1.counters["redundancy.table_replies_sent"] >= len(replies)
    assert net.now == start  # all of it at one instant: nothing waited for a timer


def test_a_requester_that_is_not_configured_is_refused_and_nothing_is_learnt():
    # (Was: FIG 5, the requester is learnt from its Binding Table Request and asked for its table too.
    # Trust is configured now: a member's address that HA1's configuration does not name is refused, every
    # datagram of it counted as a security violation, and HA1 neither adds it nor sends it anything.)
    net = Net()
    ha1 = net.add(HA1, make_config(HA1, [], 200))  # HA2 is not configured here
    net.run_until(T0 + 2)
    assert ha1.role == "active" and list(ha1.group.membership) == []
    start = net.now
    ha2 = net.add(HA2, make_config(HA2, [HA1], 100))
    net.run_until(start + 3)
    assert list(ha1.group.membership) == []
    from_ha2 = [d for d in net.log if d.src == HA2 and d.dst == HA1]
    assert any(d.has(BindingTableRequest) for d in from_ha2) and any(d.has(Advertisement) for d in from_ha2)
    assert ha1.counters["redundancy.security_violations"] == len(from_ha2)
    assert ha1.counters["redundancy.table_requests_received"] == 0
    assert [d for d in net.log if d.src == HA1] == []  # not a table, not an advertisement
    # HA2 hears nothing back: it gives up waiting and serves alone (the two configurations disagree).
    assert ha2.role == "active" and not ha2.group.membership.members[ip(HA1)].up
    assert ha2.counters["redundancy.security_violations"] == 0


def test_a_configured_requester_is_heard_and_asked_for_its_table_too():
    # FIG 5 as it is now: HA2 is configured on both sides; HA1, up alone, hears it by its request, sends
    # its table and asks for HA2's.
    net = Net()
    ha1 = net.add(HA1, make_config(HA1, [HA2], 200))  # HA2 configured, not running yet
    net.run_until(T0 + 2)
    assert ha1.role == "active" and not ha1.group.membership.members[ip(HA2)].up
    start = net.now
    ha2 = net.add(HA2, make_config(HA2, [HA1], 100))
    net.run_until(start + 1)
    assert [m.name for m in ha1.group.membership] == [HA2] and ha1.group.membership.members[ip(HA2)].up
    assert [m for m in net.messages(BindingTableRequest, src=HA1, dst=HA2) if m.at >= start]
    assert net.messages(BindingTableReply, src=HA1, dst=HA2)
    assert net.messages(BindingTableReply, src=HA2, dst=HA1)
    assert ha2.role == "standby"
    assert [ha.counters["redundancy.security_violations"] for ha in (ha1, ha2)] == [0, 0]


def test_members_meet_by_multicast_only_when_configured_as_peers():
    # (Was: a member met by multicast alone was learnt. A multicast now opens only from a configured peer,
    # sealed for the multicast group's address, and only where it arrived at that address.)
    ha, effects = lone(HA1, peers=(HA2,), multicast=MULTICAST)
    [multicast] = [e for e in effects if isinstance(e, Send) and e.address[0] == MULTICAST]
    [request] = opened([multicast])  # the start-up request, sealed from HA1 for the group
    assert type(request) is BindingTableRequest and multicast.source == HA1
    with pytest.raises(ParseError):
        unseal(multicast.datagram, GROUP_SA, ip(HA1), ip(HA2))
    now = T0 + 5
    body = BindingTableRequest(ntp(now, 1), (ip(HA3), ip(HA1), ip(HA2))).body()
    # HA3: the group association covers it, its seal for the group is genuine, but it is no configured peer.
    assert FakePeer(HA3).send(ha, body, now, local=MULTICAST) == []
    assert ha.counters["redundancy.security_violations"] == 1
    assert ip(HA3) not in ha.group.membership.members
    # HA2's multicast arriving at HA1's own address: sealed for the group, not for HA1.
    peer = FakePeer(HA2)
    assert ha.receive_datagram(peer.seal(body, now, MULTICAST), (HA2, PORT), HA1, now) == []
    assert ha.counters["redundancy.security_violations"] == 2 and not ha.group.membership.members[ip(HA2)].up
    # HA2, configured, multicasting to the group: heard, sent the table by unicast, asked for its own.
    answer = opened(peer.send(ha, body, now, local=MULTICAST), to=HA2)
    assert {BindingTableReply, BindingTableRequest} <= {type(m) for m in answer}
    assert ha.group.membership.members[ip(HA2)].up
    assert ha.counters["redundancy.security_violations"] == 2


# -- replication (FIG 6 to 9) --------------------------------------------------------------------------


def test_a_registration_replicates_as_a_binding_update_and_is_acked():
    net, (ha1, ha2) = group()
    now = net.now
    effects = net.register(registration(now=now))
    assert reply_of(effects[0]).code == 0  # async: the reply goes out at once, first
    [bu] = [m for m in opened(effects, to=HA2)]
    assert bu == BindingUpdate(0, 600, 600_000, HOA, ip(VIP), COA, ntp(now, 1))
    net.deliver()
    assert view(ha2) == view(ha1) == {HOA: (ntp(now, 1), [(COA, ip(VIP), ntp(now, 1), 600, 0)])}
    assert expiries(ha2)[(HOA, COA)] == pytest.approx(expiries(ha1)[(HOA, COA)], abs=0.001)
    [ack] = net.messages(BindingUpdateAck, src=HA2, dst=HA1)
    assert ack.message == BindingUpdateAck(AckCode.APPLIED, HOA, ntp(now, 1))
    assert ha1.counters["redundancy.updates_sent"] == 1 and ha1.counters["redundancy.updates_acked"] == 1
    assert ha2.counters["redundancy.updates_received"] == 1
    # A standby keeps the tunnel ready in its data plane, and does not serve it.
    assert TunnelSet(HOA, (Tunnel(COA, ip(VIP), False),)) in net.effects[HA2]
    assert Serve(True) not in net.effects[HA2]
    net.run_until(now + 10)  # nothing is resent once acked
    assert len(net.messages(BindingUpdate)) == 1


def test_every_member_that_is_up_gets_the_update():
    net, (ha1, ha2, ha3) = group(3)
    net.register(registration(now=net.now))
    net.deliver()
    assert view(ha1) == view(ha2) == view(ha3) != {}
    assert {d.dst for d in net.messages(BindingUpdate)} == {HA2, HA3}
    assert ha1.counters["redundancy.updates_acked"] == 2


def test_simultaneous_bindings_travel_in_a_mobile_node_bindings_extension():
    net, (ha1, ha2) = group()
    now = net.now
    net.register(registration(COA, now, 1, flags=0x80))
    net.register(registration(COA2, now, 2, flags=0x80))
    net.deliver()
    second = net.messages(BindingUpdate)[-1].message
    assert second.node is not None and second.care_of_address == COA2
    assert {r.care_of_address for r in second.node.bindings} == {COA, COA2}
    assert view(ha2) == view(ha1) and len(ha2.bindings) == 2


def test_a_deregistration_replicates():
    net, (ha1, ha2) = group()
    now = net.now
    net.register(registration(COA, now, 1, flags=0x80))
    net.register(registration(COA2, now, 2, flags=0x80))
    net.register(registration(COA, now, 3, lifetime=0))  # one of two
    net.deliver()
    assert view(ha2) == view(ha1) == {HOA: (ntp(now, 3), [(COA2, ip(VIP), ntp(now, 2), 600, 0x80)])}
    net.register(registration(HOA, now, 4, lifetime=0))  # all of them
    net.deliver()
    assert view(ha2) == view(ha1) == {HOA: (ntp(now, 4), [])}
    assert net.messages(BindingUpdate)[-1].message == BindingUpdate(0, 0, 0, HOA, ip(VIP), HOA, ntp(now, 4))
    assert ha1.counters["redundancy.updates_acked"] == 4


def test_an_administrative_removal_replicates():
    net, (ha1, ha2) = group()
    now = net.now
    net.register(registration(COA, now, 1, flags=0x80))
    net.register(registration(COA2, now, 2, flags=0x80))
    net.deliver()
    effects = net.collect(HA1, ha1.remove(HOA, COA, now))
    assert TunnelSet(HOA, (Tunnel(COA2, ip(VIP), False),)) in effects  # what is left of the node's tunnels
    net.deliver()
    assert view(ha2) == view(ha1) == {HOA: (ntp(now, 2) + 1, [(COA2, ip(VIP), ntp(now, 2), 600, 0x80)])}
    net.collect(HA1, ha1.remove(HOA, None, now))
    net.deliver()
    assert view(ha2) == view(ha1) == {HOA: (ntp(now, 2) + 2, [])}
    assert ha1.counters["removed"] == 2 and ha1.counters["redundancy.updates_acked"] == 4
    # The node's next registration (a current timestamp) is still newer than the removal.
    net.register(registration(COA3, now + 1, 5))
    net.deliver()
    assert view(ha2) == view(ha1) and ha1.bindings.bindings_of(HOA)[0].care_of_address == COA3
    assert ha1.remove(ip("10.1.9.9"), None, now) == []  # unknown: nothing to do or send


def test_a_removal_later_than_the_registration_carries_the_time_of_the_removal():
    # A removal takes the time of the removal as its Identification, after any registration meanwhile (seed 441).
    net, (ha1, ha2) = group()
    net.register(registration(now=net.now))
    net.deliver()
    net.run_until(net.now + 30)  # members keep advertising meanwhile: their clocks move with ours
    later = net.now
    net.collect(HA1, ha1.remove(HOA, None, later))
    net.deliver()
    assert view(ha1) == view(ha2) == {HOA: (ntp_identification(later), [])}


def test_a_removal_on_a_standby_replicates_to_the_active():
    net, (ha1, ha2) = group()
    net.register(registration(now=net.now))
    net.deliver()
    effects = net.collect(HA2, ha2.remove(HOA, None, net.now))
    assert TunnelSet(HOA, ()) in effects  # a standby's data plane follows its table too
    net.deliver()
    assert view(ha1) == view(ha2) == {HOA: (ntp(net.now, 1) + 1, [])}


def test_a_replicated_binding_expires_on_the_replica_too():
    net, (ha1, ha2) = group()
    now = net.now
    net.register(registration(now=now, lifetime=5))
    net.deliver()
    net.run_until(now + 4.999)
    assert len(ha1.bindings) == len(ha2.bindings) == 1
    net.run_until(now + 6)  # removed at most about a second late, never early
    assert len(ha1.bindings) == len(ha2.bindings) == 0
    assert ha2.bindings.last_identification(HOA) == ntp(now, 1)


# -- what a replica takes: newest Identification wins ------------------------------------------------


@pytest.fixture
def replica():
    """HA1, active and alone, with a FakePeer at HA2 that has been heard."""
    ha, _ = lone()
    return ha, FakePeer()


def test_duplicate_reordered_and_old_updates_change_nothing(replica):
    ha, peer = replica
    now = T0 + 5
    i1, i2, i3 = ntp(now, 1), ntp(now, 2), ntp(now, 3)
    newest = update(i2, COA2)
    assert opened(peer.send(ha, newest, now), to=HA2)[-1] == BindingUpdateAck(AckCode.APPLIED, HOA, i2)
    state = view(ha)
    assert state == {HOA: (i2, [(COA2, ip(VIP), i2, 600, 0)])}
    # Older (reordered or late), the same one again (a resend, sealed anew), far older, and another state
    # under the same Identification that loses the tie-break (same expiry, smaller care-of address): acked
    # with code 1, nothing changes.
    assert COA < COA2
    for body in (update(i1, COA), newest, update(i2 - (60 << 32), COA3), update(i2, COA)):
        acks = [m for m in opened(peer.send(ha, body, now)) if type(m) is BindingUpdateAck]
        assert [a.code for a in acks] == [AckCode.NOT_NEWER]
        assert view(ha) == state
    # A newer one wins, whatever came before it.
    peer.send(ha, update(i3, COA3), now)
    assert view(ha) == {HOA: (i3, [(COA3, ip(VIP), i3, 600, 0)])}
    state = view(ha)
    # The very same datagram twice: the second is a replay, refused without an answer.
    data = peer.seal(update(ntp(now, 9), COA), now)
    ha.receive_datagram(data, (HA2, PORT), HA1, now)
    state, violations = view(ha), ha.counters["redundancy.security_violations"]
    assert ha.receive_datagram(data, (HA2, PORT), HA1, now) == []
    assert view(ha) == state and ha.counters["redundancy.security_violations"] == violations + 1
    assert ha.counters["redundancy.updates_received"] == 7


def test_a_replica_that_serves_moves_the_tunnels(replica):
    ha, peer = replica
    now = T0 + 5
    effects = peer.send(ha, update(ntp(now, 1), COA, flags=0x02), now)
    assert TunnelSet(HOA, (Tunnel(COA, ip(VIP), True),)) in effects
    effects = peer.send(ha, update(ntp(now, 2), COA2), now)
    assert TunnelSet(HOA, (Tunnel(COA2, ip(VIP), False),)) in effects
    effects = peer.send(ha, update(ntp(now, 3), HOA, lifetime=0, remaining_ms=0), now)
    assert TunnelSet(HOA, ()) in effects and ha.bindings.lookup(HOA) == (ntp(now, 3), ())


def test_an_update_carries_state_so_the_newest_alone_is_enough(replica):
    ha, peer = replica
    now = T0 + 5
    node = MobileNodeBindings(HOA, ntp(now, 5), (
        BindingRecord(COA, ip(VIP), ntp(now, 1), 600, 0x80, 100_000),
        BindingRecord(COA2, ip(VIP), ntp(now, 5), 600, 0x80, 600_000),
    ))
    peer.send(ha, update(ntp(now, 5), COA2, flags=0x80, remaining_ms=0, node=node), now)
    assert view(ha) == {HOA: (ntp(now, 5), [(COA, ip(VIP), ntp(now, 1), 600, 0x80),
                                            (COA2, ip(VIP), ntp(now, 5), 600, 0x80)])}
    assert expiries(ha) == {(HOA, COA): now + 100, (HOA, COA2): now + 600}


def test_an_update_for_a_home_address_we_do_not_serve_is_refused(replica):
    ha, peer = replica
    now = T0 + 5
    acks = opened(peer.send(ha, update(ntp(now, 1), hoa=ip("10.2.0.5")), now))
    assert BindingUpdateAck(AckCode.REFUSED, ip("10.2.0.5"), ntp(now, 1)) in acks
    assert ha.bindings.lookup(ip("10.2.0.5")) == (None, ())


@pytest.mark.parametrize("who", ["stranger", "bad-key", "bad-spi", "own-address", "virtual-address-unsealed",
                                 "unconfigured", "for-another-member", "as-another-member", "version-1"])
def test_an_update_without_a_valid_seal_changes_nothing_and_counts(replica, who):
    ha, _ = replica
    now = T0 + 5
    ha.bindings.register(HOA, COA, 600, ntp(now, 1), now)
    ha.bindings.changes()  # made by hand: its change is taken here, not with the forgery's answer
    before = view(ha)
    body = update(ntp(now, 7), COA2)
    if who == "stranger":
        data, source = FakePeer(STRANGER).seal(body, now), STRANGER
    elif who == "bad-key":
        data, source = FakePeer(key=bytes(16)).seal(body, now), HA2
    elif who == "bad-spi":
        data, source = FakePeer(spi=GROUP_SPI + 1).seal(body, now), HA2
    elif who == "own-address":
        data, source = FakePeer(HA1).seal(body, now), HA1
    elif who == "unconfigured":  # the group association covers HA3, the configuration does not name it
        data, source = FakePeer(HA3).seal(body, now), HA3
    elif who == "for-another-member":  # HA2's genuine seal, but for HA3
        data, source = FakePeer(HA2).seal(body, now, receiver=HA3), HA2
    elif who == "as-another-member":  # a genuine seal as from HA3, sent from HA2's address
        data, source = FakePeer(HA2).seal(body, now, sender=HA3), HA2
    elif who == "version-1":  # version 1's seal (no version byte, addresses not covered)
        covered = body + struct.pack("!BBIQ", 100, 28, GROUP_SPI, ntp(now))
        data, source = covered + hmac.new(GROUP_KEY, covered, hashlib.md5).digest(), HA2
    else:
        data, source = body, HA2
    assert ha.receive_datagram(data, (source, PORT), HA1, now) == []
    assert view(ha) == before
    assert ha.counters["redundancy.security_violations"] == 1
    assert set(ha.group.membership.members) == {ip(HA2)}


def test_a_reflected_advertisement_moves_nothing_and_is_counted():
    """HA1's genuine advertisement to HA2 (active, priority 200), captured on the link and re-sent from
    another configured member's address, to another member, and back to its sender: none of it opens (the
    seal covers the sender and the receiver), each is a counted violation, and no role or view changes."""
    net, has = group(3)
    captured: list[Datagram] = []
    net.taps.append(lambda d: captured.append(d) if (d.src, d.dst) == (HA1, HA2) and d.has(Advertisement)
                    else None)
    net.run_until(net.now + INTERVAL)
    genuine = captured[-1].raw
    roles = [ha.role for ha in has]
    views = [{m.address: (m.up, m.role, m.priority) for m in ha.group.membership} for ha in has]
    counts = [ha.counters["redundancy.security_violations"] for ha in has]
    ha1, ha2, ha3 = has
    now = net.now
    for target, source in ((ha2, HA3), (ha3, HA1), (ha3, HA2), (ha1, HA2), (ha1, HA3), (ha1, HA1)):
        local = {id(ha1): HA1, id(ha2): HA2, id(ha3): HA3}[id(target)]
        assert target.receive_datagram(genuine, (source, PORT), local, now) == []
    # Along its own path it was delivered already: again, it is a replay.
    assert ha2.receive_datagram(genuine, (HA1, PORT), HA2, now) == []
    assert [ha.counters["redundancy.security_violations"] - c for ha, c in zip(has, counts)] == [3, 2, 2]
    assert [ha.role for ha in has] == roles
    assert [{m.address: (m.up, m.role, m.priority) for m in ha.group.membership} for ha in has] == views
    net.run_until(now + 1)
    assert [ha.role for ha in has] == roles == ["active", "standby", "standby"]


def test_redundancy_messages_to_the_virtual_address_are_discarded(replica):
    ha, peer = replica
    before = view(ha)
    assert ha.receive_datagram(peer.seal(update(ntp(T0 + 5, 1)), T0 + 5), (HA2, PORT), VIP, T0 + 5) == []
    assert view(ha) == before and ha.counters["discarded.malformed"] == 1


def test_a_sealed_but_malformed_body_is_counted_and_changes_nothing(replica):
    ha, peer = replica
    before = view(ha)
    assert peer.send(ha, b"\xc8\x00\x02", T0 + 5) == []
    assert view(ha) == before and ha.counters["redundancy.malformed"] == 1


# -- sync replication -------------------------------------------------------------------------------


def test_sync_holds_the_reply_until_the_ack():
    net, (ha1, ha2) = group(replication="sync")
    now = net.now
    effects = net.register(registration(now=now))
    assert not any(isinstance(e, Send) and e.address == MN for e in effects)  # held
    assert net.replies() == []
    net.deliver()  # the update, then its ack
    [reply] = net.replies()
    assert reply.code == 0 and reply.identification == ntp(now, 1)
    assert net.now == now and ha1.counters["redundancy.sync_timeouts"] == 0


def test_sync_releases_the_reply_after_sync_timeout_when_the_ack_is_lost():
    net, (ha1, ha2) = group(replication="sync", sync_timeout=0.5)
    net.drop = lambda d: d.has(BindingUpdateAck)
    now = net.now
    net.register(registration(now=now))
    net.run_until(now + 0.5 - 1e-6)
    assert net.replies() == []
    assert ha1.group.membership.members[ip(HA2)].up
    net.run_until(now + 0.5)
    [(at, _, send)] = net.outside
    assert at == now + 0.5 and reply_of(send).code == 0
    assert not ha1.group.membership.members[ip(HA2)].up
    assert ha1.counters["redundancy.sync_timeouts"] == 1
    assert ha1.counters["redundancy.members_marked_down"] == 1
    # Marked down, HA2 is left out of the next registration: its reply goes out at once.
    net.drop = lambda d: True
    later = now + 0.51
    net.now = later
    effects = net.register(registration(now=later, fraction=2))
    assert [reply_of(e).code for e in effects if isinstance(e, Send) and e.address == MN] == [0]
    assert opened(effects) == []


def test_sync_with_no_other_member_up_answers_at_once():
    ha, _ = lone(replication="sync")
    effects = ha.receive_datagram(registration(now=T0 + 5), MN, VIP, T0 + 5)
    assert [reply_of(e).code for e in effects if isinstance(e, Send)] == [0]


def test_sync_waits_for_every_member_that_is_up():
    net, (ha1, ha2, ha3) = group(3, replication="sync")
    net.drop = lambda d: d.has(BindingUpdateAck) and d.src == HA3
    net.register(registration(now=net.now))
    net.deliver()
    assert net.replies() == []  # HA2 acked, HA3 did not
    net.drop = lambda d: False
    net.run_until(net.now + UPDATE_RETRANSMIT)  # the resend is acked
    assert [r.code for r in net.replies()] == [0]
    assert ha1.counters["redundancy.sync_timeouts"] == 0


def test_sync_replies_of_a_member_that_took_over_do_not_wait_for_the_lost_active():
    # (Found in the namespace tests: the new active member held its first sync replies for the dead one's
    # ack until the liveness check marked it down, a master-down interval after it was last heard.)
    net, (ha1, ha2) = group(replication="sync", sync_timeout=0.5)
    net.has.pop(HA1)  # kill -9: gone without a word
    gone = net.now
    net.collect(HA2, ha2.unreachable(HA1, gone))  # its host answers the next advertisement: port unreachable
    net.run_until(gone + 1.5 * INTERVAL)
    assert ha2.role == "active" and not ha2.group.membership.members[ip(HA1)].up
    assert ha2.group.election.history[-1].replaced == ip(HA1)
    effects = net.register(registration(now=net.now), at=HA2)
    assert [reply_of(e).code for e in effects if isinstance(e, Send) and e.address == MN] == [0]  # at once
    assert ha2.counters["redundancy.member_unreachable"] == 1


def test_sync_two_registrations_of_one_node_before_the_acks():
    # (Found by this test: a newer update replaced the pending one, its predecessor's ack was ignored, and
    # the first reply waited for sync_timeout, then marked a healthy member down.)
    net, (ha1, ha2) = group(replication="sync")
    now = net.now
    net.register(registration(COA, now, 1, flags=0x80))  # two interfaces register at once
    net.register(registration(COA2, now, 2, flags=0x80))
    net.deliver()  # both updates, both acks
    assert len(net.messages(BindingUpdateAck, src=HA2)) == 2
    net.run_until(now + 1)
    assert sorted((at, reply_of(s).identification) for at, _, s in net.outside) == [
        (now, ntp(now, 1)), (now, ntp(now, 2))]
    assert ha1.counters["redundancy.sync_timeouts"] == 0
    assert ha1.group.membership.members[ip(HA2)].up


# -- retransmission and liveness ----------------------------------------------------------------------


def test_unacked_updates_are_resent_with_backoff_then_the_member_is_marked_down():
    net, (ha1, ha2) = group()
    net.drop = lambda d: d.has(BindingUpdate)  # HA2 still advertises, but never gets updates
    now = net.now
    net.register(registration(now=now))
    times = []
    net.taps.append(lambda d: times.append(d.at) if d.has(BindingUpdate) else None)
    net.deliver()
    expected, t = [now], now
    for k in range(UPDATE_TRIES - 1):
        t += UPDATE_RETRANSMIT * 2 ** k
        expected.append(t)
    down_at = t + UPDATE_RETRANSMIT * 2 ** (UPDATE_TRIES - 1)
    net.run_until(down_at - 1e-6)
    assert times == pytest.approx(expected)  # 0, .25, .75, 1.75, 3.75
    assert ha1.group.membership.members[ip(HA2)].up
    assert ha1.counters["redundancy.updates_retransmitted"] == UPDATE_TRIES - 1
    down = []
    net.taps.append(lambda d: down.append(d) if d.has(BindingTableRequest) else None)
    net.run_until(down_at)
    assert ha1.counters["redundancy.updates_failed"] == 1
    assert ha1.counters["redundancy.members_marked_down"] == 1
    assert len(times) == UPDATE_TRIES  # and no more
    # HA2 keeps advertising: heard again, it is up again and asked for its table (it may hold what we missed).
    net.run_until(down_at + INTERVAL)
    assert ha1.group.membership.members[ip(HA2)].up
    assert [d.src for d in down if d.dst == HA2] == [HA1]
    assert any(m.at >= down_at for m in net.messages(BindingTableReply, src=HA2, dst=HA1))


def test_a_member_not_heard_for_its_master_down_interval_is_marked_down_then_resynchronised():
    net, (ha1, ha2) = group()
    net.drop = lambda d: d.src == HA2 or d.dst == HA2  # a partition
    start = net.now
    net.run_until(start + 1)
    assert not ha1.group.membership.members[ip(HA2)].up
    assert not ha2.group.membership.members[ip(HA1)].up
    assert ha2.role == "active"  # split brain: each side serves
    assert ha1.counters["redundancy.members_marked_down"] == 1
    # Each side accepts a registration of its own meanwhile.
    net.register(registration(COA, net.now, 1, hoa=ip("10.1.0.1")), at=HA1)
    net.register(registration(COA2, net.now, 2, hoa=ip("10.1.0.2")), at=HA2)
    assert ip("10.1.0.2") not in ha1.bindings.home_addresses()
    net.drop = lambda d: False  # healed
    net.run_until(net.now + 1)
    assert net.messages(BindingTableRequest, src=HA1, dst=HA2) and net.messages(BindingTableRequest, src=HA2, dst=HA1)
    assert view(ha1) == view(ha2) and len(view(ha1)) == 2
    assert [ha1.role, ha2.role] == ["active", "standby"]  # the better one keeps the address
    assert any(isinstance(e, ReleaseAddress) for e in net.effects[HA2])
    # Everything the group counts is named redundancy.*; the rest is the registrar's.
    registrar = {"requests", "accepted", "accepted.deregistration", "discarded.not_serving", "expired", "removed"}
    for ha in (ha1, ha2):
        assert {k for k in ha.counters if not k.startswith("redundancy.")} <= registrar
        assert {"redundancy.members_marked_down", "redundancy.table_requests_sent", "redundancy.table_replies_received",
                "redundancy.became_active", "redundancy.became_standby"} <= set(ha.counters)


def test_members_with_different_advertisement_intervals_time_each_other_by_the_interval_each_advertises():
    """RFC 5798 6.4.2: a standby times the active member by the interval its advertisements carry, not by
    its own; and a member is judged down by its own interval. A standby configured at 0.1 s behind an
    active member advertising every 1 s neither takes over nor marks it down between two advertisements
    (with its own interval it would, every second: a flapping group), and still takes over when it dies."""
    net = Net()
    ha1 = net.add(HA1, make_config(HA1, [HA2], 200, interval=1.0))
    ha2 = net.add(HA2, make_config(HA2, [HA1], 100, interval=0.1))
    net.run_until(T0 + 4)
    assert [ha1.role, ha2.role] == ["active", "standby"]
    settled = dict(ha2.counters)
    net.run_until(net.now + 10)
    assert [ha1.role, ha2.role] == ["active", "standby"]
    assert ha2.counters["redundancy.became_active"] == settled.get("redundancy.became_active", 0), "no flapping"
    assert ha2.counters.get("redundancy.members_marked_down", 0) == settled.get("redundancy.members_marked_down", 0)
    assert ha1.group.membership.members[ip(HA2)].up and ha2.group.membership.members[ip(HA1)].up
    assert ha2.group.election.master_down_interval == pytest.approx(3 * 1.0 + 156 / 256 * 1.0)
    last = max(d.at for d in net.log if d.src == HA1)
    net.drop = lambda d: d.src == HA1  # ha1 dies
    net.run_until(last + 3 * 1.0 + 156 / 256 - 0.05)
    assert ha2.role == "standby", "a dead active member is waited for by its own master-down interval ..."
    net.run_until(last + 3 * 1.0 + 156 / 256 + 0.05)
    assert ha2.role == "active", "... and no longer"
    assert ha2.group.election.master_down_interval == pytest.approx(3 * 0.1 + 156 / 256 * 0.1), "active: its own"


def test_three_members_with_different_intervals_fail_over_once_to_the_next_in_line():
    """The active member at 0.1 s, the two standbys at 1 s: nobody flaps or is marked down while all live;
    the active one dies and only the better standby takes over, and only the dead member is down. (The
    better standby judged alive by its own interval, when the skews are too close to tell them apart, is
    test_election's.)"""
    net = Net()
    ha1 = net.add(HA1, make_config(HA1, [HA2, HA3], 200, interval=0.1))
    ha2 = net.add(HA2, make_config(HA2, [HA1, HA3], 150, interval=1.0))
    ha3 = net.add(HA3, make_config(HA3, [HA1, HA2], 100, interval=1.0))
    net.run_until(T0 + 6)
    assert [ha1.role, ha2.role, ha3.role] == ["active", "standby", "standby"]
    before = {a: ha.counters.copy() for a, ha in net.has.items()}
    net.run_until(net.now + 10)
    assert {a: ha.counters["redundancy.became_active"] for a, ha in net.has.items()} == \
        {a: c["redundancy.became_active"] for a, c in before.items()}, "no flapping"
    net.drop = lambda d: d.src == HA1 or d.dst == HA1  # ha1 dies
    net.run_until(net.now + 10)
    assert [ha2.role, ha3.role] == ["active", "standby"]
    assert ha2.counters["redundancy.became_active"] == before[HA2]["redundancy.became_active"] + 1
    assert ha3.counters["redundancy.became_active"] == before[HA3]["redundancy.became_active"], "one takeover"
    for ha in (ha2, ha3):
        assert [m.up for m in ha.group.membership] == [m.address != ip(HA1) for m in ha.group.membership]


def test_an_advertised_interval_is_taken_within_what_a_member_can_be_configured_with(replica):
    """An authenticated member may still run another version or carry a bad value: 0 says nothing (the
    last interval heard stays), and anything outside 0.01-10 s is taken as the nearest bound."""
    ha, peer = replica
    member = ha.group.membership.members[ip(HA2)]
    for interval_ms, taken in ((60_000, 10.0), (2_500, 2.5), (0, 2.5), (1, 0.01)):
        peer.send(ha, Advertisement(100, 1, interval_ms).body(), T0 + 5)
        assert member.interval == taken, interval_ms


def test_the_member_that_stays_active_announces_the_address_again_when_it_hears_another_was_active():
    """Issue 10: at a heal the worse active member takes the address off, but the neighbours may hold its
    MAC (it answered ARP while it held the address): the member that stays active tells the link again,
    once per episode."""
    net, (ha1, ha2) = group()
    net.drop = lambda d: d.src == HA2 or d.dst == HA2  # a partition: HA2 takes over on its side
    net.run_until(net.now + 1)
    assert ha2.role == "active" and ClaimAddress(VIP, announce=True) in net.effects[HA2]
    net.effects[HA1].clear()
    net.drop = lambda d: False
    net.run_until(net.now + 1)
    assert [ha1.role, ha2.role] == ["active", "standby"]
    assert net.effects[HA1].count(ClaimAddress(VIP, announce=True)) == 1
    assert ha1.counters["redundancy.announced_again"] == 1
    assert ReleaseAddress(VIP) in net.effects[HA2]
    # A plain active period asks for the address at each advertisement, without announcing it again.
    net.effects[HA1].clear()
    net.run_until(net.now + 1)
    assert ClaimAddress(VIP) in net.effects[HA1] and ClaimAddress(VIP, announce=True) not in net.effects[HA1]


def test_a_member_preempts_only_when_it_outranks_every_active_member():
    """Issue 10 point 2: HA3 (50) and HA1 (200) active after a partition; HA2 (100) outranks HA3 only, and
    must not take over: HA3 stands down for HA1, and exactly one member is active."""
    net, (ha1, ha2, ha3) = group(3)
    net.drop = lambda d: d.src == HA3 or d.dst == HA3
    net.run_until(net.now + 1)
    assert ha3.role == "active"
    net.drop = lambda d: False
    net.run_until(net.now + 1)
    assert [ha1.role, ha2.role, ha3.role] == ["active", "standby", "standby"]
    assert ha2.counters["redundancy.became_active"] == 0


def test_a_heal_exchanges_only_the_buckets_that_differ():
    """Issue 10 point 3: members that were apart exchange what differs, found by digest, not every node
    that changed lately: 600 nodes registered just now (all "recent"), one more on each side of the
    partition, and the heal moves the nodes of at most a few buckets (600 / 256 a bucket), both ways."""
    net, (ha1, ha2) = group()
    base = ip("10.1.4.0")
    for k in range(600):
        net.register(registration(COA, net.now, k + 1, hoa=base + k))
    net.deliver()
    assert view(ha1) == view(ha2) and len(view(ha1)) == 600
    net.drop = lambda d: d.src == HA2 or d.dst == HA2
    net.run_until(net.now + 1)
    net.register(registration(COA, net.now, 1, hoa=ip("10.1.0.1")), at=HA1)
    net.register(registration(COA2, net.now, 2, hoa=ip("10.1.0.2")), at=HA2)
    healed = net.now
    net.drop = lambda d: False
    net.run_until(net.now + 2)
    assert view(ha1) == view(ha2) and len(view(ha1)) == 602
    sent = [n for m in net.messages(BindingTableReply) if m.at >= healed for n in m.message.nodes]
    assert {ip("10.1.0.1"), ip("10.1.0.2")} <= {n.home_address for n in sent}
    differing = {ip("10.1.0.1") % DIGEST_BUCKETS, ip("10.1.0.2") % DIGEST_BUCKETS}
    assert {n.home_address % DIGEST_BUCKETS for n in sent} == differing  # nothing of the other 254 buckets
    assert len(sent) < 60, len(sent)  # a few transfers (catch-up and ask-back, both ways) of ~3 nodes each
    requests = [m.message for m in net.messages(BindingTableRequest) if m.at >= healed]
    assert requests and all(r.flags & DIGEST for r in requests)


def test_a_resend_carries_the_state_first_sent_even_when_the_node_changed_meanwhile():
    """Issue 10 point 4: HA1's update to HA2 is lost; before its resend, HA3 removes the node (a newer
    Identification, replicated to HA1 and HA2). The resend must be the update first sent: made of the
    newer state under the old Identification it would be malformed, and HA2 would reject its datagram with
    everything packed in it (and in the end mark a healthy member down)."""
    net, (ha1, ha2, ha3) = group(3)
    lost: list = []
    net.drop = lambda d: d.src == HA1 and d.dst == HA2 and d.has(BindingUpdate) and not lost and not lost.append(d)
    net.register(registration(now=net.now))
    net.deliver()
    assert lost and len(ha3.bindings) == 1 and len(ha2.bindings) == 0
    net.collect(HA3, ha3.remove(HOA, None, net.now))
    net.deliver()
    assert len(ha1.bindings) == 0 and len(ha2.bindings) == 0
    net.run_until(net.now + 2 * UPDATE_RETRANSMIT)  # the resend
    resent = [m.message for m in net.messages(BindingUpdate, src=HA1, dst=HA2)]
    assert len(resent) == 2 and resent[1].identification == resent[0].identification
    assert resent[1].state().bindings[0].care_of_address == COA  # the state first sent, not the removal
    for ha in (ha1, ha2, ha3):
        assert ha.counters["redundancy.messages_rejected"] == 0 and ha.counters["redundancy.malformed"] == 0
        assert ha.counters["redundancy.members_marked_down"] == 0
    assert view(ha1) == view(ha2) == view(ha3) and len(ha2.bindings) == 0  # the removal is newer: it stays


def test_a_restarted_member_gets_the_table_once():
    """Issue 10 (found by the five-member churn test): HA3 crashes and starts again with an empty table.
    It asks every member for its table (FIG 4, START): the active member sends it, the standby defers and
    is then asked for what differs from it. Each, hearing HA3 again, also sends it a catch-up request with
    Ask Back; HA3's ask-back must not replace its start-up request (covered: the whole table), or each
    member starts its transfer over. Before: the whole table from every member, twice."""
    net, (ha1, ha2, ha3) = group(3)
    base = ip("10.1.8.0")
    for k in range(300):
        net.register(registration(COA, net.now, k + 1, hoa=base + k))
    net.deliver()
    net.drop = lambda d: d.src == HA3 or d.dst == HA3
    net.run_until(net.now + 1)  # HA3 is down, for HA1 and HA2
    assert not ha1.group.membership.members[ip(HA3)].up
    net.drop = lambda d: False
    restarted = net.now
    ha3 = net.add(HA3, make_config(HA3, [HA1, HA2], 50))
    net.run_until(net.now + 3)
    assert view(ha3) == view(ha1) and len(view(ha3)) == 300
    sent = {source: [n for m in net.messages(BindingTableReply, src=source, dst=HA3) if m.at >= restarted
                     for n in m.message.nodes] for source in (HA1, HA2)}
    assert 300 <= len(sent[HA1]) <= 310, len(sent[HA1])  # the active member's table, once
    assert len(sent[HA2]) <= 10, len(sent[HA2])  # what differed from it: nothing, or what changed meanwhile
    assert any(m.message.code == DEFERRED for m in net.messages(BindingTableReply, src=HA2, dst=HA3))
    # A transfer may be replaced, but not a whole table's: HA3's catch-up request after its start-up can
    # meet an Ask Back crossing it, whose answer replaces it (a transfer of what differs: nothing).


def test_a_resent_update_still_expires_the_binding_with_the_sender():
    net, (ha1, ha2) = group()
    lost = []
    net.drop = lambda d: d.has(BindingUpdate) and len(lost) < 3 and not lost.append(d)
    now = net.now
    net.register(registration(now=now))
    net.run_until(now + 2)
    assert len(lost) == 3 and len(ha2.bindings) == 1  # the fourth try, 1.75 s later, arrived
    assert expiries(ha2)[(HOA, COA)] == pytest.approx(expiries(ha1)[(HOA, COA)], abs=0.002)


# -- failover ------------------------------------------------------------------------------------------


def test_a_member_that_starts_as_standby_tells_its_data_plane_not_to_serve():
    """A restarted member's data plane may hold what a killed daemon left serving (the ebpf backend's
    pinned maps): entering standby from init says Serve(False), as leaving active does."""
    net, (ha1, ha2) = group()
    assert [e for e in net.effects[HA2] if isinstance(e, Serve)] == [Serve(False)]
    assert [e for e in net.effects[HA1] if isinstance(e, Serve)][-1] == Serve(True)  # standby first, then active


def test_a_member_restarted_alone_never_tells_its_data_plane_to_stop_serving():
    """Its peer down, a restarted member hears no active member: what a killed daemon left serving (the
    ebpf backend's pinned program) goes on serving through the download and the standby's master-down
    interval, up to the takeover, rather than stopping for ~0.36 s."""
    net = Net()
    ha1 = net.add(HA1, make_config(HA1, [HA2], 100))  # HA2 configured, not running
    net.run_until(T0 + 5)
    assert ha1.role == "active"
    assert [e for e in net.effects[HA1] if isinstance(e, Serve)] == [Serve(True)]


def test_a_member_that_stood_by_with_nobody_active_stops_serving_once_it_hears_an_active_member():
    """Started before the better member is active: no Serve(False) at its own start, but one as soon as the
    better member is heard active, and nothing more."""
    net = Net()
    ha2 = net.add(HA2, make_config(HA2, [HA1], 100))
    net.run_until(T0 + 1.1)  # its start-up wait (1 s) done: alone, it stands by ...
    assert ha2.role == "standby" and not [e for e in net.effects[HA2] if isinstance(e, Serve)]
    ha1 = net.add(HA1, make_config(HA1, [HA2], 200))  # ... and the better member starts before its takeover
    net.run_until(T0 + 5)
    assert [ha1.role, ha2.role] == ["active", "standby"]
    assert [e for e in net.effects[HA2] if isinstance(e, Serve)] == [Serve(False)]


def test_a_member_told_active_while_it_downloads_goes_on_serving_with_no_serve_false_between():
    """An external election that says "active" before the start-up download is done: init, standby and
    active in one step, and only Serve(True): what a killed daemon left serving goes on serving."""
    net = Net()
    text = CONFIG.format(address=HA1, peers=f'"{HA2}"', priority=100, mode="active-standby", replication="async",
                         sync_timeout=0.5, preempt="true", startup_wait=1.0, interval=INTERVAL,
                         extra='election = "external"')
    ha = net.add(HA1, parse_config(text))
    net.collect(HA1, ha.set_role("active", net.now))
    assert ha.role == "init"
    net.run_until(T0 + 3)  # no member answers: the download ends after startup_wait
    assert ha.role == "active"
    assert [e for e in net.effects[HA1] if isinstance(e, Serve)] == [Serve(True)]


def test_a_graceful_stop_hands_the_address_over_after_the_skew():
    net, (ha1, ha2) = group()
    net.register(registration(now=net.now))
    net.deliver()
    stop = net.now
    effects = net.collect(HA1, ha1.stop(stop))
    assert ReleaseAddress(VIP) in effects and Serve(False) in effects
    [advert] = [m for m in opened(effects) if type(m) is Advertisement]
    assert advert.priority == 0 and advert.role == 2
    net.deliver()
    del net.has[HA1]  # gone
    skew = (256 - 100) / 256 * INTERVAL
    net.run_until(stop + skew - 1e-6)
    assert ha2.role == "standby"
    net.run_until(stop + skew)
    assert ha2.role == "active"
    assert ClaimAddress(VIP, announce=True) in net.effects[HA2] and Serve(True) in net.effects[HA2]
    reply = net.register(registration(COA2, net.now, 2), at=HA2)
    assert reply_of(reply[0]).code == 0


def test_a_resigned_member_is_not_waited_for():
    # Peer mode: both serve; HA2 is the elected one, so it resigns with priority 0 when it stops.
    net, (ha1, ha2) = group(replication="sync", mode="peer", priorities=(100, 200))
    assert ha2.group.election.role.label == "active"
    net.drop = lambda d: d.dst == HA2  # HA2 is going away: it gets nothing more
    now = net.now
    net.register(registration(now=now), at=HA1)  # held for HA2's ack
    assert net.replies() == []
    net.collect(HA2, ha2.stop(now))
    net.deliver()  # HA2's priority-0 Advertisement reaches HA1
    del net.has[HA2]
    assert [r.code for r in net.replies()] == [0]  # released at once: HA2 resigned
    net.run_until(now + 10)
    assert ha1.counters["redundancy.sync_timeouts"] == 0
    assert ha1.counters["redundancy.updates_retransmitted"] == 0


# -- the table transfer inside the group ---------------------------------------------------------------


def test_a_late_resent_reply_is_acked_and_leaves_no_transfer_behind():
    net = Net()
    ha1 = net.add(HA1, make_config(HA1, [HA2], 200))  # HA2 is configured, and starts later
    net.run_until(T0 + 2)
    assert ha1.role == "active"
    populate(ha1, 200, net.now)
    lost = []

    def drop(d):
        if d.src == HA2 and not lost and any(type(m) is BindingTableReplyAck and m.sequence == 0 for m in d.messages):
            lost.append(d)
            return True
        return False

    net.drop = drop
    start = net.now
    ha2 = net.add(HA2, make_config(HA2, [HA1], 100))
    net.deliver()
    assert lost and ha2.role == "standby" and view(ha2) == view(ha1)  # complete at once, one ack lost
    net.run_until(start + 0.5)  # HA1 resends part 0; HA2 acks it again
    assert len(net.messages(BindingTableReply, src=HA1, dst=HA2)) >= 2
    assert ha1.group.exchange.outgoing == {}  # done
    net.run_until(start + 5)
    assert ha2.counters["redundancy.table_transfers_abandoned"] == 0
    assert ha2.group.exchange.incoming == {}


def test_two_table_requests_made_at_the_same_instant_are_told_apart():
    ha, _ = lone(HA3, peers=(HA1, HA2))  # served alone: both peers silent at start-up
    now = T0 + 20
    p1, p2 = FakePeer(HA1), FakePeer(HA2)
    # Both come back at the same instant: each is asked for its table.
    r1 = [m for m in opened(p1.send(ha, Advertisement(100, 1, 100).body(), now, HA3)) if type(m) is BindingTableRequest]
    r2 = [m for m in opened(p2.send(ha, Advertisement(100, 1, 100).body(), now, HA3)) if type(m) is BindingTableRequest]
    assert len(r1) == len(r2) == 1
    node = MobileNodeBindings(HOA, ntp(now, 1), (BindingRecord(COA, ip(VIP), ntp(now, 1), 600, 0, 600_000),))
    reply = BindingTableReply(0, False, 0, r1[0].identification, (node,))
    acks = [m for m in opened(p1.send(ha, reply.body(), now, HA3)) if type(m) is BindingTableReplyAck]
    assert acks == [BindingTableReplyAck(0, False, 0, r1[0].identification)]
    assert ha.bindings.last_identification(HOA) == ntp(now, 1)


def test_startup_waits_for_every_member_that_answers_in_time():
    net = Net()  # HA1 and HA2 running, HA3 configured on both but started later
    ha1 = net.add(HA1, make_config(HA1, [HA2, HA3], 100))
    ha2 = net.add(HA2, make_config(HA2, [HA1, HA3], 50))
    net.run_until(T0 + 2)
    assert [ha1.role, ha2.role] == ["active", "standby"]
    populate(ha1, 50, net.now)
    for hoa in range(ip("10.1.1.0"), ip("10.1.1.0") + 20):  # nodes only HA2 knows
        ha2.bindings.register(hoa, COA2, 600, ntp(net.now, hoa & 0xFF), net.now - 1, home_agent=ip(VIP))
    net.hold = lambda d: d.src == HA2 and d.dst == HA3  # HA2 answers 50 ms later than HA1
    start = net.now
    ha3 = net.add(HA3, make_config(HA3, [HA1, HA2], 200))  # the best priority: it will preempt
    net.run_until(start + 0.05)
    assert ha3.role == "init", "HA2, a configured member, has not been heard from yet"
    net.release()
    net.run_until(start + 1)
    assert ha3.role == "active"
    for hoa in range(ip("10.1.1.0"), ip("10.1.1.0") + 20):
        assert ha3.bindings.last_identification(hoa) == ha2.bindings.last_identification(hoa)


# -- bounds (docs/protocol.md, "Bounds") ------------------------------------------------------------------


def count_walks(monkeypatch, ha: HomeAgent) -> list:
    """Every walk of ``ha``'s binding table a transfer starts (BindingTable.home_addresses), recorded."""
    walks: list = []
    walk = ha.bindings.home_addresses

    def counted():
        walks.append(None)
        return walk()

    monkeypatch.setattr(ha.bindings, "home_addresses", counted)
    return walks


def table_request(ident: int, flags: int = 0) -> bytes:
    return BindingTableRequest(ident, (ip(HA2), ip(HA1)), flags).body()


def test_a_datagram_packing_many_table_requests_costs_at_most_one_transfer_and_one_walk(monkeypatch):
    ha, _ = lone()
    now = T0 + 5
    populate(ha, 300, now)
    walks = count_walks(monkeypatch, ha)
    exchange, peer = ha.group.exchange, FakePeer()
    base = ntp(now, 0)
    # 600 requests in one datagram, sealed by a configured member: more messages than a datagram may hold,
    # so the datagram is malformed as a whole and nothing in it is acted on.
    assert 600 > MAX_MESSAGES
    assert peer.send(ha, b"".join(table_request(base + i) for i in range(600)), now) == []
    assert walks == [] and exchange.outgoing == {}
    assert ha.counters["redundancy.malformed"] == 1 and ha.counters["redundancy.table_requests_received"] == 0
    # As many as a datagram may hold, newest in the middle: one request acted on, the newest; one walk.
    idents = [base + 1000 + i for i in range(MAX_MESSAGES)]
    idents[100], idents[-1] = idents[-1], idents[100]
    sent = opened(peer.send(ha, b"".join(table_request(i) for i in idents), now), to=HA2)
    newest = max(idents)
    assert len(walks) == 1 and list(exchange.outgoing) == [ip(HA2)]
    assert exchange.outgoing[ip(HA2)].identification == newest
    assert {m.identification for m in sent if type(m) is BindingTableReply} == {newest}
    assert ha.counters["redundancy.table_requests_received"] == 1
    assert ha.counters["redundancy.table_requests_dropped"] == MAX_MESSAGES - 1
    # Nine more such datagrams, each newer: still one transfer to the member, one walk per datagram.
    for k in range(1, 10):
        peer.send(ha, b"".join(table_request(base + 1000 * (k + 1) + i) for i in range(MAX_MESSAGES)), now)
        assert len(exchange.outgoing) == 1 and len(walks) == k + 1
    assert ha.counters["redundancy.table_transfers_replaced"] == 9
    assert ha.counters["redundancy.table_requests_dropped"] == 10 * (MAX_MESSAGES - 1)


def test_a_newer_table_request_replaces_the_running_transfer_and_an_older_one_is_ignored(monkeypatch):
    # (One transfer per member: ``TableExchange.outgoing`` is keyed by the member alone. Before, every
    # (member, Identification) had its own transfer, and a member could run as many as it asked for.)
    ha, _ = lone()
    now = T0 + 5
    populate(ha, 300, now)
    walks = count_walks(monkeypatch, ha)
    exchange, peer = ha.group.exchange, FakePeer()
    older, newer = ntp(now, 1), ntp(now, 2)

    def replies(effects) -> list[BindingTableReply]:
        return [m for m in opened(effects, to=HA2) if type(m) is BindingTableReply]

    first = replies(peer.send(ha, table_request(older), now))
    assert len(first) > 3 and {r.identification for r in first} == {older}
    assert exchange.outgoing[ip(HA2)].identification == older
    # The newer request: the running transfer is dropped (its resend timer with it), the new one starts over.
    second = replies(peer.send(ha, table_request(newer), now))
    assert [r.sequence for r in second] == list(range(len(first)))
    assert {r.identification for r in second} == {newer}
    assert list(exchange.outgoing) == [ip(HA2)] and exchange.outgoing[ip(HA2)].identification == newer
    assert ("transfer", (ip(HA2), older)) not in ha.group.timers
    assert ha.counters["redundancy.table_transfers_replaced"] == 1 and len(walks) == 2
    # The older one again (late, or reordered): stale, ignored. The newer one again: a resend, answered by
    # the replies already in flight.
    assert replies(peer.send(ha, table_request(older), now)) == []
    assert replies(peer.send(ha, table_request(newer), now)) == []
    assert ha.counters["redundancy.table_requests_stale"] == 1
    assert ha.counters["redundancy.table_transfers_replaced"] == 1 and len(walks) == 2
    assert exchange.outgoing[ip(HA2)].identification == newer
    # Acks of the replaced transfer are ignored; what is resent is the newer transfer only.
    acks = b"".join(BindingTableReplyAck(0, r.more, r.sequence, older).body() for r in first)
    assert replies(peer.send(ha, acks, now)) == []
    assert len(exchange.outgoing[ip(HA2)].in_flight) == len(second)
    peer.send(ha, Advertisement(100, 1, 100).body(), now + RETRANSMIT_AFTER - 0.05)  # still heard
    resent = replies(ha.handle_timer(now + RETRANSMIT_AFTER))
    assert resent and {r.identification for r in resent} == {newer}
    second += resent  # (the timer's pump may have sent the next ones too)
    while second:  # each ack lets more go (transfer.BURST at a time), until the table is sent
        acks = b"".join(BindingTableReplyAck(0, r.more, r.sequence, newer).body() for r in second)
        second = replies(peer.send(ha, acks, now + RETRANSMIT_AFTER))
    assert exchange.outgoing == {}


def test_exchange_state_stays_bounded_over_many_downloads():
    """1,000 request/reply cycles with one member, a tenth of a second apart: it asks for our table with
    Ask Back, we ask back, it answers in full. What is remembered of finished downloads (``closed``, to ack
    their late resends) is forgotten after CLOSED_MEMORY seconds; open requests are forgotten when done."""
    ha, _ = lone()
    exchange, peer = ha.group.exchange, FakePeer()
    step = 0.1
    most = int(CLOSED_MEMORY / step) + 2  # every download closed in the last CLOSED_MEMORY seconds, and one
    sizes = Counter()
    asked = []

    def measure() -> None:
        for name in ("closed", "requested", "open", "asking", "incoming", "outgoing", "_closing"):
            sizes[name] = max(sizes[name], len(getattr(exchange, name)))
        sizes["timers"] = max(sizes["timers"], len(ha.group.timers))

    now = T0 + 5
    for i in range(1000):
        now = T0 + 5 + i * step
        body = Advertisement(100, 1, 100).body() + table_request(ntp(now, 7), ASK_BACK)
        sent = opened(peer.send(ha, body, now), to=HA2)
        requests = [m for m in sent if type(m) is BindingTableRequest]
        assert len(requests) == (2 if i == 0 else 1)  # at first also the request of a member met
        ask = requests[-1]  # (which the ask-back replaced)
        assert exchange.open == {ip(HA2): ask}
        asked.append(ask.identification)
        measure()  # mid-cycle: our table on its way, our request open
        ours = [m for m in sent if type(m) is BindingTableReply]
        answer = b"".join(BindingTableReplyAck(0, r.more, r.sequence, r.identification).body() for r in ours)
        answer += BindingTableReply(0, False, 0, ask.identification).body()
        peer.send(ha, answer, now + 0.01)
        while (t := ha.next_timer()) is not None and t <= now + step / 2:
            ha.handle_timer(t)
        measure()
    assert ha.counters["redundancy.table_replies_received"] == 1000
    assert len(set(asked)) == 1000
    assert exchange.open == {} and exchange.incoming == {} and exchange.outgoing == {}
    assert sizes["closed"] <= most and sizes["_closing"] <= most, sizes
    assert sizes["requested"] <= 1 and sizes["open"] <= 1 and sizes["asking"] <= 1 and sizes["incoming"] <= 1
    assert sizes["outgoing"] <= 1 and sizes["timers"] <= 10, sizes
    assert len(exchange.closed) >= int(CLOSED_MEMORY / step) - 1  # remembered for as long as it says
    # A late resend of a download finished within CLOSED_MEMORY is acked; one forgotten is answered nothing.
    late = now + 0.02
    recent = BindingTableReply(0, False, 0, asked[-2]).body()
    assert [type(m) for m in opened(peer.send(ha, recent, late))] == [BindingTableReplyAck]
    forgotten = BindingTableReply(0, False, 0, asked[0]).body()
    assert opened(peer.send(ha, forgotten, late)) == []
    assert ha.counters["redundancy.table_replies_dropped"] == 1


# -- bugs found by these tests, minimised (fixed in 256df52) -------------------------------------------------

def test_an_ask_back_is_answered_by_a_request_without_ask_back_even_while_ours_is_open():
    """docs/protocol.md and exchange.on_request: a member asked to ask back asks back *without* the flag,
    so two members never ping-pong. HA2 comes back after being marked down; its first datagram is its own
    catch-up request (Ask Back, Digest), sent as HA1's catch-up request (Ask Back too) goes the other way.
    HA1 answers, and asks back: that request must not ask back again, or HA2 (in the same position)
    answers it with one more, and so on (the resynchronised test above did not settle). The ask-back takes
    the place of HA1's open catch-up request, and the merge of the two must not bring Ask Back back."""
    ha, _ = lone()
    peer = FakePeer()
    now = T0 + 5
    [first] = [m for m in opened(peer.send(ha, Advertisement(100, 1, 100).body(), now))
               if type(m) is BindingTableRequest]  # HA2 met: asked for its whole table, which it sends
    peer.send(ha, BindingTableReply(0, False, 0, first.identification).body(), now)
    assert ip(HA2) not in ha.group.exchange.open
    now = ha.next_timer()
    while ha.group.membership.members[ip(HA2)].up:  # HA2 falls silent: marked down
        ha.handle_timer(now)
        now = ha.next_timer()
    catch_up = BindingTableRequest(ntp(now, 5), (ip(HA2), ip(HA1)), ASK_BACK | DIGEST, (0,) * DIGEST_BUCKETS)
    sent = opened(peer.send(ha, Advertisement(100, 1, 100).body() + catch_up.body(), now), to=HA2)
    requests = [m for m in sent if type(m) is BindingTableRequest]
    assert requests[0].flags == ASK_BACK | DIGEST  # HA1's own catch-up request, as HA2 is heard again
    assert ha.group.exchange.open[ip(HA2)] == requests[-1]  # the ask-back, which took its place
    assert not requests[-1].flags & ASK_BACK, requests


# -- You Lag ends only with what the member missed sent (docs/protocol.md, "The sync guarantee") -----------


def _given_up_on_behind_a_transfer(ack_code: int, packed_before_give_up: bool) -> tuple[HomeAgent, object, list]:
    """An active member in sync mode; HA2 (played by hand, advertising as an in-sync standby) downloads its
    table, then asks again; a registration is accepted whose Binding Update HA2 never acks, and HA1 gives
    up on it (sync_timeout). The second transfer, packed before or after the give-up, is acked with
    ``ack_code``. Returns HA1, HA2's member record, and HA1's next advertisements to HA2."""
    ha, _ = lone(HA1, peers=(HA2,), replication="sync")
    peer = FakePeer(HA2)
    member = ha.group.membership.members[ip(HA2)]
    now = max(ha.next_timer() or 0, T0 + 3)

    def advertise(t: float) -> None:
        ha.receive_datagram(peer.seal(Advertisement(100, 1, 100).body(), t), (HA2, PORT), HA1, t)

    advertise(now)
    first = ntp(now, 1)
    peer.send(ha, BindingTableRequest(first, (ip(HA2), ip(HA1))).body(), now)
    peer.send(ha, BindingTableReplyAck(0, False, 0, first).body(), now)
    assert member.lagging_since is None  # its takeover's lag, ended by a whole table
    now += 0.05
    second = ntp(now, 2)
    if packed_before_give_up:
        peer.send(ha, BindingTableRequest(second, (ip(HA2), ip(HA1))).body(), now)
    now += 0.01
    ha.receive_datagram(registration(now=now), MN, VIP, now)
    until = now + 0.6  # past sync_timeout: HA1 gives up on HA2, which keeps advertising
    while True:
        due = ha.next_timer()
        step = min(t for t in (due, now + 0.1) if t is not None)
        if step > until:
            break
        now = step
        if due is not None and due <= now:
            ha.handle_timer(now)
        advertise(now)
    assert ha.counters["redundancy.sync_timeouts"] == 1 and member.lagging_since is not None
    assert ha.group.missed.of(ip(HA2)) == {HOA}
    if not packed_before_give_up:
        sent = opened(peer.send(ha, BindingTableRequest(second, (ip(HA2), ip(HA1))).body(), now), to=HA2)
        assert [m.nodes[0].home_address for m in sent if type(m) is BindingTableReply] == [HOA]
    peer.send(ha, BindingTableReplyAck(ack_code, False, 0, second).body(), now)
    due = ha.next_timer()
    assert due is not None
    adverts = [m for m in opened([e for e in ha.handle_timer(due) if isinstance(e, Send) and e.address[0] == HA2])
               if type(m) is Advertisement]
    return ha, member, adverts


def test_a_transfer_packed_before_the_give_up_does_not_end_you_lag():
    ha, member, adverts = _given_up_on_behind_a_transfer(0, packed_before_give_up=True)
    assert member.lagging_since is not None and ha.group.missed.of(ip(HA2)) == {HOA}
    assert adverts and all(a.flags & YOU_LAG for a in adverts)


def test_a_transfer_acked_not_taken_does_not_end_you_lag():
    ha, member, adverts = _given_up_on_behind_a_transfer(1, packed_before_give_up=False)
    assert member.lagging_since is not None and ha.group.missed.of(ip(HA2)) == {HOA}
    assert adverts and all(a.flags & YOU_LAG for a in adverts)


def test_a_transfer_that_carries_what_it_missed_ends_you_lag():
    ha, member, adverts = _given_up_on_behind_a_transfer(0, packed_before_give_up=False)
    assert member.lagging_since is None and not ha.group.missed.has(ip(HA2))
    assert adverts and not any(a.flags & YOU_LAG for a in adverts)


@pytest.mark.parametrize("care_of", [HA2, VIP, HA1])
def test_a_members_address_is_no_care_of_address(care_of):
    # A binding to another member's address would have that member tunnel to itself once it took over
    # (decision B, docs/registration.md): refused with 134 by the member that answers, so never replicated.
    ha, _ = lone(HA1, peers=(HA2,))
    now = max(ha.next_timer() or 0, T0 + 3)
    effects = ha.receive_datagram(registration(coa=ip(care_of), now=now), MN, VIP, now)
    [reply] = [reply_of(e) for e in effects if isinstance(e, Send) and e.address == MN]
    assert reply.code == 134 and HOA not in ha.bindings
    assert not opened(effects)  # no Binding Update
