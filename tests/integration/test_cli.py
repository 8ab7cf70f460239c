"""``homeagent mn register|deregister``, ``bindings`` and ``status`` end to end against a running daemon."""

from __future__ import annotations

import json
import time
from ipaddress import IPv4Address

import pytest

from homeagent.mobile_node import Identifications, MobileNode
from homeagent.wire.auth import Algorithm, SecurityAssociation
from homeagent.wire.era import to_wire

from .conftest import HA_ADDRESS, KEY, NTP_EPOCH_OFFSET, NTP_SECOND, OTHER_SPI, SPI, WRONG_KEY, homeagent


@pytest.fixture(scope="module")
def ha(module_daemons):
    return module_daemons.start("cli", simultaneous_bindings=3)


def mn(ha, action: str, *args: str) -> tuple[int, dict]:
    r = homeagent("mn", action, "--config", str(ha.config_path), "--json", *args)
    assert r.stdout, r.stderr
    return r.returncode, json.loads(r.stdout)


def bindings(ha, *args: str) -> list[dict]:
    r = homeagent("bindings", "--config", str(ha.config_path), "--json", *args)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_register_shows_in_bindings(ha):
    t0 = time.time()
    rc, out = mn(ha, "register", "--home-address", "10.1.0.5", "--care-of", "192.0.2.10", "--lifetime", "600")
    assert rc == 0
    assert out["code"] == 0 and out["accepted"] and out["lifetime"] == 600
    assert out["home_agent"] == HA_ADDRESS and out["resynchronised"] is False

    rows = bindings(ha, "--home-address", "10.1.0.5")
    assert len(rows) == 1
    row = rows[0]
    assert {"home_address", "care_of_address", "lifetime", "remaining", "identification"} <= row.keys()
    assert row["home_address"] == "10.1.0.5"
    assert row["care_of_address"] == "192.0.2.10"
    assert row["lifetime"] == 600
    assert 590 < row["remaining"] <= 600
    assert isinstance(row["identification"], int) and not isinstance(row["identification"], bool)
    assert row["identification"] == out["identification"]
    # The Identification is the mobile node's NTP timestamp of when it registered
    assert abs((row["identification"] >> 32) - NTP_EPOCH_OFFSET - t0) < 5

    text = homeagent("bindings", "--config", str(ha.config_path))
    assert text.returncode == 0 and "10.1.0.5" in text.stdout and "192.0.2.10" in text.stdout


def test_simultaneous_then_deregister_one_then_all(ha):
    hoa = "10.1.0.6"
    for coa in ("192.0.2.21", "192.0.2.22", "192.0.2.23"):
        rc, out = mn(ha, "register", "--home-address", hoa, "--care-of", coa, "--lifetime", "300", "--simultaneous")
        assert (rc, out["code"]) == (0, 0)
    rows = bindings(ha, "--home-address", hoa)
    assert sorted(r["care_of_address"] for r in rows) == ["192.0.2.21", "192.0.2.22", "192.0.2.23"]
    assert all(r["lifetime"] == 300 and r["flags"] & 0x80 for r in rows)

    # a fourth is refused with 135 and the CLI says so by its exit status
    rc, out = mn(ha, "register", "--home-address", hoa, "--care-of", "192.0.2.24", "--simultaneous")
    assert (rc, out["code"], out["accepted"]) == (3, 135, False)

    rc, out = mn(ha, "deregister", "--home-address", hoa, "--care-of", "192.0.2.22")
    assert (rc, out["code"], out["lifetime"]) == (0, 0, 0)
    assert sorted(r["care_of_address"] for r in bindings(ha, "--home-address", hoa)) == ["192.0.2.21", "192.0.2.23"]

    rc, out = mn(ha, "deregister", "--home-address", hoa)
    assert (rc, out["code"]) == (0, 0)
    assert bindings(ha, "--home-address", hoa) == []


def test_register_without_simultaneous_replaces(ha):
    hoa = "10.1.0.7"
    for coa in ("192.0.2.31", "192.0.2.32"):
        assert mn(ha, "register", "--home-address", hoa, "--care-of", coa)[0] == 0
    assert [r["care_of_address"] for r in bindings(ha, "--home-address", hoa)] == ["192.0.2.32"]


def test_register_with_wrong_key_is_denied_131(ha):
    """The Home Agent answers 131 sealed with the configured key, which this client does not hold: the reply
    cannot be authenticated, yet it is reported, as a 131 that is not authenticated (it used to be "no
    reply"), and it changes nothing."""
    before = ha.counters().get("denied.131", 0)
    args = ["--home-address", "10.1.0.8", "--care-of", "192.0.2.40", "--spi", str(SPI),
            "--key", WRONG_KEY.hex(), "--timeout", "0.3", "--retries", "0"]
    rc, out = mn(ha, "register", *args)
    assert (rc, out["code"], out["accepted"], out["authenticated"]) == (3, 131, False, False)
    assert out["code_name"] == "MOBILE_NODE_FAILED_AUTHENTICATION" and out["attempts"] == 1
    text = homeagent("mn", "register", "--config", str(ha.config_path), *args)
    assert text.returncode == 3, text.stderr
    assert text.stdout.startswith("reply 131 (MOBILE_NODE_FAILED_AUTHENTICATION)")
    assert text.stdout.rstrip().endswith("(reply not authenticated)")
    assert ha.counters()["denied.131"] == before + 2
    assert bindings(ha, "--home-address", "10.1.0.8") == []


def test_register_with_an_unknown_spi_is_denied_131(ha):
    """An SPI the Home Agent lacks for the home address: 131, sealed with the association it has
    (RFC 5944 3.8.2.1 (a)), which names another SPI than ours: not authenticated here either."""
    rc, out = mn(ha, "register", "--home-address", "10.1.0.8", "--care-of", "192.0.2.40", "--spi", "4000",
                 "--key", KEY.hex(), "--timeout", "0.3", "--retries", "0")
    assert (rc, out["code"], out["authenticated"]) == (3, 131, False)


# -- each flag given with --config is honoured (it used to be ignored unless --spi and --key came together)


def test_key_alone_overrides_the_configs(ha):
    rc, out = mn(ha, "register", "--home-address", "10.1.0.10", "--care-of", "192.0.2.41",
                 "--key", WRONG_KEY.hex(), "--timeout", "0.3", "--retries", "0")
    assert (rc, out["code"], out["authenticated"]) == (3, 131, False)
    assert bindings(ha, "--home-address", "10.1.0.10") == []


def test_algorithm_alone_overrides_the_configs(ha):
    rc, out = mn(ha, "register", "--home-address", "10.1.0.12", "--care-of", "192.0.2.43", "--algorithm",
                 "hmac-sha256", "--timeout", "0.3", "--retries", "0")
    assert (rc, out["code"], out["authenticated"]) == (3, 131, False)
    rc, out = mn(ha, "register", "--home-address", "10.1.0.12", "--care-of", "192.0.2.43", "--algorithm",
                 "hmac-md5", "--spi", str(SPI))  # the configured ones, given again: accepted
    assert (rc, out["code"], out["authenticated"]) == (0, 0, True)


def test_spi_alone_picks_a_configured_association_or_fails(ha):
    r = homeagent("mn", "register", "--config", str(ha.config_path), "--home-address", "10.1.0.11",
                  "--care-of", "192.0.2.42", "--spi", str(OTHER_SPI), "--timeout", "0.3", "--retries", "0")
    # SPI 257 is configured, but for 10.2.0.0/16: the Home Agent would not use it for 10.1.0.11.
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.strip() == (f"homeagent: no security association with SPI {OTHER_SPI} in "
                                f"{ha.config_path} covers 10.1.0.11 (give --key too, to use one of your own)")
    assert bindings(ha, "--home-address", "10.1.0.11") == []


def test_out_of_range_lifetime_without_config_is_one_line():
    """The command of issue 9: it ended in a struct.error traceback."""
    r = homeagent("mn", "register", "--home-agent", HA_ADDRESS, "--port", "4340", "--spi", "256", "--key",
                  KEY.hex(), "--home-address", "10.1.0.5", "--care-of", "192.0.2.10", "--lifetime", "99999")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.splitlines()[-1] == (
        "homeagent mn register: error: argument --lifetime: must be an integer from 0 to 65535, not '99999'")


# -- mn load skips the home addresses the Home Agent refuses (129) ---------------------------------------


def test_load_skips_reserved_home_addresses(daemons):
    """A home network holding the Home Agent's own address: the load starts past the network address and
    steps over the Home Agent's, and still registers exactly --mobile-nodes mobile nodes."""
    net = daemons.start("load", home_network="127.0.0.0/24", associations=(
        f'[[security_association]]\nhome_addresses = "127.0.0.0/24"\nspi = {SPI}\nkey = "{KEY.hex()}"\n'))
    r = homeagent("mn", "load", "--config", str(net.config_path), "--mobile-nodes", "4")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert (result["sent"], result["accepted"], result["codes"]) == (4, 4, {"0": 4})
    assert sorted(b["home_address"] for b in net.bindings_direct()) == [
        "127.0.0.1", "127.0.0.3", "127.0.0.4", "127.0.0.5"]


def test_load_without_config_skips_the_home_networks_network_address(ha):
    r = homeagent("mn", "load", "--home-agent", HA_ADDRESS, "--port", str(ha.port), "--spi", str(SPI),
                  "--key", KEY.hex(), "--home-network", "10.1.0.0/16", "--first-home-address", "10.1.0.0",
                  "--mobile-nodes", "2")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert (result["sent"], result["accepted"], result["codes"]) == (2, 2, {"0": 2})
    assert [b["care_of_address"] for b in bindings(ha, "--home-address", "10.1.0.1")] == ["192.0.2.1"]


def test_status_json(ha):
    r = homeagent("status", "--config", str(ha.config_path), "--json")
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    assert st["role"] == "active"
    assert st["address"] == HA_ADDRESS and st["port"] == ha.port
    assert st["bindings"] == len(bindings(ha))
    assert isinstance(st["counters"], dict)
    assert st["counters"]["requests"] >= st["counters"]["accepted"] >= 1
    assert st["counters"].get("accepted.deregistration", 0) >= 1
    assert st["peers"] == []
    text = homeagent("status", "--config", str(ha.config_path))
    assert text.returncode == 0 and "active" in text.stdout


def test_client_resynchronises_on_133(ha):
    counters = ha.counters()
    sa = SecurityAssociation(SPI, Algorithm.HMAC_MD5, KEY)
    node = MobileNode(
        IPv4Address("10.1.0.9"),
        IPv4Address(HA_ADDRESS),
        sa,
        ha.port,
        identifications=Identifications(offset=-120 * NTP_SECOND),
    )
    outcome = node.register(IPv4Address("192.0.2.50"), 120, timeout=1.0, retries=1)
    assert outcome.accepted and outcome.code == 0
    assert outcome.resynchronised is True
    assert outcome.attempts == 2
    assert abs(node.identifications.offset) < 3 * NTP_SECOND  # the 120 s skew is learnt away
    assert ha.counters()["denied.133"] == counters.get("denied.133", 0) + 1
    rows = [r for r in ha.bindings_direct() if r["home_address"] == "10.1.0.9"]
    assert [(r["care_of_address"], r["identification"]) for r in rows] == [  # shown as on the wire
        ("192.0.2.50", to_wire(outcome.request.identification))
    ]


def test_cli_without_daemon_fails_cleanly(daemons):
    ha = daemons.config("nodaemon")
    for args in (["status"], ["bindings"]):
        r = homeagent(*args, "--config", str(ha.config_path), "--json")
        assert r.returncode == 1
        assert "no daemon answers" in r.stderr
    r = homeagent("mn", "register", "--config", str(ha.config_path), "--home-address", "10.1.0.5", "--care-of",
                  "192.0.2.1", "--timeout", "0.1", "--retries", "0")
    assert r.returncode == 1 and "no reply" in r.stderr


def test_demo_runs_the_shipped_example():
    from .conftest import port_is_free

    if not port_is_free(HA_ADDRESS, 4340):
        pytest.skip("the example's port 127.0.0.2:4340 is taken")
    r = homeagent("demo", timeout=60)
    assert r.returncode == 0, r.stderr
    assert "reply 0 (ACCEPTED)" in r.stdout
    assert "1 binding(s)" in r.stdout and "active" in r.stdout
    assert port_is_free(HA_ADDRESS, 4340), "the demo's daemon is still running"
