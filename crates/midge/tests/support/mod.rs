//! Starts the real `midge` binary on a free loopback port for a test, and
//! stops it when the test ends.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct RunningBroker {
    pub port: u16,
    child: Child,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl RunningBroker {
    /// `midge -p 0 -v [extra]`, waiting (bounded) for the listening port.
    pub fn start(extra: &[&str]) -> RunningBroker {
        let mut args = vec!["-p", "0"];
        args.extend_from_slice(extra);
        RunningBroker::with_args(&args)
    }

    /// `midge ARGS -v`, waiting (bounded) for its first IPv4 listener's port.
    pub fn with_args(args: &[&str]) -> RunningBroker {
        let mut child = Command::new(env!("CARGO_BIN_EXE_midge"))
            .args(args)
            .arg("-v")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start midge");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("Opening ipv4 listen socket on port ").nth(1) {
                    if let Ok(p) = rest.trim_end_matches('.').parse::<u16>() {
                        let _ = tx.send(p);
                    }
                }
                log2.lock().expect("log").push(line);
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("midge did not report its port within 10 s");
        RunningBroker { port, child, log }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log_text(&self) -> String {
        self.log.lock().expect("log").join("\n")
    }
}

impl Drop for RunningBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
