"""A TUN device (IFF_TUN | IFF_NO_PI): the kernel routes a datagram into it and we read the bare IP packet;
what we write is an IP packet the kernel receives as if it arrived on a link. Opened with the stdlib's
ioctl (pyroute2 creates TUN devices too, but through the same ioctl, and we need the file descriptor).

The device is not persistent: it disappears with the last descriptor, together with every route into it,
so a forwarder that dies leaves neither device nor routes behind.
"""

from __future__ import annotations

import fcntl
import os
import struct

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFNAMSIZ = 16


def open_tun(name: str) -> tuple[int, str]:
    """A non-blocking descriptor of the TUN device ``name`` (made if needed) and the name it got."""
    if not 0 < len(name.encode()) < IFNAMSIZ:
        raise ValueError(f"interface name {name!r}: 1 to {IFNAMSIZ - 1} bytes")
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        answer = fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd, answer[:IFNAMSIZ].rstrip(b"\0").decode()


def without_ipv6(name: str) -> None:
    """No IPv6 on the device: the kernel would send router solicitations and MLD reports into it, which the
    data plane (IPv4 only) could only drop and count."""
    try:
        with open(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6", "w") as knob:
            knob.write("1")
    except OSError:  # no IPv6 in this kernel or namespace: nothing to quieten
        pass
