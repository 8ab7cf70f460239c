"""``homeagent remove --prefix P`` / ``--all`` and ``homeagent status --reset-counters`` against real
daemons: removals replicated to the standby, the confirmation for --all, the table worked through a
step per loop turn (a large removal never costs a takeover), and counters reset without touching state."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Network

import pytest

from homeagent.mobile_node import LoadGenerator, MobileNode

from .conftest import homeagent
from .group_support import MEMBER_ADDRESSES, MN_SA, VIP, counter, make_group, wait_until

FIRST = IPv4Address("10.1.0.1")


@pytest.fixture
def g(tmp_path_factory):
    yield from make_group(tmp_path_factory)


def register(port: int, count: int, target: str = VIP) -> None:
    nodes = [FIRST + i for i in range(count)]
    result = LoadGenerator(IPv4Address(target), port, MN_SA, nodes, IPv4Address("192.0.2.1"), 1800,
                           window=64).run(count=count)
    assert result.accepted == count, result


def pair(g):
    a = g.add(MEMBER_ADDRESSES[0], priority=200, peers=[MEMBER_ADDRESSES[1]])
    b = g.add(MEMBER_ADDRESSES[1], priority=100, peers=[MEMBER_ADDRESSES[0]])
    g.start(a)
    wait_until(lambda: a.role() == "active", 5, "the first member to become active")
    g.start(b)
    g.wait_formed(active=a)
    return a, b


def test_remove_prefix_then_all_replicated_and_confirmed(g):
    a, b = pair(g)
    register(g.port, 3000)
    wait_until(lambda: b.status()["bindings"] == 3000, 10, "the standby to hold every binding")
    prefix = IPv4Network("10.1.8.0/21")
    inside = sum(FIRST + i in prefix for i in range(3000))

    r = homeagent("remove", "--config", str(a.config_path), "--prefix", str(prefix))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"removed {inside} binding(s) of {inside} mobile node(s) in {prefix}"
    for m in (a, b):  # replicated: gone from the standby as from the active member, the others kept
        wait_until(lambda m=m: m.status()["bindings"] == 3000 - inside, 5, f"{m.address} to drop {prefix}")
        rows = m.bindings_direct()
        assert not [r for r in rows if IPv4Address(r["home_address"]) in prefix]
    assert counter(a.status(), "removed") == inside

    refused = homeagent("remove", "--config", str(a.config_path), "--all")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert a.status()["bindings"] == 3000 - inside  # nothing was removed without the confirmation
    zero = homeagent("remove", "--config", str(a.config_path), "--prefix", "0.0.0.0/0")
    assert zero.returncode == 2 and "--yes" in zero.stderr  # every address is --all in disguise

    r = homeagent("remove", "--config", str(b.config_path), "--all", "--yes")  # on the standby, too
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"removed {3000 - inside} binding(s) of {3000 - inside} mobile node(s)"
    for m in (a, b):
        wait_until(lambda m=m: m.status()["bindings"] == 0, 5, f"{m.address} to hold no binding")
    # A node registers again with a fresh timestamp: newer than the removal, accepted, replicated.
    node = MobileNode(FIRST, IPv4Address(VIP), MN_SA, g.port)
    assert node.register(IPv4Address("192.0.2.9"), 600).code == 0
    wait_until(lambda: b.status()["bindings"] == 1, 5, "the new registration on the standby")
    r = homeagent("remove", "--config", str(a.config_path), "--prefix", "10.2.0.0/16")
    assert r.stdout.strip() == "removed 0 binding(s) of 0 mobile node(s) in 10.2.0.0/16"


def test_removing_a_large_table_never_costs_a_takeover(g):
    """Removed in one go, 20,000 nodes with their replication hold the loop longer than the master-down
    interval (0.36 s here): the standby would take over. A step per loop turn keeps the advertisements
    flowing, and the control socket answers meanwhile."""
    a, b = pair(g)
    register(g.port, 20000)
    wait_until(lambda: b.status()["bindings"] == 20000, 20, "the standby to hold every binding")
    r = homeagent("remove", "--config", str(a.config_path), "--all", "--yes", timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "removed 20000 binding(s) of 20000 mobile node(s)"
    wait_until(lambda: b.status()["bindings"] == 0, 10, "the standby to drop every binding")
    sa, sb = a.status(), b.status()
    assert (sa["role"], sb["role"]) == ("active", "standby")
    assert counter(sb, "redundancy.became_active") == 0 and counter(sa, "redundancy.became_standby") == 1
    assert counter(sa, "redundancy.members_marked_down") == 0


def test_status_reset_counters_resets_counters_only(daemons):
    ha = daemons.start("reset")
    for i in range(3):
        node = MobileNode(IPv4Address(f"10.1.0.{i + 5}"), IPv4Address(ha.address), MN_SA, ha.port)
        assert node.register(IPv4Address("192.0.2.5"), 600).code == 0
    before = ha.status()
    assert before["counters"]["accepted"] == 3

    r = homeagent("status", "--config", str(ha.config_path), "--reset-counters")
    assert r.returncode == 0, r.stderr
    assert "accepted" in r.stdout and r.stdout.rstrip().endswith(
        "counters reset to zero (the figures above are those up to the reset)")
    after = ha.status()
    assert after["counters"] == {} and after["bindings"] == 3  # state stays: the bindings, the role
    assert after["role"] == "active" and after["counters_since"] > before["counters_since"]
    assert after["uptime"] >= before["uptime"]

    r = homeagent("status", "--config", str(ha.config_path), "--json", "--reset-counters")
    answer = json.loads(r.stdout)
    assert answer["counters_reset"] is True and answer["counters"] == {}
    node = MobileNode(IPv4Address("10.1.0.5"), IPv4Address(ha.address), MN_SA, ha.port)
    assert node.register(IPv4Address("192.0.2.6"), 600).code == 0  # replay state survived: a newer one passes
    assert ha.status()["counters"]["accepted"] == 1
    assert "counters reset by hand" in ha.stderr()
