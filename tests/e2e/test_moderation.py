"""Moderation with real processes, on both transports: down while comments are written, or
started for the first time after they exist, it decides every comment exactly once; a
redelivery changes nothing."""
from __future__ import annotations

import pytest
import requests

from tests.helpers import RunningBlog, create_comment, create_post, on_both_transports, view, wait_until

pytestmark = pytest.mark.slow

ORANGE_EVERY = 5  # every fifth comment mentions an orange: rejected by the default rule


def write_comments(formation: RunningBlog, count: int) -> dict[str, str]:
    """`count` comments over a few posts; returns each comment's id -> the status the rule gives it."""
    posts = [create_post(formation, f"moderated post {i}")["id"] for i in range(4)]
    expected = {}
    with requests.Session() as session:
        for i in range(count):
            content = f"comment {i}" + (" about an ORANGE" if i % ORANGE_EVERY == 0 else "")
            post_id = posts[i % len(posts)]
            if i < len(posts):  # the first on each post waits until Comments has heard of the post
                answer = create_comment(formation, post_id, content)
            else:
                response = session.post(f"{formation.url('comments')}/posts/{post_id}/comments",
                                        json={"content": content}, timeout=10)
                assert response.status_code == 201, response.text
                answer = response.json()
            expected[answer[-1]["id"]] = "rejected" if i % ORANGE_EVERY == 0 else "approved"
    return expected


def statuses(formation: RunningBlog) -> dict[str, str]:
    return {c["id"]: c["status"] for post in view(formation).values() for c in post["comments"]}


def comments_statuses(formation: RunningBlog) -> dict[str, str]:
    found = {}
    for post_id in view(formation):
        found |= {c["id"]: c["status"] for c in requests.get(
            f"{formation.url('comments')}/posts/{post_id}/comments", timeout=5).json()}
    return found


def assert_decided_once(formation: RunningBlog, expected: dict[str, str]) -> None:
    wait_until(lambda: statuses(formation) == expected, timeout=60, interval=0.1,
               message="Query to show every comment decided")
    assert comments_statuses(formation) == expected
    rejected = sum(status == "rejected" for status in expected.values())
    assert formation.health("moderation")["decided"] == {"approved": len(expected) - rejected, "rejected": rejected}
    for event_type in ("CommentModerated", "CommentUpdated"):
        wait_until(lambda: len(formation.logged(type=event_type)) >= len(expected), timeout=30)
        ids = [e["data"]["id"] for e in formation.logged(type=event_type)]
        assert sorted(ids) == sorted(expected), f"each comment's {event_type} once"


@on_both_transports
def test_moderation_down_while_200_comments_are_written_catches_up_exactly(formation):
    formation.start()
    formation.kill("moderation")
    expected = write_comments(formation, 200)
    wait_until(lambda: len(statuses(formation)) == 200, timeout=30, message="Query to show the 200 comments")
    assert set(statuses(formation).values()) == {"pending"}  # nobody decided them yet
    assert set(comments_statuses(formation).values()) == {"pending"}

    formation.start("moderation")
    assert_decided_once(formation, expected)

    # Everything delivered again, to every consumer: no second decision, no second update.
    log = formation.logged()
    before = (view(formation), len(log))
    for name in ("moderation", "comments", "query"):
        answer = requests.post(f"{formation.url(name)}/events", json=log, timeout=30)
        assert answer.status_code == 200, answer.text
    assert formation.health("moderation")["outbox_pending"] == 0 == formation.health("comments")["outbox_pending"]
    assert (view(formation), len(formation.logged())) == before


@on_both_transports
def test_moderation_started_for_the_first_time_after_comments_exist(formation):
    formation.start(*(name for name in formation.services if name != "moderation"))
    expected = write_comments(formation, 30)
    wait_until(lambda: len(statuses(formation)) == 30, timeout=30, message="Query to show the 30 comments")
    assert set(statuses(formation).values()) == {"pending"}

    formation.start("moderation")  # on RabbitMQ its queue is new: what came before is read from the stream
    assert_decided_once(formation, expected)
