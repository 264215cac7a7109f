"""What every scenario measures with: the running formation, the load generator's clients, the
counts of what was published (so "settled" can be told), the report and the progress display.

The scenarios (scenarios.py, views.py, tails.py) are functions of a `Bench`; it knows none of them.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.progress import Progress

from services.shared.events import CommentCreated, Event, PostCreated
from services.shared.http import Answer

from ..client import JSON, BlogClient
from ..errors import BlogctlError
from ..polling import wait_until
from ..runtime import Runtime
from ..steps import bring_up
from .carriers import Carrier, post_event
from .load import Load, LoadGenerator, run_load, worker_client
from .report import Report

CLIENTS = 8  # client threads, as in the Node/Express figures the targets compare with
POST, COMMENT = PostCreated.__name__, CommentCreated.__name__


@dataclass(frozen=True)
class Sizes:
    seconds: float  # each timed load
    publish_events: int
    read_posts: tuple[int, ...]
    comments_per_post: int
    rebuild_events: int
    latency_samples: int
    tail_rounds: int  # runs of the tails scenario (interleaved) and of the rebuild, each reported as their median

    @classmethod
    def pick(cls, quick: bool) -> Sizes:
        if quick:
            return cls(1.0, 2_000, (200,), 5, 5_000, 30, 1)
        return cls(5.0, 20_000, (1_000, 10_000), 5, 100_000, 200, 3)


def until(condition: Callable[[], Any], *, timeout: float, interval: float = 0.05, what: str) -> None:
    wait_until(condition, timeout=timeout, interval=interval, message=f"the benchmark: {what}")


def read_view(client: BlogClient, **kwargs: Any) -> Answer:
    """Query's view as bytes, not parsed: the load generator must not spend the machine's CPU on JSON."""
    return client.request("query", "GET", "/posts", **kwargs)


def cpu_seconds(pid: int) -> float:
    """User and system CPU of the processes in `pid`'s process group (a service started in a session
    of its own, and anything it started), read from /proc: what a load cost it, read around the load."""
    ticks = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()  # after "(comm)", which may hold spaces
        except OSError:
            continue  # ended meanwhile
        if int(fields[2]) == pid:  # its process group
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise BlogctlError(f"no memory figure for pid {pid}")


class Bench:
    def __init__(self, rt: Runtime, carrier: Carrier, sizes: Sizes, report: Report, progress: Progress) -> None:
        self.rt = rt
        self.sizes = sizes
        self.report = report
        self.progress = progress
        self.new_client = lambda: worker_client(rt.config)
        self.client = self.new_client()
        self.carrier = carrier
        self.lock = threading.Lock()  # the counts below are updated by many client threads
        self.bare: dict[str, float] = {}  # the bare endpoint's figures every other is a ratio to
        self.bare_url = ""
        self.posts_published = 0
        self.comments_published = 0
        self.events_published = 0

    @contextmanager
    def step(self, description: str) -> Iterator[None]:
        task = self.progress.add_task(description, total=None)
        try:
            yield
        finally:
            self.progress.update(task, completed=1, total=1)

    # Load

    def load(self, call: Callable[..., Any]) -> Load:
        """`call(client)` from CLIENTS workers for the timed load's seconds."""
        return run_load(call, threads=CLIENTS, seconds=self.sizes.seconds, client=self.new_client)

    def sequential(self, call: Callable[[], Any]) -> list[float]:
        """The seconds each of `latency_samples` calls took, one after the other."""
        times = []
        for _ in range(self.sizes.latency_samples):
            started = time.perf_counter()
            call()
            times.append(time.perf_counter() - started)
        return times

    @contextmanager
    def background_writers(self, writers: int = 2) -> Iterator[None]:
        """`writers` clients each creating about 25 posts/s (moderate load) while the block runs."""
        load = LoadGenerator(lambda client, *_: time.sleep(0.04) or self.create_post(client), threads=writers,
                             client=self.new_client).start()
        try:
            yield
        finally:
            load.stop()
            load.join(30)

    # Writes, counted

    def create_post(self, client: BlogClient) -> int:
        client.request("posts", "POST", "/posts", body=b'{"title": "bench"}', headers=JSON)
        with self.lock:
            self.posts_published += 1
            self.events_published += 1
        return 1

    def count_posts(self, posts: int) -> None:
        """Posts published by a load generator that counts them itself (wrk), one event each."""
        with self.lock:
            self.posts_published += posts
            self.events_published += posts

    def publish_batch(self, events: list[Event]) -> int:
        """Publish `events` straight to the transport; count what was acknowledged. Returns how many."""
        if not self.carrier.publish(events):
            return 0
        with self.lock:
            self.events_published += len(events)
            self.posts_published += sum(e.type == POST for e in events)
            self.comments_published += sum(e.type == COMMENT for e in events)
        return len(events)

    def burst(self, total: int, batch: int = 100, publishers: int = 4, note: str = "") -> tuple[int, float, float]:
        """Publish `total` events from `publishers` clients in batches: (acknowledged, seconds until the last
        was accepted, seconds until every consumer had every one)."""
        per = total // publishers
        batches = [[[post_event() for _ in range(min(batch, per - first))] for first in range(0, per, batch)]
                   for _ in range(publishers)]  # made before the clock starts: only publishing is timed
        with self.step(f"publish {total:,} events ({publishers} publishers, batches of {batch}){note}"):
            started = time.perf_counter()
            publishing = LoadGenerator(lambda _, worker, i: self.publish_batch(batches[worker][i]),
                                       threads=publishers, each=len(batches[0]), client=self.new_client)
            acked = publishing.start().join(600).count
            accepted = time.perf_counter() - started
            self.settle(timeout=300, what="every subscriber to take every event")
            return acked, accepted, time.perf_counter() - started

    def write_then_see(self) -> None:
        """POST a post, then read Query until it shows: with its ETag and `wait`, Query answers
        the moment the view changes (as the blog page reads it), so no poll interval is added."""
        self.create_post(self.client)
        self.see(self.posts_published)

    def see(self, target: int) -> None:
        """Read Query until its view holds `target` posts, as the blog page reads it."""
        # Query's newest post is the last one: a page of one at the end of the view.
        page = {"offset": target - 1, "limit": 1, "wait": 5}
        headers: dict[str, str] = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            response = self.client.request("query", "GET", "/posts", params=page, headers=headers)
            if int(response.headers["X-Total-Count"]) >= target:
                return
            headers = {"If-None-Match": response.headers["ETag"]}
        raise BlogctlError("benchmark gave up after 30s waiting for a new post to reach the view")

    # The formation

    def cpu(self) -> dict[str, float]:
        """Each running process of the formation: its CPU seconds so far (`cpu_seconds`)."""
        return {state.name: cpu_seconds(state.pid) for state in self.rt.formation.states() if state.running}

    def health(self, service: str) -> dict:
        return self.client.health(service, timeout=60)

    def settled(self) -> bool:
        """Every subscriber has every event, and Query's view holds every post and comment published."""
        if not self.carrier.delivered():
            return False
        query = self.health("query")
        return query["posts"] >= self.posts_published and query["comments"] >= self.comments_published

    def settle(self, timeout: float = 600, what: str = "the formation to settle") -> None:
        until(self.settled, timeout=timeout, interval=0.05, what=what)

    def restart(self, names: list[str], env: dict[str, str]) -> None:
        """Stop `names`, and start them again with `env` added to their environment."""
        formation = self.rt.formation
        for name in names:
            formation.stop(name)
            self.rt.service_env[name] = env  # the supervisor reads it at the next start
        bring_up(self.rt, names)
