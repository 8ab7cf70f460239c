"""Many /32 route changes into one device in one system call: what makes a takeover's routes take a fraction
of a second rather than minutes, and a new binding's route short enough for its registration reply to wait
for it (docs/dataplane.md, "A reply means forwarding").

pyroute2 builds every message: once per device and operation, a request for a placeholder destination is
encoded by its ``rtmsg`` class; each route is a copy with the destination's four bytes and the sequence
number put in. What pyroute2 costs per message (its encoding: 56 us for a bare ``rtmsg``, 200-230 us
through ``IPRoute.route`` or ``IPBatch``, measured here) is paid once, and a route costs ~2 us. The copies go
out together in one ``send`` on a netlink socket of our own, without NLM_F_ACK: the kernel handles an
rtnetlink request in the sender's system call, so when ``send`` returns every route of the batch has been
tried, and only a refused one leaves a message on the socket, an error that pyroute2's ``nlmsgerr`` decodes
and whose sequence number names the address.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterable
from ipaddress import IPv4Address

PLACEHOLDER = IPv4Address("192.0.2.254")  # TEST-NET-1: in no real table, found once in the template
MAIN_TABLE = 254
NLMSG_ERROR = 2
RECEIVE_BUFFER = 4 << 20  # refusals of a whole batch fit
PER_SEND = 1024  # requests per send (45 KiB: under the socket's send buffer, ~200 KiB by default)


class RouteRequests:
    """Adds (or replaces) and deletes /32 routes into the device ``index`` of the main table."""

    def __init__(self, index: int) -> None:
        from pyroute2.netlink import NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST
        from pyroute2.netlink.rtnl import RTM_DELROUTE, RTM_NEWROUTE

        self._add = _template(RTM_NEWROUTE, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_REPLACE, index)
        self._delete = _template(RTM_DELROUTE, NLM_F_REQUEST, index)
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        self.sock.bind((0, 0))

    def apply(self, changes: Iterable[tuple[int, bool]]) -> dict[int, int]:
        """Route (True) or unroute (False) each address; the addresses the kernel refused, with the errno.
        Deleting a route that is not there is refused too (ESRCH): the caller knows what that means."""
        batch = list(changes)
        if not batch:
            return {}
        parts = []
        for seq, (address, routed) in enumerate(batch, 1):
            head, tail = self._add if routed else self._delete
            sequence = seq.to_bytes(4, sys.byteorder)  # nlmsghdr: length, type, flags, then this
            parts.append(head[:8] + sequence + head[12:] + address.to_bytes(4, "big") + tail)
        for start in range(0, len(parts), PER_SEND):
            self.sock.send(b"".join(parts[start:start + PER_SEND]))  # every request handled when it returns
        return {batch[seq - 1][0]: errno for seq, errno in self._refusals()}

    def close(self) -> None:
        self.sock.close()

    def _refusals(self) -> Iterable[tuple[int, int]]:
        from pyroute2.netlink import nlmsgerr

        while True:
            try:
                data = self.sock.recv(1 << 16, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            at = 0
            while at + 16 <= len(data):
                error = nlmsgerr(data[at:])
                error.decode()
                length = error["header"]["length"]
                if length < 16:
                    return
                if error["header"]["type"] == NLMSG_ERROR and error["error"]:
                    yield error["header"]["sequence_number"], -error["error"]
                at += (length + 3) & ~3


def _template(kind: int, flags: int, index: int) -> tuple[bytes, bytes]:
    """The request pyroute2 encodes for the placeholder, cut around the destination's four bytes."""
    from pyroute2.netlink.rtnl.rtmsg import rtmsg

    message = rtmsg()
    message["family"] = socket.AF_INET
    message["dst_len"] = 32
    message["table"] = MAIN_TABLE
    message["proto"] = 4  # RTPROT_STATIC, as ip route add
    message["scope"] = 0  # RT_SCOPE_UNIVERSE
    message["type"] = 1  # RTN_UNICAST
    message["attrs"] = [("RTA_DST", str(PLACEHOLDER)), ("RTA_OIF", index)]
    message["header"]["type"] = kind
    message["header"]["flags"] = flags
    message.encode()
    data = bytes(message.data)
    at = data.index(PLACEHOLDER.packed)
    return data[:at], data[at + 4:]
