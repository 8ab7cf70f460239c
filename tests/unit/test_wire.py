"""Wire formats: Registration Request/Reply (RFC 5944 3.3, 3.4), extensions (1.8-1.10), authenticators."""

from __future__ import annotations

import hashlib
import hmac
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from homeagent.wire.auth import Algorithm, SecurityAssociation
from homeagent.wire.errors import ParseError
from homeagent.wire.extensions import (
    Extension, ExtensionType, encode_extension, parse_extensions,
)
from homeagent.wire.registration import (
    REPLY_SIZE, REQUEST_SIZE, Flags, MessageType, RegistrationReply, RegistrationRequest, ReplyCode, reply_header,
)

from .support import HA, HOA, COA, ext, header, held, mhae

u32 = st.integers(0, 0xFFFFFFFF)
u64 = st.integers(0, (1 << 64) - 1)


# -- the fixed parts ----------------------------------------------------------------------------------


def test_sizes_and_types():
    assert (REQUEST_SIZE, REPLY_SIZE) == (24, 20)
    assert (MessageType.REGISTRATION_REQUEST, MessageType.REGISTRATION_REPLY) == (1, 3)


@pytest.mark.parametrize("name, bit", [("S", 0x80), ("B", 0x40), ("D", 0x20), ("M", 0x10), ("G", 0x08),
                                       ("r", 0x04), ("T", 0x02), ("x", 0x01)])
def test_each_flag_bit_position(name, bit):
    # RFC 5944 3.3: |S|B|D|M|G|r|T|x| in the second byte, most significant bit first.
    assert Flags[name] == bit
    data = RegistrationRequest(Flags[name], 1, HOA, HA, COA, 7).to_bytes()
    assert data[1] == bit
    assert data[0] == 1 and data[2:4] == b"\x00\x01"
    parsed = RegistrationRequest.parse(struct.pack("!BBHIIIQ", 1, bit, 1, HOA, HA, COA, 7))
    assert parsed.flags == bit and Flags(parsed.flags).name == name


def test_all_flags_together():
    assert RegistrationRequest.parse(header(flags=0xFF)).flags == 0xFF
    assert sum(Flags) == 0xFF


@pytest.mark.parametrize("lifetime", [0, 1, 0xFFFE, 0xFFFF])
def test_lifetime_extremes(lifetime):
    data = header(lifetime=lifetime)
    assert data[2:4] == lifetime.to_bytes(2, "big")
    assert RegistrationRequest.parse(data).lifetime == lifetime
    reply = RegistrationReply(0, lifetime, HOA, HA, 1)
    assert RegistrationReply.parse(reply.to_bytes()).lifetime == lifetime


def test_request_field_layout():
    req = RegistrationRequest(0x82, 0x1234, 0x0A010005, 0xC0000201, 0xC6336407, held(0x0102030405060708))
    assert req.to_bytes() == bytes.fromhex("01821234" "0a010005" "c0000201" "c6336407" "0102030405060708")
    assert RegistrationRequest.parse(req.to_bytes()).identification == held(0x0102030405060708)


def test_reply_field_layout():
    # Identifications are counted from 2000 inside (wire/era.py), NTP timestamps on the wire.
    assert reply_header(133, 0x0708, 0x0A010005, 0xC0000201, held(0xE8FE6F8012345678)) == bytes.fromhex(
        "03850708" "0a010005" "c0000201" "e8fe6f8012345678")
    reply = RegistrationReply(133, 0x0708, 0x0A010005, 0xC0000201, held(0xE8FE6F8012345678))
    assert reply.header_bytes() == reply.to_bytes() == reply_header(133, 0x0708, 0x0A010005, 0xC0000201,
                                                                    held(0xE8FE6F8012345678))
    assert RegistrationReply.parse(reply.to_bytes()).identification == held(0xE8FE6F8012345678)


@given(st.integers(0, 255), st.integers(0, 0xFFFF), u32, u32, u32, u64)
def test_request_round_trip(flags, lifetime, hoa, ha, coa, ident):
    req = RegistrationRequest(flags, lifetime, hoa, ha, coa, ident)
    data = req.to_bytes()
    assert len(data) == 24
    parsed = RegistrationRequest.parse(data)
    assert parsed == req and parsed.raw == data and parsed.extensions == ()


@given(st.integers(0, 255), st.integers(0, 0xFFFF), u32, u32, u64, st.binary(min_size=4, max_size=40))
def test_reply_round_trip_with_an_extension(code, lifetime, hoa, ha, ident, auth):
    reply = RegistrationReply(code, lifetime, hoa, ha, ident, (Extension(32, auth, 20),))
    parsed = RegistrationReply.parse(reply.to_bytes())
    assert parsed == reply and parsed.raw == reply.to_bytes()


def test_request_round_trip_with_extensions():
    req = RegistrationRequest(0, 600, HOA, HA, COA, 5, (
        Extension(131, b"mn@example.net", 24),
        Extension(32, (256).to_bytes(4, "big") + bytes(16), 24 + 16),
        Extension(33, (300).to_bytes(4, "big") + bytes(16), 24 + 16 + 22),
    ))
    assert RegistrationRequest.parse(req.to_bytes()) == req


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 255), st.integers(0, 0xFFFF), u32, u32, u32, u64, st.binary(min_size=20, max_size=20),
       st.sampled_from([bytes, bytearray, memoryview]))
def test_usual_request_parses_as_the_extension_walk_does(flags, lifetime, hoa, ha, coa, ident, ext_data, kind):
    # The header and one 20-byte MHAE take a short path; it must make what the general one makes.
    data = struct.pack("!BBHIIIQ", 1, flags, lifetime, hoa, ha, coa, ident) + bytes((32, 20)) + ext_data
    parsed = RegistrationRequest.parse(kind(data))
    walked = RegistrationRequest(flags, lifetime, hoa, ha, coa, held(ident), parse_extensions(data, REQUEST_SIZE),
                                 data)
    assert tuple(parsed) == tuple(walked) and type(parsed.raw) is bytes
    assert tuple(parsed.extensions[0]) == (32, ext_data, 24, 0)
    with pytest.raises(ParseError):  # 32 not known: the walk decides (unknown below 128: discarded)
        RegistrationRequest.parse(data, frozenset())
    with pytest.raises(ParseError):
        RegistrationRequest.parse(b"\x03" + data[1:])  # a reply's type is no request, usual length or not


@pytest.mark.parametrize("size", [0, 1, 23])
def test_short_request_raises(size):
    with pytest.raises(ParseError):
        RegistrationRequest.parse(header()[:size])


@pytest.mark.parametrize("size", [0, 1, 19])
def test_short_reply_raises(size):
    with pytest.raises(ParseError):
        RegistrationReply.parse(reply_header(0, 1, 2, 3, 4)[:size])


@pytest.mark.parametrize("msg_type", [0, 2, 3, 4, 255])
def test_request_with_another_type_raises(msg_type):
    with pytest.raises(ParseError):
        RegistrationRequest.parse(bytes([msg_type]) + header()[1:])


@pytest.mark.parametrize("msg_type", [0, 1, 2, 4, 255])
def test_reply_with_another_type_raises(msg_type):
    with pytest.raises(ParseError):
        RegistrationReply.parse(bytes([msg_type]) + reply_header(0, 1, 2, 3, 4)[1:])


def test_reply_codes():
    assert ReplyCode.ACCEPTED.accepted and ReplyCode.ACCEPTED_NO_SIMULTANEOUS_BINDINGS.accepted
    assert not any(c.accepted for c in ReplyCode if c >= 128)
    assert [int(c) for c in ReplyCode if c >= 128] == list(range(128, 140))


def test_extension_lookup_returns_the_first_of_a_type():
    data = mhae(header()) + ext(32, (999).to_bytes(4, "big") + bytes(16))
    req = RegistrationRequest.parse(data)
    assert req.extension(ExtensionType.MOBILE_HOME_AUTH).spi == 256
    assert req.extension(ExtensionType.NAI) is None


# -- extensions ---------------------------------------------------------------------------------------


def test_short_form_extensions_parse_with_offsets():
    message = b"HDR" + ext(32, b"\x00\x00\x01\x00abcd") + ext(131, b"") + ext(33, b"\x00\x00\x00\x01")
    exts = parse_extensions(message, 3)
    assert exts == (Extension(32, b"\x00\x00\x01\x00abcd", 3), Extension(131, b"", 13), Extension(33, bytes(
        [0, 0, 0, 1]), 15))
    assert exts[0].spi == 256 and exts[0].authenticator == b"abcd"


@pytest.mark.parametrize("ext_type", [36, 38])
def test_long_form_extensions_parse(ext_type):
    data = bytes(300)  # longer than a short form Length can say
    message = bytes((ext_type, 0)) + len(data).to_bytes(2, "big") + data + ext(32, bytes(8))
    known = frozenset({ext_type, 32})
    exts = parse_extensions(message, 0, known)
    assert exts == (Extension(ext_type, data, 0), Extension(32, bytes(8), 4 + 300))
    assert encode_extension(ext_type, data) == message[: 4 + 300]


@pytest.mark.parametrize("ext_type", [36, 38])
def test_long_form_truncated_header_and_overrun(ext_type):
    known = frozenset({ext_type})
    for message in (bytes((ext_type,)), bytes((ext_type, 0, 0)), bytes((ext_type, 0, 0, 5)) + b"abcd"):
        with pytest.raises(ParseError) as info:
            parse_extensions(message, 0, known)
        assert info.value.code == 134


@pytest.mark.parametrize("message", [
    ext(32, bytes(20))[:-1],          # Length says 20, 19 follow
    bytes((131, 1)),                  # Length 1, nothing follows
    bytes((200, 10)) + bytes(9),      # a skippable extension overruns too
    bytes((32,)),                     # a Type with no Length
    ext(131, b"ok") + bytes((32,)),   # the second extension is cut
])
def test_extension_overrun_raises_134(message):
    with pytest.raises(ParseError) as info:
        parse_extensions(message, 0)
    assert info.value.code == 134


@pytest.mark.parametrize("ext_type", [32, 33, 34])
@pytest.mark.parametrize("length", [0, 3])
def test_authentication_extension_without_an_spi_raises(ext_type, length):
    with pytest.raises(ParseError) as info:
        parse_extensions(ext(ext_type, bytes(length)), 0)
    assert info.value.code == 134


@pytest.mark.parametrize("ext_type", [1, 31, 35, 36, 38, 100, 127])
def test_unknown_non_skippable_extension_is_silently_discarded(ext_type):
    # RFC 5944 1.8: an unrecognised extension numbered 0-127 means the whole message is silently discarded.
    message = ext(131, b"nai") + ext(ext_type, b"\x00\x00\x00\x00") + ext(32, bytes(20))
    with pytest.raises(ParseError) as info:
        parse_extensions(message, 0)
    assert info.value.code is None
    with pytest.raises(ParseError) as info:
        RegistrationRequest.parse(header() + message)
    assert info.value.code is None


@pytest.mark.parametrize("ext_type", [128, 130, 134, 200, 255])
def test_unknown_skippable_extension_is_skipped(ext_type):
    message = ext(ext_type, b"\xff" * 7) + ext(32, bytes(20)) + ext(ext_type, b"")
    exts = parse_extensions(message, 0)
    assert exts == (Extension(32, bytes(20), 9),)


def test_one_byte_padding_has_no_length():
    # RFC 5944 1.8: type 0 is One-byte Padding, "encoded with neither Length nor Data field".
    message = b"\x00" + ext(131, b"nai") + b"\x00\x00" + ext(32, bytes(20)) + b"\x00"
    exts = parse_extensions(message, 0)
    assert exts == (Extension(131, b"nai", 1), Extension(32, bytes(20), 8))
    assert parse_extensions(b"\x00" * 5, 0) == ()
    assert parse_extensions(b"\x00", 0, frozenset()) == ()
    req = RegistrationRequest.parse(header() + b"\x00" + ext(32, bytes(20)))
    assert req.extension(ExtensionType.MOBILE_HOME_AUTH).offset == 25


def test_known_set_decides_what_is_kept():
    message = ext(131, b"nai") + ext(33, bytes(4))
    assert [e.type for e in parse_extensions(message, 0, frozenset({33}))] == [33]
    with pytest.raises(ParseError):
        parse_extensions(message, 0, frozenset({131}))


def test_parse_from_the_end_is_empty():
    assert parse_extensions(b"abc", 3) == ()
    assert RegistrationRequest.parse(header()).extensions == ()


def test_encode_extension_limits():
    assert encode_extension(32, bytes(255))[:2] == b"\x20\xff"
    with pytest.raises(ValueError):
        encode_extension(32, bytes(256))
    assert encode_extension(36, bytes(256))[:4] == b"\x24\x00\x01\x00"
    with pytest.raises(ValueError):
        encode_extension(38, bytes(0x10000))


@pytest.mark.parametrize("ext_type, subtype", [(36, 1), (36, 255), (38, 0), (38, 7)])
def test_long_form_subtype_survives_a_round_trip(ext_type, subtype):
    # Regression: the Sub-Type (RFC 3012) / Reserved (RFC 3025) byte was dropped and written back as 0.
    known = frozenset({ext_type, 32})
    message = header() + bytes((ext_type, subtype, 0, 4)) + b"\x00\x00\x01\x00"
    req = RegistrationRequest.parse(message, known)
    assert req.extensions[0].subtype == subtype
    assert req.to_bytes() == message
    assert encode_extension(ext_type, b"ab", subtype) == bytes((ext_type, subtype, 0, 2)) + b"ab"


def test_short_form_extensions_have_no_subtype():
    [e] = parse_extensions(ext(131, b"\x07abc"), 0)
    assert e.subtype == 0 and e.to_bytes() == ext(131, b"\x07abc")


# -- authenticators -----------------------------------------------------------------------------------


KEY = bytes(range(16))


def rfc_mac(algorithm: Algorithm, key: bytes, covered: bytes) -> bytes:
    if algorithm is Algorithm.HMAC_MD5:
        return hmac.new(key, covered, hashlib.md5).digest()
    if algorithm is Algorithm.HMAC_SHA256:
        return hmac.new(key, covered, hashlib.sha256).digest()
    if algorithm is Algorithm.KEYED_MD5:
        return hashlib.md5(key + covered + key).digest()
    return hashlib.md5(key + covered[:-4] + key).digest()


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(list(Algorithm)), st.binary(min_size=0, max_size=200), st.binary(max_size=300),
       st.integers(256, 0xFFFFFFFF))
def test_sign_and_verify_match_the_rfc_rule_for_any_key_length(algorithm, key, body, spi):
    # Keys longer than the hash block (64 bytes) are hashed first (RFC 2104); the SA precomputes HMAC state.
    sa = SecurityAssociation(spi, algorithm, key)
    message = header() + body
    signed = sa.sign(message)
    covered = message + bytes((32, 4 + sa.digest_size)) + spi.to_bytes(4, "big")
    assert signed == covered + rfc_mac(algorithm, key, covered)
    assert sa.mac(covered) == rfc_mac(algorithm, key, covered)
    auth = Extension(32, signed[len(message) + 2:], len(message))
    assert sa.verify(signed, auth)
    assert not sa.verify(signed, Extension(32, auth.data[:-1], len(message)))


def test_sign_with_another_extension_type():
    sa = SecurityAssociation(300, Algorithm.HMAC_MD5, KEY)
    signed = sa.sign(b"abc", ExtensionType.FOREIGN_HOME_AUTH)
    assert signed[3:5] == bytes((34, 20))


def test_verify_refuses_an_spi_mismatch_and_a_wrong_size():
    sa = SecurityAssociation(256, Algorithm.HMAC_MD5, KEY)
    signed = sa.sign(header())
    good = Extension(32, signed[26:], 24)
    assert sa.verify(signed, good)
    other = SecurityAssociation(257, Algorithm.HMAC_MD5, KEY)
    assert not other.verify(signed, good)
    sha = SecurityAssociation(256, Algorithm.HMAC_SHA256, KEY)
    assert not sha.verify(signed, good)  # 16 bytes where 32 are due


def test_keyed_md5_rfc2002_ignores_the_spi_but_the_spi_still_selects():
    key = bytes(16)
    a = SecurityAssociation(256, Algorithm.KEYED_MD5_RFC2002, key)
    b = SecurityAssociation(999, Algorithm.KEYED_MD5_RFC2002, key)
    # Same key, different SPI: the RFC 2002 authenticators are equal, the RFC 3344 ones are not.
    assert a.sign(b"m")[-16:] == b.sign(b"m")[-16:]
    assert SecurityAssociation(256, Algorithm.KEYED_MD5, key).sign(b"m")[-16:] != SecurityAssociation(
        999, Algorithm.KEYED_MD5, key).sign(b"m")[-16:]


def test_association_equality_ignores_precomputed_state():
    assert SecurityAssociation(256, Algorithm.HMAC_MD5, KEY) == SecurityAssociation(256, Algorithm.HMAC_MD5, KEY)
    text = repr(SecurityAssociation(256, Algorithm.HMAC_MD5, KEY))
    assert KEY.hex() not in text and repr(KEY) not in text and "key=" not in text
