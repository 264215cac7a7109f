"""`blogctl top`'s figures from two scrapes, and its frame, from hand-written expositions."""
from __future__ import annotations

from rich.console import Console

from blogctl.top import Backlog, Samples, Scrape, consumer_rows, frame_view, rate, service_row

POSTS_BEFORE = """
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 10.0
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 52428800
# TYPE blog_http_requests_total counter
blog_http_requests_total{route="/posts",method="POST",status="201"} 100
blog_http_requests_total{route="/health",method="GET",status="200"} 50
# TYPE blog_events_published_total counter
# TYPE blog_outbox_pending gauge
blog_outbox_pending 3
"""
POSTS_AFTER = """
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 10.5
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 53477376
# TYPE blog_http_requests_total counter
blog_http_requests_total{route="/posts",method="POST",status="201"} 300
blog_http_requests_total{route="/posts",method="POST",status="400"} 20
blog_http_requests_total{route="/health",method="GET",status="200"} 52
# TYPE blog_events_published_total counter
blog_events_published_total{type="PostCreated"} 200
# TYPE blog_outbox_pending gauge
blog_outbox_pending 0
"""
def scraped(name, at, exposition, pid=10, **health):
    return Scrape(name, at, health={"status": "ok", "pid": pid, "uptime": 75.0, **health}, samples=Samples(exposition))


def test_a_rate_is_the_counter_moved_over_the_time_between_scrapes():
    before, after = scraped("posts", 100.0, POSTS_BEFORE), scraped("posts", 102.0, POSTS_AFTER)
    assert rate(before, after, "process_cpu_seconds_total") == 0.25
    assert rate(before, after, "blog_events_published_total") == 100  # none counted before: from 0
    assert rate(None, after, "process_cpu_seconds_total") is None  # one scrape is no rate


def test_no_rate_across_a_restart():
    before, after = scraped("posts", 100.0, POSTS_AFTER), scraped("posts", 101.0, POSTS_BEFORE, pid=11)
    assert rate(before, after, "blog_http_requests_total") is None


def test_a_service_row_leaves_out_tops_own_requests():
    row = service_row(scraped("posts", 100.0, POSTS_BEFORE), scraped("posts", 102.0, POSTS_AFTER))
    assert row["requests_per_s"] == 110  # (300 + 20 - 100) / 2: /health is what top itself asks
    assert row["cpu_percent"] == 25.0 and row["memory_mib"] == 51.0
    assert row["published_per_s"] == 100 and row["outbox_pending"] == 0
    assert row["health"] == "ok" and row["pid"] == 10 and row["uptime"] == 75.0


def test_a_process_that_does_not_answer_is_down():
    row = service_row(None, Scrape("comments", 1.0, error="comments service is not reachable at 127.0.0.1:1"))
    assert row["health"] == "down" and row["pid"] is None and row["requests_per_s"] is None


QUERY_APPLIED = "# TYPE blog_events_applied_total counter\nblog_events_applied_total{type=\"PostCreated\"} %d\n"


def test_consumers_from_the_transports_backlog_with_rates_between_two_of_them():
    before = {"query": scraped("query", 100.0, QUERY_APPLIED % 1000)}
    now = {"query": scraped("query", 102.0, QUERY_APPLIED % 1398)}
    earlier = Backlog(100.0, [dict(name="query", waiting=0, cursor=1000, delivered=1000, failures=0, dead_letters=0)])
    later = Backlog(102.0, [dict(name="query", waiting=7, cursor=1400, delivered=1400, failures=2, dead_letters=1)])
    [query] = consumer_rows(before, now, later, earlier)
    assert query == dict(name="query", delivered_per_s=200.0, waiting=7, failures=2, dead_letters=1,
                         applied_per_s=199.0)
    [first] = consumer_rows({}, now, later)  # one backlog is no rate
    assert first["delivered_per_s"] is None and first["waiting"] == 7


def test_a_brokers_queues_are_consumers_and_its_stream_is_not():
    queues = Backlog(1.0, [{"name": "blog.query", "service": "query", "waiting": 4},
                           {"name": "blog.log", "service": None, "waiting": None}])
    [query] = consumer_rows({}, {}, queues, queues)
    assert (query["name"], query["waiting"], query["delivered_per_s"], query["dead_letters"]) == ("query", 4, None, None)


def test_no_delivery_rate_across_a_reset_of_the_transport():
    earlier = Backlog(1.0, [dict(name="query", waiting=0, delivered=500)])
    later = Backlog(2.0, [dict(name="query", waiting=0, delivered=3)])
    assert consumer_rows({}, {}, later, earlier)[0]["delivered_per_s"] is None


def test_a_frame_renders_services_consumers_and_events():
    posts = service_row(scraped("posts", 100.0, POSTS_BEFORE), scraped("posts", 102.0, POSTS_AFTER))
    down = service_row(None, Scrape("comments", 1.0, error="comments service is not reachable"))
    frame = {
        "at": "2026-11-26T12:00:00+00:00", "interval": 1.0,
        "transport": {"kind": "http", "name": "the HTTP bus", "url": "http://x", "log": "the bus log", "error": None},
        "services": [posts, down],
        "consumers": [dict(name="query", delivered_per_s=200.0, applied_per_s=199.5, waiting=7, failures=2,
                           dead_letters=1)],
        "events": [{"seq": 1500, "time": "2026-11-26T12:00:00.100Z", "type": "PostCreated", "source": "posts",
                    "data": {"id": "p1", "title": "[red]hello[/red]"}}],
    }
    console = Console(record=True, width=160, color_system=None)
    console.print(frame_view(frame))
    out = console.export_text()
    assert "posts" in out and "110.0" in out and "25.0%" in out and "51.0 MiB" in out and "1m15s" in out
    assert "comments" in out and "down" in out and "comments service is not reachable" in out
    assert "199.5" in out and "200.0" in out
    assert "[red]hello[/red]" in out  # user text shown literally


def test_a_counter_declared_but_not_yet_counted_moves_at_zero():
    quiet = '# TYPE blog_events_applied_total counter\n# TYPE blog_http_requests_total counter\n' \
            'blog_http_requests_total{route="/health",method="GET",status="200"} 3\n'
    row = service_row(scraped("query", 100.0, quiet), scraped("query", 101.0, quiet))
    assert row["requests_per_s"] == 0 and row["applied_per_s"] == 0
    assert row["published_per_s"] is None  # Query publishes nothing: no such metric
