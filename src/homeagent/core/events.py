"""The events an operator watches, one log line each: how they leave the sans-I/O core.

Every event goes to one logger, ``homeagent.events``, as a record carrying its name (``event``) and its
fields (``fields``: plain values, addresses dotted); the runtime's formatter (``runtime/logs.py``) writes
them as ``key=value`` pairs or JSON. The core decides what happened and at which level; it never formats
a line nobody reads: a caller on the hot path asks ``enabled(level)`` before it gathers the fields, so an
event whose level is off costs one check (bench/registrations.py measures it on the hot path), and
``emit`` checks again for the others.

Levels, decided in docs/operations.md ("Logs"): a binding that appears, goes away (de-registered, expired,
removed), a role change, a member up or down at info; a security violation at warning; a renewal, a
retransmitted duplicate, a denial and a discarded datagram at debug (as Cisco logs renewals only with
debugging on). A flood of what logs at debug or warning is budgeted (``Budget``): at most so many lines a
second, and the next line says how many were left out; every one is counted all the same.
"""

from __future__ import annotations

import logging
from socket import inet_ntoa

NAME = "homeagent.events"
log = logging.getLogger(NAME)

DEBUG, INFO, WARNING = logging.DEBUG, logging.INFO, logging.WARNING
DISCARDS_PER_SECOND = 100  # debug lines for denied and discarded datagrams, all kinds together

enabled = log.isEnabledFor  # the check every caller makes first: one call, cached by logging per level


def emit(level: int, event: str, message: str, **fields: object) -> None:
    """One event: ``message`` for people, ``fields`` for machines (``runtime/logs.py`` writes both). The
    record is made here (by the record factory, as ``Logger.makeRecord`` makes it) and handed to the
    logger's handlers, as ``Logger.log`` would after its checks (a new binding's line is on the
    registration path: ~1 us less a line). No caller's file and line: no line shows them."""
    if not enabled(level):
        return
    record = logging.getLogRecordFactory()(NAME, level, "", 0, message, None, None)
    record.event = event
    record.fields = fields
    log.handle(record)


def dotted(address: int) -> str:
    """An address as a dotted quad (what IPv4Address's str gives, at a quarter of its cost)."""
    return inet_ntoa(address.to_bytes(4, "big"))


def binding(level: int, event: str, message: str, home_address: int, care_of_address: int, **fields: object) -> None:
    """A binding's event (``binding_accepted``, ``binding_renewed``, ``binding_deregistered``,
    ``binding_expired``, ``binding_removed``), named by its home and care-of addresses."""
    emit(level, event, message, home_address=dotted(home_address), care_of_address=dotted(care_of_address),
         **fields)


class Budget:
    """At most ``per_second`` lines in any second of ``now``; the lines over it are left out and counted, and
    the next line let through says how many (``take``). A flood of forged or malformed datagrams must not
    fill a disk, nor cost a log line each."""

    def __init__(self, per_second: int) -> None:
        self.per_second = per_second
        self._second = -1
        self._taken = 0
        self.suppressed = 0

    def take(self, now: float) -> int | None:
        """None when this second's budget is spent (the line is left out, and counted); else the number of
        lines left out before this one, which its line should mention (and which starts again at 0)."""
        second = int(now)
        if second != self._second:
            self._second, self._taken = second, 0
        if self._taken >= self.per_second:
            self.suppressed += 1
            return None
        self._taken += 1
        left_out, self.suppressed = self.suppressed, 0
        return left_out


_discards = Budget(DISCARDS_PER_SECOND)


def discarded(level: int, event: str, now: float, message: str, **fields: object) -> None:
    """A request denied or a datagram discarded (``denied``, ``discarded``), within the shared budget of
    ``DISCARDS_PER_SECOND``. The caller checked ``enabled(level)``."""
    left_out = _discards.take(now)
    if left_out is None:
        return
    if left_out:
        fields["left_out"] = left_out
        message += f" ({left_out} more denied or discarded were not logged)"
    emit(level, event, message, **fields)


def source(address: tuple[str, int] | tuple[str, int, int, int] | str) -> str:
    """A datagram's source as ``address:port``."""
    if isinstance(address, str):
        return address
    return f"{address[0]}:{address[1]}"
