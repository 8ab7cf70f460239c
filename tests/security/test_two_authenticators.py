"""RFC 5944 3.5.2: exactly one Mobile-Home Authentication Extension. A second one after a valid one is
refused with 134 (docs/registration.md) and changes no binding."""

from __future__ import annotations

from homeagent.wire.registration import ReplyCode
from tests.unit.support import KEY, SOURCE, SPI, T0, make_ha, mhae, only_reply, request, snapshot


def test_a_second_mhae_after_a_valid_one_is_refused_with_134():
    ha = make_ha()
    before = snapshot(ha)
    valid = request(now=T0)
    doubled = mhae(valid, SPI, KEY)  # a second, itself valid, authenticator over the first
    reply = only_reply(ha.receive_datagram(doubled, SOURCE, "192.0.2.1", T0))
    assert reply.code == ReplyCode.POORLY_FORMED_REQUEST
    assert snapshot(ha) == before
    assert ha.counters["denied.134"] == 1


def test_one_mhae_is_accepted():
    ha = make_ha()
    reply = only_reply(ha.receive_datagram(request(now=T0), SOURCE, "192.0.2.1", T0))
    assert reply.code == ReplyCode.ACCEPTED
