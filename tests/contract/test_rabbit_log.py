"""RabbitMQ's event log, read both ways the transport can: over the stream protocol (the broker's
`rabbitmq_stream` plugin, which CI turns on) and over AMQP (the fallback without it). Both must give
the same events, positions and publishers, from any position, a page at a time."""
from __future__ import annotations

import pytest

from services.shared.events import Event
from services.shared.transport.rabbitmq import RabbitTransport
from tests.contract.conftest import RabbitHarness
from tests.helpers import BROKER_URL, broker_missing, free_port

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]


@pytest.fixture
def rabbit():
    if reason := broker_missing():
        pytest.skip(reason)
    harness = RabbitHarness()
    try:
        yield harness
    finally:
        harness.close()


def reader(rabbit: RabbitHarness, stream_port: int | None) -> RabbitTransport:
    made = RabbitTransport(BROKER_URL, namespace=rabbit.namespace, stream_port=stream_port)
    rabbit.opened.append(made)
    return made


def read_all(transport: RabbitTransport, after: int, page: int) -> list[tuple]:
    return [(e.id, e.type, e.data, e.source, e.time, e.seq) for chunk in transport.iter_log(after, page) for e in chunk]


def test_the_stream_protocol_and_amqp_read_the_same_events(rabbit):
    posts, anonymous = rabbit.transport("posts"), rabbit.transport()
    for batch in range(5):  # several publishes: the stream holds several chunks
        posts.publish([Event("PostCreated", {"id": f"p{batch}-{n}", "title": "t" * (n + 1)}) for n in range(20)])
        anonymous.publish([Event("CommentCreated", {"id": f"c{batch}-{n}", "content": "c", "postId": "p0-0"})
                           for n in range(5)])
    over_stream = reader(rabbit, stream_port=5552)
    over_amqp = reader(rabbit, stream_port=None)
    streamed = read_all(over_stream, after=0, page=7)
    if not over_stream.read_over.startswith("the stream protocol"):
        pytest.skip(f"the broker's stream plugin is off ({over_stream.read_over}); "
                    "`rabbitmq-plugins enable rabbitmq_stream` turns it on (.ci/run does)")
    assert over_amqp.read_log(after=0, limit=1) and over_amqp.read_over.startswith("AMQP")
    assert len(streamed) == 125
    assert streamed == read_all(over_amqp, after=0, page=7)
    assert [seq for *_, seq in streamed] == list(range(1, 126))
    assert {source for _, kind, _, source, _, _ in streamed} == {"posts", "unknown"}
    assert read_all(over_stream, after=60, page=100) == read_all(over_amqp, after=60, page=100) == streamed[60:]


def test_without_the_stream_plugin_the_log_is_read_over_amqp(rabbit):
    rabbit.transport("posts").publish([Event("PostCreated", {"id": "p1", "title": "t"})])
    nothing_there = reader(rabbit, stream_port=free_port())
    assert [e.data["id"] for e in nothing_there.read_log(after=0, limit=10)] == ["p1"]
    assert nothing_there.read_over.startswith("AMQP")
    stream_row = next(row for row in nothing_there.backlog() if row["type"] == "stream")
    assert stream_row["read_over"] == nothing_there.read_over
