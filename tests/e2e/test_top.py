"""`blogctl top --once` and `blogctl query --at` on a real formation, on the HTTP bus and on RabbitMQ
(one formation per transport for the module)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT, RunningBlog, broker_missing, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=["http", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
def formation(request, tmp_path_factory):
    if request.param == "rabbitmq" and (reason := broker_missing()):
        pytest.skip(reason)
    running = RunningBlog(tmp_path_factory.mktemp(request.param), transport=request.param)
    try:
        running.start()
        post = running.client.create_post("seen by top")
        comments = running.client.create_comment(post["id"], "and its comment", wait=10)
        decided = [{**c, "status": "approved"} for c in comments]
        wait_until(lambda: running.client.view().get(post["id"], {}).get("comments") == decided, timeout=20)
        yield running
    finally:
        running.stop()
        running.remove_broker_objects()


def blogctl(formation: RunningBlog, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("FORCE_COLOR", "PY_COLORS", "GITHUB_ACTIONS", "TTY_COMPATIBLE", "BLOG_BROKER_URL")}
    env.update(formation.env, COLUMNS="200")
    result = subprocess.run([sys.executable, "-m", "blogctl", *args], env=env, cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and "Traceback" not in result.stderr, (args, result.stdout, result.stderr)
    return result


def test_top_once_shows_every_process_its_consumers_and_the_latest_events(formation):
    out = blogctl(formation, "top", "--once").stdout
    for name in formation.services:
        assert name in out
    assert "CommentUpdated" in out and "Consumers" in out

    frame = json.loads(blogctl(formation, "top", "--once", "--json").stdout)
    rows = {row["name"]: row for row in frame["services"]}
    assert set(rows) == set(formation.services)
    assert all(row["health"] == "ok" and row["pid"] and row["memory_mib"] > 0 for row in rows.values())
    assert all(row["cpu_percent"] is not None for row in rows.values())  # two scrapes: real rates
    assert {"comments", "moderation", "query"} <= {row["name"] for row in frame["consumers"]}
    assert all(row["waiting"] == 0 for row in frame["consumers"])
    assert [e["type"] for e in frame["events"]][-4:] == [
        "PostCreated", "CommentCreated", "CommentModerated", "CommentUpdated"]


def test_query_at_replays_the_log_of_either_transport(formation):
    view = json.loads(blogctl(formation, "query", "--json").stdout)
    [post_id] = view
    at_two = json.loads(blogctl(formation, "query", "--at", "2", "--json").stdout)
    assert at_two[post_id]["comments"][0]["status"] == "pending"
    assert json.loads(blogctl(formation, "query", "--at", "4", "--json").stdout) == view
    changes = json.loads(blogctl(formation, "query", "--diff", "2", "4", "--json").stdout)
    assert [(c["from"], c["to"]) for c in changes["statuses_changed"]] == [("pending", "approved")]
