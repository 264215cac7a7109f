"""Every command's success and error paths, through CliRunner, against the in-process blog."""
from __future__ import annotations

import json

import pytest

from blogctl import __version__
from blogctl import events, lifecycle, query
from services.shared.components import components
from services.table import DEFAULT_SUBSCRIBERS, SERVICES
from tests.cli.conftest import Cli
from tests.helpers import free_port

TRICKY_TITLES = ["[red]x[/red]", "esc \x1b[31mred\x1b[0m", "[link=http://evil]click[/link]", "rtl \u202egnp.exe"]


def one_error_line(result) -> str:
    """The failure contract: exit 1, nothing on stdout, one line on stderr, no traceback."""
    assert result.exit_code == 1, (result.output, result.exception)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


# Global behaviour

def test_version(cli):
    assert cli.ok("--version").stdout.strip() == f"blogctl {__version__}"


@pytest.mark.parametrize("args", [[], ["--help"], ["post", "--help"], ["comment", "create", "--help"],
                                  ["events", "--help"], ["demo-failure", "--help"], ["kill", "--help"]])
def test_help_reads_well(cli, args):
    result = cli(*args)
    assert result.exit_code in (0, 2)  # no arguments shows help (click exits 2)
    assert "Usage: blogctl" in result.output
    assert "Traceback" not in result.output


def test_help_works_even_with_a_broken_setting(cli):
    result = cli("post", "create", "--help", env={"BLOG_POSTS_PORT": "nope"})
    assert result.exit_code == 0 and "Create a post" in result.stdout


def test_a_broken_setting_is_one_line(cli):
    line = one_error_line(cli("post", "list", env={"BLOG_POSTS_PORT": "nope"}))
    assert "BLOG_POSTS_PORT" in line and "not a port number" in line


def test_a_bad_port_option_is_a_usage_error(cli):
    result = cli("--port", "posts:5100", "status")
    assert result.exit_code == 2 and "SERVICE=PORT" in result.stderr and "Traceback" not in result.stderr


def test_an_unknown_service_is_a_usage_error(cli):
    result = cli("kill", "mailer")
    assert result.exit_code == 2 and "mailer" in result.stderr


# Real HTTP to a port nothing listens on: the client's one-line error, no traceback

@pytest.mark.parametrize("args", [["post", "list"], ["post", "create", "t"], ["comment", "list", "p1"],
                                  ["comment", "create", "p1", "c"], ["query"], ["events"]])
def test_an_unreachable_service_is_one_line_naming_it(args):
    ports = [f"--port={name}={free_port()}" for name in SERVICES]
    line = one_error_line(Cli(None)(*ports, *args))
    assert line.startswith("error: ") and "service is not reachable at 127.0.0.1:" in line
    assert "is it running? try `blogctl up`" in line


# Posts and comments

def test_post_create_and_list(cli):
    created = cli.ok("post", "create", "Hello")
    assert created.stdout.startswith("Created post ") and created.stdout.rstrip().endswith(": Hello")
    listed = cli.json("post", "list")
    assert [p["title"] for p in listed.values()] == ["Hello"]
    assert "Hello" in cli.ok("post", "list").stdout


@pytest.mark.parametrize("title", TRICKY_TITLES)
def test_user_text_is_printed_literally(cli, title):
    shown = title.replace("\x1b", "\\x1b").replace("\u202e", "\\u202e")
    post = cli.json("post", "create", title)
    assert post["title"] == title  # stored as given
    for args in (["post", "list"], ["query"], ["events"]):
        out = cli.ok(*args).stdout
        assert shown in out, args
        assert "\x1b" not in out and "\u202e" not in out
    cli.ok("comment", "create", post["id"], title)
    assert shown in cli.ok("comment", "list", post["id"]).stdout


def test_a_rejected_write_is_one_line_with_the_services_reason(cli):
    line = one_error_line(cli("post", "create", "   "))
    assert "posts service refused POST /posts (400)" in line and "blank" in line


def test_comment_create_and_list(cli):
    post = cli.json("post", "create", "P")
    out = cli.ok("comment", "create", post["id"], "first").stdout
    assert out.startswith("Added comment ") and "; it has 1 comment" in out
    comments = cli.json("comment", "create", post["id"], "second")
    assert [c["content"] for c in comments] == ["first", "second"]
    assert [c["content"] for c in cli.json("comment", "list", post["id"])] == ["first", "second"]


def test_comment_on_an_unknown_post_says_so(cli):
    line = one_error_line(cli("comment", "create", "nope", "hi", "--wait", "0.1"))
    assert "post 'nope' is not known to the comments service" in line and "blogctl post list" in line


def test_comment_waits_until_comments_has_heard_of_the_post(cli, blog):
    blog.running.discard("bus")  # the PostCreated event stays in the posts outbox for now
    post = cli.json("post", "create", "late")
    assert one_error_line(cli("comment", "create", post["id"], "too soon", "--wait", "0.05"))
    blog.running.add("bus")
    blog.relay()
    assert cli.json("comment", "create", post["id"], "now")[0]["content"] == "now"


# Reading the system

def test_query_shows_a_tree_with_counts(cli):
    post = cli.json("post", "create", "Tree")
    cli.ok("comment", "create", post["id"], "leaf")
    out = cli.ok("query").stdout
    assert "Query view: 1 post, 1 comment" in out
    assert "Tree" in out and "leaf" in out and "└──" in out
    view = cli.json("query")
    assert view[post["id"]]["comments"][0]["content"] == "leaf"


def test_events_shows_the_log_and_subscriber_cursors(cli):
    post = cli.json("post", "create", "Evented")
    cli.ok("comment", "create", post["id"], "a comment")
    out = cli.ok("events").stdout
    assert "PostCreated" in out and "CommentCreated" in out and "'Evented'" in out
    assert "Bus subscribers" in out and "query" in out
    data = cli.json("events")
    assert [e["type"] for e in data["events"]] == [
        "PostCreated", "CommentCreated", "CommentModerated", "CommentUpdated"]
    assert {s["name"] for s in data["subscribers"]} == set(DEFAULT_SUBSCRIBERS)
    only = cli.json("events", "--type", "CommentCreated")["events"]
    assert [e["type"] for e in only] == ["CommentCreated"]
    assert [e["seq"] for e in cli.json("events", "--after", "1")["events"]] == [2, 3, 4]
    assert len(cli.json("events", "--limit", "1")["events"]) == 1


def test_events_rejects_a_negative_after(cli):
    assert cli("events", "--after", "-1").exit_code == 2


@pytest.mark.parametrize("args, shown", [
    ([], ["during"]),  # from the end of the log
    (["--last", "1"], ["before 2", "during"]),
    (["--after", "0"], ["before 1", "before 2", "during"]),
])
def test_events_follow_prints_new_events_until_ctrl_c(cli, blog, monkeypatch, args, shown):
    cli.ok("post", "create", "before 1")
    cli.ok("post", "create", "before 2")
    naps = []

    def sleep(seconds):  # the user writes a post during the first wait, then presses Ctrl-C
        naps.append(seconds)
        if len(naps) == 1:
            cli.ok("post", "create", "during")
        else:
            raise KeyboardInterrupt

    monkeypatch.setattr(events.time, "sleep", sleep)
    lines = cli.ok("events", "--follow", "--json", *args).stdout.splitlines()
    assert [json.loads(line)["data"]["title"] for line in lines] == shown


def test_events_last_shows_the_latest_n(cli, monkeypatch):
    monkeypatch.setattr(events, "PAGE", 2)  # several pages, as a long log would be read
    for n in range(5):
        cli.ok("post", "create", f"post {n}")
        cli.ok("comment", "create", cli.json("post", "list").popitem()[0], f"comment {n}")
    logged = cli.json("events", "--last", "3")["events"]
    assert [e["seq"] for e in logged] == [18, 19, 20]  # each comment is followed by its decision and update
    posts = cli.json("events", "--last", "2", "--type", "PostCreated")["events"]
    assert [e["data"]["title"] for e in posts] == ["post 3", "post 4"]
    assert cli.json("events", "--last", "0")["events"] == []
    assert cli("events", "--last", "2", "--limit", "2").exit_code == 2


def test_json_output_is_json_and_nothing_else(cli, blog):
    cli.ok("post", "create", "J")
    blog.formation._log("posts", "a line")
    for args in (["post", "list"], ["query"], ["events"], ["status"], ["logs"]):
        result = cli.ok(*args, "--json")
        json.loads(result.stdout)  # the whole of stdout parses
        assert result.stderr == ""


# Running the formation

def test_status_tells_the_truth(cli, blog):
    data = cli.json("status")
    assert [s["service"] for s in data["services"]] == list(SERVICES)
    assert all(s["healthy"] and s["process"] == "running" for s in data["services"])
    assert {s["name"] for s in data["subscribers"]} == set(DEFAULT_SUBSCRIBERS)
    blog.running.discard("posts")
    data = cli.json("status")
    posts = data["services"][0]
    assert (posts["process"], posts["healthy"], posts["error"]) == ("stopped", False, "unreachable")
    out = cli.ok("status").stdout
    assert "unreachable" in out and "Bus subscribers" in out and "lag" in out


def test_status_shows_every_replica_and_the_gateway_at_its_host_and_port(cli, blog):
    extra = {"query.2": ("query", 4102), "posts.2": ("posts", 4100), "gateway": (None, None)}
    blog.formation.names += list(extra)
    blog.formation.pids.update({name: 2000 + i for i, name in enumerate(extra)})
    blog.formation.addresses["gateway"] = ("127.0.0.1", 4080)
    env = {"BLOG_REPLICAS": "query=2,posts=2", "BLOG_DATABASE_URL": "postgresql://postgres@127.0.0.1/blog",
           "BLOG_QUERY_2_HOST": "10.77.0.2", "BLOG_GATEWAY": "1"}
    rows = {row["service"]: row for row in json.loads(cli("status", "--json", env=env).stdout)["services"]}
    assert {name: row["address"] for name, row in rows.items()} == {
        "posts": "127.0.0.1:4000", "comments": "127.0.0.1:4001", "query": "127.0.0.1:4002",
        "moderation": "127.0.0.1:4003", "bus": "127.0.0.1:4005",
        "query.2": "10.77.0.2:4102", "posts.2": "127.0.0.1:4100", "gateway": "127.0.0.1:4080",
    }
    table = cli("status", env=env).stdout
    lines = {line.split()[1]: line for line in table.splitlines() if line.startswith("│")}
    assert "10.77.0.2:4102" in lines["query.2"] and "127.0.0.1:4100" in lines["posts.2"]
    assert "127.0.0.1:4080" in lines["gateway"] and "address" in table


def test_status_without_the_bus_says_subscribers_are_unknown(cli, blog):
    blog.running.discard("bus")
    assert "Bus subscribers: unknown" in cli.ok("status").stdout
    assert cli.json("status")["transport"]["error"].startswith("bus service is not reachable")


def test_up_starts_what_is_missing_and_shows_the_table(cli, blog):
    blog.running.clear()
    out = cli.ok("up", "--detach").stdout
    assert blog.running == set(SERVICES)
    assert "Services" in out and "Running in the background" in out


def test_up_refuses_a_transport_that_cannot_join_processes(cli, blog):
    blog.running.clear()
    line = one_error_line(cli("up", "--detach", "--broker", "memory://x"))
    assert "memory://x carries events only inside one process" in line
    assert blog.running == set()


def test_up_database_keeps_the_writers_in_postgresql_for_the_formation(cli, blog):
    blog.running.clear()
    line = one_error_line(cli("up", "--detach", "--database", "mysql://root@db/blog"))
    assert "BLOG_DATABASE_URL=mysql://... is not a PostgreSQL URL" in line and blog.running == set()
    line = one_error_line(cli("up", "--detach", "--replicas", "posts=2"))
    assert "replicas of the writers need PostgreSQL (--database postgresql://...)" in line and blog.running == set()
    cli.ok("up", "--detach", "--database", "postgresql://postgres@127.0.0.1/blog")
    recorded = json.loads((blog.config.run_dir / "formation.json").read_text())
    assert recorded == {"BLOG_DATABASE_URL": "postgresql://postgres@127.0.0.1/blog"}  # status, kill, start see it too


def test_up_when_already_up_changes_nothing(cli, blog):
    pids = dict(blog.formation.pids)
    out = cli.ok("up").stdout  # foreground too: nothing to start, nothing to stream
    assert "already up; nothing changed" in out
    assert blog.formation.pids == pids


def test_up_names_the_service_that_failed_with_its_log_and_stops_the_rest(cli, blog):
    blog.running.clear()
    blog.formation.broken.add("comments")
    result = cli("up", "--detach")
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    first, *tail = result.stderr.splitlines()
    assert first.startswith("error: comments failed to start")
    assert any("address in use" in line for line in tail)
    assert blog.running == set()  # nothing half-started is left behind


def test_down_stops_everything_and_is_idempotent(cli, blog):
    out = cli.ok("down").stdout
    assert blog.running == set()
    assert "stopped posts (pid" in out
    assert "Nothing was running" in cli.ok("down").stdout


def test_kill_leaves_the_others_running(cli, blog):
    out = cli.ok("kill", "posts", "comments").stdout
    assert "killed posts" in out and "SIGKILL" in out
    assert blog.running == set(SERVICES) - {"posts", "comments"}
    assert "--- stopped with SIGKILL ---" in blog.formation.tail("posts")
    cli.ok("kill", "--signal", "TERM", "query")
    assert "--- stopped with SIGTERM ---" in blog.formation.tail("query")


def test_kill_of_a_stopped_service_is_an_error(cli, blog):
    blog.running.discard("posts")
    assert "posts not running — nothing to kill" in one_error_line(cli("kill", "posts"))


def test_start_brings_a_single_service_back(cli, blog):
    blog.running.discard("posts")
    out = cli.ok("start", "posts", "query").stdout
    assert "query is already running" in out
    assert "posts" in blog.running and "running" in out


def test_logs_show_each_service_prefixed(cli, blog):
    cli.ok("kill", "posts")
    out = cli.ok("logs").stdout
    assert f"{'posts'.ljust(max(map(len, SERVICES)))} | --- stopped with SIGKILL ---" in out
    assert cli.json("logs", "posts") == {"posts": ["--- stopped with SIGKILL ---"]}


def test_logs_without_any_log_say_what_to_do(cli):
    assert "start the services with `blogctl up`" in one_error_line(cli("logs", "query"))


def test_logs_follow_prints_new_lines_until_ctrl_c(cli, blog, monkeypatch):
    naps = []

    def sleep(seconds):
        naps.append(seconds)
        if len(naps) == 1:
            blog.formation.stop("query")
        else:
            raise KeyboardInterrupt

    blog.formation._log("query", "old line")
    monkeypatch.setattr(lifecycle.time, "sleep", sleep)
    out = cli.ok("logs", "query", "--follow").stdout.splitlines()
    assert out[0] == "query | old line"
    assert out[1].endswith("query | --- stopped with SIGTERM ---")


# The failure demo

def test_demo_failure_holds_and_leaves_the_formation_running(cli, blog):
    result = cli.ok("demo-failure")
    out = result.stdout
    assert out.count("✓") == 8 and "✗" not in out
    assert "Verdict: every step held" in out
    assert "refused: posts service is not reachable" in out
    assert blog.running == set(SERVICES)
    assert cli.ok("demo-failure").stdout.count("✓") == 8  # twice in a row


def test_demo_failure_starts_a_stopped_formation_and_stops_it_again(cli, blog):
    blog.running.clear()
    out = cli.ok("demo-failure").stdout
    assert f"started {', '.join(SERVICES)}" in out
    assert "Left the formation as it was" in out
    assert blog.running == set()


def test_demo_failure_fails_when_query_does_not_survive(cli, blog):
    # A view that forgets everything once Posts is gone: the lesson would not hold.
    real_query = blog.clients["query"]

    class ForgetfulQuery:
        def open(self, path, **kwargs):
            response = real_query.open(path, **kwargs)
            if path == "/posts" and "posts" not in blog.running:
                response.set_data(b"{}")
            return response

    blog.clients["query"] = ForgetfulQuery()
    result = cli("demo-failure", "--wait", "1")
    assert result.exit_code == 1
    assert "✗ the view lost" in result.stdout and "Verdict: FAILED" in result.stdout
    assert blog.running == set(SERVICES)  # restored even so


# Mode, the page, dead letters

def test_status_and_up_say_which_transport_runs_and_whether_events_are_signed(cli, blog):
    result = cli.ok("status")
    assert "Mode: events through the HTTP bus at http://127.0.0.1:4005; not signed (no BLOG_SECRET)" in result.stdout
    assert cli.json("status")["mode"] == {"transport": "http", "signed": False}
    signed = cli("status", env={"BLOG_SECRET": "s3cret"})
    assert "signed (BLOG_SECRET set)" in signed.stdout and "s3cret" not in signed.stdout
    blog.running.discard("query")
    up = cli.ok("up", "--detach")
    assert "Mode: events through the HTTP bus" in up.stdout
    assert "Blog page: http://127.0.0.1:4002/" in up.stdout


def test_open_opens_the_page_served_by_query(cli, blog, monkeypatch):
    opened = []
    monkeypatch.setattr(query.webbrowser, "open", lambda url: opened.append(url) or True)
    assert "Opened http://127.0.0.1:4002/" in cli.ok("open").stdout
    assert opened == ["http://127.0.0.1:4002/"]
    monkeypatch.setattr(query.webbrowser, "open", lambda url: False)
    assert "No browser found here; open http://127.0.0.1:4002/ yourself." in cli.ok("open").stdout
    blog.running.discard("query")
    assert "query service is not reachable" in one_error_line(cli("open"))


class AcceptingSession:
    """Stands in for the bus's HTTP client to a subscriber that now takes the event."""

    def __init__(self):
        self.bodies = []

    def post(self, url, body, headers):
        self.bodies.append(json.loads(body))
        response = type("Response", (), {})()
        response.status_code, response.text = 200, "{}"
        return response

    def close(self):
        pass


def park_one(blog, subscriber="query"):
    """Log an event and park it for `subscriber`, as the bus does after repeated rejections."""
    from services.shared.events import utc_now

    cli_post = blog.clients["posts"].post("/posts", json={"title": "poison"})
    assert cli_post.status_code == 201
    blog.relay()
    deliverer = components(blog.apps["bus"])["delivery"].deliverers[subscriber]
    seq = deliverer.log.last_seq()
    deliverer.log.park(subscriber, seq, 4, "HTTP 500: cannot apply", utc_now())
    return deliverer, seq


def test_events_dead_lists_parked_events_and_redeliver_sends_one_again(cli, blog):
    assert "No dead letters" in cli.ok("events", "--dead").stdout
    deliverer, seq = park_one(blog)
    shown = cli.ok("events", "--dead").stdout
    assert "Dead letters (1)" in shown and "HTTP 500: cannot apply" in shown and "poison" in shown
    [letter] = cli.json("events", "--dead", "--subscriber", "query")
    assert letter["seq"] == seq and letter["attempts"] == 4 and letter["event"]["data"]["title"] == "poison"

    accepting = AcceptingSession()
    deliverer.client = accepting
    assert f"query took event {seq}" in cli.ok("redeliver", "query", str(seq)).stdout
    assert accepting.bodies[0][0]["seq"] == seq
    assert cli.json("events", "--dead") == []


def test_redeliver_errors_are_one_line(cli, blog):
    assert "no dead letter 7 for query" in one_error_line(cli("redeliver", "query", "7"))
    assert "no subscriber named 'mailer'" in one_error_line(cli("events", "--dead", "--subscriber", "mailer"))


def test_a_relative_data_directory_is_taken_from_the_current_directory_either_way(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def data_dir(*options: str, env: dict | None = None) -> str:
        result = cli(*options, "status", "--json", env=env)
        assert result.exit_code == 0, result.stderr
        return json.loads(result.stdout)["data_dir"]

    by_option, by_variable = data_dir("--data-dir", "here"), data_dir(env={"BLOG_DATA_DIR": "here"})
    by_default = data_dir(env={"BLOG_DATA_DIR": ""})
    assert by_option == by_variable == str(tmp_path / "here")
    assert by_default == str(tmp_path / ".blog")


# Moderation

def test_comment_list_and_query_show_each_comments_status(cli, blog):
    post = cli.json("post", "create", "statuses")
    cli.ok("comment", "create", post["id"], "lovely")
    cli.ok("comment", "create", post["id"], "an orange")
    listed = cli.json("comment", "list", post["id"])
    assert [(c["content"], c["status"]) for c in listed] == [("lovely", "approved"), ("an orange", "rejected")]
    table = cli.ok("comment", "list", post["id"]).stdout
    assert "status" in table and "approved" in table and "rejected" in table
    tree = [line for line in cli.ok("query").stdout.splitlines() if "lovely" in line or "an orange" in line]
    assert "approved" in tree[0] and "rejected" in tree[1]


def test_demo_moderation_holds_and_leaves_the_formation_as_found(cli, blog):
    out = cli.ok("demo-moderation").stdout
    assert out.count("✓") == 5 and "✗" not in out
    assert "pending" in out and "approved" in out and "rejected" in out
    assert "Verdict: every step held" in out
    assert blog.running == set(SERVICES)
    blog.running.discard("moderation")
    assert cli.ok("demo-moderation").stdout.count("✓") == 5
    assert blog.running == set(SERVICES) - {"moderation"}  # left stopped, as it was found


def test_demo_moderation_fails_when_nothing_gets_decided(cli, blog):
    blog.bus.detach("moderation")  # a Moderation that never hears of comments
    blog.bus.subscribe("moderation", lambda events: None)
    result = cli("demo-moderation", "--wait", "1")
    assert result.exit_code == 1
    assert "✗ the comments were not decided as the rule says" in result.stdout and "Verdict: FAILED" in result.stdout
    assert blog.running == set(SERVICES)
