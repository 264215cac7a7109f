"""What every service's Flask app has in common: JSON errors, body parsing, `/events`, serving."""
from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any, TypeVar

import time

import orjson
from flask import Blueprint, Flask, current_app, g, jsonify, request
from pydantic import BaseModel, ValidationError
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from werkzeug.exceptions import HTTPException

from .config import Config
from .db import STORAGE_ERRORS, UNAVAILABLE
from .events import SEQ_MAX, Event, InvalidEvent, describe
from .metrics import STARTED, register_metrics
from .signing import HEADER, SOURCE_HEADER, SignatureError, verify
from . import logs, tracing

M = TypeVar("M", bound=BaseModel)
log = logging.getLogger(__name__)

# Event batches from the bus are larger than anything a person types.
EVENTS_MAX_BYTES = 8 * 1024 * 1024

# Set by the gateway (nginx, blogctl/gateway.py) on every request it passes on.
GATEWAY_HEADER = "X-Blog-Gateway"


class ApiError(Exception):
    """An expected failure with an HTTP status and a message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error(status: int, message: str):
    return jsonify(error=message), status


def create_base_app(name: str, config: Config, import_name: str | None = None) -> Flask:
    """A Flask app that answers every failure with `{"error": ...}` JSON, never an HTML page."""
    app = Flask(import_name or name)
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.config["BLOG"] = config
    app.json.sort_keys = False  # keep creation order in JSON objects
    app.json.ensure_ascii = False
    register_metrics(app, name, config.me(name))

    if tracing.active() is not None:
        trace_writes(app, config, name)
    if config.access_log != "off":
        log_requests(app, every_read=config.access_log == "all")

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError):
        return error(exc.status, exc.message)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        messages = {
            404: f"no such route: {request.method} {request.path}",
            405: f"method {request.method} is not allowed on {request.path}",
            413: f"request body too large (limit {request.max_content_length} bytes)",
        }
        response = error(exc.code or 500, messages.get(exc.code, exc.description))
        allow = dict(exc.get_headers()).get("Allow")
        if allow:  # a 405 says which methods the route does take (RFC 9110)
            response[0].headers["Allow"] = allow
        return response

    def storage_error(exc: Exception):
        reason = " ".join(str(exc).split())  # one line (a server's message may have several)
        log.error("storage failed: %s", reason)
        return error(503, f"{name} storage is unavailable ({reason}); nothing was written, try again later")

    for unavailable in UNAVAILABLE:
        app.register_error_handler(unavailable, storage_error)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unexpected error")
        return error(500, f"internal error in {name}: {type(exc).__name__}")

    return app


QUIET = frozenset({"/health", "/metrics"})  # polled (`blogctl status`, `wait`, `top`, a scraper): not logged
ACKNOWLEDGEMENTS = "/events/cursors/"  # a streaming subscriber's position, every 50 ms under load: not logged either


def log_requests(app: Flask, *, every_read: bool = False) -> None:
    """A line for each request `app` answers, but the polls of `QUIET` (logs.py): method, path, status and
    milliseconds from its WSGI entry, as an access log has; the trace id comes with it, the span being current.
    A read answered 2xx or 3xx gets one only with `every_read`: on Query's cheap reads (a 304, a page) the
    line cost a quarter to a third of the rate (`blogctl bench --only read`, docs/performance.md#log-lines)."""
    clock = time.perf_counter
    access_log = logs.access_log

    @app.after_request
    def logged(response):
        path = request.path
        if path in QUIET or path.startswith(ACKNOWLEDGEMENTS) or not access_log.isEnabledFor(logging.INFO):
            return response
        if not every_read and request.method in UNTRACED_METHODS and response.status_code < 400:
            return response
        started = request.environ.get(STARTED)
        milliseconds = round((clock() - started) * 1000, 1) if started is not None else None
        method, status = request.method, response.status_code
        access_log.info(f"{method} {path} {status} {milliseconds} ms", extra={"fields": {
            "method": method, "path": path, "status": status, "duration_ms": milliseconds}})
        return response


UNTRACED_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def trace_writes(app: Flask, config: Config, service: str) -> None:
    """An HTTP server span for each write request (not reads, not the bus's own `/events` traffic,
    whose events have spans of their own, nor a streaming subscriber's `/events/cursors/...`),
    continuing a `traceparent` the caller sent."""
    port = config.ports.get(config.me(service))

    @app.before_request
    def start_span():
        if request.method in UNTRACED_METHODS or request.path == "/events" or request.path.startswith("/events/"):
            return
        incoming = request.headers.get(tracing.TRACEPARENT)
        parent = tracing.parent_context(incoming, request.headers.get(tracing.TRACESTATE)) if incoming else None
        if parent is None:
            incoming = None  # none sent, or not a trace context: as if none was sent
        if not (tracing.sampled(incoming) if incoming else tracing.active().may_start()):
            # Not kept, decided here as at every hop: no span object, and what the request emits says so.
            g.trace_carrying = carrying = tracing.not_kept(incoming)
            carrying.__enter__()
            return
        route = request.url_rule.rule.replace("<", "{").replace(">", "}") if request.url_rule else None
        attributes = {"http.request.method": request.method, "url.path": request.path, "server.port": port}
        if route:
            attributes["http.route"] = route
        span = tracing.active().tracer.start_span(
            f"{request.method} {route}" if route else request.method, context=parent, kind=SpanKind.SERVER,
            attributes=attributes,
        )
        g.trace_span = span
        g.trace_token = otel_context.attach(trace.set_span_in_context(span))

    @app.after_request
    def record_status(response):
        span = g.get("trace_span")
        if span is not None:
            response.headers[tracing.TRACEPARENT] = tracing.traceparent_of(span.get_span_context())  # the trace to look up
            span.set_attribute("http.response.status_code", response.status_code)
            if response.status_code >= 500:
                span.set_status(Status(StatusCode.ERROR))
        return response

    @app.teardown_request
    def end_span(exc):
        carrying = g.pop("trace_carrying", None)
        if carrying is not None:
            carrying.__exit__(None, None, None)
        span = g.pop("trace_span", None)
        if span is not None:
            span.end()
            otel_context.detach(g.pop("trace_token"))


def json_body() -> Any:
    """The request's JSON body, or a 400 naming what is wrong with it.

    Parsed strictly (orjson): NaN, Infinity, lone surrogates and nesting deeper than 1,024
    are refused, so nothing stored can later fail to encode or be served as invalid JSON.
    """
    if "json_body" not in g:
        if request.mimetype != "application/json":
            # Only a JSON content type makes a browser ask first (CORS preflight): a text/plain or
            # form body would let any web page write here.
            raise ApiError(415, "request body must be JSON sent as Content-Type: application/json, "
                                f"not {request.mimetype or 'no content type'}")
        try:
            g.json_body = orjson.loads(request.get_data(cache=True))
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, f"request body is not valid JSON ({exc})") from None
    return g.json_body


def parse(model: type[M]) -> M:
    """Validate the JSON body against `model`; a 400 with one line per problem otherwise."""
    body = json_body()
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise ApiError(400, describe(exc)) from None


def int_arg(name: str, default: int | None, minimum: int, maximum: int = SEQ_MAX) -> int | None:
    """A whole-number query parameter from `minimum` to `maximum`, or a 400 naming it."""
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"query parameter '{name}' must be a whole number, not {raw!r}") from None
    if not minimum <= value <= maximum:
        raise ApiError(400, f"query parameter '{name}' must be from {minimum} to {maximum}")
    return value


def parse_events() -> list[Event]:
    """`POST /events` takes one event (the course's shape) or a JSON array of them (batched delivery).

    With a secret configured, the body must carry a valid signature (else 401, nothing applied).
    """
    request.max_content_length = EVENTS_MAX_BYTES
    secret = current_app.config["BLOG"].secret
    if secret:
        try:
            verify(secret, request.get_data(cache=True), request.headers.get(HEADER),
                   source=request.headers.get(SOURCE_HEADER))
        except SignatureError as exc:
            raise ApiError(401, f"unauthorised event: {exc}") from None
    body = json_body()
    raw_events = body if isinstance(body, list) else [body]
    try:
        return [Event.from_dict(raw) for raw in raw_events]
    except InvalidEvent as exc:
        raise ApiError(400, f"invalid event: {exc}") from None


def events_blueprint(consume: Callable[[list[Event]], None]) -> Blueprint:
    """The `POST /events` route through which the bus delivers into a service's handlers."""
    bp = Blueprint("events", __name__)

    @bp.post("/events")
    def receive():
        consume(parse_events())
        return jsonify({})

    return bp


def allow_origins(app: Flask, config: Config) -> None:
    """Let the blog page and the course's client (or the origins BLOG_CORS_ORIGINS names) call
    this service from a browser, and no other page."""
    from flask_cors import CORS

    CORS(app, origins=config.cors_origins(), methods=["GET", "POST"], allow_headers=["Content-Type"])


def register_health(app: Flask, service: str, fields: Callable[[], dict]) -> None:
    """`GET /health`: what the service is, whether events are signed, and its own `fields()`.

    It names the service, its pid and its data directory, so a supervisor can tell its own
    process from whatever else answers on the port, even after its pid files are gone.
    """
    started = time.time()
    config = app.config["BLOG"]
    data_dir = os.path.abspath(config.data_dir)

    @app.get("/health")
    def health():
        identity = dict(service=service, instance=config.me(service), pid=os.getpid(), data_dir=data_dir)
        try:
            own = fields()
        except STORAGE_ERRORS as exc:  # still say who answers: its storage is what is wrong
            return jsonify(**identity, status="unavailable", error=f"{service} storage is unavailable ({exc})"), 503
        return jsonify(
            **identity, status="ok", transport=config.transport, signed=bool(config.secret),
            uptime=round(time.time() - started, 1), **own,
        )


# Connections one service holds at once. Waitress reads requests in one event loop and hands
# only complete ones to its threads, so slow or idle clients cost a socket each, not a thread;
# its default limit (100) is what let 300 half-open connections lock every other client out.
CONNECTIONS_MAX = 2000


def serve(app: Flask, service: str, config: Config, *, threads: int = 8) -> None:
    """Serve `app` with waitress, a threaded production WSGI server, in this one process.

    A connection silent for `config.idle_timeout` seconds (idle keep-alive, or a request never
    finished) is closed, checked about every second; one with a request in progress is not.
    """
    from waitress import serve as waitress_serve

    logs.setup(config.log_format, service, config.me(service))
    waitress_serve(
        app, host=config.host, port=config.ports[config.me(service)], threads=threads, ident=config.me(service),
        connection_limit=CONNECTIONS_MAX, asyncore_use_poll=True,  # poll(): no select() limit of 1,024 descriptors
        channel_timeout=config.idle_timeout, cleanup_interval=1,
    )
