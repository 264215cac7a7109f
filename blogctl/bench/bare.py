"""The bare endpoint: the services' web server (waitress + Flask) answering `{}`, nothing else.

The bench measures it in the same run as the formation and states figures as ratios to it:
a ratio holds across noisy machines where an absolute figure does not. Run as
`python -m blogctl.bench.bare PORT`.
"""
from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from flask import Flask, jsonify

from ..supervise import supervised

THREADS = 8  # as the services' waitress


def create_app() -> Flask:
    app = Flask("bare")

    @app.get("/")
    def bare():
        return jsonify({})

    return app


@dataclass(frozen=True)
class Endpoint:
    url: str
    pid: int  # its process (and process group): what its CPU is read from


@contextmanager
def bare_endpoint(port: int) -> Iterator[Endpoint]:
    """The bare endpoint in a process of its own on 127.0.0.1:`port`, stopped on leaving."""
    url = f"http://127.0.0.1:{port}/"
    with supervised("bare", "blogctl.bench.bare", str(port), answers=url, timeout=20) as pid:
        yield Endpoint(url, pid)


if __name__ == "__main__":
    from waitress import serve

    serve(create_app(), host="127.0.0.1", port=int(sys.argv[1]), threads=THREADS, ident="bare")
