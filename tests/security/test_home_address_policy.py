"""Home addresses that belong to the network are refused (129), whoever holds a key: the Home Agent's own
address, the virtual address, every configured member's address, and the home network's network and
broadcast addresses (docs/registration.md, decision C). Accepting one would have the active member
announce it by gratuitous ARP: ARP poisoning of the home link."""

from __future__ import annotations

import pytest

from homeagent.config import parse
from homeagent.core.home_agent import HomeAgent
from homeagent.wire.registration import ReplyCode
from tests.unit.support import T0, ip, only_reply, request

CONFIG = """
[home_agent]
address = "10.1.0.2"
home_network = "10.1.0.0/16"
state_dir = "/nonexistent/homeagent-test"

[[security_association]]
home_addresses = "10.0.0.0/8"
spi = 256
key = "00112233445566778899aabbccddeeff"

[redundancy]
virtual_address = "10.1.0.1"
peers = ["10.1.0.3", "10.1.0.4"]

[[redundancy.security_association]]
peer = "10.1.0.0/24"
spi = 300
key = "ffeeddccbbaa99887766554433221100"
"""
VIRTUAL = "10.1.0.1"


@pytest.fixture
def ha():
    home_agent = HomeAgent(parse(CONFIG), T0)
    home_agent.group.downloaded(T0)  # serving: past the start-up download
    home_agent.group.election.role = home_agent.group.election.role.ACTIVE
    return home_agent


@pytest.mark.parametrize("home_address", ["10.1.0.2", VIRTUAL, "10.1.0.3", "10.1.0.4", "10.1.0.0", "10.1.255.255"],
                         ids=["own", "virtual", "member", "other-member", "network", "broadcast"])
def test_a_reserved_home_address_is_refused_with_129(ha, home_address):
    datagram = request(hoa=ip(home_address), ha=ip(VIRTUAL))
    reply = only_reply(ha.receive_datagram(datagram, ("198.51.100.7", 434), VIRTUAL, T0))
    assert reply.code == ReplyCode.ADMINISTRATIVELY_PROHIBITED
    assert len(ha.bindings) == 0
    assert ha.bindings.last_identification(ip(home_address)) is None


def test_an_ordinary_home_address_beside_them_is_accepted(ha):
    datagram = request(hoa=ip("10.1.0.5"), ha=ip(VIRTUAL))
    reply = only_reply(ha.receive_datagram(datagram, ("198.51.100.7", 434), VIRTUAL, T0))
    assert reply.code == ReplyCode.ACCEPTED


def test_the_reserved_list_is_the_config_s():
    reserved = {str(a) for a in parse(CONFIG).reserved_home_addresses}
    assert reserved == {"10.1.0.2", VIRTUAL, "10.1.0.3", "10.1.0.4", "10.1.0.0", "10.1.255.255"}
