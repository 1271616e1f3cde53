"""midge_pub, midge_sub and midge_rr against Debian's mosquitto_pub,
mosquitto_sub and mosquitto_rr (issue 3): replacing `mosquitto_` by `midge_`
in a script must change nothing else. Each test runs both implementations
with the same arguments, against our broker and against Debian's mosquitto
broker, and compares stdout byte for byte (JSON timestamps normalised),
stderr (program names normalised) and exit codes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

import brokers
import toolsupport as ts
from toolsupport import Running, normalise, same_program_names, tool

pytestmark = pytest.mark.skipif(not ts.have_mosquitto(),
                                reason="Debian's mosquitto and mosquitto-clients are needed")

IMPLS = ("midge", "mosquitto")


@pytest.fixture(params=["midge-broker", "mosquitto-broker"])
def any_broker(request, tmp_path):
    """Our broker, then Debian's: the tools must behave alike on both."""
    if request.param == "midge-broker":
        b = brokers._start_midge()
        yield b
        b.stop()
    else:
        m = ts.Mosquitto(tmp_path)
        yield m
        m.stop()


@pytest.fixture
def mosquitto_broker(tmp_path):
    m = ts.Mosquitto(tmp_path)
    yield m
    m.stop()


def conn(b) -> list[str]:
    return ["-h", b.host, "-p", str(b.port)]


def ref_pub(b, *args, stdin: bytes | None = None) -> None:
    """Publishes with Debian's mosquitto_pub (the reference publisher)."""
    code, out, err = ts.run(["mosquitto_pub", *conn(b), *args], stdin=stdin)
    assert code == 0, (args, err)


# Messages every subscriber comparison receives, in order: (mosquitto_pub
# arguments, stdin). The first is retained before the subscribers start; the
# others are published live once both have printed it.
LIVE = [
    (["-t", "t/a", "-m", "hello world", "-q", "0"], None),
    (["-t", "t/b", "-s", "-q", "1"], b'bin\x01\x7f\xff"\\\x00tail'),
    (["-t", "t/c", "-n", "-q", "1"], None),
    (["-t", "t/e", "-m", "line1\nline2\r\n", "-q", "0"], None),
    (["-t", "t/f", "-m", "retained live", "-r", "-q", "1"], None),
    (["-t", "t/g", "-m", "with props", "-q", "1", "-V", "5",
      "-D", "publish", "content-type", "text/plain",
      "-D", "publish", "user-property", "k1", "v1",
      "-D", "publish", "user-property", "k2", "v2",
      "-D", "publish", "correlation-data", "corr",
      "-D", "publish", "response-topic", "resp/x",
      "-D", "publish", "payload-format-indicator", "1",
      "-D", "publish", "message-expiry-interval", "3600"], None),
    # QoS 2 last: a subscriber prints it on PUBREL, which a later message
    # published at once could overtake.
    (["-t", "t/d", "-m", '{"a": [1, 2.5, "x", 1e3], "b": {"c": null, "d": "\\u00e9"}}', "-q", "2"], None),
]
TOTAL = 1 + len(LIVE)

SUB_CASES = {
    "plain": [],
    "verbose": ["-v"],
    "verbose-no-eol": ["-v", "-N"],
    "no-eol": ["-N"],
    "fields": ["-F", "%t|%p|%q|%r|%l|%m|%x|%X"],
    "widths": ["-F", r"%10t|%-10t|%5.2t|%08l|%-8l|%.2t|%3p|%-6p|%6x|%7X|%-p|%%|\t\\\e\a\v\r\0|@@"],
    "v5-properties": ["-V", "5", "-F", "%t %C|%D|%E|%F|%P|%R|%A|%S|%5F|%-4S|%03S",
                      "-D", "subscribe", "subscription-identifier", "7"],
    "json": ["-F", "%j"],
    "json-payload": ["-F", "%J"],
    "json-pretty": ["-F", "%j", "--pretty"],
    "json-payload-pretty": ["-F", "%J", "--pretty"],
    "json-v5": ["-V", "5", "-F", "%j"],
    "json-v5-pretty": ["-V", "5", "-F", "%J|", "--pretty"],
    "qos0": ["-q", "0", "-v"],
    # QoS 1: a QoS 2 flow's PUBREL may come before or after the next
    # message, so -d lines would depend on timing.
    "debug": ["-d", "-v", "-q", "1"],
    "debug-qos2": ["-d", "-v"],
    "filter-out": ["-v", "-T", "t/b", "-T", "t/+/x", "-T", "t/d"],
}


def sub_pair(b, args: list[str], count: int | None = TOTAL) -> list[Running]:
    extra = ["-C", str(count)] if count else []
    return [Running([*tool("sub", impl), *conn(b), "-t", "t/#", "-q", "2", "-W", "10",
                     *extra, *args]) for impl in IMPLS]


def wait_any_output(procs: list[Running]) -> None:
    deadline = time.monotonic() + ts.TIMEOUT
    for p in procs:
        while not (p.out or p.err):
            assert time.monotonic() < deadline, f"{p.argv} printed nothing: {p.finish(1)}"
            assert p.proc.poll() is None, f"{p.argv} exited: {p.finish(1)}"
            time.sleep(0.02)


def assert_same(results, normalise_json=True) -> None:
    (mc, mo, me), (rc, ro, re_) = results
    if normalise_json:
        mo, ro = normalise(mo), normalise(ro)
    assert mo == ro, f"stdout differs:\nmidge:     {mo!r}\nmosquitto: {ro!r}"
    assert same_program_names(me) == same_program_names(re_), \
        f"stderr differs:\nmidge:     {me!r}\nmosquitto: {re_!r}"
    assert mc == rc, f"exit code: midge {mc}, mosquitto {rc}"


@pytest.mark.parametrize("case", list(SUB_CASES))
def test_sub_output_is_mosquitto_subs(any_broker, case):
    b = any_broker
    args = SUB_CASES[case]
    ref_pub(b, "-t", "t/0", "-m", "ready", "-r", "-q", "1")
    filtered = {"filter-out": 2}.get(case, 0)
    procs = sub_pair(b, args, TOTAL - filtered)
    wait_any_output(procs)
    for pargs, stdin in LIVE:
        ref_pub(b, *pargs, stdin=stdin)
    results = [p.finish() for p in procs]
    assert results[0][0] == 0, results[0]
    assert_same(results)
    if case == "plain":
        assert results[0][1].startswith(b"ready\nhello world\n")


def test_sub_timeout_exits_27(any_broker):
    results = [Running([*tool("sub", impl), *conn(any_broker), "-t", "none/here", "-W", "1"]).finish()
               for impl in IMPLS]
    assert results[0] == (27, b"", b"Timed out\n")
    assert_same(results)


def test_sub_exit_after_subscribe_and_unsubscribe(any_broker):
    for args in (["-E", "-d"], ["-E", "-d", "-U", "t/x", "-t", "t/y"], ["-E", "-q", "1", "-d", "-V", "311"]):
        results = [ts.run([*tool("sub", impl), *conn(any_broker), "-t", "t/#", *args])
                   for impl in IMPLS]
        assert results[0][0] == 0, results[0]
        assert b"Subscribed (mid: 1)" in results[0][1]
        assert_same(results)


def test_sub_no_stale_retained(any_broker):
    """-R: retained messages are not printed, live ones are."""
    b = any_broker
    ref_pub(b, "-t", "t/0", "-m", "stale", "-r")
    for extra in ([], ["-V", "5"]):
        procs = [Running([*tool("sub", impl), *conn(b), "-t", "t/#", "-R", "-v", "-d", "-C", "2",
                          "-W", "10", *extra]) for impl in IMPLS]
        for p in procs:
            p.wait_output(b"Subscribed (mid: 1)")
        ref_pub(b, "-t", "t/1", "-m", "fresh")
        ref_pub(b, "-t", "t/2", "-m", "fresh2", "-r")
        results = [p.finish() for p in procs]
        assert b"stale" not in results[0][1].replace(b"'t/0'", b"")
        assert b"t/1 fresh\n" in results[0][1]
        if not extra:
            # 3.1.1: the client ids are both "(null)", so -d lines compare too.
            assert_same(results)
        else:
            assert [r[0] for r in results] == [0, 0]


def test_sub_retained_only(any_broker):
    b = any_broker
    ref_pub(b, "-t", "t/0", "-m", "kept", "-r")
    ref_pub(b, "-t", "t/1", "-m", "also kept", "-r", "-q", "1")
    procs = [Running([*tool("sub", impl), *conn(b), "-t", "t/#", "--retained-only", "-v", "-W", "10"])
             for impl in IMPLS]
    for p in procs:
        p.wait_output(b"also kept")
    ref_pub(b, "-t", "t/2", "-m", "live")
    results = [p.finish() for p in procs]
    # The order of retained messages is the broker's.
    assert results[0][0] == 0 and results[0][2] == b""
    assert sorted(results[0][1].splitlines()) == [b"t/0 kept", b"t/1 also kept"]
    assert_same(results)


def test_sub_retained_flag_and_count(any_broker):
    b = any_broker
    ref_pub(b, "-t", "t/0", "-m", "r0", "-r")
    ref_pub(b, "-t", "t/1", "-m", "r1", "-r", "-q", "2")
    results = [ts.run([*tool("sub", impl), *conn(b), "-t", "t/#", "-C", "2", "-q", "2",
                       "-F", "%t %r %q %p"]) for impl in IMPLS]
    assert results[0] == (0, b"t/0 1 0 r0\nt/1 1 2 r1\n", b"")
    assert_same(results)


def test_sub_signal_is_a_clean_exit(any_broker):
    ref_pub(any_broker, "-t", "t/0", "-m", "ready", "-r")
    for sig in (signal.SIGINT, signal.SIGTERM):
        procs = [Running([*tool("sub", impl), *conn(any_broker), "-t", "t/#", "-v"]) for impl in IMPLS]
        for p in procs:
            p.wait_output(b"ready")
            p.proc.send_signal(sig)
        results = [p.finish() for p in procs]
        assert results[0] == (0, b"t/0 ready\n", b"")
        assert_same(results)


def test_sub_options_file(any_broker, tmp_path):
    """~/.config/midge_sub (here $XDG_CONFIG_HOME), like ~/.config/mosquitto_sub."""
    b = any_broker
    ref_pub(b, "-t", "o/1", "-m", "from file", "-r")
    lines = f"# options\n-p {b.port}\n-h {b.host}\n-v\n-F %t=%p\n"
    (tmp_path / "midge_sub").write_text(lines)
    (tmp_path / "mosquitto_sub").write_text(lines)
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path))
    results = [ts.run([*tool("sub", impl), "-t", "o/#", "-C", "1"], env=env) for impl in IMPLS]
    assert results[0] == (0, b"o/1=from file\n", b"")
    assert_same(results)


# --- midge_pub -------------------------------------------------------------

BINARY = b"line1\nline2\r\nnul\x00byte \xff\xfe end\n\n"


def pub_runs(b, tmp_path, prefix: str, impl: str) -> None:
    f = tmp_path / "payload.bin"
    f.write_bytes(BINARY)
    runs: list[tuple[list[str], bytes | None]] = [
        (["-t", f"{prefix}/m", "-m", "32", "-q", "1"], None),
        (["-t", f"{prefix}/f", "-f", str(f), "-q", "2"], None),
        (["-t", f"{prefix}/s", "-s"], BINARY),
        (["-t", f"{prefix}/n", "-n", "-q", "1"], None),
        (["-t", f"{prefix}/r", "-m", "kept", "-r", "-q", "1"], None),
        (["-t", f"{prefix}/l", "-l", "-q", "1"], b"one\n\ntwo\r\nthree"),
        (["-t", f"{prefix}/v31", "-m", "old", "-V", "31", "-q", "2"], None),
        (["-t", f"{prefix}/v311", "-m", "mid", "-V", "mqttv311"], None),
        (["-t", f"{prefix}/v5", "-m", "new", "-V", "5", "-q", "1", "-D", "publish", "user-property", "a", "b"], None),
        (["-t", f"{prefix}/rep", "-m", "again", "--repeat", "3", "--repeat-delay", "0.05"], None),
        (["-L", f"mqtt://{b.host}:{b.port}/{prefix}/url", "-m", "via url"], None),
    ]
    for args, stdin in runs:
        code, out, err = ts.run([*tool("pub", impl), *conn(b), *args], stdin=stdin)
        assert (code, out, err) == (0, b"", b""), (impl, args, code, out, err)


def test_pub_messages_arrive_byte_for_byte(any_broker, tmp_path):
    """The same publications by midge_pub and by mosquitto_pub reach a
    mosquitto_sub identically (payload bytes, QoS, retain, properties)."""
    b = any_broker
    seen = []
    for impl, prefix in zip(IMPLS, ("pa", "pb")):
        sub = Running(["stdbuf", "-o0", "mosquitto_sub", *conn(b), "-t", f"{prefix}/#", "-q", "2",
                       "-V", "5", "-d", "-C", "16", "-W", "10",
                       "-F", "%t q%q r%r %l %x %P"])
        sub.wait_output(b"Subscribed (mid: 1)")
        pub_runs(b, tmp_path, prefix, impl)
        code, out, err = sub.finish()
        assert code == 0, (impl, out, err)
        lines = [l for l in out.split(b"\n") if not l.startswith((b"Client ", b"Subscribed"))]
        seen.append([l.replace(prefix.encode() + b"/", b"P/") for l in lines])
    # A QoS 2 message is printed on PUBREL, which the next publisher's
    # messages can overtake: compare as sets, and the order of -l's lines.
    assert sorted(seen[0]) == sorted(seen[1])
    lines = [l for l in seen[0] if l.startswith(b"P/l ")]
    assert lines == [b"P/l q1 r0 3 6f6e65 ", b"P/l q1 r0 0  ", b"P/l q1 r0 4 74776f0d ",
                     b"P/l q1 r0 5 7468726565 "]
    assert b"P/f q2 r0 %d %s " % (len(BINARY), BINARY.hex().encode()) in seen[0]
    assert seen[0].count(b"P/rep q0 r0 5 616761696e ") == 3
    assert b"P/l q1 r0 0  " in seen[0]
    assert b"P/v5 q1 r0 3 6e6577 a:b" in seen[0]


@pytest.mark.parametrize("args", [
    ["-m", "x", "-q", "2"],
    ["-m", "x", "-q", "1", "--repeat", "2"],
    ["-n"],
    ["-m", "hello", "-r", "-q", "1", "-V", "31", "-i", "fixed-id"],
])
def test_pub_debug_lines_match(any_broker, args):
    results = [ts.run([*tool("pub", impl), *conn(any_broker), "-t", "d/x", "-d", *args])
               for impl in IMPLS]
    assert results[0][0] == 0
    assert b"sending PUBLISH" in results[0][1]
    assert_same(results)


def test_pub_line_mode_many_lines_qos1(any_broker):
    """-l with more lines than the in-flight window: all arrive, in order."""
    b = any_broker
    n = 100
    sub = Running(["stdbuf", "-o0", "mosquitto_sub", *conn(b), "-t", "lines", "-q", "1", "-d",
                   "-C", str(n), "-W", "10"])
    sub.wait_output(b"Subscribed (mid: 1)")
    data = b"".join(b"line %d\n" % i for i in range(n))
    code, out, err = ts.run([*tool("pub", "midge"), *conn(b), "-t", "lines", "-l", "-q", "1"], stdin=data)
    assert code == 0, err
    code, out, _ = sub.finish()
    got = [l for l in out.split(b"\n") if l.startswith(b"line ")]
    assert got == [b"line %d" % i for i in range(n)]


def test_will_is_published_when_the_tool_dies(any_broker):
    b = any_broker
    watcher = Running(["stdbuf", "-o0", "mosquitto_sub", *conn(b), "-t", "wills/#", "-v", "-d",
                       "-C", "1", "-W", "10"])
    watcher.wait_output(b"Subscribed (mid: 1)")
    victim = Running([*tool("sub", "midge"), *conn(b), "-t", "x", "-d", "--will-topic", "wills/me",
                      "--will-payload", "gone", "--will-qos", "1", "--will-retain"])
    victim.wait_output(b"Subscribed (mid: 1)")
    victim.proc.kill()
    victim.finish()
    code, out, _ = watcher.finish()
    assert code == 0
    assert b"wills/me gone\n" in out
    # --will-retain: a new subscriber gets it as retained.
    code, out, _ = ts.run(["mosquitto_sub", *conn(b), "-t", "wills/me", "-C", "1", "-F", "%r %p",
                           "-W", "5"])
    assert (code, out) == (0, b"1 gone\n")


# --- midge_rr ----------------------------------------------------------------

def responder(b, reply: str, ready: threading.Event, result: list) -> None:
    """Answers one request: reads its response topic and correlation data,
    and publishes `reply` there."""
    p = Running(["stdbuf", "-o0", "mosquitto_sub", *conn(b), "-t", "rr/req", "-V", "5", "-d",
                 "-C", "1", "-W", "10", "-F", "%R|%D|%p"])
    p.wait_output(b"Subscribed (mid: 1)")
    ready.set()
    code, out, _ = p.finish()
    line = [l for l in out.split(b"\n") if b"|" in l and not l.startswith(b"Client")][0]
    resp_topic, corr, payload = line.split(b"|")
    result.append((resp_topic, corr, payload))
    args = ["-t", resp_topic.decode(), "-m", reply, "-V", "5"]
    if corr:
        args += ["-D", "publish", "correlation-data", corr.decode()]
    ref_pub(b, *args)


@pytest.mark.parametrize("extra", [[], ["-v"], ["-F", "%t:%p:%D", "-D", "publish", "correlation-data", "c1"]])
def test_rr_round_trip(any_broker, extra):
    b = any_broker
    outputs = []
    for impl in IMPLS:
        ready = threading.Event()
        seen: list = []
        t = threading.Thread(target=responder, args=(b, "answer", ready, seen), daemon=True)
        t.start()
        assert ready.wait(ts.TIMEOUT)
        code, out, err = ts.run([*tool("rr", impl), *conn(b), "-t", "rr/req", "-e", "rr/resp",
                                 "-m", "question", "-W", "10", *extra])
        t.join(ts.TIMEOUT)
        assert seen and seen[0][0] == b"rr/resp" and seen[0][2] == b"question", seen
        outputs.append((code, out, err))
    assert outputs[0][0] == 0
    assert outputs[0][1] in (b"answer\n", b"rr/resp answer\n", b"rr/resp:answer:c1\n")
    assert_same(outputs)


def test_rr_timeout(any_broker):
    results = [ts.run([*tool("rr", impl), *conn(any_broker), "-t", "rr/nobody", "-e", "rr/none",
                       "-m", "q", "-W", "1"]) for impl in IMPLS]
    assert results[0] == (27, b"", b"Timed out\n")
    assert_same(results)


# --- bad input -----------------------------------------------------------------

BAD = [
    ("pub", ["-z"]),
    ("pub", ["-t"]),
    ("pub", ["-t", "a", "-m"]),
    ("pub", ["-t", "a", "-m", "a", "-m", "b"]),
    ("pub", ["-t", "x/#", "-m", "a"]),
    ("pub", ["-t", "a", "-m", "b", "-q", "3"]),
    ("pub", ["-t", "a", "-m", "b", "-p", "99999"]),
    ("pub", ["-t", "a", "-m", "b", "-c"]),
    ("pub", ["-t", "a", "-m", "b", "-V", "6"]),
    ("pub", ["-t", "a", "-m", "b", "-k", "2"]),
    ("pub", ["-t", "a", "-m", "b", "-D", "bogus", "user-property", "a", "b"]),
    ("pub", ["-t", "a", "-m", "b", "-D", "connect", "bogus", "1"]),
    ("pub", ["-t", "a", "-m", "b", "-D", "connect", "user-property", "1"]),
    ("pub", ["-t", "a", "-m", "b", "-D", "publish", "session-expiry-interval", "1"]),
    ("pub", ["-t", "a", "-m", "b", "--will-payload", "x"]),
    ("pub", ["-t", "a", "-f", "/nonexistent/file"]),
    ("pub", ["-t", "a", "-v", "-m", "b"]),
    ("pub", ["-L", "http://host/topic", "-m", "x"]),
    ("sub", []),
    ("sub", ["-t", "x/#/a"]),
    ("sub", ["-t", "a", "-F", "%z"]),
    ("sub", ["-t", "a", "-F", "%"]),
    ("sub", ["-t", "a", "-F", "\\q"]),
    ("sub", ["-t", "a", "-C", "0"]),
    ("sub", ["-t", "a", "-W", "0"]),
    ("sub", ["-t", "a", "-R", "--retained-only"]),
    ("sub", ["-t", "a", "-m", "x"]),
    ("sub", ["-U", "a"]),
    ("rr", ["-t", "a", "-m", "x"]),
    ("rr", ["-t", "a", "-e", "b/#", "-m", "x"]),
]


@pytest.mark.parametrize("name,args", BAD, ids=[f"{n}:{' '.join(a)}" for n, a in BAD])
def test_bad_input_is_refused_like_mosquitto(name, args):
    results = [ts.run([*tool(name, impl), *args]) for impl in IMPLS]
    (mc, mo, me), (rc, ro, re_) = results
    assert mc != 0
    assert me.startswith(b"Error") or me.startswith(b"\nError"), me
    assert same_program_names(me) == same_program_names(re_), (me, re_)
    assert mc == rc
    # The usage text printed for some errors differs (TLS options); it goes
    # to stdout for both or for neither.
    assert bool(mo) == bool(ro)


def test_help_exits_1_with_usage_on_stdout():
    for name in ("pub", "sub", "rr"):
        code, out, err = ts.run([*tool(name, "midge"), "--help"])
        assert code == 1 and err == b""
        assert out.startswith(f"midge_{name} is ".encode())
        assert b"Usage: midge_" in out


def test_unreachable_broker():
    port = brokers.free_port()
    for name, args in (("pub", ["-t", "a", "-m", "b"]), ("sub", ["-t", "a"]),
                       ("rr", ["-t", "a", "-e", "b", "-m", "c"])):
        results = [ts.run([*tool(name, impl), "-h", "127.0.0.1", "-p", str(port), *args])
                   for impl in IMPLS]
        assert results[0] == (1, b"", b"Error: Connection refused\n"), (name, results[0])
        assert_same(results)


def test_tls_options_are_refused_clearly():
    code, out, err = ts.run([*tool("pub", "midge"), "-t", "a", "-m", "b", "--cafile", "/etc/ssl/x.pem"])
    assert code == 1 and out == b""
    assert err.count(b"\n") == 1 and b"TLS" in err and b"--cafile" in err


def test_refused_by_the_broker(tmp_path):
    """CONNACK refusals: the same message and exit code (the return code)."""
    m = ts.Mosquitto(tmp_path, anonymous=False)
    try:
        for name, args in (("pub", ["-t", "a", "-m", "b"]), ("sub", ["-t", "a"]),
                           ("rr", ["-t", "a", "-e", "b", "-m", "c"])):
            for version in ("311", "5"):
                results = [ts.run([*tool(name, impl), *conn(m), "-V", version, *args])
                           for impl in IMPLS]
                assert results[0][0] in (5, 135), (name, version, results[0])
                assert results[0][2].startswith(b"Connection error: ")
                assert_same(results)
    finally:
        m.stop()


def test_unix_socket_transport(tmp_path):
    # mosquitto drops root for its own user, which must be able to create
    # the socket: a world-writable directory outside pytest's private one.
    sockdir = Path(tempfile.mkdtemp(prefix="midge-tools-"))
    sockdir.chmod(0o777)
    sock = sockdir / "mosquitto.sock"
    m = ts.Mosquitto(tmp_path, unix_socket=sock)
    try:
        deadline = time.monotonic() + ts.TIMEOUT
        while not sock.exists():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        code, out, err = ts.run([*tool("pub", "midge"), "--unix", str(sock), "-t", "u/1",
                                 "-m", "over unix", "-r", "-q", "1"])
        assert code == 0, err
        code, out, err = ts.run([*tool("sub", "midge"), "--unix", str(sock), "-t", "u/#", "-C", "1", "-v"])
        assert (code, out) == (0, b"u/1 over unix\n"), err
    finally:
        m.stop()
        shutil.rmtree(sockdir, ignore_errors=True)
