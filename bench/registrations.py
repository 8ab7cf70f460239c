"""Authenticated registrations per second, end to end, against the limit; and memory per binding.

Runs, in one go and with the same client (``homeagent mn load``, a separate process, many requests in
flight, every reply authenticated before it counts):

* the limit: ``baseline_server.py``, which only parses the header, verifies HMAC-MD5, signs and replies;
* the real daemon (``homeagent run``) on loopback.

Rounds alternate between the two so that a noisy neighbour hurts both alike; the medians and their ratio
are printed. Then a child process fills a binding table with ``--bindings`` bindings and reports resident
memory per binding.

    python bench/registrations.py [--duration 4] [--rounds 3] [--window 128] [--bindings 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import KEY, SPI, free_port, load, start, status, stop, write_config  # noqa: E402

DAEMON_ADDRESS = "127.0.0.2"
BASELINE_ADDRESS = "127.0.0.3"


def measure_baseline(args: argparse.Namespace) -> dict:
    port = free_port(BASELINE_ADDRESS)
    server = subprocess.Popen(
        [sys.executable, str(HERE / "baseline_server.py"), BASELINE_ADDRESS, str(port), str(SPI), KEY]
    )
    try:
        _first_reply(BASELINE_ADDRESS, port)
        return _client(BASELINE_ADDRESS, port, args)
    finally:
        stop(server)


def measure_daemon(tmp: Path, args: argparse.Namespace) -> dict:
    port = free_port(DAEMON_ADDRESS)
    config = write_config(tmp / f"lone-{port}", DAEMON_ADDRESS, port)
    daemon = start(config)
    try:
        while status(config) is None:
            time.sleep(0.05)
        return _client(DAEMON_ADDRESS, port, args)
    finally:
        stop(daemon)


def _client(address: str, port: int, args: argparse.Namespace) -> dict:
    return load(address, port, "--first-home-address", "10.1.0.1", "--mobile-nodes", str(args.mobile_nodes),
                "--duration", str(args.duration), "--window", str(args.window))


def _first_reply(address: str, port: int) -> None:
    """The bare server has no control socket: it is up when it answers."""
    from ipaddress import IPv4Address

    from homeagent.mobile_node import MobileNode
    from homeagent.wire.auth import Algorithm, SecurityAssociation

    node = MobileNode(IPv4Address("10.1.255.254"), IPv4Address(address),
                      SecurityAssociation(SPI, Algorithm.HMAC_MD5, bytes.fromhex(KEY)), port)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            node.register(IPv4Address("192.0.2.1"), 60, timeout=0.2, retries=0)
            return
        except TimeoutError:
            continue
    raise RuntimeError(f"nothing answers on {address}:{port}")


def in_process(count: int = 20_000, rounds: int = 5) -> tuple[float, float]:
    """Microseconds per authenticated registration handled in one process, no sockets: the Home Agent's
    ``receive_datagram`` (a lone Home Agent: parse, authenticate, replay check, administrative checks,
    binding table, reply) and the minimal handler of ``baseline_server.py`` (parse, verify, sign), each the
    best of ``rounds`` interleaved runs over the same ``count`` requests (distinct nodes: every one new)."""
    from ipaddress import IPv4Address

    from baseline_server import handler

    from homeagent.config import parse as parse_config
    from homeagent.core.home_agent import HomeAgent
    from homeagent.mobile_node import MobileNode
    from homeagent.wire.auth import Algorithm, SecurityAssociation

    sa = SecurityAssociation(SPI, Algorithm.HMAC_MD5, bytes.fromhex(KEY))
    requests = []
    for i in range(count):
        node = MobileNode(IPv4Address(0x0A010000 + 1 + i), IPv4Address(DAEMON_ADDRESS), sa, 434)
        requests.append(node.request(IPv4Address("192.0.2.1"), 600))
    config = parse_config(f"""
[home_agent]
address = "{DAEMON_ADDRESS}"
home_network = "10.1.0.0/16"
state_dir = "/nonexistent"

[[security_association]]
home_addresses = "10.1.0.0/16"
spi = {SPI}
algorithm = "hmac-md5"
key = "{KEY}"
""")
    minimal = handler(SPI, bytes.fromhex(KEY))
    source = ("192.0.2.1", 434)
    best_ha, best_min = float("inf"), float("inf")
    for _ in range(rounds):
        ha = HomeAgent(config, time.monotonic())
        now = time.monotonic()
        ha.clock.offset = time.time() - now
        receive = ha.receive_datagram
        t = time.perf_counter()
        for data in requests:
            receive(data, source, DAEMON_ADDRESS, now)
        best_ha = min(best_ha, (time.perf_counter() - t) / count)
        assert ha.counters["accepted"] == count, dict(ha.counters)
        t = time.perf_counter()
        for data in requests:
            minimal(data)
        best_min = min(best_min, (time.perf_counter() - t) / count)
    return best_ha * 1e6, best_min * 1e6


def memory_child(count: int) -> None:
    """Fill a binding table with ``count`` bindings; print resident bytes per binding."""
    import gc

    from homeagent.core.bindings import BindingTable

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    table = BindingTable()
    now = time.time()
    gc.collect()
    before = rss()
    first = 0x0A000000  # 10.0.0.0: distinct home addresses, distinct care-of addresses
    for i in range(count):
        ident = ((int(now) + 2_208_988_800) << 32) | i
        table.register(first + i, 0xC0000000 + i, 1800, ident, now + (i % 1000) / 1000.0)
    gc.collect()
    after = rss()
    print(json.dumps({"bindings": len(table), "bytes": after - before, "per_binding": (after - before) / count}))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--duration", type=float, default=4.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--window", type=int, default=128)
    p.add_argument("--mobile-nodes", type=int, default=10000)
    p.add_argument("--bindings", type=int, default=1_000_000)
    p.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory_child:
        memory_child(args.memory_child)
        return

    ours_us, minimal_us = in_process()
    print(f"in process  homeagent {ours_us:.2f} us  minimal handler {minimal_us:.2f} us  "
          f"ratio {minimal_us / ours_us:.2f}  (goal <= 7 us)", flush=True)

    baseline_rates, daemon_rates = [], []
    with tempfile.TemporaryDirectory(prefix="homeagent-bench-") as tmp:
        for _ in range(args.rounds):
            r = measure_baseline(args)
            baseline_rates.append(r["rate"])
            print(f"limit   (bare server)   {r['rate']:>9.0f} /s  lost {r['lost']}", flush=True)
            r = measure_daemon(Path(tmp), args)
            daemon_rates.append(r["rate"])
            print(f"homeagent (daemon)      {r['rate']:>9.0f} /s  lost {r['lost']}", flush=True)

    limit, ours = statistics.median(baseline_rates), statistics.median(daemon_rates)
    print(f"\nregistrations/s  homeagent {ours:.0f}  limit {limit:.0f}  ratio {ours / limit:.2f}  (goal >= 0.6)")

    out = subprocess.run([sys.executable, __file__, "--memory-child", str(args.bindings)],
                         check=True, capture_output=True, text=True)
    mem = json.loads(out.stdout)
    print(f"memory  {mem['bindings']} bindings  {mem['bytes'] / 2**20:.0f} MiB  "
          f"{mem['per_binding']:.0f} bytes/binding  (goal <= 300)")


if __name__ == "__main__":
    main()
