"""The user's scenario (walkthrough step 7): the seed's Python publisher and
subscriber, ported to Python 3 in seed/, run as real processes."""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

SEED = Path(__file__).resolve().parent / "seed"
LINE = "test_topic/test1 test message"


class LineReader:
    """Reads a process's stdout in a thread; lines can be awaited with a bound."""

    def __init__(self, proc: subprocess.Popen):
        self.lines: "queue.Queue[str]" = queue.Queue()
        self.seen: list[str] = []
        self._t = threading.Thread(target=self._run, args=(proc,), daemon=True)
        self._t.start()

    def _run(self, proc):
        for raw in iter(proc.stdout.readline, b""):
            self.lines.put(raw.decode("utf-8", "replace").rstrip("\r\n"))

    def wait_for(self, wanted: str, timeout: float = 10.0) -> list[str]:
        """Lines up to and including the first equal to `wanted`."""
        deadline = time.monotonic() + timeout
        got = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no line {wanted!r} within {timeout} s; got {got}")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            got.append(line)
            self.seen.append(line)
            if line == wanted:
                return got


def test_seed_publisher_and_subscriber(broker, paho, tmp_path):
    with (tmp_path / "subscriber.err").open("wb") as errfile:
        sub = subprocess.Popen(
            [sys.executable, "-u", str(SEED / "subscriber.py"),
             "--host", broker.host, "--port", str(broker.port)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errfile)
    try:
        out = LineReader(sub)
        assert out.wait_for("status 0") == ["status 0"]
        # The subscriber subscribes in on_connect; "status 0" comes before the
        # SUBSCRIBE is processed, so wait until its subscription is in place:
        # a probe message on its topic comes back to it.
        probe = paho()
        probe.connect()
        deadline = time.monotonic() + 10
        while True:
            probe.publish("test_topic/test1", b"probe", qos=1)
            try:
                out.wait_for("test_topic/test1 probe", timeout=0.5)
                break
            except AssertionError:
                assert time.monotonic() < deadline, "subscriber never received a probe"

        pub = subprocess.run(
            [sys.executable, "-u", str(SEED / "publisher.py"),
             "--host", broker.host, "--port", str(broker.port), "--interval", "0.2"],
            stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
        assert pub.returncode == 0, pub.stderr.decode(errors="replace")

        got = out.wait_for(LINE)
        for _ in range(4):
            got += out.wait_for(LINE)
        # A sentinel, published after the publisher is gone: anything the
        # broker still had for the subscriber (a duplicate) comes before it.
        probe.publish("test_topic/test1", b"sentinel", qos=1)
        got += out.wait_for("test_topic/test1 sentinel")
        got = [line for line in got if line != "test_topic/test1 probe"]
        assert got == [LINE] * 5 + ["test_topic/test1 sentinel"]
        probe.disconnect()
    finally:
        sub.terminate()
        try:
            sub.wait(timeout=5)
        except subprocess.TimeoutExpired:
            sub.kill()
            sub.wait(timeout=5)
        sub.stdout.close()
    err = (tmp_path / "subscriber.err").read_text(errors="replace")
    assert "Traceback" not in err, err
