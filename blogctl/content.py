"""Commands that write and read the blog: post, comment, events, query."""
from __future__ import annotations

import time
from collections import deque
from typing import Annotated

import typer
from rich.text import Text

from . import render
from .errors import BlogctlError
from .lifecycle import JsonOption
from .render import console, safe
from .runtime import runtime

post_app = typer.Typer(help="Create and list posts (the Posts service).", no_args_is_help=True)
comment_app = typer.Typer(help="Create and list comments (the Comments service).", no_args_is_help=True)


@post_app.command("create")
def create_post(
    ctx: typer.Context,
    title: Annotated[str, typer.Argument(help="The post's title, stored exactly as given.")],
    json_output: JsonOption = False,
) -> None:
    """Create a post; Posts announces it to the other services with a PostCreated event."""
    post = runtime(ctx).client.create_post(title)
    if json_output:
        render.print_json(post)
        return
    console.print(Text.assemble("Created post ", (safe(post["id"]), "bold"), ": ", safe(post["title"])),
                  soft_wrap=True)


@post_app.command("list")
def list_posts(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """List the posts the Posts service holds."""
    posts = runtime(ctx).client.posts()
    if json_output:
        render.print_json(posts)
    else:
        console.print(render.posts_table(posts))


@comment_app.command("create")
def create_comment(
    ctx: typer.Context,
    post_id: Annotated[str, typer.Argument(help="The post to comment on (see `blogctl post list`).")],
    content: Annotated[str, typer.Argument(help="The comment, stored exactly as given.")],
    wait: Annotated[float, typer.Option(
        "--wait", min=0, help="Seconds to keep retrying while Comments has not yet heard of a new post.",
    )] = 5.0,
    json_output: JsonOption = False,
) -> None:
    """Comment on a post. Comments learns of posts from events, so a brand-new post may take a moment."""
    comments = runtime(ctx).client.create_comment(post_id, content, wait=wait)
    if json_output:
        render.print_json(comments)
        return
    new = comments[-1] if comments else {"id": "?"}
    console.print(Text.assemble(
        "Added comment ", (safe(new["id"]), "bold"), " to post ", safe(post_id),
        f"; it has {len(comments)} comment{'s' * (len(comments) != 1)}",
    ), soft_wrap=True)


@comment_app.command("list")
def list_comments(
    ctx: typer.Context,
    post_id: Annotated[str, typer.Argument(help="The post whose comments to list.")],
    json_output: JsonOption = False,
) -> None:
    """List a post's comments as the Comments service holds them."""
    comments = runtime(ctx).client.comments(post_id)
    if json_output:
        render.print_json(comments)
    else:
        console.print(render.comments_table(post_id, comments))


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
    """The event log, oldest first, and how far each subscriber has read it.

    On RabbitMQ: the stream every event goes to (seq = its offset + 1), and each service's queue depth.
    """
    rt = runtime(ctx)
    if last is not None and limit is not None:
        raise typer.BadParameter("--last and --limit cannot be used together: --limit counts from the oldest")
    if rt.config.transport == "rabbitmq":
        _broker_events(rt, event_type, after, limit, last, follow, dead, json_output)
        return
    client = rt.client
    if dead:
        letters = client.dead_letters(subscriber)
        if json_output:
            render.print_json(letters)
        elif not letters:
            console.print("No dead letters: every subscriber took every event.")
        else:
            console.print(render.dead_letters_table(letters))
            console.print("Send one again with `blogctl redeliver SUBSCRIBER SEQ`.", markup=False)
        return
    logged, after = _read(client, after, limit, last, follow, event_type)
    if follow:
        _follow_events(client, logged, after, event_type, json_output)
        return
    subscribers = client.subscribers()
    if json_output:
        render.print_json({"events": logged, "subscribers": subscribers})
        return
    console.print(render.events_table(logged))
    console.print(render.subscribers_table(subscribers, title="Subscriber cursors"))


# Events read a page at a time when only the latest are wanted, so memory stays bounded.
PAGE = 5000


def _read(source, after: int | None, limit: int | None, last: int | None, follow: bool,
          event_type: str | None) -> tuple[list[dict], int]:
    """The events to show first, and the position to follow from: with `last` (or `--follow` alone,
    which starts at the end) the log is read to its end, keeping only the latest `last`."""
    if last is None and not (follow and after is None):
        logged = source.events(after=after or 0, limit=limit, event_type=event_type)
        return logged, after or 0
    kept: deque[dict] = deque(maxlen=last or 0)
    position = after or 0
    while True:
        page = source.events(after=position, limit=PAGE, event_type=event_type)
        kept.extend(page)
        if page:
            position = page[-1]["seq"]
        if len(page) < PAGE:
            return list(kept), position


def _broker_events(rt, event_type: str | None, after: int | None, limit: int | None, last: int | None, follow: bool,
                   dead: bool, json_output: bool) -> None:
    if dead:
        raise BlogctlError("there are no dead letters on RabbitMQ: a service's queue keeps an event it could "
                           "not apply and retries it (see the queue depths in `blogctl status`)")
    broker = rt.broker
    logged, after = _read(broker, after, limit, last, follow, event_type)
    if follow:
        _follow_events(broker, logged, after, event_type, json_output, what="the RabbitMQ stream")
        return
    queues = broker.queues()
    if json_output:
        render.print_json({"events": logged, "queues": queues})
        return
    console.print(render.events_table(logged, title=f"Event stream {rt.config.broker_namespace}.log"))
    console.print(render.queues_table(queues, title="Queues"))


def _follow_events(client, logged: list[dict], after: int, event_type: str | None, json_output: bool,
                   what: str = "the bus log") -> None:
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
                position = max(position, event.get("seq", position))
            time.sleep(0.5)
            logged = client.events(after=position, event_type=event_type)
    except KeyboardInterrupt:
        pass


def redeliver(
    ctx: typer.Context,
    subscriber: Annotated[str, typer.Argument(help="The subscriber the event was parked for (see `events --dead`).")],
    seq: Annotated[int, typer.Argument(min=1, help="The event's sequence number in the log.")],
    json_output: JsonOption = False,
) -> None:
    """Send a dead letter to its subscriber again; it leaves the dead letters only if taken."""
    answer = runtime(ctx).client.redeliver(subscriber, seq)
    if json_output:
        render.print_json(answer)
    else:
        console.print(render.text(f"{subscriber} took event {seq}; it is no longer a dead letter"))


def query(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """The Query service's view: every post with its comments, built from events alone."""
    view = runtime(ctx).client.view()
    if json_output:
        render.print_json(view)
    else:
        console.print(render.view_tree(view))
