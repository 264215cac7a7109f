"""Durable commits: an fsync of the WAL covers every commit made before it began, and concurrent
commits share one."""
from __future__ import annotations

import threading

from services.shared.db import Database, GroupSync


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
