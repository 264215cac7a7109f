"""Replicas of the writers on PostgreSQL: a formation with BLOG_DATABASE_URL and two processes each of
Posts, Comments and Moderation, writes spread over both, one Moderation replica SIGKILLed between
two rounds of comments, one Posts replica SIGKILLed in the middle of a burst. Every acknowledged
write reaches Query, and each write made exactly one event. On the HTTP bus and on RabbitMQ: the
replicas of a writer are one consumer (one bus cursor, one queue), so the group handles each event
once, and what follows a member's death reaches the member left."""
from __future__ import annotations

import threading
from collections import Counter

import pytest

from blogctl.client import BlogClient
from blogctl.top import Samples
from services.table import load
from tests.helpers import RunningBlog, free_port, on_both_transports, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

REPLICAS = ("posts.2", "comments.2", "moderation.2")
WORKERS, EACH = 8, 30


def replica_client(formation: RunningBlog) -> BlogClient:
    """blogctl's client with Posts and Comments at their second replicas' ports."""
    ports = {f"BLOG_{s.upper()}_PORT": str(p) for s, p in formation.ports.items()}
    ports |= {f"BLOG_{r.split('.')[0].upper()}_PORT": str(formation.ports[r]) for r in REPLICAS}
    return BlogClient(load(ports), timeout=10)


def handled(formation: RunningBlog, processes: list[str], type: str) -> dict[str, int]:
    """How many events of `type` each of `processes` applied (its `blog_events_applied_total`)."""
    return {process: int(Samples(formation.client.metrics(process)).by("blog_events_applied_total", "type").get(type, 0))
            for process in processes}


def comment_on(post_id: str, client: BlogClient, text: str) -> tuple[str, str]:
    """A comment made through `client`: its id and the status Moderation must give it."""
    comment = client.create_comment(post_id, text, wait=10)[-1]
    return comment["id"], "rejected" if "orange" in text else "approved"


def once_each(formation: RunningBlog, type: str) -> Counter:
    """How many events of `type` the log holds for each id. (An event published again, by a relay killed
    between the transport's acknowledgement and its commit, keeps its event id: the HTTP bus logs it once,
    a RabbitMQ stream twice, and consumers apply it once. Distinct event ids are distinct writes.)"""
    return Counter(data_id for _, data_id in {(e["id"], e["data"]["id"]) for e in formation.logged(type)})


@on_both_transports
def test_writer_replicas_share_postgresql_and_a_killed_one_loses_no_acknowledged_write(tmp_path, postgres_url,
                                                                                      transport):
    formation = RunningBlog(tmp_path, {"BLOG_DATABASE_URL": postgres_url,
                                       "BLOG_REPLICAS": "posts=2,comments=2,moderation=2"}, transport=transport)
    for replica in REPLICAS:
        formation.ports[replica] = free_port()
        formation.env[f"BLOG_{replica.replace('.', '_').upper()}_PORT"] = str(formation.ports[replica])
    clients = [formation.client, replica_client(formation)]
    try:
        formation.start()
        assert {formation.health(r)["instance"] for r in REPLICAS} == set(REPLICAS)

        # One subscription for each writer's replicas at the transport; Query's own.
        subscriptions = [entry.get("service", entry["name"]) for entry in formation.inspection.backlog()]
        assert {"comments", "moderation"} <= set(subscriptions)
        assert not {"comments.2", "moderation.2"} & set(subscriptions)

        # Writes over both replicas of each: a post through one, comments on it through both.
        expected: dict[str, str] = {}  # comment id -> the status Moderation must give it
        posts = [clients[i % 2].create_post(f"post {i}")["id"] for i in range(6)]
        for i, post_id in enumerate(posts):
            for client in clients:
                expected.update([comment_on(post_id, client, f"comment {i} {'orange' if i % 3 == 0 else 'kiwi'}")])

        def moderated() -> bool:
            statuses = {c["id"]: c["status"] for p in formation.client.view().values() for c in p["comments"]}
            return statuses == expected

        wait_until(moderated, timeout=30, message="every comment to reach Query, moderated as the rule says")
        # Each CommentCreated moderated once by Moderation's two replicas together, each decision applied
        # once by Comments' two.
        moderation, comments = (formation.client.config.replicas(service) for service in ("moderation", "comments"))
        assert sum(handled(formation, moderation, "CommentCreated").values()) == len(expected)
        assert sum(handled(formation, comments, "CommentModerated").values()) == len(expected)

        # The Moderation replica that took the last comment goes (SIGKILL): the next comments reach the other.
        by_replica = handled(formation, moderation, "CommentCreated")
        gone = max(by_replica, key=by_replica.get)
        formation.kill(gone)
        left = next(process for process in by_replica if process != gone)
        for i, post_id in enumerate(posts):
            expected.update([comment_on(post_id, clients[i % 2], f"after {i} {'orange' if i % 2 else 'kiwi'}")])
        wait_until(moderated, timeout=30, message=f"the comments after {gone} went to reach Query, moderated")
        assert handled(formation, [left], "CommentCreated")[left] == by_replica[left] + len(posts)
        assert sum(handled(formation, comments, "CommentModerated").values()) == len(expected)
        comments = list(expected)

        # A burst of posts over both Posts replicas; posts.2 is SIGKILLed once a third is acknowledged.
        acknowledged: list[str] = []
        failed: list[str] = []

        def write(worker: int) -> None:
            client = BlogClient(clients[worker % 2].config, timeout=10)
            for i in range(EACH):
                try:
                    acknowledged.append(client.create_post(f"burst {worker}.{i}")["id"])
                except Exception as exc:  # noqa: BLE001 - a request in flight or refused while posts.2 is down
                    failed.append(f"{type(exc).__name__}: {exc}")
            client.close()

        threads = [threading.Thread(target=write, args=(w,)) for w in range(WORKERS)]
        for thread in threads:
            thread.start()
        wait_until(lambda: len(acknowledged) >= WORKERS * EACH // 3, timeout=60, message="a third of the burst")
        formation.kill("posts.2")
        for thread in threads:
            thread.join(120)
        assert failed, "posts.2 was killed mid-burst: the writes sent to it after must fail"
        assert len(acknowledged) + len(failed) == WORKERS * EACH

        # Every post stored (acknowledged, or committed by posts.2 as it died) reaches Query, relayed by
        # whichever replica is left; none is in the log twice.
        stored = formation.client.posts()
        assert set(acknowledged) <= set(stored)
        wait_until(lambda: set(formation.client.view()) == set(stored), timeout=30,
                   message="Query to hold every stored post")
        assert once_each(formation, "PostCreated") == Counter(set(stored))
        assert once_each(formation, "CommentCreated") == Counter(set(comments))
        assert once_each(formation, "CommentModerated") == Counter(set(comments))
        assert once_each(formation, "CommentUpdated") == Counter(set(comments))
        assert sorted(c["id"] for post in formation.client.view().values() for c in post["comments"]) == sorted(comments)
    finally:
        for client in clients:
            client.close()
        formation.stop()
        formation.remove_broker_objects()
