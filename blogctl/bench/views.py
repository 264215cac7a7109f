"""The read side: reads of Query's view at each size (full, conditional, a page), Query rebuilt
from the log, and each process's memory. Functions of a `Bench`."""
from __future__ import annotations

import time

from ..steps import bring_up
from .carriers import comment_event, post_event
from .harness import Bench, read_view, rss_kib, until
from .report import Figure, median_of


def reads(bench: Bench) -> None:
    per_post = bench.sizes.comments_per_post
    for posts in bench.sizes.read_posts:
        seed_view(bench, posts, per_post)
        label = f"{posts:,} posts x {per_post}"
        with bench.step(f"GET /posts at {label}"):
            full = bench.load(lambda c, *_: read_view(c) and 1)
            etag = read_view(bench.client).headers["ETag"]
            conditional = bench.load(lambda c, *_: read_view(c, headers={"If-None-Match": etag}) and 1)
            page = bench.load(lambda c, *_: read_view(c, params={"limit": 50}) and 1)
        size = len(read_view(bench.client).content)
        bare = bench.bare["rate"]
        add = bench.report.add
        add(Figure("read", f"full view, {label} ({size / 1e6:.1f} MB)", full.rate, "req/s",
                   ratio=full.rate / bare, ratio_of="bare req/s",
                   reference="770 req/s at ~1,000 posts (Node)" if posts == 1_000 else ""))
        add(Figure("read", f"full view p50 / p99, {label}", full.percentile(50) * 1000, "ms",
                   target=f"p99 {full.percentile(99) * 1000:.1f} ms"))
        cost = bare / conditional.rate if conditional.rate else float("inf")
        add(Figure("read", f"conditional (304), {label}", conditional.rate, "req/s",
                   ratio=cost, ratio_of="cost vs bare", target="<= 1.5x", met=cost <= 1.5))
        add(Figure("read", f"a page (?limit=50), {label}", page.rate, "req/s",
                   ratio=page.rate / bare, ratio_of="bare req/s"))


def seed_view(bench: Bench, posts: int, per_post: int) -> None:
    """Grow the view to `posts` posts with `per_post` comments each, published straight to the transport."""
    missing = max(0, posts - bench.health("query")["posts"])
    with bench.step(f"seed {missing:,} posts x {per_post} comments"):
        events = []
        for _ in range(missing):
            post = post_event()
            events.append(post)
            events.extend(comment_event(post.data["id"]) for _ in range(per_post))
        for start in range(0, len(events), 500):
            bench.publish_batch(events[start:start + 500])
        bench.settle(what="the view to be seeded")
    view = bench.health("query")
    bench.report.check(f"read: Query holds every post published ({bench.posts_published:,})",
                       view["posts"] == bench.posts_published, f"view has {view['posts']:,}")


def fill_log(bench: Bench, total: int) -> None:
    """Publish posts until the log holds `total` events, and wait until everyone has them."""
    missing = total - bench.events_published
    if missing <= 0:
        return
    with bench.step(f"fill the log to {total:,} events"):
        for start in range(0, missing, 1000):
            bench.publish_batch([post_event() for _ in range(min(1000, missing - start))])
        bench.settle(what="every event to be delivered")


def rebuild_and_memory(bench: Bench) -> None:
    fill_log(bench, bench.sizes.rebuild_events)
    report_memory(bench, f"after {bench.events_published:,} events")
    end = bench.events_published
    replays, whole, events = [], [], 0
    for run in range(bench.sizes.tail_rounds):  # the median of 3 (1 with --quick), as the target asks
        with bench.step(f"rebuild Query from an empty store ({end:,} events), run {run + 1} of {bench.sizes.tail_rounds}"):
            seconds, caught_up = rebuild_from_empty(bench)
        events = caught_up.get("events", 0)
        replays.append(events / caught_up["seconds"] if caught_up.get("seconds") else 0.0)
        whole.append(end / seconds)
        view = bench.health("query")
        bench.report.check(f"rebuild {run + 1}: the rebuilt view holds every post", view["posts"] == bench.posts_published,
                           f"{view['posts']:,} of {bench.posts_published:,}")
    rate, spread = median_of(replays)
    bench.report.add(Figure("rebuild", f"Query replaying {events:,} events from empty", rate, "events/s",
                            target=">= 50,000", met=rate >= 50_000, spread=spread))
    rate, spread = median_of(whole)
    bench.report.add(Figure("rebuild", "the same, from process start to caught up", rate, "events/s", spread=spread))


def rebuild_from_empty(bench: Bench) -> tuple[float, dict]:
    """Query stopped, its store deleted, started again until caught up: the seconds from its start,
    and its own account of the catch-up (`last_catch_up`: events read, seconds taken)."""
    bench.rt.formation.stop("query")
    for path in bench.rt.config.data_dir.glob("query.db*"):
        path.unlink()
    started = time.perf_counter()
    bring_up(bench.rt, ["query"])
    until(lambda: rebuilt(bench), timeout=600, interval=0.02, what="Query to rebuild")
    return time.perf_counter() - started, bench.health("query")["last_catch_up"] or {}


def rebuilt(bench: Bench) -> bool:
    health = bench.health("query")
    return (health["posts"] >= bench.posts_published and health["comments"] >= bench.comments_published
            and not health["catching_up"] and bool(health["last_catch_up"]))


def report_memory(bench: Bench, when: str) -> None:
    for state in bench.rt.formation.states():
        if state.running:
            bench.report.add(Figure("memory", f"{state.name} RSS {when}", rss_kib(state.pid) / 1024, "MiB"))
