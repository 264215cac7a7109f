"""The order of need from the service table, `up` refusing a bad restart setting before starting anything, and
`reload` with nothing to apply it."""
from __future__ import annotations

from blogctl.steps import start_order


def test_the_bus_first_then_the_consumers_then_who_only_emits():
    assert start_order(["posts", "comments", "query", "moderation", "bus"]) == [
        ["bus"], ["comments", "query", "moderation"], ["posts"]]


def test_a_replica_starts_with_its_service_and_other_entries_come_last():
    assert start_order(["worker", "posts", "query.2", "query"]) == [["query.2", "query"], ["posts"], ["worker"]]


def test_only_the_names_started_are_ordered():
    assert start_order(["posts"]) == [["posts"]]
    assert start_order(["moderation", "comments"]) == [["moderation", "comments"]]  # consumers: one phase


def test_up_refuses_a_bad_restart_setting_before_starting_anything(cli, blog):
    blog.running.discard("posts")
    result = cli("up", "--detach", env={"BLOG_RESTART": "sometimes"})
    assert result.exit_code == 1
    assert result.stderr == "error: bad configuration: BLOG_RESTART='sometimes' is not one of on-failure, always, no\n"
    assert "posts" not in blog.running


def test_reload_says_in_one_line_when_nothing_would_apply_it(cli, blog):
    result = cli("reload")  # the services run (in this process), but no `up` or `blogctl supervise` watches them
    assert result.exit_code == 1
    assert result.stderr.startswith("error: nothing watches the formation in ")
    assert "`blogctl up --detach` starts its watcher" in result.stderr and len(result.stderr.splitlines()) == 1
    blog.running.clear()
    result = cli("reload")
    assert result.exit_code == 1
    assert result.stderr == f"error: no formation is up in {blog.config.data_dir} — start one with `blogctl up`\n"
