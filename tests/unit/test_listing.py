"""core/listing.py: the binding table listed a bounded step at a time gives exactly the rows a listing in
one go gave (``Binding.as_dict``, by home address then care-of address), and changes between two steps
neither break the walk nor make it list a node twice."""

from __future__ import annotations

import random
from ipaddress import IPv4Address

import pytest

from homeagent.core.bindings import BindingTable
from homeagent.core.listing import BindingWalk, dotted

NOW = 1000.0


def in_one_go(table: BindingTable, now: float) -> list[dict[str, object]]:
    """What ``HomeAgent.binding_list`` answered before the walk: every binding, as_dict, sorted."""
    return [b.as_dict(now) for b in sorted(table, key=lambda b: (b.home_address, b.care_of_address))]


def steps(walk: BindingWalk, now: float) -> list[list[dict[str, object]]]:
    out = []
    while (rows := walk.step(now)) is not None:
        out.append(rows)
    return out


def filled(seed: int, nodes: int = 500) -> BindingTable:
    """Random home addresses over the whole address space, some nodes with several care-of addresses,
    some de-registered (the table still knows them), some expired and not yet reaped, odd lifetimes and
    flags, two home agents."""
    rnd = random.Random(seed)
    table = BindingTable()
    for ident, home in enumerate(rnd.sample(range(1, 1 << 32), nodes), start=1 << 40):
        for i in range(rnd.choice([1, 1, 1, 2, 3])):
            table.register(home, rnd.getrandbits(32), rnd.randrange(0, 0x10000), ident + i,
                           NOW - rnd.uniform(0, 2000), flags=rnd.getrandbits(8), simultaneous=True,
                           home_agent=rnd.choice([0x7F00000A, 0x0A000001]))
        if rnd.random() < 0.1:
            table.deregister(home, None, ident + 10)
    return table


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("run, page", [(7, 5), (64, 1), (100_000, 256)])
def test_the_walk_lists_what_a_listing_in_one_go_did(seed, run, page):
    table = filled(seed)
    rows = [r for s in steps(BindingWalk(table, run=run, page=page), NOW) for r in s]
    assert rows == in_one_go(table, NOW)
    assert any(r["remaining"] == 0.0 for r in rows) and any(r["remaining"] > 0 for r in rows)


def test_every_step_is_bounded():
    """A step sorts one run or turns at most ``page`` nodes into rows; nodes with no binding left count
    too, so a table of de-registered nodes cannot make one step walk all of it."""
    table = filled(1, nodes=2000)
    for home in table.home_addresses()[:1500]:
        table.deregister(home, None, 1 << 50)
    pages = steps(BindingWalk(table, run=100, page=10), NOW)
    assert max(len(p) for p in pages) <= 10 * 3  # at most three bindings a node here
    # a step per run sorted, then a step per ten nodes (the last run's step gives the first ten)
    assert len(pages) == 2000 // 100 + 2000 // 10 - 1


def test_one_home_address_and_empty_tables():
    table = filled(2, nodes=50)
    home = sorted(table.home_addresses())[7]
    assert BindingWalk(table, home).rest(NOW) == [b.as_dict(NOW) for b in sorted(
        table.bindings_of(home), key=lambda b: b.care_of_address)]
    assert BindingWalk(table, 0x01020304).rest(NOW) == []
    assert BindingWalk(BindingTable()).step(NOW) is None


def test_changes_between_steps_neither_break_the_walk_nor_repeat_a_node():
    """Nodes the walk has not reached yet are shown as they are when it reaches them; a node registered
    after it began is not shown; nothing is listed twice and the order holds."""
    table = filled(3, nodes=300)
    homes = sorted(table.home_addresses())
    walk = BindingWalk(table, run=50, page=20)
    seen: list[dict[str, object]] = []
    moved = homes[-1]  # reached last
    newcomer = homes[-1] + 1 if homes[-1] < (1 << 32) - 1 else 1
    gone = homes[-2]
    changed = False
    while (rows := walk.step(NOW)) is not None:
        seen.extend(rows)
        if rows and not changed:
            changed = True
            table.register(moved, 0xC0000299, 600, 1 << 60, NOW)
            table.register(newcomer, 0xC0000201, 600, 1 << 60, NOW)
            table.deregister(gone, None, 1 << 60)
            for i in range(1000):  # the dictionary grows: a walk over the live table would fail here
                table.register(0x0B000000 + i, 0xC0000201, 600, 1 << 60, NOW)
    keys = [(r["home_address"], r["care_of_address"]) for r in seen]
    assert len(keys) == len(set(keys))
    assert [IPv4Address(str(r["home_address"])) for r in seen] == sorted(
        IPv4Address(str(r["home_address"])) for r in seen)
    listed = {r["home_address"] for r in seen}
    assert dotted(newcomer) not in listed and dotted(gone) not in listed
    assert [r["care_of_address"] for r in seen if r["home_address"] == dotted(moved)] == ["192.0.2.153"]


@pytest.mark.parametrize("address", [0, 1, 0x7F000001, 0xC0A80001, 0xFFFFFFFF, 0x0A01FF00])
def test_dotted_is_what_ipv4address_writes(address):
    assert dotted(address) == str(IPv4Address(address))


# -- flags and source (issue 13) -----------------------------------------------------------------------


def test_rows_carry_the_flag_letters_and_where_each_binding_came_from():
    from homeagent.core.bindings import Binding, NodeState, Source
    from homeagent.core.node_state import flag_letters

    assert flag_letters(0) == "" and flag_letters(0x22) == "DT" and flag_letters(0xFF) == "SBDMGrTx"
    table = BindingTable()
    table.register(1, 0xC0000201, 600, 10, NOW, flags=0x22)  # accepted here
    table.merge(2, NodeState(11, 11, (Binding(2, 0xC0000202, 600, NOW + 600, 11, 0x80),)), NOW, Source.UPDATE)
    table.merge(3, NodeState(12, 12, (Binding(3, 0xC0000203, 600, NOW + 600, 12),)), NOW, Source.DOWNLOAD)
    table.merge(4, NodeState(13, 13, (Binding(4, 0xC0000204, 600, NOW + 600, 13),)), NOW, Source.STORE)
    rows = BindingWalk(table).rest(NOW)
    assert [(r["flag_letters"], r["source"]) for r in rows] == [
        ("DT", "registration"), ("S", "update"), ("", "download"), ("", "store")]
    assert rows == [b.as_dict(NOW, s) for h in (1, 2, 3, 4)
                    for b, s in zip(table.bindings_of(h), table.sources_of(h))]


def test_a_binding_keeps_its_source_until_it_is_replaced():
    """A node's bindings each keep where they came from when another of its bindings changes; a renewal
    accepted here makes the binding this Home Agent's own."""
    from homeagent.core.bindings import Binding, NodeState, Source

    table = BindingTable()
    stored = Binding(1, 0xC0000201, 600, NOW + 600, 10, 0x80)
    table.merge(1, NodeState(10, 10, (stored,)), NOW, Source.STORE)
    table.register(1, 0xC0000202, 600, 11, NOW, flags=0x80, simultaneous=True)  # a second care-of address
    assert {b.care_of_address: s for b, s in zip(table.bindings_of(1), table.sources_of(1))} == {
        0xC0000201: Source.STORE, 0xC0000202: Source.REGISTRATION}
    update = NodeState(12, 10, (stored, Binding(1, 0xC0000203, 600, NOW + 600, 12, 0x80)))
    table.merge(1, update, NOW, Source.UPDATE)  # a member's: the stored one is the same binding
    assert {b.care_of_address: s for b, s in zip(table.bindings_of(1), table.sources_of(1))} == {
        0xC0000201: Source.STORE, 0xC0000202: Source.REGISTRATION, 0xC0000203: Source.UPDATE}
    table.register(1, 0xC0000201, 600, 13, NOW, flags=0x80, simultaneous=True)  # renewed here
    assert dict(zip((b.care_of_address for b in table.bindings_of(1)), table.sources_of(1)))[0xC0000201] == \
        Source.REGISTRATION
    table.register(2, 0xC0000209, 600, 20, NOW)
    table.merge(2, NodeState(21, 21, (Binding(2, 0xC0000209, 600, NOW + 600, 21),)), NOW, Source.UPDATE)
    assert table.sources_of(2) == bytes([Source.UPDATE])  # the usual node, replaced by a member's newer one
