"""Query replicas: `blogctl up --replicas query=2` runs Query twice, each with a port, a database
and a subscription of its own, and both serve the same view."""
from __future__ import annotations

import uuid

import pytest
import requests

from services.shared import transport as transport_module
from services.table import load
from tests.e2e.test_cli import Blogctl, blogctl  # noqa: F401 - the fixture
from tests.helpers import BROKER_URL, broker_missing, free_port, port_is_listening, wait_until

pytestmark = pytest.mark.slow

REPLICAS = ("query", "query.2")


def etag(blogctl: Blogctl, replica: str) -> str | None:
    response = requests.get(f"{blogctl.url(replica)}/posts", timeout=5)
    return response.headers["ETag"] if response.status_code == 200 else None


def same_view(blogctl: Blogctl, posts: int) -> bool:
    views = [requests.get(f"{blogctl.url(replica)}/posts", timeout=5).json() for replica in REPLICAS]
    tags = {etag(blogctl, replica) for replica in REPLICAS}
    return len(views[0]) == posts and views[0] == views[1] and len(tags) == 1


@pytest.mark.parametrize("transport", ["http", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
def test_two_query_replicas_serve_the_same_view_and_each_catches_up(blogctl, transport):  # noqa: F811
    blogctl.ports["query.2"] = free_port()
    blogctl.env["BLOG_QUERY_2_PORT"] = str(blogctl.ports["query.2"])
    up, broker = ["up", "--detach", "--replicas", "query=2"], {}
    if transport == "rabbitmq":
        if reason := broker_missing():
            pytest.skip(reason)
        blogctl.env["BLOG_BROKER_NAMESPACE"] = f"test{uuid.uuid4().hex[:10]}"
        up += ["--broker", BROKER_URL]
        broker = {"BLOG_BROKER_URL": BROKER_URL}
    seam = transport_module.from_config(load({**blogctl.env, **broker, "BLOG_REPLICAS": "query=2"}))
    try:
        blogctl(*up)
        status = blogctl.json("status")
        rows = {row["service"]: row for row in status["services"]}
        assert all(rows[replica]["healthy"] and rows[replica]["process"] == "running" for replica in REPLICAS)
        assert rows["query.2"]["port"] == blogctl.ports["query.2"]
        backlog = status[seam.describe().backlog_of]
        assert {"query", "query.2"} <= {entry.get("name", "").removeprefix(
            blogctl.env.get("BLOG_BROKER_NAMESPACE", "") + ".") for entry in backlog}

        first = blogctl.json("post", "create", "seen by both")
        blogctl.json("comment", "create", first["id"], "on both")
        wait_until(lambda: same_view(blogctl, 1), timeout=15, message="both replicas to show the post")

        # One replica down: the other serves, and the one brought back catches up to the same view.
        assert "killed query.2" in blogctl("kill", "query.2").stdout
        assert not port_is_listening(blogctl.ports["query.2"])
        for i in range(5):
            blogctl.json("post", "create", f"while query.2 is down {i}")
        wait_until(lambda: len(requests.get(f"{blogctl.url('query')}/posts", timeout=5).json()) == 6, timeout=15)
        blogctl("start", "query.2")
        wait_until(lambda: same_view(blogctl, 6), timeout=20, message="query.2 to catch up to query's view")
        health = requests.get(f"{blogctl.url('query.2')}/health", timeout=5).json()
        assert health["service"] == "query" and health["instance"] == "query.2"

        out = blogctl("down").stdout
        assert "stopped query.2 (pid" in out and "stopped query (pid" in out
        blogctl.assert_nothing_left()
    finally:
        if seam.describe().process is None:  # what the formation left outside its data directory (a broker's)
            seam.reset()
        seam.close()


def test_a_service_that_owns_its_data_cannot_have_replicas(blogctl):  # noqa: F811
    error = blogctl("up", "--detach", "--replicas", "posts=2", expect=1).stderr
    assert "posts" in error and "cannot run as replicas on SQLite" in error and "--database postgresql://" in error
    blogctl.assert_nothing_left()
