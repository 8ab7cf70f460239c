"""The deterministic group simulation (tests/simulation/netsim.py) over many seeds: how many runs pass, the
ones that fail with their seed and first findings, and runs per second.

    python bench/simulation.py --seeds 2000             # seeds 0..1999, every configuration in turn
    python bench/simulation.py --seeds 500 --jobs 2 --members 5 --mode peer --replication sync
    python bench/simulation.py --trace 229 --grep "10.1.0.4 |Table"   # replay one seed, print its trace

A seed's configuration cycles with the seed (active-standby/async, active-standby/sync, peer/async,
peer/sync; 3, 4 or 5 members) unless forced; everything else (mobile nodes, lifetimes, faults, loss) comes
from the seed. The same seed always gives the same run. Exit status 1 when a run failed.

Each run is judged against the reference model (tests/simulation/reference.py: every accepted operation
applied in Identification order) and for member datagrams rejected as malformed. Besides the failures,
the bench prints how many faults the runs drew (partitions, one-way lossy links, crashes, stops, quick
restarts), how many acceptances there were and how many of them were lost with a crash (left out of the
model's answer), and the failures by kind with the seeds of each. The test suite runs 300 of these seeds
(tests/simulation/test_simulation.py says why not more); run 1,000 or more here.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from simulation.netsim import Simulation, scenario_for  # noqa: E402


def _quiet() -> None:
    logging.getLogger("homeagent").setLevel(logging.CRITICAL)


FIGURES = ("accepted", "removals", "acceptances_lost", "crashes", "stops", "quick_restarts", "lossy_links",
           "lost_on_lossy_link", "partitioned", "split_brain_deliveries", "mn_retransmissions")


def _run(job: tuple[int, dict]) -> tuple[int, str, list[str], float, int, dict[str, int]]:
    seed, overrides = job
    result = Simulation(scenario_for(seed, **overrides)).run()
    figures = {k: result.stats[k] for k in FIGURES}
    return seed, result.scenario.describe(), result.failures, result.seconds, result.stats["events"], figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=200, help="how many seeds (default 200)")
    parser.add_argument("--start", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes")
    parser.add_argument("--members", type=int, choices=(3, 4, 5))
    parser.add_argument("--mode", choices=("active-standby", "peer"))
    parser.add_argument("--replication", choices=("async", "sync"))
    parser.add_argument("--loss", type=float, help="share of datagrams lost in the chaos phase (0.3)")
    parser.add_argument("--show", type=int, default=3, help="findings printed per failed seed")
    parser.add_argument("--trace", type=int, metavar="SEED", help="run one seed and print its trace")
    parser.add_argument("--grep", default="", help="with --trace: only lines matching this regex")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in (("members", args.members), ("mode", args.mode),
                                   ("replication", args.replication), ("loss", args.loss)) if v is not None}
    _quiet()
    if args.trace is not None:
        sim = Simulation(scenario_for(args.trace, **overrides), trace=True)
        sim.trace = type(sim.trace)(maxlen=10_000_000)
        result = sim.run()
        pattern = re.compile(args.grep)
        for line in result.trace:
            if pattern.search(line) and not line.rstrip().endswith(("role=0", "role=1", "role=2", "role=3")):
                print(line)
        print(result.summary())
        return 0 if result.ok else 1

    jobs = [(seed, overrides) for seed in range(args.start, args.start + args.seeds)]
    started = time.perf_counter()
    failed: list[tuple[int, str, list[str]]] = []
    kinds: Counter[str] = Counter()
    seeds_of: dict[str, list[int]] = {}
    totals: Counter[str] = Counter()
    events = 0
    done = 0
    with ProcessPoolExecutor(max_workers=max(1, args.jobs), initializer=_quiet) as pool:
        for seed, described, failures, _, count, figures in pool.map(_run, jobs, chunksize=8):
            done += 1
            events += count
            totals.update(figures)
            totals.update({f"runs_with_{k}": 1 for k, v in figures.items() if v})
            if failures:
                print(f"  failed: {described}: {failures[0][:200]}", file=sys.stderr)  # as they come
                failed.append((seed, described, failures))
                found = {m.group(1) for f in failures if (m := re.search(r"\[([\w-]+)\]", f))}
                kinds.update(found)
                for kind in found:
                    seeds_of.setdefault(kind, []).append(seed)
            if done % 100 == 0:
                rate = done / (time.perf_counter() - started)
                print(f"  {done}/{len(jobs)} runs, {len(failed)} failed, {rate:.1f} runs/s", file=sys.stderr)
    elapsed = time.perf_counter() - started
    for seed, described, failures in failed:
        print(f"FAIL {described}")
        for f in failures[: args.show]:
            print(f"     {f[:300]}")
        if len(failures) > args.show:
            print(f"     ... {len(failures) - args.show} more")
    passed = len(jobs) - len(failed)
    print(f"{passed}/{len(jobs)} seeds passed ({args.start}..{args.start + len(jobs) - 1}); "
          f"failed: {', '.join(f'{k} in {v}' for k, v in kinds.most_common()) or 'none'}")
    print(f"{elapsed:.1f} s, {len(jobs) / elapsed:.1f} runs/s with {args.jobs} process(es), "
          f"{events / elapsed:,.0f} events/s; {events / max(1, len(jobs)):,.0f} events a run")
    print("faults and acceptances over all runs: " + ", ".join(
        f"{k} {totals[k]:,} (in {totals['runs_with_' + k]} runs)" for k in FIGURES))
    for kind, seeds in sorted(seeds_of.items()):
        print(f"[{kind}] in {len(seeds)} runs: seeds {' '.join(map(str, seeds[:40]))}"
              + (" ..." if len(seeds) > 40 else ""))
    if failed:
        print("failed seeds: " + " ".join(str(seed) for seed, _, _ in failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
