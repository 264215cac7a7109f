"""The bench's scenarios against a fresh formation, each figure said as a ratio to the bare endpoint.

Scenarios: publish throughput (accepted and delivered to every subscriber), end to end
(`POST /posts` rate, write-to-view latency idle and under load), what durability and tracing
cost, tails (tails.py), reads of Query at 1k and 10k posts x 5 comments (full, conditional, a
page), rebuild of Query from the log, and each service's memory after 1k and after 100k events
(views.py), and `POST /posts` through the gateway with 1 and 2 Posts replicas on PostgreSQL
(front.py). Each is a function of the `Bench` (harness.py) it measures with. `--quick` shrinks
every size so CI can check in well under a minute that each scenario ran and lost nothing.
"""
from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from services.shared.config import PUBLISH_INLINE
from services.table import SERVICE_TABLE, SERVICES

from .. import render
from ..errors import BlogctlError
from ..runtime import Runtime
from ..steps import bring_up
from ..supervise import free_port
from . import front, hops
from .bare import Endpoint, bare_endpoint
from .carriers import carrier_for, post_event
from .harness import CLIENTS, POST, Bench, Sizes, cpu_seconds
from .load import percentile
from .report import Figure, Report, memory_ratio
from .servers import SERVERS
from .servers import compare as compare_servers
from .tails import Tails
from .views import reads, rebuild_and_memory, report_memory, seed_view


# The bare endpoint: the limit of this stack on this machine
def measure_bare(bench: Bench, bare: Endpoint) -> None:
    bench.bare_url = bare_url = bare.url
    with bench.step("bare endpoint (waitress + Flask, {})"):
        # Straight through the client's HTTP layer: the bare endpoint is no service of the formation.
        before = cpu_seconds(bare.pid)
        load = bench.load(lambda c, *_: c.http.request("GET", bare_url).status_code == 200)
        cpu = (cpu_seconds(bare.pid) - before) / max(load.count, 1)
        idle = bench.sequential(lambda: bench.client.http.request("GET", bare_url))
    bench.bare = {"rate": load.rate, "p50": load.percentile(50), "round_trip": statistics.median(idle), "cpu": cpu}
    bench.report.add(Figure("bare", f"GET {{}} with {CLIENTS} clients", load.rate, "req/s"))
    bench.report.add(Figure("bare", "round trip, idle, p50", bench.bare["round_trip"] * 1000, "ms"))
    bench.report.add(Figure("bare", f"server CPU per request, {CLIENTS} clients", cpu * 1e6, "us"))


# 1. Publish throughput
def publish(bench: Bench) -> None:
    total = bench.sizes.publish_events
    start = bench.posts_published
    acked, accepted, delivered = bench.burst(total)
    logged = bench.carrier.logged(POST)  # the formation adds events of its own (e.g. decisions on comments)
    bench.report.check("publish: every acknowledged event logged once", logged == bench.posts_published,
                       f"{acked:,} acknowledged of {total:,}, the log holds {logged - start:,} of them")
    bench.report.add(Figure("publish", f"accepted by {bench.carrier.name} (durably, before it answers)",
                            acked / accepted, "events/s", reference="301 events/s (bare publish, Node)"))
    bench.report.add(Figure(
        "publish", f"delivered to every consumer ({len(bench.carrier.consumers())})", acked / delivered, "events/s",
        ratio=(acked / delivered) / bench.bare["rate"], ratio_of="bare req/s (= one request per event)",
        target=">= 2x", met=(acked / delivered) >= 2 * bench.bare["rate"],
    ))
    with bench.step("publish one event at a time (the course's way)"):
        load = bench.load(lambda c, *_: bench.publish_batch([post_event()]))
    bench.report.add(Figure("publish", f"one event per publish, {CLIENTS} clients", load.rate, "events/s",
                            ratio=load.rate / bench.bare["rate"], ratio_of="bare req/s",
                            reference="301 events/s (Node)"))
    bench.settle(timeout=300)


# 2. End to end
def end_to_end(bench: Bench) -> None:
    with bench.step(f"POST /posts with {CLIENTS} clients"):
        before = bench.cpu()
        load = bench.load(lambda c, *_: bench.create_post(c))
    bench.report.add(Figure("end to end", f"POST /posts, {CLIENTS} clients", load.rate, "req/s",
                            ratio=load.rate / bench.bare["rate"], ratio_of="bare req/s",
                            reference="193 req/s, p50 38 ms (Node)"))
    bench.report.add(Figure("end to end", "POST /posts p50", load.percentile(50) * 1000, "ms"))
    bench.settle()
    write_cpu(bench, before, load.count)
    with bench.step("write-to-view latency, idle"):
        idle = bench.sequential(bench.write_then_see)
    round_trip = bench.bare["round_trip"]
    p50 = statistics.median(idle)
    bench.report.add(Figure("end to end", "write-to-view p50, idle", p50 * 1000, "ms",
                            ratio=p50 / round_trip, ratio_of="bare round trip",
                            target="<= 4x", met=p50 <= 4 * round_trip, reference="7.6 ms (Node)"))
    bench.report.add(Figure("end to end", "write-to-view p99, idle", percentile(idle, 99) * 1000, "ms"))
    with bench.step("write-to-view latency under load (2 writers in the background)"), bench.background_writers(2):
        loaded = bench.sequential(bench.write_then_see)
    bench.report.add(Figure("end to end", "write-to-view p50, under load", statistics.median(loaded) * 1000, "ms",
                            ratio=statistics.median(loaded) / round_trip, ratio_of="bare round trip"))
    bench.report.add(Figure("end to end", "write-to-view p99, under load", percentile(loaded, 99) * 1000, "ms"))
    bench.settle()


def write_cpu(bench: Bench, before: dict[str, float], writes: int) -> None:
    """What the writes cost each process of the formation in CPU, until every consumer had them, per
    write and against the bare endpoint's CPU per request: on 2 cores the rates' ratio follows it.
    A process that spent less than a clock tick on them gets no row of its own."""
    spent = {name: seconds - before.get(name, 0.0) for name, seconds in bench.cpu().items()}
    bare = bench.bare["cpu"] or float("inf")
    outside = "" if bench.carrier.description.process else f" ({bench.carrier.name}'s own not counted)"
    total = sum(spent.values()) / max(writes, 1)
    bench.report.add(Figure("end to end", f"POST /posts: CPU per write, every service{outside}", total * 1e6, "us",
                            ratio=total / bare, ratio_of="bare request's"))
    tick = 1 / os.sysconf("SC_CLK_TCK")
    for name, seconds in spent.items():
        if seconds < tick:  # below what /proc can tell (Moderation on RabbitMQ takes no PostCreated)
            continue
        each = seconds / max(writes, 1)
        bench.report.add(Figure("end to end", f"POST /posts: CPU per write, {name}", each * 1e6, "us",
                                ratio=each / bare, ratio_of="bare request's"))


# What "acknowledged means on disk" costs
def durability(bench: Bench) -> None:
    """POST /posts and the publish burst again with the fsync turned off (BLOG_FSYNC=0) in Posts,
    Comments, Moderation and the transport's own process (the bus), against the figures above."""
    measured = {f.name: f for f in bench.report.figures}
    names = [spec.name for spec in SERVICE_TABLE if spec.emits or spec.name == bench.carrier.description.process]
    bench.restart(names, {"BLOG_FSYNC": "0"})
    try:
        with bench.step(f"POST /posts with {CLIENTS} clients, without the fsync"):
            load = bench.load(lambda c, *_: bench.create_post(c))
        bench.settle()
        acked, _, delivered = bench.burst(bench.sizes.publish_events, note=", without the fsync")
        bench.settle()
        with bench.step("write-to-view latency, idle, without the fsync"):
            idle = bench.sequential(bench.write_then_see)
    finally:
        bench.restart(names, {})
    with_fsync = measured[f"POST /posts, {CLIENTS} clients"].value
    bench.report.add(Figure("durability", f"POST /posts, {CLIENTS} clients, BLOG_FSYNC=0", load.rate, "req/s",
                            ratio=with_fsync / load.rate, ratio_of="with the fsync (the default) / without"))
    delivered_with = next(f for f in bench.report.figures if f.name.startswith("delivered to every")).value
    bench.report.add(Figure("durability", "delivered to every consumer, BLOG_FSYNC=0", acked / delivered,
                            "events/s", ratio=delivered_with / (acked / delivered),
                            ratio_of="with the fsync (the default) / without", target=">= 0.85x",
                            met=delivered_with / (acked / delivered) >= 0.85))
    # What the two fsyncs on a write's way to the view (its store's, the log's) cost it.
    bench.report.add(Figure("durability", "write-to-view p50, idle, BLOG_FSYNC=0", statistics.median(idle) * 1000,
                            "ms", ratio=statistics.median(idle) / bench.bare["round_trip"], ratio_of="bare round trip"))


# Who publishes a write's events (BLOG_PUBLISH_INLINE)
def publish_inline(bench: Bench) -> None:
    """POST /posts and the idle write-to-view again with the writers publishing their events from
    the request (before it answers, then after), against the relay thread's figures above."""
    measured = {f.name: f for f in bench.report.figures}
    names = [spec.name for spec in SERVICE_TABLE if spec.emits]
    round_trip = bench.bare["round_trip"]
    try:
        for setting in PUBLISH_INLINE[1:]:
            bench.restart(names, {"BLOG_PUBLISH_INLINE": setting})
            with bench.step(f"POST /posts with {CLIENTS} clients, BLOG_PUBLISH_INLINE={setting}"):
                load = bench.load(lambda c, *_: bench.create_post(c))
            bench.settle()
            with bench.step(f"write-to-view latency, idle, BLOG_PUBLISH_INLINE={setting}"):
                idle = bench.sequential(bench.write_then_see)
            relay_rate = measured[f"POST /posts, {CLIENTS} clients"].value
            bench.report.add(Figure("inline", f"POST /posts, {CLIENTS} clients, BLOG_PUBLISH_INLINE={setting}",
                                    load.rate, "req/s", ratio=load.rate / relay_rate, ratio_of="the relay thread's"))
            p50 = statistics.median(idle)
            bench.report.add(Figure("inline", f"write-to-view p50, idle, BLOG_PUBLISH_INLINE={setting}", p50 * 1000,
                                    "ms", ratio=p50 / round_trip, ratio_of="bare round trip", target="<= 4x",
                                    met=p50 <= 4 * round_trip))
    finally:
        bench.restart(names, {})


# What tracing costs
def tracing_cost(bench: Bench, rounds: int = 1) -> None:
    """POST /posts and the publish burst with tracing on (the default sampler), then with it off
    (OTEL_SDK_DISABLED=true) in every service, back to back, `rounds` times: the best of each
    (on a shared machine, the run least disturbed by others)."""
    rates: dict[str, list[tuple[float, float]]] = {"on": [], "off": []}
    names = list(bench.rt.formation.names)
    for _ in range(rounds):
        for mode, env in (("on", {}), ("off", {"OTEL_SDK_DISABLED": "true"})):
            bench.restart(names, env)
            with bench.step(f"POST /posts with {CLIENTS} clients, tracing {mode}"):
                load = bench.load(lambda c, *_: bench.create_post(c))
            bench.settle()
            acked, _, delivered = bench.burst(bench.sizes.publish_events, note=f", tracing {mode}")
            rates[mode].append((load.rate, acked / delivered))
    bench.restart(names, {})
    best = {mode: (max(r[0] for r in runs), max(r[1] for r in runs)) for mode, runs in rates.items()}
    (posts_on, delivered_on), (posts_off, delivered_off) = best["on"], best["off"]
    of = f" (best of {rounds})" if rounds > 1 else ""
    for what, on, off, unit in ((f"POST /posts, {CLIENTS} clients", posts_on, posts_off, "req/s"),
                                ("delivered to every consumer", delivered_on, delivered_off, "events/s")):
        bench.report.add(Figure("tracing", f"{what}, tracing on{of}", on, unit, ratio=on / off,
                                ratio_of="tracing on / off", target=">= 0.9x", met=on / off >= 0.9))
        bench.report.add(Figure("tracing", f"{what}, tracing off (OTEL_SDK_DISABLED=true){of}", off, unit))


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
SCENARIOS = ("read", "publish", "end-to-end", "hops", "tails", "durability", "inline", "tracing", "rebuild", "gateway")
NEEDS = {"durability": ("publish", "end-to-end"), "inline": ("end-to-end",)}


def chosen(only: Iterable[str] = ()) -> list[str]:
    """The scenarios to run: every one, or those named in `only` with what they need."""
    wanted = set(only) or set(SCENARIOS)
    unknown = wanted - set(SCENARIOS)
    if unknown:
        raise BlogctlError(f"no bench scenario {', '.join(sorted(unknown))} (known: {', '.join(SCENARIOS)})")
    for name in list(wanted):
        wanted.update(NEEDS.get(name, ()))
    return [name for name in SCENARIOS if name in wanted]


def run_bench(*, quick: bool, broker: str | None = None, servers: bool = False, only: Iterable[str] = (),
              database: str | None = None) -> Report:
    """`database`: PostgreSQL for the gateway rows' second formation; the bench's own stays on SQLite."""
    scenarios = chosen(only)
    sizes = Sizes.pick(quick)
    env = {"BLOG_BROKER_URL": broker, "BLOG_BROKER_NAMESPACE": f"bench-{uuid.uuid4().hex[:8]}"} if broker else {}
    env["BLOG_DATABASE_URL"] = ""  # the reference every row compares with: SQLite, whatever the environment says
    report = Report(quick=quick, transport="", machine=machine())
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=render.err_console, transient=False) as progress:
        with fresh_formation(env) as rt, bare_endpoint(free_port()) as bare, carrier_for(rt) as carrier:
            report.transport = carrier.description.kind
            bench = Bench(rt, carrier, sizes, report, progress)
            measure_bare(bench, bare)
            seed_view(bench, 167, sizes.comments_per_post)  # ~1,000 events
            report_memory(bench, f"after {bench.events_published:,} events")
            run = {"read": reads,  # first, so the view holds exactly the posts and comments it names
                   "publish": publish, "end-to-end": end_to_end, "hops": hops.measure,
                   "tails": lambda bench: Tails(bench).measure(sizes.tail_rounds), "durability": durability,
                   "inline": publish_inline,
                   "tracing": lambda bench: tracing_cost(bench, rounds=1 if quick else 3),
                   "rebuild": rebuild_and_memory,
                   "gateway": lambda bench: front.measure(bench, database_url=database, formation=fresh_formation)}
            for name in scenarios:
                run[name](bench)
            if servers:
                with bench.step(f"servers: {', '.join(SERVERS)} on the bare endpoint and POST /posts"):
                    compare_servers(report, rounds=sizes.tail_rounds, seconds=sizes.seconds,
                                    new_client=bench.new_client, port=free_port)
    memory_ratio(report)
    return report
