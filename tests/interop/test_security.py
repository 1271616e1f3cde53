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
