"""`blogctl`: run the blog's services, write to them, and watch the Query view survive a failure.

This module is the command table; the commands live in a module per group: lifecycle.py (up, down,
status, logs, kill, start, restart, wait, reload), content.py (post, comment), events.py (events, redeliver), query.py
(query, open), top.py (top), trace.py (trace), demo.py (demo-failure, demo-moderation) and the bench package (bench/); options.py holds the options they share.
Expected failures (a service down, a 4xx, a bad setting) are caught here, at the edge, and
printed as one line on stderr with exit code 1.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from . import __version__, bench, content, demo, events, lifecycle, query, top, trace
from .errors import BlogctlError
from .render import error
from .runtime import Runtime, Wiring, port_overrides


class BlogctlGroup(TyperGroup):
    """The edge: every sub-command runs inside this `invoke`, so one handler covers them all."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BlogctlError as exc:
            error(str(exc), hint=getattr(exc, "tail", ()))
            raise typer.Exit(1) from None


app = typer.Typer(
    cls=BlogctlGroup,
    help="Run the blog's event-driven services, write posts and comments, and watch the Query view "
    "keep serving while the others are killed.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"blogctl {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    data_dir: Annotated[Path | None, typer.Option(
        "--data-dir", resolve_path=True, file_okay=False,
        help="Where databases, pids and logs live (default: BLOG_DATA_DIR, else .blog in the project).",
    )] = None,
    host: Annotated[str | None, typer.Option(
        "--host", help="Host the services bind and are reached on (default: BLOG_HOST, else 127.0.0.1).",
    )] = None,
    port: Annotated[list[str] | None, typer.Option(
        "--port", metavar="SERVICE=PORT",
        help="Override one service's port, e.g. --port posts=5100 (default: BLOG_<SERVICE>_PORT). Repeatable.",
    )] = None,
    procfile: Annotated[Path | None, typer.Option(
        "--procfile", exists=True, dir_okay=False, resolve_path=True,
        help="The Procfile to run (default: the project's). Services run in its directory.",
    )] = None,
    version: Annotated[bool, typer.Option(
        "--version", callback=_show_version, is_eager=True, help="Show the version and exit.",
    )] = False,
) -> None:
    overrides = port_overrides(port or [])
    if data_dir is not None:
        overrides["BLOG_DATA_DIR"] = str(data_dir)
    if host is not None:
        overrides["BLOG_HOST"] = host
    wiring = ctx.obj if isinstance(ctx.obj, Wiring) else None
    ctx.obj = Runtime(overrides=overrides, procfile=procfile, wiring=wiring)


app.command("up")(lifecycle.up)
app.command("down")(lifecycle.down)
app.command("status")(lifecycle.status)
app.command("logs")(lifecycle.logs)
app.command("kill")(lifecycle.kill)
app.command("start")(lifecycle.start)
app.command("restart")(lifecycle.restart)
app.command("wait")(lifecycle.wait)
app.command("reload")(lifecycle.reload)
app.command("supervise", hidden=True)(lifecycle.supervise)
app.add_typer(content.post_app, name="post")
app.add_typer(content.comment_app, name="comment")
app.command("events")(events.events)
app.command("redeliver")(events.redeliver)
app.command("query")(query.query)
app.command("trace")(trace.trace)
app.command("open")(query.open_page)
app.command("top")(top.top)
app.command("demo-failure")(demo.demo_failure)
app.command("demo-moderation")(demo.demo_moderation)
app.command("bench")(bench.bench)


def main() -> None:
    app(prog_name="blogctl")
