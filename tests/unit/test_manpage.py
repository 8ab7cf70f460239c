"""The man page (homeagent.manpage) and the command line's help: every subcommand and option is in the
page, and no ``homeagent ... --help`` leaves a command or an option unexplained."""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shutil
import subprocess
import sys

import pytest

from homeagent.cli import _parser, main
from homeagent.manpage import commands, escape, options, render

PARSER = _parser()
COMMANDS = list(commands(PARSER))
PAGE = render(PARSER)


def _sections(page: str) -> dict[str, str]:
    """The page's text under each ``.SS homeagent NAME``, by NAME."""
    parts = re.split(r"^\.SS homeagent (.+)$", page, flags=re.M)
    return {name.replace("\\-", "-"): body for name, body in zip(parts[1::2], parts[2::2])}


def test_the_parser_walk_finds_every_command():
    names = [name for name, _, _ in COMMANDS]
    assert len(names) == len(set(names))
    assert {"run", "status", "bindings", "remove", "role", "cleanup", "demo", "mn", "mn register",
            "mn deregister", "mn up", "mn load"} <= set(names)  # and whatever is added later, found alike
    top = next(a for a in PARSER._actions if isinstance(a, argparse._SubParsersAction))
    assert [n for n in names if " " not in n] == list(top.choices)


def test_the_page_lists_every_subcommand_and_each_of_its_options_with_its_help():
    sections = _sections(PAGE)
    assert sorted(sections) == sorted(name for name, _, _ in COMMANDS)
    for name, _, sub in COMMANDS:
        body = sections[name]
        for action in options(sub):
            for flag in action.option_strings:
                assert f"\\fB{escape(flag)}\\fR" in body, (name, flag)
            if not action.option_strings:
                assert all(str(c) in body for c in action.choices or []), (name, action.dest)
            first_words = " ".join((action.help or "").split()[:4])
            assert escape(first_words) in " ".join(body.split()), (name, action.dest)


@pytest.mark.parametrize("name, summary, sub", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_no_help_is_empty(name, summary, sub):
    assert summary.strip(), f"homeagent {name}: no one-line help in the command list"
    assert (sub.description or "").strip(), f"homeagent {name} --help: no description"
    for action in options(sub):
        assert (action.help or "").strip(), f"homeagent {name}: {action.option_strings or action.dest} has no help"
    # What the operator sees: the description and every option's help are in the real --help output.
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
        main([*name.split(), "--help"])
    assert done.value.code == 0
    text = " ".join(out.getvalue().split())
    assert " ".join(sub.description.split())[:60] in text
    for action in options(sub):
        assert " ".join((action.help or "").split())[:30].replace("%%", "%") in text, (name, action.dest)


def test_roff_is_clean():
    assert PAGE.startswith(".TH HOMEAGENT 8 ")
    assert not re.search(r"^[.'](?!TH|SH|SS|TP|PP|br|nf|fi)", PAGE, re.M)  # no text line taken for a request
    if shutil.which("groff") is None:
        pytest.skip("groff is not installed")
    done = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z"], input=PAGE, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0 and done.stderr == "", done.stderr


def test_module_entry_point_writes_the_page():
    done = subprocess.run([sys.executable, "-m", "homeagent.manpage"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and done.stdout == PAGE


def test_escape():
    assert escape("--all") == "\\-\\-all"
    assert escape(".hidden\n'quote") == "\\&.hidden\n\\&'quote"
    assert escape("a\\b") == "a\\eb"
    assert isinstance(PARSER, argparse.ArgumentParser)

