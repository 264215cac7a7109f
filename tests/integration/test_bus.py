"""The event bus's HTTP API through Flask's test client (delivery threads not started)."""
import json

import pytest

EVENT = {"type": "PostCreated", "data": {"id": "p1", "title": "hello"}}


def test_publish_in_the_course_shape_is_logged_with_an_envelope(bus_client):
    response = bus_client.post("/events", json=EVENT)
    assert response.status_code == 200
    assert response.json["status"] == "OK" and response.json["seq"] == 1 and response.json["duplicate"] is False
    [logged] = bus_client.get("/events").json
    assert logged["type"] == "PostCreated" and logged["data"] == EVENT["data"]
    assert logged["seq"] == 1 and logged["id"] == response.json["id"] and logged["time"]


def test_a_publish_with_a_known_event_id_is_acknowledged_and_not_logged_again(bus_client):
    event = {**EVENT, "id": "e-1", "source": "posts"}
    first = bus_client.post("/events", json=event).json
    second = bus_client.post("/events", json=event).json
    assert (first["seq"], first["duplicate"]) == (1, False)
    assert (second["seq"], second["duplicate"]) == (1, True)
    assert len(bus_client.get("/events").json) == 1


def test_a_batch_is_logged_in_order_in_one_answer(bus_client):
    batch = [{"type": "T", "data": i, "id": f"e{i}"} for i in range(5)]
    answer = bus_client.post("/events", json=batch).json
    assert [e["seq"] for e in answer["events"]] == [1, 2, 3, 4, 5]
    assert [e["data"] for e in bus_client.get("/events").json] == [0, 1, 2, 3, 4]


def test_the_log_pages_and_filters(bus_client):
    bus_client.post("/events", json=[{"type": "A" if i % 2 else "B", "data": i} for i in range(1, 11)])
    assert [e["seq"] for e in bus_client.get("/events?after=7").json] == [8, 9, 10]
    assert [e["seq"] for e in bus_client.get("/events?after=2&limit=3").json] == [3, 4, 5]
    assert [e["data"] for e in bus_client.get("/events?type=A&limit=2").json] == [1, 3]
    assert bus_client.get("/events?after=10").json == []


def test_the_log_is_streamed(bus_client):
    published = bus_client.post("/events", json=[{"type": "T", "data": "x" * 100} for _ in range(1200)])
    assert published.status_code == 200  # a batch may be larger than a person's request
    response = bus_client.get("/events")
    assert response.is_streamed
    assert len(json.loads(response.data)) == 1200


@pytest.mark.parametrize("query", ["after=x", "after=-1", "limit=0", "limit=ten"])
def test_bad_log_queries_are_400(bus_client, query):
    response = bus_client.get(f"/events?{query}")
    assert response.status_code == 400 and "query parameter" in response.json["error"]


@pytest.mark.parametrize(
    "body",
    [b"{", b'{"data": {}}', b'{"type": "PostCreated", "data": {"title": "no id"}}', b'[{"type": "T"}, 5]'],
)
def test_invalid_publishes_are_refused_and_nothing_is_logged(bus_client, body):
    response = bus_client.post("/events", data=body, content_type="application/json")
    assert response.status_code == 400 and response.json["error"]
    assert bus_client.get("/events").json == []


def test_health_reports_the_log_position_and_each_subscriber(bus_client):
    bus_client.post("/events", json=EVENT)
    health = bus_client.get("/health").json
    assert health["service"] == "bus" and health["last_seq"] == 1
    assert [(s["name"], s["cursor"], s["lag"]) for s in health["subscribers"]] == [
        ("posts", 0, 1), ("comments", 0, 1), ("query", 0, 1), ("moderation", 0, 1)
    ]


def test_dead_letter_routes_name_unknown_subscribers_and_letters(bus_client):
    assert bus_client.get("/dead-letters").json == []
    missing = bus_client.get("/dead-letters?subscriber=nobody")
    assert missing.status_code == 404 and "nobody" in missing.json["error"]
    absent = bus_client.post("/dead-letters/query/7/redeliver")
    assert absent.status_code == 404 and "no dead letter 7" in absent.json["error"]


def test_the_bus_records_who_published_and_when_and_keeps_what_the_event_claimed(bus_client):
    claimed = {**EVENT, "source": "someone-else", "time": "2001-01-01T00:00:00.000Z"}
    bus_client.post("/events", json=claimed, headers={"X-Blog-Source": "posts"})
    bus_client.post("/events", json=[{"type": "T", "data": 1}])  # a publisher that does not name itself
    named, anonymous = bus_client.get("/events").json
    assert named["source"] == "posts" and named["time"] > "2026"  # the bus's own receive time
    assert (named["sent_source"], named["sent_time"]) == ("someone-else", "2001-01-01T00:00:00.000Z")
    assert anonymous["source"] == "unknown" and "sent_source" not in anonymous and "sent_time" not in anonymous


def test_a_malformed_publisher_name_is_refused_and_nothing_is_logged(bus_client):
    response = bus_client.post("/events", json=EVENT, headers={"X-Blog-Source": "no spaces please"})
    assert response.status_code == 400 and "X-Blog-Source" in response.json["error"]
    assert bus_client.get("/events").json == []


def test_reset_empties_the_log_and_numbering_starts_again(bus_client):
    bus_client.post("/events", json=[EVENT, EVENT])
    assert bus_client.delete("/events").json == {"status": "OK"}
    assert bus_client.get("/events").json == []
    assert bus_client.post("/events", json=EVENT).json["seq"] == 1
