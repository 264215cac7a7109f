"""The front door's routes come from the services' declarations (`front_door`): nginx's locations,
the upstreams and the by-method split of a shared location, with no service named in the gateway."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from blogctl import gateway
from services.shared.service import FrontRoute, Service
from services.table import SERVICE_TABLE, load


def declared(name: str, *front_door: FrontRoute) -> Service:
    return Service(name, 5000, title=name, schema="", store=lambda db, config: None, front_door=front_door)


def test_the_table_gives_the_courses_routes_in_its_order():
    assert [(r.location, r.service, r.by_method, r.default) for r in gateway.routes(SERVICE_TABLE)] == [
        ("= /posts/create", "posts", (), None),
        ("= /posts", "$posts_by_method", (("POST", "posts"),), "query"),
        ("~ ^/posts/[^/]+/comments$", "comments", (), None),
        ("/", "query", (), None),
    ]
    assert gateway.upstreams(SERVICE_TABLE) == ("posts", "comments", "query")


def test_a_new_services_route_reaches_the_configuration_with_its_replicas(tmp_path):
    stats = declared("stats", FrontRoute("= /stats", ingress="/stats"), FrontRoute("= /posts", methods=("DELETE",)))
    config = load({})
    config = replace(config, services=(*config.services, stats), instances=(*config.instances, "stats"),
                     ports={**config.ports, "stats": 5000})
    text = gateway.render(config, 4080, Path(tmp_path))
    assert "upstream stats {\n        server 127.0.0.1:5000 max_fails=1" in text
    assert "location = /stats {\n            proxy_pass http://stats;" in text
    assert "    map $request_method $posts_by_method {\n        POST    posts;\n        DELETE  stats;\n" \
           "        default query;\n    }" in text
    assert ("/stats", "stats") in gateway.ingress_rules(config.services)


def test_a_shared_location_needs_exactly_one_service_for_the_other_methods():
    a = declared("a", FrontRoute("= /x", methods=("POST",)))
    b = declared("b", FrontRoute("= /x", methods=("GET",)))
    with pytest.raises(ValueError, match="exactly one must"):
        gateway.routes([a, b])
    with pytest.raises(ValueError, match="exactly one must"):
        gateway.routes([declared("a", FrontRoute("= /x")), declared("b", FrontRoute("= /x"))])
    with pytest.raises(ValueError, match="declared by two services"):
        gateway.routes([a, declared("b", FrontRoute("= /x", methods=("post",))), declared("c", FrontRoute("= /x"))])


def test_nginx_order_of_trial_whatever_the_tables_order():
    services = [declared("c", FrontRoute("/")), declared("b", FrontRoute("~ ^/b$")), declared("a", FrontRoute("= /a"))]
    assert [r.location for r in gateway.routes(services)] == ["= /a", "~ ^/b$", "/"]


def test_nginx_lets_go_of_an_idle_connection_before_the_service_closes_it(tmp_path):
    """A POST sent on a connection the service is closing fails and is not sent again: nginx must
    drop its idle connections to a service first (seen: 503s after a gateway sat idle 10 s under load)."""
    for idle in ("10", "3", "1"):
        config = load({"BLOG_IDLE_TIMEOUT": idle})
        text = gateway.render(config, 4080, Path(tmp_path))
        kept = [int(line.split()[1].rstrip("s;")) for line in text.splitlines() if "keepalive_timeout" in line]
        assert len(kept) == len(gateway.upstreams(config.services))
        assert all(seconds < config.idle_timeout or seconds == 1 for seconds in kept)


def test_the_gateway_is_reached_where_it_listens_not_where_a_service_runs():
    assert gateway.address(load({"BLOG_GATEWAY_PORT": "5080"})) == ("127.0.0.1", 5080)
    assert gateway.address(load({"BLOG_HOST": "0.0.0.0"})) == ("127.0.0.1", 4080)
    assert gateway.address(load({"BLOG_HOST": "10.77.0.9", "BLOG_QUERY_HOST": "10.77.0.2"})) == ("10.77.0.9", 4080)
