"""``homeagent remove --all`` and ``--prefix P``: many mobile nodes' bindings removed by hand, a bounded
piece at a time.

Each node is removed as ``homeagent remove --home-address`` removes one (``HomeAgent.remove``): every
binding of it, with an Identification that orders the removal after everything seen so far, replicated
to the group as a de-registration. What this adds is the pacing (issue 10's lesson, as for listings in
``core/listing.py``): removing and replicating costs some tens of microseconds a node, so a million nodes
in one go would hold the event loop for a minute, and a standby would take over from an active member
that merely stopped advertising. A ``BulkRemoval`` instead does at most ``SCAN`` home addresses' worth of
looking and ``PAGE`` nodes' worth of removing per ``step``, and the runtime serves registrations, the
group and the control socket between two steps. The messages of one step to members go out together
(``begin_batch``/``end_batch``), as a burst of registrations does.

What it removes, decided here: the nodes the table knew when the walk began that have a binding when the
walk reaches them. A node that registers after the walk began keeps its binding (the
operator removed what was there when asked; a registration that follows is a new fact); a node with no
binding left (only its last Identification, kept for replay protection) is passed over, so no
de-registration of nothing is replicated.
"""

from __future__ import annotations

from ipaddress import IPv4Network
from typing import TYPE_CHECKING

from homeagent.core.effects import Effect

if TYPE_CHECKING:
    from homeagent.core.home_agent import HomeAgent

SCAN = 4096  # home addresses looked at in one step (an int comparison each)
PAGE = 128  # nodes removed in one step: some 4 ms with their replication (about 30 us a node, quiet host)


class BulkRemoval:
    """Removes the bindings of every home address in ``prefix`` (None: every one), ``step`` by step."""

    def __init__(self, home_agent: HomeAgent, prefix: IPv4Network | None = None, scan: int = SCAN,
                 page: int = PAGE) -> None:
        self._ha = home_agent
        self._scan, self._page = scan, page
        self._addresses = home_agent.bindings.home_addresses()  # a C-level copy; the bound ones are picked later
        self._at = 0
        if prefix is None:
            self._network, self._mask = 0, 0
        else:
            self._network, self._mask = int(prefix.network_address), int(prefix.netmask)
        self.removed = 0  # bindings
        self.mobile_nodes = 0  # nodes that lost at least one

    def step(self, now: float) -> list[Effect] | None:
        """The effects of the next piece of the work, or None once it is all done."""
        addresses = self._addresses
        if self._at >= len(addresses):
            return None
        ha, table = self._ha, self._ha.bindings
        network, mask = self._network, self._mask
        effects: list[Effect] = []
        nodes = 0
        end = min(len(addresses), self._at + self._scan)
        ha.begin_batch()
        while self._at < end and nodes < self._page:
            address = addresses[self._at]
            self._at += 1
            if address & mask != network:
                continue
            if not table.bindings_of(address):
                continue
            before = len(table)
            effects += ha.remove(address, None, now)
            removed = before - len(table)
            self.removed += removed
            self.mobile_nodes += removed > 0
            nodes += 1
        effects += ha.end_batch(now)
        return effects
