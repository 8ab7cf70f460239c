"""core/removal.py: ``homeagent remove --all`` / ``--prefix`` on an in-memory group: every step bounded,
only what is asked removed, each node replicated as a removal, none for a node with no binding left."""

from __future__ import annotations

from ipaddress import IPv4Network

from homeagent.core.removal import BulkRemoval
from homeagent.wire.redundancy import BindingUpdate

from .support import ip
from .test_group import HA1, group, populate, registration, view

N = 3000


def bound_nodes(ha) -> set[int]:
    return {a for a in ha.bindings.home_addresses() if ha.bindings.bindings_of(a)}


def run(net, removal: BulkRemoval, scan: int, page: int) -> int:
    """Every step, delivered to the members as the runtime would between two turns; the number of steps.
    Checks each step's bound: at most ``page`` nodes removed, at most ``scan`` addresses looked at."""
    steps = 0
    while True:
        at, nodes = removal._at, removal.mobile_nodes
        effects = removal.step(net.now)
        if effects is None:
            return steps
        steps += 1
        assert removal.mobile_nodes - nodes <= page and removal._at - at <= scan
        net.collect(HA1, effects)
        net.deliver()


def test_remove_all_in_bounded_steps_replicated_once_per_bound_node():
    net, (ha1, ha2) = group()
    populate(ha1, N, net.now)
    populate(ha2, N, net.now)
    bound, bindings = bound_nodes(ha1), len(ha1.bindings)
    assert 0 < len(bound) < N  # some nodes hold only their last Identification (de-registered)
    updates_before = len(net.messages(BindingUpdate))
    removal = BulkRemoval(ha1, None, scan=500, page=100)
    steps = run(net, removal, 500, 100)
    assert (removal.removed, removal.mobile_nodes) == (bindings, len(bound))
    assert steps >= len(bound) / 100
    assert len(ha1.bindings) == len(ha2.bindings) == 0 and view(ha1) == view(ha2)
    removals = [m for m in net.messages(BindingUpdate)[updates_before:] if m.src == HA1]
    assert len(removals) == len(bound)  # one update per node that had a binding: none for an unbound one
    assert {m.message.home_address for m in removals} == bound
    assert ha1.counters["removed"] == bindings


def test_remove_prefix_leaves_the_rest():
    net, (ha1, ha2) = group()
    populate(ha1, N, net.now)
    populate(ha2, N, net.now)
    prefix = IPv4Network("10.1.4.0/22")
    inside = {a for a in bound_nodes(ha1) if a & 0xFFFFFC00 == ip("10.1.4.0")}
    outside = bound_nodes(ha1) - inside
    removal = BulkRemoval(ha1, prefix)
    run(net, removal, 4096, 256)
    assert removal.mobile_nodes == len(inside)
    assert bound_nodes(ha1) == bound_nodes(ha2) == outside


def test_a_node_registered_after_the_walk_began_keeps_its_binding():
    net, (ha1, _) = group()
    populate(ha1, 100, net.now)
    removal = BulkRemoval(ha1, None, page=10)
    net.collect(HA1, removal.step(net.now))
    net.register(registration(now=net.now + 1))  # 10.1.0.5 was removed already; it registers again
    net.deliver()
    run(net, removal, 4096, 10)
    assert bound_nodes(ha1) == {ip("10.1.0.5")}
    elsewhere = BulkRemoval(ha1, IPv4Network("10.2.0.0/16"))
    run(net, elsewhere, 4096, 256)
    assert elsewhere.removed == 0 and bound_nodes(ha1) == {ip("10.1.0.5")}
