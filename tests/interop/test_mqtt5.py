"""MQTT 5.0 end to end with clients we did not write: paho-mqtt's v5 client,
Debian's mosquitto_pub/mosquitto_sub -V 5, and MQTT 5.0 packets built by hand
over raw sockets where a client has to misbehave or a packet must be seen as
sent (topic aliases, flow control, reason codes).

Each feature is its own test. Times that the specification itself is about
(will delay, message expiry) are waited for; everything else waits on events
with a bound.
"""

from __future__ import annotations

import queue
import re
import shutil
import struct
import time
from dataclasses import dataclass, field

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

import brokers
import opsupport
import pahocompat
import rawmqtt
from pahocompat import MQTTv5, MQTTv311
from rawmqtt import CONNACK, DISCONNECT, PUBACK, PUBLISH, SUBACK, mqtt_str, packet, varint

PUBREC, PUBREL, PUBCOMP = 5, 6, 7

# -- MQTT 5.0 properties by hand ------------------------------------------------

BYTE_PROPS = {0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A}
U16_PROPS = {0x13, 0x21, 0x22, 0x23}
U32_PROPS = {0x02, 0x11, 0x18, 0x27}
VARINT_PROPS = {0x0B}
STR_PROPS = {0x03, 0x08, 0x12, 0x15, 0x1A, 0x1C, 0x1F}
BIN_PROPS = {0x09, 0x16}
PAIR_PROPS = {0x26}

PFI, MESSAGE_EXPIRY, CONTENT_TYPE, RESPONSE_TOPIC, CORRELATION_DATA = 0x01, 0x02, 0x03, 0x08, 0x09
SUBSCRIPTION_ID, SESSION_EXPIRY, ASSIGNED_CLIENT_ID, AUTH_METHOD = 0x0B, 0x11, 0x12, 0x15
WILL_DELAY, RECEIVE_MAXIMUM, TOPIC_ALIAS_MAXIMUM, TOPIC_ALIAS = 0x18, 0x21, 0x22, 0x23
USER_PROPERTY, MAXIMUM_PACKET_SIZE = 0x26, 0x27

RC_MALFORMED, RC_PROTOCOL_ERROR, RC_BAD_AUTH_METHOD = 0x81, 0x82, 0x8C
RC_RECEIVE_MAXIMUM_EXCEEDED, RC_TOPIC_ALIAS_INVALID, RC_PACKET_TOO_LARGE = 0x93, 0x94, 0x95
RC_PAYLOAD_FORMAT_INVALID, RC_DISCONNECT_WITH_WILL = 0x99, 0x04


def encode_props(items=()) -> bytes:
    """[(id, value), ...] -> property length + properties."""
    out = b""
    for pid, value in items:
        out += varint(pid)
        if pid in BYTE_PROPS:
            out += bytes([value])
        elif pid in U16_PROPS:
            out += struct.pack("!H", value)
        elif pid in U32_PROPS:
            out += struct.pack("!I", value)
        elif pid in VARINT_PROPS:
            out += varint(value)
        elif pid in STR_PROPS or pid in BIN_PROPS:
            out += mqtt_str(value)
        elif pid in PAIR_PROPS:
            out += mqtt_str(value[0]) + mqtt_str(value[1])
        else:
            raise ValueError(f"unknown property {pid:#x}")
    return varint(len(out)) + out


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    value, mult = 0, 1
    while True:
        b = data[i]
        i += 1
        value += (b & 0x7F) * mult
        mult *= 128
        if not b & 0x80:
            return value, i


def decode_props(data: bytes, i: int = 0) -> tuple[list, int]:
    """Properties at data[i:] -> ([(id, value), ...], index after them)."""
    length, i = _read_varint(data, i)
    end = i + length
    items = []
    while i < end:
        pid, i = _read_varint(data, i)
        if pid in BYTE_PROPS:
            value, i = data[i], i + 1
        elif pid in U16_PROPS:
            value, i = struct.unpack_from("!H", data, i)[0], i + 2
        elif pid in U32_PROPS:
            value, i = struct.unpack_from("!I", data, i)[0], i + 4
        elif pid in VARINT_PROPS:
            value, i = _read_varint(data, i)
        elif pid in STR_PROPS or pid in BIN_PROPS:
            n = struct.unpack_from("!H", data, i)[0]
            value, i = data[i + 2:i + 2 + n], i + 2 + n
            if pid in STR_PROPS:
                value = value.decode()
        elif pid in PAIR_PROPS:
            n = struct.unpack_from("!H", data, i)[0]
            k = data[i + 2:i + 2 + n].decode()
            i += 2 + n
            n = struct.unpack_from("!H", data, i)[0]
            v = data[i + 2:i + 2 + n].decode()
            value, i = (k, v), i + 2 + n
        else:
            raise AssertionError(f"broker sent an unknown property {pid:#x}: {data!r}")
        items.append((pid, value))
    assert i == end, f"property length mismatch in {data!r}"
    return items, end


def prop(items, pid, default=None):
    for k, v in items:
        if k == pid:
            return v
    return default


def connect5(client_id: bytes | str = b"raw5", clean: bool = True, keepalive: int = 60,
             props=(), will: tuple | None = None, raw_props: bytes | None = None) -> bytes:
    """A 5.0 CONNECT. `will` is (topic, payload, qos, retain, will_props)."""
    flags = 0x02 if clean else 0
    will_part = b""
    if will is not None:
        topic, payload, qos, retain, wprops = will
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        will_part = encode_props(wprops) + mqtt_str(topic) + mqtt_str(payload)
    body = mqtt_str(b"MQTT") + bytes([5, flags]) + struct.pack("!H", keepalive)
    body += raw_props if raw_props is not None else encode_props(props)
    return packet(rawmqtt.CONNECT, 0, body + mqtt_str(client_id) + will_part)


def publish5(topic: bytes | str, payload: bytes = b"", qos: int = 0, packet_id: int = 1,
             retain: bool = False, props=(), raw_props: bytes | None = None) -> bytes:
    body = mqtt_str(topic)
    if qos:
        body += struct.pack("!H", packet_id)
    body += raw_props if raw_props is not None else encode_props(props)
    return packet(PUBLISH, (qos << 1) | (1 if retain else 0), body + payload)


def subscribe5(pairs, packet_id: int = 1, props=()) -> bytes:
    """pairs: [(filter, options byte)]"""
    body = struct.pack("!H", packet_id) + encode_props(props)
    for topic, options in pairs:
        body += mqtt_str(topic) + bytes([options])
    return packet(rawmqtt.SUBSCRIBE, 0x2, body)


def ack5(ptype: int, packet_id: int, reason: int = 0) -> bytes:
    flags = 0x2 if ptype == PUBREL else 0
    return packet(ptype, flags, struct.pack("!HB", packet_id, reason) + b"\x00")


def disconnect5(reason: int = 0, props=()) -> bytes:
    return packet(DISCONNECT, 0, bytes([reason]) + encode_props(props))


@dataclass
class Publish5:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    packet_id: int | None
    props: list
    size: int  # the whole packet, fixed header included


def parse_publish5(flags: int, body: bytes) -> Publish5:
    n = struct.unpack_from("!H", body)[0]
    topic = body[2:2 + n].decode()
    i = 2 + n
    qos = (flags >> 1) & 3
    pid = None
    if qos:
        pid = struct.unpack_from("!H", body, i)[0]
        i += 2
    props, i = decode_props(body, i)
    size = 1 + len(varint(len(body))) + len(body)
    return Publish5(topic, body[i:], qos, bool(flags & 1), pid, props, size)


def reason_of(body: bytes) -> int:
    """The reason code of a DISCONNECT (absent means 0x00)."""
    return body[0] if body else 0


class Raw5(rawmqtt.RawClient):
    """A raw socket speaking MQTT 5.0."""

    def connect5(self, **kwargs) -> list:
        """CONNECT, expect an accepting CONNACK; returns its properties."""
        self.send(connect5(**kwargs))
        p = self.read_packet()
        assert p is not None, "connection closed instead of CONNACK"
        assert p[0] == CONNACK, f"expected CONNACK, got {p}"
        assert p[2][1] == 0, f"CONNACK refused the connection: {p[2]!r}"
        return decode_props(p[2], 2)[0]

    def subscribe5(self, pairs, packet_id: int = 1, props=()) -> bytes:
        self.send(subscribe5(pairs, packet_id, props))
        p = self.read_packet()
        assert p is not None and p[0] == SUBACK, f"expected SUBACK, got {p}"
        return p[2]

    def expect_publish(self, timeout: float = rawmqtt.TIMEOUT) -> Publish5:
        p = self.read_packet(timeout)
        assert p is not None, "connection closed instead of PUBLISH"
        assert p[0] == PUBLISH, f"expected PUBLISH, got {p}"
        return parse_publish5(p[1], p[2])

    def expect_disconnect_and_close(self, timeout: float = rawmqtt.TIMEOUT) -> int:
        """The broker sends exactly one DISCONNECT, then closes; its reason code."""
        packets = self.expect_closed(timeout)
        assert len(packets) == 1 and packets[0][0] == DISCONNECT, \
            f"expected one DISCONNECT then the close, got {packets}"
        return reason_of(packets[0][2])


@pytest.fixture
def raw5(broker):
    made: list[Raw5] = []

    def make() -> Raw5:
        c = Raw5(broker.host, broker.port)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


# -- paho v5 with properties ----------------------------------------------------

@dataclass
class Msg5:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    props: object = field(repr=False, default=None)

    def p(self, name, default=None):
        return getattr(self.props, name, default) if self.props is not None else default


class Paho5(pahocompat.Client):
    """pahocompat.Client at MQTT 5.0 keeping CONNACK and PUBLISH properties."""

    def __init__(self, broker, **kwargs):
        kwargs.setdefault("protocol", MQTTv5)
        self.connack_props = None
        super().__init__(broker, **kwargs)

    def _on_connect(self, client, userdata, flags, rc, properties=None):
        self.connack_props = properties
        super()._on_connect(client, userdata, flags, rc, properties)

    def _on_message(self, client, userdata, msg):
        self.messages.put(Msg5(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain),
                               getattr(msg, "properties", None)))

    def subscribe5(self, topic: str, qos: int = 1, props: Properties | None = None,
                   timeout: float = pahocompat.TIMEOUT, **options) -> list[int]:
        opts = SubscribeOptions(qos=qos, **options)
        with self._suback_cond:
            rc, mid = self.c.subscribe(topic, options=opts, properties=props)
            assert rc == 0, f"subscribe failed: {rc}"
            ok = self._suback_cond.wait_for(lambda: mid in self._subacks, timeout)
            assert ok, f"no SUBACK for {topic} within {timeout} s"
            return self._subacks.pop(mid)

    def publish5(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False,
                 props: Properties | None = None, timeout: float = pahocompat.TIMEOUT):
        info = self.c.publish(topic, payload, qos, retain, properties=props)
        assert info.rc == 0, f"publish failed: {info.rc}"
        info.wait_for_publish(timeout)
        assert info.is_published(), f"publish to {topic!r} not completed within {timeout} s"
        return info


def props_of(ptype: int, **values) -> Properties:
    p = Properties(ptype)
    for k, v in values.items():
        setattr(p, k, v)
    return p


def session(expiry: int = 60) -> Properties:
    return props_of(PacketTypes.CONNECT, SessionExpiryInterval=expiry)


@pytest.fixture
def p5(broker):
    """Factory: p5(client_id=..., protocol=MQTTv5) -> Paho5."""
    made: list[Paho5] = []

    def make(**kwargs) -> Paho5:
        c = Paho5(broker, **kwargs)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def roundtrip5(p5, topic="check/alive"):
    c = p5()
    c.connect()
    c.subscribe(topic, 1)
    c.publish(topic, b"still serving", 1)
    m = c.expect_message()
    assert (m.topic, m.payload) == (topic, b"still serving")
    c.disconnect()


def no_message(client, timeout: float) -> None:
    """Fails if `client` receives anything within `timeout` s."""
    try:
        m = client.messages.get(timeout=timeout)
    except queue.Empty:
        return
    raise AssertionError(f"unexpected message {m}")


# -- CONNACK --------------------------------------------------------------------

def test_connack_properties(p5):
    c = p5(client_id="")
    c.connect()
    props = c.connack_props
    assert props is not None
    assert getattr(props, "ReceiveMaximum", 65535) == 20, "Receive Maximum is max_inflight_messages (20)"
    assert getattr(props, "TopicAliasMaximum", 0) == 10, "Topic Alias Maximum is max_topic_alias (10)"
    assigned = getattr(props, "AssignedClientIdentifier", None)
    assert assigned, "no Assigned Client Identifier for an empty client id [MQTT-3.2.2-16]"
    # absent means available; when present, it must say so
    for name in ("RetainAvailable", "WildcardSubscriptionAvailable",
                 "SharedSubscriptionAvailable", "SubscriptionIdentifierAvailable"):
        assert getattr(props, name, 1) == 1, f"{name} = {getattr(props, name)}"
    assert getattr(props, "MaximumQoS", 2) == 2
    c.disconnect()


def test_assigned_client_identifiers_are_distinct_raw(raw5):
    ids = []
    for _ in range(3):
        c = raw5()
        props = c.connect5(client_id=b"")
        ids.append(prop(props, ASSIGNED_CLIENT_ID))
    assert all(ids) and len(set(ids)) == 3, ids


# -- session expiry -------------------------------------------------------------

def test_session_expiry_zero_ends_session_at_disconnect(p5):
    c = p5(client_id="sei-zero")
    assert c.connect(clean_start=True).session_present is False  # no property: 0
    c.subscribe("sei/t", 1)
    c.disconnect()
    pub = p5()
    pub.connect()
    pub.publish("sei/t", b"for a dead session", 1)

    c2 = p5(client_id="sei-zero")
    assert c2.connect(clean_start=False, properties=session(60)).session_present is False
    c2.subscribe("sei/sentinel", 1)
    pub.publish("sei/sentinel", b"sentinel", 1)
    got = c2.messages_until("sei/sentinel")
    assert [(m.topic, m.payload) for m in got] == [("sei/sentinel", b"sentinel")]
    c2.disconnect()
    pub.disconnect()


def test_session_expiry_positive_keeps_session_and_queued_messages(p5):
    c = p5(client_id="sei-kept")
    assert c.connect(clean_start=True, properties=session(60)).session_present is False
    c.subscribe("sei/kept", 1)
    c.disconnect()
    pub = p5()
    pub.connect()
    for i in range(3):
        pub.publish("sei/kept", f"queued {i}".encode(), 1)
    c2 = p5(client_id="sei-kept")
    assert c2.connect(clean_start=False, properties=session(60)).session_present is True
    got = [c2.expect_message() for _ in range(3)]
    assert [(m.topic, m.payload, m.qos) for m in got] == \
        [("sei/kept", f"queued {i}".encode(), 1) for i in range(3)]
    c2.disconnect()
    pub.disconnect()


def test_disconnect_raising_session_expiry_from_zero_is_protocol_error(raw5, p5):
    c = raw5()
    c.connect5(client_id=b"sei-raise")  # Session Expiry Interval absent: 0
    c.send(disconnect5(0, [(SESSION_EXPIRY, 60)]))
    assert c.expect_disconnect_and_close() == RC_PROTOCOL_ERROR  # [MQTT-3.14.2-2]
    roundtrip5(p5)


# -- will delay -----------------------------------------------------------------

@pytest.fixture
def will_watcher(p5):
    w = p5()
    w.connect()
    w.subscribe("will5/#", 1)
    return w


def _will_client(p5, cid: str, delay: int):
    c = p5(client_id=cid)
    c.c.will_set("will5/t", b"gone", 1, False,
                 properties=props_of(PacketTypes.WILLMESSAGE, WillDelayInterval=delay))
    return c


def test_will_delay_after_abrupt_close(p5, will_watcher):
    c = _will_client(p5, "delayed-will", 2)
    c.connect(properties=session(60))
    c.kill()
    t0 = time.monotonic()
    m = will_watcher.expect_message(timeout=8)
    elapsed = time.monotonic() - t0
    assert (m.topic, m.payload) == ("will5/t", b"gone")
    assert elapsed >= 1.8, f"will published {elapsed:.2f} s after the close, before its 2 s delay"
    assert elapsed <= 4.0, f"will published {elapsed:.2f} s after the close (delay 2 s)"


def test_will_delay_reconnect_within_delay_cancels_will(p5, will_watcher):
    c = _will_client(p5, "returning", 2)
    c.connect(properties=session(60))
    c.kill()
    t0 = time.monotonic()
    again = p5(client_id="returning")
    assert again.connect(clean_start=False, properties=session(60)).session_present is True
    assert time.monotonic() - t0 < 1.5, "reconnection too slow for this test"
    # No event marks "the will was not sent": watch past the delay (2 s).
    no_message(will_watcher, timeout=3.0)
    again.publish("will5/sentinel", b"sentinel", 1)
    got = will_watcher.messages_until("will5/sentinel")
    assert [(m.topic, m.payload) for m in got] == [("will5/sentinel", b"sentinel")]
    again.disconnect()


def test_disconnect_with_will_message_reason_sends_will(raw5, will_watcher):
    c = raw5()
    c.connect5(client_id=b"leaves-with-will", will=("will5/t", b"asked for", 1, False, []))
    c.send(disconnect5(RC_DISCONNECT_WITH_WILL))
    c.expect_closed()
    m = will_watcher.expect_message()
    assert (m.topic, m.payload, m.qos) == ("will5/t", b"asked for", 1)


# -- message expiry -------------------------------------------------------------

def _offline_subscriber(broker, p5, cid: str, topic: str):
    c = p5(client_id=cid)
    c.connect(properties=session(60))
    c.subscribe(topic, 1)
    c.disconnect()
    # the broker has handled the DISCONNECT: what comes next is queued, not sent
    broker.wait_for_log(re.compile(rf"Client {cid} disconnected"), 10)


def test_message_expiry_expired_while_offline_not_delivered(broker, p5):
    _offline_subscriber(broker, p5, "exp-sub", "exp/t")
    pub = p5()
    pub.connect()
    pub.publish5("exp/t", b"short-lived", 1,
                 props=props_of(PacketTypes.PUBLISH, MessageExpiryInterval=2))
    published = time.monotonic()
    time.sleep(max(0.0, published + 3.0 - time.monotonic()))  # the expiry is the point
    c = p5(client_id="exp-sub")
    assert c.connect(clean_start=False, properties=session(60)).session_present is True
    pub.publish("exp/t", b"sentinel", 1)
    got = c.messages_until("exp/t")
    assert [m.payload for m in got] == [b"sentinel"], "an expired message was delivered"
    c.disconnect()
    pub.disconnect()


def test_message_expiry_remaining_interval_decreases(broker, p5):
    _offline_subscriber(broker, p5, "exp-sub2", "exp/t2")
    pub = p5()
    pub.connect()
    pub.publish5("exp/t2", b"long-lived", 1,
                 props=props_of(PacketTypes.PUBLISH, MessageExpiryInterval=10))
    published = time.monotonic()
    time.sleep(max(0.0, published + 1.2 - time.monotonic()))
    c = p5(client_id="exp-sub2")
    assert c.connect(clean_start=False, properties=session(60)).session_present is True
    m = c.expect_message()
    assert (m.topic, m.payload) == ("exp/t2", b"long-lived")
    remaining = m.p("MessageExpiryInterval")
    assert remaining is not None, "the Message Expiry Interval was not forwarded"
    assert 7 <= remaining <= 9, \
        f"Message Expiry Interval {remaining} after ~1.2 s offline (sent 10) [MQTT-3.3.2-6]"
    c.disconnect()
    pub.disconnect()


# -- topic aliases --------------------------------------------------------------

def test_paho_publishes_with_topic_alias(p5):
    sub = p5()
    sub.connect()
    sub.subscribe("alias/#", 1)
    pub = p5()
    pub.connect()
    pub.publish5("alias/a/rather/long/topic", b"first", 1,
                 props=props_of(PacketTypes.PUBLISH, TopicAlias=1))
    pub.publish5("", b"second", 1, props=props_of(PacketTypes.PUBLISH, TopicAlias=1))
    pub.publish5("alias/other", b"third", 1, props=props_of(PacketTypes.PUBLISH, TopicAlias=2))
    pub.publish5("", b"fourth", 1, props=props_of(PacketTypes.PUBLISH, TopicAlias=1))
    got = [sub.expect_message() for _ in range(4)]
    assert [(m.topic, m.payload) for m in got] == [
        ("alias/a/rather/long/topic", b"first"), ("alias/a/rather/long/topic", b"second"),
        ("alias/other", b"third"), ("alias/a/rather/long/topic", b"fourth")]
    for m in got:
        assert m.p("TopicAlias") is None, "the publisher's alias leaked to the subscriber"
    pub.disconnect()
    sub.disconnect()


@pytest.mark.parametrize("alias", [
    pytest.param(0, marks=pytest.mark.midge_only("Mosquitto 2.0 answers alias 0 with 0x81")),
    11,
], ids=["alias-0", "alias-11-over-max-10"])
def test_invalid_topic_alias_disconnects_0x94(raw5, p5, alias):
    c = raw5()
    props = c.connect5(client_id=b"bad-alias")
    assert prop(props, TOPIC_ALIAS_MAXIMUM) == 10
    c.send(publish5("alias/t", b"x", 1, props=[(TOPIC_ALIAS, alias)]))
    assert c.expect_disconnect_and_close() == RC_TOPIC_ALIAS_INVALID  # [MQTT-3.3.2-8/9]
    roundtrip5(p5)


def test_unknown_topic_alias_with_empty_topic_is_protocol_error(raw5, p5):
    c = raw5()
    c.connect5(client_id=b"unknown-alias")
    c.send(publish5("", b"x", 1, props=[(TOPIC_ALIAS, 3)]))
    assert c.expect_disconnect_and_close() == RC_PROTOCOL_ERROR
    roundtrip5(p5)


@pytest.mark.midge_only("Mosquitto 2.0 never sends topic aliases to clients")
def test_subscriber_with_topic_alias_maximum_gets_aliased_publish(raw5, p5):
    sub = raw5()
    sub.connect5(client_id=b"alias-sub", props=[(TOPIC_ALIAS_MAXIMUM, 5)])
    sub.subscribe5([("ta/#", 0)])
    pub = p5()
    pub.connect()
    topics = ["ta/a/long/topic/name", "ta/a/long/topic/name", "ta/other",
              "ta/a/long/topic/name", "ta/other"]
    for i, t in enumerate(topics):
        pub.publish(t, f"m{i}".encode(), 1)
    aliases: dict[int, str] = {}
    resolved, used = [], 0
    for _ in topics:
        p = sub.expect_publish()
        alias = prop(p.props, TOPIC_ALIAS)
        topic = p.topic
        if alias is not None:
            used += 1
            assert 1 <= alias <= 5, f"alias {alias} outside the client's maximum 5"
            if topic:
                aliases[alias] = topic
            else:
                assert alias in aliases, f"empty topic with alias {alias} never set"
                topic = aliases[alias]
        assert topic, f"empty topic without an alias: {p}"
        resolved.append((topic, p.payload))
    assert resolved == [(t, f"m{i}".encode()) for i, t in enumerate(topics)]
    assert used > 0, "the broker never used a topic alias although the client allows 5"
    pub.disconnect()


# -- flow control ----------------------------------------------------------------

def test_receive_maximum_of_subscriber_limits_unacknowledged_messages(raw5, p5):
    sub = raw5()
    sub.connect5(client_id=b"slow-sub", props=[(RECEIVE_MAXIMUM, 2)])
    sub.subscribe5([("fc/t", 1), ("fc/probe", 0)])
    pub = p5()
    pub.connect()
    n = 6
    for i in range(n):
        pub.publish("fc/t", f"m{i}".encode(), 1)
    pub.publish("fc/probe", b"probe", 0)
    # Before any acknowledgement: only 2 QoS 1 PUBLISHes may arrive. The QoS 0
    # probe is not subject to Receive Maximum; if the broker queues it behind,
    # the bounded wait below ends on the timeout instead.
    early: list[Publish5] = []
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        try:
            p = sub.expect_publish(timeout=max(0.01, deadline - time.monotonic()))
        except TimeoutError:
            break
        if p.topic == "fc/probe":
            break
        early.append(p)
    assert len(early) == 2, \
        f"{len(early)} unacknowledged QoS 1 messages sent to a client with Receive Maximum 2"
    outstanding = [p.packet_id for p in early]
    got = [p.payload for p in early]
    while len(got) < n:
        sub.send(ack5(PUBACK, outstanding.pop(0)))
        p = sub.expect_publish()
        if p.topic == "fc/probe":
            continue
        assert p.qos == 1
        outstanding.append(p.packet_id)
        assert len(outstanding) <= 2, f"{len(outstanding)} messages in flight, Receive Maximum 2"
        got.append(p.payload)
    assert got == [f"m{i}".encode() for i in range(n)]
    pub.disconnect()


@pytest.mark.midge_only("Mosquitto 2.0 answers with PUBREC 0x97 and keeps the connection")
def test_publisher_exceeding_receive_maximum_gets_0x93(raw5, p5):
    c = raw5()
    props = c.connect5(client_id=b"greedy")
    limit = prop(props, RECEIVE_MAXIMUM, 65535)
    assert limit == 20
    c.send(b"".join(publish5("fc/q2", b"x", 2, packet_id=i) for i in range(1, limit + 2)))
    packets = c.expect_closed()
    types = [p[0] for p in packets]
    assert types[:-1] == [PUBREC] * limit, f"expected {limit} PUBRECs, got {types}"
    assert packets[-1][0] == DISCONNECT and reason_of(packets[-1][2]) == RC_RECEIVE_MAXIMUM_EXCEEDED, \
        f"expected DISCONNECT 0x93 after {limit} unreleased QoS 2 messages, got {packets[-1]}"
    roundtrip5(p5)


def test_maximum_packet_size_of_subscriber(raw5, p5):
    sub = raw5()
    sub.connect5(client_id=b"small-sub", props=[(MAXIMUM_PACKET_SIZE, 100)])
    sub.subscribe5([("mps/t", 1)])
    pub = p5()
    pub.connect()
    pub.publish("mps/t", b"B" * 200, 1)
    pub.publish("mps/t", b"small", 1)
    p = sub.expect_publish()
    assert p.payload == b"small", f"got a {p.size}-byte packet: {p.payload[:20]!r}..."
    assert p.size <= 100
    pub.disconnect()


@pytest.fixture
def small_packet_broker(request, tmp_path):
    if brokers.broker_kind() == "mosquitto":
        pytest.skip("starts midge with a configuration")
    port = brokers.free_port()
    conf = opsupport.write_conf(tmp_path / "midge.conf", (
        f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_packet_size 1000\n"
        "log_dest stdout\nlog_type all\n"))
    b = opsupport.ConfBroker(conf)
    request.node._midge_broker = b
    try:
        b.wait_ready()
        yield b
    finally:
        b.stop()


def test_packet_larger_than_broker_max_packet_size_gets_0x95(small_packet_broker):
    b = small_packet_broker
    c = Raw5(b.host, b.port)
    other = Paho5(b)
    try:
        other.connect()
        other.subscribe("big/#", 1)
        props = c.connect5(client_id=b"too-big")
        assert prop(props, MAXIMUM_PACKET_SIZE) == 1000
        c.send(publish5("big/t", b"x" * 900, 1, packet_id=1))  # under the limit: fine
        p = c.read_packet()
        assert p is not None and p[0] == PUBACK, p
        c.send(publish5("big/t", b"y" * 1200, 1, packet_id=2))
        assert c.expect_disconnect_and_close() == RC_PACKET_TOO_LARGE
        m = other.expect_message()
        assert (m.topic, len(m.payload)) == ("big/t", 900)
        other.publish("big/after", b"fine", 1)
        m = other.expect_message()
        assert (m.topic, m.payload) == ("big/after", b"fine")
    finally:
        c.close()
        other.close()


# -- subscription options and identifiers ----------------------------------------

def test_no_local(p5):
    c = p5()
    c.connect()
    c.subscribe5("nl/t", 1, noLocal=True)
    c.subscribe("nl/sentinel", 1)
    other = p5()
    other.connect()
    c.publish("nl/t", b"own", 1)
    other.publish("nl/t", b"other's", 1)
    c.publish("nl/sentinel", b"sentinel", 1)
    got = c.messages_until("nl/sentinel")
    assert [(m.topic, m.payload) for m in got] == [("nl/t", b"other's"), ("nl/sentinel", b"sentinel")]
    other.disconnect()
    c.disconnect()


def test_retain_as_published(p5):
    rap = p5()
    rap.connect()
    rap.subscribe5("rap/t", 1, retainAsPublished=True)
    plain = p5()
    plain.connect()
    plain.subscribe5("rap/t", 1, retainAsPublished=False)
    pub = p5()
    pub.connect()
    pub.publish("rap/t", b"live and retained", 1, retain=True)
    m = rap.expect_message()
    assert (m.payload, m.retain) == (b"live and retained", True)
    m = plain.expect_message()
    assert (m.payload, m.retain) == (b"live and retained", False)
    for c in (rap, plain, pub):
        c.disconnect()


@pytest.mark.parametrize("handling,first,second", [(0, True, True), (1, True, False), (2, False, False)],
                         ids=["rh0-always", "rh1-new-only", "rh2-never"])
def test_retain_handling(p5, handling, first, second):
    pub = p5()
    pub.connect()
    pub.publish("rh/t", b"retained", 1, retain=True)
    pub.publish("rh/sentinel", b"sentinel", 1, retain=True)
    c = p5()
    c.connect()
    for expected in (first, second):
        c.subscribe5("rh/t", 1, retainHandling=handling)
        c.subscribe5("rh/sentinel", 1, retainHandling=0)  # its retained message comes after
        got = c.messages_until("rh/sentinel")
        want = ([("rh/t", b"retained")] if expected else []) + [("rh/sentinel", b"sentinel")]
        assert [(m.topic, m.payload) for m in got] == want
    c.disconnect()
    pub.disconnect()


@pytest.mark.midge_only("Mosquitto 2.0 sends a copy per matching subscription")
def test_subscription_identifiers_all_on_one_copy(p5):
    c = p5()
    c.connect()
    c.subscribe5("sid/#", 1, props=props_of(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=1))
    c.subscribe5("sid/+", 1, props=props_of(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=2))
    c.subscribe5("sid/+/+", 1)  # no identifier
    pub = p5()
    pub.connect()
    pub.publish("sid/a", b"two matches", 1)
    pub.publish("sid/a/b", b"sentinel", 1)  # sid/# (1) and sid/+/+ (none)
    got = c.messages_until("sid/a/b")
    assert [(m.topic, m.payload) for m in got] == [("sid/a", b"two matches"), ("sid/a/b", b"sentinel")], \
        "expected one copy of each message"
    assert sorted(got[0].p("SubscriptionIdentifier", [])) == [1, 2]
    assert got[1].p("SubscriptionIdentifier", []) == [1]
    c.disconnect()
    pub.disconnect()


# -- request/response and passed-through properties ------------------------------

def test_request_response_properties_passed_through_paho(p5):
    responder = p5()
    responder.connect()
    responder.subscribe("rr/request", 1)
    requester = p5()
    requester.connect()
    requester.subscribe("rr/reply/+", 1)
    user = [("b", "2"), ("a", "1"), ("b", "3"), ("a", "1")]
    requester.publish5("rr/request", "héllo".encode(), 1, props=props_of(
        PacketTypes.PUBLISH, ResponseTopic="rr/reply/42", CorrelationData=b"\x00corr\xff",
        ContentType="text/plain; charset=utf-8", PayloadFormatIndicator=1, UserProperty=user))
    m = responder.expect_message()
    assert m.payload == "héllo".encode()
    assert m.p("ResponseTopic") == "rr/reply/42"
    assert m.p("CorrelationData") == b"\x00corr\xff"
    assert m.p("ContentType") == "text/plain; charset=utf-8"
    assert m.p("PayloadFormatIndicator") == 1
    assert m.p("UserProperty") == user, "user properties reordered or deduplicated [MQTT-3.3.2-18]"
    responder.publish5(m.p("ResponseTopic"), b"answer", 1, props=props_of(
        PacketTypes.PUBLISH, CorrelationData=m.p("CorrelationData")))
    r = requester.expect_message()
    assert (r.topic, r.payload, r.p("CorrelationData")) == ("rr/reply/42", b"answer", b"\x00corr\xff")
    responder.disconnect()
    requester.disconnect()


@pytest.mark.skipif(not shutil.which("mosquitto_sub"), reason="mosquitto-clients not installed")
def test_properties_passed_through_mosquitto_tools(broker):
    from test_mosquitto_clients import Sub, pub  # the suite's mosquitto_sub driver
    s = Sub(broker, "-V", "5", "-t", "rr/tools", "-q", "1", "-C", "1", "-W", "10",
            "-F", "R=%R|D=%D|C=%C|F=%F|E=%E|P=%P|p=%p")
    try:
        s.subscribed()
        pub(broker, "-V", "5", "-t", "rr/tools", "-m", "hello", "-q", "1",
            "-D", "publish", "response-topic", "rr/answer",
            "-D", "publish", "correlation-data", "id-17",
            "-D", "publish", "content-type", "application/x-test",
            "-D", "publish", "payload-format-indicator", "1",
            "-D", "publish", "message-expiry-interval", "3600",
            "-D", "publish", "user-property", "k", "v1",
            "-D", "publish", "user-property", "j", "w",
            "-D", "publish", "user-property", "k", "v2")
        out = [line for line in s.payload_lines()]
    finally:
        s.close()
    assert len(out) == 1, out
    fields = dict(f.split("=", 1) for f in out[0].split("|"))
    assert fields["R"] == "rr/answer"
    assert fields["D"] == "id-17"
    assert fields["C"] == "application/x-test"
    assert fields["F"] == "1"
    assert 3590 <= int(fields["E"]) <= 3600
    assert fields["P"] == "k:v1 j:w k:v2"
    assert fields["p"] == "hello"


@pytest.mark.midge_only("Mosquitto 2.0 does not check the payload against its format indicator")
def test_payload_format_indicator_with_invalid_utf8_gets_puback_0x99(raw5, p5):
    watcher = p5()
    watcher.connect()
    watcher.subscribe("pfi/#", 1)
    c = raw5()
    c.connect5(client_id=b"pfi")
    c.send(publish5("pfi/t", b"not utf-8 \xff\xfe", 1, packet_id=9, props=[(PFI, 1)]))
    p = c.read_packet()
    assert p is not None and p[0] == PUBACK, f"expected PUBACK, got {p}"
    pid, reason = struct.unpack_from("!HB", p[2])
    assert (pid, reason) == (9, RC_PAYLOAD_FORMAT_INVALID)
    # still connected, and the message was not forwarded
    c.send(publish5("pfi/sentinel", "valid ✓".encode(), 1, packet_id=10, props=[(PFI, 1)]))
    p = c.read_packet()
    assert p is not None and p[0] == PUBACK and p[2][:2] == b"\x00\x0a", p
    assert len(p[2]) == 2 or p[2][2] == 0, f"valid UTF-8 refused: {p}"
    got = watcher.messages_until("pfi/sentinel")
    assert [(m.topic, m.payload) for m in got] == [("pfi/sentinel", "valid ✓".encode())]


# -- enhanced authentication ------------------------------------------------------

def test_unsupported_authentication_method_gets_connack_0x8c(raw5, p5):
    c = raw5()
    c.send(connect5(client_id=b"scram", props=[(AUTH_METHOD, "SCRAM-SHA-1")]))
    packets = c.expect_closed()
    assert len(packets) == 1 and packets[0][0] == CONNACK, packets
    assert packets[0][2][:2] == bytes([0, RC_BAD_AUTH_METHOD]), packets
    roundtrip5(p5)


# -- shared subscriptions ---------------------------------------------------------

SHARED_PROTOS = {"v311": (MQTTv311, MQTTv311), "v5": (MQTTv5, MQTTv5), "mixed": (MQTTv311, MQTTv5)}


@pytest.mark.parametrize("protos", list(SHARED_PROTOS))
def test_shared_subscription_splits_messages(p5, protos):
    members = []
    for i, proto in enumerate(SHARED_PROTOS[protos]):
        m = p5(client_id=f"member-{i}", protocol=proto)
        m.connect()
        assert m.subscribe("$share/g/sh/t", 1) == [1]
        m.subscribe("sh/ctl", 1)
        members.append(m)
    pub = p5()
    pub.connect()
    sent = [f"m{i}".encode() for i in range(20)]
    for payload in sent:
        pub.publish("sh/t", payload, 1)
    pub.publish("sh/ctl", b"sentinel", 1)
    shares = []
    for m in members:
        got = m.messages_until("sh/ctl")
        shares.append([x.payload for x in got if x.topic == "sh/t"])
    assert sorted(shares[0] + shares[1]) == sorted(sent), f"lost or duplicated: {shares}"
    assert shares[0] and shares[1], f"one member got everything: {shares}"
    for share in shares:
        assert share == sorted(share, key=sent.index), "a member's share is out of order"
    pub.disconnect()


@pytest.mark.midge_only("Mosquitto 2.0 sends retained messages to new shared subscriptions")
@pytest.mark.parametrize("proto", ["v311", "v5"])
def test_shared_subscription_gets_no_retained_message(p5, proto):
    pub = p5()
    pub.connect()
    pub.publish("shr/t", b"retained", 1, retain=True)
    c = p5(protocol=MQTTv5 if proto == "v5" else MQTTv311)
    c.connect()
    assert c.subscribe("$share/g/shr/t", 1) == [1]
    c.subscribe("shr/ctl", 1)
    pub.publish("shr/ctl", b"sentinel", 1)
    got = c.messages_until("shr/ctl")
    assert [(m.topic, m.payload) for m in got] == [("shr/ctl", b"sentinel")], \
        "a retained message was sent for a new shared subscription (MQTT 5.0 4.8.2)"
    c.disconnect()
    pub.disconnect()


@pytest.mark.midge_only("Mosquitto 2.0 drops the messages in flight to a departed member")
@pytest.mark.parametrize("level", [4, 5], ids=["raw-mqttv311", "raw-mqttv5"])
def test_shared_member_dropping_mid_stream_loses_nothing(broker, p5, level):
    flaky = rawmqtt.RawClient(broker.host, broker.port)
    try:
        if level == 5:
            flaky.send(connect5(client_id=b"flaky", props=[(RECEIVE_MAXIMUM, 3)]))
            p = flaky.read_packet()
            assert p is not None and p[0] == CONNACK and p[2][1] == 0, p
            flaky.send(subscribe5([("$share/g/drop/t", 1)]))
        else:
            flaky.connect(client_id=b"flaky", level=4)
            flaky.send(rawmqtt.subscribe("$share/g/drop/t", 1))
        p = flaky.read_packet()
        assert p is not None and p[0] == SUBACK, p
        steady = p5(client_id="steady", protocol=MQTTv311)
        steady.connect()
        steady.subscribe("$share/g/drop/t", 1)
        pub = p5()
        pub.connect()
        first = [f"a{i}".encode() for i in range(10)]
        for payload in first:
            pub.publish("drop/t", payload, 1)
        p = flaky.read_packet()  # it receives at least one, and never acknowledges
        assert p is not None and p[0] == PUBLISH, f"the flaky member got nothing: {p}"
    finally:
        flaky.close()
    second = [f"b{i}".encode() for i in range(10)]
    for payload in second:
        pub.publish("drop/t", payload, 1)
    want = set(first + second)
    got: set[bytes] = set()
    deadline = time.monotonic() + 10
    while got != want:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"lost when a shared member left: {sorted(want - got)}")
        try:
            got.add(steady.messages.get(timeout=remaining).payload)
        except queue.Empty:
            pass
    steady.disconnect()
    pub.disconnect()


# -- bad input --------------------------------------------------------------------

BAD_PUBLISH_PROPERTIES = [
    # an identifier that is no property at all: Malformed Packet (2.2.2.2)
    pytest.param(b"\x02\x7f\x00", RC_MALFORMED, id="unknown-property-0x7f"),
    # the same property twice: Protocol Error
    pytest.param(encode_props([(MESSAGE_EXPIRY, 10), (MESSAGE_EXPIRY, 20)]), RC_PROTOCOL_ERROR,
                 id="duplicate-message-expiry",
                 marks=pytest.mark.midge_only("Mosquitto 2.0 closes without a DISCONNECT")),
    # a property not valid for PUBLISH: Malformed Packet (2.2.2.2: "an Identifier
    # which is not valid for its packet type ... is a Malformed Packet");
    # Mosquitto 2.0 answers 0x81 too
    pytest.param(encode_props([(SESSION_EXPIRY, 10)]), RC_MALFORMED, id="session-expiry-in-publish"),
]


@pytest.mark.parametrize("raw_props,reason", BAD_PUBLISH_PROPERTIES)
def test_bad_publish_properties_disconnect(raw5, p5, raw_props, reason):
    bystander = p5()
    bystander.connect()
    bystander.subscribe("bad/#", 1)
    c = raw5()
    c.connect5(client_id=b"bad-props")
    c.send(publish5("bad/t", b"x", 1, raw_props=raw_props))
    got = c.expect_disconnect_and_close()
    assert got == reason, f"DISCONNECT reason {got:#04x}, the spec says {reason:#04x}"
    # the bystander got nothing from it and goes on working
    bystander.publish("bad/sentinel", b"sentinel", 1)
    got = bystander.messages_until("bad/sentinel")
    assert [(m.topic, m.payload) for m in got] == [("bad/sentinel", b"sentinel")]
    bystander.disconnect()


# Protocol violations the specification names, after a valid CONNECT.
PROTOCOL_VIOLATIONS = [
    # "It is a Protocol Error if the Subscription Identifier has a value of 0" (3.8.2.1.2)
    pytest.param(subscribe5([("v/t", 1)], props=[(SUBSCRIPTION_ID, 0)]), RC_PROTOCOL_ERROR,
                 id="subscription-identifier-0",
                 marks=pytest.mark.midge_only("Mosquitto 2.0 answers 0x81")),
    # "It is a Protocol Error to set the No Local bit to 1 on a Shared Subscription" [MQTT-3.8.3-4]
    pytest.param(subscribe5([("$share/g/v/t", 0x01 | 0x04)]), RC_PROTOCOL_ERROR,
                 id="no-local-on-shared-subscription",
                 marks=pytest.mark.midge_only("Mosquitto 2.0 accepts it")),
    # "It is a Protocol Error to send a Retain Handling value of 3" (3.8.3.1)
    pytest.param(subscribe5([("v/t", 0x01 | 0x30)]), RC_PROTOCOL_ERROR, id="retain-handling-3",
                 marks=pytest.mark.midge_only("Mosquitto 2.0 answers 0x81")),
    # reserved bits of the subscription options: malformed [MQTT-3.8.3-5]
    pytest.param(subscribe5([("v/t", 0x01 | 0x40)]), RC_MALFORMED, id="subscription-options-reserved-bit"),
    # "A PUBLISH packet sent from a Client to a Server MUST NOT contain a
    # Subscription Identifier" [MQTT-3.3.4-6]: a Protocol Error (4.13.1; the
    # property is valid in PUBLISH, only not in this direction); 0x81 would do
    # too. Mosquitto 2.0.11 accepts it as well (PUBACK).
    pytest.param(publish5("v/t", b"x", 1, props=[(SUBSCRIPTION_ID, 5)]),
                 (RC_PROTOCOL_ERROR, RC_MALFORMED), id="publish-with-subscription-identifier",
                 marks=pytest.mark.midge_only("Mosquitto 2.0.11 accepts it (PUBACK)")),
]


@pytest.mark.parametrize("bad,reason", PROTOCOL_VIOLATIONS)
def test_protocol_violations_disconnect(raw5, p5, bad, reason):
    c = raw5()
    c.connect5(client_id=b"violator")
    c.send(bad)
    got = c.expect_disconnect_and_close()
    allowed = reason if isinstance(reason, tuple) else (reason,)
    assert got in allowed, f"DISCONNECT reason {got:#04x}, the spec says {reason}"
    roundtrip5(p5)


@pytest.mark.parametrize("props", [
    pytest.param([(RECEIVE_MAXIMUM, 0)], id="receive-maximum-0"),
    pytest.param([(MAXIMUM_PACKET_SIZE, 0)], id="maximum-packet-size-0"),
    pytest.param([(SESSION_EXPIRY, 1), (SESSION_EXPIRY, 2)], id="session-expiry-twice"),
])
def test_bad_connect_properties_refused(raw5, p5, props):
    """Each is "a Protocol Error" (3.1.2.11): CONNACK 0x82 (or none), then the close."""
    c = raw5()
    c.send(connect5(client_id=b"bad-connect", props=props))
    packets = c.expect_closed()
    assert len(packets) <= 1, packets
    if packets:
        assert packets[0][0] == CONNACK and packets[0][2][1] == RC_PROTOCOL_ERROR, packets
    roundtrip5(p5)


def test_will_properties_passed_through(raw5, will_watcher):
    c = raw5()
    c.connect5(client_id=b"will-props", will=("will5/props", b'{"gone": true}', 1, False, [
        (CONTENT_TYPE, "application/json"), (PFI, 1), (RESPONSE_TOPIC, "will5/reply"),
        (CORRELATION_DATA, b"\x01\x02"), (USER_PROPERTY, ("k", "1")), (USER_PROPERTY, ("k", "2")),
        (MESSAGE_EXPIRY, 3600)]))
    c.close()  # no DISCONNECT
    m = will_watcher.expect_message()
    assert (m.topic, m.payload) == ("will5/props", b'{"gone": true}')
    assert m.p("ContentType") == "application/json"
    assert m.p("PayloadFormatIndicator") == 1
    assert m.p("ResponseTopic") == "will5/reply"
    assert m.p("CorrelationData") == b"\x01\x02"
    assert m.p("UserProperty") == [("k", "1"), ("k", "2")]
    assert 3590 <= m.p("MessageExpiryInterval", 0) <= 3600


def test_retained_message_expires(p5):
    pub = p5()
    pub.connect()
    pub.publish5("rexp/t", b"short", 1, retain=True,
                 props=props_of(PacketTypes.PUBLISH, MessageExpiryInterval=1))
    pub.publish5("rexp/long", b"long", 1, retain=True,
                 props=props_of(PacketTypes.PUBLISH, MessageExpiryInterval=100))
    published = time.monotonic()
    time.sleep(max(0.0, published + 2.2 - time.monotonic()))  # the expiry is the point
    c = p5()
    c.connect()
    c.subscribe("rexp/t", 1)
    c.subscribe("rexp/long", 1)  # its retained message comes after
    got = c.messages_until("rexp/long")
    assert [(m.topic, m.payload) for m in got] == [("rexp/long", b"long")], \
        "an expired retained message was delivered"
    assert 95 <= got[0].p("MessageExpiryInterval", 0) <= 98, got[0].p("MessageExpiryInterval")
    c.disconnect()
    pub.disconnect()


def test_unsubscribe_reason_codes(raw5):
    c = raw5()
    c.connect5(client_id=b"unsub")
    c.subscribe5([("u/a", 1)])
    body = struct.pack("!H", 7) + encode_props() + mqtt_str("u/a") + mqtt_str("u/never")
    c.send(packet(10, 0x2, body))  # UNSUBSCRIBE
    p = c.read_packet()
    assert p is not None and p[0] == 11, f"expected UNSUBACK, got {p}"
    assert p[2][:2] == b"\x00\x07"
    _, i = decode_props(p[2], 2)
    assert list(p[2][i:]) == [0x00, 0x11], "UNSUBACK reasons: Success, No subscription existed"
