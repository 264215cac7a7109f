"""Tails: p50 and p99 of `POST /posts` and of one-event publishes, under the bench's 8 Python
clients and under 16 keep-alive wrk connections (where wrk is installed), as the median of
several interleaved runs with their range. The target: p99 at most 3x p50.

Each round measures the bare endpoint under the same load generator first, so every figure
has its bare figure from the same minute of the same machine beside it.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from ..client import JSON
from ..polling import wait_until
from . import wrk
from .carriers import post_event
from .harness import Bench
from .report import Figure, median_of

TARGET = 3.0  # p99 / p50


@dataclass(frozen=True)
class Run:
    rate: float
    p50: float  # seconds
    p99: float


class Tails:
    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.runs: dict[tuple[str, str], list[Run]] = {}  # (what, load generator) -> one Run per round

    def measure(self, rounds: int) -> None:
        with self.bench.step(f"tails: POST /posts and one-event publishes, {rounds} interleaved round(s)"):
            for _ in range(rounds):
                self.round()
        self.report()

    def round(self) -> None:
        bench = self.bench
        generators: list[tuple[str, dict[str, Callable[[], Run]]]] = [("python", {
            "bare GET {}": lambda: self.python(lambda c, *_: c.http.request("GET", bench.bare_url).status_code == 200),
            "POST /posts": lambda: self.python(lambda c, *_: bench.create_post(c)),
            "one event per publish": lambda: self.python(lambda c, *_: bench.publish_batch([post_event()])),
        })]
        if wrk.available():
            loads = {"bare GET {}": lambda: self.wrk(bench.bare_url), "POST /posts": self.wrk_posts}
            if self.bus_url() is not None:
                loads["one event per publish"] = self.wrk_events
            generators.append(("wrk", loads))
        for generator, loads in generators:
            for what, load in loads.items():
                self.runs.setdefault((what, generator), []).append(load())
                bench.settle()

    def python(self, call) -> Run:
        load = self.bench.load(call)
        return Run(load.rate, load.percentile(50), load.percentile(99))

    def wrk(self, url: str, **post) -> Run:
        found = wrk.run(url, seconds=self.bench.sizes.seconds, **post)
        return Run(found.rate, found.p50, found.p99)

    def wrk_posts(self) -> Run:
        """wrk's posts, counted by Posts itself: wrk does not say how many of its last requests landed."""
        bench = self.bench
        before = bench.health("posts")["posts"]
        run = self.wrk(bench.rt.config.url("posts") + "/posts", body='{"title": "bench"}', headers=dict(JSON))
        bench.count_posts(still(lambda: bench.health("posts")["posts"]) - before)
        return run

    def bus_url(self) -> str | None:
        """Where wrk can publish one event per request: the transport's HTTP publish URL, when the
        formation does not sign (wrk cannot sign)."""
        if self.bench.rt.config.secret:
            return None
        return self.bench.carrier.description.publish_url

    def wrk_events(self) -> Run:
        """One PostCreated per request to the transport's process, counted by its log's last seq: nothing
        else publishes meanwhile."""
        bench = self.bench
        process = bench.carrier.description.process
        before = bench.health(process)["last_seq"]
        body = json.dumps({"type": "PostCreated", "data": {"id": "{id}", "title": "a benchmark post"}})
        run = self.wrk(self.bus_url(), body=body, headers={**JSON, "X-Blog-Source": "bench"})
        bench.count_posts(still(lambda: bench.health(process)["last_seq"]) - before)
        return run

    def report(self) -> None:
        bench = self.bench
        for (what, generator), runs in self.runs.items():
            clients = "8 clients" if generator == "python" else f"{wrk.CONNECTIONS} connections"
            p50, p50_range = median_of([r.p50 * 1000 for r in runs])
            p99, p99_range = median_of([r.p99 * 1000 for r in runs])
            tail, tail_range = median_of([r.p99 / r.p50 for r in runs])
            rate, rate_range = median_of([r.rate for r in runs])
            bare = median_of([r.p50 * 1000 for r in self.runs[("bare GET {}", generator)]])[0]
            figure = dict(scenario="tails", load=generator)
            bench.report.add(Figure(name=f"{what}, {clients}, req/s", value=rate, unit="req/s", spread=rate_range,
                                    **figure))
            bench.report.add(Figure(name=f"{what}, {clients}, p50", value=p50, unit="ms", spread=p50_range,
                                    ratio=p50 / bare, ratio_of="bare p50, same load", **figure))
            is_bare = what.startswith("bare")
            bench.report.add(Figure(name=f"{what}, {clients}, p99", value=p99, unit="ms", spread=p99_range,
                                    ratio=tail, ratio_of=f"p50 (runs {tail_range})",
                                    target="" if is_bare else f"<= {TARGET:g}x", met=None if is_bare else tail <= TARGET,
                                    **figure))


def still(read: Callable[[], int]) -> int:
    """A count once it has stopped moving: requests wrk sent last may be answered after it exits."""
    seen: list[int] = []

    def unchanged() -> bool:
        seen.append(read())
        return len(seen) >= 2 and seen[-1] == seen[-2]

    wait_until(unchanged, timeout=60, interval=0.25, message="the benchmark: wrk's last requests to be answered")
    return seen[-1]
