"""runtime/notify.py: what it takes from the environment, and what it sends where."""

from __future__ import annotations

import asyncio
import os
import socket

from homeagent.runtime.notify import Notifier, supervise


def test_takes_its_variables_out_of_the_environment():
    env = {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "30000000",
           "WATCHDOG_PID": str(os.getpid()), "PATH": "/usr/bin"}
    n = Notifier.from_environment(env)
    assert n.address == "/run/systemd/notify" and n.watchdog == 15.0
    assert env == {"PATH": "/usr/bin"}  # the data plane's processes inherit none of them


def test_abstract_name_and_foreign_or_bad_watchdog():
    assert Notifier.from_environment({"NOTIFY_SOCKET": "@sd"}).address == "\0sd"
    other = Notifier.from_environment({"NOTIFY_SOCKET": "@sd", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"})
    assert other.watchdog is None  # meant for pid 1
    assert Notifier.from_environment({"NOTIFY_SOCKET": "@sd", "WATCHDOG_USEC": "x"}).watchdog is None
    assert Notifier.from_environment({"NOTIFY_SOCKET": "@sd", "WATCHDOG_USEC": "0"}).watchdog is None
    assert not Notifier.from_environment({"NOTIFY_SOCKET": "vsock:2:1"}).enabled
    assert not Notifier.from_environment({}).enabled


def test_sends_lines_in_one_datagram_and_survives_a_missing_socket(tmp_path):
    path = str(tmp_path / "n.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as rx:
        rx.bind(path)
        rx.settimeout(1)
        n = Notifier(path)
        n.send("READY=1", "STATUS=role active, 0 bindings")
        assert rx.recv(100) == b"READY=1\nSTATUS=role active, 0 bindings"
    os.unlink(path)
    n.send("WATCHDOG=1")  # nobody listens any more: logged, not raised
    n.send("WATCHDOG=1")
    n.close()
    Notifier(None).send("READY=1")  # no NOTIFY_SOCKET: nothing at all


def test_supervise_waits_for_ready_then_pings(tmp_path):
    path = str(tmp_path / "n.sock")
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(path)
    rx.setblocking(False)
    state = {"ready": False}

    async def scenario() -> list[bytes]:
        task = asyncio.create_task(supervise(Notifier(path, watchdog=0.05), lambda: state["ready"], lambda: "s"))
        await asyncio.sleep(0.12)
        before = _all(rx)
        state["ready"] = True
        await asyncio.sleep(0.12)
        task.cancel()
        return [*before, b"|", *_all(rx)]

    got = asyncio.run(scenario())
    rx.close()
    split = got.index(b"|")
    assert b"READY=1\nSTATUS=s" not in got[:split] and got[:split].count(b"WATCHDOG=1") >= 2
    assert got[split + 1:].count(b"READY=1\nSTATUS=s") == 1 and b"WATCHDOG=1" in got[split + 1:]


def _all(sock: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(sock.recv(100))
        except BlockingIOError:
            return out
