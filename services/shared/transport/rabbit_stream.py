"""The event stream read in bulk over RabbitMQ's stream protocol (`rstream`), when the broker has
its `rabbitmq_stream` plugin on (port 5552).

Over AMQP the broker hands a stream consumer one message at a time: three frames each, an ack
each, and py-amqp's parsing of all of them; a rebuild read about 7,500 events/s that way. Over
the stream protocol it sends whole chunks of the log (hundreds of events in one frame), with
credit per chunk; `StreamLog.read` gives back each event's body and publisher, and
`RabbitTransport.read_log` turns them into events (seq = offset + 1), as over AMQP.

`StreamLog.open` checks that the stream port belongs to the same broker as the AMQP address
(the same cluster name): on one machine another broker may well listen on 5552. Without the
plugin (nothing answers), or with another broker there, it returns None with the reason, and
the transport reads over AMQP.

rstream is asyncio; a `StreamLog` keeps one connection on an event loop in a thread of its own,
and `read` is called from any thread.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from kombu.utils.url import parse_url

log = logging.getLogger(__name__)

STREAM_PORT = 5552
# RabbitMQ 3.10 keeps a file of the stream open for every subscription a connection made, until the
# connection closes (its unsubscribe does not close the reader: rabbitmq-server issue 6317, fixed in
# later releases). A reader opens a new connection after this many, so the files are let go.
SUBSCRIPTIONS_PER_CONNECTION = 16
CREDIT = 16  # chunks the broker may send ahead of the one being read, given back half at a time
EMPTY_SETTLE = 0.5  # an empty stream delivers nothing: how long to wait for its last chunk before saying so


class StreamUnavailable(Exception):
    """The stream protocol cannot be used now (lost connection, refused subscription, stalled)."""


@dataclass(frozen=True)
class Address:
    host: str
    port: int
    user: str
    password: str
    vhost: str

    @classmethod
    def of(cls, amqp_url: str, port: int = STREAM_PORT) -> Address:
        """The stream protocol's address on the host of one AMQP address, with its credentials and vhost."""
        parts = parse_url(amqp_url)
        return cls(parts["hostname"] or "127.0.0.1", port, parts["userid"] or "guest", parts["password"] or "guest",
                   parts["virtual_host"] or "/")


class StreamLog:
    """One stream, read from any offset over one stream-protocol connection (reopened when lost)."""

    def __init__(self, address: Address, stream: str, cluster: str | None, timeout: float) -> None:
        self.address = address
        self.stream = stream
        self.cluster = cluster  # the AMQP side's cluster name: the stream port must answer with the same
        self.timeout = timeout
        self.known_end = -1  # the stream's newest offset, as last seen: a lower bound of its end
        self._client = None
        self._routes: dict[int, _Gathering] = {}  # subscription id -> what it gathers of the chunks that arrive
        self._next_id = 0
        self._subscriptions = 0  # made on the current connection
        self._closing: set[asyncio.Future] = set()  # connections being closed in the background
        self._lock = threading.Lock()  # one read at a time on the connection
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"stream-{stream}", daemon=True)
        self._thread.start()

    @property
    def where(self) -> str:
        return f"{self.address.host}:{self.address.port}"

    @classmethod
    def open(cls, url: str, stream: str, cluster: str | None, *, timeout: float = 5.0,
             port: int = STREAM_PORT) -> tuple[StreamLog | None, str]:
        """A reader on the first of `url`'s hosts (`;`-separated) whose stream port answers for the same
        broker (`cluster`), or None; and what was found, in words, for the log."""
        found = []
        for amqp_url in url.split(";"):
            reader = cls(Address.of(amqp_url, port), stream, cluster, timeout)
            try:
                reader._run(reader._connect(), timeout)
            except Exception as exc:  # noqa: BLE001 - whatever it is, this address is not usable
                found.append(f"{reader.where}: {exc or type(exc).__name__}")
                reader.close()
                continue
            return reader, reader.where
        return None, "; ".join(found)

    def read(self, after: int, limit: int, stall: float) -> list[tuple[int, bytes, str | None]]:
        """Up to `limit` entries from offset `after` on, as (offset, body, publisher's app id), oldest first.
        Stops at the stream's end as it was when the call began. Raises StreamUnavailable."""
        with self._lock:
            # Bounded (the loop's thread must not hold a caller forever), well above what a read takes.
            entries = self._run(self._read(after, limit, stall), timeout=stall + self.timeout + limit / 1000)
        return [(offset, *_body_and_app_id(raw)) for offset, raw in entries]

    def close(self) -> None:
        if self._loop.is_closed():
            return
        if self._client is not None:
            try:
                self._run(self._drop(), timeout=2)
            except (StreamUnavailable, TimeoutError):
                pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    # On the loop's thread

    def _run(self, coroutine, timeout: float):
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise StreamUnavailable(f"no answer from the stream port at {self.where} within {timeout:g}s") from None

    async def _connect(self):
        from rstream import schema
        from rstream.client import Client

        if self._client is not None and self._client.is_connection_alive():
            if self._subscriptions < SUBSCRIPTIONS_PER_CONNECTION:
                return self._client
            old, self._client = self._client, None  # closed meanwhile (rstream's close waits 0.2 s)
            self._closing.add(asyncio.ensure_future(_abandon(old)))
            self._closing = {task for task in self._closing if not task.done()}
        await self._drop()
        client = Client(self.address.host, self.address.port, frame_max=1024 * 1024, heartbeat=60,
                        connection_name="blog-log-reader")
        try:
            await asyncio.wait_for(self._handshake(client), self.timeout)
        except BaseException:
            await _abandon(client)
            raise
        cluster = (client.server_properties or {}).get("cluster_name")
        if self.cluster is not None and cluster != self.cluster:
            await _abandon(client)
            raise StreamUnavailable(f"another broker answers there ({cluster}, not {self.cluster})")
        self._subscriptions = 0
        client.add_handler(schema.Deliver, _ignore, name="0")  # rstream queues every chunk for listener 0 ...
        await client.run_queue_listener_task(0, self._route)  # ... which hands it to its subscription's queue
        self._client = client
        return client

    async def _handshake(self, client) -> None:
        await client.start()
        await client.authenticate(self.address.vhost, self.address.user, self.address.password)

    async def _route(self, frame) -> None:
        gathering = self._routes.get(frame.subscription_id)
        if gathering is None:  # sent before that subscription ended
            return
        gathering.take(frame)
        if not gathering.done.is_set() and gathering.credit_spent() and self._client is not None:
            await self._client.credit(frame.subscription_id, CREDIT // 2)

    async def _drop(self) -> None:
        client, self._client = self._client, None
        self._routes.clear()
        if client is not None:
            await _abandon(client)

    async def _read(self, after: int, limit: int, stall: float) -> list[tuple[int, bytes]]:
        from rstream import exceptions

        try:
            client = await self._connect()
            if after + limit > self.known_end + 1:  # the stream only grows: look only past what is known
                self.known_end = await self._last_offset(client)
            wanted = min(limit, self.known_end + 1 - after)
            if wanted <= 0:
                return []
            return await self._entries(client, after, wanted, stall)
        except exceptions.StreamDoesNotExist:
            return []  # nothing published yet: the publisher declares the stream
        except StreamUnavailable:
            await self._drop()
            raise
        except (OSError, asyncio.TimeoutError, exceptions.ServerError, ConnectionError) as exc:
            await self._drop()
            raise StreamUnavailable(f"the stream protocol at {self.where} failed: {exc or type(exc).__name__}") from None

    async def _last_offset(self, client) -> int:
        """The offset of the stream's newest entry (-1 when it is empty): subscribed at "last", the broker
        sends the newest chunk first, and a chunk says where it starts and how many entries it holds."""
        from rstream.constants import OffsetType

        gathering = _Gathering(0, wanted=0)
        async with self._subscription(client, OffsetType.LAST, None, gathering, credit=1):
            try:
                await asyncio.wait_for(gathering.done.wait(), EMPTY_SETTLE)
            except asyncio.TimeoutError:
                return -1
        return gathering.last_offset

    async def _entries(self, client, after: int, wanted: int, stall: float) -> list[tuple[int, bytes]]:
        from rstream.constants import OffsetType

        gathering = _Gathering(after, wanted)
        async with self._subscription(client, OffsetType.OFFSET, after, gathering, credit=CREDIT):
            while True:  # woken when done, or when `stall` passed: then there must have been a chunk meanwhile
                seen = gathering.chunks
                try:
                    await asyncio.wait_for(gathering.done.wait(), stall)
                    return gathering.entries
                except asyncio.TimeoutError:
                    if gathering.chunks == seen:
                        raise StreamUnavailable(f"the event stream stalled after {len(gathering.entries)} of "
                                                f"{wanted} events") from None

    @asynccontextmanager
    async def _subscription(self, client, offset_type, offset: int | None, gathering: _Gathering, *,
                            credit: int) -> AsyncIterator[None]:
        from rstream import schema

        self._next_id = self._next_id % 255 + 1  # a subscription id is one byte; ids are not reused at once
        subscription = self._next_id
        self._routes[subscription] = gathering
        self._subscriptions += 1
        gathering.credit = credit
        try:
            await client.subscribe(self.stream, subscription, schema.OffsetSpec.from_params(offset_type, offset),
                                   initial_credit=credit)
            yield
        finally:
            self._routes.pop(subscription, None)
            if client.is_connection_alive():
                try:
                    await client.unsubscribe(subscription)
                except Exception:  # noqa: BLE001 - the subscription may never have been made
                    pass


class _Gathering:
    """What one subscription collects, as its chunks arrive (on the loop's thread): entries from offset
    `after` on until it has `wanted` of them (or, with `wanted` 0, only the first chunk's last offset)."""

    def __init__(self, after: int, wanted: int) -> None:
        self.after = after
        self.wanted = wanted
        self.entries: list[tuple[int, bytes]] = []
        self.chunks = 0
        self.last_offset = -1
        self.credit = 0  # chunks the broker may still send
        self.done = asyncio.Event()

    def take(self, chunk) -> None:
        if self.done.is_set():  # sent before the subscription ended
            return
        self.chunks += 1
        self.credit -= 1
        self.last_offset = chunk.chunk_first_offset + chunk.num_records - 1
        if self.wanted:
            offset, entries = chunk.chunk_first_offset, self.entries
            for raw in chunk.get_messages():
                if offset >= self.after:  # the broker starts at the chunk that holds `after`
                    entries.append((offset, raw))
                    if len(entries) == self.wanted:
                        break
                offset += 1
            if len(entries) < self.wanted:
                return
        self.done.set()

    def credit_spent(self) -> bool:
        """Whether half the credit is used up: then it is given back in one go (one frame, not one a chunk)."""
        if self.credit > CREDIT // 2:
            return False
        self.credit += CREDIT // 2
        return True


def _ignore(_frame) -> None:
    pass


async def _abandon(client) -> None:
    """Close a stream connection, whatever state it is in."""
    try:
        await client.close()
    except Exception as exc:  # noqa: BLE001 - it is being given up on
        log.debug("closing the stream connection: %s", exc)


# An AMQP 1.0 message as the broker stores an AMQP 0-9-1 publish: sections (message annotations,
# properties, application properties) and last the body as one data section (0x00 0x53 0x75, then
# binary). The 0-9-1 app_id is the application property "x-basic-app-id" (a str8 key and value).
# Read directly with two searches (a JSON body has no NUL byte, so the last data-section mark is the
# body's, and it must end the message); any other shape goes through rstream's general decoder.
_DATA = b"\x00\x53\x75"
_APP_ID_KEY = b"\xa1\x0ex-basic-app-id"


def _body_and_app_id(raw: bytes) -> tuple[bytes, str | None]:
    at = raw.rfind(_DATA)
    if at >= 0 and at + 4 < len(raw):
        code = raw[at + 3]
        if code == 0xA0:
            start, size = at + 5, raw[at + 4]
        elif code == 0xB0:
            start, size = at + 8, int.from_bytes(raw[at + 4:at + 8], "big")
        else:
            start, size = 0, -1
        if start + size == len(raw):
            key = raw.find(_APP_ID_KEY, 0, at)
            value = key + len(_APP_ID_KEY)
            if key < 0 or raw[value] != 0xA1:
                return raw[start:], None
            return raw[start:], raw[value + 2:value + 2 + raw[value + 1]].decode()
    return _decoded(raw)


def _decoded(raw: bytes) -> tuple[bytes, str | None]:
    from rstream.amqp import amqp_decoder

    message = amqp_decoder(raw)
    body = message.body if isinstance(message.body, bytes) else b"".join(message.body or [])
    app_id = (message.application_properties or {}).get(_APP_ID_KEY[2:])
    return body, app_id.decode() if isinstance(app_id, bytes) else app_id
