"""Deadlines by key (core/timers.py): re-scheduling replaces, cancelling forgets, ``due`` pops what has come,
earliest first, each key at most once, and stale heap entries never surface."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from homeagent.core.timers import Timers


def test_empty():
    t = Timers()
    assert len(t) == 0 and t.next() is None and t.due(1e12) == [] and "x" not in t and t.deadline("x") is None


def test_schedule_and_due_at_the_deadline_not_before():
    t = Timers()
    t.schedule("a", 10.0)
    assert "a" in t and len(t) == 1 and t.deadline("a") == 10.0 and t.next() == 10.0
    assert t.due(9.999) == []
    assert t.due(10.0) == ["a"]
    assert "a" not in t and len(t) == 0 and t.next() is None
    assert t.due(100.0) == []  # popped once only


def test_due_returns_keys_earliest_first_ties_in_scheduling_order():
    t = Timers()
    for key, at in [("c", 3.0), ("a", 1.0), ("b2", 2.0), ("b1", 2.0), ("d", 4.0)]:
        t.schedule(key, at)
    assert t.due(3.0) == ["a", "b2", "b1", "c"]
    assert t.next() == 4.0 and len(t) == 1


def test_rescheduling_replaces_the_deadline_later_or_earlier():
    t = Timers()
    t.schedule("k", 5.0)
    t.schedule("k", 8.0)
    assert len(t) == 1 and t.deadline("k") == 8.0 and t.next() == 8.0
    assert t.due(7.0) == []
    t.schedule("k", 6.0)
    assert t.next() == 6.0
    assert t.due(6.0) == ["k"]
    assert t.due(10.0) == []  # the 8.0 entry was stale
    assert t.next() is None


def test_rescheduling_to_the_same_time_fires_once():
    t = Timers()
    t.schedule("k", 5.0)
    t.schedule("k", 5.0)
    t.schedule("k", 7.0)
    t.schedule("k", 5.0)
    assert t.due(10.0) == ["k"]


def test_a_key_fired_and_scheduled_again_fires_again_once():
    t = Timers()
    t.schedule("k", 7.0)
    t.schedule("k", 5.0)
    assert t.due(5.0) == ["k"]
    t.schedule("k", 7.0)  # the old 7.0 entry is still in the heap
    assert t.due(7.0) == ["k"]
    assert t.due(100.0) == []


def test_cancel():
    t = Timers()
    t.schedule("a", 1.0)
    t.schedule("b", 2.0)
    t.cancel("a")
    t.cancel("nothing")
    assert "a" not in t and len(t) == 1 and t.deadline("a") is None
    assert t.next() == 2.0  # the cancelled entry does not surface
    assert t.due(5.0) == ["b"]


def test_tuple_keys_as_the_group_uses_them():
    t = Timers()
    t.schedule(("update", (1, 2)), 1.0)
    t.schedule(("sync", 3), 0.5)
    t.schedule("advertise", 0.75)
    assert t.due(1.0) == [("sync", 3), "advertise", ("update", (1, 2))]


def test_stale_entries_do_not_pile_up_in_next():
    t = Timers()
    for i in range(1000):
        t.schedule("k", float(i))
    assert len(t) == 1 and t.next() == 999.0
    assert t.due(998.0) == []
    assert t.due(999.0) == ["k"]


ops = st.lists(
    st.tuples(st.sampled_from(["schedule", "cancel", "due"]), st.integers(0, 5), st.integers(0, 50)),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_matches_a_dictionary_model(operations):
    t = Timers()
    model: dict[int, float] = {}
    for op, key, at in operations:
        if op == "schedule":
            t.schedule(key, float(at))
            model[key] = float(at)
        elif op == "cancel":
            t.cancel(key)
            model.pop(key, None)
        else:
            expected = sorted((v, k) for k, v in model.items() if v <= at)
            got = t.due(float(at))
            assert sorted(got) == sorted(k for _, k in expected)
            assert [model[k] for k in got] == sorted(model[k] for k in got)  # earliest first
            for k in got:
                del model[k]
        assert len(t) == len(model)
        assert t.next() == (min(model.values()) if model else None)
        for k in range(6):
            assert (k in t) == (k in model) and t.deadline(k) == model.get(k)


def test_many_keys_in_random_order():
    rng = random.Random(7)
    t = Timers()
    deadlines = {i: rng.uniform(0, 100) for i in range(5000)}
    for k, at in deadlines.items():
        t.schedule(k, at)
    fired = []
    now = 0.0
    while t.next() is not None:
        now = t.next()
        fired += t.due(now)
    assert fired == sorted(deadlines, key=lambda k: (deadlines[k], k))
