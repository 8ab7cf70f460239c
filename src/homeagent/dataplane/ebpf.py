"""Backend "ebpf": the userspace backend with a tc-BPF fast path in front of it (docs/dataplane.md,
"Backend ebpf").

Why a composition rather than a second forwarder: the home link must still deliver a home address's
frames to this host, and the kernel answers a proxy ARP entry only for an address it routes out of
another device (``arp_process``); the userspace backend's /32 routes into its TUN device give exactly
that. Those routes also make the userspace forwarder the slow path for free: whatever the BPF program
cannot do (ICMP Time Exceeded and Fragmentation Needed, outer fragments, neighbour resolution, IP
options, more care-of addresses than a map value holds) it lets through, and the kernel routes it into
the TUN as with the "userspace" backend. So this backend wraps a ``UserspaceDataplane`` and adds the
program's maps, written synchronously through bpf(2) on every change: the fast path has a change before
``set_tunnels`` returns, hence before the registration reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import sys
from collections import Counter
from collections.abc import Iterable
from ipaddress import IPv4Address
from pathlib import Path

from homeagent.dataplane import Tunnel
from homeagent.dataplane.bpf_maps import Map
from homeagent.dataplane.bpf_program import MAPS, PIN_ROOT, Attachment, BpfUnavailable, build
from homeagent.dataplane.userspace import UserspaceDataplane
from homeagent.wire.ip import DEFAULT_TTL

log = logging.getLogger("homeagent.dataplane")

MAX_TUNNELS = 4  # bpf/ha_ingress.c MAX_TUNNELS: care-of addresses of one home address in the fast path
TOO_MANY = 0xFFFFFFFF
FLAG_REVERSE = 1
# bpf/ha_ingress.c enum reason, in order
REASONS = ("encapsulated", "decapsulated", "pass_not_serving", "pass_ttl", "pass_options", "pass_too_big",
           "pass_too_many", "pass_no_neighbour", "pass_failed", "pass_fragment", "drop_unknown_care_of",
           "drop_not_reverse_tunnel", "bytes_encapsulated", "bytes_decapsulated")
DETAIL_LIMIT = 4096  # as the userspace backend: tunnels listed with their counters up to this many homes

_CONFIG = struct.Struct("=IIII")  # serving, tun_ifindex, mtu, ttl
_TUNNEL = struct.Struct("=4s4sI")  # care-of, source (network order), flags
_STATS = struct.Struct("=QQQQ")  # packets, bytes, reverse packets, reverse bytes
_ZERO_TUNNEL = _TUNNEL.pack(bytes(4), bytes(4), 0)


def _address(value: int) -> bytes:
    return value.to_bytes(4, "big")


def home_value(tunnels: tuple[Tunnel, ...]) -> bytes:
    """The ``struct home`` of ha_homes for these tunnels (more than MAX_TUNNELS: all to the slow path)."""
    if len(tunnels) > MAX_TUNNELS:
        return struct.pack("=I", TOO_MANY) + _ZERO_TUNNEL * MAX_TUNNELS
    packed = [_TUNNEL.pack(_address(t.care_of_address), _address(t.source), FLAG_REVERSE if t.reverse else 0)
              for t in tunnels]
    return struct.pack("=I", len(tunnels)) + b"".join(packed) + _ZERO_TUNNEL * (MAX_TUNNELS - len(tunnels))


class _Counted:
    """A map of keys with reference counts kept here: the map holds a key while its count is above 0."""

    def __init__(self, bpf_map: Map) -> None:
        self.map = bpf_map
        self.counts: Counter[int] = Counter()

    def add(self, key: int) -> None:
        self.counts[key] += 1
        if self.counts[key] == 1:
            self.map.update(_address(key), struct.pack("=I", 1))

    def remove(self, key: int) -> None:
        self.counts[key] -= 1
        if self.counts[key] <= 0:
            del self.counts[key]
            self.map.delete(_address(key))


class EbpfDataplane:
    """A ``Dataplane``: the tc-BPF fast path on ``interface``'s ingress, the userspace forwarder behind it."""

    def __init__(self, interface: str, tun: str = "ha0", mtu: int = 1500, ttl: int = DEFAULT_TTL,
                 netns: str | None = None, pin_root: Path = PIN_ROOT, cache_dir: Path | None = None,
                 python: str = sys.executable) -> None:
        """``netns``: the network namespace ``interface`` and the forwarder are in, where it is not this
        process's (the tests); ``pin_root``: a bpf file system; ``cache_dir``: where the built object is
        kept (default ``~/.cache/homeagent/bpf``)."""
        prefix = ["ip", "netns", "exec", netns] if netns else []
        self.slow = UserspaceDataplane(tun, mtu, ttl, argv_prefix=prefix, python=python)
        self.interface = interface
        self.mtu = mtu
        self.ttl = ttl
        self.attachment = Attachment(interface, pin_root, ["nsenter", f"--net=/run/netns/{netns}"] if netns else [])
        self._cache_dir = cache_dir
        self._maps: dict[str, Map] = {}
        self._table: dict[int, tuple[Tunnel, ...]] = {}
        self._care_of: _Counted | None = None
        self._sources: _Counted | None = None
        self._serving = False
        self._tun_index = 0
        self._stale: set[int] = set()  # home addresses a previous daemon left in the maps (a restart)
        self._watch: asyncio.Task[None] | None = None
        self._closed = False

    # -- the Dataplane interface ----------------------------------------------------------------------

    def start(self) -> None:
        """Build (or take from the cache), load, pin and attach the program, then start the userspace
        forwarder; call on the running loop. Raises ``BpfUnavailable`` with the reason."""
        obj = build(self._cache_dir)
        self.attachment.attach(obj)
        try:
            self._maps = {name: Map.open(self.attachment.maps_dir / name) for name in MAPS}
        except OSError as exc:
            raise BpfUnavailable(f"the ebpf backend cannot open its maps: {exc}") from None
        self._care_of = _Counted(self._maps["ha_care_of"])
        self._sources = _Counted(self._maps["ha_sources"])
        if self.attachment.reused:
            # A restart: the maps forward as the last daemon left them until the table is replayed; what
            # the replay does not set again is removed at the first serve().
            self._stale = {int.from_bytes(key, "big") for key in self._maps["ha_homes"].keys()}
            serving = self._config()[0]
            self._serving = bool(serving)
            for name in ("ha_reverse", "ha_care_of", "ha_sources"):
                for key in list(self._maps[name].keys()):
                    self._maps[name].delete(key)
            log.info("ebpf: took over the pinned maps of %s (%d home addresses, %s)", self.interface,
                     len(self._stale), "serving" if serving else "not serving")
            for home in self._stale:  # their reverse tunnels and references, as the maps have them
                value = self._maps["ha_homes"].lookup(_address(home))
                if value is not None:
                    self._account(home, (), _tunnels_of(value), drop_stats=False)
        self._write_config()
        self.slow.start()
        self._watch = asyncio.get_running_loop().create_task(self._follow_tun())

    async def ready(self, timeout: float = 10.0) -> dict[str, object]:
        info = await self.slow.ready(timeout)
        self._set_tun(info)
        return info

    def set_tunnels(self, home_address: int, tunnels: tuple[Tunnel, ...]) -> None:
        self.slow.set_tunnels(home_address, tunnels)
        old = self._table.get(home_address, ())
        new = tuple(tunnels)
        if new:
            self._table[home_address] = new
        else:
            self._table.pop(home_address, None)
        if home_address in self._stale:
            self._stale.discard(home_address)
            value = self._maps["ha_homes"].lookup(_address(home_address))
            old = _tunnels_of(value) if value is not None else ()
        homes = self._maps["ha_homes"]
        if new:
            homes.update(_address(home_address), home_value(new))
        else:
            homes.delete(_address(home_address))
        self._account(home_address, old, new)

    def serve(self, serving: bool) -> None:
        self._serving = serving
        self._write_config()  # the takeover (or stand-down) of the fast path: one map write
        self.slow.serve(serving)
        if self._stale:
            for home in list(self._stale):
                self.set_tunnels(home, ())
            self._stale.clear()

    def barrier(self) -> asyncio.Future[None] | None:
        """The maps have every change already; the routes into the TUN (the slow path, and what makes the
        kernel answer proxy ARP) are the userspace forwarder's, so its barrier is ours."""
        barrier = getattr(self.slow, "barrier", None)
        return barrier() if barrier is not None else None

    def counters(self) -> dict[str, object]:
        return self._merged(self.slow.counters())

    async def fetch_counters(self, timeout: float = 2.0, tunnels: bool = True) -> dict[str, object]:
        return self._merged(await self.slow.fetch_counters(timeout, tunnels))

    @property
    def pid(self) -> int | None:
        return self.slow.pid

    def close(self) -> None:
        """Stop: the filter off the interface and the pins unlinked, then the userspace forwarder."""
        self._closed = True
        if self._watch is not None:
            self._watch.cancel()
        if self._maps:
            with contextlib.suppress(OSError, BpfUnavailable):
                self.attachment.detach()
        for bpf_map in self._maps.values():
            bpf_map.close()
        self._maps.clear()
        self.slow.close()

    def abandon(self) -> None:
        """Let go without a clean stop, as a daemon killed with SIGKILL would: the program stays attached
        and pinned, and forwards with the maps as they are (tests, and ``homeagent run`` on exec)."""
        self._closed = True
        if self._watch is not None:
            self._watch.cancel()
        for bpf_map in self._maps.values():
            bpf_map.close()
        self._maps.clear()
        self.slow.close()

    # -- the maps -------------------------------------------------------------------------------------

    def _config(self) -> tuple[int, int, int, int]:
        value = self._maps["ha_config"].lookup(bytes(4))
        return _CONFIG.unpack(value) if value is not None else (0, 0, 0, 0)

    def _write_config(self) -> None:
        if self._maps:
            self._maps["ha_config"].update(bytes(4), _CONFIG.pack(int(self._serving), self._tun_index, self.mtu,
                                                                   self.ttl))

    def _set_tun(self, info: dict[str, object]) -> None:
        index = info.get("index")
        if isinstance(index, int) and index != self._tun_index:
            self._tun_index = index
            self._write_config()

    async def _follow_tun(self) -> None:
        """The decapsulated datagrams enter the stack through the TUN device, which is the forwarder's and
        is made anew when a forwarder is restarted: follow its index."""
        while not self._closed:
            try:
                info = await self.slow.ready(timeout=30)
            except (TimeoutError, asyncio.TimeoutError, RuntimeError):
                continue
            except asyncio.CancelledError:
                if self._closed:
                    return
                await asyncio.sleep(0.1)
                continue
            self._set_tun(info)
            pid = self.slow.pid
            while not self._closed and self.slow.pid == pid and pid is not None:
                await asyncio.sleep(0.2)
            if self.slow.pid is None:
                await asyncio.sleep(0.05)

    def _account(self, home: int, old: Iterable[Tunnel], new: Iterable[Tunnel], drop_stats: bool = True) -> None:
        """The reverse-tunnel keys, reference counts and per-tunnel counters from ``old`` to ``new``."""
        assert self._care_of is not None and self._sources is not None
        old, new = tuple(old), tuple(new)
        reverse = self._maps["ha_reverse"]
        kept = {t.care_of_address for t in new}
        for tunnel in old:
            if tunnel in new:
                continue
            if tunnel.reverse:
                reverse.delete(_address(tunnel.care_of_address) + _address(tunnel.source) + _address(home))
            self._care_of.remove(tunnel.care_of_address)
            self._sources.remove(tunnel.source)
            if drop_stats and tunnel.care_of_address not in kept:
                self._maps["ha_stats"].delete(_address(home) + _address(tunnel.care_of_address))
        for tunnel in new:
            if tunnel in old:
                continue
            if tunnel.reverse:
                reverse.update(_address(tunnel.care_of_address) + _address(tunnel.source) + _address(home),
                               struct.pack("=I", 1))
            self._care_of.add(tunnel.care_of_address)
            self._sources.add(tunnel.source)

    def fast_counters(self) -> dict[str, int]:
        """The program's counters by reason, summed over the CPUs."""
        reasons = self._maps.get("ha_reasons")
        if reasons is None:
            return {}
        return {name: reasons.per_cpu_sum(struct.pack("=I", n)) for n, name in enumerate(REASONS)}

    def _tunnel_stats(self, home: int, care_of: int) -> tuple[int, int, int, int]:
        value = self._maps["ha_stats"].lookup(_address(home) + _address(care_of))
        return _STATS.unpack(value) if value is not None else (0, 0, 0, 0)

    def _merged(self, slow: dict[str, object]) -> dict[str, object]:
        """The userspace backend's counters with the fast path's added in: the same keys mean the same
        things (packets, bytes, drops), whichever path carried the packet."""
        out = dict(slow)
        out["dataplane.backend"] = "ebpf"
        out["dataplane.interface"] = self.interface
        out["dataplane.attached"] = bool(self._maps)
        if not self._maps:
            return out
        fast = self.fast_counters()
        out["dataplane.fast"] = fast
        for key, more in (("packets", fast["encapsulated"]), ("bytes", fast["bytes_encapsulated"]),
                          ("reverse_packets", fast["decapsulated"]), ("reverse_bytes", fast["bytes_decapsulated"])):
            value = out.get(f"dataplane.{key}", 0)
            out[f"dataplane.{key}"] = (value if isinstance(value, int) else 0) + more
        drops = dict(out.get("dataplane.drops") or {})  # type: ignore[call-overload]
        for reason in ("unknown_care_of", "not_reverse_tunnel"):
            if fast[f"drop_{reason}"]:
                drops[reason] = drops.get(reason, 0) + fast[f"drop_{reason}"]
        out["dataplane.drops"] = drops
        tunnels = out.get("dataplane.tunnels")
        if isinstance(tunnels, list) and len(self._table) <= DETAIL_LIMIT:
            merged = []
            for entry in tunnels:
                entry = dict(entry)
                home = int(IPv4Address(entry["home_address"]))
                care_of = int(IPv4Address(entry["care_of_address"]))
                packets, nbytes, rpackets, rbytes = self._tunnel_stats(home, care_of)
                entry["packets"] = entry.get("packets", 0) + packets
                entry["bytes"] = entry.get("bytes", 0) + nbytes
                entry["reverse_packets"] = entry.get("reverse_packets", 0) + rpackets
                entry["reverse_bytes"] = entry.get("reverse_bytes", 0) + rbytes
                merged.append(entry)
            out["dataplane.tunnels"] = merged
        return out


def _tunnels_of(value: bytes) -> tuple[Tunnel, ...]:
    """The tunnels a ``struct home`` holds (TOO_MANY: none known here)."""
    (count,) = struct.unpack_from("=I", value)
    if count == TOO_MANY or count > MAX_TUNNELS:
        return ()
    out = []
    for n in range(count):
        care_of, source, flags = _TUNNEL.unpack_from(value, 4 + n * _TUNNEL.size)
        out.append(Tunnel(int.from_bytes(care_of, "big"), int.from_bytes(source, "big"), bool(flags & FLAG_REVERSE)))
    return tuple(out)


__all__ = ["BpfUnavailable", "EbpfDataplane"]
