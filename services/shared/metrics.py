"""`GET /metrics`: what a service has done, in Prometheus' text format (`prometheus_client`).

Each app has its own `CollectorRegistry` (tests build several apps in one process; the global
registry would mix them). What is counted as it happens costs one dict lookup and one
`inc`/`observe` (the labelled children are kept in plain dicts after their first use); what is
a level (outbox pending, a subscriber's cursor and lag) is read only when scraped, by a collector.

Names, by Prometheus' conventions:
- `blog_http_requests_total{route,method,status}` and `blog_http_request_duration_seconds{route,method}`
  (route: the Flask rule, `/posts/<post_id>/comments`; `<unmatched>` for a 404)
- `blog_events_published_total{type}`: events the outbox relay handed over, once the transport took them
- `blog_events_applied_total{type}`: events a consumer applied, once their transaction committed
- `blog_outbox_pending`: events written but not yet relayed (Posts, Comments, Moderation)
- on the bus: `blog_bus_last_seq`, and per subscriber `blog_subscriber_cursor`, `blog_subscriber_lag`,
  `blog_subscriber_dead_letters`, `blog_events_delivered_total`, `blog_delivery_failures_total`
- `blog_service_info{service,instance}` and the process collector's `process_*` (CPU, memory, start time)
"""
from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterable, Iterator
from functools import cached_property, partial

from flask import Flask, Response, request
from prometheus_client import (
    CollectorRegistry, Counter, Histogram, Info, ProcessCollector, disable_created_metrics, generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from . import outbox
from .components import components
from .events import SCHEMAS, Event

STARTED = "blog.metrics.started"  # the WSGI environ key holding when the request came in
UNMATCHED = "<unmatched>"  # the route of a request no rule matched (a 404): one series, whatever the path
OTHER = "other"  # a method or event type outside the known ones: labels stay few whatever clients send
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Most answers take a few milliseconds; a held long poll (Query's `wait`) up to 30 s.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """One app's metrics: its registry, the counters the request path and the workers move, and
    the collectors read on scrape."""

    def __init__(self, service: str, instance: str) -> None:
        disable_created_metrics()  # the `_created` series double a scrape and nothing here reads them
        self.registry = CollectorRegistry(auto_describe=True)
        Info("blog_service", "What this process is", registry=self.registry).info(
            {"service": service, "instance": instance})
        ProcessCollector(registry=self.registry)
        self.requests = Counter("blog_http_requests", "HTTP requests answered, by route, method and status",
                                ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("blog_http_request_duration_seconds", "Time to answer an HTTP request, by route",
                                 ["route", "method"], buckets=LATENCY_BUCKETS, registry=self.registry)
        # Label values -> the labelled child, filled on first use: after that, no formatting and no registry lock.
        self._requests: dict[tuple, tuple] = {}

    def request_done(self, rule: str, method: str, status: int, seconds: float) -> None:
        key = (rule, method, status)
        children = self._requests.get(key)
        if children is None:
            method = method if method in METHODS else OTHER
            children = self._requests[key] = (
                self.requests.labels(rule, method, str(status)), self.latency.labels(rule, method))
        children[0].inc()
        children[1].observe(seconds)

    # The event counters exist in a service that publishes (its relay asks for `published`) or consumes
    # (its consumer asks for `applied`): a scrape of any other says it has no such metric, not zero.

    @cached_property
    def published(self) -> Callable[[Iterable[Event]], None]:
        counter = Counter("blog_events_published", "Events the outbox relay handed to the transport, by type",
                          ["type"], registry=self.registry)
        return partial(_count, counter, {})

    @cached_property
    def applied(self) -> Callable[[Iterable[Event]], None]:
        counter = Counter("blog_events_applied", "Events applied by this consumer (committed), by type",
                          ["type"], registry=self.registry)
        return partial(_count, counter, {})

    def add(self, collector: Collector) -> None:
        self.registry.register(collector)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def _count(counter: Counter, children: dict, events: Iterable[Event]) -> None:
    # Counted by type first: one increment (a lock taken) per type of a batch, not one per event.
    for type_, count in collections.Counter(event.type for event in events).items():
        child = children.get(type_)
        if child is None:
            child = children[type_] = counter.labels(type_ if type_ in SCHEMAS else OTHER)
        child.inc(count)


def metrics_of(app: Flask) -> Metrics:
    return app.extensions["metrics"]


def register_metrics(app: Flask, service: str, instance: str) -> Metrics:
    """Count every request `app` answers, and serve `GET /metrics`."""
    metrics = app.extensions["metrics"] = Metrics(service, instance)
    clock = time.perf_counter

    wsgi_app = app.wsgi_app

    def timed(environ, start_response):  # the clock starts before Flask's own work, as the client's does
        environ[STARTED] = clock()
        return wsgi_app(environ, start_response)

    app.wsgi_app = timed

    @app.after_request
    def answered(response: Response) -> Response:
        started = request.environ.get(STARTED)
        if started is not None:  # None: a request made inside the app, not through its WSGI entry
            rule = request.url_rule
            metrics.request_done(rule.rule if rule is not None else UNMATCHED, request.method,
                                 response.status_code, clock() - started)
        return response

    @app.get("/metrics")
    def scrape():
        return Response(metrics.exposition(), content_type=CONTENT_TYPE_LATEST)

    metrics.add(Gauges(lambda: _outbox(app)))
    return metrics


def _outbox(app: Flask) -> Iterator[tuple[str, str, dict[str, str], float]]:
    parts = components(app)
    if "relay" in parts:  # a service that emits events: Posts, Comments, Moderation
        yield "blog_outbox_pending", "Events written but not yet handed to the transport", {}, outbox.pending(
            parts["relay"].db)


class Gauges:
    """A collector that reads levels when scraped: `read()` yields (name, help, labels, value)."""

    def __init__(self, read: Callable[[], Iterable[tuple[str, str, dict[str, str], float]]]) -> None:
        self.read = read

    def collect(self) -> Iterator[Metric]:
        families: dict[str, GaugeMetricFamily] = {}
        for name, help_text, labels, value in self.read():
            family = families.get(name)
            if family is None:
                family = families[name] = GaugeMetricFamily(name, help_text, labels=list(labels))
            family.add_metric(list(labels.values()), value)
        yield from families.values()

    def describe(self) -> Iterator[Metric]:
        return iter(())  # read on scrape only: registering must not run the read


class Subscribers:
    """The bus's subscribers on scrape: the log's end, each cursor and lag, its dead letters, and the
    events delivered and the failed attempts each deliverer counted (`DeliveryStatus`)."""

    def __init__(self, last_seq: Callable[[], int], statuses: Callable[[], list]) -> None:
        self.last_seq = last_seq
        self.statuses = statuses

    def collect(self) -> Iterator[Metric]:
        last = self.last_seq()
        yield GaugeMetricFamily("blog_bus_last_seq", "Sequence number of the newest event in the log", value=last)
        families = (
            GaugeMetricFamily("blog_subscriber_cursor", "Last event the subscriber took", labels=["subscriber"]),
            GaugeMetricFamily("blog_subscriber_lag", "Events logged that the subscriber has not taken yet",
                              labels=["subscriber"]),
            GaugeMetricFamily("blog_subscriber_dead_letters", "Events parked after the subscriber kept refusing them",
                              labels=["subscriber"]),
            CounterMetricFamily("blog_events_delivered", "Events the subscriber took", labels=["subscriber"]),
            CounterMetricFamily("blog_delivery_failures", "Delivery attempts that failed (unreachable or refused)",
                                labels=["subscriber"]),
        )
        for status in self.statuses():
            values = (status.cursor, last - status.cursor, status.dead_letters, status.delivered, status.failed)
            for family, value in zip(families, values):
                family.add_metric([status.name], value)
        yield from families

    def describe(self) -> Iterator[Metric]:
        return iter(())
