"""The log's lines (runtime/logs.py): logfmt or JSON, one line per record whatever its values hold, and no
timestamp of our own when standard error is the journal."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from homeagent.config import ConfigError, LogFormat, parse
from homeagent.runtime.logs import Formatter, TurnHandler, journal_stream, logfmt_value

HOME_AGENT = '[home_agent]\naddress = "192.0.2.1"\n'

_PAIR = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)=("(?:[^"\\]|\\.)*"|[^ "]*)(?: |$)')


def parse_logfmt(line: str) -> dict[str, str]:
    """An independent reading of a logfmt line: ``key=value`` or ``key="quoted"`` pairs, one space apart;
    quoted values read back as JSON strings. Fails on anything else."""
    out: dict[str, str] = {}
    at = 0
    while at < len(line):
        m = _PAIR.match(line, at)
        assert m is not None, f"not logfmt at {at}: {line!r}"
        key, raw = m.group(1), m.group(2)
        out[key] = json.loads(raw) if raw.startswith('"') else raw
        at = m.end()
    return out


def record(message: str = "hello", level: int = logging.INFO, **extra: object) -> logging.LogRecord:
    r = logging.LogRecord("homeagent.test", level, __file__, 1, message, None, None)
    for key, value in extra.items():
        setattr(r, key, value)
    return r


# -- [log] format -------------------------------------------------------------------------------------


def test_format_is_logfmt_unless_the_file_says_json():
    assert parse(HOME_AGENT).log.format is LogFormat.LOGFMT
    assert parse(HOME_AGENT + '[log]\nformat = "json"\n').log.format is LogFormat.JSON
    assert parse(HOME_AGENT + '[log]\nformat = "logfmt"\nlevel = "debug"\n').log.level == "debug"


@pytest.mark.parametrize("value", ['"text"', '"JSON"', "1", '""'])
def test_a_bad_format_names_its_key(value):
    with pytest.raises(ConfigError) as info:
        parse(HOME_AGENT + f"[log]\nformat = {value}\n")
    assert info.value.key == "log.format"


# -- lines --------------------------------------------------------------------------------------------


def test_an_event_line_in_logfmt_has_every_field():
    line = Formatter().format(record("binding accepted", event="binding_accepted",
                                     fields={"home_address": "10.1.0.1", "lifetime": 600, "flags": "0x00"}))
    pairs = parse_logfmt(line)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", pairs.pop("ts"))
    assert pairs == {"level": "info", "logger": "homeagent.test", "event": "binding_accepted",
                     "msg": "binding accepted", "home_address": "10.1.0.1", "lifetime": "600", "flags": "0x00"}


def test_an_event_line_in_json_keeps_the_types():
    line = Formatter(LogFormat.JSON).format(record("role standby -> active", level=logging.WARNING,
                                                   event="role_change", fields={"from": "standby", "n": 3}))
    obj = json.loads(line)
    assert obj["level"] == "warning" and obj["event"] == "role_change" and obj["from"] == "standby"
    assert obj["n"] == 3 and obj["msg"] == "role standby -> active" and "ts" in obj


def test_a_traceback_stays_on_its_line():
    try:
        raise RuntimeError("boom\nsecond line")
    except RuntimeError:
        r = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    for style in LogFormat:
        line = Formatter(style).format(r)
        assert "\n" not in line
        error = parse_logfmt(line)["error"] if style is LogFormat.LOGFMT else json.loads(line)["error"]
        assert error.startswith("Traceback") and "RuntimeError: boom\nsecond line" in error


def test_a_field_never_replaces_the_line_s_own_keys():
    pairs = parse_logfmt(Formatter().format(record("m", event="e", fields={"msg": "forged", "level": "x"})))
    assert pairs["msg"] == "m" and pairs["level"] == "info"


@given(st.text(), st.one_of(st.text(), st.integers(), st.booleans(), st.floats(allow_nan=False)))
def test_any_message_and_value_make_one_line_that_reads_back(message, value):
    line = Formatter().format(record(message, event="e", fields={"value": value}))
    assert "\n" not in line and "\r" not in line
    pairs = parse_logfmt(line)
    assert pairs["msg"] == message
    expected = ("true" if value else "false") if isinstance(value, bool) else str(value)
    assert pairs["value"] == expected
    assert logfmt_value(value) == line.rsplit(" value=", 1)[1]


_KEYS = st.one_of(st.sampled_from(["ts", "level", "logger", "event", "msg", "home_address", "peer"]),
                  st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True))
_VALUES = st.one_of(st.none(), st.text(max_size=12), st.integers(), st.booleans(), st.floats(allow_nan=False))


@given(st.lists(st.tuples(st.text(max_size=20), st.sampled_from([logging.DEBUG, logging.INFO, logging.WARNING]),
                          st.sampled_from(["binding_accepted", "peer down", ""]),
                          st.dictionaries(_KEYS, _VALUES, max_size=6)), min_size=1, max_size=6),
       st.booleans())
def test_an_event_line_has_the_same_pairs_in_the_same_order_as_the_json_line(events, journal):
    """An event's line in logfmt is made with its level, logger, name and message made once per kind
    (runtime/logs.py, _event_line); read back it holds what the JSON line holds, in the same order, every
    time the same kind comes again."""
    text, json_ = Formatter(journal=journal), Formatter(LogFormat.JSON, journal=journal)
    for message, level, event, fields in events * 2:  # each kind twice: once made, once kept
        r = record(message, level=level, event=event, fields=fields)
        line, obj = text.format(r), json.loads(json_.format(r)[3 if journal else 0:])
        if journal:
            assert line.startswith(f"<{ {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4}[level]}>")
            line = line[3:]
        assert "\n" not in line
        pairs = parse_logfmt(line)
        assert list(pairs) == list(obj)
        for key, value in obj.items():
            assert pairs[key] == (logfmt_value(value) if not isinstance(value, str) or key == "ts" else value)


# -- the journal --------------------------------------------------------------------------------------


def test_under_the_journal_a_line_has_its_priority_and_no_timestamp(tmp_path, monkeypatch):
    path = tmp_path / "stderr"
    with open(path, "w") as stream:
        st_ = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st_.st_dev}:{st_.st_ino}")
        assert journal_stream(stream)
        formatter = Formatter(journal=journal_stream(stream))
        line = formatter.format(record("careful", level=logging.WARNING, event="peer_down", fields={"peer": "p"}))
        assert line.startswith("<4>")
        pairs = parse_logfmt(line[3:])
        assert "ts" not in pairs and pairs["level"] == "warning" and pairs["peer"] == "p"
        assert formatter.format(record("x", level=logging.DEBUG)).startswith("<7>")
        assert Formatter(LogFormat.JSON, journal=True).format(record("x", level=logging.ERROR)).startswith("<3>{")


def test_a_stream_that_is_not_the_journal_keeps_its_timestamps(tmp_path, monkeypatch):
    with open(tmp_path / "a", "w") as a, open(tmp_path / "b", "w") as b:
        st_ = os.fstat(a.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st_.st_dev}:{st_.st_ino}")
        assert not journal_stream(b)  # inherited the variable, but writes elsewhere (2>file)
        for value in ("", "garbage", "1:", ":2", f"{st_.st_dev}:x"):
            monkeypatch.setenv("JOURNAL_STREAM", value)
            assert not journal_stream(a)
        monkeypatch.delenv("JOURNAL_STREAM")
        assert not journal_stream(a)
        assert "ts" in parse_logfmt(Formatter(journal=journal_stream(a)).format(record()))


class CountingStream(io.StringIO):
    """A stream that counts its writes: the system calls a real one would make."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def test_the_lines_of_a_loop_turn_are_written_together_at_its_end():
    stream = CountingStream()
    handler = TurnHandler(stream)
    handler.setFormatter(Formatter())
    logger = logging.getLogger("homeagent.test_turn")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)

    async def turn() -> tuple[str, str]:
        for n in range(3):
            logger.info("line %d", n)
        during = stream.getvalue()
        await asyncio.sleep(0)
        return during, stream.getvalue()

    try:
        during, after = asyncio.run(turn())
        assert during == "" and stream.writes == 1, "nothing during the turn, one write at its end"
        assert [line.split("msg=")[1] for line in after.splitlines()] == ['"line 0"', '"line 1"', '"line 2"']
        logger.info("no loop")  # outside a loop (start-up, another thread): at once
        assert stream.getvalue().endswith('msg="no loop"\n') and stream.writes == 2
    finally:
        logger.removeHandler(handler)
