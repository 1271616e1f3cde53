"""One way to drive paho-mqtt 1.x and 2.x from the tests.

paho 2 changed the callback signatures (CallbackAPIVersion); this wrapper uses
the native API of each (VERSION1 callbacks on paho 1, VERSION2 on paho 2) and
turns every callback into an event the test can wait for with a bound.

Clients never reconnect by themselves (reconnect_on_failure=False): a test that
wants a reconnection makes a new client.
"""

from __future__ import annotations

import queue
import socket
import threading
import time
from dataclasses import dataclass

import paho.mqtt
import paho.mqtt.client as mqtt

PAHO_VERSION: str = paho.mqtt.__version__
PAHO2: bool = int(PAHO_VERSION.split(".")[0]) >= 2
PAHO_ID = f"paho{PAHO_VERSION}"

MQTTv31 = mqtt.MQTTv31
MQTTv311 = mqtt.MQTTv311
MQTTv5 = mqtt.MQTTv5
PROTOCOLS = {"v31": MQTTv31, "v311": MQTTv311, "v5": MQTTv5}

TIMEOUT = 10.0

# paho 2's VERSION2 on_connect gives MQTT 5 reason codes even for 3.x; map
# them back to the 3.x CONNACK return codes.
_V5_TO_V3_CONNACK = {0: 0, 132: 1, 133: 2, 136: 3, 134: 4, 135: 5}


def _code(value) -> int:
    """An int from an int, a paho ReasonCodes/ReasonCode or an MQTTErrorCode."""
    if isinstance(value, int):
        return int(value)
    return int(getattr(value, "value"))


@dataclass
class Connack:
    rc: int
    session_present: bool


@dataclass
class Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool


class Client:
    """A paho client with its network loop in a thread and events in queues."""

    def __init__(self, broker, client_id: str = "", protocol: int = MQTTv311,
                 clean_session: bool | None = None, keepalive: int = 60):
        self.broker = broker
        self.protocol = protocol
        self.keepalive = keepalive
        kwargs = dict(client_id=client_id, protocol=protocol, reconnect_on_failure=False)
        if protocol != MQTTv5 and clean_session is not None:
            kwargs["clean_session"] = clean_session
        if PAHO2:
            self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, **kwargs)
        else:
            self.c = mqtt.Client(**kwargs)
        self.connacks: "queue.Queue[Connack]" = queue.Queue()
        self.messages: "queue.Queue[Message]" = queue.Queue()
        self.disconnects: "queue.Queue[int]" = queue.Queue()
        self._subacks: dict[int, list[int]] = {}
        self._suback_cond = threading.Condition()
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.on_subscribe = self._on_subscribe
        self.c.on_disconnect = self._on_disconnect
        self._looping = False

    # -- callbacks (both APIs) ------------------------------------------------
    def _on_connect(self, client, userdata, flags, rc, properties=None):
        if isinstance(flags, dict):
            present = bool(flags.get("session present"))
        else:
            present = bool(flags.session_present)
        code = _code(rc)
        if PAHO2 and self.protocol != MQTTv5:
            code = _V5_TO_V3_CONNACK.get(code, code)
        self.connacks.put(Connack(code, present))

    def _on_message(self, client, userdata, msg):
        self.messages.put(Message(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain)))

    def _on_subscribe(self, client, userdata, mid, granted, properties=None):
        with self._suback_cond:
            self._subacks[mid] = [_code(g) for g in granted]
            self._suback_cond.notify_all()

    def _on_disconnect(self, client, userdata, *args):
        # paho1: (rc) or (rc, properties); paho2: (flags, reason, properties)
        rc = args[1] if PAHO2 else args[0]
        self.disconnects.put(_code(rc))

    # -- actions --------------------------------------------------------------
    def will_set(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False):
        self.c.will_set(topic, payload, qos, retain)

    def connect(self, clean_start: bool = True, properties=None, timeout: float = TIMEOUT,
                expect_rc: int | None = 0) -> Connack:
        kwargs = {}
        if self.protocol == MQTTv5:
            kwargs = dict(clean_start=clean_start, properties=properties)
        self.c.connect(self.broker.host, self.broker.port, self.keepalive, **kwargs)
        self.c.loop_start()
        self._looping = True
        try:
            connack = self.connacks.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no CONNACK within {timeout} s") from None
        if expect_rc is not None:
            assert connack.rc == expect_rc, f"CONNACK return code {connack.rc}, expected {expect_rc}"
        return connack

    def subscribe(self, topic: str, qos: int = 0, timeout: float = TIMEOUT) -> list[int]:
        """Subscribe and wait for the SUBACK; returns the granted QoS / reason codes."""
        return self.subscribe_many([(topic, qos)], timeout)

    def subscribe_many(self, pairs: list[tuple[str, int]], timeout: float = TIMEOUT) -> list[int]:
        with self._suback_cond:  # hold it so the SUBACK can't be missed
            rc, mid = self.c.subscribe(pairs)
            assert rc == mqtt.MQTT_ERR_SUCCESS, f"subscribe failed: {rc}"
            ok = self._suback_cond.wait_for(lambda: mid in self._subacks, timeout)
            assert ok, f"no SUBACK for {pairs} within {timeout} s"
            return self._subacks.pop(mid)

    def publish(self, topic: str, payload: bytes | str, qos: int = 0, retain: bool = False,
                timeout: float = TIMEOUT):
        """Publish and wait until it is written (QoS 0) or acknowledged (QoS 1/2)."""
        info = self.c.publish(topic, payload, qos, retain)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS, f"publish failed: {info.rc}"
        info.wait_for_publish(timeout)
        assert info.is_published(), f"publish to {topic} (QoS {qos}) not completed within {timeout} s"
        return info

    def expect_message(self, timeout: float = TIMEOUT) -> Message:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no message within {timeout} s") from None

    def messages_until(self, topic: str, timeout: float = TIMEOUT) -> list[Message]:
        """All messages received up to and including the first one on `topic`."""
        deadline = time.monotonic() + timeout
        got: list[Message] = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no message on {topic} within {timeout} s; got {got}")
            try:
                m = self.messages.get(timeout=remaining)
            except queue.Empty:
                continue
            got.append(m)
            if m.topic == topic:
                return got

    def expect_disconnect(self, timeout: float = TIMEOUT) -> int:
        try:
            return self.disconnects.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"on_disconnect not called within {timeout} s") from None

    def disconnect(self, timeout: float = TIMEOUT) -> None:
        """A clean DISCONNECT, then stop the network thread."""
        self.c.disconnect()
        self.expect_disconnect(timeout)
        self._join_loop(timeout)

    def kill(self) -> None:
        """Drop the connection without DISCONNECT, as a crashed client would."""
        self._abort(TIMEOUT)

    def _abort(self, timeout: float) -> None:
        self.c._thread_terminate = True  # noqa: SLF001 - deliberately abrupt
        sock = getattr(self.c, "_sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # EOF for the broker, wakes the thread
            except OSError:
                pass
        self._join_loop(timeout)
        sock = getattr(self.c, "_sock", None)
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
            self.c._sock = None

    def _join_loop(self, timeout: float) -> None:
        if not self._looping:
            return
        self._looping = False
        thread = getattr(self.c, "_thread", None)
        self.c._thread_terminate = True
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            assert not thread.is_alive(), "paho network thread did not stop"
        self.c._thread = None

    def close(self) -> None:
        """Teardown: stop the thread and close the socket, whatever the state."""
        try:
            self._abort(2.0)
        except AssertionError:
            pass


def roundtrip(paho_factory, protocol=MQTTv311, topic="check/alive", qos=1) -> None:
    """A normal client connects, subscribes, publishes and receives its message."""
    c = paho_factory(protocol=protocol)
    c.connect()
    assert c.subscribe(topic, qos) == [qos]
    c.publish(topic, b"still serving", qos)
    m = c.expect_message()
    assert (m.topic, m.payload, m.qos) == (topic, b"still serving", qos)
    c.disconnect()
