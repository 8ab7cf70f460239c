"""The binding table's cost per registration, renewal and expiry, against a floor measured in the same run.

The floor is the least any packed table must do per registration: pack one record (``struct``) and store
it in a dict. ``BindingTable.register`` does that and more: the node's old state, its bucket digest
(core/bindings.py: two CRC-32s), the timer wheel. The ratio is what the table costs over the floor; run it
on two versions of ``src`` (``PYTHONPATH=...``) to compare them, since both print against the same floor.

    python bench/bindings.py [--nodes 200000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import struct
import subprocess
import sys
import time


def floor(nodes: int, now: float) -> float:
    """Seconds per registration of the floor: pack and store."""
    pack = struct.Struct("!QIHdQBI").pack
    records: dict[int, bytes] = {}
    start = time.perf_counter()
    for i in range(nodes):
        records[0x0A000000 + i] = pack(i + 1, 0xC0000000 + i, 1800, now + 1800, i + 1, 0, 0)
    return (time.perf_counter() - start) / nodes


def table_costs(nodes: int, now: float) -> dict[str, float]:
    """Seconds per first registration, per renewal (a node that holds a binding), per expiry."""
    from homeagent.core.bindings import BindingTable

    table = BindingTable()
    first = 0x0A000000
    start = time.perf_counter()
    for i in range(nodes):
        table.register(first + i, 0xC0000000 + i, 1800, (1 << 32) + i, now)
    registered = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(nodes):
        table.register(first + i, 0xC1000000 + i, 1800, (2 << 32) + i, now + 1)
    renewed = time.perf_counter() - start
    start = time.perf_counter()
    gone = table.expire(now + 1802)
    expired = time.perf_counter() - start
    assert len(gone) == nodes
    return {"register": registered / nodes, "renew": renewed / nodes, "expire": expired / nodes}


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory(nodes: int, now: float) -> float:
    """Resident bytes per node of a table of usual nodes (one binding each). Run in a fresh process (see
    ``main``): in one that has freed tables before, the allocator reuses their memory and RSS stays put."""
    from homeagent.core.bindings import BindingTable

    gc.collect()
    before = rss()
    table = BindingTable()
    for i in range(nodes):
        table.register(0x0A000000 + i, 0xC0000000 + i, 1800, (1 << 32) + i, now + (i % 1000) / 1000.0)
    gc.collect()
    return (rss() - before) / nodes


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--nodes", type=int, default=200_000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    now = time.monotonic()
    if args.memory_child:
        print(json.dumps(memory(args.memory_child, now)))
        return
    floors, costs = [], []
    for _ in range(args.rounds):  # alternated, so that a noisy neighbour hurts both alike
        floors.append(floor(args.nodes, now))
        costs.append(table_costs(args.nodes, now))
    base = statistics.median(floors)
    print(f"floor (pack + dict store)  {base * 1e6:6.2f} us")
    for what in ("register", "renew", "expire"):
        t = statistics.median(c[what] for c in costs)
        print(f"table {what:<20} {t * 1e6:6.2f} us  ratio {t / base:5.2f}")
    child = subprocess.run([sys.executable, __file__, "--memory-child", str(args.nodes)],
                           check=True, capture_output=True, text=True)
    print(f"memory  {json.loads(child.stdout):.0f} bytes per usual node ({args.nodes} nodes)")


if __name__ == "__main__":
    main()
