"""``homeagent``: run the daemon, ask it for status and bindings, and act as a mobile node."""

from __future__ import annotations

import argparse
import json
import logging
import re
import signal
import subprocess
import sys
import tempfile
import time
from importlib import resources
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from homeagent import __version__
from homeagent.config import Config, ConfigError, load
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
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `homeagent status | head`
        sys.stderr.close()
        return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="homeagent", description=__doc__)
    p.add_argument("--version", action="version", version=f"homeagent {__version__}")
    sub = p.add_subparsers(required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the Home Agent in the foreground (SIGTERM stops it)")
    run.add_argument("--config", required=True, type=Path)
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                     help="default: [log] level in the config file, else info")
    run.set_defaults(func=_run)

    status = sub.add_parser("status", help="role, bindings, peers and counters of the running daemon")
    status.add_argument("--config", required=True, type=Path)
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=_status)

    bindings = sub.add_parser("bindings", help="the mobility binding table of the running daemon")
    bindings.add_argument("--config", required=True, type=Path)
    bindings.add_argument("--home-address", type=IPv4Address)
    bindings.add_argument("--json", action="store_true")
    bindings.set_defaults(func=_bindings)

    remove = sub.add_parser("remove", help="remove a binding (or all of a mobile node's) by hand; replicated")
    remove.add_argument("--config", required=True, type=Path)
    remove.add_argument("--home-address", required=True, type=IPv4Address)
    remove.add_argument("--care-of", type=IPv4Address, help="one care-of address (default: all of them)")
    remove.set_defaults(func=_remove)

    role = sub.add_parser("role", help="set the role when an external election (keepalived) decides it")
    role.add_argument("role", choices=["active", "standby"])
    role.add_argument("--config", required=True, type=Path)
    role.set_defaults(func=_role)

    demo = sub.add_parser("demo", help="start a Home Agent on loopback, register a mobile node, show it")
    demo.add_argument("--config", type=Path, help="default: the shipped example")
    demo.set_defaults(func=_demo)

    mn = sub.add_parser("mn", help="act as a mobile node").add_subparsers(required=True, metavar="ACTION")
    for name, helptext in (("register", "register a care-of address"), ("deregister", "deregister")):
        m = mn.add_parser(name, help=helptext)
        _mobile_node_args(m)
        if name == "register":
            m.add_argument("--care-of", required=True, type=IPv4Address)
            m.add_argument("--lifetime", type=int, default=600)
            m.add_argument("--simultaneous", action="store_true", help="S: keep other care-of addresses")
            m.add_argument("--reverse-tunnel", action="store_true", help="T: ask for a reverse tunnel")
            m.add_argument("--broadcast", action="store_true", help="B: forward broadcasts")
            m.add_argument("--colocated", action="store_true", help="D: the mobile node decapsulates")
        else:
            m.add_argument("--care-of", type=IPv4Address, help="one care-of address (default: all of them)")
        m.add_argument("--timeout", type=float, default=1.0)
        m.add_argument("--retries", type=int, default=3)
        m.add_argument("--json", action="store_true")
        m.set_defaults(func=_mn_register if name == "register" else _mn_deregister)

    load_p = mn.add_parser("load", help="register many mobile nodes as fast as the Home Agent answers")
    _mobile_node_args(load_p, single=False)
    load_p.add_argument("--mobile-nodes", type=int, default=1000)
    load_p.add_argument("--first-home-address", type=IPv4Address)
    load_p.add_argument("--care-of", type=IPv4Address, default=IPv4Address("192.0.2.1"))
    load_p.add_argument("--count", type=int)
    load_p.add_argument("--duration", type=float)
    load_p.add_argument("--window", type=int, default=64)
    load_p.add_argument("--rate", type=float, help="requests a second (a steady load); default: as fast as it goes")
    load_p.add_argument("--lifetime", type=int, default=600)
    load_p.set_defaults(func=_mn_load)
    return p


def _mobile_node_args(p: argparse.ArgumentParser, single: bool = True) -> None:
    p.add_argument("--config", type=Path, help="take the Home Agent and the association from this file")
    if single:
        p.add_argument("--home-address", required=True, type=IPv4Address)
    p.add_argument("--home-agent", type=IPv4Address)
    p.add_argument("--port", type=int)
    p.add_argument("--spi", type=int)
    p.add_argument("--key", help="hex")
    p.add_argument("--algorithm", choices=[a.value for a in Algorithm])


# -- daemon ------------------------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    from homeagent.runtime.daemon import StartupError, run

    config = load(args.config)
    level = args.log_level or config.log.level or "info"  # --log-level, if given, wins over [log] level
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        run(config)
    except StartupError as exc:
        print(f"homeagent: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


def _status(args: argparse.Namespace) -> int:
    st = control.request(load(args.config).control_socket, "status")
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
    return 0


def _bindings(args: argparse.Namespace) -> int:
    kwargs = {"home_address": str(args.home_address)} if args.home_address else {}
    rows = control.request(load(args.config).control_socket, "bindings", **kwargs)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'home address':<16} {'care-of address':<16} {'lifetime':>8} {'remaining':>9}  identification")
    for r in rows:
        print(
            f"{r['home_address']:<16} {r['care_of_address']:<16} {r['lifetime']:>8} "
            f"{r['remaining']:>9.0f}  {r['identification']:#018x}"
        )
    print(f"{len(rows)} binding(s)")
    return 0


def _role(args: argparse.Namespace) -> int:
    result = control.request(load(args.config).control_socket, "role", role=args.role)
    print(f"role {result['role']}")
    return 0


def _remove(args: argparse.Namespace) -> int:
    kwargs = {"home_address": str(args.home_address)}
    if args.care_of:
        kwargs["care_of_address"] = str(args.care_of)
    result = control.request(load(args.config).control_socket, "remove", **kwargs)
    print(f"removed {result['removed']} binding(s) of {args.home_address}")
    return 0


# -- mobile node -------------------------------------------------------------------------------------


def _target(args: argparse.Namespace, home_address: IPv4Address | None) -> tuple[IPv4Address, int, SecurityAssociation]:
    """The Home Agent address, port and association, from flags, else from --config."""
    config: Config | None = load(args.config) if args.config else None
    home_agent = args.home_agent or (config.home_agent.address if config else None)
    port = args.port or (config.home_agent.port if config else 434)
    if home_agent is None:
        raise SystemExit("homeagent: give --home-agent or --config")
    if args.spi is not None and args.key:
        sa = SecurityAssociation(args.spi, Algorithm(args.algorithm or "hmac-md5"), bytes.fromhex(args.key))
    elif config is not None:
        covering = [
            s.association
            for s in config.security_associations
            if home_address is None or home_address in s.home_addresses
        ]
        if not covering:
            raise SystemExit(f"homeagent: no security association in {args.config} covers {home_address}")
        sa = covering[0]
    else:
        raise SystemExit("homeagent: give --spi and --key, or --config")
    return home_agent, port, sa


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


def _mn_load(args: argparse.Namespace) -> int:
    from homeagent.mobile_node import LoadGenerator

    config = load(args.config) if args.config else None
    first = args.first_home_address
    if first is None:
        if config is None or not config.security_associations:
            raise SystemExit("homeagent: give --first-home-address or --config")
        first = config.security_associations[0].home_addresses.network_address + 1
    home_agent, port, sa = _target(args, first)
    addresses = [first + i for i in range(args.mobile_nodes)]
    gen = LoadGenerator(home_agent, port, sa, addresses, args.care_of, args.lifetime, args.window)
    if args.count is None and args.duration is None:
        args.count = args.mobile_nodes
    result = gen.run(count=args.count, duration=args.duration, rate=args.rate)
    print(json.dumps({**result.__dict__, "rate": round(result.rate, 1)}))
    return 0 if result.accepted else 1


# -- demo --------------------------------------------------------------------------------------------


def _demo(args: argparse.Namespace) -> int:
    """Start a lone Home Agent from the example config, register one mobile node, show the result."""
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
