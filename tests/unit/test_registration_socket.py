"""The registration sockets' start-up errors name the setting the address comes from: the Home Agent's
own address, or the group's virtual address (a member taking it over while the old one still holds it
logs the latter; before 2026-12-03 both said ``home_agent.address``)."""

from __future__ import annotations

import socket

import pytest

from homeagent.runtime.daemon import StartupError, _udp_socket


@pytest.mark.parametrize("key", ["home_agent.address", "redundancy.virtual_address"])
def test_an_address_in_use_is_one_line_naming_its_setting(key):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        with pytest.raises(StartupError) as exc:
            _udp_socket("127.0.0.1", port, key=key)
    assert str(exc.value) == f"{key}: cannot bind 127.0.0.1:{port}: Address already in use"


def test_the_default_is_the_home_agents_own_address():
    sock = _udp_socket("127.0.0.1", 0)
    try:
        assert sock.getsockname()[0] == "127.0.0.1" and not sock.getblocking()
    finally:
        sock.close()
