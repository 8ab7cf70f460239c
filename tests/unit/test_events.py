"""The events the core logs (core/events.py): which, at which level, with which fields; and the budget that
keeps a flood of bad datagrams from writing a line each."""

from __future__ import annotations

import logging

import pytest

from homeagent.core import events
from homeagent.core.events import Budget

from .support import COA, COA2, HOA, SOURCE, T0, WIDE_KEY, make_ha, ntp, request, wire_ntp


@pytest.fixture
def caught(caplog):
    caplog.set_level(logging.DEBUG, logger="homeagent.events")
    return caplog


def taken(caplog) -> list[tuple[str, int, dict]]:
    """(event, level, fields) of every record so far; the list is emptied."""
    out = [(r.event, r.levelno, r.fields) for r in caplog.records if hasattr(r, "event")]
    caplog.clear()
    return out


def test_each_change_of_the_table_is_one_event_at_its_level(caught):
    ha = make_ha()
    ha.receive_registration(request(ident=ntp(T0, 1)), SOURCE, T0)
    [(event, level, fields)] = taken(caught)
    assert (event, level) == ("binding_accepted", logging.INFO)
    assert fields["home_address"] == "10.1.0.5" and fields["care_of_address"] == "198.51.100.7"
    assert fields["lifetime"] == 600 and fields["identification"] == wire_ntp(ntp(T0, 1))  # as on the wire
    assert fields["source"] == "198.51.100.7:434" and fields["flags"] == "0x00"

    ha.receive_registration(request(ident=ntp(T0, 2)), SOURCE, T0 + 1)  # the same care-of address: a renewal
    assert [(e, lv) for e, lv, _ in taken(caught)] == [("binding_renewed", logging.DEBUG)]

    ha.receive_registration(request(ident=ntp(T0, 2)), SOURCE, T0 + 1)  # retransmitted
    assert [(e, lv) for e, lv, _ in taken(caught)] == [("binding_duplicate", logging.DEBUG)]

    ha.receive_registration(request(coa=COA2, ident=ntp(T0, 3)), SOURCE, T0 + 2)  # moved: a new binding
    [(event, level, fields)] = taken(caught)
    assert (event, level, fields["care_of_address"]) == ("binding_accepted", logging.INFO, "198.51.100.8")

    ha.receive_registration(request(coa=COA2, ident=ntp(T0, 4), key=WIDE_KEY), SOURCE, T0 + 3)  # wrong key
    assert [(e, lv) for e, lv, _ in taken(caught)] == [("security_violation", logging.WARNING),
                                                        ("denied", logging.DEBUG)]

    ha.receive_registration(request(coa=COA2, lifetime=0, ident=ntp(T0, 5)), SOURCE, T0 + 4)
    [(event, level, fields)] = taken(caught)
    assert (event, level, fields["removed"]) == ("binding_deregistered", logging.INFO, 1)


def test_an_expired_and_a_removed_binding_are_events(caught):
    ha = make_ha()
    ha.receive_registration(request(lifetime=5, ident=ntp(T0, 1)), SOURCE, T0)
    ha.receive_registration(request(hoa=HOA + 1, ident=ntp(T0, 2)), SOURCE, T0)
    taken(caught)
    ha.handle_timer(T0 + 7)
    [(event, level, fields)] = taken(caught)
    assert (event, level) == ("binding_expired", logging.INFO)
    assert (fields["home_address"], fields["lifetime"]) == ("10.1.0.5", 5)
    ha.remove(HOA + 1, None, T0 + 8)
    [(event, level, fields)] = taken(caught)
    assert (event, level, fields["home_address"], fields["care_of_address"]) == (
        "binding_removed", logging.INFO, "10.1.0.6", "198.51.100.7")


def test_a_renewal_is_not_written_at_info(caught):
    caught.set_level(logging.INFO, logger="homeagent.events")
    ha = make_ha()
    ha.receive_registration(request(ident=ntp(T0, 1)), SOURCE, T0)
    ha.receive_registration(request(ident=ntp(T0, 2)), SOURCE, T0 + 1)
    assert [e for e, _, _ in taken(caught)] == ["binding_accepted"]


def test_a_discarded_datagram_is_an_event_at_debug(caught):
    ha = make_ha()
    ha.receive_registration(b"\x01\x00", SOURCE, T0)
    [(event, level, fields)] = taken(caught)
    assert (event, level, fields["reason"], fields["source"]) == ("discarded", logging.DEBUG, "malformed",
                                                                  "198.51.100.7:434")
    ha.receive_registration(request(hoa=0x0B000001), SOURCE, T0)  # no association covers 11.0.0.1
    [(event, _, fields)] = taken(caught)
    assert (event, fields["reason"], fields["home_address"]) == ("discarded", "no_security_association", "11.0.0.1")
    assert ha.counters["discarded.malformed"] == ha.counters["discarded.no_security_association"] == 1


def test_the_budget_leaves_lines_out_and_says_how_many():
    budget = Budget(3)
    assert [budget.take(10.0), budget.take(10.2), budget.take(10.5)] == [0, 0, 0]
    assert budget.take(10.9) is None and budget.take(10.95) is None
    assert budget.take(11.0) == 2  # the first line of the next second says how many were left out
    assert budget.take(11.1) == 0


def test_a_flood_of_discards_writes_at_most_the_budget(caught, monkeypatch):
    monkeypatch.setattr(events, "_discards", Budget(events.DISCARDS_PER_SECOND))
    ha = make_ha()
    for i in range(3 * events.DISCARDS_PER_SECOND):
        ha.receive_registration(b"\x01", SOURCE, T0 + i / (10 * events.DISCARDS_PER_SECOND))
    lines = taken(caught)
    assert len(lines) == events.DISCARDS_PER_SECOND
    assert ha.counters["discarded.malformed"] == 3 * events.DISCARDS_PER_SECOND  # each counted all the same
    ha.receive_registration(b"\x01", SOURCE, T0 + 1.5)
    [(_, _, fields)] = taken(caught)
    assert fields["left_out"] == 2 * events.DISCARDS_PER_SECOND


def test_nothing_is_formatted_when_the_level_is_off(caplog, monkeypatch):
    caplog.set_level(logging.WARNING, logger="homeagent.events")

    def refuse(*args, **kwargs):
        raise AssertionError("an event was built though its level is off")

    monkeypatch.setattr(events, "binding", refuse)
    ha = make_ha()
    ha.receive_registration(request(ident=ntp(T0, 1)), SOURCE, T0)
    ha.receive_registration(request(coa=COA, ident=ntp(T0, 2)), SOURCE, T0 + 1)
    assert ha.counters["accepted"] == 2 and not caplog.records


def test_resetting_the_counters_resets_the_replication_lag_histogram_with_them():
    """``homeagent status --reset-counters``: the lag's samples are counts too (the metrics endpoint's
    histogram would otherwise disagree with the counters reset beside it)."""
    from homeagent.core.home_agent import HomeAgent

    from .test_group import make_config

    ha = HomeAgent(make_config("192.0.2.1", ["192.0.2.2"]), 0.0)
    assert ha.group is not None
    lag = ha.group.replication.lag
    for value in (0.0004, 0.003, 0.3):
        lag.observe(value)
    ha.counters["accepted"] += 1
    ha.reset_counters(1.0)
    assert not ha.counters and lag.count == 0 and lag.sum == 0.0
    assert lag.cumulative()[-1] == (float("inf"), 0)
