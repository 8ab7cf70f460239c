"""Replication between two members on loopback, measured in one run:

* registrations per second at the virtual address with one replica, ``async`` and ``sync``, against the
  lone Home Agent's rate with the same client (rounds alternate; medians and ratios printed);
* replication lag under a steady load: from the Registration Reply leaving for the mobile node to the
  second member's Binding Update Ack (sent once the binding is in its table), both read off a packet
  capture of the loopback interface (dumpcap, root), p50 and p99, for async and sync;
* the time a member that starts beside one holding 1,000,000 bindings takes to download them all.

    python bench/replication.py [--duration 3] [--rounds 3] [--lag-rate 3000] [--bindings 1000000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import VIRTUAL, free_port, load, start, status, stop, wait_role, write_config  # noqa: E402

A, B = "127.0.0.2", "127.0.0.3"


def pair(tmp: Path, port: int, replication: str, **extra: object) -> tuple[list, list[Path]]:
    configs = [
        write_config(tmp / f"a-{port}", A, port, peers=[B], priority=110, replication=replication, **extra),
        write_config(tmp / f"b-{port}", B, port, peers=[A], priority=100, replication=replication, **extra),
    ]
    procs = [start(configs[0])]
    wait_role(configs[0], ("active",))
    procs.append(start(configs[1]))
    wait_role(configs[1], ("standby",))
    return procs, configs


def client(address: str, port: int, args: argparse.Namespace, *extra: str) -> dict:
    return load(address, port, "--first-home-address", "10.1.0.1", "--mobile-nodes", str(args.mobile_nodes),
                "--window", str(args.window), *extra)


def throughput(tmp: Path, args: argparse.Namespace) -> dict[str, float]:
    rates: dict[str, list[float]] = {"lone": [], "async": [], "sync": []}
    for _ in range(args.rounds):
        port = free_port(A)
        lone = start(write_config(tmp / f"lone-{port}", A, port))
        try:
            while status(tmp / f"lone-{port}" / "homeagent.toml") is None:
                time.sleep(0.05)
            rates["lone"].append(client(A, port, args, "--duration", str(args.duration))["rate"])
        finally:
            stop(lone)
        for mode in ("async", "sync"):
            port = free_port(A)
            procs, _ = pair(tmp, port, mode)
            try:
                r = client(VIRTUAL, port, args, "--duration", str(args.duration))
                rates[mode].append(r["rate"])
            finally:
                for p in procs:
                    stop(p)
        print("  round: " + "  ".join(f"{k} {v[-1]:.0f}/s" for k, v in rates.items()), flush=True)
    return {k: statistics.median(v) for k, v in rates.items()}


def lag(tmp: Path, args: argparse.Namespace, replication: str) -> list[float] | None:
    """Milliseconds from each reply to the replica's ack of the same registration."""
    dumpcap = shutil.which("dumpcap")
    if dumpcap is None or os.geteuid() != 0:
        return None
    port = free_port(A)
    procs, _ = pair(tmp, port, replication)
    pcap = tmp / f"lag-{replication}.pcapng"
    capture = subprocess.Popen(
        [dumpcap, "-q", "-i", "lo", "-f", f"udp port {port} and (src host {VIRTUAL} or (src host {B} and dst host {A}))",
         "-w", str(pcap)], stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1.0)  # dumpcap is capturing once it has opened the interface
        client(VIRTUAL, port, args, "--duration", str(args.lag_seconds), "--rate", str(args.lag_rate))
        time.sleep(0.5)
    finally:
        capture.terminate()
        capture.wait()
        for p in procs:
            stop(p)
    fields = subprocess.run(
        ["tshark", "-r", str(pcap), "-T", "fields", "-e", "frame.time_epoch", "-e", "ip.src", "-e", "udp.payload"],
        check=True, capture_output=True, text=True,
    ).stdout
    replies: dict[str, float] = {}
    acks: dict[str, float] = {}
    for line in fields.splitlines():
        at, src, payload = line.split("\t")
        data = bytes.fromhex(payload.replace(":", ""))
        if src == VIRTUAL and data[:1] == b"\x03" and data[1] < 64:
            replies.setdefault(data[12:20].hex(), float(at))
        elif src == B and data[:1] == bytes([201]):
            acks.setdefault(data[8:16].hex(), float(at))
    return [(acks[k] - t) * 1000 for k, t in replies.items() if k in acks]


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def download(tmp: Path, args: argparse.Namespace) -> tuple[float, int]:
    """Seconds from starting a second member to it standing by with the whole table."""
    port = free_port(A)
    net = "10.0.0.0/8"
    a = write_config(tmp / "dl-a", A, port, home_network=net, peers=[B], priority=110)
    b = write_config(tmp / "dl-b", B, port, home_network=net, peers=[A], priority=100)
    procs = [start(a)]
    try:
        wait_role(a, ("active",))
        filled = load(VIRTUAL, port, "--first-home-address", "10.0.0.1", "--mobile-nodes", str(args.bindings),
                      "--count", str(args.bindings), "--window", "256", "--lifetime", "1800")
        held = status(a)["bindings"]  # type: ignore[index]
        print(f"  member A holds {held} bindings (loaded at {filled['rate']:.0f}/s)", flush=True)
        began = time.monotonic()
        procs.append(start(b))
        st = wait_role(b, ("standby",), timeout=120)
        took = time.monotonic() - began
        return took, st["bindings"]
    finally:
        for p in procs:
            stop(p)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--window", type=int, default=128)
    p.add_argument("--mobile-nodes", type=int, default=10000)
    p.add_argument("--lag-rate", type=float, default=3000)
    p.add_argument("--lag-seconds", type=float, default=3.0)
    p.add_argument("--bindings", type=int, default=1_000_000)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="homeagent-bench-") as tmpdir:
        tmp = Path(tmpdir)
        print("throughput (registrations/s at the virtual address, one replica)")
        r = throughput(tmp, args)
        print(f"  lone {r['lone']:.0f}/s   async {r['async']:.0f}/s ({r['async'] / r['lone']:.2f} of lone)   "
              f"sync {r['sync']:.0f}/s ({r['sync'] / r['lone']:.2f} of lone, goal >= 0.5)")
        for mode in ("async", "sync"):
            lags = lag(tmp, args, mode)
            if lags is None:
                print(f"lag {mode}: skipped (needs root and dumpcap)")
            elif not lags:
                print(f"lag {mode}: no matched reply/ack pairs captured")
            else:
                print(f"lag {mode} at {args.lag_rate:.0f}/s: reply -> replica ack  p50 {percentile(lags, 50):.2f} ms  "
                      f"p99 {percentile(lags, 99):.2f} ms  ({len(lags)} registrations)")
        took, count = download(tmp, args)
        print(f"download: {count} bindings in {took:.1f} s from process start (goal < 10 s)")


if __name__ == "__main__":
    main()
