"""Traces on a real formation: one post and a comment on it, moderated, reach an OTLP/HTTP receiver
as one trace with spans from every service whose parent links form one tree; and `blogctl trace`
shows the same journey from the services' own span stores."""
from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from typer.testing import CliRunner

from blogctl.cli import app
from tests.helpers import RunningBlog, free_port, view, wait_until

pytestmark = pytest.mark.slow

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"  # the test's own span, the parent of both writes
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN}-01"
SPAN_KINDS = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


class Receiver:
    """An OTLP/HTTP endpoint (`POST /v1/traces`, protobuf) keeping every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[dict] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                request = ExportTraceServiceRequest()
                request.ParseFromString(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.take(request)
                body = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def take(self, request: ExportTraceServiceRequest) -> None:
        for resource_spans in request.resource_spans:
            service = next(a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name")
            for scope_spans in resource_spans.scope_spans:
                with self.lock:
                    self.spans += [{
                        "service": service, "name": span.name, "kind": SPAN_KINDS.get(span.kind, "?"),
                        "trace_id": span.trace_id.hex(), "span_id": span.span_id.hex(),
                        "parent_id": span.parent_span_id.hex() or None,
                        "attributes": {a.key: a.value.string_value or a.value.int_value for a in span.attributes},
                    } for span in scope_spans.spans]

    def trace(self, trace_id: str) -> list[dict]:
        with self.lock:
            return [span for span in self.spans if span["trace_id"] == trace_id]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


@pytest.fixture(scope="module")
def traced(tmp_path_factory, receiver) -> Iterator[tuple[RunningBlog, str, str]]:
    """A formation exporting to the receiver; one post and an approved comment on it, both written
    inside the test's own trace (its `traceparent` header). Yields (formation, post id, comment id)."""
    formation = RunningBlog(tmp_path_factory.mktemp("traces"),
                            extra_env={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_SDK_DISABLED": ""})
    try:
        formation.start()
        headers = {"traceparent": TRACEPARENT}
        post = requests.post(f"{formation.url('posts')}/posts", json={"title": "traced"}, headers=headers, timeout=10)
        post_id = post.json()["id"]

        def comment() -> requests.Response:
            answer = requests.post(f"{formation.url('comments')}/posts/{post_id}/comments",
                                   json={"content": "a fine post"}, headers=headers, timeout=10)
            assert answer.status_code == 201, answer.text  # 404 until Comments has heard of the post
            return answer

        comment_id = wait_until(comment, timeout=20, message="Comments to take a comment on the new post").json()[0]["id"]
        wait_until(lambda: [c["status"] for c in view(formation).get(post_id, {}).get("comments", [])] == ["approved"],
                   timeout=30,
                   message="the comment to be approved in Query")
        yield formation, post_id, comment_id
    finally:
        formation.stop()


SERVICES = {"posts", "bus", "comments", "moderation", "query"}


def journey_arrived(receiver: Receiver) -> bool:
    """Every service has exported its spans of the trace, the last hop (Query applying CommentUpdated)
    among them, and every parent they name: each process exports in batches of its own."""
    spans = receiver.trace(TRACE_ID)
    ids = {s["span_id"] for s in spans} | {CALLER_SPAN}
    return (SERVICES <= {s["service"] for s in spans} and all(s["parent_id"] in ids for s in spans)
            and any(s["service"] == "query" and s["name"] == "process CommentUpdated" for s in spans))


def test_one_write_and_what_it_causes_reach_an_otlp_receiver_as_one_tree(traced, receiver):
    wait_until(lambda: journey_arrived(receiver), timeout=20, message="every hop's span at the OTLP receiver")
    spans = receiver.trace(TRACE_ID)
    assert SERVICES <= {s["service"] for s in spans}
    ids = {s["span_id"] for s in spans}
    assert len(ids) == len(spans)
    # One tree: every span hangs from another span of the trace, or from the caller's span.
    assert all(s["parent_id"] in ids or s["parent_id"] == CALLER_SPAN for s in spans)
    roots = [s for s in spans if s["parent_id"] == CALLER_SPAN]
    assert {(s["service"], s["name"], s["kind"]) for s in roots} == {
        ("posts", "POST /posts", "server"), ("comments", "POST /posts/{post_id}/comments", "server")}
    by_id = {s["span_id"]: s for s in spans}

    def chain(span: dict) -> list[str]:  # the hops from the caller down to `span`
        hops = []
        while span is not None:
            hops.append(f"{span['service']}: {span['name']}")
            span = by_id.get(span["parent_id"])
        return hops[::-1]

    # Comments -> the bus -> Moderation -> the bus -> Comments -> the bus -> Query, each hop a child of the one before.
    (last,) = [s for s in spans if s["service"] == "query" and s["name"] == "process CommentUpdated"]
    assert chain(last) == [
        "comments: POST /posts/{post_id}/comments", "comments: publish CommentCreated", "bus: append CommentCreated",
        "bus: deliver CommentCreated", "moderation: process CommentCreated", "moderation: publish CommentModerated",
        "bus: append CommentModerated", "bus: deliver CommentModerated", "comments: process CommentModerated",
        "comments: publish CommentUpdated", "bus: append CommentUpdated", "bus: deliver CommentUpdated",
        "query: process CommentUpdated",
    ]
    kinds = {(s["name"].split()[0], s["kind"]) for s in spans}
    assert {("publish", "producer"), ("append", "consumer"), ("deliver", "producer"), ("process", "consumer")} <= kinds
    publish = next(s for s in spans if s["name"] == "publish CommentCreated")
    assert publish["attributes"]["blog.comment.id"] == traced[2]
    assert publish["attributes"]["messaging.operation.type"] == "send"
    assert len(publish["attributes"]["messaging.message.id"]) == 32


def test_blogctl_trace_shows_the_comments_whole_journey_from_the_span_stores(traced, receiver):
    formation, post_id, comment_id = traced
    wait_until(lambda: journey_arrived(receiver), timeout=20, message="every hop's span exported")
    runner = CliRunner()
    args = ["--data-dir", str(formation.data_dir), "trace", comment_id]

    def shown() -> dict:
        result = runner.invoke(app, [*args, "--json"])
        assert result.exit_code == 0, result.output
        found = json.loads(result.stdout)
        assert {"process CommentUpdated"} <= {s["operation"] for s in found["traces"][0]["spans"]}
        return found

    found = wait_until(shown, timeout=20, message="the span stores to hold the whole trace")
    (trace,) = found["traces"]
    assert trace["trace_id"] == TRACE_ID
    assert SERVICES <= set(trace["services"])
    assert [e["type"] for e in trace["events"] if e["comment_id"] == comment_id] == [
        "CommentCreated", "CommentModerated", "CommentUpdated"]
    printed = runner.invoke(app, args)
    assert printed.exit_code == 0
    for hop in ("POST /posts/{post_id}/comments", "publish CommentCreated", "deliver CommentCreated → moderation",
                "process CommentCreated", "process CommentModerated", "process CommentUpdated"):
        assert hop in printed.stdout
    unknown = runner.invoke(app, ["--data-dir", str(formation.data_dir), "trace", "no-such-id"])
    assert unknown.exit_code == 1 and "no kept trace holds 'no-such-id'" in unknown.stderr
