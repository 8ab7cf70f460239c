"""A stand-in for ``homeagent.dataplane.forwarder`` that needs no privilege: it speaks the control protocol,
keeps the table it is told and reports it (with its PID) as counters, answers barriers (never, with
``--hold-barriers``) and the watchdog's pings (with ``--hang-once FILE``, the first one started stops
reading its socket, as a hung forwarder would; with ``--busy-once FILE``, it spins instead), so the
handle's non-blocking sends, coalescing, restarts and replays can be tested without root. Started as
``python fake_forwarder.py <the forwarder's usual command line>``."""

from __future__ import annotations

import argparse
import os
import socket
import time
from ipaddress import IPv4Address

from homeagent.dataplane.messages import (Barrier, CountersRequest, Ping, Serve, SetTunnels, decode,
                                          encode_applied, encode_counters, encode_pong, encode_ready)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--hold-barriers", action="store_true")
    parser.add_argument("--hang-once", help="a file: if it does not exist, make it and hang")
    parser.add_argument("--busy-once", help="a file: if it does not exist, make it and use the CPU without "
                        "reading the socket for --busy-for seconds (a starved forwarder behind a replay, or "
                        "one looping forever)")
    parser.add_argument("--busy-for", type=float, default=float("inf"))
    args, _ = parser.parse_known_args()
    control = socket.socket(fileno=args.control_fd)
    table: dict[str, list[list[object]]] = {}
    serving = False
    messages = 0
    control.send(encode_ready({"pid": os.getpid()}))
    if args.hang_once and not os.path.exists(args.hang_once):
        open(args.hang_once, "w").close()
        while True:
            time.sleep(3600)
    if args.busy_once and not os.path.exists(args.busy_once):
        open(args.busy_once, "w").close()
        until = time.monotonic() + args.busy_for
        while time.monotonic() < until:
            pass
    while message := control.recv(1 << 16):
        messages += 1
        command = decode(message)
        if isinstance(command, SetTunnels):
            for home, tunnels in command.entries:
                if tunnels:
                    table[str(IPv4Address(home))] = [[t.care_of_address, t.source, t.reverse]
                                                     for t in tunnels]
                else:
                    table.pop(str(IPv4Address(home)), None)
        elif isinstance(command, Serve):
            serving = command.serving
        elif isinstance(command, Ping):
            control.send(encode_pong(command.mark))
        elif isinstance(command, Barrier) and not args.hold_barriers:
            control.send(encode_applied(command.mark))
        elif isinstance(command, CountersRequest):
            for part in encode_counters(command.request, {"pid": os.getpid(), "serving": serving,
                                                          "table": table, "messages": messages}):
                control.send(part)


if __name__ == "__main__":
    main()
