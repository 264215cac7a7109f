"""`blogctl demo-failure`: the seed's lesson, narrated against the running system.

Query keeps its own copy of every post and comment, built from events. Kill the services
that own the writes and the view still serves everything; writes fail until they return.
"""
from __future__ import annotations

import secrets
import signal
from collections.abc import Callable
from typing import Annotated

import typer
from rich.text import Text

from . import render
from .client import ServiceError
from .errors import BlogctlError
from .polling import wait_for
from .render import console, safe
from .runtime import Runtime, runtime
from .steps import bring_up

WRITERS = ("posts", "comments")


class StepFailed(Exception):
    pass


class FailureDemo:
    def __init__(self, rt: Runtime, *, wait: float = 10.0) -> None:
        self.rt = rt
        self.client = rt.client
        self.formation = rt.formation
        self.wait = wait
        self.tag = secrets.token_hex(2)
        self.before_kill: dict = {}

    def run(self) -> bool:
        initially_running = {s.name for s in self.formation.states() if s.running}
        steps: list[tuple[str, Callable[[], str]]] = [
            ("Make sure every service is running", self.ensure_up),
            ("Write a post and two comments", self.write),
            ("Read them back from the Query view", self.read_view),
            ("Really kill Posts and Comments", self.kill_writers),
            ("Query still serves every post and comment", self.query_survives),
            ("Creating a post now fails, with a clear message", self.writes_fail),
            ("Bring Posts and Comments back", self.restart_writers),
            ("New writes flow and the view catches up", self.writes_flow),
        ]
        failed: tuple[int, str, str] | None = None
        try:
            for number, (title, step) in enumerate(steps, 1):
                console.print(Text(f"{number}. {title}", "bold"))
                try:
                    detail = step()
                except (BlogctlError, StepFailed) as exc:
                    console.print(Text.assemble(("   ✗ ", "bold red"), safe(exc)))
                    failed = (number, title, str(exc))
                    break
                console.print(Text.assemble(("   ✓ ", "bold green"), detail))
        finally:
            restored = self.restore(initially_running)
        return self.verdict(failed, restored)

    # The steps: each returns what it saw, or raises StepFailed/BlogctlError saying what did not hold.

    def ensure_up(self) -> str:
        missing = [s.name for s in self.formation.states() if not s.running]
        if not missing:
            return "all services were already running"
        bring_up(self.rt, missing)
        return f"started {', '.join(missing)}; each answers /health"

    def write(self) -> str:
        self.post = self.client.create_post(f"demo {self.tag}: a post written before the failure")
        for content in ("a first comment", "a second comment"):
            self.comments = self.client.create_comment(self.post["id"], f"{content} ({self.tag})", wait=self.wait)
        return f"post {safe(self.post['id'])} with {len(self.comments)} comments"

    def read_view(self) -> str:
        def shows_everything() -> dict | None:
            view = self.client.view()
            post = view.get(self.post["id"])
            return view if post and len(post["comments"]) == len(self.comments) else None

        view = wait_for(shows_everything, timeout=self.wait)
        if not view:
            raise StepFailed(f"the view did not show the post and its comments within {self.wait:g}s")
        self.before_kill = view
        console.print(render.view_tree(view, limit=3), soft_wrap=True)
        posts, comments = render.view_counts(view)
        return f"the view holds {posts} posts and {comments} comments"

    def kill_writers(self) -> str:
        killed = []
        for name in WRITERS:
            before = self.formation.stop(name, signal.SIGKILL)
            if self.formation.state(name).running or self.rt.is_healthy(name):
                raise StepFailed(f"{name} is still answering after SIGKILL")
            killed.append(f"{name} (pid {before.pid})" if before.running else f"{name} (was not running)")
        return f"killed {' and '.join(killed)} with SIGKILL; neither process exists, nothing answers their ports"

    def query_survives(self) -> str:
        view = self.client.view()
        missing_posts = [pid for pid in self.before_kill if pid not in view]
        missing_comments = [
            c["id"] for pid, post in self.before_kill.items()
            for c in post["comments"] if c not in view.get(pid, {}).get("comments", [])
        ]
        if missing_posts or missing_comments:
            raise StepFailed(f"the view lost {len(missing_posts)} posts and {len(missing_comments)} comments")
        console.print(render.view_tree(view, limit=3), soft_wrap=True)
        posts, comments = render.view_counts(self.before_kill)
        return f"Query served all {posts} posts and {comments} comments from its own copy"

    def writes_fail(self) -> str:
        try:
            self.client.create_post(f"demo {self.tag}: written while Posts is dead")
        except ServiceError as exc:
            return f"refused: {safe(exc)}"
        raise StepFailed("Posts accepted a write although it was killed")

    def restart_writers(self) -> str:
        bring_up(self.rt, list(WRITERS))
        pids = ", ".join(f"{s.name} (pid {s.pid})" for s in map(self.formation.state, WRITERS))
        return f"{pids} answer /health again"

    def writes_flow(self) -> str:
        post = self.client.create_post(f"demo {self.tag}: a post written after recovery")
        self.client.create_comment(post["id"], f"a comment after recovery ({self.tag})", wait=self.wait)

        def caught_up() -> dict | None:
            view = self.client.view()
            ok = view.get(post["id"], {}).get("comments") and all(pid in view for pid in self.before_kill)
            return view if ok else None

        view = wait_for(caught_up, timeout=self.wait)
        if not view:
            raise StepFailed(f"the view did not show the new post and comment within {self.wait:g}s")
        posts, comments = render.view_counts(view)
        return f"post {safe(post['id'])} and its comment reached the view: {posts} posts, {comments} comments"

    # Leaving things as we found them

    def restore(self, initially_running: set[str]) -> bool:
        changes, ok = [], True
        try:
            to_start = [s.name for s in self.formation.states() if s.name in initially_running and not s.running]
            if to_start:
                bring_up(self.rt, to_start)
                changes.append(f"restarted {', '.join(to_start)}")
            for state in self.formation.states():
                if state.running and state.name not in initially_running:
                    self.formation.stop(state.name)
                    changes.append(f"stopped {state.name}")
        except BlogctlError as exc:
            console.print(Text.assemble(("✗ could not restore the formation: ", "bold red"), safe(exc)))
            ok = False
        if changes:
            console.print(Text("Left the formation as it was: " + "; ".join(changes) + ".", "dim"))
        return ok

    def verdict(self, failed: tuple[int, str, str] | None, restored: bool) -> bool:
        if failed is None and restored:
            console.print(Text.assemble(
                ("Verdict: every step held. ", "bold green"),
                "With Posts and Comments dead, Query kept serving every post and comment from the copy it "
                "built from events; writes failed clearly; once they were back, new writes flowed through.",
            ))
            return True
        reason = f"step {failed[0]} ({failed[1]}) did not hold" if failed else "the formation was not restored"
        console.print(Text.assemble(("Verdict: FAILED — ", "bold red"), reason))
        return False


def demo_failure(
    ctx: typer.Context,
    wait: Annotated[float, typer.Option("--wait", min=1, help="Seconds to wait for each asynchronous step.")] = 10.0,
) -> None:
    """Narrate the lesson: kill Posts and Comments, watch Query keep serving, bring them back.

    Starts the services if needed and leaves them as it found them. Exit code 0 only if every step held.
    """
    rt = runtime(ctx)
    with rt.exclusive("demo-failure"):  # it kills and starts services: no other blogctl meanwhile
        held = FailureDemo(rt, wait=wait).run()
    if not held:
        raise typer.Exit(1)

