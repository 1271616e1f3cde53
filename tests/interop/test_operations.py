"""Running Midge the way the seed's operator runs Mosquitto (walkthrough steps
2-6): `midge -c CONF`, `-d` with a pid file, logging to a file (and syslog,
and the $SYS/broker/log topics) with Mosquitto's line formats, include_dir,
reload and log reopening on SIGHUP, the subscription dump on SIGUSR2,
several listeners (TCP, Unix socket, WebSockets), max_connections, and
`--test-config` with its `file:line: reason` errors and exit code 3.

Every configuration and every file the broker writes lives under tmp_path.
A daemon left running by a failed test is killed at teardown by its pid
(checked to be the midge binary first).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

import brokers
import opsupport
import pahocompat
import rawmqtt
from opsupport import ConfBroker, Endpoint, wait_file_line, wait_until
from pahocompat import MQTTv5, MQTTv31, MQTTv311

pytestmark = [
    pytest.mark.midge_only("starts the midge binary with its own configurations"),
    pytest.mark.skipif(not (shutil.which("mosquitto_pub") and shutil.which("mosquitto_sub")),
                       reason="mosquitto-clients not installed (scripts/setup-test-env.sh)"),
]

TIMEOUT = 10
EXIT_CONFIG = 3
CONNECT_LINE = r"New client connected from 127\.0\.0\.1:\d+ as {id} \(p{p}, c{c}, k{k}\)\."


# -- fixtures ---------------------------------------------------------------------

@pytest.fixture
def daemons():
    """pids of daemonized brokers; any still running at teardown is killed."""
    pids: list[int] = []
    yield pids
    midge = str(opsupport.midge_bin().resolve())
    for pid in pids:
        if opsupport.pid_alive(pid) and opsupport.pid_exe(pid).startswith(midge):
            opsupport.kill_pid(pid)


@pytest.fixture
def start(request):
    """Factory: start(conf_path, *extra_args, ready=regex) -> ConfBroker running in
    the foreground, stopped at teardown (its output shown if the test fails)."""
    made: list[ConfBroker] = []

    def make(conf: Path, *extra: str,
             ready: str = r"Opening ipv4 listen socket on port (\d+)\.") -> ConfBroker:
        b = ConfBroker(conf, *extra)
        made.append(b)
        request.node._midge_broker = b
        b.wait_ready(ready)
        return b

    yield make
    for b in made:
        alive = b.alive()
        code = b.stop()
        if not alive and code not in (0, None):
            pytest.fail(f"the broker died during the test (exit code {code})", pytrace=False)


@pytest.fixture
def clients():
    """Factory: clients(endpoint, transport="tcp", **kw) -> pahocompat.Client, closed at teardown."""
    made: list[pahocompat.Client] = []

    def make(endpoint, transport: str = "tcp", **kwargs) -> pahocompat.Client:
        c = opsupport.paho_client(endpoint, transport=transport, **kwargs)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


@pytest.fixture
def tools():
    made: list[opsupport.ToolSub] = []

    def make(*args: str) -> opsupport.ToolSub:
        s = opsupport.ToolSub(*args)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def simple_conf(tmp_path: Path, body: str = "", port: int | None = None,
                name: str = "midge.conf") -> tuple[Path, int]:
    """A configuration with one TCP listener on 127.0.0.1, anonymous access and
    every log line on stdout, plus `body`."""
    port = port or brokers.free_port()
    conf = tmp_path / name
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nlog_dest stdout\n" + body)
    return conf, port


# -- the seed's configuration, as a daemon -------------------------------------------

SEED_LOG_TYPES = ["error", "warning", "notice", "information", "subscribe", "unsubscribe"]


def seed_conf(tmp_path: Path, port: int) -> dict:
    """Walkthrough step 5 with every path under tmp_path."""
    confd = tmp_path / "conf.d"
    confd.mkdir()
    (confd / "listener.conf").write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    store = tmp_path / "lib"
    store.mkdir()
    paths = dict(conf=tmp_path / "mosquitto.conf", pid=tmp_path / "mosquitto.pid",
                 log=tmp_path / "mosquitto.log", confd=confd, store=store)
    paths["conf"].write_text(
        "# Place your local configuration in /etc/mosquitto/conf.d/\n"
        f"pid_file {paths['pid']}\n"
        "\n"
        "persistence true\n"
        f"persistence_location {store}/\n"
        "\n"
        "log_dest syslog\n"
        f"log_dest file {paths['log']}\n"
        + "".join(f"log_type {t}\n" for t in SEED_LOG_TYPES)
        + "#log_type debug\n#log_type websockets\n#log_type all\n#log_type none\n"
        "connection_messages true\n"
        "log_timestamp true\n"
        "\n"
        f"include_dir {confd}\n")
    return paths


def test_seed_configuration_as_daemon(tmp_path, daemons, clients, tools):
    port = brokers.free_port()
    paths = seed_conf(tmp_path, port)
    r = opsupport.run_midge("-c", str(paths["conf"]), "-d", timeout=TIMEOUT)
    assert r.returncode == 0, f"midge -d exited {r.returncode}: {r.stderr}"

    # the pid file names the daemon, which is not the process we started
    pid_text = wait_until(lambda: paths["pid"].exists() and paths["pid"].read_text(),
                          TIMEOUT, "the pid file")
    assert re.fullmatch(r"\d+\n?", pid_text), f"pid file content {pid_text!r}"
    pid = int(pid_text)
    daemons.append(pid)
    assert opsupport.pid_alive(pid), "the pid in the pid file is not running"
    assert Path(opsupport.pid_exe(pid)).resolve() == opsupport.midge_bin().resolve()

    log = paths["log"]
    wait_file_line(log, rf"^\d+: Opening ipv4 listen socket on port {port}\.$")
    endpoint = Endpoint("127.0.0.1", port)

    # Python's paho (walkthrough step 7): keepalive 60, MQTT 3.1.1, clean session
    c = clients(endpoint, client_id="seed-python")
    c.connect()
    wait_file_line(log, r"^\d+: " + CONNECT_LINE.format(id="seed-python", p=2, c=1, k=60) + "$")

    # the shell (walkthrough step 6)
    s = tools("-h", "127.0.0.1", "-p", str(port), "-t", "sensors/temperature", "-q", "1",
              "-i", "seed-shell", "-C", "1", "-W", str(TIMEOUT)).subscribed()
    wait_file_line(log, r"^\d+: seed-shell 1 sensors/temperature$")
    opsupport.tool_pub("-h", "127.0.0.1", "-p", str(port), "-t", "sensors/temperature",
                       "-m", "32", "-q", "1")
    assert s.payload_lines() == ["32"]
    for line in opsupport.file_lines(log):
        assert re.match(r"^\d{9,}: ", line), f"log line without a timestamp: {line!r}"
        # log_type debug is commented out in the seed's file
        assert not re.search(r": (Received|Sending) [A-Z]+ (from|to) ", line), \
            f"debug line without log_type debug: {line!r}"

    # logrotate's way: move the file away, SIGHUP, a new file gets the next lines
    rotated = tmp_path / "mosquitto.log.1"
    os.rename(log, rotated)
    os.kill(pid, signal.SIGHUP)
    wait_until(log.exists, TIMEOUT, "a new log file after SIGHUP")
    c2 = clients(endpoint, client_id="after-rotation", protocol=MQTTv5)
    c2.connect()
    wait_file_line(log, r"^\d+: " + CONNECT_LINE.format(id="after-rotation", p=5, c=1, k=60) + "$")
    assert not any("after-rotation" in line for line in opsupport.file_lines(rotated)), \
        "the moved file still gets log lines after SIGHUP"
    assert opsupport.pid_alive(pid), "SIGHUP stopped the broker"
    c.publish("sensors/temperature", b"still serving", 1)  # the first client is still connected
    c.disconnect()
    c2.disconnect()

    # SIGTERM: exits, removes its pid file
    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not opsupport.pid_alive(pid), TIMEOUT, "the daemon to exit after SIGTERM")
    wait_until(lambda: not paths["pid"].exists(), 2, "the pid file to be removed")
    wait_file_line(log, r"terminating")


def test_seed_configuration_keeps_its_store(tmp_path):
    """The seed's persistence lines are accepted and the store is written
    where persistence_location says."""
    port = brokers.free_port()
    paths = seed_conf(tmp_path, port)
    r = opsupport.run_midge("--test-config", "-c", str(paths["conf"]), timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    r = opsupport.run_midge("-c", str(paths["conf"]), "-d", timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    pid = int(wait_until(lambda: paths["pid"].exists() and paths["pid"].read_text(), TIMEOUT, "the pid file"))
    try:
        wait_until(lambda: (paths["store"] / "midge.db").exists(), TIMEOUT, "the store file")
    finally:
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not opsupport.pid_alive(pid), TIMEOUT, "the daemon to exit")


# -- log formats ----------------------------------------------------------------------

def test_log_timestamp_format_iso(tmp_path, start, clients):
    conf, port = simple_conf(tmp_path, "log_type all\nlog_timestamp_format %Y-%m-%dT%H:%M:%S\n")
    b = start(conf)
    c = clients(Endpoint("127.0.0.1", port), client_id="iso-dated")
    c.connect()
    line = b.wait_line("as iso-dated")
    iso = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}: "
    assert re.fullmatch(iso + CONNECT_LINE.format(id="iso-dated", p=2, c=1, k=60), line), line
    for line in b.lines():
        assert re.match(iso, line), f"line without an ISO timestamp: {line!r}"
    c.disconnect()


@pytest.mark.parametrize("proto,tag,clean", [(MQTTv31, 1, True), (MQTTv311, 2, False),
                                             (MQTTv5, 5, True)], ids=["mqttv31", "mqttv311", "mqttv5"])
def test_log_timestamp_false_and_connect_line_format(tmp_path, start, clients, proto, tag, clean):
    conf, port = simple_conf(tmp_path, "log_type all\nlog_timestamp false\n")
    b = start(conf)
    kwargs = dict(client_id="no-stamp", protocol=proto, keepalive=33)
    if proto != MQTTv5:
        kwargs["clean_session"] = clean
    c = clients(Endpoint("127.0.0.1", port), **kwargs)
    if proto == MQTTv5:
        c.connect(clean_start=clean)
    else:
        c.connect()
    line = b.wait_line("as no-stamp")
    assert re.fullmatch(CONNECT_LINE.format(id="no-stamp", p=tag, c=int(clean), k=33), line), line
    for line in b.lines():
        assert not re.match(r"^\d{9,}: ", line), f"timestamp with log_timestamp false: {line!r}"
    c.disconnect()
    assert b.wait_line(r"^Client no-stamp disconnected\.$")


def test_connection_messages_false(tmp_path, start, clients):
    conf, port = simple_conf(tmp_path, "log_type all\nconnection_messages false\n")
    b = start(conf)
    endpoint = Endpoint("127.0.0.1", port)
    c = clients(endpoint, client_id="quiet-one")
    c.connect()
    c.subscribe("quiet/t", 0)
    b.wait_line(r"quiet-one 0 quiet/t$")
    c.disconnect()
    c2 = clients(endpoint, client_id="quiet-two")
    c2.connect()
    c2.subscribe("quiet/u", 1)
    b.wait_line(r"quiet-two 1 quiet/u$")  # logged after anything about quiet-one
    for line in b.lines():
        assert "New client connected" not in line and "disconnected" not in line, \
            f"connection message with connection_messages false: {line!r}"
    c2.disconnect()


def test_log_dest_topic(tmp_path, start, clients):
    conf, port = simple_conf(tmp_path, "log_dest topic\nlog_type all\n")
    start(conf)
    endpoint = Endpoint("127.0.0.1", port)
    watcher = clients(endpoint, client_id="log-watcher")
    watcher.connect()
    watcher.subscribe("$SYS/broker/log/#", 0)
    c = clients(endpoint, client_id="logged-by-topic")
    c.connect()
    deadline = time.monotonic() + TIMEOUT
    while True:
        m = watcher.expect_message(timeout=max(0.01, deadline - time.monotonic()))
        assert m.topic.startswith("$SYS/broker/log/"), m
        if b"as logged-by-topic" in m.payload:
            break
    assert m.topic == "$SYS/broker/log/N", f"a notice line on {m.topic}"
    assert re.search(CONNECT_LINE.format(id="logged-by-topic", p=2, c=1, k=60).encode(), m.payload), m
    c.disconnect()


def test_sys_topics_version_and_uptime(tmp_path, start, clients):
    conf, port = simple_conf(tmp_path, "sys_interval 1\n")
    start(conf)
    c = clients(Endpoint("127.0.0.1", port))
    c.connect()
    c.subscribe("$SYS/broker/version", 0)
    c.subscribe("$SYS/broker/uptime", 0)
    seen: dict[str, list[bytes]] = {}
    deadline = time.monotonic() + 6
    while len(seen.get("$SYS/broker/uptime", [])) < 2 or "$SYS/broker/version" not in seen:
        m = c.expect_message(timeout=max(0.01, deadline - time.monotonic()))
        seen.setdefault(m.topic, []).append(m.payload)
    assert re.fullmatch(rb"midge version \S+", seen["$SYS/broker/version"][0]), seen
    uptimes = [re.fullmatch(rb"(\d+) seconds", u) for u in seen["$SYS/broker/uptime"]]
    assert all(uptimes), seen
    assert int(uptimes[-1].group(1)) > int(uptimes[0].group(1)), f"uptime did not advance: {seen}"
    c.disconnect()


# -- listeners --------------------------------------------------------------------------

def _cross(clients, sub_end, pub_end, topic, sub_transport="tcp", pub_transport="tcp"):
    sub = clients(sub_end, transport=sub_transport)
    sub.connect()
    assert sub.subscribe(topic, 1) == [1]
    pub = clients(pub_end, transport=pub_transport)
    pub.connect()
    pub.publish(topic, b"across", 1)
    m = sub.expect_message()
    assert (m.topic, m.payload, m.qos) == (topic, b"across", 1)
    sub.disconnect()
    pub.disconnect()


def test_two_tcp_listeners(tmp_path, start, clients):
    p2 = brokers.free_port()
    conf, p1 = simple_conf(tmp_path, f"listener {p2} 127.0.0.1\n")
    b = start(conf)
    b.wait_line(rf"Opening ipv4 listen socket on port {p2}\.")
    e1, e2 = Endpoint("127.0.0.1", p1), Endpoint("127.0.0.1", p2)
    _cross(clients, e1, e2, "two/a")
    _cross(clients, e2, e1, "two/b")


def test_unix_socket_listener(tmp_path, start, clients, tools):
    sock = tmp_path / "midge.sock"
    conf, port = simple_conf(tmp_path, f"listener 0 {sock}\n")
    b = start(conf)
    b.wait_line(r"Opening unix listen socket")
    assert sock.is_socket()
    s = tools("--unix", str(sock), "-t", "unix/t", "-q", "1", "-C", "2", "-W", str(TIMEOUT)).subscribed()
    opsupport.tool_pub("--unix", str(sock), "-t", "unix/t", "-m", "over the socket", "-q", "1")
    tcp = clients(Endpoint("127.0.0.1", port))  # and across listeners
    tcp.connect()
    tcp.publish("unix/t", b"from tcp", 1)
    assert s.payload_lines() == ["over the socket", "from tcp"]
    tcp.disconnect()


@pytest.mark.parametrize("proto", [MQTTv311, MQTTv5], ids=["mqttv311", "mqttv5"])
def test_websockets_listener(tmp_path, start, clients, proto):
    ws_port = brokers.free_port()
    conf, port = simple_conf(tmp_path, f"listener {ws_port} 127.0.0.1\nprotocol websockets\n")
    b = start(conf)
    b.wait_line(rf"listen socket on port {ws_port}\.")
    ws = Endpoint("127.0.0.1", ws_port)
    c = clients(ws, transport="websockets", protocol=proto)
    c.connect()
    assert c.subscribe("ws/t", 1) == [1]
    c.publish("ws/t", b"over websockets", 1)
    m = c.expect_message()
    assert (m.topic, m.payload, m.qos) == ("ws/t", b"over websockets", 1)
    tcp = clients(Endpoint("127.0.0.1", port))
    tcp.connect()
    tcp.publish("ws/t", b"from tcp", 1)
    assert c.expect_message().payload == b"from tcp"
    c.disconnect()
    tcp.disconnect()
    # a plain MQTT client on the WebSockets port gets no CONNACK
    raw = rawmqtt.RawClient("127.0.0.1", ws_port)
    try:
        raw.send(rawmqtt.connect(client_id=b"not-ws"))
        assert all(p[0] != rawmqtt.CONNACK for p in raw.expect_closed(timeout=12))
    finally:
        raw.close()


def test_max_connections(tmp_path, start, clients):
    conf, port = simple_conf(tmp_path, "max_connections 2\nlog_type all\n")
    b = start(conf)
    e = Endpoint("127.0.0.1", port)
    first = clients(e, client_id="first")
    first.connect()
    second = clients(e, client_id="second")
    second.connect()
    third = rawmqtt.RawClient("127.0.0.1", port)
    try:
        try:
            third.send(rawmqtt.connect(client_id=b"third"))
        except OSError:
            pass  # already closed by the broker
        assert third.expect_closed() == [], "the third connection got an answer"
    finally:
        third.close()
    first.subscribe("mc/t", 1)
    second.publish("mc/t", b"the two still work", 1)
    assert first.expect_message().payload == b"the two still work"
    # a slot frees up when a client leaves
    second.disconnect()
    b.wait_line(r"Client second disconnected\.")
    fourth = rawmqtt.RawClient("127.0.0.1", port)
    try:
        deadline = time.monotonic() + 5
        while True:  # the slot is released when the connection task ends
            try:
                fourth.connect(client_id=b"fourth")
                break
            except (AssertionError, OSError):
                assert time.monotonic() < deadline, "no slot after a client left"
                fourth.close()
                time.sleep(0.1)
                fourth = rawmqtt.RawClient("127.0.0.1", port)
    finally:
        fourth.close()
    first.disconnect()


# -- --test-config ----------------------------------------------------------------------

def test_test_config_valid(tmp_path):
    paths = seed_conf(tmp_path, brokers.free_port())
    r = opsupport.run_midge("--test-config", "-c", str(paths["conf"]))
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert not paths["pid"].exists() and not paths["log"].exists(), "--test-config started something"


def test_include_dir_reads_only_conf_files(tmp_path):
    """Mosquitto reads the files ending in .conf, in alphabetical order."""
    confd = tmp_path / "conf.d"
    confd.mkdir()
    port = brokers.free_port()
    (confd / "10-listener.conf").write_text(f"listener {port} 127.0.0.1\n")
    (confd / "20-auth.conf").write_text("allow_anonymous true\n")
    (confd / "README").write_text("this is no configuration\n")
    (confd / "old.conf.dpkg-old").write_text("no_such_option 1\n")
    conf = tmp_path / "midge.conf"
    conf.write_text(f"include_dir {confd}\n")
    r = opsupport.run_midge("--test-config", "-c", str(conf))
    assert r.returncode == 0, (r.stdout, r.stderr)
    (confd / "30-bad.conf").write_text("\nno_such_option 1\n")
    r = opsupport.run_midge("--test-config", "-c", str(conf))
    assert r.returncode == EXIT_CONFIG and f"{confd / '30-bad.conf'}:2: " in r.stderr, r.stderr


def _err_unknown(tmp_path):
    conf, _ = simple_conf(tmp_path, "log_type all\nno_such_option 1\n")
    return conf, conf, 5, "no_such_option"


def _err_bad_value(tmp_path):
    conf, _ = simple_conf(tmp_path, "max_inflight_messages abc\n")
    return conf, conf, 4, "max_inflight_messages"


def _err_missing_file(tmp_path):
    missing = tmp_path / "nonexistent.conf"
    return missing, missing, None, None


def _err_include_dir_missing(tmp_path):
    conf, _ = simple_conf(tmp_path, f"include_dir {tmp_path}/no-such-dir\n")
    return conf, conf, 4, "no-such-dir"


def _err_include_dir_not_a_dir(tmp_path):
    (tmp_path / "plain-file").write_text("")
    conf, _ = simple_conf(tmp_path, f"include_dir {tmp_path}/plain-file\n")
    return conf, conf, 4, "plain-file"


def _err_include_dir_unreadable(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root can list a directory with mode 000")
    d = tmp_path / "locked"
    d.mkdir()
    (d / "a.conf").write_text("max_queued_messages 10\n")
    d.chmod(0)
    conf, _ = simple_conf(tmp_path, f"include_dir {d}\n")
    return conf, conf, 4, "locked"


def _err_in_included_file(tmp_path):
    confd = tmp_path / "conf.d"
    confd.mkdir()
    (confd / "a.conf").write_text("max_queued_messages 10\nmax_keepalive -5\n")
    conf, _ = simple_conf(tmp_path, f"include_dir {confd}\n")
    return conf, confd / "a.conf", 2, "max_keepalive"


def _err_duplicate_listener(tmp_path):
    port = brokers.free_port()
    conf, _ = simple_conf(tmp_path, f"listener {port} 127.0.0.1\n", port=port)
    return conf, conf, 4, None


def _err_not_yet_supported(tmp_path):
    conf, _ = simple_conf(tmp_path, "psk_file x\n")
    return conf, conf, 4, "psk_file"


def _err_not_yet_supported_inflight_bytes(tmp_path):
    conf, _ = simple_conf(tmp_path, "http_dir /tmp\n")
    return conf, conf, 4, "http_dir"


CONFIG_ERRORS = [
    pytest.param(_err_unknown, id="unknown-option"),
    pytest.param(_err_bad_value, id="bad-value"),
    pytest.param(_err_missing_file, id="missing-file"),
    pytest.param(_err_include_dir_missing, id="include-dir-missing"),
    pytest.param(_err_include_dir_not_a_dir, id="include-dir-not-a-directory"),
    pytest.param(_err_include_dir_unreadable, id="include-dir-unreadable"),
    pytest.param(_err_in_included_file, id="error-in-included-file"),
    pytest.param(_err_duplicate_listener, id="duplicate-listener"),
    pytest.param(_err_not_yet_supported, id="not-yet-supported-psk_file"),
    pytest.param(_err_not_yet_supported_inflight_bytes, id="not-yet-supported-http_dir"),
]


@pytest.mark.parametrize("mode", [["--test-config"], []], ids=["test-config", "start"])
@pytest.mark.parametrize("case", CONFIG_ERRORS)
def test_config_errors(tmp_path, case, mode):
    conf, at_fault, line, word = case(tmp_path)
    r = opsupport.run_midge(*mode, "-c", str(conf), timeout=TIMEOUT)
    assert r.returncode == EXIT_CONFIG, f"exit {r.returncode}; stderr {r.stderr!r}"
    where = f"{at_fault}:{line}: " if line is not None else f"{at_fault}"
    assert where in r.stderr, f"expected {where!r} in stderr {r.stderr!r}"
    reason = r.stderr.split(where, 1)[1].strip()
    assert reason, f"no reason after {where!r}: {r.stderr!r}"
    if word is not None:
        assert word in r.stderr, r.stderr
    assert "Configuration is valid" not in r.stdout
    assert "Opening" not in r.stdout + r.stderr, "a listener was opened with a bad configuration"


# -- signals ------------------------------------------------------------------------------

def test_sigusr2_logs_subscriptions(tmp_path, start, clients):
    conf, port = simple_conf(tmp_path, "log_type all\n")
    b = start(conf)
    c = clients(Endpoint("127.0.0.1", port), client_id="dump-me")
    c.connect()
    c.subscribe("dump/+/t", 1)
    c.subscribe("dump/#", 0)
    b.wait_line(r"dump-me 0 dump/#$")
    mark = len(b.lines())
    b.signal(signal.SIGUSR2)
    b.wait_line(r"dump-me.*dump/\+/t", after=mark)
    b.wait_line(r"dump-me.*dump/#", after=mark)
    c.publish("dump/x/t", b"still serving", 1)
    assert c.expect_message().payload == b"still serving"
    c.disconnect()


def _reload(b: ConfBroker) -> None:
    """SIGHUP, and a barrier: after "Reloading config." the SIGUSR2 dump is
    handled after the reload by the same router, so once its header is
    logged the new settings are in force."""
    mark = len(b.lines())
    b.signal(signal.SIGHUP)
    b.wait_line(r"Reloading config\.", after=mark)
    mark = len(b.lines())
    b.signal(signal.SIGUSR2)
    b.wait_line(r"Subscriptions", after=mark)
    assert not any(re.search(r"Error", line) for line in b.lines()[mark:]), b.log_text(last=20)


def _anonymous_connack(port: int) -> int:
    c = rawmqtt.RawClient("127.0.0.1", port)
    try:
        c.send(rawmqtt.connect(client_id=b"anon-probe"))
        p = c.read_packet()
        assert p is not None and p[0] == rawmqtt.CONNACK, p
        return p[2][1]
    finally:
        c.close()


def test_sighup_allow_anonymous_false(tmp_path, start, clients):
    port = brokers.free_port()
    confd = tmp_path / "conf.d"
    confd.mkdir()
    listener = confd / "listener.conf"
    listener.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    conf = tmp_path / "midge.conf"
    conf.write_text(f"log_dest stdout\nlog_type all\ninclude_dir {confd}\n")
    b = start(conf)
    early = clients(Endpoint("127.0.0.1", port), client_id="early")
    early.connect()
    assert _anonymous_connack(port) == 0

    listener.write_text(f"listener {port} 127.0.0.1\nallow_anonymous false\n")
    _reload(b)
    assert _anonymous_connack(port) == 5, "anonymous client accepted after reload with allow_anonymous false"
    late = clients(Endpoint("127.0.0.1", port), client_id="late")
    late.connect(expect_rc=5)
    assert b.alive()


def test_sighup_max_queued_messages(tmp_path, start, clients):
    conf, port = simple_conf(tmp_path, "log_type all\nmax_queued_messages 100\n")
    b = start(conf)
    e = Endpoint("127.0.0.1", port)
    pub = clients(e, client_id="mq-pub")
    pub.connect()

    def offline_round(n: int) -> list[bytes]:
        sub = clients(e, client_id="mq-sub", clean_session=False)
        sub.connect()
        sub.subscribe("mq/t", 1)
        mark = len(b.lines())
        sub.disconnect()
        # the broker has handled the DISCONNECT: what comes next is queued
        b.wait_line(r"Client mq-sub disconnected", after=mark)
        for i in range(n):
            pub.publish("mq/t", f"m{i}".encode(), 1)
        sub = clients(e, client_id="mq-sub", clean_session=False)
        assert sub.connect().session_present
        pub.publish("mq/t", b"sentinel", 1)
        got = [sub.expect_message().payload]
        while got[-1] != b"sentinel":
            got.append(sub.expect_message().payload)
        sub.disconnect()
        return got

    assert offline_round(5) == [b"m0", b"m1", b"m2", b"m3", b"m4", b"sentinel"]
    conf.write_text(conf.read_text().replace("max_queued_messages 100", "max_queued_messages 2"))
    _reload(b)
    assert offline_round(5) == [b"m0", b"m1", b"sentinel"], \
        "max_queued_messages 2 not applied by SIGHUP"
    pub.disconnect()



def test_mount_point_separates_listeners(tmp_path):
    inner = brokers.free_port()
    conf, outer = simple_conf(tmp_path, f"listener {inner} 127.0.0.1\nmount_point tenant1/\n")
    r = opsupport.run_midge("--test-config", "-c", str(conf), timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    proc = subprocess.Popen([str(opsupport.midge_bin()), "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: port_open(inner) and port_open(outer), TIMEOUT, "both listeners")
        seen_outside = subprocess.Popen(["mosquitto_sub", "-p", str(outer), "-t", "#", "-v", "-C", "1", "-W", "10"],
                                        stdout=subprocess.PIPE, text=True)
        seen_inside = subprocess.Popen(["mosquitto_sub", "-p", str(inner), "-t", "#", "-v", "-C", "1", "-W", "10"],
                                       stdout=subprocess.PIPE, text=True)
        time.sleep(0.5)
        assert subprocess.run(["mosquitto_pub", "-p", str(inner), "-t", "room/t", "-m", "21"],
                              timeout=10).returncode == 0
        assert seen_outside.communicate(timeout=15)[0] == "tenant1/room/t 21\n"
        assert seen_inside.communicate(timeout=15)[0] == "room/t 21\n"
    finally:
        proc.terminate()
        proc.wait(10)


def port_open(port: int) -> bool:
    import socket
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def test_debug_log_traces_packets(tmp_path):
    conf, port = simple_conf(tmp_path, "log_type debug\n")
    proc = subprocess.Popen([str(opsupport.midge_bin()), "-c", str(conf)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: port_open(port), TIMEOUT, "the listener")
        assert subprocess.run(["mosquitto_pub", "-p", str(port), "-i", "tracer", "-t", "a/b", "-m", "hi",
                               "-q", "1"], timeout=10).returncode == 0
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert re.search(r"Received PUBLISH from tracer \(d0, q1, r0, m1, 'a/b', \.\.\. \(2 bytes\)\)", out), out
    assert re.search(r"Sending PUBACK to tracer \(m1, rc0\)", out), out


def test_websockets_headers_size_is_enforced(tmp_path):
    """An upgrade request over websockets_headers_size is refused (HTTP
    431); the same request fits under the default."""
    import base64
    import socket
    small = brokers.free_port()
    default = brokers.free_port()
    conf, port = simple_conf(tmp_path, f"listener {small} 127.0.0.1\nprotocol websockets\n"
                             "websockets_headers_size 300\n"
                             f"listener {default} 127.0.0.1\nprotocol websockets\n")
    proc = subprocess.Popen([str(opsupport.midge_bin()), "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: port_open(small) and port_open(default), TIMEOUT, "the listeners")
        key = base64.b64encode(b"0123456789abcdef").decode()

        def upgrade(p: int) -> bytes:
            req = (f"GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                   f"Sec-WebSocket-Protocol: mqtt\r\nX-Padding: {'x' * 400}\r\n\r\n")
            with socket.create_connection(("127.0.0.1", p), timeout=5) as s:
                s.sendall(req.encode())
                return s.recv(200)

        assert upgrade(small).startswith(b"HTTP/1.1 431")
        assert upgrade(default).startswith(b"HTTP/1.1 101")
    finally:
        proc.terminate()
        proc.wait(10)


def test_response_information_is_given_to_clients_that_ask(tmp_path):
    import threading
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
    conf, port = simple_conf(tmp_path, "response_information replies/\n")
    proc = subprocess.Popen([str(opsupport.midge_bin()), "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: port_open(port), TIMEOUT, "the listener")
        got = {}
        done = threading.Event()

        def on_connect(_c, _u, _flags, _rc, properties=None, *rest):
            got["info"] = getattr(properties, "ResponseInformation", None)
            done.set()

        if hasattr(mqtt, "CallbackAPIVersion"):
            c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="asker", protocol=mqtt.MQTTv5)
        else:
            c = mqtt.Client(client_id="asker", protocol=mqtt.MQTTv5)
        c.on_connect = on_connect
        props = Properties(PacketTypes.CONNECT)
        props.RequestResponseInformation = 1
        c.connect("127.0.0.1", port, 30, properties=props)
        c.loop_start()
        try:
            assert done.wait(10)
            assert got["info"] == "replies/"
        finally:
            c.disconnect()
            c.loop_stop()
    finally:
        proc.terminate()
        proc.wait(10)


def test_bind_interface_loopback(tmp_path):
    """bind_interface lo: the listener serves on the loopback interface."""
    # Between choosing the port and the broker's bind, another socket may
    # take it (seen twice in ten runs of the suite): then choose again.
    for attempt in range(3):
        # The listener binds 0.0.0.0: a port free on 127.0.0.1 alone may not do.
        port = brokers.free_port("0.0.0.0")
        conf, _ = simple_conf(tmp_path, "", port=port)
        text = conf.read_text().replace(f"listener {port} 127.0.0.1\n", f"listener {port}\nbind_interface lo\n")
        conf.write_text(text)
        proc = subprocess.Popen([str(opsupport.midge_bin()), "-c", str(conf)], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        wait_until(lambda: port_open(port) or proc.poll() is not None, TIMEOUT, "the listener")
        if proc.poll() is None:
            break
        out = proc.stdout.read()
        if "Operation not permitted" in out:
            pytest.skip("SO_BINDTODEVICE needs CAP_NET_RAW here")
        if "Address already in use" not in out or attempt == 2:
            pytest.fail(out)
    try:
        r = subprocess.run(["mosquitto_pub", "-p", str(port), "-t", "t", "-m", "x"], timeout=10)
        assert r.returncode == 0
    finally:
        proc.terminate()
        proc.wait(10)


def test_worker_threads_several_threads_keep_every_flow_whole(tmp_path, start, clients):
    """worker_threads 4 (more threads than this machine's default): eight
    publishers at QoS 1 at once, one subscriber; every message arrives, each
    publisher's in order."""
    conf, port = simple_conf(tmp_path, "worker_threads 4\n")
    b = start(conf)
    tasks = Path(f"/proc/{b.proc.pid}/task")

    def workers() -> int:
        # A thread may be gone between listing and reading: count what reads.
        n = 0
        for t in tasks.iterdir():
            try:
                n += (t / "comm").read_text().startswith("tokio-rt-worker")
            except OSError:
                pass
        return n

    # tokio's blocking-pool threads carry the same name: at least the four.
    wait_until(lambda: workers() >= 4, TIMEOUT, "four worker threads")
    endpoint = Endpoint("127.0.0.1", port)
    sub = clients(endpoint, client_id="w-sub")
    sub.connect()
    assert sub.subscribe("w/#", 1) == [1]
    pubs = [clients(endpoint, client_id=f"w-pub{i}") for i in range(8)]
    for p in pubs:
        p.connect()
    count = 50

    def run(i: int) -> None:
        for n in range(count):
            pubs[i].publish(f"w/{i}", str(n).encode(), 1)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(pubs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    got: dict[str, list[int]] = {}
    for _ in range(count * len(pubs)):
        m = sub.expect_message()
        got.setdefault(m.topic, []).append(int(m.payload))
    assert got == {f"w/{i}": list(range(count)) for i in range(len(pubs))}
