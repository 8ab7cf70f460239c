"""Messages to members, queued and sealed: every part of the group (replication, the table exchanges, the
advertisements) queues message bodies here, and ``flush`` packs each member's into as few datagrams as fit
``max_datagram``, sealing each once (docs/protocol.md, "Transport"). While the runtime drains a burst of
datagrams (``batching``), nothing leaves until it is done, so a burst of registrations replicates in a few
datagrams rather than one per registration.
"""

from __future__ import annotations

from ipaddress import IPv4Address

from homeagent.core.effects import Effect, Send
from homeagent.core.peers import Member, Membership
from homeagent.wire.redundancy import MAX_MESSAGES, SEAL_OVERHEAD


class Outbox:
    def __init__(self, membership: Membership, own_address: int, port: int, max_datagram: int,
                 multicast_group: int | None) -> None:
        self.membership = membership
        self.port = port
        self.max_datagram = max_datagram
        self.multicast_group = multicast_group
        self.batching = False  # the runtime sets it while it drains a burst of datagrams, then flushes
        self._own = str(IPv4Address(own_address))
        self._queued: dict[int, list[bytes]] = {}  # member address -> message bodies waiting for flush()

    def send(self, body: bytes, member: Member) -> None:
        """Queue a message for ``member``."""
        box = self._queued.get(member.address)
        if box is None:
            self._queued[member.address] = [body]
        else:
            box.append(body)

    def multicast(self, body: bytes, now: float) -> list[Effect]:
        """``body`` to the group's multicast address at once, sealed with the group's association; nothing
        without one."""
        group, sa = self.multicast_group, self.membership.group_association
        if group is None or sa is None:
            return []
        datagram = self.membership.seal_for(body, sa, group, now)
        return [Send(datagram, (str(IPv4Address(group)), self.port), self._own)]

    def flush(self, now: float) -> list[Effect]:
        """The queued messages as datagrams: back to back up to ``max_datagram``, each datagram sealed once."""
        effects: list[Effect] = []
        members = self.membership.members
        for address, bodies in self._queued.items():
            member = members.get(address)
            if member is None:
                continue
            room = self.max_datagram - SEAL_OVERHEAD - member.association.digest_size
            chunk: list[bytes] = []
            size = 0
            for body in bodies:
                if chunk and (size + len(body) > room or len(chunk) == MAX_MESSAGES):
                    effects.append(self._datagram(chunk, member, now))
                    chunk, size = [], 0
                chunk.append(body)
                size += len(body)
            if chunk:
                effects.append(self._datagram(chunk, member, now))
        self._queued.clear()
        return effects

    def done(self, effects: list[Effect], now: float) -> list[Effect]:
        """The end of an input: queued messages leave now, unless the runtime batches several inputs."""
        if self.batching or not self._queued:
            return effects
        return effects + self.flush(now)

    def _datagram(self, bodies: list[bytes], member: Member, now: float) -> Send:
        body = bodies[0] if len(bodies) == 1 else b"".join(bodies)
        return Send(self.membership.seal(body, member, now), (member.name, self.port), self._own)
