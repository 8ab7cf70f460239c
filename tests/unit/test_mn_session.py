"""``homeagent mn up``'s timing (RFC 5944 3.6: a mobile node re-registers before its lifetime runs out):
when a binding is renewed, how failures back off, what a move and a close send. A fake Home Agent answers
``Session``; the clock is the test's."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from homeagent.mobile_node import Outcome, RenewalPolicy, Session, apply_command
from homeagent.wire.registration import INFINITE_LIFETIME, Flags, RegistrationReply, RegistrationRequest

HOME = IPv4Address("10.1.0.50")
HA = IPv4Address("10.1.0.10")
COA = IPv4Address("10.2.0.10")
COA2 = IPv4Address("10.3.0.10")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeHomeAgent:
    """Answers every request with ``code`` and grants at most ``max_lifetime``; ``silent`` raises TimeoutError
    after ``took`` seconds of the clock, as ``MobileNode.register`` does when every retransmission is lost."""

    def __init__(self, clock: Clock, max_lifetime: int = 1800) -> None:
        self.clock = clock
        self.max_lifetime = max_lifetime
        self.code = 0
        self.silent = False
        self.took = 0.0
        self.requests: list[tuple[IPv4Address, int, int]] = []

    def register(self, care_of_address: IPv4Address, lifetime: int, flags: int = 0, timeout: float = 1.0,
                 retries: int = 3) -> Outcome:
        self.requests.append((care_of_address, lifetime, flags))
        self.clock.now += self.took
        if self.silent:
            raise TimeoutError("no reply")
        granted = lifetime if lifetime == INFINITE_LIFETIME else min(lifetime, self.max_lifetime)
        request = RegistrationRequest(flags, lifetime, int(HOME), int(HA), int(care_of_address), 1)
        reply = RegistrationReply(self.code, granted if self.code < 64 else 0, int(HOME), int(HA), 1)
        return Outcome(reply, request, 1, False)


def session(clock: Clock, ha: FakeHomeAgent, lifetime: int = 600, flags: int = int(Flags.D),
            policy: RenewalPolicy | None = None) -> tuple[Session, list[str]]:
    lines: list[str] = []
    s = Session(ha, COA, lifetime, flags, policy or RenewalPolicy.for_client(1.0, 3), clock, lines.append)
    return s, lines


def test_the_margin_is_every_retransmission_of_one_attempt():
    assert RenewalPolicy.for_client(1.0, 3).margin == 15.0  # 1 + 2 + 4 + 8
    assert RenewalPolicy.for_client(0.5, 0).margin == 0.5


@pytest.mark.parametrize(("granted", "renew_after"), [
    (600, 585.0),  # long: the lifetime less the retransmissions' time
    (30, 15.0),  # the later of 15 (half) and 15 (30 - 15)
    (20, 10.0),  # short: half of it, never before the reply came
    (1, 0.5),
])
def test_a_binding_is_renewed_before_its_lifetime_runs_out(granted, renew_after):
    clock = Clock()
    ha = FakeHomeAgent(clock)
    s, _ = session(clock, ha, lifetime=granted)
    assert s.step()
    assert s.due == pytest.approx(1000.0 + renew_after)
    assert s.expires == 1000.0 + granted
    assert s.due < s.expires


def test_the_granted_lifetime_not_the_asked_one_decides():
    clock = Clock()
    ha = FakeHomeAgent(clock, max_lifetime=40)
    s, lines = session(clock, ha, lifetime=600)
    assert s.step()
    assert s.due == 1025.0 and s.expires == 1040.0
    assert "lifetime 40 s" in lines[-1]


def test_the_lifetime_is_counted_from_the_sending_not_the_reply():
    """The Home Agent starts its count when the request arrives: counting from the reply would put our
    renewal after its expiry by the time the exchange took."""
    clock = Clock()
    ha = FakeHomeAgent(clock)
    ha.took = 7.0  # the reply came after retransmissions
    s, _ = session(clock, ha, lifetime=600)
    s.step()
    assert s.expires == 1600.0 and s.due == 1585.0


def test_an_infinite_lifetime_is_never_renewed():
    clock = Clock()
    s, lines = session(clock, FakeHomeAgent(clock), lifetime=INFINITE_LIFETIME)
    assert s.step()
    assert s.due is None and s.expires is None
    assert "never" in lines[-1]


def test_renewals_follow_each_other_and_say_renewed():
    clock = Clock()
    ha = FakeHomeAgent(clock)
    s, lines = session(clock, ha, lifetime=100)
    for n in range(3):
        assert s.due is not None
        clock.now = s.due
        assert s.step()
        assert lines[-1].startswith("registered" if n == 0 else "renewed")
    assert s.due == pytest.approx(clock.now + 85.0)
    assert [r[0] for r in ha.requests] == [COA] * 3


def test_failures_back_off_from_one_second_to_thirty_and_reset_on_success():
    clock = Clock()
    ha = FakeHomeAgent(clock)
    s, lines = session(clock, ha)
    ha.silent = True
    waits = []
    for _ in range(8):
        assert s.due is not None
        clock.now = s.due
        assert not s.step()
        assert s.due is not None
        waits.append(s.due - clock.now)
    assert waits == [1, 2, 4, 8, 16, 30, 30, 30]
    assert lines[-1].startswith("failed: no reply")
    ha.silent = False
    clock.now = s.due
    assert s.step()
    assert s.failures == 0 and s.due == pytest.approx(clock.now + 585.0)


def test_a_refusal_is_a_failure_too():
    clock = Clock()
    ha = FakeHomeAgent(clock)
    ha.code = 129  # administratively prohibited
    s, lines = session(clock, ha)
    assert not s.step()
    assert not s.ever_accepted and s.last is not None and s.last.code == 129
    assert s.due == 1001.0 and "refused: code 129" in lines[-1]


def test_an_acceptance_with_lifetime_0_is_no_binding_and_is_backed_off():
    """Lifetime 0 in an accepting reply means no binding (RFC 5944 3.4): renewing at once would ask the Home
    Agent again and again without a pause; it is a failure, backed off as any."""
    clock = Clock()
    ha = FakeHomeAgent(clock, max_lifetime=0)
    s, lines = session(clock, ha)
    assert not s.step() and not s.step()
    assert s.due == clock.now + 2.0 and s.registered_care_of is None and s.expires is None
    assert "accepted with lifetime 0" in lines[-1]


def test_a_renewal_that_fails_until_the_lifetime_ends_reports_the_expiry():
    clock = Clock()
    ha = FakeHomeAgent(clock)
    s, lines = session(clock, ha, lifetime=20)
    s.step()
    ha.silent = True
    ha.took = 15.0  # each attempt takes every retransmission
    clock.now = s.due  # 1010
    s.step()  # fails at 1025: past the expiry at 1020
    clock.now = s.due
    s.step()
    assert any(line.startswith("expired") for line in lines)
    assert s.registered_care_of is None
    ha.silent, ha.took = False, 0.0
    clock.now = s.due
    assert s.step() and lines[-1].startswith("registered")


def test_a_move_registers_the_new_care_of_address_now():
    clock = Clock()
    ha = FakeHomeAgent(clock)
    s, lines = session(clock, ha, flags=int(Flags.D | Flags.T))
    s.step()
    clock.now += 100
    s.move(COA2)
    assert s.due == clock.now
    assert s.step()
    assert ha.requests[-1] == (COA2, 600, int(Flags.D | Flags.T))
    assert lines[-1].startswith("moved") and s.registered_care_of == COA2
    assert s.due == pytest.approx(clock.now + 585.0)


def test_close_deregisters_the_care_of_address_held_and_only_it():
    clock = Clock()
    ha = FakeHomeAgent(clock)
    s, _ = session(clock, ha, flags=int(Flags.D | Flags.S | Flags.T))
    assert s.close() is None and ha.requests == []  # nothing held, nothing sent
    s.step()
    outcome = s.close()
    assert outcome is not None and outcome.accepted
    # lifetime 0 for this care-of address; S keeps the others; D: sent from the care-of address as before
    assert ha.requests[-1] == (COA, 0, int(Flags.S | Flags.D))
    assert s.registered_care_of is None
    assert s.close() is None


# -- mn up's control lines ----------------------------------------------------------------------------


@pytest.mark.parametrize(("line", "stops", "moved_to"), [
    ("care-of 10.3.0.10\n", False, COA2),
    ("  care-of   10.3.0.10  ", False, COA2),
    ("care-of 10.3.0", False, None),  # not an address
    ("care-of 0.0.0.0", False, None),  # no unicast address
    ("care-of 224.0.0.1", False, None),
    ("care-of 255.255.255.255", False, None),
    ("care-of 127.0.0.1", False, None),
    ("care-of", False, None),
    ("care-of 10.3.0.10 10.4.0.10", False, None),
    ("renew", False, None),
    ("down", True, None),
    ("", False, None),
    ("reboot", False, None),
])
def test_control_lines(line, stops, moved_to):
    clock = Clock()
    ha = FakeHomeAgent(clock)
    s, lines = session(clock, ha)
    s.step()
    clock.now += 10
    due = s.due
    assert apply_command(s, line, lines.append) is stops
    assert s.care_of == (moved_to or COA)
    if moved_to is not None or line.strip() == "renew":
        assert s.due == clock.now
    else:
        assert s.due == due


def test_close_also_deregisters_a_care_of_address_whose_registration_got_no_reply():
    """The Home Agent may have accepted a request whose reply was lost (or that a signal cut short)."""
    clock = Clock()
    ha = FakeHomeAgent(clock)
    s, _ = session(clock, ha)
    s.step()
    s.move(COA2)
    ha.silent = True
    assert not s.step()
    ha.silent = False
    s.close()
    assert ha.requests[-2:] == [(COA, 0, int(Flags.D)), (COA2, 0, int(Flags.D))]
    assert s.in_flight is None and s.registered_care_of is None


def test_a_care_of_address_not_on_this_host_is_a_failed_attempt_not_a_crash():
    """With D the request leaves from the care-of address (RFC 5944 3.6.1.1); one the host does not have
    (a move told before the address is configured) fails that attempt, which is tried again later."""
    clock = Clock()
    ha = FakeHomeAgent(clock)
    s, lines = session(clock, ha)

    def unbound(*args: object) -> Outcome:
        raise OSError(99, "Cannot assign requested address")

    s.node.register = unbound  # type: ignore[method-assign]
    assert not s.step()
    assert s.in_flight is None, "nothing was sent: nothing to de-register"
    assert lines[-1].startswith(f"failed: cannot send from care-of {COA}: Cannot assign requested address")
    assert s.due is not None and s.due > clock.now
