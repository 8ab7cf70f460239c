"""The daemon's log lines: one per record, to standard error, as ``key=value`` pairs (logfmt) or one JSON
object, for every logger alike (``[log] format``).

A line has ``ts`` (UTC, RFC 3339, milliseconds), ``level``, ``logger``, ``event`` (an event's name:
core/events.py), ``msg`` (for people), then the event's own fields; an exception's traceback, when there
is one, goes in ``error`` on the same line (a log reader must never take a traceback's lines for records).

Under systemd, when standard error is the journal (``JOURNAL_STREAM`` names the device and inode of the
stream the journal gave us, and they are those of our standard error), a line has no timestamp of its
own, since the journal stamps every line, and starts with its syslog priority (``<6>``, sd-daemon(3)),
which the journal takes as the entry's priority instead of printing it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any, TextIO

from homeagent.config import LogFormat

_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.:-_/+,[]()@#%*")


def journal_stream(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (standard error) is connected to the journal: ``JOURNAL_STREAM`` is
    ``DEVICE:INODE`` of the journal's stream (systemd.exec(5)); a process whose standard error was
    redirected elsewhere since inherits the variable, so the two must match."""
    value = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        st = os.fstat((stream or sys.stderr).fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (int(device), int(inode))


def logfmt_value(value: object) -> str:
    """A value as logfmt writes it: bare when it is plain, else double-quoted with ``\\``, ``"`` and
    control characters escaped, so that a line is always one line and splits back into its pairs."""
    if value is True or value is False:
        return "true" if value else "false"
    text = str(value)
    if text and all(c in _PLAIN for c in text):
        return text
    out = []
    for c in text:
        if c in _ESCAPES:
            out.append(_ESCAPES[c])
        elif c < " " or c == "\x7f":
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


class Formatter(logging.Formatter):
    """Every record as one line: logfmt or JSON, with or without a timestamp of its own (``journal``)."""

    def __init__(self, style: LogFormat = LogFormat.LOGFMT, journal: bool = False) -> None:
        super().__init__()
        self.style = style
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        pairs: dict[str, Any] = {}
        if not self.journal:
            pairs["ts"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        pairs["level"] = record.levelname.lower()
        pairs["logger"] = record.name
        event = getattr(record, "event", None)
        if event is not None:
            pairs["event"] = event
        pairs["msg"] = record.getMessage()
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                if key not in pairs and value is not None:
                    pairs[key] = value
        if record.exc_info:
            pairs["error"] = self.formatException(record.exc_info)
        elif record.stack_info:
            pairs["error"] = self.formatStack(record.stack_info)
        if self.style is LogFormat.JSON:
            line = json.dumps(pairs, separators=(",", ":"), default=str, ensure_ascii=False)
        else:
            line = " ".join(f"{key}={logfmt_value(value)}" for key, value in pairs.items())
        if self.journal:
            line = f"<{_PRIORITY.get(record.levelno, 6)}>{line}"
        return line


_handler: logging.Handler | None = None


def configure(level: str, style: LogFormat = LogFormat.LOGFMT, stream: TextIO | None = None) -> None:
    """Log records of ``level`` and above to ``stream`` (standard error), one line each, in ``style``."""
    global _handler
    stream = stream or sys.stderr
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    _handler = logging.StreamHandler(stream)
    _handler.setFormatter(Formatter(style, journal_stream(stream)))
    root.addHandler(_handler)
    root.setLevel(level.upper())


def set_style(style: LogFormat) -> None:
    """A reload's ``[log] format``: the lines from now on (the handler and its stream stay)."""
    if _handler is not None and isinstance(_handler.formatter, Formatter):
        _handler.formatter.style = style
