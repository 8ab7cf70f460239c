"""The metrics endpoint's parts: ``[metrics] listen``, the request head parser, the lag histogram, and the
collector's reading of a core (the whole endpoint, from outside: tests/integration/test_metrics.py)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from homeagent.config import ConfigError, parse
from homeagent.core.histogram import LAG_BUCKETS, Histogram
from homeagent.runtime.exposition import BadRequest, Request, parse_request
from homeagent.runtime.metrics import Collector

from .support import COA2, SOURCE, T0, WIDE_KEY, make_ha, ntp, request

HOME_AGENT = '[home_agent]\naddress = "192.0.2.1"\n'


# -- [metrics] listen ---------------------------------------------------------------------------------


def test_metrics_are_off_unless_listen_is_given():
    assert parse(HOME_AGENT).metrics.listen is None
    assert parse(HOME_AGENT + "[metrics]\n").metrics.listen is None


@pytest.mark.parametrize("text, address, port", [
    ("127.0.0.1:9434", IPv4Address("127.0.0.1"), 9434),
    ("0.0.0.0:1", IPv4Address("0.0.0.0"), 1),
    ("[::1]:9434", IPv6Address("::1"), 9434),
    ("[fe80::1]:65535", IPv6Address("fe80::1"), 65535),
])
def test_listen_takes_an_address_and_a_port(text, address, port):
    assert parse(HOME_AGENT + f'[metrics]\nlisten = "{text}"\n').metrics.listen == (address, port)


@pytest.mark.parametrize("value", ['"localhost:9434"', '"127.0.0.1"', '"127.0.0.1:0"', '"127.0.0.1:65536"',
                                   '"::1:9434"', '"[::1]"', '":9434"', '"224.0.0.1:9434"', '9434', '""',
                                   '"127.0.0.1:94x4"', '"127.0.0.1:+94"'])
def test_a_bad_listen_names_its_key(value):
    with pytest.raises(ConfigError) as info:
        parse(HOME_AGENT + f"[metrics]\nlisten = {value}\n")
    assert info.value.key == "metrics.listen"


def test_an_unknown_metrics_key_is_refused():
    with pytest.raises(ConfigError) as info:
        parse(HOME_AGENT + '[metrics]\nport = 9434\n')
    assert info.value.key == "metrics.port"


@given(st.text(max_size=40))
def test_listen_either_parses_or_names_its_key(text):
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    try:
        config = parse(HOME_AGENT + f'[metrics]\nlisten = "{escaped}"\n')
    except ConfigError as exc:
        assert exc.key.startswith("metrics") or exc.key == "config"  # (a string TOML itself refuses)
        return
    assert config.metrics.listen is not None
    address, port = config.metrics.listen
    host, _, digits = text.rpartition(":")
    assert 1 <= port == int(digits) <= 65535 and ip_address(host.strip("[]")) == address


# -- the request head ---------------------------------------------------------------------------------


def test_a_scrape_head_parses():
    head = (b"GET /metrics?x=1 HTTP/1.1\r\nHost: 127.0.0.1:9434\r\nUser-Agent: Prometheus/2.53.0\r\n"
            b"Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\n\r\n")
    assert parse_request(head) == Request("GET", "/metrics",
                                          "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5")
    assert parse_request(b"HEAD / HTTP/1.0\r\n\r\n") == Request("HEAD", "/", "")


@pytest.mark.parametrize("head", [b"", b"\r\n\r\n", b"GET /metrics\r\n\r\n", b"GET /metrics HTTP/2\r\n\r\n",
                                  b"GET metrics HTTP/1.1\r\n\r\n", b"GET  /metrics HTTP/1.1\r\n\r\n",
                                  b"GET /metrics HTTP/1.1\r\nno colon\r\n\r\n",
                                  b"GET /metrics HTTP/1.1\r\n Accept: x\r\n\r\n", b"\x00\xff /m HTTP/1.1\r\n\r\n"])
def test_what_is_not_http_1_is_a_bad_request(head):
    with pytest.raises(BadRequest):
        parse_request(head)


@given(st.binary(max_size=300))
def test_any_bytes_parse_or_are_a_bad_request(data):
    try:
        request = parse_request(data + b"\r\n\r\n")
    except BadRequest:
        return
    assert request.path.startswith("/") and "?" not in request.path and request.method.isalpha()


@given(st.sampled_from(["GET", "HEAD", "POST"]), st.text(alphabet="abcdefghij/_-.", max_size=20),
       st.text(alphabet="abcdefghij/;=,.-+ ", max_size=60))
def test_a_well_formed_head_reads_back(method, path, accept):
    head = f"{method} /{path} HTTP/1.1\r\nHost: x\r\naccept: {accept}\r\n\r\n".encode()
    assert parse_request(head) == Request(method, f"/{path}", accept.strip())


# -- the lag histogram --------------------------------------------------------------------------------


def test_the_histogram_counts_each_sample_in_its_bucket_inclusively():
    h = Histogram((0.001, 0.01, 0.1))
    for value in (0.0005, 0.001, 0.002, 0.1, 5.0):
        h.observe(value)
    assert h.cumulative() == [(0.001, 2), (0.01, 3), (0.1, 4), (float("inf"), 5)]
    assert h.count == 5 and h.sum == pytest.approx(5.1035)
    assert len(Histogram().counts) == len(LAG_BUCKETS) + 1


# -- the collector, over a core -----------------------------------------------------------------------


def scrape(collector: Collector) -> dict[tuple[str, tuple], float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_the_collector_reads_the_core_s_counters():
    ha = make_ha()
    ha.receive_registration(request(ident=ntp(T0, 1)), SOURCE, T0)
    ha.receive_registration(request(coa=COA2, ident=ntp(T0, 2)), SOURCE, T0 + 1)
    ha.receive_registration(request(ident=ntp(T0, 3), key=WIDE_KEY), SOURCE, T0 + 2)  # 131
    ha.receive_registration(b"\x01", SOURCE, T0 + 2)
    collector = Collector(ha)
    collector.dataplane = {"dataplane.home_addresses": 1, "dataplane.packets": 7, "dataplane.reverse_bytes": 99,
                           "dataplane.drops": {"no_tunnel": 3, "a_new_reason": 1}}
    m = scrape(collector)
    assert m["homeagent_registration_requests_total", ()] == 4
    assert m["homeagent_registration_replies_total", (("code", "0"),)] == 2
    assert m["homeagent_registration_replies_total", (("code", "131"),)] == 1
    assert m["homeagent_registration_replies_total", (("code", "133"),)] == 0  # there from the start
    assert m["homeagent_registrations_accepted_total", (("kind", "registration"),)] == 2
    assert m["homeagent_registration_requests_discarded_total", (("reason", "malformed"),)] == 1
    assert m["homeagent_security_violations_total", (("kind", "registration"),)] == 1
    assert m["homeagent_bindings", ()] == 1
    assert m["homeagent_role", (("role", "active"),)] == 1 and m["homeagent_role", (("role", "init"),)] == 0
    assert m["homeagent_tunnels", ()] == 1
    assert m["homeagent_dataplane_packets_total", (("direction", "forward"),)] == 7
    assert m["homeagent_dataplane_bytes_total", (("direction", "reverse"),)] == 99
    assert m["homeagent_dataplane_drops_total", (("reason", "no_tunnel"),)] == 3
    assert m["homeagent_dataplane_drops_total", (("reason", "a_new_reason"),)] == 1
    assert m["homeagent_dataplane_drops_total", (("reason", "too_big"),)] == 0
    assert not any(name.startswith("homeagent_redundancy_") for name, _ in m)  # a lone Home Agent
    assert not any(name.startswith(("homeagent_dataplane_program", "homeagent_dataplane_map")) for name, _ in m)


def test_with_the_ebpf_backend_the_programs_counters_and_refused_map_writes_are_exported():
    collector = Collector(make_ha())
    collector.dataplane = {"dataplane.fast": {"encapsulated": 9, "pass_too_big": 2, "bytes_encapsulated": 900,
                                              "map_refused": 3}}
    m = scrape(collector)
    assert m["homeagent_dataplane_program_packets_total", (("reason", "encapsulated"),)] == 9
    assert m["homeagent_dataplane_program_packets_total", (("reason", "pass_too_big"),)] == 2
    assert m["homeagent_dataplane_program_packets_total", (("reason", "arp_answered"),)] == 0  # from the start
    assert ("homeagent_dataplane_program_packets_total", (("reason", "bytes_encapsulated"),)) not in m
    assert m["homeagent_dataplane_map_refused_total", ()] == 3


def test_with_simultaneous_bindings_off_the_accept_code_is_1():
    ha = make_ha(simultaneous_bindings=0)
    ha.receive_registration(request(ident=ntp(T0, 1)), SOURCE, T0)
    m = scrape(Collector(ha))
    assert m["homeagent_registration_replies_total", (("code", "1"),)] == 1
    assert ("homeagent_registration_replies_total", (("code", "0"),)) not in m


def test_a_reload_that_changes_listen_says_it_needs_a_restart():
    from .support import CONFIG

    ha = make_ha()
    text = CONFIG.format(max_lifetime=1800, simultaneous_bindings=3)
    assert ha.reload(parse(text)) == []
    assert ha.reload(parse(text + '\n[metrics]\nlisten = "127.0.0.1:9434"\n')) == ["metrics.listen"]
    assert ha.config.metrics.listen is None  # left as it runs
    changed = ha.reload(parse(text + '\n[log]\nformat = "json"\n'))
    assert changed == [] and ha.config.log.format.value == "json"  # applied (runtime/logs.set_style)


@pytest.mark.parametrize("accept", ["text/plain; version=x", "application/openmetrics-text; version=abc",
                                    "application/openmetrics-text; version=1.0.0.\nSet-Cookie: injected=1"])
def test_an_accept_header_prometheus_client_cannot_read_gets_the_text_format(accept):
    """Nothing a client sends to the metrics port does more than get the default exposition: a version that is
    no number raised out of prometheus-client (a traceback in the log, no answer), and a line break in one
    was echoed into the answer's Content-Type."""
    from prometheus_client.registry import CollectorRegistry

    from homeagent.runtime.metrics import _encode

    body, content_type = _encode(CollectorRegistry(), accept)
    assert content_type.startswith("text/plain") and content_type.isprintable()
    assert isinstance(body, bytes)
