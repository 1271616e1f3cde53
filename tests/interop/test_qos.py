"""QoS, sessions, retained messages, topic matching and wills, with paho
(and raw sockets where a client must misbehave)."""

from __future__ import annotations

import socket
import struct
import time

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import rawmqtt
from pahocompat import MQTTv5, MQTTv311, PROTOCOLS


def session_props(expiry: int = 300) -> Properties:
    p = Properties(PacketTypes.CONNECT)
    p.SessionExpiryInterval = expiry
    return p


# -- QoS end to end -------------------------------------------------------------

@pytest.mark.parametrize("proto", ["v311", "v5"], ids=lambda p: f"mqtt{p}")
@pytest.mark.parametrize("pub_qos,sub_qos,expected", [
    (1, 1, 1), (2, 2, 2), (2, 1, 1), (1, 0, 0), (2, 0, 0), (0, 2, 0), (1, 2, 1),
], ids=lambda v: str(v))
def test_delivery_qos_is_min_of_publish_and_subscription(paho, proto, pub_qos, sub_qos, expected):
    sub = paho(protocol=PROTOCOLS[proto])
    sub.connect()
    assert sub.subscribe("qos/t", sub_qos) == [sub_qos]
    pub = paho(protocol=PROTOCOLS[proto])
    pub.connect()
    pub.publish("qos/t", b"payload", pub_qos)
    m = sub.expect_message()
    assert (m.topic, m.payload, m.qos) == ("qos/t", b"payload", expected)
    pub.disconnect()
    sub.disconnect()


def test_many_qos1_and_qos2_messages_in_order(paho):
    """50 messages, QoS 1 and 2 alternating, sent without waiting for each
    acknowledgement: all arrive, each QoS level in order [MQTT-4.6.0-6]."""
    sub = paho()
    sub.connect()
    sub.subscribe("order/#", 2)
    pub = paho()
    pub.connect()
    sent = [(f"m{i}".encode(), 1 + i % 2) for i in range(50)]
    infos = [pub.c.publish("order/q", payload, qos) for payload, qos in sent]
    for info in infos:
        info.wait_for_publish(10)
        assert info.is_published()
    got = [sub.expect_message() for _ in sent]
    for qos in (1, 2):
        assert [(m.payload, m.qos) for m in got if m.qos == qos] == \
            [(p, q) for p, q in sent if q == qos]


# -- persistent sessions ----------------------------------------------------------

def _connect_persistent(paho, proto, cid, clean):
    if proto == "v5":
        c = paho(client_id=cid, protocol=MQTTv5)
        return c, c.connect(clean_start=clean, properties=session_props())
    c = paho(client_id=cid, protocol=MQTTv311, clean_session=clean)
    return c, c.connect()


@pytest.mark.parametrize("proto", ["v311", "v5"], ids=lambda p: f"mqtt{p}")
def test_persistent_session_receives_messages_queued_while_offline(paho, proto):
    cid = f"persistent-{proto}"
    c, connack = _connect_persistent(paho, proto, cid, clean=False)
    assert connack.session_present is False  # a fresh broker has no session for it
    assert c.subscribe("persist/t", 1) == [1]
    c.disconnect()

    pub = paho()
    pub.connect()
    payloads = [f"offline {i}".encode() for i in range(10)]
    for p in payloads:
        pub.publish("persist/t", p, 1)

    c2, connack = _connect_persistent(paho, proto, cid, clean=False)
    assert connack.session_present is True
    got = [c2.expect_message() for _ in payloads]
    assert [(m.topic, m.payload, m.qos) for m in got] == [("persist/t", p, 1) for p in payloads]
    # nothing more: a sentinel published now comes next
    pub.publish("persist/t", b"sentinel", 1)
    assert [m.payload for m in c2.messages_until("persist/t")] == [b"sentinel"]
    # and the subscription is still there while connected
    c2.disconnect()
    pub.disconnect()


@pytest.mark.parametrize("proto", ["v311", "v5"], ids=lambda p: f"mqtt{p}")
def test_clean_session_discards_the_stored_session(paho, proto):
    cid = f"discard-{proto}"
    c, _ = _connect_persistent(paho, proto, cid, clean=False)
    c.subscribe("persist/t", 1)
    c.disconnect()
    pub = paho()
    pub.connect()
    for i in range(3):
        pub.publish("persist/t", f"queued {i}".encode(), 1)

    if proto == "v5":
        c2 = paho(client_id=cid, protocol=MQTTv5)
        connack = c2.connect(clean_start=True)  # session expiry 0: ends at disconnect
    else:
        c2 = paho(client_id=cid, protocol=MQTTv311, clean_session=True)
        connack = c2.connect()
    assert connack.session_present is False
    c2.subscribe("other/t", 1)
    pub.publish("other/t", b"sentinel", 1)
    got = c2.messages_until("other/t")
    assert [(m.topic, m.payload) for m in got] == [("other/t", b"sentinel")], \
        "messages of the discarded session were delivered"
    c2.disconnect()

    # The old subscription is gone too.
    c3, connack = _connect_persistent(paho, proto, cid, clean=False)
    assert connack.session_present is False
    c3.subscribe("other/t", 1)
    pub.publish("persist/t", b"after", 1)
    pub.publish("other/t", b"sentinel2", 1)
    got = c3.messages_until("other/t")
    assert [(m.topic, m.payload) for m in got] == [("other/t", b"sentinel2")]
    c3.disconnect()
    pub.disconnect()


@pytest.mark.parametrize("proto", ["v31", "v311", "v5"], ids=lambda p: f"mqtt{p}")
def test_session_takeover_disconnects_the_first_client(paho, proto):
    first = paho(client_id="same-id", protocol=PROTOCOLS[proto])
    first.connect()
    second = paho(client_id="same-id", protocol=PROTOCOLS[proto])
    second.connect()
    first.expect_disconnect()
    assert second.subscribe("takeover/t", 1) == [1]
    second.publish("takeover/t", b"works", 1)
    m = second.expect_message()
    assert (m.topic, m.payload) == ("takeover/t", b"works")
    second.disconnect()


# -- overlapping subscriptions --------------------------------------------------

def test_overlapping_subscriptions_deliver_one_copy_at_max_qos(paho):
    """a/# at QoS 1 and a/+ at QoS 2 from one client: a QoS 2 message to a/b
    arrives once, at QoS 2 [MQTT-3.3.5-1]. (Mosquitto 2.0 does the same.)"""
    sub = paho()
    sub.connect()
    assert sub.subscribe("a/#", 1) == [1]
    assert sub.subscribe("a/+", 2) == [2]
    assert sub.subscribe("b/#", 2) == [2]
    pub = paho()
    pub.connect()
    pub.publish("a/b", b"once", 2)
    # paho hands a QoS 2 message to on_message when PUBREL arrives, a QoS 1
    # message at once: the sentinel is QoS 2 too, so that anything sent for
    # a/b (a second copy at either QoS) reaches on_message before it.
    pub.publish("b/s", b"sentinel", 2)
    got = sub.messages_until("b/s")
    assert [(m.topic, m.payload, m.qos) for m in got] == [
        ("a/b", b"once", 2), ("b/s", b"sentinel", 2)]
    pub.disconnect()
    sub.disconnect()


# -- retained messages ----------------------------------------------------------

def test_retained_set_replaced_received_and_cleared(paho):
    pub = paho()
    pub.connect()
    pub.publish("r/t", b"v1", 1, retain=True)
    pub.publish("r/t", b"v2", 1, retain=True)
    pub.publish("r/sentinel", b"sentinel", 1, retain=True)

    sub = paho()
    sub.connect()
    sub.subscribe("r/t", 1)
    m = sub.expect_message()
    assert (m.topic, m.payload, m.qos, m.retain) == ("r/t", b"v2", 1, True)

    # a live message to an existing subscription does not carry the retain flag
    pub.publish("r/t", b"v3", 1, retain=True)
    m = sub.expect_message()
    assert (m.topic, m.payload, m.retain) == ("r/t", b"v3", False)

    # an empty retained message clears it (and is delivered as usual)
    pub.publish("r/t", b"", 1, retain=True)
    m = sub.expect_message()
    assert (m.topic, m.payload) == ("r/t", b"")

    late = paho()
    late.connect()
    late.subscribe("r/t", 1)
    late.subscribe("r/sentinel", 1)  # processed after the first SUBSCRIBE
    got = late.messages_until("r/sentinel")
    assert [(m.topic, m.payload, m.retain) for m in got] == [("r/sentinel", b"sentinel", True)]
    for c in (late, sub, pub):
        c.disconnect()


def test_retained_message_matches_wildcard_subscription(paho):
    pub = paho()
    pub.connect()
    pub.publish("home/kitchen/temp", b"21", 1, retain=True)
    pub.publish("home/hall/temp", b"19", 1, retain=True)
    pub.publish("home/hall/humidity", b"40", 1, retain=True)
    sub = paho()
    sub.connect()
    sub.subscribe("home/+/temp", 1)
    got = sorted((sub.expect_message() for _ in range(2)), key=lambda m: m.topic)
    assert [(m.topic, m.payload, m.retain) for m in got] == [
        ("home/hall/temp", b"19", True), ("home/kitchen/temp", b"21", True)]
    pub.disconnect()
    sub.disconnect()


# -- topics beginning with $ ----------------------------------------------------

def test_dollar_topics_not_matched_by_leading_wildcards(paho):
    everything = paho()
    everything.connect()
    everything.subscribe("#", 1)
    plus = paho()
    plus.connect()
    plus.subscribe("+/x", 1)
    dollar = paho()
    dollar.connect()
    dollar.subscribe("$test/#", 1)

    pub = paho()
    pub.connect()
    pub.publish("$test/x", b"dollar", 1)
    pub.publish("plain/x", b"sentinel", 1)

    got = dollar.messages_until("$test/x")
    assert [(m.topic, m.payload) for m in got] == [("$test/x", b"dollar")]
    for c in (everything, plus):
        got = c.messages_until("plain/x")
        assert [(m.topic, m.payload) for m in got] == [("plain/x", b"sentinel")], \
            "a subscription starting with a wildcard matched a topic starting with $"
    for c in (everything, plus, dollar, pub):
        c.disconnect()


# -- wills ------------------------------------------------------------------------

@pytest.fixture
def will_watcher(paho):
    w = paho()
    w.connect()
    w.subscribe("will/#", 1)
    return w


@pytest.mark.parametrize("proto", list(PROTOCOLS), ids=lambda p: f"mqtt{p}")
def test_will_published_when_paho_client_dies(paho, will_watcher, proto):
    c = paho(client_id=f"dies-{proto}", protocol=PROTOCOLS[proto])
    c.will_set("will/t", b"gone", 1)
    c.connect()
    c.kill()  # socket shut down and closed, no DISCONNECT
    m = will_watcher.expect_message()
    assert (m.topic, m.payload, m.qos) == ("will/t", b"gone", 1)


@pytest.mark.parametrize("how", ["fin", "rst"])
@pytest.mark.parametrize("level", [4, 5], ids=["mqttv311", "mqttv5"])
def test_will_published_when_raw_client_vanishes(raw, will_watcher, level, how):
    c = raw()
    c.connect(client_id=b"vanishes", level=level, will=(b"will/t", b"bye", 1, False))
    if how == "rst":  # abortive close: the broker gets a reset, not EOF
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
    m = will_watcher.expect_message()
    assert (m.topic, m.payload, m.qos) == ("will/t", b"bye", 1)


@pytest.mark.parametrize("level", [4, 5], ids=["mqttv311", "mqttv5"])
def test_no_will_after_clean_disconnect_raw(raw, paho, will_watcher, level):
    c = raw()
    c.connect(client_id=b"polite", level=level, will=(b"will/t", b"bye", 1, False))
    c.send(rawmqtt.disconnect())
    c.expect_closed()  # the broker has handled the DISCONNECT
    pub = paho()
    pub.connect()
    pub.publish("will/sentinel", b"sentinel", 1)
    got = will_watcher.messages_until("will/sentinel")
    assert [(m.topic, m.payload) for m in got] == [("will/sentinel", b"sentinel")]


@pytest.mark.parametrize("proto", list(PROTOCOLS), ids=lambda p: f"mqtt{p}")
def test_no_will_after_clean_disconnect_paho(paho, will_watcher, proto):
    c = paho(client_id=f"polite-{proto}", protocol=PROTOCOLS[proto])
    c.will_set("will/t", b"gone", 1)
    c.connect()
    c.disconnect()
    # (The raw test above orders this exactly; here the sentinel may overtake
    # the DISCONNECT, which could only hide a bug, never invent one.)
    again = paho(protocol=PROTOCOLS[proto])
    again.connect()
    again.publish("will/sentinel", b"sentinel", 1)
    got = will_watcher.messages_until("will/sentinel")
    assert [(m.topic, m.payload) for m in got] == [("will/sentinel", b"sentinel")]
    again.disconnect()


def _silent_client_will_delay(raw, will_watcher, bound: float) -> float:
    c = raw()
    c.connect(client_id=b"silent", keepalive=1, will=(b"will/t", b"timeout", 1, False))
    t0 = time.monotonic()
    m = will_watcher.expect_message(timeout=bound)
    elapsed = time.monotonic() - t0
    assert (m.topic, m.payload) == ("will/t", b"timeout")
    c.expect_closed(timeout=1)
    return elapsed


def test_keepalive_expiry_publishes_will(raw, will_watcher):
    """Keep-alive 1 s and then silence after CONNACK: the broker drops the
    client and publishes its will."""
    _silent_client_will_delay(raw, will_watcher, bound=10)


# Mosquitto 2.0.11 checks keep-alives coarsely: with keep-alive 1 s it drops
# the silent client after about 4.6 s (2 s: ~6 s, 5 s: ~12 s). The spec's
# bound is 1.5 keep-alive periods [MQTT-3.1.2-24]; Midge must hold to it.
@pytest.mark.midge_only("Mosquitto 2.0 takes ~4.6 s to expire a 1 s keep-alive")
def test_keepalive_expiry_is_timely(raw, will_watcher):
    elapsed = _silent_client_will_delay(raw, will_watcher, bound=5)
    assert elapsed <= 2.5, f"will published {elapsed:.2f} s after CONNACK (keep-alive 1 s)"
