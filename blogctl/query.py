"""Commands that read the Query view: query, and open (its page in a browser)."""
from __future__ import annotations

import webbrowser
from typing import Annotated

import typer
from rich.text import Text
from rich.tree import Tree

from . import history, render
from .options import JsonOption
from .render import console, safe, status_text, text
from .runtime import runtime


def query(
    ctx: typer.Context,
    at: Annotated[str | None, typer.Option(
        "--at", metavar="SEQ|TIME",
        help="The view as it was at this point of the log: after event SEQ, or after the events logged by an ISO "
        "TIME (UTC unless it says otherwise), replayed into a throwaway view.")] = None,
    between: Annotated[tuple[str, str] | None, typer.Option(
        "--diff", metavar="A B", help="What changed in the view from point A of the log to point B (SEQ or TIME): "
        "posts and comments added, statuses changed.")] = None,
    json_output: JsonOption = False,
) -> None:
    """The Query service's view: every post with its comments, built from events alone.

    With --at or --diff, the view is rebuilt from the log (on any transport) as it was then.
    """
    rt = runtime(ctx)
    if at is not None and between is not None:
        raise typer.BadParameter("--at and --diff cannot be used together")
    if between is not None:
        _diff(rt, *between, json_output=json_output)
        return
    if at is not None:
        [(seq, view)] = history.views_at(rt.inspection, [history.Position.parse(at)])
        title = f"Query view at seq {seq}"
    else:
        view, title = rt.client.view(), "Query view"
    if json_output:
        render.print_json(view)
    else:
        console.print(render.view_tree(view, title=title))


def _diff(rt, first: str, second: str, *, json_output: bool) -> None:
    (a, before), (b, after) = history.views_at(rt.inspection, [history.Position.parse(first),
                                                                history.Position.parse(second)])
    changes = {"from": a, "to": b, **history.diff(before, after)}
    if json_output:
        render.print_json(changes)
    else:
        console.print(diff_tree(changes))


def open_page(ctx: typer.Context) -> None:
    """Open the blog page (served by Query) in your web browser."""
    rt = runtime(ctx)
    rt.client.health("query")  # a clear error if Query is not running
    url = rt.client.page_url()
    if webbrowser.open(url):
        console.print(Text.assemble("Opened ", (url, "bold"), " in your browser."), soft_wrap=True)
    else:
        console.print(Text.assemble("No browser found here; open ", (url, "bold"), " yourself."), soft_wrap=True)


def diff_tree(changes: dict) -> Tree:
    """`query --diff`: what the events from one position of the log to the other changed in the view."""
    added, comments, statuses = changes["posts_added"], changes["comments_added"], changes["statuses_changed"]
    tree = Tree(Text.assemble((f"Query view from seq {changes['from']} to seq {changes['to']}", "bold"),
                              f": {len(added)} post{'s' * (len(added) != 1)} added, {len(comments)} "
                              f"comment{'s' * (len(comments) != 1)} added, {len(statuses)} status"
                              f"{'es' * (len(statuses) != 1)} changed"))
    for post in added:
        tree.add(Text.assemble(("+ post ", "green"), text(post["title"], "bold"), ("  " + safe(post["id"]), "dim")))
    for comment in comments:
        tree.add(Text.assemble(("+ comment ", "green"), text(comment["content"]), "  ", status_text(comment),
                               ("  on " + safe(comment["post_id"]) + "  " + safe(comment["id"]), "dim")))
    for change in statuses:
        tree.add(Text.assemble(("~ comment ", "yellow"), text(change["content"]), "  ",
                               status_text({"status": change["from"]}), " -> ", status_text({"status": change["to"]}),
                               ("  " + safe(change["id"]), "dim")))
    return tree
