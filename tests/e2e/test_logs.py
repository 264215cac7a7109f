"""The services' logs through real processes: a post and a comment on it, each its own trace, and
`blogctl logs --trace` finds each write's lines in every service it reached and none of the other's;
`--grep` finds a post's lines across services."""
from __future__ import annotations

import json

import pytest
import requests

from tests.e2e.test_cli import blogctl  # noqa: F401 - the fixture: a blogctl on free ports that cleans up
from tests.helpers import wait_until

pytestmark = pytest.mark.slow


def write(url: str, body: dict) -> tuple[dict | list, str]:
    """POST `body`; its answer and the id of the trace the write started (its `traceparent` header)."""
    response = requests.post(url, json=body, timeout=5)
    assert response.status_code == 201, response.text
    return response.json(), response.headers["traceparent"].split("-")[1]


def hops(found: dict[str, list[str]]) -> dict[str, set[str]]:
    """Each service's lines as `published PostCreated`, `POST /posts 201`..., without ids and timings."""
    out = {}
    for service, lines in found.items():
        fields = [json.loads(line) for line in lines]
        out[service] = {" ".join(f["message"].split()[:3]) if f["logger"] == "blog.access"
                        else " ".join(f["message"].split()[:2]) + (f" to {f['subscriber']}" if "subscriber" in f else "")
                        for f in fields}
    return {service: lines for service, lines in out.items() if lines}


def test_logs_trace_and_grep_find_one_writes_lines_across_the_services(blogctl):
    blogctl.env.update(BLOG_LOG_FORMAT="json", BLOG_RESTART="no")
    blogctl("up", "--detach")
    post, post_trace = write(f"{blogctl.url('posts')}/posts", {"title": "a post to follow through the logs"})
    blogctl("comment", "create", post["id"], "wait", "--wait", "10")  # Comments has heard of the post
    comments, comment_trace = write(f"{blogctl.url('comments')}/posts/{post['id']}/comments", {"content": "logged"})
    comment_id = comments[-1]["id"]

    # Every hop of the post's trace: its request, relay, the bus, each consumer's apply.
    want_post = {
        "posts": {"POST /posts 201", "published PostCreated"},
        "bus": {"appended PostCreated", *(f"delivered PostCreated to {s}" for s in ("query", "comments", "moderation"))},
        "query": {"applied PostCreated"},
        "comments": {"applied PostCreated"},
    }
    found = wait_until(lambda: (got := blogctl.json("logs", "--trace", post_trace))
                       and all(want_post[s] <= hops(got).get(s, set()) for s in want_post) and got,
                       timeout=20, message="the post's lines in every service")
    assert hops(found).keys() == want_post.keys()
    assert hops(found)["posts"] == want_post["posts"] and hops(found)["query"] == want_post["query"]
    assert comment_id not in json.dumps(found) and comment_trace not in json.dumps(found)  # none of the other write

    # The comment's trace: Comments, the bus, Moderation's decision, and Query's view of both.
    want_comment = {
        "comments": {f"POST /posts/{post['id']}/comments", "published CommentCreated", "applied CommentModerated",
                     "published CommentUpdated"},
        "bus": {"appended CommentCreated", "delivered CommentCreated to moderation", "appended CommentModerated",
                "delivered CommentModerated to comments", "appended CommentUpdated", "delivered CommentUpdated to query"},
        "moderation": {"applied CommentCreated", "published CommentModerated"},
        "query": {"applied CommentCreated", "applied CommentUpdated"},
    }
    found = wait_until(lambda: (got := blogctl.json("logs", "--trace", comment_trace))
                       and all(want_comment[s] <= {h.replace(" 201", "") for h in hops(got).get(s, ())}
                               for s in want_comment) and got,
                       timeout=20, message="the comment's lines in every service")
    assert "posts" not in hops(found)  # Posts takes no part in a comment
    assert "PostCreated" not in json.dumps(found) and post_trace not in json.dumps(found)

    # The post's id is in the lines of every service that handled its events or its comment.
    grepped = {service for service, lines in blogctl.json("logs", "--grep", post["id"]).items() if lines}
    assert grepped == {"posts", "bus", "comments", "query", "moderation"}
    text = blogctl("logs", "query", "--trace", post_trace).stdout  # as a person reads them
    assert "applied PostCreated" in text and f"(post {post['id']})" in text
    blogctl("down")
    blogctl.assert_nothing_left()
