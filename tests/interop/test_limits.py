"""Limits and hostile clients: silent, slow and flooding clients, oversized
messages, keep-alive limits. Each bounded in time, loopback only."""

from __future__ import annotations

import socket
import subprocess
import time

import pytest

from brokers import broker_kind
from test_security import start_with_config

pytestmark = pytest.mark.skipif(broker_kind() != "midge", reason="starts midge with its own config")

CONNECT_311 = bytes([0x10, 0x0F, 0x00, 0x04]) + b"MQTT" + bytes([0x04, 0x02, 0x00, 0x3C, 0x00, 0x03]) + b"abc"


def connect_packet(client_id: bytes, keepalive: int = 60) -> bytes:
    body = b"\x00\x04MQTT\x04\x02" + keepalive.to_bytes(2, "big") + len(client_id).to_bytes(2, "big") + client_id
    return bytes([0x10, len(body)]) + body


def closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return True
    except socket.timeout:
        return False
    except OSError:
        return True


def rss_kb(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def pub(broker, *args) -> subprocess.CompletedProcess:
    return subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), *args],
                          capture_output=True, text=True, timeout=20)


def test_silent_connection_is_closed_after_connect_timeout(tmp_path):
    broker = start_with_config(tmp_path, "allow_anonymous true\nconnect_timeout 1\n")
    try:
        s = socket.create_connection(("127.0.0.1", broker.port), timeout=5)
        t0 = time.time()
        assert closed_within(s, 5), "a client that never sent CONNECT was kept"
        assert time.time() - t0 < 3.5
        assert pub(broker, "-t", "t", "-m", "still serving").returncode == 0
    finally:
        broker.stop()


def test_slow_reader_does_not_grow_the_broker_without_bound(tmp_path):
    broker = start_with_config(tmp_path, "allow_anonymous true\n")
    try:
        # A subscriber that never reads what it is sent.
        s = socket.create_connection(("127.0.0.1", broker.port), timeout=5)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(connect_packet(b"sloth"))
        s.recv(4)  # CONNACK
        s.sendall(bytes([0x82, 0x08, 0x00, 0x01, 0x00, 0x03]) + b"s/#" + b"\x00")
        s.recv(5)  # SUBACK
        before = rss_kb(broker.proc.pid)
        # 64 MiB of QoS 0 messages at it.
        payload = tmp_path / "big"
        payload.write_bytes(b"x" * (256 * 1024))
        for _ in range(4):
            r = subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-t", "s/x",
                                "-f", str(payload), "--repeat", "64"], capture_output=True, timeout=60)
            assert r.returncode == 0, r.stderr
        grown = rss_kb(broker.proc.pid) - before
        # The writer's backlog is bounded (8 MiB) plus buffers in flight.
        assert grown < 48 * 1024, f"broker grew by {grown} kB for a client that does not read"
        assert pub(broker, "-t", "t", "-m", "still serving").returncode == 0
        assert "not reading" in broker.log_text()
        s.close()
    finally:
        broker.stop()


def test_connection_flood_is_refused_gracefully(tmp_path):
    broker = start_with_config(tmp_path, "allow_anonymous true\nmax_connections 50\n")
    socks = []
    try:
        for _ in range(300):
            try:
                socks.append(socket.create_connection(("127.0.0.1", broker.port), timeout=5))
            except OSError:
                break
        accepted = 0
        for i, s in enumerate(socks):
            try:
                # Distinct ids: a shared id would take sessions over, closing
                # connections and freeing slots mid-test.
                s.sendall(connect_packet(f"flood{i}".encode()))
                s.settimeout(2)
                if s.recv(4)[:1] == b"\x20":
                    accepted += 1
            except OSError:
                pass
        assert accepted == 50, f"{accepted} CONNACKs with max_connections 50"
        assert broker.alive()
    finally:
        for s in socks:
            s.close()
    try:
        # Slots free again once the flood is gone.
        for _ in range(50):
            if pub(broker, "-t", "t", "-m", "after").returncode == 0:
                break
            time.sleep(0.1)
        else:
            pytest.fail("broker does not serve after the flood")
    finally:
        broker.stop()


def test_message_size_limit_drops_oversized_messages(tmp_path):
    broker = start_with_config(tmp_path, "allow_anonymous true\nmessage_size_limit 1000\n")
    try:
        sub = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port), "-t", "m/#",
                                "-C", "1", "-W", "10"], stdout=subprocess.PIPE, text=True)
        time.sleep(0.5)
        big = tmp_path / "big"
        big.write_bytes(b"y" * 2000)
        assert pub(broker, "-t", "m/big", "-f", str(big), "-q", "1").returncode == 0
        assert pub(broker, "-t", "m/small", "-m", "fits", "-q", "1").returncode == 0
        out, _ = sub.communicate(timeout=15)
        assert out == "fits\n"
    finally:
        broker.stop()


def test_max_keepalive(tmp_path):
    broker = start_with_config(tmp_path, "allow_anonymous true\nmax_keepalive 30\n")
    try:
        s = socket.create_connection(("127.0.0.1", broker.port), timeout=5)
        s.sendall(connect_packet(b"lazy", keepalive=600))
        assert s.recv(4) == bytes([0x20, 0x02, 0x00, 0x02])  # identifier rejected, as Mosquitto
        s.close()
        ok = socket.create_connection(("127.0.0.1", broker.port), timeout=5)
        ok.sendall(connect_packet(b"brisk", keepalive=20))
        assert ok.recv(4) == bytes([0x20, 0x02, 0x00, 0x00])
        ok.close()
    finally:
        broker.stop()


def test_memory_limit_refuses_new_messages(tmp_path):
    # 1 MiB is below what any broker process uses: every message is refused.
    broker = start_with_config(tmp_path, "allow_anonymous true\nmemory_limit 1048576\n")
    try:
        sub = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port), "-t", "m/#",
                                "-C", "1", "-W", "3"], stdout=subprocess.PIPE, text=True)
        time.sleep(0.5)
        r = pub(broker, "-V", "5", "-t", "m/x", "-m", "x", "-q", "1", "-d")
        assert "PUBACK" in r.stdout and "RC:151" in r.stdout.replace(" ", ""), r.stdout
        out, _ = sub.communicate(timeout=10)
        assert out == ""
        assert "memory_limit reached" in broker.log_text()
    finally:
        broker.stop()
