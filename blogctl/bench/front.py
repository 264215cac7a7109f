"""The front door under load: `POST /posts` through nginx (blogctl/gateway.py) with one and with two
Posts replicas on PostgreSQL, and through a gateway in front of the bench's own formation (SQLite,
one Posts) as the reference, in one run, each a ratio to the bare endpoint.

The PostgreSQL formation runs two Posts processes (`BLOG_REPLICAS=posts=2`) and two gateways in
front of it: one that sends every request to the first replica, one that balances over both. Both
replicas run (and relay the shared outbox) in both rows, so the rows differ only in how many
processes serve the requests. The three gateways are loaded in turn, round after round, and each
row is the median of its rounds, with their range: on a shared machine, what disturbs one row's
round disturbs the others' alike.

It needs nginx and an empty PostgreSQL database (`--database` or BLOG_DATABASE_URL): the writers'
schemas are made there and dropped at the end. Without either it is skipped, and the report says why.
"""
from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from services.table import WRITER_SCHEMAS

from .. import gateway
from ..client import JSON, BlogClient
from ..errors import BlogctlError
from ..runtime import Runtime
from ..supervise import free_port, supervised
from .harness import CLIENTS, Bench, until
from .report import Figure, median_of

SCENARIO = "gateway"
# fresh_formation (scenarios.py): a formation on free ports with `env` added, for the block's length.
FreshFormation = Callable[[dict[str, str]], AbstractContextManager[Runtime]]


def why_not(database_url: str | None) -> str | None:
    """Why the gateway rows cannot be measured here, with what to do, or None."""
    if why := gateway.nginx_missing():
        return why
    if not database_url:
        return ("the gateway rows need PostgreSQL for two Posts replicas: pass --database "
                "postgresql://USER@HOST:PORT/DBNAME (an empty database) or set BLOG_DATABASE_URL")
    return None


def _writer_schemas(url: str) -> list[str]:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            rows = conn.execute("SELECT schema_name FROM information_schema.schemata WHERE schema_name = ANY(%s)",
                                (list(WRITER_SCHEMAS),)).fetchall()
    except psycopg.Error as exc:
        raise BlogctlError(f"the gateway rows: cannot reach the database: {' '.join(str(exc).split())}") from exc
    return sorted(row[0] for row in rows)


@contextmanager
def scratch_schemas(url: str) -> Iterator[None]:
    """The writers' schemas in `url`, made by the formation and dropped on leaving; refused when the
    database already holds them (the bench would mix its posts with someone's data, then drop them)."""
    import psycopg

    if found := _writer_schemas(url):
        raise BlogctlError(f"the gateway rows need an empty database: it already holds the schemas "
                           f"{', '.join(found)}; create one for the bench (`createdb blog_bench`)")
    try:
        yield
    finally:
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {', '.join(WRITER_SCHEMAS)} CASCADE")


@contextmanager
def front_door(rt: Runtime, name: str, replicas: str) -> Iterator[str]:
    """A gateway (`python -m blogctl.gateway`, as `up --gateway` runs it) in front of `rt`'s formation,
    routing to the processes `replicas` (BLOG_REPLICAS) names; its URL until the block ends."""
    port = free_port()
    run = Path(tempfile.mkdtemp(prefix=f"blogctl-bench-{name}-"))  # its configuration, its own
    env = {**rt.env, "BLOG_DATA_DIR": str(run), "BLOG_GATEWAY_PORT": str(port), "BLOG_REPLICAS": replicas}
    url = f"http://127.0.0.1:{port}"
    try:
        with supervised(name, "blogctl.gateway", answers=f"{url}/gateway/health", env=env, timeout=30):
            try:
                yield url
            except BlogctlError as exc:  # a load through it failed: nginx's own account of why
                raise BlogctlError(f"{exc}; {name}'s nginx error log ends: {_tail(run / 'run' / gateway.PROCESS / 'error.log')}") from exc
    finally:
        shutil.rmtree(run, ignore_errors=True)


def _tail(path: Path, lines: int = 3) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:]) or "(empty)"
    except OSError:
        return "(none)"


class Acknowledged:
    """Counts the 201s a load got (many threads)."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def post(self, client: BlogClient, url: str) -> int:
        answer = client.http.request("POST", url, body=b'{"title": "bench"}', headers=JSON)
        if answer.status_code != 201:
            raise BlogctlError(f"POST {url} through the gateway answered {answer.status_code}: {answer.text[:200]}")
        with self._lock:
            self.count += 1
        return 1


def measure(bench: Bench, *, database_url: str | None, formation: FreshFormation) -> None:
    if why := why_not(database_url):
        bench.report.skip(SCENARIO, why)
        return
    rounds = bench.sizes.tail_rounds
    replica_port = free_port()
    pg_env = {"BLOG_DATABASE_URL": database_url, "BLOG_REPLICAS": "posts=2", "BLOG_POSTS_2_PORT": str(replica_port)}
    if broker := bench.rt.config.broker_url:  # the same transport as the bench's formation, in a namespace of its own
        pg_env.update(BLOG_BROKER_URL=broker, BLOG_BROKER_NAMESPACE=f"{bench.rt.config.broker_namespace}-pg")
    with scratch_schemas(database_url), formation(pg_env) as pg, \
            front_door(bench.rt, "gateway-sqlite", "") as sqlite_front, \
            front_door(pg, "gateway-1", "") as one, front_door(pg, "gateway-2", "posts=2") as two:
        rows = {  # label -> (the gateway's URL, the POSTs it acknowledged)
            "SQLite, 1 Posts": (sqlite_front, Acknowledged()),
            "PostgreSQL, 1 Posts replica": (one, Acknowledged()),
            "PostgreSQL, 2 Posts replicas": (two, Acknowledged()),
        }
        rates: dict[str, list[float]] = {label: [] for label in rows}
        p50s: dict[str, list[float]] = {label: [] for label in rows}
        for k in range(rounds):
            for label, (url, acked) in rows.items():
                with bench.step(f"POST /posts through the gateway, {label}, {CLIENTS} clients (round {k + 1} of {rounds})"):
                    load = bench.load(lambda c, *_, url=url, acked=acked: acked.post(c, f"{url}/posts"))
                rates[label].append(load.rate)
                p50s[label].append(load.percentile(50) * 1000)
        bench.count_posts(rows["SQLite, 1 Posts"][1].count)  # the bench's formation: its settle counts them
        bench.settle()
        on_pg = rows["PostgreSQL, 1 Posts replica"][1].count + rows["PostgreSQL, 2 Posts replicas"][1].count
        with BlogClient(pg.config, timeout=30) as pg_client:
            until(lambda: pg_client.health("query", timeout=30)["posts"] >= on_pg, timeout=300,
                  what="the PostgreSQL formation's Query to show every acknowledged post")
            shown = pg_client.health("query", timeout=30)["posts"]
    bench.report.check("gateway: every POST acknowledged through a gateway is in Query once",
                       shown == on_pg, f"PostgreSQL formation: {on_pg:,} acknowledged, Query shows {shown:,}")
    medians = {}
    for label in rows:
        medians[label], spread = median_of(rates[label])
        bench.report.add(Figure(SCENARIO, f"POST /posts through the gateway, {label}, {CLIENTS} clients",
                                medians[label], "req/s", ratio=medians[label] / bench.bare["rate"],
                                ratio_of="bare req/s", spread=spread if rounds > 1 else ""))
        p50, p50_spread = median_of(p50s[label])
        bench.report.add(Figure(SCENARIO, f"POST /posts through the gateway, {label}, p50", p50, "ms",
                                spread=p50_spread if rounds > 1 else ""))
    one, two, sqlite = (medians[label] for label in ("PostgreSQL, 1 Posts replica", "PostgreSQL, 2 Posts replicas",
                                                     "SQLite, 1 Posts"))
    # Ratios of this run's medians: the value is the ratio itself.
    bench.report.add(Figure(SCENARIO, "2 Posts replicas / 1 on PostgreSQL (req/s)", two / one, "x"))
    bench.report.add(Figure(SCENARIO, "PostgreSQL, 1 Posts replica / SQLite, 1 Posts (req/s)", one / sqlite, "x"))
