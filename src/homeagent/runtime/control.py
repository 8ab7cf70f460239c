"""The control socket: one JSON request per connection, one JSON answer.

A Unix socket in ``state_dir`` (mode 0600) so that only the daemon's user can read bindings or change
anything. The protocol is a single line each way, which keeps the CLI a few lines of blocking code.

An answer too large to make in one go (the binding table: 170 MB of JSON at a million bindings) is a
``Stream``: its list is written a page at a time, and the event loop runs between two pages, so that
registrations and the group's advertisements are served while it is written (issue 10 point 6: built in
one go, 60,000 bindings held the loop 1.3 s, and a standby took over). The bytes are those ``json.dumps``
makes of the whole answer, one line still: the client cannot tell the difference. A reader slower than the
daemon holds back only its own answer (``drain``), never the loop. A command whose work is itself long
(``homeagent remove --all``) answers with an awaitable that does it a step per turn of the loop; its
result is the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import socket
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger("homeagent.control")

Handler = Callable[[dict[str, Any]], Any]
MAX_REQUEST = 64 * 1024


class ControlError(RuntimeError):
    pass


class Stream:
    """A list answered page by page: each ``next(pages)`` is a bounded piece of work (a page of items,
    possibly empty), and the loop serves everything else between two of them."""

    def __init__(self, pages: Iterator[list[Any]]) -> None:
        self.pages = pages


async def _write(writer: asyncio.StreamWriter, answer: dict[str, Any]) -> None:
    """``json.dumps(answer)`` and a newline, with a ``Stream`` result written as the list it stands for:
    ``[`` + the items, ", " between two + ``]``, exactly what ``json.dumps`` writes for a list."""
    result = answer.get("result")
    if not isinstance(result, Stream):
        writer.write(json.dumps(answer).encode() + b"\n")
        await writer.drain()
        return
    writer.write(json.dumps({**answer, "result": []}).encode()[:-2])  # up to and including the "["
    separator = b""
    for page in result.pages:
        if page:
            writer.write(separator + json.dumps(page).encode()[1:-1])
            separator = b", "
        await writer.drain()  # a slow reader waits here, and only it
        await asyncio.sleep(0)  # the loop's turn: datagrams, timers, other clients
    writer.write(b"]}\n")
    await writer.drain()


CLOSE_WAIT = 1.0  # seconds a connection's last bytes may take to go before it is cut (a client that stalls)


async def serve(path: Path, handler: Handler) -> asyncio.AbstractServer:
    _claim(path)

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), timeout=5)
            try:
                request = json.loads(line[:MAX_REQUEST])
                if not isinstance(request, dict):
                    raise ValueError("request must be a JSON object")
                result = handler(request)
                if inspect.isawaitable(result):  # work done over several turns of the loop
                    result = await result
                answer = {"ok": True, "result": result}
            except (ValueError, KeyError, TypeError, RecursionError) as exc:
                answer = {"ok": False, "error": str(exc) or type(exc).__name__}
            await _write(writer, answer)
        except (asyncio.TimeoutError, ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        except asyncio.CancelledError:
            # The daemon stops with a client connected. Ended here, not re-raised: Python 3.11's stream
            # server asks a cancelled handler task for its exception and logs the error it gets.
            pass
        finally:
            writer.close()
            try:  # a client that does not read keeps its unsent answer: it is cut off, not waited for
                await asyncio.wait_for(writer.wait_closed(), CLOSE_WAIT)
            except (Exception, asyncio.CancelledError):  # noqa: BLE001 - the stop's cancellation too
                writer.transport.abort()

    old_umask = os.umask(0o177)
    try:
        server = await asyncio.start_unix_server(on_connect, path=str(path), limit=MAX_REQUEST)
    finally:
        os.umask(old_umask)
    return server


def _claim(path: Path) -> None:
    """Remove a stale socket left by a crashed daemon; refuse if a live daemon answers on it, and refuse
    to remove anything that is not a socket: a file or a symlink there was put by someone, and removing
    (or, for a symlink, binding through) it is not the daemon's call."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        kind = ("a symlink" if stat.S_ISLNK(st.st_mode) else "a directory" if stat.S_ISDIR(st.st_mode)
                else "a regular file" if stat.S_ISREG(st.st_mode) else "a special file")
        raise ControlError(f"{path} is {kind}, not a socket; refusing to remove it (remove it by hand)")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()
    else:
        raise ControlError(f"another daemon is already running on {path}")
    finally:
        probe.close()


def request(path: Path, command: str, timeout: float = 5.0, **args: Any) -> Any:
    """Ask the running daemon; raise ControlError if there is none, it refuses, or what answers is not it.

    Every way the exchange can fail ends here as one ControlError naming the socket, so that the CLI prints
    one line and never a traceback: nothing at the path, a stale socket file, a path that is no socket, a
    daemon that hangs, closes without an answer, or answers something that is not our JSON.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(str(path))
        except PermissionError:
            raise ControlError(f"not allowed to talk to the daemon on {path} (run as its user)") from None
        except OSError as exc:
            if Path(path).exists() and not Path(path).is_socket():
                raise ControlError(f"no daemon answers on {path} (not a socket)") from None
            raise ControlError(f"no daemon answers on {path} ({exc.strerror or exc})") from None
        chunks: list[bytes] = []  # joined once at the end: a large answer grows in linear time
        try:
            s.sendall(json.dumps({"command": command, **args}).encode() + b"\n")
            while not chunks or not chunks[-1].endswith(b"\n"):
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
        except TimeoutError:
            raise ControlError(f"the daemon on {path} did not answer within {timeout:g} s") from None
        except OSError as exc:
            raise ControlError(f"the daemon on {path} went away ({exc.strerror or exc})") from None
    data = b"".join(chunks)
    if not data:
        raise ControlError(f"the daemon on {path} closed the connection without an answer")
    try:
        answer = json.loads(data)
    except ValueError:  # not JSON, or not UTF-8
        answer = None
    if not isinstance(answer, dict) or "ok" not in answer or (answer["ok"] and "result" not in answer):
        raise ControlError(f"what answers on {path} is not a homeagent daemon: {data[:60]!r}")
    if not answer["ok"]:
        raise ControlError(str(answer.get("error") or "the daemon refused"))
    return answer["result"]
