"""A registration built by scapy and authenticated by this test (hmac/hashlib), not by our code, is
accepted by a running daemon; the reply parses in scapy, verifies with hmac, and tshark dissects it."""

from __future__ import annotations

import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from datetime import datetime, timezone

import pytest
from scapy.layers.inet import IP, UDP
from scapy.packet import Raw
from scapy.utils import wrpcap

from .conftest import HA_ADDRESS, KEY, MN_ADDRESS, NTP_EPOCH_OFFSET, SPI, core, ident_parts, ntp_now, rrq


@pytest.fixture(scope="module")
def ha(module_daemons):
    return module_daemons.start("interop")


def test_scapy_request_with_test_computed_mhae_is_accepted(ha):
    mn = ha.mn()
    ident = ntp_now()
    request = rrq("10.1.0.5", "192.0.2.10", ident, lifetime=600)
    reply = mn.exchange(request)
    mn.close()

    assert reply.code == 0
    assert reply.lifetime == 600
    assert reply.home_address == "10.1.0.5"
    assert reply.home_agent == HA_ADDRESS
    assert reply.identification == ident  # a valid timestamp is copied whole (RFC 5944 5.7.1)
    assert reply.spi == SPI
    assert reply.authentic(KEY), "reply MHAE does not verify with HMAC-MD5 computed by the test"

    rows = ha.bindings_cli()
    assert core(rows) == [
        {
            "home_address": "10.1.0.5",
            "care_of_address": "192.0.2.10",
            "lifetime": 600,
            "identification": ident,
            "flags": 0,
        }
    ]


def test_lifetime_is_capped_never_increased(ha):
    mn = ha.mn()
    reply = mn.exchange(rrq("10.1.0.6", "192.0.2.10", lifetime=0xFFFF))  # "infinity"
    assert (reply.code, reply.lifetime) == (0, 1800)
    reply = mn.exchange(rrq("10.1.0.6", "192.0.2.10", lifetime=7))
    assert (reply.code, reply.lifetime) == (0, 7)
    mn.close()


def test_skippable_unknown_extension_before_mhae_is_skipped_and_authenticated(ha):
    """RFC 5944 1.8: an unrecognised type 128-255 is skipped by its Length; the MHAE covers it."""
    mn = ha.mn()
    ident = ntp_now()
    reply = mn.exchange(rrq("10.1.0.7", "192.0.2.11", ident, before=bytes((200, 3)) + b"abc"))
    assert (reply.code, reply.identification) == (0, ident)
    assert reply.authentic()
    # and a skippable extension after the MHAE (e.g. one meant for a foreign agent) does not matter
    ident = ntp_now()
    reply = mn.exchange(rrq("10.1.0.7", "192.0.2.12", ident, after=bytes((130, 2)) + b"\0\0"))
    assert (reply.code, reply.identification) == (0, ident)
    mn.close()


def test_one_byte_padding_extension_is_understood(ha):
    mn = ha.mn()
    ident = ntp_now()
    reply = mn.exchange(rrq("10.1.0.8", "192.0.2.13", ident, before=b"\x00"), timeout=1.0)
    mn.close()
    assert (reply.code, reply.identification) == (0, ident)


def _tshark_fields(pcap, fields):
    out = subprocess.run(
        ["tshark", "-n", "-r", str(pcap), "-T", "fields", "-E", "separator=|"]
        + [a for f in fields for a in ("-e", f)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    return out.strip().split("|")


def test_tshark_dissects_the_reply_as_mobile_ip(ha, tmp_path):
    if shutil.which("tshark") is None:
        pytest.skip("tshark is not installed")
    mn = ha.mn()
    ident = ntp_now()
    reply = mn.exchange(rrq("10.1.0.9", "192.0.2.20", ident, lifetime=300))
    assert reply.code == 0
    pcap = tmp_path / "reply.pcap"
    wrpcap(str(pcap), [IP(src=HA_ADDRESS, dst=MN_ADDRESS) / UDP(sport=434, dport=mn.port) / Raw(reply.raw)])
    mn.close()

    # Field names as tshark 4.0 registers them (`tshark -G fields`): the SPI is mip.auth.spi.
    fields = ["mip.type", "mip.code", "mip.life", "mip.homeaddr", "mip.haaddr", "mip.ident", "mip.ext.type",
              "mip.ext.len", "mip.auth.spi", "mip.auth.auth"]
    values = dict(zip(fields, _tshark_fields(pcap, fields), strict=True))
    assert values["mip.type"] == "3"
    assert values["mip.code"] == "0"
    assert values["mip.life"] == "300"
    assert values["mip.homeaddr"] == "10.1.0.9"
    assert values["mip.haaddr"] == HA_ADDRESS
    assert values["mip.ext.type"] == "32"
    assert values["mip.ext.len"] == "20"
    assert int(values["mip.auth.spi"], 0) == SPI
    assert values["mip.auth.auth"].replace(":", "") == reply.raw[26:42].hex()

    # mip.ident is an FT_ABSOLUTE_TIME: tshark shows the NTP timestamp as a UTC date, e.g.
    # "Nov 26, 2026 15:17:45.545071601 UTC". Check it names our Identification's second and fraction...
    m = re.fullmatch(r"(\w{3}) +(\d+), (\d{4}) (\d\d):(\d\d):(\d\d)\.(\d+) UTC", values["mip.ident"])
    assert m, values["mip.ident"]
    mon, day, year, hh, mm, ss, frac = m.groups()
    shown = datetime.strptime(f"{mon} {day} {year} {hh}:{mm}:{ss}", "%b %d %Y %H:%M:%S").replace(tzinfo=timezone.utc)
    seconds, fraction = ident_parts(ident)
    assert int(shown.timestamp()) == seconds - NTP_EPOCH_OFFSET
    assert abs(int(frac) / 10 ** len(frac) - fraction / 2**32) < 1e-6

    # ... and, exactly, its 64 bits, from the raw value PDML gives for the field.
    pdml = subprocess.run(
        ["tshark", "-n", "-r", str(pcap), "-T", "pdml"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    found = {f.get("name"): f for f in ET.fromstring(pdml).iter("field")}
    assert int(found["mip.ident"].get("value"), 16) == ident
    assert "Registration Reply" in found["mip.type"].get("showname", "")
