"""Adding a service: Stats (tests/examples/stats) is a package with its declaration; given one more
line in the table, the configuration, the bus's subscribers, the broker's queue bindings and
`build_service` take it as they take the services the formation runs; tests/e2e/test_new_service.py
runs it from one more Procfile line (docs/extending.md)."""
from __future__ import annotations

from services.shared import config as config_module
from services.shared.components import components
from services.shared.events import utc_now
from services.shared.service import build_service
from services.shared.transport import InMemoryBus
from services.table import SERVICE_TABLE
from tests.examples import stats
from tests.in_process import create_apps, relay

TABLE = (*SERVICE_TABLE, stats.SERVICE)  # the one line a new service adds to services/table.py


def test_a_new_service_is_its_package_and_one_line_in_the_table(tmp_path):
    config = config_module.load({"BLOG_DATA_DIR": str(tmp_path)}, TABLE)
    assert config.ports["stats"] == 4006 and config.url("stats") == "http://127.0.0.1:4006"
    assert "stats" in [s.name for s in config.subscribers]  # the bus delivers to it
    assert config.service("stats").consumes == ("PostCreated",)  # its queue on a broker is bound to these

    bus = InMemoryBus()
    apps = create_apps(config, bus)
    apps["stats"] = app = build_service(stats.SERVICE, config, bus.transport("stats"))
    assert components(app).names == ["transport", "database", "consumer", "catch-up"]  # it emits nothing: no relay
    components(app)["consumer"].start()
    hour = utc_now()[:13]
    posts = apps["posts"].test_client()
    for title in ("one", "two", "three"):
        assert posts.post("/posts", json={"title": title}).status_code == 201
    relay(apps)

    client = app.test_client()
    assert client.get("/stats").json == {hour: 3}
    health = client.get("/health").json
    assert (health["service"], health["hours"], health["applied_seq"]) == ("stats", 1, 3)
    assert {"/stats", "/events"} <= set(client.get("/openapi.json").json["paths"])

    bus.publish([bus.read_log(after=0, limit=1)[0]])  # a redelivered PostCreated is counted once
    assert client.get("/stats").json == {hour: 3}



def test_every_service_is_assembled_in_the_one_order(tmp_path):
    config = config_module.load({"BLOG_DATA_DIR": str(tmp_path)}, SERVICE_TABLE)
    apps = create_apps(config, InMemoryBus())
    assert [name for name in apps] == [s.name for s in SERVICE_TABLE if not s.bus]
    for declared in SERVICE_TABLE:
        if declared.bus:
            continue
        consumer = ["consumer", "catch-up"] if declared.handlers else []
        relayed = ["relay"] if declared.emits else []
        assert components(apps[declared.name]).names == ["transport", "database", *consumer, *relayed], declared.name
