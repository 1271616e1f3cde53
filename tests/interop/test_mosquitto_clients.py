"""Debian's mosquitto_pub and mosquitto_sub against the broker (walkthrough
step 6: the shell tools the user already knows)."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import threading
import time

import pytest

pytestmark = pytest.mark.skipif(
    not (shutil.which("mosquitto_pub") and shutil.which("mosquitto_sub")),
    reason="mosquitto-clients not installed (scripts/setup-test-env.sh installs them)")

TIMEOUT = 10


def tool_args(broker, *args) -> list[str]:
    return ["-h", broker.host, "-p", str(broker.port), *args]


def pub(broker, *args, timeout=TIMEOUT) -> None:
    r = subprocess.run(["mosquitto_pub", *tool_args(broker, *args)], stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=timeout)
    assert r.returncode == 0, f"mosquitto_pub {args} exited {r.returncode}: {r.stderr!r}"


def sub_once(broker, *args, timeout=TIMEOUT) -> bytes:
    """mosquitto_sub ... -C 1: the bytes it printed for the one message."""
    r = subprocess.run(
        ["mosquitto_sub", *tool_args(broker, *args, "-C", "1", "-W", str(timeout))],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout + 5)
    assert r.returncode == 0, f"mosquitto_sub {args} exited {r.returncode}: {r.stderr!r}"
    return r.stdout


class Sub:
    """A mosquitto_sub running with -d, so we can tell when it has subscribed."""

    def __init__(self, broker, *args):
        # stdbuf: its -d lines are stdio-buffered when stdout is a pipe
        self.proc = subprocess.Popen(
            ["stdbuf", "-oL", "mosquitto_sub", *tool_args(broker, "-d", *args)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines: "queue.Queue[str | None]" = queue.Queue()
        self.all: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for raw in iter(self.proc.stdout.readline, b""):
            self.lines.put(raw.decode("utf-8", "replace").rstrip("\n"))
        self.lines.put(None)

    def wait_for(self, prefix: str, timeout=TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"mosquitto_sub did not print {prefix!r}; got {self.all}") from None
            if line is None:
                raise AssertionError(
                    f"mosquitto_sub exited ({self.proc.wait()}) before {prefix!r}; got {self.all} "
                    f"stderr {self.proc.stderr.read()!r}")
            self.all.append(line)
            if line.startswith(prefix):
                return

    def subscribed(self) -> "Sub":
        self.wait_for("Subscribed (mid:")
        return self

    def finish(self, timeout=TIMEOUT) -> list[str]:
        """Wait for it to exit (it was started with -C); returns all its stdout lines."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"mosquitto_sub still running after {timeout} s; got {self.all}")
        while (line := self.lines.get(timeout=timeout)) is not None:
            self.all.append(line)
        assert rc == 0, f"mosquitto_sub exited {rc}: {self.proc.stderr.read()!r}"
        return self.all

    def payload_lines(self, timeout=TIMEOUT) -> list[str]:
        """Its output without the -d debug lines."""
        return [line for line in self.finish(timeout)
                if not line.startswith(("Client ", "Subscribed (mid:"))]

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        self.proc.stdout.close()
        self.proc.stderr.close()


@pytest.fixture
def subs(broker):
    made: list[Sub] = []

    def make(*args) -> Sub:
        s = Sub(broker, *args)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def test_seed_shell_publish_subscribe(broker, subs):
    """The walkthrough's two terminals, with -C 1 and -W bounds."""
    s = subs("-t", "sensors/temperature", "-q", "1", "-C", "1", "-W", str(TIMEOUT)).subscribed()
    pub(broker, "-t", "sensors/temperature", "-m", "32", "-q", "1")
    out = s.finish()
    assert any(line.startswith("Client") and "received PUBLISH (d0, q1," in line for line in out), out
    assert [line for line in out if not line.startswith(("Client ", "Subscribed (mid:"))] == ["32"]


FILE_PAYLOADS = {
    "lines-crlf-binary": (b"first line\nsecond line\r\nthird line\r\n"
                          b"not utf-8: \xff\xfe\xc3\x28 \x80\x00nul\n\n\tlast line without newline"),
    "large-binary": bytes(range(256)) * 1200,  # 300 KiB: a 3-byte remaining length
}


@pytest.mark.parametrize("name", list(FILE_PAYLOADS))
def test_publish_file_arrives_byte_for_byte_paho(broker, paho, tmp_path, name):
    data = FILE_PAYLOADS[name]
    path = tmp_path / "test.txt"
    path.write_bytes(data)
    c = paho()
    c.connect()
    c.subscribe("sensors/temperature", 1)
    pub(broker, "-t", "sensors/temperature", "-f", str(path), "-q", "1")
    m = c.expect_message()
    assert m.topic == "sensors/temperature"
    assert m.payload == data
    c.disconnect()


@pytest.mark.parametrize("name", list(FILE_PAYLOADS))
def test_publish_file_arrives_byte_for_byte_mosquitto_sub(broker, tmp_path, name):
    """Retained, so that the late mosquitto_sub -N gets it without a race."""
    data = FILE_PAYLOADS[name]
    path = tmp_path / "test.txt"
    path.write_bytes(data)
    pub(broker, "-t", "files/one", "-f", str(path), "-q", "1", "-r")
    assert sub_once(broker, "-t", "files/one", "-N") == data


@pytest.mark.parametrize("version", ["mqttv31", "mqttv311", "5"])
def test_protocol_versions_for_both_tools(broker, subs, version):
    s = subs("-V", version, "-t", "ver/t", "-q", "2", "-C", "2", "-W", str(TIMEOUT)).subscribed()
    pub(broker, "-V", version, "-t", "ver/t", "-m", f"hello {version}", "-q", "1")
    pub(broker, "-V", version, "-t", "ver/t", "-m", f"bye {version}", "-q", "2")
    assert s.payload_lines() == [f"hello {version}", f"bye {version}"]


def test_retained_then_cleared(broker):
    pub(broker, "-t", "ret/t", "-m", "old", "-q", "1", "-r")
    pub(broker, "-t", "ret/t", "-m", "kept", "-q", "1", "-r")
    # a late subscriber gets it, with the retain flag (%r)
    assert sub_once(broker, "-t", "ret/t", "-F", "%r %t %p") == b"1 ret/t kept\n"
    assert sub_once(broker, "-V", "5", "-t", "ret/#", "-v") == b"ret/t kept\n"
    # -r -n clears it: a late subscriber to it and to a retained sentinel
    # (subscribed after it) gets the sentinel only
    pub(broker, "-t", "ret/t", "-r", "-n")
    pub(broker, "-t", "ret/sentinel", "-m", "s", "-r")
    assert sub_once(broker, "-t", "ret/t", "-t", "ret/sentinel", "-v") == b"ret/sentinel s\n"


@pytest.mark.parametrize("version", ["mqttv311", "5"])
def test_will_of_killed_mosquitto_sub(broker, subs, version):
    watcher = subs("-V", version, "-t", "w", "-C", "1", "-W", str(TIMEOUT)).subscribed()
    doomed = subs("-V", version, "-t", "dummy", "--will-topic", "w", "--will-payload", "bye",
                  "-i", f"doomed-{version}").subscribed()
    os.kill(doomed.proc.pid, signal.SIGKILL)
    assert watcher.payload_lines() == ["bye"]


def test_no_will_when_mosquitto_sub_exits_cleanly(broker, subs):
    watcher = subs("-t", "w", "-t", "w-sentinel", "-C", "1", "-W", str(TIMEOUT)).subscribed()
    polite = subs("-t", "polite", "--will-topic", "w", "--will-payload", "bye",
                  "-C", "1", "-W", str(TIMEOUT)).subscribed()
    pub(broker, "-t", "polite", "-m", "leave now")  # -C 1: it disconnects cleanly
    assert polite.payload_lines() == ["leave now"]
    pub(broker, "-t", "w-sentinel", "-m", "sentinel")
    assert watcher.payload_lines() == ["sentinel"]
