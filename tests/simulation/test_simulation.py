"""Seeded runs of the deterministic group simulation (``netsim.py``), and the bugs it found, minimised.

Each chaos run: 3 to 5 members, 20 s of registrations, renewals, de-registrations and simultaneous bindings
with short lifetimes, over a network that loses 30 % of datagrams, duplicates, delays and reorders them,
partitions the members (both ways or one way) and heals, loses most datagrams one way between two
members for a while, and crashes, stops and restarts them (some straight back); then 15 s of a healed
network; then every member that is up must hold what the reference model (``reference.py``) says, and no
datagram between members may have been rejected as malformed. ``bench/simulation.py`` runs the same over
thousands of seeds.

How many seeds the suite runs: the 30 chaos runs below plus ``RANDOM_SEEDS`` (300) seeds of the bench's own
cycle (``scenario_for``: every mode, replication and group size). A run costs about half a second of CPU
(0.52 s measured over seeds 0-19, against 0.41 s before the extended faults and the model's bookkeeping),
so the 300 add some 2.6 minutes to a suite of 3.5 on one CPU: well within the 20 minutes CI allows, with
room for the rest and for a slower or busier runner (wall time was 2.8 s a run with six engineers on two
vCPUs). A thousand would add 8.7 minutes of CPU, more than the rest of the suite together, for little more
than the 300 find; the bench runs them (``python bench/simulation.py --seeds 1000``) and prints figures.

Open failure kinds (``OPEN_KINDS``, none today): a run whose only failures are of a kind the core does not
fix yet is an xfail naming the fix, not a pass; any other failure fails. Remove a kind once its fix lands.

A chaos seed marked xfail fails today because of one of the bugs below; when the bug is fixed it passes,
and strict xfail says so: remove its mark then. ``python bench/simulation.py --seeds N`` lists the seeds
that fail and why. Minimised bugs that have been fixed since the simulation found them stay as regression
tests; those still open are strict xfails.
"""

from __future__ import annotations

import pytest

from simulation.netsim import (
    T0,
    VIP,
    Scenario,
    Simulation,
    addr,
    any_of,
    drop_all,
    drop_first,
    expiry_spread,
    ip,
    messages,
    run_seed,
    scripted,
)

A, B, C = addr(0), addr(1), addr(2)
HOA = ip("10.1.0.1")  # mobile node 0
COA = ip("198.51.100.1")  # its first care-of address

# -- the chaos runs -------------------------------------------------------------------------------------

CONFIGURATIONS = [
    (3, "active-standby", "async"),
    (3, "active-standby", "sync"),
    (3, "peer", "async"),
    (5, "active-standby", "async"),
    (5, "active-standby", "sync"),
    (5, "peer", "async"),
]
SEEDS = range(1, 6)

# (members, mode, replication, seed) -> why it fails (as a strict xfail). Empty against a24f23c: every seed
# below passes there; bench/simulation.py over 2000 seeds finds the two open bugs at the end of this file.
KNOWN_FAILURES: dict[tuple[int, str, str, int], str] = {}

# Failure kinds the core still produces, with the work that fixes them. Empty since dd4f1cd. Before it
# (d188d3b, 200 seeds): [rejected] in 148 runs (issue 10 point 4: a retransmitted Binding Update went out
# malformed and its datagram was rejected whole), [state] in 19 (point 5 and its kin: a de-registration
# accepted by a member that missed a newer registration won the merge by its Identification alone).
OPEN_KINDS: dict[str, str] = {}
RANDOM_SEEDS = range(300)
# seed -> why it fails (strict xfail: remove when it passes). Found at 306adc9 (172, 189), which the start-up
# that asks the active member alone (and ask-backs that keep their purpose) cured, and since (102, 263: a
# request accepted twice, cured by core/missed.py).
RANDOM_KNOWN_FAILURES: dict[int, str] = {}


def judge(result) -> None:
    """Pass, fail, or (only open kinds of failure) xfail with the reason."""
    kinds = result.kinds()
    if kinds and kinds <= set(OPEN_KINDS):
        pytest.xfail("; ".join(OPEN_KINDS[k] for k in sorted(kinds)) + "\n" + result.summary())
    assert result.ok, result.summary()


def _chaos_params():
    for members, mode, replication in CONFIGURATIONS:
        for seed in SEEDS:
            reason = KNOWN_FAILURES.get((members, mode, replication, seed))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            yield pytest.param(members, mode, replication, seed, marks=marks,
                               id=f"{members}-{mode}-{replication}-seed{seed}")


@pytest.mark.parametrize("members,mode,replication,seed", list(_chaos_params()))
def test_chaos(members, mode, replication, seed):
    judge(Simulation(Scenario(seed, members, mode, replication)).run())


def _random_params():
    for seed in RANDOM_SEEDS:
        reason = RANDOM_KNOWN_FAILURES.get(seed)
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        yield pytest.param(seed, marks=marks, id=f"seed{seed}")


@pytest.mark.parametrize("seed", list(_random_params()))
def test_random_seed(seed):
    """The bench's run for a seed: partitions both ways and one way that heal, one-way loss, crashes,
    graceful stops, quick and slow restarts, 3 to 5 members in every mode."""
    judge(run_seed(seed))


# -- the harness and its oracle -------------------------------------------------------------------------


def test_a_seed_names_a_run():
    first, second = (Simulation(Scenario(11, 4, "peer", "sync")).run() for _ in range(2))
    assert first.stats == second.stats
    assert first.failures == second.failures
    assert first.stats["accepted"] > 20 and first.stats["lost"] > 100


@pytest.mark.parametrize("members,mode,replication", CONFIGURATIONS)
@pytest.mark.parametrize("seed", [1, 2])
def test_lossless_network_with_restarts_converges(members, mode, replication, seed):
    """Duplicates, reordering, crashes, graceful stops and restarts, but no loss and no partition."""
    scenario = Scenario(seed, members, mode, replication, loss=0.0, duplicate=0.1, reorder=0.3, partitions=0,
                        crashes=members - 1)
    result = Simulation(scenario).run()
    assert result.stats["crashes"] + result.stats["stops"] >= 1
    judge(result)


def test_oracle_sees_a_member_that_diverges():
    sim = Simulation(Scenario(3, 3, "active-standby", "async", loss=0.0, crashes=0, partitions=0))
    result = sim.run()
    assert result.ok, result.summary()
    # A node the victim knows (bound, or only its last Identification left once its bindings ran out).
    victim = next(m for m in sim.members if m.ha is not None and m.ha.bindings.home_addresses())
    hoa = victim.ha.bindings.home_addresses()[0]
    victim.ha.bindings.deregister(hoa, None, victim.ha.bindings.last_identification(hoa) + 1)
    sim.check()
    assert any("[divergence]" in f for f in sim.failures), sim.failures


def test_oracle_writes_off_a_registration_that_died_with_its_only_holder():
    """Async replication: the active member replies, then dies before any Binding Update got out."""
    sim = scripted(restart_on_heal=False)
    sim.drop_rule = any_of(drop_all(A, B, 200), drop_all(A, C, 200))
    sim.at(T0 + 4, sim.send_request, 0, COA, 100)
    sim.at(T0 + 4.1, sim.crash, 0)
    result = sim.run()
    assert result.ok, result.summary()
    assert result.stats["replies_sent.0"] == 1 and result.stats["acceptances_lost_with_crash"] == 1


def test_oracle_writes_off_only_what_no_survivor_knows():
    """The same, but the Binding Update reaches B before A dies: B knows the registration, so it is not
    lost, and every member must end holding it."""
    sim = scripted(restart_on_heal=False)
    sim.drop_rule = drop_all(A, C, 200)
    sim.at(T0 + 4, sim.send_request, 0, COA, 100)
    sim.at(T0 + 4.1, sim.crash, 0)
    result = sim.run()
    assert result.ok, result.summary()
    assert result.stats["acceptances_lost_with_crash"] == 0 and result.stats["acceptances_lost"] == 0
    assert sim.members[1].knowledge.size() == 1


def _malformed_update(sim, source: str, destination: str) -> None:
    """A datagram from ``source`` to ``destination`` sealed with the group's key, holding a Binding Update
    cut short: its seal verifies, its message does not parse."""
    from homeagent.core.replay import ntp_identification
    from homeagent.wire.auth import Algorithm, SecurityAssociation
    from homeagent.wire.redundancy import seal

    from simulation.netsim import PEER_KEY, PEER_SPI

    sa = SecurityAssociation(PEER_SPI, Algorithm.HMAC_SHA256, bytes.fromhex(PEER_KEY))
    body = bytes([200, 0, 0, 0])
    datagram = seal(body, sa, ntp_identification(sim.now), ip(source), ip(destination))
    sim.transmit(datagram, source, destination)


@pytest.mark.parametrize("allowed", [False, True])
def test_oracle_sees_a_member_datagram_rejected_as_malformed(allowed):
    """One datagram that verifies but does not parse: a [rejected] failure, unless the scenario says it
    corrupts datagrams on purpose."""
    sim = scripted(rejections_allowed=allowed)
    sim.at(T0 + 4, _malformed_update, sim, A, B)
    result = sim.run()
    assert result.ok == allowed, result.summary()
    if not allowed:
        assert result.kinds() == {"rejected"} and "127.0.0.2" in result.failures[0]


def test_oracle_counts_rejections_of_a_member_that_crashed_since():
    """The rejecting member's core is gone by the end (crashed and restarted): its count still counts."""
    sim = scripted()
    sim.at(T0 + 4, _malformed_update, sim, A, C)
    sim.at(T0 + 5, sim.crash, 2)
    sim.at(T0 + 6, sim.restart, 2)
    result = sim.run()
    assert result.kinds() == {"rejected"}, result.summary()


def test_random_faults_include_partitions_one_way_loss_and_restarts():
    """The faults a random run draws: every kind happens, and the run is judged like any other."""
    result = run_seed(5, members=4, partitions=2, lossy_links=2, restarts=2, crashes=1)
    stats = result.stats
    assert stats["lossy_links"] == 2 and stats["lost_on_lossy_link"] > 0, stats
    assert stats["quick_restarts"] + stats["crashes"] + stats["stops"] >= 3, stats
    assert stats["partitioned"] > 0 and stats["starts"] >= 4 + 3, stats
    judge(result)


def test_quiet_group_replicates_and_fails_over():
    """No fault injected: a registration reaches every member; the active member dies; the new active one
    holds the binding and serves the next registration."""
    sim = scripted(restart_on_heal=False)
    sim.at(T0 + 4, sim.send_request, 0, COA, 100)
    sim.at(T0 + 5, sim.crash, 0)
    sim.at(T0 + 7, sim.send_request, 1, COA + 3, 100)
    result = sim.run()
    assert result.ok, result.summary()
    assert result.stats["mn_replies.0"] == 2
    assert sim.members[1].ha.role == "active"
    assert {b.home_address for b in sim.members[2].ha.bindings} == {HOA, HOA + 1}


# -- the bugs, minimised ---------------------------------------------------------------------------------


def test_retransmitted_binding_update_carries_the_remaining_lifetime_of_now():
    """3 members, no loss but one datagram: the first Binding Update from the active member to one standby
    is lost; its retransmission 0.25 s later said 100 000 ms remain, so that standby expired the
    binding 0.25 s after the others (docs/protocol.md: within a millisecond of the sender). Found by this
    simulation, fixed in b0a7d9a (group.py _retransmit_update)."""
    sim = scripted()
    sim.at(T0 + 4, sim.send_request, 0, COA, 100)
    sim.drop_rule = drop_first(1, A, B, 200, after=T0 + 4)
    result = sim.run()
    assert expiry_spread(sim, HOA) < 0.01, result.summary()
    assert result.ok, result.summary()


def test_retransmitted_table_reply_carries_the_remaining_lifetime_of_now():
    """A member restarts; the first Binding Table Reply from each of the others is lost; the retransmissions
    0.5 s later carried the remaining lifetimes of the first send, so it expired every binding 0.5 s late.
    Found by this simulation, fixed in b0a7d9a (transfer.py OutgoingTransfer.overdue)."""
    sim = scripted()
    sim.at(T0 + 4, sim.send_request, 0, COA, 100)
    sim.at(T0 + 5, sim.crash, 2)
    sim.at(T0 + 6, sim.restart, 2)
    sim.drop_rule = any_of(drop_first(1, A, C, 203, T0 + 6), drop_first(1, B, C, 203, T0 + 6))
    result = sim.run()
    assert expiry_spread(sim, HOA) < 0.01, result.summary()
    assert result.ok, result.summary()


def test_member_marked_down_on_one_side_only_gets_what_it_missed():
    """C's datagrams stop reaching A for 1.5 s (A's still reach C): A marks C down, C never marks A down. A
    registration accepted by A meanwhile goes to B only. When A hears C again, A asks for C's table; C,
    which never lost A, asked for nothing, and nobody sent it the registration. Found by this simulation,
    fixed in b0a7d9a (Ask Back in group.py _heard / _on_table_request)."""
    sim = scripted()
    sim.at(T0 + 4, sim.partition, 1, {(2, 0)})
    sim.at(T0 + 5, sim.send_request, 0, COA, 100)
    sim.at(T0 + 5.5, sim.unpartition, 1)
    result = sim.run()
    assert sim.members[2].ha.bindings.bindings_of(HOA), result.summary()
    assert result.ok, result.summary()


def test_lost_catch_up_request_is_sent_again():
    """C restarts cut off from A and B, gives up waiting and serves with an empty table (as the first member
    of a group does). When the partition heals, C asks A and B for their tables once each; those two
    datagrams were lost, nothing asked again, and C never learnt the registration A and B hold. Found by
    this simulation; fixed in a24f23c (requests resent until answered)."""
    sim = scripted()
    sim.at(T0 + 4, sim.send_request, 0, COA, 100)
    sim.at(T0 + 5, sim.partition, 1, {(2, 0), (2, 1), (0, 2), (1, 2)})
    sim.at(T0 + 5.5, sim.crash, 2)
    sim.at(T0 + 6, sim.restart, 2)
    sim.at(T0 + 8, sim.unpartition, 1)
    sim.drop_rule = any_of(drop_first(1, C, A, 202, T0 + 8), drop_first(1, C, B, 202, T0 + 8))
    result = sim.run()
    assert sim.members[2].ha.bindings.bindings_of(HOA), result.summary()
    assert result.ok, result.summary()


def test_survivors_reconcile_when_the_accepting_member_dies():
    """A accepts a registration and replies (async); its Binding Update reaches B but not C; A dies for good.
    B takes over holding the binding, C stood by without it, and nothing ever made them agree: were B to
    die next, C would serve the node with no binding. Found by this simulation; fixed in a24f23c for
    active-standby (the member taking over exchanges recent changes); see the peer-mode test below."""
    sim = scripted(restart_on_heal=False)
    sim.drop_rule = drop_all(A, C, 200)
    sim.at(T0 + 4, sim.send_request, 0, COA, 100)
    sim.at(T0 + 4.1, sim.crash, 0)
    result = sim.run()
    assert sim.members[2].ha.bindings.bindings_of(HOA), result.summary()
    assert result.ok, result.summary()


def test_request_accepted_twice_leaves_one_state():
    """A accepts a registration; its reply is lost, and so is its Binding Update to B (C gets it); A dies. B
    takes over, and the mobile node's retransmission of the same request (docs/registration.md: answered
    again as a duplicate) is new to B, which accepts it with a lifetime starting a second later. B and C now
    held the same Identification with expiries a second apart, for good (with simultaneous bindings the
    binding sets themselves could differ). Found by this simulation; fixed in a24f23c."""
    sim = scripted(restart_on_heal=False)
    sim.drop_rule = any_of(drop_all(A, B, 200), drop_first(1, VIP, "198.51.100.1", 3))
    sent: list[int] = []
    sim.at(T0 + 4, lambda: sent.append(sim.send_request(0, COA, 100)))
    sim.at(T0 + 4.5, sim.crash, 0)
    sim.at(T0 + 5.5, lambda: sim.resend(0, sent[0]))
    result = sim.run()
    assert sim.members[1].ha.role == "active" and result.stats["mn_replies.0"] == 1
    assert expiry_spread(sim, HOA) < 0.01, result.summary()
    assert result.ok, result.summary()


def test_peer_survivors_reconcile_when_the_accepting_member_dies():
    """Peer mode, A holds the virtual address. B accepts a registration sent to its own address and replies;
    its Binding Update reaches A but not C; B dies for good. Nobody takes over (A still holds the address),
    so nothing exchanges recent changes: C never gets the registration A holds."""
    sim = scripted(mode="peer", restart_on_heal=False)
    sim.drop_rule = drop_all(B, C, 200)
    sim.at(T0 + 4, sim.send_request, 0, COA, 100, 0, B)
    sim.at(T0 + 4.1, sim.crash, 1)
    result = sim.run()
    assert sim.members[2].ha.bindings.bindings_of(HOA), result.summary()
    assert result.ok, result.summary()


def _drop_last_table_replies(count: int, source: str, destination: str, after: float):
    """A drop rule: the first ``count`` datagrams from ``source`` to ``destination`` after ``after`` that
    carry the last Binding Table Reply of a transfer (MoreBind clear)."""
    left = [count]

    def rule(now: float, src: str, dst: str, data: bytes) -> bool:
        if not left[0] or now < after or src != source or dst != destination or data[0] < 200:
            return False
        if any(type(m).__name__ == "BindingTableReply" and not m.more for m in messages(data)):
            left[0] -= 1
            return True
        return False

    return rule


def test_member_whose_start_up_transfer_stalls_still_starts():
    """20 mobile nodes registered, 576-byte datagrams: a table takes two Binding Table Replies. C restarts;
    A's first reply arrives, its last one is lost three times, and its fourth send comes just as C
    abandons the transfer as stalled (3 s without a reply). C never asks A again, the late reply opens a
    transfer that can never complete, and C waits for A's table for ever: it stays in init, serving and
    replicating nothing, while A and B are up and healthy."""
    sim = scripted(mobile_nodes=20, max_datagram=576)
    for k in range(20):
        sim.at(T0 + 3 + 0.05 * k, sim.send_request, k, sim.mobile_nodes[k].coas[0], 300)
    sim.at(T0 + 5, sim.crash, 2)
    sim.at(T0 + 6, sim.restart, 2)
    sim.drop_rule = _drop_last_table_replies(3, A, C, T0 + 6)
    result = sim.run()
    assert sim.members[2].ha.role == "standby", result.summary()
    assert result.ok, result.summary()


def test_members_configured_as_peers_meet_by_multicast_without_a_violation():
    """Every member is configured with every other (members come only from configuration); a start-up
    request multicast to the group is sealed for the group's address, and each copy arrives there: it
    opens on every member, and no member counts a security violation in a quiet, lossless run."""
    sim = scripted(multicast=True, random_traffic=True, chaos=6, quiet=4)
    result = sim.run()
    assert result.ok, result.summary()
    assert result.stats["multicasts"] >= len(sim.members)
    assert [m.ha.counters["redundancy.security_violations"] for m in sim.members] == [0] * len(sim.members)
    for m in sim.members:
        assert {p.name for p in m.ha.group.membership} == {o.address for o in sim.members} - {m.address}


def test_request_accepted_twice_across_a_partition_leaves_one_state():
    """B is cut off and takes the virtual address too (a split brain). A accepts a registration; its reply
    and its Binding Update to B are lost to the cut. The mobile node sends the same request again a second
    later, and it reaches B, which has never seen it and accepts it with an expiry a second later. After
    the heal A and C kept the first expiry and B the second, for good (the two states differ only in
    expiry, which the table digests of core/bindings.py leave out, so a reconciliation by digest saw
    nothing to send). The later acceptance must win everywhere: its reply is the one the node got
    (core/node_state.py ``later``); B, which accepted while A and C could not hear it, sends it to them
    when they ask for what differs (core/missed.py). Found by this simulation (seed 172 of
    bench/simulation.py at 306adc9, 4 members, active-standby)."""
    sim = scripted()
    sim.at(T0 + 3.5, sim.partition, 1, {(1, 0), (1, 2), (0, 1), (2, 1)})
    sent: list[int] = []

    def first() -> None:
        sim.vip_to = 0
        sent.append(sim.send_request(0, COA, 100))

    def again() -> None:
        sim.vip_to = 1
        sim.resend(0, sent[0])

    sim.drop_rule = drop_first(1, VIP, "198.51.100.1", 3, after=T0 + 4)
    sim.at(T0 + 5, first)
    sim.at(T0 + 6, again)
    sim.at(T0 + 7, sim.unpartition, 1)
    sim.at(T0 + 7, setattr, sim, "vip_to", None)
    result = sim.run()
    assert result.stats["accepted"] == 2, result.summary()
    assert expiry_spread(sim, HOA) < 0.01, result.summary()
    assert result.ok, result.summary()
