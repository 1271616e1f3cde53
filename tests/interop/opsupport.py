"""Helpers for test_operations.py and test_mqtt5.py: midge started with
`-c CONF` (in the foreground, its output drained like brokers.Broker, or as a
daemon with `-d`), log files that can be awaited with a bound, processes that
are not our children, and paho clients over other transports.

Everything lives under the test's tmp_path; every wait has a bound.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import paho.mqtt.client as mqtt

import brokers
import pahocompat

TIMEOUT = 10.0
START_TIMEOUT = brokers.START_TIMEOUT


def midge_bin() -> Path:
    binary = brokers.midge_bin()
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        raise brokers.BrokerStartError(
            f"midge binary not found at {binary}: build it with `cargo build -p midge --bin midge`")
    return binary


def wait_until(predicate, timeout: float = TIMEOUT, what: str = "a condition", step: float = 0.02):
    """Polls `predicate` until it returns something true; returns that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(step)


def pid_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def pid_exe(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""


# -- a broker started with -c CONF in the foreground ---------------------------

class ConfBroker(brokers.Broker):
    """midge -c CONF [extra args], output drained; `port` is the first TCP
    listener's port as logged ("Opening ipv4 listen socket on port N.")."""

    def __init__(self, conf: Path, *extra: str):
        self.conf = conf
        super().__init__([str(midge_bin()), "-c", str(conf), *extra])

    def wait_ready(self, pattern: str = r"Opening ipv4 listen socket on port (\d+)\.",
                   timeout: float = START_TIMEOUT) -> "ConfBroker":
        m = self.wait_for_log(re.compile(pattern), timeout)
        if m.groups():
            self.port = int(m.group(1))
        return self

    def lines(self) -> list[str]:
        with self._cond:
            return list(self._lines)

    def wait_line(self, regex: str, timeout: float = TIMEOUT, after: int = 0) -> str:
        """The first output line from index `after` on that matches `regex`."""
        pat = re.compile(regex)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self._lines[after:]:
                    if pat.search(line):
                        return line
                remaining = deadline - time.monotonic()
                if self._eof or remaining <= 0:
                    raise AssertionError(
                        f"no broker output line matching {regex!r} within {timeout} s "
                        f"(exited: {self._eof})\n{self.log_text(last=60)}")
                self._cond.wait(remaining)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)


def write_conf(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# -- log files -------------------------------------------------------------------

def file_lines(path: Path) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return []


def wait_file_line(path: Path, regex: str, timeout: float = TIMEOUT, after: int = 0) -> str:
    """The first line (from index `after`) of the file at `path` matching `regex`."""
    pat = re.compile(regex)

    def find():
        for line in file_lines(path)[after:]:
            if pat.search(line):
                return line
        return None

    try:
        return wait_until(find, timeout, f"a line matching {regex!r} in {path}")
    except AssertionError as e:
        raise AssertionError(f"{e}\n--- {path} ---\n" + "\n".join(file_lines(path)[-60:])) from None


# -- paho over other transports --------------------------------------------------

class Endpoint:
    """What pahocompat.Client needs of a broker: host and port."""

    def __init__(self, host: str, port: int):
        self.host = host
        self.port = port


def paho_client(endpoint, transport: str = "tcp", **kwargs) -> pahocompat.Client:
    """A pahocompat.Client whose paho client uses `transport` ("websockets",
    "unix" on paho 2)."""
    c = pahocompat.Client(endpoint, **kwargs)
    if transport == "tcp":
        return c
    old = c.c
    protocol = kwargs.get("protocol", pahocompat.MQTTv311)
    args = dict(client_id=kwargs.get("client_id", ""), protocol=protocol,
                reconnect_on_failure=False, transport=transport)
    if protocol != pahocompat.MQTTv5 and kwargs.get("clean_session") is not None:
        args["clean_session"] = kwargs["clean_session"]
    if pahocompat.PAHO2:
        new = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, **args)
    else:
        new = mqtt.Client(**args)
    for cb in ("on_connect", "on_message", "on_subscribe", "on_disconnect"):
        setattr(new, cb, getattr(old, cb))
    c.c = new
    return c


def kill_pid(pid: int) -> None:
    """SIGTERM, then SIGKILL after a bound, for a process that is not our child."""
    if not pid_alive(pid):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 5
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if pid_alive(pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def run_midge(*args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run([str(midge_bin()), *args], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


# -- mosquitto_sub / mosquitto_pub with arbitrary connection arguments ------------

class ToolSub:
    """mosquitto_sub with -d (so that we can tell when it has subscribed) and
    whatever connection arguments (-h/-p or --unix)."""

    def __init__(self, *args: str):
        import queue
        import threading
        self._queue_mod = queue
        self.proc = subprocess.Popen(
            ["stdbuf", "-oL", "mosquitto_sub", "-d", *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines: "queue.Queue[str | None]" = queue.Queue()
        self.all: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for raw in iter(self.proc.stdout.readline, b""):
            self.lines.put(raw.decode("utf-8", "replace").rstrip("\n"))
        self.lines.put(None)

    def wait_for(self, prefix: str, timeout: float = TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except self._queue_mod.Empty:
                raise AssertionError(f"mosquitto_sub did not print {prefix!r}; got {self.all}") from None
            if line is None:
                raise AssertionError(
                    f"mosquitto_sub exited ({self.proc.wait()}) before {prefix!r}; got {self.all} "
                    f"stderr {self.proc.stderr.read()!r}")
            self.all.append(line)
            if line.startswith(prefix):
                return line

    def subscribed(self) -> "ToolSub":
        self.wait_for("Subscribed (mid:")
        return self

    def payload_lines(self, timeout: float = TIMEOUT) -> list[str]:
        """Waits for it to exit (started with -C); its output without -d lines."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"mosquitto_sub still running after {timeout} s; got {self.all}")
        while (line := self.lines.get(timeout=timeout)) is not None:
            self.all.append(line)
        assert rc == 0, f"mosquitto_sub exited {rc}: {self.proc.stderr.read()!r}"
        return [line for line in self.all if not line.startswith(("Client ", "Subscribed (mid:"))]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        self.proc.stdout.close()
        self.proc.stderr.close()


def tool_pub(*args: str, timeout: float = TIMEOUT) -> None:
    r = subprocess.run(["mosquitto_pub", *args], stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=timeout)
    assert r.returncode == 0, f"mosquitto_pub {args} exited {r.returncode}: {r.stderr!r}"
