"""Our Posts, Comments and Query in the course's formation: its bus (a stand-in with its
behaviour, `tests/course_bus.py`) in place of ours, every process real, on free ports."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import requests

from tests.helpers import ROOT, Formation, create_comment, create_post, port_is_listening, view, wait_until

pytestmark = pytest.mark.slow
OURS = ("posts", "comments", "query")


@contextmanager
def course_bus(formation: Formation) -> Iterator[subprocess.Popen]:
    """The stand-in on the formation's bus port, delivering to our services as the course's bus does."""
    subscribers = [f"{formation.url(name)}/events" for name in OURS]
    with open(formation.data_dir / "course_bus.log", "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.course_bus", str(formation.ports["bus"]), *subscribers],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        wait_until(lambda: port_is_listening(formation.ports["bus"]), timeout=15, message="the course's bus")
        yield process
    finally:
        os.killpg(process.pid, signal.SIGCONT)  # in case the test left it stopped
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)


@pytest.fixture
def formation(tmp_path) -> Iterator[Formation]:
    running = Formation(tmp_path)
    try:
        yield running
    finally:
        running.stop()


def comment_count(formation: Formation) -> int:
    return sum(len(post["comments"]) for post in view(formation).values())


def test_posts_and_comments_reach_our_query_through_the_course_bus(formation):
    with course_bus(formation):
        formation.start(*OURS)
        post = create_post(formation, "through the course's bus")
        comments = create_comment(formation, post["id"], "and so is this")
        expected = {post["id"]: {**post, "comments": comments}}
        wait_until(lambda: view(formation) == expected, timeout=15, message="the post and comment in Query")
        # One bare event per request: the course's log holds exactly the two events, as it would from Node.
        logged = formation_log(formation)
        assert [(e["type"], sorted(e)) for e in logged] == [("PostCreated", ["data", "type"]),
                                                           ("CommentCreated", ["data", "type"])]


def formation_log(formation: Formation) -> list:
    return requests.get(f"{formation.url('bus')}/events", timeout=5).json()


def test_a_backlog_of_long_comments_reaches_query_and_a_fresh_query_catches_up_from_the_log(formation, tmp_path):
    with course_bus(formation) as bus:
        formation.start(*OURS)
        post = create_post(formation, "a long discussion")
        create_comment(formation, post["id"], "first")
        wait_until(lambda: comment_count(formation) == 1, timeout=15, message="the first comment in Query")

        os.killpg(bus.pid, signal.SIGSTOP)  # the bus hangs, its memory kept: the relay's requests time out
        for i in range(60):  # 60 comments of 2,000 characters, 120 kB together: more than its body limit
            response = requests.post(f"{formation.url('comments')}/posts/{post['id']}/comments",
                                     json={"content": f"{i:02d}" + "x" * 1998}, timeout=5)
            assert response.status_code == 201, response.text
        assert formation.health("comments")["outbox_pending"] >= 50
        os.killpg(bus.pid, signal.SIGCONT)

        wait_until(lambda: comment_count(formation) == 61, timeout=60, message="all 61 comments in Query")
        wait_until(lambda: formation.health("comments")["outbox_pending"] == 0, timeout=15, message="an empty outbox")
        # Each comment is in the log (a request that timed out while the bus hung may have been taken
        # as well as retried: the course's bus has no ids to tell, and Query applies a repeat as nothing).
        logged = formation_log(formation)
        contents = {e["data"]["content"][:2] for e in logged if e["type"] == "CommentCreated"}
        assert {f"{i:02d}" for i in range(60)} <= contents

        fresh = Formation(tmp_path / "fresh", extra_env={"BLOG_BUS_PORT": str(formation.ports["bus"])})
        (tmp_path / "fresh").mkdir()
        try:
            fresh.start("query")
            # From the course's log alone (that bus does not deliver to it): the same view.
            wait_until(lambda: view(fresh) == view(formation), timeout=30, message="the fresh Query caught up")
            assert fresh.health("query")["applied_seq"] == len(logged)
            assert fresh.health("query")["catch_up_error"] is None
        finally:
            fresh.stop()
