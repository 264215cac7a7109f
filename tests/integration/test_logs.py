"""What the services log: a line per request (not the polls), a line per hop of an event whose trace is
kept, each with its trace id, in JSON or in text; none for what no trace keeps."""
from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.bus.app import create_app as create_bus
from services.bus.delivery import Deliverer
from services.shared import tracing
from services.shared.config import Subscriber
from services.shared.logs import JsonLines, TextLines
from services.shared.transport import InMemoryBus
from services.table import load
from tests.in_process import create_apps
from tests.integration.conftest import Blog
from tests.unit.test_bus_log import FakeSubscriber

SAMPLED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def capture(formatter: logging.Formatter) -> tuple[Callable[[], list[str]], Callable[[], None]]:
    """Lines of the `blog.*` loggers as a service writes them (formatted when logged, inside the request);
    returns (read, undo)."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    logger = logging.getLogger("blog")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)

    def undo() -> None:
        logger.removeHandler(handler)
        logger.setLevel(level)

    return lambda: out.getvalue().splitlines(), undo


@pytest.fixture
def lines() -> Iterator[Callable[[], list[dict]]]:
    read, undo = capture(JsonLines("test"))
    yield lambda: [json.loads(line) for line in read()]
    undo()


def start(tmp_path, rate: float = 20.0, **env: str) -> Blog:
    config = load({"BLOG_DATA_DIR": str(tmp_path), "BLOG_TRACE_RATE": str(rate), **env})
    tracing.setup(config, "test", processors=[SimpleSpanProcessor(InMemorySpanExporter())])
    bus = InMemoryBus()
    apps = create_apps(config, bus)  # after tracing: each app's hooks are made for a tracing process
    return Blog(bus, apps["posts"].test_client(), apps["comments"].test_client(), apps["query"].test_client(), apps)


@pytest.fixture
def traced(tmp_path) -> Iterator[Callable[..., Blog]]:
    yield lambda **options: start(tmp_path, **options)
    tracing.shutdown()


def test_a_traced_write_logs_its_request_and_each_hop_of_its_event_with_its_trace_id(traced, lines):
    blog = traced()
    response = blog.posts.post("/posts", json={"title": "logged"})
    post_id = response.json["id"]
    trace_id = response.headers["traceparent"].split("-")[1]  # the trace the write started, to look up
    blog.relay()
    blog.query.get("/health")
    blog.query.get("/metrics")
    found = [line for line in lines() if line.get("trace_id") == trace_id]
    request = next(line for line in found if line["logger"] == "blog.access")
    assert {key: request[key] for key in ("method", "path", "status", "message")} == {
        "method": "POST", "path": "/posts", "status": 201, "message": f"POST /posts 201 {request['duration_ms']} ms"}
    assert request["duration_ms"] >= 0 and request["span_id"]
    hops = [(line["message"].split()[0], line["event"], line["post_id"]) for line in found if line["logger"] == "blog.events"]
    # The in-memory bus delivers inside the publish: both consumers' lines come before the relay's.
    assert sorted(hops) == [("applied", "PostCreated", post_id)] * 2 + [("published", "PostCreated", post_id)]
    assert not [line for line in lines() if line.get("path") in ("/health", "/metrics")]  # polls are not logged


def test_the_bus_logs_what_it_appends_and_delivers_of_a_kept_trace(traced, lines, config):
    traced()
    bus = create_bus(config)
    event = {"id": "e1", "type": "PostCreated", "data": {"id": "p1", "title": "t"}, "traceparent": SAMPLED}
    not_kept = {**event, "id": "e2", "traceparent": SAMPLED[:-2] + "00", "data": {"id": "p2", "title": "u"}}
    bus.test_client().post("/events", json=[event, not_kept])
    bus.test_client().post("/events", json=event)  # the same id again: acknowledged, not appended
    events_log = bus.extensions["components"]["delivery"].deliverers["query"].log
    Deliverer(events_log, Subscriber("query", "http://q/events", batch=True), client=FakeSubscriber()).deliver_once()
    hops = [(line["message"].split()[0], line["seq"], line.get("source"), line.get("subscriber"))
            for line in lines() if line["logger"] == "blog.events"]
    assert hops == [("appended", 1, "unknown", None), ("delivered", 1, None, "query")]  # p2's trace is not kept
    assert all(line["trace_id"] == SAMPLED.split("-")[1] for line in lines() if line["logger"] == "blog.events")
    assert "delivered PostCreated" in lines()[-1]["message"] and "to query (post p1)" in lines()[-1]["message"]


def test_what_no_trace_keeps_logs_its_request_only_and_without_a_trace_id(traced, lines):
    blog = traced(rate=0)  # no trace may start
    response = blog.posts.post("/posts", json={"title": "not kept"})
    blog.relay()
    assert "traceparent" not in response.headers
    assert [(line["logger"], line["message"].split()[:2]) for line in lines()] == [("blog.access", ["POST", "/posts"])]
    assert "trace_id" not in lines()[0]


@pytest.mark.parametrize("setting, logged", [
    (None, ["POST /posts 201", "GET /nowhere 404"]),  # the default, "writes": a read that succeeded has none
    ("all", ["POST /posts 201", "GET /posts 200", "GET /nowhere 404"]),
])
def test_reads_that_succeed_are_logged_only_when_every_request_is(traced, lines, setting, logged):
    blog = traced(rate=0, **({"BLOG_ACCESS_LOG": setting} if setting else {}))
    blog.posts.post("/posts", json={"title": "read"})
    assert blog.query.get("/posts").status_code == 200
    assert blog.query.get("/nowhere").status_code == 404
    assert [" ".join(line["message"].split()[:3]) for line in lines() if line["logger"] == "blog.access"] == logged


def test_the_request_lines_can_be_turned_off(traced, lines):
    blog = traced(BLOG_ACCESS_LOG="off")
    blog.posts.post("/posts", json={"title": "quiet"})
    assert [line["logger"] for line in lines()] == []  # its event is not relayed yet


def test_text_lines_end_with_the_trace_id(traced):
    read, undo = capture(TextLines("posts"))
    try:
        blog = traced()
        trace_id = blog.posts.post("/posts", json={"title": "text"}).headers["traceparent"].split("-")[1]
        blog.relay()
    finally:
        undo()
    request, *_, published = read()  # (the in-memory bus delivers inside the publish)
    assert " posts INFO POST /posts 201 " in request and request.endswith(f" ms trace_id={trace_id}")
    assert " posts INFO published PostCreated " in published and published.endswith(f") trace_id={trace_id}")
