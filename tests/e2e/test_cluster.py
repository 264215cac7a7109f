"""A three-node RabbitMQ cluster of the tests' own: a node stopped in the middle of a burst of
writes loses nothing that was confirmed, and the cluster is whole again once it is back.

Quorum queues and streams confirm a message once a majority of their replicas has it, so with
one node of three gone the formation goes on; kombu's failover address list moves every
connection to a surviving node.
"""
from __future__ import annotations

import pytest

from services.table import CONSUMERS
from tests.e2e.test_faults import assert_burst_arrived_once, start_burst
from tests.helpers import RunningBlog, wait_until
from tests.rabbit_cluster import RabbitCluster, cluster_missing

pytestmark = [pytest.mark.slow, pytest.mark.rabbitmq]


@pytest.fixture(scope="module")
def cluster():
    if reason := cluster_missing():
        pytest.skip(reason)
    running = RabbitCluster(size=3).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def formation(tmp_path, cluster):
    running = RunningBlog(tmp_path, transport="rabbitmq", broker_url=cluster.url)
    try:
        yield running
    finally:
        running.stop()
        running.remove_broker_objects()


def test_a_node_stopped_mid_burst_loses_no_confirmed_write_and_rejoins(cluster, formation, say):
    burst = start_burst(formation, count=4, writes_each=495)  # 1,980 writes + 20 seed posts
    everyone = sorted(node.name for node in cluster.nodes)
    replicas = cluster.replicas(formation.namespace)
    assert set(replicas) == {f"{formation.namespace}.{q}" for q in (*CONSUMERS, "log")}
    assert all(members == everyone for members, _ in replicas.values()), replicas  # on all three nodes

    wait_until(lambda: burst.clients.done >= 400 or burst.clients.finished(), timeout=60,
               message="the burst to be under way")
    lost = cluster.nodes[0]  # the node every client connected to first: it holds the leaders
    cluster.stop_node(lost)
    say(f"stopped {lost.name} after {burst.clients.done} writes")
    wait_until(lambda: burst.clients.done >= 1200 or burst.clients.finished(), timeout=90,
               message="the burst to go on without the node")
    assert not burst.clients.finished(), f"the burst ended before the node came back: {burst.clients.errors}"
    cluster.start_node(lost)
    cluster.wait_whole()
    say(f"{lost.name} back after {burst.clients.done} writes")
    burst.clients.join(timeout=120)

    current = assert_burst_arrived_once(formation, burst)
    comments = sum(len(post["comments"]) for post in current.values())
    say(f"Query holds {len(current)} posts and {comments} comments: every confirmed write, once")
    wait_until(lambda: all(online == everyone for _, online in cluster.replicas(formation.namespace).values()),
               timeout=60, message="every queue's replicas online on all three nodes again")
