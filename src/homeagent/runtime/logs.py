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

import asyncio
import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterable
from typing import Any, TextIO

from homeagent.config import LogFormat

_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}
_QUOTED = re.compile(r"[^A-Za-z0-9.:\-_/+,\[\]()@#%*]")  # a character that needs the value quoted
_search = _QUOTED.search
_HEAD_KEYS = frozenset({"ts", "level", "logger", "event", "msg"})  # a field of these names is not written
HEADS = 256  # events' heads kept at most (messages made with their values in come and go)


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
    kind = type(value)
    if kind is int:
        return str(value)
    if kind is bool:
        return "true" if value else "false"
    text = value if isinstance(value, str) else str(value)
    if text and not _QUOTED.search(text):
        return text
    # JSON's string escapes are logfmt's: \\, \", \n, \t and \u00XX for the other control characters.
    return json.dumps(text, ensure_ascii=False)


class Formatter(logging.Formatter):
    """Every record as one line: logfmt or JSON, with or without a timestamp of its own (``journal``)."""

    def __init__(self, style: LogFormat = LogFormat.LOGFMT, journal: bool = False) -> None:
        super().__init__()
        self.style = style
        self.journal = journal
        self._second = -1
        self._stamp = ""
        self._heads: dict[tuple[int, str, str, str], str] = {}  # an event's words, made once (_event_line)

    def format(self, record: logging.LogRecord) -> str:
        pairs: dict[str, Any] = {}
        if not self.journal:
            second = int(record.created)
            if second != self._second:  # strftime once a second, not once a line
                self._second, self._stamp = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            pairs["ts"] = f"{self._stamp}.{int(record.msecs):03d}Z"
        event = getattr(record, "event", None)
        if (type(event) is str and type(record.msg) is str and self.style is LogFormat.LOGFMT
                and not record.args and not record.exc_info and not record.stack_info):
            return self._event_line(record, event, pairs.get("ts"))
        pairs["level"] = record.levelname.lower()
        pairs["logger"] = record.name
        if event is not None:
            pairs["event"] = event
        pairs["msg"] = record.getMessage()
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                if key not in _HEAD_KEYS and value is not None:  # never one of the line's own keys
                    pairs[key] = value
        if record.exc_info:
            pairs["error"] = self.formatException(record.exc_info)
        elif record.stack_info:
            pairs["error"] = self.formatStack(record.stack_info)
        if self.style is LogFormat.JSON:
            line = json.dumps(pairs, separators=(",", ":"), default=str, ensure_ascii=False)
        else:
            line = " ".join(_logfmt_pairs(pairs.items()))
        if self.journal:
            line = f"<{_PRIORITY.get(record.levelno, 6)}>{line}"
        return line

    def _event_line(self, record: logging.LogRecord, event: str, ts: str | None) -> str:
        """An event's line in logfmt, as ``format`` writes it, with what an event repeats (its priority,
        level, logger, name and message: the same words every time) made once (``_heads``): a new binding's
        line is on the registration path."""
        key = (record.levelno, record.name, event, record.msg)  # all str: 1 and True are not one key
        head = self._heads.get(key)
        if head is None:
            head = " ".join(f"{k}={logfmt_value(v)}" for k, v in (
                ("level", record.levelname.lower()), ("logger", record.name), ("event", event),
                ("msg", record.msg)))
            if self.journal:
                head = f"<{_PRIORITY.get(record.levelno, 6)}>{head}"
            if len(self._heads) >= HEADS:  # messages made with their values in: not worth keeping them all
                self._heads.clear()
            self._heads[key] = head
        parts = [head] if ts is None else [f"ts={ts}", head]
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            parts += _logfmt_pairs((k, v) for k, v in fields.items() if v is not None and k not in _HEAD_KEYS)
        return " ".join(parts)


def _logfmt_pairs(pairs: Iterable[tuple[str, Any]]) -> list[str]:
    """``key=value`` for each pair, ``logfmt_value`` inlined for the usual values (ints, plain strings)."""
    return [f"{key}={value}" if type(value) is int or type(value) is str and value and not _search(value)
            else f"{key}={logfmt_value(value)}" for key, value in pairs]


class TurnHandler(logging.StreamHandler[TextIO]):
    """Writes the lines of one turn of the event loop together, in one write, at the turn's end: a burst of
    new bindings costs a system call a turn, not one a line. A record from a thread with no running loop
    (or before the loop starts) is written at once, after what waits, so the order is kept. A process
    killed with SIGKILL loses at most the lines of the turn it was in."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._lines: list[str] = []
        self._due = False

    def emit(self, record: logging.LogRecord) -> None:  # under the handler's lock (Handler.handle)
        try:
            line = self.format(record)
        except Exception:  # noqa: BLE001 - logging's own policy: report and go on
            self.handleError(record)
            return
        self._lines.append(line)
        if self._due:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._due = True
        loop.call_soon(self.flush)

    def flush(self) -> None:
        self.acquire()
        try:
            self._due = False
            lines, self._lines = self._lines, []
            try:
                if lines:
                    self.stream.write("\n".join(lines) + "\n")
                self.stream.flush()
            except (OSError, ValueError):  # a closed or broken stream: the lines are lost, the daemon goes on
                pass
        finally:
            self.release()


_handler: logging.Handler | None = None


def configure(level: str, style: LogFormat = LogFormat.LOGFMT, stream: TextIO | None = None) -> None:
    """Log records of ``level`` and above to ``stream`` (standard error), one line each, in ``style``."""
    global _handler
    # What no line shows, not gathered for each record (the logging documentation's "Optimization"): the
    # caller's file and line (a walk of the stack), the thread, the process.
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    stream = stream or sys.stderr
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    _handler = TurnHandler(stream)
    _handler.setFormatter(Formatter(style, journal_stream(stream)))
    root.addHandler(_handler)
    root.setLevel(level.upper())


def set_style(style: LogFormat) -> None:
    """A reload's ``[log] format``: the lines from now on (the handler and its stream stay)."""
    if _handler is not None and isinstance(_handler.formatter, Formatter):
        _handler.formatter.style = style
