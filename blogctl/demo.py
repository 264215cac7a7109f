"""The narrated demos, against the running system.

`blogctl demo-failure`, the seed's lesson: Query keeps its own copy of every post and comment,
built from events. Kill the services that own the writes and the view still serves everything;
writes fail until they return.

`blogctl demo-moderation`, the course's next one: with Moderation down, new comments wait as
pending; started again, it decides every comment it missed.
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


class Demo:
    """A demo: numbered steps, each saying what it saw or what did not hold, then the formation
    left as it was found and a verdict. Subclasses give `steps()` and `lesson`."""

    lesson = ""

    def __init__(self, rt: Runtime, *, wait: float = 10.0) -> None:
        self.rt = rt
        self.client = rt.client
        self.formation = rt.formation
        self.wait = wait
        self.tag = secrets.token_hex(2)

    def steps(self) -> list[tuple[str, Callable[[], str]]]:
        raise NotImplementedError

    def run(self) -> bool:
        initially_running = {s.name for s in self.formation.states() if s.running}
        steps = self.steps()
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

    # Steps every demo uses: each returns what it saw, or raises StepFailed/BlogctlError.

    def ensure_up(self) -> str:
        missing = [s.name for s in self.formation.states() if not s.running]
        if not missing:
            return "all services were already running"
        bring_up(self.rt, missing)
        return f"started {', '.join(missing)}; each answers /health"

    def kill(self, names: tuple[str, ...]) -> str:
        killed = []
        for name in names:
            before = self.formation.stop(name, signal.SIGKILL)
            if self.formation.state(name).running or self.rt.is_healthy(name):
                raise StepFailed(f"{name} is still answering after SIGKILL")
            killed.append(f"{name} (pid {before.pid})" if before.running else f"{name} (was not running)")
        ports = "their ports" if len(names) > 1 else "its port"
        return f"killed {' and '.join(killed)} with SIGKILL; nothing answers {ports}"

    def bring_back(self, names: tuple[str, ...]) -> str:
        bring_up(self.rt, list(names))
        pids = ", ".join(f"{s.name} (pid {s.pid})" for s in map(self.formation.state, names))
        return f"{pids} answer{'s' * (len(names) == 1)} /health again"

    def view_until(self, holds: Callable[[dict], bool], what: str) -> dict:
        """Query's view once `holds(view)`, within the demo's wait; else the step fails saying `what`."""
        def check() -> dict | None:
            view = self.client.view()
            return view if holds(view) else None

        view = wait_for(check, timeout=self.wait)
        if not view:
            raise StepFailed(f"{what} within {self.wait:g}s")
        return view

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
            console.print(Text.assemble(("Verdict: every step held. ", "bold green"), self.lesson))
            return True
        reason = f"step {failed[0]} ({failed[1]}) did not hold" if failed else "the formation was not restored"
        console.print(Text.assemble(("Verdict: FAILED — ", "bold red"), reason))
        return False


class FailureDemo(Demo):
    lesson = ("With Posts and Comments dead, Query kept serving every post and comment from the copy it "
              "built from events; writes failed clearly; once they were back, new writes flowed through.")

    def __init__(self, rt: Runtime, *, wait: float = 10.0) -> None:
        super().__init__(rt, wait=wait)
        self.before_kill: dict = {}

    def steps(self) -> list[tuple[str, Callable[[], str]]]:
        return [
            ("Make sure every service is running", self.ensure_up),
            ("Write a post and two comments", self.write),
            ("Read them back from the Query view", self.read_view),
            ("Really kill Posts and Comments", lambda: self.kill(WRITERS)),
            ("Query still serves every post and comment", self.query_survives),
            ("Creating a post now fails, with a clear message", self.writes_fail),
            ("Bring Posts and Comments back", lambda: self.bring_back(WRITERS)),
            ("New writes flow and the view catches up", self.writes_flow),
        ]

    def write(self) -> str:
        self.post = self.client.create_post(f"demo {self.tag}: a post written before the failure")
        for content in ("a first comment", "a second comment"):
            self.comments = self.client.create_comment(self.post["id"], f"{content} ({self.tag})", wait=self.wait)
        return f"post {safe(self.post['id'])} with {len(self.comments)} comments"

    def read_view(self) -> str:
        view = self.view_until(
            lambda view: len(view.get(self.post["id"], {}).get("comments", ())) == len(self.comments),
            "the view did not show the post and its comments",
        )
        self.before_kill = view
        console.print(render.view_tree(view, limit=3), soft_wrap=True)
        posts, comments = render.view_counts(view)
        return f"the view holds {posts} posts and {comments} comments"

    def query_survives(self) -> str:
        view = self.client.view()
        missing_posts = [pid for pid in self.before_kill if pid not in view]
        missing_comments = [
            c["id"] for pid, post in self.before_kill.items()
            # by id: a comment's status may change meanwhile (Moderation keeps deciding)
            for c in post["comments"] if c["id"] not in {shown["id"] for shown in view.get(pid, {}).get("comments", [])}
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

    def writes_flow(self) -> str:
        post = self.client.create_post(f"demo {self.tag}: a post written after recovery")
        self.client.create_comment(post["id"], f"a comment after recovery ({self.tag})", wait=self.wait)

        view = self.view_until(
            lambda view: bool(view.get(post["id"], {}).get("comments"))
            and all(pid in view for pid in self.before_kill),
            "the view did not show the new post and comment",
        )
        posts, comments = render.view_counts(view)
        return f"post {safe(post['id'])} and its comment reached the view: {posts} posts, {comments} comments"

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



MODERATION = ("moderation",)


class ModerationDemo(Demo):
    lesson = ("While Moderation was down, new comments waited as pending; started again, it decided every "
              "comment it had missed, once, and Query shows each decision.")

    def steps(self) -> list[tuple[str, Callable[[], str]]]:
        return [
            ("Make sure every service is running", self.ensure_up),
            ("Really kill Moderation", lambda: self.kill(MODERATION)),
            ("Write a post and two comments: they stay pending", self.write_pending),
            ("Bring Moderation back", lambda: self.bring_back(MODERATION)),
            ("Each comment becomes approved or rejected", self.decided),
        ]

    def write_pending(self) -> str:
        self.post = self.client.create_post(f"demo {self.tag}: comments written while Moderation is down")
        self.expected = {}
        for content, status in (("a kind word", "approved"), ("an orange, of all things", "rejected")):
            comments = self.client.create_comment(self.post["id"], f"{content} ({self.tag})", wait=self.wait)
            self.expected[comments[-1]["id"]] = status
        view = self.view_until(
            lambda view: self._statuses(view) == {cid: "pending" for cid in self.expected},
            "the view did not show both comments as pending",
        )
        console.print(render.view_tree({self.post["id"]: view[self.post["id"]]}), soft_wrap=True)
        return "Query shows both comments, each pending: nobody has decided them yet"

    def decided(self) -> str:
        view = self.view_until(lambda view: self._statuses(view) == self.expected,
                               "the comments were not decided as the rule says")
        console.print(render.view_tree({self.post["id"]: view[self.post["id"]]}), soft_wrap=True)
        return "Moderation caught up: the kind word approved, the one about an orange rejected"

    def _statuses(self, view: dict) -> dict:
        return {c["id"]: c.get("status") for c in view.get(self.post["id"], {}).get("comments", [])}


def demo_moderation(
    ctx: typer.Context,
    wait: Annotated[float, typer.Option("--wait", min=1, help="Seconds to wait for each asynchronous step.")] = 10.0,
) -> None:
    """Narrate moderation: stop Moderation, write comments that stay pending, start it, watch each decided.

    Starts the services if needed and leaves them as it found them. Exit code 0 only if every step held.
    """
    rt = runtime(ctx)
    with rt.exclusive("demo-moderation"):  # it kills and starts Moderation: no other blogctl (nor a restart) meanwhile
        held = ModerationDemo(rt, wait=wait).run()
    if not held:
        raise typer.Exit(1)
