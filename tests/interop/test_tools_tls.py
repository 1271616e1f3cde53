"""midge_pub / midge_sub / midge_rr over TLS (--cafile, --capath, --cert/--key,
--insecure, --tls-version, --tls-use-os-certs, mqtts://, port 8883), against
midge's TLS listeners and Debian's /usr/sbin/mosquitto with the same
certificates, each outcome compared with Debian's mosquitto_pub/sub/rr.

Where libmosquitto races (a failed handshake is reported by its connect call
or by its loop, depending on timing), the test accepts either of its answers
and checks that midge gives the usual one."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest

import brokers
import toolsupport as ts
from test_security import start_with_config
from test_tls import make_ca, make_cert, openssl
from toolsupport import Running, same_program_names, tool

pytestmark = pytest.mark.skipif(not ts.have_mosquitto(), reason="needs Debian's mosquitto")

IMPLS = ("midge", "mosquitto")
UNABLE = b"Unable to connect (A TLS error occurred.).\n"
# What mosquitto prints when its loop, not its connect call, sees the failure.
TLS_ERROR = b"Error: A TLS error occurred.\n"
MOSQUITTO_HANDSHAKE_FAILURES = {(1, UNABLE), (8, TLS_ERROR)}


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("tools-pki")
    make_ca(d, "ca")
    make_cert(d, "ca", "server", "localhost", server=True)
    make_cert(d, "ca", "alice", "alice", server=False)
    make_ca(d, "otherca")
    # A name the tools are not asked for.
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=wrong.example",
            "-keyout", "wrong.key", "-out", "wrong.csr", cwd=d)
    (d / "wrong.ext").write_text("subjectAltName=DNS:wrong.example\n")
    openssl("x509", "-req", "-in", "wrong.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "wrong.ext", "-out", "wrong.pem", cwd=d)
    # No subjectAltName: libmosquitto then checks the Common Name.
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
            "-keyout", "cn.key", "-out", "cn.csr", cwd=d)
    (d / "cn.ext").write_text("basicConstraints=CA:FALSE\n")
    openssl("x509", "-req", "-in", "cn.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "cn.ext", "-out", "cn.pem", cwd=d)
    openssl("pkey", "-in", "alice.key", "-aes256", "-passout", "pass:secret",
            "-out", "alice-enc.key", cwd=d)
    # A capath as c_rehash makes it, and one with the same file unhashed.
    h = subprocess.run(["openssl", "x509", "-hash", "-noout", "-in", str(d / "ca.pem")],
                       capture_output=True, text=True, check=True, timeout=30).stdout.strip()
    (d / "capath").mkdir()
    (d / "capath" / f"{h}.0").write_bytes((d / "ca.pem").read_bytes())
    (d / "unhashed").mkdir()
    (d / "unhashed" / "ca.pem").write_bytes((d / "ca.pem").read_bytes())
    return d


def listener_lines(pki: Path, cert: str, require: bool = False) -> str:
    text = (f"certfile {pki / (cert + '.pem')}\nkeyfile {pki / (cert + '.key')}\n"
            f"cafile {pki / 'ca.pem'}\n")
    return text + ("require_certificate true\n" if require else "")


class TlsBroker:
    """midge or Debian's mosquitto with four TLS listeners: `main` (the
    server certificate), `req` (a client certificate required), `wrong` (a
    certificate for another name) and `cn` (a Common Name, no SAN)."""

    def __init__(self, kind: str, tmp_path: Path, pki: Path):
        self.kind = kind
        self.ports = {"req": brokers.free_port(), "wrong": brokers.free_port(),
                      "cn": brokers.free_port()}
        first = listener_lines(pki, "server") + "allow_anonymous true\n"
        rest = "".join(f"listener {port} 127.0.0.1\n"
                       + listener_lines(pki, {"req": "server", "wrong": "wrong", "cn": "cn"}[name],
                                        require=name == "req")
                       for name, port in self.ports.items())
        if kind == "midge":
            self.proc = start_with_config(tmp_path, first + rest)
            self.ports["main"] = self.proc.port
        else:
            # Run as root, mosquitto would become the mosquitto user, who
            # cannot read pytest's private directories.
            user = "user root\n" if os.geteuid() == 0 else ""
            self.proc = ts.Mosquitto(tmp_path, extra=listener_lines(pki, "server") + rest + user)
            self.ports["main"] = self.proc.port
        for port in self.ports.values():
            assert ts.wait_port("127.0.0.1", port, self.proc.proc), f"{kind}: port {port}"

    def stop(self) -> None:
        self.proc.stop()


@pytest.fixture(params=["midge-broker", "mosquitto-broker"])
def tls_broker(request, tmp_path, pki):
    kind = request.param.split("-")[0]
    if kind == "midge" and brokers.broker_kind() != "midge":
        pytest.skip("starts midge with its own config")
    b = TlsBroker(kind, tmp_path, pki)
    yield b
    b.stop()


def at(b: TlsBroker, listener: str = "main", host: str = "127.0.0.1") -> list[str]:
    return ["-h", host, "-p", str(b.ports[listener])]


def both(name: str, *args: str) -> list[tuple[int, bytes, bytes]]:
    """Runs midge_X then mosquitto_X with the same arguments."""
    return [ts.run([*tool(name, impl), *args]) for impl in IMPLS]


def outcome(r: tuple[int, bytes, bytes]) -> tuple[int, bytes]:
    return r[0], same_program_names(r[2])


PUB = ("-t", "tls/t", "-m", "hello", "-q", "1")
SUB = ("-t", "tls/t", "-C", "1", "-W", "3")
RR = ("-t", "tls/req", "-e", "tls/resp", "-m", "x", "-W", "1")


def test_publish_and_subscribe_over_tls(tls_broker, pki):
    ca = ["--cafile", str(pki / "ca.pem")]
    for sub_impl in IMPLS:
        sub = Running([*tool("sub", sub_impl), *at(tls_broker), *ca, "-t", "tls/t", "-q", "1",
                       "-C", "2", "-W", "10", "-d"])
        sub.wait_output(b"received SUBACK")
        # -h localhost and -h 127.0.0.1: the certificate names both.
        r = ts.run([*tool("pub", "midge"), *at(tls_broker, host="localhost"), *ca, *PUB])
        assert r == (0, b"", b""), r
        port = tls_broker.ports["main"]
        r = ts.run([*tool("pub", "midge"), "-L", f"mqtts://127.0.0.1:{port}/tls/t", *ca,
                    "-m", "again"])
        assert r == (0, b"", b""), r
        code, out, err = sub.finish()
        assert code == 0, err
        assert b"hello\n" in out and b"again\n" in out, out


def test_midge_sub_and_rr_over_tls(tls_broker, pki):
    ca = ["--cafile", str(pki / "ca.pem")]
    sub = Running([*tool("sub", "midge"), *at(tls_broker), *ca, "-t", "tls/t", "-C", "1",
                   "-W", "10", "-v", "-d"])
    sub.wait_output(b"received SUBACK")
    code, _, err = ts.run(["mosquitto_pub", *at(tls_broker), *ca, *PUB])
    assert code == 0, err
    code, out, err = sub.finish()
    assert code == 0 and b"\ntls/t hello\n" in out, (out, err)
    # No responder: both time out the same way once connected.
    results = both("rr", *at(tls_broker), *ca, *RR)
    assert results[0] == results[1] == (27, b"", b"Timed out\n"), results


def test_wrong_ca_fails_as_with_mosquitto(tls_broker, pki):
    other = ["--cafile", str(pki / "otherca.pem")]
    for name, args in (("pub", PUB), ("sub", SUB), ("rr", RR)):
        midge, mosq = both(name, *at(tls_broker), *other, *args)
        assert midge == (1, b"", UNABLE), (name, midge)
        assert outcome(mosq) in MOSQUITTO_HANDSHAKE_FAILURES, (name, mosq)
    # -d says why, as libmosquitto's log does.
    code, out, _ = ts.run([*tool("pub", "midge"), *at(tls_broker), *other, *PUB, "-d"])
    assert code == 1 and b"certificate verify failed" in out, out
    # The system's store does not know our CA either.
    for flags in (["--tls-use-os-certs"], ["-L", f"mqtts://127.0.0.1:{tls_broker.ports['main']}/t"]):
        midge, mosq = both("pub", *at(tls_broker), *flags, "-t", "t", "-m", "x")
        assert midge == (1, b"", UNABLE), (flags, midge)
        assert outcome(mosq) in MOSQUITTO_HANDSHAKE_FAILURES, (flags, mosq)


def test_insecure_skips_the_name_check_only(tls_broker, pki):
    ca = ["--cafile", str(pki / "ca.pem")]
    midge, mosq = both("pub", *at(tls_broker, "wrong"), *ca, *PUB)
    assert midge == (1, b"", UNABLE), midge
    assert outcome(mosq) in MOSQUITTO_HANDSHAKE_FAILURES, mosq
    code, out, _ = ts.run([*tool("pub", "midge"), *at(tls_broker, "wrong"), *ca, *PUB, "-d"])
    assert b"Error: host name verification failed." in out, out
    results = both("pub", *at(tls_broker, "wrong"), *ca, "--insecure", *PUB)
    assert results[0] == results[1] == (0, b"", b""), results
    # The chain is still checked.
    midge, mosq = both("pub", *at(tls_broker, "wrong"), "--cafile", str(pki / "otherca.pem"),
                       "--insecure", *PUB)
    assert midge == (1, b"", UNABLE), midge
    assert outcome(mosq) in MOSQUITTO_HANDSHAKE_FAILURES, mosq


def test_common_name_is_checked_without_subject_alt_name(tls_broker, pki):
    ca = ["--cafile", str(pki / "ca.pem")]
    results = both("pub", *at(tls_broker, "cn", host="localhost"), *ca, *PUB)
    assert results[0] == results[1] == (0, b"", b""), results
    midge, mosq = both("pub", *at(tls_broker, "cn"), *ca, *PUB)
    assert midge == (1, b"", UNABLE), midge
    assert outcome(mosq) in MOSQUITTO_HANDSHAKE_FAILURES, mosq


def test_client_certificate(tls_broker, pki):
    ca = ["--cafile", str(pki / "ca.pem")]
    cert = ["--cert", str(pki / "alice.pem"), "--key", str(pki / "alice.key")]
    results = both("pub", *at(tls_broker, "req"), *ca, *cert, *PUB)
    assert results[0] == results[1] == (0, b"", b""), results
    sub = Running([*tool("sub", "midge"), *at(tls_broker, "req"), *ca, *cert, "-t", "tls/t",
                   "-C", "1", "-W", "10", "-d"])
    sub.wait_output(b"received SUBACK")
    assert ts.run([*tool("pub", "midge"), *at(tls_broker, "req"), *ca, *cert, *PUB])[0] == 0
    code, out, err = sub.finish()
    assert code == 0 and b"\nhello\n" in out, (out, err)
    # Without one the server ends the session: no tool gets through.
    midge, mosq = both("pub", *at(tls_broker, "req"), *ca, *PUB)
    assert midge[0] != 0 and mosq[0] != 0, (midge, mosq)
    if tls_broker.kind == "mosquitto":
        # Its alert after the TLS 1.3 handshake: EPROTO, as mosquitto_pub
        # says (now and then it sees the connection closed first).
        assert outcome(midge) == (1, b"Error: Protocol error\n"), midge
        assert outcome(mosq) in {(1, b"Error: Protocol error\n"),
                                 (7, b"Error: The connection was lost.\n")}, mosq
    # A key protected by a password: a clear refusal, no prompt.
    enc = ["--cert", str(pki / "alice.pem"), "--key", str(pki / "alice-enc.key")]
    r = subprocess.run([*tool("pub", "midge"), *at(tls_broker, "req"), *ca, *enc, *PUB],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=15,
                       start_new_session=True)
    assert r.returncode == 1 and r.stdout == b"", r
    assert b"protected by a password" in r.stderr and r.stderr.endswith(UNABLE), r.stderr
    # The certificate goes with --cafile/--capath only, as in mosquitto.
    r = ts.run([*tool("pub", "midge"), *at(tls_broker, "req"), "--tls-use-os-certs", *cert, *PUB])
    assert r == (1, b"", UNABLE), r


def test_capath_takes_hashed_certificates(tls_broker, pki):
    results = both("pub", *at(tls_broker), "--capath", str(pki / "capath"), *PUB)
    assert results[0] == results[1] == (0, b"", b""), results
    midge, mosq = both("pub", *at(tls_broker), "--capath", str(pki / "unhashed"), *PUB)
    assert midge == (1, b"", UNABLE), midge
    assert outcome(mosq) in MOSQUITTO_HANDSHAKE_FAILURES, mosq


class TlsProxy:
    """A TLS front (Python's ssl, so OpenSSL) to a plain broker, with the
    TLS versions it accepts limited; it records the versions negotiated."""

    def __init__(self, pki: Path, backend: int, maximum: ssl.TLSVersion):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(pki / "server.pem", pki / "server.key")
        self.ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        self.ctx.maximum_version = maximum
        self.backend = backend
        self.versions: list[str] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(10)
            tls = self.ctx.wrap_socket(conn, server_side=True)
            self.versions.append(tls.version() or "")
            back = socket.create_connection(("127.0.0.1", self.backend), timeout=10)
        except (OSError, ssl.SSLError):
            conn.close()
            return

        def pump(src, dst):
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except (OSError, ssl.SSLError):
                pass
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        threading.Thread(target=pump, args=(back, tls), daemon=True).start()
        pump(tls, back)

    def close(self) -> None:
        self.sock.close()


def test_tls_version_is_a_minimum(tmp_path, pki):
    plain = ts.Mosquitto(tmp_path)
    tls12 = TlsProxy(pki, plain.port, ssl.TLSVersion.TLSv1_2)
    tls13 = TlsProxy(pki, plain.port, ssl.TLSVersion.TLSv1_3)
    ca = ["--cafile", str(pki / "ca.pem")]
    try:
        for version in ([], ["--tls-version", "tlsv1.2"], ["--tls-version", "tlsv1.1"]):
            results = both("pub", "-h", "127.0.0.1", "-p", str(tls12.port), *ca, *version, *PUB)
            assert results[0] == results[1] == (0, b"", b""), (version, results)
        assert set(tls12.versions) == {"TLSv1.2"}, tls12.versions
        midge, mosq = both("pub", "-h", "127.0.0.1", "-p", str(tls12.port), *ca,
                           "--tls-version", "tlsv1.3", *PUB)
        assert midge[0] != 0 and mosq[0] != 0, (midge, mosq)
        assert outcome(midge) in MOSQUITTO_HANDSHAKE_FAILURES, midge
        assert outcome(mosq) in MOSQUITTO_HANDSHAKE_FAILURES, mosq
        r = ts.run([*tool("pub", "midge"), "-h", "127.0.0.1", "-p", str(tls13.port), *ca,
                    "--tls-version", "tlsv1.3", *PUB])
        assert r == (0, b"", b""), r
        r = ts.run([*tool("pub", "midge"), "-h", "127.0.0.1", "-p", str(tls13.port), *ca, *PUB])
        assert r == (0, b"", b""), r
        assert set(tls13.versions) == {"TLSv1.3"}, tls13.versions
        bad = b"Error: Problem setting TLS options, check the options are valid.\n"
        for extra in (ca, []):
            results = both("pub", "-h", "127.0.0.1", "-p", str(tls13.port), *extra,
                           "--tls-version", "tlsv1", *PUB)
            assert results[0] == results[1] == (1, b"", bad), results
    finally:
        tls12.close()
        tls13.close()
        plain.stop()


def first_bytes_at_8883(argv: list[str]) -> tuple[bytes, tuple[int, bytes, bytes]]:
    """Runs a tool while a listener on 127.0.0.1:8883 records what arrives
    first and hangs up; skips when the port is taken."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        srv.bind(("127.0.0.1", 8883))
    except OSError:
        srv.close()
        pytest.skip("port 8883 is in use")
    srv.listen(1)
    srv.settimeout(10)
    got: list[bytes] = []

    def serve():
        try:
            conn, _ = srv.accept()
            conn.settimeout(5)
            got.append(conn.recv(1))
            conn.close()
        except OSError:
            got.append(b"")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        r = ts.run(argv)
    finally:
        t.join(10)
        srv.close()
    return (got[0] if got else b""), r


def test_port_8883_by_default_and_tls_on_it(pki):
    ca = ["--cafile", str(pki / "ca.pem")]
    for impl in IMPLS:
        # --cafile without -p: port 8883; -p 8883 alone: TLS with the
        # system's CAs. A TLS handshake record starts with 0x16.
        for args in (ca, ["-p", "8883"], ["-L", "mqtts://127.0.0.1/t"]):
            first, r = first_bytes_at_8883([*tool("pub", impl), "-h", "127.0.0.1", *args,
                                            "-t", "t", "-m", "x"])
            assert first == b"\x16", (impl, args, first, r)
            if impl == "midge":
                assert (r[0], r[2]) == (8, TLS_ERROR), (args, r)
            else:
                assert (r[0], r[2]) in MOSQUITTO_HANDSHAKE_FAILURES, (args, r)


def test_option_errors_match_mosquitto(pki):
    missing = both("pub", "-t", "t", "-m", "x", "--cafile", "/nonexistent/ca.pem")
    for code, out, err in missing:
        assert code == 1 and out == b""
        assert err.startswith(b"Error: Problem setting TLS options: File not found"), err
    missing_key = both("pub", "-t", "t", "-m", "x", "--cafile", str(pki / "ca.pem"),
                       "--cert", str(pki / "alice.pem"), "--key", "/nonexistent/k.key")
    assert [r[0] for r in missing_key] == [1, 1], missing_key
    for args in (["--cert", str(pki / "alice.pem")], ["--key", str(pki / "alice.key")],
                 ["--cafile"], ["--capath"], ["--tls-version"]):
        results = both("pub", "-t", "t", "-m", "x", *args)
        assert outcome(results[0]) == outcome(results[1]), (args, results)
        assert results[0][0] == 1
    # Still refused, with a line that says what.
    for flag in ("--psk", "--proxy", "--ciphers"):
        code, out, err = ts.run([*tool("pub", "midge"), "-t", "t", "-m", "x", flag, "v"])
        assert code == 1 and out == b"" and flag.encode() in err and err.count(b"\n") == 1, err
