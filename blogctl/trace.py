"""`blogctl trace ID`: one write's journey through the formation, as a waterfall of its spans.

The spans come from each service's local span store under the data directory
(services/shared/span_store.py), so this works with the services stopped, and without a collector.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from services.shared import span_store

from . import render
from .errors import BlogctlError
from .options import JsonOption
from .render import console
from .runtime import runtime

BAR_WIDTH = 20
OPERATION_WIDTH = 46  # with the other columns, a waterfall fits 100 columns
SERVICE_COLOURS = {"posts": "cyan", "comments": "yellow", "query": "green", "moderation": "magenta", "bus": "blue"}


def trace(
    ctx: typer.Context,
    ident: Annotated[str, typer.Argument(metavar="ID", help="A post id, comment id, event id or trace id.")],
    json_output: JsonOption = False,
) -> None:
    """The trace of the write that made ID: each hop with its service, operation, offset and
    duration in ms, and the events it caused. Read from the services' span stores (running or not)."""
    data_dir = runtime(ctx).config.data_dir
    traces = [waterfall(span_store.read_spans(data_dir, trace_id)) for trace_id in span_store.find_traces(data_dir, ident)]
    traces = [t for t in traces if t["spans"]]
    if not traces:
        raise BlogctlError(not_found(data_dir, ident))
    if json_output:
        render.print_json({"id": ident, "traces": traces})
        return
    for found in traces:
        console.print(waterfall_table(found, ident))
        if found["events"]:
            console.print(events_table(found["events"]))


def not_found(data_dir, ident: str) -> str:
    """Why no trace of `ident` is kept, in one line."""
    count, oldest = span_store.kept(data_dir)
    if not span_store.stores(data_dir):
        return (f"no spans are kept under {data_dir / 'traces'}: tracing was off (OTEL_SDK_DISABLED=true) or no "
                "service has run with this data directory")
    since = datetime.fromtimestamp(oldest / 1e9, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if oldest else "—"
    return (f"no kept trace holds {ident!r}: it is not a post, comment, event or trace id the services saw, or its "
            f"write was not sampled (a service starts at most BLOG_TRACE_RATE traces a second), or its spans were "
            f"pruned ({count:,} spans kept, the oldest from {since})")


def waterfall(spans: list[dict]) -> dict:
    """A trace's spans in tree order (each after its parent, siblings by start), with offsets from the
    trace's start and depths; a span whose parent was not kept is shown as a root."""
    if not spans:
        return {"trace_id": None, "spans": [], "events": []}
    start = min(span["start_ns"] for span in spans)
    end = max(span["end_ns"] for span in spans)
    ids = {span["span_id"] for span in spans}
    children: dict[str | None, list[dict]] = {}
    for span in spans:  # already in start order
        parent = span["parent_id"] if span["parent_id"] in ids else None
        children.setdefault(parent, []).append(span)
    ordered = []

    def visit(parent: str | None, depth: int) -> None:
        for span in children.get(parent, []):
            attributes = span["attributes"]
            ordered.append({
                "service": span["service"], "operation": span["name"], "kind": span["kind"], "depth": depth,
                "offset_ms": round((span["start_ns"] - start) / 1e6, 3),
                "duration_ms": round((span["end_ns"] - span["start_ns"]) / 1e6, 3),
                "status": span["status"], "span_id": span["span_id"], "parent_id": span["parent_id"],
                "subscriber": attributes.get("messaging.consumer.group.name"), "attributes": attributes,
            })
            visit(span["span_id"], depth + 1)

    visit(None, 0)
    events: dict[str, dict] = {}
    for span in spans:
        attributes = span["attributes"]
        message = attributes.get("messaging.message.id")
        if message and message not in events and attributes.get("messaging.operation.name") in ("publish", "append"):
            events[message] = {"id": message, "type": attributes.get("messaging.destination.name"),
                               "published_by": span["service"] if span["service"] != "bus" else None,
                               "post_id": attributes.get("blog.post.id"),
                               "comment_id": attributes.get("blog.comment.id")}
    return {"trace_id": spans[0]["trace_id"], "duration_ms": round((end - start) / 1e6, 3),
            "services": sorted({span["service"] for span in spans}), "spans": ordered, "events": list(events.values())}


def bar(offset: float, duration: float, total: float, style: str = "") -> Text:
    scale = BAR_WIDTH / total if total > 0 else 0
    begin = min(BAR_WIDTH - 1, int(offset * scale))
    length = max(1, min(BAR_WIDTH - begin, round(duration * scale)))
    return Text.assemble(" " * begin, ("█" * length, style), " " * (BAR_WIDTH - begin - length))


def waterfall_table(found: dict, ident: str) -> Table:
    table = Table(title=f"Trace {found['trace_id']} ({ident}): {len(found['spans'])} spans, "
                        f"{len(found['services'])} services, {found['duration_ms']:.1f} ms",
                  title_justify="left", show_edge=False)
    table.add_column("operation", no_wrap=True, overflow="ellipsis", max_width=OPERATION_WIDTH)
    table.add_column("service", no_wrap=True, min_width=10)
    table.add_column("at ms", justify="right", no_wrap=True, min_width=6)
    table.add_column("ms", justify="right", no_wrap=True, min_width=5)
    table.add_column("", no_wrap=True, min_width=BAR_WIDTH)
    for span in found["spans"]:
        operation = span["operation"] + (f" → {span['subscriber']}" if span["subscriber"] else "")
        style = "red" if span["status"] == "error" else ""
        colour = SERVICE_COLOURS.get(span["service"].partition(".")[0], "")
        table.add_row(
            Text(" " * span["depth"]) + render.text(operation, style), render.text(span["service"], colour),
            f"{span['offset_ms']:.1f}", f"{span['duration_ms']:.1f}",
            bar(span["offset_ms"], span["duration_ms"], found["duration_ms"], colour),
        )
    return table


def events_table(events: list[dict]) -> Table:
    table = Table(title="Events it caused", title_justify="left", show_edge=False)
    for column in ("event", "type", "published by", "post", "comment"):
        table.add_column(column, no_wrap=True)
    for event in events:
        table.add_row(*(render.text(event[key] or "—") for key in ("id", "type", "published_by", "post_id",
                                                                      "comment_id")))
    return table
