"""Datagrams per second from the home network to a mobile node through the userspace data plane, beside
the two references measured in the same run on the same namespaces:

  kernel      plain kernel forwarding from the home link to the foreign link (the ceiling: no tunnel, no
              userspace);
  bare relay  the least a Python tunnel can do: read the TUN, prepend a 20-byte header packed in one call,
              send on the raw socket (the kernel fills in the checksum) -- the Python floor;
  forwarder   ``homeagent.dataplane.forwarder`` under its daemon-side handle, with the tunnel table of one
              home address (plus ``--tunnels`` others, to show the lookup does not care);
  fwd+churn   the same while ``--churn`` home addresses gain (or lose) their tunnel and route, sent by
              the handle as the measurement starts: forwarding while a burst of changes is applied.

  ebpf        the eBPF backend (``dataplane.ebpf``): its tc program on the Home Agent's ingress encapsulates
              and redirects in the kernel (a home link of its own, h1, so that the other paths do not run
              through the program); goal >= 0.9 of "kernel" at 64 B (issue 12). Skipped without clang,
              bpftool and tc.

  kernel back     mobile node -> home network, plain (from the care-of address), kernel forwarding;
  ebpf back       the same through the eBPF backend's reverse tunnel: its program on the foreign link
              (an extra interface) strips the outer header and hands the datagram to its TUN's ingress;
  reverse tunnel  mobile node -> home network through the forwarder's reverse tunnel (RFC 3024): IP-in-IP
              from the care-of address, decapsulated and handed back to the kernel through the TUN.

Then a steady 1,000 datagrams/s stream through the forwarder while ``--stream`` home addresses gain and
lose a tunnel: datagrams lost, the longest gap between arrivals, how long each burst takes to apply. And
the eBPF backend's map load: ``--bindings`` bindings (100,000) written into its maps as a start-up replay
would, and removed again, in seconds (goal: loaded in under 2 s).

    sudo python bench/dataplane.py [--seconds 1] [--rounds 3] [--sizes 64 1400] [--profile]

Topology (namespaces ``dpb<pid>-*``, removed at the end):  src 10.1.0.2 -- 10.1.0.1 ha 10.2.0.1 --
10.2.0.10 mn. ``src`` sends UDP as fast as one Python process can (pinned to CPU 0) to the home address
10.1.0.50 (or, for the kernel path, to the mobile node's own address); the relay under test runs pinned to
CPU 1; the rate is what the mobile node's eth0 counts received, read from the kernel's link statistics,
so nothing on the receiving side costs a Python instruction. The relay's CPU time per datagram (from
/proc/PID/stat) is printed too: on a host shared with others the rates swing with their load, the CPU a
datagram costs much less. Transmit checksum offload is off on the veths, as in the tests. ``--profile``
first profiles the forwarder's per-packet path in process (cProfile over ``Engine.from_tun`` with a send
that does nothing) and prints its cost per packet beside the bare relay's header-and-concatenate.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import threading
import time
import tempfile
from ipaddress import IPv4Address
from typing import Any
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))
from common import cpu_seconds  # noqa: E402
from netns.lan import can_run, run  # noqa: E402
from netns.tunnel_net import tx_checksum_off  # noqa: E402

from homeagent.dataplane import Tunnel  # noqa: E402
from homeagent.dataplane.ebpf import EbpfDataplane  # noqa: E402
from homeagent.dataplane.engine import Engine  # noqa: E402
from homeagent.dataplane.userspace import UserspaceDataplane  # noqa: E402

PREFIX = f"dpb{os.getpid()}"
SRC, HA_HOME, HA_FOREIGN, MN, HOME = "10.1.0.2", "10.1.0.1", "10.2.0.1", "10.2.0.10", "10.1.0.50"
HOME_BARE = "10.1.0.51"  # the bare relay's: both relays stay up, a round measures one after the other
HOME_REVERSE = "10.1.0.52"  # a node at MN with reverse tunnelling, for the other direction
HOME_EBPF = "10.1.0.53"  # the eBPF backend's, reached over a home link of its own:
SRC_EBPF, HA_EBPF = "10.5.0.2", "10.5.0.1"  # src eth1 -- h1 ha
HOME_EBPF_REVERSE = "10.1.0.54"  # the eBPF backend's node at MN with reverse tunnelling
HA_FOREIGN_EBPF = "10.2.0.2"  # its tunnels' source: a second address on f0, apart from the forwarder's
EBPF_TOOLS = all(shutil.which(tool) for tool in ("clang", "bpftool", "tc"))
SENDER_CPU, RELAY_CPU = 0, 1

SENDER = r"""
import os, socket, sys, time
os.sched_setaffinity(0, {{{cpu}}})
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
data, to, end = b"x" * {payload}, ("{dst}", 9), time.monotonic() + {seconds}
send = s.sendto
n = 0
while time.monotonic() < end:
    for _ in range(256):
        try:
            send(data, to)
        except OSError:
            pass
    n += 256
print(n)
"""

BARE_RELAY = r"""
import fcntl, os, socket, struct, sys
from pyroute2 import IPRoute
os.sched_setaffinity(0, {{{cpu}}})
fd = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH22x", b"bare0", 0x1001))
with IPRoute() as ipr:
    index = ipr.link_lookup(ifname="bare0")[0]
    ipr.link("set", index=index, mtu=1480, state="up")
    ipr.route("replace", dst="{home}/32", oif=index)
tx = socket.socket(socket.AF_INET, socket.SOCK_RAW, 4)
tx.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
header = struct.Struct("!BBHHHBBH4s4s")
src, dst, to = socket.inet_aton("{ha}"), socket.inet_aton("{mn}"), ("{mn}", 0)
pack, read, send = header.pack, os.read, tx.sendto
print("ready", flush=True)
while True:
    packet = read(fd, 1500)
    send(pack(0x45, packet[1], len(packet) + 20, 0, 0, 64, 4, 0, src, dst) + packet, to)
"""


def address(text: str) -> int:
    return int(IPv4Address(text))


def ns(host: str) -> str:
    return f"{PREFIX}-{host}"


def daemon_config(state: Path, port: int, key: str, spi: int, backend: str = "userspace",
                  tun: str = "ha0") -> str:
    """A lone ``homeagent run`` in ``ha`` serving 10.1.0.0/16 on ``port`` with ``backend`` on ``h0``."""
    dataplane = f'backend = "{backend}"\n' + (f'interface = "h0"\ntun = "{tun}"\n' if backend != "none" else "")
    return f"""
[home_agent]
address = "{HA_HOME}"
port = {port}
home_network = "10.1.0.0/16"
max_lifetime = 1800
state_dir = "{state}"
persistence = false  # the data plane's cost alone: bench/registrations.py measures the store's

[[security_association]]
home_addresses = "10.1.0.0/16"
spi = {spi}
key = "{key}"

[dataplane]
{dataplane}"""


def build() -> None:
    for host in ("src", "ha", "mn"):
        run("ip", "netns", "add", ns(host))
        run("ip", "-n", ns(host), "link", "set", "lo", "up")
    for left, left_if, left_addr, right, right_if, right_addr in (
            ("src", "eth0", SRC, "ha", "h0", HA_HOME), ("ha", "f0", HA_FOREIGN, "mn", "eth0", MN),
            ("src", "eth1", SRC_EBPF, "ha", "h1", HA_EBPF)):
        run("ip", "link", "add", left_if, "netns", ns(left), "type", "veth", "peer", "name", right_if,
            "netns", ns(right))
        for host, dev, address in ((left, left_if, left_addr), (right, right_if, right_addr)):
            run("ip", "-n", ns(host), "addr", "add", f"{address}/24", "dev", dev)
            run("ip", "-n", ns(host), "link", "set", dev, "up")
            tx_checksum_off(ns(host), dev)
    run("ip", "-n", ns("src"), "route", "add", "default", "via", HA_HOME)
    # On the home link the home address would need the Home Agent's proxy ARP; a route does here.
    run("ip", "-n", ns("src"), "route", "add", f"{HOME}/32", "via", HA_HOME)
    run("ip", "-n", ns("src"), "route", "add", f"{HOME_BARE}/32", "via", HA_HOME)
    run("ip", "-n", ns("src"), "route", "add", f"{HOME_EBPF}/32", "via", HA_EBPF)
    run("ip", "-n", ns("ha"), "addr", "add", f"{HA_FOREIGN_EBPF}/24", "dev", "f0")
    run("ip", "-n", ns("mn"), "route", "add", "default", "via", HA_FOREIGN)
    run("ip", "netns", "exec", ns("ha"), "sysctl", "-qw", "net.ipv4.ip_forward=1")
    # The mobile node's kernel would answer every tunnelled datagram with an ICMP protocol unreachable
    # (it has no ipip module); it is rate limited, but take it out of the measurement.
    run("ip", "netns", "exec", ns("mn"), "sysctl", "-qw", "net.ipv4.icmp_ratelimit=1000000")


def destroy() -> None:
    for host in ("src", "ha", "mn"):
        for pid in run("ip", "netns", "pids", ns(host), check=False).stdout.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), 9)
        run("ip", "netns", "del", ns(host), check=False)


def received(host: str = "mn") -> int:
    out = run("ip", "-n", ns(host), "-s", "-j", "link", "show", "eth0").stdout
    return int(json.loads(out)[0]["stats64"]["rx"]["packets"])


def measure(destination: str, size: int, seconds: float, relay: int | None) -> tuple[float, float, float]:
    """Datagrams/s received by the mobile node and offered by the sender over ``seconds`` (after 0.3 s of
    warm-up), and the relay's (process ``relay``) CPU microseconds per datagram received."""
    warm = 0.3
    proc = subprocess.Popen(["ip", "netns", "exec", ns("src"), sys.executable, "-c",
                             SENDER.format(cpu=SENDER_CPU, payload=size - 28, dst=destination,
                                           seconds=seconds + warm + 0.2)],
                            stdout=subprocess.PIPE, text=True)
    time.sleep(warm)
    start, t0, c0 = received(), time.monotonic(), cpu_seconds(relay) if relay else 0.0
    time.sleep(seconds)
    end, t1, c1 = received(), time.monotonic(), cpu_seconds(relay) if relay else 0.0
    out, _ = proc.communicate(timeout=30)
    cost = (c1 - c0) / (end - start) * 1e6 if relay and end > start else float("nan")
    return (end - start) / (t1 - t0), int(out) / (seconds + warm + 0.2), cost


REVERSE_SENDER = r"""
import os, socket, struct, time
from homeagent.wire.ip import IPv4Header, encapsulate
os.sched_setaffinity(0, {{{cpu}}})
a = lambda text: int.from_bytes(socket.inet_aton(text), "big")
payload = b"x" * {payload}
udp = struct.pack("!HHHH", 9, 9, 8 + len(payload), 0) + payload
inner = IPv4Header(0, 20 + len(udp), 0, 2, 0, 64, 17, 0, a("{home}"), a("{src}")).to_bytes() + udp
plain = inner[:12] + socket.inet_aton("{mn}") + inner[16:]  # from the care-of address, no tunnel
packet = encapsulate(inner, a("{mn}"), a("{ha}")) if {tunnelled} else plain
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
to, end, send, n = ("{ha}" if {tunnelled} else "{src}", 0), time.monotonic() + {seconds}, s.sendto, 0
while time.monotonic() < end:
    for _ in range(256):
        try:
            send(packet, to)
        except OSError:
            pass
    n += 256
print(n)
"""


def measure_reverse(tunnelled: bool, size: int, seconds: float, relay: int | None, home: str = HOME_REVERSE,
                    ha: str = HA_FOREIGN) -> tuple[float, float, float]:
    """Mobile node -> home network: datagrams/s the home network's host receives, IP-in-IP through a
    reverse tunnel (``tunnelled``, from ``home`` to ``ha``) or plain through the kernel, and the relay's CPU
    per one."""
    warm = 0.3
    code = REVERSE_SENDER.format(cpu=SENDER_CPU, payload=size - 28, home=home, src=SRC, mn=MN,
                                 ha=ha, tunnelled=tunnelled, seconds=seconds + warm + 0.2)
    proc = subprocess.Popen(["ip", "netns", "exec", ns("mn"), sys.executable, "-c", code],
                            stdout=subprocess.PIPE, text=True)
    time.sleep(warm)
    start, t0, c0 = received("src"), time.monotonic(), cpu_seconds(relay) if relay else 0.0
    time.sleep(seconds)
    end, t1, c1 = received("src"), time.monotonic(), cpu_seconds(relay) if relay else 0.0
    out, _ = proc.communicate(timeout=30)
    cost = (c1 - c0) / (end - start) * 1e6 if relay and end > start else float("nan")
    return (end - start) / (t1 - t0), int(out) / (seconds + warm + 0.2), cost


class BareRelay:
    """The bare relay, for its own home address (so that it and the forwarder can stay up side by side)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns("ha"), sys.executable, "-c",
                                      BARE_RELAY.format(cpu=RELAY_CPU, home=HOME_BARE, ha=HA_FOREIGN, mn=MN)],
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


class Forwarder:
    """The forwarder under its handle, on an asyncio loop in a thread (as in the daemon)."""

    def __init__(self, extra_tunnels: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.dp = UserspaceDataplane(tun="ha0", argv_prefix=["ip", "netns", "exec", ns("ha")])

        async def start() -> None:
            self.dp.start()
            await self.dp.ready()
            self.dp.set_tunnels(address(HOME), (Tunnel(address(MN), address(HA_FOREIGN), False),))
            self.dp.set_tunnels(address(HOME_REVERSE), (Tunnel(address(MN), address(HA_FOREIGN), True),))
            for n in range(extra_tunnels):
                self.dp.set_tunnels(address("10.1.128.0") + n,
                                    (Tunnel(address("10.3.0.1") + n, address(HA_FOREIGN), True),))
            self.dp.serve(True)
            while (await self.dp.fetch_counters(60)).get("dataplane.routes") != extra_tunnels + 2:
                await asyncio.sleep(0.1)
            assert self.dp.pid is not None
            os.sched_setaffinity(self.dp.pid, {RELAY_CPU})

        asyncio.run_coroutine_threadsafe(start(), self.loop).result(120)

    def counters(self) -> dict[str, object]:
        return asyncio.run_coroutine_threadsafe(self.dp.fetch_counters(), self.loop).result(10)

    def churn(self, count: int, first: str = "10.1.192.0") -> None:
        """``count`` home addresses from ``first`` on gain a tunnel, or lose it if they have one: a burst of
        binding changes (and of routes) for the forwarder to apply while it forwards."""
        self.churned = getattr(self, "churned", set())
        self.churned ^= {first}
        tunnels = (Tunnel(address("10.4.0.1"), address(HA_FOREIGN), False),) if first in self.churned else ()

        def burst() -> None:
            for n in range(count):
                self.dp.set_tunnels(address(first) + n, tunnels)
        self.loop.call_soon_threadsafe(burst)

    def routes(self) -> int:
        future = asyncio.run_coroutine_threadsafe(self.dp.fetch_counters(tunnels=False), self.loop)
        return int(future.result(10)["dataplane.routes"])  # type: ignore[call-overload]

    def close(self) -> None:
        async def close() -> None:
            self.dp.close()
        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class EbpfPath:
    """The eBPF backend on the Home Agent's second home link, h1, on a loop in a thread (as in the daemon),
    its pins on a bpf file system of its own (a temporary directory, unmounted at the end)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.pins = Path(tempfile.mkdtemp(prefix="homeagent-bench-bpf-"))
        self.dp = EbpfDataplane("h1", tun="eb0", netns=ns("ha"), pin_root=self.pins, extra_interfaces=["f0"])

        async def start() -> None:
            self.dp.start()
            await self.dp.ready()
            self.dp.set_tunnels(address(HOME_EBPF), (Tunnel(address(MN), address(HA_FOREIGN_EBPF), False),))
            self.dp.set_tunnels(address(HOME_EBPF_REVERSE), (Tunnel(address(MN), address(HA_FOREIGN_EBPF), True),))
            self.dp.serve(True)

        asyncio.run_coroutine_threadsafe(start(), self.loop).result(120)

    def call(self, fn: Any, *args: Any) -> Any:
        async def wrapped() -> Any:
            return fn(*args)
        return asyncio.run_coroutine_threadsafe(wrapped(), self.loop).result(600)

    def load(self, count: int) -> tuple[float, float]:
        """Seconds to write ``count`` bindings (each a home address, its own care-of address, T) into the
        maps, on the loop as the daemon's replay would, and seconds to remove them again."""
        fast = self.dp.fast
        assert fast is not None
        first, care_of, source = address("10.128.0.0"), address("10.64.0.0"), address(HA_FOREIGN_EBPF)
        tunnels = [(first + n, (Tunnel(care_of + n, source, True),)) for n in range(count)]

        def load() -> float:
            started = time.perf_counter()
            for home, tunnel in tunnels:
                fast.set_tunnels(home, (), tunnel)
            fast.commit()  # a table replayed in one loop turn: its values in one batch
            return time.perf_counter() - started

        def unload() -> float:
            started = time.perf_counter()
            for home, tunnel in tunnels:
                fast.set_tunnels(home, tunnel, ())
            fast.commit()
            return time.perf_counter() - started

        return self.call(load), self.call(unload)

    def counters(self) -> dict[str, int]:
        return dict(self.call(self.dp.fast_counters))

    def program_time(self) -> tuple[int, int]:
        """The program's run time (ns) and runs so far, kept by the kernel while bpf_stats_enabled is 1."""
        out = run("bpftool", "-j", "prog", "show", "pinned", str(self.dp.attachment.program_pin)).stdout
        info = json.loads(out)
        return int(info.get("run_time_ns", 0)), int(info.get("run_cnt", 0))

    def close(self) -> None:
        self.call(self.dp.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        run("umount", str(self.pins), check=False)
        with contextlib.suppress(OSError):
            self.pins.rmdir()


STREAM_RECEIVER = r"""
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 4)  # the tunnelled datagrams themselves
s.settimeout(0.5)
print("ready", flush=True)
times, end = [], time.monotonic() + {seconds}
while time.monotonic() < end:
    try:
        if s.recv(2048).endswith(b"stream"):
            times.append(time.monotonic())
    except TimeoutError:
        pass
gaps = sorted(b - a for a, b in zip(times, times[1:]))
print(len(times), gaps[-1] if gaps else 0, gaps[int(len(gaps) * 0.999)] if gaps else 0)
"""

STREAM_SENDER = r"""
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
n, at = 0, time.monotonic()
end = at + {seconds}
while at < end:
    s.sendto(b"x" * 30 + b"stream", ("{dst}", 9))
    n += 1
    at += 0.001
    time.sleep(max(0.0, at - time.monotonic()))
print(n)
"""


def stream_gaps(forwarder: Forwarder, churn: int) -> None:
    """A steady 1,000 datagrams/s through the forwarder while ``churn`` home addresses gain a tunnel and
    lose it again: datagrams lost, the longest gap between two arrivals, and how long each burst took."""
    seconds = 6.0
    receiver = subprocess.Popen(["ip", "netns", "exec", ns("mn"), sys.executable, "-c",
                                 STREAM_RECEIVER.format(seconds=seconds + 1)],
                                stdout=subprocess.PIPE, text=True)
    assert receiver.stdout is not None and receiver.stdout.readline().strip() == "ready"
    sender = subprocess.Popen(["ip", "netns", "exec", ns("src"), sys.executable, "-c",
                               STREAM_SENDER.format(seconds=seconds, dst=HOME)],
                              stdout=subprocess.PIPE, text=True)
    base = forwarder.routes()
    applied = []
    time.sleep(1)
    for wanted in (base + churn, base):
        started = time.monotonic()
        forwarder.churn(churn, "10.1.64.0")
        while forwarder.routes() != wanted and time.monotonic() - started < 60:
            time.sleep(0.02)
        applied.append(time.monotonic() - started)
    sent = int(sender.communicate(timeout=60)[0])
    got, longest, p999 = receiver.communicate(timeout=60)[0].split()
    print(f"1,000 datagrams/s while {churn} home addresses gain and lose a tunnel (applied in "
          f"{applied[0]:.2f} s and {applied[1]:.2f} s): {sent - int(got)} of {sent} lost, longest gap "
          f"{float(longest) * 1000:.1f} ms, p99.9 {float(p999) * 1000:.1f} ms")


def profile(count: int = 200_000) -> None:
    """The per-packet cost of the forwarder's engine in process, beside the bare relay's header."""
    import struct

    engine = Engine(lambda packet, address: None, lambda packet: None)
    engine.set_tunnels(address(HOME), (Tunnel(address(MN), address(HA_FOREIGN), False),))
    engine.serving = True
    packet = bytes.fromhex("4500004000004000401100000a0100020a010032") + bytes(44)
    started = time.perf_counter()
    for _ in range(count):
        engine.from_tun(packet)
    ours = (time.perf_counter() - started) / count
    header = struct.Struct("!BBHHHBBH4s4s")
    src, dst = bytes(4), bytes(4)
    send = engine.send
    started = time.perf_counter()
    for _ in range(count):
        send(header.pack(0x45, packet[1], len(packet) + 20, 0, 0, 64, 4, 0, src, dst) + packet, ("", 0))
    bare = (time.perf_counter() - started) / count
    print(f"in process, no sockets: engine.from_tun {ours * 1e6:.2f} us a packet, the bare relay's work "
          f"{bare * 1e6:.2f} us (the system calls, ~4-5 us of read + sendto, come on top of both)")
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(count):
        engine.from_tun(packet)
    profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(6)
    # The table's upkeep as it grows: every home address with a care-of address of its own (co-located
    # care-of addresses). A change once cost O(care-of addresses): 53 us a change at 1,000, 1.1 ms at 20,000.
    table = Engine(lambda packet, address: None, lambda packet: None)
    times = []
    for n in range(20_000):
        started = time.perf_counter()
        table.set_tunnels(address("10.128.0.0") + n, (Tunnel(address("10.64.0.0") + n, address(HA_FOREIGN), False),))
        times.append(time.perf_counter() - started)
    first, last = statistics.mean(times[:1000]) * 1e6, statistics.mean(times[-1000:]) * 1e6
    print(f"engine.set_tunnels, each home address with its own care-of address: {first:.2f} us a change for "
          f"the first 1,000, {last:.2f} us for the last 1,000 of 20,000 (ratio {last / first:.2f}; goal ~1)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0,
                        help="measured seconds per path, size and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the three paths, interleaved")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 1400], help="IP datagram sizes")
    parser.add_argument("--tunnels", type=int, default=1000, help="other home addresses in the table")
    parser.add_argument("--profile", action="store_true", help="profile the per-packet path first")
    parser.add_argument("--churn", type=int, default=2000,
                        help="home addresses changed at the start of each fwd+churn measurement")
    parser.add_argument("--stream", type=int, default=5000,
                        help="home addresses changed under a 1,000/s stream, for its gaps (0: skip)")
    parser.add_argument("--bindings", type=int, default=100_000,
                        help="bindings loaded into the eBPF backend's maps, timed (0: skip)")
    args = parser.parse_args()
    if args.profile:
        profile()
    if not can_run():
        print("needs root and iproute2", file=sys.stderr)
        return 2
    if (os.cpu_count() or 1) < 2:
        global RELAY_CPU
        RELAY_CPU = 0
    destroy()
    build()
    stats = Path("/proc/sys/kernel/bpf_stats_enabled")
    stats_were = stats.read_text().strip() if stats.exists() else None
    if stats_were is not None:  # the kernel times the program: the ebpf row's "CPU us/dgram"
        stats.write_text("1")
    paths = {"kernel": MN, "bare relay": HOME_BARE, "forwarder": HOME, "fwd+churn": HOME}
    if EBPF_TOOLS:
        paths["ebpf"] = HOME_EBPF
    else:
        print("no clang, bpftool or tc: the ebpf path is skipped", file=sys.stderr)
    reverse_paths: tuple[str, ...] = ("kernel back", "reverse tunnel", *(("ebpf back",) if EBPF_TOOLS else ()))
    keys = [(p, size) for size in args.sizes for p in [*paths, *reverse_paths]]
    rates: dict[tuple[str, int], list[float]] = {key: [] for key in keys}
    offered: dict[tuple[str, int], list[float]] = {key: [] for key in keys}
    costs: dict[tuple[str, int], list[float]] = {key: [] for key in keys}
    try:
        bare = BareRelay()
        forwarder = Forwarder(args.tunnels)
        ebpf = EbpfPath() if EBPF_TOOLS else None
        relays = {"kernel": None, "bare relay": bare.proc.pid, "forwarder": forwarder.dp.pid,
                  "fwd+churn": forwarder.dp.pid, "ebpf": None}
        try:
            for size in args.sizes:
                for _ in range(args.rounds):  # paths interleaved: a busy neighbour hits them alike
                    for path, destination in paths.items():
                        if path == "fwd+churn":
                            forwarder.churn(args.churn)
                        if path == "ebpf" and ebpf is not None:
                            before = ebpf.program_time()
                        rate, sent, cost = measure(destination, size, args.seconds, relays[path])
                        if path == "ebpf" and ebpf is not None:
                            after = ebpf.program_time()
                            if after[1] > before[1]:
                                cost = (after[0] - before[0]) / (after[1] - before[1]) / 1000  # us a packet
                        rates[path, size].append(rate)
                        offered[path, size].append(sent)
                        costs[path, size].append(cost)
                    for path in reverse_paths:
                        if path == "ebpf back" and ebpf is not None:
                            before = ebpf.program_time()
                            rate, sent, cost = measure_reverse(True, size, args.seconds, None,
                                                               HOME_EBPF_REVERSE, HA_FOREIGN_EBPF)
                            after = ebpf.program_time()
                            if after[1] > before[1]:
                                cost = (after[0] - before[0]) / (after[1] - before[1]) / 1000
                        else:
                            tunnelled = path == "reverse tunnel"
                            rate, sent, cost = measure_reverse(tunnelled, size, args.seconds,
                                                               forwarder.dp.pid if tunnelled else None)
                        rates[path, size].append(rate)
                        offered[path, size].append(sent)
                        costs[path, size].append(cost)
            drops = forwarder.counters().get("dataplane.drops")
            fast = ebpf.counters() if ebpf is not None else {}
            loads = [ebpf.load(args.bindings) for _ in range(args.rounds)] if ebpf and args.bindings else []
            if args.stream:
                stream_gaps(forwarder, args.stream)
        finally:
            forwarder.close()
            bare.close()
            if ebpf is not None:
                ebpf.close()
    finally:
        destroy()
        if stats_were is not None:
            stats.write_text(stats_were)
    pressure = Path("/proc/pressure/cpu")
    if fast:
        print("\nebpf fast path: " + ", ".join(f"{k} {v}" for k, v in fast.items() if v))
    for n, (loaded, removed) in enumerate(loads):
        print(f"ebpf maps, round {n + 1}: {args.bindings:,} bindings loaded in {loaded:.2f} s "
              f"({loaded / args.bindings * 1e6:.1f} us each; goal under 2 s), removed in {removed:.2f} s")
    print(f"\nforwarder drops: {drops}; CPU pressure now: "
          f"{pressure.read_text().splitlines()[0] if pressure.exists() else 'n/a'}")
    print(f"{args.rounds} rounds of {args.seconds} s per path and size, interleaved; medians (min-max) of "
          "datagrams/s received at the far end (the mobile node; the home network's host for the last two "
          "paths, back from the mobile node), and of the relay's CPU per datagram (ebpf: the program's run "
          "time per packet, from kernel.bpf_stats_enabled)")
    print(f"{'path':<14} {'size':>6} {'received/s':>12} {'range':>21} {'offered/s':>12} {'CPU us/dgram':>13} "
          f"{'vs bare relay':>14}")
    for (path, size), values in rates.items():
        base = statistics.median(rates["bare relay", size]) if path not in reverse_paths else 0
        median = statistics.median(values)
        print(f"{path:<14} {size:>5}B {median:>12,.0f} {min(values):>10,.0f}-{max(values):<10,.0f} "
              f"{statistics.median(offered[path, size]):>12,.0f} "
              f"{statistics.median(costs[path, size]):>13.2f} "
              f"{f'{median / base:.2f}' if base else '-':>14}")
    for size in args.sizes:
        if "ebpf" in paths:
            paired = [e / k for e, k in zip(rates["ebpf", size], rates["kernel", size]) if k]
            print(f"ebpf / kernel forwarding at {size} B: datagrams/s {statistics.median(paired):.2f} (rounds: "
                  f"{', '.join(f'{r:.2f}' for r in paired)}){' (goal >= 0.9)' if size == 64 else ''}")
            paired = [e / k for e, k in zip(rates["ebpf back", size], rates["kernel back", size]) if k]
            print(f"ebpf back / kernel back at {size} B: datagrams/s {statistics.median(paired):.2f} (rounds: "
                  f"{', '.join(f'{r:.2f}' for r in paired)})")
        paired = [f / b for f, b in zip(rates["forwarder", size], rates["bare relay", size]) if b]
        cpu = statistics.median(costs["bare relay", size]) / statistics.median(costs["forwarder", size])
        print(f"forwarder / bare relay at {size} B: datagrams/s {statistics.median(paired):.2f} (median of "
              f"rounds: {', '.join(f'{r:.2f}' for r in paired)}); by CPU per datagram {cpu:.2f} "
              "(goal >= 0.8)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
