"""paho at each protocol level the broker speaks: MQTT 3.1, 3.1.1 and 5.0
(walkthrough step 8: the broker must answer each protocol level correctly)."""

from __future__ import annotations

import pytest

import rawmqtt
from pahocompat import PROTOCOLS


@pytest.mark.parametrize("qos", [0, 1, 2], ids=lambda q: f"qos{q}")
@pytest.mark.parametrize("proto", list(PROTOCOLS), ids=lambda p: f"mqtt{p}")
def test_publish_subscribe_each_protocol(paho, proto, qos):
    sub = paho(protocol=PROTOCOLS[proto])
    connack = sub.connect()
    assert connack.session_present is False
    assert sub.subscribe("proto/test", 2) == [2]

    pub = paho(protocol=PROTOCOLS[proto])
    pub.connect()
    payload = f"hello at {proto} qos {qos}".encode()
    pub.publish("proto/test", payload, qos)

    m = sub.expect_message()
    assert (m.topic, m.payload, m.qos, m.retain) == ("proto/test", payload, qos, False)
    pub.disconnect()
    sub.disconnect()


@pytest.mark.parametrize("proto", list(PROTOCOLS), ids=lambda p: f"mqtt{p}")
def test_client_receives_its_own_message(paho, proto):
    c = paho(protocol=PROTOCOLS[proto])
    c.connect()
    assert c.subscribe("self/+", 1) == [1]
    c.publish("self/echo", b"\x00binary\xffpayload", 1)
    m = c.expect_message()
    assert (m.topic, m.payload, m.qos) == ("self/echo", b"\x00binary\xffpayload", 1)
    c.disconnect()


def test_unsupported_protocol_level_is_refused(raw):
    """CONNECT with protocol name MQTT and level 6: CONNACK return code 1
    (unacceptable protocol version), then the connection is closed. paho
    relies on this answer to fall back from 3.1.1 to 3.1."""
    c = raw()
    c.send(rawmqtt.connect(client_id=b"level6", level=6, name=b"MQTT"))
    packets = c.expect_closed()
    assert packets == [(rawmqtt.CONNACK, 0, b"\x00\x01")]


@pytest.mark.parametrize("level,name", [(3, b"MQIsdp"), (4, b"MQTT"), (5, b"MQTT")],
                         ids=["mqttv31", "mqttv311", "mqttv5"])
def test_raw_connect_each_level_accepted(raw, level, name):
    c = raw()
    c.send(rawmqtt.connect(client_id=b"rawlevel", level=level, name=name))
    p = c.read_packet()
    assert p is not None and p[0] == rawmqtt.CONNACK
    assert p[2][:2] == b"\x00\x00", p
    c.send(rawmqtt.disconnect())
    c.expect_closed()
