"""``Daemon._commit``: with a data plane that gathers changes (the ebpf backend's map values) or with
persistence, the registration replies of a loop turn leave only after one commit of what the turn gathered,
and a turn that changed a tunnel without any reply (a Binding Update, an expiry) is committed at its end
all the same (docs/dataplane.md, "A reply means forwarding"; runtime/persistence.py)."""

from __future__ import annotations

import asyncio
import time

import pytest

from homeagent.config import parse
from homeagent.core.effects import Send, Tunnel, TunnelSet
from homeagent.dataplane.fake import FakeDataplane
from homeagent.runtime.daemon import Daemon
from homeagent.runtime.persistence import Persistence
from homeagent.runtime.store import MemoryStore

from .support import CONFIG, SOURCE, request

HOME = 0x0A010005
TUNNEL = Tunnel(0xC0000201, 0x0A010101, False)
REPLY = bytes([3, 0, 0, 60]) + HOME.to_bytes(4, "big") + bytes(12)  # a Registration Reply (type 3)


class Recorder:
    """A socket that notes, for each datagram sent, how many commits the data plane had made by then."""

    def __init__(self, fake: FakeDataplane) -> None:
        self.fake = fake
        self.sent: list[tuple[bytes, int]] = []

    def sendto(self, datagram: bytes, address: object) -> None:
        self.sent.append((datagram, self.fake.commits))


def batching_daemon() -> tuple[Daemon, FakeDataplane]:
    daemon = Daemon(parse(CONFIG.format(max_lifetime=1800, simultaneous_bindings=3)))
    fake = FakeDataplane()
    forwarding = daemon._forwarding
    forwarding.dataplane, forwarding.defers, forwarding.batches = fake, False, True
    daemon._hold_replies = True
    return daemon, fake


def test_the_replies_of_a_loop_turn_leave_after_one_commit_of_its_changes():
    async def scenario() -> tuple[list[tuple[bytes, int]], int, int]:
        daemon, fake = batching_daemon()
        sock = Recorder(fake)
        for n in range(3):  # three registrations in one turn, each with its change and its reply
            daemon._apply([Send(REPLY, ("192.0.2.9", 434)), TunnelSet(HOME + n, (TUNNEL,))], sock)
        held = (len(sock.sent), fake.commits)
        await asyncio.sleep(0)  # the end of the turn
        return sock.sent, *held

    sent, sent_before, commits_before = asyncio.run(scenario())
    assert (sent_before, commits_before) == (0, 0), "nothing leaves, nothing is written, during the turn"
    assert [commits for _, commits in sent] == [1, 1, 1], "every reply after the one commit of the turn"


def test_a_turn_that_changed_a_tunnel_without_a_reply_is_committed_at_its_end():
    async def scenario() -> tuple[int, int]:
        daemon, fake = batching_daemon()
        daemon._apply([TunnelSet(HOME, (TUNNEL,)), TunnelSet(HOME + 1, ())])  # a Binding Update, an expiry
        during = fake.commits
        await asyncio.sleep(0)
        return during, fake.commits

    assert asyncio.run(scenario()) == (0, 1)


def test_a_reply_with_nothing_to_commit_still_leaves_at_the_end_of_its_turn():
    async def scenario() -> list[tuple[bytes, int]]:
        daemon, fake = batching_daemon()
        sock = Recorder(fake)
        daemon._apply([Send(REPLY, ("192.0.2.9", 434))], sock)  # a renewal
        await asyncio.sleep(0)
        return sock.sent

    assert [datagram for datagram, _ in asyncio.run(scenario())] == [REPLY]


def test_with_persistence_a_reply_leaves_once_its_binding_is_written():
    async def scenario() -> tuple[list[int], int]:
        daemon, fake = batching_daemon()
        store = MemoryStore()
        daemon._persistence = Persistence(store, daemon.core)
        now = time.monotonic()
        daemon._persistence.load(now)
        written: list[int] = []

        class Sock:
            def sendto(self, datagram: bytes, address: object) -> None:
                written.append(store.writes)

        datagram = request(now=time.time())  # a timestamp the core's replay check takes as fresh
        daemon._apply(daemon.core.receive_datagram(datagram, SOURCE, "192.0.2.1", now), Sock())  # type: ignore[arg-type]
        during = store.writes
        await asyncio.sleep(0)
        return written, during

    written, during = asyncio.run(scenario())
    assert len(written) == 1, "the registration was answered"
    assert during == 0 and written == [1], "the reply after the one transaction that holds its binding"


def test_sockets_are_read_only_from_the_start_of_service_to_the_stop():
    """Before the store is loaded and the core started, and after the stop begins, nothing is read: what
    arrives waits in the kernel, and nothing is accepted that the store would not hold."""
    async def scenario() -> list[bool]:
        daemon = Daemon(parse(CONFIG.format(max_lifetime=1800, simultaneous_bindings=3)))
        loop = asyncio.get_running_loop()
        daemon._loop = loop
        daemon._open("127.0.0.1", 0)
        sock = daemon._sockets["127.0.0.1"]
        seen = [loop.remove_reader(sock.fileno())]  # False: no reader before the start
        daemon._read(True)
        seen.append(loop.remove_reader(sock.fileno()))  # True: read once serving
        daemon._read(True)
        daemon._read(False)
        seen.append(loop.remove_reader(sock.fileno()))  # False: not read once the stop began
        daemon._close("127.0.0.1")
        return seen

    assert asyncio.run(scenario()) == [False, True, False]


def test_a_control_command_that_arrives_once_the_stop_began_is_refused_not_answered():
    """A connection accepted before the stop may send its command after it: answered "removed", the removal
    would be left out of what the stop writes to the store, and back after a restart."""
    daemon = Daemon(parse(CONFIG.format(max_lifetime=1800, simultaneous_bindings=3)))
    daemon._stopping = asyncio.Event()
    assert daemon._control({"command": "status"})["role"]  # served until then
    daemon._stopping.set()
    with pytest.raises(ValueError, match="stopping"):
        daemon._control({"command": "remove", "home_address": "10.1.0.5"})
