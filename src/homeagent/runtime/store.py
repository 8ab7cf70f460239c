"""The bindings' store: one SQLite file (``state_dir/bindings.db``) in WAL mode, behind a small interface
(``Store``) with an in-memory variant for tests. What goes in and when is runtime/persistence.py's business;
the bytes of a node's state are core/persisted.py's.

The file is a journal of chunks, each the records of the mobile nodes one loop turn changed, in the order
they were written (the schema below); loading reads them in order and the last record of a home address
holds. A row per mobile node, updated in place, was measured and refused: the sqlite3 module costs 1.3 to
1.6 us an ``INSERT OR REPLACE``, and nodes that register in no particular order dirty a 4 KiB page each, so
a busy Home Agent writes a page per registration. One row a turn costs some 0.2 to 0.3 us a node and writes
its pages one after the other. Runtime/persistence.py rewrites the table now and then and forgets what the
rewrite supersedes, so the file stays within a few times the table's size.

Schema version 1 (``PRAGMA user_version``), ours by ``PRAGMA application_id`` (``APPLICATION_ID``)::

    CREATE TABLE journal (seq INTEGER PRIMARY KEY, records BLOB NOT NULL)

A file that is not an SQLite database, is corrupt, is another application's, or has a newer schema is
refused at start with one line (``StoreError``), and is never written: every check and the whole load run
on a read-only connection, and the file is opened for writing only once all of it has been read.

Durability: WAL with ``synchronous = NORMAL``: a commit is a write() into the WAL, no fsync, so a process
that dies (kill -9) loses nothing it committed. The WAL is copied into the database and synced by a
thread of its own (``Checkpointer``) about every second, never by the event loop: an fsync on a busy disk
may take tens of milliseconds, which the loop's advertisements cannot wait for (but see WAL_LIMIT). A
power loss or a kernel crash can lose what was committed since the last sync (docs/operations.md,
"Persistence").
"""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Protocol

APPLICATION_ID = 0x4D495048  # "MIPH": Mobile IP Home agent
SCHEMA_VERSION = 1
MAGIC = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file
FORGET_STEP = 64  # superseded rows deleted per write at most: a bounded pause whatever the table's size
CHECKPOINT_EVERY = 1.0  # seconds between two checkpoints (and syncs) of the WAL
WAL_LIMIT = 64 << 20  # bytes of WAL past which the checkpoint thread empties it (holding writes back briefly)
KEY = "home_agent.persistence"


class StoreError(RuntimeError):
    """Why the store cannot be used, as one line naming the file: refused at start, or a failed write."""


class Store(Protocol):
    """What persistence needs of a store: read it once, then append."""

    name: str  # for messages: the file

    def chunks(self) -> Generator[bytes, None, None]:
        """Every chunk written, oldest first; StoreError if the store turns out to be corrupt."""
        ...

    def open(self) -> None:
        """Ready for writing: after ``chunks`` has been read to the end."""
        ...

    def write(self, chunks: Sequence[bytes], forget_before: int = 0) -> tuple[list[int], int]:
        """Append ``chunks`` in one transaction, and delete up to FORGET_STEP rows written before
        ``forget_before`` (a sequence number ``write`` returned). Returns the chunks' sequence numbers and
        how many rows were deleted. StoreError if the transaction failed (nothing of it was written)."""
        ...

    def close(self) -> None: ...


class MemoryStore:
    """A store in memory, for tests of what persistence writes: ``rows`` as the file would hold them."""

    def __init__(self, rows: dict[int, bytes] | None = None) -> None:
        self.name = "the memory store"
        self.rows: dict[int, bytes] = dict(rows or {})
        self.writes = 0  # transactions
        self.opened = self.closed = False
        self.fail = False  # the next writes fail (a full disk)

    def chunks(self) -> Generator[bytes, None, None]:
        for seq in sorted(self.rows):
            yield self.rows[seq]

    def open(self) -> None:
        self.opened = True

    def write(self, chunks: Sequence[bytes], forget_before: int = 0) -> tuple[list[int], int]:
        if self.fail:
            raise StoreError("memory store: write failed (as asked)")
        self.writes += 1
        seqs = []
        for chunk in chunks:
            seq = max(self.rows, default=0) + 1
            self.rows[seq] = chunk
            seqs.append(seq)
        old = sorted(s for s in self.rows if s < forget_before)[:FORGET_STEP]
        for seq in old:
            del self.rows[seq]
        return seqs, len(old)

    def close(self) -> None:
        self.closed = True


class SqliteStore:
    """``Store`` in an SQLite file. Made, it has checked the file (StoreError if it refuses it) and written
    nothing; ``chunks`` reads it read-only; ``open`` starts writing (and makes the file if there was none)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = str(path)
        # A reader of a WAL-mode file makes its -wal and -shm if they are missing: a refused file leaves
        # none of them behind (``_refuse``).
        self._missing = [p for p in (_beside(path, "-wal"), _beside(path, "-shm")) if not os.path.lexists(p)]
        try:
            self._fresh = _check(path)  # nothing to keep: no file, or an SQLite file with nothing in it
        except StoreError:
            self._tidy()
            raise
        self._db: sqlite3.Connection | None = None
        self._checkpointer: Checkpointer | None = None

    def chunks(self) -> Generator[bytes, None, None]:
        if self._fresh:
            return
        reader = _read_only(self.path)
        try:
            for (records,) in reader.execute("SELECT records FROM journal ORDER BY seq"):
                if not isinstance(records, bytes):
                    raise StoreError(f"{KEY}: {self.path} is corrupt: a journal row holds "
                                     f"{type(records).__name__}, not bytes; move it away to start without it")
                yield records
        except sqlite3.DatabaseError as exc:
            reader.close()
            self._tidy()
            raise StoreError(_corrupt(self.path, exc)) from None
        except StoreError:
            reader.close()
            self._tidy()
            raise
        finally:
            reader.close()

    def _tidy(self) -> None:
        """Remove the -wal and -shm our reader made beside a file we refuse (they were not there)."""
        for extra in self._missing:
            try:
                os.unlink(extra)
            except FileNotFoundError:
                pass

    def open(self) -> None:
        if self._fresh and not self.path.exists():
            try:  # made here, mode 0600: SQLite (and its -wal and -shm, which copy it) never widens it
                os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
            except OSError as exc:
                raise StoreError(f"{KEY}: cannot create {self.path}: {exc.strerror}") from None
        try:
            db = sqlite3.connect(self.path, isolation_level=None)
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute("PRAGMA wal_autocheckpoint = 0")  # the Checkpointer's thread does it, off the loop
            if self._fresh:
                db.execute("BEGIN IMMEDIATE")
                db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                db.execute("CREATE TABLE journal (seq INTEGER PRIMARY KEY, records BLOB NOT NULL)")
                db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"{KEY}: cannot open {self.path} for writing: {exc}") from None
        self._db = db
        self._fresh = False
        self._checkpointer = Checkpointer(self.path)

    def write(self, chunks: Sequence[bytes], forget_before: int = 0) -> tuple[list[int], int]:
        db = self._db
        assert db is not None, "open() first"
        try:
            db.execute("BEGIN")
            seqs = []
            for chunk in chunks:
                cursor = db.execute("INSERT INTO journal (records) VALUES (?)", (chunk,))
                assert cursor.lastrowid is not None
                seqs.append(cursor.lastrowid)
            forgotten = 0
            if forget_before:
                forgotten = db.execute(
                    "DELETE FROM journal WHERE seq IN"
                    " (SELECT seq FROM journal WHERE seq < ? ORDER BY seq LIMIT ?)",
                    (forget_before, FORGET_STEP)).rowcount
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            try:
                if db.in_transaction:
                    db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise StoreError(f"{KEY}: cannot write {self.path}: {exc}") from None
        return seqs, forgotten

    def close(self) -> None:
        """Everything committed stays; the WAL is copied into the file and emptied (a clean stop leaves
        one file behind that any SQLite tool reads). Never opened (the file refused): nothing is left
        beside it that was not there."""
        if self._db is None:
            self._tidy()
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        if self._db is not None:
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass  # committed is committed: the next start reads the WAL
            self._db.close()
            self._db = None


class Checkpointer:
    """A thread that copies the WAL into the database file and syncs it every CHECKPOINT_EVERY seconds, on
    a connection of its own (the sqlite3 module lets go of the GIL while SQLite works). Passive: it neither
    waits for nor holds up the loop's writes.

    SQLite starts the WAL over only when a write begins after a checkpoint has copied all of it; under a
    steady load a commit always comes first, and the WAL would grow without end (100 MB in 12 s of
    150,000 registrations a second, measured). So once it passes ``limit`` bytes, the thread empties it
    (a TRUNCATE checkpoint): the loop's writes wait meanwhile, for what the passive checkpoint just before
    left to copy (under a second's worth) and one sync."""

    def __init__(self, path: Path, every: float = CHECKPOINT_EVERY, limit: int = WAL_LIMIT) -> None:
        self._path = path
        self._every = every
        self._limit = limit
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="homeagent-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            db = sqlite3.connect(self._path, isolation_level=None)
        except sqlite3.Error:
            return  # the loop's own checkpoint at close still runs
        try:
            wal = _beside(self._path, "-wal")
            while not self._stopping.wait(self._every):
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                    if os.path.getsize(wal) > self._limit:
                        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                except (sqlite3.Error, OSError):
                    pass  # busy or failing: the next round tries again, and the loop's writes go on
        finally:
            db.close()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=10)


# -- checks at start ----------------------------------------------------------------------------------


def _check(path: Path) -> bool:
    """Whether ``path`` is a store with nothing to keep (missing, or an SQLite file with nothing in it);
    False for one of ours to load; StoreError for anything to refuse. Writes nothing."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return True
    except OSError as exc:
        raise StoreError(f"{KEY}: cannot use {path}: {exc.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        raise StoreError(f"{KEY}: {path} is a symlink; refusing to follow it")
    if not stat.S_ISREG(st.st_mode):
        raise StoreError(f"{KEY}: {path} is not a regular file")
    if st.st_size:  # (an empty file may still have a WAL beside it: SQLite reads the two together)
        try:
            with open(path, "rb") as f:
                head = f.read(len(MAGIC))
        except OSError as exc:
            raise StoreError(f"{KEY}: cannot read {path}: {exc.strerror}") from None
        if head != MAGIC:
            raise StoreError(f"{KEY}: {path} is not an SQLite database (corrupt, or not ours); "
                             "refusing to overwrite it: move it away to start without it")
    try:
        reader = _read_only(path)
        try:
            application_id = reader.execute("PRAGMA application_id").fetchone()[0]
            version = reader.execute("PRAGMA user_version").fetchone()[0]
            objects = {name: sql for name, sql in reader.execute("SELECT name, sql FROM sqlite_master")}
        finally:
            reader.close()
    except sqlite3.DatabaseError as exc:
        raise StoreError(_corrupt(path, exc)) from None
    if application_id == 0 and version == 0 and not objects:
        return True  # an empty database (a start that died before its first commit): nothing to keep
    if application_id != APPLICATION_ID:
        raise StoreError(f"{KEY}: {path} is not a homeagent store (SQLite application_id "
                         f"{application_id:#x}, ours is {APPLICATION_ID:#x}); refusing to overwrite it: "
                         "move it away or set another state_dir")
    if version > SCHEMA_VERSION:
        raise StoreError(f"{KEY}: {path} has schema version {version}, newer than this homeagent reads "
                         f"({SCHEMA_VERSION}): run the newer homeagent, or move the file away to start "
                         "without it")
    if version != SCHEMA_VERSION or "journal" not in objects:
        raise StoreError(f"{KEY}: {path} is corrupt: schema version {version}, tables {sorted(objects)}; "
                         "move it away to start without it")
    return False


def _beside(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _read_only(path: Path) -> sqlite3.Connection:
    """A connection that cannot write: it neither checkpoints nor rolls back what it finds."""
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)


def _corrupt(path: Path, exc: sqlite3.Error) -> str:
    return f"{KEY}: {path} cannot be read ({exc}): corrupt, or not ours; move it away to start without it"
