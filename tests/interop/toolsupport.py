"""Helpers for test_tools_pubsub.py: where midge_pub/sub/rr are, a Debian
mosquitto broker of our own (plain TCP, password-only, Unix socket), and
tool processes whose output is collected as it comes, so a test can wait
until a subscriber is ready and then compare bytes with mosquitto's tools.

`MIDGE_BIN_DIR` overrides where the tools are (default `<repo>/target/debug`).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import brokers

REPO_ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 10.0


def bin_dir() -> Path:
    return Path(os.environ.get("MIDGE_BIN_DIR") or REPO_ROOT / "target" / "debug")


def tool(name: str, impl: str) -> list[str]:
    """The command for `pub`/`sub`/`rr` of `impl` ("midge" or "mosquitto").
    mosquitto's tools buffer stdout in a pipe; stdbuf makes -d lines and
    messages come as they are printed, as midge's do."""
    if impl == "midge":
        return [str(bin_dir() / f"midge_{name}")]
    return ["stdbuf", "-o0", f"mosquitto_{name}"]


def have_mosquitto() -> bool:
    return bool(shutil.which("mosquitto_sub") and Path("/usr/sbin/mosquitto").exists())


class Mosquitto:
    """/usr/sbin/mosquitto with a configuration of ours."""

    def __init__(self, tmp_path: Path, extra: str = "", anonymous: bool = True,
                 unix_socket: Path | None = None):
        self.host = "127.0.0.1"
        self.unix_socket = unix_socket
        last = None
        for attempt in range(3):
            self.port = brokers.free_port()
            conf = tmp_path / f"tools-mosquitto-{attempt}.conf"
            text = f"listener {self.port} 127.0.0.1\n"
            if unix_socket is not None:
                text += f"listener 0 {unix_socket}\n"
            text += f"allow_anonymous {'true' if anonymous else 'false'}\n{extra}"
            conf.write_text(text)
            self.log = open(tmp_path / f"tools-mosquitto-{attempt}.log", "wb")
            self.proc = subprocess.Popen(["/usr/sbin/mosquitto", "-c", str(conf)],
                                         stdout=self.log, stderr=subprocess.STDOUT)
            if wait_port(self.host, self.port, self.proc):
                return
            self.stop()
            last = f"mosquitto did not start on port {self.port}"
        raise RuntimeError(last)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def wait_port(host: str, port: int, proc: subprocess.Popen, timeout: float = TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


class Running:
    """A tool process whose stdout and stderr are read by threads."""

    def __init__(self, argv: list[str], stdin: bytes | None = None, env: dict | None = None):
        self.argv = argv
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        self.out = bytearray()
        self.err = bytearray()
        self._cv = threading.Condition()
        self._threads = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.out), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.err), daemon=True),
        ]
        for t in self._threads:
            t.start()
        if stdin is not None:
            assert self.proc.stdin is not None
            self.proc.stdin.write(stdin)
            self.proc.stdin.close()

    def _pump(self, pipe, buf: bytearray) -> None:
        while True:
            chunk = pipe.read1(65536)
            if not chunk:
                break
            with self._cv:
                buf.extend(chunk)
                self._cv.notify_all()

    def wait_output(self, needle: bytes, timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        with self._cv:
            while needle not in self.out:
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and needle not in self.out):
                    raise AssertionError(
                        f"{self.argv}: {needle!r} not printed; stdout={bytes(self.out)!r} "
                        f"stderr={bytes(self.err)!r}")
                self._cv.wait(min(left, 0.1))

    def finish(self, timeout: float = TIMEOUT) -> tuple[int, bytes, bytes]:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"{self.argv} did not exit; stdout={bytes(self.out)!r}")
        for t in self._threads:
            t.join(TIMEOUT)
        return code, bytes(self.out), bytes(self.err)


def run(argv: list[str], stdin: bytes | None = None, timeout: float = TIMEOUT,
        env: dict | None = None) -> tuple[int, bytes, bytes]:
    r = subprocess.run(argv, input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL,
                       capture_output=True, timeout=timeout, env=env)
    return r.returncode, r.stdout, r.stderr


TST = re.compile(rb'"tst":(\t?)"[0-9T:.+\-Z]*"')


def normalise(out: bytes) -> bytes:
    """Replaces the JSON timestamps, the only time-dependent output."""
    return TST.sub(rb'"tst":\1"TIME"', out)


def same_program_names(text: bytes) -> bytes:
    """mosquitto's messages name mosquitto_X where ours name midge_X."""
    return text.replace(b"mosquitto_", b"midge_")
