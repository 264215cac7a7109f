import json

import pytest

from services.query.view import SCHEMA, QueryView
from services.shared.db import Database
from services.shared.events import CommentCreated, Event, PostCreated


def logged(event: Event, seq: int) -> Event:
    return Event(event.type, event.data, event.id, event.source, event.time, seq)


@pytest.fixture
def view(tmp_path):
    db = Database(tmp_path / "query.db", SCHEMA)
    yield QueryView(db)
    db.close()


@pytest.fixture
def history():
    return [
        logged(Event.of(PostCreated(id="p1", title="first")), 1),
        logged(Event.of(CommentCreated(id="c1", content="a", postId="p1")), 2),
        logged(Event.of(PostCreated(id="p2", title="second")), 3),
        logged(Event.of(CommentCreated(id="c2", content="b", postId="p1")), 4),
        logged(Event("CommentModerated", {"id": "c1"}), 5),
    ]


EXPECTED = {
    "p1": {"id": "p1", "title": "first", "comments": [
        {"id": "c1", "content": "a", "status": "pending"}, {"id": "c2", "content": "b", "status": "pending"},
    ]},
    "p2": {"id": "p2", "title": "second", "comments": []},
}


def test_assembles_posts_with_their_comments_in_creation_order(view, history):
    view.apply(history)
    assert view.as_dict() == EXPECTED
    assert list(view.as_dict()) == ["p1", "p2"]
    assert view.applied_seq == 5


def test_redelivered_events_change_nothing(view, history):
    view.apply(history)
    before = view.render()
    view.apply(history)
    view.apply(history[1:3])
    assert view.as_dict() == EXPECTED
    assert view.render() is before  # no change, so not even a new rendering


def test_out_of_order_events_give_the_same_view(view, history):
    for event in reversed(history):
        view.apply([event])
    assert view.as_dict() == EXPECTED
    assert list(view.as_dict()) == ["p1", "p2"]


def test_a_comment_before_its_post_waits_for_the_post(view):
    view.apply([logged(Event.of(CommentCreated(id="c1", content="early", postId="p9")), 2)])
    assert view.as_dict() == {}
    view.apply([logged(Event.of(PostCreated(id="p9", title="late")), 1)])
    assert view.as_dict()["p9"]["comments"] == [{"id": "c1", "content": "early", "status": "pending"}]


def test_pushed_events_move_the_position_only_without_a_gap(view, history):
    assert view.apply(history[:2]) is False
    assert view.applied_seq == 2
    assert view.apply(history[3:4]) is True  # seq 4 after 2: seq 3 is missing
    assert view.applied_seq == 2
    assert view.apply(history[2:3]) is False
    assert view.applied_seq == 3


def test_a_read_of_the_log_moves_the_position_to_its_end(view, history):
    view.apply(history[3:], from_log=True)
    assert view.applied_seq == 5


def test_rendering_is_cached_per_version_and_changes_with_the_view(view, history):
    view.apply(history[:2])
    first = view.render()
    assert view.render() is first
    assert json.loads(first.body) == {"p1": {"id": "p1", "title": "first", "comments": [EXPECTED["p1"]["comments"][0]]}}
    view.apply(history[2:3])
    second = view.render()
    assert second.etag != first.etag
    assert "p2" in json.loads(second.body)


def test_the_view_and_its_position_survive_a_restart(tmp_path, history):
    db = Database(tmp_path / "q.db", SCHEMA)
    QueryView(db).apply(history)
    db.close()
    again = QueryView(Database(tmp_path / "q.db", SCHEMA))
    assert again.as_dict() == EXPECTED
    assert again.applied_seq == 5


def test_pages_are_cut_from_the_same_version_and_cached(view, history):
    view.apply(history)
    page = view.render(0, 1)
    assert json.loads(page.body) == {"p1": EXPECTED["p1"]} and page.total == 2
    assert view.render(0, 1) is page
    assert json.loads(view.render(1, 1).body) == {"p2": EXPECTED["p2"]}
    view.apply([logged(Event.of(PostCreated(id="p3", title="third")), 6)])
    assert view.render(0, 1) is not page and view.render(0, 1).total == 3


def test_a_page_read_from_the_log_gives_what_its_events_give_one_by_one(tmp_path):
    """The fast path (rows straight from each logged event's data) against the handlers, event by event:
    posts, comments with and without a status, updates before and after their comment, redeliveries,
    a traced event, a type Query does not handle."""
    traced = "00-" + "1" * 32 + "-" + "2" * 16 + "-01"
    raw = [
        {"type": "CommentUpdated", "data": {"id": "c3", "postId": "p1", "status": "approved", "content": "early"}},
        {"type": "PostCreated", "data": {"id": "p1", "title": "first", "extra": 1}},
        {"type": "CommentCreated", "data": {"id": "c1", "content": "a", "postId": "p1"}},
        {"type": "CommentCreated", "data": {"id": "c2", "content": "b", "postId": "p2", "status": "pending"}},
        {"type": "CommentModerated", "data": {"id": "c1", "postId": "p1", "status": "rejected", "content": "a"}},
        {"type": "CommentUpdated", "data": {"id": "c1", "postId": "p1", "status": "rejected", "content": "a"}},
        {"type": "PostCreated", "data": {"id": "p2", "title": "second"}, "traceparent": traced},
        {"type": "CommentCreated", "data": {"id": "c3", "content": "early", "postId": "p1"}},
        {"type": "CommentUpdated", "data": {"id": "c2", "postId": "p2", "status": "pending", "content": "b"}},
        {"type": "PostCreated", "data": {"id": "p1", "title": "first"}},
    ]
    log = [Event.logged({**e, "id": f"e{seq}", "time": "2026-12-03T00:00:00.000Z", "seq": seq})
           for seq, e in enumerate(raw, start=1)]
    by_page, one_by_one = (QueryView(Database(tmp_path / name, SCHEMA)) for name in ("page.db", "each.db"))
    by_page.apply(log[:6], from_log=True)
    by_page.apply(log[4:], from_log=True)  # a page read again from an earlier position
    for event in log:
        one_by_one.apply([Event.from_dict(event.to_dict())])  # validated, through the handlers
    assert by_page.as_dict() == one_by_one.as_dict()
    assert by_page.as_dict()["p1"]["comments"] == [
        {"id": "c1", "content": "a", "status": "rejected"}, {"id": "c3", "content": "early", "status": "approved"},
    ]
    assert by_page.applied_seq == one_by_one.applied_seq == len(log)
    tables = "SELECT * FROM posts ORDER BY id", "SELECT * FROM comments ORDER BY id"
    assert [[tuple(r) for r in by_page.db.connection().execute(q)] for q in tables] == [
        [tuple(r) for r in one_by_one.db.connection().execute(q)] for q in tables]


def test_the_views_writing_threads_get_a_larger_page_cache_than_other_stores(view, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from services.query.view import VIEW_CACHE_KIB
    from services.shared.db import PAGE_CACHE_KIB

    def cache_of(db: Database) -> int:  # as a catch-up or delivery thread opens its connection
        with ThreadPoolExecutor(1) as thread:
            return thread.submit(lambda: db.connection().execute("PRAGMA cache_size").fetchone()[0]).result()

    other = Database(tmp_path / "other.db", SCHEMA)
    assert cache_of(view.db) == -VIEW_CACHE_KIB and cache_of(other) == -PAGE_CACHE_KIB != -VIEW_CACHE_KIB
    other.close()
