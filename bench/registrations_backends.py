"""Registrations per second that create bindings, with each data-plane backend, in the same run (issue 12:
with the eBPF backend >= 0.9 of registrations/s with no data plane).

Every registration of a load here is a mobile node's first (``--mobile-nodes`` home addresses, each
registered once), so every one is a binding change that the data plane must take before the reply is sent:
with "none" nothing; with "userspace" a message to the forwarder and a route into its TUN device, which the
reply waits for ("A reply means forwarding", docs/dataplane.md); with "ebpf" the same message and route,
which nothing waits for (its program answers ARP and feeds the TUN without the route), and the program's
map values, a loop turn's in one bpf(2) call before that turn's replies. Renewals change no tunnel and cost
the data plane nothing: each load is followed by one renewing the same bindings, whose rate is printed
apart, for comparison (what a network of registered nodes mostly sends).

The namespaces of ``bench/dataplane.py`` (src -- ha -- mn); a real ``homeagent run`` in ``ha`` with
``[dataplane] backend = B`` on ``h0``, started anew for each load so that each starts from an empty table;
``homeagent mn load`` from ``src``, ``--window`` requests in flight: 128 by default, more than the
daemon's commit batch (``runtime/daemon.py`` COMMIT_EVERY, 64), since a backend whose replies wait for
the commit (ebpf, and any with persistence on) sends them a batch at a time, and a client whose window is
no larger than the batch then waits for each batch while the daemon waits for its next requests: the
two take turns, which is what such a bench would measure (ebpf 0.45 of none with a window of 64, 0.54
with 128, same run). Mobile nodes registering independently never take turns. Rounds alternate between
the backends (a busy neighbour hits them alike); the medians and each backend's ratio to "none" are
printed, per round too, and the CPU a registration cost the daemon and its helpers (the forwarder) during
the load: the daemon is one thread and the bottleneck, so its CPU a registration is what the rate follows
and what a shared host moves least.

First, in one process and without sockets, what the rates depend on and a shared host does not disturb:
the Home Agent's cost per first registration with each backend's work added as the daemon adds it
(``HomeAgent.receive_datagram``, its ``TunnelSet`` carried to the backend, a commit every 64 as in a busy
drain, and with ebpf the slow path's messages encoded as its flush encodes them), the program's maps on a
scratch pin of their own. The gratuitous ARP queue is not in it (it needs a link), nor the forwarder.

    sudo python bench/registrations_backends.py [--rounds 3] [--mobile-nodes 5000] [--window 128]
                                                [--backends none ebpf]
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
from typing import NamedTuple

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from common import KEY, SPI, children, cpu_seconds, stop  # noqa: E402
from dataplane import HA_HOME, MN, build, daemon_config, destroy, ns  # noqa: E402
from netns.lan import can_run  # noqa: E402

PORT = 4341


class Load(NamedTuple):
    """One load: registrations/s, and CPU microseconds a registration in the daemon and in its helpers (the
    forwarder), counted from /proc while the load ran (to 10 ms a process: a load of 20,000 at 60,000/s
    takes some 33 ticks)."""

    rate: float
    daemon: float
    helpers: float
    renewals: float  # registrations/s of a second load renewing the same bindings


def in_ns(host: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", ns(host), *argv]


def load(first: str, nodes: int, window: int) -> float:
    """Registrations/s of ``homeagent mn load`` from ``src``: one request for each of ``nodes`` home
    addresses from ``first`` on, ``window`` in flight."""
    out = subprocess.run(in_ns("src", sys.executable, "-m", "homeagent", "mn", "load", "--home-agent", HA_HOME,
                               "--port", str(PORT), "--spi", str(SPI), "--key", KEY, "--first-home-address", first,
                               "--mobile-nodes", str(nodes), "--count", str(nodes), "--care-of", MN,
                               "--window", str(window)),
                         check=True, capture_output=True, text=True, timeout=300)
    return float(json.loads(out.stdout)["rate"])


def settle(pids: list[int], timeout: float = 30.0) -> None:
    """Wait until ``pids`` are idle (less than a tick of CPU in half a second), ``timeout`` at most: what a
    load left behind (the forwarder's routes, the gratuitous ARPs repeated a second later) is not measured
    with the next."""
    deadline = time.monotonic() + timeout
    used = sum(cpu_seconds(pid) for pid in pids)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = sum(cpu_seconds(pid) for pid in pids)
        if now - used < 0.02:
            return
        used = now


def one_load(backend: str, nodes: int, first: str, window: int) -> Load:
    """``nodes`` first registrations against a daemon started for them: the rate, and the CPU they cost;
    then the same nodes' renewals."""
    with tempfile.TemporaryDirectory(prefix="homeagent-regbk-") as tmp:
        config = Path(tmp) / "homeagent.toml"
        config.write_text(daemon_config(Path(tmp) / "state", PORT, KEY, SPI, backend, "hb0"))
        daemon = subprocess.Popen(in_ns("ha", sys.executable, "-m", "homeagent", "run", "--config", str(config),
                                        "--log-level", "warning"))
        try:
            deadline = time.monotonic() + 60
            while not (Path(tmp) / "state" / "control.sock").exists():
                if time.monotonic() > deadline or daemon.poll() is not None:
                    raise RuntimeError(f"the daemon ({backend}) did not start")
                time.sleep(0.1)
            time.sleep(0.5)  # the data plane is up (the control socket comes first)
            helpers = children(daemon.pid)  # ``ip netns exec`` execs: the daemon is daemon.pid
            before = cpu_seconds(daemon.pid), sum(cpu_seconds(pid) for pid in helpers)
            rate = load(first, nodes, window)
            after = cpu_seconds(daemon.pid), sum(cpu_seconds(pid) for pid in helpers)
            settle([daemon.pid, *helpers])  # the forwarder's routes, the repeated gratuitous ARPs: done
            renewals = load(first, nodes, window)  # the same nodes again, each a renewal: no tunnel changes
            return Load(rate, (after[0] - before[0]) / nodes * 1e6, (after[1] - before[1]) / nodes * 1e6, renewals)
        finally:
            stop(daemon, timeout=20)


def in_process(count: int = 20_000, rounds: int = 5, turn: int = 64) -> dict[str, float]:
    """Microseconds per first registration in one process (the module's docstring): the best of ``rounds``
    interleaved runs of each of "none" and "ebpf"; and "kernel", what the kernel alone takes to insert one
    new home address's value into ha_homes, in batches of ``turn`` values already packed (the floor under
    ebpf's extra cost that no Python can lower)."""
    from common import in_process_load

    from homeagent.core.effects import Tunnel, TunnelSet
    from homeagent.core.home_agent import HomeAgent
    from homeagent.dataplane.bpf_maps import LOCK, Map
    from homeagent.dataplane.bpf_program import build as build_program
    from homeagent.dataplane.ebpf import EbpfDataplane, FastPath, home_value
    from homeagent.dataplane.messages import encode_tunnels
    from homeagent.dataplane.null import NullDataplane

    config, requests, _, built = in_process_load(count, "127.0.0.2")
    pin = Path(tempfile.mkdtemp(prefix="homeagent-regbk-", dir="/sys/fs/bpf"))
    best = {"none": float("inf"), "ebpf": float("inf"), "kernel": float("inf")}
    try:
        subprocess.run(["bpftool", "prog", "loadall", str(build_program()), str(pin / "progs"), "type", "classifier",
                        "pinmaps", str(pin / "maps")], check=True, capture_output=True)
        tunnel = (Tunnel(0xC0000201, 0x7F000002, False),)
        keys = [(0x0A010000 + 1 + n).to_bytes(4, "big") for n in range(count)]
        values = [home_value(0x0A010000 + 1 + n, tunnel) for n in range(count)]
        batches = [(b"".join(keys[n:n + turn]), b"".join(values[n:n + turn])) for n in range(0, count, turn)]
        for _ in range(rounds):
            homes = Map.open(pin / "maps" / "ha_homes")
            try:
                t = time.perf_counter()
                refused = [homes.update_batch(batch_keys, values, LOCK) for batch_keys, values in batches]
                best["kernel"] = min(best["kernel"], (time.perf_counter() - t) / count)
                assert not any(refused), "the kernel refused values: the map is too small for --mobile-nodes"
                assert not homes.delete_batch(b"".join(keys)), "values left behind"
            finally:
                homes.close()
            for backend in ("none", "ebpf"):
                ha = HomeAgent(config, time.monotonic())
                now = time.monotonic()
                ha.clock.offset = built - now
                receive = ha.receive_datagram
                ebpf = EbpfDataplane("lo") if backend == "ebpf" else None
                if ebpf is not None:
                    ebpf.fast = FastPath.open(pin / "maps")
                dataplane = ebpf or NullDataplane()
                t = time.perf_counter()
                for n, data in enumerate(requests):
                    for effect in receive(data, ("192.0.2.1", 434), "127.0.0.2", now):
                        if type(effect) is TunnelSet:
                            dataplane.set_tunnels(effect.home_address, effect.tunnels)
                    if n % turn == turn - 1:
                        dataplane.commit()
                        if ebpf is not None:  # what the slow path's flush does with the turn's changes
                            pending = ebpf.slow._pending
                            list(encode_tunnels([pending.popitem() for _ in range(len(pending))]))
                dataplane.commit()
                best[backend] = min(best[backend], (time.perf_counter() - t) / count)
                assert ha.counters["accepted"] == count, dict(ha.counters)
                if ebpf is not None:  # empty the maps for the next round
                    for home in list(ebpf.slow.tunnel_table()):
                        ebpf.set_tunnels(home, ())
                    ebpf.commit()
                    ebpf.fast.close()
    finally:
        subprocess.run(["rm", "-rf", str(pin)], check=False)
    return {backend: seconds * 1e6 for backend, seconds in best.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mobile-nodes", type=int, default=5000, help="first registrations per load")
    parser.add_argument("--window", type=int, default=128,
                        help="requests the client keeps in flight (default 128, as bench/registrations.py)")
    parser.add_argument("--backends", nargs="+", default=["none", "userspace", "ebpf"],
                        choices=["none", "userspace", "ebpf"])
    args = parser.parse_args()
    if not can_run():
        print("needs root and iproute2", file=sys.stderr)
        return 2
    backends = [b for b in args.backends
                if b != "ebpf" or all(shutil.which(t) for t in ("clang", "bpftool", "tc"))]
    if "none" not in backends:
        backends.insert(0, "none")
    if "ebpf" in backends:
        cost = in_process(min(args.mobile_nodes, 20_000))
        print(f"in process, per first registration (best of 5): none {cost['none']:.2f} us, ebpf "
              f"{cost['ebpf']:.2f} us (+{cost['ebpf'] - cost['none']:.2f}): {cost['none'] / cost['ebpf']:.2f} of "
              f"none; 0.9 of none leaves +{cost['none'] / 0.9 - cost['none']:.2f} us, and the kernel alone takes "
              f"{cost['kernel']:.2f} us to insert a new value (batches of 64, packed)", flush=True)
    destroy()
    build()
    loads: dict[str, list[Load]] = {b: [] for b in backends}
    try:
        for r in range(args.rounds):
            for n, backend in enumerate(backends):
                span = (args.mobile_nodes >> 8) + 1  # third octets a load takes; loads reuse them in turn
                load = (r * len(backends) + n) % max(1, (255 - 64) // span)
                first = f"10.1.{64 + load * span}.1"
                loads[backend].append(one_load(backend, args.mobile_nodes, first, args.window))
            print(f"round {r + 1}: " + ", ".join(f"{b} {loads[b][-1].rate:,.0f}/s (daemon {loads[b][-1].daemon:.1f} us, "
                                                 f"helpers {loads[b][-1].helpers:.1f} us)" for b in backends), flush=True)
    finally:
        destroy()
    rates = {b: [load.rate for load in loads[b]] for b in backends}
    base = statistics.median(rates["none"])
    print(f"\n{args.rounds} rounds of {args.mobile_nodes:,} first registrations each (every one a new binding); "
          "medians, and the ratio to no data plane per round")
    for backend in backends:
        paired = [x / n for x, n in zip(rates[backend], rates["none"]) if n]
        print(f"{backend:<10} {statistics.median(rates[backend]):>10,.0f}/s  "
              f"{statistics.median(rates[backend]) / base:.2f} of none  (rounds: "
              f"{', '.join(f'{p:.2f}' for p in paired)}){'  goal >= 0.9' if backend == 'ebpf' else ''}")
    renewal_base = statistics.median(load.renewals for load in loads["none"])
    print("\nRenewals of the same bindings (no tunnel changes), registrations/s, medians")
    for backend in backends:
        renewals = statistics.median(load.renewals for load in loads[backend])
        print(f"{backend:<10} {renewals:>10,.0f}/s  {renewals / renewal_base:.2f} of none")
    print("\nCPU a first registration (medians): the daemon's, which bounds the rate (one thread), and its helpers'")
    daemon_base = statistics.median(load.daemon for load in loads["none"])
    for backend in backends:
        daemon = statistics.median(load.daemon for load in loads[backend])
        print(f"{backend:<10} daemon {daemon:5.1f} us  helpers {statistics.median(l.helpers for l in loads[backend]):5.1f} us"
              f"  none's daemon / this daemon {daemon_base / daemon:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
