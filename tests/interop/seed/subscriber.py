#!/usr/bin/env python3
"""Subscribes to test_topic/test1 and prints each message as `<topic> <payload>`.

A Python 3 port of the subscriber in the user's Mosquitto notes (the seed),
for paho-mqtt 1.x and 2.x. Usage: subscriber.py [--host H] [--port P]

on_connect prints `status <rc>`, the CONNACK return code:
  0: connection accepted
  1: refused - incorrect protocol version
  2: refused - invalid client identifier
  3: refused - server unavailable
  4: refused - bad user name or password
  5: refused - not authorised
"""
import argparse
import sys

import paho.mqtt.client as mqtt

HOST = '127.0.0.1'
PORT = 1883
KEEP_ALIVE = 60
TOPIC = 'test_topic/test1'

# paho-mqtt 2 reports MQTT 3.1.1 return codes as MQTT 5 reason codes.
V5_TO_V3_CONNACK = {0: 0, 132: 1, 133: 2, 136: 3, 134: 4, 135: 5}


def new_client():
    if hasattr(mqtt, 'CallbackAPIVersion'):  # paho-mqtt 2
        return mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    return mqtt.Client(protocol=mqtt.MQTTv311)


def on_connect(client, userdata, flags, respons_code, properties=None):
    """Called when the broker answers the connection (CONNACK)."""
    if not isinstance(respons_code, int):  # paho-mqtt 2 ReasonCode
        respons_code = V5_TO_V3_CONNACK.get(respons_code.value, respons_code.value)
    print('status {0}'.format(respons_code), flush=True)
    client.subscribe(userdata['topic'])


def on_message(client, userdata, message):
    """Called for each message received."""
    print(message.topic + ' ' + message.payload.decode('utf-8', 'replace'), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--host', default=HOST)
    parser.add_argument('--port', type=int, default=PORT)
    args = parser.parse_args()

    client = new_client()
    client.user_data_set({'topic': TOPIC})
    client.on_connect = on_connect
    client.on_message = on_message
    try:
        client.connect(args.host, port=args.port, keepalive=KEEP_ALIVE)
    except OSError as e:
        print('cannot connect to {0}:{1}: {2}'.format(args.host, args.port, e), file=sys.stderr)
        return 1
    try:
        client.loop_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == '__main__':
    sys.exit(main())
