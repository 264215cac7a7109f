"""Traces: one write is one OpenTelemetry trace, through every service it reaches.

Spans are made by hand at a few hook points (no auto-instrumentation: it cost too much):
- `POST /posts`, `POST /posts/{id}/comments`...: an HTTP server span for each write request
  (web.py), continuing an incoming `traceparent` header;
- `publish PostCreated`: the outbox relay's publish of each event (PRODUCER, outbox.py);
- `append PostCreated`: the bus logging it (services/bus/app.py);
- `deliver PostCreated`: each of the bus's deliveries to a subscriber (services/bus/delivery.py);
- `process PostCreated`: each handler's apply (CONSUMER, consumer.py), inside which the events a
  handler emits take the trace on (outbox.add reads the current span).
Each event carries its W3C trace context (`traceparent`) in the envelope, the outbox row, the
bus's log and RabbitMQ's message headers; each hop rewrites it to its own span, so the hops form
one tree.

Cost. A trace is kept or not when it starts (the root decision), and every hop after follows
it: by default a service starts at most BLOG_TRACE_RATE traces a second (a token bucket, like
Jaeger's rate-limiting sampler), so a person's writes are all traced and a benchmark's only a
bounded few. An event whose `traceparent` is absent or not sampled is recognised from its flags
here, before the SDK is touched: no span object is made for it at any hop.

Settings: OTEL_SDK_DISABLED=true turns tracing off (nothing is made, nothing kept);
OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG replace the sampler (the SDK reads them);
OTEL_EXPORTER_OTLP_ENDPOINT sends spans to a collector over OTLP/HTTP; and every service keeps
its recent spans in `<data dir>/traces/<instance>.db` for `blogctl trace` (span_store.py).
Both exports are batched in a background thread, never on the request path.
"""
from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanProcessor
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, Sampler, SamplingResult
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from .events import Event
from .transport import messaging_system

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
NOTHING = nullcontext()


class RateLimited(Sampler):
    """Root decisions by a token bucket: at most `per_second` new traces a second (bursts up to that)."""

    def __init__(self, per_second: float) -> None:
        self.per_second = per_second
        self.capacity = max(1.0, per_second)
        self._tokens = self.capacity if per_second > 0 else 0.0  # 0: no new traces at all
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.per_second)
        self._last = now

    def may_take(self) -> bool:
        """Whether a trace started now would be kept (without taking the token: the sampler does)."""
        with self._lock:
            self._refill()
            return self._tokens >= 1

    def take(self) -> bool:
        with self._lock:
            self._refill()
            if self._tokens >= 1:
                self._tokens -= 1
                return True
            return False

    def should_sample(self, parent_context, trace_id, name, kind=None, attributes=None, links=None,
                      trace_state=None) -> SamplingResult:
        if self.take():
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, trace_state)
        return SamplingResult(Decision.DROP, None, trace_state)

    def get_description(self) -> str:
        return f"RateLimited{{{self.per_second:g}/s}}"


class Tracing:
    """This process's tracer and its root sampler; `active()` is None when tracing is off."""

    def __init__(self, provider: TracerProvider, limiter: RateLimited | None, system: str) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("blogctl")
        self.limiter = limiter  # None when OTEL_TRACES_SAMPLER chose the sampler: the SDK decides every root
        self.system = system

    def may_start(self) -> bool:
        return self.limiter is None or self.limiter.may_take()


_active: Tracing | None = None


def active() -> Tracing | None:
    return _active


def setup(config, instance: str, *, processors: Iterable[SpanProcessor] | None = None) -> Tracing | None:
    """Trace this process as `instance` (`query.2`), unless OTEL_SDK_DISABLED=true. `processors`
    replace the exports (tests hand in an in-memory one)."""
    global _active
    shutdown()
    if not config.tracing:
        return None
    limiter = None
    if config.trace_sampler:
        sampler = None  # the SDK reads OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG itself
    else:
        limiter = RateLimited(config.trace_rate)
        sampler = ParentBased(root=limiter)
    provider = TracerProvider(sampler=sampler, resource=Resource.create({"service.name": instance}),
                              shutdown_on_exit=False)
    for processor in processors if processors is not None else default_processors(config, instance):
        provider.add_span_processor(processor)
    _active = Tracing(provider, limiter, messaging_system(config))
    return _active


def default_processors(config, instance: str) -> list[SpanProcessor]:
    """The local span store, and OTLP/HTTP when a collector is named; each batched in a thread of its own."""
    from .span_store import SpanStore

    exporters: list[SpanExporter] = [SpanStore(config.data_dir / "traces" / f"{instance}.db")]
    if config.otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporters.append(OTLPSpanExporter())  # reads the endpoint, headers and timeout from OTEL_* itself
    return [BatchSpanProcessor(exporter, schedule_delay_millis=500) for exporter in exporters]


def shutdown() -> None:
    """Export what is still queued and stop tracing (at the end of the process, or between tests)."""
    global _active
    if _active is not None:
        _active.provider.shutdown()
        _active = None


# W3C trace context, read and written here without the SDK (the fast path)

def sampled(traceparent: str | None) -> bool:
    """Whether a `traceparent` asks for the trace to be kept: its flags' lowest bit (`...-01`)."""
    return traceparent is not None and len(traceparent) >= 55 and traceparent[-1] in "13579bdf"


def parent_context(traceparent: str, tracestate: str | None = None):
    """The context of the remote span a sampled `traceparent` names (None if it does not parse)."""
    try:
        version, trace_id, span_id, flags = traceparent.split("-")[:4]
        span = SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=True, trace_flags=TraceFlags(int(flags, 16)),
                           trace_state=TraceState.from_header([tracestate]) if tracestate else None)
    except ValueError:
        return None
    if version == "ff" or not span.is_valid:
        return None
    return trace.set_span_in_context(NonRecordingSpan(span))


def traceparent_of(span_context: SpanContext) -> str:
    return f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-{int(span_context.trace_flags):02x}"


def current_traceparent() -> tuple[str | None, str | None]:
    """The running span's trace context (traceparent, tracestate): what an event made now carries."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None, None
    return traceparent_of(span_context), (span_context.trace_state.to_header() or None)


# A not-kept trace's ids only need to be valid (nothing is recorded under them): a random prefix for
# this process and a counter make them in a fraction of the time random ids take.
_UNSAMPLED_PREFIX = f"00-{random.getrandbits(64) | 1 << 63:016x}"
_unsampled = itertools.count(1)


def unsampled_traceparent() -> str:
    """A context that says "decided: not kept", so no hop after decides again."""
    return f"{_UNSAMPLED_PREFIX}{next(_unsampled):016x}-{random.getrandbits(64) | 1:016x}-00"


def trace_headers(event: Event) -> dict[str, str]:
    """An event's trace context as message headers."""
    if event.traceparent is None:
        return {}
    return {TRACEPARENT: event.traceparent, **({TRACESTATE: event.tracestate} if event.tracestate else {})}


def carrying(event: Event, traceparent: str | None, tracestate: str | None = None) -> Event:
    """`event` with this trace context (built directly: `dataclasses.replace` costs twice as much)."""
    return Event(event.type, event.data, event.id, event.source, event.time, event.seq, event.typed,
                 traceparent, tracestate)


def with_current_context(event: Event) -> Event:
    """`event` carrying the running span's trace context (unchanged when there is none)."""
    if _active is None:
        return event
    traceparent, tracestate = current_traceparent()
    if traceparent is None:
        traceparent = _carried.get()  # made while applying an event that is not traced
        if traceparent is None:
            return event
    return carrying(event, traceparent, tracestate)


# The attributes people look spans up by

def event_attributes(event: Event, operation: str, operation_type: str) -> dict[str, Any]:
    attributes = {
        "messaging.system": _active.system if _active else "",
        "messaging.operation.name": operation,
        "messaging.operation.type": operation_type,
        "messaging.destination.name": event.type,
        "messaging.message.id": event.id,
    }
    for key, value in about(event).items():
        attributes[f"blog.{key.replace('_', '.')}"] = value
    return attributes


def about(event: Event) -> dict[str, str]:
    """The post and comment an event is about: {"post_id": ..., "comment_id": ...}, those it names."""
    data = event.data if isinstance(event.data, dict) else {}
    if event.type.startswith("Post") and isinstance(data.get("id"), str):
        return {"post_id": data["id"]}
    found = {}
    if event.type.startswith("Comment"):
        if isinstance(data.get("postId"), str):
            found["post_id"] = data["postId"]
        if isinstance(data.get("id"), str):
            found["comment_id"] = data["id"]
    return found


# The hooks

class _Carrying:
    """While a handler applies an event that is not traced: the events it emits carry the same
    not-kept context, so no later hop starts a trace of its own for them."""

    __slots__ = ("traceparent", "token")

    def __init__(self, traceparent: str) -> None:
        self.traceparent = traceparent

    def __enter__(self) -> None:
        self.token = _carried.set(self.traceparent)

    def __exit__(self, *exc_info) -> None:
        _carried.reset(self.token)


_carried: ContextVar[str | None] = ContextVar("blog_untraced_context", default=None)


def not_kept(traceparent: str | None = None) -> _Carrying:
    """Around work whose trace is not kept (a request that sent an unsampled `traceparent`, or came
    when no new trace may start): what it emits carries that decision, and no span object is made."""
    return _Carrying(traceparent or unsampled_traceparent())


def consuming(event: Event):
    """Around a handler's apply of `event`: a CONSUMER span, current while the handler runs (what it
    emits continues the trace). No span object for an event that is not sampled; an event without
    trace context (the course's bare shape, on a broker) may start a trace here."""
    if _active is None:
        return NOTHING
    traceparent = event.traceparent
    if traceparent is None:
        if not _active.may_start():
            return NOTHING
        parent = otel_context.Context()  # a new trace
    elif not sampled(traceparent):
        return _Carrying(traceparent)
    else:
        parent = parent_context(traceparent, event.tracestate)
        if parent is None:
            return NOTHING
    return _active.tracer.start_as_current_span(
        f"process {event.type}", context=parent, kind=SpanKind.CONSUMER,
        attributes=event_attributes(event, "process", "process"),
    )


@contextmanager
def _spans_for(events: Sequence[Event], operation: str, operation_type: str, kind: SpanKind, *,
               roots: bool = False, stamp=None, extra: dict[str, Any] | None = None) -> Iterator[list[Event]]:
    """A span for each sampled event, each event given its span's context; the spans end when the
    block does (with an error status if it raised). `roots`: an event without trace context may
    start a trace here (the root sampler decides); one not kept gets an unsampled context.
    `stamp(event, traceparent, tracestate)` makes each event handed on (default: `carrying`, and
    an event whose context stays the same is handed on as it is)."""
    tracing = _active
    if tracing is None:
        yield [stamp(e, e.traceparent, e.tracestate) for e in events] if stamp else list(events)
        return
    out: list[Event] = []
    spans = []
    may_start = roots
    for event in events:
        traceparent = event.traceparent
        parent = None
        if traceparent is None and roots:
            if may_start:
                may_start = tracing.may_start()  # once refused, not asked again for the rest of the batch
            if not may_start:
                out.append((stamp or carrying)(event, unsampled_traceparent(), None))
                continue
            parent = otel_context.Context()  # a new trace
        elif sampled(traceparent):
            parent = parent_context(traceparent, event.tracestate)
        if parent is None:
            out.append(stamp(event, traceparent, event.tracestate) if stamp else event)
            continue
        span = tracing.tracer.start_span(f"{operation} {event.type}", context=parent, kind=kind,
                                         attributes={**event_attributes(event, operation, operation_type),
                                                     **(extra or {})})
        span_context = span.get_span_context()
        spans.append(span)
        out.append((stamp or carrying)(event, traceparent_of(span_context),
                                       span_context.trace_state.to_header() or None))
    if not spans:
        yield out
        return
    try:
        yield out
    except BaseException as exc:
        for span in spans:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            span.end()
        raise
    for span in spans:
        span.end()


def publishing(events: Sequence[Event]):
    """Around the outbox relay's publish: a PRODUCER span per sampled event, which the event then names."""
    return _spans_for(events, "publish", "send", SpanKind.PRODUCER,
                      extra={"messaging.batch.message_count": len(events)} if len(events) > 1 else None)


def appending(events: Sequence[Event], stamp):
    """Around the bus logging events (each made by `stamp(event, traceparent, tracestate)`): a span
    per sampled event; an event published without trace context starts a trace here (or is marked
    not kept)."""
    return _spans_for(events, "append", "receive", SpanKind.CONSUMER, roots=True, stamp=stamp)


def delivering(events: Sequence[Event], subscriber: str):
    """Around one delivery to `subscriber`: a PRODUCER span per sampled event."""
    return _spans_for(events, "deliver", "send", SpanKind.PRODUCER,
                      extra={"messaging.consumer.group.name": subscriber})
