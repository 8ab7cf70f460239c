"""Mobile IP extensions (RFC 5944 section 1.9 and 3.5).

Extensions are kept as raw values with their offset in the message: an authenticator covers every byte
before its own extension's SPI, so the offset is all the authentication code needs.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import NamedTuple

from homeagent.wire.errors import ParseError


class ExtensionType(IntEnum):
    MOBILE_HOME_AUTH = 32  # RFC 5944 3.5.2
    MOBILE_FOREIGN_AUTH = 33  # RFC 5944 3.5.3
    FOREIGN_HOME_AUTH = 34  # RFC 5944 3.5.4
    GENERALIZED_AUTH = 36  # RFC 3012, long form
    CVSE = 38  # RFC 3025, long form
    NAI = 131  # RFC 2794
    NVSE = 134  # RFC 3025


#: Extensions with a Sub-Type or Reserved byte and a 16-bit Length (RFC 3012, RFC 3025).
LONG_FORM = frozenset({ExtensionType.GENERALIZED_AUTH, ExtensionType.CVSE})
AUTHENTICATION = frozenset(
    {ExtensionType.MOBILE_HOME_AUTH, ExtensionType.MOBILE_FOREIGN_AUTH, ExtensionType.FOREIGN_HOME_AUTH}
)
#: What a Home Agent understands in a Registration Request. Unknown types below 128 make the whole
#: message unacceptable; unknown types from 128 up are skipped (RFC 5944 section 1.9).
HOME_AGENT_KNOWN = frozenset(AUTHENTICATION | {ExtensionType.NAI})
SKIPPABLE_FROM = 128
PAD = 0
SPI_SIZE = 4
_SPI = struct.Struct("!I")


class Extension(NamedTuple):
    type: int
    data: bytes
    offset: int = 0  # where the extension starts in its message
    subtype: int = 0  # the long form's Sub-Type (RFC 3012) or Reserved (RFC 3025) byte

    @property
    def spi(self) -> int:
        """The Security Parameter Index of an authentication extension (read for every registration: one
        unpacking, where a slice and int.from_bytes take twice as long)."""
        data = self.data
        if len(data) >= SPI_SIZE:
            return _SPI.unpack_from(data)[0]
        return int.from_bytes(data, "big")  # (parse_extensions makes no authentication extension this short)

    @property
    def authenticator(self) -> bytes:
        return self.data[SPI_SIZE:]

    def to_bytes(self) -> bytes:
        return encode_extension(self.type, self.data, self.subtype)


def encode_extension(ext_type: int, data: bytes, subtype: int = 0) -> bytes:
    if ext_type in LONG_FORM:
        if len(data) > 0xFFFF:
            raise ValueError("extension too long")
        return bytes((ext_type, subtype)) + len(data).to_bytes(2, "big") + data
    if len(data) > 0xFF:
        raise ValueError("extension too long for the short form")
    return bytes((ext_type, len(data))) + data


def parse_extensions(
    message: bytes, start: int, known: frozenset[int] = HOME_AGENT_KNOWN
) -> tuple[Extension, ...]:
    """Parse the extensions of ``message`` from ``start`` to its end.

    Raises ParseError with code 134 (poorly formed) for lengths that overrun the message or authentication
    extensions too short for an SPI, and with code None (silently discard) for an unrecognised
    non-skippable extension. Unrecognised skippable extensions are left out of the result.
    """
    out: list[Extension] = []
    end = len(message)
    i = start
    while i < end:
        ext_type = message[i]
        if ext_type == PAD:  # One-byte Padding has neither Length nor Data (RFC 5944 section 1.8)
            i += 1
            continue
        if ext_type in LONG_FORM:
            if i + 4 > end:
                raise ParseError(f"truncated long extension header at {i}", 134)
            length = int.from_bytes(message[i + 2 : i + 4], "big")
            data_at = i + 4
        else:
            if i + 2 > end:
                raise ParseError(f"truncated extension header at {i}", 134)
            length = message[i + 1]
            data_at = i + 2
        following = data_at + length
        if following > end:
            raise ParseError(f"extension type {ext_type} at {i} overruns the message", 134)
        if ext_type in known:
            if ext_type in AUTHENTICATION and length < SPI_SIZE:
                raise ParseError(f"authentication extension {ext_type} without an SPI", 134)
            subtype = message[i + 1] if ext_type in LONG_FORM else 0
            out.append(Extension(ext_type, message[data_at:following], i, subtype))
        elif ext_type < SKIPPABLE_FROM:
            raise ParseError(f"unrecognised non-skippable extension {ext_type}", None)
        i = following
    return tuple(out)
