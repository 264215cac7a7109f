"""The transport registry: BLOG_BROKER_URL's scheme picks the transport, unset means the formation's bus."""
import pytest

from services.shared import transport
from services.shared.config import ConfigError
from services.table import load


def test_unset_is_the_formations_own_http_bus():
    config = load({"BLOG_BUS_PORT": "5205"})
    described = transport.from_config(config, "posts").describe()
    assert (described.kind, described.url, described.process) == ("http", "http://127.0.0.1:5205", "bus")
    assert config.transport == "http"


@pytest.mark.parametrize("url, kind", [
    ("amqp://guest:guest@127.0.0.1:5672//", "rabbitmq"),
    ("amqps://guest:guest@broker.example//", "rabbitmq"),
    ("memory://registry-test", "memory"),
    ("http://127.0.0.1:5206", "http"),
])
def test_the_scheme_picks_the_transport(url, kind):
    config = load({"BLOG_BROKER_URL": url})
    assert config.transport == kind
    assert transport.from_config(config, "posts").describe().kind == kind


def test_an_unknown_scheme_is_a_configuration_error_naming_the_known_ones():
    with pytest.raises(ConfigError) as info:
        load({"BLOG_BROKER_URL": "kafka://127.0.0.1:9092"})
    assert "'kafka'" in str(info.value) and "amqp://" in str(info.value) and "memory://" in str(info.value)


def test_a_url_is_printed_without_its_password():
    assert transport.printable("amqp://guest:s3cret@h1//;amqp://guest:s3cret@h2//") == (
        "amqp://guest:***@h1//;amqp://guest:***@h2//")
