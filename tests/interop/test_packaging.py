"""The service packaging (packaging/): the SysV init script run for real
against the built broker, and syntax checks of the systemd unit, the monit
check, the logrotate file, the default configuration, the Debian maintainer
scripts and the cargo-deb metadata.

The init script is run with every path moved into tmp_path (MIDGE_BIN,
MIDGE_CONF, MIDGE_DEFAULTS=/dev/null, MIDGE_RUNDIR, MIDGE_NO_SYSTEMD=1), once
with start-stop-daemon (when installed) and once in plain sh
(MIDGE_NO_SSD=1). The broker daemonizes (`midge -d`) and writes its own
pid file; every wait is bounded, and a broker left running by a failed
test is killed at teardown.

The binaries are taken from <repo>/target/debug/ (MIDGE_BIN_DIR overrides).
Tools that are not the product (systemd-analyze, monit, logrotate) are used
when installed and their checks skipped otherwise.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest

import brokers
import rawmqtt

REPO = Path(__file__).resolve().parents[2]
PKG = REPO / "packaging"
INIT_SCRIPT = PKG / "init.d" / "midge"
UNIT = PKG / "systemd" / "midge.service"
MAINTAINER_SCRIPTS = [PKG / "debian" / n for n in ("postinst", "prerm", "postrm")]
SCRIPT_TIMEOUT = 60  # seconds for one init script action (its own waits are shorter)

pytestmark = pytest.mark.midge_only("packaging runs the midge binary")


def bin_dir() -> Path:
    return Path(os.environ.get("MIDGE_BIN_DIR") or REPO / "target" / "debug")


def midge_bin() -> Path:
    path = bin_dir() / "midge"
    if not path.is_file():
        pytest.fail(f"{path} is missing: build it with `cargo build -p midge`", pytrace=False)
    return path


def pid_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def mqtt_connect_ok(port: int) -> None:
    """A CONNECT (3.1.1) on 127.0.0.1:port is accepted."""
    with rawmqtt.RawClient("127.0.0.1", port) as c:
        c.connect(client_id="packaging-test")
        c.send(rawmqtt.disconnect())


class Service:
    """The init script, pointed at a broker whose files all live in tmp_path."""

    def __init__(self, tmp_path: Path, use_ssd: bool, pidfile_from_conf: bool):
        self.dir = tmp_path
        self.port = brokers.free_port()
        self.run_dir = tmp_path / "run"
        self.run_dir.mkdir()
        self.pidfile = self.run_dir / "midge.pid"
        self.logfile = tmp_path / "log" / "midge.log"
        self.logfile.parent.mkdir()
        self.conf = tmp_path / "midge.conf"
        self.write_conf()
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C",
            "MIDGE_BIN": str(midge_bin()),
            "MIDGE_CONF": str(self.conf),
            "MIDGE_DEFAULTS": "/dev/null",
            "MIDGE_RUNDIR": str(self.run_dir),
            "MIDGE_NO_SYSTEMD": "1",
            "MIDGE_START_TIMEOUT": "10",
            "MIDGE_STOP_TIMEOUT": "10",
        }
        if not use_ssd:
            self.env["MIDGE_NO_SSD"] = "1"
        if not pidfile_from_conf:
            self.env["MIDGE_PIDFILE"] = str(self.pidfile)
        self.pids_seen: set[int] = set()
        self.runs = 0

    def write_conf(self, extra: str = "") -> None:
        self.conf.write_text(
            f"pid_file {self.pidfile}\n"
            f"log_dest file {self.logfile}\n"
            "log_type all\n"
            "log_timestamp true\n"
            "connection_messages true\n"
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n" + extra)

    def run(self, action: str) -> subprocess.CompletedProcess:
        """Runs `init.d/midge ACTION`. Output goes to files, not pipes: a
        daemon that kept a pipe open would otherwise hang the test."""
        self.runs += 1
        out = self.dir / f"script-{self.runs}-{action}.out"
        with open(out, "w+b") as f:
            try:
                proc = subprocess.run([str(INIT_SCRIPT), action], env=self.env, cwd=self.dir,
                                      stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                                      timeout=SCRIPT_TIMEOUT)
            except subprocess.TimeoutExpired:
                pytest.fail(f"init.d/midge {action} did not return within {SCRIPT_TIMEOUT}s",
                            pytrace=False)
            f.seek(0)
            text = f.read().decode(errors="replace")
        self.remember_pid()
        return subprocess.CompletedProcess(proc.args, proc.returncode, text, "")

    def pid(self) -> int | None:
        try:
            text = self.pidfile.read_text().strip()
        except FileNotFoundError:
            return None
        return int(text) if text.isdigit() else None

    def remember_pid(self) -> None:
        pid = self.pid()
        if pid is not None:
            self.pids_seen.add(pid)

    def log(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def cleanup(self) -> None:
        """Kills whatever broker a failed test left running."""
        self.remember_pid()
        for pid in self.pids_seen:
            if pid_alive(pid) and is_midge(pid):
                os.kill(pid, signal.SIGKILL)
                wait_until(lambda p=pid: not pid_alive(p), 5, f"pid {pid} to die")


def is_midge(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "midge"
    except OSError:
        return False


def ssd_params():
    have_ssd = shutil.which("start-stop-daemon") is not None
    return [
        pytest.param(True, id="start-stop-daemon", marks=pytest.mark.skipif(
            not have_ssd, reason="start-stop-daemon is not installed")),
        pytest.param(False, id="plain-sh"),
    ]


@pytest.fixture(params=ssd_params())
def service(request, tmp_path):
    # The pid file is found in the configuration with start-stop-daemon, and
    # given as MIDGE_PIDFILE in plain sh: both ways are covered.
    s = Service(tmp_path, use_ssd=request.param, pidfile_from_conf=request.param)
    yield s
    s.cleanup()


def show(s: Service, r: subprocess.CompletedProcess) -> str:
    return f"exit {r.returncode}, output:\n{r.stdout}\nbroker log:\n{s.log()[-3000:]}"


# --- the init script, for real ------------------------------------------------

def test_init_script_start_status_reload_stop(service):
    s = service
    r = s.run("status")
    assert r.returncode == 3, show(s, r)

    r = s.run("start")
    assert r.returncode == 0, show(s, r)
    pid = s.pid()
    assert pid is not None, f"no pid file {s.pidfile} after start\n{show(s, r)}"
    assert pid_alive(pid) and is_midge(pid), f"pid {pid} is not a running midge"
    mqtt_connect_ok(s.port)

    r = s.run("status")
    assert r.returncode == 0, show(s, r)
    assert str(pid) in r.stdout

    # start again: nothing to do, the same broker
    r = s.run("start")
    assert r.returncode == 0, show(s, r)
    assert s.pid() == pid

    log_before = len(s.log())
    r = s.run("reload")
    assert r.returncode == 0, show(s, r)
    wait_until(lambda: re.search(r"reload", s.log()[log_before:], re.I) is not None, 10,
               "a line about reloading in the broker's log")
    assert s.pid() == pid, "reload changed the pid"
    assert pid_alive(pid), "the broker died on reload"
    mqtt_connect_ok(s.port)

    r = s.run("force-reload")
    assert r.returncode == 0, show(s, r)
    assert s.pid() == pid

    r = s.run("stop")
    assert r.returncode == 0, show(s, r)
    assert not pid_alive(pid), "the broker is still running after stop"
    assert not s.pidfile.exists(), "the pid file is still there after stop"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", s.port), timeout=2).close()

    r = s.run("status")
    assert r.returncode == 3, show(s, r)
    # stopping what is not running is a success (LSB)
    r = s.run("stop")
    assert r.returncode == 0, show(s, r)


def test_init_script_restart_gives_a_new_broker(service):
    s = service
    r = s.run("restart")  # not running: restart starts it
    assert r.returncode == 0, show(s, r)
    first = s.pid()
    assert first is not None and pid_alive(first)
    r = s.run("restart")
    assert r.returncode == 0, show(s, r)
    second = s.pid()
    assert second is not None and second != first
    assert not pid_alive(first)
    mqtt_connect_ok(s.port)
    r = s.run("try-restart")
    assert r.returncode == 0, show(s, r)
    assert s.pid() not in (None, second)
    r = s.run("stop")
    assert r.returncode == 0, show(s, r)
    r = s.run("try-restart")  # not running: stays stopped
    assert r.returncode == 0, show(s, r)
    assert s.pid() is None


def test_init_script_stale_pid_file(service):
    s = service
    # a pid that is not a broker (this test's own process)
    s.pidfile.write_text(f"{os.getpid()}\n")
    r = s.run("status")
    assert r.returncode == 1, show(s, r)
    r = s.run("reload")
    assert r.returncode == 7, show(s, r)
    r = s.run("start")
    assert r.returncode == 0, show(s, r)
    pid = s.pid()
    assert pid is not None and pid != os.getpid() and is_midge(pid)
    r = s.run("stop")
    assert r.returncode == 0, show(s, r)
    assert pid_alive(os.getpid())


def test_init_script_refuses_a_bad_configuration(service):
    s = service
    s.write_conf("no_such_option 1\n")
    r = s.run("start")
    assert r.returncode == 6, show(s, r)
    assert "no_such_option" in r.stdout
    assert s.pid() is None
    r = s.run("status")
    assert r.returncode == 3, show(s, r)

    # a running broker is not signalled with a configuration it would refuse
    s.write_conf()
    r = s.run("start")
    assert r.returncode == 0, show(s, r)
    pid = s.pid()
    s.write_conf("no_such_option 1\n")
    r = s.run("reload")
    assert r.returncode == 6, show(s, r)
    assert s.pid() == pid and pid_alive(pid)
    r = s.run("stop")
    assert r.returncode == 0, show(s, r)
    assert not pid_alive(pid)


def test_init_script_missing_binary(tmp_path):
    s = Service(tmp_path, use_ssd=False, pidfile_from_conf=False)
    s.env["MIDGE_BIN"] = str(tmp_path / "no-such-midge")
    r = s.run("start")
    assert r.returncode == 5, show(s, r)
    r = s.run("bogus")
    assert r.returncode == 2, show(s, r)


# --- static checks ------------------------------------------------------------

def test_init_script_headers():
    text = INIT_SCRIPT.read_text()
    assert text.startswith("#!/bin/sh\n")
    assert INIT_SCRIPT.stat().st_mode & stat.S_IXUSR, "packaging/init.d/midge is not executable"
    assert re.search(r"^# chkconfig: \d+ \d+ \d+$", text, re.M)
    assert re.search(r"^# description: ", text, re.M)
    m = re.search(r"^### BEGIN INIT INFO\n(.*?)^### END INIT INFO$", text, re.M | re.S)
    assert m, "no LSB header"
    header = dict(re.findall(r"^# ([A-Za-z-]+):\s*(.*)$", m.group(1), re.M))
    assert header["Provides"] == "midge"
    assert header["Default-Start"].split() == ["2", "3", "4", "5"]
    assert header["Default-Stop"].split() == ["0", "1", "6"]
    assert header["Short-Description"] == "Midge MQTT broker"
    assert "$remote_fs" in header["Required-Start"]


@pytest.mark.parametrize("script", [INIT_SCRIPT, *MAINTAINER_SCRIPTS, PKG / "build-deb.sh"],
                         ids=lambda p: p.name)
def test_shell_syntax(script):
    for shell in ("sh", "dash", "bash"):
        if shutil.which(shell) is None:
            continue
        r = subprocess.run([shell, "-n", str(script)], capture_output=True, text=True, timeout=10)
        assert r.returncode == 0, f"{shell} -n {script}: {r.stderr}"
    if script in MAINTAINER_SCRIPTS:
        assert script.stat().st_mode & stat.S_IXUSR, f"{script} is not executable"


def test_systemd_unit_verifies(tmp_path):
    text = UNIT.read_text()
    for line in ("Type=notify", "ExecStart=/usr/sbin/midge -c /etc/midge/midge.conf",
                 "ExecReload=/bin/kill -HUP $MAINPID", "Restart=on-failure",
                 "NoNewPrivileges=true", "ProtectSystem=strict", "LimitNOFILE=65536"):
        assert re.search(rf"^{re.escape(line)}$", text, re.M), f"the unit lacks {line}"
    assert re.search(r"^WatchdogSec=\d+", text, re.M)
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    # verify checks that the commands exist: point it at the built broker
    unit = tmp_path / "midge.service"
    unit.write_text(text.replace("/usr/sbin/midge", str(midge_bin())))
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                       text=True, timeout=30)
    problems = [l for l in (r.stdout + r.stderr).splitlines() if "midge.service" in l]
    assert r.returncode == 0 and not problems, r.stdout + r.stderr


def test_monit_check_parses(tmp_path):
    text = (PKG / "monit" / "midge").read_text()
    assert "check process midge with pidfile /run/midge/midge.pid" in text
    assert 'start program = "/etc/init.d/midge start"' in text
    assert 'stop program = "/etc/init.d/midge stop"' in text
    assert re.search(r"port 1883\b", text)
    monit = shutil.which("monit") or ("/usr/bin/monit" if os.path.exists("/usr/bin/monit") else None)
    if monit is None:
        pytest.skip("monit is not installed")
    rc = tmp_path / "monitrc"
    rc.write_text(f"set daemon 30\nset idfile {tmp_path}/id\nset statefile {tmp_path}/state\n"
                  f"include {PKG / 'monit' / 'midge'}\n")
    rc.chmod(0o600)
    r = subprocess.run([monit, "-t", "-c", str(rc)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr


def test_logrotate_parses(tmp_path):
    text = (PKG / "logrotate" / "midge").read_text()
    assert "/var/log/midge/*.log" in text and "postrotate" in text and "HUP" in text
    logrotate = shutil.which("logrotate") or (
        "/usr/sbin/logrotate" if os.path.exists("/usr/sbin/logrotate") else None)
    if logrotate is None:
        pytest.skip("logrotate is not installed")
    conf = tmp_path / "midge"
    conf.write_text(text)
    conf.chmod(0o644)
    r = subprocess.run([logrotate, "-d", "-s", str(tmp_path / "state"), str(conf)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "error" not in (r.stdout + r.stderr).lower(), r.stdout + r.stderr


def test_default_config_is_accepted(tmp_path):
    """packaging/midge.conf passes `midge --test-config` (with its include_dir
    pointed at the shipped conf.d, since /etc/midge/conf.d may not exist)."""
    text = (PKG / "midge.conf").read_text()
    assert re.search(r"^pid_file /run/midge/midge.pid$", text, re.M)
    assert re.search(r"^include_dir /etc/midge/conf.d$", text, re.M)
    assert re.search(r"^log_dest file /var/log/midge/midge.log$", text, re.M)
    conf = tmp_path / "midge.conf"
    conf.write_text(text.replace("include_dir /etc/midge/conf.d",
                                 f"include_dir {PKG / 'conf.d'}"))
    r = subprocess.run([str(midge_bin()), "--test-config", "-c", str(conf)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr


def test_pid_file_agrees_everywhere():
    """The init script's default, the config, monit and logrotate name the same pid file."""
    pidfile = "/run/midge/midge.pid"
    assert f"pid_file {pidfile}" in (PKG / "midge.conf").read_text()
    assert f"pidfile {pidfile}" in (PKG / "monit" / "midge").read_text()
    assert pidfile in (PKG / "logrotate" / "midge").read_text()
    assert f"PIDFILE:-{pidfile}" in INIT_SCRIPT.read_text()


def test_cargo_deb_metadata():
    """Every file the package ships exists, and the unit and script go where
    they are run from."""
    tomllib = pytest.importorskip("tomllib")
    crate = REPO / "crates" / "midge"
    meta = tomllib.loads((crate / "Cargo.toml").read_text())["package"]["metadata"]["deb"]
    assert meta["section"] == "net"
    assert "adduser" in meta["depends"] and "$auto" in meta["depends"]
    scripts = (crate / meta["maintainer-scripts"]).resolve()
    assert scripts == PKG / "debian"
    dests = {}
    for asset in meta["assets"]:
        if asset == "$auto":
            continue
        if isinstance(asset, dict) and "link_name" in asset:
            dests[asset["dest"]] = None
            continue
        src, dest = (asset[0], asset[1]) if isinstance(asset, list) else (asset["source"], asset["dest"])
        if not src.startswith("target/"):
            assert (crate / src).exists(), f"asset {src} does not exist"
        dests[dest] = src
    for dest in ("usr/sbin/midge", "etc/midge/midge.conf", "etc/init.d/midge",
                 "lib/systemd/system/midge.service", "etc/logrotate.d/midge"):
        assert dest in dests, f"nothing is installed as /{dest}"
