"""Faults with real processes on loopback: a killed bus, a dead Query, a rejecting or hanging
subscriber, a full or read-only disk, many concurrent clients, and a signed formation.

Tests marked `on_both_transports` run one body on the HTTP bus and on RabbitMQ; the broker
restart runs on RabbitMQ only. Every wait is bounded (wait_until, join timeouts); processes
are stopped by pid/process group.
"""
from __future__ import annotations

import errno
import json
import signal
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from blogctl.bench.load import LoadGenerator
from blogctl.client import BlogClient, ServiceError
from services.shared import outbox
from services.table import CONSUMERS, SERVICE_TABLE, SERVICES
from services.shared.signing import HEADER, sign
from services.shared.transport import RedeliveryRefused
from tests.helpers import (
    AckDroppingProxy,
    FakeSubscriber,
    RunningBlog,
    assembled_view,
    create_comment,
    create_post,
    on_both_transports,
    tmpfs,
    view,
    wait_until,
    writers,
)

pytestmark = pytest.mark.slow


def outbox_pending(formation: RunningBlog) -> int:
    return sum(formation.health(name)["outbox_pending"] for name in ("posts", "comments", "moderation"))


COMMENT_EVENTS = 3  # a comment makes three events: CommentCreated, Moderation's decision, Comments' update


def events_for(posts: int, comments: int) -> int:
    return posts + COMMENT_EVENTS * comments


def delivered_to_every_subscriber(formation: RunningBlog, posts: int, comments: int) -> bool:
    """Every outbox is empty, Query shows `posts` posts and `comments` comments, each decided, and
    nothing waits at the transport for any consumer (the bus's cursors at the end of its log, or
    RabbitMQ's queues empty: the inspection seam says which)."""
    shown = [c for post in view(formation).values() for c in post["comments"]]
    query = formation.health("query")
    return (
        outbox_pending(formation) == 0 and len(shown) == comments
        and all(c["status"] != "pending" for c in shown)
        and (query["posts"], query["comments"]) == (posts, comments)
        and all(formation.backlog(name) == 0 for name in CONSUMERS)
    )


def assert_view_is_exactly_the_services_data(formation: RunningBlog) -> dict:
    """Query's view equals Posts' posts with Comments' comments, in the same order; returns it."""
    expected = assembled_view(formation)
    current = view(formation)
    assert current == expected
    assert list(current) == list(expected)  # posts in creation order, not just the same set
    return current


def subscriber(formation: RunningBlog, name: str) -> dict:
    return next(s for s in formation.inspection.backlog() if s["name"] == name)


@dataclass
class Burst:
    """Clients writing posts and comments (a third posts) through Posts and Comments, on seed posts."""

    seeds: list[str]
    writers: int
    writes_each: int
    posts: list[str] = field(default_factory=list)
    contents: list[str] = field(default_factory=list)
    clients: LoadGenerator | None = None  # started last, once the burst exists for it to write into

    @property
    def events(self) -> int:
        return events_for(len(self.seeds) + len(self.posts), len(self.contents))


def start_burst(formation: RunningBlog, count: int, writes_each: int) -> Burst:
    formation.start()
    seeds = [create_post(formation, f"seed {i}")["id"] for i in range(20)]
    wait_until(lambda: formation.health("comments")["known_posts"] == 20, timeout=15,
               message="comments to learn the seed posts")

    def write(client: BlogClient, worker: int, i: int) -> None:
        if i % 3 == 0:
            burst.posts.append(client.create_post(f"client {worker} post {i}")["id"])
        else:
            content = f"client {worker} comment {i}"
            client.create_comment(seeds[(worker + i) % len(seeds)], content)
            burst.contents.append(content)

    burst = Burst(seeds, count, writes_each)
    burst.clients = writers(formation, count, writes_each, write)
    return burst


def assert_burst_arrived_once(formation: RunningBlog, burst: Burst) -> dict:
    """Every write reached every subscriber; the view equals the writers' own data, nothing twice."""
    posts, comments = len(burst.seeds) + len(burst.posts), len(burst.contents)
    wait_until(lambda: delivered_to_every_subscriber(formation, posts, comments), timeout=60,
               message=f"all {burst.events} events to reach every subscriber")
    current = assert_view_is_exactly_the_services_data(formation)
    assert set(current) == set(burst.seeds + burst.posts)  # every acknowledged post, once (keyed by id)
    shown = [c for p in current.values() for c in p["comments"]]
    assert len({c["id"] for c in shown}) == len(shown) == len(burst.contents)  # no comment twice
    assert sorted(c["content"] for c in shown) == sorted(burst.contents)
    return current


@pytest.fixture
def lost_acks(formation):
    """Posts and Comments publish through an AckDroppingProxy that loses every 10th acknowledgement."""
    proxy = AckDroppingProxy(formation.ports["bus"], every=10).start()
    for service in ("posts", "comments"):
        formation.service_env[service] = {"BLOG_BUS_PORT": str(proxy.port)}
    yield proxy
    proxy.stop()


def test_bus_sigkilled_while_clients_write_posts_and_comments_loses_and_duplicates_nothing(formation, lost_acks):
    burst = start_burst(formation, count=4, writes_each=520)  # 2,080 writes
    wait_until(lambda: burst.clients.done >= 500 or burst.clients.finished(), timeout=30,
               message="the burst to be under way")
    formation.kill("bus")  # SIGKILL, in the middle of the relays' publishing
    wait_until(lambda: burst.clients.done >= 1100 or burst.clients.finished(), timeout=30)
    assert not burst.clients.finished(), f"the burst ended before the bus came back: {burst.clients.errors}"
    assert outbox_pending(formation) > 0, "writes taken while the bus was down should wait in the outboxes"
    formation.start("bus")
    burst.clients.join(90)

    assert_burst_arrived_once(formation, burst)
    log = formation.logged()
    assert [e["seq"] for e in log] == list(range(1, burst.events + 1))
    assert len({e["id"] for e in log}) == burst.events  # no event logged twice
    by_type = Counter(e["type"] for e in log)
    assert by_type == {"PostCreated": len(burst.seeds) + len(burst.posts), "CommentCreated": len(burst.contents),
                       "CommentModerated": len(burst.contents), "CommentUpdated": len(burst.contents)}
    logged_posts = [e["data"]["id"] for e in log if e["type"] == "PostCreated"]
    assert sorted(logged_posts) == sorted(burst.seeds + burst.posts)  # every acknowledged post, once
    assert sorted(e["data"]["content"] for e in log if e["type"] == "CommentCreated") == sorted(burst.contents)
    assert formation.health("query")["applied_seq"] == burst.events
    # The relays sent again what the bus had committed: only the bus's dedupe by id kept it once.
    assert lost_acks.dropped >= 3, f"only {lost_acks.dropped} acknowledgements were lost"


@pytest.mark.parametrize("transport", ["rabbitmq"], indirect=True)
def test_broker_restarted_while_clients_write_posts_and_comments_loses_nothing_and_duplicates_nothing(formation):
    burst = start_burst(formation, count=4, writes_each=450)  # 1,800 writes
    wait_until(lambda: burst.clients.done >= 400 or burst.clients.finished(), timeout=30,
               message="the burst to be under way")
    with formation.transport_down():  # rabbitmqctl stop_app in the middle of the relays' publishing
        assert not burst.clients.finished(), "the burst ended before the broker went down"
        wait_until(lambda: outbox_pending(formation) > 0, timeout=10,
                   message="writes taken while the broker is down to wait in the outboxes")
    burst.clients.join(90)

    assert_burst_arrived_once(formation, burst)
    assert formation.health("comments")["known_posts"] == len(burst.seeds) + len(burst.posts)
    # The stream has every event. Confirms lost in the restart put what was in flight in twice: at most
    # one batch per relay, since a relay sends its next batch only once the last was confirmed.
    log = formation.logged()
    ids = [e["id"] for e in log]
    assert len(set(ids)) == burst.events
    relays = [spec.name for spec in SERVICE_TABLE if spec.emits]
    assert len(ids) - len(set(ids)) <= len(relays) * outbox.BATCH, f"{len(ids) - len(set(ids))} published twice"
    assert sorted({e["data"]["id"] for e in log if e["type"] == "PostCreated"}) == sorted(burst.seeds + burst.posts)


@on_both_transports
def test_query_down_during_500_posts_and_1000_comments_catches_up_to_exactly_the_same_view(formation):
    formation.start()
    formation.kill("query")

    posts: list[str] = []
    writers(formation, 4, 125, lambda client, k, i: posts.append(
        client.create_post(f"missed post {k}.{i}")["id"])).join(60)
    wait_until(lambda: formation.health("comments")["known_posts"] == 500, timeout=30,
               message="comments to learn all 500 posts")

    def comment(client: BlogClient, worker: int, i: int) -> None:
        post_id = posts[4 * (i // 2) + worker]  # worker k comments twice on every 4th post from the k-th
        client.create_comment(post_id, f"missed comment {i % 2} on {post_id}")

    writers(formation, 4, 250, comment).join(90)

    wait_until(lambda: outbox_pending(formation) == 0, timeout=30, message="every event to be published")
    # Query gets every event from a transport that does not filter by type, else only the types it
    # handles (not Moderation's decisions).
    held = events_for(500, 1000) - (1000 if formation.inspection.describe().filters_by_type else 0)
    wait_until(lambda: formation.backlog("query") == held, timeout=60, message="every event to wait for query")

    formation.start("query")
    wait_until(lambda: formation.health("query")["applied_seq"] == events_for(500, 1000), timeout=30,
               message="query to catch up")
    current = assert_view_is_exactly_the_services_data(formation)
    assert len(current) == 500 and sum(len(p["comments"]) for p in current.values()) == 1000
    assert formation.health("query")["posts"] == 500 and formation.health("query")["comments"] == 1000
    # The pushes to Query resume too (the bus after its capped backoff, or Query's queue), and change nothing.
    wait_until(lambda: formation.backlog("query") == 0, timeout=20)
    assert view(formation) == current


@pytest.fixture
def fake_subscriber():
    """Start FakeSubscribers with `fake_subscriber(respond)`; every one is stopped after the test."""
    started: list[FakeSubscriber] = []

    def start(respond: Callable[[dict], int]) -> FakeSubscriber:
        fake = FakeSubscriber(respond).start()
        started.append(fake)
        return fake

    yield start
    for fake in started:
        fake.stop()


def test_an_event_a_subscriber_keeps_rejecting_is_parked_and_redelivered_on_command(formation, fake_subscriber):
    failing = threading.Event()
    failing.set()
    fake = fake_subscriber(lambda event: 500 if failing.is_set() and event["data"]["title"] == "poison" else 200)
    formation.env.update(BLOG_SUBSCRIBERS=f"posts,comments,query,fake={fake.url}", BLOG_DELIVERY_ATTEMPTS="4")
    formation.start()
    bus = formation.inspection
    titles = ["before", "poison", "after 1", "after 2"]
    for title in titles:
        create_post(formation, title)

    wait_until(lambda: [e["data"]["title"] for e in fake.answered(200)] == ["before", "after 1", "after 2"],
               timeout=15, message="the events after the rejected one to reach the fake subscriber")
    poison_seq = next(e["seq"] for e in formation.logged() if e["data"]["title"] == "poison")
    letters = bus.dead_letters()
    assert [(d["subscriber"], d["seq"], d["attempts"]) for d in letters] == [("fake", poison_seq, 4)]
    assert "HTTP 500" in letters[0]["error"] and letters[0]["event"]["data"]["title"] == "poison"
    status = subscriber(formation, "fake")
    assert status["dead_letters"] == 1 and status["cursor"] == len(titles)

    tries = fake.arrivals(lambda event: event["data"]["title"] == "poison")
    assert [t.status for t in tries] == [500] * 4  # `attempts` tries, then parked: no more
    # The one retry policy: waits of 0.05 s doubling each time, plus up to 0.05 s of jitter.
    gaps = [later.at - earlier.at for earlier, later in zip(tries, tries[1:])]
    floors = [0.05 * 2**k for k in range(len(gaps))]
    assert all(floor <= gap < floor + 0.05 + 0.5 for floor, gap in zip(floors, gaps)), (
        f"retries should back off exponentially from 0.05 s (floors {floors}), gaps were {gaps}")
    # The other subscribers were not held up by it.
    wait_until(lambda: [p["title"] for p in view(formation).values()] == titles, timeout=10)

    with pytest.raises(RedeliveryRefused, match="stays a dead letter"):
        bus.redeliver("fake", poison_seq)
    assert len(bus.dead_letters("fake")) == 1

    failing.clear()
    bus.redeliver("fake", poison_seq)  # returns once the subscriber took it
    assert [e["seq"] for e in fake.answered(200)][-1] == poison_seq
    assert bus.dead_letters() == []
    assert subscriber(formation, "fake")["dead_letters"] == 0
    with pytest.raises(LookupError, match=f"no dead letter {poison_seq} for fake"):
        bus.redeliver("fake", poison_seq)


def test_a_hanging_subscriber_times_out_and_slows_no_other(formation, fake_subscriber):
    def hang(event: dict) -> int:
        fake.release.wait(30)  # far longer than BLOG_DELIVERY_TIMEOUT, until the test lets go
        return 200

    fake = fake_subscriber(hang)
    # The hanging subscriber first: a bus that delivered in turn would hold every other up by the timeout.
    formation.env.update(BLOG_SUBSCRIBERS=f"hang={fake.url},posts,comments,query", BLOG_DELIVERY_TIMEOUT="3")
    formation.start()

    latencies = []
    for i in range(8):
        started = time.monotonic()
        post = create_post(formation, f"while hanging {i}")
        wait_until(lambda: post["id"] in view(formation), timeout=10, interval=0.01)
        latencies.append(time.monotonic() - started)
    # Half the delivery timeout: one wait behind the hanging subscriber would fail this.
    assert max(latencies) < 1.5, f"write-to-view latencies with a hanging subscriber: {latencies}"

    wait_until(lambda: "timed out" in (subscriber(formation, "hang")["last_error"] or ""), timeout=15,
               message="the bus to report the hanging subscriber's timeout")
    hanging = subscriber(formation, "hang")
    assert hanging["cursor"] == 0 and hanging["failures"] >= 1 and hanging["lag"] == 8
    assert fake.received == []  # it has answered nothing yet
    # A timeout is not a rejection: retried, never parked.
    assert formation.inspection.dead_letters() == []

    fake.release.set()  # the subscriber answers again: it gets everything, in order, at least once
    wait_until(lambda: subscriber(formation, "hang")["cursor"] == 8, timeout=20,
               message="the recovered subscriber to catch up")
    assert sorted({e["seq"] for e in fake.answered(200)}) == list(range(1, 9))
    assert subscriber(formation, "hang")["dead_letters"] == 0


@pytest.fixture
def small_disk(formation, tmp_path):
    """A 1 MiB tmpfs for the Posts data directory; unmounted after the formation is stopped."""
    with tmpfs(tmp_path / "posts-disk") as mount_point:
        try:
            yield mount_point
        finally:
            formation.stop()  # before unmounting: Posts holds its SQLite files open


def fill(disk: Path) -> Path:
    """Write a filler file until the disk refuses another byte."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as out:
        try:
            while True:
                out.write(b"\0" * 65536)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def remount(disk: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(disk)], check=True, capture_output=True)


def integrity(db: Path) -> str:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


def start_posts_on(formation: RunningBlog, disk: Path) -> None:
    formation.env["BLOG_SUBSCRIBERS"] = "posts"  # only Posts and the bus run: the test is about Posts' disk
    formation.service_env["posts"] = {"BLOG_DATA_DIR": str(disk)}
    formation.start("posts", "bus")


def refused_post(formation: RunningBlog, title: str) -> ServiceError:
    """The error of a `POST /posts` that must be refused."""
    with pytest.raises(ServiceError) as refused:
        formation.client.create_post(title)
    return refused.value


def running_since(formation: RunningBlog, service: str) -> float:
    """When (time.monotonic()) the process now answering for `service` started, by its /health uptime."""
    return time.monotonic() - formation.health(service)["uptime"]


def looked_at_after_warm_up(formation: RunningBlog, service: str) -> float:
    """A moment by which `service` has run a while, to say later that no new process took over since."""
    wait_until(lambda: formation.health(service)["uptime"] >= 0.5, timeout=5)
    return time.monotonic()


def logged_titles(formation: RunningBlog) -> list[str]:
    return [e["data"]["title"] for e in formation.logged()]


def test_a_full_data_directory_gets_a_clear_503_writes_nothing_and_recovers(formation, small_disk):
    start_posts_on(formation, small_disk)
    before = [create_post(formation, f"before {i}") for i in range(3)]
    wait_until(lambda: formation.health("posts")["outbox_pending"] == 0, timeout=10)
    looked = looked_at_after_warm_up(formation, "posts")

    filler = fill(small_disk)
    for i in range(3):
        refused = refused_post(formation, f"on a full disk {i}")
        assert refused.status == 503, refused
        assert "disk is full" in str(refused) and "nothing was written" in str(refused)
    assert formation.client.posts() == {p["id"]: p for p in before}
    assert formation.health("posts")["outbox_pending"] == 0
    assert integrity(small_disk / "posts.db") == "ok"

    filler.unlink()  # the disk has room again: no restart
    after = [create_post(formation, f"after {i}") for i in range(10)]
    assert running_since(formation, "posts") < looked, "Posts was restarted: it should recover in place"
    expected = before + after
    assert formation.client.posts() == {p["id"]: p for p in expected}
    wait_until(lambda: logged_titles(formation) == [p["title"] for p in expected], timeout=15,
               message="every acknowledged post, and none of the refused ones, to be logged")
    wait_until(lambda: formation.health("posts")["outbox_pending"] == 0, timeout=10)
    assert integrity(small_disk / "posts.db") == "ok"


def test_a_read_only_data_directory_gets_a_clear_503_writes_nothing_and_recovers(formation, small_disk):
    start_posts_on(formation, small_disk)
    before = [create_post(formation, f"before {i}") for i in range(3)]
    wait_until(lambda: formation.health("posts")["outbox_pending"] == 0, timeout=10)

    # Linux refuses to remount read-only while SQLite holds its files open for writing (EBUSY),
    # so Posts meets the read-only disk as it starts, as after a reboot onto a failing disk.
    formation.kill("posts", signal.SIGTERM)
    remount(small_disk, "ro")
    formation.start("posts")
    assert formation.client.posts() == {p["id"]: p for p in before}
    for i in range(8):  # spread over the server's threads
        refused = refused_post(formation, f"on a read-only disk {i}")
        assert refused.status == 503, refused
        assert "readonly" in str(refused) and "nothing was written" in str(refused)
    assert formation.health("posts")["posts"] == 3 and formation.health("posts")["outbox_pending"] == 0

    remount(small_disk, "rw")  # the disk is back: no restart
    assert integrity(small_disk / "posts.db") == "ok"
    looked = looked_at_after_warm_up(formation, "posts")

    after = [wait_until(lambda: formation.client.create_post("after 0"), timeout=5,
                        message="a write to succeed once the disk is writable")]
    after += [create_post(formation, f"after {i}") for i in range(1, 10)]
    assert running_since(formation, "posts") < looked, "Posts was restarted: it should recover in place"
    expected = before + after
    assert formation.client.posts() == {p["id"]: p for p in expected}
    wait_until(lambda: formation.health("posts")["outbox_pending"] == 0, timeout=10,
               message="the outbox relay to drain once the disk is writable")
    assert logged_titles(formation) == [p["title"] for p in expected]
    assert integrity(small_disk / "posts.db") == "ok"


@on_both_transports
def test_8_clients_times_250_comments_on_one_post_are_exactly_2000_everywhere(formation):
    formation.start()
    post = create_post(formation, "popular")
    wait_until(lambda: formation.health("comments")["known_posts"] == 1, timeout=10)

    writers(formation, 8, 250, lambda client, k, i: client.create_comment(
        post["id"], f"client {k} comment {i}")).join(120)

    stored = formation.client.comments(post["id"])
    assert len(stored) == 2000 and len({c["id"] for c in stored}) == 2000
    assert {c["content"] for c in stored} == {f"client {k} comment {i}" for k in range(8) for i in range(250)}
    wait_until(lambda: delivered_to_every_subscriber(formation, 1, 2000), timeout=60)
    stored = formation.client.comments(post["id"])  # decided
    assert view(formation)[post["id"]]["comments"] == stored
    assert formation.health("query")["comments"] == 2000
    logged = formation.logged(type="CommentCreated")
    assert len(logged) == 2000 and {e["data"]["id"] for e in logged} == {c["id"] for c in stored}


def test_a_signed_formation_works_end_to_end_and_refuses_unsigned_events(formation):
    formation.env["BLOG_SECRET"] = "e2e-formation-secret"
    formation.start()
    assert all(formation.health(s)["signed"] for s in SERVICES)
    post = create_post(formation, "signed all the way")
    comments = [{**c, "status": "approved"} for c in create_comment(formation, post["id"], "so is this")]
    wait_until(lambda: view(formation) == {post["id"]: {**post, "comments": comments}}, timeout=10)
    wait_until(lambda: delivered_to_every_subscriber(formation, 1, 1), timeout=10)

    intruder = json.dumps({"type": "PostCreated", "data": {"id": "intruder", "title": "unsigned"}}).encode()
    for service in SERVICES:
        for headers in ({}, {HEADER: sign("some-other-secret", intruder)}):
            with pytest.raises(ServiceError) as refused:
                formation.client.request(service, "POST", "/events", body=intruder,
                                         headers={"Content-Type": "application/json", **headers})
            assert refused.value.status == 401 and "unauthorised event" in str(refused.value), service
    assert formation.health("bus")["last_seq"] == events_for(1, 1)
    assert formation.health("comments")["known_posts"] == 1
    assert view(formation) == {post["id"]: {**post, "comments": comments}}
    with pytest.raises(ServiceError) as refused:
        formation.client.create_comment("intruder", "x")
    assert refused.value.status == 404
