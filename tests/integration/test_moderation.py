"""Moderation through the services' test clients on the in-memory transport: pending, then decided, in Query."""
from __future__ import annotations

import pytest

from services.shared.components import components
from services.table import load
from tests.in_process import create_apps


def test_a_new_comment_is_pending_until_moderation_decides(blog):
    post = blog.create_post("moderated")
    response = blog.comments.post(f"/posts/{post['id']}/comments", json={"content": "a plain comment"})
    assert response.status_code == 201
    [comment] = response.json
    assert set(comment) == {"id", "content", "status"} and comment["status"] == "pending"
    components(blog.apps["comments"])["relay"].relay_once()  # only the CommentCreated, not yet the decision
    assert blog.query.get("/posts").json[post["id"]]["comments"] == [comment]
    blog.relay()
    decided = {**comment, "status": "approved"}
    assert blog.query.get("/posts").json[post["id"]]["comments"] == [decided]
    assert blog.comments.get(f"/posts/{post['id']}/comments").json == [decided]


@pytest.mark.parametrize("content, status", [("apples are fine", "approved"), ("I hate Oranges", "rejected")])
def test_query_shows_the_decision_in_the_course_shape(blog, content, status):
    post = blog.create_post("p")
    [comment] = blog.create_comment(post["id"], content)
    assert blog.query.get("/posts").json == {
        post["id"]: {"id": post["id"], "title": "p",
                     "comments": [{"id": comment["id"], "content": content, "status": status}]},
    }
    types = [event.type for event in blog.bus.log]
    assert types == ["PostCreated", "CommentCreated", "CommentModerated", "CommentUpdated"]


def test_redelivering_every_event_to_every_service_decides_nothing_twice(blog):
    post = blog.create_post("again")
    blog.create_comment(post["id"], "orange you glad")
    blog.create_comment(post["id"], "fine")
    before = (blog.query.get("/posts").get_data(), len(blog.bus.log))
    batch = [event.to_dict() for event in blog.bus.log]
    for name in ("comments", "query", "moderation"):
        client = blog.apps[name].test_client()
        assert client.post("/events", json=batch).status_code == 200
        assert client.post("/events", json=list(reversed(batch))).status_code == 200
    blog.relay()
    assert (blog.query.get("/posts").get_data(), len(blog.bus.log)) == before


def test_moderation_started_after_comments_exist_decides_each_from_the_log(blog, tmp_path):
    post = blog.create_post("before moderation")
    blog.bus.detach("moderation")  # as if Moderation had never run
    blog.bus.subscribe("moderation", lambda events: None)
    for text in ("one", "two oranges", "three"):
        blog.create_comment(post["id"], text)
    assert {c["status"] for c in blog.query.get("/posts").json[post["id"]]["comments"]} == {"pending"}
    late = create_apps(load({"BLOG_DATA_DIR": str(tmp_path / "late")}), blog.bus, ("moderation",))
    components(late["moderation"])["catch-up"].catch_up_once()
    blog.relay()
    blog.apps.update(late)
    blog.relay()
    comments = blog.query.get("/posts").json[post["id"]]["comments"]
    assert [c["status"] for c in comments] == ["approved", "rejected", "approved"]
    assert late["moderation"].test_client().get("/health").json["decided"] == {"approved": 2, "rejected": 1}
