"""The eBPF backend's program: built from its C source, loaded, pinned and attached to the home link.

Why each step is done as it is (docs/dataplane.md, "Backend ebpf"):

- Built by clang at first start, never shipped as a binary: the object is cached under a directory keyed by
  the source's hash, so a changed source (an upgrade) builds anew and an unchanged one costs nothing.
- Loaded and pinned by ``bpftool`` (programs and maps under ``<pin>/<hash>/``), attached by iproute2's
  ``tc`` as a direct-action filter on the interface's ``clsact`` ingress. The filter holds the program and
  the program its maps, so a daemon that dies or restarts does not interrupt forwarding: the next start
  finds the pins of the same hash and takes the maps over as they are.
- Removed on a clean stop: the filter is deleted (the clsact qdisc, possibly shared, stays) and the pins
  are unlinked; the kernel frees the program and maps with their last reference.

Where something is missing (clang, bpftool, tc, a bpf file system, the bpf system call) ``BpfUnavailable``
says so in one line, and the daemon refuses to start.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SOURCE = Path(__file__).parent / "bpf" / "ha_ingress.c"
PROGRAM = "ha_ingress"  # the SEC("tc") function
MAPS = ("ha_config", "ha_homes", "ha_reverse", "ha_care_of", "ha_sources", "ha_stats", "ha_reasons",
        "ha_path_mtu")
FILTER = ("pref", "49152", "handle", "0x4841")  # our filter's identity on the ingress hook ("HA")
CFLAGS = ("-O2", "-g", "-target", "bpf", "-Wall")  # -g: BTF, which the maps' definitions need
PIN_ROOT = Path("/sys/fs/bpf")


class BpfUnavailable(RuntimeError):
    """The eBPF backend cannot run here, in one line saying why."""


def source_hash() -> str:
    digest = hashlib.sha256(SOURCE.read_bytes())
    digest.update(" ".join(CFLAGS).encode())
    return digest.hexdigest()[:16]


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "homeagent" / "bpf"


def build(cache_dir: Path | None = None) -> Path:
    """The compiled object for the current source, compiled now if the cache has none."""
    cache = cache_dir or default_cache_dir()
    target = cache / f"{PROGRAM}-{source_hash()}.o"
    if target.exists():
        return target
    clang = shutil.which("clang")
    if clang is None:
        raise BpfUnavailable("the ebpf backend needs clang to build its program "
                             "(apt-get install clang llvm libbpf-dev bpftool)")
    if not Path("/usr/include/bpf/bpf_helpers.h").exists():
        raise BpfUnavailable("the ebpf backend needs the libbpf headers (apt-get install libbpf-dev)")
    includes = []
    multiarch = Path("/usr/include") / f"{platform.machine()}-linux-gnu"
    if multiarch.is_dir():  # asm/types.h for -target bpf, without gcc-multilib
        includes = ["-I", str(multiarch)]
    cache.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.tmp")
    done = subprocess.run([clang, *CFLAGS, *includes, "-c", str(SOURCE), "-o", str(partial)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        first = (done.stderr.strip().splitlines() or ["no message"])[0]
        raise BpfUnavailable(f"clang could not build {SOURCE.name}: {first}")
    partial.replace(target)  # atomic: a concurrent start sees a whole object or none
    return target


def _is_bpffs(path: Path) -> bool:
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return False
    return any(fields[1] == str(path) and fields[2] == "bpf"
               for fields in (line.split() for line in mounts) if len(fields) > 2)


class Attachment:
    """Our program on ``interface``'s ingress (and on each of ``extra``: other links where reverse tunnels
    or datagrams for home addresses arrive), pinned under ``pin_dir`` (``<root>/homeagent-<interface>``).
    ``tc_prefix`` wraps the tc command line where the interface is in another network namespace (the
    tests: ``nsenter --net=/run/netns/NS``, which keeps this mount namespace and so the pins)."""

    def __init__(self, interface: str, pin_root: Path = PIN_ROOT, tc_prefix: Sequence[str] = (),
                 extra: Sequence[str] = ()) -> None:
        self.interface = interface
        self.interfaces = [interface, *extra]
        self.pin_root = pin_root
        self.pin_dir = pin_root / f"homeagent-{interface}"
        self.tc_prefix = list(tc_prefix)
        self.hash = source_hash()
        self.reused = False  # the maps were found pinned (a restart): their contents are the last daemon's
        self.repinned = False  # found attached but not pinned, and pinned again (``_repin_attached``)

    @property
    def maps_dir(self) -> Path:
        return self.pin_dir / self.hash / "maps"

    @property
    def program_pin(self) -> Path:
        return self.pin_dir / self.hash / "progs" / PROGRAM

    def attach(self, obj: Path) -> None:
        """Load (or find loaded) and attach; afterwards ``maps_dir`` holds every map's pin."""
        for tool in ("bpftool", "tc"):
            if shutil.which(tool) is None:
                raise BpfUnavailable(f"the ebpf backend needs {tool} (apt-get install bpftool iproute2)")
        self._mount()
        if all((self.maps_dir / name).exists() for name in MAPS) and self.program_pin.exists():
            self.reused = True
        else:
            self._load(obj)
            self.reused = self.repinned = self._repin_attached(obj)
        for interface in self.interfaces:
            self._tc("qdisc", "add", "dev", interface, "clsact", check=False)  # there already: fine
            self._tc("filter", "replace", "dev", interface, "ingress", *FILTER, "bpf", "da", "pinned",
                     str(self.program_pin))
        for old in self.pin_dir.iterdir():  # an earlier build's pins: its program is no longer attached
            if old.name != self.hash:
                self._unpin(old)

    def _repin_attached(self, obj: Path) -> bool:
        """Where the pins are gone but the filter is not: a daemon whose bpf file system did not outlive it
        (mounted in a mount namespace of its own, as ``ip netns exec`` makes, which remounts /sys), or
        unmounted since. If the program on the home link's ingress is this very program (the tag of the
        one just loaded: its instructions) with maps of the same definitions (a tag leaves them out), its
        maps are the last daemon's: pin it and them in place of the new ones, so that the restart takes
        them over as from pins. Otherwise (none, or another build: an upgrade) the new one stays, as it
        does when pinning them fails (loaded again). Whether it was done."""
        try:
            shown = self._tc("-j", "filter", "show", "dev", self.interface, "ingress", check=False)
            ours = [f["options"]["prog"] for f in json.loads(shown.stdout or "[]")
                    if f.get("options", {}).get("handle") == FILTER[3] and "prog" in f["options"]]
            if not ours:
                return False
            attached = self._bpftool_json("prog", "show", "id", str(ours[0]["id"]))
            loaded = self._bpftool_json("prog", "show", "pinned", str(self.program_pin))
            if attached.get("name") != PROGRAM or attached.get("tag") != loaded.get("tag"):
                return False
            maps, wanted = self._maps_of(attached), self._maps_of(loaded)
        except (ValueError, KeyError, TypeError, IndexError, BpfUnavailable):
            return False
        if any(name not in maps or maps[name][1:] != wanted.get(name, (None,))[1:] for name in MAPS):
            return False  # a map's type, sizes or flags differ: not the same program after all
        self._unpin(self.pin_dir / self.hash)  # the program just loaded, and its maps, freed
        try:
            self.maps_dir.mkdir(parents=True)
            self.program_pin.parent.mkdir(parents=True)
            self._run(["bpftool", "prog", "pin", "id", str(attached["id"]), str(self.program_pin)],
                      "pin the program")
            for name in MAPS:
                self._run(["bpftool", "map", "pin", "id", str(maps[name][0]), str(self.maps_dir / name)],
                          f"pin {name}")
        except (OSError, BpfUnavailable):
            self._load(obj)  # half pinned: start afresh, as without the attached program
            return False
        return True

    def _maps_of(self, program: dict[str, Any]) -> dict[str, tuple[Any, ...]]:
        """A program's maps by name: (id, type, key size, value size, entries, flags)."""
        out = {}
        for map_id in program.get("map_ids", []):
            m = self._bpftool_json("map", "show", "id", str(map_id))
            out[m["name"]] = (map_id, m.get("type"), m.get("bytes_key"), m.get("bytes_value"), m.get("max_entries"),
                              m.get("flags"))
        return out

    def _load(self, obj: Path) -> None:
        """Load ``obj`` afresh and pin the program and its maps under ``pin_dir/hash``."""
        self._unpin(self.pin_dir / self.hash)
        (self.pin_dir / self.hash).mkdir(parents=True, exist_ok=True)
        self._run(["bpftool", "prog", "loadall", str(obj), str(self.program_pin.parent), "type", "classifier",
                   "pinmaps", str(self.maps_dir)], "load the program")

    def _bpftool_json(self, *args: str) -> dict[str, Any]:
        value = json.loads(self._run(["bpftool", "-j", *args], " ".join(args[:2])).stdout)
        if not isinstance(value, dict):
            raise ValueError(f"bpftool {' '.join(args)}: not an object")
        return value

    def detach(self) -> None:
        """Take the filter off and unlink the pins (clean stop); the kernel frees the rest."""
        for interface in self.interfaces:
            self.detach_from(interface)
        self.unpin()

    def detach_from(self, interface: str) -> None:
        self._tc("filter", "delete", "dev", interface, "ingress", *FILTER, "bpf", check=False)

    def unpin(self) -> None:
        self._unpin(self.pin_dir)

    def accept_mac(self, mac: bytes, accept: bool = True) -> bool:
        """Have the home link's interface take frames to ``mac`` besides its own (its unicast address
        list, which a NIC filters by: ``bridge fdb replace MAC dev IF self permanent``), or no longer
        (``accept=False``: True if it did). For the group's virtual MAC, which the program answers ARP
        with."""
        text = mac.hex(":")
        if accept:
            self._run([*self.tc_prefix, "bridge", "fdb", "replace", text, "dev", self.interface, "self",
                       "permanent"], f"have {self.interface} accept frames to {text}")
            return True
        done = self._run([*self.tc_prefix, "bridge", "fdb", "del", text, "dev", self.interface, "self"],
                         "", check=False)
        return done.returncode == 0

    def link(self) -> tuple[int, bytes]:
        """The home link interface's index and MAC address, for the program's ARP replies."""
        done = self._run([*self.tc_prefix, "ip", "-j", "link", "show", "dev", self.interface], "read the MAC")
        try:
            link = json.loads(done.stdout)[0]
            return int(link["ifindex"]), bytes.fromhex(link["address"].replace(":", ""))
        except (ValueError, KeyError, IndexError) as exc:
            raise BpfUnavailable(f"the ebpf backend found no MAC address on {self.interface}: {exc}") from None

    def attached(self, interface: str | None = None) -> bool:
        """Whether our program is on ``interface``'s ingress (the home link's by default)."""
        done = self._tc("filter", "show", "dev", interface or self.interface, "ingress", check=False)
        return done.returncode == 0 and PROGRAM in done.stdout

    def _mount(self) -> None:
        if _is_bpffs(self.pin_root):
            return
        self.pin_root.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mount", "-t", "bpf", "bpf", str(self.pin_root)], capture_output=True, text=True)
        if done.returncode != 0:
            raise BpfUnavailable(f"no bpf file system at {self.pin_root} and it cannot be mounted: "
                                 f"{done.stderr.strip() or done.returncode}")

    @staticmethod
    def _unpin(path: Path) -> None:
        """Unlink a tree of pins (bpffs has no rmtree-safe files: only pins and directories)."""
        if not path.exists():
            return
        for parent, dirs, files in os.walk(path, topdown=False):
            for name in files:
                os.unlink(os.path.join(parent, name))
            for name in dirs:
                os.rmdir(os.path.join(parent, name))
        os.rmdir(path)

    def _tc(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self._run([*self.tc_prefix, "tc", *args], " ".join(args[:2]), check=check)

    @staticmethod
    def _run(argv: list[str], what: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        if check and done.returncode != 0:
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            reason = lines[-1].strip() if lines else f"exit status {done.returncode}"
            raise BpfUnavailable(f"the ebpf backend could not {what}: {reason}")
        return done
