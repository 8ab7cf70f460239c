"""Five members under churn, kills and preempts (issue 10, "What it must show", third point).

Five ``homeagent run`` processes on loopback (priorities 250, 200, 150, 100, 50; preempt on; advertisement
interval 0.1 s; async replication) serve a steady load at the virtual address while, in turn, a standby is
killed with SIGKILL and started again, the active member is killed and started again (it then outranks
every member and preempts), and another standby is restarted with SIGTERM. What must hold, seen from
outside (logs, ``homeagent status --json``, ``homeagent bindings --json``):

- no needless takeover: every transition to active is the one member taking over from a killed active
  member, or the restarted best member preempting (churn_support.classify);
- every member's table identical at the end (home address, care-of address, identification);
- no answered registration lost: every mobile node's last accepted Identification (or a newer one, whose
  reply was lost) is in every member's table.

The reconciliation cost (table-reply bytes, replies, mobile nodes sent) and the longest gap in registration
replies per event are printed (``-s`` shows them); bench/churn.py runs the same scenario longer.

Load: 200 registrations/s from 2,000 mobile nodes for 20 s. On the 2 vCPUs this was written on, shared with
other engineers' daemons and benchmarks (load average 10-19), 1,000/s and 2,000/s asked gave 150-240/s
answered and the group fell apart under the load alone, before any event; 200/s is what the host sustains
(bench/churn.py defaults to 2,000/s from 10,000 nodes, for a quieter host).
"""

from __future__ import annotations

import time
from ipaddress import IPv4Address

import pytest

from .churn_support import Churn, format_report, free_port
from .group_support import Group, make_group, require

NODES = 2000
RATE = 200.0
DURATION = 20.0
SETTLE = 3.0


@pytest.fixture
def group(tmp_path_factory):
    yield from make_group(tmp_path_factory)


# Seen on the tree of 2026-12-02 (see the closing note of this module's commit and issue 10): the restart of a
# member floods it with the whole table from every other member, twice, its socket queues seconds of work
# ahead of the advertisements, members stop hearing each other and standbys take over; the storm of
# whole-table requests then outlives the load. Not strict: on a quiet host the run may pass.
@pytest.mark.timeout(180)  # a healthy run takes ~50 s; a storm is bounded by the waits, then reported
def test_churn_five_members_no_needless_takeover(group: Group) -> None:
    group.port = free_port()
    churn = Churn(group, settle=SETTLE)
    churn.form()
    schedule = [
        (3.0, churn.kill_standby),
        (6.0, churn.restart_killed),
        (9.0, churn.kill_active),
        (12.0, churn.restart_best),
        (15.5, churn.restart_standby),
    ]
    report = churn.run(schedule, DURATION, NODES, RATE)
    print("\n" + format_report(report, RATE, NODES))
    running = group.running()
    require(len(running) == 5, f"five members running at the end: {[m.address for m in running]}")
    require(report.load.accepted > 0.25 * RATE * DURATION, f"the load ran: {report.load}")

    # Every takeover is the one that replaces a killed active member or the restarted best one's preemption.
    assert not report.needless, f"{len(report.needless)} needless takeovers, the first: " + "; ".join(
        f"{time.strftime('%H:%M:%S', time.localtime(t.change.at))} {t.change.member}: {t.change.reason}"
        for t in report.needless[:3])
    causes = [t.cause for t in report.takeovers]
    assert causes.count("kill") == 1 and causes.count("preemption") == 1, causes
    assert not report.status_mismatches, report.status_mismatches  # status --json and the logs agree

    # Every member's table identical, as an operator sees it (bindings --json).
    assert report.converged_after is not None, "the group did not settle with identical tables after the load"
    tables = {m.address: m.table_cli() for m in running}
    rows = {a: {(r["home_address"], r["care_of_address"], r["identification"]) for r in t.values()}
            for a, t in tables.items()}
    reference = next(iter(rows.values()))
    for address, table in rows.items():
        assert table == reference, f"{address}: {len(table ^ reference)} rows differ"

    # No answered registration lost: the last Identification each node had accepted, or a newer one (a
    # registration whose reply never reached it), is what every member holds.
    lost = []
    for home, ident in report.load.newest.items():
        row = tables[running[0].address].get(str(IPv4Address(home)))
        if row is None or row["identification"] < ident:
            lost.append((str(IPv4Address(home)), ident, row and row["identification"]))
    assert not lost, f"{len(lost)} answered registrations lost, e.g. {lost[:5]}"
