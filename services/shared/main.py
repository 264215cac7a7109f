"""`python -m services.NAME`: build the app, start its background workers, serve it until stopped."""
from __future__ import annotations

import sys
from collections.abc import Callable

from flask import Flask

from . import config as config_module
from .web import serve


# A request thread that wakes a worker (relay, delivery) must not then wait the default 5 ms
# for the GIL back before it can answer: measured, this alone added ~4 ms to every hop.
SWITCH_INTERVAL = 0.0005


def run(service: str, create_app: Callable[..., Flask]) -> None:
    sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        config = config_module.load()
        app = create_app(config)
    except (config_module.ConfigError, OSError) as exc:
        sys.exit(f"{service}: cannot start: {exc}")
    worker = app.extensions.get("blog")
    if worker is not None:
        worker.start()
    try:
        serve(app, service, config)
    except OSError as exc:
        sys.exit(f"{config.me(service)}: cannot listen on {config.host}:{config.ports[config.me(service)]}: {exc}")
    finally:
        if worker is not None:
            worker.stop()
