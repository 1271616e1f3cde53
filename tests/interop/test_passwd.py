"""midge_passwd against the real thing: password files it writes must be accepted
by Debian's Mosquitto broker, and its command line must behave as Debian's
mosquitto_passwd does (messages, exit codes).

The other direction (files written by mosquitto_passwd verified by Midge) is the
Rust test crates/midge-auth/tests/mosquitto_passwd.rs.

`MIDGE_BIN_DIR` overrides the directory of `midge_passwd` (default
`<repo>/target/debug`). These tests do not use the `broker` fixture: they always
start /usr/sbin/mosquitto, whatever MIDGE_TEST_BROKER says.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

import brokers

MOSQUITTO = Path("/usr/sbin/mosquitto")
MOSQUITTO_PASSWD = Path("/usr/bin/mosquitto_passwd")
MOSQUITTO_PUB = Path("/usr/bin/mosquitto_pub")
TIMEOUT = 20

pytestmark = pytest.mark.skipif(
    not (MOSQUITTO.exists() and MOSQUITTO_PASSWD.exists() and MOSQUITTO_PUB.exists()),
    reason="mosquitto / mosquitto-clients not installed (scripts/setup-test-env.sh installs them)")


def midge_passwd() -> Path:
    d = os.environ.get("MIDGE_BIN_DIR")
    path = (Path(d) if d else brokers.REPO_ROOT / "target" / "debug") / "midge_passwd"
    if not path.exists():
        pytest.fail(f"{path} not found: build it with `cargo build -p midge --bin midge_passwd`",
                    pytrace=False)
    return path


def run(tool: Path, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(tool), *args], input=input, capture_output=True, text=True,
                          timeout=TIMEOUT, stdin=None if input is not None else subprocess.DEVNULL)


def mp(*args: str, input: str | None = None) -> subprocess.CompletedProcess:
    return run(midge_passwd(), *args, input=input)


def ok(r: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert r.returncode == 0, f"{r.args} exited {r.returncode}: {r.stderr}"
    return r


class Mosquitto:
    """Debian's broker with `allow_anonymous false` and our password file."""

    def __init__(self, tmp_path: Path, password_file: Path):
        last: Exception | None = None
        for attempt in range(3):  # the free port may be taken between probe and bind
            self.port = brokers.free_port()
            conf = tmp_path / f"mosquitto-auth-{attempt}.conf"
            lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous false",
                     f"password_file {password_file}", "log_dest stderr"]
            if os.geteuid() == 0:
                # As root Mosquitto drops to user `mosquitto` before reading the
                # file, which cannot then read a 0600 file in pytest's 0700 tmp.
                lines.append("user root")
            conf.write_text("\n".join(lines) + "\n")
            self.broker = brokers.Broker([str(MOSQUITTO), "-c", str(conf), "-v"])
            try:
                self.broker.wait_for_log(re.compile(r"mosquitto version \S+ running"),
                                         brokers.START_TIMEOUT)
                return
            except brokers.BrokerStartError as e:
                self.broker.stop()
                last = e
        assert last is not None
        raise last

    def pub(self, user: str, password: str) -> subprocess.CompletedProcess:
        return run(MOSQUITTO_PUB, "-h", "127.0.0.1", "-p", str(self.port), "-u", user,
                   "-P", password, "-t", "midge/passwd", "-m", "hello")

    def accepts(self, user: str, password: str) -> bool:
        r = self.pub(user, password)
        if r.returncode == 0:
            return True
        assert "not authori" in r.stderr, f"unexpected failure: {r.stderr}\n{self.broker.log_text()}"
        return False

    def stop(self) -> None:
        self.broker.stop()


@pytest.fixture
def mosquitto(tmp_path):
    started: list[Mosquitto] = []

    def start(password_file: Path) -> Mosquitto:
        m = Mosquitto(tmp_path, password_file)
        started.append(m)
        return m

    yield start
    for m in started:
        m.stop()


def test_files_written_by_midge_passwd_are_accepted_by_mosquitto(tmp_path, mosquitto):
    f = tmp_path / "passwd"
    ok(mp("-c", "-b", str(f), "alice", "secret"))
    ok(mp("-b", str(f), "bob", "pa:ss wörd"))
    ok(mp("-H", "sha512", "-b", str(f), "carol", "old style"))
    ok(mp("-I", "1000", "-b", str(f), "dave", "rounds"))
    r = ok(mp(str(f), "erin", input="typed\ntyped\n"))
    assert r.stdout == "Password: \nReenter password: \n"
    text = f.read_text()
    assert re.fullmatch(
        r"alice:\$7\$101\$[A-Za-z0-9+/]{16}\$[A-Za-z0-9+/]{86}==\n"
        r"bob:\$7\$101\$\S+\n"
        r"carol:\$6\$[A-Za-z0-9+/]{16}\$[A-Za-z0-9+/]{86}==\n"
        r"dave:\$7\$1000\$\S+\n"
        r"erin:\$7\$101\$\S+\n", text), text

    m = mosquitto(f)
    assert m.accepts("alice", "secret")
    assert m.accepts("bob", "pa:ss wörd")
    assert m.accepts("carol", "old style")
    assert m.accepts("dave", "rounds")
    assert m.accepts("erin", "typed")
    assert not m.accepts("alice", "wrong")
    assert not m.accepts("alice", "")
    assert not m.accepts("mallory", "secret")


def test_update_delete_and_convert_are_seen_by_mosquitto(tmp_path, mosquitto):
    f = tmp_path / "passwd"
    ok(mp("-c", "-b", str(f), "alice", "a1"))
    ok(mp("-b", str(f), "bob", "b1"))
    ok(mp("-b", str(f), "carol", "c1"))
    ok(mp("-b", str(f), "alice", "a2"))          # -b updates in place
    ok(mp("-D", str(f), "bob"))                  # -D deletes
    assert [line.split(":")[0] for line in f.read_text().splitlines()] == ["alice", "carol"]

    plain = tmp_path / "plain"
    plain.write_text("# converted\ndan:d1\nemma: e 1 \n")
    ok(mp("-U", str(plain)))                     # -U hashes plain text
    converted = plain.read_text()
    assert converted.startswith("# converted\ndan:$7$101$")
    with f.open("a") as out:
        out.write(converted)

    m = mosquitto(f)
    assert m.accepts("alice", "a2")
    assert not m.accepts("alice", "a1")
    assert not m.accepts("bob", "b1")
    assert m.accepts("carol", "c1")
    assert m.accepts("dan", "d1")
    assert m.accepts("emma", "e 1")


def test_mosquitto_passwd_can_edit_our_files(tmp_path):
    f = tmp_path / "passwd"
    ok(mp("-c", "-b", str(f), "alice", "a"))
    ok(mp("-b", str(f), "bob", "b"))
    ok(run(MOSQUITTO_PASSWD, "-D", str(f), "alice"))
    ok(run(MOSQUITTO_PASSWD, "-b", str(f), "carol", "c"))
    ok(mp("-b", str(f), "bob", "b2"))
    assert [line.split(":")[0] for line in f.read_text().splitlines()] == ["bob", "carol"]


def test_new_files_are_private_and_existing_modes_kept(tmp_path):
    f = tmp_path / "passwd"
    ok(mp("-c", "-b", str(f), "alice", "a"))
    assert f.stat().st_mode & 0o777 == 0o600
    f.chmod(0o640)
    ok(mp("-b", str(f), "bob", "b"))
    ok(mp("-D", str(f), "alice"))
    assert f.stat().st_mode & 0o777 == 0o640
    assert list(tmp_path.iterdir()) == [f], "no temporary or backup files left"


# Same arguments (and stdin) to both tools: same exit code and stderr. The
# {f} file exists and holds user `a`; {missing} does not exist.
SAME_AS_MOSQUITTO = [
    ([], None),
    (["-b", "{missing}", "u", "p"], None),
    (["-D", "{f}", "nobody"], None),
    (["-b", "{f}", "a:b", "p"], None),
    (["-b", "{f}", "a\tb", "p"], None),
    (["-c", "-D", "{f}", "u"], None),
    (["-c", "-U", "{f}"], None),
    (["-D", "-U", "{f}"], None),
    (["-b", "-D", "{f}", "u"], None),
    (["-H", "md5", "-b", "{f}", "u", "p"], None),
    (["-H"], None),
    (["-I"], None),
    (["-I", "0", "-b", "{f}", "u", "p"], None),
    (["-I", "abc", "-b", "{f}", "u", "p"], None),
    (["-c", "{f}"], None),
    (["-c", "-b", "{f}", "u"], None),
    (["-D", "{f}"], None),
    (["-U"], None),
    (["-U", "{f}", "x"], None),
    (["-b", "{f}", "u"], None),
    (["-x", "{f}", "u"], None),
    (["{f}"], None),
    (["-b", "{f}", "u", "p", "q"], None),
    (["-U", "{missing}"], None),
    (["{f}", "u"], "abc\nabd\n"),   # mismatch: exit 2
    (["{f}", "u"], "\n\n"),         # empty password
    (["{f}", "u"], "abc"),          # end of input at the second prompt
    (["{f}", "u"], ""),
    (["-c", "{new}", "u"], "pw\npw\n"),
    (["-D", "{f}", "a"], None),
    (["-b", "{f}", "a", "new"], None),
]


@pytest.mark.parametrize("args,stdin", SAME_AS_MOSQUITTO,
                         ids=[" ".join(a) + (" <" + repr(i) if i is not None else "")
                              for a, i in SAME_AS_MOSQUITTO])
def test_same_messages_and_exit_codes_as_mosquitto_passwd(tmp_path, args, stdin):
    seen = {}
    for name, tool in (("mosquitto", MOSQUITTO_PASSWD), ("midge", midge_passwd())):
        d = tmp_path / name
        d.mkdir()
        f = d / "passwd"
        ok(run(MOSQUITTO_PASSWD, "-c", "-b", str(f), "a", "x"))
        paths = {"f": str(f), "missing": str(d / "missing"), "new": str(d / "new")}
        r = run(tool, *[a.format(**paths) for a in args], input=stdin)
        stdout = r.stdout.replace(str(tool.name), "TOOL")
        if stdout.startswith("TOOL is a tool for managing password files"):
            stdout = "USAGE"  # the usage text itself names the tool and broker
        seen[name] = (r.returncode, r.stderr.replace(str(d), "DIR"), stdout,
                      sorted(p.name for p in d.iterdir()))
    assert seen["midge"] == seen["mosquitto"]
