"""``homeagent mn up`` reads commands from its standard input: whatever a line holds, ``apply_command``
neither raises nor stops the node (only ``down`` does), and only a unicast IPv4 address becomes the care-of
address to register."""

from __future__ import annotations

from ipaddress import IPv4Address

from hypothesis import given
from hypothesis import strategies as st

from homeagent.mobile_node import RenewalPolicy, Session, apply_command

COA = IPv4Address("10.2.0.10")


class NoHomeAgent:
    def register(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("a control line registers nothing by itself")


lines = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=200).map(lambda b: b.decode(errors="replace")),
    st.builds(lambda w, a: f"{w} {a}", st.sampled_from(["care-of", "renew", "down", "CARE-OF"]),
              st.one_of(st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(str), st.text(max_size=30))),
)


@given(lines)
def test_any_line_is_handled_and_only_a_unicast_address_is_taken(line):
    out: list[str] = []
    s = Session(NoHomeAgent(), COA, 600, 0, RenewalPolicy(15.0), clock=lambda: 0.0, report=out.append)
    stops = apply_command(s, line, out.append)
    assert stops == (line.split() == ["down"])
    if s.care_of != COA:
        words = line.split()
        assert words[0] == "care-of" and IPv4Address(words[1]) == s.care_of
        assert not (s.care_of.is_multicast or s.care_of.is_unspecified or s.care_of.is_loopback
                    or s.care_of.is_reserved)
    assert all(len(message) < 200 for message in out)
