"""Bindings that survive a restart (``[home_agent] persistence``, on by default): what the daemon writes to
its store (runtime/store.py), when, and what it loads at start.

* What: each mobile node's whole state as the table holds it (core/persisted.py): its last
  Identification, its bindings with their expiry as wall-clock time, and its tombstones. Every change is
  written whatever made it (a registration or renewal, a de-registration, a member's Binding Update, a table
  download, an expiry, ``homeagent remove``): the table says which nodes changed
  (``BindingTable.take_changed``), and the one stream of changes needs no second route.
* When: once per turn of the event loop (a drain of the sockets, a timer, a control command; a long drain
  every ``daemon.COMMIT_EVERY`` datagrams), in one transaction (``commit``); the daemon holds the turn's
  registration replies until it is committed (``Daemon._commit``): a mobile node is never told it is
  registered with a binding a kill -9 could lose. A kill -9 loses at most what came since the last commit, whose replies had not left.
* At start (``load``): the latest record of each node, restored into the core before it starts: a lone
  Home Agent serves them at once, each with the time it has left (the ended ones dropped), and the timer
  wheel armed for them. In a group the member then downloads the group's table as it always does, and
  merges it on top (core/home_agent.py ``restore``): the store only fills a cold start, when no member is
  up to answer.
* Keeping the file small: every record ever written stays until superseded, so once the file holds more
  than twice the nodes (plus ``COMPACT_SLACK``), the whole table is written again, a step with each
  commit beside its changes, and the rows it supersedes are then deleted a few at a time. A node's
  record written by the walk is its state when the walk reaches it, and every change after that is written
  after it, so the last record of each node is still its state at every moment.
"""

from __future__ import annotations

import gc
import logging
from array import array
from pathlib import Path

from homeagent.core.effects import Effect
from homeagent.core.home_agent import HomeAgent
from homeagent.core.persisted import CorruptRecord, encode, records, state
from homeagent.runtime.store import FORGET_STEP, KEY, SqliteStore, Store, StoreError

log = logging.getLogger("homeagent.store")

# Nodes of a rewrite written per commit, beside what changed: WALK_MIN and twice the changes (so the
# rewrite outruns them, whatever the load), at most WALK_STEP (some 2 ms). A commit every 64 datagrams
# (daemon.COMMIT_EVERY) so pays for some 2 more nodes a registration while a rewrite runs, not 32.
WALK_MIN = 512
WALK_STEP = 2048
COMPACT_SLACK = 65536  # records the file may hold beyond twice the nodes before it is rewritten
LOG_FAILURE_EVERY = 10.0  # seconds between two errors logged for failed writes


class Persistence:
    def __init__(self, store: Store, core: HomeAgent) -> None:
        self._store = store
        self._core = core
        self._pending: set[int] = set()  # changed nodes a failed write did not store
        self._in_file = 0  # records in the file, superseded ones included
        self._walk: array[int] | None = None  # the rewrite in progress: the nodes known when it began
        self._walked = 0  # of them, written so far
        self._walk_from = 0  # the sequence number of the rewrite's first row
        self._since_walk = 0  # records written from that row on
        self._forget_before = 0  # rows before this one are superseded and being deleted
        self._failure_logged_at: float | None = None
        core.bindings.track_changes()

    # -- start --------------------------------------------------------------------------------------

    def load(self, now: float) -> list[Effect]:
        """Read the whole store, restore the latest state of each node into the core, then open the store
        for writing. Returns the tunnels of what was loaded. StoreError if the store is corrupt."""
        latest: dict[int, bytes] = {}
        count = 0
        chunks = self._store.chunks()
        collecting = gc.isenabled()
        gc.disable()  # a million nodes make millions of objects and no cycle: a third of the time, saved
        try:
            for chunk in chunks:
                for home_address, record in records(chunk):
                    latest[home_address] = record
                    count += 1
            offset = self._core.clock.offset
            restored = self._core.restore(((h, state(r, offset)) for h, r in latest.items()), now)
        except CorruptRecord as exc:
            chunks.close()
            self._store.close()
            raise StoreError(f"{KEY}: {self._store.name} is corrupt ({exc}); move it away to start without it"
                             ) from None
        finally:
            if collecting:
                gc.enable()
        self._core.bindings.take_changed()  # the file has them already,
        self._pending = set(restored.changed)  # but for what ended while stopped: written at the first commit
        self._in_file = count
        self._store.open()
        counters = self._core.counters
        if latest:
            log.info("%d bindings of %d mobile nodes loaded from the store, %d ended while stopped",
                     counters["store.loaded_bindings"], counters["store.loaded_nodes"],
                     counters["store.expired_at_load"])
        return restored.tunnels

    # -- every turn ---------------------------------------------------------------------------------

    def commit(self, now: float) -> None:
        """Write what changed since the last commit (and a step of a rewrite, if one is due), in one
        transaction. A write that fails is counted and logged, the nodes it carried are written with the
        next, and the daemon sends the replies that waited for it anyway:
        the Home Agent keeps serving when its disk does not (docs/operations.md, "Persistence")."""
        core = self._core
        table = core.bindings
        changed = table.take_changed()
        if self._pending:
            changed |= self._pending
            self._pending = set()
        chunks: list[bytes] = []
        walking = self._walk is not None
        due = self._in_file > 2 * table.nodes() + COMPACT_SLACK
        if self._walk is None and not self._forget_before and due:
            # (an array, not a list: nothing in it for the garbage collector to walk, core/listing.py)
            self._walk, self._walked, self._since_walk = array("L", table.home_addresses()), 0, 0
            walking = True
            core.counters["store.rewrites"] += 1
        offset = core.clock.offset
        step = 0
        if walking:
            assert self._walk is not None
            part = self._walk[self._walked:self._walked + min(WALK_STEP, WALK_MIN + 2 * len(changed))]
            step = len(part)
            chunks.append(encode(table, part, offset))  # first: every change of this turn comes after it
        if changed:
            chunks.append(encode(table, changed, offset))
        if chunks or self._forget_before:
            try:
                seqs, forgotten = self._store.write(chunks, self._forget_before)
            except StoreError as exc:
                self._pending = changed
                core.counters["store.write_failed"] += 1
                at = self._failure_logged_at
                if at is None or now - at >= LOG_FAILURE_EVERY:
                    self._failure_logged_at = now
                    log.error("%s (bindings held in memory only until a write succeeds)", exc)
            else:
                core.counters["store.commits"] += 1
                core.counters["store.records_written"] += len(changed) + step
                self._in_file += len(changed) + step
                self._since_walk += len(changed) + step
                if self._forget_before and forgotten < FORGET_STEP:
                    self._forget_before = 0  # every superseded row is gone
                if walking:
                    self._walk_step(seqs[0], step)

    def _walk_step(self, seq: int, step: int) -> None:
        """A step of the rewrite is written, the first of its turn's rows at ``seq``."""
        if self._walked == 0:
            self._walk_from = seq  # its first row
        self._walked += step
        assert self._walk is not None
        if self._walked >= len(self._walk):  # done: what came before its first row is superseded
            self._walk = None
            self._in_file = self._since_walk
            self._forget_before = self._walk_from

    # -- stop ---------------------------------------------------------------------------------------

    def close(self, now: float) -> None:
        """Commit what is left and close the store."""
        self.commit(now)
        self._store.close()


def open_store(path: Path, core: HomeAgent) -> Persistence:
    """The daemon's persistence on the SQLite file at ``path``: checked (StoreError if refused), not read."""
    return Persistence(SqliteStore(path), core)
