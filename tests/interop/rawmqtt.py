"""MQTT packets by hand, over a plain socket, for what no client library sends:
protocol levels the broker must refuse, malformed packets, and clients that
vanish without a DISCONNECT.
"""

from __future__ import annotations

import socket
import struct
import time

TIMEOUT = 5.0

CONNECT, CONNACK, PUBLISH, PUBACK = 1, 2, 3, 4
SUBSCRIBE, SUBACK, DISCONNECT = 8, 9, 14


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def mqtt_str(s: bytes | str) -> bytes:
    if isinstance(s, str):
        s = s.encode()
    return struct.pack("!H", len(s)) + s


def packet(ptype: int, flags: int, body: bytes) -> bytes:
    return bytes([(ptype << 4) | flags]) + varint(len(body)) + body


def connect(client_id: bytes | str = b"raw", level: int = 4, name: bytes | str | None = None,
            keepalive: int = 60, clean: bool = True, will: tuple | None = None) -> bytes:
    """A CONNECT. `will` is (topic, payload, qos, retain). Level 3 uses MQIsdp."""
    if name is None:
        name = b"MQIsdp" if level == 3 else b"MQTT"
    flags = 0x02 if clean else 0
    will_part = b""
    if will is not None:
        topic, payload, qos, retain = will
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        will_part = (b"\x00" if level == 5 else b"") + mqtt_str(topic) + mqtt_str(payload)
    props = b"\x00" if level == 5 else b""
    body = mqtt_str(name) + bytes([level, flags]) + struct.pack("!H", keepalive) + props
    body += mqtt_str(client_id) + will_part
    return packet(CONNECT, 0, body)


def publish(topic: bytes | str, payload: bytes = b"", qos: int = 0, packet_id: int = 1,
            retain: bool = False, level: int = 4) -> bytes:
    body = mqtt_str(topic)
    if qos:
        body += struct.pack("!H", packet_id)
    if level == 5:
        body += b"\x00"
    return packet(PUBLISH, (qos << 1) | (1 if retain else 0), body + payload)


def subscribe(topic: bytes | str, qos: int = 0, packet_id: int = 1, level: int = 4) -> bytes:
    body = struct.pack("!H", packet_id) + (b"\x00" if level == 5 else b"")
    return packet(SUBSCRIBE, 0x2, body + mqtt_str(topic) + bytes([qos]))


def disconnect() -> bytes:
    return packet(DISCONNECT, 0, b"")


class RawClient:
    def __init__(self, host: str, port: int, timeout: float = TIMEOUT):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buf = b""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, deadline: float) -> bool:
        """Read more bytes; False on EOF (or reset). Raises TimeoutError at the deadline."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError from None
        except (ConnectionResetError, BrokenPipeError):
            return False
        if not data:
            return False
        self._buf += data
        return True

    def read_packet(self, timeout: float = TIMEOUT):
        """(type, flags, body), or None on EOF. Raises TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            parsed = self._parse()
            if parsed is not None:
                return parsed
            if not self._fill(deadline):
                if self._buf:
                    raise AssertionError(f"connection closed inside a packet: {self._buf!r}")
                return None

    def _parse(self):
        buf = self._buf
        if len(buf) < 2:
            return None
        length, mult, i = 0, 1, 1
        while True:
            if i >= len(buf):
                return None
            b = buf[i]
            length += (b & 0x7F) * mult
            mult *= 128
            i += 1
            if not b & 0x80:
                break
            if i > 4:
                raise AssertionError(f"broker sent a malformed remaining length: {buf[:8]!r}")
        if len(buf) < i + length:
            return None
        self._buf = buf[i + length:]
        return buf[0] >> 4, buf[0] & 0x0F, buf[i:i + length]

    def connect(self, **kwargs) -> bytes:
        """Send CONNECT, expect a CONNACK accepting it; returns the CONNACK body."""
        self.send(connect(**kwargs))
        p = self.read_packet()
        assert p is not None, "connection closed instead of CONNACK"
        assert p[0] == CONNACK, f"expected CONNACK, got packet type {p[0]}"
        assert p[2][1] == 0, f"CONNACK refused the connection: {p[2]!r}"
        return p[2]

    def expect_closed(self, timeout: float = TIMEOUT) -> list:
        """Wait until the broker closes the connection; returns the packets
        it sent before closing. Fails if it is still open after `timeout`."""
        deadline = time.monotonic() + timeout
        got = []
        while True:
            try:
                p = self.read_packet(max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise AssertionError(
                    f"broker did not close the connection within {timeout} s "
                    f"(packets received: {got})") from None
            if p is None:
                return got
            got.append(p)
