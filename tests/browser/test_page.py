"""The blog page in a real browser: forms, live updates, Posts and Comments dying, escaping."""
from __future__ import annotations

import pytest
import requests
from playwright.sync_api import expect

from tests.helpers import wait_until

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
