#!/usr/bin/env python3
"""Publishes `test message` to test_topic/test1 five times, then disconnects.

A Python 3 port of the publisher in the user's Mosquitto notes (the seed),
for paho-mqtt 1.x and 2.x. Usage: publisher.py [--host H] [--port P] [--interval S]
"""
import argparse
import sys
import threading
import time

import paho.mqtt.client as mqtt

HOST = '127.0.0.1'
PORT = 1883
KEEP_ALIVE = 60
TOPIC = 'test_topic/test1'
MESSAGE = 'test message'
PUBLISH_NUMBER = 5
SLEEP_TIME = 5
TIMEOUT = 10  # bound on connecting and on each publish


def new_client():
    if hasattr(mqtt, 'CallbackAPIVersion'):  # paho-mqtt 2
        return mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    return mqtt.Client(protocol=mqtt.MQTTv311)


def publish_many_times(client, topic='topic/default', message='default', number=1,
                       time_=1, print_flag=False):
    for i in range(number):
        info = client.publish(topic, message)
        info.wait_for_publish(TIMEOUT)
        if print_flag:
            print(topic + ' ' + message, flush=True)
        if i + 1 < number:
            time.sleep(time_)
    client.disconnect()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--host', default=HOST)
    parser.add_argument('--port', type=int, default=PORT)
    parser.add_argument('--interval', type=float, default=SLEEP_TIME,
                        help='seconds between messages (default %(default)s)')
    parser.add_argument('--print', action='store_true', help='print each message sent')
    args = parser.parse_args()

    connected = threading.Event()
    status = []

    def on_connect(client, userdata, flags, rc, properties=None):
        status.append(getattr(rc, 'value', rc))  # int, or paho 2's ReasonCode
        connected.set()

    client = new_client()
    client.on_connect = on_connect
    try:
        client.connect(args.host, port=args.port, keepalive=KEEP_ALIVE)
    except OSError as e:
        print('cannot connect to {0}:{1}: {2}'.format(args.host, args.port, e), file=sys.stderr)
        return 1
    client.loop_start()
    if not connected.wait(TIMEOUT) or status[0] != 0:
        print('connection failed: {0}'.format(status[0] if status else 'no CONNACK'),
              file=sys.stderr)
        client.loop_stop()
        return 1
    publish_many_times(client, TOPIC, MESSAGE, PUBLISH_NUMBER, args.interval, args.print)
    client.loop_stop()
    return 0


if __name__ == '__main__':
    sys.exit(main())
