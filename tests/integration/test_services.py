"""The services through Flask's test client, wired by the in-memory transport."""
import os
import threading
import time

import pytest

from services.shared.components import components
from services.table import DEFAULT_SUBSCRIBERS
from services.shared.events import Event, PostCreated
from services.shared.transport import InMemoryBus


def test_a_post_and_its_comment_are_assembled_in_query(blog):
    post = blog.create_post("Hello")
    assert set(post) == {"id", "title"} and post["title"] == "Hello"
    assert len(post["id"]) == 8 and int(post["id"], 16) >= 0
    assert blog.posts.get("/posts").json == {post["id"]: post}

    comments = blog.create_comment(post["id"], "First!")
    assert [(c["content"], c["status"]) for c in comments] == [("First!", "pending")]
    decided = [{**comments[0], "status": "approved"}]  # once Moderation's decision went round
    assert blog.comments.get(f"/posts/{post['id']}/comments").json == decided

    assert blog.query.get("/posts").json == {post["id"]: {**post, "comments": decided}}
    assert [e.type for e in blog.bus.log] == ["PostCreated", "CommentCreated", "CommentModerated", "CommentUpdated"]
    assert blog.bus.log[1].data == {"id": comments[0]["id"], "content": "First!", "postId": post["id"], "status": "pending"}


def test_query_lists_posts_in_creation_order(blog):
    ids = [blog.create_post(f"post {i}")["id"] for i in range(20)]
    assert list(blog.query.get("/posts").json) == ids
    assert list(blog.posts.get("/posts").json) == ids


def test_comments_of_a_post_without_any_is_an_empty_list(blog):
    post = blog.create_post("quiet")
    assert blog.comments.get(f"/posts/{post['id']}/comments").json == []


def test_comment_on_a_post_comments_never_heard_of_is_a_404_and_stores_nothing(blog):
    response = blog.comments.post("/posts/deadbeef/comments", json={"content": "hi"})
    assert response.status_code == 404
    assert "deadbeef" in response.json["error"]
    assert blog.comments.get("/health").json["comments"] == 0
    assert blog.comments.get("/health").json["outbox_pending"] == 0


@pytest.mark.parametrize(
    "body, content_type, fragment",
    [
        (b"not json", "application/json", "not valid JSON"),
        (b"", "application/json", "not valid JSON"),
        (b'["a list"]', "application/json", "JSON object"),
        (b"{}", "application/json", "'title' is required"),
        (b'{"title": ""}', "application/json", "title"),
        (b'{"title": "   "}', "application/json", "blank"),
        ('{"title": "\u3000\u00a0\u200b\u2028\ufeff"}'.encode(), "application/json", "blank"),
        (b'{"title": 42}', "application/json", "valid string"),
        (b'{"title": null}', "application/json", "valid string"),
        (b'{"title": "' + b"x" * 201 + b'"}', "application/json", "at most 200"),
        (b'{"title": "ok"}'.ljust(70_000), "application/json", "too large"),
    ],
)
def test_bad_post_bodies_get_a_clear_4xx_and_change_nothing(blog, body, content_type, fragment):
    response = blog.posts.post("/posts", data=body, content_type=content_type)
    assert 400 <= response.status_code < 500
    assert response.is_json and fragment in response.json["error"]
    assert blog.posts.get("/posts").json == {}
    assert blog.posts.get("/health").json["outbox_pending"] == 0


def test_bad_comment_bodies_get_a_clear_400(blog):
    post = blog.create_post("p")
    for body in ({}, {"content": ""}, {"content": ["x"]}, {"content": "y" * 2001}, {"content": "\u2060\u3000"}):
        response = blog.comments.post(f"/posts/{post['id']}/comments", json=body)
        assert response.status_code == 400 and "content" in response.json["error"]
    assert blog.comments.get(f"/posts/{post['id']}/comments").json == []


@pytest.mark.parametrize("service", DEFAULT_SUBSCRIBERS)
def test_unknown_routes_and_methods_answer_json_not_html(blog, service):
    client = blog.apps[service].test_client()
    missing = client.get("/nowhere")
    assert missing.status_code == 404 and "GET /nowhere" in missing.json["error"]
    wrong = client.delete("/events")
    assert wrong.status_code == 405 and "DELETE" in wrong.json["error"]


def test_query_answers_an_unchanged_view_with_304(blog):
    blog.create_post("cached")
    first = blog.query.get("/posts")
    etag = first.headers["ETag"]
    again = blog.query.get("/posts", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.data == b""
    blog.create_post("changed")
    fresh = blog.query.get("/posts", headers={"If-None-Match": etag})
    assert fresh.status_code == 200 and fresh.headers["ETag"] != etag


def waiting_get(client, url, etag):
    """GET `url` with `etag` in a thread; returns (thread, result holder)."""
    result = {}

    def get():
        started = time.monotonic()
        result["response"] = client.get(url, headers={"If-None-Match": etag})
        result["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=get)
    thread.start()
    return thread, result


def test_a_reader_waiting_with_the_current_etag_is_answered_when_the_view_changes(blog):
    blog.create_post("first")
    etag = blog.query.get("/posts").headers["ETag"]
    thread, result = waiting_get(blog.apps["query"].test_client(), "/posts?wait=20", etag)
    thread.join(0.3)
    assert thread.is_alive()  # nothing changed yet: it is held
    blog.create_post("second")
    thread.join(10)
    assert not thread.is_alive() and result["seconds"] < 10
    answer = result["response"]
    assert answer.status_code == 200 and [p["title"] for p in answer.json.values()] == ["first", "second"]


def test_a_waiting_reader_gets_304_when_nothing_changes_in_time(blog):
    etag = blog.query.get("/posts").headers["ETag"]
    started = time.monotonic()
    answer = blog.query.get("/posts?wait=1", headers={"If-None-Match": etag})
    assert answer.status_code == 304 and 0.9 <= time.monotonic() - started < 5


def test_a_change_elsewhere_does_not_wake_a_reader_of_an_unchanged_page(blog):
    blog.create_post("on the first page")
    page = blog.query.get("/posts?limit=1")
    thread, result = waiting_get(blog.apps["query"].test_client(), "/posts?limit=1&wait=1", page.headers["ETag"])
    blog.create_post("on the second page")
    thread.join(10)
    assert result["response"].status_code == 304 and result["seconds"] >= 0.9


def test_only_a_few_readers_wait_at_once_the_others_are_answered_at_once(blog):
    from services.query.routes import WAITERS_MAX

    etag = blog.query.get("/posts").headers["ETag"]
    held = [waiting_get(blog.apps["query"].test_client(), "/posts?wait=20", etag) for _ in range(WAITERS_MAX)]
    for thread, _ in held:
        thread.join(0.2)
        assert thread.is_alive()
    started = time.monotonic()
    extra = blog.query.get("/posts?wait=20", headers={"If-None-Match": etag})
    assert extra.status_code == 304 and time.monotonic() - started < 5
    blog.create_post("wakes them all")
    for thread, result in held:
        thread.join(10)
        assert result["response"].status_code == 200


@pytest.mark.parametrize("bad", ["wait=31", "wait=-1", "wait=soon"])
def test_wait_out_of_range_is_a_400(blog, bad):
    response = blog.query.get(f"/posts?{bad}")
    assert response.status_code == 400 and "'wait'" in response.json["error"]


def test_events_in_the_course_shape_are_applied_and_unknown_types_acknowledged(blog):
    deliver = blog.query.post
    assert deliver("/events", json={"type": "PostCreated", "data": {"id": "p1", "title": "t"}}).json == {}
    assert deliver("/events", json={"type": "CommentCreated", "data": {"id": "c1", "content": "x", "postId": "p1"}}).status_code == 200
    assert deliver("/events", json={"type": "CommentDeleted", "data": {"id": "c1"}}).status_code == 200
    assert blog.query.get("/posts").json == {
        "p1": {"id": "p1", "title": "t", "comments": [{"id": "c1", "content": "x", "status": "pending"}]}
    }


@pytest.mark.parametrize(
    "body",
    [
        {"type": "PostCreated"},
        {"type": "PostCreated", "data": {"id": "p2"}},
        {"type": "CommentCreated", "data": {"id": "c", "content": "x", "postId": 3}},
        [{"type": "PostCreated", "data": {"id": "ok", "title": "ok"}}, {"type": "PostCreated", "data": {}}],
        {"data": {}},
        "a string",
    ],
)
def test_malformed_events_are_refused_and_apply_nothing(blog, body):
    response = blog.query.post("/events", json=body)
    assert response.status_code == 400 and "invalid event" in response.json["error"]
    assert blog.query.get("/posts").json == {}


def test_redelivering_every_event_leaves_the_view_unchanged(blog):
    post = blog.create_post("once")
    blog.create_comment(post["id"], "only once")
    before = blog.query.get("/posts").json
    batch = [event.to_dict() for event in blog.bus.log]
    assert blog.query.post("/events", json=batch).status_code == 200
    assert blog.query.post("/events", json=list(reversed(batch))).status_code == 200
    assert blog.query.get("/posts").json == before


def test_a_new_query_catches_up_from_the_log(blog, config, tmp_path):
    from services.query.app import create_app

    post = blog.create_post("before query existed")
    blog.create_comment(post["id"], "also before")
    late_config = type(config)(data_dir=tmp_path / "late", ports=config.ports)
    late = create_app(late_config, blog.bus.transport("query-2"))
    assert late.test_client().get("/posts").json == {}
    components(late)["catch-up"].catch_up_once()
    assert late.test_client().get("/posts").json == blog.query.get("/posts").json
    assert late.test_client().get("/health").json["applied_seq"] == len(blog.bus.log)


def test_a_query_pointed_at_another_log_reads_that_log_from_its_start(blog, config, tmp_path):
    """A position counts in one log: a data directory moved to another log (the HTTP bus's, then a
    broker's; a deleted log) must not make the catch-up skip that many of the new log's events."""
    from services.query.app import create_app

    for i in range(5):
        blog.create_post(f"on the first log {i}")
    moved_config = type(config)(data_dir=tmp_path / "moved", ports=config.ports)
    first = create_app(moved_config, blog.bus.transport("moved"))
    components(first)["catch-up"].catch_up_once()
    assert first.test_client().get("/health").json["applied_seq"] == 5

    other = InMemoryBus(name="another")
    other.transport("posts").publish([Event.of(PostCreated(id="newlog1", title="on the second log"))])
    again = create_app(moved_config, other.transport("moved"))  # same data directory, another log
    components(again)["catch-up"].catch_up_once()
    view = again.test_client().get("/posts").json
    assert view["newlog1"]["title"] == "on the second log" and len(view) == 6  # kept what it had, read the new
    assert again.test_client().get("/health").json["applied_seq"] == 1

    components(again)["catch-up"].catch_up_once()  # the same log: the position holds
    assert again.test_client().get("/health").json["applied_seq"] == 1


def test_health_says_what_each_service_is(blog, config):
    for name in DEFAULT_SUBSCRIBERS:
        health = blog.apps[name].test_client().get("/health").json
        assert health["service"] == name and health["status"] == "ok"
        assert health["pid"] == os.getpid() and health["data_dir"] == str(config.data_dir.absolute())
    assert blog.query.get("/health").json["applied_seq"] == 0


def test_query_pages_the_view_with_limit_and_offset(blog):
    ids = [blog.create_post(f"page {i}")["id"] for i in range(5)]
    first = blog.query.get("/posts?limit=2")
    assert list(first.json) == ids[:2]
    assert first.headers["X-Total-Count"] == "5"
    assert first.headers["Link"] == '</posts?offset=2&limit=2>; rel="next"'
    last = blog.query.get("/posts?offset=4&limit=2")
    assert list(last.json) == ids[4:] and "Link" not in last.headers
    assert blog.query.get("/posts?offset=9").json == {}
    for bad in ("limit=0", "offset=-1", "limit=many"):
        response = blog.query.get(f"/posts?{bad}")
        assert response.status_code == 400 and "query parameter" in response.json["error"]


def test_the_course_s_create_route_behind_its_ingress_creates_a_post(blog):
    response = blog.posts.post("/posts/create", json={"title": "Through the ingress"})
    assert response.status_code == 201
    post = response.json
    assert blog.posts.get("/posts").json == {post["id"]: post}
    blog.relay()
    assert [(e.type, e.data["title"]) for e in blog.bus.log] == [("PostCreated", "Through the ingress")]
    assert blog.posts.post("/posts/create", json={"title": " "}).status_code == 400


@pytest.mark.parametrize("front_door", [{"X-Blog-Gateway": "1"}, {"X-Forwarded-Host": "posts.com"}])
def test_the_page_behind_a_front_door_writes_to_its_own_origin(blog, front_door):
    direct = blog.query.get("/").get_data(as_text=True)
    assert 'data-posts-port="' in direct and 'data-posts-port=""' not in direct  # straight to Posts' port
    behind = blog.query.get("/", headers=front_door).get_data(as_text=True)
    assert 'data-posts-port=""' in behind and 'data-comments-port=""' in behind
