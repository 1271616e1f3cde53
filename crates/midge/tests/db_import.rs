//! `midge_db_import` end to end: Debian's Mosquitto 2.0 writes a real
//! `mosquitto.db` (retained messages, a 3.1.1 and a 5.0 persistent session
//! with messages queued while offline, and a message left in flight), the
//! tool imports it, and `midge` started on the imported store serves the
//! retained messages and delivers the queued and in-flight messages to the
//! clients when they come back. The generating tests skip, saying why, when
//! `/usr/sbin/mosquitto` or the mosquitto clients are missing (CI installs
//! them); the others run on the committed fixture in `tests/data/`.
//!
//! `MIDGE_WRITE_FIXTURE=1 cargo test -p midge --test db_import` rewrites
//! the fixture from a fresh run.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const MOSQUITTO: &str = "/usr/sbin/mosquitto";
const IMPORT: &str = env!("CARGO_BIN_EXE_midge_db_import");
const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/mosquitto-2.0.11.db"
);

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let p = std::env::temp_dir().join(format!(
            "midge-db-import-{tag}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Why the Mosquitto-driven tests cannot run here, if they cannot.
fn missing_tools() -> Option<String> {
    for tool in [
        MOSQUITTO,
        "/usr/bin/mosquitto_pub",
        "/usr/bin/mosquitto_sub",
    ] {
        if !Path::new(tool).exists() {
            return Some(format!(
                "{tool} is missing (apt-get install mosquitto mosquitto-clients)"
            ));
        }
    }
    None
}

/// For a test that drives Debian's Mosquitto: a temporary folder and its
/// `mosquitto` subfolder, or `None` (the test is skipped, and says why)
/// when the tools are missing.
fn mosquitto_work(name: &str) -> Option<(TempDir, PathBuf)> {
    if let Some(why) = missing_tools() {
        eprintln!("skipped: {why}");
        return None;
    }
    let work = TempDir::new(name);
    let mq = work.path().join("mosquitto");
    std::fs::create_dir_all(&mq).expect("mkdir");
    Some((work, mq))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn wait_for_port(port: u16, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited before listening: {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not listen on port {port} within 10 s");
}

/// Runs a command to completion (the mosquitto clients are given `-W`, so
/// none of them waits forever).
fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"))
}

fn pub_(port: u16, args: &[&str]) {
    let p = port.to_string();
    let mut all = vec!["-h", "127.0.0.1", "-p", &p];
    all.extend_from_slice(args);
    let out = run("mosquitto_pub", &all);
    assert!(
        out.status.success(),
        "mosquitto_pub {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `mosquitto_sub`, expecting `count` messages within a few seconds.
fn sub(port: u16, count: usize, args: &[&str]) -> Vec<String> {
    let p = port.to_string();
    let c = count.to_string();
    let mut all = vec!["-h", "127.0.0.1", "-p", &p, "-C", &c, "-W", "5"];
    all.extend_from_slice(args);
    let out = run("mosquitto_sub", &all);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "mosquitto_sub {args:?} got {text:?}, stderr {}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines().map(|l| l.trim_end().to_owned()).collect()
}

// --- A minimal MQTT 3.1.1 client, to leave a message in flight ------------

fn remaining_length(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
}

fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![first];
    remaining_length(body.len(), &mut p);
    p.extend_from_slice(body);
    p
}

fn string(s: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Reads one packet: (first byte, body).
fn read_packet(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut first = [0u8; 1];
    s.read_exact(&mut first).expect("read packet type");
    let mut len = 0usize;
    for i in 0..4 {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).expect("read remaining length");
        len |= usize::from(b[0] & 0x7F) << (7 * i);
        if b[0] & 0x80 == 0 {
            break;
        }
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).expect("read packet body");
    (first[0], body)
}

/// CONNECT with clean session 0; returns the stream and the CONNACK's
/// session-present flag.
fn connect_persistent(port: u16, client_id: &str) -> (TcpStream, bool) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut body = Vec::new();
    string("MQTT", &mut body);
    body.extend_from_slice(&[4, 0x00, 0, 60]);
    string(client_id, &mut body);
    s.write_all(&packet(0x10, &body)).expect("send CONNECT");
    let (t, b) = read_packet(&mut s);
    assert_eq!(t, 0x20, "CONNACK expected");
    assert_eq!(b.get(1), Some(&0), "connection refused: {b:?}");
    (s, b.first() == Some(&1))
}

/// A received PUBLISH: (dup, qos, packet id, topic, payload).
fn parse_publish(first: u8, body: &[u8]) -> (bool, u8, u16, String, Vec<u8>) {
    assert_eq!(first >> 4, 3, "PUBLISH expected, got {first:#x}");
    let qos = (first >> 1) & 3;
    let tl = usize::from(u16::from_be_bytes([body[0], body[1]]));
    let topic = String::from_utf8_lossy(&body[2..2 + tl]).into_owned();
    let mut at = 2 + tl;
    let mut pid = 0;
    if qos > 0 {
        pid = u16::from_be_bytes([body[at], body[at + 1]]);
        at += 2;
    }
    (first & 0x08 != 0, qos, pid, topic, body[at..].to_vec())
}

// --- Generating a mosquitto.db ----------------------------------------------

struct Mosquitto {
    child: Child,
    port: u16,
}

impl Mosquitto {
    fn start(dir: &Path) -> Mosquitto {
        let port = free_port();
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
                 persistence_location {}/\nautosave_interval 1\n",
                dir.display()
            ),
        )
        .expect("write mosquitto.conf");
        // Started as root, mosquitto drops to the `mosquitto` user: let it
        // write its file here whoever it runs as.
        set_mode(dir, 0o777);
        let mut child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto");
        wait_for_port(port, &mut child, "mosquitto");
        Mosquitto { child, port }
    }

    /// SIGTERM: Mosquitto saves its database and exits.
    fn stop(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("mosquitto did not stop within 10 s of SIGTERM");
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// What the generated file holds, to check after the import.
struct Generated {
    db: PathBuf,
    /// Packet id of the message left in flight to `inflight1`.
    inflight_pid: u16,
}

/// Runs Debian's broker through the scenario and returns its file.
fn generate(dir: &Path) -> Generated {
    let m = Mosquitto::start(dir);
    let port = m.port;
    // Retained: 3.1.1 QoS 1, 5.0 with properties, 5.0 with an expiry.
    pub_(
        port,
        &["-t", "r/one", "-m", "retained one", "-r", "-q", "1"],
    );
    pub_(
        port,
        &[
            "-V",
            "5",
            "-t",
            "r/two",
            "-m",
            "retained two",
            "-r",
            "-D",
            "publish",
            "user-property",
            "k",
            "v",
            "-D",
            "publish",
            "content-type",
            "text/plain",
        ],
    );
    pub_(
        port,
        &[
            "-V",
            "5",
            "-t",
            "r/exp",
            "-m",
            "expiring",
            "-r",
            "-q",
            "1",
            "-D",
            "publish",
            "message-expiry-interval",
            "3600",
        ],
    );
    // Persistent sessions, offline once subscribed.
    let p = port.to_string();
    let out = run(
        "mosquitto_sub",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &p,
            "-c",
            "-i",
            "sub311",
            "-q",
            "1",
            "-t",
            "x/#",
            "-E",
        ],
    );
    assert!(out.status.success(), "mosquitto_sub sub311");
    let out = run(
        "mosquitto_sub",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &p,
            "-V",
            "5",
            "-c",
            "-i",
            "sub5",
            "-x",
            "7200",
            "-q",
            "2",
            "-t",
            "x/#",
            "-t",
            "y/+",
            "-D",
            "subscribe",
            "subscription-identifier",
            "7",
            "-E",
        ],
    );
    assert!(out.status.success(), "mosquitto_sub sub5");
    // A message sent to a client that never acknowledges it.
    let (mut s, _) = connect_persistent(port, "inflight1");
    let mut body = vec![0, 1];
    string("z/#", &mut body);
    body.push(1);
    s.write_all(&packet(0x82, &body)).expect("SUBSCRIBE");
    let (t, _) = read_packet(&mut s);
    assert_eq!(t, 0x90, "SUBACK expected");
    pub_(port, &["-t", "z/1", "-m", "in flight", "-q", "1"]);
    let (first, body) = read_packet(&mut s);
    let (_, qos, inflight_pid, topic, payload) = parse_publish(first, &body);
    assert_eq!(
        (qos, topic.as_str(), &payload[..]),
        (1, "z/1", &b"in flight"[..])
    );
    drop(s); // no PUBACK
             // Queued while the others are offline.
    for i in 1..=3 {
        pub_(
            port,
            &[
                "-t",
                &format!("x/q{i}"),
                "-m",
                &format!("msg q1 {i}"),
                "-q",
                "1",
            ],
        );
    }
    pub_(
        port,
        &[
            "-V",
            "5",
            "-t",
            "x/q2",
            "-m",
            "msg q2",
            "-q",
            "2",
            "-D",
            "publish",
            "user-property",
            "a",
            "b",
        ],
    );
    pub_(port, &["-t", "y/z", "-m", "y msg", "-q", "1"]);
    std::thread::sleep(Duration::from_millis(300));
    m.stop();
    let db = dir.join("mosquitto.db");
    assert!(db.exists(), "mosquitto wrote no {}", db.display());
    if std::env::var_os("MIDGE_WRITE_FIXTURE").is_some() {
        std::fs::copy(&db, FIXTURE).expect("write fixture");
        eprintln!("wrote {FIXTURE}");
    }
    Generated { db, inflight_pid }
}

// --- Running midge ------------------------------------------------------------

/// midge on a store, with a listener on a free port.
fn start_midge(dir: &Path, store: &Path) -> support::RunningBroker {
    let conf = dir.join("midge.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {} 127.0.0.1\nallow_anonymous true\npersistence true\n\
             persistence_location {}/\n",
            free_port(),
            store.display()
        ),
    )
    .expect("write midge.conf");
    let conf = conf.to_string_lossy().into_owned();
    support::RunningBroker::with_args(&["-c", &conf])
}

fn import(args: &[&str]) -> Output {
    run(IMPORT, args)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Imports `db` into the store directory `store`; the summary printed must
/// hold each of `lines`.
fn import_checked(db: &Path, store: &Path, lines: &[&str]) {
    let loc = store.to_string_lossy().into_owned();
    let db = db.to_string_lossy().into_owned();
    let out = import(&["--persistence-location", &loc, &db]);
    let summary = text(&out.stdout);
    assert!(
        out.status.success(),
        "import failed: {summary}{}",
        text(&out.stderr)
    );
    for line in lines {
        assert!(summary.contains(line), "{line:?} not in:\n{summary}");
    }
}

#[test]
fn mosquitto_state_survives_the_switch() {
    let Some((work, mq)) = mosquitto_work("e2e") else {
        return;
    };
    let generated = generate(&mq);
    let store = work.path().join("store");
    import_checked(
        &generated.db,
        &store,
        &[
            "3 retained messages",
            "3 sessions",
            "4 subscriptions",
            "10 queued messages (1 in flight)",
            "Nothing skipped.",
        ],
    );

    let midge = start_midge(work.path(), &store);
    let port = midge.port;
    let restored =
        "Restored 3 retained messages, 3 sessions, 4 subscriptions and 10 queued messages";
    let deadline = Instant::now() + Duration::from_secs(5);
    while !midge.log_text().contains(restored) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(midge.log_text().contains(restored), "{}", midge.log_text());

    // Retained messages, with their properties.
    let mut got = sub(port, 3, &["-t", "r/#", "-v"]);
    got.sort();
    assert_eq!(
        got,
        ["r/exp expiring", "r/one retained one", "r/two retained two"]
    );
    let got = sub(port, 1, &["-V", "5", "-t", "r/two", "-F", "%t %p %P"]);
    assert!(got[0].starts_with("r/two retained two"), "{got:?}");
    assert!(got[0].contains("k:v"), "user property lost: {got:?}");

    // The 3.1.1 session gets what was queued for it, in order.
    let got = sub(
        port,
        4,
        &["-c", "-i", "sub311", "-q", "1", "-t", "x/#", "-v"],
    );
    assert_eq!(
        got,
        [
            "x/q1 msg q1 1",
            "x/q2 msg q1 2",
            "x/q3 msg q1 3",
            "x/q2 msg q2"
        ]
    );

    // The 5.0 session too, with the user property of the 5.0 message.
    let got = sub(
        port,
        5,
        &[
            "-V", "5", "-c", "-i", "sub5", "-x", "7200", "-q", "2", "-t", "x/#", "-F", "%t %p %P",
        ],
    );
    // (mosquitto_sub prints a QoS 2 message when its PUBREL arrives, so
    // that one may come last.)
    assert_eq!(got.len(), 5, "{got:?}");
    assert_eq!(
        got[..3],
        ["x/q1 msg q1 1", "x/q2 msg q1 2", "x/q3 msg q1 3"],
        "{got:?}"
    );
    assert!(
        got.iter()
            .any(|l| l.starts_with("x/q2 msg q2") && l.contains("a:b")),
        "{got:?}"
    );
    assert!(got.iter().any(|l| l == "y/z y msg"), "{got:?}");

    // The message left in flight is resent with DUP and its packet id.
    let (mut s, present) = connect_persistent(port, "inflight1");
    assert!(present, "inflight1's session was not restored");
    let (first, body) = read_packet(&mut s);
    let (dup, qos, pid, topic, payload) = parse_publish(first, &body);
    assert_eq!(
        (dup, qos, pid, topic.as_str(), &payload[..]),
        (true, 1, generated.inflight_pid, "z/1", &b"in flight"[..])
    );
}

#[test]
fn refuses_a_store_that_holds_state_unless_forced() {
    let work = TempDir::new("force");
    let loc = work.path().join("store").to_string_lossy().into_owned();
    let out = import(&["--persistence-location", &loc, FIXTURE]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = import(&["--persistence-location", &loc, FIXTURE]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--force"), "{err}");

    let out = import(&["--force", "--persistence-location", &loc, FIXTURE]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let aside = std::fs::read_dir(work.path().join("store"))
        .expect("ls")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains(".before-import-"))
        .count();
    assert_eq!(aside, 1, "the replaced store is kept beside");
}

#[test]
fn takes_the_destination_from_a_config_file() {
    let work = TempDir::new("conf");
    let store = work.path().join("from-conf");
    let conf = work.path().join("midge.conf");
    std::fs::write(
        &conf,
        format!(
            "persistence true\npersistence_location {}/\npersistence_file imported.db\n",
            store.display()
        ),
    )
    .expect("write conf");
    let c = conf.to_string_lossy().into_owned();
    let out = import(&["-c", &c, FIXTURE]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(store.join("imported.db").exists());
    assert!(text(&out.stdout).contains("imported.db"));
}

#[test]
fn damaged_or_foreign_input_is_one_line_and_exit_1() {
    let work = TempDir::new("bad");
    let fixture = std::fs::read(FIXTURE).expect("fixture");
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("text", b"listener 1883\n".to_vec()),
        ("truncated", fixture[..fixture.len() / 2].to_vec()),
    ];
    let mut v7 = fixture.clone();
    v7[22] = 7;
    cases.push(("version 7", v7));
    let mut huge = fixture.clone();
    // The first chunk's length, far beyond the file.
    huge[27] = 0xFF;
    cases.push(("bad length", huge));
    for (name, bytes) in cases {
        let input = work.path().join(format!("{}.db", name.replace(' ', "-")));
        std::fs::write(&input, &bytes).expect("write input");
        let loc = work
            .path()
            .join(format!("store-{}", name.replace(' ', "-")));
        let out = import(&[
            "--persistence-location",
            &loc.to_string_lossy(),
            &input.to_string_lossy(),
        ]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        assert_eq!(err.lines().count(), 1, "{name}: {err}");
        assert!(!err.contains("panicked"), "{name}: {err}");
        assert!(!loc.exists(), "{name}: nothing is written for bad input");
    }
    let out = import(&[
        "--persistence-location",
        "/nonexistent",
        "/nonexistent/mosquitto.db",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot read"));
}

/// Sends a QoS 2 PUBLISH (3.1.1) with packet id `pid`, optionally DUP.
fn publish_qos2(s: &mut TcpStream, topic: &str, payload: &[u8], pid: u16, dup: bool) {
    let mut body = Vec::new();
    string(topic, &mut body);
    body.extend_from_slice(&pid.to_be_bytes());
    body.extend_from_slice(payload);
    let first = 0x34 | if dup { 0x08 } else { 0 };
    s.write_all(&packet(first, &body)).expect("send PUBLISH");
}

/// Mosquitto saved a QoS 2 message it had acknowledged with PUBREC and
/// held for the PUBREL: after the import, Midge delivers it once, answers
/// the PUBREL with PUBCOMP, and does not deliver a resent PUBLISH again.
#[test]
fn an_incoming_qos2_message_awaiting_pubrel_is_delivered_once() {
    let Some((work, mq)) = mosquitto_work("pubrel") else {
        return;
    };
    let m = Mosquitto::start(&mq);
    // A persistent subscriber, offline by the time the message comes.
    let (mut s, _) = connect_persistent(m.port, "held-sub");
    let mut body = vec![0, 1];
    string("held/#", &mut body);
    body.push(2);
    s.write_all(&packet(0x82, &body)).expect("SUBSCRIBE");
    assert_eq!(read_packet(&mut s).0, 0x90, "SUBACK expected");
    drop(s);
    // The publisher gets its PUBREC and goes before sending PUBREL.
    let (mut p, _) = connect_persistent(m.port, "held-pub");
    publish_qos2(&mut p, "held/1", b"exactly once", 42, false);
    let (t, b) = read_packet(&mut p);
    assert_eq!((t, &b[..2]), (0x50, &[0u8, 42][..]), "PUBREC 42 expected");
    drop(p);
    std::thread::sleep(Duration::from_millis(300));
    m.stop();

    let store = work.path().join("store");
    import_checked(
        &mq.join("mosquitto.db"),
        &store,
        &[
            "2 sessions",
            "1 incoming QoS 2 messages awaiting their PUBREL, delivered now",
            "Nothing skipped.",
        ],
    );

    let midge = start_midge(work.path(), &store);
    // The subscriber has it before the publisher is back: the import
    // delivered it.
    let (mut s, present) = connect_persistent(midge.port, "held-sub");
    assert!(present, "the subscriber's session was not imported");
    let (first, body) = read_packet(&mut s);
    let (_, qos, pid, topic, payload) = parse_publish(first, &body);
    assert_eq!(
        (qos, topic.as_str(), &payload[..]),
        (2, "held/1", &b"exactly once"[..])
    );
    s.write_all(&packet(0x50, &pid.to_be_bytes()))
        .expect("PUBREC");
    assert_eq!(read_packet(&mut s).0, 0x62, "PUBREL expected");
    s.write_all(&packet(0x70, &pid.to_be_bytes()))
        .expect("PUBCOMP");
    // The publisher resends (DUP): PUBREC, no second delivery. Then its
    // PUBREL gets PUBCOMP.
    let (mut p, present) = connect_persistent(midge.port, "held-pub");
    assert!(present, "the publisher's session was not imported");
    publish_qos2(&mut p, "held/1", b"exactly once", 42, true);
    assert_eq!(read_packet(&mut p), (0x50, vec![0, 42]), "PUBREC 42");
    p.write_all(&packet(0x62, &[0, 42])).expect("PUBREL");
    assert_eq!(read_packet(&mut p), (0x70, vec![0, 42]), "PUBCOMP 42");
    // Nothing else reaches the subscriber: a second copy would arrive
    // within this wait.
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let mut byte = [0u8; 1];
    match s.read(&mut byte) {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) => {}
        other => panic!("expected nothing more, got {other:?} {byte:?}"),
    }
}
