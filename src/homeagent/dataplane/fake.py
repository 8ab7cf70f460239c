"""A data plane for unit tests: it records every call in order and keeps the table the calls add up to,
so a test can assert both what was asked and where the asking left the data plane. With ``holding`` set,
it behaves as a backend that applies changes out of line: ``barrier`` hands out a future that ``release``
completes."""

from __future__ import annotations

import asyncio

from homeagent.dataplane import Tunnel


class FakeDataplane:
    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []
        self.tunnels: dict[int, tuple[Tunnel, ...]] = {}
        self.serving = False
        self.closed = False
        self.holding = False
        self.commits = 0  # kept apart from ``calls``: the runtime commits every loop turn that held a reply
        self._barrier: asyncio.Future[None] | None = None

    def set_tunnels(self, home_address: int, tunnels: tuple[Tunnel, ...]) -> None:
        if self.closed:
            raise RuntimeError("set_tunnels after close")
        self.calls.append(("set_tunnels", (home_address, tunnels)))
        if tunnels:
            self.tunnels[home_address] = tuple(tunnels)
        else:
            self.tunnels.pop(home_address, None)

    def serve(self, serving: bool) -> None:
        if self.closed:
            raise RuntimeError("serve after close")
        self.calls.append(("serve", serving))
        self.serving = serving

    def commit(self) -> None:
        self.commits += 1

    def barrier(self) -> asyncio.Future[None] | None:
        if not self.holding:
            return None  # applied as called
        if self._barrier is None:
            self._barrier = asyncio.get_running_loop().create_future()
        return self._barrier

    def release(self) -> None:
        """Everything so far is in effect: the barrier handed out passes."""
        barrier, self._barrier = self._barrier, None
        if barrier is not None and not barrier.done():
            barrier.set_result(None)

    def counters(self) -> dict[str, object]:
        self.calls.append(("counters", None))
        return {"dataplane.backend": "fake", "dataplane.serving": self.serving,
                "dataplane.home_addresses": len(self.tunnels)}

    def close(self) -> None:
        self.calls.append(("close", None))
        self.closed = True
