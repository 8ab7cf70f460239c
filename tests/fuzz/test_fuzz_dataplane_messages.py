"""The control messages between the daemon and the forwarder: any bytes decode or raise ParseError (a
forwarder must not die of a bad message); every table encodes into messages within the size limit that
decode back to it, in order; counters of any size come back whole from their parts."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from homeagent.dataplane import Tunnel
from homeagent.dataplane.messages import (MAX_MESSAGE, Applied, Barrier, CountersPart, CountersRequest, Ping,
                                          Pong, Ready, Serve, SetTunnels, decode, encode_applied,
                                          encode_barrier, encode_counters, encode_counters_request, encode_ping,
                                          encode_pong, encode_ready, encode_serve, encode_tunnels)
from homeagent.wire.errors import ParseError

FAST = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ADDRESS = st.integers(0, 2**32 - 1)
TUNNELS = st.lists(st.builds(Tunnel, ADDRESS, ADDRESS, st.booleans()), max_size=5).map(tuple)
TABLE = st.lists(st.tuples(ADDRESS, TUNNELS), max_size=3000)


@FAST
@given(st.one_of(st.binary(max_size=200),
                 st.sampled_from([b"T", b"S", b"C", b"B", b"P", b"R", b"c", b"b", b"p"]).flatmap(
                     lambda kind: st.binary(max_size=60).map(lambda body: kind + body))))
def test_decode_raises_only_parse_error(data):
    try:
        decode(data)
    except ParseError:
        pass


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TABLE)
def test_tables_round_trip_within_the_size_limit(table):
    messages = list(encode_tunnels(table))
    assert all(len(m) <= MAX_MESSAGE for m in messages)
    decoded = []
    for message in messages:
        command = decode(message)
        assert isinstance(command, SetTunnels)
        decoded += command.entries
    assert decoded == table


@FAST
@given(st.booleans(), st.integers(0, 2**32 - 1))
def test_small_messages_round_trip(serving, request):
    assert decode(encode_serve(serving)) == Serve(serving)
    assert decode(encode_counters_request(request, serving)) == CountersRequest(request, serving)
    assert decode(encode_ready({"tun": "ha0", "pid": request})) == Ready({"tun": "ha0", "pid": request})
    assert decode(encode_barrier(request)) == Barrier(request)
    assert decode(encode_applied(request)) == Applied(request)
    assert decode(encode_ping(request)) == Ping(request)
    assert decode(encode_pong(request)) == Pong(request)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 20000), st.integers(0, 2**32 - 1))
def test_counters_of_any_size_come_back_whole(tunnels, request):
    counters = {"drops": {"no_tunnel": 3}, "tunnels": [{"home_address": "10.1.0.1", "packets": n}
                                                       for n in range(tunnels)]}
    parts = [decode(m) for m in encode_counters(request, counters)]
    assert all(isinstance(p, CountersPart) and p.request == request for p in parts)
    assert [p.last for p in parts] == [False] * (len(parts) - 1) + [True]  # type: ignore[union-attr]
    assert json.loads(b"".join(p.chunk for p in parts)) == counters  # type: ignore[union-attr]
