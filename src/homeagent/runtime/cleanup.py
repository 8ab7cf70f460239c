"""Taking off the link what a member killed while active left there: ``homeagent cleanup`` (for a systemd
unit's ``ExecStopPost=``) and the daemon's start run this one function.

With ``address_method = "interface"`` an active member puts the virtual address on its interface; with a
data plane, the Home Agent that serves (a lone one, or a group's active member) answers ARP for the mobile
nodes away from home (proxy ARP, RFC 5944 section 4.6). One stopped gracefully takes all that off; one
killed with ``kill -9`` (or by the OOM killer) cannot, and its host's kernel goes on answering ARP for the
virtual address and for the mobile nodes: routers may point them at a host where nothing serves them
(the forwarder, with its TUN device and routes, died with the daemon). What is removed, and nothing else:

- the virtual address, on ``redundancy.interface``, whatever its prefix length;
- every proxy ARP entry (``ip neigh add proxy A dev IF``) on ``dataplane.interface`` (with a data plane)
  and on ``redundancy.interface`` whose address ``A`` a Home Agent of this configuration could proxy for:
  a home address (in ``home_agent.home_network``) on the home link (in a network of ``IF``), and not a
  reserved home address (``Config.reserved_home_addresses``: no mobile node has one). A proxy entry for
  any other address is the operator's, and stays. The data plane that adds proxy entries must add none
  outside this rule.

With ``[dataplane] backend = "ebpf"`` (``clean_ebpf``, run by ``homeagent cleanup`` only): the program's
tc filter on ``dataplane.interface`` and each of ``extra_interfaces``, and its pins
(``/sys/fs/bpf/homeagent-<interface>``), as a clean stop removes them. A killed daemon leaves them on
purpose, so that a restart does not interrupt forwarding; but a member that is not restarted would go on
answering ARP for the home addresses and tunnelling with the maps as they were. The daemon's own start
does not run this: it takes the pinned maps over instead. Nor does the cleanup systemd runs after a lone
Home Agent failed (``kept_for_restart``): ``Restart=on-failure`` starts it again a second later, and it
takes the program over, forwarding throughout, as a restart by hand would. A group member's goes, since
the standby that takes over must be the only one to answer for the home addresses.

Nothing is touched while a daemon answers on the configured control socket: what is on the link is then
its own, and taking it off would cut a live member's mobile nodes.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable, Mapping, Sequence
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from homeagent.config import AddressMethod, Backend, Config
from homeagent.dataplane.bpf_program import PIN_ROOT, Attachment


class CleanupError(RuntimeError):
    """Why cleanup did nothing, in one line."""


def not_applicable(config: Config) -> str | None:
    """Why there is nothing to clean up on a link for this configuration; None when there may be."""
    if interfaces(config):
        return None
    red = config.redundancy
    if red is None:
        return "no [redundancy] and no [dataplane]: a lone Home Agent without a data plane puts nothing on a link"
    return (f'redundancy.address_method is "{red.address_method}" and no [dataplane]: nothing is put on an '
            "interface")


def interfaces(config: Config) -> list[str]:
    """The links a Home Agent of ``config`` puts something on: the virtual address's, the data plane's."""
    red, dataplane = config.redundancy, config.dataplane
    found = []
    if red is not None and red.address_method is AddressMethod.INTERFACE and red.interface is not None:
        found.append(red.interface)
    if dataplane.backend is not Backend.NONE and dataplane.interface is not None \
            and dataplane.interface not in found:
        found.append(dataplane.interface)
    return found


def daemon_answers(path: Path) -> bool:
    """Whether a daemon listens on the control socket ``path`` (a connection is accepted: even a hung
    daemon's is). A socket file nothing listens on is what a crash leaves, and does not count."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)  # a full backlog makes connect wait: a daemon is there, hung or busy
    try:
        probe.connect(str(path))
    except (PermissionError, TimeoutError):  # someone else's daemon, perhaps, or a stuck one: keep off
        return True
    except OSError:  # no such file, or refused: nothing listens
        return False
    finally:
        probe.close()
    return True


def proxied_by_us(config: Config, links: list[IPv4Network]) -> Callable[[IPv4Address], bool]:
    """The rule above: whether a proxy ARP entry for an address on the link ``links`` (the interface's
    networks) may have been added by a Home Agent of ``config``."""
    home, reserved = config.home_agent.home_network, config.reserved_home_addresses
    networks = [n for n in links if n.prefixlen < 32]  # a /32 (the virtual address) is no link
    return lambda a: a in home and a not in reserved and any(a in n for n in networks)


async def clean(config: Config) -> list[str]:
    """Take off the links (``interfaces``) what a killed Home Agent left there; one line per thing removed.

    Raises CleanupError (nothing removed) when a daemon answers on the control socket, an interface does
    not exist, or the system refuses (no CAP_NET_ADMIN). A configuration that puts nothing on a link has
    nothing to clean up: the caller asks ``not_applicable`` first."""
    from pyroute2 import AsyncIPRoute

    links = interfaces(config)
    assert links, not_applicable(config)
    if daemon_answers(config.control_socket):
        raise CleanupError(f"a daemon answers on {config.control_socket}: what is on {', '.join(links)} is its "
                           "own (stop it first; a graceful stop cleans up after itself)")
    indexes = []
    for interface in links:
        try:
            indexes.append(socket.if_nametoindex(interface))
        except OSError:
            which = "redundancy" if config.redundancy is not None and interface == config.redundancy.interface \
                else "dataplane"
            raise CleanupError(f"{which}.interface: no interface {interface!r}") from None
    ipr = AsyncIPRoute()
    try:
        await ipr.setup_endpoint()
        removed = []
        for interface, index in zip(links, indexes):
            removed += await _clean(ipr, interface, index, config)
        return removed
    finally:
        ipr.close()


async def _clean(ipr: Any, interface: str, index: int, config: Config) -> list[str]:
    from pyroute2.netlink.rtnl.ndmsg import NTF_PROXY

    red = config.redundancy
    virtual = red.virtual_address if red is not None and interface == red.interface \
        and red.address_method is AddressMethod.INTERFACE else None
    removed: list[str] = []
    links: list[IPv4Network] = []
    leftovers: list[int] = []
    async for message in await ipr.addr("dump", index=index, family=socket.AF_INET):
        address = IPv4Address(message.get("IFA_LOCAL", message.get("IFA_ADDRESS")))
        links.append(IPv4Network(f"{address}/{message['prefixlen']}", strict=False))
        if address == virtual:
            leftovers.append(message["prefixlen"])
    for prefixlen in leftovers:
        if await _netlink(f"{virtual}/{prefixlen}", ipr.addr, "del", index=index, address=str(virtual),
                          prefixlen=prefixlen):
            removed.append(f"removed the virtual address {virtual}/{prefixlen} from {interface}")
    ours = proxied_by_us(config, links)
    # Proxy entries are dumped only when the request carries NTF_PROXY: ``dump_filter=None`` makes pyroute2
    # put ``flags`` in the request instead of filtering replies by it. The kernel dumps every interface's.
    dump = await ipr.neigh("dump", dump_filter=None, family=socket.AF_INET, flags=NTF_PROXY)
    proxies = [IPv4Address(m.get("NDA_DST")) async for m in dump
               if m["ifindex"] == index and m["flags"] & NTF_PROXY and m.get("NDA_DST")]
    for address in sorted(a for a in proxies if ours(a)):
        entry = f"the proxy ARP entry for {address}"
        if await _netlink(entry, ipr.neigh, "del", dst=str(address), ifindex=index, flags=NTF_PROXY):
            removed.append(f"removed the proxy ARP entry for {address} on {interface}")
    return removed


# systemd's $SERVICE_RESULT for the ends that Restart=on-failure restarts (systemd.exec(5), systemd.service(5))
RESTARTED = frozenset({"exit-code", "signal", "core-dump", "watchdog", "timeout", "oom-kill"})


def kept_for_restart(config: Config, environ: Mapping[str, str]) -> str | None:
    """Why the ebpf program is left in place (one line), or None: a lone Home Agent whose daemon failed
    under systemd (``ExecStopPost=`` sees ``$SERVICE_RESULT``), which ``Restart=on-failure`` starts again
    to take the program and its maps over. A group member's always goes (another member takes over), and
    so does any left by a daemon that was stopped, or when run by hand (no ``$SERVICE_RESULT``)."""
    dataplane, result = config.dataplane, environ.get("SERVICE_RESULT")
    if dataplane.backend is not Backend.EBPF or config.redundancy is not None or result not in RESTARTED:
        return None
    return (f"kept the ebpf program on {dataplane.interface}: the daemon failed ({result}) and systemd starts "
            "it again, which takes it over (run 'homeagent cleanup' by hand if it is not restarted)")


def clean_ebpf(config: Config, pin_root: Path = PIN_ROOT, tc_prefix: Sequence[str] = ()) -> list[str]:
    """Take off what a killed daemon's ebpf backend left (its filters, its pins); one line per thing
    removed, none for another backend. ``pin_root`` and ``tc_prefix`` as ``Attachment``'s (the tests).
    Raises CleanupError when a daemon answers on the control socket."""
    dataplane = config.dataplane
    if dataplane.backend is not Backend.EBPF or dataplane.interface is None:
        return []
    if daemon_answers(config.control_socket):
        raise CleanupError(f"a daemon answers on {config.control_socket}: the program on "
                           f"{dataplane.interface} is its own (stop it first; a graceful stop removes it)")
    attachment = Attachment(dataplane.interface, pin_root, tc_prefix, dataplane.extra_interfaces)
    removed = []
    for interface in attachment.interfaces:
        if attachment.attached(interface):
            attachment.detach_from(interface)
            removed.append(f"removed the ebpf program from {interface}'s ingress")
    if dataplane.virtual_mac is not None and attachment.accept_mac(dataplane.virtual_mac, False):
        removed.append(f"removed the virtual MAC {dataplane.virtual_mac.hex(':')} from {dataplane.interface}")
    if attachment.pin_dir.exists():
        try:
            attachment.unpin()
        except OSError as exc:
            raise CleanupError(f"cannot remove the pins under {attachment.pin_dir}: {exc}") from None
        removed.append(f"removed the ebpf pins under {attachment.pin_dir}")
    return removed


async def _netlink(what: str, call: Any, *args: Any, **kwargs: Any) -> bool:
    """One netlink deletion of ``what``; False when it was gone already (taken off meanwhile)."""
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        await call(*args, **kwargs)
        return True
    except NetlinkError as exc:
        if exc.code in (errno.EADDRNOTAVAIL, errno.ENOENT, errno.ESRCH):
            return False
        if exc.code == errno.EPERM:
            raise CleanupError(f"removing {what} needs root or CAP_NET_ADMIN") from None
        raise CleanupError(f"cannot remove {what}: {exc}") from None
