//! The same ACL file given to Debian's `/usr/sbin/mosquitto` (2.0) and to
//! [`AclFile`]: for each case, both must give the expected answer.
//!
//! Writes are observed as the PUBACK reason code of an MQTT 5 QoS 1 PUBLISH
//! (0x87 when refused); reads as whether a retained message, published by a
//! user allowed everything, reaches a subscriber. Subscriptions are sent as raw
//! MQTT 3.1.1 packets to read the SUBACK code. Skipped, with the reason
//! printed, where the broker or its clients are not installed.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use midge_auth::{Access, AclFile};

const MOSQUITTO: &str = "/usr/sbin/mosquitto";
const TOOLS: [&str; 3] = [
    "/usr/bin/mosquitto_pub",
    "/usr/bin/mosquitto_sub",
    "/usr/bin/mosquitto_passwd",
];

const ACL: &str = "\
topic read public/#
topic deny public/private/#
topic write with space/topic name

user admin
topic readwrite #

user alice
topic readwrite a/#
topic deny a/secret
topic readwrite $SYS/broker/x

user bob
topic read +/status

pattern readwrite clients/%c/#
pattern read users/%u/inbox
pattern deny clients/%c/locked
pattern deny a/%u/blocked
";

const USERS: [(&str, &str); 5] = [
    ("admin", "adminpw"),
    ("alice", "alicepw"),
    ("bob", "bobpw"),
    ("carol", "carolpw"),
    ("c+d", "cdpw"),
];

struct Broker {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn installed() -> bool {
    for p in std::iter::once(MOSQUITTO).chain(TOOLS) {
        if !Path::new(p).exists() {
            eprintln!("SKIPPED: {p} not installed (apt-get install mosquitto mosquitto-clients)");
            return false;
        }
    }
    true
}

fn start(name: &str) -> Broker {
    let dir = std::env::temp_dir().join(format!(
        "midge-acl-vs-mosquitto-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let pw = dir.join("passwd");
    std::fs::write(&pw, "").unwrap();
    for (user, pass) in USERS {
        let out = Command::new(TOOLS[2])
            .args(["-b", pw.to_str().unwrap(), user, pass])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let acl = dir.join("acl");
    std::fs::write(&acl, ACL).unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = dir.join("mosquitto.conf");
    let mut text = format!(
        "listener {port} 127.0.0.1\nallow_anonymous true\npassword_file {}\nacl_file {}\n",
        pw.display(),
        acl.display()
    );
    // As root, mosquitto drops to the user `mosquitto`, who cannot read our files.
    if is_root() {
        text.push_str("user root\n");
    }
    std::fs::write(&conf, text).unwrap();
    let child = Command::new(MOSQUITTO)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let broker = Broker { child, port, dir };
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "mosquitto did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    broker
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

fn password(user: &str) -> &'static str {
    USERS
        .iter()
        .find(|(u, _)| *u == user)
        .map(|(_, p)| *p)
        .unwrap()
}

fn client_args(port: u16, id: &str, user: Option<&str>) -> Vec<String> {
    let mut args = vec!["-p".into(), port.to_string(), "-i".into(), id.into()];
    if let Some(u) = user {
        args.extend(["-u".into(), u.into(), "-P".into(), password(u).into()]);
    }
    args
}

/// Does mosquitto let this client publish to `topic`?
fn mosquitto_write(b: &Broker, id: &str, user: Option<&str>, topic: &str) -> bool {
    let out = Command::new(TOOLS[0])
        .args(client_args(b.port, id, user))
        .args(["-V", "5", "-q", "1", "-d", "-m", "x", "-t", topic])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("received PUBACK"), "{id} {topic}: {text}");
    !text.contains("RC:135")
}

/// Does a retained message on `topic` reach this client?
fn mosquitto_read(b: &Broker, id: &str, user: Option<&str>, topic: &str) -> bool {
    let admin = client_args(b.port, "admin-pub", Some("admin"));
    let publish = |args: &[&str]| {
        let st = Command::new(TOOLS[0])
            .args(&admin)
            .args(["-q", "1", "-r", "-t", topic])
            .args(args)
            .status()
            .unwrap();
        assert!(st.success());
    };
    publish(&["-m", "retained"]);
    let out = Command::new(TOOLS[1])
        .args(client_args(b.port, id, user))
        .args(["-C", "1", "-W", "1", "-t", topic])
        .output()
        .unwrap();
    publish(&["-n"]);
    String::from_utf8_lossy(&out.stdout).contains("retained")
}

fn mqtt_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn packet(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

/// The SUBACK return code mosquitto gives an MQTT 3.1.1 SUBSCRIBE.
fn mosquitto_suback(b: &Broker, id: &str, user: Option<&str>, filter: &str) -> u8 {
    let mut s = TcpStream::connect(("127.0.0.1", b.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut body = Vec::new();
    mqtt_str(&mut body, "MQTT");
    body.push(4);
    body.push(0x02 | if user.is_some() { 0xc0 } else { 0 });
    body.extend_from_slice(&60u16.to_be_bytes());
    mqtt_str(&mut body, id);
    if let Some(u) = user {
        mqtt_str(&mut body, u);
        mqtt_str(&mut body, password(u));
    }
    s.write_all(&packet(0x10, &body)).unwrap();
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack).unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0], "CONNACK");
    let mut body = vec![0, 1];
    mqtt_str(&mut body, filter);
    body.push(0);
    s.write_all(&packet(0x82, &body)).unwrap();
    let mut suback = [0u8; 5];
    s.read_exact(&mut suback).unwrap();
    assert_eq!(suback[..4], [0x90, 3, 0, 1], "SUBACK");
    suback[4]
}

#[rustfmt::skip]
const CASES: &[(&str, Option<&str>, &str, Access, bool)] = &[
    ("c1", None, "public/news", Access::Read, true),
    ("c1", None, "public/news", Access::Write, false),
    ("c1", None, "public/private/x", Access::Read, false),
    ("c1", None, "public/private", Access::Read, false),
    ("c1", None, "with space/topic name", Access::Write, true),
    ("c1", None, "a/x", Access::Write, false),
    ("c1", Some("alice"), "a/x", Access::Write, true),
    ("c1", Some("alice"), "a/secret", Access::Write, false),
    ("c1", Some("alice"), "a/secret", Access::Read, false),
    ("c1", Some("alice"), "a/secret/x", Access::Write, true),
    ("c1", Some("alice"), "public/news", Access::Read, false),
    ("c1", Some("alice"), "a/alice/blocked", Access::Write, true), // user grant beats pattern deny
    ("c1", Some("alice"), "$SYS/broker/x", Access::Write, false),  // $SYS is never writable
    ("c1", Some("bob"), "x/status", Access::Read, true),
    ("c1", Some("bob"), "x/status", Access::Write, false),
    ("cid", Some("carol"), "clients/cid/x", Access::Write, true),
    ("cid", Some("carol"), "clients/cid/x", Access::Read, true),
    ("cid", Some("carol"), "clients/other/x", Access::Write, false),
    ("cid", Some("carol"), "clients/cid/locked", Access::Write, false),
    ("cid", Some("carol"), "users/carol/inbox", Access::Read, true),
    ("cid", Some("carol"), "users/carol/inbox", Access::Write, false),
    ("cid", None, "clients/cid/x", Access::Write, true),
    ("a+b", Some("carol"), "users/carol/inbox", Access::Read, false), // `+` in the id: no patterns
    ("cid", Some("c+d"), "clients/cid/x", Access::Write, false),
];

#[test]
fn midge_and_mosquitto_agree() {
    if !installed() {
        return;
    }
    let acl = AclFile::parse(ACL).unwrap();
    let b = start("agree");
    let mut failures = Vec::new();
    for &(id, user, topic, access, expected) in CASES {
        let midge = acl.check(id, user, topic, access);
        let mosq = match access {
            Access::Write => mosquitto_write(&b, id, user, topic),
            Access::Read => mosquitto_read(&b, id, user, topic),
        };
        if midge != expected || mosq != expected {
            failures.push(format!(
                "{id:?} {user:?} {topic:?} {access:?}: expected {expected}, midge {midge}, mosquitto {mosq}"
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Mosquitto 2.0 substitutes a client id containing `/` as several levels;
/// Midge refuses the granting pattern (documented in `midge_auth::acl`).
#[test]
fn slash_in_client_id_is_where_midge_is_stricter() {
    if !installed() {
        return;
    }
    let acl = AclFile::parse(ACL).unwrap();
    let b = start("slash");
    assert!(mosquitto_write(&b, "c/d", Some("carol"), "clients/c/d/x"));
    assert!(!acl.check("c/d", Some("carol"), "clients/c/d/x", Access::Write));
    // The deny pattern is applied by both, substituted.
    assert!(!mosquitto_write(
        &b,
        "c/d",
        Some("carol"),
        "clients/c/d/locked"
    ));
    assert!(!acl.check("c/d", Some("carol"), "clients/c/d/locked", Access::Write));
}

/// Mosquitto 2.0's acl_file grants every SUBSCRIBE; `check_subscribe`
/// refuses a filter only when nothing could ever be delivered through it,
/// and the broker then delivers nothing there either.
#[test]
fn subscribe_is_granted_by_mosquitto() {
    if !installed() {
        return;
    }
    let acl = AclFile::parse(ACL).unwrap();
    let b = start("subscribe");
    for (id, user, filter, midge) in [
        ("s1", Some("bob"), "+/status", true),
        ("s2", Some("bob"), "nothing", false),
        ("s5", Some("bob"), "nothing/#", true), // nothing/status
        ("s3", None, "public/private/#", false),
        ("s4", Some("carol"), "clients/+/locked", false),
    ] {
        assert_eq!(acl.check_subscribe(id, user, filter), midge, "{filter}");
        assert_eq!(mosquitto_suback(&b, id, user, filter), 0, "{filter}");
    }
    assert!(!mosquitto_read(&b, "s3", None, "public/private/x"));
}
