"""core/exchange.py and core/missed.py in a group on the in-memory network of test_group: the cases the
simulation found where members stayed apart for good (issue 10), each built by hand."""

from __future__ import annotations

from homeagent.core.replication import UPDATE_RETRANSMIT
from homeagent.core.transfer import OutgoingTransfer
from homeagent.wire.redundancy import NOT_TAKEN, BindingTableReplyAck, BindingUpdate

from .support import COA, HOA, ip
from .test_group import HA1, HA2, HA3, MN, group, make_config, registration, view


def test_an_acceptance_a_member_could_not_hear_is_sent_to_it_with_what_differs():
    """HA3 is cut off; HA1 accepts a registration, and after the heal HA3 is caught up by digest. Then the
    same request accepted twice: equal states but for the expiry, which digests leave out; the acceptor
    records that HA3 missed it (core/missed.py) and sends it with what differs."""
    net, (ha1, ha2, ha3) = group(3)
    net.drop = lambda d: d.src == HA3 or d.dst == HA3
    net.run_until(net.now + 1.5)
    assert not ha1.group.membership.members[ip(HA3)].up
    net.register(registration(COA, net.now))
    net.deliver()
    assert ha1.group.missed.of(ip(HA3)) == {HOA} and ha1.group.missed.of(ip(HA2)) == set()
    net.drop = lambda d: False
    net.run_until(net.now + 3)
    assert view(ha3) == view(ha1)
    assert ha1.group.missed.of(ip(HA3)) == set()  # sent, and acknowledged as taken


def test_a_reply_acknowledged_unread_keeps_what_the_member_missed():
    """A late reply to a download the member closed is acknowledged NOT_TAKEN: it stops the resends but
    does not count as delivered (simulation seed 269: the acceptor forgot what the member had missed, and
    the member kept the earlier of two acceptances for good)."""
    net, (ha1, ha2) = group(2)
    ha1.group.missed.add(ip(HA2), HOA)
    net.register(registration(COA, net.now))
    net.deliver()
    exchange, member = ha1.group.exchange, ha1.group.membership.members[ip(HA2)]
    transfer = OutgoingTransfer(ip(HA2), 7, [HOA], 1000, missed=ha1.group.missed.of(ip(HA2)))
    exchange.outgoing[ip(HA2)] = transfer
    exchange._pump(transfer, member, net.now)
    sequence = next(iter(transfer.in_flight))
    exchange.on_reply_ack(member, BindingTableReplyAck(NOT_TAKEN, False, sequence, 7), net.now)
    assert transfer.done and ha1.group.missed.of(ip(HA2)) == {HOA}


def test_a_member_that_restarted_unnoticed_is_reconciled_by_the_active_member():
    """Peer mode: HA2 accepts a registration; its update reaches HA1 but not HA3, and HA2 crashes and is
    back before anyone marks it down, so nothing it knew is known to be missing. Its start-up request
    tells the active member it restarted, which reconciles: HA3 gets the node (simulation seed 1974)."""
    net, (ha1, ha2, ha3) = group(3, mode="peer")
    net.drop = lambda d: d.src == HA2 and d.dst == HA3 and d.has(BindingUpdate)
    net.collect(HA2, ha2.receive_datagram(registration(COA, net.now), MN, HA2, net.now))
    net.run_until(net.now + UPDATE_RETRANSMIT / 2)
    assert len(ha1.bindings) == 1 and len(ha3.bindings) == 0
    net.drop = lambda d: False
    net.add(HA2, make_config(HA2, [HA1, HA3], 100, "peer"))  # a crash and a quick restart
    net.run_until(net.now + 4)
    assert view(ha3) == view(ha1) and len(ha3.bindings) == 1
