"""Regenerate the registration vectors in this directory: ``python tests/vectors/make_vectors.py``.
(The redundancy protocol's, ``redundancy-*.txt``, are written by
``python tests/vectors/test_redundancy_vectors.py``.)

This script deliberately imports nothing from ``homeagent``: every byte is packed by hand with ``struct``
and every authenticator is computed with ``hashlib``/``hmac`` straight from the RFC rules, so the vectors
are an independent check of the encoder, the parser and ``SecurityAssociation``.

RFC 5944 section 3.5.1: an authenticator covers the UDP payload (the fixed part), all prior extensions in
their entirety, and the Type, Length and SPI of its own extension. HMAC-MD5 (RFC 2104) is the default;
keyed MD5 "prefix+suffix" is MD5(key || covered || key); RFC 2002 covered only Type and Length of the
authentication extension, not its SPI.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from pathlib import Path

HERE = Path(__file__).parent
NTP_EPOCH_OFFSET = 2_208_988_800
T0 = 1_700_000_000  # 2023-11-14T22:13:20Z, Unix seconds
NTP_T0 = T0 + NTP_EPOCH_OFFSET  # 0xE8FE6F80

HOME_ADDRESS = 0x0A010005  # 10.1.0.5
HOME_AGENT = 0xC0000201  # 192.0.2.1
CARE_OF = 0xC6336407  # 198.51.100.7

KEYS = {
    "hmac-md5": (256, bytes.fromhex("00112233445566778899aabbccddeeff")),
    "keyed-md5": (257, bytes.fromhex("0f1e2d3c4b5a69788796a5b4c3d2e1f0")),
    "keyed-md5-rfc2002": (258, bytes.fromhex("fedcba98765432100123456789abcdef")),
    "hmac-sha256": (259, bytes(range(32))),
}


def authenticator(algorithm: str, key: bytes, covered: bytes) -> bytes:
    """``covered`` ends with this extension's Type, Length and SPI."""
    if algorithm == "hmac-md5":
        return hmac.new(key, covered, hashlib.md5).digest()
    if algorithm == "hmac-sha256":
        return hmac.new(key, covered, hashlib.sha256).digest()
    if algorithm == "keyed-md5":
        return hashlib.md5(key + covered + key).digest()
    if algorithm == "keyed-md5-rfc2002":
        return hashlib.md5(key + covered[:-4] + key).digest()
    raise ValueError(algorithm)


def flag_names(flags: int) -> str:
    bits = "SBDMGrTx"
    return " ".join(f"{b}={(flags >> (7 - i)) & 1}" for i, b in enumerate(bits))


def ip(value: int) -> str:
    return ".".join(str(b) for b in value.to_bytes(4, "big"))


class Vector:
    def __init__(self, name: str, title: str, kind: str, algorithm: str) -> None:
        self.name, self.title, self.kind, self.algorithm = name, title, kind, algorithm
        self.spi, self.key = KEYS[algorithm]
        self.notes: list[str] = []
        self.meta: list[tuple[str, str]] = [("kind", kind), ("algorithm", algorithm), ("key", self.key.hex())]
        self.fields: list[tuple[str, bytes, str]] = []

    def field(self, name: str, value: bytes, comment: str) -> None:
        self.fields.append((name, value, comment))

    def message(self) -> bytes:
        return b"".join(v for _, v, _ in self.fields)

    def sign(self) -> None:
        """Append the Mobile-Home Authentication Extension (type 32) over every field so far."""
        size = {"hmac-sha256": 32}.get(self.algorithm, 16)
        self.field("mhae.type", bytes([32]), "32: Mobile-Home Authentication Extension (RFC 5944 3.5.2)")
        self.field("mhae.length", bytes([4 + size]), f"{4 + size} = SPI (4) + authenticator ({size})")
        self.field("mhae.spi", self.spi.to_bytes(4, "big"), f"SPI {self.spi}")
        covered = self.message()
        auth = authenticator(self.algorithm, self.key, covered)
        rule = {
            "hmac-md5": "HMAC-MD5(key, every byte above)",
            "hmac-sha256": "HMAC-SHA256(key, every byte above)",
            "keyed-md5": "MD5(key || every byte above || key)",
            "keyed-md5-rfc2002": "MD5(key || every byte above except mhae.spi || key)",
        }[self.algorithm]
        self.field("mhae.authenticator", auth, rule)

    def write(self) -> None:
        lines = [f"# {self.name}: {self.title}"]
        lines += [f"# {n}" if n else "#" for n in self.notes]
        lines.append("#")
        for k, v in self.meta:
            lines.append(f"@{k} {v}")
        width = max(len(n) for n, _, _ in self.fields)
        hwidth = max(len(v.hex()) for _, v, _ in self.fields)
        for name, value, comment in self.fields:
            lines.append(f"{name:<{width}}  {value.hex():<{hwidth}}  # {comment}")
        (HERE / self.name).write_text("\n".join(lines) + "\n")


def request(name: str, title: str, algorithm: str, flags: int, lifetime: int, fraction: int,
            extensions: list[tuple[str, int, bytes, str]] = ()) -> Vector:
    v = Vector(name, title, "request", algorithm)
    ident = (NTP_T0 << 32) | fraction
    header = struct.pack("!BBHIIIQ", 1, flags, lifetime, HOME_ADDRESS, HOME_AGENT, CARE_OF, ident)
    v.notes += [
        "The fixed 24-byte part, built by hand:",
        f'  struct.pack("!BBHIIIQ", 1, 0x{flags:02X}, {lifetime}, 0x{HOME_ADDRESS:08X}, 0x{HOME_AGENT:08X},',
        f"              0x{CARE_OF:08X}, 0x{ident:016X})",
        f"  == bytes.fromhex('{header.hex()}')",
        f"Identification = NTP seconds {NTP_T0} (Unix {T0}, 2023-11-14T22:13:20Z) << 32 | 0x{fraction:08X}.",
    ]
    v.field("type", header[0:1], "Type 1: Registration Request")
    v.field("flags", header[1:2], flag_names(flags))
    v.field("lifetime", header[2:4], f"{lifetime} s")
    v.field("home_address", header[4:8], ip(HOME_ADDRESS))
    v.field("home_agent", header[8:12], ip(HOME_AGENT))
    v.field("care_of_address", header[12:16], ip(CARE_OF))
    v.field("identification", header[16:24], f"NTP {NTP_T0} s + fraction 0x{fraction:08X}")
    for prefix, ext_type, data, what in extensions:
        v.field(f"{prefix}.type", bytes([ext_type]), what)
        v.field(f"{prefix}.length", bytes([len(data)]), f"{len(data)} bytes of data")
        v.field(f"{prefix}.data", data, repr(data) if data.isascii() and data.decode().isprintable() else "opaque")
    v.sign()
    v.write()
    return v


def reply(name: str, title: str, request_vector: Vector, now: float, code: int, lifetime: int,
          identification: int, notes: list[str]) -> None:
    v = Vector(name, title, "reply", request_vector.algorithm)
    header = struct.pack("!BBHIIQ", 3, code, lifetime, HOME_ADDRESS, HOME_AGENT, identification)
    v.notes += notes + [
        "The fixed 20-byte part, built by hand:",
        f'  struct.pack("!BBHIIQ", 3, {code}, {lifetime}, 0x{HOME_ADDRESS:08X}, 0x{HOME_AGENT:08X}, '
        f"0x{identification:016X})",
        f"  == bytes.fromhex('{header.hex()}')",
    ]
    v.meta += [("request", request_vector.name), ("now", repr(now)), ("source", "198.51.100.7:434")]
    v.field("type", header[0:1], "Type 3: Registration Reply")
    v.field("code", header[1:2], f"code {code}")
    v.field("lifetime", header[2:4], f"{lifetime} s")
    v.field("home_address", header[4:8], ip(HOME_ADDRESS))
    v.field("home_agent", header[8:12], ip(HOME_AGENT))
    v.field("identification", header[12:20], f"0x{identification:016X}")
    v.sign()
    v.write()


def main() -> None:
    base = request(
        "registration-hmac-md5.txt", "Registration Request, HMAC-MD5 (RFC 5944 default)",
        "hmac-md5", 0x00, 3600, 0x12345678,
    )
    request(
        "registration-keyed-md5.txt", "Registration Request, keyed MD5 prefix+suffix, SPI covered (RFC 3344/5944)",
        "keyed-md5", 0x80, 600, 0x23456789,
    )
    request(
        "registration-keyed-md5-rfc2002.txt", "Registration Request, keyed MD5 prefix+suffix, SPI not covered (RFC 2002)",
        "keyed-md5-rfc2002", 0x00, 600, 0x3456789A,
    )
    request(
        "registration-hmac-sha256.txt", "Registration Request, HMAC-SHA256 (32-byte authenticator), T bit set",
        "hmac-sha256", 0x02, 600, 0x456789AB,
    )
    request(
        "registration-nai-hmac-md5.txt", "Registration Request with an NAI extension (131, RFC 2794) before the MHAE",
        "hmac-md5", 0x00, 600, 0x56789ABC,
        [("nai", 131, b"mn5@example.net", "131: Mobile Node NAI extension (RFC 2794), skippable, known")],
    )
    request(
        "registration-skippable-hmac-md5.txt",
        "Registration Request with an unknown skippable extension (200): skipped by the parser, still covered",
        "hmac-md5", 0x00, 600, 0x6789ABCD,
        [("ext200", 200, bytes.fromhex("0102030405"), "200: unassigned, >= 128 so skippable (RFC 5944 1.8)")],
    )
    ident = int.from_bytes(base.message()[16:24], "big")
    reply(
        "reply-accepted.txt", "Registration Reply 0 to registration-hmac-md5.txt", base, T0 + 0.25, 0, 1800, ident,
        ["The Home Agent of test_vectors.py (max_lifetime 1800) accepts registration-hmac-md5.txt at",
         "Unix time 1700000000.25: code 0, lifetime 3600 capped to 1800, Identification copied whole."],
    )
    reply(
        "reply-133.txt", "Registration Reply 133 to registration-hmac-md5.txt, 100 s late", base, T0 + 100.5, 133,
        1800, ((NTP_T0 + 100) << 32) | (ident & 0xFFFFFFFF),
        ["The same request at Unix time 1700000100.5 is 100 s stale (replay_tolerance 7): code 133,",
         "Identification = Home Agent NTP seconds (NTP_T0 + 100) << 32 | the request's low 32 bits (5.7.1)."],
    )


if __name__ == "__main__":
    main()
