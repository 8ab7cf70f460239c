"""``homeagent mn`` options: every number is checked by argparse (one line, exit status 2, before anything
is sent), and each flag given beside --config overrides its part of the config, never ignored."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

import pytest

from homeagent import cli
from homeagent.wire.auth import Algorithm, SecurityAssociation

KEY = "00112233445566778899aabbccddeeff"
NARROW_KEY = "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf"
SECOND_KEY = "b0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
OTHER_KEY = "0f" * 16
NO_CONFIG = ["--home-agent", "127.0.0.2", "--port", "4340", "--spi", "256", "--key", KEY]
REGISTER = ["mn", "register", *NO_CONFIG, "--home-address", "10.1.0.5", "--care-of", "192.0.2.10"]
LOAD = ["mn", "load", *NO_CONFIG, "--first-home-address", "10.1.0.1"]


def refused(capsys, argv: list[str]) -> str:
    """The one error line argparse prints for ``argv``, which must exit with status 2 and run nothing."""
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.splitlines()[-1]


@pytest.mark.parametrize(
    "option, value, expected",
    [
        ("--lifetime", "99999", "must be an integer from 0 to 65535, not '99999'"),  # issue 9: a struct.error
        ("--lifetime", "-1", "must be an integer from 0 to 65535, not '-1'"),
        ("--lifetime", "ten", "must be an integer from 0 to 65535, not 'ten'"),
        ("--port", "0", "must be an integer from 1 to 65535, not '0'"),
        ("--port", "65536", "must be an integer from 1 to 65535, not '65536'"),
        ("--spi", "255", "must be an integer from 256 to 4294967295, not '255'"),  # 0-255 are reserved
        ("--spi", str(1 << 32), f"must be an integer from 256 to 4294967295, not '{1 << 32}'"),
        ("--timeout", "0", "must be a number of seconds above 0, not '0'"),
        ("--timeout", "-1", "must be a number of seconds above 0, not '-1'"),
        ("--timeout", "inf", "must be a number of seconds above 0, not 'inf'"),
        ("--retries", "-1", "must be an integer of at least 0, not '-1'"),
        ("--key", "00112233", "must be at least 16 bytes, not 4"),
        ("--key", "not hex at all, not even a bit", "must be hex digits"),
    ],
)
def test_register_refuses_out_of_range_numbers(capsys, option, value, expected):
    line = refused(capsys, [*REGISTER, option, value])
    assert line == f"homeagent mn register: error: argument {option}: {expected}"


@pytest.mark.parametrize(
    "option, value, expected",
    [
        ("--mobile-nodes", "0", "must be an integer of at least 1, not '0'"),
        ("--window", "0", "must be an integer of at least 1, not '0'"),
        ("--count", "0", "must be an integer of at least 1, not '0'"),
        ("--duration", "0", "must be a number of seconds above 0, not '0'"),
        ("--rate", "-5", "must be a number of requests a second above 0, not '-5'"),
        ("--lifetime", "65536", "must be an integer from 0 to 65535, not '65536'"),
        ("--port", "70000", "must be an integer from 1 to 65535, not '70000'"),
        ("--home-network", "10.1.0.1/16", "'10.1.0.1/16' is not an IPv4 prefix such as 10.1.0.0/16"),
    ],
)
def test_load_refuses_out_of_range_numbers(capsys, option, value, expected):
    line = refused(capsys, [*LOAD, option, value])
    assert line == f"homeagent mn load: error: argument {option}: {expected}"


def test_deregister_checks_the_same_options(capsys):
    line = refused(capsys, ["mn", "deregister", *NO_CONFIG[:-4], "--spi", "7", "--key", KEY,
                            "--home-address", "10.1.0.5"])
    assert line.endswith("argument --spi: must be an integer from 256 to 4294967295, not '7'")


@pytest.mark.parametrize(
    "option, value, parsed",
    [("--lifetime", "0", 0), ("--lifetime", "65535", 65535), ("--port", "65535", 65535),
     ("--spi", "256", 256), ("--spi", "4294967295", 4294967295), ("--retries", "0", 0),
     ("--timeout", "0.05", 0.05)],
)
def test_the_bounds_themselves_are_allowed(option, value, parsed):
    args = cli._parser().parse_args([*REGISTER, option, value])
    assert getattr(args, option[2:]) == parsed


# -- --config and the flags beside it -------------------------------------------------------------------


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """Two associations for 10.1.0.0/16 (SPIs 256 and 258) and a longer prefix, 10.1.5.0/24 (SPI 259)."""
    path = tmp_path / "homeagent.toml"
    path.write_text(f"""
[home_agent]
address = "127.0.0.2"
port = 4340
home_network = "10.1.0.0/16"
state_dir = "{tmp_path}/state"

[[security_association]]
home_addresses = "10.1.0.0/16"
spi = 256
key = "{KEY}"

[[security_association]]
home_addresses = "10.1.0.0/16"
spi = 258
algorithm = "hmac-sha256"
key = "{SECOND_KEY}"

[[security_association]]
home_addresses = "10.1.5.0/24"
spi = 259
key = "{NARROW_KEY}"
""")
    return path


def target(*argv: str, home_address: str = "10.1.0.5") -> tuple[IPv4Address, int, SecurityAssociation]:
    args = cli._parser().parse_args(["mn", "register", "--home-address", home_address,
                                     "--care-of", "192.0.2.10", *argv])
    return cli._target(args, IPv4Address(home_address))


def sa(spi: int, key: str, algorithm: str = "hmac-md5") -> SecurityAssociation:
    return SecurityAssociation(spi, Algorithm(algorithm), bytes.fromhex(key))


def test_the_config_alone(config):
    assert target("--config", str(config)) == (IPv4Address("127.0.0.2"), 4340, sa(256, KEY))


@pytest.mark.parametrize("action", ["register", "deregister", "up", "load"])
def test_a_groups_mobile_nodes_register_with_its_virtual_address(config, action):
    """Every ``mn`` action, not ``mn up`` only: a member discards what reaches its own address unless it
    serves it (before 2026-12-03, ``mn register --config`` with a group's config waited 15 s for nothing)."""
    config.write_text(config.read_text() + '''
[redundancy]
virtual_address = "127.0.0.10"
peers = ["127.0.0.3"]

[[redundancy.security_association]]
peer = "127.0.0.0/24"
spi = 300
key = "ffeeddccbbaa99887766554433221100"
''')
    extra = {"register": ["--home-address", "10.1.0.5", "--care-of", "192.0.2.10"],
             "deregister": ["--home-address", "10.1.0.5"], "up": ["--home-address", "10.1.0.5", "--care-of",
                                                                 "192.0.2.10"], "load": []}[action]
    args = cli._parser().parse_args(["mn", action, "--config", str(config), *extra])
    assert cli._target(args, IPv4Address("10.1.0.5"))[:2] == (IPv4Address("127.0.0.10"), 4340)
    args = cli._parser().parse_args(["mn", action, "--config", str(config), "--home-agent", "127.0.0.3", *extra])
    assert cli._target(args, IPv4Address("10.1.0.5"))[0] == IPv4Address("127.0.0.3"), "the flag wins"


def test_the_longest_prefix_as_the_home_agent_picks_it(config):
    assert target("--config", str(config), home_address="10.1.5.9")[2] == sa(259, NARROW_KEY)


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--spi", "258"], sa(258, SECOND_KEY, "hmac-sha256")),
        (["--key", OTHER_KEY], sa(256, OTHER_KEY)),
        (["--algorithm", "keyed-md5"], sa(256, KEY, "keyed-md5")),
        (["--spi", "258", "--key", OTHER_KEY], sa(258, OTHER_KEY, "hmac-sha256")),
        (["--spi", "258", "--algorithm", "hmac-md5"], sa(258, SECOND_KEY)),
        (["--spi", "999", "--key", OTHER_KEY], sa(999, OTHER_KEY)),  # one of the operator's own
        (["--spi", "999", "--key", OTHER_KEY, "--algorithm", "hmac-sha256"],
         sa(999, OTHER_KEY, "hmac-sha256")),
    ],
    ids=["spi", "key", "algorithm", "spi-key", "spi-algorithm", "own-spi-key", "own-spi-key-algorithm"],
)
def test_each_flag_overrides_its_part_of_the_config(config, flags, expected):
    assert target("--config", str(config), *flags)[2] == expected


def test_home_agent_and_port_override_the_config(config):
    home_agent, port, _ = target("--config", str(config), "--home-agent", "127.0.0.9", "--port", "434")
    assert (home_agent, port) == (IPv4Address("127.0.0.9"), 434)


def test_an_spi_the_config_lacks_for_the_home_address_is_an_error(config):
    with pytest.raises(SystemExit, match="no security association with SPI 999 in .* covers 10.1.0.5"):
        target("--config", str(config), "--spi", "999")
    # SPI 256 is configured, for 10.1.0.0/16; the Home Agent looks only at the longest prefix, 10.1.5.0/24.
    with pytest.raises(SystemExit, match="no security association with SPI 256 in .* covers 10.1.5.9"):
        target("--config", str(config), "--spi", "256", home_address="10.1.5.9")


def test_a_key_for_a_home_address_no_association_covers_needs_an_spi(config):
    with pytest.raises(SystemExit, match=r"covers 10\.9\.0\.1 \(give --spi with --key\)"):
        target("--config", str(config), "--key", OTHER_KEY, home_address="10.9.0.1")


def test_without_config(config):
    assert target(*NO_CONFIG) == (IPv4Address("127.0.0.2"), 4340, sa(256, KEY))
    assert target(*NO_CONFIG[:2], *NO_CONFIG[4:])[1] == 434
    with pytest.raises(SystemExit, match="give --home-agent or --config"):
        target(*NO_CONFIG[2:])
    with pytest.raises(SystemExit, match="give --key with --spi"):
        target(*NO_CONFIG[:-2])
    with pytest.raises(SystemExit, match="give --spi and --key, or --config"):
        target(*NO_CONFIG[:4], "--key", KEY)


def test_the_help_says_flags_override_the_config(capsys):
    with pytest.raises(SystemExit):
        cli.main(["mn", "register", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Each flag given overrides its part and is never ignored" in text


# -- mn load's home addresses ---------------------------------------------------------------------------


def test_home_addresses_skip_the_reserved_and_keep_the_count():
    a = IPv4Address
    skip = {a("10.1.0.0"), a("10.1.0.2"), a("10.1.0.3")}
    assert cli._home_addresses(a("10.1.0.0"), 3, skip) == [a("10.1.0.1"), a("10.1.0.4"), a("10.1.0.5")]
    assert cli._home_addresses(a("255.255.255.254"), 2, set()) == [a("255.255.255.254"), a("255.255.255.255")]
    with pytest.raises(SystemExit, match="there are not 3 home addresses from 255.255.255.254"):
        cli._home_addresses(a("255.255.255.254"), 3, set())


def test_a_socket_the_system_refuses_is_one_line_not_a_traceback(capsys):
    """A broadcast Home Agent address: the kernel refuses to connect a socket without SO_BROADCAST to it."""
    from homeagent.cli import main

    argv = [*REGISTER, "--timeout", "0.1", "--retries", "0"]
    argv[argv.index("--home-agent") + 1] = "255.255.255.255"
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("homeagent: ") and "Traceback" not in err[0]
