"""The real `blogctl` driving real service processes on free ports, as a user would."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
import uuid
import venv
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from services.table import CONSUMERS, DEFAULT_SUBSCRIBERS, SERVICES
from services.shared.transport.rabbitmq import RabbitTransport
from tests.helpers import (
    BROKER_URL, ROOT, broker_missing, free_port, port_is_listening, process_group_alive, tmpfs, wait_until,
)

pytestmark = pytest.mark.slow


class Blogctl:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.ports = {service: free_port() for service in SERVICES}
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("FORCE_COLOR", "PY_COLORS", "GITHUB_ACTIONS", "TTY_COMPATIBLE", "BLOG_BROKER_URL")}
        self.env.update({
            "BLOG_DATA_DIR": str(data_dir), "BLOG_HOST": "127.0.0.1", "COLUMNS": "200",
            **{f"BLOG_{s.upper()}_PORT": str(p) for s, p in self.ports.items()},
        })
        self.seen_pids: set[int] = set()
        self.program = [sys.executable, "-m", "blogctl"]  # or an installed `blogctl`
        self.cwd = ROOT

    def command(self, *args: str) -> list[str]:
        return [*self.program, *args]

    def __call__(self, *args: str, expect: int = 0, timeout: float = 60) -> subprocess.CompletedProcess:
        result = subprocess.run(self.command(*args), env=self.env, cwd=self.cwd, capture_output=True, text=True,
                                timeout=timeout)
        self.seen_pids |= set(self.recorded_pids().values())
        assert result.returncode == expect, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
        return result

    def json(self, *args: str):
        return json.loads(self(*args, "--json").stdout)

    def recorded_pids(self) -> dict[str, int]:
        pids = {}
        for path in (self.data_dir / "run").glob("*.pid"):
            try:
                pids[path.stem] = json.loads(path.read_text())["pid"]
            except (OSError, ValueError, KeyError):
                pass
        return pids

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def healthy(self, service: str) -> bool:
        try:
            return requests.get(f"{self.url(service)}/health", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def assert_nothing_left(self, but: list[str] = ()) -> None:
        """No pid file, no process group ever recorded alive, no port listening (but those of `but`)."""
        assert not self.recorded_pids()
        for pid in self.seen_pids:
            assert not process_group_alive(pid), f"process group {pid} is still alive"
        for service, port in self.ports.items():
            assert service in but or not port_is_listening(port), f"{service}'s port {port} is still listening"


@pytest.fixture
def blogctl(tmp_path):
    cli = Blogctl(tmp_path)
    try:
        yield cli
    finally:
        # Whatever happened in the test: `down`, then SIGKILL any process group ever recorded.
        subprocess.run(cli.command("down"), env=cli.env, cwd=cli.cwd, capture_output=True, timeout=60)
        for pgid in cli.seen_pids | set(cli.recorded_pids().values()):
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_a_user_session_from_up_to_down(blogctl):
    out = blogctl("up", "--detach").stdout
    assert "Running in the background" in out
    assert all(blogctl.healthy(s) for s in SERVICES)
    assert "already up; nothing changed" in blogctl("up", "--detach").stdout

    post = blogctl.json("post", "create", "[red]end to end[/red]")
    comments = blogctl.json("comment", "create", post["id"], "first!")  # waits for Comments to learn the post
    assert comments[0]["content"] == "first!"
    decided = [{**c, "status": "approved"} for c in comments]  # once Moderation has decided
    wait_until(lambda: blogctl.json("query")[post["id"]]["comments"] == decided, timeout=10)
    assert "[red]end to end[/red]" in blogctl("query").stdout

    events = blogctl.json("events")
    assert [e["type"] for e in events["events"]] == [
        "PostCreated", "CommentCreated", "CommentModerated", "CommentUpdated"]
    status = blogctl.json("status")
    assert all(s["healthy"] and s["process"] == "running" for s in status["services"])
    assert {s["name"] for s in status["subscribers"]} == set(DEFAULT_SUBSCRIBERS)

    # Killing Posts takes nothing else down.
    pid = blogctl.recorded_pids()["posts"]
    assert "killed posts" in blogctl("kill", "posts").stdout
    assert not process_group_alive(pid) and not port_is_listening(blogctl.ports["posts"])
    assert all(blogctl.healthy(s) for s in SERVICES if s != "posts")
    assert post["id"] in blogctl.json("query")
    error = blogctl("post", "create", "while down", expect=1).stderr
    assert error.strip() == (f"error: posts service is not reachable at 127.0.0.1:{blogctl.ports['posts']} "
                             "— is it running? try `blogctl up`")
    states = {s["service"]: s["process"] for s in blogctl.json("status")["services"]}
    assert states == {name: "stopped" if name == "posts" else "running" for name in SERVICES}

    blogctl("start", "posts")
    assert blogctl.healthy("posts")
    assert "posts" in blogctl.json("logs", "posts")

    assert "stopped posts" in blogctl("down").stdout
    blogctl.assert_nothing_left()


def test_demo_failure_twice_then_from_a_stopped_formation(blogctl):
    blogctl("up", "--detach")
    pids = blogctl.recorded_pids()
    for _ in range(2):
        out = blogctl("demo-failure").stdout
        assert "Verdict: every step held" in out and out.count("✓") == 8
    assert set(blogctl.recorded_pids()) == set(SERVICES)  # still running, as found
    assert blogctl.recorded_pids()["query"] == pids["query"]  # Query was never touched
    blogctl("down")
    blogctl.assert_nothing_left()

    out = blogctl("demo-failure").stdout
    assert "Verdict: every step held" in out
    blogctl.assert_nothing_left()  # stopped again, as found


@contextmanager
def foreground_up(blogctl: Blogctl, *args: str) -> Iterator[subprocess.Popen]:
    """`blogctl up` (or `blogctl *args`) in the foreground, once every service answers, its lines gathered in
    `up.output` as they come (`output_of(up)` once it has ended); SIGKILLed if a test leaves it running."""
    up = subprocess.Popen(blogctl.command(*(args or ("up",))), env=blogctl.env, cwd=blogctl.cwd,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    up.output = []

    def read() -> None:
        for line in up.stdout:
            up.output.append(line)

    up.reader = threading.Thread(target=read, daemon=True)
    up.reader.start()
    try:
        wait_until(lambda: all(blogctl.healthy(s) for s in SERVICES), timeout=30, message="all services healthy")
        blogctl.seen_pids |= set(blogctl.recorded_pids().values())
        yield up
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait(10)


def output_of(up: subprocess.Popen) -> str:
    """Everything a `foreground_up` printed, once it has ended."""
    up.reader.join(30)
    return "".join(up.output)


def test_foreground_up_streams_logs_and_ctrl_c_stops_everything(blogctl):
    with foreground_up(blogctl) as up:
        blogctl("kill", "comments")  # the foreground formation survives a dead member
        assert all(blogctl.healthy(s) for s in ("posts", "query", "bus"))
        os.kill(up.pid, signal.SIGINT)
        up.wait(30)
        output = output_of(up)
    assert up.returncode == 0, output
    assert f"{'posts'.ljust(max(map(len, SERVICES)))} | " in output and "Serving on" in output
    assert "comments was killed by SIGKILL" in output and "Stopping the formation" in output
    blogctl.assert_nothing_left()


def test_foreground_up_ends_when_down_stops_every_service_from_elsewhere(blogctl):
    with foreground_up(blogctl) as up:
        blogctl("down")
        up.wait(30)
        output = output_of(up)
    assert up.returncode == 0, output
    assert "Every service has stopped" in output and "Stopping the formation" not in output
    blogctl.assert_nothing_left()


@pytest.mark.rabbitmq
def test_a_session_on_rabbitmq_from_up_to_down(blogctl):
    if reason := broker_missing():
        pytest.skip(reason)
    blogctl.env["BLOG_BROKER_NAMESPACE"] = namespace = f"test{uuid.uuid4().hex[:10]}"
    try:
        out = blogctl("up", "--detach", "--broker", BROKER_URL).stdout
        assert "events through RabbitMQ at amqp://guest:***@127.0.0.1:5672//" in out
        assert set(blogctl.recorded_pids()) == set(DEFAULT_SUBSCRIBERS)  # no bus process
        assert not port_is_listening(blogctl.ports["bus"])

        post = blogctl.json("post", "create", "through the broker")
        comments = blogctl.json("comment", "create", post["id"], "so is this")
        decided = [{**c, "status": "approved"} for c in comments]  # once Moderation has decided
        wait_until(lambda: blogctl.json("query")[post["id"]]["comments"] == decided, timeout=10)

        status = blogctl.json("status")  # knows the broker from `up --broker`, without being told again
        assert status["mode"]["transport"] == "rabbitmq"
        assert {s["service"] for s in status["services"]} == set(DEFAULT_SUBSCRIBERS)
        assert all(s["healthy"] for s in status["services"])
        assert status["transport"]["url"] == "amqp://guest:***@127.0.0.1:5672//"
        queues = {q["name"]: q for q in status["queues"]}
        assert set(queues) == {f"{namespace}.{name}" for name in (*CONSUMERS, "log")}
        assert queues[f"{namespace}.query"]["consumers"] == 1
        shown = blogctl("status").stdout
        assert f"{namespace}.query" in shown and "stream" in shown

        events = blogctl.json("events")
        assert [(e["seq"], e["type"]) for e in events["events"]] == [
            (1, "PostCreated"), (2, "CommentCreated"), (3, "CommentModerated"), (4, "CommentUpdated")]
        assert [e["type"] for e in blogctl.json("events", "--after", "3")["events"]] == ["CommentUpdated"]
        assert [e["seq"] for e in blogctl.json("events", "--type", "CommentCreated")["events"]] == [2]
        assert "so is this" in blogctl("events").stdout

        error = blogctl("kill", "bus", expect=1).stderr
        assert "bus is not run in this mode" in error
        out = blogctl("demo-failure").stdout
        assert "Verdict: every step held" in out and out.count("✓") == 8
        assert set(blogctl.recorded_pids()) == set(DEFAULT_SUBSCRIBERS)

        assert "stopped posts" in blogctl("down").stdout
        blogctl.assert_nothing_left()
        assert not (blogctl.data_dir / "run" / "formation.json").exists()  # the next `up` is on the HTTP bus again
    finally:
        RabbitTransport(BROKER_URL, namespace=namespace).reset()


# Where real use begins: installed anywhere, started twice, ports taken, state deleted.

def test_a_non_editable_install_runs_from_any_directory(blogctl, tmp_path):
    """`pip install .` (not -e) into a fresh venv, then blogctl started from an unrelated directory.

    To stay offline and fast, the fresh venv has no pip and no dependencies of its own: this test
    venv's pip builds and installs a copy of the source tree into it with `--no-deps
    --no-build-isolation`, and a `.pth` file lets it import the dependencies from this venv's
    site-packages. A `.pth` path is not a site directory, so this venv's editable install of
    blogctl is not seen there: the fresh venv runs only its own installed copy.
    """
    source = tmp_path / "clone"
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split("\n")
    for name in filter(None, listed):
        if os.path.lexists(ROOT / name):
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name, follow_symlinks=False)
    venv_dir = tmp_path / "venv"
    venv.create(venv_dir, with_pip=False)
    python = venv_dir / "bin" / "python"
    site_packages = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                        capture_output=True, text=True, check=True).stdout.strip())
    (site_packages / "test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                    "--no-build-isolation", "--no-index", str(source)], check=True, capture_output=True, timeout=300)
    where = subprocess.run([python, "-c", "import blogctl, services; print(blogctl.__file__, services.__file__)"],
                           capture_output=True, text=True, check=True, cwd=tmp_path).stdout.split()
    assert all(path.startswith(str(site_packages)) for path in where), where
    assert not (site_packages / "blogctl" / "Procfile").is_symlink()  # the package carries the formation

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    blogctl.program, blogctl.cwd = [str(venv_dir / "bin" / "blogctl")], elsewhere
    del blogctl.env["BLOG_DATA_DIR"]  # the default: ./.blog in the current directory
    blogctl.data_dir = elsewhere / ".blog"
    blogctl("up", "--detach")
    assert all(blogctl.healthy(s) for s in SERVICES)
    status = blogctl.json("status")
    assert status["data_dir"] == str(elsewhere / ".blog")
    for row in status["services"]:  # each service runs the installed code, in the data directory
        assert Path(f"/proc/{row['pid']}/cwd").resolve() == elsewhere / ".blog"
    post = blogctl.json("post", "create", "installed")
    wait_until(lambda: post["id"] in blogctl.json("query"), timeout=10)
    blogctl("down")
    blogctl.assert_nothing_left()
    logs = "".join(path.read_text() for path in (elsewhere / ".blog" / "run").glob("*.log"))
    assert "WARNING" not in logs and "Traceback" not in logs  # an ordinary start warns of nothing


def test_concurrent_ups_leave_nothing_that_down_does_not_stop(blogctl):
    for _ in range(3):
        ups = [subprocess.Popen(blogctl.command("up", "--detach"), env=blogctl.env, cwd=blogctl.cwd, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
        outputs = [up.communicate(timeout=90) for up in ups]
        blogctl.seen_pids |= set(blogctl.recorded_pids().values())
        assert [up.returncode for up in ups] == [0, 0], outputs
        assert not any("Traceback" in out + err for out, err in outputs)
        assert sum("already up; nothing changed" in out for out, _ in outputs) == 1  # the second waited its turn
        assert all(blogctl.healthy(s) for s in SERVICES)
        blogctl("down")
        blogctl.assert_nothing_left()


def test_up_and_down_at_once_in_any_order_leave_nothing_that_down_does_not_stop(blogctl):
    for _ in range(2):
        commands = [subprocess.Popen(blogctl.command(*args), env=blogctl.env, cwd=blogctl.cwd, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                    for args in (["up", "--detach"], ["down"], ["up", "--detach"], ["down"])]
        outputs = [command.communicate(timeout=120) for command in commands]
        blogctl.seen_pids |= set(blogctl.recorded_pids().values())
        assert [command.returncode for command in commands] == [0, 0, 0, 0], outputs
        assert not any("Traceback" in out + err for out, err in outputs)
        blogctl("down")
        blogctl.assert_nothing_left()


def test_two_services_on_one_port_is_named_and_leaves_nothing_running(blogctl):
    port = blogctl.ports["comments"]
    error = blogctl("--port", f"posts={port}", "up", "--detach", expect=1).stderr
    assert len(error.splitlines()) == 1
    assert re.match(rf"error: (posts|comments) could not listen on {port}: in use by (comments|posts) \(pid \d+\)",
                    error), error
    blogctl.assert_nothing_left()


def test_another_program_on_a_port_is_described_not_printed(blogctl):
    server = ThreadingHTTPServer(("127.0.0.1", blogctl.ports["posts"]), SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        error = blogctl("up", "--detach", expect=1).stderr
        assert len(error.splitlines()) == 1 and "<" not in error
        assert f"posts could not listen on {blogctl.ports['posts']}: in use by another program (HTTP 404, text/html, " \
               "server SimpleHTTP" in error
        error = blogctl("post", "create", "x", expect=1).stderr
        assert len(error.splitlines()) == 1 and "<" not in error and "another program (HTTP 501" in error
        posts = next(row for row in blogctl.json("status")["services"] if row["service"] == "posts")
        assert posts["process"] == "external" and posts["error"].startswith("port taken by another program")
        blogctl.assert_nothing_left(but=["posts"])
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def read_only_dir(tmp_path):
    with tmpfs(tmp_path / "read-only", "ro,size=1m") as mount_point:
        yield mount_point


@pytest.mark.parametrize("place, reason", [
    ("a file/blog", "{tmp}/a file is not a directory"),
    ("no parent/blog", "its parent {tmp}/no parent does not exist"),
    ("/proc/nope", "/proc/nope: No such file or directory"),
    ("read-only", "it is on a read-only file system"),
])
@pytest.mark.parametrize("given_by", ["--data-dir", "BLOG_DATA_DIR"])
def test_an_unusable_data_directory_is_one_line(blogctl, tmp_path, request, place, reason, given_by):
    (tmp_path / "a file").write_text("")
    data_dir = request.getfixturevalue("read_only_dir") if place == "read-only" else tmp_path / place
    options = []
    if given_by == "--data-dir":
        options = ["--data-dir", str(data_dir)]
    else:
        blogctl.env["BLOG_DATA_DIR"] = str(data_dir)
    for command in ("up", "down"):  # as `start` and `kill`: each takes the lock in the run directory first
        error = blogctl(*options, command, expect=1).stderr
        assert error == (f"error: cannot use the data directory {data_dir}: {reason.format(tmp=tmp_path)} — choose "
                         "another with --data-dir or BLOG_DATA_DIR\n")
    blogctl.assert_nothing_left()


def test_with_its_run_state_deleted_status_and_down_still_find_every_service(blogctl):
    blogctl("up", "--detach")
    pids = blogctl.recorded_pids()
    shutil.rmtree(blogctl.data_dir)
    status = blogctl.json("status")
    assert {row["service"]: (row["process"], row["pid"]) for row in status["services"]} == {
        name: ("untracked", pid) for name, pid in pids.items()}
    assert "`blogctl down` stops them" in blogctl("status").stdout
    out = blogctl("down").stdout
    assert "running without a pid file; recorded again" in out
    assert all(f"stopped {name} (pid {pid})" in out for name, pid in pids.items())
    blogctl.assert_nothing_left()
