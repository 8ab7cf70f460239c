"""The Prometheus endpoint of real daemons (``[metrics] listen``), scraped over HTTP and read with
prometheus-client's own text parser: after a known sequence of requests every metric docs/operations.md
lists is there, with the value the sequence implies; a group of two shows roles, replication and table
transfers; a bad request never harms the daemon; an address that cannot be bound stops the start."""

from __future__ import annotations

import re
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from homeagent.runtime.exposition import MAX_CLIENTS

from .conftest import OTHER_KEY, OTHER_SPI, WRONG_KEY, config_text, homeagent, ntp_now, rrq
from .group_support import MEMBER_ADDRESSES, VIP, Group, make_group, wait_until

DOCS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


# Served only with the ebpf backend (docs say so): tests/netns/test_system.py reads them from a real one.
EBPF_ONLY = ["homeagent_dataplane_program_packets_total", "homeagent_dataplane_map_refused_total"]


def documented_metrics() -> list[str]:
    """Every metric in the table of docs/operations.md's "Metrics" section."""
    text = DOCS.read_text()
    section = text[text.index("## Metrics"):text.index("## Capacity")]
    names = re.findall(r"^\| `(homeagent_[a-z_]+)` \|", section, re.MULTILINE)
    assert len(names) > 25, names
    return names


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port: int, path: str = "/metrics", method: str = "GET", accept: str | None = None):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    if accept:
        request.add_header("Accept", accept)
    return urllib.request.urlopen(request, timeout=5)


def scrape(port: int) -> Samples:
    with get(port) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def names(samples: Samples) -> set[str]:
    out = set()
    for name, _ in samples:
        out.add(name)
        out.add(re.sub(r"_(bucket|count|sum)$", "", name))
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[name, tuple(sorted(labels.items()))]


@pytest.fixture
def metered(daemons, tmp_path):
    """A lone daemon with its metrics on a free TCP port: (daemon, metrics port)."""
    from .conftest import free_udp_port

    port, metrics_port = free_udp_port(), free_tcp_port()
    text = config_text(tmp_path / "state", port) + f'\n[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n'
    ha = daemons.config("metered", port=port, state_dir=tmp_path / "state", text=text).start()
    return ha, metrics_port


def test_every_documented_metric_has_the_value_of_a_known_sequence(metered):
    ha, metrics_port = metered
    mn = ha.mn()
    assert mn.exchange(rrq("10.1.7.1", "192.0.2.1")).code == 0  # new
    assert mn.exchange(rrq("10.1.7.1", "192.0.2.1")).code == 0  # renewed
    again = rrq("10.1.7.1", "192.0.2.1")
    assert mn.exchange(again).code == 0
    assert mn.exchange(again).code == 0  # a retransmission answered again
    assert mn.exchange(rrq("10.1.7.2", "192.0.2.2", lifetime=1)).code == 0  # expires below
    assert mn.exchange(rrq("10.1.7.3", "192.0.2.3")).code == 0  # removed below
    assert mn.exchange(rrq("10.1.7.4", "192.0.2.4", key=WRONG_KEY)).code == 131  # a bad authenticator
    assert mn.exchange(rrq("10.1.7.1", "192.0.2.1", ident=ntp_now(-3600))).code == 133  # a replay
    assert mn.exchange(rrq("10.1.7.5", "192.0.2.5", home_agent="127.0.0.99")).code == 136
    assert mn.exchange(rrq("10.2.0.1", "192.0.2.6", key=OTHER_KEY, spi=OTHER_SPI)).code == 129  # not home
    assert mn.exchange(rrq("10.1.7.1", "192.0.2.1", lifetime=0)).code == 0  # de-registration
    assert mn.silent(b"\x01\x00")  # malformed
    assert mn.silent(rrq("10.9.0.1", "192.0.2.7"))  # no association covers it
    mn.close()
    r = homeagent("remove", "--config", str(ha.config_path), "--home-address", "10.1.7.3")
    assert r.returncode == 0, r.stderr
    wait_until(lambda: ha.counters().get("expired") == 1, 5, "the 1 s binding to expire")

    m = scrape(metrics_port)
    group_only = [n for n in documented_metrics() if n.startswith("homeagent_redundancy_")]
    group_only.append("homeagent_role_changes_total")  # a lone Home Agent has neither (docs say so)
    group_only += EBPF_ONLY
    missing = [n for n in documented_metrics() if n not in names(m) and n not in group_only]
    assert not missing, f"documented but not served: {missing}"
    assert value(m, "homeagent_registration_requests_total") == 13
    assert value(m, "homeagent_registration_replies_total", code="0") == 7  # 5 accepted, 1 again, 1 de-registration
    for code, n in (("131", 1), ("133", 1), ("136", 1), ("129", 1), ("134", 0), ("135", 0), ("139", 0)):
        assert value(m, "homeagent_registration_replies_total", code=code) == n, code
    assert value(m, "homeagent_registrations_accepted_total", kind="registration") == 5
    assert value(m, "homeagent_registrations_accepted_total", kind="retransmission") == 1
    assert value(m, "homeagent_registrations_accepted_total", kind="deregistration") == 1
    assert value(m, "homeagent_registration_requests_discarded_total", reason="malformed") == 1
    assert value(m, "homeagent_registration_requests_discarded_total", reason="no_security_association") == 1
    assert value(m, "homeagent_registration_requests_discarded_total", reason="not_serving") == 0
    assert value(m, "homeagent_security_violations_total", kind="registration") == 2  # 131 and 133
    assert value(m, "homeagent_security_violations_total", kind="redundancy") == 0
    assert value(m, "homeagent_bindings") == 0  # 10.1.7.1 de-registered, .2 expired, .3 removed
    assert value(m, "homeagent_bindings_expired_total") == 1
    assert value(m, "homeagent_bindings_removed_total") == 1
    assert value(m, "homeagent_tunnels") == 0
    assert value(m, "homeagent_send_failures_total") == 0
    assert value(m, "homeagent_role", role="active") == 1
    assert sum(value(m, "homeagent_role", role=r) for r in ("init", "standby", "active", "peer")) == 1
    assert value(m, "homeagent_dataplane_packets_total", direction="forward") == 0
    assert value(m, "homeagent_dataplane_drops_total", reason="no_tunnel") == 0
    assert value(m, "homeagent_build_info", version="0.1.0") == 1
    assert abs(value(m, "homeagent_start_time_seconds") - time.time()) < 120
    assert value(m, "process_open_fds") > 0
    # The same numbers as homeagent status, read at the same moment.
    counters = ha.counters()
    assert counters["requests"] == 13 and counters["denied.131"] == 1 and counters["removed"] == 1


def test_a_binding_held_shows_in_bindings_and_tunnels(metered):
    ha, metrics_port = metered
    mn = ha.mn()
    for i in range(3):
        assert mn.exchange(rrq(f"10.1.8.{i + 1}", "192.0.2.1")).code == 0
    mn.close()
    m = scrape(metrics_port)
    assert value(m, "homeagent_bindings") == 3 and value(m, "homeagent_tunnels") == 3


def test_the_endpoint_answers_what_it_serves_and_refuses_the_rest(metered):
    ha, metrics_port = metered
    with get(metrics_port, method="HEAD") as response:
        assert response.status == 200 and response.read() == b""
        assert int(response.headers["Content-Length"]) > 1000
    with get(metrics_port, accept="application/openmetrics-text; version=1.0.0") as response:
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        assert response.read().decode().rstrip().endswith("# EOF")
    for path, method, status in (("/", "GET", 404), ("/metricsx", "GET", 404), ("/metrics", "POST", 405)):
        with pytest.raises(urllib.error.HTTPError) as info:
            get(metrics_port, path, method)
        assert info.value.code == status
    # Garbage, a head too long, a client that sends half a head and goes, one that never sends.
    for payload in (b"\x00\xff garbage\r\n\r\n", b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n",
                    b"GET /metr", b""):
        with socket.create_connection(("127.0.0.1", metrics_port), timeout=5) as s:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            answer = s.recv(100)
            assert answer == b"" or answer.startswith(b"HTTP/1.1 400"), answer
    # Connections that send nothing hold every slot (MAX_CLIENTS): one more is closed at once, unanswered.
    idle = [socket.create_connection(("127.0.0.1", metrics_port), timeout=5) for _ in range(MAX_CLIENTS)]
    try:
        time.sleep(0.3)
        with socket.create_connection(("127.0.0.1", metrics_port), timeout=5) as extra:
            try:
                extra.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
                assert extra.recv(100) == b""  # closed
            except ConnectionResetError:
                pass  # closed before it read what we sent: the kernel resets
    finally:
        for s in idle:
            s.close()
    assert ha.running() and ha.mn().exchange(rrq("10.1.9.9", "192.0.2.9")).code == 0
    m = wait_until(lambda: _try_scrape(metrics_port), 5, "a scrape once the idle connections are gone")
    assert value(m, "homeagent_bindings") == 1


def _try_scrape(port: int) -> Samples | None:
    try:
        return scrape(port)
    except (urllib.error.URLError, ConnectionError):
        return None


def test_a_listen_address_that_cannot_be_bound_stops_the_start(daemons, tmp_path):
    from .conftest import free_udp_port

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        port = free_udp_port()
        text = config_text(tmp_path / "state", port) + f'\n[metrics]\nlisten = "127.0.0.1:{busy}"\n'
        ha = daemons.config("busy", port=port, state_dir=tmp_path / "state", text=text)
        ha.expect_clean_exit = False
        ha.start(wait=False)
        assert ha.proc is not None
        assert ha.proc.wait(timeout=10) == 1
    lines = ha.stderr().strip().splitlines()
    assert lines[-1] == f"homeagent: cannot start: metrics.listen: cannot listen on 127.0.0.1:{busy}: " \
                        "Address already in use", lines
    assert "Traceback" not in ha.stderr() and not ha.control_socket.exists()


# -- a group of two -----------------------------------------------------------------------------------


@pytest.fixture
def group(tmp_path_factory):
    yield from make_group(tmp_path_factory)


def test_a_group_of_two_shows_roles_replication_and_transfers(group: Group):
    ports = {a: free_tcp_port() for a in MEMBER_ADDRESSES[:2]}
    a, b = (group.add(address, priority=priority, peers=[p for p in MEMBER_ADDRESSES[:2] if p != address],
                      redundancy_extra=f'\n[metrics]\nlisten = "127.0.0.1:{ports[address]}"\n')
            for address, priority in zip(MEMBER_ADDRESSES[:2], (200, 100)))
    group.start(a)
    wait_until(lambda: a.role() == "active", 5, "the first member to become active")
    group.start(b)
    group.wait_formed(active=a)
    mn = group.vip_node()
    for i in range(3):
        assert mn.exchange(rrq(f"10.1.6.{i + 1}", "192.0.2.1", home_agent=VIP)).code == 0
    mn.close()
    group.wait_replicated([f"10.1.6.{i + 1}" for i in range(3)])
    wait_until(lambda: value(scrape(ports[a.address]), "homeagent_redundancy_binding_updates_acked_total") == 3,
               5, "the three acks")

    ma, mb = scrape(ports[a.address]), scrape(ports[b.address])
    missing = [n for n in documented_metrics() if n not in names(ma) and n not in EBPF_ONLY]
    assert not missing, f"documented but not served by a member: {missing}"
    assert value(ma, "homeagent_role", role="active") == 1 and value(mb, "homeagent_role", role="standby") == 1
    assert value(ma, "homeagent_role_changes_total", to="standby", reason="ready") == 1
    assert value(ma, "homeagent_role_changes_total", to="active", reason="master_down") == 1
    assert value(mb, "homeagent_role_changes_total", to="standby", reason="ready") == 1
    assert value(mb, "homeagent_role_changes_total", to="active", reason="master_down") == 0
    assert value(ma, "homeagent_redundancy_peer_up", peer=b.address) == 1
    assert value(mb, "homeagent_redundancy_peer_up", peer=a.address) == 1
    assert value(ma, "homeagent_bindings") == value(mb, "homeagent_bindings") == 3
    assert value(ma, "homeagent_redundancy_binding_updates_sent_total") == 3
    assert value(ma, "homeagent_redundancy_binding_updates_acked_total") == 3
    assert value(ma, "homeagent_redundancy_binding_updates_failed_total") == 0
    assert value(mb, "homeagent_redundancy_binding_updates_received_total") == 3
    assert value(ma, "homeagent_redundancy_replication_lag_seconds_count") == 3
    assert value(ma, "homeagent_redundancy_replication_lag_seconds_bucket", le="+Inf") == 3
    assert 0 < value(ma, "homeagent_redundancy_replication_lag_seconds_sum") < 3 * 0.25  # no resend needed
    assert value(mb, "homeagent_redundancy_table_requests_total", direction="sent") >= 1
    assert value(ma, "homeagent_redundancy_table_requests_total", direction="received") >= 1
    assert value(mb, "homeagent_redundancy_table_transfers_total", direction="received") >= 1  # its download
    assert value(ma, "homeagent_redundancy_table_transfers_total", direction="sent") >= 1
    assert value(ma, "homeagent_registration_replies_total", code="0") == 3
    assert value(mb, "homeagent_registration_replies_total", code="0") == 0

    b.stop()  # a standby that stops goes silent: given up on after the master-down interval
    m = wait_until(lambda: (s := scrape(ports[a.address]))
                   and value(s, "homeagent_redundancy_peer_up", peer=b.address) == 0 and s, 5, "B to be down")
    assert value(m, "homeagent_redundancy_members_marked_down_total") == 1
