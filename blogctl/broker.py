"""What blogctl reads from RabbitMQ when the formation runs on it: the event stream and the queues.

The broker-mode counterpart of the bus's `GET /events` and `GET /subscribers`, through the
services' own transport (`services/shared/rabbitmq.py`), so both read the same names.
"""
from __future__ import annotations

from services.shared.config import Config
from services.shared.transport import TransportError

from .errors import BlogctlError

PAGE = 1000


class BrokerClient:
    def __init__(self, config: Config) -> None:
        from services.shared.rabbitmq import RabbitTransport  # kombu is needed only in this mode

        self.transport = RabbitTransport(config.broker_url, namespace=config.broker_namespace, timeout=3.0)
        self.url = self.transport.safe_url  # without the password
        self.namespace = config.broker_namespace

    def events(self, *, after: int = 0, limit: int | None = None, event_type: str | None = None) -> list[dict]:
        """The stream after `after`, oldest first, as the bus's log would list it (seq = offset + 1)."""
        found: list[dict] = []
        while limit is None or len(found) < limit:
            try:
                page = self.transport.read_log(after=after, limit=PAGE)
            except TransportError as exc:
                raise BlogctlError(f"{exc} — is RabbitMQ running? (`rabbitmqctl status`)") from None
            for event in page:
                if event_type is None or event.type == event_type:
                    found.append(event.to_dict())
            if len(page) < PAGE:
                break
            after = page[-1].seq
        return found if limit is None else found[:limit]

    def queues(self) -> list[dict]:
        """Each consuming service's queue (messages ready, consumers) and the stream."""
        try:
            return self.transport.queues()
        except TransportError as exc:
            raise BlogctlError(f"{exc} — is RabbitMQ running? (`rabbitmqctl status`)") from None
