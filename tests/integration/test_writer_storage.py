"""The writers' storage contract, run on SQLite and on PostgreSQL alike: a write and its event
commit together, the relay moves the outbox to the bus, applying an event twice (or from two
replicas at once) changes nothing the second time."""
from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from services.comments.store import SCHEMA as COMMENTS_SCHEMA
from services.comments.store import CommentStore, UnknownPost
from services.moderation.store import SCHEMA as MODERATION_SCHEMA
from services.moderation.store import ModerationStore, Rule
from services.posts.app import create_app as create_posts
from services.posts.store import SCHEMA as POSTS_SCHEMA
from services.posts.store import PostStore
from services.shared import outbox
from services.table import load
from services.shared.postgres import writer_database
from services.shared.events import CommentCreated, CommentModerated, PostCreated
from services.shared.transport import InMemoryBus
from tests.helpers import free_port, postgres_admin
from tests.unit.test_moderation import logged, queued


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def open_db(request, tmp_path):
    """Open a writer's storage as its service does (`writer_database`), on the engine of the run;
    each call opens another (a replica's), all closed after the test."""
    env = {"BLOG_DATA_DIR": str(tmp_path)}
    if request.param == "postgres":
        env["BLOG_DATABASE_URL"] = request.getfixturevalue("postgres_url")
    config = load(env)
    opened = []

    def open_(service: str, schema: str):
        opened.append(writer_database(config, service, schema))
        return opened[-1]

    yield open_
    for db in opened:
        db.close()


def test_a_post_and_its_event_commit_together_and_the_relay_publishes_it(open_db):
    db = open_db("posts", POSTS_SCHEMA)
    store, bus = PostStore(db), InMemoryBus()
    post = store.create("hello")
    assert store.all() == {post["id"]: post} and store.count() == 1
    assert outbox.pending(db) == 1
    relay = outbox.Relay(db, bus.transport("posts"))
    assert relay.relay_once() == 1
    assert outbox.pending(db) == 0 and relay.relay_once() == 0
    assert [(e.type, e.data) for e in bus.log] == [("PostCreated", post)]


def test_a_new_id_that_is_taken_is_tried_again_with_another(open_db, monkeypatch):
    store = PostStore(open_db("posts", POSTS_SCHEMA))
    ids = iter(["aaaaaaaa", "aaaaaaaa", "bbbbbbbb"])
    monkeypatch.setattr("services.shared.db.secrets.token_hex", lambda n: next(ids))
    first, second = store.create("one"), store.create("two")
    assert (first["id"], second["id"]) == ("aaaaaaaa", "bbbbbbbb")
    assert store.count() == 2 and outbox.pending(store.db) == 2  # the collided attempt left nothing behind


def test_a_comment_on_an_unknown_post_writes_nothing(open_db):
    store = CommentStore(open_db("comments", COMMENTS_SCHEMA))
    with pytest.raises(UnknownPost):
        store.create("p1", "too early")
    assert store.count() == (0, 0) and outbox.pending(store.db) == 0
    store.apply([logged(PostCreated(id="p1", title="t"), 1)])
    [comment] = store.create("p1", "now")
    assert comment["status"] == "pending" and store.count() == (1, 1)
    assert [e["type"] for e in queued(store.db)] == ["CommentCreated"]


def test_events_applied_twice_change_nothing_the_second_time(open_db):
    comments = CommentStore(open_db("comments", COMMENTS_SCHEMA))
    post = logged(PostCreated(id="p1", title="t"), 1)
    comments.apply([post])
    comments.apply([post], from_log=True)
    [comment] = comments.create("p1", "an orange")
    decision = logged(CommentModerated(id=comment["id"], postId="p1", status="rejected", content="an orange"), 3)
    comments.apply([decision])
    comments.apply([decision])
    assert comments.count() == (1, 1) and comments.applied_seq == 1  # seq 3 came with a gap: position kept
    assert comments.for_post("p1") == [{**comment, "status": "rejected"}]
    assert [e["type"] for e in queued(comments.db)] == ["CommentCreated", "CommentUpdated"]

    moderation = ModerationStore(open_db("moderation", MODERATION_SCHEMA), Rule(["orange"]))
    created = logged(CommentCreated(id="c1", content="fine", postId="p1"), 1)
    moderation.apply([created])
    moderation.apply([created], from_log=True)
    assert moderation.decided() == {"approved": 1, "rejected": 0} and moderation.applied_seq == 1
    assert [e["data"]["status"] for e in queued(moderation.db)] == ["approved"]


def apply_from_two_replicas(replicas: list, events: list, batch: int = 5) -> None:
    """Each replica applies every event, in batches, at the same time as the other (as when events come
    twice: a replica's catch-up beside the group's pushes, a batch sent again to the other member)."""
    start = threading.Barrier(len(replicas))
    errors = []

    def run(store) -> None:
        start.wait()
        try:
            for i in range(0, len(events), batch):
                store.apply(events[i:i + batch])
        except Exception as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(store,)) for store in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []


def test_two_moderation_replicas_decide_each_comment_once(open_db):
    replicas = [ModerationStore(open_db("moderation", MODERATION_SCHEMA), Rule(["orange"])) for _ in range(2)]
    events = [logged(CommentCreated(id=f"c{i}", content="orange" if i % 3 else "fine", postId=f"p{i % 4}"), i)
              for i in range(1, 61)]
    apply_from_two_replicas(replicas, events)
    decisions = queued(replicas[0].db)
    assert sorted(e["data"]["id"] for e in decisions) == sorted(f"c{i}" for i in range(1, 61))  # one CommentModerated each
    assert replicas[0].decided() == {"approved": 20, "rejected": 40}
    assert replicas[0].applied_seq == replicas[1].applied_seq == 60


def test_two_comments_replicas_announce_each_decision_once(open_db):
    replicas = [CommentStore(open_db("comments", COMMENTS_SCHEMA)) for _ in range(2)]
    replicas[0].apply([logged(PostCreated(id="p1", title="t"), 1)])
    ids = [replicas[i % 2].create("p1", f"comment {i}")[-1]["id"] for i in range(30)]
    decisions = [logged(CommentModerated(id=cid, postId="p1", status="approved", content="x"), i)
                 for i, cid in enumerate(ids, 2)]
    apply_from_two_replicas(replicas, [logged(PostCreated(id="p1", title="t"), 1), *decisions])
    updated = [e["data"]["id"] for e in queued(replicas[1].db) if e["type"] == "CommentUpdated"]
    assert sorted(updated) == sorted(ids)
    assert {c["status"] for c in replicas[1].for_post("p1")} == {"approved"} and replicas[1].count() == (1, 30)


def test_a_groups_batches_to_either_replica_move_the_one_position_they_share_beside_a_catch_up(open_db):
    """A group's delivery on the HTTP bus: one cursor, each batch to one replica (here in turn), while the
    other replica's catch-up reads the same log from the shared position: no gap is seen, the position
    ends at the log's end, and each comment is decided once."""
    replicas = [ModerationStore(open_db("moderation", MODERATION_SCHEMA), Rule(["orange"])) for _ in range(2)]
    events = [logged(CommentCreated(id=f"c{i}", content="orange" if i % 2 else "fine", postId="p1"), i)
              for i in range(1, 101)]
    start, gaps = threading.Barrier(2), []

    def pushes() -> None:
        start.wait()
        gaps.extend(replicas[(i // 5) % 2].apply(events[i:i + 5]) for i in range(0, 100, 5))

    def catch_up() -> None:
        start.wait()
        for i in range(0, 100, 20):
            replicas[1].apply(events[i:i + 20], from_log=True)

    threads = [threading.Thread(target=pushes), threading.Thread(target=catch_up)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert gaps == [False] * 20
    assert replicas[0].applied_seq == replicas[1].applied_seq == 100
    assert sorted(e["data"]["id"] for e in queued(replicas[0].db)) == sorted(f"c{i}" for i in range(1, 101))
    assert replicas[0].decided() == {"approved": 50, "rejected": 50}


def test_a_writer_whose_database_cannot_be_reached_says_so_in_one_line(tmp_path):
    env = {**os.environ, "BLOG_DATA_DIR": str(tmp_path), "BLOG_POSTS_PORT": str(free_port()),
           "BLOG_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/blog"}  # nothing listens there
    started = subprocess.run([sys.executable, "-m", "services.posts"], env=env, capture_output=True, text=True,
                             timeout=60)
    assert started.returncode == 1
    [line] = started.stderr.splitlines()
    assert line.startswith("posts: cannot start: connection failed: ") and "127.0.0.1" in line


@pytest.mark.postgres
def test_a_lost_connection_is_a_503_and_the_next_request_connects_again(tmp_path, postgres_url):
    app = create_posts(load({"BLOG_DATA_DIR": str(tmp_path), "BLOG_DATABASE_URL": postgres_url}),
                       transport=InMemoryBus().transport("posts"))
    client = app.test_client()  # requests in this thread: one connection, the one cut below
    assert client.post("/posts", json={"title": "before"}).status_code == 201
    database = postgres_url.rsplit("/", 1)[1]
    postgres_admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'")
    lost = client.post("/posts", json={"title": "while cut"})
    assert lost.status_code == 503 and lost.get_json()["error"].startswith("posts storage is unavailable (")
    assert "\n" not in lost.get_json()["error"]
    assert client.post("/posts", json={"title": "after"}).status_code == 201
    assert sorted(post["title"] for post in client.get("/posts").get_json().values()) == ["after", "before"]


@pytest.mark.parametrize("inline", ["before-answer", "after-answer"])
def test_a_write_request_publishes_its_event_itself_when_told_to(tmp_path, inline):
    """BLOG_PUBLISH_INLINE: the event is on the bus once the request is over, published by the
    request (the relay thread runs, but is made to publish nothing)."""
    from services.shared.components import components

    bus = InMemoryBus()
    app = create_posts(load({"BLOG_DATA_DIR": str(tmp_path), "BLOG_PUBLISH_INLINE": inline}), bus.transport("posts"))
    relay = components(app)["relay"]
    relay.step = lambda: 0
    relay.start()
    try:
        with app.test_client() as client:
            response = client.post("/posts", json={"title": "at once"})
            response.close()  # the WSGI close, as waitress calls it once the answer is written
        assert response.status_code == 201
        assert [e.data for e in bus.log] == [response.json]
        assert outbox.pending(relay.db) == 0
    finally:
        relay.stop()
