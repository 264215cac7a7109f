"""Trace context through events, the root sampler's rate, and the fast path for events not sampled."""
import json

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from services.bus.log import SCHEMA, EventLog, row_to_event, row_to_json
from services import table
from services.shared import config as config_module
from services.shared import outbox, tracing
from services.shared.consumer import process
from services.shared.db import Database
from services.shared.events import Event, PostCreated, by_type_name
from services.shared.transport import InMemoryBus

SAMPLED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
NOT_SAMPLED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"


def traced(rate: float = 20.0, **env):
    config = table.load({"BLOG_BROKER_URL": "memory://tracing-test", "BLOG_TRACE_RATE": str(rate), **env})
    exporter = InMemorySpanExporter()
    tracing.setup(config, "posts", processors=[SimpleSpanProcessor(exporter)])
    return exporter


@pytest.fixture
def spans():
    yield traced()
    tracing.shutdown()


def post(traceparent=None) -> Event:
    return Event("PostCreated", {"id": "p1", "title": "a"}, source="posts", traceparent=traceparent)


def test_trace_context_travels_in_the_envelope_and_a_bare_event_has_none():
    event = Event("PostCreated", {"id": "p1", "title": "a"}, traceparent=SAMPLED, tracestate="k=v")
    wire = event.to_dict()
    assert wire["traceparent"] == SAMPLED and wire["tracestate"] == "k=v"
    back = Event.from_dict(json.loads(json.dumps(wire)))
    assert (back.traceparent, back.tracestate) == (SAMPLED, "k=v")
    bare = Event.from_dict({"type": "PostCreated", "data": {"id": "p1", "title": "a"}})
    assert bare.traceparent is None and "traceparent" not in bare.to_dict()


def test_the_flags_say_whether_a_trace_is_kept():
    assert tracing.sampled(SAMPLED)
    assert not tracing.sampled(NOT_SAMPLED)
    assert not tracing.sampled(None)
    assert not tracing.sampled("garbage")
    assert tracing.parent_context("00-not-a-trace-01") is None


def test_the_root_sampler_starts_at_most_its_rate_of_traces():
    limiter = tracing.RateLimited(5)
    assert [limiter.take() for _ in range(7)] == [True] * 5 + [False] * 2
    assert not tracing.RateLimited(0).take()


def test_a_write_beyond_the_rate_is_not_traced_and_says_so_downstream():
    exporter = traced(rate=1)
    try:
        kept, dropped = [tracing.active().tracer.start_span("POST /posts") for _ in range(2)]
        assert kept.is_recording() and not dropped.is_recording()
        for span in (kept, dropped):
            span.end()
    finally:
        tracing.shutdown()
    assert [s.name for s in exporter.get_finished_spans()] == ["POST /posts"]


def test_an_event_made_inside_a_span_carries_its_context_through_the_outbox(spans, tmp_path):
    db = Database(tmp_path / "o.db", outbox.SCHEMA)
    with tracing.active().tracer.start_as_current_span("POST /posts") as span, db.transaction() as conn:
        outbox.add(conn, post())
    with db.transaction() as conn:
        outbox.add(conn, post())  # no span running: none
    rows = [json.loads(row["event"]) for row in db.connection().execute("SELECT event FROM outbox ORDER BY pos")]
    assert rows[0]["traceparent"] == tracing.traceparent_of(span.get_span_context())
    assert "traceparent" not in rows[1]
    db.close()


def test_publish_and_process_spans_continue_the_events_trace(spans):
    with tracing.publishing([post(SAMPLED)]) as (published,):
        pass
    seen = []
    handlers = by_type_name({PostCreated: lambda data, event, ctx: seen.append(tracing.current_traceparent()[0])})
    assert process(handlers, published, None)
    publish, handled = spans.get_finished_spans()
    assert (publish.name, publish.kind, handled.name, handled.kind) == (
        "publish PostCreated", SpanKind.PRODUCER, "process PostCreated", SpanKind.CONSUMER)
    assert publish.parent.span_id == int(SAMPLED.split("-")[2], 16)
    assert handled.parent.span_id == publish.context.span_id  # the event named its publish span
    assert publish.context.trace_id == handled.context.trace_id == int(SAMPLED.split("-")[1], 16)
    assert publish.attributes["messaging.message.id"] == published.id
    assert publish.attributes["blog.post.id"] == "p1"
    assert seen == [tracing.traceparent_of(handled.context)]  # what the handler emits continues it


def test_an_event_not_sampled_makes_no_span_at_any_hop_nor_do_the_events_it_causes(spans, tmp_path):
    events = [post(NOT_SAMPLED), post(NOT_SAMPLED)]
    with tracing.publishing(events) as published:
        pass
    with tracing.delivering(published, "query") as delivered:
        pass
    db = Database(tmp_path / "o.db", outbox.SCHEMA)

    def emit(data, event, ctx):
        with db.transaction() as conn:
            outbox.add(conn, post())

    for event in delivered:
        process(by_type_name({PostCreated: emit}), event, None)
    assert published == delivered == events  # passed on untouched
    assert spans.get_finished_spans() == ()
    emitted = [json.loads(row["event"]) for row in db.connection().execute("SELECT event FROM outbox")]
    assert [e["traceparent"] for e in emitted] == [NOT_SAMPLED] * 2  # decided once: not kept, downstream too
    db.close()


def test_an_event_without_context_may_start_a_trace_where_it_is_consumed():
    exporter = traced(rate=1)
    try:
        for _ in range(3):
            process(by_type_name({PostCreated: lambda data, event, ctx: None}), post(None), None)
    finally:
        tracing.shutdown()
    (root,) = exporter.get_finished_spans()  # the rate allowed one
    assert root.name == "process PostCreated" and root.parent is None


def test_the_bus_starts_a_trace_for_an_event_without_one_within_its_rate():
    exporter = traced(rate=1)
    try:
        with tracing.appending([post(None), post(None), post(NOT_SAMPLED)], tracing.carrying) as (first, second, third):
            pass
    finally:
        tracing.shutdown()
    (append,) = exporter.get_finished_spans()
    assert append.name == "append PostCreated" and append.parent is None
    assert first.traceparent == tracing.traceparent_of(append.context)
    assert not tracing.sampled(second.traceparent) and second.traceparent.startswith("00-")  # decided: not kept
    assert third.traceparent == NOT_SAMPLED


def test_tracing_off_changes_nothing():
    config = table.load({"OTEL_SDK_DISABLED": "true", "BLOG_BROKER_URL": "memory://tracing-test"})
    assert tracing.setup(config, "posts") is None and tracing.active() is None
    with tracing.appending([post(None)], tracing.carrying) as (event,):
        assert event.traceparent is None
    assert tracing.consuming(post(SAMPLED)) is tracing.NOTHING


def test_a_write_request_has_a_server_span_continuing_the_callers_trace(spans, tmp_path):
    from services.posts.app import create_app
    from services.shared.components import components

    config = table.load({"BLOG_DATA_DIR": str(tmp_path), "BLOG_BROKER_URL": "memory://tracing-test"})
    app = create_app(config)
    client = app.test_client()
    client.get("/posts")  # a read: no span
    assert client.post("/posts", json={"title": "a"}, headers={"traceparent": SAMPLED}).status_code == 201
    components(app)["relay"].relay_once()
    server, publish = spans.get_finished_spans()
    assert server.name == "POST /posts" and server.kind == SpanKind.SERVER
    assert server.context.trace_id == int(SAMPLED.split("-")[1], 16)
    assert {k: server.attributes[k] for k in ("http.request.method", "http.route", "http.response.status_code")} == {
        "http.request.method": "POST", "http.route": "/posts", "http.response.status_code": 201}
    assert publish.parent.span_id == server.context.span_id


@pytest.mark.parametrize("sent", [NOT_SAMPLED, None, "not a trace context"])
def test_a_write_request_whose_trace_is_not_kept_makes_no_span_and_its_event_says_not_kept(tmp_path, sent):
    from services.posts.app import create_app
    from services.shared.components import components

    spans = traced(rate=0)  # no trace may start here
    tracing.active().tracer = None  # the SDK is not asked: a span object would be made through it
    try:
        config = table.load({"BLOG_DATA_DIR": str(tmp_path), "BLOG_BROKER_URL": "memory://tracing-test"})
        app = create_app(config)
        headers = {"traceparent": sent} if sent else {}
        assert app.test_client().post("/posts", json={"title": "a"}, headers=headers).status_code == 201
        components(app)["relay"].relay_once()
    finally:
        tracing.shutdown()
    assert spans.get_finished_spans() == ()
    event = InMemoryBus.named("tracing-test").log[-1]
    assert event.traceparent.startswith("00-") and not tracing.sampled(event.traceparent)
    if sent == NOT_SAMPLED:
        assert event.traceparent == NOT_SAMPLED


def test_the_bus_log_keeps_an_events_trace_context_and_serves_it(tmp_path):
    db = Database(tmp_path / "bus.db", SCHEMA)
    log = EventLog(db)
    log.append([post(SAMPLED), post(None)])
    traced_row, bare_row = log.read_after(0)
    assert json.loads(row_to_json(traced_row))["traceparent"] == SAMPLED
    assert row_to_event(traced_row).traceparent == SAMPLED
    assert "traceparent" not in json.loads(row_to_json(bare_row))
    db.close()


def test_the_json_log_lines_name_the_trace(spans):
    import logging

    from services.shared.logs import JsonLines

    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello %s", ("you",), None)
    with tracing.active().tracer.start_as_current_span("work") as span:
        line = json.loads(JsonLines("posts").format(record))
    assert line["message"] == "hello you" and line["service"] == "posts"
    assert line["trace_id"] == f"{span.get_span_context().trace_id:032x}"
    assert "trace_id" not in json.loads(JsonLines("posts").format(record))


def test_a_rabbitmq_message_s_headers_carry_the_trace_context():
    from types import SimpleNamespace

    from services.shared.transport.rabbitmq import _event

    event = post(SAMPLED)
    assert tracing.trace_headers(event) == {"traceparent": SAMPLED}
    body = {"type": "PostCreated", "data": {"id": "p1", "title": "a"}}  # another publisher's: context in headers only
    message = SimpleNamespace(properties={"app_id": "posts"}, headers={"traceparent": SAMPLED, "tracestate": "k=v"})
    assert (_event(body, message).traceparent, _event(body, message).tracestate) == (SAMPLED, "k=v")


def test_the_settings_tracing_reads():
    load = table.load
    assert (load({}).tracing, load({}).trace_rate, load({}).log_format) == (True, 20.0, "text")
    assert not load({"OTEL_SDK_DISABLED": "TRUE"}).tracing and load({"OTEL_SDK_DISABLED": "false"}).tracing
    assert load({"BLOG_TRACE_RATE": "0"}).trace_rate == 0 and load({"BLOG_LOG_FORMAT": "JSON"}).log_format == "json"
    for bad in ({"BLOG_TRACE_RATE": "-1"}, {"BLOG_TRACE_RATE": "fast"}, {"BLOG_LOG_FORMAT": "xml"}):
        with pytest.raises(config_module.ConfigError):
            load(bad)


def test_the_span_store_keeps_the_newest_spans_and_finds_them_by_id(tmp_path):
    from services.shared.span_store import SpanStore, find_traces, kept, read_spans

    store = SpanStore(tmp_path / "traces" / "posts.db", keep=5)
    config = table.load({"BLOG_BROKER_URL": "memory://tracing-test"})
    tracing.setup(config, "posts", processors=[SimpleSpanProcessor(store)])
    try:
        for n in range(8):
            with tracing.publishing([Event("PostCreated", {"id": f"p{n}", "title": "a"}, traceparent=SAMPLED)]):
                pass
    finally:
        tracing.shutdown()
    assert kept(tmp_path)[0] == 5
    assert find_traces(tmp_path, "p2") == [] and find_traces(tmp_path, "p7") == [SAMPLED.split("-")[1]]
    assert [s["attributes"]["blog.post.id"] for s in read_spans(tmp_path, SAMPLED.split("-")[1])] == [
        f"p{n}" for n in range(3, 8)]


def test_the_standard_sampler_setting_replaces_the_rate():
    exporter = traced(rate=0, OTEL_TRACES_SAMPLER="always_on")
    try:
        assert tracing.active().limiter is None
        tracing.active().tracer.start_span("POST /posts").end()
    finally:
        tracing.shutdown()
    assert len(exporter.get_finished_spans()) == 1
