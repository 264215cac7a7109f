"""Write-to-view hop by hop: where the idle write-to-view's time goes, read from the write's trace.

The formation is restarted with every write traced (BLOG_TRACE_RATE above the writes' rate), then
writes are made one after the other as `Bench.write_then_see` makes them, each followed by
Query's long poll until the post shows. Each write's spans are read from the span stores as
`blogctl trace` reads them (its `waterfall`), and each hop on the way to Query's view is given as
the median of when it started (from the client's sending the POST) and how long it took; beside
them, when the client had its 201 and when Query's answer showed it the post (the write-to-view).
"""
from __future__ import annotations

import statistics
import time
from collections import Counter

from services.shared import span_store
from services.table import SERVICE_TABLE

from ..errors import BlogctlError
from ..trace import waterfall
from .harness import JSON, Bench, until
from .report import Figure

TRACE_EVERY_WRITE = "1000"  # traces a second each service may start: far above one writer's rate
VIEW = "query: process"  # the hop that puts the post in Query's view (prefix of its span's key)


def measure(bench: Bench) -> None:
    names = list(bench.rt.formation.names)
    bench.restart(names, {"BLOG_TRACE_RATE": TRACE_EVERY_WRITE})
    try:
        # Started again, a consumer first reads the log after its position (on RabbitMQ, Query's queue
        # gives none: it reads most of the stream again): the writes are measured once that is done.
        consumers = [spec.name for spec in SERVICE_TABLE if spec.handlers]
        until(lambda: all(bench.health(name).get("caught_up") for name in consumers), timeout=600, interval=0.1,
              what="the consumers restarted with tracing to catch up")
        with bench.step(f"write-to-view, hop by hop ({bench.sizes.latency_samples} traced writes)"):
            writes = [traced_write(bench) for _ in range(bench.sizes.latency_samples)]
            # The services write finished spans out in batches (every 0.5 s): wait for the last write's to Query.
            until(lambda: reached_view(bench, writes[-1][0]), timeout=30, interval=0.1,
                  what="the last traced write's spans to be written out")
            hops, used = hop_times(bench, writes)
    finally:
        bench.restart(names, {})
    if not hops:
        raise BlogctlError("the benchmark found no trace of its traced writes in the span stores")
    bench.report.add(Figure("hops", "traced writes whose every hop was found (the medians below are theirs)",
                            used, "writes"))
    round_trip = bench.bare["round_trip"] * 1000
    for key, (start, length) in hops.items():
        bench.report.add(Figure("hops", f"{key}: starts at", start, "ms", ratio=start / round_trip,
                                ratio_of="bare round trip"))
        if length is not None:
            bench.report.add(Figure("hops", f"{key}: lasts", length, "ms", ratio=length / round_trip,
                                    ratio_of="bare round trip"))


def hop_key(hop: dict) -> str:
    """A hop of a waterfall by what it is: `service: operation`, and the subscriber of a delivery."""
    return f"{hop['service']}: {hop['operation']}" + (f" to {hop['subscriber']}" if hop["subscriber"] else "")


def reached_view(bench: Bench, post_id: str) -> bool:
    data_dir = bench.rt.config.data_dir
    return any(hop_key(hop).startswith(VIEW)
               for trace_id in span_store.find_traces(data_dir, post_id)
               for hop in waterfall(span_store.read_spans(data_dir, trace_id))["spans"])


def traced_write(bench: Bench) -> tuple[str, int, int, int]:
    """One write seen through to the view: (post id, and on the client's clock in ns since the epoch:
    when the POST was sent, when its 201 came, when Query's answer showed the post)."""
    client = bench.client
    sent = time.time_ns()
    answer = client.request("posts", "POST", "/posts", body=b'{"title": "bench"}', headers=JSON)
    answered = time.time_ns()
    post_id = answer.json()["id"]
    with bench.lock:
        bench.posts_published += 1
        bench.events_published += 1
    bench.see(bench.posts_published)
    return post_id, sent, answered, time.time_ns()


def hop_times(bench: Bench, writes: list[tuple[str, int, int, int]]) -> tuple[dict[str, tuple[float, float | None]], int]:
    """Each hop's median start (from the client's sending the POST) and length in ms, in order of start, up to
    the hop that put the post in the view, with the client's marks among them; and how many writes
    they are the medians of: those whose trace holds every hop that most traces hold (the span stores
    keep what each service's exporter wrote out, and a trace may lack a hop there)."""
    data_dir = bench.rt.config.data_dir
    each: list[dict[str, tuple[float, float | None]]] = []
    for post_id, sent, answered, shown in writes:
        hops: dict[str, tuple[float, float | None]] = {}
        for trace_id in span_store.find_traces(data_dir, post_id):  # the write's, and any its events started
            spans = span_store.read_spans(data_dir, trace_id)
            if not spans:
                continue
            # From when the client sent the POST: its clock and the services' are this machine's.
            shift = (min(span["start_ns"] for span in spans) - sent) / 1e6
            for hop in waterfall(spans)["spans"]:
                hops.setdefault(hop_key(hop), (hop["offset_ms"] + shift, hop["duration_ms"]))
        if hops:
            for key, at in (("client: has its 201", answered), ("client: is shown the post by Query", shown)):
                hops[key] = ((at - sent) / 1e6, None)
            each.append(hops)
    held = Counter(key for hops in each for key in hops)
    usual = {key for key, count in held.items() if count * 2 >= len(each)}
    complete = [hops for hops in each if usual <= hops.keys()]
    if not complete:
        return {}, 0
    medians = {key: (statistics.median(hops[key][0] for hops in complete),
                     None if complete[0][key][1] is None else statistics.median(hops[key][1] for hops in complete))
               for key in usual}
    view = max((start for key, (start, _) in medians.items() if key.startswith(VIEW)), default=0.0)
    shown = medians["client: is shown the post by Query"][0]
    return {key: value for key, value in sorted(medians.items(), key=lambda item: item[1][0])
            if value[0] <= max(view, shown)}, len(complete)
