"""Messages between the Home Agents of a redundancy group (US 7,227,863 FIG 10 to 14), our encoding.

``docs/protocol.md`` is the specification: type values, layouts, the Mobile Node Bindings extension that
carries a node's state (bindings, tombstones, cleared: merged by the rules of "Merging after a partition"),
and the Home Agent - Home Agent authentication extension with its timestamp. Every Identification and
timestamp is an NTP timestamp on the wire and counted from 2000 in the dataclasses (``wire/era.py``): the
encoders and the parser here convert.
"""

from __future__ import annotations

import hmac
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

from homeagent.wire.auth import SecurityAssociation
from homeagent.wire.era import MASK, OFFSET
from homeagent.wire.errors import ParseError


class RedundancyType(IntEnum):
    BINDING_UPDATE = 200  # FIG 10
    BINDING_UPDATE_ACK = 201  # FIG 11
    BINDING_TABLE_REQUEST = 202  # FIG 12
    BINDING_TABLE_REPLY = 203  # FIG 13
    BINDING_TABLE_REPLY_ACK = 204  # FIG 14
    ADVERTISEMENT = 205  # liveness, priority and role of a member


MOBILE_NODE_BINDINGS = 101  # extension: one mobile node's last Identification and bindings
HA_HA_AUTH = 100  # extension: SPI, sender timestamp, authenticator
MORE_BIND = 0x80
ASK_BACK = 0x80  # Binding Table Request flag: "and ask me for mine" (docs/protocol.md)
DIGEST = 0x40  # Binding Table Request flag: "send only the buckets whose digest differs from these"
START = 0x20  # Binding Table Request flag: "I am starting": the active member answers with its table
DEFERRED = 1  # Binding Table Reply code: "not the active member: ask me for what differs once its table is in"
DIGEST_BUCKETS = 256  # digests a DIGEST request carries, 4 bytes each: bucket = home address % 256
_DIGESTS = struct.Struct(f"!{DIGEST_BUCKETS}I")
MAX_BINDINGS_PER_NODE = 10  # records (bindings, tombstones, cleared) one short-form extension can carry
YOU_LAG = 0x01  # Advertisement flag: "you missed what I replicated" (the receiver is out of sync)
OUT_OF_SYNC = 0x02  # Advertisement flag: "I am out of sync": no candidate while an in-sync member is up
STOOD_DOWN = 0x04  # Advertisement flag: "I was active until I heard a better active member, just now"
PREEMPTING = 0x08  # Advertisement flag: "I took over from an active member I heard, just now"
MAX_MESSAGES = 256  # per datagram, sent or received (docs/protocol.md, "Bounds")


class AckCode(IntEnum):
    APPLIED = 0
    NOT_NEWER = 1  # we already hold this Identification or a newer one: nothing to do, stop resending
    REFUSED = 128  # e.g. a home address this member does not serve


NOT_TAKEN = 1  # Binding Table Reply Ack code: a late reply to a download we closed, acknowledged unread


class BindingRecord(NamedTuple):
    """One binding of a mobile node as it travels between Home Agents.

    Tuples, not dataclasses: a table download makes a million of them, and a tuple is made in a tenth of
    the time.
    """

    care_of_address: int
    home_agent: int
    identification: int
    lifetime: int  # granted, seconds (never 0: a record with Lifetime 0 is a tombstone or cleared)
    flags: int
    remaining_ms: int  # 0: it has run out, and the receiver's expiry takes it as the sender's would


class TombstoneRecord(NamedTuple):
    """A de-registration of one care-of address as it travels: a record with Lifetime 0 (docs/protocol.md,
    "Merging after a partition")."""

    care_of_address: int
    identification: int
    remaining_ms: int  # until it is forgotten


class MobileNodeBindings(NamedTuple):
    """A mobile node's whole state: its last accepted Identification, the Identification of the last
    operation that removed all its bindings (``cleared``; None: the default, see ``cleared_of``), every
    binding it holds and its tombstones.

    Updates carry state, not operations, and a receiver merges it into its own (core/node_state.py), so
    that whatever was lost, reordered or applied on the other side of a partition, members converge on
    what the operations in Identification order give.
    """

    home_address: int
    identification: int
    bindings: tuple[BindingRecord, ...] = ()
    tombstones: tuple[TombstoneRecord, ...] = ()
    cleared: int | None = None


def default_cleared(identification: int, bindings: Sequence[tuple[int, ...]]) -> int:
    """``cleared`` when no record says it: the oldest binding's Identification, or with no binding the last
    Identification. ``bindings`` are BindingRecord-shaped tuples."""
    return min((b[2] for b in bindings), default=identification)


def cleared_of(node: MobileNodeBindings) -> int:
    return node.cleared if node.cleared is not None else default_cleared(node.identification, node.bindings)


def aged_node(node: MobileNodeBindings, elapsed_ms: int) -> MobileNodeBindings:
    """The same state ``elapsed_ms`` later, for a resend: remaining lifetimes shorter by that much. A
    binding that runs out stays, with Remaining 0 (the receiver's expiry takes it as ours did, and the
    default ``cleared`` does not move); a tombstone that runs out goes. Never larger than ``node``."""
    return MobileNodeBindings(
        node.home_address,
        node.identification,
        tuple(r._replace(remaining_ms=max(0, r.remaining_ms - elapsed_ms)) for r in node.bindings),
        tuple(t._replace(remaining_ms=t.remaining_ms - elapsed_ms) for t in node.tombstones
              if t.remaining_ms > elapsed_ms),
        node.cleared,
    )


_NODE = struct.Struct("!IQ")  # home address, last Identification
_BINDING = struct.Struct("!IIQHBxI")  # care-of, home agent, identification, lifetime, flags, remaining ms
NODE_SIZE, BINDING_SIZE = _NODE.size, _BINDING.size  # 12, 24


def encode_node(node: MobileNodeBindings) -> bytes:
    return encode_node_fields(node.home_address, node.identification, node.bindings, node.cleared, node.tombstones)


_NODE_WITH_ONE = struct.Struct("!BBIQIIQHBxI")  # the extension of a node with one binding, in one call


def encode_node_fields(
    home_address: int,
    identification: int,
    bindings: Sequence[tuple[int, ...]],
    cleared: int | None = None,
    tombstones: Sequence[tuple[int, int, int]] = (),
) -> bytes:
    """A Mobile Node Bindings extension from plain fields: ``bindings`` BindingRecord-shaped tuples,
    ``tombstones`` TombstoneRecord-shaped ones. ``cleared`` goes as a record (Lifetime 0, the home address
    as care-of address) only when it is not the default for the bindings sent."""
    if cleared is not None and cleared == default_cleared(identification, bindings):
        cleared = None
    if len(bindings) == 1 and not tombstones and cleared is None:
        coa, ha, ident, lifetime, flags, ms = bindings[0]
        return _NODE_WITH_ONE.pack(MOBILE_NODE_BINDINGS, NODE_SIZE + BINDING_SIZE, home_address,
                                   (identification + OFFSET) & MASK, coa, ha, (ident + OFFSET) & MASK, lifetime,
                                   flags, ms)
    if len(bindings) + len(tombstones) + (cleared is not None) > MAX_BINDINGS_PER_NODE:
        raise ValueError("too many records for one Mobile Node Bindings extension")
    body = (
        _NODE.pack(home_address, (identification + OFFSET) & MASK)
        + b"".join(_BINDING.pack(coa, ha, (ident + OFFSET) & MASK, lifetime, flags, ms)
                   for coa, ha, ident, lifetime, flags, ms in bindings)
        + b"".join(_BINDING.pack(coa, 0, (ident + OFFSET) & MASK, 0, 0, ms) for coa, ident, ms in tombstones)
        + (_BINDING.pack(home_address, 0, (cleared + OFFSET) & MASK, 0, 0, 0) if cleared is not None else b"")
    )
    return bytes((MOBILE_NODE_BINDINGS, len(body))) + body


def encoded_node_size(records: int) -> int:
    return 2 + NODE_SIZE + BINDING_SIZE * records


def _decode_node(data: bytes) -> MobileNodeBindings:
    if len(data) < NODE_SIZE or (len(data) - NODE_SIZE) % BINDING_SIZE:
        raise ParseError("Mobile Node Bindings extension of a bad length")
    hoa, ident = _NODE.unpack_from(data)
    ident = (ident - OFFSET) & MASK
    if len(data) == NODE_SIZE + BINDING_SIZE:
        coa, ha, rid, lifetime, flags, ms = _BINDING.unpack_from(data, NODE_SIZE)
        if lifetime and coa != hoa:  # the usual node: one binding
            record = BindingRecord(coa, ha, (rid - OFFSET) & MASK, lifetime, flags, ms)
            return MobileNodeBindings(hoa, ident, (record,))
    bindings: list[BindingRecord] = []
    tombstones: list[TombstoneRecord] = []
    cleared: int | None = None
    for coa, ha, rid, lifetime, flags, ms in _BINDING.iter_unpack(data[NODE_SIZE:]):
        rid = (rid - OFFSET) & MASK
        if lifetime:
            if coa == hoa:
                raise ParseError("a binding whose care-of address is the home address")
            bindings.append(BindingRecord(coa, ha, rid, lifetime, flags, ms))
        elif ha or flags:
            raise ParseError("a record with Lifetime 0 carries a Home Agent or Flags")
        elif coa != hoa:
            tombstones.append(TombstoneRecord(coa, rid, ms))
        elif cleared is not None or ms:
            raise ParseError("a second cleared record, or one with a Remaining Lifetime")
        else:
            cleared = rid
    if cleared is not None and cleared == default_cleared(ident, bindings):
        cleared = None  # sent although it is the default: the same state as without it
    return MobileNodeBindings(hoa, ident, tuple(bindings), tuple(tombstones), cleared)


# -- the fixed parts ---------------------------------------------------------------------------------

_UPDATE = struct.Struct("!BBHIIIIQ")  # type, flags, granted, remaining ms, hoa, ha, coa, identification
_UPDATE_ACK = struct.Struct("!BBHIQ")  # type, code, reserved, hoa, identification
_REQUEST = struct.Struct("!BBBxQ")  # type, NumHA, flags, reserved, identification; then NumHA addresses
_REPLY = struct.Struct("!BBHBxHIQ")  # type, code, NumBind, flags (MoreBind), rsvd, rsvd, sequence, identification
_REPLY_ACK = struct.Struct("!BBBxIQ")  # type, code, flags (MoreBind), rsvd, sequence, identification
_ADVERT = struct.Struct("!BBBBHH")  # type, priority, role, flags, advertisement interval (ms), reserved


@dataclass(frozen=True, slots=True)
class BindingUpdate:
    """FIG 10: a registration or de-registration accepted by the sender, and the node's resulting state."""

    flags: int
    lifetime: int  # granted
    remaining_ms: int
    home_address: int
    home_agent: int
    care_of_address: int
    identification: int
    node: MobileNodeBindings | None = None  # present when the state is not just the fixed part's binding

    def body(self) -> bytes:
        fixed = _UPDATE.pack(
            RedundancyType.BINDING_UPDATE, self.flags, self.lifetime, self.remaining_ms, self.home_address,
            self.home_agent, self.care_of_address, (self.identification + OFFSET) & MASK,
        )
        return fixed + encode_node(self.node) if self.node is not None else fixed

    def aged(self, elapsed_ms: int) -> BindingUpdate:
        """The same update ``elapsed_ms`` later, for a resend: the same state, its remaining lifetimes
        shorter by that much (a resend must not lengthen a binding; one that ran out meanwhile goes with
        Remaining 0, see ``aged_node``). Never newer state: that goes in a new update, under its own
        Identification (issue 10)."""
        if elapsed_ms <= 0:
            return self
        node = aged_node(self.node, elapsed_ms) if self.node is not None else None
        return BindingUpdate(self.flags, self.lifetime, max(0, self.remaining_ms - elapsed_ms), self.home_address,
                             self.home_agent, self.care_of_address, self.identification, node)

    def state(self) -> MobileNodeBindings:
        """The mobile node's bindings after this update."""
        if self.node is not None:
            return self.node
        if self.lifetime == 0:
            return MobileNodeBindings(self.home_address, self.identification)
        record = BindingRecord(
            self.care_of_address, self.home_agent, self.identification, self.lifetime, self.flags, self.remaining_ms
        )
        return MobileNodeBindings(self.home_address, self.identification, (record,))


@dataclass(frozen=True, slots=True)
class BindingUpdateAck:
    """FIG 11."""

    code: int
    home_address: int
    identification: int

    def body(self) -> bytes:
        return _UPDATE_ACK.pack(RedundancyType.BINDING_UPDATE_ACK, self.code, 0, self.home_address,
                                (self.identification + OFFSET) & MASK)


@dataclass(frozen=True, slots=True)
class BindingTableRequest:
    """FIG 12: the sender wants every member's table; the addresses are the members it knows. With
    DIGEST, only the part that differs from the sender's: it carries the digest of each bucket of the
    sender's table (docs/protocol.md, "Reconciliation by digest")."""

    identification: int
    home_agents: tuple[int, ...] = ()
    flags: int = 0  # ASK_BACK: ask for the sender's table too; DIGEST: only the buckets that differ
    digests: tuple[int, ...] = ()  # DIGEST_BUCKETS of them, with DIGEST only

    def body(self) -> bytes:
        if len(self.home_agents) > 255:
            raise ValueError("NumHA is one byte")
        digests = _DIGESTS.pack(*self.digests) if self.flags & DIGEST else b""
        return (
            _REQUEST.pack(RedundancyType.BINDING_TABLE_REQUEST, len(self.home_agents), self.flags,
                          (self.identification + OFFSET) & MASK)
            + digests
            + b"".join(a.to_bytes(4, "big") for a in self.home_agents)
        )


@dataclass(frozen=True, slots=True)
class BindingTableReply:
    """FIG 13: part ``sequence`` of a table transfer; ``more`` (MoreBind) on every part but the last."""

    code: int
    more: bool
    sequence: int
    identification: int
    nodes: tuple[MobileNodeBindings, ...] = ()

    def body(self) -> bytes:
        return self.header(self.code, len(self.nodes), self.more, self.sequence, self.identification) + b"".join(
            encode_node(n) for n in self.nodes
        )

    @staticmethod
    def header(code: int, count: int, more: bool, sequence: int, identification: int) -> bytes:
        return _REPLY.pack(
            RedundancyType.BINDING_TABLE_REPLY, code, count, MORE_BIND if more else 0, 0, sequence,
            (identification + OFFSET) & MASK,
        )


REPLY_HEADER_SIZE = _REPLY.size


@dataclass(frozen=True, slots=True)
class BindingTableReplyAck:
    """FIG 14."""

    code: int
    more: bool
    sequence: int
    identification: int

    def body(self) -> bytes:
        return _REPLY_ACK.pack(
            RedundancyType.BINDING_TABLE_REPLY_ACK, self.code, MORE_BIND if self.more else 0, self.sequence,
            (self.identification + OFFSET) & MASK,
        )


@dataclass(frozen=True, slots=True)
class Advertisement:
    """A member's heartbeat: its priority (0: resigning) and role, every ``interval_ms``."""

    priority: int
    role: int
    interval_ms: int
    flags: int = 0

    def body(self) -> bytes:
        return _ADVERT.pack(RedundancyType.ADVERTISEMENT, self.priority, self.role, self.flags, self.interval_ms, 0)


RedundancyMessage = (
    BindingUpdate | BindingUpdateAck | BindingTableRequest | BindingTableReply | BindingTableReplyAck | Advertisement
)


# -- parsing -----------------------------------------------------------------------------------------


class MessageError(ParseError):
    """One message is bad, but where it ends is known: the messages after it in the datagram still count.
    A receiver rejects the message, not the datagram (issue 10)."""

    def __init__(self, reason: str, end: int) -> None:
        super().__init__(reason)
        self.end = end


def _nodes(data: bytes, i: int, count: int | None) -> tuple[list[MobileNodeBindings], int]:
    """``count`` Mobile Node Bindings extensions from ``i`` (None: as many as follow); and where they end.
    Their extent is found first, so a bad extension within it is a MessageError, not the datagram's end."""
    spans: list[tuple[int, int]] = []
    end = len(data)
    while (count is None or len(spans) < count) and i < end and data[i] == MOBILE_NODE_BINDINGS:
        if i + 2 > end:
            raise ParseError(f"truncated extension at {i}")
        following = i + 2 + data[i + 1]
        if following > end:
            raise ParseError("extension overruns the message")
        spans.append((i + 2, following))
        i = following
    if count is not None and len(spans) != count:
        raise MessageError("NumBind does not match the extensions", i)
    try:
        return [_decode_node(data[a:b]) for a, b in spans], i
    except ParseError as exc:
        raise MessageError(exc.reason, i) from None


def _parse_one(body: bytes, i: int) -> tuple[RedundancyMessage, int]:
    """The message at offset ``i`` and the offset after it."""
    t = body[i]
    if t == RedundancyType.BINDING_UPDATE:
        _, flags, granted, remaining, hoa, ha, coa, ident = _UPDATE.unpack_from(body, i)
        ident = (ident - OFFSET) & MASK
        nodes, end = _nodes(body, i + _UPDATE.size, None)
        if len(nodes) > 1 or (nodes and (nodes[0].home_address != hoa or nodes[0].identification != ident)):
            raise MessageError("a Binding Update carries at most its own node's bindings", end)
        return BindingUpdate(flags, granted, remaining, hoa, ha, coa, ident, nodes[0] if nodes else None), end
    if t == RedundancyType.BINDING_UPDATE_ACK:
        _, code, _, hoa, ident = _UPDATE_ACK.unpack_from(body, i)
        return BindingUpdateAck(code, hoa, (ident - OFFSET) & MASK), i + _UPDATE_ACK.size
    if t == RedundancyType.BINDING_TABLE_REQUEST:
        _, count, flags, ident = _REQUEST.unpack_from(body, i)
        start = i + _REQUEST.size
        digests: tuple[int, ...] = ()
        if flags & DIGEST:
            digests = _DIGESTS.unpack_from(body, start)
            start += _DIGESTS.size
        end = start + 4 * count
        if end > len(body):
            raise ParseError("NumHA overruns the message")
        addrs = tuple(int.from_bytes(body[j : j + 4], "big") for j in range(start, end, 4))
        return BindingTableRequest((ident - OFFSET) & MASK, addrs, flags, digests), end
    if t == RedundancyType.BINDING_TABLE_REPLY:
        _, code, count, flags, _, seq, ident = _REPLY.unpack_from(body, i)
        nodes, end = _nodes(body, i + _REPLY.size, count)
        return BindingTableReply(code, bool(flags & MORE_BIND), seq, (ident - OFFSET) & MASK, tuple(nodes)), end
    if t == RedundancyType.BINDING_TABLE_REPLY_ACK:
        _, code, flags, seq, ident = _REPLY_ACK.unpack_from(body, i)
        return BindingTableReplyAck(code, bool(flags & MORE_BIND), seq, (ident - OFFSET) & MASK), i + _REPLY_ACK.size
    if t == RedundancyType.ADVERTISEMENT:
        _, prio, role, flags, interval, _ = _ADVERT.unpack_from(body, i)
        return Advertisement(prio, role, interval, flags), i + _ADVERT.size
    raise ParseError(f"unknown redundancy message type {t}")


def read_messages(body: bytes) -> tuple[list[RedundancyMessage], list[ParseError]]:
    """The messages of a datagram's body that parse, and an error for each that does not. A bad message
    whose end is known (a MessageError) is skipped; one whose end is not (an unknown type, a truncation,
    a length that overruns) ends the reading, since nothing after it can be found (docs/protocol.md,
    "Bounds"). The seal covered the whole body: what parses is the sender's. More than ``MAX_MESSAGES``:
    none."""
    if not body:
        return [], [ParseError("empty")]
    out: list[RedundancyMessage] = []
    errors: list[ParseError] = []
    i = 0
    while i < len(body):
        if len(out) + len(errors) == MAX_MESSAGES:  # no sender packs more: nothing in it is acted on
            return [], [ParseError(f"more than {MAX_MESSAGES} messages in one datagram")]
        try:
            message, i = _parse_one(body, i)
        except MessageError as exc:
            errors.append(exc)
            i = exc.end
            continue
        except ParseError as exc:
            errors.append(exc)
            break
        except struct.error as exc:
            errors.append(ParseError(f"truncated message at {i}: {exc}"))
            break
        out.append(message)
    return out, errors


def parse_messages(body: bytes) -> list[RedundancyMessage]:
    """Every message of a datagram's body: one, or several back to back (docs/protocol.md); ParseError
    if any is bad."""
    messages, errors = read_messages(body)
    if errors:
        raise errors[0]
    return messages


def parse_body(body: bytes) -> RedundancyMessage:
    """Exactly one message (a body without its authentication extension)."""
    messages = parse_messages(body)
    if len(messages) != 1:
        raise ParseError(f"{len(messages)} messages where one was expected")
    return messages[0]


# -- Home Agent - Home Agent authentication ------------------------------------------------------------

# Of the redundancy protocol; in every seal (docs/protocol.md, "Versions"). 3: a node's state carries
# cleared and tombstones, and is merged, not replaced (a version 2 member would take a tombstone for a binding).
VERSION = 3
_AUTH_HEAD = struct.Struct("!BBBxIQ")  # type, length, version, reserved, SPI, timestamp
_V1_AUTH_HEAD_SIZE = 14  # version 1's head (no version byte): recognised only to say so
_CONVERSATION = struct.Struct("!II")  # sender, receiver: covered by the authenticator, never sent
AUTH_HEAD_SIZE = SEAL_OVERHEAD = _AUTH_HEAD.size  # 16, plus the authenticator


def seal(body: bytes, sa: SecurityAssociation, timestamp: int, sender: int, receiver: int) -> bytes:
    """Append the HA-HA authentication extension. Its authenticator covers the conversation (the
    sender's and the receiver's addresses: a member's own, or the multicast group it is sent to) and then
    the body, its own head and the timestamp, so a message re-sent from another address, or to another
    member, no longer verifies."""
    covered = body + _AUTH_HEAD.pack(HA_HA_AUTH, 14 + sa.digest_size, VERSION, sa.spi, (timestamp + OFFSET) & MASK)
    return covered + sa.mac(_CONVERSATION.pack(sender, receiver) + covered)


class SealError(ParseError):
    """The datagram does not carry a valid seal of this association for this conversation."""


class VersionError(SealError):
    """The datagram is sealed by a member that speaks another version of the protocol."""


def unseal(datagram: bytes, sa: SecurityAssociation, sender: int, receiver: int) -> tuple[bytes, int]:
    """(body, timestamp) of a datagram that ``sender`` sealed with ``sa`` for ``receiver``; SealError
    otherwise. The seal is the last extension and its size is the association's, so it is found from the
    end."""
    digest = sa.digest_size
    start = len(datagram) - AUTH_HEAD_SIZE - digest
    if start < 1 or datagram[start] != HA_HA_AUTH or datagram[start + 1] != 14 + digest:
        old = len(datagram) - _V1_AUTH_HEAD_SIZE - digest
        if old >= 1 and datagram[old] == HA_HA_AUTH and datagram[old + 1] == 12 + digest:
            raise VersionError(f"redundancy protocol version 1 (this member speaks {VERSION})")
        raise SealError("no Home Agent - Home Agent authentication extension of the expected size")
    _, _, version, spi, timestamp = _AUTH_HEAD.unpack_from(datagram, start)
    if version != VERSION:
        raise VersionError(f"redundancy protocol version {version} (this member speaks {VERSION})")
    covered_end = start + AUTH_HEAD_SIZE
    mac = sa.mac(_CONVERSATION.pack(sender, receiver) + datagram[:covered_end])
    if spi != sa.spi or not hmac.compare_digest(mac, datagram[covered_end:]):
        raise SealError("authentication failed")
    return datagram[:start], (timestamp - OFFSET) & MASK


DIGEST_SIZES = (16, 32)  # of the algorithms a seal may use


def unsealed_body(datagram: bytes, digest_size: int) -> bytes:
    """The body of a datagram whose seal did not verify, for a diagnosis only (never to act on)."""
    return datagram[: max(0, len(datagram) - AUTH_HEAD_SIZE - digest_size)]


def reply_capacity(max_datagram: int, digest_size: int) -> int:
    """Bytes of Mobile Node Bindings extensions that fit one Binding Table Reply."""
    return max_datagram - REPLY_HEADER_SIZE - AUTH_HEAD_SIZE - digest_size

