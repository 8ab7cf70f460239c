"""The reference model on its own (``reference.py``): operations in Identification order, lost operations
optional, one request accepted twice, and what a datagram teaches a member. No core runs here."""

from __future__ import annotations

from homeagent.core.bindings import Binding

from simulation.reference import (
    DEREGISTER,
    DEREGISTER_ALL,
    REGISTER,
    Knowledge,
    Operation,
    ReferenceModel,
    diff,
)

H = 0x0A010001
X, Y, Z = 0xC6336401, 0xC6336402, 0xC6336403


def op(ident: int, kind: str, coa: int = H, s: bool = False) -> Operation:
    return Operation(H, ident, kind, coa, s)


def binding(coa: int, ident: int, at: float, lifetime: int = 100) -> Binding:
    return Binding(H, coa, lifetime, at + lifetime, ident, 0, 0)


def accept(model: ReferenceModel, k: Knowledge, ident: int, kind: str, coa: int = H, s: bool = False,
           at: float = 0.0, member: int = 0):
    b = binding(coa, ident, at) if kind == REGISTER else None
    return model.accept(op(ident, kind, coa, s), member, at, b, k)


def coas(answer) -> set[int]:
    return set(answer.bindings)


def test_point_5_is_no_binding():
    """Register X at 1; cut; replace by Y at 1; de-register Y at 3 (which holds only X); heal."""
    model, one, three = ReferenceModel(), Knowledge(), Knowledge()
    first = accept(model, one, 1, REGISTER, X)
    three.learn(first)  # replicated before the cut
    accept(model, one, 2, REGISTER, Y)
    accept(model, three, 3, DEREGISTER, Y)
    answers = model.expected(H, [one, three], 3)
    assert [coas(a) for a in answers] == [set()]


def test_with_s_adds_and_a_de_registration_removes_one():
    model, k = ReferenceModel(), Knowledge()
    accept(model, k, 1, REGISTER, X)
    accept(model, k, 2, REGISTER, Y, s=True)
    accept(model, k, 3, REGISTER, Z, s=True)
    accept(model, k, 4, DEREGISTER, Y)
    assert [coas(a) for a in model.expected(H, [k], 4)] == [{X, Z}]


def test_order_is_by_identification_not_by_acceptance():
    """A de-registration of all accepted first with the higher Identification still comes last."""
    model, k = ReferenceModel(), Knowledge()
    accept(model, k, 5, DEREGISTER_ALL, at=1.0)
    accept(model, k, 4, REGISTER, X, at=2.0)
    assert [coas(a) for a in model.expected(H, [k], 5)] == [set()]


def test_a_lost_operation_is_optional_and_left_out_not_cut_off_at():
    """#2 died with its only member; #3, accepted elsewhere, still applies: the answers are with #2 and
    without it, never 'everything up to #1'."""
    model, survivor, dead = ReferenceModel(), Knowledge(), Knowledge()
    accept(model, survivor, 1, REGISTER, X)
    accept(model, dead, 2, DEREGISTER_ALL)
    accept(model, survivor, 3, REGISTER, Y, s=True)
    answers = model.expected(H, [survivor], 3)
    assert [coas(a) for a in answers] == [{X, Y}, {Y}]
    assert answers[0].leaves_out == (op(2, DEREGISTER_ALL),)
    assert model.split(H, [survivor]) == ([1, 3], [2])


def test_a_lost_operation_above_the_last_identification_is_never_part_of_the_answer():
    model, survivor, dead = ReferenceModel(), Knowledge(), Knowledge()
    accept(model, survivor, 1, REGISTER, X)
    accept(model, dead, 2, DEREGISTER_ALL)
    assert [coas(a) for a in model.expected(H, [survivor], 1)] == [{X}]


def test_a_request_accepted_twice_takes_the_later_expiry():
    """A retransmission accepted again by another member a second later: one operation, the later
    acceptance's expiry; a member holding the earlier one's is off by a second."""
    model, one, two = ReferenceModel(), Knowledge(), Knowledge()
    accept(model, one, 1, REGISTER, X, at=10.0)
    accept(model, two, 1, REGISTER, X, at=11.0, member=1)
    [answer] = model.expected(H, [one, two], 1)
    assert [b.expires for b in answer.bindings[X]] == [111.0]
    assert diff((binding(X, 1, 11.0),), answer, 50.0) == ""
    assert "expires -1.000 s off" in diff((binding(X, 1, 10.0),), answer, 50.0)
    # The later acceptance died with its member: the earlier expiry is right, the later still allowed.
    [answer] = model.expected(H, [one], 1)
    assert diff((binding(X, 1, 10.0),), answer, 50.0) == ""
    assert diff((binding(X, 1, 11.0),), answer, 50.0) == ""


def test_two_acceptances_within_same_acceptance_are_both_right():
    model, one, two = ReferenceModel(), Knowledge(), Knowledge()
    accept(model, one, 1, REGISTER, X, at=10.0)
    accept(model, two, 1, REGISTER, X, at=10.1, member=1)
    [answer] = model.expected(H, [one, two], 1)
    assert diff((binding(X, 1, 10.0),), answer, 50.0) == ""
    assert diff((binding(X, 1, 10.1),), answer, 50.0) == ""


def test_expired_bindings_may_go_and_must_be_gone_a_second_later():
    model, k = ReferenceModel(), Knowledge()
    accept(model, k, 1, REGISTER, X, at=0.0)  # ends at 100
    [answer] = model.expected(H, [k], 1)
    assert diff((), answer, 99.0) == "missing 198.51.100.1 (expires +1.000)"
    assert diff((), answer, 100.1) == ""
    assert diff((binding(X, 1, 0.0),), answer, 100.5) == ""  # the wheel's second
    assert "should have expired" in diff((binding(X, 1, 0.0),), answer, 101.5)


def test_a_datagram_teaches_what_its_sender_knew_when_it_sent_it():
    """Up to the Identification it names, for the node it names, from the log as it was at the send."""
    model, sender, receiver = ReferenceModel(), Knowledge(), Knowledge()
    accept(model, sender, 1, REGISTER, X)
    accept(model, sender, 2, REGISTER, Y, s=True)
    snapshot = sender.size()
    accept(model, sender, 3, DEREGISTER, X)  # learnt after the send: not carried
    assert receiver.learn_from(sender, snapshot, H, 1) == 1  # names #1: only #1
    assert receiver.learn_from(sender, snapshot, H, 3) == 1  # names #3: #2 (the log had no #3 yet)
    assert receiver.learn_from(sender, snapshot, H + 1, 3) == 0  # another node
    assert [a.operation.identification for a in model.acceptances if receiver.knows(a.number)] == [1, 2]
