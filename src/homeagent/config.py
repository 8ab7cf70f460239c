"""TOML configuration to typed, validated values.

Every problem names its key (``home_agent.max_lifetime: ...``) and nothing starts half-configured: the
daemon loads the whole file, or refuses to start.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from homeagent.wire.auth import Algorithm, SecurityAssociation

DEFAULT_PORT = 434
MIN_KEY_SIZE = 16
MAX_LIFETIME_LIMIT = 0xFFFE  # 0xFFFF means "infinity" on the wire; a Home Agent never grants it


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


@dataclass(frozen=True)
class DataplaneConfig:
    backend: str = "none"


@dataclass(frozen=True)
class Config:
    home_agent: HomeAgentConfig
    security_associations: tuple[MobileSecurityAssociation, ...]
    dataplane: DataplaneConfig = DataplaneConfig()
    source: Path | None = None

    @property
    def control_socket(self) -> Path:
        return self.home_agent.state_dir / "control.sock"


# -- reading -----------------------------------------------------------------------------------------


def load(path: str | Path) -> Config:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read: {exc.strerror}") from None
    return parse(text, source=path)


def parse(text: str, source: Path | None = None) -> Config:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(source or "config"), f"not valid TOML: {exc}") from None
    _only(doc, "", {"home_agent", "security_association", "dataplane", "redundancy"})
    if "redundancy" in doc:
        raise ConfigError("redundancy", "Home Agent redundancy is not available in this version yet")
    if "home_agent" not in doc:
        raise ConfigError("home_agent", "missing section")
    home_agent = _home_agent(_table(doc, "home_agent"))
    sas = _security_associations(doc.get("security_association", []))
    dataplane = _dataplane(_table(doc, "dataplane") if "dataplane" in doc else {})
    return Config(home_agent, sas, dataplane, source)


def _home_agent(t: dict[str, Any]) -> HomeAgentConfig:
    k = "home_agent"
    _only(t, k, {"address", "port", "home_network", "max_lifetime", "replay_tolerance", "state_dir",
                 "simultaneous_bindings"})
    address = _address(t, k, "address", required=True)
    assert address is not None
    if address.is_unspecified or address.is_multicast:
        raise ConfigError(f"{k}.address", "must be a unicast address of this host")
    d = HomeAgentConfig(address=address)
    return HomeAgentConfig(
        address=address,
        port=_int(t, k, "port", d.port, 1, 65535),
        home_network=_network(t, k, "home_network", d.home_network),
        max_lifetime=_int(t, k, "max_lifetime", d.max_lifetime, 1, MAX_LIFETIME_LIMIT),
        replay_tolerance=_int(t, k, "replay_tolerance", d.replay_tolerance, 0, 3600),
        state_dir=Path(_str(t, k, "state_dir", str(d.state_dir))),
        simultaneous_bindings=_int(t, k, "simultaneous_bindings", d.simultaneous_bindings, 0, 64),
    )


def _security_associations(items: Any) -> tuple[MobileSecurityAssociation, ...]:
    if not isinstance(items, list):
        raise ConfigError("security_association", "must be an array of tables ([[security_association]])")
    out = []
    seen: set[tuple[IPv4Network, int]] = set()
    for i, t in enumerate(items):
        k = f"security_association[{i}]"
        if not isinstance(t, dict):
            raise ConfigError(k, "must be a table")
        _only(t, k, {"home_addresses", "spi", "algorithm", "key"})
        network = _network(t, k, "home_addresses", None)
        if network is None:
            raise ConfigError(f"{k}.home_addresses", "missing")
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
        if (network, spi) in seen:
            raise ConfigError(f"{k}.spi", f"duplicate SPI {spi} for {network}")
        seen.add((network, spi))
        out.append(MobileSecurityAssociation(network, SecurityAssociation(spi, algorithm, key)))
    return tuple(out)


def _dataplane(t: dict[str, Any]) -> DataplaneConfig:
    _only(t, "dataplane", {"backend"})
    backend = _str(t, "dataplane", "backend", "none")
    if backend != "none":
        raise ConfigError("dataplane.backend", f"{backend!r} is not available in this version (use 'none')")
    return DataplaneConfig(backend)


# -- typed getters -----------------------------------------------------------------------------------


def _only(t: dict[str, Any], where: str, allowed: set[str]) -> None:
    for key in t:
        if key not in allowed:
            raise ConfigError(f"{where}.{key}" if where else key, "unknown key")


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
        return IPv4Address(t[key])
    except ValueError:
        raise ConfigError(f"{where}.{key}", f"{t[key]!r} is not an IPv4 address") from None


def _network(t: dict[str, Any], where: str, key: str, default: IPv4Network | None) -> IPv4Network | None:
    if key not in t:
        return default
    try:
        return IPv4Network(t[key])
    except (ValueError, TypeError):
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
