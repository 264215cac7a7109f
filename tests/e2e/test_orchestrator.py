"""blogctl as a local orchestrator, through real processes: the order of need, subsets, restart, wait, the
restart policy, searching the logs, reloading changed code."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from services.table import SERVICES
from services.shared.transport.rabbitmq import RabbitTransport
from tests.e2e.test_cli import blogctl, foreground_up, output_of  # noqa: F401 - the fixture: a blogctl on free ports that cleans up
from tests.helpers import ROOT, BROKER_URL, broker_missing, port_is_listening, process_group_alive, wait_until

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


@pytest.fixture
def on_rabbitmq(blogctl) -> Iterator[None]:
    """This test's formation under a broker namespace of its own, removed afterwards (skipped without a broker)."""
    if reason := broker_missing():
        pytest.skip(reason)
    blogctl.env["BLOG_BROKER_NAMESPACE"] = namespace = f"test{uuid.uuid4().hex[:10]}"
    yield
    RabbitTransport(BROKER_URL, namespace=namespace).reset()


@pytest.mark.rabbitmq
def test_on_rabbitmq_the_broker_comes_first_and_a_subset_runs(blogctl, on_rabbitmq):
    out = blogctl("up", "--detach", "--broker", BROKER_URL, "posts", "query").stdout
    assert "Start order: RabbitMQ → query → posts" in out
    assert set(blogctl.recorded_pids()) == {"posts", "query"}
    blogctl("wait", "--timeout", "5", "posts", "query")
    out = blogctl("up", "--detach").stdout  # the recorded broker: no bus process to start
    assert "Start order: RabbitMQ → comments, moderation" in out
    blogctl("wait", "--timeout", "10")
    blogctl("down")
    blogctl.assert_nothing_left()


def test_up_says_in_one_line_when_the_broker_does_not_answer(blogctl):
    error = blogctl("up", "--detach", "--timeout", "1", "--broker", "amqp://guest:guest@127.0.0.1:1//",
                    expect=1).stderr
    assert error.startswith("error: RabbitMQ at amqp://guest:***@127.0.0.1:1// did not answer within 1s (")
    assert len(error.splitlines()) == 1
    blogctl.assert_nothing_left()


def service(blogctl, name: str) -> dict:
    return next(row for row in blogctl.json("status")["services"] if row["service"] == name)


def test_foreground_up_restarts_a_killed_service_but_not_one_blogctl_killed(blogctl):
    blogctl.env.update(BLOG_RESTART_BACKOFF="0.2")
    with foreground_up(blogctl) as up:
        pid = blogctl.recorded_pids()["query"]
        os.killpg(pid, signal.SIGKILL)  # a crash: not through blogctl
        wait_until(lambda: service(blogctl, "query")["healthy"] and service(blogctl, "query")["pid"] != pid,
                   timeout=15, message="query restarted")
        query = service(blogctl, "query")
        assert (query["restarts"], query["last_exit"], query["gave_up"]) == (1, "was killed by SIGKILL", None)
        assert "restarts" in blogctl("status").stdout

        blogctl("kill", "comments")  # on purpose: stays down
        wait_until(lambda: "comments was killed by SIGKILL by blogctl; not restarted" in "".join(up.output),
                   timeout=10, message="the note on comments")
        assert service(blogctl, "comments")["process"] == "stopped"
        os.kill(up.pid, signal.SIGINT)
        up.wait(30)
    out = output_of(up)
    assert "query was killed by SIGKILL; restarting in 0.2s" in out and "restarted query (pid" in out
    blogctl.assert_nothing_left()


def test_a_flapping_process_is_given_up_after_the_maximum_and_status_says_why(blogctl, tmp_path):
    procfile = tmp_path / "Procfile"
    procfile.write_text("flappy: sleep 0.3; exit 3\nsteady: exec sleep 60\n")
    blogctl.env.update(BLOG_RESTART_BACKOFF="0.1", BLOG_RESTART_MAX="3")
    out = blogctl("--procfile", str(procfile), "up", "--detach").stdout
    assert "kept up by `blogctl supervise` (pid" in out

    def gave_up():
        row = next(r for r in blogctl.json("--procfile", str(procfile), "status")["services"] if r["service"] == "flappy")
        return row if row["gave_up"] else None

    row = wait_until(gave_up, timeout=30, message="the policy to give up on flappy")
    assert row["restarts"] == 3 and row["process"] == "exited"
    assert row["gave_up"] == "exited with code 3; gave up after 3 restarts in a row"
    steady = blogctl.recorded_pids()["steady"]
    blogctl("--procfile", str(procfile), "down")
    assert not process_group_alive(steady)
    assert "gave up after 3 restarts in a row" in (blogctl.data_dir / "run" / "supervise.log").read_text()


def test_a_hung_service_is_restarted_after_failing_health_checks_in_a_row(blogctl):
    blogctl.env.update(BLOG_HEALTH_FAILURES="2")
    assert "kept up by `blogctl supervise` (pid" in blogctl("up", "--detach", "posts", "query").stdout
    blogctl("wait", "query", "--timeout", "10")
    hung = blogctl.recorded_pids()["query"]
    os.killpg(hung, signal.SIGSTOP)  # hung: its port still takes connections, and nothing answers
    try:
        query = wait_until(lambda: (row := service(blogctl, "query"))["restarts"] and row["healthy"] and row,
                           timeout=40, message="query restarted after failing /health")
        assert query["pid"] != hung and blogctl.recorded_pids()["query"] == query["pid"]
        assert (query["restarts"], query["last_exit"], query["gave_up"]) == (
            1, "failed /health 2 times in a row", None)
        assert "1 (last: failed /health 2 times in a row)" in blogctl("status").stdout
        assert not process_group_alive(hung)  # stopped, although it was stopped by a signal it could not see
        assert service(blogctl, "posts")["restarts"] == 0
    finally:
        if process_group_alive(hung):
            os.killpg(hung, signal.SIGCONT)
    blogctl("down")
    assert "query failed /health 2 times in a row; restarted query (pid" in (
        blogctl.data_dir / "run" / "supervise.log").read_text()
    blogctl.assert_nothing_left()


def test_logs_grep_and_trace_find_one_traces_lines_across_processes(blogctl, tmp_path):
    # Stand-ins for services logging with BLOG_LOG_FORMAT=json: each prints lines of two traces, then runs on.
    def line(message: str, trace: str) -> str:
        return "echo '" + json.dumps({"time": "2026-12-03 06:00:00,000", "message": message, "trace_id": trace}) + "'"

    procfile = tmp_path / "Procfile"
    procfile.write_text(f"writer: {line('created p-3', 'a' * 32)}; {line('created p-4', 'b' * 32)}; exec sleep 60\n"
                        f"reader: {line('applied p-3', 'a' * 32)}; {line('applied p-4', 'b' * 32)}; exec sleep 60\n")
    options = ["--procfile", str(procfile)]
    blogctl.env["BLOG_RESTART"] = "no"
    blogctl(*options, "up", "--detach")
    messages = lambda found: {name: [json.loads(text)["message"] for text in lines] for name, lines in found.items()}  # noqa: E731
    found = wait_until(lambda: messages(blogctl.json(*options, "logs", "--trace", "a" * 32)) == {
        "writer": ["created p-3"], "reader": ["applied p-3"]}, timeout=10, message="both processes' lines")
    assert found
    assert messages(blogctl.json(*options, "logs", "--grep", "^{.*applied", "--trace", "b" * 32)) == {
        "writer": [], "reader": ["applied p-4"]}

    follow = subprocess.Popen(blogctl.command(*options, "logs", "--follow", "--json", "--grep", "p-5"), env=blogctl.env,
                              cwd=blogctl.cwd, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        with open(blogctl.data_dir / "run" / "reader.log", "a") as log:  # as the process would write it
            log.write('{"message": "applied p-6"}\n{"message": "applied p-5"}\n')
        first = json.loads(follow.stdout.readline())
        assert (first["service"], json.loads(first["line"])["message"]) == ("reader", "applied p-5")
    finally:
        os.killpg(follow.pid, signal.SIGINT)  # Ctrl-C ends it
        try:
            follow.wait(30)  # a slow machine's exit took more than 10 s in CI
        except subprocess.TimeoutExpired:
            os.killpg(follow.pid, signal.SIGKILL)
            follow.wait(10)
            raise
    blogctl(*options, "down")


def test_up_reload_restarts_only_the_service_whose_code_changed_and_keeps_its_data(blogctl, tmp_path):
    # A copy of the services and the Procfile, edited here: both blogctl and the services import the copy.
    source = tmp_path / "source"
    shutil.copytree(ROOT / "services", source / "services", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "Procfile", source / "Procfile")
    blogctl.cwd, blogctl.env["PYTHONPATH"] = source, str(source)
    options = ["--procfile", str(source / "Procfile")]
    with foreground_up(blogctl, *options, "up", "--reload") as up:
        watching = f"Reloading the services whose code changes under {source / 'services'}"
        wait_until(lambda: watching in "".join(up.output), timeout=10, message="the copy watched")
        error = blogctl(*options, "up", "--reload", expect=1).stderr  # a second `up` has nothing to reload
        assert error.startswith("error: nothing to reload from here: the formation was started by another")
        assert "--reload watches from the foreground" in blogctl(*options, "up", "--reload", "-d", expect=2).stderr
        post = blogctl.json(*options, "post", "create", "written before the reload")
        pids = blogctl.recorded_pids()
        with open(source / "services" / "posts" / "store.py", "a") as store:
            store.write("# an edit\n")
        wait_until(lambda: "reloaded posts" in "".join(up.output), timeout=30, message="posts reloaded")
        after = blogctl.recorded_pids()
        assert after["posts"] != pids["posts"]
        assert {name: pid for name, pid in after.items() if name != "posts"} == {
            name: pid for name, pid in pids.items() if name != "posts"}
        assert post["id"] in blogctl.json(*options, "post", "list")  # the write made before is still there

        store = source / "services" / "posts" / "store.py"
        good = store.read_text()
        store.write_text(good + "def broken(:\n")  # new code that cannot start: posts stays down, alone
        wait_until(lambda: "could not reload posts" in "".join(up.output), timeout=30, message="the failed reload")
        assert "posts" not in blogctl.recorded_pids() and blogctl.recorded_pids()["query"] == pids["query"]
        store.write_text(good)  # fixed: started again
        wait_until(lambda: "reloaded posts (was not running" in "".join(up.output), timeout=30,
                   message="posts reloaded after the fix")
        assert post["id"] in blogctl.json(*options, "post", "list")
        os.kill(up.pid, signal.SIGINT)
        up.wait(30)
    out = output_of(up)
    assert up.returncode == 0 and "Stopping the formation" in out  # Ctrl-C reaches the loop through the watch
    assert f"reloaded posts (pid {pids['posts']} -> {after['posts']}): services/posts/store.py changed" in out
    assert ("could not reload posts (it exited with code 1; its log is above): services/posts/store.py changed; "
            "trying again at the next change") in out
    assert "SyntaxError: " in out  # the log line that says why
    assert out.count("reloaded ") == 2 and "posts started" not in out and "restarted posts" not in out
    blogctl.assert_nothing_left()
