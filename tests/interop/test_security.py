"""Passwords and access control, with files written by Debian's own tools
and clients we did not write (mosquitto_pub / mosquitto_sub, paho)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from brokers import Broker, BrokerStartError, free_port, midge_bin, broker_kind

pytestmark = pytest.mark.skipif(broker_kind() != "midge", reason="starts midge with its own config")


def start_with_config(tmp_path: Path, body: str) -> Broker:
    """midge -c CONF with a listener on a free loopback port."""
    for attempt in range(3):
        port = free_port()
        conf = tmp_path / f"midge-{attempt}.conf"
        conf.write_text(f"listener {port} 127.0.0.1\n{body}")
        broker = Broker([str(midge_bin()), "-c", str(conf), "-v"])
        try:
            broker.wait_for_log(re.compile(rf"Opening ipv4 listen socket on port {port}\."), 10)
        except BrokerStartError:
            broker.stop()
            continue
        broker.port = port
        return broker
    raise BrokerStartError("could not start midge on a free port")


def mosquitto_passwd(path: Path, user: str, password: str) -> None:
    subprocess.run(["/usr/bin/mosquitto_passwd", "-b", str(path), user, password],
                   check=True, capture_output=True, timeout=10)


def pub(broker: Broker, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), *args],
                          capture_output=True, text=True, timeout=15)


@pytest.fixture
def secured(tmp_path):
    pw = tmp_path / "passwd"
    pw.touch()
    mosquitto_passwd(pw, "alice", "wonderland")
    mosquitto_passwd(pw, "bob", "builder")
    broker = start_with_config(tmp_path, f"allow_anonymous false\npassword_file {pw}\n")
    yield broker, pw
    broker.stop()


def test_password_file_from_mosquitto_passwd_is_accepted(secured):
    broker, _ = secured
    r = pub(broker, "-u", "alice", "-P", "wonderland", "-t", "t", "-m", "x", "-q", "1")
    assert r.returncode == 0, r.stderr + broker.log_text(20)


@pytest.mark.parametrize("version", ["mqttv311", "mqttv5"])
def test_wrong_password_and_unknown_user_are_refused(secured, version):
    broker, _ = secured
    for user, password in [("alice", "nope"), ("mallory", "wonderland")]:
        r = pub(broker, "-V", version, "-u", user, "-P", password, "-t", "t", "-m", "x")
        assert r.returncode != 0
        assert "not authori" in r.stderr.lower(), r.stderr


def test_anonymous_is_refused(secured):
    broker, _ = secured
    r = pub(broker, "-t", "t", "-m", "x")
    assert r.returncode != 0
    assert "not authori" in r.stderr.lower(), r.stderr


def test_password_file_is_reread_on_sighup(secured):
    import signal
    broker, pw = secured
    mosquitto_passwd(pw, "carol", "singer")
    assert pub(broker, "-u", "carol", "-P", "singer", "-t", "t", "-m", "x").returncode != 0
    broker.proc.send_signal(signal.SIGHUP)
    broker.wait_for_log(re.compile(r"Reloading config"), 10)
    # The reload is applied by the router right after the log line.
    for _ in range(50):
        if pub(broker, "-u", "carol", "-P", "singer", "-t", "t", "-m", "x").returncode == 0:
            break
    else:
        pytest.fail("carol still refused after SIGHUP:\n" + broker.log_text(30))


def test_broken_password_file_is_a_config_error(tmp_path):
    pw = tmp_path / "passwd"
    pw.write_text("alice:$7$notbase64$$$\n")
    conf = tmp_path / "m.conf"
    conf.write_text(f"listener {free_port()} 127.0.0.1\npassword_file {pw}\n")
    r = subprocess.run([str(midge_bin()), "-c", str(conf)], capture_output=True, text=True, timeout=10)
    assert r.returncode == 3
    assert str(pw) in r.stderr


ACL = """\
# anonymous clients
topic read public/#

user alice
topic readwrite alice/#
topic write public/#
topic deny alice/private/#

user bob
topic read alice/#
topic read public/#

pattern readwrite devices/%u/#
"""


@pytest.fixture
def acl_broker(tmp_path):
    pw = tmp_path / "passwd"
    pw.touch()
    mosquitto_passwd(pw, "alice", "a")
    mosquitto_passwd(pw, "bob", "b")
    acl = tmp_path / "acl"
    acl.write_text(ACL)
    broker = start_with_config(tmp_path, f"allow_anonymous true\npassword_file {pw}\nacl_file {acl}\n")
    yield broker
    broker.stop()


def sub_once(broker: Broker, topic: str, *auth: str, wait: float = 3) -> subprocess.Popen:
    return subprocess.Popen(
        ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port), "-t", topic, "-v", "-W", str(wait), *auth],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_subscribed(broker: Broker, who: str, topic: str) -> None:
    broker.wait_for_log(re.compile(rf"{re.escape(who)} \d {re.escape(topic)}"), 10)


def test_acl_write_rules(acl_broker):
    alice = ("-u", "alice", "-P", "a")
    watcher = sub_once(acl_broker, "#", "-u", "bob", "-P", "b", "-i", "w1")
    wait_subscribed(acl_broker, "w1", "#")
    assert pub(acl_broker, *alice, "-t", "alice/x", "-m", "mine", "-q", "1").returncode == 0
    # Denied publishes are still acknowledged in 3.1.1, and go nowhere.
    assert pub(acl_broker, *alice, "-t", "bob/x", "-m", "not mine", "-q", "1").returncode == 0
    assert pub(acl_broker, "-t", "public/x", "-m", "anon may not write", "-q", "1").returncode == 0
    out, _ = watcher.communicate(timeout=15)
    assert out.splitlines() == ["alice/x mine"]


def test_acl_read_rules_and_patterns(acl_broker):
    alice = ("-u", "alice", "-P", "a")
    bob_sub = sub_once(acl_broker, "#", "-u", "bob", "-P", "b", "-i", "b1")
    anon_sub = sub_once(acl_broker, "#", "-i", "a1")
    dev = sub_once(acl_broker, "devices/#", "-u", "bob", "-P", "b", "-i", "b2")
    for who, t in [("b1", "#"), ("a1", "#"), ("b2", "devices/#")]:
        wait_subscribed(acl_broker, who, t)
    assert pub(acl_broker, *alice, "-t", "public/news", "-m", "hello").returncode == 0
    assert pub(acl_broker, *alice, "-t", "alice/diary", "-m", "dear").returncode == 0
    assert pub(acl_broker, "-u", "bob", "-P", "b", "-t", "devices/bob/t", "-m", "21").returncode == 0
    assert pub(acl_broker, "-u", "bob", "-P", "b", "-t", "devices/alice/t", "-m", "spoof").returncode == 0
    assert sorted(bob_sub.communicate(timeout=15)[0].splitlines()) == [
        "alice/diary dear", "devices/bob/t 21", "public/news hello"]
    assert anon_sub.communicate(timeout=15)[0].splitlines() == ["public/news hello"]
    # The %u pattern: bob reads and writes his own device tree only.
    assert dev.communicate(timeout=15)[0].splitlines() == ["devices/bob/t 21"]


def test_acl_deny_and_subscribe_refusal(acl_broker):
    alice = ("-u", "alice", "-P", "a")
    r = subprocess.run(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(acl_broker.port), *alice,
                        "-t", "secret/#", "-W", "3"], capture_output=True, text=True, timeout=15)
    assert "denied" in r.stderr.lower(), (r.returncode, r.stderr)
    r5 = subprocess.run(["mosquitto_sub", "-V", "5", "-h", "127.0.0.1", "-p", str(acl_broker.port), *alice,
                         "-t", "secret/#", "-W", "3"], capture_output=True, text=True, timeout=15)
    assert "denied" in r5.stderr.lower() or "not authori" in r5.stderr.lower(), r5.stderr
    # deny beats readwrite alice/#
    watcher = sub_once(acl_broker, "alice/#", *alice, "-i", "a2")
    wait_subscribed(acl_broker, "a2", "alice/#")
    assert pub(acl_broker, *alice, "-t", "alice/private/x", "-m", "hidden").returncode == 0
    assert pub(acl_broker, *alice, "-t", "alice/open", "-m", "shown").returncode == 0
    assert watcher.communicate(timeout=15)[0].splitlines() == ["alice/open shown"]


def test_retained_messages_obey_read_rules(acl_broker):
    alice = ("-u", "alice", "-P", "a")
    assert pub(acl_broker, *alice, "-t", "alice/status", "-m", "online", "-r", "-q", "1").returncode == 0
    assert pub(acl_broker, *alice, "-t", "public/motd", "-m", "welcome", "-r", "-q", "1").returncode == 0
    anon = subprocess.run(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(acl_broker.port), "-t", "#",
                           "-v", "-W", "2"], capture_output=True, text=True, timeout=15)
    assert anon.stdout.splitlines() == ["public/motd welcome"]


def test_user_name_without_password_file_is_refused_when_anonymous_is_off(tmp_path):
    # As Debian's Mosquitto 2.0.11: nothing to check the user name against.
    broker = start_with_config(tmp_path, "allow_anonymous false\n")
    try:
        r = pub(broker, "-u", "someone", "-P", "pw", "-t", "t", "-m", "x")
        assert r.returncode != 0
        assert "not authori" in r.stderr.lower(), r.stderr
    finally:
        broker.stop()
