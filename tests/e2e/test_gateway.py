"""The front door: nginx in front of real services and Query's replicas, routing as the course's
ingress does (one address for every route), passing over a replica that is down."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest
import requests

from blogctl import gateway
from services.table import load
from tests.e2e.test_cli import blogctl  # noqa: F401 - the fixture
from tests.helpers import RunningBlog, free_port, nginx_missing, port_is_listening, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def blog(tmp_path) -> Iterator[RunningBlog]:
    formation = RunningBlog(tmp_path / "data", {"BLOG_REPLICAS": "query=2"})
    formation.ports["query.2"] = free_port()
    formation.env["BLOG_QUERY_2_PORT"] = str(formation.ports["query.2"])
    try:
        formation.start()
        yield formation
    finally:
        formation.stop()


@pytest.fixture
def front(blog, tmp_path) -> Iterator[str]:
    """nginx on a free port in front of `blog`, stopped by its process group."""
    if why := nginx_missing():
        pytest.skip(why)
    port = free_port()
    path = gateway.write(load(blog.env), port, tmp_path / "gateway")
    process = subprocess.Popen(gateway.command(path), start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: port_is_listening(port), timeout=10, message="nginx to listen")
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(10)


def test_every_route_of_the_course_goes_through_one_address(blog, front):
    created = requests.post(f"{front}/posts/create", json={"title": "through the front door"}, timeout=5)
    assert created.status_code == 201, created.text
    ours = requests.post(f"{front}/posts", json={"title": "our clients' route"}, timeout=5)
    assert ours.status_code == 201, ours.text
    post_id = created.json()["id"]
    # Comments hears of the post from its event: until then it answers 404.
    comment = wait_until(lambda: _created(requests.post(f"{front}/posts/{post_id}/comments",
                                                        json={"content": "first"}, timeout=5)),
                         timeout=15, message="Comments to know the post")
    assert comment[0]["content"] == "first"

    def both_replicas_show_it() -> bool:
        views = [requests.get(f"{blog.url(replica)}/posts", timeout=5).json() for replica in ("query", "query.2")]
        return all(len(v) == 2 and v[post_id]["comments"] for v in views)

    wait_until(both_replicas_show_it, timeout=15, message="both Query replicas to show the comment")
    view = requests.get(f"{front}/posts", timeout=5).json()
    assert view[post_id]["title"] == "through the front door"
    assert [c["content"] for c in view[post_id]["comments"]] == ["first"]
    assert requests.get(f"{front}/posts/{post_id}/comments", timeout=5).json()[0]["content"] == "first"

    page = requests.get(f"{front}/", timeout=5)
    assert page.status_code == 200 and 'data-posts-port=""' in page.text  # the page writes to its own origin
    assert requests.get(f"{blog.url('query')}/", timeout=5).text.count(f'data-posts-port="{blog.ports["posts"]}"') == 1


def test_a_replica_down_is_passed_over_and_a_service_down_is_a_clear_answer(blog, front):
    requests.post(f"{front}/posts", json={"title": "before"}, timeout=5).raise_for_status()
    wait_until(lambda: all(len(requests.get(f"{blog.url(r)}/posts", timeout=5).json()) == 1
                           for r in ("query", "query.2")), timeout=15)
    blog.kill("query.2")
    answers = [requests.get(f"{front}/posts", timeout=5) for _ in range(10)]
    assert [a.status_code for a in answers] == [200] * 10
    assert all(len(a.json()) == 1 for a in answers)

    blog.kill("posts")
    refused = requests.post(f"{front}/posts", json={"title": "nobody home"}, timeout=10)
    assert refused.status_code == 503
    assert "no process of the service answered" in refused.json()["error"]


def test_up_gateway_runs_nginx_as_a_process_of_the_formation(blogctl):  # noqa: F811
    if why := nginx_missing():
        pytest.skip(why)
    blogctl.ports["query.2"] = free_port()
    blogctl.ports["gateway"] = free_port()
    blogctl.env.update(BLOG_QUERY_2_PORT=str(blogctl.ports["query.2"]), BLOG_GATEWAY_PORT=str(blogctl.ports["gateway"]))
    out = blogctl("up", "--detach", "--replicas", "query=2", "--gateway").stdout
    front = f"http://127.0.0.1:{blogctl.ports['gateway']}"
    assert f"Gateway (every route, one port): {front}/" in out
    rows = {row["service"]: row for row in blogctl.json("status")["services"]}
    assert rows["gateway"]["port"] == blogctl.ports["gateway"] and rows["gateway"]["healthy"]
    assert rows["gateway"]["process"] == "running"

    created = requests.post(f"{front}/posts/create", json={"title": "one port"}, timeout=5)
    assert created.status_code == 201, created.text
    wait_until(lambda: created.json()["id"] in requests.get(f"{front}/posts", timeout=5).json(), timeout=15)

    # Killed, the gateway is gone; started, it reads the formation again.
    blogctl("kill", "gateway")
    assert not port_is_listening(blogctl.ports["gateway"])
    blogctl("start", "gateway")
    assert requests.get(f"{front}/posts", timeout=5).status_code == 200

    assert "stopped gateway (pid" in blogctl("down").stdout
    blogctl.assert_nothing_left()


def test_up_gateway_without_nginx_says_how_to_install_it(blogctl, tmp_path):  # noqa: F811
    blogctl.env["PATH"] = str(tmp_path / "no-nginx-here") + ":" + os.path.dirname(sys.executable)
    error = blogctl("up", "--detach", "--gateway", expect=1).stderr
    assert "nginx is not installed" in error and "apt-get install nginx" in error
    blogctl.assert_nothing_left()


def _created(response: requests.Response):
    assert response.status_code == 201, response.text
    return response.json()


def test_the_configuration_routes_every_replica_and_is_valid(tmp_path):
    if why := nginx_missing():
        pytest.skip(why)
    config = load({"BLOG_REPLICAS": "query=3"})
    text = gateway.render(config, 4080, tmp_path)
    for replica in config.replicas("query"):
        assert f"server {config.url(replica).removeprefix('http://')} max_fails=1" in text
    order = [text.index(f"location {route.location} ") for route in gateway.routes(config.services)]
    assert order == sorted(order)  # the course's order
    assert gateway.write(config, 4080, tmp_path / "gw").exists()
