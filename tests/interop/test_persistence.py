"""Crash safety end to end: a broker killed with SIGKILL mid-stream keeps
every message it acknowledged (QoS 1), delivers QoS 2 exactly once, and
keeps retained messages and persistent sessions. Driven by paho and
Debian's mosquitto_pub/mosquitto_sub."""

from __future__ import annotations

import re
import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from brokers import Broker, BrokerStartError, broker_kind, free_port, midge_bin

pytestmark = pytest.mark.skipif(broker_kind() != "midge", reason="starts midge with its own config")


def start_on(tmp_path: Path, port: int, store: Path, extra: str = "") -> Broker:
    conf = tmp_path / "persist.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_inflight_messages 0\n"
                    f"max_queued_messages 0\npersistence true\npersistence_location {store}/\n{extra}")
    broker = Broker([str(midge_bin()), "-c", str(conf), "-v"])
    try:
        broker.wait_for_log(re.compile(rf"Opening ipv4 listen socket on port {port}\."), 10)
    except BrokerStartError:
        broker.stop()
        raise
    broker.port = port
    return broker


def paho_client(client_id: str, clean: bool) -> mqtt.Client:
    if hasattr(mqtt, "CallbackAPIVersion"):
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean)
    else:
        c = mqtt.Client(client_id=client_id, clean_session=clean)
    c.max_inflight_messages_set(100)
    c.max_queued_messages_set(0)
    return c


def wait_until(cond, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def collect(port: int, client_id: str, topic: str, qos: int, quiet: float = 1.5, limit: float = 30) -> list[bytes]:
    """Reconnects a persistent subscriber and gathers what it is sent until
    nothing more arrives for `quiet` seconds."""
    got: list[bytes] = []
    last = [time.time()]
    c = paho_client(client_id, clean=False)

    def on_message(_c, _u, m):
        got.append(m.payload)
        last[0] = time.time()

    c.on_message = on_message
    c.connect("127.0.0.1", port, 30)
    c.loop_start()
    try:
        c.subscribe(topic, qos)
        deadline = time.time() + limit
        while time.time() < deadline and time.time() - last[0] < quiet:
            time.sleep(0.05)
    finally:
        c.disconnect()
        c.loop_stop()
    return got


def make_persistent_subscriber(port: int, client_id: str, topic: str, qos: int) -> None:
    c = paho_client(client_id, clean=False)
    done = threading.Event()
    c.on_subscribe = lambda *a: done.set()
    c.connect("127.0.0.1", port, 30)
    c.loop_start()
    c.subscribe(topic, qos)
    assert done.wait(10)
    c.disconnect()
    c.loop_stop()


def stream_and_kill(broker: Broker, port: int, client_id: str, acked_at_least: int) -> set[bytes]:
    """Streams QoS 1 messages on stream/x, SIGKILLs the broker once
    `acked_at_least` were acknowledged, and returns the payloads the
    publisher saw acknowledged."""
    # paho calls on_publish with its own lock held: the callback only
    # records the mid (no lock of ours, or publish() would deadlock with it);
    # mids are mapped to payloads afterwards. Under 65535 messages, so no
    # mid is reused.
    acked_mids: list[int] = []
    sent: dict[int, bytes] = {}
    pub = paho_client(client_id, clean=True)
    pub.on_publish = lambda _c, _u, mid, *rest: acked_mids.append(mid)
    pub.connect("127.0.0.1", port, 30)
    pub.loop_start()
    stop = threading.Event()

    def stream():
        i = 0
        while not stop.is_set() and i < 60000:
            payload = f"m{i}".encode()
            info = pub.publish("stream/x", payload, qos=1)
            sent[info.mid] = payload
            i += 1
            if i % 50 == 0:
                time.sleep(0.001)

    t = threading.Thread(target=stream, daemon=True)
    t.start()
    wait_until(lambda: len(acked_mids) >= acked_at_least, 30, f"{acked_at_least} acknowledged messages")
    broker.proc.kill()  # SIGKILL, mid-stream
    broker.proc.wait(10)
    stop.set()
    t.join(5)
    pub.loop_stop()
    return {sent[m] for m in list(acked_mids)}


@pytest.mark.parametrize("sync", ["always", "50"])
def test_sigkill_mid_stream_loses_no_acknowledged_qos1_message(tmp_path, sync):
    store = tmp_path / "store"
    store.mkdir()
    port = free_port()
    broker = start_on(tmp_path, port, store, f"persistence_sync {sync}\n")
    make_persistent_subscriber(port, "keeper", "stream/#", 1)
    r = subprocess.run(["mosquitto_pub", "-p", str(port), "-t", "state/x", "-m", "kept", "-r", "-q", "1"],
                       capture_output=True, timeout=10)
    assert r.returncode == 0
    acknowledged = stream_and_kill(broker, port, "streamer", 500)

    broker = start_on(tmp_path, port, store)
    try:
        got = collect(port, "keeper", "stream/#", 1)
        missing = acknowledged - set(got)
        assert not missing, f"{len(missing)} acknowledged messages lost, e.g. {sorted(missing)[:5]}"
        assert len(acknowledged) >= 500
        r = subprocess.run(["mosquitto_sub", "-p", str(port), "-t", "state/#", "-C", "1", "-W", "5"],
                           capture_output=True, text=True, timeout=10)
        assert r.stdout == "kept\n"
    finally:
        broker.stop()


def test_sigkill_with_the_subscriber_online_loses_no_acknowledged_message(tmp_path):
    """The persistent subscriber is online: the broker sends it QoS 1
    messages before they are durable and never writes those it acknowledges
    in time. After a SIGKILL mid-stream, every message the publisher saw
    acknowledged reached the subscriber, before the kill or after the
    restart."""
    store = tmp_path / "store"
    store.mkdir()
    port = free_port()
    broker = start_on(tmp_path, port, store)
    before: list[bytes] = []
    sub = paho_client("online-keeper", clean=False)
    subscribed = threading.Event()
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.on_message = lambda _c, _u, m: before.append(m.payload)
    sub.connect("127.0.0.1", port, 30)
    sub.loop_start()
    sub.subscribe("stream/#", 1)
    assert subscribed.wait(10)
    acknowledged = stream_and_kill(broker, port, "online-streamer", 2000)
    sub.loop_stop()
    assert before, "the subscriber got nothing while online"

    broker = start_on(tmp_path, port, store)
    try:
        after = collect(port, "online-keeper", "stream/#", 1)
        missing = acknowledged - set(before) - set(after)
        assert not missing, f"{len(missing)} acknowledged messages lost, e.g. {sorted(missing)[:5]}"
    finally:
        broker.stop()


def test_qos2_after_sigkill_is_exactly_once(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    port = free_port()
    broker = start_on(tmp_path, port, store)
    make_persistent_subscriber(port, "q2keeper", "q2/#", 2)

    total = 3000
    completed: set[int] = set()
    pub = paho_client("q2streamer", clean=False)
    pub.on_publish = lambda _c, _u, mid, *rest: completed.add(mid)
    pub.connect("127.0.0.1", port, 30)
    pub.loop_start()
    for i in range(total):
        pub.publish("q2/x", f"n{i}".encode(), qos=2)
        if len(completed) >= 400 and broker.alive():
            broker.proc.kill()
            broker.proc.wait(10)
    if broker.alive():
        wait_until(lambda: len(completed) >= 400, 30, "400 completed QoS 2 messages")
        broker.proc.kill()
        broker.proc.wait(10)
    pub.loop_stop()

    broker = start_on(tmp_path, port, store)
    try:
        # The same client resumes its session: paho resends what was not
        # completed (PUBLISH with DUP, or PUBREL).
        pub.reconnect()
        pub.loop_start()
        wait_until(lambda: len(completed) >= total, 60, f"all {total} QoS 2 messages completed")
        pub.disconnect()
        pub.loop_stop()
        got = collect(port, "q2keeper", "q2/#", 2)
        counts: dict[bytes, int] = {}
        for p in got:
            counts[p] = counts.get(p, 0) + 1
        dupes = {p: n for p, n in counts.items() if n > 1}
        assert not dupes, f"delivered more than once: {list(dupes.items())[:5]}"
        assert set(counts) == {f"n{i}".encode() for i in range(total)}
    finally:
        broker.stop()


def test_damaged_store_is_set_aside_and_the_broker_starts(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    port = free_port()
    broker = start_on(tmp_path, port, store)
    r = subprocess.run(["mosquitto_pub", "-p", str(port), "-t", "state/a", "-m", "first", "-r", "-q", "1"],
                       capture_output=True, timeout=10)
    assert r.returncode == 0
    broker.proc.kill()
    broker.proc.wait(10)
    db = store / "midge.db"
    data = bytearray(db.read_bytes())
    data[len(data) // 2] ^= 0xFF  # corruption in the middle of the journal
    db.write_bytes(bytes(data))
    broker = start_on(tmp_path, port, store)
    try:
        broker.wait_for_log(re.compile(r"Restored \d+ retained"), 10)
        assert broker.alive()
        assert re.search(r"Warning: persistence:", broker.log_text()), broker.log_text()
        assert list(store.glob("midge.db.corrupt-*")), "the damaged file was not kept aside"
        r = subprocess.run(["mosquitto_pub", "-p", str(port), "-t", "t", "-m", "x", "-q", "1"],
                           capture_output=True, timeout=10)
        assert r.returncode == 0
    finally:
        broker.stop()


def test_a_second_broker_on_the_same_store_is_refused(tmp_path):
    """Two brokers must not write one journal: the second refuses to start,
    says why, and the first keeps serving."""
    store = tmp_path / "store"
    store.mkdir()
    port = free_port()
    broker = start_on(tmp_path, port, store)
    try:
        other = tmp_path / "other"
        other.mkdir()
        conf = other / "second.conf"
        conf.write_text(f"listener {free_port()} 127.0.0.1\nallow_anonymous true\n"
                        f"persistence true\npersistence_location {store}/\n")
        r = subprocess.run([str(midge_bin()), "-c", str(conf)], capture_output=True, text=True, timeout=20)
        assert r.returncode != 0
        assert "held by another process" in r.stdout + r.stderr, r.stdout + r.stderr
        r = subprocess.run(["mosquitto_pub", "-p", str(port), "-t", "still/here", "-m", "x", "-q", "1"],
                           capture_output=True, timeout=10)
        assert r.returncode == 0
    finally:
        broker.stop()
