"""``[dataplane] backend = "ebpf"`` and its keys of its own, ``extra_interfaces`` and ``virtual_mac``:
accepted where they make sense, refused by name elsewhere (docs/dataplane.md, "Backend ebpf")."""

from __future__ import annotations

import pytest

from homeagent.config import Backend, ConfigError, parse
from unit.test_config import HOME_AGENT


def test_the_ebpf_backend_with_its_links():
    config = parse(HOME_AGENT + '[dataplane]\nbackend = "ebpf"\ninterface = "eth0"\nextra_interfaces = ["eth1"]\n')
    assert config.dataplane.backend is Backend.EBPF
    assert config.dataplane.interface == "eth0" and config.dataplane.extra_interfaces == ("eth1",)


@pytest.mark.parametrize("text, key", [
    ('backend = "ebpf"\n', "dataplane.interface"),
    ('backend = "userspace"\ninterface = "eth0"\nextra_interfaces = ["eth1"]\n', "dataplane.extra_interfaces"),
    ('backend = "ebpf"\ninterface = "eth0"\nextra_interfaces = "eth1"\n', "dataplane.extra_interfaces"),
    ('backend = "ebpf"\ninterface = "eth0"\nextra_interfaces = ["a-name-longer-than-15"]\n',
     "dataplane.extra_interfaces"),
    ('backend = "ebpf"\ninterface = "eth0"\nextra_interfaces = ["eth0"]\n', "dataplane.extra_interfaces"),
])
def test_what_is_refused_names_its_key(text, key):
    with pytest.raises(ConfigError) as caught:
        parse(HOME_AGENT + "[dataplane]\n" + text)
    assert caught.value.key == key


EBPF = '[dataplane]\nbackend = "ebpf"\ninterface = "eth0"\n'


def test_the_virtual_mac_auto_is_the_same_on_every_member_and_names_the_group():
    """"auto": 02:48:41 (locally administered, unicast; "HA") and the virtual address's last three bytes."""
    from unit.test_config import REDUNDANCY

    config = parse(REDUNDANCY + EBPF + 'virtual_mac = "auto"\n')
    assert config.dataplane.virtual_mac == bytes.fromhex("02484109000a")  # virtual address 10.9.0.10
    other = parse(REDUNDANCY.replace('"10.9.0.10"', '"10.9.0.11"') + EBPF + 'virtual_mac = "auto"\n')
    assert other.dataplane.virtual_mac != config.dataplane.virtual_mac, "another group, another MAC"
    given = parse(REDUNDANCY + EBPF + 'virtual_mac = "02:00:5e:00:01:33"\n')
    assert given.dataplane.virtual_mac == bytes.fromhex("02005e000133")
    assert parse(REDUNDANCY + EBPF).dataplane.virtual_mac is None, "off unless asked for"


@pytest.mark.parametrize("text, why", [
    (EBPF + 'virtual_mac = "auto"\n', "only with [redundancy]"),
    ('[dataplane]\nbackend = "userspace"\ninterface = "eth0"\nvirtual_mac = "auto"\n', 'only with backend = "ebpf"'),
    (EBPF + 'virtual_mac = "01:00:5e:00:00:01"\n', "unicast"),
    (EBPF + 'virtual_mac = "00:00:00:00:00:00"\n', "unicast"),
    (EBPF + 'virtual_mac = "02:48:41:01:00"\n', '"auto" or a MAC'),
    (EBPF + 'virtual_mac = "02:48:41:01:00:zz"\n', '"auto" or a MAC'),
    (EBPF + 'virtual_mac = "02:48:41: 0:1 :00"\n', '"auto" or a MAC'),  # fromhex would skip the spaces
    (EBPF + 'virtual_mac = "02:48:41:01:00:0a "\n', '"auto" or a MAC'),
    (EBPF + 'virtual_mac = true\n', ""),
])
def test_a_virtual_mac_that_cannot_work_is_refused(text, why):
    from unit.test_config import REDUNDANCY

    document = (REDUNDANCY if "only with [redundancy]" not in why else HOME_AGENT) + text
    with pytest.raises(ConfigError) as caught:
        parse(document)
    assert caught.value.key == "dataplane.virtual_mac" and why in str(caught.value)
