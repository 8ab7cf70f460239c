"""The control socket: one JSON request per connection. Malformed requests get an error answer or a
closed connection; the daemon keeps serving both the control socket and registrations."""

from __future__ import annotations

import socket
import stat

import pytest

from homeagent.runtime import control

from .conftest import rrq


def ask(path, payload: bytes, timeout: float = 5.0) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


@pytest.fixture
def ha(daemons):
    return daemons.start("control")


def test_control_socket_is_private(ha):
    mode = ha.control_socket.stat().st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) & 0o077 == 0, oct(mode)


@pytest.mark.parametrize(
    "payload",
    [
        b"not json\n",
        b"[1, 2]\n",
        b'{"command": "reboot"}\n',
        b'{"command": "bindings", "home_address": "10.1.0.300"}\n',
        b"\xff\xfe\xfd\n",
        b"{}\n",
        b'{"command": "remove", "prefix": "10.1.0.5/16"}\n',
        b'{"command": "remove", "prefix": null}\n',
        b'{"command": "remove", "prefix": ["10.1.0.0/16"]}\n',
        b'{"command": "remove", "all": "yes"}\n',
    ],
    ids=["garbage", "list", "unknown-command", "bad-address", "not-utf8", "no-command", "prefix-host-bits",
         "prefix-null", "prefix-list", "all-not-true"],
)
def test_malformed_requests_get_an_error_answer(ha, payload):
    answer = ask(ha.control_socket, payload)
    assert answer.startswith(b'{"ok": false'), answer
    assert ha.status()["role"] == "active"


def test_oversized_and_silent_clients_do_not_stop_the_daemon(ha):
    answer = ask(ha.control_socket, b"x" * 200_000 + b"\n")  # over the 64 KiB limit: closed, or refused
    assert answer == b"" or answer.startswith(b'{"ok": false'), answer[:100]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as idle:  # connects and says nothing
        idle.connect(str(ha.control_socket))
        assert ha.status()["bindings"] == 0
        mn = ha.mn()
        assert mn.exchange(rrq("10.1.0.1", "192.0.2.1")).code == 0
        mn.close()
    assert control.request(ha.control_socket, "bindings", home_address="10.1.0.1")[0]["care_of_address"] == (
        "192.0.2.1"
    )


def test_deeply_nested_json_gets_an_error_answer(ha):
    ha.tolerate_traceback = True
    answer = ask(ha.control_socket, b"[" * 60_000 + b"\n")
    assert ha.status()["role"] == "active"  # the daemon survives either way
    assert answer.startswith(b'{"ok": false'), "the connection was closed without an answer"
    assert "Traceback" not in ha.stderr()
