"""Security violations (RFC 5944 3.8.2.1's "security exception", Cisco's ``cmiHaRedunSecViolations``):
authentication failures and replays of registrations and of messages between members.

Each is counted, always, and logged with its source address; the log is rate-limited across all kinds
together, so that a flood of forgeries cannot fill a disk, and the first line after a quiet spell says how
many were left out.
"""

from __future__ import annotations

import logging
from collections import Counter

LOG_PER_SECOND = 10


class SecurityViolations:
    def __init__(self, counters: Counter[str], per_second: int = LOG_PER_SECOND) -> None:
        self.counters = counters
        self.per_second = per_second
        self._second = -1
        self._logged = 0
        self._suppressed = 0

    def report(self, counter: str, now: float, log: logging.Logger, level: int, message: str, *args: object) -> None:
        """Count one violation under ``counter``; log ``message % args`` if this second's budget allows."""
        self.counters[counter] += 1
        second = int(now)
        if second != self._second:
            self._second, self._logged = second, 0
        if self._logged >= self.per_second:
            self._suppressed += 1
            return
        self._logged += 1
        if self._suppressed:
            message += " (%d more security violations were not logged)"
            args = (*args, self._suppressed)
            self._suppressed = 0
        log.log(level, message, *args)

    @property
    def total(self) -> int:
        """Every violation counted, of every kind: what ``homeagent status`` shows as ``security_violations``."""
        return self.counters["security_violations"] + self.counters["redundancy.security_violations"]
