"""Moderation's rule and every handler on its path, on real SQLite, without HTTP: decided once,
announced once, and an update that overtakes its comment is neither lost nor undone."""
from __future__ import annotations

import pytest

from services.comments.store import SCHEMA as COMMENTS_SCHEMA
from services.comments.store import CommentStore
from services.moderation.store import SCHEMA as MODERATION_SCHEMA
from services.moderation.store import ModerationStore, Rule
from services.query.view import SCHEMA as QUERY_SCHEMA
from services.query.view import QueryView
from services.shared import outbox
from services.shared.db import Database
from services.shared.events import CommentCreated, CommentModerated, CommentUpdated, Event, PostCreated
from services.table import load


def logged(data, seq: int) -> Event:
    event = Event.of(data)
    return Event(event.type, event.data, event.id, event.source, event.time, seq)


def queued(db: Database) -> list[dict]:
    import json

    return [json.loads(row["event"]) for row in db.connection().execute("SELECT event FROM outbox ORDER BY pos")]


def rejected_words(env: dict[str, str]) -> tuple[str, ...]:
    return load(env).settings["moderation"].reject


@pytest.mark.parametrize("content, status", [
    ("I like apples", "approved"), ("I like oranges", "rejected"), ("ORANGE juice", "rejected"), ("or ange", "approved"),
])
def test_the_course_rule_rejects_orange_in_any_case(content, status):
    assert Rule(rejected_words({})).decide(content) == status


def test_the_rejected_words_are_moderations_own_setting():
    words = rejected_words({"BLOG_MODERATION_REJECT": " Spam, EGGS ,, "})
    assert words == ("spam", "eggs")
    decided = [Rule(words).decide(c) for c in ("spam!", "green eggs", "orange")]
    assert decided == ["rejected", "rejected", "approved"]
    assert Rule(rejected_words({"BLOG_MODERATION_REJECT": ""})).decide("orange") == "approved"
    assert not hasattr(load({}), "moderation_reject")  # not a field of the shared settings any more


@pytest.fixture
def moderation(tmp_path) -> ModerationStore:
    return ModerationStore(Database(tmp_path / "moderation.db", MODERATION_SCHEMA), Rule(["orange"]))


def test_each_comment_is_decided_and_announced_once(moderation):
    comments = [logged(CommentCreated(id=f"c{i}", content=text, postId="p1"), i)
                for i, text in enumerate(["fine", "an orange", "also fine"], 1)]
    moderation.apply(comments)
    moderation.apply(comments)  # redelivered
    moderation.apply(comments[1:], from_log=True)  # and read again from the log
    decisions = queued(moderation.db)
    assert [(e["type"], e["data"]) for e in decisions] == [
        ("CommentModerated", {"id": "c1", "postId": "p1", "status": "approved", "content": "fine"}),
        ("CommentModerated", {"id": "c2", "postId": "p1", "status": "rejected", "content": "an orange"}),
        ("CommentModerated", {"id": "c3", "postId": "p1", "status": "approved", "content": "also fine"}),
    ]
    assert moderation.decided() == {"approved": 2, "rejected": 1}
    assert moderation.applied_seq == 3


def test_a_comment_published_already_decided_is_left_alone(moderation):
    moderation.apply([logged(CommentCreated(id="c1", content="orange", postId="p1", status="approved"), 1)])
    assert queued(moderation.db) == [] and moderation.decided() == {"approved": 0, "rejected": 0}


def test_a_course_comment_without_a_status_is_moderated(moderation):
    raw = {"type": "CommentCreated", "data": {"id": "c1", "content": "orange", "postId": "p1"}}
    moderation.apply([Event.from_dict(raw)])
    assert [e["data"]["status"] for e in queued(moderation.db)] == ["rejected"]


def test_comments_store_a_decision_once_and_announce_it_once(tmp_path):
    store = CommentStore(Database(tmp_path / "comments.db", COMMENTS_SCHEMA))
    store.apply([logged(PostCreated(id="p1", title="t"), 1)])
    [comment] = store.create("p1", "hello")
    assert comment["status"] == "pending"
    decision = logged(CommentModerated(id=comment["id"], postId="p1", status="approved", content="hello"), 3)
    store.apply([decision])
    store.apply([decision])  # redelivered
    store.apply([logged(CommentModerated(id=comment["id"], postId="p1", status="rejected", content="hello"), 4)])
    assert store.for_post("p1") == [{"id": comment["id"], "content": "hello", "status": "approved"}]
    events = queued(store.db)
    assert [e["type"] for e in events] == ["CommentCreated", "CommentUpdated"]
    assert events[0]["data"]["status"] == "pending"
    assert events[1]["data"] == {"id": comment["id"], "postId": "p1", "status": "approved", "content": "hello"}


def test_a_decision_on_a_comment_comments_never_had_changes_nothing(tmp_path):
    store = CommentStore(Database(tmp_path / "comments.db", COMMENTS_SCHEMA))
    store.apply([logged(CommentModerated(id="ghost", postId="p1", status="approved", content="x"), 1)])
    assert outbox.pending(store.db) == 0


@pytest.fixture
def view(tmp_path) -> QueryView:
    return QueryView(Database(tmp_path / "query.db", QUERY_SCHEMA))


def test_an_update_changes_status_content_and_etag_once(view):
    view.apply([logged(PostCreated(id="p1", title="t"), 1),
                logged(CommentCreated(id="c1", content="hi", postId="p1"), 2)])
    before = view.render()
    assert view.as_dict()["p1"]["comments"] == [{"id": "c1", "content": "hi", "status": "pending"}]
    update = logged(CommentUpdated(id="c1", postId="p1", status="rejected", content="hi!"), 4)
    view.apply([update])
    after = view.render()
    assert after.etag != before.etag
    assert view.as_dict()["p1"]["comments"] == [{"id": "c1", "content": "hi!", "status": "rejected"}]
    view.apply([update])  # redelivered: nothing changes, not even the version
    assert view.render() is after


def test_an_update_before_its_comment_is_kept_and_not_taken_back_to_pending(view, tmp_path):
    view.apply([logged(PostCreated(id="p1", title="t"), 1)])
    view.apply([Event.of(CommentUpdated(id="c2", postId="p1", status="approved", content="second"))])  # pushed, no seq
    view.apply([logged(CommentCreated(id="c1", content="first", postId="p1"), 2)])
    assert [(c["id"], c["status"]) for c in view.as_dict()["p1"]["comments"]] == [("c1", "pending"), ("c2", "approved")]
    view.apply([logged(CommentCreated(id="c2", content="second", postId="p1"), 3)], from_log=True)
    view.apply([Event.of(CommentUpdated(id="c2", postId="p1", status="pending", content="second"))])
    expected = {"p1": {"id": "p1", "title": "t", "comments": [
        {"id": "c1", "content": "first", "status": "pending"}, {"id": "c2", "content": "second", "status": "approved"},
    ]}}
    assert view.as_dict() == expected
    reloaded = QueryView(Database(tmp_path / "query.db", QUERY_SCHEMA))  # SQLite says the same as the mirror
    assert reloaded.as_dict() == expected


def test_a_database_from_before_statuses_gets_the_column(tmp_path):
    old = Database(tmp_path / "comments.db", "CREATE TABLE comments (pos INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE,"
                   " post_id TEXT NOT NULL, content TEXT NOT NULL); INSERT INTO comments (id, post_id, content)"
                   " VALUES ('c1', 'p1', 'old');")
    old.close()
    store = CommentStore(Database(tmp_path / "comments.db", COMMENTS_SCHEMA))
    assert store.for_post("p1") == [{"id": "c1", "content": "old", "status": "pending"}]
