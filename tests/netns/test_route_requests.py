"""``dataplane.route_requests`` against a real kernel, in a namespace of its own: thousands of /32 routes
into a device in one system call each batch, replaced without complaint, deleted; what the kernel refuses
(deleting an absent route, a route into a device that is down) comes back by address with its errno, and
the rest of the batch is done. Needs root and iproute2; namespace prefix "rq"."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap

import pytest

from netns.lan import can_run, run

pytestmark = [pytest.mark.root, pytest.mark.skipif(not can_run(), reason="needs root and iproute2")]

SCRIPT = textwrap.dedent("""
    import json, subprocess
    from pyroute2 import IPRoute
    from homeagent.dataplane.route_requests import RouteRequests

    def routes(dev):
        out = subprocess.run(["ip", "-o", "route", "show", "dev", dev], check=True, capture_output=True,
                             text=True).stdout
        return sorted(line.split()[0] for line in out.splitlines())

    with IPRoute() as ipr:
        ipr.link("add", ifname="r0", kind="veth", peer="r1")
        ipr.link("add", ifname="s0", kind="veth", peer="s1")
        up = ipr.link_lookup(ifname="r0")[0]
        down = ipr.link_lookup(ifname="s0")[0]
        ipr.link("set", index=up, state="up")
    base = 0x0A050000
    into = RouteRequests(up)
    out = {}
    out["added"] = into.apply([(base + i, True) for i in range(5000)])
    out["count"] = len(routes("r0"))
    out["again"] = into.apply([(base + i, True) for i in range(10)])  # replace: no complaint
    out["mixed"] = into.apply([(base + i, False) for i in range(5)] + [(0x0A090001, False)])
    out["left"] = len(routes("r0"))
    out["kept"] = sorted({"10.5.0.%d" % i for i in range(8)} & set(routes("r0")))
    out["down"] = RouteRequests(down).apply([(0x0A090002, True), (0x0A090003, True)])
    print(json.dumps(out))
""")


def test_a_batch_of_routes_goes_in_and_the_refusals_come_back_by_address():
    name = f"rq{os.getpid()}"
    run("ip", "netns", "add", name)
    try:
        out = subprocess.run(["ip", "netns", "exec", name, sys.executable, "-c", SCRIPT], check=True,
                             capture_output=True, text=True, timeout=60).stdout
    finally:
        run("ip", "netns", "del", name, check=False)
    import json

    result = json.loads(out)
    assert result["added"] == {} and result["count"] == 5000
    assert result["again"] == {}
    assert result["mixed"] == {str(0x0A090001): errno.ESRCH}, "only the absent route is refused"
    assert result["left"] == 4995 and result["kept"] == ["10.5.0.5", "10.5.0.6", "10.5.0.7"]
    assert set(result["down"]) == {str(0x0A090002), str(0x0A090003)}
    assert set(result["down"].values()) == {errno.ENETDOWN}
