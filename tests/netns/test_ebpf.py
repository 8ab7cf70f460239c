"""The eBPF backend on a real network (issue 12): its tc program on the Home Agent's home link, the
userspace forwarder behind it, real datagrams across the router of ``tunnel_net``. What the fast path did
is told apart from what the slow path did by the program's own counters (``dataplane.fast``). Needs root,
iproute2, clang, bpftool and the libbpf headers. Namespace prefix "eb"; the bpf file system the pins go to
is mounted under a temporary directory and unmounted at the end."""

from __future__ import annotations

import errno
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import ICMP, IP, UDP
from scapy.packet import Raw, raw

from homeagent.dataplane import Tunnel
from homeagent.dataplane.bpf_program import BpfUnavailable, build
from homeagent.dataplane.bpf_maps import Map
from homeagent.dataplane.ebpf import EbpfDataplane
from netns.lan import can_run, run
from netns.test_forwarder import LoopThread, wait_for
from netns.tunnel_net import CN, COA, COA2, HA, HOME, TunnelNet, a, first_of, icmp_of, udp_echo

TOOLS = all(shutil.which(tool) for tool in ("clang", "bpftool", "tc"))
pytestmark = [pytest.mark.root, pytest.mark.skipif(not can_run(), reason="needs root and iproute2"),
              pytest.mark.skipif(not TOOLS, reason="needs clang, bpftool and tc")]

PORT = 7
TTL = 50  # the outer TTL configured: not the kernel's default, so that the header shows it was ours


class Setup:
    def __init__(self, net: TunnelNet, loop: LoopThread, pins: Path, cache: Path) -> None:
        self.net = net
        self.loop = loop
        self.pins = pins
        self.cache = cache
        self.dataplane = self.make()

    def make(self) -> EbpfDataplane:
        dataplane = EbpfDataplane("eth0", tun="ha0", ttl=TTL, netns=self.net.ns("ha"), pin_root=self.pins,
                                  cache_dir=self.cache)
        self.loop.call(dataplane.start)
        self.loop.wait(dataplane.ready())
        return dataplane

    def counters(self) -> dict[str, Any]:
        return self.loop.wait(self.dataplane.fetch_counters())

    def fast(self) -> dict[str, int]:
        return self.loop.call(self.dataplane.fast_counters)

    def set_tunnels(self, *tunnels: Tunnel, home: str = HOME) -> None:
        self.loop.call(self.dataplane.set_tunnels, a(home), tuple(tunnels))
        self.loop.call(self.dataplane.commit)  # as the runtime does before the replies of a loop turn
        # The forwarder (the slow path) has the table too, and a route into its TUN for each home address.
        wait_for("the forwarder's table", lambda: self.counters()["dataplane.home_addresses"] ==
                 self.loop.call(self.dataplane.slow.home_addresses))

    def serve(self, serving: bool) -> None:
        """As the runtime applies a ``Serve``: the loop turn that made it ends with a commit."""
        def turn() -> None:
            self.dataplane.serve(serving)
            self.dataplane.commit()

        self.loop.call(turn)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    net = TunnelNet(f"eb{os.getpid()}")
    loop = LoopThread()
    pins = tmp_path_factory.mktemp("bpffs")
    cache = tmp_path_factory.mktemp("bpfcache")
    s = None
    try:
        s = Setup(net, loop, pins, cache)
        s.serve(True)
        # The Home Agent knows its router's MAC, as any host soon does: the fast path finds a neighbour.
        with net.socket("ha", socket.AF_INET, socket.SOCK_DGRAM) as hello:
            hello.sendto(b"", ("10.1.0.254", 9))
        wait_for("the router's MAC", lambda: "lladdr" in net.exec("ha", "ip", "neigh", "show", "10.1.0.254").stdout)
        yield s
    finally:
        if s is not None:
            loop.call(s.dataplane.close)
        loop.close()
        net.close()
        run("umount", str(pins), check=False)


@pytest.fixture
def s(setup: Setup) -> Iterator[Setup]:
    try:
        yield setup
    finally:
        setup.serve(True)
        setup.set_tunnels()


def ipip_listener(s: Setup, host: str) -> socket.socket:
    sock = s.net.socket(host, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_IPIP)
    sock.settimeout(2)
    return sock


def outer_of(listener: socket.socket, payload: bytes, timeout: float = 2) -> IP:
    """The first IP-in-IP datagram whose inner UDP payload is ``payload``, as scapy dissects it."""
    def carries(packet: IP) -> bool:
        inner = packet.payload
        return isinstance(inner, IP) and UDP in inner and bytes(inner[UDP].payload) == payload

    return first_of(listener, carries, f"IP-in-IP datagram carrying {payload!r}", timeout)


def send_raw(s: Setup, packet: IP, host: str = "cn") -> None:
    with s.net.socket(host, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as sock:
        sock.sendto(raw(packet), (packet.dst, 0))


def udp(payload: bytes, **fields: Any) -> IP:
    return IP(src=CN, dst=HOME, **fields) / UDP(sport=4000, dport=PORT) / Raw(payload)


@pytest.mark.parametrize("df", [False, True], ids=["no-df", "df"])
def test_the_fast_path_encapsulates_per_rfc_2003(s, df):
    """Outer header from the tunnel's source to the care-of address, protocol 4, the configured TTL, TOS
    and DF copied from the inner header; the inner TTL decremented once by the Home Agent."""
    s.set_tunnels(Tunnel(a(COA), a(HA), False))
    before = s.fast()["encapsulated"]
    with ipip_listener(s, "mn") as listener:
        send_raw(s, udp(b"rfc2003 %d" % df, ttl=10, tos=0x28, flags="DF" if df else 0))
        outer = outer_of(listener, b"rfc2003 %d" % df)
    inner = outer.payload
    assert (outer.src, outer.dst, outer.proto, outer.ttl - 0) == (HA, COA, 4, TTL - 1)  # the router took one
    assert outer.tos == 0x28 and bool(outer.flags.DF) is df
    assert outer.len == inner.len + 20 and outer.ihl == 5
    assert IP(raw(outer)).chksum == outer.chksum  # scapy recomputes: the header's checksum is right
    assert inner.ttl == 8, "10, less one at the router and one at the Home Agent"
    assert IP(raw(inner)).chksum == inner.chksum, "the inner checksum follows the TTL"
    assert (inner.src, inner.dst, inner.tos) == (CN, HOME, 0x28)
    assert s.fast()["encapsulated"] == before + 1, "the fast path carried it, not the forwarder"
    tunnel = s.counters()["dataplane.tunnels"][0]
    assert tunnel["care_of_address"] == COA and tunnel["packets"] >= 1


def test_two_care_of_addresses_each_get_a_copy(s):
    s.set_tunnels(Tunnel(a(COA), a(HA), False), Tunnel(a(COA2), a(HA), False))
    before = s.fast()["encapsulated"]
    with ipip_listener(s, "mn") as one, ipip_listener(s, "mn2") as two:
        for n in range(3):
            send_raw(s, udp(b"both %d" % n))
            assert outer_of(one, b"both %d" % n).dst == COA
            assert outer_of(two, b"both %d" % n).dst == COA2
    assert s.fast()["encapsulated"] == before + 6
    tunnels = {t["care_of_address"]: t["packets"] for t in s.counters()["dataplane.tunnels"]}
    assert tunnels == {COA: 3, COA2: 3}


def test_a_datagram_reaches_a_decapsulating_mobile_node(s):
    """End to end with the mobile node's own tunnel end (``dataplane.decap``), both directions."""
    s.set_tunnels(Tunnel(a(COA), a(HA), True))
    mn = s.net.popen("mn", [sys.executable, "-m", "homeagent.dataplane.decap", "--home-address", HOME,
                            "--home-agent", HA, "--care-of", COA, "--tun", "mip0", "--reverse"],
                     stdout=subprocess.PIPE, text=True)
    try:
        assert mn.stdout is not None and mn.stdout.readline().strip() == "ready"
        before = s.fast()
        with s.net.socket("mn", socket.AF_INET, socket.SOCK_DGRAM) as server, \
                s.net.socket("cn", socket.AF_INET, socket.SOCK_DGRAM) as cn:
            server.bind((HOME, PORT))
            cn.bind((CN, 0))
            for sock in (server, cn):
                sock.settimeout(2)
            udp_echo(server, cn, CN, HOME, PORT, 5)
        after = s.fast()
        assert after["encapsulated"] - before["encapsulated"] == 5
        assert after["decapsulated"] - before["decapsulated"] == 5, "the reverse tunnel in the fast path too"
    finally:
        mn.terminate()
        mn.wait(10)
        if mn.stdout is not None:
            mn.stdout.close()


def test_the_reverse_tunnel_is_decapsulated_only_for_registered_pairs(s):
    s.set_tunnels(Tunnel(a(COA), a(HA), True))
    before = s.fast()
    drops_before = s.counters()["dataplane.drops"]
    with s.net.socket("cn", socket.AF_INET, socket.SOCK_DGRAM) as victim:
        victim.bind((CN, 0))
        port = victim.getsockname()[1]
        victim.settimeout(2)
        inner = IP(src=HOME, dst=CN) / UDP(sport=PORT, dport=port)
        send_raw(s, IP(src=COA, dst=HA, proto=4) / inner / Raw(b"registered"), host="mn")
        assert victim.recvfrom(2048)[0] == b"registered"
        send_raw(s, IP(src=CN, dst=HA, proto=4) / inner / Raw(b"forged"), host="cn")  # no care-of address
        send_raw(s, IP(src=COA, dst=HA, proto=4) / IP(src="10.1.0.77", dst=CN) / UDP(dport=port) / Raw(b"n"),
                 host="mn")  # a care-of address, but not that home address's
        victim.settimeout(0.5)
        with pytest.raises(TimeoutError):
            victim.recvfrom(2048)
    after = s.fast()
    assert after["decapsulated"] - before["decapsulated"] == 1
    assert after["drop_unknown_care_of"] - before["drop_unknown_care_of"] == 1
    assert after["drop_not_reverse_tunnel"] - before["drop_not_reverse_tunnel"] == 1
    drops = s.counters()["dataplane.drops"]  # named as the userspace backend names them
    assert drops["unknown_care_of"] - drops_before.get("unknown_care_of", 0) == 1
    assert drops["not_reverse_tunnel"] - drops_before.get("not_reverse_tunnel", 0) == 1
    s.set_tunnels(Tunnel(a(COA), a(HA), False))  # bound without T: not relayed
    with s.net.socket("cn", socket.AF_INET, socket.SOCK_DGRAM) as victim:
        victim.bind((CN, 0))
        victim.settimeout(0.5)
        send_raw(s, IP(src=COA, dst=HA, proto=4) / IP(src=HOME, dst=CN) /
                 UDP(dport=victim.getsockname()[1]) / Raw(b"no T"), host="mn")
        with pytest.raises(TimeoutError):
            victim.recvfrom(2048)
    assert s.fast()["drop_not_reverse_tunnel"] == after["drop_not_reverse_tunnel"] + 1


def test_what_bpf_cannot_do_goes_to_the_slow_path(s):
    """TTL running out: Time Exceeded; too big with DF: Fragmentation Needed with the tunnel's MTU; too big
    without: carried in outer fragments. Each handed by the program to the forwarder, which answers."""
    s.set_tunnels(Tunnel(a(COA), a(HA), False))
    before = s.fast()
    with s.net.socket("cn", socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as icmp:
        send_raw(s, udp(b"ttl", ttl=2))  # 1 at the Home Agent
        error = icmp_of(icmp, 11)
        assert error.src == HA and IP(raw(error[ICMP].payload)).dst == HOME
        send_raw(s, udp(b"x" * (1500 - 28), flags="DF"))
        error = icmp_of(icmp, 3)
        assert error[ICMP].code == 4 and error[ICMP].nexthopmtu == 1480
    with ipip_listener(s, "mn") as listener:
        big = b"y" * (1500 - 28)
        send_raw(s, udp(big))
        assert outer_of(listener, big).dst == COA  # outer fragments, reassembled for the raw socket
    after = s.fast()
    assert after["pass_ttl"] == before["pass_ttl"] + 1
    assert after["pass_too_big"] == before["pass_too_big"] + 2
    assert after["encapsulated"] == before["encapsulated"]


def test_a_standby_passes_and_a_takeover_is_a_flag_flip(s):
    s.set_tunnels(Tunnel(a(COA), a(HA), False))
    s.serve(False)
    # The program stops at once; the slow path (niceness 19) a moment later, and until then its route still
    # draws the datagram into its TUN, where it would be tunnelled: on a busy host that moment shows.
    wait_for("the slow path standing by", lambda: s.counters()["dataplane.routes"] == 0)
    before = s.fast()
    with ipip_listener(s, "mn") as listener:
        send_raw(s, udp(b"standby"))
        with pytest.raises(AssertionError):
            outer_of(listener, b"standby", timeout=0.5)
        assert s.fast()["pass_not_serving"] == before["pass_not_serving"] + 1
        started = time.monotonic()
        s.serve(True)  # the fast path forwards as soon as the flag is written
        send_raw(s, udp(b"active"))
        assert outer_of(listener, b"active").dst == COA
        print(f"\n   forwarding {time.monotonic() - started:.4f} s after serve(True)")
    assert s.fast()["encapsulated"] == before["encapsulated"] + 1


def test_a_daemon_that_dies_leaves_forwarding_on_and_the_next_takes_the_maps_over(s):
    """The program and its maps are pinned: a daemon killed without a clean stop (its forwarder, TUN
    device and routes gone with it) leaves the fast path forwarding; the next start finds the pins and
    keeps the maps; what the new daemon does not set again is removed when it first serves."""
    s.set_tunnels(Tunnel(a(COA), a(HA), False))
    s.set_tunnels(Tunnel(a(COA2), a(HA), False), home="10.1.0.51")
    s.loop.call(s.dataplane.abandon)
    with ipip_listener(s, "mn") as listener:
        send_raw(s, udp(b"orphan"))
        assert outer_of(listener, b"orphan").dst == COA, "forwarding goes on without a daemon"
        s.dataplane = s.make()
        assert s.dataplane.attachment.reused
        send_raw(s, udp(b"next"))
        assert outer_of(listener, b"next").dst == COA
        s.loop.call(s.dataplane.set_tunnels, a(HOME), (Tunnel(a(COA), a(HA), False),))  # the replay
        s.serve(True)  # commits first
    fast = s.dataplane.fast
    homes = s.loop.call(lambda: [k for k in fast.homes.keys() if struct.unpack_from("=I", fast.homes.lookup(k), 8)[0]])
    assert homes == [a(HOME).to_bytes(4, "big")], "10.1.0.51 was not replayed: gone (emptied, its key soon too)"


def test_pins_lost_with_a_killed_daemon_the_next_pins_the_attached_program_again_and_takes_its_maps(s):
    """A daemon whose bpf file system died with it (``ip netns exec`` mounts one of its own) leaves the
    filter but no pins: the next start finds our program still attached (the same tag), pins it and its
    maps again and takes them over, rather than replacing them with empty ones (forwarding stopped until
    the table was set again)."""
    s.set_tunnels(Tunnel(a(COA), a(HA), False))
    s.loop.call(s.dataplane.abandon)
    s.dataplane.attachment.unpin()  # what a mount namespace going away does to the pins
    with ipip_listener(s, "mn") as listener:
        s.dataplane = s.make()
        assert s.dataplane.attachment.reused and s.dataplane.attachment.repinned
        assert s.loop.call(s.dataplane.counters)["dataplane.serving"], "status says what the program does"
        send_raw(s, udp(b"kept"))
        assert outer_of(listener, b"kept").dst == COA, "the last daemon's maps, forwarding before any replay"
    assert s.dataplane.attachment.program_pin.exists()
    s.loop.call(s.dataplane.set_tunnels, a(HOME), (Tunnel(a(COA), a(HA), False),))
    s.serve(True)


def test_close_takes_the_program_off_and_unpins_it(s, tmp_path):
    other = EbpfDataplane("eth0", netns=s.net.ns("ha"), pin_root=s.pins, cache_dir=s.cache, tun="ha1")
    # The same interface: the filter is replaced, so this one takes the module's place until it closes.
    s.loop.call(other.start)
    s.loop.wait(other.ready())
    assert other.attachment.attached() and other.attachment.maps_dir.exists()
    s.loop.call(other.close)
    assert not other.attachment.attached()
    assert not other.attachment.pin_dir.exists()
    s.loop.call(s.dataplane.close)  # the module's was closed with it; start it again for the rest
    s.dataplane = s.make()
    s.serve(True)


def test_without_clang_the_backend_refuses_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BpfUnavailable) as caught:
        build(tmp_path / "cache")
    assert "clang" in str(caught.value) and "\n" not in str(caught.value)


def test_more_care_of_addresses_than_the_map_holds_go_to_the_slow_path(s):
    """Five simultaneous bindings (the map value holds four): the forwarder sends every copy."""
    extra = [Tunnel(a(f"10.99.0.{n}"), a(HA), False) for n in range(1, 4)]  # nobody there: lost copies
    s.set_tunnels(Tunnel(a(COA), a(HA), False), Tunnel(a(COA2), a(HA), False), *extra)
    before = s.fast()
    with ipip_listener(s, "mn") as one, ipip_listener(s, "mn2") as two:
        send_raw(s, udp(b"five"))
        assert outer_of(one, b"five").dst == COA
        assert outer_of(two, b"five").dst == COA2
    after = s.fast()
    assert after["pass_too_many"] == before["pass_too_many"] + 1
    assert after["encapsulated"] == before["encapsulated"]


def test_the_daemon_refuses_to_start_with_one_line_when_bpf_cannot_be_built(tmp_path, monkeypatch):
    import asyncio
    from collections import Counter

    from homeagent.config import Backend, DataplaneConfig
    from homeagent.runtime.forwarding import Forwarding, ForwardingError

    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # no object built before
    forwarding = Forwarding(DataplaneConfig(Backend.EBPF, "lo"), Counter())
    with pytest.raises(ForwardingError, match="clang") as caught:
        asyncio.run(forwarding.open())
    assert "\n" not in str(caught.value)


def test_a_narrower_path_to_the_care_of_address_is_learnt_by_both_paths(s):
    """The foreign link carries 1,400 bytes: the router's Fragmentation Needed about the first full-size
    outer datagram is learnt by the program (and by the forwarder, to which it passes on); from then on a
    datagram too big for that path goes to the forwarder, which tells the sender 1,380 with DF and carries
    it in outer fragments without. What fits still takes the fast path."""
    s.set_tunnels(Tunnel(a(COA), a(HA), False))
    for host, dev in (("rt", "f0"), ("mn", "eth0")):
        s.net.exec(host, "ip", "link", "set", dev, "mtu", "1400")
    try:
        before = s.fast()
        full = b"x" * (1480 - 28)
        with s.net.socket("cn", socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as icmp, \
                ipip_listener(s, "mn") as listener:
            send_raw(s, udp(full, flags="DF"))  # lost at the router, which tells the Home Agent
            wait_for("the path MTU", lambda: s.fast()["path_mtu_learnt"] == before["path_mtu_learnt"] + 1)
            wait_for("the forwarder's too", lambda: s.counters()["dataplane.path_mtu_learnt"] >= 1)
            send_raw(s, udp(full, flags="DF"))
            error = icmp_of(icmp, 3)
            assert error.src == HA and error[ICMP].code == 4 and error[ICMP].nexthopmtu == 1380
            send_raw(s, udp(b"fits" + b"y" * (1380 - 32), flags="DF"))
            assert outer_of(listener, b"fits" + b"y" * (1380 - 32)).len == 1400
        after = s.fast()
        assert after["pass_too_big"] == before["pass_too_big"] + 1
        assert after["encapsulated"] == before["encapsulated"] + 2  # the first full one, and what fits
    finally:
        for host, dev in (("rt", "f0"), ("mn", "eth0")):
            s.net.exec(host, "ip", "link", "set", dev, "mtu", "1500")


def test_the_program_answers_arp_for_a_home_address_while_serving(s):
    """The router learns the home address's MAC from the program (this test network has no proxy entry,
    so the kernel would not answer): while serving, not as a standby, never a probe (0.0.0.0)."""
    from scapy.layers.l2 import ARP, Ether

    s.set_tunnels(Tunnel(a(COA), a(HA), False))
    mac = s.net.exec("ha", "ip", "-o", "link", "show", "eth0").stdout.split("link/ether ")[1].split()[0]
    with s.net.socket("rt", socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806)) as arp:
        arp.bind(("h0", 0))
        arp.settimeout(0.5)
        rt_mac = arp.getsockname()[4].hex(":")

        def ask(sender: str) -> Any:
            request = Ether(dst="ff:ff:ff:ff:ff:ff", src=rt_mac) / ARP(op=1, hwsrc=rt_mac, psrc=sender, pdst=HOME)
            arp.send(raw(request))
            deadline = time.monotonic() + 0.5
            while time.monotonic() < deadline:
                try:
                    answer = Ether(arp.recv(2048))
                except TimeoutError:
                    return None
                if ARP in answer and answer[ARP].op == 2 and answer[ARP].psrc == HOME:
                    return answer
            return None

        answer = ask("10.1.0.254")
        assert answer is not None and answer[ARP].hwsrc == mac and answer[ARP].pdst == "10.1.0.254"
        assert answer[Ether].dst == rt_mac
        assert ask("0.0.0.0") is None, "a probe is not answered"
        s.serve(False)
        assert ask("10.1.0.254") is None, "a standby does not answer"
        s.serve(True)
        assert ask("10.1.0.254") is not None, "the takeover answers at once"
    # And the router, without its fixed entry, finds the home address by ARP and the datagram arrives.
    s.net.exec("rt", "ip", "neigh", "del", HOME, "dev", "h0")
    try:
        with ipip_listener(s, "mn") as listener:
            send_raw(s, udp(b"by arp"))
            assert outer_of(listener, b"by arp").dst == COA
    finally:
        s.net.exec("rt", "ip", "neigh", "replace", HOME, "lladdr", mac, "dev", "h0", "nud", "permanent")


def test_no_reply_waits_and_what_the_host_itself_sends_is_tunnelled(s):
    """barrier() is None: the maps have the change when set_tunnels returns, and what the program does not
    tunnel it hands to the TUN itself, route or not. The forwarder still routes the home address into its
    TUN, out of line: what the Home Agent's host itself sends to a home address never crosses the program
    (it leaves by the home link, where nobody answers its ARP), and reaches the mobile node only that way."""
    s.set_tunnels(Tunnel(a(COA), a(HA), False))  # without T: a route is not for the reverse path filter
    assert s.loop.call(s.dataplane.barrier) is None
    wait_for("the route", lambda: HOME in s.net.exec("ha", "ip", "route", "show", "dev", "ha0").stdout)
    assert s.counters()["dataplane.routes"] == 1
    with ipip_listener(s, "mn") as listener, s.net.socket("ha", socket.AF_INET, socket.SOCK_DGRAM) as own:
        own.sendto(b"from the host", (HOME, PORT))
        outer = outer_of(listener, b"from the host")
        assert (outer.src, outer.dst) == (HA, COA)
    with s.net.socket("cn", socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as icmp:
        send_raw(s, udp(b"ttl", ttl=2))
        assert icmp_of(icmp, 11).src == HA, "the forwarder's Time Exceeded"
        send_raw(s, udp(b"x" * (1500 - 28), flags="DF"))
        error = icmp_of(icmp, 3)
        assert error[ICMP].code == 4 and error[ICMP].nexthopmtu == 1480
    with ipip_listener(s, "mn") as listener:
        big = b"z" * (1500 - 28)
        send_raw(s, udp(big))  # without DF: the forwarder sends it in outer fragments
        assert outer_of(listener, big).dst == COA


def test_a_killed_forwarder_leaves_the_fast_path_on_and_its_new_tun_is_followed(s):
    """The forwarder (the slow path) dies: the program goes on tunnelling; its successor's TUN device is a
    new one, whose index the program is given, so reverse tunnels are handed to it again."""
    import signal

    s.set_tunnels(Tunnel(a(COA), a(HA), True))
    old_pid = s.dataplane.pid
    old_index = s.loop.call(lambda: s.dataplane._tun_index)
    assert old_pid is not None
    os.kill(old_pid, signal.SIGKILL)
    with ipip_listener(s, "mn") as listener:
        send_raw(s, udp(b"no forwarder"))
        assert outer_of(listener, b"no forwarder").dst == COA
    wait_for("a new forwarder", lambda: s.dataplane.pid not in (None, old_pid))
    wait_for("its TUN followed", lambda: s.loop.call(lambda: s.dataplane._tun_index) not in (0, old_index))
    with s.net.socket("cn", socket.AF_INET, socket.SOCK_DGRAM) as cn:
        cn.bind((CN, 0))
        cn.settimeout(2)
        inner = IP(src=HOME, dst=CN) / UDP(sport=PORT, dport=cn.getsockname()[1]) / Raw(b"back")
        # The home address is routed into the TUN again (a strict reverse path filter wants it)
        wait_for("the table replayed", lambda: s.counters()["dataplane.routes"] == 1)
        send_raw(s, IP(src=COA, dst=HA, proto=4) / inner, host="mn")
        assert cn.recvfrom(2048)[0] == b"back"


def test_an_extra_interface_decapsulates_reverse_tunnels_and_answers_no_arp(s):
    """A second link between the Home Agent and the router (10.7.0.0/24) and a tunnel from the Home
    Agent's address on it: the reverse tunnel arrives there, and the program attached there too
    (``extra_interfaces``) strips it; ARP for the home address is answered on the home link only."""
    from scapy.layers.l2 import ARP, Ether

    from netns.tunnel_net import veth

    veth(s.net.ns("ha"), "e1", "10.7.0.1", s.net.ns("rt"), "x1", "10.7.0.254")
    s.loop.call(s.dataplane.close)
    s.dataplane = EbpfDataplane("eth0", tun="ha0", ttl=TTL, netns=s.net.ns("ha"), pin_root=s.pins,
                                cache_dir=s.cache, extra_interfaces=["e1"])
    try:
        s.loop.call(s.dataplane.start)
        s.loop.wait(s.dataplane.ready())
        s.serve(True)
        s.set_tunnels(Tunnel(a(COA), a("10.7.0.1"), True))
        before = s.fast()
        with s.net.socket("cn", socket.AF_INET, socket.SOCK_DGRAM) as cn:
            cn.bind((CN, 0))
            cn.settimeout(2)
            inner = IP(src=HOME, dst=CN) / UDP(sport=PORT, dport=cn.getsockname()[1]) / Raw(b"via e1")
            send_raw(s, IP(src=COA, dst="10.7.0.1", proto=4) / inner, host="mn")
            assert cn.recvfrom(2048)[0] == b"via e1"
        assert s.fast()["decapsulated"] == before["decapsulated"] + 1, "stripped by the program on e1"
        with s.net.socket("rt", socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806)) as arp:
            arp.bind(("x1", 0))
            arp.settimeout(0.5)
            mac = arp.getsockname()[4].hex(":")
            arp.send(raw(Ether(dst="ff:ff:ff:ff:ff:ff", src=mac) / ARP(op=1, hwsrc=mac, psrc="10.7.0.254",
                                                                       pdst=HOME)))
            with pytest.raises(TimeoutError):
                while True:
                    answer = Ether(arp.recv(2048))
                    assert not (ARP in answer and answer[ARP].op == 2 and answer[ARP].psrc == HOME)
        assert s.fast()["arp_answered"] == before["arp_answered"]
    finally:
        s.loop.call(s.dataplane.close)
        s.net.exec("ha", "ip", "link", "del", "e1", check=False)
        s.dataplane = s.make()
        s.serve(True)


def test_cleanup_takes_off_what_a_killed_daemon_left_and_refuses_under_a_live_one(s, tmp_path):
    """``homeagent cleanup``'s ebpf part (runtime.cleanup.clean_ebpf): after a daemon killed without a clean
    stop (abandon), the filter and the pins it left go, as a clean stop takes them; the program then
    tunnels nothing. Nothing is touched while a daemon answers on the control socket."""
    import socket as sockets

    from homeagent.config import load
    from homeagent.runtime.cleanup import CleanupError, clean_ebpf

    state = tmp_path / "state"
    state.mkdir()
    config_file = tmp_path / "homeagent.toml"
    config_file.write_text(f"""
[home_agent]
address = "{HA}"
home_network = "10.1.0.0/24"
state_dir = "{state}"

[[security_association]]
home_addresses = "10.1.0.0/24"
spi = 256
key = "00112233445566778899aabbccddeeff"

[dataplane]
backend = "ebpf"
interface = "eth0"
""")
    config = load(config_file)
    tc_prefix = ["nsenter", f"--net=/run/netns/{s.net.ns('ha')}"]
    s.set_tunnels(Tunnel(a(COA), a(HA), False))
    attachment = s.dataplane.attachment
    s.loop.call(s.dataplane.abandon)
    try:
        assert attachment.attached() and attachment.pin_dir.exists(), "left as a restart wants it"
        with sockets.socket(sockets.AF_UNIX, sockets.SOCK_STREAM) as live:  # a daemon answers: hands off
            live.bind(str(config.control_socket))
            live.listen()
            with pytest.raises(CleanupError, match="a daemon answers"):
                clean_ebpf(config, pin_root=s.pins, tc_prefix=tc_prefix)
        assert attachment.attached()
        config.control_socket.unlink()
        removed = clean_ebpf(config, pin_root=s.pins, tc_prefix=tc_prefix)
        assert removed == ["removed the ebpf program from eth0's ingress",
                           f"removed the ebpf pins under {attachment.pin_dir}"]
        assert not attachment.attached() and not attachment.pin_dir.exists()
        with ipip_listener(s, "mn") as listener:
            send_raw(s, udp(b"after cleanup"))
            with pytest.raises(AssertionError):
                outer_of(listener, b"after cleanup", timeout=0.5)
        assert clean_ebpf(config, pin_root=s.pins, tc_prefix=tc_prefix) == [], "nothing left the second time"
    finally:
        s.dataplane = s.make()  # the rest of the module's tests
        s.serve(True)


@pytest.mark.parametrize("batches", [True, False], ids=["batch", "one-by-one"])
def test_a_batch_of_map_writes_goes_in_and_says_which_elements_were_refused(s, batches):
    """``Map.update_batch`` and ``delete_batch`` against the kernel (BPF_MAP_*_BATCH, and the one call an
    element fallback of kernels before 5.6): a full map refuses what does not fit, by index and errno, and
    writes the rest; a key not there is not deleted, and the others are."""
    pin = s.pins / "batch_test"
    run("bpftool", "map", "create", str(pin), "type", "hash", "key", "4", "value", "8", "entries", "4",
        "name", "batch_test", "flags", "1")
    bpf_map = Map.open(pin)
    try:
        bpf_map._batches = batches
        keys = [struct.pack("!I", n) for n in range(6)]
        values = [struct.pack("=Q", n * 11) for n in range(6)]
        refused = bpf_map.update_batch(b"".join(keys), b"".join(values))
        assert [(n, errno.E2BIG) for n in (4, 5)] == refused
        assert sorted(bpf_map.keys()) == keys[:4] and bpf_map.lookup(keys[3]) == values[3]
        assert bpf_map.delete_batch(keys[2] + keys[5] + keys[0]) == [(1, errno.ENOENT)]
        assert sorted(bpf_map.keys()) == [keys[1], keys[3]]
    finally:
        bpf_map.close()
        pin.unlink()


def test_a_removed_binding_is_emptied_in_place_and_its_key_goes_a_grace_later(s):
    """No value is freed under a packet (docs/dataplane.md, "No value is replaced or freed under a packet"):
    a removal writes an empty value over the old one, which the program takes for no binding, and its key
    is deleted only by a commit ``GRACE`` later. Every write is one BPF_MAP_UPDATE_BATCH with BPF_F_LOCK,
    which the kernel takes (batching stays on)."""
    fast = s.dataplane.fast
    key = IPv4Address(HOME).packed
    s.set_tunnels(Tunnel(a(COA), a(HA), False))
    with ipip_listener(s, "mn") as listener:
        send_raw(s, udp(b"away"))
        assert outer_of(listener, b"away").dst == COA
    s.set_tunnels()  # de-registered
    value = s.loop.call(fast.homes.lookup, key)
    assert value is not None and value[4:8] == key and struct.unpack_from("=I", value, 8) == (0,), "emptied"
    before = s.loop.call(fast.reasons)["encapsulated"]
    with ipip_listener(s, "mn") as listener:
        send_raw(s, udp(b"home again"))
        with pytest.raises(AssertionError):
            outer_of(listener, b"home again", timeout=0.5)
    assert s.loop.call(fast.reasons)["encapsulated"] == before, "an empty value tunnels nothing"
    assert fast.homes._batches, "the kernel took every batch: BPF_F_LOCK is a batch's element flag"
    s.loop.call(fast._delete_emptied, time.monotonic())  # as a commit GRACE later does: its key goes
    assert s.loop.call(fast.homes.lookup, key) is None


def test_a_datagram_longer_than_the_link_mtu_reaches_the_slow_path_whole(s):
    """A jumbo frame (a link whose MTU is larger than the tunnels', 9000 here) too big to tunnel is handed
    to the forwarder whole: with DF, Fragmentation Needed with the tunnel's MTU goes back (RFC 1191); without,
    it is carried in outer fragments, every byte of it. It was read cut to the link's MTU before."""
    links = (("cn", "eth0"), ("rt", "c0"), ("rt", "h0"), ("ha", "eth0"))
    s.set_tunnels(Tunnel(a(COA), a(HA), False))
    try:
        for host, device in links:
            s.net.exec(host, "ip", "link", "set", device, "mtu", "9000")
        big = b"j" * 3000
        with s.net.socket("cn", socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as icmp:
            send_raw(s, udp(big, flags="DF"))
            error = icmp_of(icmp, 3)
            assert error[ICMP].code == 4 and error[ICMP].nexthopmtu == 1480
        with ipip_listener(s, "mn") as listener:
            send_raw(s, udp(big))
            assert outer_of(listener, big).dst == COA
    finally:
        for host, device in links:
            s.net.exec(host, "ip", "link", "set", device, "mtu", "1500")


@pytest.mark.parametrize("fields", [{"chksum": 0x1234}, {"len": 200}, {"ihl": 4}],
                         ids=["bad-checksum", "longer-than-the-frame", "short-header"])
def test_a_datagram_with_a_bad_header_is_not_tunnelled(s, fields):
    """The program runs before the kernel checks an IP header: it leaves one that is no datagram's to the
    kernel, which drops it (RFC 1812 5.2.2), rather than tunnel it to the mobile node."""
    from scapy.layers.l2 import Ether

    s.set_tunnels(Tunnel(a(COA), a(HA), False))
    before = s.fast()
    mac = {host: s.net.exec(host, "cat", f"/sys/class/net/{dev}/address").stdout.strip()
           for host, dev in (("ha", "eth0"), ("rt", "h0"))}
    frame = Ether(dst=mac["ha"], src=mac["rt"]) / udp(b"bad header", **fields)  # the kernel would mend a raw IP
    with ipip_listener(s, "mn") as listener:  # socket's checksum and length: the frame is sent whole
        with s.net.socket("rt", socket.AF_PACKET, socket.SOCK_RAW) as sock:
            sock.bind(("h0", 0))
            sock.send(raw(frame))
        with pytest.raises(AssertionError):
            outer_of(listener, b"bad header", timeout=0.5)
        send_raw(s, udp(b"good header"))
        assert outer_of(listener, b"good header").dst == COA
    after = s.fast()
    assert after["pass_bad_header"] == before["pass_bad_header"] + 1
    assert after["encapsulated"] == before["encapsulated"] + 1


def test_a_datagram_with_options_goes_by_the_kernel_which_checks_its_header(s):
    """IP options: the program leaves the datagram to the kernel, which checks the header (a bad checksum is
    dropped there) and routes it into the forwarder's TUN, which tunnels it."""
    from scapy.layers.inet import IPOption
    from scapy.layers.l2 import Ether

    s.set_tunnels(Tunnel(a(COA), a(HA), False))
    wait_for("the forwarder's route", lambda: HOME in s.net.exec("ha", "ip", "route", "show", HOME).stdout)
    before = s.fast()
    options = [IPOption(b"\x01\x01\x01\x00")]  # NOP, NOP, NOP, end of options
    mac = {host: s.net.exec(host, "cat", f"/sys/class/net/{dev}/address").stdout.strip()
           for host, dev in (("ha", "eth0"), ("rt", "h0"))}
    with ipip_listener(s, "mn") as listener:
        with s.net.socket("rt", socket.AF_PACKET, socket.SOCK_RAW) as sock:
            sock.bind(("h0", 0))
            sock.send(raw(Ether(dst=mac["ha"], src=mac["rt"]) / udp(b"bad options", options=options, chksum=0x1234)))
        with pytest.raises(AssertionError):
            outer_of(listener, b"bad options", timeout=0.5)
        send_raw(s, udp(b"options", options=options))
        assert IP(raw(outer_of(listener, b"options").payload)).ihl == 6, "carried with its options"
    assert s.fast()["pass_options"] == before["pass_options"] + 2
