"""Starting and stopping the broker under test.

By default this runs Midge: `midge -p 0 -v`, reading its log until the line
`<unix-time>: Opening ipv4 listen socket on port N.` (the same line Mosquitto
prints) to learn the port. `MIDGE_BIN` overrides the binary's path (default
`<repo>/target/debug/midge`).

With `MIDGE_TEST_BROKER=mosquitto` it runs Debian's `/usr/sbin/mosquitto`
instead, on a free port with a temporary configuration: that mode exists to
validate the tests themselves against the reference broker.

The broker's output (stdout and stderr, merged) is drained by a thread so the
pipe never fills, and kept so that a failing test can show it.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
LISTEN_RE = re.compile(r"Opening ipv4 listen socket on port (\d+)\.")


def broker_kind() -> str:
    kind = os.environ.get("MIDGE_TEST_BROKER", "midge").strip() or "midge"
    if kind not in ("midge", "mosquitto"):
        raise RuntimeError(f"MIDGE_TEST_BROKER must be 'midge' or 'mosquitto', not {kind!r}")
    return kind


def midge_bin() -> Path:
    return Path(os.environ.get("MIDGE_BIN") or REPO_ROOT / "target" / "debug" / "midge")


def describe() -> str:
    if broker_kind() == "mosquitto":
        return "mosquitto (/usr/sbin/mosquitto, validation mode)"
    return f"midge ({midge_bin()})"


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on `host`; a listener on 0.0.0.0 needs one free on every
    address, which "0.0.0.0" asks for."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class BrokerStartError(RuntimeError):
    pass


class Broker:
    """A running broker process listening on 127.0.0.1:port."""

    host = "127.0.0.1"

    def __init__(self, argv: list[str]):
        self.argv = argv
        self.port: int | None = None
        self._lines: list[str] = []
        self._cond = threading.Condition()
        self._eof = False
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._drain, name="broker-log", daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for raw in iter(self.proc.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            with self._cond:
                self._lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def wait_for_log(self, pattern: re.Pattern, timeout: float) -> re.Match:
        """Wait until a log line matches `pattern`; returns the match."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for line in self._lines[seen:]:
                    m = pattern.search(line)
                    if m:
                        return m
                seen = len(self._lines)
                if self._eof:
                    raise BrokerStartError(
                        f"broker exited (code {self.proc.poll()}) before logging "
                        f"{pattern.pattern!r}\n{self.log_text()}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BrokerStartError(
                        f"broker did not log {pattern.pattern!r} within {timeout} s\n"
                        f"{self.log_text()}")
                self._cond.wait(remaining)

    def log_text(self, last: int | None = None) -> str:
        with self._cond:
            lines = self._lines if last is None else self._lines[-last:]
            return "\n".join(lines)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int:
        """SIGTERM, then SIGKILL after a bound. Returns the exit code."""
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)
        self._reader.join(STOP_TIMEOUT)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode


def start_broker(tmp_path: Path) -> Broker:
    if broker_kind() == "mosquitto":
        return _start_mosquitto(tmp_path)
    return _start_midge()


def _start_midge() -> Broker:
    binary = midge_bin()
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        raise BrokerStartError(
            f"midge binary not found at {binary}: build it with `cargo build -p midge`, "
            "set MIDGE_BIN, or validate the tests with MIDGE_TEST_BROKER=mosquitto")
    broker = Broker([str(binary), "-p", "0", "-v"])
    try:
        m = broker.wait_for_log(LISTEN_RE, START_TIMEOUT)
    except BaseException:
        broker.stop()
        raise
    broker.port = int(m.group(1))
    return broker


def _start_mosquitto(tmp_path: Path) -> Broker:
    last_error: Exception | None = None
    for attempt in range(3):  # the free port may be taken between probe and bind
        port = free_port()
        conf = tmp_path / f"mosquitto-{attempt}.conf"
        conf.write_text(
            f"listener {port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "log_dest stderr\n"
            "log_timestamp true\n")
        broker = Broker(["/usr/sbin/mosquitto", "-c", str(conf), "-v"])
        try:
            m = broker.wait_for_log(
                re.compile(rf"Opening ipv4 listen socket on port ({port})\."), START_TIMEOUT)
            # Mosquitto logs that line before binding; "running" comes after.
            broker.wait_for_log(re.compile(r"mosquitto version \S+ running"), START_TIMEOUT)
        except BrokerStartError as e:
            broker.stop()
            last_error = e
            continue
        broker.port = int(m.group(1))
        return broker
    assert last_error is not None
    raise last_error
