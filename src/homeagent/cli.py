"""``homeagent``: run the daemon, ask it for status and bindings, and act as a mobile node."""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import resources
from ipaddress import AddressValueError, IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from homeagent import __version__
from homeagent.config import MIN_KEY_SIZE, Config, ConfigError, load, network_addresses
from homeagent.core.security import SecurityAssociations
from homeagent.runtime import control
from homeagent.wire.auth import Algorithm, SecurityAssociation
from homeagent.wire.registration import Flags

EXAMPLE_CONFIG = "homeagent.toml"


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"homeagent: config error: {exc}", file=sys.stderr)
        return 2
    except control.ControlError as exc:
        print(f"homeagent: {exc}", file=sys.stderr)
        return 1
    except TimeoutError as exc:
        print(f"homeagent: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a socket the system refuses (a broadcast Home Agent address without SO_BROADCAST)
        if isinstance(exc, BrokenPipeError):  # `homeagent status | head`
            sys.stderr.close()
            return 0
        where = f": {exc.filename}" if exc.filename else ""
        print(f"homeagent: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="homeagent", description=__doc__.replace("``", ""))
    p.add_argument("--version", action="version", version=f"homeagent {__version__}")
    sub = p.add_subparsers(required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the Home Agent in the foreground (SIGTERM stops it)",
                         description=RUN, formatter_class=argparse.RawDescriptionHelpFormatter)
    _config_arg(run)
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                     help="default: [log] level in the config file, else info")
    run.set_defaults(func=_run)

    status = sub.add_parser("status", help="role, bindings, peers and counters of the running daemon",
                            description="Ask the running daemon, through its control socket, for its role, "
                            "binding count, peers, last role changes, counters and data plane. Exit status 1 "
                            "when no daemon answers (a health check for keepalived's track_script).")
    _config_arg(status)
    status.add_argument("--json", action="store_true", help="the whole answer as JSON (docs/operations.md)")
    status.add_argument("--reset-counters", action="store_true",
                        help="set the counters to zero after reading them (bindings, peers and role stay); "
                        "the daemon logs it")
    status.set_defaults(func=_status)

    bindings = sub.add_parser("bindings", help="the mobility binding table of the running daemon",
                              description="The mobility binding table of the running daemon, in order of "
                              "home address, written a page at a time while the daemon goes on serving.")
    _config_arg(bindings)
    bindings.add_argument("--home-address", type=IPv4Address, help="only this mobile node's bindings")
    bindings.add_argument("--json", action="store_true", help="a JSON list, one object per binding")
    bindings.set_defaults(func=_bindings)

    remove = sub.add_parser("remove", help="remove bindings by hand (one node's, a prefix's or all); replicated",
                            description=REMOVE, formatter_class=argparse.RawDescriptionHelpFormatter)
    _config_arg(remove)
    which = remove.add_mutually_exclusive_group(required=True)
    which.add_argument("--home-address", type=IPv4Address, help="this mobile node's bindings")
    which.add_argument("--prefix", type=_network, help="the bindings of every home address in this prefix")
    which.add_argument("--all", action="store_true", help="every binding (needs --yes)")
    remove.add_argument("--care-of", type=IPv4Address,
                        help="with --home-address: one care-of address (default: all of them)")
    remove.add_argument("--yes", action="store_true", help="confirm --all (or a prefix of length 0)")
    remove.set_defaults(func=_remove)

    role = sub.add_parser("role", help="set the role when an external election (keepalived) decides it",
                          description="Tell a member of a group with election = \"external\" to be active "
                          "or to stand by (from keepalived's notify scripts). A member still downloading the "
                          "table takes the role once it has it.")
    role.add_argument("role", choices=["active", "standby"], help="the role to take")
    _config_arg(role)
    role.set_defaults(func=_role)

    cleanup = sub.add_parser("cleanup", help="take off the link what a killed Home Agent left there (the "
                             "virtual address, proxy ARP entries, the ebpf program); for ExecStopPost=",
                             description="Remove from the links what a Home Agent killed while it served left "
                             "there: the virtual address (address_method = \"interface\"), the data plane's "
                             "proxy ARP entries for home addresses, and the ebpf backend's program and pins. "
                             "Refuses while a daemon answers on the control socket. Prints one line per thing "
                             "removed.")
    _config_arg(cleanup)
    cleanup.set_defaults(func=_cleanup)

    demo = sub.add_parser("demo", help="show a Home Agent (or, with --group, a failover) on loopback",
                          description="Without root, on loopback. Alone: start a Home Agent from the "
                          "example configuration, register one mobile node and show the binding and the "
                          "status. With --group: two members and a swarm of mobile nodes; the table fills "
                          "on both, the active member is killed (kill -9) and the standby takes over with "
                          "every binding. Everything it started is stopped and removed at the end.")
    demo.add_argument("--config", type=Path, help="default: the shipped example (not with --group)")
    demo.add_argument("--group", action="store_true", help="two members, a swarm, and a failover")
    demo.add_argument("--mobile-nodes", type=_integer(1, 60000), default=1000,
                      help="with --group: the swarm's size (default 1000)")
    demo.add_argument("--rate", type=_positive("registrations a second"), default=500.0,
                      help="with --group: registrations a second while the table fills (default 500)")
    demo.set_defaults(func=_demo)

    mn = sub.add_parser("mn", help="act as a mobile node",
                        description="A mobile node client: register, deregister, stay registered (up), or "
                        "register many at once (load).").add_subparsers(required=True, metavar="ACTION")
    for name, helptext in (("register", "register a care-of address"),
                           ("deregister", "deregister a care-of address (or all of them)")):
        m = mn.add_parser(name, help=helptext, description=f"{helptext.capitalize()} (one Registration "
                          f"Request, retransmitted until a reply).\n\n{MOBILE_NODE_TARGET}",
                          formatter_class=argparse.RawDescriptionHelpFormatter)
        _mobile_node_args(m)
        if name == "register":
            m.add_argument("--care-of", required=True, type=IPv4Address, help="the care-of address")
            m.add_argument("--lifetime", type=_integer(0, 0xFFFF), default=600,
                           help="seconds, 0 to 65535 (default 600)")
            m.add_argument("--simultaneous", action="store_true", help="S: keep other care-of addresses")
            m.add_argument("--reverse-tunnel", action="store_true", help="T: ask for a reverse tunnel")
            m.add_argument("--broadcast", action="store_true", help="B: forward broadcasts")
            m.add_argument("--colocated", action="store_true", help="D: the mobile node decapsulates")
        else:
            m.add_argument("--care-of", type=IPv4Address, help="one care-of address (default: all of them)")
        m.add_argument("--timeout", type=_seconds, default=1.0, help="seconds to the first retransmission "
                       "(doubled for each next one; default 1)")
        m.add_argument("--retries", type=_integer(0), default=3, help="retransmissions (default 3)")
        m.add_argument("--json", action="store_true", help="the outcome as JSON")
        m.set_defaults(func=_mn_register if name == "register" else _mn_deregister)

    up = mn.add_parser("up", help="stay registered and decapsulate (co-located care-of address) until "
                       "Ctrl-C or SIGTERM, which de-register",
                       description=MN_UP + "\n\n" + MOBILE_NODE_TARGET,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _mobile_node_args(up)
    up.add_argument("--care-of", required=True, type=IPv4Address, help="the co-located care-of address")
    up.add_argument("--lifetime", type=_integer(1, 0xFFFF), default=600,
                    help="seconds asked for, 1 to 65535 (default 600); renewed before it runs out")
    up.add_argument("--reverse", action="store_true", help="T: reverse tunnelling (RFC 3024)")
    up.add_argument("--simultaneous", action="store_true", help="S: keep other care-of addresses bound")
    up.add_argument("--tun", default="mip0", help="the device holding the home address (default mip0)")
    up.add_argument("--timeout", type=_seconds, default=1.0, help="seconds to the first retransmission "
                    "(doubled for each next one; default 1)")
    up.add_argument("--retries", type=_integer(0), default=3, help="retransmissions (default 3)")
    up.set_defaults(func=_mn_up)

    load_p = mn.add_parser("load", help="register many mobile nodes as fast as the Home Agent answers",
                           description="Register many mobile nodes (consecutive home addresses) through one "
                           "socket, --window requests in flight, and print one JSON line of results.\n\n"
                           + MOBILE_NODE_TARGET, formatter_class=argparse.RawDescriptionHelpFormatter)
    _mobile_node_args(load_p, single=False)
    load_p.add_argument("--mobile-nodes", type=_integer(1), default=1000, help="how many home addresses")
    load_p.add_argument("--first-home-address", type=IPv4Address,
                        help="default: the start of the home network of --config")
    load_p.add_argument("--home-network", type=_network,
                        help="its network and broadcast addresses are skipped (default: "
                        "home_agent.home_network of --config, whose every reserved address is skipped)")
    load_p.add_argument("--care-of", type=IPv4Address, default=IPv4Address("192.0.2.1"),
                        help="every node's care-of address (default 192.0.2.1)")
    load_p.add_argument("--count", type=_integer(1), help="requests to send (default: --mobile-nodes)")
    load_p.add_argument("--duration", type=_seconds, help="seconds to send for")
    load_p.add_argument("--window", type=_integer(1), default=64, help="requests in flight (default 64)")
    load_p.add_argument("--rate", type=_positive("requests a second"),
                        help="requests a second (a steady load); default: as fast as it goes")
    load_p.add_argument("--lifetime", type=_integer(0, 0xFFFF), default=600,
                        help="seconds, 0 to 65535 (default 600)")
    load_p.set_defaults(func=_mn_load)
    return p


RUN = """Run the Home Agent in the foreground until SIGTERM, SIGINT or SIGQUIT, which stop it cleanly
(exit status 0). SIGHUP reloads the configuration file, SIGUSR1 logs one line of status. Under systemd
(Type=notify) it reports READY=1 once it serves (a group member: once its table download ended), sends
WATCHDOG=1 when WatchdogSec= is set, and STOPPING=1 when it stops. Exit status 1 when it cannot start,
2 for a configuration error."""


REMOVE = """Remove bindings by hand, through the running daemon: one mobile node's (--home-address, with
--care-of only that care-of address), those of every home address in a prefix (--prefix), or every one
(--all, which asks for --yes). Each removal is replicated to the group like a de-registration, and the
daemon works through a large table 128 mobile nodes at a time, serving registrations and the group
between two steps. Prints how many bindings of how many mobile nodes were removed."""


MOBILE_NODE_TARGET = """Where to register and with which key: --config gives the Home Agent's address
(the group's virtual address with [redundancy]) and port and the security association (the first configured for the longest prefix covering the home
address, as the Home Agent picks it). Each flag given overrides its part and is never ignored: --spi
picks that SPI among those associations (with --key, it may be one the file lacks), --key replaces the
key, --algorithm the algorithm. Without --config, give --home-agent, --spi and --key (--port 434 and
--algorithm hmac-md5 by default)."""


MN_UP = """Registers the home address at the care-of address, which the node holds itself (co-located, D
flag), and keeps it registered: each binding is renewed before its lifetime runs out (at the later of half
the lifetime and the lifetime less the time every retransmission takes), and a failed attempt is tried
again after 1 s, doubling up to 30 s. The tunnel's end runs in this process (homeagent.dataplane.decap): a
TUN device holds the home address, so applications see the traffic to it; with --reverse what they send
from it goes back through the Home Agent. Standard input takes commands, one a line: "care-of A" registers
the new care-of address A (the node moved; put A on an interface first), "renew" renews now, "down" stops.
Ctrl-C or SIGTERM de-registers the care-of address and removes the device. The Home Agent address
defaults to the group's virtual address when --config has [redundancy]. Needs CAP_NET_ADMIN and
CAP_NET_RAW. Exit status: 0 after a clean stop, 3 when the first registration is refused, 1 when the
device cannot be made."""


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, type=Path, metavar="FILE",
                   help="the daemon's configuration file (TOML); its state_dir holds the control socket")


def _mobile_node_args(p: argparse.ArgumentParser, single: bool = True) -> None:
    p.add_argument("--config", type=Path, help="take the Home Agent and the association from this file")
    if single:
        p.add_argument("--home-address", required=True, type=IPv4Address, help="the mobile node's home address")
    p.add_argument("--home-agent", type=IPv4Address, help="default: redundancy.virtual_address of --config, else home_agent.address")
    p.add_argument("--port", type=_integer(1, 65535), help="default: home_agent.port of --config, else 434")
    p.add_argument("--spi", type=_integer(256, 0xFFFFFFFF),  # 0-255 are reserved (RFC 5944 section 1.6)
                   help="256 to 4294967295; with --config, picks that association")
    p.add_argument("--key", type=_key,
                   help="hex, at least 16 bytes; with --config, replaces the association's")
    p.add_argument("--algorithm", choices=[a.value for a in Algorithm],
                   help="default: the association's, else hmac-md5")


# argparse types: a bad value ends in one line naming the option and exit status 2, before anything runs
# (a lifetime of 99999 used to reach struct.pack and end in a traceback).


def _integer(lo: int, hi: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value: int | None = int(text)
        except ValueError:
            value = None
        if value is None or value < lo or (hi is not None and value > hi):
            within = f"from {lo} to {hi}" if hi is not None else f"of at least {lo}"
            raise argparse.ArgumentTypeError(f"must be an integer {within}, not {text!r}")
        return value

    return parse


def _positive(what: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not 0 < value < math.inf:
            raise argparse.ArgumentTypeError(f"must be a number of {what} above 0, not {text!r}")
        return value

    return parse


_seconds = _positive("seconds")


def _key(text: str) -> bytes:
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be hex digits") from None  # a key is not echoed
    if len(key) < MIN_KEY_SIZE:  # RFC 5944 section 5.1: 128-bit keys
        raise argparse.ArgumentTypeError(f"must be at least {MIN_KEY_SIZE} bytes, not {len(key)}")
    return key


def _network(text: str) -> IPv4Network:
    try:
        return IPv4Network(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IPv4 prefix such as 10.1.0.0/16") from None


# -- daemon ------------------------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    from homeagent.runtime import logs
    from homeagent.runtime.daemon import StartupError, run

    config = load(args.config)
    level = args.log_level or config.log.level or "info"  # --log-level, if given, wins over [log] level
    logs.configure(level, config.log.format)  # one line per record, logfmt or JSON (runtime/logs.py)
    try:
        run(config)
    except StartupError as exc:
        print(f"homeagent: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


def _status(args: argparse.Namespace) -> int:
    kwargs: dict[str, Any] = {"reset_counters": True} if args.reset_counters else {}
    st = control.request(load(args.config).control_socket, "status", **kwargs)
    if args.json:
        print(json.dumps(st, indent=2))
        return 0
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(st["role_since"]))
    print(f"role       {st['role']} since {since}")
    print(f"address    {st['address']}:{st['port']}")
    print(f"uptime     {st['uptime']:.0f} s")
    print(f"bindings   {st['bindings']}")
    if "virtual_address" in st:
        print(f"group      {st['virtual_address']} ({st['mode']}, {st['replication']} replication)")
    print(f"peers      {', '.join(p['address'] + ' ' + p['state'] for p in st['peers']) or 'none'}")
    for t in st.get("transitions", [])[-3:]:
        at = time.strftime("%H:%M:%S", time.localtime(t["at"]))
        print(f"  {at} {t['from']} -> {t['to']}: {t['reason']}")
    print("counters")
    for name, value in st["counters"].items():
        print(f"  {name:<40} {value}")
    if "dataplane" in st:
        _print_dataplane(st["dataplane"])
    if st.get("counters_reset"):
        print("counters reset to zero (the figures above are those up to the reset)")
    return 0


def _print_dataplane(dp: dict[str, Any]) -> None:
    """The data plane's part of ``homeagent status`` (docs/dataplane.md, "Running the data plane"): state,
    totals, drops by reason, every tunnel's counters, the home link's neighbours."""
    backend = dp.get("dataplane.backend", "?")
    serving = "serving" if dp.get("dataplane.serving") else "not serving"
    if backend not in ("userspace", "ebpf"):
        print(f"dataplane  {backend}, {serving}, "
              f"{dp.get('dataplane.home_addresses', 0)} home address(es) away")
        return
    running = (f"forwarder pid {dp.get('dataplane.pid')}" if dp.get("dataplane.running")
               else "forwarder not running")
    print(f"dataplane  {backend}, {serving}, {running} ({dp.get('dataplane.restarts', 0)} restarts), "
          f"tun {dp.get('dataplane.tun')}, {dp.get('dataplane.home_addresses', 0)} home address(es), "
          f"{dp.get('dataplane.routes', 0)} route(s)")
    fast = dp.get("dataplane.fast")
    if fast:  # the ebpf backend's program on the home link: what it did itself, what it passed on
        print(f"  fast path on {dp.get('dataplane.interface')}: {fast.get('encapsulated', 0)} encapsulated, "
              f"{fast.get('decapsulated', 0)} decapsulated; passed to the forwarder: "
              + (", ".join(f"{k[5:]} {v}" for k, v in sorted(fast.items()) if k.startswith("pass_") and v)
                 or "none"))
    if dp.get("dataplane.virtual_mac"):
        print(f"  virtual MAC {dp['dataplane.virtual_mac']}: given for the away home addresses")
    print(f"  to mobile nodes   {dp.get('dataplane.packets', 0)} packets, "
          f"{dp.get('dataplane.bytes', 0)} bytes")
    print(f"  reverse tunnelled {dp.get('dataplane.reverse_packets', 0)} packets, "
          f"{dp.get('dataplane.reverse_bytes', 0)} bytes")
    drops = dp.get("dataplane.drops") or {}
    print("  drops             " + (", ".join(f"{k} {v}" for k, v in sorted(drops.items())) or "none"))
    if dp.get("dataplane.unreachable_learnt") or dp.get("dataplane.unreachable_care_ofs"):
        print(f"  unreachable       {dp.get('dataplane.unreachable_care_ofs', 0)} care-of address(es) "
              f"marked now, {dp.get('dataplane.unreachable_learnt', 0)} ICMP errors taken, "
              f"{dp.get('dataplane.unreachable_reported', 0)} host unreachable sent to senders")
    tunnels = dp.get("dataplane.tunnels")
    if tunnels:
        print(f"  {'home address':<16} {'care-of address':<16} {'source':<16} T {'packets':>9} {'bytes':>11} "
              f"{'rev pkts':>9} {'rev bytes':>11} {'mtu':>5}")
        for t in tunnels:
            print(f"  {t['home_address']:<16} {t['care_of_address']:<16} {t['source']:<16} "
                  f"{'T' if t['reverse'] else '-'} {t['packets']:>9} {t['bytes']:>11} "
                  f"{t['reverse_packets']:>9} {t['reverse_bytes']:>11} {t['mtu']:>5}")
    nb = dp.get("neighbours")
    if nb:
        print(f"neighbours {'serving' if nb.get('neighbours.serving') else 'not serving'}, "
              f"{nb.get('neighbours.away', 0)} away, "
              f"{nb.get('neighbours.proxy_entries', 0)} proxy entries of ours "
              f"({nb.get('neighbours.foreign_entries', 0)} of others), "
              f"{nb.get('neighbours.announcements_queued', 0)} announcements queued")


def _bindings(args: argparse.Namespace) -> int:
    kwargs: dict[str, Any] = {"home_address": str(args.home_address)} if args.home_address else {}
    rows = control.request(load(args.config).control_socket, "bindings", **kwargs)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    counted = any("packets" in r for r in rows)  # the data plane's per-binding counters (ebpf)
    print(f"{'home address':<16} {'care-of address':<16} {'lifetime':>8} {'remaining':>9}  identification"
          f"      {'flags':<8} {'source':<12}"
          + (f" {'packets':>10} {'bytes':>12} {'rev packets':>11} {'rev bytes':>12}" if counted else ""))
    for r in rows:
        print(
            f"{r['home_address']:<16} {r['care_of_address']:<16} {r['lifetime']:>8} "
            f"{r['remaining']:>9.0f}  {r['identification']:#018x}  {r.get('flag_letters') or '-':<8} "
            f"{r.get('source', '?'):<12}"
            + (f" {r.get('packets', 0):>10} {r.get('bytes', 0):>12} {r.get('reverse_packets', 0):>11} "
               f"{r.get('reverse_bytes', 0):>12}" if counted else "")
        )
    print(f"{len(rows)} binding(s)")
    return 0


def _role(args: argparse.Namespace) -> int:
    result = control.request(load(args.config).control_socket, "role", role=args.role)
    print(f"role {result['role']}")
    return 0


def _remove(args: argparse.Namespace) -> int:
    if args.care_of and not args.home_address:
        print("homeagent: --care-of goes with --home-address", file=sys.stderr)
        return 2
    whole = args.all or (args.prefix is not None and args.prefix.prefixlen == 0)
    if whole and not args.yes:
        print("homeagent: this removes every binding of the Home Agent (and of its group): add --yes",
              file=sys.stderr)
        return 2
    config = load(args.config)
    if args.home_address:
        kwargs: dict[str, Any] = {"home_address": str(args.home_address)}
        if args.care_of:
            kwargs["care_of_address"] = str(args.care_of)
        result = control.request(config.control_socket, "remove", **kwargs)
        print(f"removed {result['removed']} binding(s) of {args.home_address}")
        return 0
    scope = "all" if whole else str(args.prefix)
    # The daemon works 128 nodes a turn: a large table takes a while, so wait longer for it.
    which: dict[str, Any] = {"all": True} if whole else {"prefix": scope}
    result = control.request(config.control_socket, "remove", timeout=300.0, **which)
    print(f"removed {result['removed']} binding(s) of {result['mobile_nodes']} mobile node(s)"
          + ("" if whole else f" in {scope}"))
    return 0


def _cleanup(args: argparse.Namespace) -> int:
    """What ``runtime.cleanup`` removed, one line each; exit 0 when there was nothing to do, 1 (one line on
    standard error) when it refused: a daemon answers, no such interface, not allowed."""
    import asyncio

    from homeagent.runtime import cleanup

    config = load(args.config)
    why_not = cleanup.not_applicable(config)
    kept = cleanup.kept_for_restart(config, os.environ)
    if kept is not None:
        print(kept)
    try:
        # the ebpf backend's program and pins, with or without [redundancy]
        removed = cleanup.clean_ebpf(config) if kept is None else []
        if why_not is None:
            removed += asyncio.run(cleanup.clean(config))
    except cleanup.CleanupError as exc:
        print(f"homeagent: cleanup refused: {exc}", file=sys.stderr)
        return 1
    for line in removed:
        print(line)
    if not removed and kept is None:
        if why_not is not None:
            print(f"nothing to clean up: {why_not}")
        else:
            print(f"nothing to clean up on {', '.join(cleanup.interfaces(config))}")
    return 0


# -- mobile node -------------------------------------------------------------------------------------


def _target(
    args: argparse.Namespace, home_address: IPv4Address
) -> tuple[IPv4Address, int, SecurityAssociation]:
    """The Home Agent address, port and association: each from its flag when given, else from --config
    (MOBILE_NODE_TARGET says how); a flag that cannot be honoured is an error, never ignored."""
    config: Config | None = load(args.config) if args.config else None
    if args.home_agent is not None:
        home_agent = args.home_agent
    elif config is not None:  # a group's mobile nodes register with its virtual address
        home_agent = config.redundancy.virtual_address if config.redundancy else config.home_agent.address
    else:
        raise SystemExit("homeagent: give --home-agent or --config")
    port = args.port if args.port is not None else (config.home_agent.port if config else 434)
    return home_agent, port, _association(args, config, home_address)


def _association(
    args: argparse.Namespace, config: Config | None, home_address: IPv4Address
) -> SecurityAssociation:
    """The configured association the Home Agent would use for ``home_address`` (the longest prefix
    covering it; the one of SPI --spi there, else the first), with --key and --algorithm laid over it."""
    configured: dict[int, SecurityAssociation] = {}
    if config is not None:
        table = SecurityAssociations((s.home_addresses, s.association) for s in config.security_associations)
        configured = table.covering(int(home_address)) or {}
    if args.spi is not None:
        base = configured.get(args.spi)
        if base is None and args.key is None:
            if config is None:
                raise SystemExit("homeagent: give --key with --spi (or --config)")
            raise SystemExit(f"homeagent: no security association with SPI {args.spi} in {args.config} "
                             f"covers {home_address} (give --key too, to use one of your own)")
    else:
        base = next(iter(configured.values()), None)
        if base is None:
            if config is None:
                raise SystemExit("homeagent: give --spi and --key, or --config")
            raise SystemExit(f"homeagent: no security association in {args.config} covers {home_address}"
                             + (" (give --spi with --key)" if args.key is not None else ""))
    if base is None:  # --spi and --key: an association of the operator's own
        return SecurityAssociation(args.spi, Algorithm(args.algorithm or Algorithm.HMAC_MD5), args.key)
    key = args.key if args.key is not None else base.key
    return SecurityAssociation(base.spi, Algorithm(args.algorithm or base.algorithm), key)


def _print_outcome(outcome: Any, as_json: bool) -> int:
    d = outcome.as_dict()
    if as_json:
        print(json.dumps(d, indent=2))
    else:
        print(
            f"reply {d['code']} ({d['code_name']}): home address {d['home_address']} care-of "
            f"{d['care_of_address']} lifetime {d['lifetime']} s, identification {d['identification']:#018x}"
            + (" (clock resynchronised)" if d["resynchronised"] else "")
            + ("" if d["authenticated"] else " (reply not authenticated)")
        )
    return 0 if outcome.accepted else 3


def _mn_register(args: argparse.Namespace) -> int:
    from homeagent.mobile_node import MobileNode

    home_agent, port, sa = _target(args, args.home_address)
    flags = (
        (Flags.S if args.simultaneous else 0)
        | (Flags.T if args.reverse_tunnel else 0)
        | (Flags.B if args.broadcast else 0)
        | (Flags.D if args.colocated else 0)
    )
    node = MobileNode(args.home_address, home_agent, sa, port)
    outcome = node.register(args.care_of, args.lifetime, int(flags), args.timeout, args.retries)
    return _print_outcome(outcome, args.json)


def _mn_deregister(args: argparse.Namespace) -> int:
    from homeagent.mobile_node import MobileNode

    home_agent, port, sa = _target(args, args.home_address)
    node = MobileNode(args.home_address, home_agent, sa, port)
    outcome = node.register(args.care_of or args.home_address, 0, 0, args.timeout, args.retries)
    return _print_outcome(outcome, args.json)


def _mn_up(args: argparse.Namespace) -> int:
    from homeagent.mobile_node import MobileNode, RenewalPolicy, Session, up

    home_agent, port, sa = _target(args, args.home_address)
    flags = Flags.D | (Flags.T if args.reverse else 0) | (Flags.S if args.simultaneous else 0)
    node = MobileNode(args.home_address, home_agent, sa, port)

    def report(line: str) -> None:
        print(line, flush=True)

    session = Session(node, args.care_of, args.lifetime, int(flags),
                      RenewalPolicy.for_client(args.timeout, args.retries), report=report,
                      timeout=args.timeout, retries=args.retries)
    return up(session, args.home_address, home_agent, args.reverse, args.tun, sys.stdin.fileno())


def _mn_load(args: argparse.Namespace) -> int:
    from homeagent.mobile_node import LoadGenerator

    config = load(args.config) if args.config else None
    network = args.home_network
    if network is None and config is not None:  # the home network; unset (0.0.0.0/0), the first keyed prefix
        network = config.home_agent.home_network
        if network.prefixlen == 0:
            network = config.security_associations[0].home_addresses if config.security_associations else None
    first = args.first_home_address or (network.network_address if network is not None else None)
    if first is None:
        raise SystemExit("homeagent: give --first-home-address, --home-network or --config")
    skip = set(config.reserved_home_addresses) if config else set()
    if network is not None:
        skip |= network_addresses(network)
    addresses = _home_addresses(first, args.mobile_nodes, skip)
    home_agent, port, sa = _target(args, addresses[0])
    gen = LoadGenerator(home_agent, port, sa, addresses, args.care_of, args.lifetime, args.window)
    if args.count is None and args.duration is None:
        args.count = args.mobile_nodes
    result = gen.run(count=args.count, duration=args.duration, rate=args.rate)
    print(json.dumps({**result.__dict__, "rate": round(result.rate, 1)}))
    return 0 if result.accepted else 1


def _home_addresses(first: IPv4Address, count: int, skip: set[IPv4Address]) -> list[IPv4Address]:
    """``count`` consecutive home addresses from ``first``, passing over those in ``skip``: the addresses
    no mobile node may have (the Home Agent refuses them with 129), so that every one can register."""
    out: list[IPv4Address] = []
    address = first
    try:
        while True:
            if address not in skip:
                out.append(address)
                if len(out) == count:
                    return out
            address += 1
    except AddressValueError:  # ran past 255.255.255.255
        raise SystemExit(f"homeagent: there are not {count} home addresses from {first}") from None


# -- demo --------------------------------------------------------------------------------------------


def _demo(args: argparse.Namespace) -> int:
    """Start a lone Home Agent from the example config, register one mobile node, show the result; with
    ``--group``, ``homeagent.demo`` shows a failover."""
    if args.group:
        if args.config:
            print("homeagent: demo --group makes its own configuration: leave out --config", file=sys.stderr)
            return 2
        from homeagent import demo

        return demo.run(args.mobile_nodes, args.rate)
    with tempfile.TemporaryDirectory(prefix="homeagent-demo-") as tmp:
        if args.config:
            config_path = args.config
        else:
            text = resources.files("homeagent").joinpath("examples", EXAMPLE_CONFIG).read_text()
            config_path = Path(tmp) / EXAMPLE_CONFIG
            # A state directory of its own, made by the daemon inside ours: the shipped one may need root.
            state_dir = re.compile(r'^state_dir = "[^"]*"', re.MULTILINE)
            config_path.write_text(state_dir.sub(lambda _: f'state_dir = "{tmp}/state"', text, count=1))
        config = load(config_path)
        print(f"$ homeagent run --config {config_path}")
        daemon = subprocess.Popen(
            [sys.executable, "-m", "homeagent", "run", "--config", str(config_path), "--log-level", "warning"]
        )
        try:
            _wait_for(config, daemon)
            home_address = next(iter(config.security_associations)).home_addresses.network_address + 5
            steps = [
                ["mn", "register", "--config", str(config_path), "--home-address", str(home_address),
                 "--care-of", "192.0.2.10", "--lifetime", "600"],
                ["bindings", "--config", str(config_path)],
                ["status", "--config", str(config_path)],
            ]
            for step in steps:
                print(f"\n$ homeagent {' '.join(step)}", flush=True)
                if main(step) not in (0,):
                    return 1
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=10)
    return 0


def _wait_for(config: Config, daemon: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise control.ControlError("the Home Agent exited at start-up")
        try:
            control.request(config.control_socket, "status", timeout=1)
            return
        except control.ControlError:
            time.sleep(0.05)
    raise control.ControlError("the Home Agent did not start in time")


if __name__ == "__main__":
    sys.exit(main())
