"""Parsers under arbitrary and near-valid input: ParseError is the only exception that may escape, and what
does parse is consistent with the bytes it came from."""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from homeagent.wire.errors import ParseError
from homeagent.wire.extensions import AUTHENTICATION, HOME_AGENT_KNOWN, LONG_FORM, parse_extensions
from homeagent.wire.registration import RegistrationReply, RegistrationRequest

FAST = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MEDIUM = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])

KNOWN_SETS = st.sampled_from([HOME_AGENT_KNOWN, frozenset(), frozenset({36, 38, 32}), frozenset(range(256))])
INTERESTING_TYPES = st.one_of(st.sampled_from([0, 32, 33, 34, 36, 38, 127, 128, 130, 131, 134, 200, 255]),
                              st.integers(0, 255))


def check_extensions(data: bytes, start: int, exts, known) -> None:
    """Every parsed extension is known, sits where it says, and its data are the bytes that follow it."""
    previous_end = start
    for e in exts:
        assert e.type in known
        assert start <= e.offset < len(data) and e.offset >= previous_end
        assert data[e.offset] == e.type
        header = 4 if e.type in LONG_FORM else 2
        length = int.from_bytes(data[e.offset + 2:e.offset + 4], "big") if e.type in LONG_FORM else data[e.offset + 1]
        assert length == len(e.data)
        assert data[e.offset + header:e.offset + header + length] == e.data
        if e.type in AUTHENTICATION:
            assert len(e.data) >= 4
        previous_end = e.offset + header + length


def parse_request(data: bytes, known=HOME_AGENT_KNOWN):
    try:
        req = RegistrationRequest.parse(data, known)
    except ParseError as exc:
        assert exc.code in (None, 134)
        return None
    assert len(data) >= 24 and data[0] == 1
    assert req.raw == data
    assert req.header_bytes() == data[:24]
    check_extensions(data, 24, req.extensions, known)
    return req


def parse_reply(data: bytes, known=HOME_AGENT_KNOWN):
    try:
        reply = RegistrationReply.parse(data, known)
    except ParseError as exc:
        assert exc.code in (None, 134)
        return None
    assert len(data) >= 20 and data[0] == 3
    assert reply.raw == data and reply.header_bytes() == data[:20]
    check_extensions(data, 20, reply.extensions, known)
    return reply


@FAST
@given(st.binary(max_size=600))
def test_request_parse_arbitrary_bytes(data):
    parse_request(data)


@FAST
@given(st.binary(max_size=600))
def test_reply_parse_arbitrary_bytes(data):
    parse_reply(data)


@FAST
@given(st.binary(max_size=600), st.integers(0, 620), KNOWN_SETS)
def test_parse_extensions_arbitrary_bytes(data, start, known):
    try:
        exts = parse_extensions(data, start, known)
    except ParseError as exc:
        assert exc.code in (None, 134)
        return
    check_extensions(data, start, exts, known)


@FAST
@given(st.binary(max_size=576))
def test_request_parse_with_a_valid_header(tail):
    # Arbitrary bytes after a valid fixed part reach the extension parser every time.
    parse_request(struct.pack("!BBHIIIQ", 1, 0, 600, 1, 2, 3, 4) + tail)
    parse_reply(struct.pack("!BBHIIQ", 3, 0, 600, 1, 2, 4) + tail)


# -- near-valid messages, then mutated ----------------------------------------------------------------


@st.composite
def extension_bytes(draw):
    ext_type = draw(INTERESTING_TYPES)
    data = draw(st.binary(max_size=40))
    if ext_type in LONG_FORM:
        return bytes((ext_type, draw(st.integers(0, 255)))) + len(data).to_bytes(2, "big") + data
    return bytes((ext_type, len(data))) + data


@st.composite
def near_valid(draw, fixed_size: int, msg_type: int):
    header = bytes((msg_type,)) + draw(st.binary(min_size=fixed_size - 1, max_size=fixed_size - 1))
    exts = draw(st.lists(extension_bytes(), max_size=6))
    if draw(st.booleans()):  # an MHAE, as every real message has
        exts.append(bytes((32, 20)) + draw(st.binary(min_size=20, max_size=20)))
    return header + b"".join(exts)


@st.composite
def mutated(draw, base):
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete", "append"]))
        if kind in ("flip", "set", "delete") and data:
            i = draw(st.integers(0, len(data) - 1))
            if kind == "flip":
                data[i] ^= 1 << draw(st.integers(0, 7))
            elif kind == "set":
                data[i] = draw(st.sampled_from([0, 1, 3, 4, 0x7F, 0x80, 0xFF, 20, 32, 36, 38]))
            else:
                del data[i]
        elif kind == "truncate":
            del data[draw(st.integers(0, len(data))):]
        elif kind == "insert":
            i = draw(st.integers(0, len(data)))
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "append":
            data += draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


@MEDIUM
@given(mutated(near_valid(24, 1)), KNOWN_SETS)
def test_request_parse_near_valid_mutated(data, known):
    parse_request(data, known)


@MEDIUM
@given(mutated(near_valid(20, 3)), KNOWN_SETS)
def test_reply_parse_near_valid_mutated(data, known):
    parse_reply(data, known)


@MEDIUM
@given(st.lists(st.tuples(st.sampled_from([32, 33, 34, 131, 128, 200, 255]), st.binary(min_size=4, max_size=60)),
                max_size=8))
def test_well_formed_extension_lists_parse_completely(items):
    message = b"".join(bytes((t, len(d))) + d for t, d in items)
    exts = parse_extensions(message, 0)
    expected = [(t, d) for t, d in items if t in HOME_AGENT_KNOWN]
    assert [(e.type, e.data) for e in exts] == expected
    check_extensions(message, 0, exts, HOME_AGENT_KNOWN)
