"""Bad input over raw sockets. Each case must get its connection closed within
a bound, and the broker must go on serving others: after each one a normal
paho client connects, subscribes, publishes and receives."""

from __future__ import annotations

import pytest

import rawmqtt
from pahocompat import MQTTv5, MQTTv311, roundtrip
from rawmqtt import CONNACK, DISCONNECT, connect, packet, publish, subscribe

# (id, send a valid CONNECT first?, the bad bytes)
BEFORE_CONNECT = [
    ("remaining-length-5-bytes", b"\x10\xff\xff\xff\xff\x7f"),
    ("bad-protocol-name", connect(client_id=b"c", level=4, name=b"MQTX")),
    ("bad-protocol-name-lowercase", connect(client_id=b"c", level=4, name=b"mqtt")),
    ("invalid-utf8-client-id", connect(client_id=b"bad\xff\xfeid", level=4)),
    ("utf8-surrogate-client-id", connect(client_id=b"bad\xed\xa0\x80id", level=4)),
    ("invalid-utf8-client-id-v5", connect(client_id=b"bad\xc3\x28id", level=5)),
    ("connect-reserved-flag-set", connect(client_id=b"c", level=4)[:9] + b"\x03"
     + connect(client_id=b"c", level=4)[10:]),
    ("publish-before-connect", publish("a/b", b"x")),
    ("subscribe-before-connect", subscribe("a/b", 0)),
    ("packet-type-0", b"\x00\x00"),
]

AFTER_CONNECT = [
    ("remaining-length-5-bytes", lambda lv: b"\x30\xff\xff\xff\xff\x7f"),
    ("publish-topic-with-plus", lambda lv: publish("a/+/b", b"x", level=lv)),
    ("publish-topic-with-hash", lambda lv: publish("a/#", b"x", level=lv)),
    ("publish-qos-3", lambda lv: packet(3, 0x6, rawmqtt.mqtt_str("a/b") + b"\x00\x01"
                                        + (b"\x00" if lv == 5 else b"") + b"x")),
    ("publish-invalid-utf8-topic", lambda lv: publish(b"a/\xff", b"x", level=lv)),
    ("subscribe-packet-id-0", lambda lv: subscribe("a/b", 1, packet_id=0, level=lv)),
    ("subscribe-bad-fixed-header-flags", lambda lv: b"\x80" + subscribe("a/b", 1, level=lv)[1:]),
    ("second-connect", lambda lv: connect(client_id=b"bad-client", level=lv)),
]


def _check_refusals(packets, level):
    """Whatever the broker sent before closing must not accept anything."""
    for ptype, _flags, body in packets:
        if ptype == CONNACK:
            code = body[1] if len(body) > 1 else 0
            assert code != 0, f"CONNACK accepted the bad connection: {packets}"
        elif ptype == DISCONNECT:
            assert level == 5, f"DISCONNECT from the broker in MQTT 3: {packets}"
            assert body and body[0] >= 0x80, f"DISCONNECT without an error reason: {packets}"
        else:
            raise AssertionError(f"unexpected packets before the close: {packets}")


@pytest.mark.parametrize("bad", [b for _, b in BEFORE_CONNECT], ids=[i for i, _ in BEFORE_CONNECT])
def test_bad_first_packet_closes_connection(raw, paho, bad):
    c = raw()
    c.send(bad)
    _check_refusals(c.expect_closed(), level=5)
    roundtrip(paho)


@pytest.mark.parametrize("make", [m for _, m in AFTER_CONNECT], ids=[i for i, _ in AFTER_CONNECT])
@pytest.mark.parametrize("level", [4, 5], ids=["mqttv311", "mqttv5"])
def test_bad_packet_after_connect_closes_connection(raw, paho, level, make):
    c = raw()
    c.connect(client_id=b"bad-client", level=level)
    c.send(make(level))
    _check_refusals(c.expect_closed(), level)
    roundtrip(paho, protocol=MQTTv5 if level == 5 else MQTTv311)


def test_broker_survives_a_burst_of_bad_connections(raw, paho):
    for _, bad in BEFORE_CONNECT:
        c = raw()
        c.send(bad)
    for _ in range(20):  # connections that never send anything, then vanish
        raw()
    roundtrip(paho)
