"""homeagent(8), written from the command line's own parser: ``python3 -m homeagent.manpage > homeagent.8``.

Generated rather than written by hand so that the page can never list an option the program lacks or miss
one it has: every subcommand (``mn`` and its actions too), its description, and every option with its
value's name and help are read from ``cli._parser()``. What the parser does not know (files, signals,
exit status) is the fixed text below. The output is plain man(7) roff.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator

from homeagent import __version__

SECTION = "8"
DATE = "2026"

FILES = [
    ("/etc/homeagent/homeagent.toml", "the configuration (TOML), as installed by the systemd unit"),
    ("STATE_DIR/control.sock", "the control socket (mode 0600) the other commands talk to the daemon "
     "through; STATE_DIR is home_agent.state_dir, /var/lib/homeagent by default"),
    ("STATE_DIR/bindings.db", "the bindings kept across restarts (SQLite, mode 0600); none with "
     "home_agent.persistence = false"),
]

SIGNALS = [
    ("SIGTERM, SIGINT, SIGQUIT", "stop cleanly (exit status 0)"),
    ("SIGHUP", "reload the configuration file; what needs a restart is logged and left as it runs"),
    ("SIGUSR1", "log one line of status"),
]

EXIT_STATUS = [
    ("0", "success"),
    ("1", "the daemon could not start, or no daemon answers on the control socket, or it refused; mn load: "
     "no registration was accepted; mn up: the device could not be made"),
    ("2", "a configuration error or a bad command line"),
    ("3", "mn register/deregister: the Home Agent denied the request; mn up: it denied the first "
     "registration"),
]


def escape(text: str) -> str:
    """Text for roff: backslashes doubled as ``\\e``, hyphens ``\\-`` (so they stay ASCII in option names
    and can be searched), and a line starting with a dot or a quote guarded by ``\\&``."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line for line in text.split("\n"))


def commands(parser: argparse.ArgumentParser, prefix: str = "") -> Iterator[tuple[str, str, argparse.ArgumentParser]]:
    """Every subcommand, depth first: (name such as ``mn register``, its one-line help, its parser)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                full = f"{prefix}{name}"
                yield full, helps.get(name, ""), sub
                yield from commands(sub, full + " ")


def options(parser: argparse.ArgumentParser) -> Iterator[argparse.Action]:
    """A parser's own arguments, without ``--help`` and the subcommand slot."""
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        yield action


def _option_head(action: argparse.Action) -> str:
    if not action.option_strings:  # a positional argument
        choices = "|".join(str(c) for c in action.choices) if action.choices else action.dest.upper()
        return f"\\fI{escape(choices)}\\fR"
    names = ", ".join(f"\\fB{escape(o)}\\fR" for o in action.option_strings)
    if action.nargs == 0:
        return names
    if action.choices:
        value = "{" + ",".join(str(c) for c in action.choices) + "}"
    else:
        value = action.metavar if isinstance(action.metavar, str) else action.dest.upper()
    return f"{names} \\fI{escape(value)}\\fR"


def _help(action: argparse.Action) -> str:
    text = action.help or ""
    if action.required and action.option_strings:
        text += " (required)"
    return text


def render(parser: argparse.ArgumentParser) -> str:
    out = [
        f'.TH HOMEAGENT {SECTION} "{DATE}" "homeagent {__version__}" "System Administration"',
        ".SH NAME",
        "homeagent \\- " + escape("Mobile IPv4 Home Agent (RFC 5944) with redundancy groups"),
        ".SH SYNOPSIS",
        "\\fBhomeagent\\fR \\fICOMMAND\\fR [\\fIOPTIONS\\fR]",
        ".br",
        "\\fBhomeagent\\fR \\fB\\-\\-version\\fR",
        ".SH DESCRIPTION",
        escape((parser.description or "").replace("``", "")),
        ".PP",
        escape("Each command that reads or changes state talks to the running daemon through its control "
               "socket. docs/operations.md is the operator's manual."),
        ".SH COMMANDS",
    ]
    for name, summary, sub in commands(parser):
        out += [".SS " + escape(f"homeagent {name}"), escape(summary[:1].upper() + summary[1:] + ".")]
        usage = " ".join(sub.format_usage().split())
        out += [".PP", ".nf", escape(usage.removeprefix("usage: ")), ".fi"]
        if sub.description:
            for paragraph in sub.description.split("\n\n"):
                out += [".PP", escape(" ".join(paragraph.split()))]
        for action in options(sub):
            out += [".TP", _option_head(action), escape(" ".join(_help(action).split()))]
    out.append(".SH FILES")
    for path, what in FILES:
        out += [".TP", f"\\fI{escape(path)}\\fR", escape(what)]
    out.append(".SH SIGNALS")
    out.append(escape("homeagent run:"))
    for sig, what in SIGNALS:
        out += [".TP", f"\\fB{escape(sig)}\\fR", escape(what)]
    out.append(".SH EXIT STATUS")
    for code, what in EXIT_STATUS:
        out += [".TP", f"\\fB{code}\\fR", escape(what)]
    out += [".SH SEE ALSO", "\\fBsystemd.service\\fR(5), \\fBkeepalived\\fR(8); docs/operations.md, "
            "docs/protocol.md and docs/dataplane.md in the source tree."]
    return "\n".join(out) + "\n"


def main() -> int:
    from homeagent.cli import _parser

    sys.stdout.write(render(_parser()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
