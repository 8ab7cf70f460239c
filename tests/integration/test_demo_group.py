"""``homeagent demo --group`` run as an operator would, its output piped (plain lines): the takeover
happened with every binding, the swarm renewed at the new active member, and nothing it started is left
(processes by PID, the temporary directory)."""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
from pathlib import Path

from .conftest import homeagent


def test_demo_group_shows_a_takeover_and_cleans_up():
    r = homeagent("demo", "--group", "--mobile-nodes", "200", "--rate", "400", timeout=90)
    out = r.stdout
    assert r.returncode == 0, out + r.stderr
    assert re.search(r"^127\.0\.0\.2 \(pid \d+\) active, 127\.0\.0\.3 \(pid \d+\) standby$", out, re.M), out
    assert "registered: 200 of 200 accepted" in out
    assert re.search(r"^  127\.0\.0\.2 active 200/200 bindings \| 127\.0\.0\.3 standby 200/200 bindings$",
                     out, re.M), out  # the standby's table filled by replication before the kill
    assert re.search(r"^takeover: 127\.0\.0\.3 active [0-9.]+ s after the kill .*holding 200 of 200 bindings",
                     out, re.M), out
    assert "renewed: 200 of 200 accepted by 127.0.0.3" in out
    pids = [int(p) for p in re.findall(r"\(pid (\d+)\)", out)]
    assert len(set(pids)) == 2, out
    for pid in set(pids):  # reaped by the demo and gone: no member left running
        assert not Path(f"/proc/{pid}").exists() or _not_a_member(pid), pid
    last = out.strip().splitlines()[-1]
    m = re.fullmatch(r"cleaned up: 127\.0\.0\.2 \(pid \d+\) already ended, 127\.0\.0\.3 \(pid \d+\) stopped; "
                     r"removed (\S+)", last)
    assert m, last
    assert not os.path.exists(m.group(1))


def test_demo_group_on_a_terminal_redraws_in_place():
    """On a terminal (a pseudo-terminal here) the members' block is redrawn with ANSI escapes, the events
    stay above it, and the last picture stays on the screen."""
    leader, follower = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "homeagent", "demo", "--group", "--mobile-nodes", "100",
                             "--rate", "400"], stdout=follower, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    os.close(follower)
    chunks = []
    try:
        while True:
            ready, _, _ = select.select([leader], [], [], 60)
            assert ready, "the demo went silent for 60 s"
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the demo closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(leader)
        proc.wait(timeout=60)
    screen = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, screen
    assert "\x1b[2F\x1b[J" in screen  # back up over the two members' lines and redraw them
    assert re.search(r"127\.0\.0\.3 +prio 100 \x1b\[32mactive +\x1b\[0m \[#{30}\] +100/100 bindings", screen)
    assert "takeover: 127.0.0.3 active" in screen and "renewed: 100 of 100 accepted" in screen
    tail = screen.rstrip().splitlines()[-1]
    assert tail.startswith("cleaned up:") and not os.path.exists(tail.rsplit("removed ", 1)[1])


def test_demo_group_refuses_a_config():
    r = homeagent("demo", "--group", "--config", "x.toml")
    assert r.returncode != 0 and "leave out --config" in r.stderr


def _not_a_member(pid: int) -> bool:
    """A PID reused meanwhile by something else than a homeagent daemon."""
    try:
        return b"homeagent" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
