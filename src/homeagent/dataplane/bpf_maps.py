"""BPF maps through the bpf(2) system call, with ctypes: open a pinned map, write, read, delete, list.

The eBPF backend keeps its maps equal to the binding table synchronously, from the registration loop, so
that a change is in the kernel before the reply leaves (docs/dataplane.md, "Backend ebpf"). That takes a
handful of map operations per binding, a microsecond or two each; no binding of libbpf ships with Python,
and the commands needed are six, so they are made here directly rather than through a heavy dependency.
The kernel's ``union bpf_attr`` is laid out by ``struct`` for each command used (linux/bpf.h).
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

# bpf(2) command numbers (linux/bpf.h, enum bpf_cmd)
MAP_LOOKUP_ELEM, MAP_UPDATE_ELEM, MAP_DELETE_ELEM, MAP_GET_NEXT_KEY = 1, 2, 3, 4
OBJ_GET, OBJ_GET_INFO_BY_FD = 7, 15
MAP_UPDATE_BATCH, MAP_DELETE_BATCH = 26, 27  # Linux 5.6
# update flags; LOCK: copy the value in under its bpf_spin_lock, in place where the key exists (BPF_F_LOCK)
ANY, NOEXIST, EXIST, LOCK = 0, 1, 2, 4
ENOENT, EINVAL, EOPNOTSUPP, ENOTSUPP = 2, 22, 95, 524  # ENOTSUPP: the kernel's own, for "no batch ops"
PERCPU_TYPES = frozenset({5, 6, 10, 21})  # PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH, PERCPU_CGROUP_STORAGE

_SYSCALL = {"x86_64": 321, "aarch64": 280, "armv7l": 386, "riscv64": 280, "ppc64le": 361, "s390x": 351}
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_syscall = _libc.syscall
_ATTR_SIZE = 32  # the map element commands' part of union bpf_attr
# union bpf_attr for the MAP_*_BATCH commands: in_batch, out_batch, keys, values, count, map_fd, elem_flags,
# flags. ``count`` goes in as the number of elements and comes back as the number done.
_BATCH_ATTR = struct.Struct("=QQQQIIQQ")
_BATCH_COUNT = 32  # the offset of ``count``


class _ElemAttr(ctypes.Structure):
    """union bpf_attr for MAP_{LOOKUP,UPDATE,DELETE}_ELEM and MAP_GET_NEXT_KEY."""

    _fields_ = [("map_fd", ctypes.c_uint32), ("pad", ctypes.c_uint32), ("key", ctypes.c_uint64),
                ("value", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


def _bytes_data_offset() -> int | None:
    """Where a bytes object's data starts from its id(), if this interpreter is CPython and says so; a
    bytes object is immutable, so the kernel may read a key or value in place instead of from a copy."""
    if sys.implementation.name != "cpython":
        return None
    offset = sys.getsizeof(b"") - 1
    probe = bytes(range(7, 71))
    return offset if ctypes.string_at(id(probe) + offset, len(probe)) == probe else None


_BYTES_DATA = _bytes_data_offset()


class BpfError(OSError):
    """A bpf(2) call failed: errno and what was asked."""


def _data_at(data: bytes, copies: list[ctypes.Array[ctypes.c_char]]) -> int:
    """The address of ``data``'s bytes for the kernel to read: in place where CPython's layout was confirmed
    at import, else of a copy appended to ``copies`` (which the caller keeps until the call is made)."""
    if _BYTES_DATA is not None:
        return id(data) + _BYTES_DATA
    copy = ctypes.create_string_buffer(data, len(data))
    copies.append(copy)
    return ctypes.addressof(copy)


def syscall_number() -> int:
    machine = platform.machine()
    try:
        return _SYSCALL[machine]
    except KeyError:
        raise BpfError(f"no bpf(2) system call number known for {machine}") from None


def _error(command: int) -> BpfError:
    errno = ctypes.get_errno()
    return BpfError(errno, f"bpf command {command}: {os.strerror(errno)}")


def _bpf(command: int, attr: ctypes.Array[ctypes.c_char]) -> int:
    result = _syscall(_NR, command, attr, len(attr))
    if result < 0:
        raise _error(command)
    return int(result)


_NR = syscall_number() if platform.machine() in _SYSCALL else -1


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
        # Buffers and attribute blocks made once, reused by every call (one per command: the kernel wants
        # the fields a command does not use to be zero).
        self._key = ctypes.create_string_buffer(self.key_size)
        self._next = ctypes.create_string_buffer(self.key_size)
        self._value = ctypes.create_string_buffer(max(self.read_size, self.value_size))
        self._key_at = ctypes.addressof(self._key)
        self._next_at = ctypes.addressof(self._next)
        self._attr = ctypes.create_string_buffer(32)
        self._write, self._delete = _ElemAttr(fd), _ElemAttr(fd)
        self._read = _ElemAttr(fd, value=ctypes.addressof(self._value))
        self._write_ref, self._delete_ref, self._read_ref = (ctypes.byref(self._write), ctypes.byref(self._delete),
                                                             ctypes.byref(self._read))
        self._batch_attr = ctypes.create_string_buffer(_BATCH_ATTR.size)
        self._batches = True  # until the kernel says it has no batch operations for this map

    @classmethod
    def open(cls, path: str | Path) -> Map:
        """The map pinned at ``path`` (BPF_OBJ_GET)."""
        name = ctypes.create_string_buffer(os.fsencode(str(path)))
        attr = ctypes.create_string_buffer(struct.pack("=QII", ctypes.addressof(name), 0, 0), 16)
        return cls(_bpf(OBJ_GET, attr))

    def _at(self, data: bytes, size: int, buffer: ctypes.Array[ctypes.c_char]) -> int:
        """The address of ``data`` for the kernel to read: the bytes object's own where CPython's layout
        was confirmed at import (no copy: a map write costs ~1 us, not ~2.5), else a copy in ``buffer``."""
        if len(data) != size:
            raise ValueError(f"map {self.name}: {len(data)} bytes, not {size}")
        if _BYTES_DATA is not None:
            return id(data) + _BYTES_DATA
        ctypes.memmove(buffer, data, size)
        return ctypes.addressof(buffer)

    def update(self, key: bytes, value: bytes, flags: int = ANY) -> None:
        attr = self._write
        if _BYTES_DATA is not None and len(key) == self.key_size and len(value) == self.value_size:
            attr.key = id(key) + _BYTES_DATA  # the usual case, inline: this is the registration path
            attr.value = id(value) + _BYTES_DATA
        else:
            attr.key = self._at(key, self.key_size, self._key)
            attr.value = self._at(value, self.value_size, self._value)
        attr.flags = flags
        if _syscall(_NR, MAP_UPDATE_ELEM, self._write_ref, _ATTR_SIZE) < 0:
            raise _error(MAP_UPDATE_ELEM)

    def delete(self, key: bytes) -> bool:
        """Remove ``key``; False if it was not there."""
        if _BYTES_DATA is not None and len(key) == self.key_size:
            self._delete.key = id(key) + _BYTES_DATA
        else:
            self._delete.key = self._at(key, self.key_size, self._key)
        if _syscall(_NR, MAP_DELETE_ELEM, self._delete_ref, _ATTR_SIZE) < 0:
            if ctypes.get_errno() == ENOENT:  # no exception made: a common answer, on the registration path
                return False
            raise _error(MAP_DELETE_ELEM)
        return True

    def update_batch(self, keys: bytes, values: bytes, flags: int = ANY) -> list[tuple[int, int]]:
        """Write every element of ``keys`` and ``values`` (each the concatenation of whole keys, whole
        values) in as few system calls as the kernel allows: one, unless an element is refused (a full
        map). Returns (index, errno) of each element refused; the others are written. Where the kernel
        has no batch operations (before 5.6) the elements go one call each. ``flags`` apply to each
        element (``LOCK``)."""
        refused = self._batch(MAP_UPDATE_BATCH, keys, values, flags)
        if refused is not None:
            return refused
        failures: list[tuple[int, int]] = []
        ks, vs = self.key_size, self.value_size
        for n in range(len(keys) // ks):
            try:
                self.update(keys[n * ks:(n + 1) * ks], values[n * vs:(n + 1) * vs], flags)
            except BpfError as exc:
                failures.append((n, exc.errno or 0))
        return failures

    def delete_batch(self, keys: bytes) -> list[tuple[int, int]]:
        """Remove every key of ``keys`` (whole keys, concatenated), as ``update_batch`` writes: (index,
        errno) of each not removed (ENOENT: it was not there)."""
        refused = self._batch(MAP_DELETE_BATCH, keys, None)
        if refused is not None:
            return refused
        ks = self.key_size
        return [(n, ENOENT) for n in range(len(keys) // ks) if not self.delete(keys[n * ks:(n + 1) * ks])]

    def _batch(self, command: int, keys: bytes, values: bytes | None,
               flags: int = ANY) -> list[tuple[int, int]] | None:
        """The elements refused by one MAP_*_BATCH call (made again past each element the kernel stops at:
        it stops at the first it refuses), or None where the kernel or the map type has no batch
        operations (then the caller goes one element a call, from then on)."""
        count = len(keys) // self.key_size
        if len(keys) != count * self.key_size or (values is not None and len(values) != count * self.value_size):
            raise ValueError(f"map {self.name}: a batch of whole keys and values")
        if not self._batches:
            return None
        copies: list[ctypes.Array[ctypes.c_char]] = []  # what the kernel reads where not in place, kept alive
        keys_at = _data_at(keys, copies)
        values_at = 0 if values is None else _data_at(values, copies)
        ks, vs = self.key_size, self.value_size
        attr = self._batch_attr
        failures: list[tuple[int, int]] = []
        done = 0
        while done < count:
            _BATCH_ATTR.pack_into(attr, 0, 0, 0, keys_at + done * ks, values_at and values_at + done * vs,
                                  count - done, self.fd, flags, 0)
            if _syscall(_NR, command, attr, _BATCH_ATTR.size) >= 0:
                break
            errno = ctypes.get_errno()
            went = struct.unpack_from("=I", attr, _BATCH_COUNT)[0]
            # A kernel without the command (before 5.6: EINVAL) or a map type without it (ENOTSUPP) says so
            # before touching anything, ``count`` left as we wrote it; an element refused writes back how
            # many went before it, fewer than asked.
            if not done and went == count and errno in (EINVAL, EOPNOTSUPP, ENOTSUPP):
                self._batches = False
                return None
            went = min(went, count - done - 1)  # whatever the kernel wrote back, the loop moves on
            failures.append((done + went, errno))
            done += went + 1
        return failures

    def lookup(self, key: bytes) -> bytes | None:
        attr = self._read
        attr.key = self._at(key, self.key_size, self._key)
        if _syscall(_NR, MAP_LOOKUP_ELEM, self._read_ref, _ATTR_SIZE) < 0:
            if ctypes.get_errno() == ENOENT:
                return None
            raise _error(MAP_LOOKUP_ELEM)
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
