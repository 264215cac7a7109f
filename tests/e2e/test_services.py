"""The services as real processes on free ports: delivery, failure and recovery.

Tests marked `on_both_transports` run one body on the HTTP bus and on RabbitMQ.
"""
from __future__ import annotations

import threading
import uuid

import pytest

from blogctl.client import BlogClient, ServiceError
from services.table import spec
from tests.helpers import create_comment, create_post, on_both_transports, view, wait_until, writers

pytestmark = pytest.mark.slow


@on_both_transports
def test_a_post_and_a_comment_reach_query(formation):
    formation.start()
    post = create_post(formation, "over HTTP")
    comments = create_comment(formation, post["id"], "a comment")
    assert comments[0]["status"] == "pending"
    expected = {post["id"]: {**post, "comments": [{**comments[0], "status": "approved"}]}}
    wait_until(lambda: view(formation) == expected, message="the view to show the post and its comment")


@on_both_transports
def test_query_serves_everything_with_posts_and_comments_killed(formation):
    formation.start()
    posts = [create_post(formation, f"post {i}") for i in range(5)]
    for post in posts:
        create_comment(formation, post["id"], f"on {post['title']}")
    wait_until(lambda: all_published(formation), message="every comment decided and published")
    wait_until(lambda: [c["status"] for p in view(formation).values() for c in p["comments"]] == ["approved"] * 5)
    before = view(formation)

    formation.kill("posts")
    formation.kill("comments")
    # Writes fail clearly: one line naming the service, its address and what to do; nothing half-done.
    for service, write in (("posts", lambda: formation.client.create_post("while down")),
                           ("comments", lambda: formation.client.create_comment(posts[0]["id"], "while down"))):
        with pytest.raises(ServiceError) as failed:
            write()
        assert str(failed.value) == (f"{service} service is not reachable at {formation.client.address(service)} "
                                     "— is it running? try `blogctl up`")
    assert view(formation) == before
    assert [p["title"] for p in before.values()] == [f"post {i}" for i in range(5)]


def all_published(formation) -> bool:
    """Every outbox is empty, and every comment decided: nothing more is coming."""
    decided = all(c["status"] != "pending" for post in view_of_writers(formation) for c in post)
    outboxes = [formation.health(name)["outbox_pending"] for name in ("posts", "comments", "moderation")]
    return decided and outboxes == [0, 0, 0]


def view_of_writers(formation) -> list[list[dict]]:
    return [formation.client.comments(post_id) for post_id in formation.client.posts()]


def held_for_query(formation) -> int:
    """The events after the first that reach Query: every event, or only its types on a transport that filters."""
    filters = formation.inspection.describe().filters_by_type
    return sum(not filters or e["type"] in spec("query").consumes for e in formation.logged()[1:])


@on_both_transports
def test_a_restarted_query_catches_up_exactly(formation):
    formation.start()
    create_post(formation, "seen live")
    wait_until(lambda: len(view(formation)) == 1)
    formation.kill("query")

    missed = [create_post(formation, f"missed {i}") for i in range(30)]
    create_comment(formation, missed[0]["id"], "also missed")
    wait_until(lambda: all_published(formation), message="every event to be published")
    assert formation.backlog("query") == held_for_query(formation)  # kept for it while it is down

    formation.start("query")
    wait_until(lambda: len(view(formation)) == 31, message="query to catch up")
    current = view(formation)
    assert list(current)[1:] == [p["id"] for p in missed]
    assert current[missed[0]["id"]]["comments"][0]["content"] == "also missed"
    wait_until(lambda: formation.health("query")["applied_seq"] == len(formation.logged()),
               message="query to have read the log")
    wait_until(lambda: formation.backlog("query") == 0, message="query's backlog to drain")
    assert view(formation) == current


@on_both_transports
def test_a_query_with_an_empty_data_directory_rebuilds_the_whole_view_from_the_log(formation, tmp_path):
    formation.start()
    posts = [create_post(formation, f"post {i}") for i in range(20)]
    for post in posts[::2]:
        create_comment(formation, post["id"], f"on {post['title']}")
    wait_until(lambda: all_published(formation), message="every comment decided and published")
    wait_until(lambda: [c["status"] for p in view(formation).values() for c in p["comments"]] == ["approved"] * 10)
    before = view(formation)
    formation.kill("query")

    fresh = tmp_path / "fresh-query"
    fresh.mkdir()
    formation.service_env["query"] = {"BLOG_DATA_DIR": str(fresh)}
    formation.start("query")
    wait_until(lambda: view(formation) == before, message="the new query to rebuild the view from the first event")
    assert list(view(formation)) == [p["id"] for p in posts]
    wait_until(lambda: formation.health("query")["applied_seq"] == len(formation.logged()) == 50)


@on_both_transports
def test_posts_created_while_the_transport_is_down_are_delivered_when_it_returns(formation):
    formation.start()
    with formation.transport_down():
        posts = [create_post(formation, f"outbox {i}") for i in range(10)]
        assert formation.health("posts")["outbox_pending"] == 10
    wait_until(lambda: [p["id"] for p in view(formation).values()] == [p["id"] for p in posts], timeout=30)
    # The bus delivers as soon as it has logged; the relay empties the outbox once the bus has answered.
    wait_until(lambda: formation.health("posts")["outbox_pending"] == 0, message="an empty outbox")


def test_bus_killed_mid_burst_loses_no_acknowledged_event_and_logs_none_twice(formation):
    formation.start()
    acknowledged: dict[str, str] = {}  # event id -> post id
    unacknowledged: list[dict] = []
    lock = threading.Lock()
    burst_started = threading.Event()

    def publish(client: BlogClient, worker: int, i: int) -> None:
        post_id = uuid.uuid4().hex[:12]
        event = {"id": uuid.uuid4().hex, "type": "PostCreated", "data": {"id": post_id, "title": f"t{worker}.{i}"}}
        try:
            client.request("bus", "POST", "/events", json=event, timeout=5)
        except ServiceError:
            with lock:
                unacknowledged.append(event)
            return
        with lock:
            acknowledged[event["id"]] = post_id
            if len(acknowledged) >= 300:
                burst_started.set()

    publishers = writers(formation, 4, 500, publish)
    assert burst_started.wait(30)
    formation.kill("bus")  # SIGKILL in the middle of the burst
    publishers.join(60)
    assert unacknowledged, "the kill should have interrupted the burst"
    formation.start("bus")

    # Publishers retry what was not acknowledged, as the outbox relay does: the same ids.
    for event in unacknowledged:
        formation.client.request("bus", "POST", "/events", json=event)
        acknowledged[event["id"]] = event["data"]["id"]

    log = formation.logged()
    logged_ids = [e["id"] for e in log]
    assert len(logged_ids) == len(set(logged_ids)) == len(acknowledged) == 2000
    assert set(logged_ids) == set(acknowledged)
    assert [e["seq"] for e in log] == list(range(1, 2001))

    def delivered_to_all() -> bool:
        return all(s["cursor"] == 2000 for s in formation.health("bus")["subscribers"])

    wait_until(delivered_to_all, timeout=60, message="every subscriber to reach the end of the log")
    current = view(formation)
    assert len(current) == 2000 and set(current) == set(acknowledged.values())


def streams_of(formation) -> tuple[int, int]:
    """The bus's open streams, and those of them Query's deliverer counts (it pushes nothing meanwhile)."""
    health = formation.health("bus")
    query = next(s for s in health["subscribers"] if s["name"] == "query")
    return health["streams"], query["streaming"]


def test_query_follows_the_bus_log_as_a_stream_and_again_after_the_bus_restarts(formation):
    formation.start()
    wait_until(lambda: streams_of(formation) == (1, 1), message="query to open its stream of the log")
    before = [create_post(formation, f"streamed {i}") for i in range(5)]
    wait_until(lambda: list(view(formation)) == [p["id"] for p in before], message="the posts to reach query")
    wait_until(lambda: formation.backlog("query") == 0, message="query to acknowledge what it applied")

    formation.kill("bus")
    formation.start("bus")
    wait_until(lambda: streams_of(formation) == (1, 1), message="query to stream again from its position")
    after = [create_post(formation, f"after {i}") for i in range(5)]
    wait_until(lambda: list(view(formation)) == [p["id"] for p in before + after], message="the rest to reach query")
    wait_until(lambda: formation.health("query")["applied_seq"] == len(formation.logged()) == 10)
    wait_until(lambda: formation.backlog("query") == 0, message="query's backlog to drain")
