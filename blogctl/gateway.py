"""The front door: nginx in front of the formation, routing as the course's ingress does.

The course puts its blog behind ingress-nginx on host `posts.com`, with these rules in order:
`/posts/create` to Posts, `/posts` to Query, `/posts/?(.*)/comments` to Comments, anything else
to the client. Here the same routes go to every replica of each service, so a browser or a
client needs one address. Our own clients still `POST /posts` (the course's earlier route): at
the gateway a POST to `/posts` goes to Posts, a GET to Query. Anything else is Query's page.

nginx balances over the replicas with passive health checks: a replica that refuses or times out
is left alone for `FAIL_TIMEOUT` seconds, and the request goes to the next replica when that is
safe. nginx never passes a request that was already sent on to another server unless its method
is idempotent (it does not retry a POST that may have been applied); a POST refused at connect
was never sent, so it moves on.

Which paths go to which service is each service's declaration (`front_door` in
services/shared/service.py): this module names no service. The same declarations give the
Kubernetes ingress's rules (`ingress_rules`, checked against deploy/k8s by tests/unit/test_deploy.py).

The configuration is generated from the formation at `up` into `<data dir>/run/gateway/`,
checked with `nginx -t`, and nginx runs in the foreground, supervised like the services.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from services.shared.config import Config
from services.shared.service import FrontRoute, Service
from services.shared.web import GATEWAY_HEADER

PROCESS = "gateway"  # its name in the formation (`blogctl status`, `logs gateway`, `kill gateway`)
# How the supervisor runs it: this module writes the configuration for the formation's settings,
# then becomes nginx, so the supervised pid is nginx's master and each start reads the formation afresh.
COMMAND = "exec python -m blogctl.gateway"
FAIL_TIMEOUT = 10  # seconds a replica that failed is passed over
NGINX = "nginx"


class GatewayError(Exception):
    """nginx is missing, or rejected the configuration."""


def nginx_missing() -> str | None:
    """Why the gateway cannot run here, with what to do, or None."""
    if shutil.which(NGINX) is None:
        return ("nginx is not installed: the gateway runs Debian's nginx "
                "(`sudo apt-get install nginx-light`, or nginx on other systems)")
    return None


@dataclass(frozen=True)
class Route:
    """One location of the front door and the upstream its requests go to: a service, or the
    `map` that picks one by method (`by_method`, with `default` for every other method)."""

    location: str  # an nginx location: `= /exact`, `~ regex` or a `/prefix`
    service: str  # an upstream, or `$<name>_by_method`
    by_method: tuple[tuple[str, str], ...] = ()  # (method, service), when the location is shared
    default: str | None = None  # the service that takes the other methods there


def routes(services: Sequence[Service]) -> tuple[Route, ...]:
    """The front door's locations, from each declaration's `front_door`, in nginx's order of
    trial (exact, regex, prefix; the table's order within each), which is also the course's.
    A location two services share is split by method; exactly one of them takes the rest."""
    claims: dict[str, list[tuple[FrontRoute, str]]] = {}
    declared = [(route, service.name) for service in services for route in service.front_door]
    for route, name in sorted(declared, key=lambda claim: claim[0].precedence):
        claims.setdefault(route.location, []).append((route, name))
    found = []
    for location, shared in claims.items():
        rest = [name for route, name in shared if route.methods is None]
        if len(rest) != 1:
            raise ValueError(f"front door location {location!r}: {len(rest)} services take the methods "
                             f"no route names ({', '.join(rest) or 'none'}); exactly one must")
        by_method = [(method.upper(), name) for route, name in shared for method in route.methods or ()]
        if len({method for method, _ in by_method}) != len(by_method):
            raise ValueError(f"front door location {location!r}: a method is declared by two services")
        if not by_method:
            found.append(Route(location, rest[0]))
        else:
            variable = re.sub(r"\W+", "_", location.removeprefix("= ")).strip("_") + "_by_method"
            found.append(Route(location, f"${variable}", tuple(by_method), rest[0]))
    return tuple(found)


def upstreams(services: Sequence[Service]) -> tuple[str, ...]:
    """The services the front door sends to, in the table's order: one upstream each."""
    return tuple(service.name for service in services if service.front_door)


def ingress_rules(services: Sequence[Service]) -> list[tuple[str, str]]:
    """The course's ingress (deploy/k8s/ingress-srv.yaml) from the same declarations, in order:
    (path, service). Routes limited to some methods have no ingress path: an ingress cannot
    route by method."""
    declared = [(route, service.name) for service in services for route in service.front_door if route.ingress]
    return [(route.ingress, name) for route, name in sorted(declared, key=lambda claim: claim[0].precedence)]


def render(config: Config, port: int, run_dir: Path) -> str:
    """The nginx configuration for `config`'s formation, listening on `port`, writing under `run_dir`."""
    run_dir = run_dir.resolve()
    front = routes(config.services)
    upstream_blocks = "\n".join(_upstream(config, service) for service in upstreams(config.services))
    maps = "\n".join(_map(route) for route in front if route.by_method)
    locations = "\n".join(_location(route) for route in front)
    return f"""# Generated by blogctl from the formation; changes are lost at the next `blogctl up`.
worker_processes 1;
pid {run_dir}/nginx.pid;
error_log {run_dir}/error.log warn;

events {{
    worker_connections 1024;
}}

http {{
    access_log off;
    client_body_temp_path {run_dir}/body;
    proxy_temp_path {run_dir}/proxy;
    fastcgi_temp_path {run_dir}/fastcgi;
    uwsgi_temp_path {run_dir}/uwsgi;
    scgi_temp_path {run_dir}/scgi;
    client_max_body_size {config.max_body_bytes};
    client_body_buffer_size {config.max_body_bytes};

    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host $http_host;
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    proxy_set_header X-Forwarded-Proto $scheme;
    proxy_set_header {GATEWAY_HEADER} 1;
    proxy_connect_timeout 2s;
    proxy_read_timeout 60s;
    # The next replica after a refusal, a timeout or a 502/503; POSTs only when they were never sent.
    proxy_next_upstream error timeout http_502 http_503;
    proxy_next_upstream_tries 3;

{maps}

{upstream_blocks}

    server {{
        listen {_listen(config)}:{port};
        # nginx's own failures (no replica answered) in the services' shape, not an HTML page.
        error_page 502 503 504 = @unavailable;
        location @unavailable {{
            default_type application/json;
            return 503 '{{"error": "no process of the service answered through the gateway; is it running? (blogctl status)"}}';
        }}
        location = /gateway/health {{
            default_type application/json;
            return 200 '{{"service": "gateway", "status": "ok"}}';
        }}
{locations}
    }}
}}
"""


def address(config: Config) -> tuple[str, int]:
    """Where a client on this host reaches the gateway (nginx runs where `up` runs, on the bind address)."""
    host = _listen(config)
    return ("127.0.0.1" if host == "0.0.0.0" else host), config.gateway_port


def _listen(config: Config) -> str:
    return config.host if config.host not in ("", "::") else "0.0.0.0"


def _upstream(config: Config, service: str) -> str:
    servers = "\n".join(
        f"        server {config.url(name).removeprefix('http://')} max_fails=1 fail_timeout={FAIL_TIMEOUT}s;"
        for name in config.replicas(service)
    )
    # nginx lets go of an idle connection before the service does (BLOG_IDLE_TIMEOUT): else a POST sent
    # on one the service is closing fails, and nginx does not send a POST again (it may have been applied).
    idle = f"\n        keepalive_timeout {max(1, config.idle_timeout // 2)}s;"
    return f"    upstream {service} {{\n{servers}\n        keepalive 16;{idle}\n    }}"


def _map(route: Route) -> str:
    choices = "\n".join(f"        {method:<7} {service};" for method, service in (*route.by_method, ("default", route.default)))
    return f"    map $request_method {route.service} {{\n{choices}\n    }}"


def _location(route: Route) -> str:
    return f"        location {route.location} {{\n            proxy_pass http://{route.service};\n        }}"


def write(config: Config, port: int, run_dir: Path) -> Path:
    """Write the configuration and check it with `nginx -t`; returns its path."""
    if why := nginx_missing():
        raise GatewayError(why)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "nginx.conf"
    path.write_text(render(config, port, run_dir))
    checked = subprocess.run([NGINX, "-t", "-q", "-c", str(path.resolve()), "-p", str(run_dir.resolve())],
                             capture_output=True, text=True, timeout=30)
    if checked.returncode != 0:
        detail = (checked.stderr.strip().splitlines() or ["no output"])[-1]
        raise GatewayError(f"nginx rejected the gateway's configuration {path}: {detail}")
    return path


def command(path: Path) -> list[str]:
    """nginx in the foreground on the configuration at `path` (for the supervisor)."""
    return [NGINX, "-c", str(path.resolve()), "-p", str(path.parent.resolve()), "-g", "daemon off;"]


def main() -> None:
    """`python -m blogctl.gateway`: write and check the configuration of the formation the
    environment describes, then run nginx in its place (in the foreground)."""
    from services.shared.config import ConfigError
    from services.table import load

    try:
        config = load()
        path = write(config, config.gateway_port, config.run_dir / PROCESS)
    except (ConfigError, GatewayError, OSError) as exc:
        sys.exit(f"{PROCESS}: cannot start: {exc}")
    print(f"{PROCESS}: nginx on {config.host}:{config.gateway_port} in front of "
          f"{', '.join(n for s in upstreams(config.services) for n in config.replicas(s))} ({path})", flush=True)
    argv = command(path)
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main()
