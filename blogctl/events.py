"""Commands that read the event log: events (and its dead letters), redeliver."""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Annotated, TypeVar

import typer

from services.shared.events import Event
from services.shared.transport import Description, Inspection, RedeliveryRefused, TransportError

from . import render
from .errors import BlogctlError
from .options import JsonOption
from .render import console
from .runtime import runtime

T = TypeVar("T")
PAGE = 1000  # events per read of the log


def events(
    ctx: typer.Context,
    event_type: Annotated[str | None, typer.Option("--type", "-t", help="Only events of this type.")] = None,
    after: Annotated[int | None, typer.Option(
        "--after", min=0, help="Only events with a sequence number above this.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", "-n", min=1, help="At most this many events.")] = None,
    last: Annotated[int | None, typer.Option("--last", min=0, help="Only the latest N events.")] = None,
    follow: Annotated[bool, typer.Option(
        "--follow", "-f", help="Keep printing new events until Ctrl-C; from the end of the log unless --after or "
        "--last says otherwise.")] = False,
    dead: Annotated[bool, typer.Option(
        "--dead", help="Show the dead letters instead: events a subscriber kept rejecting, parked by the bus.",
    )] = False,
    subscriber: Annotated[str | None, typer.Option("--subscriber", "-s", help="With --dead: only this subscriber's.")] = None,
    json_output: JsonOption = False,
) -> None:
    """The event log, oldest first, and what still waits for each consumer.

    On the HTTP bus: its log and each subscriber's cursor; on a broker: its log (seq = offset + 1)
    and each consumer's queue depth.
    """
    rt = runtime(ctx)
    if last is not None and limit is not None:
        raise typer.BadParameter("--last and --limit cannot be used together: --limit counts from the oldest")
    carrier = rt.inspection.describe()
    if dead:
        _dead_letters(rt, carrier, subscriber, json_output)
        return
    logged, position = read_events(rt.inspection, after=after or 0, limit=limit, last=last, event_type=event_type)
    if follow and after is None and last is None:
        logged = []  # from the end of the log
    if follow:
        _follow_events(rt.inspection, logged, position, event_type, json_output, what=carrier.log)
        return
    backlog = carried(rt.inspection, rt.inspection.backlog)
    if json_output:
        render.print_json({"events": logged, carrier.backlog_of: backlog})
        return
    console.print(render.events_table(logged, title=f"Events in {carrier.log}"))
    console.print(render.backlog_table(carrier, backlog))


def _dead_letters(rt, carrier: Description, subscriber: str | None, json_output: bool) -> None:
    if not carrier.dead_letters:
        raise BlogctlError(f"there are no dead letters on {carrier.name}: it keeps an event a consumer could not "
                           f"apply for that consumer and retries it (see the {carrier.backlog_of} in `blogctl status`)")
    letters = carried(rt.inspection, lambda: rt.inspection.dead_letters(subscriber))
    if json_output:
        render.print_json(letters)
    elif not letters:
        console.print("No dead letters: every subscriber took every event.")
    else:
        console.print(render.dead_letters_table(letters))
        console.print("Send one again with `blogctl redeliver SUBSCRIBER SEQ`.", markup=False)


def carried(log: Inspection, call: Callable[[], T]) -> T:
    """A call on the transport, its failure as one line for a person."""
    try:
        return call()
    except TransportError as exc:
        raise _unreachable(log, exc) from None
    except (LookupError, RedeliveryRefused) as exc:  # the transport's answer: no such thing, or refused again
        raise BlogctlError(str(exc.args[0] if exc.args else exc)) from None


def log_pages(log: Inspection, after: int = 0, page: int | None = None) -> Iterator[list[Event]]:
    """The log after `after`, page by page (`Inspection.iter_log`), a failure as one line for a person."""
    try:
        yield from log.iter_log(after=after, page=page or PAGE)
    except TransportError as exc:
        raise _unreachable(log, exc) from None


def _unreachable(log: Inspection, exc: TransportError) -> BlogctlError:
    carrier = log.describe()
    hint = "is it running? try `blogctl up`" if carrier.process else f"is {carrier.name} running?"
    return BlogctlError(f"{exc} — {hint}")


def read_events(log: Inspection, *, after: int = 0, limit: int | None = None, last: int | None = None,
                event_type: str | None = None) -> tuple[list[dict], int]:
    """The log after `after`, oldest first, read a page at a time: at most `limit` events of
    `event_type`, or only the latest `last` of them (kept as they come: memory stays bounded);
    and the position read up to."""
    found: deque[dict] | list[dict] = deque(maxlen=last) if last is not None else []
    for page in log_pages(log, after):
        found.extend(event.to_dict() for event in page if event_type is None or event.type == event_type)
        after = page[-1].seq
        if limit is not None and len(found) >= limit:
            break
    found = list(found)
    if limit is not None and len(found) > limit:
        found = found[:limit]
        after = found[-1]["seq"]
    return found, after


def _follow_events(log: Inspection, logged: list[dict], after: int, event_type: str | None, json_output: bool,
                   what: str) -> None:
    def show(event: dict) -> None:
        if json_output:
            render.print_json_line(event)
        else:
            console.print(render.event_line(event), soft_wrap=True)

    if not json_output:
        console.print(f"Following {what}; press Ctrl-C to stop.", style="dim")
    position = after
    try:
        while True:  # until Ctrl-C, like `tail -f`
            for event in logged:
                show(event)
            time.sleep(0.5)
            logged, position = read_events(log, after=position, event_type=event_type)
    except KeyboardInterrupt:
        pass


def redeliver(
    ctx: typer.Context,
    subscriber: Annotated[str, typer.Argument(help="The subscriber the event was parked for (see `events --dead`).")],
    seq: Annotated[int, typer.Argument(min=1, help="The event's sequence number in the log.")],
    json_output: JsonOption = False,
) -> None:
    """Send a dead letter to its subscriber again; it leaves the dead letters only if taken."""
    inspection = runtime(ctx).inspection
    carried(inspection, lambda: inspection.redeliver(subscriber, seq))
    if json_output:
        render.print_json({"status": "OK", "subscriber": subscriber, "seq": seq})
    else:
        console.print(render.text(f"{subscriber} took event {seq}; it is no longer a dead letter"))
