"""`blogctl trace`: a waterfall from the span stores of a data directory, written here by the real
tracer and span store under two service names; no process runs."""
from __future__ import annotations

import json

from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from typer.testing import CliRunner

from blogctl.cli import app
from services import table
from services.shared import tracing
from services.shared.events import Event
from services.shared.span_store import SpanStore


def record(data_dir, instance: str, work):
    config = table.load({"BLOG_BROKER_URL": "memory://trace-cli", "BLOG_DATA_DIR": str(data_dir)})
    tracing.setup(config, instance, processors=[SimpleSpanProcessor(SpanStore(data_dir / "traces" / f"{instance}.db"))])
    try:
        return work()
    finally:
        tracing.shutdown()


def write_a_post(data_dir) -> Event:
    """Posts' request and publish, then the bus's append, each in its own process's store."""
    def posts() -> Event:
        with tracing.active().tracer.start_as_current_span("POST /posts"):
            made = tracing.with_current_context(Event("PostCreated", {"id": "p1", "title": "a"}))
        with tracing.publishing([made]) as (published,):
            return published

    published = record(data_dir, "posts", posts)

    def bus() -> None:
        with tracing.appending([published], tracing.carrying):
            pass

    record(data_dir, "bus", bus)
    return published


def test_trace_shows_a_writes_hops_in_tree_order(tmp_path):
    event = write_a_post(tmp_path)
    runner = CliRunner()
    shown = runner.invoke(app, ["--data-dir", str(tmp_path), "trace", "p1", "--json"])
    assert shown.exit_code == 0, shown.output
    (trace,) = json.loads(shown.stdout)["traces"]
    assert [(s["service"], s["operation"], s["depth"]) for s in trace["spans"]] == [
        ("posts", "POST /posts", 0), ("posts", "publish PostCreated", 1), ("bus", "append PostCreated", 2)]
    assert trace["events"] == [{"id": event.id, "type": "PostCreated", "published_by": "posts", "post_id": "p1",
                                "comment_id": None}]
    by_event = runner.invoke(app, ["--data-dir", str(tmp_path), "trace", event.id])
    assert by_event.exit_code == 0 and "append PostCreated" in by_event.stdout and "Events it caused" in by_event.stdout


def test_trace_says_why_nothing_was_found(tmp_path):
    runner = CliRunner()
    nothing = runner.invoke(app, ["--data-dir", str(tmp_path), "trace", "p1"])
    assert nothing.exit_code == 1 and "no spans are kept" in nothing.stderr and "Traceback" not in nothing.output
    write_a_post(tmp_path)
    unknown = runner.invoke(app, ["--data-dir", str(tmp_path), "trace", "zzz"])
    assert unknown.exit_code == 1 and "not sampled" in unknown.stderr and "pruned" in unknown.stderr
