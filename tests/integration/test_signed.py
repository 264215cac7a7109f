"""With BLOG_SECRET set, every POST /events must be signed with it; nothing unsigned is applied."""
import json

import pytest

from services.bus.app import create_app as create_bus
from services.query.app import create_app as create_query
from services.table import load
from services.shared.signing import HEADER, sign
from services.shared.transport import InMemoryBus

EVENT = json.dumps({"type": "PostCreated", "data": {"id": "p1", "title": "signed"}}).encode()


@pytest.fixture
def signed_config(tmp_path):
    return load({"BLOG_DATA_DIR": str(tmp_path), "BLOG_SECRET": "formation-secret"})


@pytest.fixture
def clients(signed_config):
    return create_bus(signed_config).test_client(), create_query(signed_config, InMemoryBus().transport()).test_client()


@pytest.mark.parametrize("service", [0, 1])
@pytest.mark.parametrize("header", [None, sign("wrong-secret", EVENT), sign("formation-secret", EVENT, now=0)])
def test_unsigned_or_wrongly_signed_events_are_401_and_change_nothing(clients, service, header):
    bus, query = clients
    headers = {HEADER: header} if header else {}
    response = (bus, query)[service].post("/events", data=EVENT, content_type="application/json", headers=headers)
    assert response.status_code == 401 and "unauthorised event" in response.json["error"]
    assert bus.get("/events").json == []
    assert query.get("/posts").json == {}


def test_signed_events_are_accepted_and_health_says_so(clients):
    bus, query = clients
    headers = {HEADER: sign("formation-secret", EVENT)}
    assert bus.post("/events", data=EVENT, content_type="application/json", headers=headers).status_code == 200
    assert query.post("/events", data=EVENT, content_type="application/json", headers=headers).status_code == 200
    assert [e["data"]["title"] for e in bus.get("/events").json] == ["signed"]
    assert query.get("/posts").json["p1"]["title"] == "signed"
    assert bus.get("/health").json["signed"] is True and query.get("/health").json["signed"] is True


def test_without_a_secret_events_need_no_signature(tmp_path):
    bus = create_bus(load({"BLOG_DATA_DIR": str(tmp_path)})).test_client()
    assert bus.post("/events", data=EVENT, content_type="application/json").status_code == 200
    assert bus.get("/health").json["signed"] is False
