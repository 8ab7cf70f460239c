"""Whether this member holds everything the group has answered: the sync guarantee (docs/protocol.md,
"The sync guarantee").

A member that gives up on another (a sync acknowledgement or a Binding Update went unanswered, or it went
silent) stops replicating to it and goes on answering mobile nodes: from then on the other member lags.
Every advertisement to a lagging member says so (``YOU_LAG``) until that member has been sent everything
since (``Group.sent_table``). The member told so is out of sync: it advertises ``OUT_OF_SYNC``, and the
election does not make it active while an in-sync member is heard. It is in sync again when each member
that told it so says otherwise; for one that is gone meanwhile, when it has downloaded the whole table
from an in-sync member that is up (asked for as soon as the teller is lost).
"""

from __future__ import annotations


class SyncState:
    def __init__(self) -> None:
        self.told_by: set[int] = set()  # members whose last advertisement said we lag

    @property
    def out_of_sync(self) -> bool:
        return bool(self.told_by)

    def advertised(self, member: int, we_lag: bool) -> None:
        if we_lag:
            self.told_by.add(member)
        else:
            self.told_by.discard(member)

    def whole_table_received(self, gone: set[int]) -> None:
        """A whole table from an in-sync member that is up: whatever the members in ``gone`` told us we
        missed, it had (they replicated to it, or it would lag too)."""
        self.told_by -= gone
