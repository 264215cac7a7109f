"""Reading the log to catch up: pages fetched ahead, decoded by the reader; the collector paused;
a consumer that follows the log's stream waiting for its catch-up first."""
from __future__ import annotations

import gc
import threading

import pytest

from services.shared.consumer import CatchUp
from services.shared.events import Event
from services.shared.transport import log_pages, read_ahead
from services.shared.transport.bus import HttpTransport, LogFollower


def numbered(after: int, count: int) -> list[Event]:
    return [Event("PostCreated", {"id": f"p{seq}", "title": "t"}, id=f"e{seq}", seq=seq) for seq in range(after + 1, after + 1 + count)]


class Log:
    """A log of `size` events whose fetch gives raw pages and records what it was asked, and from which thread."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.fetched: list[int] = []  # `after` of each fetch, in order
        self.fetch_threads: set[str] = set()
        self.decode_threads: set[str] = set()
        self.first_page_taken = threading.Event()

    def fetch(self, after: int, limit: int) -> list[int]:
        self.fetched.append(after)
        self.fetch_threads.add(threading.current_thread().name)
        return list(range(after + 1, min(after + limit, self.size) + 1))

    def decode(self, seqs: list[int], after: int, limit: int) -> list[Event]:
        self.decode_threads.add(threading.current_thread().name)
        return [numbered(seq - 1, 1)[0] for seq in seqs]

    def read(self, after: int = 0, limit: int = 10) -> list[Event]:
        return self.decode(self.fetch(after, limit), after, limit)


@pytest.mark.parametrize("size", [0, 7, 10, 25, 30])
def test_read_ahead_gives_the_pages_log_pages_gives(size):
    assert [[e.seq for e in page] for page in read_ahead(Log(size).fetch, Log(size).decode, 0, 10)] == [
        [e.seq for e in page] for page in log_pages(Log(size).read, 0, 10)]


def test_the_next_page_is_fetched_in_another_thread_while_the_caller_holds_this_one():
    log = Log(25)
    pages = read_ahead(log.fetch, log.decode, 0, 10)
    first = next(pages)
    for _ in range(100):  # the fetch of the second page was submitted before the first was given out
        if log.fetched == [0, 10]:
            break
        threading.Event().wait(0.01)
    assert [e.seq for e in first][-1] == 10 and log.fetched == [0, 10]
    assert [len(page) for page in pages] == [10, 5]
    assert log.fetched == [0, 10, 20]
    # Only the fetch leaves the caller's thread: decoding there, beside a caller writing SQLite, made them take turns.
    assert log.decode_threads == {threading.current_thread().name}
    assert log.fetch_threads and threading.current_thread().name not in log.fetch_threads


class PagedTransport:
    def __init__(self, size: int) -> None:
        self.log = Log(size)

    def iter_log(self, after: int = 0, page: int = 10):
        return read_ahead(self.log.fetch, self.log.decode, after, page)


def test_a_catch_up_applies_with_the_collector_paused_and_turns_it_back_on():
    seen: list[bool] = []

    def apply(events, *, from_log=False):
        seen.append(gc.isenabled())
        return False

    catch_up = CatchUp("query", apply, lambda: 0, PagedTransport(25), page=10)
    assert gc.isenabled()
    assert catch_up.step() == 25
    assert seen == [False, False, False] and gc.isenabled() and catch_up.caught_up


def test_a_catch_up_that_fails_turns_the_collector_back_on():
    def apply(events, *, from_log=False):
        raise RuntimeError("the store refused")

    with pytest.raises(RuntimeError):
        CatchUp("query", apply, lambda: 0, PagedTransport(5), page=10).step()
    assert gc.isenabled()


def test_a_follower_opens_no_stream_until_the_consumer_gives_its_position():
    transport = HttpTransport("http://127.0.0.1:1")  # nothing listens: any request would fail the step
    follower = LogFollower(transport, "query", lambda events: None, lambda: None)
    follower.NOT_YET = 0.01
    try:
        assert follower.step() == 1  # looked, found the consumer still catching up, and will look again
        assert follower._response is None and not follower.streaming
    finally:
        follower.stop(timeout=1)
        transport.close()
