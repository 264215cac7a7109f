"""py-amqp's socket I/O with fewer system calls (amqp_wire): frames read ahead, a batch written at once.

`FakeSocket` hands out what has "arrived" and times out when nothing has, as a socket with a timeout does.
"""
from __future__ import annotations

import socket
from struct import pack
from types import SimpleNamespace

import pytest

from services.shared.transport.amqp_wire import ReadAheadTransport, coalesced_writes


class FakeSocket:
    def __init__(self) -> None:
        self.arrived = b""
        self.recv_calls = 0
        self.sent: list[bytes] = []
        self.timeout = None

    def recv(self, n: int) -> bytes:
        self.recv_calls += 1
        if not self.arrived:
            raise socket.timeout("timed out")
        data, self.arrived = self.arrived[:n], self.arrived[n:]
        return data

    def sendall(self, data) -> None:
        self.sent.append(bytes(data))

    def gettimeout(self):
        return self.timeout

    def settimeout(self, timeout) -> None:
        self.timeout = timeout


def frame(channel: int, payload: bytes, kind: int = 3) -> bytes:
    return pack(">BHI", kind, channel, len(payload)) + payload + b"\xce"


def transport_on(sock: FakeSocket) -> ReadAheadTransport:
    transport = ReadAheadTransport("127.0.0.1:1")
    transport.sock = sock
    transport._setup_transport()
    return transport


def test_frames_that_arrived_together_are_read_with_one_system_call():
    sock = FakeSocket()
    sock.arrived = frame(1, b"first") + frame(1, b"second" * 100) + frame(2, b"")
    transport = transport_on(sock)
    frames = [transport.read_frame() for _ in range(3)]
    assert frames == [(3, 1, b"first"), (3, 1, b"second" * 100), (3, 2, b"")]
    assert all(isinstance(payload, bytes) for _, _, payload in frames)
    assert sock.recv_calls == 1


def test_a_frame_cut_by_a_timeout_is_read_whole_once_the_rest_arrives():
    sock = FakeSocket()
    whole = frame(1, b"x" * 1000)
    sock.arrived = frame(1, b"before") + whole[:500]
    transport = transport_on(sock)
    assert transport.read_frame() == (3, 1, b"before")
    with pytest.raises(socket.timeout):
        transport.read_frame()
    sock.arrived = whole[500:] + frame(1, b"after")
    assert transport.read_frame() == (3, 1, b"x" * 1000)
    assert transport.read_frame() == (3, 1, b"after")


def test_a_wait_is_set_on_the_socket_only_when_no_whole_frame_is_buffered():
    sock = FakeSocket()
    sock.arrived = frame(1, b"one") + frame(1, b"two")
    transport = transport_on(sock)
    with transport.having_timeout(0):
        assert transport.read_frame() == (3, 1, b"one")  # read from the socket, under the timeout
    sock.settimeout = None  # from here, touching the timeout would fail
    with transport.having_timeout(0):
        assert transport.read_frame() == (3, 1, b"two")


def test_a_batch_goes_out_in_one_write_and_nothing_goes_out_when_it_fails():
    sock = FakeSocket()
    transport = transport_on(sock)
    connection = SimpleNamespace(transport=transport)
    reused = bytearray(b"aaaa")
    with coalesced_writes(connection):
        transport.write(memoryview(reused))
        reused[:] = b"bbbb"  # py-amqp writes each message out of one buffer it reuses
        transport.write(memoryview(reused))
        assert sock.sent == []
    assert sock.sent == [b"aaaabbbb"]
    with pytest.raises(RuntimeError), coalesced_writes(connection):
        transport.write(b"cccc")
        raise RuntimeError("the batch failed half-way")
    assert sock.sent == [b"aaaabbbb"]
    transport.write(b"dddd")  # the transport writes directly again
    assert sock.sent[-1] == b"dddd"
