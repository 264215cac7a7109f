"""`GET /metrics` on every service, through Flask's test client: Prometheus' text format, and
counters that move with the writes."""
from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.bus.app import create_app as create_bus
from services.bus.delivery import DeliveryFailed
from services.shared.components import components
from services.shared.events import Event, PostCreated
from tests.unit.test_bus_log import FakeSubscriber


def scrape(client) -> dict[tuple, float]:
    """Every sample of `GET /metrics`, by (name, labels as sorted pairs)."""
    response = client.get("/metrics")
    assert response.status_code == 200 and response.mimetype == "text/plain"
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.get_data(as_text=True))
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_every_service_says_what_it_is_and_how_its_process_is(blog):
    for name in ("posts", "comments", "query"):
        samples = scrape(getattr(blog, name))
        assert value(samples, "blog_service_info", service=name, instance=name) == 1
        assert value(samples, "process_resident_memory_bytes") > 0
        assert value(samples, "process_start_time_seconds") > 0


def test_requests_are_counted_by_route_and_status_with_their_latency(blog):
    post = blog.create_post("hello")
    blog.comments.post(f"/posts/{post['id']}/comments", json={"content": "hi"})
    blog.comments.post("/posts/nope/comments", json={"content": "hi"})
    blog.comments.get("/no/such/route")
    samples = scrape(blog.comments)
    route = "/posts/<post_id>/comments"
    assert value(samples, "blog_http_requests_total", route=route, method="POST", status="201") == 1
    assert value(samples, "blog_http_requests_total", route=route, method="POST", status="404") == 1
    assert value(samples, "blog_http_requests_total", route="<unmatched>", method="GET", status="404") == 1
    assert value(samples, "blog_http_request_duration_seconds_count", route=route, method="POST") == 2
    assert value(samples, "blog_http_request_duration_seconds_sum", route=route, method="POST") > 0
    assert value(samples, "blog_http_requests_total", route="/metrics", method="GET", status="200") == 0  # itself: after


def test_events_are_counted_when_published_and_when_applied(blog):
    blog.posts.post("/posts", json={"title": "one"})
    blog.posts.post("/posts", json={"title": "two"})
    before = scrape(blog.posts)
    assert value(before, "blog_outbox_pending") == 2
    assert value(before, "blog_events_published_total", type="PostCreated") == 0  # not yet taken by the transport
    blog.relay()
    after = scrape(blog.posts)
    assert value(after, "blog_outbox_pending") == 0
    assert value(after, "blog_events_published_total", type="PostCreated") == 2
    query = scrape(blog.query)
    assert value(query, "blog_events_applied_total", type="PostCreated") == 2
    assert ("blog_outbox_pending", ()) not in query  # Query emits nothing
    assert "blog_events_published" not in blog.query.get("/metrics").get_data(as_text=True)
    assert "blog_events_applied" not in blog.posts.get("/metrics").get_data(as_text=True)  # Posts consumes nothing


def test_the_bus_counts_deliveries_failures_lag_and_dead_letters(config):
    refusing = FakeSubscriber(answers=[503] * 6)  # the batch three times, then its first event three times
    app = create_bus(config, client=refusing, attempts=3)
    bus = app.test_client()
    bus.post("/events", json=[Event.of(PostCreated(id=f"p{i}", title="t")).to_dict() for i in range(3)])
    assert value(scrape(bus), "blog_subscriber_lag", subscriber="query") == 3
    deliverer = components(app)["delivery"].deliverers["query"]
    for _ in range(5):
        with pytest.raises(DeliveryFailed):
            deliverer.deliver_once()
    while deliverer.deliver_once():  # the sixth refusal parks event 1; 2 and 3 are taken
        pass
    samples = scrape(bus)
    assert value(samples, "blog_bus_last_seq") == 3
    assert value(samples, "blog_subscriber_cursor", subscriber="query") == 3
    assert value(samples, "blog_subscriber_lag", subscriber="query") == 0
    assert value(samples, "blog_events_delivered_total", subscriber="query") == 2
    assert value(samples, "blog_delivery_failures_total", subscriber="query") == 6
    assert value(samples, "blog_subscriber_lag", subscriber="posts") == 3
    assert value(samples, "blog_subscriber_dead_letters", subscriber="query") == 1


def test_each_app_has_its_own_registry(config):
    first, second = create_bus(config).test_client(), create_bus(config).test_client()
    first.get("/health")
    assert value(scrape(first), "blog_http_requests_total", route="/health", method="GET", status="200") == 1
    assert value(scrape(second), "blog_http_requests_total", route="/health", method="GET", status="200") == 0
