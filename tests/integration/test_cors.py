"""Browsers from other origins, and bodies that are not JSON, through the services' test clients."""
from __future__ import annotations

import pytest

from services.shared.config import COURSE_CLIENT_ORIGINS, ConfigError
from services.table import load
from services.shared.transport import InMemoryBus
from tests.in_process import create_apps

COURSE_CLIENT = "http://localhost:3000"


def test_the_default_origins_are_the_page_and_the_course_clients_dev_server():
    origins = load({}).cors_origins()
    assert "http://localhost:3000" in origins and "http://127.0.0.1:3000" in origins
    assert "http://127.0.0.1:4002" in origins and "http://localhost:4002" in origins  # the blog page itself
    assert set(COURSE_CLIENT_ORIGINS) == {"http://localhost:3000", "http://127.0.0.1:3000"}


def test_blog_cors_origins_replaces_the_list_and_is_checked():
    assert load({"BLOG_CORS_ORIGINS": "http://a.example:8080, https://b.example/"}).cors_origins() == [
        "http://a.example:8080", "https://b.example"]
    assert load({"BLOG_CORS_ORIGINS": "*"}).cors_origins() == ["*"]
    with pytest.raises(ConfigError, match="BLOG_CORS_ORIGINS"):
        load({"BLOG_CORS_ORIGINS": "localhost:3000"})


@pytest.mark.parametrize("service, path", [("posts", "/posts"), ("comments", "/posts/p1/comments")])
def test_the_course_client_may_write_after_a_preflight(blog, service, path):
    client = blog.apps[service].test_client()
    preflight = client.options(path, headers={
        "Origin": COURSE_CLIENT, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type",
    })
    assert preflight.headers["Access-Control-Allow-Origin"] == COURSE_CLIENT
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert "content-type" in preflight.headers["Access-Control-Allow-Headers"].lower()


@pytest.mark.parametrize("service, path", [("query", "/posts"), ("posts", "/posts"), ("comments", "/posts/p1/comments")])
def test_the_course_client_may_read(blog, service, path):
    answer = blog.apps[service].test_client().get(path, headers={"Origin": COURSE_CLIENT})
    assert answer.headers["Access-Control-Allow-Origin"] == COURSE_CLIENT


def test_another_origin_gets_no_cors_header(blog):
    answer = blog.query.get("/posts", headers={"Origin": "http://evil.example"})
    assert "Access-Control-Allow-Origin" not in answer.headers


def test_any_origin_when_the_setting_says_star(tmp_path):
    apps = create_apps(load({"BLOG_DATA_DIR": str(tmp_path), "BLOG_CORS_ORIGINS": "*"}), InMemoryBus())
    answer = apps["query"].test_client().get("/posts", headers={"Origin": "http://anywhere.example"})
    assert answer.headers["Access-Control-Allow-Origin"] in ("*", "http://anywhere.example")


def test_a_body_that_is_not_json_is_a_415_and_stores_nothing(blog, bus_client):
    post = blog.create_post("known")
    blog.create_comment(post["id"], "known")
    before = (blog.posts.get("/posts").json, blog.query.get("/posts").json, len(blog.bus.log))
    writes = [
        (blog.posts, "/posts", '{"title": "sneaky"}'),
        (blog.comments, f"/posts/{post['id']}/comments", '{"content": "sneaky"}'),
        (blog.query, "/events", '{"type": "PostCreated", "data": {"id": "x1", "title": "sneaky"}}'),
        (blog.apps["moderation"].test_client(), "/events",
         '{"type": "CommentCreated", "data": {"id": "x2", "content": "sneaky", "postId": "p"}}'),
        (bus_client, "/events", '{"type": "PostCreated", "data": {"id": "x3", "title": "sneaky"}}'),
    ]
    for client, path, body in writes:
        for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
            answer = client.post(path, data=body, content_type=content_type)
            assert answer.status_code == 415, (path, content_type)
            assert "application/json" in answer.json["error"]
    blog.relay()
    assert (blog.posts.get("/posts").json, blog.query.get("/posts").json, len(blog.bus.log)) == before
    assert bus_client.get("/health").json["last_seq"] == 0
    assert blog.apps["moderation"].test_client().get("/health").json["outbox_pending"] == 0
