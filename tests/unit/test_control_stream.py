"""runtime/control.py: an answer written a page at a time is, byte for byte, the one line ``json.dumps``
wrote for the whole answer, and the event loop gets a turn between two pages."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from homeagent.runtime import control


class Writer:
    """What ``_write`` needs of an ``asyncio.StreamWriter``: the bytes, and a count of the writes."""

    def __init__(self) -> None:
        self.data = b""
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.data += data
        self.writes += 1

    async def drain(self) -> None:
        return None


ROWS = [{"home_address": "10.1.0.1", "remaining": 1.5, "identification": 1 << 63},
        {"home_address": "10.1.0.2", "remaining": 0.0, "flags": 0},
        {"home_address": "10.1.0.3", "text": "quote \" and \\u00e9 and ]}"}]


@pytest.mark.parametrize("pages", [[], [[]], [ROWS], [[], ROWS[:1], [], ROWS[1:], []], [[r] for r in ROWS]])
def test_a_stream_is_the_line_json_dumps_writes(pages: list[list[dict[str, Any]]]) -> None:
    writer = Writer()
    asyncio.run(control._write(writer, {"ok": True, "result": control.Stream(iter(pages))}))  # type: ignore[arg-type]
    rows = [r for page in pages for r in page]
    assert writer.data == json.dumps({"ok": True, "result": rows}).encode() + b"\n"


def test_plain_answers_are_unchanged() -> None:
    writer = Writer()
    asyncio.run(control._write(writer, {"ok": True, "result": {"role": "active"}}))  # type: ignore[arg-type]
    assert writer.data == b'{"ok": true, "result": {"role": "active"}}\n'


def test_the_loop_runs_between_two_pages() -> None:
    """A callback scheduled before the answer starts runs before its second page is made."""
    made: list[str] = []

    def pages():
        for i in range(3):
            made.append(f"page {i}")
            yield [i]

    async def main() -> None:
        asyncio.get_running_loop().call_soon(made.append, "other work")
        await control._write(Writer(), {"ok": True, "result": control.Stream(pages())})  # type: ignore[arg-type]

    asyncio.run(main())
    assert made.index("other work") < made.index("page 1")


def test_a_client_that_never_reads_does_not_hold_the_stop(tmp_path):
    """The daemon stops with a streamed answer stuck in a client that reads nothing: its connection is cut
    after CLOSE_WAIT, and the loop ends; it waited for that client for ever (SIGTERM did not finish)."""
    import socket
    import threading

    path = tmp_path / "control.sock"

    def pages():
        while True:
            yield [{"home_address": "10.1.0.5", "padding": "x" * 200}] * 100

    async def main() -> None:
        server = await control.serve(path, lambda request: control.Stream(pages()))
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(str(path))
        client.sendall(b'{"command": "bindings"}\n')  # and never reads
        await asyncio.sleep(0.3)
        server.close()  # the stop: asyncio.run then cancels the handler, as at the daemon's end
        main.client = client  # type: ignore[attr-defined]

    done = threading.Event()

    def run() -> None:
        asyncio.run(main())
        done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(10), "the loop did not end while a client read nothing"
    main.client.close()  # type: ignore[attr-defined]
