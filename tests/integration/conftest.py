from __future__ import annotations

from dataclasses import dataclass

import pytest
from flask.testing import FlaskClient

from services.bus.app import create_app as create_bus
from services.table import load
from services.shared.transport import InMemoryBus
from tests.in_process import create_apps, relay


@dataclass
class Blog:
    """Every service wired through the in-memory bus, driven by their test clients."""

    bus: InMemoryBus
    posts: FlaskClient
    comments: FlaskClient
    query: FlaskClient
    apps: dict

    def relay(self) -> None:
        """Move every outbox to the bus now (in production a background thread does this)."""
        relay(self.apps)

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
    apps = create_apps(config, bus)
    return Blog(bus, apps["posts"].test_client(), apps["comments"].test_client(), apps["query"].test_client(), apps)


@pytest.fixture
def bus_client(config):
    return create_bus(config).test_client()
