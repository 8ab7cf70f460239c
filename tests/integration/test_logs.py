"""The daemon's log from outside: real daemons, their standard error read back line by line and parsed
(logfmt by an independent reader here, JSON with ``json``), one line per event with its fields; no
timestamp of our own when standard error is the journal; role changes and members up and down in a
group of two."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import WRONG_KEY, HomeAgentProcess, config_text, free_udp_port, homeagent, rrq
from .group_support import MEMBER_ADDRESSES, Group, make_group, wait_until

_PAIR = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)=("(?:[^"\\]|\\.)*"|[^ "]*)(?: |$)')


def logfmt(line: str) -> dict[str, str]:
    """``key=value`` and ``key="quoted"`` pairs, one space apart; anything else fails the test."""
    out: dict[str, str] = {}
    at = 0
    while at < len(line):
        m = _PAIR.match(line, at)
        assert m is not None, f"not logfmt at {at}: {line!r}"
        raw = m.group(2)
        out[m.group(1)] = json.loads(raw) if raw.startswith('"') else raw
        at = m.end()
    return out


def lines(ha: HomeAgentProcess, parse=logfmt) -> list[dict]:
    out = [parse(line) for line in ha.stderr().splitlines() if line]
    for pairs in out:
        assert {"level", "logger", "msg"} <= set(pairs), pairs
    return out


def events(ha: HomeAgentProcess, parse=logfmt) -> list[dict]:
    return [pairs for pairs in lines(ha, parse) if "event" in pairs]


def start(ha: HomeAgentProcess, level: str, env: dict[str, str] | None = None) -> HomeAgentProcess:
    """As HomeAgentProcess.start, at ``level`` and with ``env``."""
    ha._stderr = open(ha.stderr_path, "wb")  # noqa: SIM115 - closed when the factory stops it
    ha.proc = subprocess.Popen(
        [sys.executable, "-m", "homeagent", "run", "--config", str(ha.config_path), "--log-level", level],
        stdout=subprocess.DEVNULL, stderr=ha._stderr, env={**os.environ, **(env or {})},
    )
    ha.wait_ready()
    return ha


def configured(daemons, tmp_path: Path, name: str, extra: str = "") -> HomeAgentProcess:
    port = free_udp_port()
    text = config_text(tmp_path / name, port) + extra
    return daemons.config(name, port=port, state_dir=tmp_path / name, text=text)


def test_each_event_is_one_logfmt_line_with_its_fields(daemons, tmp_path):
    ha = start(configured(daemons, tmp_path, "debug"), "debug")
    mn = ha.mn()
    first = rrq("10.1.5.1", "192.0.2.1")
    assert mn.exchange(first).code == 0
    assert mn.exchange(rrq("10.1.5.1", "192.0.2.1", lifetime=900)).code == 0
    assert mn.exchange(rrq("10.1.5.1", "192.0.2.99", key=WRONG_KEY)).code == 131
    assert mn.exchange(rrq("10.1.5.1", "192.0.2.1", lifetime=0)).code == 0
    assert mn.exchange(rrq("10.1.5.2", "192.0.2.2", lifetime=1)).code == 0
    assert mn.exchange(rrq("10.1.5.3", "192.0.2.3")).code == 0
    assert mn.silent(b"\x01\x00")
    source = f"127.0.0.1:{mn.port}"
    mn.close()
    assert homeagent("remove", "--config", str(ha.config_path), "--home-address", "10.1.5.3").returncode == 0
    wait_until(lambda: any(e["event"] == "binding_expired" for e in events(ha)), 5, "the expiry's line")
    assert ha.stop() == 0

    seen = events(ha)
    by = {e["event"]: e for e in seen}
    order = [e["event"] for e in seen if e["event"] not in ("denied",)]
    assert order == ["binding_accepted", "binding_renewed", "security_violation", "binding_deregistered",
                     "binding_accepted", "binding_accepted", "discarded", "binding_removed", "binding_expired"], order
    accepted = next(e for e in seen if e["event"] == "binding_accepted")
    assert accepted["level"] == "info" and accepted["logger"] == "homeagent.events"
    assert (accepted["home_address"], accepted["care_of_address"], accepted["lifetime"]) == ("10.1.5.1", "192.0.2.1",
                                                                                          "600")
    assert accepted["source"] == source and accepted["flags"] == "0x00" and int(accepted["identification"]) > 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", accepted["ts"])
    assert by["binding_renewed"]["level"] == "debug" and by["binding_renewed"]["lifetime"] == "900"
    violation = by["security_violation"]
    assert (violation["level"], violation["kind"], violation["reason"], violation["home_address"]) == (
        "warning", "registration", "authentication_failed", "10.1.5.1")
    assert by["denied"]["code"] == "131" and by["denied"]["level"] == "debug"
    assert (by["binding_deregistered"]["level"], by["binding_deregistered"]["removed"]) == ("info", "1")
    assert (by["discarded"]["level"], by["discarded"]["reason"], by["discarded"]["source"]) == ("debug", "malformed",
                                                                                                source)
    assert (by["binding_removed"]["home_address"], by["binding_removed"]["level"]) == ("10.1.5.3", "info")
    assert (by["binding_expired"]["home_address"], by["binding_expired"]["lifetime"]) == ("10.1.5.2", "1")
    other = [pairs for pairs in lines(ha) if "event" not in pairs]
    assert any(p["msg"].startswith("serving on") for p in other) and any(p["msg"].startswith("stopping") for p in other)


def test_json_on_request_and_renewals_stay_out_at_info(daemons, tmp_path):
    ha = configured(daemons, tmp_path, "json", '\n[log]\nformat = "json"\n').start()  # --log-level info
    mn = ha.mn()
    for lifetime in (600, 700, 0):
        assert mn.exchange(rrq("10.1.4.1", "192.0.2.1", lifetime=lifetime)).code == 0
    mn.close()
    assert ha.stop() == 0
    seen = events(ha, json.loads)
    assert [e["event"] for e in seen] == ["binding_accepted", "binding_deregistered"]
    assert seen[0]["lifetime"] == 600 and isinstance(seen[0]["identification"], int)
    assert all("ts" in pairs for pairs in lines(ha, json.loads))


def test_under_the_journal_lines_carry_their_priority_and_no_timestamp(daemons, tmp_path):
    ha = configured(daemons, tmp_path, "journal")
    ha.stderr_path.touch()
    st = os.stat(ha.stderr_path)  # the file start() opens for standard error: the "journal's" stream
    start(ha, "info", env={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    mn = ha.mn()
    assert mn.exchange(rrq("10.1.3.1", "192.0.2.1", key=WRONG_KEY)).code == 131
    mn.close()
    assert ha.stop() == 0
    raw = [line for line in ha.stderr().splitlines() if line]
    assert raw and all(re.match(r"<[2-7]>", line) for line in raw), raw
    parsed = [(line[1], logfmt(line[3:])) for line in raw]
    assert all("ts" not in pairs for _, pairs in parsed)
    assert ("4", "security_violation") in [(p, pairs.get("event")) for p, pairs in parsed]
    assert all(p == "6" for p, pairs in parsed if pairs["level"] == "info")


def test_a_journal_variable_for_another_stream_changes_nothing(daemons, tmp_path):
    ha = configured(daemons, tmp_path, "notjournal")
    st = os.stat(tmp_path)  # a directory: not our standard error
    start(ha, "info", env={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    assert ha.stop() == 0
    assert all("ts" in pairs for pairs in lines(ha))


# -- a group of two -----------------------------------------------------------------------------------


@pytest.fixture
def group(tmp_path_factory):
    yield from make_group(tmp_path_factory)


def test_role_changes_and_members_up_and_down_are_events(group: Group):
    a, b = (group.add(address, priority=priority, peers=[p for p in MEMBER_ADDRESSES[:2] if p != address])
            for address, priority in zip(MEMBER_ADDRESSES[:2], (200, 100)))
    group.start(a)
    wait_until(lambda: a.role() == "active", 5, "the first member to become active")
    group.start(b)
    group.wait_formed(active=a)
    b.stop()
    wait_until(lambda: any(e["event"] == "peer_down" for e in events(a)), 5, "a's line for b going down")

    seen = events(a)
    roles = [(e["from"], e["to"], e["reason"]) for e in seen if e["event"] == "role_change"]
    assert roles == [("init", "standby", "ready"), ("standby", "active", "master_down")], roles
    change = next(e for e in seen if e["event"] == "role_change" and e["to"] == "active")
    assert change["level"] == "info" and "no active member heard" in change["msg"]
    up = [e for e in seen if e["event"] == "peer_up"]
    down = [e for e in seen if e["event"] == "peer_down"]
    assert [e["peer"] for e in up] == [b.address] and up[0]["level"] == "info"
    # A standby that stops sends nothing (only an active member resigns): it is "not heard".
    assert [(e["peer"], e["reason"], e["level"]) for e in down] == [(b.address, "not heard", "warning")]
    assert seen.index(up[0]) < seen.index(down[0])
    b_roles = [(e["from"], e["to"], e["reason"]) for e in events(b) if e["event"] == "role_change"]
    assert b_roles[0] == ("init", "standby", "ready") and b_roles[-1][1:] == ("init", "stop"), b_roles


def test_a_reload_changes_the_format_of_the_lines_after_it(daemons, tmp_path):
    import signal
    import time

    ha = configured(daemons, tmp_path, "reformat").start()
    ha.config_path.write_text(ha.config_path.read_text() + '\n[log]\nformat = "json"\n')
    os.kill(ha.pid, signal.SIGHUP)
    wait_until(lambda: "log.format logfmt -> json" in ha.stderr(), 5, "the reload's line")
    mn = ha.mn()
    assert mn.exchange(rrq("10.1.2.1", "192.0.2.1")).code == 0
    mn.close()
    time.sleep(0.1)
    assert ha.stop() == 0
    raw = [line for line in ha.stderr().splitlines() if line]
    first_json = next(i for i, line in enumerate(raw) if line.startswith("{"))
    assert all(logfmt(line) for line in raw[:first_json])
    after = [json.loads(line) for line in raw[first_json:]]
    assert [e["event"] for e in after if "event" in e] == ["binding_accepted"]
