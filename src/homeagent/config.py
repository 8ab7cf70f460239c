"""TOML configuration to typed, validated values.

Every problem names its key (``home_agent.max_lifetime: ...``) and nothing starts half-configured: the
daemon loads the whole file, or refuses to start.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from enum import StrEnum
from ipaddress import IPv4Address, IPv4Network, IPv6Address, ip_address
from pathlib import Path
from collections.abc import Iterator
from typing import Any, TypeVar

from homeagent.core.node_state import MAX_RECORDS
from homeagent.wire.auth import Algorithm, SecurityAssociation

DEFAULT_PORT = 434
MIN_KEY_SIZE = 16
MAX_LIFETIME_LIMIT = 0xFFFE  # 0xFFFF means "infinity" on the wire; a Home Agent never grants it
ANNOUNCE_RATES = (10.0, 100_000.0)  # [dataplane] announce_rate, frames a second
ADVERTISEMENT_INTERVALS = (0.01, 10.0)  # seconds: [redundancy] advertisement_interval, and a member's as heard
LOG_LEVELS = ("debug", "info", "warning", "error")


class Mode(StrEnum):
    ACTIVE_STANDBY = "active-standby"
    PEER = "peer"  # every member serves registrations


class Replication(StrEnum):
    ASYNC = "async"
    SYNC = "sync"  # the reply waits for every member that is up to ack


class ElectionKind(StrEnum):
    INTERNAL = "internal"
    EXTERNAL = "external"  # keepalived (or another VRRP daemon) decides the role


class AddressMethod(StrEnum):
    BIND = "bind"
    INTERFACE = "interface"  # add the virtual address to ``interface`` and announce it


class LogFormat(StrEnum):
    LOGFMT = "logfmt"  # key=value pairs, one line per event (docs/operations.md, "Logs")
    JSON = "json"  # one JSON object per line


class Backend(StrEnum):
    NONE = "none"  # registrations only
    USERSPACE = "userspace"  # a TUN device and raw IP-in-IP sockets in a process of their own
    EBPF = "ebpf"  # a tc-BPF fast path on the home link in front of the userspace backend


E = TypeVar("E", bound=StrEnum)


class ConfigError(ValueError):
    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


@dataclass(frozen=True)
class MobileSecurityAssociation:
    """Mobile node - Home Agent association for every home address in ``home_addresses``."""

    home_addresses: IPv4Network
    association: SecurityAssociation


@dataclass(frozen=True)
class HomeAgentConfig:
    address: IPv4Address
    port: int = DEFAULT_PORT
    home_network: IPv4Network = IPv4Network("0.0.0.0/0")
    max_lifetime: int = 1800
    replay_tolerance: int = 7
    state_dir: Path = Path("/var/lib/homeagent")
    simultaneous_bindings: int = 3  # per mobile node; 0: unsupported (accepted with code 1)
    persistence: bool = True  # bindings kept in state_dir/bindings.db over restarts (runtime/persistence.py)


@dataclass(frozen=True)
class PeerSecurityAssociation:
    """Home Agent - Home Agent association for every member address in ``peers`` (an address or prefix)."""

    peers: IPv4Network
    association: SecurityAssociation


@dataclass(frozen=True)
class RedundancyConfig:
    virtual_address: IPv4Address
    security_associations: tuple[PeerSecurityAssociation, ...]
    mode: Mode = Mode.ACTIVE_STANDBY
    priority: int = 100
    peers: tuple[IPv4Address, ...] = ()
    multicast_group: IPv4Address | None = None
    replication: Replication = Replication.ASYNC
    sync_timeout: float = 0.5  # seconds a sync reply waits before going out anyway
    advertisement_interval: float = 0.1  # seconds between Advertisements
    preempt: bool = True  # a better member takes the active role from a worse one
    preempt_delay: float = 0.0  # seconds a member stands by before it may preempt (keepalived's preempt_delay)
    startup_wait: float = 1.0  # seconds a starting member waits for a first table reply
    max_datagram: int = 1400  # bytes of a Binding Table Reply
    election: ElectionKind = ElectionKind.INTERNAL
    address_method: AddressMethod = AddressMethod.BIND
    interface: str | None = None


@dataclass(frozen=True)
class DataplaneConfig:
    """``[dataplane]`` (docs/dataplane.md). ``none``: registrations only, nothing forwarded; ``userspace``:
    a TUN device and raw IP-in-IP sockets in a process of their own, and proxy ARP on ``interface``;
    ``ebpf``: the same with a tc-BPF program on ``interface`` that tunnels what it can in the kernel."""

    backend: Backend = Backend.NONE
    interface: str | None = None  # the home link: proxy and gratuitous ARP; its MTU sizes the tunnels
    tun: str = "ha0"  # the TUN device the home addresses away from home are routed into
    ttl: int = 64  # the outer header's TTL (RFC 2003 3.1)
    extra_interfaces: tuple[str, ...] = ()  # ebpf: other links the program runs on (reverse tunnels arrive)
    virtual_mac: bytes | None = None  # ebpf: the group's MAC, given for the away home addresses (or None)
    announce_rate: float = 1000.0  # gratuitous ARP frames a second on the home link (dataplane.announcer.RATE)


@dataclass(frozen=True)
class LogConfig:
    """``[log]``. ``level`` is None when the file does not set it: then ``homeagent run --log-level``
    decides, and info without it; a level the file sets applies again at every reload (SIGHUP)."""

    level: str | None = None  # one of LOG_LEVELS
    format: LogFormat = LogFormat.LOGFMT  # applied again at every reload, as the level


@dataclass(frozen=True)
class MetricsConfig:
    """``[metrics]``: the Prometheus endpoint (docs/operations.md, "Metrics"). Off (``listen`` None) unless
    the file gives an address and port to listen on; changing it needs a restart."""

    listen: tuple[IPv4Address | IPv6Address, int] | None = None


@dataclass(frozen=True)
class Config:
    home_agent: HomeAgentConfig
    security_associations: tuple[MobileSecurityAssociation, ...]
    dataplane: DataplaneConfig = DataplaneConfig()
    redundancy: RedundancyConfig | None = None
    source: Path | None = None
    log: LogConfig = LogConfig()
    metrics: MetricsConfig = MetricsConfig()

    @property
    def control_socket(self) -> Path:
        return self.home_agent.state_dir / "control.sock"

    @property
    def store_path(self) -> Path:
        """The SQLite store of the bindings (``home_agent.persistence``)."""
        return self.home_agent.state_dir / "bindings.db"

    @property
    def reserved_home_addresses(self) -> frozenset[IPv4Address]:
        """Addresses no mobile node may register as its home address (docs/registration.md): the Home
        Agent's own, the virtual address and every configured member's (a binding for one would have this
        Home Agent announce and tunnel a router's address: ARP poisoning of the home link by anyone holding
        a mobile node's key), and the home network's network and broadcast addresses."""
        ha, red = self.home_agent, self.redundancy
        reserved = {ha.address}
        if red is not None:
            reserved |= {red.virtual_address, *red.peers}
        return frozenset(reserved | network_addresses(ha.home_network))


def network_addresses(network: IPv4Network) -> set[IPv4Address]:
    """A network's own network and broadcast addresses, which no host has (none in a /31 or a /32)."""
    return {network.network_address, network.broadcast_address} if network.prefixlen <= 30 else set()


# -- reading -----------------------------------------------------------------------------------------


def load(path: str | Path) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")  # TOML is UTF-8, whatever the locale
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), f"not UTF-8 (byte {exc.object[exc.start]:#04x} at offset {exc.start}): "
                          "TOML files are UTF-8") from None
    return parse(text, source=path)


def parse(text: str, source: Path | None = None) -> Config:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(source or "config"), f"not valid TOML: {exc}") from None
    _only(doc, "", {"home_agent", "security_association", "dataplane", "redundancy", "log", "metrics"})
    if "home_agent" not in doc:
        raise ConfigError("home_agent", "missing section")
    home_agent = _home_agent(_table(doc, "home_agent"))
    sas = _security_associations(doc.get("security_association", []))
    redundancy = _redundancy(_table(doc, "redundancy"), home_agent) if "redundancy" in doc else None
    dataplane = _dataplane(_table(doc, "dataplane") if "dataplane" in doc else {}, redundancy)
    log = _log(_table(doc, "log")) if "log" in doc else LogConfig()
    metrics = _metrics(_table(doc, "metrics")) if "metrics" in doc else MetricsConfig()
    return Config(home_agent, sas, dataplane, redundancy, source, log, metrics)


def _home_agent(t: dict[str, Any]) -> HomeAgentConfig:
    k = "home_agent"
    _only(t, k, {"address", "port", "home_network", "max_lifetime", "replay_tolerance", "state_dir",
                 "simultaneous_bindings", "persistence"})
    address = _address(t, k, "address", required=True)
    assert address is not None
    if address.is_unspecified or address.is_multicast:
        raise ConfigError(f"{k}.address", "must be a unicast address of this host")
    d = HomeAgentConfig(address=address)
    return HomeAgentConfig(
        address=address,
        port=_int(t, k, "port", d.port, 1, 65535),
        home_network=_network(t, k, "home_network", d.home_network) or d.home_network,
        max_lifetime=_int(t, k, "max_lifetime", d.max_lifetime, 1, MAX_LIFETIME_LIMIT),
        replay_tolerance=_int(t, k, "replay_tolerance", d.replay_tolerance, 0, 3600),
        state_dir=_state_dir(t, k, d.state_dir),
        # at most what a node's state holds, lone or in a group (core/node_state.py MAX_RECORDS): a larger
        # bound would accept bindings the table then gives up
        simultaneous_bindings=_int(t, k, "simultaneous_bindings", d.simultaneous_bindings, 0, MAX_RECORDS),
        persistence=_bool(t, k, "persistence", d.persistence),
    )


def _state_dir(t: dict[str, Any], where: str, default: Path) -> Path:
    """``~`` (or ``~user``) at the start is a home directory, so that a user who runs the daemon without
    root can write ``~/.local/state/homeagent``. It is the home of whoever reads the file: the daemon and
    the ``homeagent status`` beside it must run as the same user to find the same socket."""
    text = _str(t, where, "state_dir", str(default))
    if "\0" in text:
        raise ConfigError(f"{where}.state_dir", "a path cannot hold a NUL character")
    path = Path(text)
    try:
        return path.expanduser()
    except RuntimeError:  # no home directory to be found for that user
        raise ConfigError(f"{where}.state_dir", f"cannot expand {str(path)!r}: no such home directory") from None


def _security_associations(items: Any) -> tuple[MobileSecurityAssociation, ...]:
    out = []
    seen: set[tuple[IPv4Network, int]] = set()
    for k, t in _tables(items, "security_association"):
        _only(t, k, {"home_addresses", "spi", "algorithm", "key"})
        network = _network(t, k, "home_addresses", None)
        if network is None:
            raise ConfigError(f"{k}.home_addresses", "missing")
        sa = _association(t, k)
        if (network, sa.spi) in seen:
            raise ConfigError(f"{k}.spi", f"duplicate SPI {sa.spi} for {network}")
        seen.add((network, sa.spi))
        out.append(MobileSecurityAssociation(network, sa))
    return tuple(out)


def _redundancy(t: dict[str, Any], home_agent: HomeAgentConfig) -> RedundancyConfig:
    k = "redundancy"
    _only(t, k, {"virtual_address", "mode", "priority", "peers", "multicast_group", "replication",
                 "sync_timeout", "advertisement_interval", "preempt", "preempt_delay", "startup_wait",
                 "max_datagram",
                 "election", "address_method", "interface", "security_association"})
    vip = _address(t, k, "virtual_address", required=True)
    assert vip is not None
    if vip == home_agent.address:
        raise ConfigError(f"{k}.virtual_address", "must differ from home_agent.address (the member's own)")
    d = RedundancyConfig(virtual_address=vip, security_associations=())
    mode = _enum(t, k, "mode", d.mode)
    replication = _enum(t, k, "replication", d.replication)
    raw_peers = t.get("peers", [])
    if not isinstance(raw_peers, list):
        raise ConfigError(f"{k}.peers", "must be a list of addresses")
    peers = []
    for i, v in enumerate(raw_peers):
        peer = _address({"p": v}, f"{k}.peers[{i}]", "p")
        assert peer is not None
        if peer in (home_agent.address, vip):
            raise ConfigError(f"{k}.peers[{i}]", "lists this member's own or the virtual address")
        peers.append(peer)
    multicast = _address(t, k, "multicast_group")
    if multicast is not None and not multicast.is_multicast:
        raise ConfigError(f"{k}.multicast_group", f"{multicast} is not a multicast address")
    sas = _peer_security_associations(t.get("security_association", []))
    config = RedundancyConfig(
        virtual_address=vip,
        security_associations=sas,
        mode=mode,
        priority=_int(t, k, "priority", d.priority, 1, 254),
        peers=tuple(peers),
        multicast_group=multicast,
        replication=replication,
        sync_timeout=_seconds(t, k, "sync_timeout", d.sync_timeout, 0.01, 10),
        advertisement_interval=_seconds(t, k, "advertisement_interval", d.advertisement_interval,
                                        *ADVERTISEMENT_INTERVALS),
        preempt=_bool(t, k, "preempt", d.preempt),
        preempt_delay=_seconds(t, k, "preempt_delay", d.preempt_delay, 0, 3600),
        startup_wait=_seconds(t, k, "startup_wait", d.startup_wait, 0, 60),
        max_datagram=_int(t, k, "max_datagram", d.max_datagram, 576, 65000),
        election=_enum(t, k, "election", d.election),
        address_method=_enum(t, k, "address_method", d.address_method),
        interface=_str(t, k, "interface", "") if "interface" in t else None,
    )
    if config.address_method is AddressMethod.INTERFACE and config.election is ElectionKind.EXTERNAL:
        raise ConfigError(f"{k}.address_method", 'with election = "external" the VRRP daemon puts the address on '
                          'the link; use "bind"')
    if config.address_method is AddressMethod.INTERFACE and not config.interface:
        raise ConfigError(f"{k}.interface", 'needed with address_method = "interface" (the link to announce on)')
    for i, peer in enumerate(peers):
        if not any(peer in psa.peers for psa in sas):
            raise ConfigError(f"{k}.peers[{i}]", f"no redundancy.security_association covers {peer}")
    if multicast is not None and not sas:
        raise ConfigError(f"{k}.security_association", "needed to authenticate members met by multicast")
    return config


def _peer_security_associations(items: Any) -> tuple[PeerSecurityAssociation, ...]:
    out = []
    for where, t in _tables(items, "redundancy.security_association"):
        _only(t, where, {"peer", "spi", "algorithm", "key"})
        network = _network(t, where, "peer", None)
        if network is None:
            raise ConfigError(f"{where}.peer", "missing")
        out.append(PeerSecurityAssociation(network, _association(t, where)))
    return tuple(out)


def _association(t: dict[str, Any], k: str) -> SecurityAssociation:
    spi = _int(t, k, "spi", None, 256, 0xFFFFFFFF)  # SPIs 0-255 are reserved (RFC 5944 section 1.6)
    algorithm_name = _str(t, k, "algorithm", Algorithm.HMAC_MD5.value)
    try:
        algorithm = Algorithm(algorithm_name)
    except ValueError:
        choices = ", ".join(a.value for a in Algorithm)
        raise ConfigError(f"{k}.algorithm", f"{algorithm_name!r} is not one of {choices}") from None
    key = _hex(t, k, "key")
    if len(key) < MIN_KEY_SIZE:  # RFC 5944 section 5.1: 128-bit keys
        raise ConfigError(f"{k}.key", "must be at least 16 bytes (32 hex digits)")
    return SecurityAssociation(spi, algorithm, key)


def _log(t: dict[str, Any]) -> LogConfig:
    _only(t, "log", {"level", "format"})
    level = _choice(t, "log", "level", "info", LOG_LEVELS) if "level" in t else None
    return LogConfig(level, _enum(t, "log", "format", LogFormat.LOGFMT))


def _metrics(t: dict[str, Any]) -> MetricsConfig:
    """``listen = "127.0.0.1:9434"`` (or ``"[::1]:9434"``): an address of this host, never a name (no lookup
    at start, and no doubt about which address is exposed)."""
    _only(t, "metrics", {"listen"})
    if "listen" not in t:
        return MetricsConfig()
    text = _str(t, "metrics", "listen", "")
    host, colon, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        host = ""  # an IPv6 address without brackets: its port cannot be told apart
    number = int(port) if port.isascii() and port.isdigit() else 0
    try:
        address = ip_address(host)
    except ValueError:
        number = 0
    if not colon or not 1 <= number <= 65535:
        raise ConfigError("metrics.listen", f"{text!r} is not ADDRESS:PORT such as 127.0.0.1:9434 or [::1]:9434")
    if address.is_multicast:
        raise ConfigError("metrics.listen", f"{address} is a multicast address")
    return MetricsConfig((address, number))


def _dataplane(t: dict[str, Any], redundancy: RedundancyConfig | None = None) -> DataplaneConfig:
    k, d = "dataplane", DataplaneConfig()
    _only(t, k, {"backend", "interface", "tun", "ttl", "extra_interfaces", "virtual_mac", "announce_rate"})
    backend = _enum(t, k, "backend", d.backend)
    interface = _str(t, k, "interface", "") if "interface" in t else None
    if backend in (Backend.USERSPACE, Backend.EBPF) and interface is None:
        raise ConfigError(f"{k}.interface", f'needed with backend = "{backend}" (the home link, for proxy ARP)')
    tun = _str(t, k, "tun", d.tun)
    if len(tun) > 15:
        raise ConfigError(f"{k}.tun", "an interface name has at most 15 characters")
    extra = t.get("extra_interfaces", [])
    if not isinstance(extra, list) or not all(isinstance(v, str) and 0 < len(v) <= 15 for v in extra):
        raise ConfigError(f"{k}.extra_interfaces", "must be a list of interface names (at most 15 characters)")
    if extra and backend is not Backend.EBPF:
        raise ConfigError(f"{k}.extra_interfaces", 'only with backend = "ebpf" (the links its program runs on)')
    if interface in extra:
        raise ConfigError(f"{k}.extra_interfaces", f"{interface} is the home link already")
    virtual_mac = _virtual_mac(t, k, backend, redundancy)
    announces = backend is not Backend.NONE or (redundancy is not None and
                                                redundancy.address_method is AddressMethod.INTERFACE)
    if "announce_rate" in t and not announces:
        raise ConfigError(f"{k}.announce_rate", 'only with backend = "userspace" or "ebpf", or with '
                          'redundancy.address_method = "interface" (the home link\'s gratuitous ARP)')
    announce_rate = _number(t, k, "announce_rate", d.announce_rate, *ANNOUNCE_RATES, "a number of frames a second")
    return DataplaneConfig(backend, interface, tun, _int(t, k, "ttl", d.ttl, 1, 255), tuple(extra), virtual_mac,
                           announce_rate)


VIRTUAL_MAC_PREFIX = bytes((0x02, 0x48, 0x41))  # locally administered, unicast; "HA"
_MAC = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")


def virtual_mac_of(virtual_address: IPv4Address) -> bytes:
    """The group's MAC for ``virtual_mac = "auto"``: the same on every member (as VRRP's 00:00:5e:00:01:
    VRID), distinct for groups whose virtual addresses differ in their last three bytes (on one link,
    every group's)."""
    return VIRTUAL_MAC_PREFIX + virtual_address.packed[1:]


def _virtual_mac(t: dict[str, Any], k: str, backend: Backend, redundancy: RedundancyConfig | None) -> bytes | None:
    """``virtual_mac``: absent (the interface's own MAC is given, as before), "auto" or a MAC. Only with
    ebpf, whose program answers ARP (the kernel's proxy entries answer with the interface's MAC), and
    only in a group: its point is that a takeover moves the home addresses with one frame."""
    if "virtual_mac" not in t:
        return None
    text = _str(t, k, "virtual_mac", "")
    where = f"{k}.virtual_mac"
    if backend is not Backend.EBPF:
        raise ConfigError(where, 'only with backend = "ebpf" (its program answers ARP for the home addresses)')
    if redundancy is None:
        raise ConfigError(where, "only with [redundancy]: a lone Home Agent has no MAC to share")
    if text == "auto":
        return virtual_mac_of(redundancy.virtual_address)
    if not _MAC.fullmatch(text):
        raise ConfigError(where, 'must be "auto" or a MAC address such as "02:48:41:01:00:fe"')
    mac = bytes.fromhex(text.replace(":", ""))
    if mac[0] & 1 or mac == bytes(6):
        raise ConfigError(where, "must be a unicast MAC address (its first octet even), not all zero")
    return mac


# -- typed getters -----------------------------------------------------------------------------------


def _only(t: dict[str, Any], where: str, allowed: set[str]) -> None:
    for key in t:
        if key not in allowed:
            raise ConfigError(f"{where}.{key}" if where else key, "unknown key")


def _tables(items: Any, key: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """The tables of an array of tables ``[[key]]``, each with the name its errors carry."""
    if not isinstance(items, list):
        raise ConfigError(key, f"must be an array of tables ([[{key}]])")
    for i, t in enumerate(items):
        if not isinstance(t, dict):
            raise ConfigError(f"{key}[{i}]", "must be a table")
        yield f"{key}[{i}]", t


def _table(doc: dict[str, Any], key: str) -> dict[str, Any]:
    t = doc[key]
    if not isinstance(t, dict):
        raise ConfigError(key, "must be a table")
    return t


def _int(t: dict[str, Any], where: str, key: str, default: int | None, lo: int, hi: int) -> int:
    if key not in t:
        if default is None:
            raise ConfigError(f"{where}.{key}", "missing")
        return default
    v = t[key]
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ConfigError(f"{where}.{key}", f"must be an integer from {lo} to {hi}, not {v!r}")
    return v


def _seconds(t: dict[str, Any], where: str, key: str, default: float, lo: float, hi: float) -> float:
    return _number(t, where, key, default, lo, hi, "a number of seconds")


def _number(t: dict[str, Any], where: str, key: str, default: float, lo: float, hi: float,
            what: str = "a number") -> float:
    v = t.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
        raise ConfigError(f"{where}.{key}", f"must be {what} from {lo} to {hi}, not {v!r}")
    return float(v)


def _bool(t: dict[str, Any], where: str, key: str, default: bool) -> bool:
    v = t.get(key, default)
    if not isinstance(v, bool):
        raise ConfigError(f"{where}.{key}", f"must be true or false, not {v!r}")
    return v


def _choice(t: dict[str, Any], where: str, key: str, default: str, choices: tuple[str, ...]) -> str:
    v = _str(t, where, key, default)
    if v not in choices:
        raise ConfigError(f"{where}.{key}", f"{v!r} is not one of {', '.join(choices)}")
    return v


def _enum(t: dict[str, Any], where: str, key: str, default: E) -> E:
    """One of an enumeration's values, as the file spells it."""
    kind = type(default)
    v = _str(t, where, key, default.value)
    try:
        return kind(v)
    except ValueError:
        raise ConfigError(f"{where}.{key}", f"{v!r} is not one of {', '.join(m.value for m in kind)}") from None


def _str(t: dict[str, Any], where: str, key: str, default: str) -> str:
    v = t.get(key, default)
    if not isinstance(v, str) or not v:
        raise ConfigError(f"{where}.{key}", f"must be a non-empty string, not {v!r}")
    return v


def _address(t: dict[str, Any], where: str, key: str, required: bool = False) -> IPv4Address | None:
    if key not in t:
        if required:
            raise ConfigError(f"{where}.{key}", "missing")
        return None
    try:
        if not isinstance(t[key], str):
            raise ValueError
        return IPv4Address(t[key])
    except ValueError:
        raise ConfigError(f"{where}.{key}", f"{t[key]!r} is not an IPv4 address") from None


def _network(t: dict[str, Any], where: str, key: str, default: IPv4Network | None) -> IPv4Network | None:
    if key not in t:
        return default
    try:
        if not isinstance(t[key], str):
            raise ValueError
        return IPv4Network(t[key])
    except ValueError:
        raise ConfigError(f"{where}.{key}", f"{t[key]!r} is not an IPv4 prefix such as 10.1.0.0/16") from None


def _hex(t: dict[str, Any], where: str, key: str) -> bytes:
    if key not in t:
        raise ConfigError(f"{where}.{key}", "missing")
    v = t[key]
    try:
        if not isinstance(v, str):
            raise ValueError
        return bytes.fromhex(v)
    except ValueError:
        raise ConfigError(f"{where}.{key}", "must be a string of hex digits") from None
