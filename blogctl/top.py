"""`blogctl top`: the formation live, refreshed every second, from what the services say of themselves.

Every figure comes from a service's `GET /metrics` (and `GET /health`: is it well, its pid); a
rate is the difference between two successive scrapes over the time between them. What waits on
a broker's queues and the latest events come from the transport's inspection seam. A process
that does not answer is shown as down.

`--once` takes two scrapes a second apart and prints one frame (`--json`: the same figures).
Live, `q` or Ctrl-C quits; keys are read in cbreak mode only when stdin is a terminal, and the
terminal's settings are put back on the way out.
"""
from __future__ import annotations

import os
import select
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Annotated, Any

import typer
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from services.shared.config import service_of
from services.shared.transport import TransportError
from services.table import spec

from . import render
from .client import BlogClient, ServiceError
from .options import JsonOption
from .render import console, duration, text
from .runtime import Runtime, runtime

INTERVAL = 1.0  # seconds between frames
LATEST = 8  # events shown
UNCOUNTED = frozenset({"/metrics", "/health"})  # what top itself asks: not the formation's traffic


class Samples:
    """One scrape of `/metrics`: each sample's value by name and labels."""

    def __init__(self, exposition: str) -> None:
        self.by_name: dict[str, list[tuple[dict[str, str], float]]] = {}
        for family in text_string_to_metric_families(exposition):
            for name in (family.name, f"{family.name}_total"):  # declared, if nothing counted yet: zero
                self.by_name.setdefault(name, [])
            for sample in family.samples:
                self.by_name.setdefault(sample.name, []).append((sample.labels, sample.value))

    def total(self, name: str, skip: Callable[[dict], bool] = lambda labels: False) -> float | None:
        """The sum of `name`'s samples (those `skip` does not leave out); None when the service has no such metric."""
        if name not in self.by_name:
            return None
        return sum(value for labels, value in self.by_name[name] if not skip(labels))

    def by(self, name: str, label: str) -> dict[str, float]:
        """`name`'s samples summed by the value of `label`."""
        out: dict[str, float] = {}
        for labels, value in self.by_name.get(name, ()):
            out[labels.get(label, "")] = out.get(labels.get(label, ""), 0.0) + value
        return out


@dataclass(frozen=True)
class Scrape:
    """What one process said at one moment: its health and its metrics, or why it did not answer."""

    name: str
    at: float  # time.monotonic() when read
    health: dict | None = None
    samples: Samples | None = None
    error: str | None = None

    @property
    def pid(self) -> int | None:
        return self.health.get("pid") if self.health else None


def scrape(client: BlogClient, name: str, clock: Callable[[], float] = time.monotonic) -> Scrape:
    at = clock()
    try:
        health = client.health(name)
    except ServiceError as exc:
        if exc.body is None:  # nothing of ours answers there
            return Scrape(name, at, error=str(exc))
        health = exc.body  # it answers, but is not well (its storage, say): its metrics still are
    try:
        samples = Samples(client.metrics(name))
    except (ServiceError, ValueError) as exc:
        return Scrape(name, at, health=health, error=f"no metrics: {exc}")
    return Scrape(name, at, health=health, samples=samples)


def not_counted(labels: dict) -> bool:
    return labels.get("route") in UNCOUNTED


def rate(before: Scrape | None, now: Scrape, name: str, skip: Callable[[dict], bool] = lambda labels: False,
         ) -> float | None:
    """How fast counter `name` moved per second between two scrapes of the same process; None when
    either lacks it, or the process was restarted in between (its counters started again)."""
    if before is None or before.samples is None or now.samples is None or before.pid != now.pid:
        return None
    then, current = before.samples.total(name, skip), now.samples.total(name, skip)
    elapsed = now.at - before.at
    if current is None or elapsed <= 0:
        return None
    then = then or 0.0  # a labelled counter has no sample before its first count
    return (current - then) / elapsed if current >= then else None


def rates_by(before: Scrape | None, now: Scrape, name: str, label: str) -> dict[str, float | None]:
    """Per value of `label`, how fast counter `name` moved per second."""
    if now.samples is None:
        return {}
    current = now.samples.by(name, label)
    if before is None or before.samples is None or before.pid != now.pid or now.at <= before.at:
        return {key: None for key in current}
    then = before.samples.by(name, label)
    elapsed = now.at - before.at
    return {key: (value - then.get(key, 0.0)) / elapsed if value >= then.get(key, 0.0) else None
            for key, value in current.items()}


def service_row(before: Scrape | None, now: Scrape) -> dict[str, Any]:
    """One process's line: what it is, how it is, and how fast it works."""
    row: dict[str, Any] = dict(name=now.name, health="down", pid=None, uptime=None, memory_mib=None, cpu_percent=None,
                               requests_per_s=None, published_per_s=None, applied_per_s=None, outbox_pending=None,
                               error=now.error)
    if now.health is not None:
        row.update(health=now.health.get("status", "ok"), pid=now.pid, uptime=now.health.get("uptime"))
        if now.health.get("error"):
            row["error"] = now.health["error"]
    if now.samples is None:
        return row
    memory = now.samples.total("process_resident_memory_bytes")
    cpu = rate(before, now, "process_cpu_seconds_total")
    pending = now.samples.total("blog_outbox_pending")
    row.update(
        memory_mib=round(memory / 2**20, 1) if memory is not None else None,
        cpu_percent=round(cpu * 100, 1) if cpu is not None else None,
        requests_per_s=_round(rate(before, now, "blog_http_requests_total", not_counted)),
        published_per_s=_round(rate(before, now, "blog_events_published_total")),
        applied_per_s=_round(rate(before, now, "blog_events_applied_total")),
        outbox_pending=int(pending) if pending is not None else None,
    )
    return row


@dataclass(frozen=True)
class Backlog:
    """What the transport said waits for each consumer (`Inspection.backlog`), and when it said it."""

    at: float  # time.monotonic() when read
    entries: list[dict]

    def by_consumer(self) -> dict[str, dict]:
        """Each entry by the consumer it is for; the log itself (a broker's stream: no consumer) left out."""
        found = {}
        for entry in self.entries:
            name = entry.get("service") if "service" in entry else entry.get("name")
            if name:
                found[name] = entry
        return found


def consumer_rows(before: dict[str, Scrape], now: dict[str, Scrape], backlog: Backlog | None,
                  earlier: Backlog | None = None) -> list[dict]:
    """Each consumer: what waits for it, its failures and dead letters (as the transport's backlog
    says them: a field it does not keep is None), how fast events reach it (its `delivered` count
    between two backlogs, where the transport keeps one) and how fast it applies them (its own metrics)."""
    rows = []
    delivered_before = earlier.by_consumer() if earlier else {}
    for name, entry in (backlog.by_consumer() if backlog else {}).items():
        row = dict(name=name, delivered_per_s=_round(_delivered_rate(delivered_before.get(name), entry, earlier, backlog)),
                   waiting=entry.get("waiting"), failures=entry.get("failures"), dead_letters=entry.get("dead_letters"))
        scraped = now.get(name)
        row["applied_per_s"] = _round(rate(before.get(name), scraped, "blog_events_applied_total")) if scraped else None
        rows.append(row)
    return rows


def _delivered_rate(then: dict | None, entry: dict, earlier: Backlog | None, backlog: Backlog) -> float | None:
    """Events taken per second between two backlogs; None without a count, or across a reset."""
    if then is None or earlier is None or backlog.at <= earlier.at:
        return None
    before, after = then.get("delivered"), entry.get("delivered")
    if before is None or after is None or after < before:
        return None
    return (after - before) / (backlog.at - earlier.at)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


@dataclass
class Watcher:
    """Takes the formation's pulse: scrapes every process, keeps the previous scrape for the rates,
    and reads the log from where it last read (the latest events)."""

    rt: Runtime
    clock: Callable[[], float] = time.monotonic
    previous: dict[str, Scrape] = field(default_factory=dict)
    backlog: Backlog | None = None  # the transport's previous answer, for the delivery rates
    latest: list[dict] = field(default_factory=list)
    position: int | None = None  # the log read up to here

    def names(self) -> list[str]:
        """Every process of the formation (replicas too); the bus only when the transport is the bus."""
        carrier = self.rt.inspection.describe()
        return [name for name in self.rt.config.instances
                if not spec(service_of(name)).bus or service_of(name) == carrier.process]

    def scrape_all(self) -> dict[str, Scrape]:
        return {name: scrape(self.rt.client, name, self.clock) for name in self.names()}

    def frame(self) -> dict[str, Any]:
        carrier = self.rt.inspection.describe()
        if self.position is None:  # the first: read up to the log's end before the scrape the rates start from
            self.backlog = self._transport(self.scrape_all())[0]
        now = self.scrape_all()
        backlog, problem = self._transport(now)
        frame = {
            "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "interval": _round(_interval(self.previous, now)),
            "transport": {"kind": carrier.kind, "name": carrier.name, "url": carrier.url, "log": carrier.log,
                          "error": problem},
            "services": [service_row(self.previous.get(name), scraped) for name, scraped in now.items()],
            "consumers": consumer_rows(self.previous, now, backlog, self.backlog),
            "events": list(self.latest),
        }
        self.previous, self.backlog = now, backlog or self.backlog
        return frame

    def _transport(self, now: dict[str, Scrape]) -> tuple[Backlog | None, str | None]:
        """What waits for each consumer and the newest events, or why the transport did not say.

        The log is read only when it grew, where the processes' metrics say where it ends: an idle
        formation shows no traffic of top's making.
        """
        end, said = _log_end(now)
        try:
            backlog = Backlog(self.clock(), self.rt.inspection.backlog())
            if self.position is None or not said or end > self.position:
                self._read_log(now)
        except TransportError as exc:
            return None, str(exc)
        return backlog, None

    def _read_log(self, now: dict[str, Scrape]) -> None:
        """The newest events: from just before the log's end the first time, then what came since."""
        if self.position is not None:
            self._read_on()
            return
        self.position = max(0, _log_end(now)[0] - LATEST)
        if not self._read_on() and self.position:
            # A consumer's position past this log's end (its data directory kept from another log): read it all.
            self.position = 0
            self._read_on()

    def _read_on(self) -> int:
        """Read the log after `position` to its end, keeping the latest events; how many were read."""
        read = 0
        for page in self.rt.inspection.iter_log(after=self.position):
            self.position = page[-1].seq
            self.latest = (self.latest + [event.to_dict() for event in page])[-LATEST:]
            read += len(page)
        return read


def _log_end(now: dict[str, Scrape]) -> tuple[int, bool]:
    """Where the log ends, as the processes know it (the transport's last seq, else the furthest a
    consumer applied), and whether a process said it (`blog_bus_last_seq`) rather than only hinted it."""
    ends, said = [0], False
    for scraped in now.values():
        if scraped.samples is not None and (last := scraped.samples.total("blog_bus_last_seq")) is not None:
            ends.append(int(last))
            said = True
        if scraped.health and isinstance(scraped.health.get("applied_seq"), int):
            ends.append(scraped.health["applied_seq"])
    return max(ends), said


def _interval(before: dict[str, Scrape], now: dict[str, Scrape]) -> float | None:
    gaps = [now[name].at - before[name].at for name in now if name in before]
    return sum(gaps) / len(gaps) if gaps else None


# Rendering

def _number(value: Any, unit: str = "", style_zero: str = "dim") -> Text:
    if value is None:
        return Text("—", "dim")
    shown = f"{value:,.1f}" if isinstance(value, float) else f"{value:,}"
    return Text(shown + unit, style_zero if not value else "")


def frame_view(frame: dict[str, Any]) -> Group:
    """One frame as Rich renderables: services, consumers, latest events."""
    services = Table(title=f"Services at {frame['at']}", title_justify="left")
    for column in ("service", "health", "pid", "uptime", "memory", "CPU", "req/s", "published/s", "applied/s",
                   "outbox"):
        services.add_column(column, justify="left" if column in ("service", "health") else "right")
    for row in frame["services"]:
        health = row["health"]
        health_text = Text(health, {"ok": "green", "down": "red"}.get(health, "yellow"))
        services.add_row(
            text(row["name"], "bold"), health_text, Text(str(row["pid"] or "—")), Text(duration(row["uptime"])),
            _number(row["memory_mib"], " MiB"), _number(row["cpu_percent"], "%"), _number(row["requests_per_s"]),
            _number(row["published_per_s"]), _number(row["applied_per_s"]),
            _number(row["outbox_pending"], style_zero="green"),
        )
    transport = frame["transport"]
    consumers = Table(title=f"Consumers ({transport['name']})", title_justify="left")
    for column in ("consumer", "delivered/s", "applied/s", "waiting", "failures", "dead letters"):
        consumers.add_column(column, justify="left" if column == "consumer" else "right")
    for row in frame["consumers"]:
        consumers.add_row(
            text(row["name"], "bold"), _number(row["delivered_per_s"]), _number(row["applied_per_s"]),
            _number(row["waiting"], style_zero="green"), _number(row["failures"]), _number(row["dead_letters"]),
        )
    latest = render.events_table(frame["events"], title=f"Latest in {transport['log']}")
    parts: list[Any] = [services, consumers, latest]
    if transport.get("error"):
        parts.append(text(f"{transport['name']}: {transport['error']}", "yellow"))
    down = [row for row in frame["services"] if row["health"] != "ok" and row.get("error")]
    parts.extend(text(f"{row['name']}: {row['error']}", "red" if row["health"] == "down" else "yellow")
                 for row in down)
    return Group(*parts)


# Keys

@contextmanager
def keys() -> Iterator[Callable[[float], str | None]]:
    """`wait(seconds)`: the key pressed within `seconds`, or None. Cbreak mode while inside, when stdin
    is a terminal (no echo, no Enter needed; Ctrl-C still interrupts); settings restored on leaving."""
    if not sys.stdin.isatty():
        yield lambda seconds: time.sleep(seconds)
        return
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)

    def wait(seconds: float) -> str | None:
        ready, _, _ = select.select([fd], [], [], seconds)
        return os.read(fd, 32).decode(errors="replace") if ready else None

    try:
        yield wait
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def top(
    ctx: typer.Context,
    once: Annotated[bool, typer.Option("--once", help="Print one frame (two scrapes a second apart) and exit.")] = False,
    json_output: JsonOption = False,
) -> None:
    """The formation live: each service's health, memory, CPU and rates, each consumer's backlog, the latest events.

    Refreshed every second from the services' /metrics; q or Ctrl-C quits. --json prints one frame's figures.
    """
    watcher = Watcher(runtime(ctx))
    if once or json_output:
        watcher.frame()
        time.sleep(INTERVAL)
        frame = watcher.frame()
        if json_output:
            render.print_json(frame)
        else:
            console.print(frame_view(frame))
        return
    try:
        with keys() as wait, Live(frame_view(watcher.frame()), console=console, auto_refresh=False,
                                  screen=False) as live:
            shown = time.monotonic()
            while True:
                pressed = wait(max(0.0, INTERVAL - (time.monotonic() - shown)))  # a frame a second, however long one takes
                if pressed and "q" in pressed.lower():
                    return
                shown = time.monotonic()
                live.update(frame_view(watcher.frame()), refresh=True)
    except KeyboardInterrupt:
        return
