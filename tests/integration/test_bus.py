"""The event bus's HTTP API through Flask's test client (delivery threads not started)."""
import json
import threading

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


def read_stream(chunks, count: int) -> list[dict]:
    """The next `count` events of a streamed log (heartbeat lines passed over)."""
    events: list[dict] = []
    while len(events) < count:
        events += [json.loads(line) for line in next(chunks).split(b"\n") if line]
    return events


def test_a_subscriber_streaming_the_log_gets_it_from_its_position_and_is_not_pushed_to_meanwhile(bus_client):
    parts = bus_client.application.extensions["components"]
    deliverer = parts["delivery"].deliverers["query"]
    parts["streams"].start()  # as a running bus (its delivery threads are not started here)
    bus_client.post("/events", json=[{"type": "T", "data": i} for i in range(3)])
    response = bus_client.get("/events/stream?after=1&subscriber=query", buffered=False)
    assert response.status_code == 200 and response.mimetype == "application/x-ndjson"
    chunks = iter(response.response)
    assert next(chunks) == b"\n"  # the head goes out at once
    assert [(e["seq"], e["data"]) for e in read_stream(chunks, 2)] == [(2, 1), (3, 2)]
    assert deliverer.status.streaming == 1 and bus_client.get("/health").json["streams"] == 1
    assert deliverer.deliver_once() == 0  # nothing pushed while it streams
    bus_client.post("/events", json={"type": "T", "data": 3})
    assert [e["seq"] for e in read_stream(chunks, 1)] == [4]  # appended while it streams: sent on it
    # What was sent is not taken until the subscriber says it applied it.
    assert {s["name"]: s["cursor"] for s in bus_client.get("/subscribers").json}["query"] == 0
    answer = bus_client.put("/events/cursors/query", json={"seq": 4})
    assert answer.status_code == 200 and answer.json["cursor"] == 4 and deliverer.status.cursor == 4
    response.close()
    assert deliverer.status.streaming == 0 and bus_client.get("/health").json["streams"] == 0
    parts["streams"].stop()
    bus_client.post("/events", json={"type": "T", "data": 4})
    rows = list(deliverer.log.read_after(deliverer.status.cursor))
    assert [row["seq"] for row in rows] == [5]  # the stream ended: pushes resume after what it acknowledged


def test_a_stream_past_the_end_of_the_log_is_409_and_over_the_limit_503(bus_client):
    bus_client.post("/events", json={"type": "T", "data": 0})
    past = bus_client.get("/events/stream?after=5&subscriber=query")
    assert past.status_code == 409 and "past the log's end" in past.json["error"]
    streams = bus_client.application.extensions["components"]["streams"]
    streams.start()
    opened = [bus_client.get("/events/stream?subscriber=query", buffered=False) for _ in range(streams.limit)]
    for response in opened:
        next(iter(response.response))  # a stream is open once its first line is read
    refused = bus_client.get("/events/stream?subscriber=query")
    assert refused.status_code == 503 and "pushed to query meanwhile" in refused.json["error"]
    for response in opened:
        response.close()
    assert streams.open() == 0
    streams.stop()


def test_a_bus_not_running_sends_a_stream_what_it_has_and_ends_it(bus_client):
    bus_client.post("/events", json=[{"type": "T", "data": i} for i in range(2)])
    response = bus_client.get("/events/stream?subscriber=query")
    assert [json.loads(line)["seq"] for line in response.data.split(b"\n") if line] == [1, 2]


@pytest.mark.parametrize("body", [b"{}", b'{"seq": -1}', b'{"seq": "3"}', b"[3]"])
def test_a_bad_acknowledgement_is_400_and_an_unknown_subscriber_404(bus_client, body):
    answer = bus_client.put("/events/cursors/query", data=body, content_type="application/json")
    assert answer.status_code == 400 and "seq" in answer.json["error"]
    assert bus_client.put("/events/cursors/nobody", json={"seq": 0}).status_code == 404


def test_an_open_stream_ends_as_soon_as_a_stopping_bus_releases_its_requests(bus_client):
    """At SIGTERM the runner releases the requests held open before waitress waits for its threads
    (up to 5 s): the stream ends at once, not at its next heartbeat, nor ever (its reader still there)."""
    parts = bus_client.application.extensions["components"]
    parts.start()
    try:
        response = bus_client.get("/events/stream?subscriber=query", buffered=False)
        chunks = iter(response.response)
        assert next(chunks) == b"\n"
        ended = threading.Event()
        reader = threading.Thread(target=lambda: (list(chunks), ended.set()), daemon=True)
        reader.start()
        parts.release_requests()
        assert ended.wait(1.0), "the stream is still open"  # its heartbeat is every 2 s
        response.close()
    finally:
        parts.stop()
