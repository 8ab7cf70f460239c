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
import hmac
from dataclasses import dataclass, field
from enum import StrEnum

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


class _Hmac:
    """HMAC (RFC 2104) with the keyed inner and outer hash states computed once per association.

    Copying two prepared states costs a third of ``hmac.digest``, which sets the key up on every call;
    on a Home Agent that verifies and signs every registration that is the largest single cost.
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes, name: str) -> None:
        block = hashlib.new(name).block_size
        if len(key) > block:
            key = hashlib.new(name, key).digest()
        key = key.ljust(block, b"\0")
        self._inner = hashlib.new(name, bytes(b ^ 0x36 for b in key))
        self._outer = hashlib.new(name, bytes(b ^ 0x5C for b in key))

    def __call__(self, data: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(data)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


_HMAC_HASH = {Algorithm.HMAC_MD5: "md5", Algorithm.HMAC_SHA256: "sha256"}


@dataclass(frozen=True, slots=True)
class SecurityAssociation:
    """A mobility security association: the SPI names it, the algorithm and key make authenticators."""

    spi: int
    algorithm: Algorithm
    key: bytes = field(repr=False)
    _hmac: _Hmac | None = field(init=False, repr=False, compare=False, default=None)
    _spi_bytes: bytes = field(init=False, repr=False, compare=False, default=b"")  # the SPI as sent
    _mhae_head: bytes = field(init=False, repr=False, compare=False, default=b"")  # type, length, SPI

    def __post_init__(self) -> None:
        if self.algorithm in _HMAC_HASH:
            object.__setattr__(self, "_hmac", _Hmac(self.key, _HMAC_HASH[self.algorithm]))
        object.__setattr__(self, "_spi_bytes", self.spi.to_bytes(SPI_SIZE, "big"))
        object.__setattr__(self, "_mhae_head", bytes((ExtensionType.MOBILE_HOME_AUTH,
                                                      SPI_SIZE + DIGEST_SIZE[self.algorithm])) + self._spi_bytes)

    @property
    def digest_size(self) -> int:
        return DIGEST_SIZE[self.algorithm]

    def mac(self, covered: bytes) -> bytes:
        """The authenticator of ``covered``: the message up to and including this extension's SPI."""
        if self._hmac is not None:
            return self._hmac(covered)
        if self.algorithm is Algorithm.KEYED_MD5:
            return hashlib.md5(self.key + covered + self.key).digest()
        return hashlib.md5(self.key + covered[:-SPI_SIZE] + self.key).digest()

    def sign(self, message: bytes, ext_type: int = ExtensionType.MOBILE_HOME_AUTH) -> bytes:
        """Append an authentication extension of ``ext_type`` to ``message``."""
        if ext_type == ExtensionType.MOBILE_HOME_AUTH:  # every reply: its head made once
            covered = message + self._mhae_head
        else:
            covered = message + bytes((ext_type, SPI_SIZE + DIGEST_SIZE[self.algorithm])) + self._spi_bytes
        hmac_ = self._hmac
        return covered + (hmac_(covered) if hmac_ is not None else self.mac(covered))

    def verify(self, message: bytes, ext: Extension) -> bool:
        """Whether ``ext`` (parsed from ``message``) carries this association's SPI and a valid authenticator."""
        data = ext.data
        if data[:SPI_SIZE] != self._spi_bytes or len(data) != SPI_SIZE + DIGEST_SIZE[self.algorithm]:
            return False
        covered = message[: ext.offset + 2 + SPI_SIZE]
        return hmac.compare_digest(self.mac(covered), data[SPI_SIZE:])
