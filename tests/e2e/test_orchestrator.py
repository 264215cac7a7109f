"""blogctl as a local orchestrator, through real processes: the order of need, subsets, restart, wait."""
from __future__ import annotations

import json
import uuid

import pytest

from services.shared.config import SERVICES
from services.shared.transport.rabbitmq import RabbitTransport
from tests.e2e.test_cli import blogctl  # noqa: F401 - the fixture: a blogctl on free ports that cleans up
from tests.helpers import BROKER_URL, broker_missing, port_is_listening

pytestmark = pytest.mark.slow


def test_up_starts_a_subset_in_order_and_wait_names_what_is_not_healthy(blogctl):
    out = blogctl("up", "--detach", "posts", "query").stdout
    assert "Start order: query → posts" in out  # Posts emits what Query handles: Query first
    assert set(blogctl.recorded_pids()) == {"posts", "query"}
    assert not any(port_is_listening(blogctl.ports[name]) for name in ("bus", "comments", "moderation"))

    assert "healthy: posts, query" in blogctl("wait", "posts", "query", "--timeout", "5").stdout
    error = blogctl("wait", "--timeout", "1", expect=1).stderr
    assert error.strip() == ("error: not healthy after 1s: bus (not running); comments (not running); "
                             "moderation (not running)")
    assert json.loads(blogctl("wait", "query", "comments", "--timeout", "0", "--json", expect=1).stdout) == {
        "healthy": ["query"], "unhealthy": {"comments": "not running"}}

    pids = blogctl.recorded_pids()
    assert f"restarted query (pid {pids['query']} → " in blogctl("restart", "query").stdout
    after = blogctl.recorded_pids()
    assert after["query"] != pids["query"] and after["posts"] == pids["posts"]  # only what was named

    out = blogctl("up", "--detach").stdout  # the rest, in order; what runs is left alone
    assert "Start order: bus → comments, moderation" in out and "Already running: posts, query" in out
    assert blogctl.recorded_pids()["query"] == after["query"]
    blogctl("wait", "--timeout", "10")

    blogctl("kill", "posts")
    error = blogctl("wait", "posts", "--timeout", "0.5", expect=1).stderr
    assert error.strip() == "error: not healthy after 0.5s: posts (not running)"
    blogctl("down")
    blogctl.assert_nothing_left()


def test_up_with_replicas_orders_each_replica_with_its_service(blogctl):
    out = blogctl("up", "--detach", "--replicas", "query=2").stdout
    assert "Start order: bus → comments, query, query.2, moderation → posts" in out
    assert set(blogctl.recorded_pids()) == {*SERVICES, "query.2"}
    blogctl("wait", "query.2", "--timeout", "10")
    pids = blogctl.recorded_pids()
    assert "restarted query.2" in blogctl("restart", "query.2").stdout
    assert blogctl.recorded_pids()["query.2"] != pids["query.2"]
    blogctl("down")
    blogctl.assert_nothing_left()


@pytest.mark.rabbitmq
def test_on_rabbitmq_the_broker_comes_first_and_a_subset_runs(blogctl):
    if reason := broker_missing():
        pytest.skip(reason)
    blogctl.env["BLOG_BROKER_NAMESPACE"] = namespace = f"test{uuid.uuid4().hex[:10]}"
    try:
        out = blogctl("up", "--detach", "--broker", BROKER_URL, "posts", "query").stdout
        assert "Start order: RabbitMQ → query → posts" in out
        assert set(blogctl.recorded_pids()) == {"posts", "query"}
        blogctl("wait", "--timeout", "5", "posts", "query")
        out = blogctl("up", "--detach").stdout  # the recorded broker: no bus process to start
        assert "Start order: RabbitMQ → comments, moderation" in out
        blogctl("wait", "--timeout", "10")
        blogctl("down")
        blogctl.assert_nothing_left()
    finally:
        RabbitTransport(BROKER_URL, namespace=namespace).reset()


def test_up_says_in_one_line_when_the_broker_does_not_answer(blogctl):
    error = blogctl("up", "--detach", "--timeout", "1", "--broker", "amqp://guest:guest@127.0.0.1:1//",
                    expect=1).stderr
    assert error.startswith("error: RabbitMQ at amqp://guest:***@127.0.0.1:1// did not answer within 1s (")
    assert len(error.splitlines()) == 1
    blogctl.assert_nothing_left()
