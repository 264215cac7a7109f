"""The HTTP server, chosen by measurement: our Flask apps served by waitress (what the services
run), granian (Rust I/O, WSGI interface) and gunicorn (gthread worker), one process and 8
threads each, in the same run, on the bare endpoint and on Posts' `POST /posts`.

Run as `python -m blogctl.bench.servers SERVER APP PORT`; Posts is configured from the
environment (the bench gives it a data directory of its own and the in-memory transport, so
the figure is the server plus Posts' own write, not the rest of the formation).
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from flask import Flask

from ..client import JSON
from ..supervise import supervised
from . import wrk
from .bare import THREADS
from .load import run_load
from .report import Figure, median_of

SERVERS = ("waitress", "granian", "gunicorn")
APPS = ("bare", "posts")


def bare_app() -> Flask:
    from .bare import create_app

    return create_app()


def posts_app() -> Flask:
    """Posts as its runner builds it, its components (the relay) started: a server-neutral factory."""
    from services import posts
    from services.shared.components import components
    from services.shared.main import SWITCH_INTERVAL
    from services.shared.service import build_service
    from services.table import load

    sys.setswitchinterval(SWITCH_INTERVAL)
    app = build_service(posts.SERVICE, load())
    components(app).start()
    return app


def installed(server: str) -> bool:
    if server == "waitress":
        return True
    try:
        __import__(server)
    except ImportError:
        return False
    return True


def serve(server: str, app: str, port: int) -> None:
    factory = f"blogctl.bench.servers:{app}_app"  # by name: run as __main__, this module is not importable as itself
    if server == "waitress":
        from waitress import serve as waitress_serve

        from services.shared.web import CONNECTIONS_MAX

        waitress_serve(globals()[f"{app}_app"](), host="127.0.0.1", port=port, threads=THREADS,
                       connection_limit=CONNECTIONS_MAX, asyncore_use_poll=True)
    elif server == "granian":
        from granian.constants import Interfaces
        from granian.server import Server

        Server(factory, address="127.0.0.1", port=port, interface=Interfaces.WSGI, workers=1,
               blocking_threads=THREADS, factory=True, log_enabled=False).serve()
    elif server == "gunicorn":
        os.execvp(sys.executable, [sys.executable, "-m", "gunicorn", "-w", "1", "-k", "gthread",
                                   "--threads", str(THREADS), "-b", f"127.0.0.1:{port}", "--log-level", "warning",
                                   f"{factory}()"])
    else:
        raise SystemExit(f"unknown server {server!r} (known: {', '.join(SERVERS)})")


@contextmanager
def served(server: str, app: str, port: int, env: dict[str, str] | None = None) -> Iterator[str]:
    """`app` on `server` in a process group of its own on 127.0.0.1:`port`; its URL, stopped on leaving."""
    data_dir = tempfile.mkdtemp(prefix="blogctl-servers-")
    env = {"BLOG_DATA_DIR": data_dir, "BLOG_BROKER_URL": "memory://", "BLOG_POSTS_PORT": str(port), **(env or {})}
    url = f"http://127.0.0.1:{port}/"
    try:
        with supervised(f"{app}-on-{server}", "blogctl.bench.servers", server, app, str(port),
                        answers=url + ("health" if app == "posts" else ""), env=env):
            yield url
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2], int(sys.argv[3]))


def compare(report, *, rounds: int, seconds: float, new_client, port: Callable[[], int]) -> None:
    """Each installed server on the bare endpoint and on `POST /posts`, interleaved `rounds` times;
    the medians and ranges go into `report`, rates as ratios to waitress's bare rate of the same run."""
    servers = [s for s in SERVERS if installed(s)]
    runs: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    generator = "wrk" if wrk.available() else "python"
    for _ in range(rounds):
        for server in servers:
            for app in APPS:
                with served(server, app, port()) as url:
                    runs.setdefault((server, app), []).append(_measure(url, app, seconds, new_client))
    base = median_of([rate for rate, _, _ in runs[("waitress", "bare")]])[0]
    for (server, app), found in runs.items():
        what = "GET {} (bare)" if app == "bare" else "POST /posts (Posts, in-memory transport)"
        rate, rate_range = median_of([r for r, _, _ in found])
        p50, p50_range = median_of([p * 1000 for _, p, _ in found])
        p99, p99_range = median_of([p * 1000 for _, _, p in found])
        tail, tail_range = median_of([p99 / p50 for _, p50, p99 in found])
        figure = dict(scenario="server", load=generator)
        report.add(Figure(name=f"{server}: {what}, req/s", value=rate, unit="req/s", spread=rate_range,
                          ratio=rate / base, ratio_of="waitress bare req/s", **figure))
        report.add(Figure(name=f"{server}: {what}, p50", value=p50, unit="ms", spread=p50_range, **figure))
        report.add(Figure(name=f"{server}: {what}, p99", value=p99, unit="ms", spread=p99_range,
                          ratio=tail, ratio_of=f"p50 (runs {tail_range})", **figure))


def _measure(url: str, app: str, seconds: float, new_client) -> tuple[float, float, float]:
    """(requests/s, p50, p99 in seconds) of `app` at `url`, from wrk where installed, else load.py."""
    body = '{"title": "bench"}' if app == "posts" else None
    target = url + ("posts" if app == "posts" else "")
    if wrk.available():
        found = wrk.run(target, seconds=seconds, body=body, headers=dict(JSON))
        return found.rate, found.p50, found.p99
    if body is None:
        call = lambda c, *_: c.http.request("GET", target).status_code == 200  # noqa: E731
    else:
        call = lambda c, *_: c.http.request("POST", target, body=body.encode(), headers=JSON).status_code == 201  # noqa: E731
    load = run_load(call, threads=8, seconds=seconds, client=new_client)
    return load.rate, load.percentile(50), load.percentile(99)
