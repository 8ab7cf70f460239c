"""TOML configuration: the example loads, and every error names the key at fault."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

import homeagent
from homeagent.config import ConfigError, load, parse
from homeagent.wire.auth import Algorithm, SecurityAssociation

EXAMPLE = Path(homeagent.__file__).parent / "examples" / "homeagent.toml"

HOME_AGENT = """
[home_agent]
address = "192.0.2.1"
"""

SA = """
[[security_association]]
home_addresses = "10.1.0.0/16"
spi = 256
algorithm = "hmac-md5"
key = "00112233445566778899aabbccddeeff"
"""


def test_example_config_loads():
    config = load(EXAMPLE)
    ha = config.home_agent
    assert ha.address == IPv4Address("127.0.0.2")
    assert ha.port == 4340
    assert ha.home_network == IPv4Network("10.1.0.0/16")
    assert (ha.max_lifetime, ha.replay_tolerance, ha.simultaneous_bindings) == (1800, 7, 3)
    assert ha.state_dir == Path("/var/lib/homeagent")  # not /tmp: any local user could take it there
    assert config.control_socket == Path("/var/lib/homeagent/control.sock")
    assert config.log.level == "info"
    [sa] = config.security_associations
    assert sa.home_addresses == IPv4Network("10.1.0.0/16")
    assert sa.association == SecurityAssociation(256, Algorithm.HMAC_MD5, bytes.fromhex(
        "00112233445566778899aabbccddeeff"))
    assert config.dataplane.backend == "none"
    assert config.source == EXAMPLE


def test_defaults():
    config = parse(HOME_AGENT)
    ha = config.home_agent
    assert ha.port == 434
    assert ha.home_network == IPv4Network("0.0.0.0/0")
    assert (ha.max_lifetime, ha.replay_tolerance, ha.simultaneous_bindings) == (1800, 7, 3)
    assert config.security_associations == ()
    assert config.dataplane.backend == "none"


@pytest.mark.parametrize("algorithm", [a.value for a in Algorithm])
def test_every_algorithm_is_accepted(algorithm):
    config = parse(HOME_AGENT + SA.replace('"hmac-md5"', f'"{algorithm}"'))
    assert config.security_associations[0].association.algorithm == Algorithm(algorithm)


def test_boundaries_that_are_allowed():
    config = parse(HOME_AGENT.replace('"192.0.2.1"', '"192.0.2.1"\nmax_lifetime = 65534\nport = 65535\n'
                                      'simultaneous_bindings = 0\nreplay_tolerance = 0')
                   + SA.replace("spi = 256", "spi = 4294967295").replace(
                       '"00112233445566778899aabbccddeeff"', '"' + "ab" * 64 + '"'))
    assert config.home_agent.max_lifetime == 65534 and config.home_agent.port == 65535
    assert config.home_agent.simultaneous_bindings == 0
    assert config.security_associations[0].association.spi == 0xFFFFFFFF
    assert len(config.security_associations[0].association.key) == 64


def ha_with(line: str) -> str:
    return HOME_AGENT + line + "\n" + SA


def sa_with(old: str, new: str) -> str:
    assert old in SA
    return HOME_AGENT + SA.replace(old, new)


ERRORS = [
    # (toml text, key the error must name)
    ("bogus = 1\n" + HOME_AGENT, "bogus"),
    (ha_with("bogus = 1"), "home_agent.bogus"),
    (HOME_AGENT + SA.replace("spi = 256", "spi = 256\nbogus = 2"), "security_association[0].bogus"),
    (HOME_AGENT + "[dataplane]\nbackend = \"none\"\nbogus = 1\n", "dataplane.bogus"),
    (SA, "home_agent"),
    ("[home_agent]\nport = 434\n", "home_agent.address"),
    ('[home_agent]\naddress = "not-an-address"\n', "home_agent.address"),
    ('[home_agent]\naddress = "0.0.0.0"\n', "home_agent.address"),
    ('[home_agent]\naddress = "224.0.0.5"\n', "home_agent.address"),
    (ha_with("port = 0"), "home_agent.port"),
    (ha_with("port = 65536"), "home_agent.port"),
    (ha_with('port = "434"'), "home_agent.port"),
    (ha_with("port = true"), "home_agent.port"),
    (ha_with("port = 434.0"), "home_agent.port"),
    (ha_with("max_lifetime = 0"), "home_agent.max_lifetime"),
    (ha_with("max_lifetime = 65535"), "home_agent.max_lifetime"),
    (ha_with("max_lifetime = -1"), "home_agent.max_lifetime"),
    (ha_with("replay_tolerance = -1"), "home_agent.replay_tolerance"),
    (ha_with("simultaneous_bindings = 11"), "home_agent.simultaneous_bindings"),
    (ha_with('home_network = "10.1.0.1/16"'), "home_agent.home_network"),
    (ha_with('home_network = "10.1.0.0/33"'), "home_agent.home_network"),
    (ha_with('home_network = "banana"'), "home_agent.home_network"),
    (ha_with('state_dir = ""'), "home_agent.state_dir"),
    (sa_with('"00112233445566778899aabbccddeeff"', '"0011223344556677889g"'), "security_association[0].key"),
    (sa_with('"00112233445566778899aabbccddeeff"', '"00112233445566778899aabbccddeef"'),
     "security_association[0].key"),
    (sa_with('"00112233445566778899aabbccddeeff"', "1234"), "security_association[0].key"),
    (sa_with('"00112233445566778899aabbccddeeff"', '"00112233445566778899aabbccddee"'),
     "security_association[0].key"),  # 15 bytes: shorter than 128 bits
    (sa_with('key = "00112233445566778899aabbccddeeff"', ""), "security_association[0].key"),
    (sa_with("spi = 256", "spi = 255"), "security_association[0].spi"),
    (sa_with("spi = 256", "spi = 0"), "security_association[0].spi"),
    (sa_with("spi = 256", "spi = 4294967296"), "security_association[0].spi"),
    (sa_with("spi = 256", ""), "security_association[0].spi"),
    (sa_with('"hmac-md5"', '"hmac-sha1"'), "security_association[0].algorithm"),
    (sa_with('"hmac-md5"', '"HMAC-MD5"'), "security_association[0].algorithm"),
    (sa_with('"10.1.0.0/16"', '"10.1.0.0/99"'), "security_association[0].home_addresses"),
    (sa_with('"10.1.0.0/16"', '"10.1.0.5/16"'), "security_association[0].home_addresses"),
    (sa_with('home_addresses = "10.1.0.0/16"', ""), "security_association[0].home_addresses"),
    (HOME_AGENT + SA + SA, "security_association[1].spi"),
    ("security_association = 5\n" + HOME_AGENT, "security_association"),
    (HOME_AGENT + "[dataplane]\nbackend = \"kernel\"\n", "dataplane.backend"),
    (HOME_AGENT + "[dataplane]\nbackend = \"userspace\"\n", "dataplane.interface"),
    (HOME_AGENT + "[dataplane]\nbackend = \"none\"\nannounce_rate = 5000\n", "dataplane.announce_rate"),
    (HOME_AGENT + "[dataplane]\nbackend = \"userspace\"\ninterface = \"eth0\"\nannounce_rate = 5\n",
     "dataplane.announce_rate"),
    (HOME_AGENT + "[dataplane]\nbackend = \"userspace\"\ninterface = \"eth0\"\nannounce_rate = \"fast\"\n",
     "dataplane.announce_rate"),
    ("home_agent = 5\n", "home_agent"),
    (HOME_AGENT + "[log]\nlevel = \"verbose\"\n", "log.level"),
    (HOME_AGENT + "[log]\nlevel = \"INFO\"\n", "log.level"),
    (HOME_AGENT + "[log]\nlevel = 10\n", "log.level"),
    (HOME_AGENT + "[log]\nlevel = \"info\"\nfile = \"/var/log/ha\"\n", "log.file"),
    ("log = \"debug\"\n" + HOME_AGENT, "log"),
]


@pytest.mark.parametrize("text, key", ERRORS, ids=[f"{i}-{k}" for i, (_, k) in enumerate(ERRORS)])
def test_error_names_its_key(text, key):
    with pytest.raises(ConfigError) as info:
        parse(text)
    assert info.value.key == key
    assert str(info.value).startswith(f"{key}: ")
    assert info.value.problem
    assert isinstance(info.value, ValueError)


def test_a_bad_redundancy_section_is_refused_by_name():
    # Redundancy was refused outright at first and is being built now; either way a section that cannot
    # configure it is refused with a key under "redundancy", never silently ignored.
    with pytest.raises(ConfigError) as info:
        parse(HOME_AGENT + "[redundancy]\nbogus = 1\n")
    assert info.value.key.startswith("redundancy")


def test_second_association_error_names_its_index():
    text = HOME_AGENT + SA + SA.replace("spi = 256", "spi = 12")
    with pytest.raises(ConfigError) as info:
        parse(text)
    assert info.value.key == "security_association[1].spi"


def test_same_spi_for_another_prefix_is_allowed():
    config = parse(HOME_AGENT + SA + SA.replace("10.1.0.0/16", "10.2.0.0/16"))
    assert len(config.security_associations) == 2


def test_invalid_toml():
    with pytest.raises(ConfigError) as info:
        parse("[home_agent\n")
    assert "not valid TOML" in info.value.problem


def test_load_names_an_unreadable_file(tmp_path):
    missing = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as info:
        load(missing)
    assert info.value.key == str(missing)


def test_load_reads_a_file(tmp_path):
    path = tmp_path / "ha.toml"
    path.write_text(HOME_AGENT + SA)
    config = load(path)
    assert config.source == path and len(config.security_associations) == 1


def test_load_refuses_a_file_that_is_not_utf8_with_one_line(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes(("# caf\u00e9\n" + HOME_AGENT + SA).encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        load(path)
    assert info.value.key == str(path) and "not UTF-8" in info.value.problem


def test_a_state_dir_with_a_nul_character_is_refused():
    with pytest.raises(ConfigError) as info:
        parse(HOME_AGENT.replace('[home_agent]\n', '[home_agent]\nstate_dir = "/tmp/x\\u0000y"\n') + SA)
    assert info.value.key == "home_agent.state_dir"


REDUNDANCY = HOME_AGENT + '[redundancy]\nvirtual_address = "10.9.0.10"\n'


def test_announce_rate_paces_the_takeovers_announcements_without_a_data_plane_too():
    """With address_method = "interface" the member announces the home addresses at a takeover itself
    (runtime/address.py) when there is no data plane: at ``announce_rate``, which it may then set."""
    config = parse(REDUNDANCY + 'address_method = "interface"\ninterface = "eth0"\n'
                   '[dataplane]\nannounce_rate = 50000\n')
    assert config.dataplane.announce_rate == 50000.0


def test_address_method_defaults_to_bind():
    red = parse(REDUNDANCY).redundancy
    assert red is not None and (red.address_method, red.interface) == ("bind", None)


def test_interface_method_names_its_interface():
    red = parse(REDUNDANCY + 'address_method = "interface"\ninterface = "eth0"\n').redundancy
    assert red is not None and (red.address_method, red.interface) == ("interface", "eth0")


@pytest.mark.parametrize("extra, key", [
    ('address_method = "interface"\n', "redundancy.interface"),  # where would the address go?
    ('address_method = "vrrp"\n', "redundancy.address_method"),
    ('address_method = "interface"\ninterface = ""\n', "redundancy.interface"),
    ('interface = 3\n', "redundancy.interface"),
])
def test_a_bad_address_method_is_refused_by_name(extra, key):
    with pytest.raises(ConfigError) as info:
        parse(REDUNDANCY + extra)
    assert info.value.key == key


def test_preempt_delay_defaults_to_zero_and_is_read_in_seconds():
    red = parse(REDUNDANCY).redundancy
    assert red is not None and red.preempt_delay == 0.0  # today's behaviour: preempt at once
    red = parse(REDUNDANCY + "preempt_delay = 30\n").redundancy
    assert red is not None and red.preempt_delay == 30.0


@pytest.mark.parametrize("value", ["-1", "3601", '"30"', "true"])
def test_a_bad_preempt_delay_is_refused_by_name(value):
    with pytest.raises(ConfigError) as info:
        parse(REDUNDANCY + f"preempt_delay = {value}\n")
    assert info.value.key == "redundancy.preempt_delay"


# -- [log] and state_dir ------------------------------------------------------------------------------


def test_log_level_is_unset_unless_the_file_sets_it():
    """None: ``homeagent run --log-level`` decides at start (info without it), and a reload keeps the
    level the daemon runs at."""
    assert parse(HOME_AGENT).log.level is None
    assert parse(HOME_AGENT + "[log]\n").log.level is None


@pytest.mark.parametrize("level", ["debug", "info", "warning", "error"])
def test_every_log_level_is_accepted(level):
    assert parse(HOME_AGENT + f'[log]\nlevel = "{level}"\n').log.level == level


def test_state_dir_defaults_to_var_lib():
    assert parse(HOME_AGENT).home_agent.state_dir == Path("/var/lib/homeagent")


def test_state_dir_tilde_is_the_home_of_whoever_reads_the_file(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    config = parse(ha_with('state_dir = "~/.local/state/homeagent"'))
    assert config.home_agent.state_dir == tmp_path / ".local/state/homeagent"
    assert config.control_socket == tmp_path / ".local/state/homeagent/control.sock"
    # only a leading ~ is expanded
    assert parse(ha_with('state_dir = "/srv/~ha"')).home_agent.state_dir == Path("/srv/~ha")


def test_state_dir_of_an_unknown_user_names_its_key():
    with pytest.raises(ConfigError) as info:
        parse(ha_with('state_dir = "~no-such-user-homeagent/state"'))
    assert info.value.key == "home_agent.state_dir"
