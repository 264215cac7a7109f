"""py-amqp's socket I/O, with fewer system calls: what the profiles of our consumers and
publishers showed as their largest cost.

- Reading: py-amqp asks the socket for exactly what it parses next (a frame's header, then its
  payload, then its end byte), so a delivered message (three frames) costs nine `recv` calls
  and, per frame, two `settimeout` calls. `ReadAheadTransport` reads what the socket has, up
  to 64 KiB at a time, and serves frames from that buffer; a frame already in the buffer is
  read without touching the socket.
- Writing: `coalesced_writes` collects what py-amqp writes (one `sendall` per message) while a
  batch is published, and sends it in one call.

`KombuTransport` is kombu's py-amqp transport with the reading connection, registered with kombu
as `TRANSPORT` ("read-ahead-amqp"): give that name to `kombu.Connection(transport=...)` for plain
`amqp://` addresses (TLS keeps py-amqp's own).
"""
from __future__ import annotations

import errno
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from struct import unpack_from

import amqp.transport
from kombu.transport import TRANSPORT_ALIASES, pyamqp

READ_AHEAD = 64 * 1024
_HEADER = 7  # a frame: type (1), channel (2), size (4), payload (size), end byte (1)


class ReadAheadTransport(amqp.transport.TCPTransport):
    """py-amqp's TCP transport, reading ahead into a buffer it parses frames from."""

    def _setup_transport(self) -> None:
        super()._setup_transport()
        self._read_buffer = memoryview(b"")  # what was received and not parsed yet (py-amqp's name)

    def _frame_buffered(self) -> bool:
        buffered = self._read_buffer
        return len(buffered) >= _HEADER and len(buffered) >= _HEADER + unpack_from(">I", buffered, 3)[0] + 1

    @contextmanager
    def having_timeout(self, timeout) -> Iterator:
        if timeout is None or self._frame_buffered():  # no wait ahead: leave the socket's timeout alone
            yield self.sock
            return
        with super().having_timeout(timeout) as sock:
            yield sock

    def _read(self, n: int, initial: bool = False, _errnos=(errno.EAGAIN, errno.EINTR)) -> bytes:
        buffered = self._read_buffer
        if not isinstance(buffered, memoryview):  # py-amqp put a partly read frame back in front, as bytes
            buffered = memoryview(buffered)
        if len(buffered) < n:
            chunks, have = [bytes(buffered)], len(buffered)
            try:
                while have < n:
                    try:
                        received = self._quick_recv(max(n - have, READ_AHEAD))
                    except OSError as exc:
                        if exc.errno in _errnos:
                            if initial and self.raise_on_initial_eintr:
                                raise socket.timeout() from None
                            continue
                        raise
                    if not received:
                        raise OSError("Server unexpectedly closed connection")
                    chunks.append(received)
                    have += len(received)
            finally:  # on a timeout, py-amqp puts back what it had taken of a frame in front of this
                buffered = self._read_buffer = memoryview(b"".join(chunks))
        self._read_buffer = buffered[n:]
        return bytes(buffered[:n])


class _Connection(pyamqp.Connection):
    def Transport(self, host, connect_timeout, ssl=False, read_timeout=None, write_timeout=None,  # noqa: N802
                  socket_settings=None, **kwargs):
        if ssl:
            return super().Transport(host, connect_timeout, ssl, read_timeout, write_timeout,
                                     socket_settings=socket_settings, **kwargs)
        return ReadAheadTransport(host, connect_timeout=connect_timeout, read_timeout=read_timeout,
                                  write_timeout=write_timeout, socket_settings=socket_settings, **kwargs)


class KombuTransport(pyamqp.Transport):
    """kombu's py-amqp transport on `ReadAheadTransport`."""

    Connection = _Connection


@contextmanager
def coalesced_writes(connection: amqp.Connection) -> Iterator[None]:
    """What py-amqp writes to `connection` inside the block goes out in one `sendall` at its end
    (nothing is sent if the block raises: the caller sends the batch again)."""
    transport = connection.transport
    pending: list[bytes] = []
    # Copied: py-amqp writes a message out of a buffer it reuses for the next one.
    send, transport._write = transport._write, lambda data: pending.append(bytes(data))
    try:
        yield
    finally:
        transport._write = send
    if pending:
        transport.write(b"".join(pending))


TRANSPORT = "read-ahead-amqp"  # kombu names a connection by its transport (in its logs too)
TRANSPORT_ALIASES.setdefault(TRANSPORT, f"{__name__}:KombuTransport")
