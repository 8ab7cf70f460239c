"""Backend "ebpf": the userspace backend with a tc-BPF fast path in front of it (docs/dataplane.md,
"Backend ebpf").

Why a composition rather than a second forwarder: the userspace forwarder already does everything a
Home Agent's data plane must, only slowly, so it is the slow path. Whatever the BPF program cannot do
(ICMP Time Exceeded and Fragmentation Needed, outer fragments, neighbour resolution, IP options, more
care-of addresses than a map value holds) it hands to the forwarder's TUN device or raw socket, as the
"userspace" backend's kernel routes would. The program also answers ARP for the home addresses, which the
kernel does for a proxy entry only once the route into the TUN is in: so nothing waits for a route. This
backend wraps a ``UserspaceDataplane`` and adds the program's maps, written through bpf(2) from the
registration loop: the values of a loop turn's changes in one call at ``commit``, which the runtime makes
before it sends that turn's registration replies.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import struct
import sys
import time
from collections import deque
from collections.abc import Mapping, Sequence
from ipaddress import IPv4Address
from pathlib import Path

from homeagent.dataplane import Tunnel
from homeagent.dataplane.bpf_maps import ENOENT, LOCK, Map
from homeagent.dataplane.bpf_program import MAPS, PIN_ROOT, Attachment, BpfUnavailable, build
from homeagent.dataplane.userspace import UserspaceDataplane
from homeagent.wire.ip import DEFAULT_TTL

log = logging.getLogger("homeagent.dataplane")

MAX_DATAGRAM = 65535  # the longest IPv4 datagram: what the slow path reads from its TUN
MAX_TUNNELS = 4  # bpf/ha_ingress.c MAX_TUNNELS: care-of addresses of one home address in the fast path
TOO_MANY = 0xFFFFFFFF
FLAG_REVERSE = 1
# bpf/ha_ingress.c enum reason, in order
REASONS = ("encapsulated", "decapsulated", "pass_not_serving", "pass_ttl", "pass_options", "pass_too_big",
           "pass_too_many", "pass_no_neighbour", "pass_failed", "pass_fragment", "drop_unknown_care_of",
           "drop_not_reverse_tunnel", "path_mtu_learnt", "arp_answered", "pass_bad_header")
DETAIL_LIMIT = 4096  # as the userspace backend: tunnels listed with their counters up to this many homes
# The forwarder behind the program is the slow path only (the kernel carries the traffic), and nothing
# waits for its copy of the table: on a busy host it takes what CPU the registrations leave, at the least
# weight the scheduler gives a niceness (19: 15 against the daemon's 1024), where the userspace backend,
# whose forwarder carries every packet, keeps forwarder.NICE. Measured (bench/registrations_backends.py,
# 20,000 first registrations, 2 CPUs shared with the load's client): 0.54 of no data plane at niceness
# 10, 0.66 at 19. Not SCHED_IDLE (0.66 too): a task of that class may wait indefinitely on a busy host,
# and the slow path carries ICMP "fragmentation needed" that a path's senders wait for.
SLOW_PATH_NICE = 19

# serving, tun_ifindex, mtu, ttl, home_ifindex, the MAC, the virtual MAC, until when it is ours (ns, monotonic)
_CONFIG = struct.Struct("=IIIII6s6sQ")
VIRTUAL_MAC_LEASE = 1.0  # seconds the program gives the virtual MAC for after the daemon's last renewal, at least
_TUNNEL = struct.Struct("=4s4sI")  # care-of, source (network order), flags
_STATS = struct.Struct("=QQQQ")  # packets, bytes, reverse packets, reverse bytes
_LOCK_SIZE = 4  # a struct home begins with its bpf_spin_lock, which the kernel keeps (written with LOCK)
GRACE = 1.0  # seconds an emptied value stays before its key is deleted: longer than a packet holds a pointer
_ONE = struct.pack("=I", 1)
# Packers made once: a new binding's map upkeep is on the registration path.
_address = struct.Struct("!I").pack
_pair = struct.Struct("!II").pack  # (home, care-of): ha_stats's key; (care-of, source): a tunnel's addresses
_triple = struct.Struct("!III").pack  # (care-of, source, home): ha_reverse's key


def _native(n: int) -> int:
    """The number whose network-order bytes are ``n`` in this machine's order: a ``struct home``'s count
    and flags (host order) packed by one network-order ``Struct`` with its addresses."""
    return int.from_bytes(struct.pack("=I", n), "big")


# A struct home of n tunnels, one pack: the lock, the home address, count, n times (care-of, source, flags),
# zeros for the rest.
_HOMES = [struct.Struct(f"!{_LOCK_SIZE}xII{'III' * n}{_TUNNEL.size * (MAX_TUNNELS - n)}x")
          for n in range(MAX_TUNNELS + 1)]
_COUNT_AT = _LOCK_SIZE + 4  # where a struct home's count is
_COUNTS = [_native(n) for n in range(MAX_TUNNELS + 1)]
_FLAGS = (_native(0), _native(FLAG_REVERSE))
_TOO_MANY = _native(TOO_MANY)


def home_value(home: int, tunnels: tuple[Tunnel, ...]) -> bytes:
    """The ``struct home`` of ha_homes for ``home``'s tunnels (none: the binding is gone; more than
    MAX_TUNNELS: all to the slow path). The home address in it is the program's check that the element it
    read is still this home address's (bpf/ha_ingress.c, above ha_homes)."""
    count = len(tunnels)
    if count == 1:  # the usual binding: ~0.1 us, half the cost of joining its parts
        care_of, source, reverse = tunnels[0]
        return _HOMES[1].pack(home, _COUNTS[1], care_of, source, _FLAGS[reverse])
    if count > MAX_TUNNELS:
        return _HOMES[0].pack(home, _TOO_MANY)
    fields = [home, _COUNTS[count]]
    for care_of, source, reverse in tunnels:
        fields += (care_of, source, _FLAGS[reverse])
    return _HOMES[count].pack(*fields)


class _Keys:
    """The keys the values refer to (care-of addresses, tunnel sources, reverse tunnels) and the tunnels'
    counters, changed till the next commit: each map's wanted keys are written there in one call before
    the values, the unwanted deleted after them (until then the program may still tunnel by an old value,
    and find its keys and counters). A key unwanted and wanted again before the commit is only written;
    wanted and unwanted again, only deleted (ENOENT is no failure)."""

    def __init__(self) -> None:
        self.wanted: dict[Map, dict[bytes, None]] = {}
        self.unwanted: dict[Map, dict[bytes, None]] = {}

    def want(self, bpf_map: Map, key: bytes) -> None:
        self.keep(bpf_map, key)
        wanted = self.wanted.get(bpf_map)
        if wanted is None:
            wanted = self.wanted[bpf_map] = {}
        wanted[key] = None

    def keep(self, bpf_map: Map, key: bytes) -> None:
        """Not to be deleted after all (a tunnel's counters, which the program makes: never written here)."""
        unwanted = self.unwanted.get(bpf_map)
        if unwanted:
            unwanted.pop(key, None)

    def unwant(self, bpf_map: Map, key: bytes) -> None:
        wanted = self.wanted.get(bpf_map)
        if wanted:
            wanted.pop(key, None)
        unwanted = self.unwanted.get(bpf_map)
        if unwanted is None:
            unwanted = self.unwanted[bpf_map] = {}
        unwanted[key] = None


class _Counted:
    """A map of keys with reference counts kept here: the map holds a key while its count is above 0."""

    def __init__(self, bpf_map: Map, keys: _Keys) -> None:
        self.map = bpf_map
        self.counts: dict[int, int] = {}
        self._keys = keys

    def add(self, key: int) -> None:
        count = self.counts.get(key, 0)
        self.counts[key] = count + 1
        if not count:
            self._keys.want(self.map, _address(key))

    def remove(self, key: int) -> None:
        count = self.counts.get(key, 0) - 1
        if count > 0:
            self.counts[key] = count
            return
        self.counts.pop(key, None)
        self._keys.unwant(self.map, _address(key))


class FastPath:
    """The program's maps, kept equal to a tunnel table: one job, so that it can be timed and tested on
    its own (bench/dataplane.py loads 100,000 bindings through it).

    Every change is gathered and written by ``commit``, a few system calls for a whole loop turn: the
    keys the values refer to (``BPF_MAP_UPDATE_BATCH``, a map at a time), then the home addresses' values,
    the write every new binding makes (one ``BPF_MAP_UPDATE_BATCH``), then the removals: ~0.8 us a value
    in a batch where one call each cost ~1.7 us, on the registration path; and a new care-of address's
    key no longer a call of its own. The runtime commits before it sends the replies of the loop turn
    that made the changes (docs/dataplane.md, "A reply means forwarding").

    A value the program may be reading is never replaced or freed (bpf/ha_ingress.c, above ha_homes):
    every value is written in place under its lock (``LOCK``), a removal as an empty value (count 0, which
    the program takes for no binding), and the key of an emptied value is deleted by a commit at least
    ``GRACE`` later, unless it was set again meanwhile. Each value names its home address, which the
    program checks: an element freed and handed to another home address under a packet is not read as
    this one's."""

    def __init__(self, maps: dict[str, Map]) -> None:
        self.maps = maps
        self._keys = _Keys()
        self.care_of = _Counted(self.maps["ha_care_of"], self._keys)
        self.sources = _Counted(self.maps["ha_sources"], self._keys)
        self.homes = self.maps["ha_homes"]
        self.reverse = self.maps["ha_reverse"]
        self.stats = self.maps["ha_stats"]
        self._pending: dict[bytes, bytes | None] = {}  # ha_homes key -> its value, None to remove, till commit
        self._emptied: dict[bytes, float] = {}  # ha_homes key -> when its value was emptied, till deleted
        self._emptying: deque[tuple[float, bytes]] = deque()  # (when, key), oldest first; stale ones skipped
        self._found: dict[Map, list[bytes]] = {}  # the keys adopt found, for sweep
        self.failures = 0  # values the kernel refused (a full map): those home addresses take the slow path

    def set_tunnels(self, home: int, old: tuple[Tunnel, ...], new: tuple[Tunnel, ...],
                    drop_stats: bool = True) -> None:
        """``home``'s tunnels from ``old`` (what the maps have, or will at the next commit) to ``new``, all
        written at the commit."""
        key = _address(home)
        if new:
            self._pending[key] = home_value(home, new)
            if self._emptied:  # set again before its key went: it stays
                self._emptied.pop(key, None)
        else:  # with old, or not: a value whose tunnels are unknown here (TOO_MANY, adopted) goes too
            self._pending[key] = None
        keys = self._keys  # what is added first, then what goes: a shared key then stays, unwritten
        for tunnel in new:
            if tunnel in old:
                continue
            if keys.unwanted:  # empty in a burst of new bindings: nothing to take back
                keys.keep(self.stats, _pair(home, tunnel.care_of_address))  # the counters go on
            if tunnel.reverse:
                keys.want(self.reverse, _triple(tunnel.care_of_address, tunnel.source, home))
            self.care_of.add(tunnel.care_of_address)
            self.sources.add(tunnel.source)
        for tunnel in old:
            if tunnel in new:
                continue
            care_of = tunnel.care_of_address
            if tunnel.reverse:
                keys.unwant(self.reverse, _triple(care_of, tunnel.source, home))
            self.care_of.remove(care_of)
            self.sources.remove(tunnel.source)
            if drop_stats and all(t.care_of_address != care_of for t in new):
                keys.unwant(self.stats, _pair(home, care_of))

    @classmethod
    def open(cls, maps_dir: Path) -> FastPath:
        """The maps pinned in ``maps_dir``."""
        try:
            return cls({name: Map.open(maps_dir / name) for name in MAPS})
        except OSError as exc:
            raise BpfUnavailable(f"the ebpf backend cannot open its maps: {exc}") from None

    def commit(self) -> None:
        """Write what was gathered since the last commit: the wanted keys, the values (one call), the
        removals as empty values (one more), delete the keys of values emptied ``GRACE`` ago or more, then
        the keys no value refers to any more. An element the kernel refuses is counted and logged (once),
        never raised: the replies waiting on the commit must go."""
        keys, pending = self._keys, self._pending
        if keys.wanted:
            wanted, keys.wanted = keys.wanted, {}
            for bpf_map, written in wanted.items():
                if written:
                    self._refused(bpf_map, list(written), bpf_map.update_batch(b"".join(written),
                                                                                 _ONE * len(written)))
        now = time.monotonic()
        if pending:
            self._pending = {}
            writes = [key for key, value in pending.items() if value is not None]
            if writes:
                values = b"".join([value for value in pending.values() if value is not None])
                self._refused(self.homes, writes, self.homes.update_batch(b"".join(writes), values, LOCK))
            if len(writes) < len(pending):
                # The removals, emptied in place in a call of their own: one the kernel refuses (a full map)
                # had no value to empty, which is no failure. BPF_EXIST is refused in a batch, so a key never
                # written (added and removed in one turn) is made empty too, and goes a grace later.
                removals = [key for key, value in pending.items() if value is None]
                empties = [home_value(int.from_bytes(key, "big"), ()) for key in removals]
                self.homes.update_batch(b"".join(removals), b"".join(empties), LOCK)
                for key in removals:
                    self._emptied[key] = now
                    self._emptying.append((now, key))
        emptying = self._emptying
        if emptying and emptying[0][0] <= now - GRACE:
            self._delete_emptied(now - GRACE)
        if keys.unwanted:
            unwanted, keys.unwanted = keys.unwanted, {}
            for bpf_map, deleted in unwanted.items():
                if deleted:
                    gone = list(deleted)
                    self._refused(bpf_map, gone, [(n, errno) for n, errno in bpf_map.delete_batch(b"".join(gone))
                                                  if errno != ENOENT])  # never made: counters with no packet

    def _delete_emptied(self, before: float) -> None:
        """Delete the keys of the values emptied at or before ``before`` and not set again since."""
        emptying, emptied = self._emptying, self._emptied
        due = []
        while emptying and emptying[0][0] <= before:
            at, key = emptying.popleft()
            if emptied.get(key) == at:
                del emptied[key]
                due.append(key)
        if due:
            self.homes.delete_batch(b"".join(due))  # ENOENT: refused when it was emptied, never written

    def _refused(self, bpf_map: Map, keys: list[bytes], refused: list[tuple[int, int]]) -> None:
        for n, errno in refused:
            self.failures += 1
            if self.failures == 1 or log.isEnabledFor(logging.DEBUG):
                where = _key_text(keys[n]) if n < len(keys) else "a batch"
                log.warning("ebpf: %s refused %s (%s): counted in dataplane.fast.map_refused%s", bpf_map.name,
                            where, os.strerror(errno),
                            "; the home link does not reach it" if bpf_map is self.homes else "")

    def tunnels_of(self, home: int) -> tuple[Tunnel, ...]:
        key = _address(home)
        if key in self._pending:
            value = self._pending[key]
            return _tunnels_of(value) if value is not None else ()
        value = self.homes.lookup(key)
        return _tunnels_of(value) if value is not None else ()

    def adopt(self) -> set[int]:
        """Take the maps over as a previous daemon left them, writing nothing: the home addresses in them,
        with the references of the tunnels their values name rebuilt (the counts were the dead daemon's);
        the keys of values it had emptied are deleted a grace from now, as ours.
        Keys of bindings gone since stay until ``sweep``, once the table has been set again."""
        homes = set()
        now = time.monotonic()
        for key in self.homes.keys():
            value = self.homes.lookup(key)
            if value is None:
                continue
            if not struct.unpack_from("=I", value, _COUNT_AT)[0]:  # emptied by it: its key goes a grace on
                self._emptied[key] = now
                self._emptying.append((now, key))
                continue
            home = int.from_bytes(key, "big")
            homes.add(home)
            self.set_tunnels(home, (), _tunnels_of(value), drop_stats=False)
        self._pending.clear()  # every value is in the map, and the keys they name before them
        self._keys.wanted.clear()
        # What sweep will look at, read now (at start, one system call a key) rather than at the first
        # serve (a takeover, for a member restarted alone): a key made since is named by a binding, or
        # goes with it (a reverse tunnel's counters too, sweep).
        self._found = {bpf_map: list(bpf_map.keys()) for bpf_map in self._swept()}
        return homes

    def _swept(self) -> tuple[Map, ...]:
        return (self.maps["ha_care_of"], self.maps["ha_sources"], self.reverse, self.stats)

    def sweep(self, table: Mapping[int, tuple[Tunnel, ...]]) -> None:
        """Delete the keys and counters found at ``adopt`` that no tunnel of ``table`` (the whole table,
        set again since) names: what the last daemon's maps held for bindings gone meanwhile, those with
        more tunnels than a value holds included; and count the references again from it. Committed."""
        care_of: dict[int, int] = {}
        sources: dict[int, int] = {}
        reverse, stats = set(), set()
        for home, tunnels in table.items():
            for t in tunnels:
                care_of[t.care_of_address] = care_of.get(t.care_of_address, 0) + 1
                sources[t.source] = sources.get(t.source, 0) + 1
                stats.add(_pair(home, t.care_of_address))
                if t.reverse:
                    reverse.add(_triple(t.care_of_address, t.source, home))
        self.care_of.counts, self.sources.counts = care_of, sources  # as set_tunnels counts them
        named = ({_address(c) for c in care_of}, {_address(s) for s in sources}, reverse, stats)
        found, self._found = self._found, {}
        for bpf_map, names in zip(self._swept(), named, strict=True):
            for key in found.get(bpf_map, ()):
                if key not in names:
                    self._keys.unwant(bpf_map, key)
                    if bpf_map is self.reverse:  # counters the program may have made by it since adopt
                        pair = key[8:12] + key[0:4]  # (care-of, source, home) -> (home, care-of)
                        if pair not in stats:
                            self._keys.unwant(self.stats, pair)
        self.commit()

    def serving(self) -> bool:
        value = self.maps["ha_config"].lookup(bytes(4))
        return value is not None and bool(_CONFIG.unpack(value)[0])

    def virtual_mac_until(self) -> int:
        """The virtual MAC's lease as the program has it (``bpf_ktime_get_ns``; 0: none)."""
        value = self.maps["ha_config"].lookup(bytes(4))
        return int(_CONFIG.unpack(value)[7]) if value is not None else 0

    def write_config(self, serving: bool, tun_index: int, mtu: int, ttl: int, home_index: int,
                     mac: bytes, virtual_mac: bytes | None = None, virtual_mac_until: int = 0) -> None:
        self.maps["ha_config"].update(bytes(4), _CONFIG.pack(int(serving), tun_index, mtu, ttl, home_index,
                                                               mac, virtual_mac or bytes(6), virtual_mac_until))

    def reasons(self) -> dict[str, int]:
        """The program's counters by reason, summed over the CPUs, with the bytes of what it tunnelled
        (``bytes_encapsulated``, ``bytes_decapsulated``: inner bytes, one per copy)."""
        reasons = self.maps["ha_reasons"]
        out = {}
        for n, name in enumerate(REASONS):
            value = reasons.lookup(struct.pack("=I", n)) or b""
            pairs = list(struct.iter_unpack("=QQ", value))
            out[name] = sum(packets for packets, _ in pairs)
            if name in ("encapsulated", "decapsulated"):
                out[f"bytes_{name}"] = sum(nbytes for _, nbytes in pairs)
        return out

    def tunnel_stats(self, home: int, care_of: int) -> tuple[int, int, int, int]:
        value = self.stats.lookup(_pair(home, care_of))
        return _STATS.unpack(value) if value is not None else (0, 0, 0, 0)

    def close(self) -> None:
        for bpf_map in self.maps.values():
            bpf_map.close()


class Restart(enum.Enum):
    """Where the clean-up of a restart on pinned maps stands (``EbpfDataplane.adopt``)."""

    NONE = "none"  # a fresh start, or cleaned up
    ADOPTED = "adopted"  # the maps are the last daemon's: cleaned up after the first serve
    SERVED = "served"  # the first serve has come: cleaned up at the next commit, the end of its turn


class EbpfDataplane:
    """A ``Dataplane``: the tc-BPF fast path on ``interface``'s ingress, the userspace forwarder behind it."""

    def __init__(self, interface: str, tun: str = "ha0", mtu: int = 1500, ttl: int = DEFAULT_TTL,
                 netns: str | None = None, pin_root: Path = PIN_ROOT, cache_dir: Path | None = None,
                 python: str = sys.executable, extra_interfaces: Sequence[str] = (),
                 virtual_mac: bytes | None = None, lease: float = VIRTUAL_MAC_LEASE) -> None:
        """``netns``: the network namespace ``interface`` and the forwarder are in, where it is not this
        process's (the tests); ``pin_root``: a bpf file system; ``cache_dir``: where the built object is
        kept (default ``~/.cache/homeagent/bpf``); ``extra_interfaces``: other links the program also runs
        on (where reverse tunnels arrive from the care-of addresses), answering no ARP there;
        ``virtual_mac``: the group's MAC, which ARP answers give and frames to which are taken while serving
        (docs/dataplane.md, "A virtual MAC"), for ``lease`` seconds after each renewal: at least as long as
        the group takes to replace a dead active member, so that a killed daemon's program, still serving,
        carries the traffic until then, and not much longer."""
        prefix = ["ip", "netns", "exec", netns] if netns else []
        # The forwarder routes every away home address into its TUN, as for userspace, though the program
        # answers ARP and hands its slow path to the TUN itself: the routes carry what never crosses the
        # program's links (what the host itself sends, what arrives by another link) and are what a strict
        # reverse path filter looks for when a decapsulated datagram enters by the TUN. Nothing waits for
        # them (``barrier``), and they cost the forwarder ~2 us each, out of the daemon's process.
        self.slow = UserspaceDataplane(tun, mtu, ttl, argv_prefix=prefix, python=python, nice=SLOW_PATH_NICE,
                                       read_size=MAX_DATAGRAM)  # handed whole, however long (a jumbo frame)
        self.interface = interface
        self.mtu = mtu
        self.ttl = ttl
        self.attachment = Attachment(interface, pin_root, ["nsenter", f"--net=/run/netns/{netns}"] if netns else [],
                                     extra_interfaces)
        self._cache_dir = cache_dir
        self.virtual_mac = virtual_mac
        self.lease = lease
        self._inherited_until = 0  # a killed daemon's lease (adopted), left to run out until this one serves or not
        self._renewal_failed = False
        self.fast: FastPath | None = None
        self._serving = False
        self._tun_index = 0
        self._mac = bytes(6)
        self._home_index = 0
        self._stale: set[int] = set()  # home addresses a previous daemon left in the maps (a restart)
        self._restart = Restart.NONE
        self._watch: asyncio.Task[None] | None = None
        self._renewal: asyncio.Task[None] | None = None
        self._closed = False

    # -- the Dataplane interface ----------------------------------------------------------------------

    def start(self) -> None:
        """Build (or take from the cache), load, pin and attach the program, then start the userspace
        forwarder; call on the running loop. Raises ``BpfUnavailable`` with the reason."""
        self.attachment.attach(build(self._cache_dir))
        try:
            self._home_index, self._mac = self.attachment.link()
            if self.virtual_mac is not None:
                self.attachment.accept_mac(self.virtual_mac)
            self.fast = FastPath.open(self.attachment.maps_dir)
        except BpfUnavailable:
            self.attachment.detach()  # a refusal leaves no program on the interface, nor the MAC
            if self.virtual_mac is not None:
                self.attachment.accept_mac(self.virtual_mac, False)
            raise
        if self.attachment.reused:
            self.adopt()
        self._write_config()
        self.slow.start()
        loop = asyncio.get_running_loop()
        self._watch = loop.create_task(self._follow_tun())
        if self.virtual_mac is not None:
            self._renewal = loop.create_task(self._renew_lease())

    def adopt(self) -> None:
        """A restart (``start`` found the pins): the maps forward as the last daemon left them, serving or
        not, until the table has been set again; what that does not set again goes after the first
        ``serve`` (``_clean_up_after_restart``). The virtual MAC's lease is kept as found, never renewed,
        until then. Before the first ``serve`` (``start`` calls it)."""
        assert self.fast is not None
        self._serving = self.fast.serving()
        self._inherited_until = self.fast.virtual_mac_until()
        self._stale = self.fast.adopt()
        self._restart = Restart.ADOPTED
        log.info("ebpf: took over the %smaps of %s (%d home addresses, %s)",
                 "unpinned program's " if self.attachment.repinned else "pinned ", self.interface,
                 len(self._stale), "serving" if self._serving else "not serving")

    async def ready(self, timeout: float = 10.0) -> dict[str, object]:
        info = await self.slow.ready(timeout)
        self._set_tun(info)
        return info

    def set_tunnels(self, home_address: int, tunnels: tuple[Tunnel, ...]) -> None:
        old = self.slow.tunnels_of(home_address)  # the table is the slow path's; the maps follow it
        self.slow.set_tunnels(home_address, tunnels)
        if self.fast is None:
            return
        new = tuple(tunnels)  # as the slow path keeps them
        if home_address in self._stale:
            self._stale.discard(home_address)
            old = self.fast.tunnels_of(home_address)
        self.fast.set_tunnels(home_address, old, new)

    def commit(self) -> None:
        """Write the map values gathered since the last commit (``FastPath.commit``): the runtime calls it
        before it sends the registration replies of a loop turn. Never raises: those replies must go."""
        if self.fast is not None:
            try:
                self.fast.commit()
            except OSError as exc:  # the bpf(2) call itself failed (not an element refused: counted there)
                self.fast.failures += 1
                log.warning("ebpf: the map values of a turn not written: %s", exc)
        if self._restart is Restart.SERVED:
            self._clean_up_after_restart()

    def serve(self, serving: bool) -> None:
        self._serving = serving
        self.commit()  # a takeover finds every value in
        if self._restart is Restart.ADOPTED:  # after that commit: the clean-up waits for the turn's own
            self._restart = Restart.SERVED
        self._write_config()  # the takeover (or stand-down) of the fast path: one map write
        self.slow.serve(serving)

    def _clean_up_after_restart(self) -> None:
        """After a restart, at the commit of the turn of the first serve (its election has decided, so the
        table has been set again: the start-up download's last datagram sets its bindings in that same
        turn, after the serve): the home addresses the previous daemon left that nothing set again go,
        and the keys no binding names (``FastPath.sweep``). Never raises: a key left behind costs little."""
        self._restart = Restart.NONE
        for home in list(self._stale):
            self.set_tunnels(home, ())
        self._stale.clear()
        self.commit()
        if self.fast is not None:
            try:
                self.fast.sweep(self.slow.tunnel_table())
            except OSError as exc:
                log.warning("ebpf: the keys of bindings gone while no daemon ran not all removed: %s", exc)

    def barrier(self) -> asyncio.Future[None] | None:
        """Always ``None``: a change is in the maps once ``commit`` returns, and with it what a packet
        to the home address needs: the program answers ARP for it, tunnels it, and hands what it does not
        tunnel straight to the forwarder's TUN. The forwarder's routes, which the userspace backend waits
        for, are not needed for that. (The forwarder itself has the change a loop turn later, with the
        handle's next flush: a slow-path datagram in that moment, such as one too big, is dropped.)"""
        return None

    def counters(self) -> dict[str, object]:
        return self._merged(self.slow.counters())

    async def fetch_counters(self, timeout: float = 2.0, tunnels: bool = True) -> dict[str, object]:
        return self._merged(await self.slow.fetch_counters(timeout, tunnels))

    def binding_counters(self, home_address: int, care_of_address: int) -> dict[str, int]:
        """What the program carried for one binding (its ``ha_stats`` entry: one map lookup): packets and
        inner bytes to the care-of address, and reverse-tunnelled from it. Datagrams the slow path carried
        are not in it (``status`` adds the forwarder's per tunnel)."""
        if self.fast is None:
            return {}
        packets, nbytes, rpackets, rbytes = self.fast.tunnel_stats(home_address, care_of_address)
        return {"packets": packets, "bytes": nbytes, "reverse_packets": rpackets, "reverse_bytes": rbytes}

    def fast_counters(self) -> dict[str, int]:
        return self.fast.reasons() if self.fast is not None else {}

    @property
    def pid(self) -> int | None:
        return self.slow.pid

    def close(self) -> None:
        """Stop: the filter off the interface and the pins unlinked, then the userspace forwarder."""
        if self.fast is not None:
            with contextlib.suppress(OSError, BpfUnavailable):
                self.attachment.detach()
            if self.virtual_mac is not None:
                with contextlib.suppress(OSError, BpfUnavailable):
                    self.attachment.accept_mac(self.virtual_mac, False)
        self.abandon()

    def abandon(self) -> None:
        """Let go without a clean stop, as a daemon killed with SIGKILL would: the program stays attached
        and pinned, and forwards with the maps as they are (the tests)."""
        self._closed = True
        for task in (self._watch, self._renewal):
            if task is not None:
                task.cancel()
        if self.fast is not None:
            self.fast.close()
            self.fast = None
        self.slow.close()

    # -- the TUN device the decapsulated datagrams enter by -------------------------------------------

    @property
    def _holds_mac(self) -> bool:
        """This daemon serves by its own ``serve(True)`` (not by the flag a killed daemon left, adopted):
        the virtual MAC's lease is renewed."""
        return self._serving and self._restart is not Restart.ADOPTED

    def _write_config(self) -> None:
        if self.fast is not None:
            if self._holds_mac:
                until = time.monotonic_ns() + int(self.lease * 1e9)
            else:  # a killed daemon's, till our own serve; else none
                until = self._inherited_until if self._restart is Restart.ADOPTED else 0
            self.fast.write_config(self._serving, self._tun_index, self.mtu, self.ttl, self._home_index,
                                   self._mac, self.virtual_mac, until)

    async def _renew_lease(self) -> None:
        """The virtual MAC's lease renewed four times a lease while this daemon serves. Nothing else: a
        daemon that stops renewing (killed, or its loop stalled longer than the lease, by when its group
        has replaced it) leaves a program that no longer gives the MAC."""
        while not self._closed:
            await asyncio.sleep(self.lease / 4)
            if not self._holds_mac:
                continue
            try:
                self._write_config()
            except OSError as exc:
                if not self._renewal_failed:
                    log.warning("ebpf: the virtual MAC's lease not renewed (it lapses %.1f s after the last "
                                "renewal): %s", self.lease, exc)
                self._renewal_failed = True
                continue
            if self._renewal_failed:
                log.info("ebpf: the virtual MAC's lease renewed again")
                self._renewal_failed = False

    def _set_tun(self, info: dict[str, object]) -> None:
        index = info.get("index")
        if isinstance(index, int) and index != self._tun_index:
            self._tun_index = index
            self._write_config()

    async def _follow_tun(self) -> None:
        """The TUN device is the forwarder's and is made anew when a forwarder is restarted: follow its
        index, which the program hands decapsulated datagrams to."""
        while not self._closed:
            try:
                info = await self.slow.ready(timeout=30)
            except (TimeoutError, RuntimeError):
                continue
            except asyncio.CancelledError:
                if self._closed:
                    return
                await asyncio.sleep(0.1)  # the forwarder died before it was ready: wait for the next
                continue
            self._set_tun(info)
            pid = self.slow.pid
            while not self._closed and pid is not None and self.slow.pid == pid:
                await asyncio.sleep(0.2)
            if self.slow.pid is None:
                await asyncio.sleep(0.05)

    # -- counters -------------------------------------------------------------------------------------

    def _merged(self, slow: dict[str, object]) -> dict[str, object]:
        """The userspace backend's counters with the fast path's added in: the same keys mean the same
        things (packets, bytes, drops), whichever path carried the packet."""
        out = dict(slow)
        out["dataplane.backend"] = "ebpf"
        out["dataplane.interface"] = self.interface
        out["dataplane.serving"] = self._serving  # the program's: it carries the traffic (adopted on a restart)
        out["dataplane.attached"] = self.fast is not None
        if self.virtual_mac is not None:
            out["dataplane.virtual_mac"] = self.virtual_mac.hex(":")
        if self.fast is None:
            return out
        fast = self.fast.reasons()
        out["dataplane.fast"] = {**fast, "map_refused": self.fast.failures}
        for key, more in (("packets", fast["encapsulated"]), ("bytes", fast["bytes_encapsulated"]),
                          ("reverse_packets", fast["decapsulated"]), ("reverse_bytes", fast["bytes_decapsulated"])):
            value = out.get(f"dataplane.{key}", 0)
            out[f"dataplane.{key}"] = (value if isinstance(value, int) else 0) + more
        slow_drops = out.get("dataplane.drops")
        drops: dict[str, int] = dict(slow_drops) if isinstance(slow_drops, dict) else {}
        for reason in ("unknown_care_of", "not_reverse_tunnel"):
            if fast[f"drop_{reason}"]:
                drops[reason] = drops.get(reason, 0) + fast[f"drop_{reason}"]
        out["dataplane.drops"] = drops
        tunnels = out.get("dataplane.tunnels")
        if isinstance(tunnels, list) and self.slow.home_addresses() <= DETAIL_LIMIT:
            merged = []
            for entry in tunnels:
                entry = dict(entry)
                packets, nbytes, rpackets, rbytes = self.fast.tunnel_stats(
                    int(IPv4Address(entry["home_address"])), int(IPv4Address(entry["care_of_address"])))
                entry["packets"] = entry.get("packets", 0) + packets
                entry["bytes"] = entry.get("bytes", 0) + nbytes
                entry["reverse_packets"] = entry.get("reverse_packets", 0) + rpackets
                entry["reverse_bytes"] = entry.get("reverse_bytes", 0) + rbytes
                merged.append(entry)
            out["dataplane.tunnels"] = merged
        return out


def _key_text(key: bytes) -> str:
    """A key as a log line names it: an address, or the addresses it is made of."""
    return ", ".join(str(IPv4Address(key[n:n + 4])) for n in range(0, len(key) - 3, 4))


def _tunnels_of(value: bytes) -> tuple[Tunnel, ...]:
    """The tunnels a ``struct home`` holds (TOO_MANY: none known here)."""
    (count,) = struct.unpack_from("=I", value, _COUNT_AT)
    if count == TOO_MANY or count > MAX_TUNNELS:
        return ()
    out = []
    for n in range(count):
        care_of, source, flags = _TUNNEL.unpack_from(value, _COUNT_AT + 4 + n * _TUNNEL.size)
        out.append(Tunnel(int.from_bytes(care_of, "big"), int.from_bytes(source, "big"), bool(flags & FLAG_REVERSE)))
    return tuple(out)


__all__ = ["BpfUnavailable", "EbpfDataplane"]
