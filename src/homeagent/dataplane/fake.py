"""A data plane for unit tests: it records every call in order and keeps the table the calls add up to,
so a test can assert both what was asked and where the asking left the data plane."""

from __future__ import annotations

from homeagent.dataplane import Tunnel


class FakeDataplane:
    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []
        self.tunnels: dict[int, tuple[Tunnel, ...]] = {}
        self.serving = False
        self.closed = False

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

    def barrier(self) -> None:
        return None  # applied as called

    def counters(self) -> dict[str, object]:
        self.calls.append(("counters", None))
        return {"dataplane.backend": "fake", "dataplane.serving": self.serving,
                "dataplane.home_addresses": len(self.tunnels)}

    def close(self) -> None:
        self.calls.append(("close", None))
        self.closed = True
