"""Durable commits: an fsync of the WAL covers every commit made before it began, and concurrent
commits share one."""
from __future__ import annotations

import threading

from blogctl.polling import wait_until
from services.shared.db import Checkpointer, Database, GroupSync


class FakeDisk:
    """An fsync that counts calls and can be held, to line commits up behind one in progress."""

    def __init__(self) -> None:
        self.calls = 0
        self.hold = threading.Event()
        self.hold.set()
        self.entered = threading.Event()

    def fsync(self, fd: int) -> None:
        self.calls += 1
        self.entered.set()
        assert self.hold.wait(10)


def test_a_commit_waits_for_an_fsync_that_began_after_it(tmp_path):
    disk = FakeDisk()
    sync = GroupSync(tmp_path / "x.db-wal", fsync=disk.fsync)
    (tmp_path / "x.db-wal").write_bytes(b"")
    sync.wait(sync.committed())
    sync.wait(sync.committed())
    assert disk.calls == 2  # one after the other: each needs its own
    sync.wait(1)
    assert disk.calls == 2  # already covered


def test_commits_made_during_an_fsync_share_the_next_one(tmp_path):
    disk = FakeDisk()
    sync = GroupSync(tmp_path / "x.db-wal", fsync=disk.fsync)
    (tmp_path / "x.db-wal").write_bytes(b"")
    disk.hold.clear()
    first = threading.Thread(target=lambda: sync.wait(sync.committed()))
    first.start()
    assert disk.entered.wait(5)  # the first fsync is running, held
    later = [threading.Thread(target=lambda: sync.wait(sync.committed())) for _ in range(8)]
    for thread in later:
        thread.start()
    disk.hold.set()
    for thread in [first, *later]:
        thread.join(10)
    assert not any(thread.is_alive() for thread in [first, *later])
    assert disk.calls == 2  # the eight commits made during the first fsync were covered by one more


def test_a_durable_database_fsyncs_its_commits_and_a_rebuildable_one_does_not(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr("services.shared.db.os.fsync", lambda fd: calls.append(fd))
    durable = Database(tmp_path / "durable.db", "CREATE TABLE IF NOT EXISTS t (x);")
    with durable.transaction() as conn:
        conn.execute("INSERT INTO t VALUES (1)")
    assert len(calls) == 1
    with durable.transaction(durable=False) as conn:  # a write whose loss is harmless
        conn.execute("INSERT INTO t VALUES (2)")
    assert len(calls) == 1
    rebuildable = Database(tmp_path / "view.db", "CREATE TABLE IF NOT EXISTS t (x);", durable=False)
    with rebuildable.transaction() as conn:
        conn.execute("INSERT INTO t VALUES (1)")
    assert len(calls) == 1


def test_writers_of_one_process_take_turns_without_sleeping_in_sqlite(tmp_path):
    """Many threads writing at once all commit, and none meets SQLite's busy handler: with a
    zero busy timeout, a thread that found the write lock taken would fail at once."""
    db = Database(tmp_path / "w.db", "CREATE TABLE IF NOT EXISTS t (x);", durable=False)
    errors = []

    def write(k: int) -> None:
        try:
            conn = db.connection()
            conn.execute("PRAGMA busy_timeout=0")
            for i in range(50):
                with db.transaction() as tx:
                    tx.execute("INSERT INTO t VALUES (?)", (k * 1000 + i,))
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert db.connection().execute("SELECT count(*) FROM t").fetchone()[0] == 400


def test_a_checkpointer_takes_checkpoints_off_the_writers(tmp_path):
    db = Database(tmp_path / "c.db", "CREATE TABLE IF NOT EXISTS t (x);", durable=False)
    checkpointer = Checkpointer(db, pages=4)
    checkpointer.start()
    try:
        wal = tmp_path / "c.db-wal"

        def write_some() -> None:
            conn = db.connection()  # opened after start(): it leaves checkpoints to the thread
            assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
            for _ in range(20):
                with db.transaction() as tx:
                    tx.execute("INSERT INTO t VALUES (randomblob(2000))")

        writer = threading.Thread(target=write_some)
        writer.start()
        writer.join(30)
        wait_until(lambda: checkpointer.checkpoints > 0, timeout=10)
        # every frame of the WAL is in the database file now: a new reader sees all 20 rows from it
        busy, frames, copied = db.connection().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert (busy, frames) == (0, copied)
        assert wal.exists()
    finally:
        checkpointer.stop()
    assert db.connection().execute("SELECT count(*) FROM t").fetchone()[0] == 20
