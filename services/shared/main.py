"""`python -m services.NAME`: build the app, start its components in order, serve it until
stopped (Ctrl-C or SIGTERM), then stop the components in reverse: the transport, registered
first, is closed last."""
from __future__ import annotations

import gc
import os
import signal
import sys
import threading
from collections.abc import Sequence
from services import table

from . import config as config_module
from . import tracing
from .components import components
from .db import UNAVAILABLE
from .service import Service, build_service
from .web import serve


# A request thread that wakes a worker (relay, delivery) must not then wait the default 5 ms
# for the GIL back before it can answer: measured, this alone added ~4 ms to every hop.
SWITCH_INTERVAL = 0.0005


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread: a KeyboardInterrupt, on which waitress stops serving."""


def run(declaration: Service, formation: Sequence[Service] = table.SERVICE_TABLE) -> None:
    """Serve the service `declaration` declares (its `__main__`: `run(SERVICE)`), one of `formation`."""
    service = declaration.name
    sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        config = config_module.load(None, formation)
        tracing.setup(config, config.me(service))  # before the app: its hooks are made for a tracing process
        app = build_service(declaration, config)
    except (config_module.ConfigError, OSError, *UNAVAILABLE) as exc:  # UNAVAILABLE: its database, say
        sys.exit(f"{service}: cannot start: {' '.join(str(exc).split())}")
    # What the process made before serving (modules, the app, Query's view as loaded) lives as long as the
    # process: frozen, the garbage collector's full passes no longer scan it again and again.
    gc.freeze()
    parts = components(app)
    terminated = threading.Event()  # waitress returns from serve() on the interrupt rather than raising it

    def terminate(signum, frame) -> None:
        terminated.set()
        parts.release_requests()  # waitress waits for its request threads before serve() returns
        raise Terminated

    signal.signal(signal.SIGTERM, terminate)
    try:
        parts.start()
        serve(app, service, config)
    except OSError as exc:
        sys.exit(f"{config.me(service)}: cannot listen on {config.host}:{config.ports[config.me(service)]}: {exc}")
    except Terminated:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # stopping is not interrupted by a second one
        parts.stop()
        tracing.shutdown()  # the spans still queued are exported
    if terminated.is_set():  # end as SIGTERM ends a process: the same exit status, and no clean-up at exit
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
