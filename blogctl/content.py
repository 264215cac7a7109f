"""Commands that write and read the blog's content: post and comment (the Posts and Comments services)."""
from __future__ import annotations

from typing import Annotated

import typer
from rich.text import Text

from . import render
from .options import JsonOption
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
