"""The two clocks of the core (DESIGN.md principle 7).

Every ``now`` the core is given is monotonic: lifetimes, retransmissions and elections run on it, so a
step of the wall clock (an NTP correction, an operator's ``date -s``) neither expires a binding nor makes
one immortal. The wall clock is needed only where time goes on the wire: registration Identifications
and HA-HA timestamps (NTP format), and the times shown to an operator. ``WallClock`` turns a monotonic
instant into wall time with an offset that the runtime refreshes from the system clocks at every input,
so the core itself still reads no clock, and a test steps the wall clock by changing the offset.
"""

from __future__ import annotations


class WallClock:
    __slots__ = ("offset",)

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset  # wall time minus monotonic time, as the runtime last read them

    def __call__(self, now: float) -> float:
        """The wall time (Unix seconds) at the monotonic instant ``now``."""
        return now + self.offset
