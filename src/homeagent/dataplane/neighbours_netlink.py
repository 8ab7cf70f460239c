"""The netlink side of ``dataplane.neighbours``: proxy neighbour entries added, removed and read back by
pyroute2 in a process of its own, one batch at a time.

Why a process. pyroute2 spends about 85 us of Python per request and builds several cyclic objects per
message; reading 20,000 proxy entries back made the garbage collector pause the whole interpreter for up
to 180 ms at a time (measured here), whether the reading ran on the event loop or in a thread. In a child
process that work runs on the other CPU and its pauses are its own: the caller's loop only writes and
reads one line of JSON per batch.

The conversation is one JSON line each way, one request at a time: ``{"op": "add" | "del", "addresses":
[...]}`` is answered ``{"done": [...]}`` (the addresses the kernel acknowledged; a refused request, such as
deleting an entry already gone, is left out), ``{"op": "dump"}`` is answered ``{"ours": [...], "foreign":
[...]}`` (the interface's proxy entries with our ``NDA_PROTOCOL`` and the others), ``{"op": "macs",
"addresses": [...]}`` is answered ``{"macs": {"address": "hex MAC"}}`` (the link-layer addresses the
interface's ordinary neighbour table holds for them, where it holds one), anything that fails ``{"error":
"..."}``. The child leaves when its standard input closes. It runs in the network namespace
of the thread that starts it.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from ipaddress import IPv4Address
from typing import Any

PROTOCOL = 77  # NDA_PROTOCOL of our proxy entries (no name in /etc/iproute2/rt_protos)
NTF_PROXY = 0x08
NUD_PERMANENT = 0x80
LINE_LIMIT = 1 << 24  # bytes of one answer: a dump of 100,000 entries is about 1.2 MB


class NetlinkError(RuntimeError):
    pass


class NetlinkWorker:
    """The caller's end: starts the child at the first call and again after it died."""

    def __init__(self, index: int) -> None:
        self.index = index
        self._proc: asyncio.subprocess.Process | None = None
        self.restarts = 0

    async def add(self, addresses: list[int]) -> list[int]:
        return list((await self._call({"op": "add", "addresses": addresses}))["done"])

    async def delete(self, addresses: list[int]) -> list[int]:
        return list((await self._call({"op": "del", "addresses": addresses}))["done"])

    async def dump(self) -> tuple[set[int], set[int]]:
        answer = await self._call({"op": "dump"})
        return set(answer["ours"]), set(answer["foreign"])

    async def macs(self, addresses: list[int]) -> dict[int, bytes]:
        answer = await self._call({"op": "macs", "addresses": addresses})
        return {int(a): bytes.fromhex(mac) for a, mac in answer["macs"].items()}

    async def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            proc.kill()
            await proc.wait()

    async def _call(self, request: dict[str, Any]) -> dict[str, Any]:
        proc = await self._started()
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(json.dumps(request).encode() + b"\n")
            await proc.stdin.drain()
            line = await proc.stdout.readline()
        except (OSError, ValueError) as exc:  # a broken pipe, or an answer past the limit
            await self._lost()
            raise NetlinkError(f"the netlink worker failed: {exc}") from exc
        if not line:
            await self._lost()
            raise NetlinkError("the netlink worker died")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise NetlinkError(answer["error"])
        return answer

    async def _started(self) -> asyncio.subprocess.Process:
        if self._proc is not None and self._proc.returncode is not None:  # died between two calls
            self._proc = None
            self.restarts += 1
        if self._proc is None:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "homeagent.dataplane.neighbours_netlink", str(self.index),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=LINE_LIMIT)
        return self._proc

    async def _lost(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
            self.restarts += 1


# -- the child ------------------------------------------------------------------------------------------

def _dotted(address: int) -> str:
    return socket.inet_ntoa(address.to_bytes(4, "big"))


def _request(ipr: Any, index: int, command: str, addresses: list[int]) -> list[int]:
    from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST
    from pyroute2.netlink.rtnl import RTM_DELNEIGH, RTM_NEWNEIGH
    from pyroute2.netlink.rtnl.ndmsg import ndmsg

    if command == "add":
        kind, flags = RTM_NEWNEIGH, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
    else:
        kind, flags = RTM_DELNEIGH, NLM_F_REQUEST | NLM_F_ACK
    messages = []
    for address in addresses:
        msg = ndmsg()
        msg["family"] = socket.AF_INET
        msg["ifindex"] = index
        msg["flags"] = NTF_PROXY
        msg["state"] = NUD_PERMANENT
        msg["attrs"] = [["NDA_DST", _dotted(address)]]
        if command == "add":
            msg["attrs"].append(["NDA_PROTOCOL", PROTOCOL])
        msg["header"]["type"] = kind
        msg["header"]["flags"] = flags
        messages.append(msg)
    # noraise: a refused request yields nothing, the others go on; the sequence numbers tell which
    replies = ipr.nlm_request_batch(messages, noraise=True)
    acknowledged = {reply["header"]["sequence_number"] for reply in replies}
    return [a for a, m in zip(addresses, messages) if m["header"]["sequence_number"] in acknowledged]


def _dump(ipr: Any, index: int) -> tuple[list[int], list[int]]:
    from pyroute2.requests.main import RequestProcessor

    ours: list[int] = []
    foreign: list[int] = []
    # pyroute2 0.9.7 filters a neighbour dump on the reply's fields and never asks the kernel for proxy
    # entries: an empty filter lets ``flags`` through to the request, where NTF_PROXY selects them.
    for entry in ipr.neigh("dump", family=socket.AF_INET, flags=NTF_PROXY, dump_filter=RequestProcessor()):
        if entry["ifindex"] != index or not entry.get("NDA_DST"):
            continue
        address = int(IPv4Address(entry.get("NDA_DST")))
        (ours if entry.get("NDA_PROTOCOL") == PROTOCOL else foreign).append(address)
    return ours, foreign


def _macs(ipr: Any, index: int, addresses: list[int]) -> dict[str, str]:
    """What the interface's neighbour table holds for ``addresses`` (entries the kernel learnt: a mobile
    node at home that sent us anything ARPed for us first, and so left its MAC here)."""
    from pyroute2.netlink.exceptions import NetlinkError as PyNetlinkError

    macs = {}
    for address in addresses:
        try:
            entries = ipr.neigh("get", dst=_dotted(address), ifindex=index)
        except PyNetlinkError:  # ENOENT: no entry
            continue
        for entry in entries:
            lladdr = entry.get("NDA_LLADDR")
            if lladdr and not entry["flags"] & NTF_PROXY and lladdr != "00:00:00:00:00:00":
                macs[str(address)] = lladdr.replace(":", "")
    return macs


def answer(ipr: Any, index: int, line: bytes) -> dict[str, object]:
    """The answer to one request line; whatever the line holds, an answer (an error one if need be)."""
    try:
        request = json.loads(line)
        op = request["op"]
        if op == "dump":
            ours, foreign = _dump(ipr, index)
            return {"ours": ours, "foreign": foreign}
        addresses = request["addresses"]
        if not isinstance(addresses, list) or not all(type(a) is int and 0 <= a < 2**32 for a in addresses):
            raise ValueError("addresses must be a list of IPv4 addresses as integers")
        if op == "macs":
            return {"macs": _macs(ipr, index, addresses)}
        if op in ("add", "del"):
            return {"done": _request(ipr, index, op, addresses)}
        raise ValueError(f"unknown op {op!r}")
    except Exception as exc:  # noqa: BLE001 - told to the caller, who retries
        return {"error": f"{type(exc).__name__}: {exc}"}


def main(argv: list[str]) -> int:
    from pyroute2 import IPRoute

    index = int(argv[0])
    with IPRoute() as ipr:
        for line in sys.stdin.buffer:
            sys.stdout.write(json.dumps(answer(ipr, index, line)) + "\n")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
