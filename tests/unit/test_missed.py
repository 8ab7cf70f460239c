"""core/missed.py: what a member has not acknowledged of our acceptances, and its bound."""

from __future__ import annotations

from homeagent.core.missed import Missed


def test_what_a_member_missed_is_kept_until_sent_and_only_what_was_sent_is_forgotten():
    missed = Missed()
    missed.add(1, 10)
    missed.add(1, 11)
    missed.add(2, 10)
    sending = missed.of(1)
    assert sending == {10, 11} and missed.of(2) == {10} and missed.of(3) == set()
    assert missed.has(1) and missed.has(2) and not missed.has(3)
    missed.add(1, 12)  # missed while the transfer ran: not forgotten with it
    missed.sent(1, sending)
    assert missed.of(1) == {12} and len(missed) == 2


def test_past_the_limit_a_member_is_sent_every_node_and_then_counted_again():
    missed = Missed(limit=3)
    for hoa in range(4):
        missed.add(1, hoa)
    assert missed.of(1) is None and missed.has(1)  # every node
    missed.add(1, 99)  # not counted while every node is due
    missed.sent(1, None)
    assert missed.of(1) == set() and not missed.has(1) and len(missed) == 0
    missed.add(1, 5)
    assert missed.of(1) == {5}
