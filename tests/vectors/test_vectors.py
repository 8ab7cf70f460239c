"""Byte-exact vectors (files beside this one, written by make_vectors.py without homeagent's help).

(a) every authenticator is recomputed here from the RFC rule with hashlib/hmac, (b) our encoder makes
exactly the vector's bytes and our parser reads back every field, and the Home Agent answers the request
vector with exactly the reply vectors, (c) SecurityAssociation.verify accepts each vector and refuses it
with any one byte changed.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from pathlib import Path

import pytest

try:  # under pytest (tests/ on the path), or run as a script from this folder
    from vectors import vectorfile
except ImportError:  # pragma: no cover
    import vectorfile  # type: ignore[no-redef]

from homeagent.config import parse as parse_config
from homeagent.core.effects import Send
from homeagent.core.home_agent import HomeAgent
from homeagent.wire.auth import Algorithm, SecurityAssociation
from homeagent.wire.errors import ParseError
from homeagent.wire.extensions import Extension, ExtensionType
from homeagent.wire.registration import RegistrationReply, RegistrationRequest

HERE = Path(__file__).parent
VECTOR_FILES = sorted(p.name for p in [*HERE.glob("registration-*.txt"), *HERE.glob("reply-*.txt")])
REQUESTS = [n for n in VECTOR_FILES if n.startswith("registration-")]
REPLIES = [n for n in VECTOR_FILES if n.startswith("reply-")]


def held(timestamp: int) -> int:
    """The Identification the Home Agent holds (and our dataclasses carry) for an NTP ``timestamp`` on the
    wire: counted from 2000-01-01 (Unix 946,684,800) rather than 1900, modulo 2**64 (wire/era.py)."""
    return (timestamp - ((946_684_800 + 2_208_988_800) << 32)) & ((1 << 64) - 1)
FIXED = ("type", "flags", "code", "lifetime", "home_address", "home_agent", "care_of_address", "identification")


@dataclass
class Vector:
    name: str
    meta: dict[str, str] = field(default_factory=dict)
    fields: list[tuple[str, bytes]] = field(default_factory=list)

    @property
    def message(self) -> bytes:
        return b"".join(v for _, v in self.fields)

    def value(self, name: str) -> bytes:
        return dict(self.fields)[name]

    def int(self, name: str) -> int:
        return int.from_bytes(self.value(name), "big")

    def offset(self, name: str) -> int:
        at = 0
        for n, v in self.fields:
            if n == name:
                return at
            at += len(v)
        raise KeyError(name)

    def groups(self) -> list[str]:
        """Extension prefixes in message order (``nai``, ``ext200``, ``mhae``)."""
        out: list[str] = []
        for n, _ in self.fields:
            if "." in n and n.split(".")[0] not in out:
                out.append(n.split(".")[0])
        return out

    def extension_data(self, group: str) -> bytes:
        if group == "mhae":
            return self.value("mhae.spi") + self.value("mhae.authenticator")
        return self.value(f"{group}.data")

    @property
    def association(self) -> SecurityAssociation:
        return SecurityAssociation(self.int("mhae.spi"), Algorithm(self.meta["algorithm"]),
                                   bytes.fromhex(self.meta["key"]))


def load(name: str) -> Vector:
    v = Vector(name)
    meta, fields = vectorfile.read(HERE / name)
    v.meta.update(meta)
    v.fields.extend((key, value) for key, value, _ in fields)
    return v


def test_the_vector_set_is_complete():
    assert set(VECTOR_FILES) >= {
        "registration-hmac-md5.txt", "registration-keyed-md5.txt", "registration-keyed-md5-rfc2002.txt",
        "registration-hmac-sha256.txt", "registration-nai-hmac-md5.txt", "registration-skippable-hmac-md5.txt",
        "reply-accepted.txt", "reply-133.txt",
    }


def test_vector_length_fields_match_their_data():
    for name in VECTOR_FILES:
        v = load(name)
        for g in v.groups():
            assert v.int(f"{g}.length") == len(v.extension_data(g)), (name, g)
        assert len(v.message) == (24 if v.meta["kind"] == "request" else 20) + sum(
            2 + len(v.extension_data(g)) for g in v.groups()
        )


# -- (a) the authenticator from the RFC rule ----------------------------------------------------------


def test_hmac_md5_itself_matches_rfc_2202_test_case_1():
    # Anchors the library we recompute with: RFC 2202 section 2, test case 1.
    assert hmac.new(b"\x0b" * 16, b"Hi There", hashlib.md5).hexdigest() == "9294727a3638bb1c13f48ef8158bfc9d"


def rfc_authenticator(v: Vector) -> bytes:
    key = bytes.fromhex(v.meta["key"])
    # RFC 5944 3.5.1: the fixed part, every prior extension whole, and this extension's Type, Length, SPI.
    covered = v.message[: v.offset("mhae.authenticator")]
    assert covered.endswith(v.value("mhae.type") + v.value("mhae.length") + v.value("mhae.spi"))
    algorithm = v.meta["algorithm"]
    if algorithm == "hmac-md5":
        return hmac.new(key, covered, hashlib.md5).digest()
    if algorithm == "hmac-sha256":
        return hmac.new(key, covered, hashlib.sha256).digest()
    if algorithm == "keyed-md5":  # prefix+suffix, SPI covered (RFC 3344 onward)
        return hashlib.md5(key + covered + key).digest()
    if algorithm == "keyed-md5-rfc2002":  # RFC 2002 3.5.1: Type and Length of this extension, no SPI
        without_spi = v.message[: v.offset("mhae.spi")]
        return hashlib.md5(key + without_spi + key).digest()
    raise AssertionError(algorithm)


@pytest.mark.parametrize("name", VECTOR_FILES)
def test_authenticator_follows_the_rfc_rule(name):
    v = load(name)
    assert v.value("mhae.authenticator") == rfc_authenticator(v)
    expected_size = 32 if v.meta["algorithm"] == "hmac-sha256" else 16
    assert len(v.value("mhae.authenticator")) == expected_size
    assert v.int("mhae.length") == 4 + expected_size


def test_rfc2002_and_rfc3344_keyed_md5_differ_only_by_the_spi():
    v = load("registration-keyed-md5-rfc2002.txt")
    key = bytes.fromhex(v.meta["key"])
    with_spi = hashlib.md5(key + v.message[: v.offset("mhae.authenticator")] + key).digest()
    assert with_spi != v.value("mhae.authenticator")
    modern = SecurityAssociation(258, Algorithm.KEYED_MD5, key)
    parsed = RegistrationRequest.parse(v.message)
    assert not modern.verify(parsed.raw, parsed.extension(ExtensionType.MOBILE_HOME_AUTH))


# -- (b) our encoder and parser -------------------------------------------------------------------------


def build_extensions(v: Vector) -> tuple[Extension, ...]:
    return tuple(Extension(v.int(f"{g}.type"), v.extension_data(g), v.offset(f"{g}.type")) for g in v.groups())


@pytest.mark.parametrize("name", REQUESTS)
def test_request_encoder_makes_the_vector(name):
    v = load(name)
    request = RegistrationRequest(
        v.int("flags"), v.int("lifetime"), v.int("home_address"), v.int("home_agent"),
        v.int("care_of_address"), held(v.int("identification")), build_extensions(v),
    )
    assert request.to_bytes() == v.message
    assert request.header_bytes() == v.message[:24]
    # And signing the message up to the MHAE reproduces the authenticator.
    assert v.association.sign(v.message[: v.offset("mhae.type")]) == v.message


@pytest.mark.parametrize("name", REQUESTS)
def test_request_parser_reads_every_field(name):
    v = load(name)
    parsed = RegistrationRequest.parse(v.message)
    assert v.int("type") == 1
    assert parsed.flags == v.int("flags")
    assert parsed.lifetime == v.int("lifetime")
    assert parsed.home_address == v.int("home_address")
    assert parsed.home_agent == v.int("home_agent")
    assert parsed.care_of_address == v.int("care_of_address")
    assert parsed.identification == held(v.int("identification"))
    assert parsed.raw == v.message
    # Known extensions come back with type, data and offset; the unknown skippable 200 is left out.
    expected = [e for e in build_extensions(v) if e.type != 200]
    assert list(parsed.extensions) == expected
    mhae = parsed.extension(ExtensionType.MOBILE_HOME_AUTH)
    assert mhae.spi == v.int("mhae.spi")
    assert mhae.authenticator == v.value("mhae.authenticator")
    assert mhae.offset == v.offset("mhae.type")


def test_skippable_extension_is_skipped_but_covered():
    v = load("registration-skippable-hmac-md5.txt")
    parsed = RegistrationRequest.parse(v.message)
    assert [e.type for e in parsed.extensions] == [ExtensionType.MOBILE_HOME_AUTH]
    assert parsed.extensions[0].offset == 24 + 2 + 5
    sa = v.association
    assert sa.verify(parsed.raw, parsed.extensions[0])
    # Drop the skipped extension: the authenticator no longer matches, so it did cover those bytes.
    without = v.message[:24] + v.message[v.offset("mhae.type"):]
    reparsed = RegistrationRequest.parse(without)
    assert not sa.verify(reparsed.raw, reparsed.extensions[0])


def test_nai_extension_is_kept_and_covered():
    v = load("registration-nai-hmac-md5.txt")
    parsed = RegistrationRequest.parse(v.message)
    nai = parsed.extension(ExtensionType.NAI)
    assert nai is not None and nai.data == b"mn5@example.net" and nai.offset == 24
    assert parsed.extension(ExtensionType.MOBILE_HOME_AUTH).offset == 24 + 2 + len(b"mn5@example.net")


@pytest.mark.parametrize("name", REPLIES)
def test_reply_encoder_and_parser(name):
    v = load(name)
    reply = RegistrationReply(
        v.int("code"), v.int("lifetime"), v.int("home_address"), v.int("home_agent"), held(v.int("identification")),
        build_extensions(v),
    )
    assert reply.to_bytes() == v.message
    parsed = RegistrationReply.parse(v.message)
    assert v.int("type") == 3
    assert (parsed.code, parsed.lifetime, parsed.home_address, parsed.home_agent, parsed.identification) == (
        v.int("code"), v.int("lifetime"), v.int("home_address"), v.int("home_agent"), held(v.int("identification")),
    )
    assert list(parsed.extensions) == list(build_extensions(v))


VECTOR_HA_CONFIG = """
[home_agent]
address = "192.0.2.1"
home_network = "10.1.0.0/16"
max_lifetime = 1800
replay_tolerance = 7
state_dir = "/nonexistent/homeagent-test"

[[security_association]]
home_addresses = "10.1.0.0/16"
spi = 256
algorithm = "hmac-md5"
key = "00112233445566778899aabbccddeeff"

[[security_association]]
home_addresses = "10.1.0.0/16"
spi = 257
algorithm = "keyed-md5"
key = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"

[[security_association]]
home_addresses = "10.1.0.0/16"
spi = 258
algorithm = "keyed-md5-rfc2002"
key = "fedcba98765432100123456789abcdef"

[[security_association]]
home_addresses = "10.1.0.0/16"
spi = 259
algorithm = "hmac-sha256"
key = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
"""

T0 = 1_700_000_000


@pytest.mark.parametrize("name", REQUESTS)
def test_home_agent_accepts_every_request_vector(name):
    v = load(name)
    ha = HomeAgent(parse_config(VECTOR_HA_CONFIG), T0)
    effects = ha.receive_registration(v.message, ("198.51.100.7", 434), T0 + 0.25)
    [send] = [e for e in effects if isinstance(e, Send)]
    reply = RegistrationReply.parse(send.datagram)
    assert reply.code == 0
    assert reply.identification == held(v.int("identification"))
    assert reply.raw[12:20] == v.message[16:24]  # the request's timestamp, echoed as it came
    [binding] = ha.bindings.bindings_of(v.int("home_address"))
    assert binding.care_of_address == v.int("care_of_address")
    assert binding.flags == v.int("flags")
    # The reply is authenticated with the request's association.
    assert v.association.verify(reply.raw, reply.extension(ExtensionType.MOBILE_HOME_AUTH))


@pytest.mark.parametrize("name", REPLIES)
def test_home_agent_answers_with_exactly_the_reply_vector(name):
    v = load(name)
    request = load(v.meta["request"])
    host, port = v.meta["source"].split(":")
    ha = HomeAgent(parse_config(VECTOR_HA_CONFIG), T0)
    effects = ha.receive_registration(request.message, (host, int(port)), float(v.meta["now"]))
    sends = [e for e in effects if isinstance(e, Send)]
    assert [(e.datagram, e.address) for e in sends] == [(v.message, (host, int(port)))]


# -- (c) verify accepts the vector and nothing one byte away --------------------------------------------


def accepted(sa: SecurityAssociation, data: bytes, parse) -> bool:
    try:
        message = parse(data)
    except ParseError:
        return False
    mhae = message.extension(ExtensionType.MOBILE_HOME_AUTH)
    return mhae is not None and sa.verify(message.raw, mhae)


@pytest.mark.parametrize("name", VECTOR_FILES)
def test_verify_accepts_the_vector_and_rejects_any_flipped_byte(name):
    v = load(name)
    parse = RegistrationRequest.parse if v.meta["kind"] == "request" else RegistrationReply.parse
    sa = v.association
    data = v.message
    assert accepted(sa, data, parse)
    for i in range(len(data)):
        for mask in (0x01, 0x80, 0xFF):
            flipped = bytearray(data)
            flipped[i] ^= mask
            assert not accepted(sa, bytes(flipped), parse), (name, i, mask)
    # Truncation and a trailing extension cut short are refused too.
    assert not accepted(sa, data[:-1], parse)
    assert not accepted(sa, data + b"\x01", parse)
    assert not accepted(sa, data[:-2] + b"\x00" + data[-2:], parse)  # a pad inside the authenticator


@pytest.mark.parametrize("name", VECTOR_FILES)
def test_verify_rejects_the_wrong_key_and_the_wrong_algorithm(name):
    v = load(name)
    parse = RegistrationRequest.parse if v.meta["kind"] == "request" else RegistrationReply.parse
    message = parse(v.message)
    mhae = message.extension(ExtensionType.MOBILE_HOME_AUTH)
    sa = v.association
    other_key = bytes(b ^ 1 for b in sa.key)
    assert not SecurityAssociation(sa.spi, sa.algorithm, other_key).verify(message.raw, mhae)
    for algorithm in Algorithm:
        if algorithm is not sa.algorithm:
            assert not SecurityAssociation(sa.spi, algorithm, sa.key).verify(message.raw, mhae)
    assert not SecurityAssociation(sa.spi + 1, sa.algorithm, sa.key).verify(message.raw, mhae)
