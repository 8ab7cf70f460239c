"""Five members under churn, kills and preempts (issue 10, "What it must show", third point): the figures.

Five ``homeagent run`` processes on loopback (127.0.0.2-6, priorities 250/200/150/100/50, preempt on,
advertisement interval 0.1 s, async replication) serve a steady load at the virtual address 127.0.0.10
from many mobile nodes while, one event every ``--spacing`` seconds: a standby (priority 100) is killed
with SIGKILL, then started again; the active member is killed, then started again (it then outranks every
member and must preempt, once); the priority-150 standby is restarted with SIGTERM.

Printed: per event the reconciliation cost (``redundancy.table_reply_bytes_sent`` and
``redundancy.table_replies_sent`` deltas summed over members, mobile nodes sent from the ``sending N
mobile nodes to X`` log lines, the sends themselves with ``--sends``), the longest gap in registration
replies at the virtual address and how long until the group was whole again; every role change with its
reason, each takeover classified (kill / preemption / needless; tests/integration/churn_support.py). The
baseline, measured in the same run, is the warm-up: the same load, no event, before the first kill.

    python bench/churn.py [--rate 2000] [--nodes 10000] [--spacing 6] [--keep]

No root needed. Every daemon is stopped by PID at the end, whatever happened; the state directories and
logs live in a temporary directory, removed unless ``--keep``. The host's load average is printed: on a
shared machine it decides much of what is measured.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from integration.churn_support import Churn, format_report, free_port  # noqa: E402
from integration.group_support import Group  # noqa: E402


class Directories:
    """What Group needs of pytest's tmp_path_factory: a fresh directory per member."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def mktemp(self, name: str) -> Path:
        path = self.root / name
        path.mkdir()
        return path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=2000.0, help="registrations a second asked (default 2000)")
    p.add_argument("--nodes", type=int, default=10000, help="mobile nodes (default 10000)")
    p.add_argument("--spacing", type=float, default=6.0, help="seconds between events (default 6)")
    p.add_argument("--warm-up", type=float, default=None,
                   help="seconds of load before the first event (default: nodes / rate, at least 5)")
    p.add_argument("--settle", type=float, default=4.0,
                   help="seconds an event waits for the group (default 4)")
    p.add_argument("--sends", action="store_true", help="print every 'sending N mobile nodes' line")
    p.add_argument("--keep", action="store_true", help="keep the state directories and logs")
    args = p.parse_args()

    warm = args.warm_up if args.warm_up is not None else max(5.0, args.nodes / args.rate)
    s = args.spacing
    root = Path(tempfile.mkdtemp(prefix=f"churn{os.getpid()}-"))
    group = Group(Directories(root), port=free_port())  # type: ignore[arg-type]
    churn = Churn(group, settle=args.settle)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")
    started = time.monotonic()
    try:
        churn.form()
        schedule = [
            (warm, churn.kill_standby),
            (warm + s, churn.restart_killed),
            (warm + 2 * s, churn.kill_active),
            (warm + 3 * s, churn.restart_best),
            (warm + 4 * s, churn.restart_standby),
        ]
        duration = warm + 5 * s
        report = churn.run(schedule, duration, args.nodes, args.rate)
        text = format_report(report, args.rate, args.nodes)
        if not args.sends:
            text = "\n".join(line for line in text.splitlines() if " mobile nodes to " not in line)
        print(text)
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
              f"{time.monotonic() - started:.0f} s in all")
        return 0
    finally:
        try:
            group.finalize()
        except BaseException as exc:  # noqa: BLE001 - pytest.fail's: report it, keep the figures
            print(f"at the end: {exc}", file=sys.stderr)
        if args.keep:
            print(f"logs and state kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
