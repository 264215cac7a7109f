"""The one load generator (the bench's, behind the fault tests' bursts too), with a stand-in client."""
from __future__ import annotations

import threading

import pytest

from blogctl.bench.load import LoadFailed, LoadGenerator, run_load


class FakeClient:
    opened = 0

    def __enter__(self) -> FakeClient:
        FakeClient.opened += 1
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass


def test_by_count_every_worker_makes_its_calls_with_a_client_of_its_own():
    calls = []
    load = LoadGenerator(lambda client, worker, i: calls.append((worker, i)) or 2, threads=3, each=5,
                         client=FakeClient)
    before = FakeClient.opened
    result = load.start().join(5)
    assert sorted(calls) == [(w, i) for w in range(3) for i in range(5)]
    assert result.count == load.done == 30 and len(result.latencies) == 15
    assert FakeClient.opened - before == 3


def test_by_time_it_stops_at_the_deadline_and_reports_a_rate():
    result = run_load(lambda client, *_: 1, threads=2, seconds=0.2, client=FakeClient)
    assert result.count > 0 and 0.2 <= result.seconds < 5 and result.rate == result.count / result.seconds


def test_a_failing_worker_fails_the_load_and_says_why():
    def call(client, worker, i):
        if worker == 1 and i == 2:
            raise ValueError("posts service refused POST /posts (400)")
        return 1

    load = LoadGenerator(call, threads=2, each=4, client=FakeClient).start()
    with pytest.raises(LoadFailed, match=r"1 of 2 load workers failed: worker 1: posts service refused"):
        load.join(5)
    assert load.done == 4 + 2  # worker 0 made all its calls; worker 1 two before failing


def test_a_load_given_neither_seconds_nor_each_runs_until_stopped():
    calls = threading.Event()

    def call(client, worker, i):
        calls.set()
        return 1

    load = LoadGenerator(call, threads=2, client=FakeClient).start()
    assert calls.wait(5) and not load.finished()  # it runs on, however long
    load.stop()
    done = load.join(5)
    assert load.finished() and done.count == load.done >= 1
    with pytest.raises(ValueError, match="not both"):
        LoadGenerator(call, threads=1, client=FakeClient, seconds=1, each=1)
