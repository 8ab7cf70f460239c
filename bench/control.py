"""Control-socket queries against a group holding many bindings, measured in one run (issue 10 point 6):

* two members on loopback (advertisement interval 0.1 s, so a master-down interval of about 0.4 s); the
  active one is filled with ``--bindings`` bindings by ``homeagent mn load`` at the virtual address (two
  clients side by side), and the standby then starts and downloads them all: the fastest honest way, real
  registrations and a real table transfer;
* a steady load of registrations (renewals of bindings the table holds) runs all along, its reply latency
  taken per request: first with no query (the baseline, same run), then while the table is dumped (once
  read raw off the control socket: the daemon's part alone; then ``--dumps`` times by ``homeagent bindings
  --json``, niced, so that on a host smaller than the group the CLI's own parsing and printing does not
  take the members' CPU), then while ``homeagent status`` is asked in a loop;
* printed: each dump's time and size (and for the raw one, the time to the first byte: the one step that
  grows with the table, the copy of its home addresses), the reply latency p50/p99/max with no query and
  during the dumps, the longest time with no reply inside a window (the longest the active member stood
  still, within the client's resolution of 1/rate), the status query's round trip, and every role change
  of either member, placed in time. The members' logs are kept with ``--keep-logs DIR``.

    python bench/control.py [--bindings 1000000] [--dumps 3] [--rate 2000] [--baseline 3]

Goal: p99 < 50 ms during the dumps, and no role change. On a host shared with other work the baseline's
own p99 is the floor: read the two lines against each other.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import KEY, SPI, VIRTUAL, free_port, status, stop, wait_role, write_config  # noqa: E402

from homeagent.mobile_node import LoadGenerator, LoadResult  # noqa: E402
from homeagent.wire.auth import Algorithm, SecurityAssociation  # noqa: E402

A, B = "127.0.0.2", "127.0.0.3"
NETWORK = "10.0.0.0/8"
FIRST = IPv4Address("10.0.0.1")


class TimedLoad(LoadGenerator):
    """The load client, keeping (sent, answered) monotonic times for every request answered.

    ``_receive`` sees the requests in flight before and after it takes the waiting replies; those gone
    were answered now. (A reply that fails its check is taken too: the client counts it invalid, and the
    run prints that count, which is 0 when it means nothing.)"""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.samples: list[tuple[float, float]] = []

    def _receive(self, sock: Any, pending: dict[int, tuple[int, float]], result: LoadResult) -> None:
        before = dict(pending)  # at most ``window`` entries
        super()._receive(sock, pending, result)
        now = time.monotonic()
        self.samples.extend((before[k][1], now) for k in before.keys() - pending.keys())


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def latency_line(name: str, samples: list[tuple[float, float]], windows: list[tuple[float, float]]) -> str:
    """Latency of the requests sent inside ``windows``, and the longest time inside one window with no
    reply arriving: how long the member stood still at worst."""
    chosen = [s for s in samples if any(a <= s[0] <= b for a, b in windows)]
    if not chosen:
        return f"  {name:<14} no replies"
    ms = [(answered - sent) * 1000 for sent, answered in chosen]
    arrivals = sorted(answered for _, answered in samples)
    gap = 0.0
    for a, b in windows:
        inside = [a] + [t for t in arrivals if a <= t <= b] + [b]
        gap = max(gap, max(y - x for x, y in zip(inside, inside[1:])))
    return (f"  {name:<14} p50 {percentile(ms, 50):7.2f} ms  p99 {percentile(ms, 99):7.2f} ms  "
            f"max {max(ms):7.1f} ms  longest gap between replies {gap * 1000:6.1f} ms  ({len(ms)} replies)")


def transitions(config: Path) -> list[tuple[float, str, str, str]]:
    """The member's last role changes (it keeps ten), with their times: what is new between two calls is
    what happened in between."""
    st = status(config)
    if st is None:
        return [(0.0, "?", "?", "no answer")]
    return [(t["at"], t["from"], t["to"], t["reason"]) for t in st.get("transitions", [])]


def same(t: tuple[float, str, str, str], u: tuple[float, str, str, str]) -> bool:
    """One transition read twice: its wall-clock time is converted at each read, so it may move a little."""
    return t[1:] == u[1:] and abs(t[0] - u[0]) < 0.5


def dump(config: Path, nice: int) -> tuple[float, int, int, str]:
    """One ``homeagent bindings --json``: seconds, bytes printed, bindings printed, and what it said on
    stderr if it failed. ``nice``: the CLI's own parsing and printing (most of its time at a million
    bindings) runs at that niceness, so that on a host smaller than the group it does not take the CPU the
    members need: what is measured is the daemon's part."""
    began = time.monotonic()
    proc = subprocess.Popen(["nice", "-n", str(nice), sys.executable, "-m", "homeagent", "bindings", "--json",
                             "--config", str(config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    size = rows = 0
    key = b'"home_address"'  # once per binding
    carry = b""  # the end of the last chunk, one byte shorter than the key: a key cut in two counts once
    while chunk := proc.stdout.read(1 << 20):
        size += len(chunk)
        rows += (carry + chunk).count(key)
        carry = (carry + chunk)[-(len(key) - 1):]
    err = proc.stderr.read() if proc.stderr else b""
    failed = err.decode(errors="replace").strip() if proc.wait() != 0 else ""
    return time.monotonic() - began, size, rows, failed


def start(config: Path) -> subprocess.Popen[bytes]:
    """A member, its log (level info) in ``member.log`` beside its config: who changed role, and why."""
    log = open(config.parent / "member.log", "wb")  # noqa: SIM115 (the process holds it)
    return subprocess.Popen([sys.executable, "-m", "homeagent", "run", "--config", str(config), "--log-level",
                             "info"], stdout=subprocess.DEVNULL, stderr=log)


def fill(port: int, bindings: int, clients: int) -> float:
    """Register ``bindings`` mobile nodes at the virtual address with ``clients`` load clients side by side
    (each its own range of home addresses); the accepted registrations per second of them all."""
    share = -(-bindings // clients)
    began = time.monotonic()
    procs = []
    for i in range(clients):
        count = min(share, bindings - i * share)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "homeagent", "mn", "load", "--home-agent", VIRTUAL, "--port", str(port),
             "--spi", str(SPI), "--key", KEY, "--first-home-address", str(FIRST + i * share),
             "--mobile-nodes", str(count), "--window", "256", "--lifetime", "1800"],
            stdout=subprocess.PIPE, text=True))
    accepted = 0
    for proc in procs:
        out, _ = proc.communicate(timeout=3600)
        accepted += json.loads(out)["accepted"]
    return accepted / (time.monotonic() - began)


def raw_dump(config: Path) -> tuple[float, float, int]:
    """The daemon's part alone: the answer read off the control socket and thrown away. Seconds to the
    first byte, seconds to the last, bytes."""
    from homeagent.config import load as load_config

    began = time.monotonic()
    first = 0.0
    size = 0
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(60)
        s.connect(str(load_config(config).control_socket))
        s.sendall(b'{"command": "bindings"}\n')
        while chunk := s.recv(1 << 20):
            first = first or time.monotonic() - began
            size += len(chunk)
            if chunk.endswith(b"\n"):
                break
    return first, time.monotonic() - began, size


def steps_in_process(bindings: int) -> str:
    """The CPU time of each step of a listing (``core.listing.BindingWalk``, and the page's JSON as the
    control socket writes it), in this process, over a table of ``bindings`` filled in random order: what
    one step holds the daemon's loop for, free of the host's scheduling. CPU time, not wall time: on a
    shared host a step is also preempted, which no daemon can help."""
    import random

    from homeagent.core.bindings import BindingTable
    from homeagent.core.listing import BindingWalk

    table = BindingTable()
    order = list(range(bindings))
    random.Random(1).shuffle(order)
    for i in order:
        home = int(FIRST) + i
        table.register(home, 0xC0000201, 1800, (home << 8) + 1, 0.0, home_agent=int(IPv4Address(VIRTUAL)))
    del order  # a million-entry list the daemon does not have: the garbage collector would walk it
    began = time.process_time()
    walk = BindingWalk(table)
    copy = time.process_time() - began
    times = []
    rows = 0
    while True:
        began = time.process_time()
        page = walk.step(5.0)
        if page is None:
            break
        json.dumps(page)
        times.append(time.process_time() - began)
        rows += len(page)
    times.sort()
    return (f"steps in process at {rows} bindings (CPU time): the copy of the home addresses {copy * 1000:.1f} ms; "
            f"{len(times)} steps p50 {percentile(times, 50) * 1000:.2f} ms  p99 {percentile(times, 99) * 1000:.2f} ms"
            f"  max {times[-1] * 1000:.1f} ms (a garbage collection may fall in one)  total {sum(times):.1f} s")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--bindings", type=int, default=1_000_000)
    p.add_argument("--dumps", type=int, default=3, help="dumps by homeagent bindings --json")
    p.add_argument("--raw-dumps", type=int, default=1, help="dumps read raw off the control socket first")
    p.add_argument("--rate", type=float, default=2000, help="registrations a second during the measurement")
    p.add_argument("--baseline", type=float, default=3.0, help="seconds of load with no query first")
    p.add_argument("--status-seconds", type=float, default=3.0)
    p.add_argument("--cli-nice", type=int, default=10, help="niceness of the homeagent bindings CLI")
    p.add_argument("--keep-logs", type=Path, help="copy the members' logs into this directory")
    p.add_argument("--fill-clients", type=int, default=2, help="load clients filling the table side by side")
    p.add_argument("--steps-only", action="store_true", help="only the in-process step times")
    args = p.parse_args()
    print(steps_in_process(args.bindings), flush=True)
    if args.steps_only:
        return
    with tempfile.TemporaryDirectory(prefix="homeagent-bench-control-") as tmpdir:
        tmp = Path(tmpdir)
        port = free_port(A)
        a = write_config(tmp / "a", A, port, home_network=NETWORK, peers=[B], priority=110)
        b = write_config(tmp / "b", B, port, home_network=NETWORK, peers=[A], priority=100)
        procs = [start(a)]
        try:
            wait_role(a, ("active",))
            began = time.monotonic()
            rate = fill(port, args.bindings, args.fill_clients)
            held = status(a)["bindings"]  # type: ignore[index]
            print(f"fill: member A holds {held} bindings after {time.monotonic() - began:.1f} s "
                  f"({rate:.0f} registrations/s, {args.fill_clients} load clients)", flush=True)
            began = time.monotonic()
            procs.append(start(b))
            wait_role(b, ("standby",), timeout=300)
            while (status(b) or {}).get("bindings") != held and time.monotonic() - began < 300:
                time.sleep(0.1)
            print(f"      member B stands by with {status(b)['bindings']} bindings, "  # type: ignore[index]
                  f"{time.monotonic() - began:.1f} s after it started", flush=True)
            time.sleep(1.0)
            roles_before = {"A": transitions(a), "B": transitions(b)}

            sa = SecurityAssociation(SPI, Algorithm.HMAC_MD5, bytes.fromhex(KEY))
            renewing = [FIRST + i for i in range(min(args.bindings, 20_000))]
            gen = TimedLoad(IPv4Address(VIRTUAL), port, sa, renewing, IPv4Address("192.0.2.1"), lifetime=1800,
                            window=64, timeout=2.0)
            results: list[LoadResult] = []
            done = threading.Event()

            def run_load() -> None:
                """Short runs back to back (a run's end is fixed when it starts) until told to stop."""
                while not done.is_set():
                    results.append(gen.run(duration=0.5, rate=args.rate))

            loader = threading.Thread(target=run_load, daemon=True)
            t0 = time.monotonic()
            loader.start()
            time.sleep(args.baseline)
            baseline = [(t0 + 0.5, time.monotonic())]  # the first half second warms the client up
            dumps: list[tuple[float, float]] = []
            for i in range(args.raw_dumps):
                d0 = time.monotonic()
                first, took, size = raw_dump(a)
                dumps.append((d0, time.monotonic()))
                print(f"raw dump {i + 1} (the daemon's part: read off the control socket, not parsed): "
                      f"{size / 1e6:.0f} MB, first byte after {first * 1000:.1f} ms, last after {took:.2f} s", flush=True)
                time.sleep(1.0)
            for i in range(args.dumps):
                d0 = time.monotonic()
                took, size, rows, failed = dump(a, args.cli_nice)
                dumps.append((d0, time.monotonic()))
                print(f"dump {i + 1} (homeagent bindings --json): {rows} bindings, {size / 1e6:.0f} MB printed in "
                      f"{took:.2f} s" + (f"  FAILED: {failed}" if failed else ""), flush=True)
                time.sleep(1.0)
            statuses: list[float] = []
            s0 = time.monotonic()
            while time.monotonic() - s0 < args.status_seconds:
                q0 = time.monotonic()
                status(a)
                statuses.append((time.monotonic() - q0) * 1000)
                time.sleep(0.05)
            status_window = [(s0, time.monotonic())]
            time.sleep(0.5)
            done.set()
            loader.join(timeout=10)
            gen_end = time.monotonic() - t0
            roles_after = {"A": transitions(a), "B": transitions(b)}

            samples = list(gen.samples)
            lost = sum(r.lost for r in results)
            invalid = sum(r.invalid for r in results)
            print(f"registrations at {args.rate:.0f}/s renewing {len(renewing)} of the {held} bindings "
                  f"({gen_end:.0f} s, {lost} unanswered, {invalid} invalid):")
            print(latency_line("no query", samples, baseline))
            print(latency_line("during dumps", samples, dumps))
            for i, window in enumerate(dumps):
                print(latency_line(f"  dump {i + 1}", samples, [window]))
            print(latency_line("during status", samples, status_window))
            print(f"status at {held} bindings: p50 {statistics.median(statuses):.2f} ms  max {max(statuses):.2f} ms "
                  f"({len(statuses)} queries, round trip through the control socket)")
            changed = {m: [t for t in roles_after[m] if not any(same(t, u) for u in roles_before[m])]
                       for m in roles_before}
            wall = time.time() - time.monotonic()  # transitions carry wall-clock times
            phases = [("during the dumps", [(x + wall, y + wall) for x, y in dumps]),
                      ("during status", [(x + wall, y + wall) for x, y in status_window])]
            if any(changed.values()):
                for m, ts in changed.items():
                    for at, old, new, reason in ts:
                        when = next((name for name, ws in phases if any(x <= at <= y for x, y in ws)),
                                    "outside the dumps (baseline or between dumps)")
                        print(f"role change: member {m} {old} -> {new} {when}: {reason}")
            else:
                print("role changes: none")
        finally:
            for proc in procs:
                stop(proc)
            if args.keep_logs:
                args.keep_logs.mkdir(parents=True, exist_ok=True)
                for name, config in (("a", a), ("b", b)):
                    if (config.parent / "member.log").exists():
                        shutil.copy(config.parent / "member.log", args.keep_logs / f"{name}.log")


if __name__ == "__main__":
    main()
