from __future__ import annotations

from dataclasses import dataclass

import pytest
from flask.testing import FlaskClient

from services.bus.app import create_app as create_bus
from services.comments.app import create_app as create_comments
from services.posts.app import create_app as create_posts
from services.query.app import create_app as create_query
from services.shared.config import load
from services.shared.transport import InMemoryBus


@dataclass
class Blog:
    """Posts, Comments and Query wired through the in-memory bus, driven by their test clients."""

    bus: InMemoryBus
    posts: FlaskClient
    comments: FlaskClient
    query: FlaskClient
    apps: dict

    def relay(self) -> None:
        """Move every outbox to the bus now (in production a background thread does this)."""
        for name in ("posts", "comments"):
            while self.apps[name].extensions["blog"].relay_once():
                pass

    def create_post(self, title: str) -> dict:
        response = self.posts.post("/posts", json={"title": title})
        assert response.status_code == 201, response.json
        self.relay()
        return response.json

    def create_comment(self, post_id: str, content: str) -> list:
        response = self.comments.post(f"/posts/{post_id}/comments", json={"content": content})
        assert response.status_code == 201, response.json
        self.relay()
        return response.json


@pytest.fixture
def config(tmp_path):
    return load({"BLOG_DATA_DIR": str(tmp_path)})


@pytest.fixture
def blog(config):
    bus = InMemoryBus()
    apps = {
        "posts": create_posts(config, bus.transport("posts")),
        "comments": create_comments(config, bus.transport("comments")),
        "query": create_query(config, bus.transport("query")),
    }
    return Blog(bus, *(app.test_client() for app in apps.values()), apps)


@pytest.fixture
def bus_client(config):
    return create_bus(config).test_client()
