"""Authenticators of the Mobile-Home, Mobile-Foreign and Foreign-Home authentication extensions.

RFC 5944 section 3.5.1: the authenticator covers the UDP payload up to this extension (the fixed message
and every earlier extension) and this extension's Type, Length and SPI. HMAC-MD5 (RFC 2104) is the default
(section 5.1). ``keyed-md5`` is the "prefix+suffix" mode, MD5(key | data | key), which section 5.1 says
new implementations SHOULD offer for older peers; it covers what section 3.5.1 says (SPI included, as
RFC 3344 made it). ``keyed-md5-rfc2002`` is the same mode with RFC 2002's coverage, which left the SPI
out, for the oldest clients. ``hmac-sha256`` has HMAC-MD5's coverage with a 32-byte authenticator.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from hmac import compare_digest
from typing import Any

from homeagent.wire.extensions import SPI_SIZE, Extension, ExtensionType


class Algorithm(StrEnum):
    HMAC_MD5 = "hmac-md5"
    KEYED_MD5 = "keyed-md5"
    KEYED_MD5_RFC2002 = "keyed-md5-rfc2002"
    HMAC_SHA256 = "hmac-sha256"


DIGEST_SIZE = {
    Algorithm.HMAC_MD5: 16,
    Algorithm.KEYED_MD5: 16,
    Algorithm.KEYED_MD5_RFC2002: 16,
    Algorithm.HMAC_SHA256: 32,
}


try:  # CPython's own MD5: the same digest, and copying a state costs a third of OpenSSL's (see _hmac)
    from _md5 import md5 as _builtin_md5  # type: ignore[import-not-found]
except ImportError:  # an interpreter built without it
    _builtin_md5 = hashlib.md5

_CONSTRUCTORS: dict[str, Callable[..., Any]] = {"md5": _builtin_md5, "sha256": hashlib.sha256}


def _hmac(key: bytes, name: str) -> Callable[[bytes], bytes]:
    """HMAC (RFC 2104) with the keyed inner and outer hash states computed once per association.

    Copying two prepared states costs a third of ``hmac.digest``, which sets the key up on every call;
    on a Home Agent that verifies and signs every registration that is the largest single cost. For MD5
    the interpreter's built-in implementation is used: its copy is a plain memory copy where OpenSSL's
    allocates a context, which makes the whole HMAC of a registration twice as fast (bench/registrations.py).
    A closure rather than an object with ``__call__``: the interpreter calls a function faster.
    """
    new = _CONSTRUCTORS[name]
    block = new().block_size
    if len(key) > block:
        key = new(key).digest()
    key = key.ljust(block, b"\0")
    inner_copy = new(bytes(b ^ 0x36 for b in key)).copy
    outer_copy = new(bytes(b ^ 0x5C for b in key)).copy

    def mac(data: bytes) -> bytes:
        inner = inner_copy()
        inner.update(data)
        outer = outer_copy()
        outer.update(inner.digest())
        return outer.digest()

    return mac


_HMAC_HASH = {Algorithm.HMAC_MD5: "md5", Algorithm.HMAC_SHA256: "sha256"}


def _keyed_md5(key: bytes, algorithm: Algorithm) -> Callable[[bytes], bytes]:
    """Prefix+suffix keyed MD5; the RFC 2002 variant leaves the SPI (the last 4 covered bytes) out."""
    md5 = hashlib.md5
    if algorithm is Algorithm.KEYED_MD5:
        return lambda covered: md5(key + covered + key).digest()
    return lambda covered: md5(key + covered[:-SPI_SIZE] + key).digest()


_MHAE = int(ExtensionType.MOBILE_HOME_AUTH)


@dataclass(frozen=True, slots=True)
class SecurityAssociation:
    """A mobility security association: the SPI names it, the algorithm and key make authenticators.

    What every message needs is made once, at construction: the authenticator function with its key
    states, the SPI as sent, a Mobile-Home extension's head, and the length an extension of ours has.
    """

    spi: int
    algorithm: Algorithm
    key: bytes = field(repr=False)
    _mac: Callable[[bytes], bytes] = field(init=False, repr=False, compare=False, default=bytes)  # __post_init__
    _spi_bytes: bytes = field(init=False, repr=False, compare=False, default=b"")  # the SPI as sent
    _mhae_head: bytes = field(init=False, repr=False, compare=False, default=b"")  # type, length, SPI
    _length: int = field(init=False, repr=False, compare=False, default=0)  # an extension's Length: SPI, MAC

    def __post_init__(self) -> None:
        algorithm = self.algorithm
        name = _HMAC_HASH.get(algorithm)
        mac = _hmac(self.key, name) if name is not None else _keyed_md5(self.key, algorithm)
        object.__setattr__(self, "_mac", mac)
        object.__setattr__(self, "_spi_bytes", self.spi.to_bytes(SPI_SIZE, "big"))
        object.__setattr__(self, "_length", SPI_SIZE + DIGEST_SIZE[algorithm])
        object.__setattr__(self, "_mhae_head", bytes((_MHAE, self._length)) + self._spi_bytes)

    @property
    def digest_size(self) -> int:
        return DIGEST_SIZE[self.algorithm]

    def mac(self, covered: bytes) -> bytes:
        """The authenticator of ``covered``: the message up to and including this extension's SPI."""
        return self._mac(covered)

    def sign(self, message: bytes, ext_type: int = _MHAE) -> bytes:
        """Append an authentication extension of ``ext_type`` to ``message``."""
        if ext_type == _MHAE:  # every reply: its head made once
            covered = message + self._mhae_head
        else:
            covered = message + bytes((ext_type, self._length)) + self._spi_bytes
        return covered + self._mac(covered)

    def verify(self, message: bytes, ext: Extension) -> bool:
        """Whether ``ext`` (parsed from ``message``) carries this association's SPI and a valid authenticator."""
        data = ext.data
        if len(data) != self._length or not data.startswith(self._spi_bytes):
            return False
        return compare_digest(self._mac(message[: ext.offset + 2 + SPI_SIZE]), data[SPI_SIZE:])
