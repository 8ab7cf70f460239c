"""The netlink child of dataplane.neighbours answers every line it is given with one JSON object, whatever
the line holds, and asks netlink only for well-formed requests (here: a stand-in that records the asking)."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from homeagent.dataplane.neighbours_netlink import answer


class StandIn:
    """Records what netlink was asked; answers every request with an acknowledgement."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def nlm_request_batch(self, messages, noraise=False):  # type: ignore[no-untyped-def]
        self.asked.append("batch")
        for number, message in enumerate(messages, 1):  # as pyroute2 numbers them on sending
            message["header"]["sequence_number"] = number
        return [{"header": {"sequence_number": m["header"]["sequence_number"]}} for m in messages]

    def neigh(self, command, **kwargs):  # type: ignore[no-untyped-def]
        self.asked.append(command)
        return []


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner,
                                                                                       max_size=4),
                           max_leaves=12)
requests = st.fixed_dictionaries({"op": st.sampled_from(["add", "del", "dump", "macs", "x"])},
                                 optional={"addresses": json_values})


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=200), requests.map(lambda r: json.dumps(r).encode()),
                 json_values.map(lambda v: json.dumps(v).encode())))
def test_every_line_gets_one_json_answer(line):
    stand_in = StandIn()
    reply = answer(stand_in, 3, line)
    assert set(reply) in ({"error"}, {"done"}, {"macs"}, {"ours", "foreign"})
    json.dumps(reply)  # goes back as one line
    if "error" not in reply:
        request = json.loads(line)
        assert request["op"] in ("add", "del", "dump", "macs")


@given(st.lists(st.integers(0, 2**32 - 1), max_size=20))
def test_well_formed_requests_are_carried_out(addresses):
    stand_in = StandIn()
    reply = answer(stand_in, 3, json.dumps({"op": "add", "addresses": addresses}).encode())
    assert reply.get("done") is not None and len(reply["done"]) == len(addresses)
