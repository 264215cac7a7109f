"""What a service logs, and how: a line per HTTP request, a line per hop of a traced event, in text or JSON.

- **Requests** (logger `blog.access`, INFO, written by web.py's `log_requests`): `POST /posts 201 3.2 ms`,
  one line per request answered, as an access log (gunicorn's, uvicorn's) has, with the trace id when
  the request is in a kept trace. `/health` and `/metrics` are polled (`blogctl status`, `wait`, `top`,
  a scraper): never logged. `BLOG_ACCESS_LOG`: `writes` (the default: every request but a read answered
  2xx or 3xx), `all`, or `off`.
- **Events** (logger `blog.events`, INFO): a line at each hop of an event whose trace is kept:
  `published` by the outbox relay, `appended` by the bus to its log, `delivered` by the bus to a
  subscriber, `applied` by a consumer (committed). Each names the event, its position in the log,
  the post and comment it is about, and carries the event's trace id. Events whose trace is not
  kept get no line: the sampler already bounds how many traces a service starts (BLOG_TRACE_RATE),
  so a person's writes are all logged and a load's only a few a second.

`BLOG_LOG_FORMAT=json` writes each line as one JSON object (`time`, `service`, `level`, `logger`,
`message`, `trace_id`, `span_id` and the line's own fields); the text format writes the same
message with ` trace_id=...` at its end. `blogctl logs --trace ID` and `--grep` search either.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import orjson
from opentelemetry import trace

from . import tracing
from .events import Event

access_log = logging.getLogger("blog.access")
events_log = logging.getLogger("blog.events")


def setup(log_format: str, service: str, instance: str) -> None:
    """Log to stderr at INFO, each line as `log_format` ("json" or "text") says.

    A record is made without what no line here shows (the caller's file and line, the thread, the
    process), as the Logging HOWTO's "Optimization" advises: a third of a request line's cost."""
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLines(instance) if log_format == "json" else TextLines(service))
    logging.basicConfig(level=logging.INFO, handlers=[handler])


class _Stamps:
    """`formatTime` as logging writes it (`2026-12-03 09:12:02,803`), the date and time made once a second."""

    _second: tuple[int, str] = (-1, "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - logging's name
        second, stamp = self._second
        if int(record.created) != second:
            second = int(record.created)
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
            self._second = (second, stamp)  # one assignment: another thread reads a pair that goes together
        return f"{stamp},{int(record.msecs):03d}"


def trace_of(record: logging.LogRecord) -> tuple[str | None, str | None]:
    """The trace and span ids a line belongs to: those it was given, else the span running when it was
    logged if its trace is kept."""
    given = getattr(record, "trace_id", None)
    if given is not None:
        return given, None
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid and span_context.trace_flags.sampled:
        return f"{span_context.trace_id:032x}", f"{span_context.span_id:016x}"
    return None, None


class JsonLines(_Stamps, logging.Formatter):
    """BLOG_LOG_FORMAT=json: one JSON object per line, with its trace id (find the trace with
    `blogctl trace TRACE_ID`, its lines with `blogctl logs --trace TRACE_ID`) and its own fields."""

    def __init__(self, instance: str) -> None:
        super().__init__()
        self.instance = instance

    def format(self, record: logging.LogRecord) -> str:
        line = {"time": self.formatTime(record), "service": self.instance, "level": record.levelname,
                "logger": record.name, "message": record.getMessage()}
        trace_id, span_id = trace_of(record)
        if trace_id is not None:
            line["trace_id"] = trace_id
            if span_id is not None:
                line["span_id"] = span_id
        fields = getattr(record, "fields", None)
        if fields:
            line.update(fields)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line).decode()


class TextLines(_Stamps, logging.Formatter):
    """The readable lines: `2026-12-03 09:00:00,123 posts INFO POST /posts 201 3.2 ms trace_id=4bf9...`."""

    def __init__(self, service: str) -> None:
        super().__init__(f"%(asctime)s {service} %(levelname)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        line = super().formatMessage(record)
        trace_id = trace_of(record)[0]
        return f"{line} trace_id={trace_id}" if trace_id is not None else line


def event_lines(what: str, events: Sequence[Event], *, seqs: Sequence[int | None] | None = None,
                detail: str = "", **fields: Any) -> None:
    """A line `what` (published, appended, delivered, applied) for each of `events` whose trace is
    kept, with the event's trace id; `seqs`: their positions in the log when the events do not say."""
    if not events_log.isEnabledFor(logging.INFO):
        return
    for i, event in enumerate(events):
        traceparent = event.traceparent
        if not tracing.sampled(traceparent):
            continue
        seq = seqs[i] if seqs is not None else event.seq
        about = tracing.about(event)
        subject = ", ".join(f"{key[:-3]} {value}" for key, value in about.items())  # post 3555b324, comment ...
        message = f"{what} {event.type} {event.id}" + (f" seq {seq}" if seq is not None else "") + (
            f" {detail}" if detail else "") + (f" ({subject})" if subject else "")
        events_log.info(message, extra={"trace_id": traceparent[3:35], "fields": {
            "event": event.type, "event_id": event.id, **({"seq": seq} if seq is not None else {}), **about,
            **fields}})
