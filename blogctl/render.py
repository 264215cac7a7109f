"""How blogctl shows things: Rich tables and trees, JSON for scripts, and user text kept literal.

User text (titles, comments, ids, log lines) only ever reaches the terminal through `text()`:
Rich markup in it is not interpreted, and control characters are shown escaped (`\\x1b`),
never sent to the terminal.
"""
from __future__ import annotations

import json
import time
import unicodedata
from collections.abc import Iterable
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from services.shared import events
from services.shared.transport import Description

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

LOG_COLOURS = ("cyan", "yellow", "green", "magenta", "red", "blue")  # honcho's order


def safe(value: Any) -> str:
    """`value` as a string with every control and format character (ESC, newline, bidi overrides) escaped."""
    out = []
    for ch in str(value):
        if unicodedata.category(ch) in ("Cc", "Cf"):
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def text(value: Any, style: str = "") -> Text:
    return Text(safe(value), style=style)


def print_json(data: Any) -> None:
    """Machine-readable output: JSON and nothing else (no Rich, no colour, no wrapping)."""
    typer.echo(json.dumps(data, ensure_ascii=False, indent=2))


def print_json_line(data: Any) -> None:
    typer.echo(json.dumps(data, ensure_ascii=False))


def error(message: str, *, hint: Iterable[str] = ()) -> None:
    err_console.print(Text.assemble(("error: ", "bold red"), safe(message)), soft_wrap=True)
    for line in hint:
        err_console.print(text(line, "dim"), soft_wrap=True)


def ago(timestamp: str | float | None) -> str:
    if timestamp in (None, ""):
        return "—"
    if isinstance(timestamp, str):
        try:
            timestamp = datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return timestamp
    return f"{duration(time.time() - timestamp)} ago"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = int(max(0, seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"


# Services and subscribers

def services_table(rows: list[dict], title: str = "Services") -> Table:
    table = Table(title=title, title_justify="left")
    restarted = any(row.get("restarts") or row.get("last_exit") for row in rows)
    for column in ("service", "address", "pid", "process", "health", "uptime", *("restarts",) * restarted):
        table.add_column(column, justify="right" if column in ("pid", "uptime") else "left")
    for row in rows:
        healthy = row["healthy"]
        health = Text("ok", "green") if healthy else text(row.get("error") or "unreachable", "red")
        process_style = {"running": "green", "exited": "red"}.get(row["process"], "yellow")
        table.add_row(
            text(row["service"], "bold"), text(row.get("address") or "—"), str(row.get("pid") or "—"),
            text(row["process"], process_style), health, duration(row.get("uptime")),
            *(restarts_cell(row),) * restarted,
        )
    return table


def restarts_cell(row: dict) -> Text:
    """`2 (last: was killed by SIGKILL)`; red once the restart policy gave up."""
    if row.get("gave_up"):
        return text(f"{row.get('restarts', 0)}, gave up: {row['gave_up']}", "red")
    last = f" (last: {row['last_exit']})" if row.get("last_exit") else ""
    return text(f"{row.get('restarts', 0)}{last}", "yellow" if last else "")


def subscribers_table(subscribers: list[dict], title: str = "Bus subscribers") -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("subscriber", "cursor", "lag", "failures", "last delivered", "last error"):
        table.add_column(column, justify="right" if column in ("cursor", "lag", "failures") else "left")
    for sub in subscribers:
        lag = sub.get("lag")
        table.add_row(
            subscriber_name(sub), str(sub.get("cursor", "—")),
            Text(str(lag if lag is not None else "—"), "green" if lag == 0 else "yellow"),
            str(sub.get("failures", 0)), ago(sub.get("last_delivered_at")), last_error(sub),
        )
    return table


def subscriber_name(sub: dict) -> Text:
    """A subscriber's name; for a group (the replicas of a writer), how many members and which one takes its batches."""
    name = text(sub.get("name", "?"), "bold")
    members = sub.get("members") or []
    if len(members) > 1:
        now = urlsplit(sub.get("url") or "").netloc or "?"
        name.append(f" ({len(members)} members, now {now})", "dim")
    return name


def last_error(sub: dict) -> Text:
    """A subscriber's last error: red while it is failing, dim and dated once deliveries succeed again."""
    error = sub.get("last_error")
    if not error:
        return Text("—", "dim")
    if sub.get("failures"):
        return text(error, "red")
    return text(f"recovered; {ago(sub.get('last_error_at'))}: {error}", "dim")


def mode_line(config, carrier: Description) -> Text:
    """Which transport carries events and whether they are signed: what `up` and `status` say."""
    signed = ("signed (BLOG_SECRET set)", "green") if config.secret else ("not signed (no BLOG_SECRET)", "yellow")
    return Text.assemble("Mode: events through ", carrier.name, " at ", safe(carrier.url), "; ", signed)


def queues_table(queues: list[dict], title: str = "Broker queues") -> Table:
    """Each service's queue with the messages waiting in it, and the stream (the event log) with its length."""
    table = Table(title=title, title_justify="left")
    for column in ("queue", "type", "for", "messages", "consumers"):
        table.add_column(column, justify="right" if column in ("messages", "consumers") else "left")
    for queue in queues:
        messages, consumers = queue.get("messages"), queue.get("consumers")
        if not queue.get("exists", True):
            shown = Text("not declared yet", "yellow")
        elif queue.get("type") == "stream":
            over = queue.get("read_over", "").split(" (")[0]
            shown = Text("the log: `blogctl events`" + (f", read over {over}" if over else ""), "dim")
        else:
            shown = Text(str(messages), "green" if messages == 0 else "yellow")
        table.add_row(
            text(queue.get("name", "?"), "bold"), text(queue.get("type", "")),
            text(queue.get("service") or "blogctl events, Query's catch-up"), shown,
            str(consumers) if consumers is not None else "—",
        )
    return table


# A transport's backlog as a table, by what it lists (see `Description.backlog_of`).
BACKLOG_TABLES = {"subscribers": ("Bus subscribers", subscribers_table), "queues": ("Broker queues", queues_table)}


def backlog_title(carrier: Description) -> str:
    return BACKLOG_TABLES[carrier.backlog_of][0]


def backlog_table(carrier: Description, backlog: list[dict], title: str | None = None) -> Table:
    default, table = BACKLOG_TABLES[carrier.backlog_of]
    return table(backlog, title=title or default)


def dead_letters_table(letters: list[dict]) -> Table:
    table = Table(title=f"Dead letters ({len(letters)})", title_justify="left")
    for column in ("subscriber", "seq", "type", "attempts", "parked", "error", "summary"):
        table.add_column(column, justify="right" if column in ("seq", "attempts") else "left")
    for letter in letters:
        event = letter.get("event", {})
        table.add_row(
            text(letter.get("subscriber", "?"), "bold"), str(letter.get("seq", "?")), text(event.get("type", "?")),
            str(letter.get("attempts", "?")), ago(letter.get("parked_at")), text(letter.get("error", ""), "red"),
            text(event_summary(event)),
        )
    return table


# Posts, comments, the view

def posts_table(posts: dict) -> Table:
    table = Table(title=f"Posts ({len(posts)})", title_justify="left")
    table.add_column("id", style="dim")
    table.add_column("title", overflow="fold")  # a long word is wrapped, never cut short
    for post in posts.values():
        table.add_row(text(post.get("id", "")), text(post.get("title", "")))
    return table


STATUS_STYLES = {"approved": "green", "pending": "yellow", "rejected": "red"}  # a comment's moderation


def status_text(comment: dict) -> Text:
    status = comment.get("status")
    return text(status or "—", STATUS_STYLES.get(status, "dim"))


def comments_table(post_id: str, comments: list[dict]) -> Table:
    table = Table(title=Text.assemble("Comments on ", safe(post_id), f" ({len(comments)})"), title_justify="left")
    table.add_column("id", style="dim")
    table.add_column("status")
    table.add_column("content", overflow="fold")
    for comment in comments:
        table.add_row(text(comment.get("id", "")), status_text(comment), text(comment.get("content", "")))
    return table


def view_counts(view: dict) -> tuple[int, int]:
    return len(view), sum(len(post.get("comments", [])) for post in view.values())


def view_tree(view: dict, title: str = "Query view", limit: int | None = None) -> Tree:
    """Post -> its comments, with counts; with `limit`, only the most recent posts are drawn."""
    posts, comments = view_counts(view)
    tree = Tree(Text.assemble((title, "bold"), f": {posts} post{'s' * (posts != 1)}, "
                              f"{comments} comment{'s' * (comments != 1)}"))
    shown = list(view.values())
    if limit is not None and len(shown) > limit:
        earlier = len(shown) - limit
        tree.add(Text(f"… {earlier} earlier post{'s' * (earlier != 1)}", "dim"))
        shown = shown[-limit:]
    for post in shown:
        post_comments = post.get("comments", [])
        branch = tree.add(Text.assemble(
            text(post.get("title", ""), "bold"), ("  " + safe(post.get("id", "")), "dim"),
            (f"  {len(post_comments)} comment{'s' * (len(post_comments) != 1)}", "cyan"),
        ))
        for comment in post_comments:
            branch.add(Text.assemble(
                text(comment.get("content", "")), "  ", status_text(comment),
                ("  " + safe(comment.get("id", "")), "dim"),
            ))
    return tree


# The bus log

def event_summary(event: dict, width: int = 80) -> str:
    data = event.get("data")
    summary = events.summary(event.get("type"), data) or json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    summary = safe(summary)
    return summary if len(summary) <= width else summary[: width - 1] + "…"


def events_table(events: list[dict], title: str = "Event bus log") -> Table:
    table = Table(title=f"{title} ({len(events)} event{'s' * (len(events) != 1)})", title_justify="left")
    table.add_column("seq", justify="right")
    table.add_column("time")
    table.add_column("type", style="bold")
    table.add_column("source")
    table.add_column("summary")
    for event in events:
        table.add_row(*event_cells(event))
    return table


def event_cells(event: dict) -> tuple[Text, ...]:
    return (
        Text(str(event.get("seq", ""))), text(_clock(event.get("time", ""))), text(event.get("type", ""), "bold"),
        text(event.get("source") or "—"), Text(event_summary(event)),
    )


def _clock(timestamp: str) -> str:
    """`2024-05-01T12:00:01.123Z` as `12:00:01.123`: the day rarely matters in a demo's log."""
    date, sep, clock = str(timestamp).partition("T")
    return clock.rstrip("Z") if sep else str(timestamp)


def event_line(event: dict) -> Text:
    """One event as one line, for `events --follow`."""
    return Text(" ").join(event_cells(event))


# Logs

def log_line(name: str, line: str, *, width: int, colour: str, when: datetime | None = None) -> Text:
    """A line in honcho's style: `12:00:01 posts    | message`, coloured by service."""
    prefix = f"{when:%H:%M:%S} " if when else ""
    return Text.assemble((f"{prefix}{name.ljust(width)} | ", colour), safe(line))
