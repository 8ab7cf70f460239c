"""Registration Request and Registration Reply (RFC 5944 sections 3.3 and 3.4).

The Identification is an NTP timestamp on the wire and counted from 2000 in the objects here
(``wire/era.py``): ``parse`` and the encoders convert, so nothing past them sees the NTP era's wrap.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag
from typing import NamedTuple

from homeagent.wire.era import MASK, OFFSET
from homeagent.wire.errors import ParseError
from homeagent.wire.extensions import HOME_AGENT_KNOWN, Extension, parse_extensions

REGISTRATION_PORT = 434
INFINITE_LIFETIME = 0xFFFF


class MessageType(IntEnum):
    REGISTRATION_REQUEST = 1
    REGISTRATION_REPLY = 3


class Flags(IntFlag):
    """Registration Request flags, byte 1, most significant bit first."""

    S = 0x80  # simultaneous bindings
    B = 0x40  # broadcast datagrams
    D = 0x20  # decapsulation by the mobile node (co-located care-of address)
    M = 0x10  # minimal encapsulation
    G = 0x08  # GRE encapsulation
    r = 0x04  # reserved, sent as zero, ignored on reception
    T = 0x02  # reverse tunnelling (RFC 3024)
    x = 0x01  # reserved, sent as zero, ignored on reception


class ReplyCode(IntEnum):
    ACCEPTED = 0
    ACCEPTED_NO_SIMULTANEOUS_BINDINGS = 1
    UNSPECIFIED = 128
    ADMINISTRATIVELY_PROHIBITED = 129
    INSUFFICIENT_RESOURCES = 130
    MOBILE_NODE_FAILED_AUTHENTICATION = 131
    FOREIGN_AGENT_FAILED_AUTHENTICATION = 132
    IDENTIFICATION_MISMATCH = 133
    POORLY_FORMED_REQUEST = 134
    TOO_MANY_SIMULTANEOUS_BINDINGS = 135
    UNKNOWN_HOME_AGENT_ADDRESS = 136
    REVERSE_TUNNEL_UNAVAILABLE = 137
    REVERSE_TUNNEL_MANDATORY = 138
    ENCAPSULATION_UNAVAILABLE = 139

    @property
    def accepted(self) -> bool:
        return self < 64


_REQUEST = struct.Struct("!BBHIIIQ")
_USUAL_HEAD = struct.Struct("!BBHIIIQBB")  # the header, and the Type and Length of the extension after it
_REPLY = struct.Struct("!BBHIIQ")
REQUEST_SIZE = _REQUEST.size  # 24
_MHAE = 32  # ExtensionType.MOBILE_HOME_AUTH
_REQUEST_TYPE = int(MessageType.REGISTRATION_REQUEST)
_REPLY_TYPE = int(MessageType.REGISTRATION_REPLY)
_new = tuple.__new__
_WITH_HMAC_MD5 = REQUEST_SIZE + 2 + 4 + 16  # the header and one MHAE with an HMAC-MD5 authenticator
REPLY_SIZE = _REPLY.size  # 20


def reply_header(code: int, lifetime: int, home_address: int, home_agent: int, identification: int) -> bytes:
    """The fixed 20 bytes of a Registration Reply (the hot path builds replies without an object).
    ``identification`` counted from 2000, as everywhere inside (wire/era.py): sent as the NTP timestamp."""
    return _REPLY.pack(_REPLY_TYPE, code, lifetime, home_address, home_agent, (identification + OFFSET) & MASK)


class _WithExtensions:
    __slots__ = ()
    extensions: tuple[Extension, ...]

    def extension(self, ext_type: int) -> Extension | None:
        """The first extension of ``ext_type``, if any."""
        for ext in self.extensions:
            if ext.type == ext_type:
                return ext
        return None


class RegistrationRequest(NamedTuple):
    """A Registration Request (RFC 5944 3.3). A named tuple, not a frozen dataclass: a Home Agent makes one
    per request, and a frozen dataclass costs several times as much to make (bench/registrations.py).
    Equal requests are equal whatever ``raw`` holds (what was received, or nothing for one built here)."""

    flags: int
    lifetime: int
    home_address: int
    home_agent: int
    care_of_address: int
    identification: int  # counted from 2000 (wire/era.py): the wire's NTP timestamp less era.OFFSET
    extensions: tuple[Extension, ...] = ()
    raw: bytes = b""  # as received: what authenticators cover

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RegistrationRequest) and self[:7] == other[:7]

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash(self[:7])

    def __repr__(self) -> str:
        return (f"RegistrationRequest(flags={self.flags:#x}, lifetime={self.lifetime}, home_address="
                f"{self.home_address}, home_agent={self.home_agent}, care_of_address={self.care_of_address}, "
                f"identification={self.identification}, extensions={self.extensions!r})")

    def extension(self, ext_type: int) -> Extension | None:
        """The first extension of ``ext_type``, if any."""
        for ext in self.extensions:
            if ext.type == ext_type:
                return ext
        return None

    @classmethod
    def parse(cls, data: bytes, known: frozenset[int] = HOME_AGENT_KNOWN) -> RegistrationRequest:
        if type(data) is not bytes:
            data = bytes(data)  # (a call to bytes() costs as much as the unpacking, even of bytes)
        if len(data) == _WITH_HMAC_MD5:
            # The usual request: the header and one Mobile-Home Authentication Extension (SPI and a 16-byte
            # authenticator), which is what the general path below would make of it. Its head is unpacked
            # with the header, and both tuples are made with tuple.__new__: a named tuple's own __new__ is
            # a Python function, and this is half the cost of the parse (bench/registrations.py).
            msg_type, flags, lifetime, hoa, ha, coa, ident, ext_type, length = _USUAL_HEAD.unpack_from(data)
            if msg_type == _REQUEST_TYPE and ext_type == _MHAE and length == 20 and _MHAE in known:
                mhae = _new(Extension, (_MHAE, data[REQUEST_SIZE + 2:], REQUEST_SIZE, 0))
                return _new(cls, (flags, lifetime, hoa, ha, coa, (ident - OFFSET) & MASK, (mhae,), data))
        if len(data) < REQUEST_SIZE:
            raise ParseError("shorter than a Registration Request")
        msg_type, flags, lifetime, hoa, ha, coa, ident = _REQUEST.unpack_from(data)
        if msg_type != MessageType.REGISTRATION_REQUEST:
            raise ParseError(f"message type {msg_type} is not a Registration Request")
        extensions = parse_extensions(data, REQUEST_SIZE, known) if len(data) > REQUEST_SIZE else ()
        return cls(flags, lifetime, hoa, ha, coa, (ident - OFFSET) & MASK, extensions, data)

    def header_bytes(self) -> bytes:
        return _REQUEST.pack(
            MessageType.REGISTRATION_REQUEST,
            self.flags,
            self.lifetime,
            self.home_address,
            self.home_agent,
            self.care_of_address,
            (self.identification + OFFSET) & MASK,
        )

    def to_bytes(self) -> bytes:
        return self.header_bytes() + b"".join(e.to_bytes() for e in self.extensions)


@dataclass(frozen=True, slots=True)
class RegistrationReply(_WithExtensions):
    code: int
    lifetime: int
    home_address: int
    home_agent: int
    identification: int  # counted from 2000 (wire/era.py), as the request's
    extensions: tuple[Extension, ...] = ()
    raw: bytes = field(default=b"", repr=False, compare=False)

    @classmethod
    def parse(cls, data: bytes, known: frozenset[int] = HOME_AGENT_KNOWN) -> RegistrationReply:
        if len(data) < REPLY_SIZE:
            raise ParseError("shorter than a Registration Reply")
        msg_type, code, lifetime, hoa, ha, ident = _REPLY.unpack_from(data)
        if msg_type != MessageType.REGISTRATION_REPLY:
            raise ParseError(f"message type {msg_type} is not a Registration Reply")
        extensions = parse_extensions(data, REPLY_SIZE, known) if len(data) > REPLY_SIZE else ()
        return cls(code, lifetime, hoa, ha, (ident - OFFSET) & MASK, extensions, bytes(data))

    def header_bytes(self) -> bytes:
        return reply_header(self.code, self.lifetime, self.home_address, self.home_agent, self.identification)

    def to_bytes(self) -> bytes:
        return self.header_bytes() + b"".join(e.to_bytes() for e in self.extensions)
