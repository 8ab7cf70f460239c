"""The userspace data plane's daemon-side handle against a stand-in forwarder process (no root needed): a
burst of changes coalesces into few messages and ends in the right table, the loop is never blocked for
long, and a forwarder killed with -9 is restarted and given the whole table and the serving state again."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from homeagent.dataplane import Tunnel
from homeagent.dataplane.userspace import UserspaceDataplane

FAKE = Path(__file__).with_name("fake_forwarder.py")


def a(text: str) -> int:
    return int(IPv4Address(text))


def gone(pid: object) -> bool:
    """Whether no process ``pid`` is left."""
    try:
        os.kill(pid, 0)  # type: ignore[arg-type]
    except ProcessLookupError:
        return True
    return False


def handle(*options: str) -> UserspaceDataplane:
    return UserspaceDataplane(argv_prefix=[sys.executable, str(FAKE), *options])


def test_a_burst_coalesces_and_ends_in_the_table_asked_for():
    async def scenario() -> None:
        dp = handle()
        dp.start()
        try:
            await dp.ready()
            lags = []

            async def watch() -> None:  # how late the loop wakes a sleeper while the burst is sent
                while True:
                    start = time.perf_counter()
                    await asyncio.sleep(0.001)
                    lags.append(time.perf_counter() - start - 0.001)

            start = time.perf_counter()
            for rounds in range(3):  # the same 20,000 home addresses three times: only the last counts
                for n in range(20000):
                    tunnel = Tunnel(a("10.2.0.1") + rounds, a("10.1.255.1"), n % 2 == 1)
                    dp.set_tunnels(a("10.1.0.0") + n, (tunnel,))
                await asyncio.sleep(0)
            for n in range(0, 20000, 2):
                dp.set_tunnels(a("10.1.0.0") + n, ())
            dp.serve(True)
            calls = time.perf_counter() - start
            watcher = asyncio.get_running_loop().create_task(watch())  # while the handle sends the burst
            counters = await dp.fetch_counters(timeout=30)
            watcher.cancel()
            table = counters["dataplane.table"]
            assert len(table) == 10000 and counters["dataplane.serving"] is True
            assert table["10.1.0.1"] == [[a("10.2.0.3"), a("10.1.255.1"), True]]
            assert counters["dataplane.messages"] < 60, "changes to one home address coalesce"
            print(f"burst of 70,000 changes: {calls / 70000 * 1e6:.2f} us a call, "
                  f"{counters['dataplane.messages']} messages, the loop late by at most "
                  f"{max(lags) * 1000:.1f} ms while they were sent")
        finally:
            dp.close()

    asyncio.run(scenario())


def test_a_killed_forwarder_is_restarted_and_given_the_whole_table():
    async def scenario() -> None:
        dp = handle()
        dp.start()
        try:
            first = await dp.ready()
            for n in range(500):
                dp.set_tunnels(a("10.1.0.0") + n, (Tunnel(a("10.2.0.1"), a("10.1.255.1"), False),))
            dp.serve(True)
            assert len((await dp.fetch_counters())["dataplane.table"]) == 500
            os.kill(first["pid"], signal.SIGKILL)  # type: ignore[arg-type]
            dp.set_tunnels(a("10.1.0.0"), ())  # while it is down
            await asyncio.sleep(0.1)  # the handle sees it die
            second = await dp.ready()  # and waits for the next one
            assert second["pid"] != first["pid"]
            counters = await dp.fetch_counters()
            assert counters["dataplane.pid"] == second["pid"] == dp.pid
            assert counters["dataplane.restarts"] == 1
            assert len(counters["dataplane.table"]) == 499 and counters["dataplane.serving"] is True
        finally:
            dp.close()
        assert dp.counters()["dataplane.running"] is False

    asyncio.run(scenario())


def test_close_ends_the_forwarder():
    async def scenario() -> None:
        dp = handle()
        dp.start()
        info = await dp.ready()
        dp.close()
        await asyncio.sleep(0.1)
        assert gone(info["pid"]), "the forwarder outlived close"

    asyncio.run(scenario())


def test_a_forwarder_that_dies_at_once_is_restarted_with_backoff_and_the_handle_lives_on():
    async def scenario() -> None:
        dp = UserspaceDataplane(argv_prefix=[sys.executable, "-c", "import sys; sys.exit(3)"])
        dp.start()
        try:
            dp.set_tunnels(a("10.1.0.1"), (Tunnel(a("10.2.0.1"), a("10.1.255.1"), False),))
            dp.serve(True)
            await asyncio.sleep(1.5)
            counters = dp.counters()
            # 0.1 + 0.2 + 0.4 + 0.8 s of waits, plus the starts: a few restarts, not a busy loop
            assert 2 <= counters["dataplane.restarts"] <= 6, counters  # type: ignore[operator]
            assert counters["dataplane.home_addresses_wanted"] == 1
        finally:
            dp.close()

    asyncio.run(scenario())


def test_a_barrier_passes_when_the_forwarder_answers_or_dies():
    """Barriers come back in order; one the forwarder never answers is let go when it dies (a reply must not
    wait for a restart), and none is asked while no forwarder runs."""
    async def scenario() -> None:
        dp = handle()
        dp.start()
        try:
            await dp.ready()
            assert dp.barrier() is None, "nothing changed yet"
            dp.set_tunnels(a("10.1.0.1"), (Tunnel(a("10.2.0.1"), a("10.1.255.1"), False),))
            first = dp.barrier()
            assert first is not None
            await asyncio.wait_for(first, 5)
            dp.set_tunnels(a("10.1.0.2"), (Tunnel(a("10.2.0.1"), a("10.1.255.1"), False),))
            second = dp.barrier()
            dp.serve(True)
            third = dp.barrier()
            assert second is third, "changes made before a barrier is sent share it"
            await asyncio.wait_for(asyncio.shield(third), 5)
        finally:
            dp.close()

        hung = handle("--hold-barriers")
        hung.start()
        try:
            info = await hung.ready()
            hung.set_tunnels(a("10.1.0.1"), (Tunnel(a("10.2.0.1"), a("10.1.255.1"), False),))
            waiting = hung.barrier()
            assert waiting is not None
            await asyncio.sleep(0.2)
            assert not waiting.done(), "the forwarder has not answered"
            os.kill(info["pid"], signal.SIGKILL)  # type: ignore[arg-type]
            await asyncio.wait_for(waiting, 5)
        finally:
            hung.close()

    asyncio.run(scenario())


def quick_watchdog(monkeypatch: pytest.MonkeyPatch, hung_after: float, busy_limit: float = 30.0) -> None:
    """The watchdog's times, short enough for a test."""
    from homeagent.dataplane import userspace

    monkeypatch.setattr(userspace, "PING_EVERY", 0.05)
    monkeypatch.setattr(userspace, "HUNG_AFTER", hung_after)
    monkeypatch.setattr(userspace, "BUSY_LIMIT", busy_limit)


async def replaced(dp: UserspaceDataplane, first: dict[str, object], what: str) -> dict[str, object]:
    """The forwarder ``first`` counted hung, killed and replaced: the new one's information."""
    deadline = time.monotonic() + 10
    while dp.counters()["dataplane.hung"] == 0 or dp.pid in (None, first["pid"]):
        assert time.monotonic() < deadline, f"the {what} forwarder was never found and replaced"
        await asyncio.sleep(0.05)
    second = await dp.ready()
    assert second["pid"] != first["pid"]
    return second


def test_a_forwarder_busy_behind_its_backlog_is_not_taken_for_hung(tmp_path, monkeypatch):
    """One that uses the CPU and does not read (starved behind a long replay, niceness 19 with ebpf) is not
    killed at HUNG_AFTER: it answers once through, and is never counted hung."""
    quick_watchdog(monkeypatch, hung_after=0.3)

    async def scenario() -> None:
        dp = handle("--busy-once", str(tmp_path / "busy"), "--busy-for", "1.5")
        dp.start()
        try:
            first = await dp.ready()
            dp.set_tunnels(a("10.1.0.1"), (Tunnel(a("10.2.0.1"), a("10.1.255.1"), False),))
            counters = await dp.fetch_counters(timeout=10)
            assert dp.pid == first["pid"] and counters["dataplane.hung"] == 0
            assert list(counters["dataplane.table"]) == ["10.1.0.1"]
        finally:
            dp.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("kind", ["looping", "starved"])
def test_a_forwarder_using_cpu_is_busy_until_the_busy_limit(tmp_path, monkeypatch, kind):
    """Using the CPU buys time, not forever: one that never answers goes at BUSY_LIMIT. "looping" spins;
    "starved" (found in review) gets a clock tick (10 ms) only every 0.2 s, as one given ~0.4 % of a CPU
    shows one every few seconds: between two looks of the watchdog its time often does not move, so it is
    judged over HUNG_AFTER."""
    from homeagent.dataplane import userspace

    quick_watchdog(monkeypatch, hung_after=0.3, busy_limit=1.5)
    if kind == "starved":  # not reading, and its CPU is what this stand-in says
        begun = time.monotonic()
        monkeypatch.setattr(userspace, "_cpu_seconds", lambda pid: (time.monotonic() - begun) // 0.2 * 0.01)

    async def scenario() -> None:
        dp = handle("--busy-once" if kind == "looping" else "--hang-once", str(tmp_path / kind))
        dp.start()
        try:
            first = await dp.ready()
            started = time.monotonic()
            await asyncio.sleep(0.9)
            assert dp.counters()["dataplane.hung"] == 0, "busy: past HUNG_AFTER, not yet killed"
            await replaced(dp, first, kind)
            assert time.monotonic() - started >= 1.4, "until BUSY_LIMIT, not longer"
        finally:
            dp.close()
        assert gone(first["pid"])

    asyncio.run(scenario())


def test_a_hung_forwarder_is_found_killed_and_restarted(tmp_path, monkeypatch):
    """One that lives but stops reading its socket: the watchdog's question goes unanswered, and after
    HUNG_AFTER it is killed, counted, and a new one is given the table."""
    quick_watchdog(monkeypatch, hung_after=0.5)

    async def scenario() -> None:
        dp = handle("--hang-once", str(tmp_path / "hung"))
        dp.start()
        try:
            first = await dp.ready()
            dp.set_tunnels(a("10.1.0.1"), (Tunnel(a("10.2.0.1"), a("10.1.255.1"), False),))
            await asyncio.sleep(0.3)
            assert dp.pid == first["pid"], "not yet: it may be busy"
            await replaced(dp, first, "hung")
            counters = await dp.fetch_counters()
            assert counters["dataplane.restarts"] == 1 and counters["dataplane.hung"] == 1
            assert list(counters["dataplane.table"]) == ["10.1.0.1"]
            await asyncio.sleep(0.8)  # the new one answers: nothing more is killed
            assert dp.counters()["dataplane.hung"] == 1
        finally:
            dp.close()
        assert gone(first["pid"]), "the hung forwarder outlived the handle"

    asyncio.run(scenario())
