"""Persistence end to end (issue 13): real daemons, a real SQLite file in their state_dir, kill -9.

A lone member killed with SIGKILL comes back with every binding it had acknowledged, each with the time it
has left, and with its replay protection; a file that is not ours is refused at start and left as it was;
persistence off touches no file; a group member that starts with a store still downloads the group's table,
and the store alone serves a cold start. ``homeagent bindings`` shows each binding's flags and source."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from homeagent.mobile_node import MobileNode
from homeagent.runtime.store import SCHEMA_VERSION
from homeagent.wire.auth import Algorithm, SecurityAssociation

from .conftest import D, KEY, SPI, T, homeagent, ntp_now, rrq
from .group_support import MEMBER_ADDRESSES, VIP, Group, counter, make_group, wait_until

MOBILE_NODES = 10_000


def listing(ha) -> tuple[float, list[dict]]:
    """The table through the CLI, and the monotonic time halfway through the listing."""
    t0 = time.monotonic()
    rows = ha.bindings_cli()
    return (t0 + time.monotonic()) / 2, rows


def test_ten_thousand_bindings_survive_kill_9_with_their_time_left_and_replay_protection(daemons):
    # A replay tolerance of an hour: only the last Identification, not the timestamp's age, can refuse
    # the old request after the restart.
    ha = daemons.start("store", replay_tolerance=3600)
    out = homeagent("mn", "load", "--config", str(ha.config_path), "--mobile-nodes", str(MOBILE_NODES),
                    "--lifetime", "1000", "--first-home-address", "10.1.0.1", timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["accepted"] == MOBILE_NODES
    mn = ha.mn()
    old = rrq("10.1.200.1", "192.0.2.50", ident=ntp_now(), lifetime=300, flags=D | T)
    assert mn.exchange(old).code == 0
    assert mn.exchange(rrq("10.1.200.1", "192.0.2.51", ident=ntp_now(), lifetime=300)).code == 0

    before_at, before = listing(ha)
    assert len(before) == MOBILE_NODES + 1
    ha.expect_clean_exit = False
    assert ha.stop(signal.SIGKILL) == -signal.SIGKILL
    time.sleep(1.5)  # time passes while it is down
    ha.expect_clean_exit = True
    ha.start()
    after_at, after = listing(ha)

    def key(r: dict) -> tuple:
        return r["home_address"], r["care_of_address"], r["lifetime"], r["identification"], r["flags"]

    assert sorted(map(key, after)) == sorted(map(key, before))
    left = {r["home_address"]: r["remaining"] for r in after}
    elapsed = after_at - before_at
    for r in before:
        assert abs(left[r["home_address"]] - (r["remaining"] - elapsed)) <= 1.0, (r, left[r["home_address"]])
    assert {r["source"] for r in after} == {"store"}
    counters = ha.counters()
    assert counters["store.loaded_bindings"] == MOBILE_NODES + 1 and counters["store.expired_at_load"] == 0

    assert mn.exchange(old).code == 133  # the replay: older than the last Identification, which survived
    assert ha.bindings_direct() and len(ha.bindings_direct()) == MOBILE_NODES + 1  # and changed nothing
    mn.close()


def test_every_registration_acknowledged_before_a_kill_9_is_there_after_it(daemons):
    """Killed in the middle of a burst: whatever reply a mobile node got, its binding was committed first
    (the replies of a loop turn leave after its commit); what the kill interrupted was never answered."""
    ha = daemons.start("burst")
    sa = SecurityAssociation(SPI, Algorithm.HMAC_MD5, KEY)
    first = int(IPv4Address("10.1.0.1"))
    nodes = [MobileNode(IPv4Address(first + i), IPv4Address(ha.address), sa, ha.port) for i in range(20_000)]
    requests = [node.request(IPv4Address("192.0.2.1"), 600) for node in nodes]
    acked: dict[str, int] = {}
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)

    def read() -> int:
        got = 0
        while True:
            try:
                data = sock.recv(2048)
            except (BlockingIOError, ConnectionRefusedError):
                return got
            got += 1
            if data[1] == 0:  # accepted: its home address and Identification
                acked[str(IPv4Address(data[4:8]))] = int.from_bytes(data[12:20], "big")

    sent = answered = 0
    ha.expect_clean_exit = False
    while sent < len(requests):
        while sent - answered < 256 and sent < len(requests):
            sock.sendto(requests[sent], (ha.address, ha.port))
            sent += 1
        answered += read()
        if answered >= 6000 and ha.running():
            os.kill(ha.pid, signal.SIGKILL)  # with some 256 requests in flight
            break
    assert ha.proc is not None
    ha.proc.wait(timeout=10)
    answered += read()
    sock.close()
    ha.stop()
    assert 6000 <= len(acked) <= sent  # (those in flight at the kill may or may not have been answered)
    ha.expect_clean_exit = True
    ha.start()
    held = {r["home_address"]: r["identification"] for r in ha.bindings_direct()}
    missing = [h for h in acked if h not in held]
    assert not missing, f"{len(missing)} acknowledged registrations lost, such as {missing[:3]}"
    assert all(held[h] == ident for h, ident in acked.items())


def test_ended_bindings_are_dropped_at_load_and_the_rest_expire_on_time(daemons):
    ha = daemons.start("ended")
    mn = ha.mn()
    assert mn.exchange(rrq("10.1.0.1", "192.0.2.1", lifetime=2)).code == 0
    assert mn.exchange(rrq("10.1.0.2", "192.0.2.2", lifetime=4)).code == 0
    assert mn.exchange(rrq("10.1.0.3", "192.0.2.3", lifetime=600)).code == 0
    assert ha.stop() == 0  # cleanly: everything committed
    time.sleep(2.5)
    ha.start()
    table = {r["home_address"]: r for r in ha.bindings_direct()}
    assert sorted(table) == ["10.1.0.2", "10.1.0.3"]
    assert table["10.1.0.2"]["remaining"] < 2.0
    assert ha.counters()["store.expired_at_load"] == 1
    wait_until(lambda: ha.counters().get("expired") == 1, 4, "the 4 s binding to expire after the restart")
    assert [r["home_address"] for r in ha.bindings_direct()] == ["10.1.0.3"]
    mn.close()


# -- files not ours ---------------------------------------------------------------------------------


def corrupt(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA application_id = {0x4D495048}")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    db.execute("CREATE TABLE journal (seq INTEGER PRIMARY KEY, records BLOB NOT NULL)")
    db.execute("INSERT INTO journal (records) VALUES (?)", (b"\x0a\x01\x00\x01 not a record",))
    db.commit()
    db.close()


def foreign(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE bindings (home TEXT, care_of TEXT)")
    db.commit()
    db.close()


def newer(path: Path) -> None:
    corrupt(path)
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()


def garbage(path: Path) -> None:
    path.write_bytes(bytes(range(256)) * 64)


FILES = [(corrupt, "is corrupt"), (foreign, "is not a homeagent store"), (newer, "newer than this homeagent"),
         (garbage, "is not an SQLite database")]


@pytest.mark.parametrize("make, message", FILES, ids=[m.__name__ for m, _ in FILES])
def test_a_file_not_ours_is_refused_at_start_in_one_line_and_left_untouched(daemons, make, message):
    ha = daemons.config("refused")
    ha.state_dir.mkdir(mode=0o700)
    store = ha.state_dir / "bindings.db"
    make(store)
    digest = hashlib.sha256(store.read_bytes()).hexdigest()
    r = subprocess.run([sys.executable, "-m", "homeagent", "run", "--config", str(ha.config_path)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("homeagent: cannot start: home_agent.persistence: "), r.stderr
    assert message in lines[-1] and str(store) in lines[-1]
    assert "Traceback" not in r.stderr
    assert hashlib.sha256(store.read_bytes()).hexdigest() == digest
    assert sorted(p.name for p in ha.state_dir.iterdir()) == ["bindings.db"]  # nor a socket, nor a WAL


def test_persistence_off_touches_no_file(daemons):
    ha = daemons.config("off", extra_home_agent="persistence = false\n")
    ha.state_dir.mkdir(mode=0o700)
    garbage(ha.state_dir / "bindings.db")  # even one it would refuse
    digest = hashlib.sha256((ha.state_dir / "bindings.db").read_bytes()).hexdigest()
    ha.start()
    mn = ha.mn()
    assert mn.exchange(rrq("10.1.0.1", "192.0.2.1")).code == 0
    mn.close()
    assert ha.stop() == 0
    assert sorted(p.name for p in ha.state_dir.iterdir()) == ["bindings.db"]
    assert hashlib.sha256((ha.state_dir / "bindings.db").read_bytes()).hexdigest() == digest
    fresh = daemons.start("off-fresh", extra_home_agent="persistence = false\n")
    m = fresh.mn()
    assert m.exchange(rrq("10.1.0.1", "192.0.2.1")).code == 0
    m.close()
    assert fresh.stop() == 0
    assert list(fresh.state_dir.iterdir()) == []


# -- flags and source -------------------------------------------------------------------------------


def test_bindings_shows_each_bindings_flags_and_source(daemons):
    ha = daemons.start("columns")
    mn = ha.mn()
    assert mn.exchange(rrq("10.1.0.7", "192.0.2.7", flags=D | T)).code == 0
    assert mn.exchange(rrq("10.1.0.8", "192.0.2.8")).code == 0
    rows = {r["home_address"]: r for r in ha.bindings_cli()}
    assert (rows["10.1.0.7"]["flags"], rows["10.1.0.7"]["flag_letters"], rows["10.1.0.7"]["source"]) == \
           (D | T, "DT", "registration")
    assert (rows["10.1.0.8"]["flag_letters"], rows["10.1.0.8"]["source"]) == ("", "registration")
    text = homeagent("bindings", "--config", str(ha.config_path)).stdout.splitlines()
    assert "flags" in text[0] and "source" in text[0]
    line = next(t for t in text if t.startswith("10.1.0.7 "))
    assert line.split()[-2:] == ["DT", "registration"]
    line = next(t for t in text if t.startswith("10.1.0.8 "))
    assert line.split()[-2:] == ["-", "registration"]
    assert ha.stop() == 0
    ha.start()
    assert {r["source"] for r in ha.bindings_cli()} == {"store"}
    assert mn.exchange(rrq("10.1.0.8", "192.0.2.9")).code == 0  # registered again here: its own source
    rows = {r["home_address"]: r for r in ha.bindings_cli()}
    assert (rows["10.1.0.7"]["source"], rows["10.1.0.8"]["source"]) == ("store", "registration")
    mn.close()


# -- a group ----------------------------------------------------------------------------------------


@pytest.fixture
def g(tmp_path_factory):
    yield from make_group(tmp_path_factory)


def via_vip(g: Group, home: str, care_of: str, lifetime: int = 600) -> None:
    mn = g.vip_node()
    try:
        assert mn.exchange(rrq(home, care_of, ident=ntp_now(), lifetime=lifetime, home_agent=VIP)).code == 0
    finally:
        mn.close()


def test_a_member_with_a_store_still_downloads_and_the_store_alone_fills_a_cold_start(g):
    peers_a, peers_b = [MEMBER_ADDRESSES[1]], [MEMBER_ADDRESSES[0]]
    a = g.add(MEMBER_ADDRESSES[0], priority=200, peers=peers_a)
    b = g.add(MEMBER_ADDRESSES[1], priority=100, peers=peers_b)
    g.start(a)
    wait_until(lambda: a.role() == "active", 5, "a to become active")
    g.start(b)
    g.wait_formed(active=a)
    via_vip(g, "10.1.0.1", "192.0.2.1")
    via_vip(g, "10.1.0.3", "192.0.2.3")
    g.wait_replicated(["10.1.0.1", "10.1.0.3"], [b])
    assert b.stop() == 0  # its store: 10.1.0.1 at 192.0.2.1, 10.1.0.3

    via_vip(g, "10.1.0.1", "192.0.2.11")  # moved meanwhile
    mn = g.vip_node()
    assert mn.exchange(rrq("10.1.0.3", "10.1.0.3", ident=ntp_now(), lifetime=0, home_agent=VIP)).code == 0
    mn.close()  # 10.1.0.3 went home
    via_vip(g, "10.1.0.2", "192.0.2.2")  # new

    b.start()
    g.wait_formed(active=a)
    st = b.status()
    assert counter(st, "store.loaded_nodes") == 2 and counter(st, "redundancy.table_replies_received") >= 1

    def same(m) -> dict:
        return {h: (r["care_of_address"], r["identification"]) for h, r in m.table().items()}

    wait_until(lambda: same(b) == same(a), 5, "b to hold a's table")
    table = b.table()
    assert sorted(table) == ["10.1.0.1", "10.1.0.2"]  # the stale 10.1.0.3 of its store is gone
    assert table["10.1.0.1"]["care_of_address"] == "192.0.2.11" and table["10.1.0.1"]["source"] == "download"

    # A cold start: both stopped; b alone (a does not answer) serves what its store holds.
    assert a.stop() == 0 and b.stop() == 0
    b.start()
    wait_until(lambda: b.role() == "active", 10, "b alone to become active")
    table = b.table()
    assert {h: r["care_of_address"] for h, r in table.items()} == {"10.1.0.1": "192.0.2.11",
                                                                   "10.1.0.2": "192.0.2.2"}
    assert {r["source"] for r in table.values()} == {"store"}
    mn = g.vip_node()
    assert mn.exchange(rrq("10.1.0.2", "192.0.2.22", ident=ntp_now(), home_agent=VIP)).code == 0
    mn.close()
