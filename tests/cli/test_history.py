"""`blogctl query --at` and `--diff`: the view replayed from the log as it was at a point of it."""
from __future__ import annotations

from datetime import datetime, timedelta

from blogctl import history


def write(cli) -> tuple[dict, list[dict]]:
    """A post (seq 1), a comment on it (2), its decision (3) and update (4), a second post (5)."""
    post = cli.json("post", "create", "First")
    comments = cli.json("comment", "create", post["id"], "hello")
    cli.ok("post", "create", "Second")
    return post, comments


def test_query_at_a_position_shows_the_view_as_it_was_then(cli):
    post, [comment] = write(cli)
    assert cli.json("query", "--at", "0") == {}
    at_two = cli.json("query", "--at", "2")
    assert list(at_two) == [post["id"]]
    assert at_two[post["id"]]["comments"] == [{**comment, "status": "pending"}]
    assert cli.json("query", "--at", "4")[post["id"]]["comments"][0]["status"] == "approved"
    assert cli.json("query", "--at", "5") == cli.json("query")  # the end of the log: what Query shows now
    out = cli.ok("query", "--at", "2").stdout
    assert "Query view at seq 2: 1 post, 1 comment" in out and "hello" in out and "pending" in out


def test_query_at_a_time_takes_the_events_logged_by_then(cli, blog):
    write(cli)
    logged = cli.json("events")["events"]
    assert cli.json("query", "--at", logged[-1]["time"]) == cli.json("query")
    later = (datetime.fromisoformat(logged[-1]["time"]) + timedelta(days=1)).isoformat()
    assert cli.json("query", "--at", later) == cli.json("query")


def test_positions_outside_the_log_are_one_line(cli):
    write(cli)
    result = cli("query", "--at", "99")
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: position 99 is past the end of the log: it ends at seq 5"
    result = cli("query", "--at", "2000-01-01T00:00:00")
    assert result.exit_code == 1 and "nothing was logged by 2000-01-01T00:00:00: the first event (seq 1)" in result.stderr
    assert "neither a sequence number nor an ISO time" in cli("query", "--at", "yesterday").stderr
    assert cli("query", "--at", "1", "--diff", "1", "2").exit_code == 2


def test_query_diff_says_what_changed_between_two_positions(cli):
    post, [comment] = write(cli)
    changes = cli.json("query", "--diff", "1", "5")
    assert changes["from"] == 1 and changes["to"] == 5
    assert [p["title"] for p in changes["posts_added"]] == ["Second"]
    assert changes["comments_added"] == [{"post_id": post["id"], **comment, "status": "approved"}]
    assert changes["statuses_changed"] == []
    moderated = cli.json("query", "--diff", "2", "4")
    assert moderated["statuses_changed"] == [{"post_id": post["id"], "id": comment["id"], "content": "hello",
                                              "from": "pending", "to": "approved"}]
    out = cli.ok("query", "--diff", "2", "4").stdout
    assert "Query view from seq 2 to seq 4: 0 posts added, 0 comments added, 1 status changed" in out
    assert "pending -> approved" in out


def test_one_replay_serves_positions_in_any_order_across_pages(cli, monkeypatch):
    post, _ = write(cli)
    whole = cli.json("query", "--at", "3")
    monkeypatch.setattr(history, "PAGE", 2)  # several pages, as a long log would be read
    assert cli.json("query", "--at", "3") == whole
    changes = cli.json("query", "--diff", "5", "1")  # backwards: what the later view has that the earlier lacks
    assert (changes["from"], changes["to"]) == (5, 1)
    assert changes["posts_added"] == [] and changes["comments_added"] == []
