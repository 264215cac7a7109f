"""`python -m services.NAME`: build the app, start its components in order, serve it until
stopped (Ctrl-C or SIGTERM), then stop the components in reverse: the transport, registered
first, is closed last."""
from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable

from flask import Flask

from . import config as config_module
from .components import components
from .web import serve


# A request thread that wakes a worker (relay, delivery) must not then wait the default 5 ms
# for the GIL back before it can answer: measured, this alone added ~4 ms to every hop.
SWITCH_INTERVAL = 0.0005


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread. A KeyboardInterrupt, so that waitress's loop lets it through."""


def _terminate(signum, frame) -> None:
    raise Terminated


def run(service: str, create_app: Callable[..., Flask]) -> None:
    sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        config = config_module.load()
        app = create_app(config)
    except (config_module.ConfigError, OSError) as exc:
        sys.exit(f"{service}: cannot start: {exc}")
    parts = components(app)
    signal.signal(signal.SIGTERM, _terminate)
    terminated = False
    try:
        parts.start()
        serve(app, service, config)
    except OSError as exc:
        sys.exit(f"{config.me(service)}: cannot listen on {config.host}:{config.ports[config.me(service)]}: {exc}")
    except Terminated:
        terminated = True
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # stopping is not interrupted by a second one
        parts.stop()
    if terminated:  # end as a process SIGTERM stops does, so the supervisor reads the same exit status
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
