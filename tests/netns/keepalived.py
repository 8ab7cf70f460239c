"""keepalived (VRRPv3) as the test bench and the benchmark run it: one instance per member's namespace,
moving the virtual address, telling the member its role from its notify scripts, and tracking it with
``homeagent status`` as docs/operations.md shows ("Letting keepalived decide"), so that the documented
configuration is the tested one."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

KEEPALIVED = shutil.which("keepalived") or shutil.which("keepalived", path="/usr/sbin:/sbin")


def config(router_id: str, vrid: int, priority: int, interval: float, vip: str, member: Path) -> str:
    """A VRRP instance on eth0 holding ``vip`` (an address/prefix); the notify scripts call
    ``homeagent role`` for the member configured in ``member``, and ``homeagent status`` failing twice in a
    row (the member's Home Agent is dead or hangs) puts the instance in FAULT, giving the address up."""
    role = f"{sys.executable} -m homeagent role %s --config {member}"
    status = f"{sys.executable} -m homeagent status --config {member}"
    return f"""
global_defs {{
    router_id {router_id}
    vrrp_version 3
    script_user root
    enable_script_security
}}
vrrp_script homeagent_alive {{
    script "{status}"
    interval 1
    timeout 2
    fall 2
    rise 1
}}
vrrp_instance homeagent {{
    state BACKUP
    interface eth0
    virtual_router_id {vrid}
    priority {priority}
    advert_int {interval}
    virtual_ipaddress {{
        {vip} dev eth0
    }}
    track_script {{
        homeagent_alive
    }}
    notify_master "{role % 'active'}"
    notify_backup "{role % 'standby'}"
    notify_fault  "{role % 'standby'}"
}}
"""


def command(conf: Path, parent_pidfile: Path, child_pidfile: Path) -> list[str]:
    """keepalived in the foreground, VRRP only, logging to the console: -P -n -l -D -G."""
    assert KEEPALIVED is not None
    return [KEEPALIVED, "-f", str(conf), "-p", str(parent_pidfile), "-r", str(child_pidfile),
            "-P", "-n", "-l", "-D", "-G"]


def read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None
