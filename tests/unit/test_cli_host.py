"""``homeagent remove`` and ``homeagent demo`` options refused before anything is read or sent: one line,
exit status 2 (argparse's, or ours for what argparse cannot say)."""

from __future__ import annotations

import pytest

from homeagent.cli import main


def test_remove_needs_exactly_one_scope(capsys):
    for argv in (["remove", "--config", "f"], ["remove", "--config", "f", "--all", "--prefix", "10.1.0.0/16"],
                 ["remove", "--config", "f", "--prefix", "10.1.0.5/16"]):
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 2, argv
    assert main(["remove", "--config", "f", "--prefix", "10.1.0.0/16", "--care-of", "192.0.2.1"]) == 2
    assert main(["remove", "--config", "f", "--all"]) == 2  # no --yes: refused before the file is read
    assert "--yes" in capsys.readouterr().err


def test_demo_group_takes_no_config(capsys):
    assert main(["demo", "--group", "--config", "x.toml"]) == 2
    assert "leave out --config" in capsys.readouterr().err
