"""``homeagent cleanup`` run by systemd's ``ExecStopPost=`` after a lone Home Agent with the ebpf backend
failed: the program and its maps are left for ``Restart=on-failure``'s start to take over (forwarding
throughout), and taken off in every other case (runtime/cleanup.py, ``kept_for_restart``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from homeagent import cli
from homeagent.config import parse
from homeagent.runtime import cleanup
from unit.test_config import HOME_AGENT, REDUNDANCY

EBPF = '[dataplane]\nbackend = "ebpf"\ninterface = "eth0"\n'


@pytest.mark.parametrize("text, result, kept", [
    (HOME_AGENT + EBPF, "signal", True),  # kill -9, a crash
    (HOME_AGENT + EBPF, "watchdog", True),
    (HOME_AGENT + EBPF, "exit-code", True),
    (HOME_AGENT + EBPF, "success", False),  # stopped: nothing restarts it
    (HOME_AGENT + EBPF, "start-limit-hit", False),  # nor after too many restarts
    (HOME_AGENT + EBPF, None, False),  # by hand
    (REDUNDANCY + EBPF, "signal", False),  # a group: the standby that takes over answers alone
    (HOME_AGENT + '[dataplane]\nbackend = "userspace"\ninterface = "eth0"\n', "signal", False),
])
def test_the_program_is_kept_only_for_a_lone_home_agent_that_systemd_restarts(text, result, kept):
    environ = {"SERVICE_RESULT": result} if result else {}
    assert (cleanup.kept_for_restart(parse(text), environ) is not None) is kept


def test_the_command_keeps_it_and_says_so(tmp_path: Path, monkeypatch, capsys):
    config = tmp_path / "homeagent.toml"
    config.write_text(HOME_AGENT + EBPF)
    calls: list[object] = []
    monkeypatch.setattr(cleanup, "clean_ebpf", lambda c: calls.append(c) or ["removed the ebpf program"])
    monkeypatch.setenv("SERVICE_RESULT", "signal")
    assert cli.main(["cleanup", "--config", str(config)]) == 0
    assert calls == [] and capsys.readouterr().out.startswith("kept the ebpf program on eth0")
    monkeypatch.setenv("SERVICE_RESULT", "success")
    assert cli.main(["cleanup", "--config", str(config)]) == 0
    assert len(calls) == 1 and "removed the ebpf program" in capsys.readouterr().out
