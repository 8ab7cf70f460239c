"""HomeAgent.reload (SIGHUP): what can change while bindings are held is applied to requests still to
come, every other difference is returned as a key that needs a restart and left as it runs."""

from __future__ import annotations

import pytest

from homeagent.config import parse
from homeagent.core.home_agent import HomeAgent
from homeagent.core.peers import Membership
from homeagent.wire.auth import Algorithm, SecurityAssociation
from homeagent.wire.registration import ReplyCode

from .support import CONFIG, COA2, KEY, SOURCE, SPI, T0, ip, make_ha, only_reply, request, snapshot

NEW_KEY = bytes.fromhex("0f1e2d3c4b5a69788796a5b4c3d2e1f0")
NEW_SA = SecurityAssociation(SPI, Algorithm.HMAC_MD5, NEW_KEY)
LOCAL = "192.0.2.1"


def config(max_lifetime: int = 1800, simultaneous_bindings: int = 3, key: bytes = KEY,
           **replace: tuple[str, str]):
    """The unit tests' config with these settings, the key for 10.1.0.0/16 and text ``replace``d."""
    text = CONFIG.format(max_lifetime=max_lifetime, simultaneous_bindings=simultaneous_bindings)
    text = text.replace(KEY.hex(), key.hex())
    for old, new in replace.values():
        assert old in text, old
        text = text.replace(old, new)
    return parse(text)


def register(ha: HomeAgent, now: float, sa: SecurityAssociation = SecurityAssociation(SPI, Algorithm.HMAC_MD5, KEY),
             **kw):
    return only_reply(ha.receive_datagram(request(now=now, key=sa.key, **kw), SOURCE, LOCAL, now), sa)


@pytest.fixture
def ha() -> HomeAgent:
    home_agent = make_ha()
    assert register(home_agent, T0).code == ReplyCode.ACCEPTED
    return home_agent


def test_nothing_changed_changes_nothing(ha):
    before = snapshot(ha)
    assert ha.reload(config()) == []
    assert snapshot(ha) == before
    assert register(ha, T0 + 1, coa=COA2).code == ReplyCode.ACCEPTED


def test_a_new_key_is_used_from_then_on_and_the_old_one_gets_131(ha):
    before = snapshot(ha)
    violations = ha.registrar.violations
    assert ha.reload(config(key=NEW_KEY)) == []
    assert ha.registrar.violations is violations, "the violations' count and log budget must carry on"
    assert snapshot(ha) == before, "a reload touched a binding"
    stale = only_reply(ha.receive_datagram(request(now=T0 + 1, coa=COA2), SOURCE, LOCAL, T0 + 1), NEW_SA)
    assert stale.code == ReplyCode.MOBILE_NODE_FAILED_AUTHENTICATION
    assert register(ha, T0 + 2, NEW_SA, coa=COA2).code == ReplyCode.ACCEPTED
    assert ha.config.security_associations[0].association == NEW_SA


def test_a_lower_max_lifetime_caps_new_registrations_and_leaves_bindings_alone(ha):
    [held] = ha.bindings
    assert held.lifetime == 600
    assert ha.reload(config(max_lifetime=60)) == []
    assert [b.lifetime for b in ha.bindings] == [600]
    reply = register(ha, T0 + 1, hoa=ip("10.1.0.6"), lifetime=600)
    assert (reply.code, reply.lifetime) == (ReplyCode.ACCEPTED, 60)
    assert ha.config.home_agent.max_lifetime == 60


def test_simultaneous_bindings_off_gives_code_1():
    ha = make_ha()
    ha.reload(config(simultaneous_bindings=0))
    assert register(ha, T0).code == ReplyCode.ACCEPTED_NO_SIMULTANEOUS_BINDINGS
    ha.reload(config(simultaneous_bindings=3))
    assert register(ha, T0 + 1, hoa=ip("10.1.0.6")).code == ReplyCode.ACCEPTED


def test_replay_tolerance_is_reloaded():
    ha = make_ha()
    ahead = T0 + 30  # a mobile node whose clock is 30 s ahead of ours
    assert only_reply(ha.receive_datagram(request(now=ahead), SOURCE, LOCAL, T0)).code == (
        ReplyCode.IDENTIFICATION_MISMATCH)
    ha.reload(config(tolerance=("replay_tolerance = 7", "replay_tolerance = 60")))
    assert only_reply(ha.receive_datagram(request(now=ahead), SOURCE, LOCAL, T0)).code == ReplyCode.ACCEPTED
    assert ha.config.home_agent.replay_tolerance == 60


@pytest.mark.parametrize("old, new, key", [
    ('address = "192.0.2.1"', 'address = "192.0.2.9"', "home_agent.address"),
    ('[home_agent]', '[home_agent]\nport = 4340', "home_agent.port"),
    ('home_network = "10.1.0.0/16"', 'home_network = "10.1.0.0/17"', "home_agent.home_network"),
    ('state_dir = "/nonexistent/homeagent-test"', 'state_dir = "/nonexistent/other"', "home_agent.state_dir"),
    ('[home_agent]', '[redundancy]\nvirtual_address = "192.0.2.100"\n\n[home_agent]', "redundancy"),
])
def test_a_key_that_needs_a_restart_is_named_and_left_as_it_runs(ha, old, new, key):
    running = ha.config
    restart = ha.reload(config(max_lifetime=60, change=(old, new)))
    assert restart == [key]
    assert ha.config.home_agent.max_lifetime == 60, "what can change did change"
    assert (ha.config.home_agent.address, ha.config.home_agent.port, ha.config.home_agent.home_network,
            ha.config.home_agent.state_dir, ha.config.redundancy) == (
        running.home_agent.address, running.home_agent.port, running.home_agent.home_network,
        running.home_agent.state_dir, running.redundancy)
    assert register(ha, T0 + 1, coa=COA2).code == ReplyCode.ACCEPTED  # still served as it was


def test_the_log_level_is_carried_for_the_runtime(ha):
    """The core has no logger to set; the daemon reads the level from the config the core keeps."""
    assert ha.reload(config(log=("[home_agent]", '[log]\nlevel = "debug"\n\n[home_agent]'))) == []
    assert ha.config.log.level == "debug"


# -- in a group -------------------------------------------------------------------------------------

GROUP = """
[home_agent]
address = "192.0.2.1"
home_network = "10.1.0.0/16"
state_dir = "/nonexistent/homeagent-test"

[[security_association]]
home_addresses = "10.1.0.0/16"
spi = 256
key = "00112233445566778899aabbccddeeff"

[redundancy]
virtual_address = "192.0.2.100"
peers = ["192.0.2.2"]
priority = {priority}

[[redundancy.security_association]]
peer = "192.0.2.0/24"
spi = 1000
key = "{key}"
"""
GROUP_KEY = "2b7e151628aed2a6abf7158809cf4f3c"
NEW_GROUP_KEY = "3c4f4f0988517babf7158809cf4f3c2b"


def test_group_restart_keys_are_named_and_member_associations_rekeyed():
    ha = HomeAgent(parse(GROUP.format(priority=100, key=GROUP_KEY)), T0)
    assert ha.group is not None and ha.registrar.report_accepted
    restart = ha.reload(parse(GROUP.format(priority=200, key=GROUP_KEY)))
    assert restart == ["redundancy.priority"]
    assert ha.config.redundancy is not None and ha.config.redundancy.priority == 100
    assert ha.registrar.report_accepted, "accepted registrations must still be replicated"
    if not hasattr(Membership, "rekey"):
        pytest.skip("Membership.rekey is not there yet (core/peers.py is being rewritten)")
    assert ha.reload(parse(GROUP.format(priority=100, key=NEW_GROUP_KEY))) == []
    [member] = ha.group.membership
    assert member.association.key == bytes.fromhex(NEW_GROUP_KEY)
    assert ha.config.redundancy.security_associations[0].association.key == bytes.fromhex(NEW_GROUP_KEY)


def test_dropping_the_group_needs_a_restart():
    ha = HomeAgent(parse(GROUP.format(priority=100, key=GROUP_KEY)), T0)
    lone = GROUP.format(priority=100, key=GROUP_KEY).split("[redundancy]")[0]
    assert ha.reload(parse(lone)) == ["redundancy"]
    assert ha.config.redundancy is not None and ha.group is not None
