"""Neighbours on the home link at scale (network namespaces): what a takeover and a stand-down cost with
N away home addresses, beside iproute2 doing the same netlink work in C (the floor), in the same run.

    sudo python bench/neighbours.py [--count 1000 20000] [--garp-seconds 3]

For each N, printed:

  ip -batch       adding then deleting N proxy entries with ``ip -batch`` (C; mostly the kernel's time:
                  it keeps proxy entries in 16 hash buckets, so each operation walks n/16 of them);
  serve(True)     how long the call held its caller; then until every entry was in the kernel;
  audit           one reading of the N entries back (the child's dump, the loop's set arithmetic);
  serve(False)    until every entry was gone (compare with the advertisement interval, 0.1 s);
  loop            the longest time the event loop went without running a 5 ms timer, and the 99th
                  percentile, over the whole run (what a registration waiting on the loop would wait);

then gratuitous ARP at the default pacing, counted by an AF_PACKET socket on the far side of the link:
frames/s measured against the designed rate.

Needs root and iproute2. The namespaces (prefix ``nbb<pid>``) are removed at the end, whatever happened.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from netns.lan import Lan, run  # noqa: E402

from homeagent.dataplane.announcer import RATE  # noqa: E402
from homeagent.dataplane.neighbours import Neighbours  # noqa: E402
from homeagent.wire.arp import ETH_P_ARP  # noqa: E402

BASE = int.from_bytes(socket.inet_aton("10.2.0.0"), "big")  # off the link's /24, routed into the stand-in TUN


def dotted(address: int) -> str:
    return socket.inet_ntoa(address.to_bytes(4, "big"))


def ip_batch(lan: Lan, count: int) -> tuple[float, float]:
    lines = [f"neigh add proxy {dotted(BASE + i)} dev eth0\n" for i in range(count)]
    started = time.perf_counter()
    subprocess.run(["ip", "-n", lan.ns("ha"), "-batch", "-"], input="".join(lines), text=True, check=True)
    added = time.perf_counter() - started
    started = time.perf_counter()
    subprocess.run(["ip", "-n", lan.ns("ha"), "-batch", "-"], text=True, check=True,
                   input="".join(line.replace("neigh add", "neigh del") for line in lines))
    return added, time.perf_counter() - started


async def takeover(count: int) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    stalls: list[float] = []

    async def ticker() -> None:
        while True:
            before = loop.time()
            await asyncio.sleep(0.005)
            stalls.append(loop.time() - before - 0.005)

    neighbours = Neighbours("eth0")
    await neighbours.open()
    figures: dict[str, float] = {}
    tick = None
    try:
        for i in range(count):
            neighbours.away(BASE + i)
        await neighbours.settle()
        tick = loop.create_task(ticker())  # from here: not the child's start nor the first audit
        await asyncio.sleep(0.05)
        started = time.perf_counter()
        neighbours.serve(True)
        figures["call"] = time.perf_counter() - started
        await neighbours.settle()
        figures["installed"] = time.perf_counter() - started
        assert len(neighbours.entries) == count, len(neighbours.entries)
        started = time.perf_counter()
        neighbours.reconcile()
        await asyncio.sleep(0)
        await neighbours.settle()
        figures["audit"] = time.perf_counter() - started
        started = time.perf_counter()
        neighbours.serve(False)
        await neighbours.settle()
        figures["removed"] = time.perf_counter() - started
    finally:
        if tick is not None:
            tick.cancel()
        await neighbours.close()
    figures["stall_max"] = max(stalls)
    figures["stall_p99"] = statistics.quantiles(stalls, n=100, method="inclusive")[98]
    return figures


async def pacing(lan: Lan, seconds: float) -> float:
    """Frames/s of gratuitous ARP reaching the router at the default pacing, over ``seconds``."""
    with lan.inside("router"):
        listener = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
    listener.bind(("eth0", ETH_P_ARP))
    listener.setblocking(False)
    loop = asyncio.get_running_loop()
    arrivals: list[float] = []

    def read() -> None:
        for _ in range(256):
            try:
                listener.recv(64)
            except BlockingIOError:
                return
            arrivals.append(loop.time())

    count = int(RATE * seconds * 2)
    neighbours = Neighbours("eth0")
    await neighbours.open()
    loop.add_reader(listener.fileno(), read)
    try:
        for i in range(count):
            neighbours.away(BASE + i)
        await neighbours.settle()
        neighbours.serve(True)
        await asyncio.sleep(seconds)
    finally:
        loop.remove_reader(listener.fileno())
        listener.close()
        await neighbours.close()
    return (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, nargs="+", default=[1000, 20000])
    parser.add_argument("--garp-seconds", type=float, default=3.0)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces)")
    lan = Lan(f"nbb{os.getpid()}", {"router": "10.1.0.1", "ha": "10.1.0.2"})
    try:
        ha = lan.ns("ha")
        run("ip", "netns", "exec", ha, "sysctl", "-qw", "net.ipv4.conf.all.forwarding=1")
        run("ip", "-n", ha, "link", "add", "tnl0", "type", "veth", "peer", "name", "tnl1")
        run("ip", "-n", ha, "link", "set", "tnl0", "up")
        run("ip", "-n", ha, "route", "add", "10.2.0.0/15", "dev", "tnl0")
        print(f"{'N':>7}  {'ip -batch add/del':>18}  {'serve(True) call':>16}  {'installed':>9}  "
              f"{'audit':>7}  {'serve(False)':>12}  {'loop max/p99':>14}")
        for count in args.count:
            added, deleted = ip_batch(lan, count)
            with lan.inside("ha"):
                f = asyncio.run(takeover(count))
            print(f"{count:>7}  {added:>8.2f} s/{deleted:>5.2f} s  {f['call'] * 1e3:>13.2f} ms  "
                  f"{f['installed']:>7.2f} s  {f['audit']:>5.2f} s  {f['removed']:>10.2f} s  "
                  f"{f['stall_max'] * 1e3:>5.1f}/{f['stall_p99'] * 1e3:.1f} ms")
        with lan.inside("ha"):
            rate = asyncio.run(pacing(lan, args.garp_seconds))
        print(f"gratuitous ARP: {rate:,.0f} frames/s measured at the router, designed {RATE:,.0f}/s")
    finally:
        lan.close()


if __name__ == "__main__":
    main()
