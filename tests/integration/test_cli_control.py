"""``homeagent status|bindings|remove|role`` when no daemon answers as one should: each case ends in one
line, ``homeagent: ...``, and exit status 1, never a traceback (issue 9). The "daemons" here are sockets
this test holds, answering as told."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from homeagent.runtime import control

from .conftest import Factory, homeagent

COMMANDS = [["status"], ["status", "--json"], ["bindings"], ["remove", "--home-address", "10.1.0.5"],
            ["role", "standby"]]
IDS = ["status", "status-json", "bindings", "remove", "role"]

Behaviour = Callable[[socket.socket], None]


@pytest.fixture
def member(daemons: Factory):
    """A configuration whose daemon is never started; its state directory exists, empty."""
    ha = daemons.config("deadsocket")
    ha.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    return ha


@pytest.fixture
def impostor(member) -> Iterator[Callable[[Behaviour], None]]:
    """Listen on the member's control socket and treat every connection with ``behaviour``."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stop = threading.Event()
    threads = []

    def start(behaviour: Behaviour) -> None:
        listener.bind(str(member.control_socket))
        listener.listen(8)
        listener.settimeout(0.1)

        def serve() -> None:
            while not stop.is_set():
                try:
                    conn, _ = listener.accept()
                except (TimeoutError, socket.timeout):
                    continue
                with conn, contextlib.suppress(OSError):
                    behaviour(conn)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        threads.append(thread)

    yield start
    stop.set()
    for thread in threads:
        thread.join(timeout=2)
    listener.close()
    with contextlib.suppress(FileNotFoundError):
        member.control_socket.unlink()


def one_line(member, command: list[str], expected: str) -> None:
    r = homeagent(*command, "--config", str(member.config_path))
    assert "Traceback" not in r.stderr, r.stderr
    assert (r.returncode, r.stdout) == (1, "")
    assert len(r.stderr.splitlines()) == 1, r.stderr
    assert r.stderr.startswith("homeagent: ") and expected in r.stderr, r.stderr


@pytest.mark.parametrize("command", COMMANDS, ids=IDS)
def test_no_daemon(member, command):
    one_line(member, command, f"no daemon answers on {member.control_socket} (No such file or directory)")


@pytest.mark.parametrize("command", COMMANDS, ids=IDS)
def test_a_stale_socket_nobody_listens_on(member, command):
    """What a daemon killed with SIGKILL leaves behind."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(member.control_socket))
    one_line(member, command, f"no daemon answers on {member.control_socket} (Connection refused)")


@pytest.mark.parametrize("command", COMMANDS, ids=IDS)
def test_a_directory_where_the_socket_should_be(member, command):
    member.control_socket.mkdir()
    one_line(member, command, f"no daemon answers on {member.control_socket} (not a socket)")


def read_request(conn: socket.socket) -> None:
    conn.settimeout(2)
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(4096)
        if not chunk:
            return
        data += chunk


def closes_without_answering(conn: socket.socket) -> None:
    read_request(conn)


def closes_at_once(conn: socket.socket) -> None:
    conn.shutdown(socket.SHUT_RDWR)


def answers(data: bytes) -> Behaviour:
    def behaviour(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(data)

    return behaviour


@pytest.mark.parametrize("command", COMMANDS, ids=IDS)
@pytest.mark.parametrize(
    "behaviour, expected",
    [
        (closes_without_answering, "closed the connection without an answer"),
        (answers(b"hello\n"), "is not a homeagent daemon: b'hello\\n'"),
        (answers(b"\xff\xfe\n"), "is not a homeagent daemon"),
        (answers(b"[1, 2]\n"), "is not a homeagent daemon: b'[1, 2]\\n'"),
        (answers(b'{"ok": true}\n'), "is not a homeagent daemon"),
        (answers(b'{"ok": true, "res'), "is not a homeagent daemon"),  # cut short
        (answers(b'{"ok": false, "error": "unknown command"}\n'), "homeagent: unknown command"),
    ],
    ids=["closes", "not-json", "not-utf8", "not-an-object", "no-result", "cut-short", "refuses"],
)
def test_a_daemon_that_answers_badly(member, impostor, command, behaviour, expected):
    impostor(behaviour)
    one_line(member, command, expected)


def test_a_daemon_that_closes_before_reading(member, impostor):
    """The request may meet a reset connection while it is being sent: the same one line."""
    impostor(closes_at_once)
    with pytest.raises(control.ControlError, match="closed the connection without an answer|went away"):
        control.request(member.control_socket, "status", timeout=2, padding="x" * (1 << 20))


def test_a_daemon_that_never_answers(member, impostor):
    hang = threading.Event()
    impostor(lambda conn: hang.wait(3))
    try:
        with pytest.raises(control.ControlError, match=r"did not answer within 0\.2 s"):
            control.request(member.control_socket, "status", timeout=0.2)
    finally:
        hang.set()


def test_a_control_socket_path_that_is_a_file(member):
    Path(member.control_socket).write_text("")
    one_line(member, ["status"], "(not a socket)")
