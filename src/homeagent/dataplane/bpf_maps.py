"""BPF maps through the bpf(2) system call, with ctypes: open a pinned map, write, read, delete, list.

The eBPF backend keeps its maps equal to the binding table synchronously, from the registration loop, so
that a change is in the kernel before the reply leaves (docs/dataplane.md, "Backend ebpf"). That takes a
handful of map operations per binding, a few microseconds each; no binding of libbpf ships with Python,
and the calls needed are five, so they are made here directly rather than through a heavy dependency.
The kernel's ``union bpf_attr`` is laid out by ``struct`` for each command used (linux/bpf.h).
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct
from collections.abc import Iterator
from pathlib import Path

# bpf(2) command numbers (linux/bpf.h, enum bpf_cmd)
MAP_LOOKUP_ELEM, MAP_UPDATE_ELEM, MAP_DELETE_ELEM, MAP_GET_NEXT_KEY = 1, 2, 3, 4
OBJ_GET, OBJ_GET_INFO_BY_FD = 7, 15
# update flags
ANY, NOEXIST, EXIST = 0, 1, 2
PERCPU_TYPES = frozenset({5, 6, 10, 21})  # PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH, PERCPU_CGROUP_STORAGE

_SYSCALL = {"x86_64": 321, "aarch64": 280, "armv7l": 386, "riscv64": 280, "ppc64le": 361, "s390x": 351}
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class BpfError(OSError):
    """A bpf(2) call failed: errno and what was asked."""


def syscall_number() -> int:
    machine = platform.machine()
    try:
        return _SYSCALL[machine]
    except KeyError:
        raise BpfError(f"no bpf(2) system call number known for {machine}") from None


def _bpf(command: int, attr: ctypes.Array[ctypes.c_char]) -> int:
    result = _libc.syscall(syscall_number(), command, attr, len(attr))
    if result < 0:
        errno = ctypes.get_errno()
        raise BpfError(errno, f"bpf command {command}: {os.strerror(errno)}")
    return int(result)


def possible_cpus() -> int:
    """How many values a per-CPU map holds for each key: one per possible CPU (``0-1`` -> 2)."""
    text = Path("/sys/devices/system/cpu/possible").read_text().strip()
    count = 0
    for part in text.split(","):
        low, _, high = part.partition("-")
        count += int(high or low) - int(low) + 1
    return count


class Map:
    """One BPF map, opened from its pin. Keys and values are bytes of the map's sizes (a per-CPU map's
    value, read, is every CPU's value, each padded to 8 bytes)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        info = ctypes.create_string_buffer(88)  # struct bpf_map_info up to its name
        attr = ctypes.create_string_buffer(struct.pack("=IIQ", fd, len(info), ctypes.addressof(info)), 16)
        _bpf(OBJ_GET_INFO_BY_FD, attr)
        self.type, self.id, self.key_size, self.value_size, self.max_entries, self.flags = \
            struct.unpack_from("=6I", info)
        self.name = info.raw[24:40].split(b"\0")[0].decode()
        self.read_size = self.value_size
        if self.type in PERCPU_TYPES:
            self.read_size = (self.value_size + 7) // 8 * 8 * possible_cpus()
        # One set of buffers and one attribute block, reused by every call: a map write is ~1 us of Python.
        self._key = ctypes.create_string_buffer(self.key_size)
        self._next = ctypes.create_string_buffer(self.key_size)
        self._value = ctypes.create_string_buffer(max(self.read_size, self.value_size))
        self._attr = ctypes.create_string_buffer(32)
        self._key_at = ctypes.addressof(self._key)
        self._value_at = ctypes.addressof(self._value)
        self._next_at = ctypes.addressof(self._next)

    @classmethod
    def open(cls, path: str | Path) -> Map:
        """The map pinned at ``path`` (BPF_OBJ_GET)."""
        name = ctypes.create_string_buffer(os.fsencode(str(path)))
        attr = ctypes.create_string_buffer(struct.pack("=QII", ctypes.addressof(name), 0, 0), 16)
        return cls(_bpf(OBJ_GET, attr))

    def _elem(self, command: int, key: bytes, value_at: int, flags: int = 0) -> int:
        if len(key) != self.key_size:
            raise ValueError(f"map {self.name}: key of {len(key)} bytes, not {self.key_size}")
        ctypes.memmove(self._key, key, self.key_size)
        struct.pack_into("=IIQQQ", self._attr, 0, self.fd, 0, self._key_at, value_at, flags)
        return _bpf(command, self._attr)

    def update(self, key: bytes, value: bytes, flags: int = ANY) -> None:
        if len(value) != self.value_size:
            raise ValueError(f"map {self.name}: value of {len(value)} bytes, not {self.value_size}")
        ctypes.memmove(self._value, value, self.value_size)
        self._elem(MAP_UPDATE_ELEM, key, self._value_at, flags)

    def delete(self, key: bytes) -> bool:
        """Remove ``key``; False if it was not there."""
        try:
            self._elem(MAP_DELETE_ELEM, key, 0)
        except BpfError as exc:
            if exc.errno == 2:  # ENOENT
                return False
            raise
        return True

    def lookup(self, key: bytes) -> bytes | None:
        try:
            self._elem(MAP_LOOKUP_ELEM, key, self._value_at)
        except BpfError as exc:
            if exc.errno == 2:
                return None
            raise
        return self._value.raw[:self.read_size]

    def keys(self) -> Iterator[bytes]:
        """Every key, in the map's order (a map changed meanwhile may skip or repeat some)."""
        struct.pack_into("=IIQQQ", self._attr, 0, self.fd, 0, 0, self._next_at, 0)  # NULL key: the first
        while True:
            try:
                _bpf(MAP_GET_NEXT_KEY, self._attr)
            except BpfError as exc:
                if exc.errno == 2:
                    return
                raise
            key = self._next.raw
            yield key
            ctypes.memmove(self._key, key, self.key_size)
            struct.pack_into("=IIQQQ", self._attr, 0, self.fd, 0, self._key_at, self._next_at, 0)

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        for key in list(self.keys()):
            value = self.lookup(key)
            if value is not None:
                yield key, value

    def per_cpu_sum(self, key: bytes) -> int:
        """The sum over the CPUs of a per-CPU map's u64 value."""
        value = self.lookup(key)
        if value is None:
            return 0
        return sum(v for (v,) in struct.iter_unpack("=Q", value))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
