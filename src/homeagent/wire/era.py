"""Identifications and timestamps: NTP timestamps on the wire, counted from 2000 inside.

On the wire a timestamp Identification (RFC 5944 section 5.7.1), and the Home Agents' seal timestamps,
are 64-bit NTP timestamps: seconds since 1900 in the high 32 bits, a fraction in the low 32. The seconds
wrap on 2036-02-07 06:28:16 UTC, the end of NTP era 0 (RFC 5905 section 6). Compared as plain integers,
every timestamp after the wrap would be older than every one before it: each mobile node registered before
it would get 133 until its state was forgotten, and the group's merge rules would order bindings backwards.

So the wire's parsers and encoders (``wire/registration.py``, ``wire/redundancy.py``, the store's
``core/persisted.py``) turn each timestamp into an Identification counted from 2000-01-01 00:00:00 UTC on
the way in, and back on the way out: the same 64 bits less a constant, modulo 2**64. That orders every
timestamp from 2000 to 2136 as time does, in the same 64 bits (the store's and the binding table's formats
do not change, nor does the wire), so that everywhere inside a plain comparison is the right one. Only what
a person reads (logs, ``homeagent bindings``, ``mn`` output) shows the wire's value again.
"""

from __future__ import annotations

ERA_SECONDS = 3_155_673_600  # NTP seconds of 2000-01-01 00:00:00 UTC (Unix 946,684,800)
UNIX_ERA = 946_684_800  # the same instant in Unix seconds
OFFSET = ERA_SECONDS << 32  # what an Identification lacks of its NTP timestamp (modulo 2**64)
MASK = (1 << 64) - 1  # (the hot paths inline the two functions below with these)


def from_wire(timestamp: int) -> int:
    """The Identification, counted from 2000, of an NTP ``timestamp`` as it was on the wire."""
    return (timestamp - OFFSET) & MASK


def to_wire(identification: int) -> int:
    """The NTP timestamp, as the wire carries it, of an ``identification`` counted from 2000."""
    return (identification + OFFSET) & MASK
