//! Smoke test of `midge_bench` against the real `midge`: every scenario runs
//! with tiny counts and about a second of publishing, prints JSON that
//! parses, delivers something, and loses nothing at QoS 1; `p2p
//! --persistent` runs against a midge with persistence on and its messages
//! go through the store; `p2p --persistent --offline` queues its messages for
//! offline sessions and delivers every acknowledged one after reconnecting.
//! Correctness only: no assertion here is about speed.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// `midge -p 0` (not verbose: the runs publish thousands of messages).
struct Broker {
    child: Child,
    port: u16,
}

impl Broker {
    fn start() -> Broker {
        Broker::start_with(None)
    }

    /// `midge -p 0`, with `-c config` when given (a config without
    /// listeners, so `-p 0` still picks the port).
    fn start_with(config: Option<&Path>) -> Broker {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_midge"));
        if let Some(c) = config {
            cmd.arg("-c").arg(c);
        }
        let mut child = cmd
            .args(["-p", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start midge");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("Opening ipv4 listen socket on port ").nth(1) {
                    if let Ok(p) = rest.trim_end_matches('.').parse::<u16>() {
                        let _ = tx.send(p);
                    }
                }
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("midge did not report its port within 10 s");
        Broker { child, port }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs one scenario and returns its parsed JSON report.
fn bench(broker: &Broker, args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_midge_bench"))
        .args(args)
        .args([
            "--port",
            &broker.port.to_string(),
            "--broker-pid",
            &broker.child.id().to_string(),
            "--duration",
            "1",
            "--drain",
            "0.5",
            "--timeout",
            "20",
            "--json",
        ])
        .output()
        .expect("run midge_bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "midge_bench {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout.lines().next().expect("one JSON line");
    let v: serde_json::Value = serde_json::from_str(line).expect("valid JSON");
    for key in [
        "scenario",
        "msgs_per_sec",
        "sent",
        "received",
        "loss_pct",
        "p50_us",
        "p90_us",
        "p99_us",
        "max_us",
        "duration_s",
        "broker_cpu_s",
        "broker_rss_start_kb",
        "broker_rss_end_kb",
    ] {
        assert!(v.get(key).is_some(), "{args:?}: no {key} in {v}");
    }
    assert_eq!(v["scenario"], args[0]);
    assert!(
        v["received"].as_u64().unwrap_or(0) > 0,
        "{args:?}: nothing received: {v}"
    );
    v
}

fn assert_no_loss(v: &serde_json::Value) {
    assert_eq!(v["loss_pct"].as_f64(), Some(0.0), "loss at QoS 1: {v}");
    assert_eq!(v["received"], v["expected"], "{v}");
}

#[test]
fn every_scenario_runs_against_midge() {
    let broker = Broker::start();

    // QoS 0: loss is allowed (and reported), deliveries are not optional.
    let v = bench(&broker, &["fanin", "--publishers", "2", "--count", "500"]);
    assert!(
        v["p50_us"].is_u64(),
        "latency measured with a 64-byte payload: {v}"
    );
    let v = bench(
        &broker,
        &[
            "fanout",
            "--subscribers",
            "3",
            "--count",
            "300",
            "--settle",
            "0.2",
        ],
    );
    assert!(
        v["broker_rss_settled_kb"].as_u64().is_some_and(|kb| kb > 0),
        "--settle samples the broker once more: {v}"
    );

    // QoS 1: every message acknowledged to the publisher reaches its subscriber.
    let v = bench(
        &broker,
        &["p2p", "--pairs", "2", "--window", "8", "--count", "500"],
    );
    assert_no_loss(&v);
    assert_eq!(v["sent"], 1000, "{v}");
    let v = bench(&broker, &["latency", "--rate", "500"]);
    assert_no_loss(&v);
    assert!(v["p99_us"].is_u64(), "{v}");
    let v = bench(
        &broker,
        &["fanin", "--qos", "1", "--publishers", "2", "--count", "300"],
    );
    assert_no_loss(&v);
    let v = bench(
        &broker,
        &[
            "fanout",
            "--qos",
            "2",
            "--subscribers",
            "2",
            "--count",
            "200",
        ],
    );
    assert_no_loss(&v);
    assert_eq!(v["received"], 400, "{v}");

    let v = bench(
        &broker,
        &[
            "subs",
            "--qos",
            "1",
            "--filters",
            "2000",
            "--filters-per-subscribe",
            "100",
            "--publishers",
            "2",
            "--count",
            "200",
        ],
    );
    assert_no_loss(&v);
    assert_eq!(v["filters"], 2000);

    let v = bench(&broker, &["conn", "--connections", "50", "--hold", "0"]);
    assert_eq!(v["received"], 50, "every connection got its CONNACK: {v}");
    assert_eq!(v["failed"], 0, "{v}");

    // Connect, CONNACK, DISCONNECT in a loop for the second of --duration.
    let v = bench(
        &broker,
        &[
            "churn",
            "--connect-concurrency",
            "4",
            "--client-threads",
            "1",
        ],
    );
    assert_eq!(v["failed"], 0, "{v}");
    assert_eq!(v["received"], v["connections"], "{v}");
    assert!(v["p50_us"].is_u64(), "connect latency measured: {v}");
}

/// A directory removed at the end of the test.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn p2p_to_persistent_sessions_through_the_store() {
    let dir = TempDir::new("midge-bench-smoke-store");
    let conf = dir.0.join("midge.conf");
    std::fs::write(
        &conf,
        format!(
            "persistence true\npersistence_location {}/\npersistence_sync always\n",
            dir.0.display()
        ),
    )
    .expect("write config");
    let broker = Broker::start_with(Some(&conf));
    let args = [
        "p2p",
        "--persistent",
        "--pairs",
        "2",
        "--window",
        "8",
        "--count",
        "300",
    ];
    let v = bench(&broker, &args);
    assert_no_loss(&v);
    assert_eq!(v["sent"], 600, "{v}");
    assert_eq!(v["persistent"], true, "{v}");
    // The sessions went through the store: it is more than its 32-byte
    // header. (Deliveries acknowledged within the store thread's hold-back
    // are never written, by design, so how many of the 600 are in the file
    // depends on timing; with TCP_NODELAY usually none.)
    let len = std::fs::metadata(dir.0.join("midge.db"))
        .map(|m| m.len())
        .unwrap_or(0);
    assert!(len > 32, "store file holds {len} bytes");
    // Same fixed client ids again: the earlier sessions are ended first, so
    // nothing from the first run is counted twice.
    let v = bench(&broker, &args);
    assert_no_loss(&v);
    assert_eq!(v["received"], 600, "{v}");
}

#[test]
fn p2p_to_offline_persistent_sessions_through_the_store() {
    let dir = TempDir::new("midge-bench-smoke-offline");
    let conf = dir.0.join("midge.conf");
    // No queue limit: by default a session queues 1000 messages and drops
    // the rest, which the bench would rightly report as loss.
    std::fs::write(
        &conf,
        format!(
            "max_queued_messages 0\nmax_queued_bytes 0\n\
             persistence true\npersistence_location {}/\npersistence_sync always\n",
            dir.0.display()
        ),
    )
    .expect("write config");
    let broker = Broker::start_with(Some(&conf));
    let v = bench(
        &broker,
        &[
            "p2p",
            "--persistent",
            "--offline",
            "--pairs",
            "2",
            "--window",
            "8",
        ],
    );
    assert_eq!(v["offline"], true, "{v}");
    assert_eq!(v["persistent"], true, "{v}");
    // Every publish the broker acknowledged was delivered after reconnecting.
    let acked = v["acked"].as_u64().expect("acked");
    assert!(acked > 0, "{v}");
    assert_eq!(v["expected"], acked, "{v}");
    assert_eq!(v["delivered"], acked, "{v}");
    assert_no_loss(&v);
    assert_eq!(v["msgs_per_sec"], v["publish_rate"], "{v}");
    assert!(v["publish_rate"].as_f64().unwrap_or(0.0) > 0.0, "{v}");
    assert!(v["drain_s"].as_f64().unwrap_or(0.0) > 0.0, "{v}");
    assert!(v["msgs_per_cpu_s"].is_number(), "{v}");
    // Nobody could acknowledge a delivery early: everything was written.
    let len = std::fs::metadata(dir.0.join("midge.db"))
        .map(|m| m.len())
        .unwrap_or(0);
    assert!(
        len > 64 * acked,
        "store file holds {len} bytes for {acked} messages"
    );
}

#[test]
fn offline_without_persistent_p2p_is_one_clear_error() {
    for args in [
        &["p2p", "--offline"][..],
        &["fanin", "--persistent", "--offline"],
        &["p2p", "--persistent", "--offline", "--qos", "0"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_midge_bench"))
            .args(args)
            .args(["--port", "1", "--duration", "1"])
            .output()
            .expect("run midge_bench");
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.starts_with("midge_bench: error: --offline") && err.trim_end().lines().count() == 1,
            "{args:?}: {err}"
        );
    }
}

#[test]
fn unreachable_broker_is_one_clear_error() {
    // Bind and drop a listener to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let out = Command::new(env!("CARGO_BIN_EXE_midge_bench"))
        .args(["fanin", "--port", &port.to_string(), "--duration", "1"])
        .output()
        .expect("run midge_bench");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("midge_bench: error:") && err.trim_end().lines().count() == 1,
        "{err}"
    );
    assert!(err.contains("cannot connect"), "{err}");
}
