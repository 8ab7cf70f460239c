"""The eBPF backend's map upkeep without a kernel: the map values' layout (``struct home`` of
bpf/ha_ingress.c) and the reference counts that decide when a care-of address or tunnel source leaves its
map. A stand-in map records the writes; the program's side is tested in tests/netns/test_ebpf.py."""

from __future__ import annotations

import ctypes
import shutil
import subprocess

import struct
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from homeagent.dataplane import Tunnel
from homeagent.dataplane import ebpf
from homeagent.dataplane.bpf_maps import LOCK
from homeagent.dataplane.ebpf import GRACE, MAX_TUNNELS, TOO_MANY, FastPath, _tunnels_of, home_value

SOURCE = Path(ebpf.__file__).parent / "bpf" / "ha_ingress.c"


def a(text: str) -> int:
    return int(IPv4Address(text))


KEY_SIZES = {"ha_reverse": 12, "ha_stats": 8}  # the others' keys are one address


class FakeMap:
    def __init__(self, name: str = "ha_homes", log: list[tuple[str, str]] | None = None) -> None:
        self.name = name
        self.key_size = KEY_SIZES.get(name, 4)
        self.data: dict[bytes, bytes] = {}
        self.writes = 0
        self.log = log if log is not None else []  # (map, "update" or "delete"): the order of the calls
        self.flags: list[int] = []  # of each update_batch

    def update(self, key: bytes, value: bytes, flags: int = 0) -> None:
        self.data[key] = value
        self.writes += 1

    def delete(self, key: bytes) -> bool:
        self.writes += 1
        return self.data.pop(key, None) is not None

    def lookup(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def _split(self, keys: bytes) -> list[bytes]:
        assert len(keys) % self.key_size == 0
        return [keys[n:n + self.key_size] for n in range(0, len(keys), self.key_size)]

    def update_batch(self, keys: bytes, values: bytes, flags: int = 0) -> list[tuple[int, int]]:
        self.log.append((self.name, "update"))
        self.flags.append(flags)
        assert flags in (0, LOCK), "a batch takes no other element flags (the kernel: EINVAL)"
        split = self._split(keys)
        size = len(values) // len(split)
        for n, key in enumerate(split):
            self.update(key, values[size * n:size * (n + 1)])
        return []

    def delete_batch(self, keys: bytes) -> list[tuple[int, int]]:
        self.log.append((self.name, "delete"))
        return [(n, 2) for n, key in enumerate(self._split(keys)) if not self.delete(key)]

    def keys(self) -> list[bytes]:
        return list(self.data)

    def close(self) -> None:
        pass


def fast_path(log: list[tuple[str, str]] | None = None) -> FastPath:
    return FastPath({name: FakeMap(name, log) for name in ebpf.MAPS})


def held(fast: FastPath) -> list[bytes]:
    """The home addresses whose values name a binding (a removed one's key stays, emptied, for GRACE)."""
    return sorted(key for key in fast.homes.keys() if struct.unpack_from("=I", fast.homes.lookup(key), 8)[0])


def test_the_value_layout_matches_the_c_program():
    text = SOURCE.read_text()
    assert f"#define MAX_TUNNELS {MAX_TUNNELS} " in text
    assert "#define TOO_MANY 0xffffffff" in text and TOO_MANY == 0xFFFFFFFF
    tunnels = (Tunnel(a("10.2.0.10"), a("10.1.0.1"), True), Tunnel(a("10.3.0.10"), a("10.1.0.1"), False))
    value = home_value(a("10.1.0.50"), tunnels)
    assert len(value) == 4 + 4 + 4 + 12 * MAX_TUNNELS  # lock, home, count, then (care_of, source, flags)
    assert value[:4] == bytes(4) and value[4:8] == IPv4Address("10.1.0.50").packed
    assert struct.unpack_from("=I", value, 8) == (2,)
    assert value[12:16] == IPv4Address("10.2.0.10").packed, "addresses in network byte order"
    assert struct.unpack_from("=I", value, 20) == (1,) and struct.unpack_from("=I", value, 32) == (0,)
    assert _tunnels_of(value) == tunnels
    text = SOURCE.read_text()
    layout = text[text.index("struct home {"):]
    fields = [layout.index(f) for f in ("struct bpf_spin_lock lock;", "__u32 home;", "__u32 count;",
                                        "struct tunnel tunnels[MAX_TUNNELS];", "};")]
    assert fields == sorted(fields), "the C struct in the same order"


def test_more_tunnels_than_a_value_holds_are_marked_for_the_slow_path():
    tunnels = tuple(Tunnel(a("10.2.0.1") + n, a("10.1.0.1"), False) for n in range(MAX_TUNNELS + 1))
    value = home_value(a("10.1.0.50"), tunnels)
    assert struct.unpack_from("=I", value, 8) == (TOO_MANY,) and value[4:8] == IPv4Address("10.1.0.50").packed
    assert _tunnels_of(value) == ()


def test_shared_care_of_addresses_and_sources_stay_until_their_last_binding_goes():
    fast = fast_path()
    source, care_of = a("10.1.0.1"), a("10.2.0.10")
    one, two = a("10.1.0.50"), a("10.1.0.51")
    fast.set_tunnels(one, (), (Tunnel(care_of, source, True),))
    fast.set_tunnels(two, (), (Tunnel(care_of, source, False),))
    fast.commit()
    assert fast.maps["ha_care_of"].keys() == [IPv4Address(care_of).packed]
    assert len(fast.reverse.keys()) == 1, "only the binding with T is a reverse key"
    fast.set_tunnels(one, (Tunnel(care_of, source, True),), ())
    fast.commit()
    assert fast.maps["ha_care_of"].keys() and fast.maps["ha_sources"].keys(), "still the other's"
    assert fast.reverse.keys() == [] and held(fast) == [IPv4Address(two).packed]
    fast.set_tunnels(two, (Tunnel(care_of, source, False),), ())
    fast.commit()
    assert all(fast.maps[name].keys() == [] for name in ("ha_care_of", "ha_sources")) and held(fast) == []


def test_a_changed_t_flag_moves_the_reverse_key_and_keeps_the_counters():
    fast = fast_path()
    home, care_of, source = a("10.1.0.50"), a("10.2.0.10"), a("10.1.0.1")
    fast.stats.update(IPv4Address(home).packed + IPv4Address(care_of).packed, bytes(32))
    fast.set_tunnels(home, (), (Tunnel(care_of, source, False),))
    fast.set_tunnels(home, (Tunnel(care_of, source, False),), (Tunnel(care_of, source, True),))
    fast.commit()
    assert len(fast.reverse.keys()) == 1
    assert len(fast.stats.keys()) == 1, "the same care-of address: its counters go on"
    fast.set_tunnels(home, (Tunnel(care_of, source, True),), (Tunnel(a("10.3.0.10"), source, True),))
    assert len(fast.stats.keys()) == 1, "until the commit the program may still count by the old value"
    fast.commit()
    assert fast.stats.keys() == [], "a care-of address gone takes its counters"


def test_adopting_a_dead_daemons_maps_rebuilds_keys_and_references():
    fast = fast_path()
    home, care_of, source = a("10.1.0.50"), a("10.2.0.10"), a("10.1.0.1")
    fast.set_tunnels(home, (), (Tunnel(care_of, source, True),))
    fast.commit()
    fast.care_of.counts.clear()  # a new daemon: nothing counted yet
    fast.sources.counts.clear()
    stray = IPv4Address("10.9.0.9").packed
    fast.maps["ha_care_of"].update(stray, bytes(4))  # a key the dead daemon had not removed yet
    writes = {name: fast.maps[name].writes for name in ebpf.MAPS}
    assert fast.adopt() == {home}
    assert fast.care_of.counts[care_of] == 1
    fast.commit()
    assert {name: fast.maps[name].writes for name in ebpf.MAPS} == writes, "adopting writes nothing"
    fast.sweep({home: (Tunnel(care_of, source, True),)})  # the table, set again after the restart
    assert fast.maps["ha_care_of"].keys() == [IPv4Address(care_of).packed], "the stray key is gone"
    assert len(fast.reverse.keys()) == 1
    fast.set_tunnels(home, fast.tunnels_of(home), ())
    fast.commit()
    assert all(fast.maps[name].keys() == [] for name in ("ha_care_of", "ha_sources", "ha_reverse"))
    assert held(fast) == []


def test_a_home_address_with_more_tunnels_than_a_value_holds_survives_a_restart_and_goes_when_stale():
    """Its value names no tunnel (TOO_MANY), so adopting cannot count its keys: they stay until the sweep,
    by which time the table has been set again; not set again (stale), its value goes all the same."""
    fast = fast_path()
    source = a("10.1.0.1")
    kept, gone, other = a("10.1.0.60"), a("10.1.0.61"), a("10.1.0.62")
    many = tuple(Tunnel(a("10.2.0.1") + n, source, True) for n in range(MAX_TUNNELS + 2))
    others = tuple(Tunnel(a("10.3.0.1") + n, source, True) for n in range(MAX_TUNNELS + 1))
    fast.set_tunnels(kept, (), many)
    fast.set_tunnels(gone, (), others)
    fast.set_tunnels(other, (), many[:1])
    fast.commit()
    assert len(fast.reverse.keys()) == len(many) + len(others) + 1
    fast.care_of.counts.clear()
    fast.sources.counts.clear()
    assert fast.adopt() == {kept, gone, other}
    fast.commit()
    assert len(fast.reverse.keys()) == len(many) + len(others) + 1, "no reverse tunnel refused after a restart"
    fast.set_tunnels(kept, (), many)  # the replay sets it again (other's value names its tunnel: counted)
    fast.set_tunnels(gone, (), ())  # not set again: removed at the first serve, its tunnels unknown
    fast.commit()
    assert held(fast) == sorted(IPv4Address(h).packed for h in (kept, other))
    fast.sweep({kept: many, other: many[:1]})
    assert len(fast.reverse.keys()) == len(many) + 1, "the stale one's keys are gone, the others' stay"
    assert len(fast.maps["ha_care_of"].keys()) == len(many)
    assert fast.care_of.counts[a("10.2.0.1")] == 2 and a("10.3.0.1") not in fast.care_of.counts
    for home, tunnels in ((kept, many), (other, many[:1])):
        fast.set_tunnels(home, tunnels, ())
    fast.commit()
    assert all(fast.maps[name].keys() == [] for name in ("ha_care_of", "ha_sources", "ha_reverse"))
    assert held(fast) == []


def test_the_changes_of_a_loop_turn_go_in_at_its_commit_keys_before_values():
    """Nothing is written before ``commit``, which the runtime makes before the turn's replies: then one
    BPF_MAP_UPDATE_BATCH a map for the keys the values refer to, one for the home addresses' values, one
    for the removed (emptied in place, where they are); the table as set so far reads back from what waits."""
    log: list[tuple[str, str]] = []
    fast = fast_path(log)
    source = a("10.1.0.1")
    homes = [a("10.1.0.50") + n for n in range(5)]
    for n, home in enumerate(homes):
        fast.set_tunnels(home, (), (Tunnel(a("10.2.0.10") + n, source, True),))
    assert all(fast.maps[name].keys() == [] for name in ebpf.MAPS), "nothing before the commit"
    assert fast.tunnels_of(homes[0]) == (Tunnel(a("10.2.0.10"), source, True),)
    fast.set_tunnels(homes[4], (Tunnel(a("10.2.0.14"), source, True),), ())  # gone before the commit
    assert fast.tunnels_of(homes[4]) == ()
    fast.commit()
    assert held(fast) == [IPv4Address(h).packed for h in homes[:4]]
    assert len(fast.maps["ha_care_of"].keys()) == 4 and len(fast.reverse.keys()) == 4
    assert len(fast.maps["ha_sources"].keys()) == 1
    updates = [name for name, op in log if op == "update"]
    assert sorted(updates) == ["ha_care_of", "ha_homes", "ha_homes", "ha_reverse", "ha_sources"], "a call a map"
    assert updates[-2:] == ["ha_homes", "ha_homes"], "the keys a value refers to are in before it"
    assert fast.homes.flags == [LOCK, LOCK], "values, then removals, in place under their lock"
    assert ("ha_homes", "delete") not in log, "the removed (emptied: never written before) go a grace later"
    assert fast.failures == 0, "removing what never went in is no failure"
    calls = len(log)
    fast.commit()
    assert len(log) == calls, "nothing gathered, no call"


def test_a_value_the_map_refuses_is_counted_and_a_removal_it_refuses_is_not():
    fast = fast_path()
    fast.homes.update_batch = lambda keys, values, flags: [(0, 7)]  # E2BIG: the map is full
    tunnel = (Tunnel(a("10.2.0.10"), a("10.1.0.1"), False),)
    fast.set_tunnels(a("10.1.0.50"), (), tunnel)
    fast.commit()
    assert fast.failures == 1
    fast.set_tunnels(a("10.1.0.50"), tunnel, ())  # its value never went in: nothing to empty
    fast.commit()
    assert fast.failures == 1


@pytest.mark.parametrize("name", ebpf.MAPS)
def test_every_map_is_defined_in_the_program(name):
    assert f"}} {name} SEC(\".maps\");" in SOURCE.read_text()


def test_keys_no_longer_wanted_go_after_the_values_and_a_key_wanted_again_stays():
    """A moved binding: the old care-of address's keys and counters stay until the commit has written the
    value that no longer refers to them (the program may tunnel by the old value till then, and would make
    its counters again, never to be removed); one wanted again in the same turn is not removed at all."""
    log: list[tuple[str, str]] = []
    fast = fast_path(log)
    home, source = a("10.1.0.50"), a("10.1.0.1")
    old, new = Tunnel(a("10.2.0.10"), source, True), Tunnel(a("10.3.0.10"), source, True)
    fast.set_tunnels(home, (), (old,))
    fast.commit()
    fast.stats.update(IPv4Address(home).packed + IPv4Address(old.care_of_address).packed, bytes(32))
    fast.set_tunnels(home, (old,), (new,))
    assert fast.maps["ha_care_of"].keys() == [IPv4Address(old.care_of_address).packed] and fast.stats.keys()
    log.clear()
    fast.commit()
    assert log == [("ha_reverse", "update"), ("ha_care_of", "update"), ("ha_homes", "update"),
                   ("ha_reverse", "delete"), ("ha_care_of", "delete"), ("ha_stats", "delete")]
    assert fast.maps["ha_care_of"].keys() == [IPv4Address(new.care_of_address).packed]
    assert len(fast.reverse.keys()) == 1 and fast.stats.keys() == []
    fast.set_tunnels(home, (new,), ())  # gone, and back within the same turn
    fast.set_tunnels(home, (), (new,))
    fast.commit()
    assert fast.maps["ha_care_of"].keys() == [IPv4Address(new.care_of_address).packed]
    assert len(fast.reverse.keys()) == 1 and held(fast) == [IPv4Address(home).packed]


def test_a_kernel_without_batch_commands_is_written_one_element_a_call(monkeypatch):
    """Before Linux 5.6 (EINVAL) or for a map type without them (ENOTSUPP) the batch command fails before
    touching ``count``: the map says so once and writes each element alone from then on."""
    from homeagent.dataplane import bpf_maps

    calls: list[int] = []

    def syscall(number: int, command: int, attr: object, size: int) -> int:
        calls.append(command)
        ctypes.set_errno(bpf_maps.EINVAL)
        return -1

    bpf_map = bpf_maps.Map.__new__(bpf_maps.Map)
    bpf_map.fd, bpf_map.name, bpf_map.key_size, bpf_map.value_size = 1000, "homes", 4, 8
    bpf_map._batch_attr = ctypes.create_string_buffer(bpf_maps._BATCH_ATTR.size)
    bpf_map._batches = True
    written: list[bytes] = []
    monkeypatch.setattr(bpf_maps, "_syscall", syscall)
    monkeypatch.setattr(bpf_map, "update", lambda key, value, flags=0: written.append(key), raising=False)
    assert bpf_map.update_batch(b"\0\0\0\1\0\0\0\2", bytes(16)) == []
    assert calls == [bpf_maps.MAP_UPDATE_BATCH] and written == [b"\0\0\0\1", b"\0\0\0\2"]
    assert not bpf_map._batches
    bpf_map.update_batch(b"\0\0\0\3", bytes(8))
    assert calls == [bpf_maps.MAP_UPDATE_BATCH], "not asked again"


@pytest.mark.skipif(not (shutil.which("clang") and shutil.which("bpftool")), reason="needs clang and bpftool")
def test_the_layouts_written_here_are_the_compiled_programs(tmp_path):
    """The sizes and field offsets of ``struct config`` and ``struct home`` as clang laid them out (the
    object's BTF), against the ``struct`` formats that write them: a field added on one side only would
    have the program read the wrong bytes."""
    from homeagent.dataplane.bpf_program import build

    dump = subprocess.run(["bpftool", "btf", "dump", "file", str(build(tmp_path))], capture_output=True,
                          text=True, check=True).stdout
    structs: dict[str, tuple[int, dict[str, int]]] = {}
    name = None
    for line in dump.splitlines():
        if line.startswith("[") and " STRUCT '" in line:
            name = line.split("'")[1]
            structs[name] = (int(line.split("size=")[1].split()[0]), {})
        elif line.startswith("\t'") and name is not None:
            structs[name][1][line.split("'")[1]] = int(line.split("bits_offset=")[1]) // 8
        else:
            name = None
    size, offsets = structs["config"]
    assert size == ebpf._CONFIG.size
    assert offsets == {"serving": 0, "tun_ifindex": 4, "mtu": 8, "ttl": 12, "home_ifindex": 16, "mac": 20,
                       "vmac": 26, "vmac_until": 32}, "as _CONFIG packs them"
    assert structs["home"][0] == len(home_value(0, ()))
    assert structs["home"][1] == {"lock": 0, "home": 4, "count": 8, "tunnels": 12}, "as _HOMES packs them"
    assert structs["tunnel"][0] == ebpf._TUNNEL.size


def test_after_a_restart_the_first_serve_cleans_up_at_the_end_of_its_turn_not_before_its_bindings():
    """The start-up download's last datagram makes Serve(False) and then sets its bindings, in one turn:
    the restart's clean-up (what nothing set again goes, and keys no binding names) waits for that
    turn's commit, so a binding set in it keeps its value and its counters."""
    fast = fast_path()
    source = a("10.1.0.1")
    downloaded, stale = a("10.1.0.50"), a("10.1.0.51")
    tunnel = Tunnel(a("10.2.0.10"), source, True)
    for home in (downloaded, stale):
        fast.set_tunnels(home, (), (Tunnel(a("10.2.0.10") + (home - downloaded), source, True),))
    fast.commit()
    stats = IPv4Address(downloaded).packed + IPv4Address(tunnel.care_of_address).packed
    fast.stats.update(stats, bytes(32))  # the program counted its packets
    plane = ebpf.EbpfDataplane("eth0")
    plane.fast = fast
    plane.adopt()  # as start() does on reused pins
    plane.serve(False)  # the download's last datagram: the election decided ...
    plane.set_tunnels(downloaded, (tunnel,))  # ... and its bindings, in the same turn
    assert fast.homes.lookup(IPv4Address(stale).packed) is not None, "nothing cleaned up within the turn"
    plane.commit()  # the end of the turn
    assert held(fast) == [IPv4Address(downloaded).packed], "the stale one went, the downloaded stayed"
    assert fast.stats.keys() == [stats], "with its counters"
    assert fast.maps["ha_care_of"].keys() == [IPv4Address(tunnel.care_of_address).packed]
    assert len(fast.reverse.keys()) == 1
    plane.commit()
    assert held(fast) == [IPv4Address(downloaded).packed], "once"


def test_the_virtual_macs_lease_is_inherited_after_a_restart_renewed_only_while_serving():
    """``ha_config.vmac_until``: a restarted daemon writes back the lease it found (left to run out,
    never renewed) until its own election decides; serving, it writes a lease from now; not serving, none."""
    import time

    def until() -> int:
        return fast.virtual_mac_until()

    fast = fast_path()
    plane = ebpf.EbpfDataplane("eth0", virtual_mac=bytes.fromhex("02484101000a"), lease=2.0)
    plane.fast = fast
    found = time.monotonic_ns() + 500_000_000  # the killed daemon's lease, half a second left
    fast.write_config(True, 0, 1500, 64, 1, bytes(6), plane.virtual_mac, found)
    plane.adopt()  # as start() does on reused pins
    plane._write_config()  # a forwarder's TUN, say: the config written again before any serve
    assert until() == found, "kept as found, not renewed"
    plane.serve(True)
    assert abs(until() - (time.monotonic_ns() + 2_000_000_000)) < 200_000_000, "a lease from now"
    plane.serve(False)
    assert until() == 0, "a member that stands down gives the MAC up at once"
    plane._write_config()
    assert until() == 0, "and the inherited lease is not brought back"


def test_a_removed_binding_is_emptied_in_place_and_its_key_deleted_a_grace_later(monkeypatch):
    """A packet may still read the value a removal ends (bpf/ha_ingress.c, above ha_homes): it is emptied in
    place (count 0: no binding), and its key deleted by a commit GRACE later, unless set again meanwhile."""
    clock = [1000.0]
    monkeypatch.setattr(ebpf.time, "monotonic", lambda: clock[0])
    fast = fast_path()
    source = a("10.1.0.1")
    gone, back = a("10.1.0.50"), a("10.1.0.51")
    tunnel = {home: (Tunnel(a("10.2.0.10") + (home - gone), source, False),) for home in (gone, back)}
    for home in (gone, back):
        fast.set_tunnels(home, (), tunnel[home])
    fast.commit()
    for home in (gone, back):
        fast.set_tunnels(home, tunnel[home], ())
    fast.commit()
    keys = sorted(IPv4Address(h).packed for h in (gone, back))
    assert sorted(fast.homes.keys()) == keys and held(fast) == [], "emptied, not deleted"
    assert all(fast.homes.lookup(k) == home_value(int.from_bytes(k, "big"), ()) for k in keys)
    assert fast.tunnels_of(gone) == ()
    clock[0] += GRACE / 2
    fast.set_tunnels(back, (), tunnel[back])  # registered again within the grace
    fast.commit()
    assert sorted(fast.homes.keys()) == keys
    clock[0] += GRACE
    fast.commit()  # any later commit, with nothing else to do
    assert fast.homes.keys() == [IPv4Address(back).packed] and held(fast) == [IPv4Address(back).packed]
    assert fast.tunnels_of(back) == tunnel[back]


def test_adopting_leaves_out_what_the_dead_daemon_had_emptied_and_deletes_it_a_grace_later(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(ebpf.time, "monotonic", lambda: clock[0])
    fast = fast_path()
    home, emptied = a("10.1.0.50"), a("10.1.0.51")
    fast.set_tunnels(home, (), (Tunnel(a("10.2.0.10"), a("10.1.0.1"), False),))
    fast.commit()
    fast.homes.update(IPv4Address(emptied).packed, home_value(emptied, ()))  # its last removal
    assert fast.adopt() == {home}, "an emptied value names no binding"
    fast.commit()
    assert IPv4Address(emptied).packed in fast.homes.keys()
    clock[0] += GRACE
    fast.commit()
    assert fast.homes.keys() == [IPv4Address(home).packed]


def test_the_reasons_are_the_programs_in_its_order():
    """``ha_reasons`` is indexed by the C ``enum reason``: a name out of order would count one thing as
    another in ``status`` and in the metrics."""
    text = SOURCE.read_text()
    body = text[text.index("enum reason {") + len("enum reason {"):]
    body = body[:body.index("};")]
    names = [line.strip().split(",")[0].split()[0] for line in body.splitlines()
             if line.strip() and line.strip()[0].isupper()]
    assert names[-1] == "REASONS"
    assert tuple(name.lower() for name in names[:-1]) == ebpf.REASONS
