"""Property-based tests of every service's inputs: whatever arrives, the answer is a 2xx
acknowledgement or a 4xx `{"error": str}`, never a 5xx, and a refused request changes nothing.

The services run through Flask's test client, wired by the in-memory transport; one set of
apps serves a whole module, so state accumulates and each example compares snapshots.
"""
from __future__ import annotations

import json
import operator
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
from flask.testing import FlaskClient
from hypothesis.control import currently_in_test_context
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from services.bus.app import create_app as create_bus
from services.moderation.store import Rule
from services.table import load
from services.shared.events import CONTENT_MAX, NOT_BLANK, SCHEMAS, SEQ_MAX, TITLE_MAX, TYPE_MAX
from services.shared.transport import InMemoryBus
from tests.in_process import create_apps, relay

BOUNDED = settings(
    max_examples=150, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
KNOWN_POST = "known-post"  # a post Comments has heard of, so comments on it can be accepted

# Text people paste into a blog: markup for browsers, for Rich, and for terminals.
HOSTILE = [
    "<script>alert(1)</script>", "<b>bold</b> &amp; &lt;", "[red]x[/red]", "[link=https://example.com]x[/link]",
    "[bold", "\x1b[31mred\x1b[0m", "\x1b]8;;https://example.com\x07x\x1b]8;;\x07", "\x00", "\u202eevil",
    "é", "🙂", "名前", "a\r\nb", "\t", " ", "", "null", "{}", "'; DROP TABLE posts; --",
]
huge_text = st.builds(operator.mul, st.sampled_from(["x", "é", "🙂", "<b>", "\x1b[31m"]), st.integers(0, 70_000))
texts = st.one_of(st.text(max_size=300), st.sampled_from(HOSTILE), huge_text)
ids = st.from_regex(r"\A[A-Za-z0-9_-]{1,64}\Z")
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40),
)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
anything = st.one_of(json_values, texts, ids)
valid_texts = st.one_of(st.text(min_size=1, max_size=TITLE_MAX), st.sampled_from(HOSTILE)).filter(
    lambda t: 0 < len(t) <= TITLE_MAX and re.search(NOT_BLANK, t)  # the services' own blank rule
)
envelope = {"id": ids, "seq": st.integers(1, SEQ_MAX), "source": st.text(max_size=100), "time": st.text(max_size=40)}


def event_of(type_: st.SearchStrategy, data: st.SearchStrategy) -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries({"type": type_, "data": data}, optional={**envelope, "extra": json_values})


valid_events = st.one_of(
    event_of(st.just("PostCreated"), st.fixed_dictionaries(
        {"id": ids, "title": valid_texts}, optional={"extra": json_values})),
    event_of(st.just("CommentCreated"), st.fixed_dictionaries(
        {"id": ids, "content": valid_texts, "postId": st.one_of(ids, st.just(KNOWN_POST))},
        optional={"extra": json_values})),
    # Types this system does not know are acknowledged and ignored, whatever their data.
    event_of(st.text(min_size=1, max_size=TYPE_MAX).filter(lambda t: t not in SCHEMAS), json_values),
)


def broken(event: dict) -> st.SearchStrategy[dict]:
    """`event` with one thing wrong: a field missing or of any other type, in the envelope or the data."""
    def without(mapping: dict) -> st.SearchStrategy[dict]:
        return st.sampled_from(sorted(mapping)).map(lambda key: {k: v for k, v in mapping.items() if k != key})

    def replaced(mapping: dict) -> st.SearchStrategy[dict]:
        return st.tuples(st.sampled_from(sorted(mapping)), anything).map(lambda kv: {**mapping, kv[0]: kv[1]})

    options = [without(event), replaced(event)]
    if isinstance(event["data"], dict) and event["data"]:
        options += [f(event["data"]).map(lambda data: {**event, "data": data}) for f in (without, replaced)]
    return st.one_of(options)


# Anything at all: present or missing fields, of any type.
arbitrary_events = st.fixed_dictionaries({}, optional={
    "type": st.one_of(st.sampled_from(list(SCHEMAS)), st.text(max_size=120), json_values),
    "data": anything, **{k: st.one_of(v, anything) for k, v in envelope.items()},
})
events = st.one_of(valid_events, valid_events.flatmap(broken), arbitrary_events)


def as_json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


event_bodies = st.one_of(
    events.map(as_json),
    st.lists(st.one_of(valid_events, events), max_size=4).map(as_json),
    json_values.map(as_json),
    st.binary(max_size=200),  # mostly not JSON at all
    st.text(max_size=200).map(str.encode),
)


def object_bodies(field: str) -> st.SearchStrategy[bytes]:
    """POST /posts and comment bodies: the right field, a wrong one, missing, extra, or no object."""
    return st.one_of(
        st.fixed_dictionaries({field: valid_texts}, optional={"extra": json_values}).map(as_json),
        st.fixed_dictionaries({}, optional={field: anything, "extra": json_values}).map(as_json),
        json_values.map(as_json),
        st.binary(max_size=200),
    )


@dataclass
class Blog:
    posts: FlaskClient
    comments: FlaskClient
    query: FlaskClient
    bus: FlaskClient
    apps: dict

    def client(self, service: str) -> FlaskClient:
        return getattr(self, service)

    def snapshot(self) -> dict:
        """Everything a request could change, in every service."""
        def health(client: FlaskClient, *fields: str) -> dict:
            answer = client.get("/health").json
            return {f: answer[f] for f in fields}

        return {
            "posts": self.posts.get("/posts").json,
            "posts health": health(self.posts, "posts", "outbox_pending"),
            "comments health": health(self.comments, "known_posts", "comments", "outbox_pending"),
            "comments on the known post": self.comments.get(f"/posts/{KNOWN_POST}/comments").json,
            "query": self.query.get("/posts").get_data(),
            "query health": health(self.query, "applied_seq", "posts", "comments"),
            "bus": health(self.bus, "last_seq", "subscribers"),
            "dead letters": self.bus.get("/dead-letters").json,
        }

    def relay(self) -> None:
        relay(self.apps)


@pytest.fixture(scope="module")
def blog(tmp_path_factory) -> Blog:
    config = load({"BLOG_DATA_DIR": str(tmp_path_factory.mktemp("property"))})
    transport = InMemoryBus()
    # The bus's delivery threads are never started: nothing leaves the process.
    apps = {**create_apps(config, transport), "bus": create_bus(config)}
    clients = {name: app.test_client() for name, app in apps.items()}
    known = {"type": "PostCreated", "data": {"id": KNOWN_POST, "title": "known"}}
    assert clients["comments"].post("/events", json=known).status_code == 200
    return Blog(*(clients[name] for name in ("posts", "comments", "query", "bus")), apps=apps)


def send(client: FlaskClient, path: str, body: bytes):
    return client.post(path, data=body, content_type="application/json")


def assert_acknowledged_or_refused_without_effect(response, blog: Blog, before: dict) -> bool:
    """True for a 2xx; for anything else, require a 4xx JSON error and no change anywhere."""
    if currently_in_test_context():  # the plain (non-hypothesis) tests share this check
        event(f"answered {response.status_code}")  # shown by --hypothesis-show-statistics
    assert response.status_code < 500, response.get_data()[:500]
    if 200 <= response.status_code < 300:
        return True
    assert 400 <= response.status_code < 500, response.status_code
    assert response.is_json, response.get_data()[:200]
    assert set(response.json) == {"error"} and isinstance(response.json["error"], str) and response.json["error"]
    assert blog.snapshot() == before
    return False


def strictly_json(raw: bytes) -> Any:
    """Parse as RFC 8259 JSON: no NaN or Infinity."""
    def refuse(constant: str):
        raise ValueError(f"{constant} is not JSON")
    return json.loads(raw, parse_constant=refuse)


@pytest.mark.parametrize("service", ["posts", "comments", "query", "bus"])
@BOUNDED
@given(body=event_bodies)
def test_post_events_acknowledges_or_refuses_with_a_json_4xx_and_refusals_change_nothing(blog, service, body):
    before = blog.snapshot()
    response = send(blog.client(service), "/events", body)
    if assert_acknowledged_or_refused_without_effect(response, blog, before):
        assert response.is_json
    if service == "bus":  # the log stays JSON that any client can read
        strictly_json(blog.bus.get(f"/events?after={before['bus']['last_seq']}").get_data())


@BOUNDED
@given(body=object_bodies("title"))
@example(body=b'{"title": "[red]x[/red]"}')
@example(body=b'{"title": 3}')
@example(body=b'{"title": "ok", "title2": "extra"}')
def test_post_posts_creates_exactly_what_was_asked_or_refuses_with_no_effect(blog, body):
    before = blog.snapshot()
    response = send(blog.posts, "/posts", body)
    if assert_acknowledged_or_refused_without_effect(response, blog, before):
        assert response.status_code == 201
        created = response.json
        assert created["title"] == json.loads(body)["title"]
        assert blog.posts.get("/posts").json[created["id"]] == created
        assert blog.posts.get("/health").json["outbox_pending"] == before["posts health"]["outbox_pending"] + 1


@BOUNDED
@given(post_id=st.one_of(st.just(KNOWN_POST), st.one_of(ids, st.text(min_size=1, max_size=80))),
       body=object_bodies("content"))
@example(post_id=KNOWN_POST, body=b'{"content": "\\u001b[31m"}')
@example(post_id="never-heard-of", body=b'{"content": "hi"}')
def test_post_comments_creates_exactly_what_was_asked_or_refuses_with_no_effect(blog, post_id, body):
    before = blog.snapshot()
    response = send(blog.comments, f"/posts/{quote(post_id, safe='')}/comments", body)
    if assert_acknowledged_or_refused_without_effect(response, blog, before):
        assert response.status_code == 201  # a post Comments knows (KNOWN_POST, or one an event told it of)
        assert response.json[-1]["content"] == json.loads(body)["content"]
        assert blog.comments.get(f"/posts/{quote(post_id, safe='')}/comments").json == response.json
        assert blog.comments.get("/health").json["comments"] == before["comments health"]["comments"] + 1


@BOUNDED
@given(title=valid_texts, content=valid_texts)
@example(title="<h1>Hi</h1><script>alert('x')</script>", content="[red]x[/red]")
@example(title="[bold red]loud[/bold red] [link=https://example.com]here[/link]", content="\x1b[31mred\x1b[0m")
@example(title="\x1b[2J\x1b[H\x1b[31mcleared\x1b[0m", content="<img src=x onerror=alert(1)>")
def test_titles_and_comments_with_markup_and_escapes_are_stored_and_served_as_given(blog, title, content):
    assert len(content) <= CONTENT_MAX
    post = blog.posts.post("/posts", json={"title": title})
    assert post.status_code == 201, post.json
    assert post.json["title"] == title and blog.posts.get("/posts").json[post.json["id"]]["title"] == title
    blog.relay()  # through the in-memory bus to Comments and Query
    comments = blog.comments.post(f"/posts/{post.json['id']}/comments", json={"content": content})
    assert comments.status_code == 201, comments.json
    assert comments.json[0]["status"] == "pending"
    blog.relay()  # and through Moderation: decided, as the default rule says
    status = Rule(load({}).settings["moderation"].reject).decide(content)
    assert blog.query.get("/posts").json[post.json["id"]] == {
        "id": post.json["id"], "title": title,
        "comments": [{"id": comments.json[0]["id"], "content": content, "status": status}],
    }


# Inputs that break a service today: each test fails while the bug is there (see the reasons).

DEEP = b"[" * 5000 + b"]" * 5000  # 10 KB: under every body limit, nested past Python's recursion limit


@pytest.mark.parametrize("service, path", [
    ("posts", "/events"), ("comments", "/events"), ("query", "/events"), ("bus", "/events"),
    ("posts", "/posts"), ("comments", f"/posts/{KNOWN_POST}/comments"),
])
def test_deeply_nested_json_is_a_400(blog, service, path):
    before = blog.snapshot()
    response = send(blog.client(service), path, DEEP)
    assert response.status_code == 400 and "error" in response.json
    assert blog.snapshot() == before


def test_an_unknown_event_holding_a_lone_surrogate_is_logged_or_refused_not_a_500(blog):
    before = blog.snapshot()
    response = send(blog.bus, "/events", b'{"type": "SomethingElse", "data": "\\ud800"}')
    if assert_acknowledged_or_refused_without_effect(response, blog, before):
        strictly_json(blog.bus.get(f"/events?after={before['bus']['last_seq']}").get_data())


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_the_log_never_serves_nan_or_infinity(blog, constant):
    before = blog.snapshot()
    response = send(blog.bus, "/events", b'{"type": "SomethingElse", "data": {"x": ' + constant + b"}}")
    if assert_acknowledged_or_refused_without_effect(response, blog, before):
        strictly_json(blog.bus.get(f"/events?after={before['bus']['last_seq']}").get_data())
