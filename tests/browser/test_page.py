"""The blog page in a real browser: forms, live updates, Posts and Comments dying, escaping."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from playwright.sync_api import expect

from tests.helpers import create_comment, free_port, nginx_missing, wait_until

pytestmark = pytest.mark.slow


def create_post(formation, title: str) -> dict:
    response = requests.post(f"{formation.url('posts')}/posts", json={"title": title}, timeout=5)
    assert response.status_code == 201
    return response.json()


def post_card(page, title: str):
    return page.locator("li.post").filter(has=page.locator(".post-title", has_text=title))


def test_a_post_and_a_comment_made_in_the_forms_appear_without_a_reload(formation, page, screenshot):
    formation.start()
    page.goto(f"{formation.url('query')}/")
    expect(page.locator("#empty")).to_be_visible()
    page.evaluate("window.loadedOnce = true")  # gone if the page reloads

    page.fill("#post-title", "Made in the browser")
    page.click("#post-form button")
    expect(page.locator("#post-form .form-message")).to_contain_text("Saved")
    card = post_card(page, "Made in the browser")
    expect(card).to_be_visible()

    card.locator("input[name=content]").fill("A comment from the page")
    card.locator(".comment-form button").click()
    expect(card.locator(".comments li")).to_have_text(["A comment from the page"])
    assert page.evaluate("window.loadedOnce") is True
    expect(page.locator("#counts")).to_have_text("(1 post, 1 comment)")
    screenshot("created")


def test_the_page_still_shows_everything_with_posts_and_comments_killed(formation, page, screenshot):
    formation.start()
    posts = [create_post(formation, f"survivor {i}") for i in range(3)]
    comments = formation.url("comments")
    wait_until(lambda: requests.post(
        f"{comments}/posts/{posts[0]['id']}/comments", json={"content": "still here"}, timeout=5
    ).status_code == 201)
    page.goto(f"{formation.url('query')}/")
    expect(post_card(page, "survivor 0").locator(".comments li")).to_have_text(["still here"])

    formation.kill("posts")
    formation.kill("comments")
    page.reload()
    for post in posts:
        expect(post_card(page, post["title"])).to_be_visible()
    expect(post_card(page, "survivor 0").locator(".comments li")).to_have_text(["still here"])

    page.fill("#post-title", "written while posts is down")
    page.click("#post-form button")
    expect(page.locator("#post-form .form-message")).to_contain_text("posts service is not reachable")
    card = post_card(page, "survivor 1")
    card.locator("input[name=content]").fill("written while comments is down")
    card.locator(".comment-form button").click()
    expect(card.locator(".form-message")).to_contain_text("comments service is not reachable")
    screenshot("writers-down")

    formation.start("posts", "comments")
    page.click("#post-form button")
    expect(page.locator("#post-form .form-message")).to_contain_text("Saved")
    expect(post_card(page, "written while posts is down")).to_be_visible()
    screenshot("writers-back")


def test_user_text_is_shown_as_text_and_runs_nothing(formation, page, screenshot):
    formation.start()
    titles = ["<script>alert(1)</script>", '<img src=x onerror="window.pwned=1">', "[red]x[/red] \x1b[31m"]
    for title in titles:
        create_post(formation, title)
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(f"{formation.url('query')}/")
    expect(page.locator(".post-title")).to_have_count(3)
    assert page.locator(".post-title").all_text_contents() == titles
    assert page.locator("li.post img, li.post script").count() == 0
    assert page.evaluate("window.pwned") is None and dialogs == []
    screenshot("escaped")


def test_the_posts_service_only_lets_the_page_origin_write_from_a_browser(formation):
    formation.start()
    page_origin = formation.url("query")
    allowed = requests.options(
        f"{formation.url('posts')}/posts",
        headers={"Origin": page_origin, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type"},
        timeout=5,
    )
    assert allowed.headers.get("Access-Control-Allow-Origin") == page_origin
    other = requests.options(
        f"{formation.url('posts')}/posts",
        headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
        timeout=5,
    )
    assert "Access-Control-Allow-Origin" not in other.headers


def test_the_page_shows_each_comment_as_the_course_client_does(formation, page, screenshot):
    formation.start()
    formation.kill("moderation")  # so that the comments wait for it
    post = create_post(formation, "moderated on the page")
    create_comment(formation, post["id"], "a fine comment")
    create_comment(formation, post["id"], "one about an orange")
    page.goto(f"{formation.url('query')}/")
    comments = post_card(page, "moderated on the page").locator(".comments li")
    expect(comments).to_have_text(["This comment is awaiting moderation"] * 2)
    screenshot("pending")

    formation.start("moderation")
    expect(comments).to_have_text(["a fine comment", "This comment has been rejected"])
    assert [comments.nth(i).get_attribute("data-status") for i in range(2)] == ["approved", "rejected"]
    screenshot("decided")


# A page of another origin, as the course's React client is: it reads Query and writes through
# Posts and Comments with fetch() and JSON, which makes the browser ask each service first (CORS).
CLIENT_PAGE = b"""<!doctype html><meta charset="utf-8"><title>another client</title><p>another origin</p>"""
USE_THE_BLOG = """async ([posts, comments, query, title]) => {
  const json = {"Content-Type": "application/json"};
  const pause = () => new Promise((resolve) => setTimeout(resolve, 100));
  try {
    const view = await (await fetch(`${query}/posts`)).json();
    const made = await fetch(`${posts}/posts`, {method: "POST", headers: json, body: JSON.stringify({title})});
    const post = await made.json();
    let answer;
    for (let i = 0; i < 100; i++) {  // Comments learns of the post from its event
      answer = await fetch(`${comments}/posts/${post.id}/comments`,
                           {method: "POST", headers: json, body: JSON.stringify({content: "hello from afar"})});
      if (answer.status !== 404) break;
      await pause();
    }
    return {ok: true, before: Object.keys(view).length, post, status: answer.status, comments: await answer.json()};
  } catch (error) {
    return {ok: false, error: String(error)};
  }
}"""


@contextmanager
def another_origin() -> Iterator[str]:
    """A tiny web server on a free port serving one page: a client of the blog from another origin."""

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(CLIENT_PAGE)))
            self.end_headers()
            self.wfile.write(CLIENT_PAGE)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, name="another-origin", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_a_client_on_an_allowed_origin_reads_and_writes_with_fetch_and_json(formation, page):
    with another_origin() as origin:
        formation.env["BLOG_CORS_ORIGINS"] = origin
        formation.start()
        page.goto(f"{origin}/")
        urls = [formation.url(name) for name in ("posts", "comments", "query")]
        result = page.evaluate(USE_THE_BLOG, [*urls, "written from another origin"])
    assert result["ok"], result
    assert result["status"] == 201 and result["comments"][0]["content"] == "hello from afar"
    wait_until(lambda: requests.get(f"{formation.url('query')}/posts", timeout=5).json()
               .get(result["post"]["id"], {}).get("comments"), timeout=10, message="the comment to reach Query")


def test_a_client_on_another_origin_is_refused_and_writes_nothing(formation, page):
    with another_origin() as origin:  # not in the (default) list
        formation.start()
        page.goto(f"{origin}/")
        urls = [formation.url(name) for name in ("posts", "comments", "query")]
        result = page.evaluate(USE_THE_BLOG, [*urls, "written from a stranger"])
        write = page.evaluate("""async (posts) => {
          try { await fetch(`${posts}/posts`, {method: "POST", headers: {"Content-Type": "application/json"},
                                               body: JSON.stringify({title: "a stranger's write"})}); return "sent"; }
          catch (error) { return String(error); }
        }""", urls[0])
        # A text/plain body needs no preflight, so the browser sends it: the service refuses it (415).
        page.evaluate("""async (posts) => {
          await fetch(`${posts}/posts`, {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"},
                                         body: JSON.stringify({title: "a simple request"})});
        }""", urls[0])
        sent = requests.post(f"{urls[0]}/posts", data='{"title": "t"}', headers={"Content-Type": "text/plain"},
                             timeout=5)
    assert result == {"ok": False, "error": "TypeError: Failed to fetch"}
    assert write == "TypeError: Failed to fetch"
    assert sent.status_code == 415 and "application/json" in sent.json()["error"]
    assert requests.get(f"{formation.url('posts')}/posts", timeout=5).json() == {}  # nothing got through


def test_the_page_behind_the_gateway_reads_and_writes_through_its_one_origin(formation, page, screenshot):
    if why := nginx_missing():
        pytest.skip(why)
    port = free_port()
    formation.env.update(BLOG_GATEWAY="1", BLOG_GATEWAY_PORT=str(port))  # `blogctl up --gateway`
    formation.start()
    writes = []
    page.on("request", lambda request: writes.append(request.url) if request.method == "POST" else None)
    page.goto(f"http://127.0.0.1:{port}/")
    expect(page.locator("#empty")).to_be_visible()

    page.fill("#post-title", "Through the front door")
    page.click("#post-form button")
    card = post_card(page, "Through the front door")
    expect(card).to_be_visible()
    card.locator("input[name=content]").fill("One origin, no CORS")
    card.locator(".comment-form button").click()
    expect(card.locator(".comments li")).to_have_text(["One origin, no CORS"])
    assert writes and all(url.startswith(f"http://127.0.0.1:{port}/") for url in writes), writes
    assert writes[0].endswith("/posts/create")  # the course's route, which an ingress sends to Posts
    screenshot("gateway")


# The course's React client, ingress version, as its components call the blog (axios, JSON, URLs on
# the ingress's host): PostCreate `POST /posts/create {title}`, PostList `GET /posts`, CommentCreate
# `POST /posts/:id/comments {content}`. We have no copy of that client here: these are its requests,
# made with fetch from a page of the gateway's origin with relative URLs, as the client served from
# the front door makes them.
COURSE_CLIENT_REQUESTS = """async ([title, content]) => {
  const json = {"Content-Type": "application/json"};
  const pause = () => new Promise((resolve) => setTimeout(resolve, 100));
  try {
    const created = await fetch("/posts/create", {method: "POST", headers: json, body: JSON.stringify({title})});
    const post = await created.json();
    let listed = {};
    for (let i = 0; i < 100 && !listed[post.id]; i++) {  // PostList, until Query has heard of the post
      listed = await (await fetch("/posts")).json();
      if (!listed[post.id]) await pause();
    }
    let comment;
    for (let i = 0; i < 100; i++) {  // Comments learns of the post from its event: 404 until then
      comment = await fetch(`/posts/${post.id}/comments`, {method: "POST", headers: json, body: JSON.stringify({content})});
      if (comment.status !== 404) break;
      await pause();
    }
    return {ok: true, created: created.status, post, listed: Object.values(listed),
            commented: comment.status, comments: await comment.json()};
  } catch (error) {
    return {ok: false, error: String(error)};
  }
}"""


def test_the_course_clients_requests_through_the_gateway_create_a_post_and_a_comment(formation, page):
    if why := nginx_missing():
        pytest.skip(why)
    port = free_port()
    front = f"http://127.0.0.1:{port}"
    # Only the course's dev server may call across origins: anything that needed CORS from the gateway's origin would fail.
    formation.env.update(BLOG_GATEWAY="1", BLOG_GATEWAY_PORT=str(port), BLOG_CORS_ORIGINS="http://localhost:3000")
    formation.start()
    sent = []
    page.on("request", lambda request: sent.append((request.method, request.url)))
    page.goto(f"{front}/")
    sent.clear()

    result = page.evaluate(COURSE_CLIENT_REQUESTS, ["Made by the course's requests", "and commented"])

    assert result["ok"], result
    assert result["created"] == 201 and result["post"]["title"] == "Made by the course's requests"
    post_id = result["post"]["id"]
    assert any(p["id"] == post_id and p["title"] == "Made by the course's requests" for p in result["listed"])
    assert result["commented"] == 201 and [c["content"] for c in result["comments"]] == ["and commented"]
    assert {method for method, _ in sent} == {"GET", "POST"}  # no preflight: one origin
    assert all(url.startswith(f"{front}/") for _, url in sent), sent
    assert ("POST", f"{front}/posts/create") in sent and ("POST", f"{front}/posts/{post_id}/comments") in sent

    def in_query() -> list:
        view = requests.get(f"{formation.url('query')}/posts", timeout=5).json()
        return [(c["content"], c["status"]) for c in view.get(post_id, {}).get("comments", [])]

    # In Query, as the client's list shows it once moderation has decided.
    wait_until(lambda: in_query() == [("and commented", "approved")], timeout=15,
               message="the moderated comment to reach Query")
