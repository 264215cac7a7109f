"""The bench's scenarios against a fresh formation, each figure said as a ratio to the bare endpoint.

Scenarios: publish throughput (accepted and delivered to every subscriber), end to end
(`POST /posts` rate, write-to-view latency idle and under load), reads of Query at 1k and
10k posts x 5 comments (full, conditional, a page), rebuild of Query from the log, and each
service's memory after 1k and after 100k events. `--quick` shrinks every size so CI can
check in well under a minute that each scenario ran and lost nothing.
"""
from __future__ import annotations

import os
import shutil
import socket
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from services.shared.config import SERVICE_TABLE, SERVICES
from services.shared.events import CommentCreated, Event, PostCreated
from services.shared.http import Answer

from .. import render
from ..client import JSON, BlogClient
from ..errors import BlogctlError
from ..steps import bring_up
from ..polling import wait_until
from ..runtime import Runtime
from .bare import bare_endpoint
from .carriers import SOURCE, Carrier, carrier_for
from .load import Load, percentile, run_load, worker_client
from .report import Figure, Report, memory_ratio
from .servers import SERVERS
from .servers import compare as compare_servers
from .tails import Tails

CLIENTS = 8  # client threads, as in the Node/Express figures the targets compare with


@dataclass(frozen=True)
class Sizes:
    seconds: float  # each timed load
    publish_events: int
    read_posts: tuple[int, ...]
    comments_per_post: int
    rebuild_events: int
    latency_samples: int
    tail_rounds: int  # interleaved runs of the tails scenario, of which it reports the median

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


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise BlogctlError(f"no memory figure for pid {pid}")


class Bench:
    def __init__(
        self, rt: Runtime, carrier: Carrier, sizes: Sizes, report: Report, progress: Progress,
    ) -> None:
        self.rt = rt
        self.sizes = sizes
        self.report = report
        self.progress = progress
        self.new_client = lambda: worker_client(rt.config)
        self.client = self.new_client()
        self.carrier = carrier
        self.lock = threading.Lock()  # the counts below are updated by many client threads
        self.bare: dict[str, float] = {}
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

    # Bare endpoint: the limit of this stack on this machine
    def measure_bare(self, bare_url: str) -> None:
        self.bare_url = bare_url
        with self.step("bare endpoint (waitress + Flask, {})"):
            # Straight through the client's HTTP layer: the bare endpoint is no service of the formation.
            load = self.load(lambda c, *_: c.http.request("GET", bare_url).status_code == 200)
            idle = self.sequential(lambda: self.client.http.request("GET", bare_url))
        self.bare = {"rate": load.rate, "p50": load.percentile(50), "round_trip": statistics.median(idle)}
        add = self.report.add
        add(Figure("bare", f"GET {{}} with {CLIENTS} clients", load.rate, "req/s"))
        add(Figure("bare", "round trip, idle, p50", self.bare["round_trip"] * 1000, "ms"))

    def sequential(self, call: Callable[[], Any]) -> list[float]:
        times = []
        for _ in range(self.sizes.latency_samples):
            started = time.perf_counter()
            call()
            times.append(time.perf_counter() - started)
        return times

    # 1. Publish throughput
    def publish(self) -> None:
        total = self.sizes.publish_events
        start = self.posts_published
        acked, accepted, delivered = self.burst(total)
        logged = self.carrier.logged(POST)  # the formation adds events of its own (e.g. decisions on comments)
        self.report.check("publish: every acknowledged event logged once", logged == self.posts_published,
                          f"{acked:,} acknowledged of {total:,}, the log holds {logged - start:,} of them")
        self.report.add(Figure("publish", f"accepted by {self.carrier.name} (durably, before it answers)",
                               acked / accepted, "events/s", reference="301 events/s (bare publish, Node)"))
        self.report.add(Figure(
            "publish", f"delivered to every consumer ({len(self.carrier.consumers())})", acked / delivered, "events/s",
            ratio=(acked / delivered) / self.bare["rate"], ratio_of="bare req/s (= one request per event)",
            target=">= 2x", met=(acked / delivered) >= 2 * self.bare["rate"],
        ))
        with self.step("publish one event at a time (the course's way)"):
            load = self.load(lambda c, *_: self.publish_batch([post_event()]))
        self.report.add(Figure("publish", f"one event per publish, {CLIENTS} clients", load.rate, "events/s",
                               ratio=load.rate / self.bare["rate"], ratio_of="bare req/s",
                               reference="301 events/s (Node)"))
        until(self.settled, timeout=300, interval=0.05, what="the formation to settle")

    def burst(self, total: int, batch: int = 100, publishers: int = 4, note: str = "") -> tuple[int, float, float]:
        """Publish `total` events from `publishers` threads in batches: (acknowledged, seconds until the last
        was accepted, seconds until every consumer had every one)."""
        per = total // publishers
        batches = [[[post_event() for _ in range(min(batch, per - first))] for first in range(0, per, batch)]
                   for _ in range(publishers)]  # made before the clock starts: only publishing is timed
        with self.step(f"publish {total:,} events ({publishers} publishers, batches of {batch}){note}"):
            started = time.perf_counter()
            acked = self.publish_posts(batches)
            accepted = time.perf_counter() - started
            until(self.settled, timeout=300, interval=0.05, what="every subscriber to take every event")
            return acked, accepted, time.perf_counter() - started

    # What "acknowledged means on disk" costs
    def durability(self) -> None:
        """POST /posts and the publish burst again with the fsync turned off (BLOG_FSYNC=0) in Posts,
        Comments, Moderation and the transport's own process (the bus), against the figures above."""
        measured = {f.name: f for f in self.report.figures}
        names = [spec.name for spec in SERVICE_TABLE
                 if spec.emits or spec.name == self.carrier.description.process]
        self.restart(names, {"BLOG_FSYNC": "0"})
        try:
            with self.step(f"POST /posts with {CLIENTS} clients, without the fsync"):
                load = self.load(lambda c, *_: self.create_post(c))
            until(self.settled, timeout=600, interval=0.05, what="the formation to settle")
            acked, _, delivered = self.burst(self.sizes.publish_events, note=", without the fsync")
            until(self.settled, timeout=600, interval=0.05, what="the formation to settle")
            with self.step("write-to-view latency, idle, without the fsync"):
                idle = self.sequential(self.write_then_see)
        finally:
            self.restart(names, {})
        with_fsync = measured[f"POST /posts, {CLIENTS} clients"].value
        self.report.add(Figure("durability", f"POST /posts, {CLIENTS} clients, BLOG_FSYNC=0", load.rate, "req/s",
                               ratio=with_fsync / load.rate, ratio_of="with the fsync (the default) / without"))
        delivered_with = next(f for f in self.report.figures if f.name.startswith("delivered to every")).value
        self.report.add(Figure("durability", "delivered to every consumer, BLOG_FSYNC=0", acked / delivered,
                               "events/s", ratio=delivered_with / (acked / delivered),
                               ratio_of="with the fsync (the default) / without", target=">= 0.85x",
                               met=delivered_with / (acked / delivered) >= 0.85))
        # What the two fsyncs on a write's way to the view (its store's, the log's) cost it.
        self.report.add(Figure("durability", "write-to-view p50, idle, BLOG_FSYNC=0", statistics.median(idle) * 1000,
                               "ms", ratio=statistics.median(idle) / self.bare["round_trip"], ratio_of="bare round trip"))

    # What tracing costs
    def tracing_cost(self, rounds: int = 1) -> None:
        """POST /posts and the publish burst with tracing on (the default sampler), then with it off
        (OTEL_SDK_DISABLED=true) in every service, back to back, `rounds` times: the best of each
        (on a shared machine, the run least disturbed by others)."""
        rates: dict[str, list[tuple[float, float]]] = {"on": [], "off": []}
        names = list(self.rt.formation.names)
        for _ in range(rounds):
            for mode, env in (("on", {}), ("off", {"OTEL_SDK_DISABLED": "true"})):
                self.restart(names, env)
                with self.step(f"POST /posts with {CLIENTS} clients, tracing {mode}"):
                    load = self.load(lambda c, *_: self.create_post(c))
                until(self.settled, timeout=600, interval=0.05, what="the formation to settle")
                acked, _, delivered = self.burst(self.sizes.publish_events, note=f", tracing {mode}")
                rates[mode].append((load.rate, acked / delivered))
        self.restart(names, {})
        best = {mode: (max(r[0] for r in runs), max(r[1] for r in runs)) for mode, runs in rates.items()}
        (posts_on, delivered_on), (posts_off, delivered_off) = best["on"], best["off"]
        of = f" (best of {rounds})" if rounds > 1 else ""
        for what, on, off, unit in ((f"POST /posts, {CLIENTS} clients", posts_on, posts_off, "req/s"),
                                    ("delivered to every consumer", delivered_on, delivered_off, "events/s")):
            self.report.add(Figure("tracing", f"{what}, tracing on{of}", on, unit, ratio=on / off,
                                   ratio_of="tracing on / off", target=">= 0.9x", met=on / off >= 0.9))
            self.report.add(Figure("tracing", f"{what}, tracing off (OTEL_SDK_DISABLED=true){of}", off, unit))

    def restart(self, names: list[str], env: dict[str, str]) -> None:
        """Stop `names`, and start them again with `env` added to their environment."""
        formation = self.rt.formation
        for name in names:
            formation.stop(name)
            self.rt.service_env[name] = env  # the supervisor reads it at the next start
        bring_up(self.rt, names)

    def load(self, call: Callable[..., Any]) -> Load:
        """`call(client)` from CLIENTS workers for the timed load's seconds."""
        return run_load(call, threads=CLIENTS, seconds=self.sizes.seconds, client=self.new_client)

    def publish_batch(self, events: list[Event]) -> int:
        """Publish `events` straight to the transport; count what was acknowledged. Returns how many."""
        if not self.carrier.publish(events):
            return 0
        with self.lock:
            self.events_published += len(events)
            self.posts_published += sum(e.type == POST for e in events)
            self.comments_published += sum(e.type == COMMENT for e in events)
        return len(events)

    def publish_posts(self, batches: list[list[list[Event]]]) -> int:
        """One publisher thread per list of batches; how many events were acknowledged."""
        acked = 0
        lock = threading.Lock()

        def publisher(mine: list[list[Event]]) -> None:
            nonlocal acked
            for events in mine:
                done = self.publish_batch(events)
                with lock:
                    acked += done

        pool = [threading.Thread(target=publisher, args=(mine,)) for mine in batches]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join(600)
        return acked

    def health(self, service: str) -> dict:
        return self.client.health(service, timeout=60)

    def count_posts(self, posts: int) -> None:
        """Posts published by a load generator that counts them itself (wrk), one event each."""
        with self.lock:
            self.posts_published += posts
            self.events_published += posts

    def settle(self) -> None:
        until(self.settled, timeout=600, interval=0.05, what="the formation to settle")

    def until_delivered(self) -> None:
        until(self.carrier.delivered, timeout=600, interval=0.05, what="every subscriber to take every event")

    def settled(self) -> bool:
        """Every subscriber has every event, and Query's view holds every post and comment published."""
        if not self.carrier.delivered():
            return False
        query = self.health("query")
        return query["posts"] >= self.posts_published and query["comments"] >= self.comments_published

    # 2. End to end
    def end_to_end(self) -> None:
        with self.step(f"POST /posts with {CLIENTS} clients"):
            load = self.load(lambda c, *_: self.create_post(c))
        self.report.add(Figure("end to end", f"POST /posts, {CLIENTS} clients", load.rate, "req/s",
                               ratio=load.rate / self.bare["rate"], ratio_of="bare req/s",
                               reference="193 req/s, p50 38 ms (Node)"))
        self.report.add(Figure("end to end", "POST /posts p50", load.percentile(50) * 1000, "ms"))
        until(self.settled, timeout=600, interval=0.05, what="the formation to settle")
        with self.step("write-to-view latency, idle"):
            idle = self.sequential(self.write_then_see)
        p50 = statistics.median(idle)
        self.report.add(Figure("end to end", "write-to-view p50, idle", p50 * 1000, "ms",
                               ratio=p50 / self.bare["round_trip"], ratio_of="bare round trip",
                               target="<= 4x", met=p50 <= 4 * self.bare["round_trip"],
                               reference="7.6 ms (Node)"))
        self.report.add(Figure("end to end", "write-to-view p99, idle", percentile(idle, 99) * 1000, "ms"))
        with self.step("write-to-view latency under load (2 writers in the background)"):
            stop = threading.Event()
            writers = [threading.Thread(target=self.background_writer, args=(stop,)) for _ in range(2)]
            for writer in writers:
                writer.start()
            try:
                loaded = self.sequential(self.write_then_see)
            finally:
                stop.set()
                for writer in writers:
                    writer.join(30)
        self.report.add(Figure("end to end", "write-to-view p50, under load", statistics.median(loaded) * 1000, "ms",
                               ratio=statistics.median(loaded) / self.bare["round_trip"], ratio_of="bare round trip"))
        self.report.add(Figure("end to end", "write-to-view p99, under load", percentile(loaded, 99) * 1000, "ms"))
        until(self.settled, timeout=600, interval=0.05, what="the formation to settle")

    def create_post(self, client: BlogClient) -> int:
        client.request("posts", "POST", "/posts", body=b'{"title": "bench"}', headers=JSON)
        with self.lock:
            self.posts_published += 1
            self.events_published += 1
        return 1

    def write_then_see(self) -> None:
        """POST a post, then read Query until it shows: with its ETag and `wait`, Query answers
        the moment the view changes (as the blog page reads it), so no poll interval is added."""
        self.create_post(self.client)
        # Query's newest post is the last one: a page of one at the end of the view.
        target = self.posts_published
        page = {"offset": target - 1, "limit": 1, "wait": 5}
        headers: dict[str, str] = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            response = self.client.request("query", "GET", "/posts", params=page, headers=headers)
            if int(response.headers["X-Total-Count"]) >= target:
                return
            headers = {"If-None-Match": response.headers["ETag"]}
        raise BlogctlError("benchmark gave up after 30s waiting for a new post to reach the view")

    def background_writer(self, stop: threading.Event) -> None:
        with self.new_client() as client:
            while not stop.wait(0.04):  # about 25 posts/s each: moderate load
                self.create_post(client)

    # 3. Reads
    def reads(self) -> None:
        per_post = self.sizes.comments_per_post
        for posts in self.sizes.read_posts:
            self.seed_view(posts, per_post)
            label = f"{posts:,} posts x {per_post}"
            with self.step(f"GET /posts at {label}"):
                full = self.load(lambda c, *_: read_view(c) and 1)
                etag = read_view(self.client).headers["ETag"]
                conditional = self.load(lambda c, *_: read_view(c, headers={"If-None-Match": etag}) and 1)
                page = self.load(lambda c, *_: read_view(c, params={"limit": 50}) and 1)
            size = len(read_view(self.client).content)
            add = self.report.add
            add(Figure("read", f"full view, {label} ({size / 1e6:.1f} MB)", full.rate, "req/s",
                       ratio=full.rate / self.bare["rate"], ratio_of="bare req/s",
                       reference="770 req/s at ~1,000 posts (Node)" if posts == 1_000 else ""))
            add(Figure("read", f"full view p50 / p99, {label}", full.percentile(50) * 1000, "ms",
                       target=f"p99 {full.percentile(99) * 1000:.1f} ms"))
            cost = self.bare["rate"] / conditional.rate if conditional.rate else float("inf")
            add(Figure("read", f"conditional (304), {label}", conditional.rate, "req/s",
                       ratio=cost, ratio_of="cost vs bare", target="<= 1.5x", met=cost <= 1.5))
            add(Figure("read", f"a page (?limit=50), {label}", page.rate, "req/s",
                       ratio=page.rate / self.bare["rate"], ratio_of="bare req/s"))

    def seed_view(self, posts: int, per_post: int) -> None:
        """Grow the view to `posts` posts with `per_post` comments each, published straight to the transport."""
        have = self.health("query")["posts"]
        missing = max(0, posts - have)
        with self.step(f"seed {missing:,} posts x {per_post} comments"):
            events = []
            for _ in range(missing):
                post = post_event()
                events.append(post)
                events.extend(comment_event(post.data["id"]) for _ in range(per_post))
            for start in range(0, len(events), 500):
                self.publish_batch(events[start:start + 500])
            until(self.settled, timeout=600, interval=0.05, what="the view to be seeded")
        view = self.health("query")
        self.report.check(f"read: Query holds every post published ({self.posts_published:,})",
                          view["posts"] == self.posts_published, f"view has {view['posts']:,}")

    # 4. Rebuild, 5. Memory
    def fill_log(self, total: int) -> None:
        """Publish posts until the log holds `total` events, and wait until everyone has them."""
        missing = total - self.events_published
        if missing <= 0:
            return
        with self.step(f"fill the log to {total:,} events"):
            for start in range(0, missing, 1000):
                self.publish_batch([post_event() for _ in range(min(1000, missing - start))])
            until(self.settled, timeout=600, interval=0.05, what="every event to be delivered")

    def rebuild_and_memory(self) -> None:
        self.fill_log(self.sizes.rebuild_events)
        self.report_memory(f"after {self.events_published:,} events")
        formation = self.rt.formation
        end = self.events_published
        with self.step(f"rebuild Query from an empty store ({end:,} events)"):
            formation.stop("query")
            for path in self.rt.config.data_dir.glob("query.db*"):
                path.unlink()
            started = time.perf_counter()
            bring_up(self.rt, ["query"])
            until(self.rebuilt, timeout=600, interval=0.02, what="Query to rebuild")
            seconds = time.perf_counter() - started
        caught_up = self.health("query")["last_catch_up"] or {}
        rate = caught_up.get("events", 0) / caught_up["seconds"] if caught_up.get("seconds") else 0.0
        self.report.add(Figure("rebuild", f"Query replaying {caught_up.get('events', 0):,} events from empty",
                               rate, "events/s", target=">= 50,000", met=rate >= 50_000))
        self.report.add(Figure("rebuild", "the same, from process start to caught up", end / seconds, "events/s"))
        view = self.health("query")
        self.report.check("rebuild: the rebuilt view holds every post", view["posts"] == self.posts_published,
                          f"{view['posts']:,} of {self.posts_published:,}")

    def rebuilt(self) -> bool:
        health = self.health("query")
        return (health["posts"] >= self.posts_published and health["comments"] >= self.comments_published
                and not health["catching_up"] and bool(health["last_catch_up"]))

    def report_memory(self, when: str) -> None:
        for state in self.rt.formation.states():
            if state.running:
                self.report.add(Figure("memory", f"{state.name} RSS {when}", rss_kib(state.pid) / 1024, "MiB"))


POST, COMMENT = PostCreated.__name__, CommentCreated.__name__


def post_event() -> Event:
    return Event.of(PostCreated(id=uuid.uuid4().hex[:16], title="a benchmark post"), source=SOURCE)


def comment_event(post_id: str) -> Event:
    return Event.of(CommentCreated(id=uuid.uuid4().hex[:16], content="a benchmark comment", postId=post_id),
                    source=SOURCE)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def fresh_formation(extra_env: dict[str, str]) -> Iterator[Runtime]:
    """All services on free ports with a temporary data directory, stopped and removed afterwards."""
    data_dir = Path(tempfile.mkdtemp(prefix="blogctl-bench-"))
    overrides = {"BLOG_DATA_DIR": str(data_dir), **extra_env,
                 **{f"BLOG_{name.upper()}_PORT": str(free_port()) for name in SERVICES}}
    rt = Runtime(overrides=overrides, procfile=None)
    try:
        bring_up(rt, rt.formation.names)
        yield rt
    finally:
        for name in rt.formation.names:
            rt.formation.stop(name)
        shutil.rmtree(data_dir, ignore_errors=True)
        # A transport outside the formation (a broker) keeps what the bench put there: remove it, only
        # now, as running consumers would declare their queues again. The bus's log went with the data.
        if rt.inspection.describe().process is None:
            rt.inspection.reset()


def machine() -> dict:
    import platform

    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


# The scenarios `--only` may name, in the order a run takes them; durability compares with the
# figures of publish and end to end, so it brings them along.
SCENARIOS = ("read", "publish", "end-to-end", "tails", "durability", "tracing", "rebuild")
NEEDS = {"durability": ("publish", "end-to-end")}


def chosen(only: Iterable[str] = ()) -> list[str]:
    """The scenarios to run: every one, or those named in `only` with what they need."""
    wanted = set(only) or set(SCENARIOS)
    unknown = wanted - set(SCENARIOS)
    if unknown:
        raise BlogctlError(f"no bench scenario {', '.join(sorted(unknown))} (known: {', '.join(SCENARIOS)})")
    for name in list(wanted):
        wanted.update(NEEDS.get(name, ()))
    return [name for name in SCENARIOS if name in wanted]


def run_bench(*, quick: bool, broker: str | None = None, servers: bool = False, only: Iterable[str] = ()) -> Report:
    scenarios = chosen(only)
    sizes = Sizes.pick(quick)
    env = {"BLOG_BROKER_URL": broker, "BLOG_BROKER_NAMESPACE": f"bench-{uuid.uuid4().hex[:8]}"} if broker else {}
    report = Report(quick=quick, transport="", machine=machine())
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=render.err_console, transient=False) as progress:
        with fresh_formation(env) as rt, bare_endpoint(free_port()) as bare_url, carrier_for(rt) as carrier:
            report.transport = carrier.description.kind
            bench = Bench(rt, carrier, sizes, report, progress)
            bench.measure_bare(bare_url)
            bench.seed_view(167, sizes.comments_per_post)  # ~1,000 events
            bench.report_memory(f"after {bench.events_published:,} events")
            run = {"read": bench.reads,  # first, so the view holds exactly the posts and comments it names
                   "publish": bench.publish, "end-to-end": bench.end_to_end,
                   "tails": lambda: Tails(bench).measure(sizes.tail_rounds), "durability": bench.durability,
                   "tracing": lambda: bench.tracing_cost(rounds=1 if quick else 3), "rebuild": bench.rebuild_and_memory}
            for name in scenarios:
                run[name]()
            if servers:
                with bench.step(f"servers: {', '.join(SERVERS)} on the bare endpoint and POST /posts"):
                    compare_servers(report, rounds=sizes.tail_rounds, seconds=sizes.seconds,
                                    new_client=bench.new_client, port=free_port)
    memory_ratio(report)
    return report
