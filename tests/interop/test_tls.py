"""TLS listeners (rustls) with certificates made by openssl for the test,
driven by Debian's mosquitto_pub/mosquitto_sub and paho."""

from __future__ import annotations

import re
import signal
import ssl
import subprocess
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from brokers import Broker, broker_kind
from test_security import start_with_config

pytestmark = pytest.mark.skipif(broker_kind() != "midge", reason="starts midge with its own config")


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def make_ca(d: Path, name: str) -> None:
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.pem", cwd=d)


def make_cert(d: Path, ca: str, name: str, cn: str, server: bool) -> None:
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/O=Midge Tests/CN={cn}",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)
    ext = d / f"{name}.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n" if server
                   else "extendedKeyUsage=clientAuth\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", f"{name}.pem", cwd=d)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    make_ca(d, "ca")
    make_cert(d, "ca", "server", "localhost", server=True)
    make_cert(d, "ca", "alice", "alice", server=False)
    make_ca(d, "otherca")
    make_cert(d, "otherca", "server2", "localhost", server=True)
    return d


def tls_conf(pki: Path, extra: str = "") -> str:
    return (f"certfile {pki / 'server.pem'}\nkeyfile {pki / 'server.key'}\n"
            f"cafile {pki / 'ca.pem'}\nallow_anonymous true\n{extra}")


def pub(broker: Broker, pki: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "--cafile", str(pki / "ca.pem"),
         "-t", "tls/t", "-m", "hello", "-q", "1", *args],
        capture_output=True, text=True, timeout=15)


def test_tls_publish_and_subscribe(tmp_path, pki):
    broker = start_with_config(tmp_path, tls_conf(pki))
    try:
        sub = subprocess.Popen(
            ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port), "--cafile", str(pki / "ca.pem"),
             "-t", "tls/t", "-q", "1", "-C", "1", "-W", "10"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        broker.wait_for_log(re.compile(r" 1 tls/t"), 10)
        r = pub(broker, pki)
        assert r.returncode == 0, r.stderr
        out, err = sub.communicate(timeout=15)
        assert out == "hello\n", err
        # A plain-text client gets nowhere on a TLS port.
        plain = subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port),
                                "-t", "x", "-m", "x"], capture_output=True, text=True, timeout=15)
        assert plain.returncode != 0
    finally:
        broker.stop()


def test_require_certificate(tmp_path, pki):
    broker = start_with_config(tmp_path, tls_conf(pki, "require_certificate true\n"))
    try:
        assert pub(broker, pki).returncode != 0
        ok = pub(broker, pki, "--cert", str(pki / "alice.pem"), "--key", str(pki / "alice.key"))
        assert ok.returncode == 0, ok.stderr
    finally:
        broker.stop()


def test_identity_as_username(tmp_path, pki):
    conf = tls_conf(pki, "require_certificate true\nuse_identity_as_username true\n")
    conf = conf.replace("allow_anonymous true", "allow_anonymous false")
    broker = start_with_config(tmp_path, conf)
    try:
        ok = pub(broker, pki, "--cert", str(pki / "alice.pem"), "--key", str(pki / "alice.key"), "-i", "dev1")
        assert ok.returncode == 0, ok.stderr + broker.log_text(10)
        broker.wait_for_log(re.compile(r"as dev1 \(p2, c1, k\d+, u'alice'\)"), 10)
    finally:
        broker.stop()


def test_paho_over_tls_and_secure_websockets(tmp_path, pki):
    from test_security import free_port
    ws_port = free_port()
    conf = tls_conf(pki) + (f"listener {ws_port} 127.0.0.1\nprotocol websockets\n"
                            f"certfile {pki / 'server.pem'}\nkeyfile {pki / 'server.key'}\n")
    broker = start_with_config(tmp_path, conf)
    try:
        for transport, port in [("tcp", broker.port), ("websockets", ws_port)]:
            got = []
            c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"paho-{transport}",
                            transport=transport) if hasattr(mqtt, "CallbackAPIVersion") else \
                mqtt.Client(client_id=f"paho-{transport}", transport=transport)
            c.tls_set(ca_certs=str(pki / "ca.pem"))
            c.on_message = lambda _c, _u, m: got.append(m.payload)
            c.connect("127.0.0.1", port, 30)
            c.loop_start()
            try:
                r, _ = c.subscribe("wss/t", 1)
                deadline = time.time() + 10
                c.publish("wss/t", b"over " + transport.encode(), qos=1).wait_for_publish(10)
                while not got and time.time() < deadline:
                    time.sleep(0.05)
                assert got == [b"over " + transport.encode()], broker.log_text(20)
            finally:
                c.disconnect()
                c.loop_stop()
    finally:
        broker.stop()


def test_certificates_reloaded_on_sighup(tmp_path, pki):
    live = tmp_path / "live"
    live.mkdir()
    for f in ("server.pem", "server.key"):
        (live / f).write_bytes((pki / f).read_bytes())
    conf = (f"certfile {live / 'server.pem'}\nkeyfile {live / 'server.key'}\nallow_anonymous true\n")
    broker = start_with_config(tmp_path, conf)
    try:
        assert pub(broker, pki).returncode == 0
        # Renewed by another CA: after SIGHUP, clients must trust that one.
        (live / "server.pem").write_bytes((pki / "server2.pem").read_bytes())
        (live / "server.key").write_bytes((pki / "server2.key").read_bytes())
        broker.proc.send_signal(signal.SIGHUP)
        broker.wait_for_log(re.compile(r"Reloading config"), 10)
        other = ["--cafile", str(pki / "otherca.pem")]
        for _ in range(50):
            r = subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), *other,
                                "-t", "t", "-m", "x"], capture_output=True, text=True, timeout=15)
            if r.returncode == 0:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the renewed certificate is not served: " + r.stderr)
        assert pub(broker, pki).returncode != 0
    finally:
        broker.stop()


def test_encrypted_key_is_refused_with_a_clear_message(tmp_path, pki):
    openssl("pkey", "-in", "server.key", "-aes256", "-passout", "pass:secret", "-out",
            str(tmp_path / "enc.key"), cwd=pki)
    conf = tmp_path / "m.conf"
    from test_security import free_port
    conf.write_text(f"listener {free_port()} 127.0.0.1\ncertfile {pki / 'server.pem'}\n"
                    f"keyfile {tmp_path / 'enc.key'}\n")
    from brokers import midge_bin
    r = subprocess.run([str(midge_bin()), "-c", str(conf)], capture_output=True, text=True, timeout=10)
    assert r.returncode != 0
    assert "protected by a password" in r.stderr
