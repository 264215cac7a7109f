"""Every service replicated, each process on a host of its own, nginx in front: a writer replica
SIGKILLed mid-burst and another one's link cut for 10 s, while clients write through the gateway.

The hosts (network namespaces on one LAN, `tests/netns.py`): PostgreSQL (a private server, see
`postgres_on`), the bus, `posts`, `posts.2`, `comments`, `comments.2`, `moderation`,
`moderation.2`, `query`, `query.2`, and the gateway (nginx, `blogctl/gateway.py`, its upstreams at
the replicas' host addresses). The test process is a client on the same LAN (the `observer` link,
never cut) and writes only through the gateway.

What must hold:
- every write that got a 2xx from the gateway is in each Query replica's view exactly once, and
  the views equal what Posts and Comments hold (a write that failed may have been committed first:
  then it is there once too, never twice);
- a request fails only if it was in flight at a fault, and to the service the fault hit: a post
  sent before the killed Posts replica was gone and answered after the kill began; a comment whose
  time overlaps the cut (with `AFTERMATH` after the heal); at most one per client and fault, as a
  client has one request in flight at a time;
- its failure is clear: the gateway's JSON 5xx (`{"error": ...}`), or a connection error;
- writes go on after each fault (failover, not just survival).
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass

import pytest
import requests

from blogctl import gateway
from services.shared.config import host_variable
from services.table import SERVICE_TABLE
from tests.helpers import RunningBlog, free_port, nginx_missing, wait_until
from tests.netns import Network, netns_missing, postgres_on, postgres_server_missing

pytestmark = pytest.mark.slow

LAN = "lan"
REPLICAS = {"posts": 2, "comments": 2, "moderation": 2, "query": 2}
PROCESSES = ("bus", *(name if n == 1 else f"{name}.{n}" for name, count in REPLICAS.items()
                      for n in range(1, count + 1)))
QUERIES = ("query", "query.2")
KILLED = "posts.2"  # SIGKILLed mid-burst
CUT = "comments.2"  # its host's link down for CUT_SECONDS, then up
CUT_SECONDS = 10
CLIENTS = 6
SEEDS = tuple(f"seed {i}" for i in range(6))  # posts made before the burst, for its comments
CLIENT_TIMEOUT = 40  # seconds: longer than a cut, so a request stalled behind it gets its answer
WRITES_PER_PHASE = 60  # acknowledged writes before the kill, between the kill and the cut, and after the heal
# Seconds after the heal that requests still fail of the cut: nginx holds kept-alive connections to the cut
# replica, which closes them as silent (BLOG_IDLE_TIMEOUT, as long as the cut) while its FIN is held back by
# the cut; until TCP's retransmission brings it, a request nginx writes on one of them fails.
AFTERMATH = 3.0
GATEWAY_STATUSES = (502, 503, 504)
CONNECTION_ERRORS = ("ConnectionError", "ReadTimeout", "ChunkedEncodingError")  # requests' names for a lost answer


@pytest.fixture(scope="module")
def network():
    for why in (netns_missing(), nginx_missing(), postgres_server_missing()):
        if why:
            pytest.skip(why)
    made = Network(lans=(LAN,))
    try:
        for name in ("postgres", *PROCESSES, "gateway"):
            made.add(name)
        yield made
    finally:
        made.close()


@pytest.fixture(scope="module")
def database(network):
    with postgres_on(network, "postgres", LAN) as url:
        yield url


@pytest.fixture(scope="module")
def blog(network, database, tmp_path_factory):
    """The formation, each process on its own host and bound to it, nginx in front; yields the gateway's URL."""
    replica_ports = {name: free_port() for name in PROCESSES if "." in name}
    gateway_port = free_port()
    formation = RunningBlog(tmp_path_factory.mktemp("writer-hosts"), extra_env={
        "BLOG_DATABASE_URL": database,
        "BLOG_REPLICAS": ",".join(f"{name}={count}" for name, count in REPLICAS.items()),
        "BLOG_GATEWAY": "1", "BLOG_GATEWAY_PORT": str(gateway_port),
        **{f"BLOG_{name.replace('.', '_').upper()}_PORT": str(port) for name, port in replica_ports.items()},
        **{host_variable(name): network.address(name, LAN) for name in PROCESSES},
    })
    for name in (*PROCESSES, gateway.PROCESS):
        formation.launch_prefix[name] = network.run(name, [])
        formation.service_env[name] = {"BLOG_HOST": "0.0.0.0"}
        formation.addresses[name] = network.address(name, LAN)
    formation.ports.update(replica_ports)
    front = f"http://{network.address('gateway', LAN)}:{gateway_port}"
    try:
        formation.start(*PROCESSES)
        # The gateway runs as `up --gateway` runs it; its host is not Query's, where the supervisor would
        # look for it, so it is waited for here.
        formation.start(gateway.PROCESS, wait=False)
        wait_until(lambda: requests.get(f"{front}/gateway/health", timeout=2).ok, timeout=20,
                   message="the gateway to answer on its host")
        formation.front = front
        yield formation
    finally:
        formation.stop()


@dataclass(frozen=True)
class Attempt:
    """One write a client sent through the gateway, and how it ended."""

    client: int
    kind: str  # "post" or "comment"
    text: str  # its title or content: unique to it
    sent: float  # time.monotonic()
    answered: float
    status: int | None  # None: no HTTP answer (a connection error)
    error: str | None = None  # the gateway's "error", or the exception, for a failure
    id: str | None = None  # the id the service gave it, for a 2xx

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class Burst:
    """CLIENTS threads writing through the gateway until stopped (a third posts, the rest comments on the
    seed posts), each request recorded as an Attempt."""

    def __init__(self, front: str, seeds: list[str]) -> None:
        self.front, self.seeds = front, seeds
        self.attempts: list[Attempt] = []
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._client, args=(n,), name=f"client-{n}") for n in range(CLIENTS)]

    def start(self) -> Burst:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        for thread in self._threads:
            thread.join(CLIENT_TIMEOUT + 10)
        assert not any(thread.is_alive() for thread in self._threads), "a client never got an answer"

    def acknowledged(self) -> int:
        with self._lock:
            return sum(a.ok for a in self.attempts)

    def _client(self, worker: int) -> None:
        with requests.Session() as http:
            for i in range(100_000):  # bounded; stopped long before
                if self.stopping.is_set():
                    return
                if i % 3 == 0:
                    kind, text = "post", f"client {worker} post {i}"
                    path, body = "/posts/create", {"title": text}
                else:
                    kind, text = "comment", f"client {worker} comment {i}"
                    path, body = f"/posts/{self.seeds[(worker + i) % len(self.seeds)]}/comments", {"content": text}
                sent = time.monotonic()
                try:
                    response = http.post(self.front + path, json=body, timeout=CLIENT_TIMEOUT)
                except requests.RequestException as exc:
                    attempt = Attempt(worker, kind, text, sent, time.monotonic(), None, f"{type(exc).__name__}: {exc}")
                else:
                    attempt = _ended(worker, kind, text, sent, response)
                with self._lock:
                    self.attempts.append(attempt)


def _ended(worker: int, kind: str, text: str, sent: float, response: requests.Response) -> Attempt:
    answered = time.monotonic()
    try:
        body = response.json()
    except ValueError:
        body = None
    if not response.ok:
        error = body.get("error") if isinstance(body, dict) else None
        error = error or f"not JSON: {response.text[:80]!r}"
        return Attempt(worker, kind, text, sent, answered, response.status_code, error)
    made = body if kind == "post" else next(c for c in body if c["content"] == text)
    return Attempt(worker, kind, text, sent, answered, response.status_code, id=made["id"])


@dataclass(frozen=True)
class Fault:
    """A fault the test made, from when it began to when it was over (the process gone, the link back),
    and the writes it can fail (a killed Posts replica fails posts)."""

    name: str
    kind: str
    began: float
    ended: float

    def in_flight(self, attempt: Attempt) -> bool:
        return attempt.kind == self.kind and attempt.sent <= self.ended and attempt.answered >= self.began


def shown(view: dict) -> dict[str, tuple[str, list[tuple[str, str, str]]]]:
    """A view (or the services' data in its shape) as post -> (title, its comments sorted): the order in
    which two relays' events arrived is not the test's business."""
    return {post_id: (post["title"], sorted((c["id"], c["content"], c["status"]) for c in post["comments"]))
            for post_id, post in view.items()}


def test_a_writer_replica_killed_and_another_cut_off_lose_no_acknowledged_write(network, blog, say):
    client = blog.client
    config = client.config
    conf = (blog.data_dir / "run" / gateway.PROCESS / "nginx.conf").read_text()
    for name in PROCESSES[1:]:  # the gateway balances over each replica at its host's address
        if name.split(".")[0] in gateway.upstreams(SERVICE_TABLE):
            assert f"server {network.address(name, LAN)}:{config.ports[name]} " in conf

    seeds = []
    for title in SEEDS:
        created = requests.post(f"{blog.front}/posts/create", json={"title": title}, timeout=10)
        assert created.status_code == 201, created.text
        seeds.append(created.json()["id"])
    wait_until(lambda: client.health("comments")["known_posts"] == len(seeds), timeout=30,
               message="Comments to learn the seed posts")

    burst = Burst(blog.front, seeds).start()
    try:
        wait_until(lambda: burst.acknowledged() >= WRITES_PER_PHASE, timeout=60, message="the burst to get going")
        kill_began = time.monotonic()
        blog.kill(KILLED)
        kill_done = time.monotonic()
        acknowledged_at_kill = burst.acknowledged()
        wait_until(lambda: burst.acknowledged() >= acknowledged_at_kill + WRITES_PER_PHASE, timeout=60,
                   message=f"writes to go on with {KILLED} gone")

        cut_began = time.monotonic()
        network.cut(CUT, LAN)
        try:
            time.sleep(CUT_SECONDS)  # the fault's own length
        finally:
            network.heal(CUT, LAN)
        healed_at = time.monotonic()
        acknowledged_at_heal = burst.acknowledged()
        wait_until(lambda: burst.acknowledged() >= acknowledged_at_heal + WRITES_PER_PHASE, timeout=CLIENT_TIMEOUT + 20,
                   message="writes to go on after the link came back")
    finally:
        burst.stop()
    burst_over = time.monotonic()

    attempts = burst.attempts
    acknowledged = [a for a in attempts if a.ok]
    failed = [a for a in attempts if not a.ok]

    # Failures: only requests in flight at a fault (one per client at most: a client has one in flight at a
    # time), each with a clear status.
    kill = Fault(f"the kill of {KILLED}", "post", kill_began, kill_done)
    cut = Fault(f"the {CUT_SECONDS} s cut of {CUT}'s link", "comment", cut_began, healed_at + AFTERMATH)
    for a in failed:
        assert kill.in_flight(a) or cut.in_flight(a), f"a request failed that was in flight at no fault: {a}"
        assert (a.status in GATEWAY_STATUSES and a.error and not a.error.startswith("not JSON")) or \
            (a.status is None and a.error.startswith(CONNECTION_ERRORS)), f"a failure without a clear status: {a}"
    for fault in (kill, cut):
        per_client = Counter(a.client for a in failed if fault.in_flight(a))
        assert max(per_client.values(), default=0) <= 1, f"a client failed twice at {fault.name}: {per_client}"
    assert any(a.kind == "post" and a.sent > kill_done for a in acknowledged), f"no post answered 2xx after {KILLED} died"
    assert any(a.kind == "comment" and a.sent > healed_at for a in acknowledged), "no comment answered 2xx after the heal"

    # Every acknowledged write in each Query replica once; the views equal the writers' data.
    def services_data() -> dict:
        posts = client.posts()
        return shown({post_id: {**post, "comments": client.comments(post_id) if post_id in seeds else []}
                      for post_id, post in posts.items()})

    def replica_view(replica: str) -> dict:
        response = requests.get(f"{config.url(replica)}/posts", timeout=10)
        response.raise_for_status()
        return response.json()

    def converged() -> bool:
        expected = services_data()
        views = [shown(replica_view(replica)) for replica in QUERIES]
        decided = all(status != "pending" for _, comments in expected.values() for _, _, status in comments)
        return decided and all(view == expected for view in views)

    wait_until(converged, timeout=60, interval=0.1, message="both Query replicas to equal the writers' data")
    took = time.monotonic() - burst_over

    attempted = {a.text for a in attempts}
    for replica in QUERIES:
        view = replica_view(replica)
        titles = Counter(post["title"] for post in view.values())
        contents = Counter(c["content"] for post in view.values() for c in post["comments"])
        for a in acknowledged:
            assert (titles if a.kind == "post" else contents)[a.text] == 1, f"{a.text!r} not once in {replica}"
        assert max(titles.values()) == 1 and max(contents.values()) == 1, f"a write twice in {replica}"
        unacknowledged = (set(titles) | set(contents)) - {a.text for a in acknowledged} - set(SEEDS)
        assert unacknowledged <= attempted - {a.text for a in acknowledged}  # only writes that failed, committed first
        ids = {post_id for post_id in view} | {c["id"] for post in view.values() for c in post["comments"]}
        assert {a.id for a in acknowledged} <= ids

    at_cut = [a for a in failed if cut.in_flight(a)]
    statuses = Counter(a.status if a.status is not None else a.error.split(":")[0] for a in failed)
    say(f"{len(acknowledged)} writes acknowledged through the gateway ({sum(a.kind == 'post' for a in acknowledged)} "
        f"posts), {len(failed)} failed ({', '.join(f'{s}: {n}' for s, n in statuses.items()) or 'none'}; "
        f"{sum(map(kill.in_flight, failed))} in flight at {kill.name}, {len(at_cut)} at {cut.name}"
        + (f", answered {max(a.answered for a in at_cut) - cut.began:.1f} s after it began" if at_cut else "")
        + "); both Query replicas held every acknowledged write once "
        f"{took:.1f} s after the burst ended")

