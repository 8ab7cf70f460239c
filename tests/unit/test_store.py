"""runtime/store.py on real SQLite files: what is written reads back in order, superseded rows are forgotten a
step at a time, and a file that is not ours to write (not SQLite, corrupt, another application's, a newer
schema, a symlink) is refused with one line naming it and left exactly as it was."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from homeagent.runtime.store import APPLICATION_ID, FORGET_STEP, SCHEMA_VERSION, SqliteStore, StoreError


def ours(path: Path, chunks: list[bytes]) -> None:
    store = SqliteStore(path)
    assert list(store.chunks()) == []
    store.open()
    store.write(chunks)
    store.close()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_new_store_is_made_mode_0600_with_our_id_and_schema_version(tmp_path):
    path = tmp_path / "bindings.db"
    ours(path, [b"one", b"two"])
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()
    assert not (tmp_path / "bindings.db-wal").exists()  # a clean close leaves one file


def test_chunks_read_back_in_the_order_written_and_old_rows_are_forgotten_a_step_at_a_time(tmp_path):
    path = tmp_path / "bindings.db"
    store = SqliteStore(path)
    list(store.chunks())
    store.open()
    seqs = [store.write([bytes([i])])[0][0] for i in range(FORGET_STEP + 10)]
    mark = seqs[-5]
    assert store.write([b"new"], forget_before=mark) == ([seqs[-1] + 1], FORGET_STEP)
    assert store.write([], forget_before=mark)[1] == len(seqs) - 5 - FORGET_STEP
    assert store.write([], forget_before=mark)[1] == 0
    store.close()
    kept = [bytes([i]) for i in range(FORGET_STEP + 5, FORGET_STEP + 10)]
    assert list(SqliteStore(path).chunks()) == kept + [b"new"]


def test_what_a_killed_process_committed_is_read_from_its_wal(tmp_path):
    """No close: the rows are in the WAL only, as a kill -9 leaves them; a read-only reader finds them."""
    path = tmp_path / "bindings.db"
    store = SqliteStore(path)
    list(store.chunks())
    store.open()
    store.write([b"a", b"b"])
    assert (tmp_path / "bindings.db-wal").stat().st_size > 0
    assert list(SqliteStore(path).chunks()) == [b"a", b"b"]
    store.close()


def test_an_empty_database_is_taken_as_a_new_store(tmp_path):
    path = tmp_path / "bindings.db"
    path.touch(mode=0o600)
    ours(path, [b"x"])
    assert list(SqliteStore(path).chunks()) == [b"x"]


def foreign(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE contacts (name TEXT)")
    db.execute("INSERT INTO contacts VALUES ('someone')")
    db.commit()
    db.close()


def newer(path: Path) -> None:
    ours(path, [b"x"])
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()


def corrupt(path: Path) -> None:
    """Ours, with its table's pages overwritten: the header still says SQLite and ours."""
    ours(path, [os.urandom(3000) for _ in range(20)])
    data = bytearray(path.read_bytes())
    page = 4096
    data[page:] = b"\xa5" * (len(data) - page)
    path.write_bytes(bytes(data))


def not_sqlite(path: Path) -> None:
    path.write_bytes(b"bindings, as another program wrote them\n" * 100)


def ours_with_an_id_of_another(path: Path) -> None:
    ours(path, [b"x"])
    db = sqlite3.connect(path)
    db.execute("PRAGMA application_id = 1")
    db.commit()
    db.close()


REFUSED = [
    (foreign, "is not a homeagent store"),
    (ours_with_an_id_of_another, "is not a homeagent store"),
    (newer, f"schema version {SCHEMA_VERSION + 1}, newer than this homeagent reads"),
    (corrupt, "corrupt"),
    (not_sqlite, "is not an SQLite database"),
]


@pytest.mark.parametrize("make, message", REFUSED, ids=[m.__name__ for m, _ in REFUSED])
def test_a_file_not_ours_to_write_is_refused_and_left_as_it_was(tmp_path, make, message):
    path = tmp_path / "bindings.db"
    make(path)
    before = digest(path)
    with pytest.raises(StoreError) as refused:
        store = SqliteStore(path)
        list(store.chunks())  # a corrupt table may only show when it is read
        store.open()
    text = str(refused.value)
    assert message in text and str(path) in text and "\n" not in text
    assert digest(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bindings.db"]


def test_a_symlink_and_a_directory_are_refused(tmp_path):
    target = tmp_path / "elsewhere.db"
    ours(target, [b"x"])
    link = tmp_path / "bindings.db"
    link.symlink_to(target)
    with pytest.raises(StoreError, match="is a symlink"):
        SqliteStore(link)
    other = tmp_path / "other"
    (other / "bindings.db").mkdir(parents=True)
    with pytest.raises(StoreError, match="not a regular file"):
        SqliteStore(other / "bindings.db")


def test_the_checkpoint_thread_keeps_the_wal_within_its_limit_under_writes_that_never_pause(tmp_path):
    """Without it the WAL only grows while commits keep coming (SQLite starts it over only once a
    checkpoint has copied all of it before the next write)."""
    import time

    from homeagent.runtime.store import Checkpointer

    path = tmp_path / "bindings.db"
    store = SqliteStore(path)
    list(store.chunks())
    store.open()
    assert store._checkpointer is not None
    store._checkpointer.stop()
    store._checkpointer = Checkpointer(path, every=0.02, limit=256 << 10)
    wal = tmp_path / "bindings.db-wal"
    chunk = os.urandom(4000)
    seen = 0
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:  # some 4 MB of WAL: sixteen times the limit
        store.write([chunk])
        seen = max(seen, wal.stat().st_size)
    time.sleep(0.2)  # a few rounds of the thread once the writes stop
    assert seen > 256 << 10 and wal.stat().st_size <= 256 << 10
    store.close()
    assert [len(c) for c in SqliteStore(path).chunks()][-1] == 4000
