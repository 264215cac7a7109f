"""`blogctl bench`: measure a fresh formation, and say each figure as a ratio to this machine's limit.

The limit is a bare endpoint of the same web server (waitress + Flask returning `{}`), measured
in the same run: a ratio holds across noisy machines where an absolute time does not.

Scenarios: publish throughput (accepted and delivered to every subscriber), end to end
(`POST /posts` rate, write-to-view latency idle and under load), reads of Query at 1k and
10k posts x 5 comments (full, conditional, a page), rebuild of Query from the log, and each
service's memory after 1k and after 100k events. `--quick` shrinks every size so CI can
check in well under a minute that each scenario ran and lost nothing.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from services.shared.config import CONSUMERS, SERVICES
from services.shared.events import CommentCreated, Event, PostCreated
from services.shared.http import Answer, HttpClient

from . import render
from .errors import BlogctlError
from .formation import listening
from .steps import bring_up
from .polling import wait_for
from .render import console
from .runtime import Runtime

CLIENTS = 8  # client threads, as in the Node/Express figures the targets compare with
JSON = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Sizes:
    seconds: float  # each timed load
    publish_events: int
    read_posts: tuple[int, ...]
    comments_per_post: int
    rebuild_events: int
    latency_samples: int

    @classmethod
    def pick(cls, quick: bool) -> Sizes:
        if quick:
            return cls(1.0, 2_000, (200,), 5, 5_000, 30)
        return cls(5.0, 20_000, (1_000, 10_000), 5, 100_000, 200)


@dataclass
class Figure:
    scenario: str
    name: str
    value: float
    unit: str
    ratio: float | None = None  # to the bare endpoint's figure of the same kind
    ratio_of: str = ""
    target: str = ""
    met: bool | None = None
    reference: str = ""  # the Node/Express figure the issue quotes, where there is one


@dataclass
class Report:
    quick: bool
    transport: str
    machine: dict
    figures: list[Figure] = field(default_factory=list)
    checks: list[tuple[str, bool, str]] = field(default_factory=list)  # (what, held, detail)

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        return figure

    def check(self, what: str, held: bool, detail: str = "") -> None:
        self.checks.append((what, held, detail))

    @property
    def lost_nothing(self) -> bool:
        return all(held for _, held, _ in self.checks)


# Measuring

@dataclass(frozen=True)
class Load:
    count: int
    seconds: float
    latencies: list[float]  # seconds

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        return percentile(self.latencies, p)


def client() -> HttpClient:
    """The load generator's HTTP client: the services' own (urllib3, keep-alive), at a third of
    the CPU per request of `requests`, which shares the machine's 2 cores with the services."""
    return HttpClient(timeout=60, connections=1)


def run_load(call: Callable[[HttpClient], int], *, threads: int, seconds: float) -> Load:
    """Run `call` from `threads` threads (a keep-alive client each) for `seconds`; `call` returns units done."""
    deadline = time.perf_counter() + seconds
    results: list[tuple[int, list[float]]] = []
    lock = threading.Lock()

    def worker() -> None:
        done, latencies = 0, []
        with client() as http:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                done += call(http)
                latencies.append(time.perf_counter() - started)
        with lock:
            results.append((done, latencies))

    started = time.perf_counter()
    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(seconds + 30)
    elapsed = time.perf_counter() - started
    return Load(sum(d for d, _ in results), elapsed, [x for _, lat in results for x in lat])


def get_ok(http: HttpClient, url: str, **kwargs: Any) -> Answer:
    response = http.get(url, **kwargs)
    if response.status_code not in (200, 304):
        raise BlogctlError(f"GET {url} answered {response.status_code} during the benchmark")
    return response


def until(condition: Callable[[], Any], *, timeout: float, interval: float = 0.05, what: str) -> None:
    if not wait_for(condition, timeout=timeout, interval=interval):
        raise BlogctlError(f"benchmark gave up after {timeout:g}s waiting for {what}")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise BlogctlError(f"no memory figure for pid {pid}")


# What carries the events: the HTTP bus or RabbitMQ

class HttpCarrier:
    """Events published to the bus's `POST /events`; its log and cursors say what was delivered."""

    name = "http"

    def __init__(self, rt: Runtime) -> None:
        self.bus = rt.config.url("bus")
        self.http = client()
        self.delivered_to = f"all {len(rt.config.subscribers)} subscribers"

    def publish(self, http: HttpClient, events: list[dict]) -> bool:
        return http.post(f"{self.bus}/events", orjson.dumps(events), JSON).status_code == 200

    def logged(self, event_type: str) -> int:
        """Events of `event_type` in the bus's log."""
        return len(get_ok(self.http, f"{self.bus}/events", params={"type": event_type}).json())

    def delivered(self) -> bool:
        health = get_ok(self.http, f"{self.bus}/health").json()
        return all(s["cursor"] >= health["last_seq"] for s in health["subscribers"])

    def close(self) -> None:
        self.http.close()


class BrokerCarrier:
    """Events published to RabbitMQ with confirms; the stream is the log, the queues' depths say what is left."""

    name = "rabbitmq"
    delivered_to = f"all {len(CONSUMERS)} consuming services"

    def __init__(self, rt: Runtime) -> None:
        from services.shared.transport.rabbitmq import RabbitTransport

        config = rt.config
        self._new = lambda: RabbitTransport(config.broker_url, namespace=config.broker_namespace)
        self._local = threading.local()
        self._all: list = []
        self.admin = self._new()

    def _transport(self):
        transport = getattr(self._local, "transport", None)
        if transport is None:  # one publishing connection per thread
            transport = self._local.transport = self._new()
            self._all.append(transport)
        return transport

    def publish(self, http: HttpClient, events: list[dict]) -> bool:
        from services.shared.transport import TransportError

        try:
            self._transport().publish([Event.from_dict(e) for e in events])
        except TransportError:
            return False
        return True

    def logged(self, event_type: str) -> int:
        """Events of `event_type` in the stream, read through (the broker's own count of a stream is not reliable)."""
        count, after = 0, 0
        while True:
            page = self.admin.read_log(after=after, limit=5000)
            count += sum(event.type == event_type for event in page)
            if len(page) < 5000:
                return count
            after = page[-1].seq

    def delivered(self) -> bool:
        return all(not q["messages"] for q in self.admin.queues() if q["type"] != "stream")

    def close(self) -> None:
        for transport in [*self._all, self.admin]:
            transport.close()


# The bench

class Bench:
    def __init__(
        self, rt: Runtime, carrier: HttpCarrier | BrokerCarrier, sizes: Sizes, report: Report, progress: Progress,
    ) -> None:
        self.rt = rt
        self.sizes = sizes
        self.report = report
        self.progress = progress
        self.url = {name: rt.config.url(name) for name in SERVICES}
        self.http = client()
        self.carrier = carrier
        self.lock = threading.Lock()  # the counts below are updated by many client threads
        self.bare: dict[str, float] = {}
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
        with self.step("bare endpoint (waitress + Flask, {})"):
            load = run_load(lambda s: get_ok(s, bare_url) and 1, threads=CLIENTS, seconds=self.sizes.seconds)
            idle = self.sequential(lambda: get_ok(self.http, bare_url))
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
        batch, publishers = 100, 4
        start = self.posts_published
        with self.step(f"publish {total:,} events ({publishers} publishers, batches of {batch})"):
            started = time.perf_counter()
            acked = self.publish_posts(total, batch=batch, publishers=publishers)
            accepted = time.perf_counter() - started
            until(self.settled, timeout=300, interval=0.05, what="every subscriber to take every event")
            delivered = time.perf_counter() - started
        logged = self.carrier.logged(POST)  # the formation adds events of its own (e.g. decisions on comments)
        self.report.check("publish: every acknowledged event logged once", logged == self.posts_published,
                          f"{acked:,} acknowledged of {total:,}, the log holds {logged - start:,} of them")
        where = "by the bus (logged before the answer)" if self.carrier.name == "http" else "by the broker (confirmed)"
        self.report.add(Figure("publish", f"accepted {where}", acked / accepted, "events/s",
                               reference="301 events/s (bare publish, Node)"))
        self.report.add(Figure(
            "publish", f"delivered to {self.carrier.delivered_to}", acked / delivered, "events/s",
            ratio=(acked / delivered) / self.bare["rate"], ratio_of="bare req/s (= one request per event)",
            target=">= 2x", met=(acked / delivered) >= 2 * self.bare["rate"],
        ))
        with self.step("publish one event at a time (the course's way)"):
            load = run_load(lambda http: self.publish_batch(http, [post_event()]),
                            threads=CLIENTS, seconds=self.sizes.seconds)
        self.report.add(Figure("publish", f"one event per publish, {CLIENTS} clients", load.rate, "events/s",
                               ratio=load.rate / self.bare["rate"], ratio_of="bare req/s",
                               reference="301 events/s (Node)"))
        until(self.settled, timeout=300, interval=0.05, what="the formation to settle")

    def publish_batch(self, http: HttpClient, events: list[dict]) -> int:
        """Publish `events`; count what was acknowledged. Returns how many."""
        if not self.carrier.publish(http, events):
            return 0
        with self.lock:
            self.events_published += len(events)
            self.posts_published += sum(e["type"] == POST for e in events)
            self.comments_published += sum(e["type"] == COMMENT for e in events)
        return len(events)

    def publish_posts(self, total: int, *, batch: int, publishers: int) -> int:
        acked = 0
        lock = threading.Lock()
        per = total // publishers

        def publisher() -> None:
            nonlocal acked
            with client() as http:
                for start in range(0, per, batch):
                    done = self.publish_batch(http, [post_event() for _ in range(min(batch, per - start))])
                    with lock:
                        acked += done

        pool = [threading.Thread(target=publisher) for _ in range(publishers)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join(600)
        return acked

    def health(self, service: str) -> dict:
        return get_ok(self.http, f"{self.url[service]}/health").json()

    def settled(self) -> bool:
        """Every subscriber has every event, and Query's view holds every post and comment published."""
        if not self.carrier.delivered():
            return False
        query = self.health("query")
        return query["posts"] >= self.posts_published and query["comments"] >= self.comments_published

    # 2. End to end
    def end_to_end(self) -> None:
        with self.step(f"POST /posts with {CLIENTS} clients"):
            load = run_load(self.create_post, threads=CLIENTS, seconds=self.sizes.seconds)
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

    def create_post(self, http: HttpClient) -> int:
        response = http.post(f"{self.url['posts']}/posts", b'{"title": "bench"}', JSON)
        if response.status_code != 201:
            raise BlogctlError(f"POST /posts answered {response.status_code} during the benchmark")
        with self.lock:
            self.posts_published += 1
            self.events_published += 1
        return 1

    def write_then_see(self) -> None:
        """POST a post, then read Query until it shows: with its ETag and `wait`, Query answers
        the moment the view changes (as the blog page reads it), so no poll interval is added."""
        self.create_post(self.http)
        # Query's newest post is the last one: a page of one at the end of the view.
        target = self.posts_published
        page = {"offset": target - 1, "limit": 1, "wait": 5}
        headers: dict[str, str] = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            response = get_ok(self.http, f"{self.url['query']}/posts", params=page, headers=headers)
            if int(response.headers["X-Total-Count"]) >= target:
                return
            headers = {"If-None-Match": response.headers["ETag"]}
        raise BlogctlError("benchmark gave up after 30s waiting for a new post to reach the view")

    def background_writer(self, stop: threading.Event) -> None:
        with client() as http:
            while not stop.wait(0.04):  # about 25 posts/s each: moderate load
                self.create_post(http)

    # 3. Reads
    def reads(self) -> None:
        per_post = self.sizes.comments_per_post
        for posts in self.sizes.read_posts:
            self.seed_view(posts, per_post)
            label = f"{posts:,} posts x {per_post}"
            url = f"{self.url['query']}/posts"
            with self.step(f"GET /posts at {label}"):
                full = run_load(lambda s: get_ok(s, url) and 1, threads=CLIENTS, seconds=self.sizes.seconds)
                etag = get_ok(self.http, url).headers["ETag"]
                conditional = run_load(lambda s: get_ok(s, url, headers={"If-None-Match": etag}) and 1,
                                       threads=CLIENTS, seconds=self.sizes.seconds)
                page = run_load(lambda s: get_ok(s, url, params={"limit": 50}) and 1,
                                threads=CLIENTS, seconds=self.sizes.seconds)
            size = len(get_ok(self.http, url).content)
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
                events.extend(comment_event(post["data"]["id"]) for _ in range(per_post))
            for start in range(0, len(events), 500):
                self.publish_batch(self.http, events[start:start + 500])
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
                self.publish_batch(self.http, [post_event() for _ in range(min(1000, missing - start))])
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


def percentile(samples: list[float], p: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


POST, COMMENT = PostCreated.__name__, CommentCreated.__name__


def post_event() -> dict:
    return Event.of(PostCreated(id=uuid.uuid4().hex[:16], title="a benchmark post")).to_dict()


def comment_event(post_id: str) -> dict:
    return Event.of(CommentCreated(id=uuid.uuid4().hex[:16], content="a benchmark comment", postId=post_id)).to_dict()


def memory_ratio(report: Report) -> None:
    """The bus's RSS after the most events over its RSS after the fewest (target <= 1.2x)."""
    bus = [f for f in report.figures if f.scenario == "memory" and f.name.startswith("bus ")]
    if len(bus) >= 2:
        ratio = bus[-1].value / bus[0].value
        bus[-1].ratio, bus[-1].ratio_of, bus[-1].target, bus[-1].met = ratio, "vs first figure", "<= 1.2x", ratio <= 1.2


# The bare endpoint and the formation's lifetime

BARE_APP = """
import sys
from flask import Flask, jsonify
from waitress import serve
app = Flask("bare")
@app.get("/")
def bare():
    return jsonify({})
serve(app, host="127.0.0.1", port=int(sys.argv[1]), threads=8, ident="bare")
"""


@contextmanager
def bare_endpoint(port: int) -> Iterator[str]:
    process = subprocess.Popen([sys.executable, "-c", BARE_APP, str(port)], start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        until(lambda: listening("127.0.0.1", port), timeout=20, what="the bare endpoint to listen")
        yield f"http://127.0.0.1:{port}/"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(10)


def free_port() -> int:
    import socket

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
        if rt.config.transport == "rabbitmq":  # only now: running consumers would declare their queues again
            from services.shared.transport.rabbitmq import RabbitTransport

            RabbitTransport(rt.config.broker_url, namespace=rt.config.broker_namespace).reset()


@contextmanager
def carrier_for(rt: Runtime) -> Iterator[HttpCarrier | BrokerCarrier]:
    carrier = BrokerCarrier(rt) if rt.config.transport == "rabbitmq" else HttpCarrier(rt)
    try:
        yield carrier
    finally:
        carrier.close()


def machine() -> dict:
    import platform

    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def run_bench(*, quick: bool, broker: str | None = None) -> Report:
    sizes = Sizes.pick(quick)
    env = {"BLOG_BROKER_URL": broker, "BLOG_BROKER_NAMESPACE": f"bench-{uuid.uuid4().hex[:8]}"} if broker else {}
    report = Report(quick=quick, transport="rabbitmq" if broker else "http", machine=machine())
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=render.err_console, transient=False) as progress:
        with fresh_formation(env) as rt, bare_endpoint(free_port()) as bare_url, carrier_for(rt) as carrier:
            bench = Bench(rt, carrier, sizes, report, progress)
            bench.measure_bare(bare_url)
            bench.seed_view(167, sizes.comments_per_post)  # ~1,000 events
            bench.report_memory(f"after {bench.events_published:,} events")
            bench.reads()  # first, so the view holds exactly the posts and comments it names
            bench.publish()
            bench.end_to_end()
            bench.rebuild_and_memory()
    memory_ratio(report)
    return report


def figures_table(report: Report) -> Table:
    mode = "quick" if report.quick else "full"
    table = Table(title=f"blogctl bench ({mode}, {report.transport}, {report.machine['cpus']} cores)",
                  title_justify="left")
    for column in ("scenario", "figure", "value", "ratio", "target", "Node/Express (quoted)"):
        table.add_column(column, justify="right" if column in ("value", "ratio") else "left")
    for f in report.figures:
        ratio = f"{f.ratio:.2f}x {f.ratio_of}" if f.ratio is not None else ""
        target = f.target + (" ✓" if f.met else " ✗" if f.met is False else "")
        table.add_row(f.scenario, f.name, f"{f.value:,.1f} {f.unit}", ratio, target, f.reference)
    return table


def bench(
    quick: Annotated[bool, typer.Option("--quick", help="Small sizes (well under a minute): checks every scenario runs and loses nothing.")] = False,
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the figures as JSON.")] = Path("bench-results.json"),
    json_output: Annotated[bool, typer.Option("--json", help="Print the figures as JSON and nothing else.")] = False,
    broker: Annotated[str | None, typer.Option(
        "--broker", metavar="URL", help="Run the formation on RabbitMQ at URL instead of the HTTP bus.",
    )] = None,
) -> None:
    """Benchmark a fresh formation (free ports, temporary data) against a bare endpoint of the same server."""
    report = run_bench(quick=quick, broker=broker)
    data = {**asdict(report), "lost_nothing": report.lost_nothing}
    output.write_text(json.dumps(data, indent=2))
    if json_output:
        render.print_json(data)
    else:
        console.print(figures_table(report))
        for what, held, detail in report.checks:
            console.print(render.text(f"{'✓' if held else '✗'} {what}: {detail}", "green" if held else "red"))
        console.print(render.text(f"Figures written to {output}"))
    if not report.lost_nothing:
        raise BlogctlError("the benchmark lost events: see the checks above")
