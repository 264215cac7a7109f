"""Hosts that lose each other: each service on a test host of its own (a network namespace),
the links between them cut and healed while clients write.

The bus, Posts, Comments, Moderation and two Query replicas each on a host of its own. Two LANs:
`front`, where clients reach the services, and `back`, where the services and the bus talk. Cutting a host's `back` link partitions it from the bus while clients still
reach it, as a broken switch port or a firewall between tiers would. After each fault: every
acknowledged write is in each Query replica's view exactly once, the views are equal and equal
Posts' and Comments' own data, and the time it took to converge after the link came back is printed.
"""
from __future__ import annotations

import threading
import time

import pytest
import requests

from blogctl.bench.load import LoadGenerator
from blogctl.client import BlogClient
from services.shared.config import host_variable
from services.table import DEFAULT_SUBSCRIBERS
from tests.e2e.test_faults import assert_view_is_exactly_the_services_data
from tests.helpers import RunningBlog, create_post, free_port, view, wait_until, writers
from tests.netns import Network, netns_missing

pytestmark = pytest.mark.slow

QUERIES = ("query", "query.2")  # two replicas of Query, each on its own host
SERVICES_ON_HOSTS = ("bus", *DEFAULT_SUBSCRIBERS, "query.2")


@pytest.fixture(scope="module")
def network():
    if reason := netns_missing():
        pytest.skip(reason)
    made = Network(lans=("front", "back"))
    try:
        made.add("bus", lans=("back",))  # only the services talk to the bus
        for name in SERVICES_ON_HOSTS[1:]:
            made.add(name)
        yield made
    finally:
        made.close()


@pytest.fixture(scope="module")
def hosts(network, tmp_path_factory):
    """The formation, each service on its own host, bound to all its links."""
    formation = RunningBlog(tmp_path_factory.mktemp("hosts"), extra_env={
        "BLOG_REPLICAS": "query=2", "BLOG_QUERY_2_PORT": str(free_port()),
        **{host_variable(name): network.address(name, "back") for name in SERVICES_ON_HOSTS},
    })
    for name in SERVICES_ON_HOSTS:
        formation.launch_prefix[name] = network.run(name, [])
        formation.service_env[name] = {"BLOG_HOST": "0.0.0.0"}
        formation.addresses[name] = network.address(name, "front" if name != "bus" else "back")
    try:
        formation.start(*SERVICES_ON_HOSTS)
        seeds = [create_post(formation, f"seed {i}")["id"] for i in range(8)]
        wait_until(lambda: formation.health("comments")["known_posts"] == len(seeds), timeout=20,
                   message="comments to learn the seed posts over the back LAN")
        formation.seeds = seeds
        formation.written = {"posts": list(seeds), "comments": []}
        yield formation
    finally:
        formation.stop()


def write(formation: RunningBlog, count: int, clients: int = 4, until: threading.Event | None = None) -> LoadGenerator:
    """`count` writes (fewer if `until` is set first) from `clients` workers over the front LAN: a third
    posts, the rest comments on the seed posts."""
    lock = threading.Lock()

    def one(client: BlogClient, worker: int, i: int) -> None:
        if until is not None and until.is_set():
            return
        if i % 3 == 0:
            post = client.create_post(f"client {worker} post {i}")
            with lock:
                formation.written["posts"].append(post["id"])
        else:
            content = f"client {worker} comment {i} at {time.monotonic():.6f}"
            client.create_comment(formation.seeds[(worker + i) % len(formation.seeds)], content)
            with lock:
                formation.written["comments"].append(content)

    return writers(formation, clients, count // clients, one)


def converged(formation: RunningBlog, say, fault: str, healed_at: float) -> None:
    """Every acknowledged write in the view exactly once, equal to the writers' data; say how long it took."""
    expected = len(formation.written["posts"]), len(formation.written["comments"])

    def complete(replica: str) -> bool:  # every write shown, and every comment decided by Moderation
        current = replica_view(formation, replica)
        shown = [c for p in current.values() for c in p["comments"]]
        return (len(current), len(shown)) == expected and all(c["status"] != "pending" for c in shown)

    wait_until(lambda: all(complete(replica) for replica in QUERIES), timeout=90, interval=0.05,
               message=f"every replica's view to converge after {fault}")
    took = time.monotonic() - healed_at
    current = assert_view_is_exactly_the_services_data(formation)
    assert replica_view(formation, "query.2") == current  # all views equal
    assert sorted(current) == sorted(formation.written["posts"])  # each acknowledged post, once
    shown = [c["content"] for p in current.values() for c in p["comments"]]
    assert sorted(shown) == sorted(formation.written["comments"])  # each acknowledged comment, once
    say(f"{fault}: {expected[0]} posts and {expected[1]} comments acknowledged, all in the view once; "
        f"converged {took:.1f} s after the link came back")


def replica_view(formation: RunningBlog, replica: str) -> dict:
    response = requests.get(f"{formation.url(replica)}/posts", timeout=10)
    response.raise_for_status()
    return response.json()


def test_a_query_replica_cut_off_from_the_bus_for_500_writes(network, hosts, say):
    network.cut("query.2", "back")
    try:
        clients = write(hosts, 500)
        clients.join(120)
        lag = next(s["lag"] for s in hosts.health("bus")["subscribers"] if s["name"] == "query.2")
        assert lag > 0, "the bus should have been unable to deliver to query.2"
        assert replica_view(hosts, "query.2") != view(hosts)  # behind, and still serving over the front LAN
    finally:
        network.heal("query.2", "back")
    converged(hosts, say, "a Query replica cut off from the bus for 500 writes", time.monotonic())


@pytest.mark.parametrize("host, fault", [("posts", "posts cut off from the bus"),
                                         ("bus", "the bus cut off from everyone")])
def test_writes_keep_answering_201_from_the_outboxes_while_the_bus_is_out_of_reach(network, hosts, say, host, fault):
    network.cut(host, "back")
    try:
        clients = write(hosts, 300)
        clients.join(120)  # every write answered 201 (join fails on anything else)
        pending = hosts.health("posts")["outbox_pending"] + hosts.health("comments")["outbox_pending"]
        assert pending > 0, "writes made while the bus is out of reach should wait in the outboxes"
    finally:
        network.heal(host, "back")
    converged(hosts, say, f"{fault} for 300 writes", time.monotonic())


def test_a_link_that_flaps_every_second_for_20_seconds(network, hosts, say):
    flapping_over = threading.Event()
    clients = write(hosts, 100_000, clients=2, until=flapping_over)
    flaps = 0
    try:
        ends = time.monotonic() + 20
        while time.monotonic() < ends:
            network.cut("bus", "back")
            time.sleep(0.5)  # the fault's own rhythm: down half a second, up half a second
            network.heal("bus", "back")
            time.sleep(0.5)
            flaps += 1
    finally:
        network.heal("bus", "back")
        flapping_over.set()
    clients.join(60)
    say(f"the bus's link went down and up {flaps} times while {len(hosts.written['posts']) + len(hosts.written['comments'])} writes were made")
    converged(hosts, say, "a flapping link", time.monotonic())
