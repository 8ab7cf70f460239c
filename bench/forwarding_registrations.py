"""Registrations per second while the data plane forwards at full rate, beside registrations per second
idle, in the same run (issue 11: goal >= 0.7 of idle): the data plane must not starve the registration
loop (DESIGN.md principle 9; the forwarder is a process of its own).

The namespaces of ``bench/dataplane.py`` (src -- ha -- mn). A real ``homeagent run`` in ``ha`` with
``[dataplane] backend = "userspace"``; the home address 10.1.0.50 is registered with the mobile node's
address as care-of address, so that what ``src`` floats to it is tunnelled. Rounds alternate: ``homeagent
mn load`` from ``src`` for ``--seconds`` with no traffic, then again while ``src`` sends 64-byte datagrams
to the home address. The flood comes from ``trafgen`` (netsniff-ng, a C generator writing frames straight
to the link) at ``--flood-rate`` datagrams/s (default 150,000: about what the userspace forwarder carries on
one CPU here), pinned to CPU 0, so that it costs this host what a flood from the network would, the
receiving and forwarding, and little more; with ``--sender python`` (or without trafgen installed) it is a
Python process sending as fast as it can, which takes a whole CPU of two to make the datagrams. Each load
registers ``--mobile-nodes``
other home addresses (every one gains a tunnel and a route, as in life). Printed: both rates, their ratio,
and the datagrams/s the mobile node received meanwhile; and, as a reference in the same run, registrations/s
while the kernel itself forwards the same flood to the mobile node's own address (no tunnel, no
userspace): what the flood's sender and the kernel's forwarding cost the registrations on this host.

    sudo python bench/forwarding_registrations.py [--seconds 3] [--rounds 3] [--mobile-nodes 2000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from common import KEY, SPI  # noqa: E402
from dataplane import (HA_HOME, HOME, MN, SENDER, SENDER_CPU, SRC, build, daemon_config, destroy, ns,  # noqa: E402
                       received)

from netns.lan import can_run  # noqa: E402

PORT = 4340


def in_ns(host: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", ns(host), *argv]


def mn(*args: str, timeout: float = 120) -> dict:
    out = subprocess.run(in_ns("src", sys.executable, "-m", "homeagent", "mn", *args, "--home-agent", HA_HOME,
                               "--port", str(PORT), "--spi", str(SPI), "--key", KEY),
                         check=True, capture_output=True, text=True, timeout=timeout)
    return json.loads(out.stdout)


def flood(kind: str, rate: int, destination: str, seconds: float) -> subprocess.Popen[str]:
    """64-byte datagrams from ``src`` to ``destination`` for ``seconds``."""
    if kind == "python":
        return subprocess.Popen(in_ns("src", sys.executable, "-c", SENDER.format(
            cpu=SENDER_CPU, payload=36, dst=destination, seconds=seconds)), stdout=subprocess.PIPE, text=True)
    ha_mac = json.loads(subprocess.run(["ip", "-n", ns("ha"), "-j", "link", "show", "h0"], check=True,
                                       capture_output=True, text=True).stdout)[0]["address"]
    packet = (f"{{ eth(da={ha_mac}), ipv4(saddr={SRC}, daddr={destination}, ttl=64), udp(sp=4000, dp=9), "
              "fill(0x78, 22) }")  # 14 + 20 + 8 + 22: a 64-byte frame, as the Python sender's
    return subprocess.Popen(in_ns("src", "taskset", "-c", str(SENDER_CPU), "trafgen", "--dev", "eth0", "-P", "1",
                                  "-b", f"{rate}pps", "-n", str(int(rate * seconds)), "-C", "-q", packet),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)


def registrations(seconds: float, nodes: int, first: str) -> float:
    result = mn("load", "--first-home-address", first, "--mobile-nodes", str(nodes), "--care-of", MN,
                "--duration", str(seconds), "--window", "64")
    return float(result["rate"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mobile-nodes", type=int, default=2000)
    parser.add_argument("--sender", choices=["trafgen", "python"],
                        default="trafgen" if shutil.which("trafgen") else "python")
    parser.add_argument("--flood-rate", type=int, default=150_000, help="trafgen's datagrams/s")
    args = parser.parse_args()
    if not can_run():
        print("needs root and iproute2", file=sys.stderr)
        return 2
    destroy()
    build()
    idle: list[float] = []
    busy: list[float] = []  # while the data plane tunnels the flood
    forwarded: list[float] = []
    kernel: list[float] = []  # while the kernel forwards the same flood to the mobile node's own address
    kernel_forwarded: list[float] = []
    try:
        with tempfile.TemporaryDirectory(prefix="homeagent-fwdreg-") as tmp:
            config = Path(tmp) / "homeagent.toml"
            config.write_text(daemon_config(Path(tmp) / "state", PORT, KEY, SPI))
            daemon = subprocess.Popen(in_ns("ha", sys.executable, "-m", "homeagent", "run", "--config",
                                            str(config), "--log-level", "warning"))
            try:
                deadline = time.monotonic() + 30
                while not (Path(tmp) / "state" / "control.sock").exists():
                    if time.monotonic() > deadline or daemon.poll() is not None:
                        raise RuntimeError("the daemon did not start")
                    time.sleep(0.1)
                mn("register", "--home-address", HOME, "--care-of", MN, "--lifetime", "1800", "--json")
                for r in range(args.rounds):
                    idle.append(registrations(args.seconds, args.mobile_nodes, f"10.1.{16 + 3 * r}.1"))
                    for destination, rates, counts in ((MN, kernel, kernel_forwarded), (HOME, busy, forwarded)):
                        sender = flood(args.sender, args.flood_rate, destination, args.seconds + 2)
                        time.sleep(0.5)  # the flood is on
                        before, at = received(), time.monotonic()
                        first = f"10.1.{17 + 3 * r + (destination == HOME)}.1"
                        rates.append(registrations(args.seconds, args.mobile_nodes, first))
                        counts.append((received() - before) / (time.monotonic() - at))
                        sender.wait(timeout=30)
                    print(f"round {r + 1}: idle {idle[-1]:,.0f}/s; the kernel forwarding the flood "
                          f"{kernel[-1]:,.0f}/s ({kernel_forwarded[-1]:,.0f} datagrams/s); the data plane "
                          f"tunnelling it {busy[-1]:,.0f}/s ({forwarded[-1]:,.0f} datagrams/s)", flush=True)
            finally:
                daemon.terminate()
                daemon.wait(timeout=10)
    finally:
        destroy()
    ratio = statistics.median(b / i for b, i in zip(busy, idle))
    against_kernel = statistics.median(b / k for b, k in zip(busy, kernel))
    print(f"\nregistrations/s idle {statistics.median(idle):,.0f}, while the data plane tunnels a flood "
          f"{statistics.median(busy):,.0f} ({statistics.median(forwarded):,.0f} datagrams/s): ratio {ratio:.2f} "
          f"(goal >= 0.7); while the kernel forwards the same flood {statistics.median(kernel):,.0f} "
          f"({statistics.median(kernel_forwarded):,.0f} datagrams/s): ratio to that {against_kernel:.2f}. "
          + ("The flood: trafgen at {:,} datagrams/s, pinned to CPU 0.".format(args.flood_rate)
             if args.sender == "trafgen" else
             "The flood's sender is a Python process on this host, pinned to CPU 0: on two CPUs it takes half "
             "of them, which a flood arriving from the network would not."))
    return 0


if __name__ == "__main__":
    sys.exit(main())
