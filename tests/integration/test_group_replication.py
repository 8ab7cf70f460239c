"""Active-standby replication between real daemons (US 7,227,863 FIG 4 to 9), seen from outside:
``homeagent bindings --json`` and ``homeagent status --json`` of every member.

Members 127.0.0.2 (priority 200), 127.0.0.3 (150) and 127.0.0.4 (100); mobile nodes register with the
virtual address 127.0.0.10, which only the active member binds.
"""

from __future__ import annotations

import json
import time
from ipaddress import IPv4Address

import pytest

from homeagent.mobile_node import LoadGenerator, MobileNode
from homeagent.wire.era import to_wire

from .conftest import homeagent, rrq
from .group_support import (
    MEMBER_ADDRESSES,
    MN_SA,
    VIP,
    Group,
    counter,
    make_group,
    start_standby_group,
    wait_until,
)


@pytest.fixture(scope="module")
def group(tmp_path_factory):
    yield from make_group(tmp_path_factory)


@pytest.fixture(scope="module")
def standby_group(group: Group):
    return start_standby_group(group)


@pytest.fixture
def fresh_group(tmp_path_factory):
    yield from make_group(tmp_path_factory)


def test_registration_reaches_every_member(group: Group, standby_group) -> None:
    a, b, c = standby_group
    r = homeagent(
        "mn", "register", "--home-agent", VIP, "--port", str(group.port), "--spi", str(MN_SA.spi),
        "--key", MN_SA.key.hex(), "--home-address", "10.1.1.1", "--care-of", "192.0.2.11", "--lifetime", "900",
        "--json",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    outcome = json.loads(r.stdout)
    assert outcome["code"] == 0 and outcome["home_agent"] == VIP
    group.wait_replicated(["10.1.1.1"])

    rows = {m.address: m.table_cli()["10.1.1.1"] for m in (a, b, c)}
    for address, row in rows.items():
        assert row["care_of_address"] == "192.0.2.11", address
        assert row["identification"] == outcome["identification"], address
        assert row["lifetime"] == 900, address
        assert row["home_agent"] == VIP, address
    remaining = [row["remaining"] for row in rows.values()]
    assert max(remaining) - min(remaining) < 1.0, rows
    assert 890 < min(remaining) <= 900

    statuses = {m.address: m.status_cli() for m in (a, b, c)}
    roles = sorted(st["role"] for st in statuses.values())
    assert roles == ["active", "standby", "standby"], roles
    assert statuses[a.address]["role"] == "active"
    for address, st in statuses.items():
        assert st["mode"] == "active-standby" and st["virtual_address"] == VIP
        others = set(MEMBER_ADDRESSES) - {address}
        assert {p["address"]: p["state"] for p in st["peers"]} == dict.fromkeys(others, "up"), st["peers"]
        assert st["bindings"] >= 1
    active = statuses[a.address]
    assert counter(active, "redundancy.updates_sent") >= 2  # one per standby
    wait_until(lambda: counter(a.status(), "redundancy.updates_acked") >= 2, 2, "the standbys' acks")
    for standby in (b, c):
        assert counter(statuses[standby.address], "redundancy.updates_received") >= 1
        assert counter(statuses[standby.address], "accepted") == 0  # it never served the registration


def test_registrations_keep_every_table_identical(group: Group, standby_group) -> None:
    a, b, c = standby_group
    addresses = [IPv4Address("10.1.2.0") + i for i in range(1, 31)]
    gen = LoadGenerator(IPv4Address(VIP), group.port, MN_SA, addresses, IPv4Address("192.0.2.22"), 600, 8)
    result = gen.run(count=len(addresses))
    assert result.accepted == len(addresses), result
    names = [str(x) for x in addresses]
    group.wait_replicated(names)
    tables = [m.table_cli() for m in (a, b, c)]
    for name in names:
        rows = [t[name] for t in tables]
        assert len({(r["care_of_address"], r["identification"], r["lifetime"]) for r in rows}) == 1, rows
        assert max(r["remaining"] for r in rows) - min(r["remaining"] for r in rows) < 1.0, rows


@pytest.mark.parametrize("how", ["lifetime 0", "care-of == home address"])
def test_deregistration_disappears_everywhere(group: Group, standby_group, how: str) -> None:
    a, b, c = standby_group
    hoa = "10.1.3.1" if how == "lifetime 0" else "10.1.3.2"
    node = MobileNode(IPv4Address(hoa), IPv4Address(VIP), MN_SA, group.port)
    assert node.register(IPv4Address("192.0.2.33"), 600).code == 0
    group.wait_replicated([hoa])
    if how == "lifetime 0":
        out = node.register(IPv4Address("192.0.2.33"), 0)  # this care-of address
    else:
        r = homeagent(
            "mn", "deregister", "--home-agent", VIP, "--port", str(group.port), "--spi", str(MN_SA.spi),
            "--key", MN_SA.key.hex(), "--home-address", hoa, "--json",
        )  # all of them: care-of address = home address
        assert r.returncode == 0, r.stdout + r.stderr
        out = None
    assert out is None or out.code == 0
    wait_until(lambda: all(hoa not in m.table() for m in (a, b, c)), 3, f"{hoa} gone from every member")
    for m in (a, b, c):
        assert hoa not in m.table_cli(), m.address
    # The last Identification outlives the binding on the standbys too: a replay of the registration is
    # refused by whoever serves next (the failover test shows it on a new active member).


@pytest.mark.parametrize("where", ["active", "standby"])
def test_remove_disappears_everywhere(group: Group, standby_group, where: str) -> None:
    """`homeagent remove` (an administrative removal, replicated like a de-registration) on one member."""
    a, b, c = standby_group
    hoa = "10.1.3.10" if where == "active" else "10.1.3.11"
    node = MobileNode(IPv4Address(hoa), IPv4Address(VIP), MN_SA, group.port)
    assert node.register(IPv4Address("192.0.2.34"), 600).code == 0
    group.wait_replicated([hoa])
    target = a if where == "active" else c
    r = homeagent("remove", "--config", str(target.config_path), "--home-address", hoa)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "removed 1 binding" in r.stdout, r.stdout
    wait_until(lambda: all(hoa not in m.table() for m in (a, b, c)), 3, f"{hoa} removed from every member")
    for m in (a, b, c):
        assert hoa not in m.table_cli(), m.address
    # The node's next registration (a current timestamp) is newer than the removal: accepted, everywhere.
    out = node.register(IPv4Address("192.0.2.35"), 600)
    assert out.code == 0
    group.wait_replicated([hoa])
    assert {m.table()[hoa]["identification"] for m in (a, b, c)} == {to_wire(out.reply.identification)}


def test_late_member_downloads_the_whole_table_before_serving(fresh_group: Group) -> None:
    g = fresh_group
    a = g.add(MEMBER_ADDRESSES[0], priority=200)
    b = g.add(MEMBER_ADDRESSES[1], priority=150)
    c = g.add(MEMBER_ADDRESSES[2], priority=100)
    g.start(a)
    wait_until(lambda: a.role() == "active", 5, "the first member to become active")
    g.start(b)
    g.wait_formed(active=a)

    addresses = [IPv4Address("10.1.4.0") + i for i in range(1, 201)]
    gen = LoadGenerator(IPv4Address(VIP), g.port, MN_SA, addresses, IPv4Address("192.0.2.44"), 1200, 32)
    result = gen.run(count=200)
    assert result.accepted == 200, result
    names = {str(x) for x in addresses}
    g.wait_replicated(names, [a, b])

    c.start(wait=False)
    seen: list[tuple[str, int]] = []  # (role, bindings) as often as the control socket answers
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        try:
            st = c.status()
        except Exception:  # noqa: BLE001 - not listening yet
            if c.proc is not None and c.proc.poll() is not None:
                pytest.fail(f"late member exited:\n{c.stderr()}")
            time.sleep(0.005)
            continue
        seen.append((st["role"], st["bindings"]))
        if st["role"] != "init":
            break
    assert seen and seen[-1][0] == "standby", seen
    assert all(bindings == 200 for role, bindings in seen if role != "init"), seen

    table = c.table_cli()
    assert names <= set(table), len(table)
    reference = a.table()
    for name in names:
        assert table[name]["identification"] == reference[name]["identification"]
        assert table[name]["care_of_address"] == "192.0.2.44"
        assert abs(table[name]["remaining"] - reference[name]["remaining"]) < 1.0

    st = c.status_cli()
    assert st["role"] == "standby"
    assert [(t["from"], t["to"]) for t in st["transitions"]] == [("init", "standby")]
    assert counter(st, "redundancy.table_requests_sent") >= 2  # one to each running member
    assert counter(st, "redundancy.table_replies_received") >= 2
    assert counter(st, "redundancy.became_active") == 0 and counter(st, "accepted") == 0
    g.wait_formed(active=a)

    # The late member is part of the group now: the next registration reaches it too.
    mn = g.vip_node()
    try:
        reply = mn.exchange(rrq("10.1.4.250", "192.0.2.45", home_agent=VIP))
    finally:
        mn.close()
    assert reply.code == 0
    g.wait_replicated(["10.1.4.250"], [c])
