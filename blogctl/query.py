"""Commands that read the Query view: query, and open (its page in a browser)."""
from __future__ import annotations

import webbrowser

import typer
from rich.text import Text

from . import render
from .options import JsonOption
from .render import console
from .runtime import runtime


def query(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """The Query service's view: every post with its comments, built from events alone."""
    view = runtime(ctx).client.view()
    if json_output:
        render.print_json(view)
    else:
        console.print(render.view_tree(view))


def open_page(ctx: typer.Context) -> None:
    """Open the blog page (served by Query) in your web browser."""
    rt = runtime(ctx)
    rt.client.health("query")  # a clear error if Query is not running
    url = rt.client.page_url()
    if webbrowser.open(url):
        console.print(Text.assemble("Opened ", (url, "bold"), " in your browser."), soft_wrap=True)
    else:
        console.print(Text.assemble("No browser found here; open ", (url, "bold"), " yourself."), soft_wrap=True)
