"""Security violations (RFC 5944 3.8.2.1's "security exception", Cisco's ``cmiHaRedunSecViolations``):
authentication failures and replays of registrations and of messages between members.

Each is counted, always, and logged as a ``security_violation`` event (core/events.py) with its source
address; the log is rate-limited across all kinds together, so that a flood of forgeries cannot fill a
disk, and the first line after a quiet spell says how many were left out.
"""

from __future__ import annotations

from collections import Counter

from homeagent.core import events

LOG_PER_SECOND = 10


class SecurityViolations:
    def __init__(self, counters: Counter[str], per_second: int = LOG_PER_SECOND) -> None:
        self.counters = counters
        self._budget = events.Budget(per_second)

    @property
    def per_second(self) -> int:
        return self._budget.per_second

    def report(self, counter: str, now: float, level: int, message: str, *args: object, **fields: object) -> None:
        """Count one violation under ``counter``; log ``message % args`` with ``fields`` if this second's
        budget allows."""
        self.counters[counter] += 1
        left_out = self._budget.take(now)
        if left_out is None or not events.enabled(level):
            return
        if left_out:
            message += " (%d more security violations were not logged)"
            args = (*args, left_out)
            fields["left_out"] = left_out
        kind = "redundancy" if counter.startswith("redundancy.") else "registration"
        events.emit(level, "security_violation", message % args, kind=kind, **fields)

    @property
    def total(self) -> int:
        """Every violation counted, of every kind: what ``homeagent status`` shows as ``security_violations``."""
        return self.counters["security_violations"] + self.counters["redundancy.security_violations"]
