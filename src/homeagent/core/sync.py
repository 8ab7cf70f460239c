"""Who holds everything the group has answered: the sync guarantee (docs/protocol.md, "The sync
guarantee"), from both sides.

A member that answers registrations and gives up on another (a sync acknowledgement or a Binding Update
went unanswered, or it went silent) stops replicating to it and goes on answering: from then on the other
member lags (``lags``). Every advertisement to a lagging member says so (``YOU_LAG``) until that member has
been sent everything since (``sent_table``). The member told so is out of sync: it advertises
``OUT_OF_SYNC``, and the election does not make it active while an in-sync member is heard. It is in sync
again when each member that told it so says otherwise; for one that is gone meanwhile, when it has
downloaded the whole table from an in-sync member that is up (asked for as soon as the teller is lost).
"""

from __future__ import annotations

import logging
from collections import Counter
from ipaddress import IPv4Address

from homeagent.core.peers import Member

log = logging.getLogger("homeagent.redundancy")


class SyncState:
    def __init__(self, counters: Counter[str]) -> None:
        self.counters = counters
        self.told_by: set[int] = set()  # members whose last advertisement said we lag
        # Members whose whole table we hold: what they still say about us predates it, until they stop.
        self._answered_by: set[int] = set()

    # -- this member ----------------------------------------------------------------------------------

    @property
    def out_of_sync(self) -> bool:
        return bool(self.told_by)

    def advertised(self, member: int, we_lag: bool) -> None:
        """A member's advertisement said we lag (YOU_LAG), or did not."""
        if member in self._answered_by:
            if not we_lag:
                self._answered_by.discard(member)  # it has heard the last of our acks
            return
        was = self.out_of_sync
        if we_lag:
            self.told_by.add(member)
        else:
            self.told_by.discard(member)
        self._changed(was)

    def whole_table_received(self, source: Member, gone: set[int]) -> None:
        """A whole table from ``source`` is in: we hold everything it answered, whatever its advertisements
        say until it has our last ack. If it is up and in sync, whatever the members in ``gone`` told us we
        missed, it had too (they replicated to it, or it would lag)."""
        was = self.out_of_sync
        self.told_by.discard(source.address)
        self._answered_by.add(source.address)
        if source.up and not source.out_of_sync:
            self.told_by -= gone
        self._changed(was)

    def _changed(self, was: bool) -> None:
        if self.out_of_sync and not was:
            log.warning("this member is out of sync (members %s answered registrations it missed): it will not "
                        "become active while an in-sync member is up",
                        ", ".join(str(IPv4Address(a)) for a in sorted(self.told_by)))
            self.counters["redundancy.out_of_sync"] += 1
        elif was and not self.out_of_sync:
            log.info("this member is in sync again")

    # -- the members we answer for --------------------------------------------------------------------

    @staticmethod
    def lags(member: Member, since: float) -> None:
        """From ``since`` on, ``member`` misses what we answer (unless it already lagged from earlier)."""
        if member.lagging_since is None:
            member.lagging_since = since

    @staticmethod
    def sent_table(member: Member) -> None:
        """Our table, or every part of it that differed from the member's, reached ``member`` (every reply
        acked): it holds everything we answered."""
        if member.lagging_since is not None:
            member.lagging_since = None
            log.info("member %s holds everything this member answered: in sync", member.name)
