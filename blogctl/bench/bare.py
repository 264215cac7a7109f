"""The bare endpoint: the services' web server (waitress + Flask) answering `{}`, nothing else.

The bench measures it in the same run as the formation and states figures as ratios to it:
a ratio holds across noisy machines where an absolute figure does not. Run as
`python -m blogctl.bench.bare PORT`.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from flask import Flask, jsonify

from services.shared.http import HttpClient, Unreachable

from ..polling import wait_until

THREADS = 8  # as the services' waitress


def create_app() -> Flask:
    app = Flask("bare")

    @app.get("/")
    def bare():
        return jsonify({})

    return app


@contextmanager
def bare_endpoint(port: int) -> Iterator[str]:
    """The bare endpoint in a process of its own on 127.0.0.1:`port`, stopped on leaving."""
    process = subprocess.Popen([sys.executable, "-m", __name__, str(port)], start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    try:
        with HttpClient(timeout=1) as http:
            wait_until(lambda: http.get(url).status_code == 200, timeout=20, ignoring=(Unreachable,),
                       message="the bare endpoint to answer")
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(10)


if __name__ == "__main__":
    from waitress import serve

    serve(create_app(), host="127.0.0.1", port=int(sys.argv[1]), threads=THREADS, ident="bare")
