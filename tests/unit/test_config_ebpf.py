"""``[dataplane] backend = "ebpf"`` and its one key of its own, ``extra_interfaces``: accepted where they make
sense, refused by name elsewhere (docs/dataplane.md, "Backend ebpf")."""

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
