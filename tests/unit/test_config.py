from pathlib import Path

import pytest

from services.shared.config import ConfigError, Subscriber
from services.table import DEFAULT_PORTS, DEFAULT_SUBSCRIBERS, SERVICE_TABLE, SERVICES, load, spec
from services.shared.events import SCHEMAS


def test_defaults_match_the_course():
    config = load({})
    assert config.ports == {"posts": 4000, "comments": 4001, "query": 4002, "moderation": 4003, "bus": 4005}
    assert config.host == "127.0.0.1"
    assert config.data_dir == Path(".blog")
    assert [s.url for s in config.subscribers] == [
        "http://127.0.0.1:4000/events", "http://127.0.0.1:4001/events", "http://127.0.0.1:4002/events",
        "http://127.0.0.1:4003/events",  # the bus delivers to Moderation too, as the course's does
    ]
    assert config.settings["moderation"].reject == ("orange",)


def test_environment_overrides_with_one_prefix():
    config = load({"BLOG_QUERY_PORT": "5002", "BLOG_DATA_DIR": "/tmp/x", "BLOG_HOST": "0.0.0.0"})
    assert config.ports["query"] == 5002
    assert config.ports["posts"] == DEFAULT_PORTS["posts"]
    assert config.data_dir == Path("/tmp/x")
    assert config.url("query") == "http://127.0.0.1:5002"  # a wildcard bind is reached on loopback
    assert config.subscribers[2].url == "http://127.0.0.1:5002/events"


def test_subscribers_come_from_configuration():
    config = load({"BLOG_SUBSCRIBERS": "query, audit=http://127.0.0.1:9999/events"})
    assert config.subscribers == (
        Subscriber("query", "http://127.0.0.1:4002/events", batch=True),
        Subscriber("audit", "http://127.0.0.1:9999/events", batch=False),
    )


@pytest.mark.parametrize("env", [
    {"BLOG_POSTS_PORT": "http"}, {"BLOG_BUS_PORT": "70000"}, {"BLOG_SUBSCRIBERS": "nobody"}, {"BLOG_IDLE_TIMEOUT": "0"},
    {"BLOG_IDLE_TIMEOUT": "2.5"}, {"BLOG_FSYNC": "maybe"}, {"BLOG_REPLICAS": "posts=2"},
    {"BLOG_REPLICAS": "query=two"}, {"BLOG_INSTANCE": "query.2"},
])
def test_bad_settings_are_named(env):
    with pytest.raises(ConfigError) as info:
        load(env)
    assert list(env)[0] in str(info.value)


def test_the_procfile_runs_exactly_the_services_in_the_table():
    from honcho.environ import parse_procfile

    procfile = parse_procfile((Path(__file__).resolve().parents[2] / "Procfile").read_text())
    assert sorted(procfile.processes) == sorted(SERVICES)
    for name, command in procfile.processes.items():
        assert command == f"exec python -m services.{name}"


def test_every_event_type_in_the_table_is_declared():
    for row in SERVICE_TABLE:
        assert set(row.consumes) | {data.__name__ for data in row.emits} <= set(SCHEMAS), row.name


def test_each_service_subscribes_to_exactly_what_its_handlers_take(tmp_path):
    from services.shared.components import components
    from services.shared.transport import InMemoryBus
    from tests.in_process import create_apps

    apps = create_apps(load({"BLOG_DATA_DIR": str(tmp_path)}), InMemoryBus())
    assert set(apps) == set(DEFAULT_SUBSCRIBERS)
    for name, app in apps.items():
        if not spec(name).consumes:
            assert "consumer" not in components(app), name
            continue
        assert set(components(app)["consumer"].types) == {data.__name__ for data in spec(name).handlers}, name


def test_a_broker_cluster_is_several_addresses_tried_in_turn():
    config = load({"BLOG_BROKER_URL": "amqp://guest:guest@127.0.0.1:5701//, amqp://guest:guest@127.0.0.1:5702//;"})
    assert config.broker_url == "amqp://guest:guest@127.0.0.1:5701//;amqp://guest:guest@127.0.0.1:5702//"
    assert load({"BLOG_BROKER_URL": " "}).broker_url is None


def test_a_service_on_another_host_is_reached_there():
    config = load({"BLOG_BUS_HOST": "bus.internal", "BLOG_HOST": "0.0.0.0"})
    assert config.url("bus") == "http://bus.internal:4005"
    assert config.url("posts") == "http://127.0.0.1:4000"  # the others: this host
    assert config.subscribers[0].url == "http://127.0.0.1:4000/events"


def test_writes_wait_for_the_disk_unless_told_not_to():
    assert load({}).fsync is True
    assert load({"BLOG_FSYNC": "0"}).fsync is False


def test_query_replicas_each_have_a_port_and_a_subscription_of_their_own():
    config = load({"BLOG_REPLICAS": "query=3", "BLOG_QUERY_3_PORT": "5999"})
    assert config.instances == ("posts", "comments", "query", "query.2", "query.3", "moderation", "bus")
    assert config.replicas("query") == ["query", "query.2", "query.3"]
    assert config.ports["query.2"] == 4102 and config.ports["query.3"] == 5999
    assert [s.name for s in config.subscribers] == ["posts", "comments", "query", "query.2", "query.3", "moderation"]
    assert config.subscribers[3].url == "http://127.0.0.1:4102/events"
    assert config.me("query") == "query"
    replica = load({"BLOG_REPLICAS": "query=2", "BLOG_INSTANCE": "query.2"})
    assert replica.me("query") == "query.2" and replica.me("posts") == "posts"


def test_a_subscriber_named_with_several_urls_is_a_group_and_a_replica_named_stands_for_its_group():
    config = load({"BLOG_DATABASE_URL": "postgresql://db/blog", "BLOG_REPLICAS": "moderation=2,query=2",
                   "BLOG_SUBSCRIBERS": "audit=http://a1/events,audit=http://a2/events,moderation.2,query.2"})
    assert config.subscribers == (
        Subscriber("audit", "http://a1/events", also=("http://a2/events",)),
        Subscriber("moderation", "http://127.0.0.1:4003/events", batch=True, also=("http://127.0.0.1:4103/events",)),
        Subscriber("query.2", "http://127.0.0.1:4102/events", batch=True),
    )
    assert config.subscription("query.2") == "query.2"


def test_a_replica_port_that_clashes_is_named():
    with pytest.raises(ConfigError, match="query.2 would listen on port 4001, as comments does"):
        load({"BLOG_REPLICAS": "query=2", "BLOG_QUERY_2_PORT": "4001"})


def test_writers_have_replicas_only_with_their_tables_in_postgresql():
    with pytest.raises(ConfigError) as refused:
        load({"BLOG_REPLICAS": "query=2,comments=2"})
    assert str(refused.value) == ("BLOG_REPLICAS: 'comments' cannot run as replicas on SQLite (its data is one file): "
                                  "replicas of the writers need PostgreSQL (--database postgresql://...)")
    with pytest.raises(ConfigError, match="'bus' cannot run as replicas"):
        load({"BLOG_REPLICAS": "bus=2", "BLOG_DATABASE_URL": "postgresql://postgres@127.0.0.1/blog"})
    config = load({"BLOG_REPLICAS": "posts=2,comments=2,moderation=2", "BLOG_DATABASE_URL": "postgresql://db/blog"})
    assert config.database_url == "postgresql://db/blog"
    assert {name: config.ports[name] for name in ("posts.2", "comments.2", "moderation.2")} == {
        "posts.2": 4100, "comments.2": 4101, "moderation.2": 4103}
    # Replicas sharing one store are one subscriber, each replica a member; Query's each have their own.
    assert [(s.name, s.members) for s in config.subscribers] == [
        ("posts", ("http://127.0.0.1:4000/events", "http://127.0.0.1:4100/events")),
        ("comments", ("http://127.0.0.1:4001/events", "http://127.0.0.1:4101/events")),
        ("query", ("http://127.0.0.1:4002/events",)),
        ("moderation", ("http://127.0.0.1:4003/events", "http://127.0.0.1:4103/events"))]
    assert [config.subscription(name) for name in ("comments", "comments.2", "query", "moderation.2")] == [
        "comments", "comments", "query", "moderation"]
    assert load({}).database_url is None and load({"BLOG_DATABASE_URL": " "}).database_url is None


def test_a_database_url_that_is_not_postgresql_is_refused():
    with pytest.raises(ConfigError, match=r"BLOG_DATABASE_URL=mysql://\.\.\. is not a PostgreSQL URL"):
        load({"BLOG_DATABASE_URL": "mysql://root:secret@db/blog"})  # the password is not repeated
