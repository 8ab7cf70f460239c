"""What the event log costs a registration, in one process, no sockets: the Home Agent's
``receive_datagram`` per authenticated registration with the daemon's own log handler (runtime/logs.py,
logfmt) writing to /dev/null, at each level, compared in the same run:

* ``warning``: no event is written (each registration pays one level check);
* ``info``: a new binding writes its ``binding_accepted`` line, a renewal writes nothing;
* ``debug``: a renewal writes its ``binding_renewed`` line too.

Each figure is the best of ``--rounds`` interleaved runs over the same ``--count`` requests (new: every
one a node not bound before; renewal: the same nodes again). docs/operations.md ("Logs") quotes them.

    python bench/event_log.py [--count 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import logging as std_logging
import os
import sys
import time
from ipaddress import IPv4Address
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import in_process_load  # noqa: E402

ADDRESS = "127.0.0.2"
LEVELS = ("warning", "info", "debug")


def run(count: int, rounds: int) -> dict[str, tuple[float, float]]:
    from homeagent.config import LogFormat
    from homeagent.core.home_agent import HomeAgent
    from homeagent.runtime import logs

    config, requests, renewals, built = in_process_load(count, ADDRESS)
    source = ("192.0.2.1", 434)
    best = {level: [float("inf"), float("inf")] for level in LEVELS}
    with open(os.devnull, "w") as sink:
        for _ in range(rounds):
            for level in LEVELS:
                logs.configure(level, LogFormat.LOGFMT, sink)
                ha = HomeAgent(config, time.monotonic())
                now = time.monotonic()
                ha.clock.offset = built - now
                receive = ha.receive_datagram
                for i, batch in enumerate((requests, renewals)):
                    t = time.perf_counter()
                    for data in batch:
                        receive(data, source, ADDRESS, now)
                    best[level][i] = min(best[level][i], (time.perf_counter() - t) / count)
                assert ha.counters["accepted"] == 2 * count, dict(ha.counters)
    std_logging.getLogger().handlers.clear()
    return {level: (new * 1e6, renewal * 1e6) for level, (new, renewal) in best.items()}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--count", type=int, default=20_000)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    figures = run(args.count, args.rounds)
    quiet_new, quiet_renewal = figures["warning"]
    for level, (new, renewal) in figures.items():
        print(f"log level {level:<8} a new binding {new:5.2f} us ({new - quiet_new:+.2f})   "
              f"a renewal {renewal:5.2f} us ({renewal - quiet_renewal:+.2f})")


if __name__ == "__main__":
    main()
