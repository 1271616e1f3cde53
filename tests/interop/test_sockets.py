"""The broker's end of a client's TCP connection, read from the running
broker itself: a copy of its socket is taken with pidfd_getfd(2) (the
broker is our child process) and asked for its options."""

from __future__ import annotations

import ctypes
import os
import socket

import pytest

from brokers import broker_kind
from test_limits import CONNECT_311
from test_security import start_with_config

pytestmark = pytest.mark.skipif(broker_kind() != "midge", reason="starts midge with its own config")

SYS_PIDFD_GETFD = 438  # x86_64 and aarch64 alike

_libc = ctypes.CDLL(None, use_errno=True)


def broker_side(pid: int, client: socket.socket) -> socket.socket:
    """A duplicate of the broker's socket whose peer is `client`."""
    want = client.getsockname()
    pidfd = os.pidfd_open(pid)
    try:
        for name in os.listdir(f"/proc/{pid}/fd"):
            try:
                if not os.readlink(f"/proc/{pid}/fd/{name}").startswith("socket:"):
                    continue
            except OSError:
                continue
            fd = _libc.syscall(SYS_PIDFD_GETFD, pidfd, int(name), 0)
            if fd < 0:
                err = ctypes.get_errno()
                raise OSError(err, f"pidfd_getfd of the broker's fd {name}: {os.strerror(err)}")
            s = socket.socket(fileno=fd)
            try:
                if s.type == socket.SOCK_STREAM and s.getpeername() == want:
                    return s
            except OSError:
                pass  # a listener or a Unix socket: no peer
            s.close()
    finally:
        os.close(pidfd)
    raise AssertionError(f"no socket in the broker has the peer {want}")


def nodelay_of_broker_socket(broker) -> bool:
    with socket.create_connection(("127.0.0.1", broker.port), timeout=5) as client:
        # CONNECT, then wait for CONNACK: the broker has accepted by then.
        client.sendall(CONNECT_311)
        assert client.recv(4) == b"\x20\x02\x00\x00"
        with broker_side(broker.proc.pid, client) as theirs:
            return theirs.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_nagle_is_off_by_default(tmp_path):
    # Midge writes a connection's pending packets in one go; with Nagle on,
    # the first deliveries after a SUBACK waited ~40 ms for the client's
    # delayed ACK (configuration.md, set_tcp_nodelay).
    broker = start_with_config(tmp_path, "allow_anonymous true\n")
    try:
        assert nodelay_of_broker_socket(broker)
    finally:
        broker.stop()


def test_set_tcp_nodelay_false_turns_nagle_back_on(tmp_path):
    broker = start_with_config(tmp_path, "allow_anonymous true\nset_tcp_nodelay false\n")
    try:
        assert not nodelay_of_broker_socket(broker)
    finally:
        broker.stop()
