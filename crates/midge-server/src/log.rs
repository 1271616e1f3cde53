//! Mosquitto-compatible logging: the same destinations (`log_dest stdout,
//! stderr, file, syslog, topic`), the same types (`log_type`), and lines in
//! the same form (`<unix time>: <message>`, or `log_timestamp_format`), so
//! existing log tooling keeps parsing them. Files are reopened on SIGHUP so
//! logrotate can move them away.
//!
//! Lines logged on a runtime worker thread go into a buffer that is written
//! when a worker goes idle ([`Logger::worker_idle`], the runtime's park hook)
//! or when 16 KiB have gathered: a burst of connections costs one write per
//! batch of lines, not one per line. Any other thread writes through, after
//! what is pending, so the order of lines is kept.

use midge_config::{LogConfig, LogDest};
use std::cell::Cell;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// Mosquitto's `log_type` values, as bits (the same as
/// [`midge_config::log_types`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogType(pub u32);

impl LogType {
    pub const ERROR: LogType = LogType(1);
    pub const WARNING: LogType = LogType(2);
    pub const NOTICE: LogType = LogType(4);
    pub const INFORMATION: LogType = LogType(8);
    pub const SUBSCRIBE: LogType = LogType(16);
    pub const UNSUBSCRIBE: LogType = LogType(32);
    pub const DEBUG: LogType = LogType(64);
    pub const WEBSOCKETS: LogType = LogType(128);
    pub const ALL: LogType = LogType(0xFF);
    /// Mosquitto's default set: error, warning, notice, information.
    pub const DEFAULT: LogType = LogType(1 | 2 | 4 | 8);

    /// syslog severity (RFC 5424) for this type.
    fn severity(self) -> u8 {
        match self {
            LogType::ERROR => 3,
            LogType::WARNING => 4,
            LogType::NOTICE => 5,
            LogType::DEBUG => 7,
            _ => 6,
        }
    }

    /// The last level of `$SYS/broker/log/<level>` for `log_dest topic`, as
    /// Mosquitto names them.
    pub fn topic_level(self) -> &'static str {
        match self {
            LogType::ERROR => "E",
            LogType::WARNING => "W",
            LogType::NOTICE => "N",
            LogType::INFORMATION => "I",
            LogType::SUBSCRIBE => "M",
            LogType::UNSUBSCRIBE => "U",
            LogType::DEBUG => "D",
            _ => "WS",
        }
    }
}

/// A log line for `log_dest topic`: the router publishes it.
#[derive(Debug)]
pub struct TopicLine {
    pub kind: LogType,
    pub line: String,
}

/// Where log lines go. Cheap to clone; shared by every task. Logging is off
/// the publish path (connects, subscribes, errors), so a mutex is fine.
#[derive(Clone)]
pub struct Logger {
    inner: Arc<Mutex<LoggerState>>,
    /// Types enabled, read without the lock.
    types: Arc<std::sync::atomic::AtomicU32>,
}

/// Bytes of pending lines at which a worker writes them without waiting to
/// go idle.
const PENDING_LIMIT: usize = 16 * 1024;

thread_local! {
    /// True on a runtime worker thread once it has parked: its lines may
    /// wait for [`Logger::flush`].
    static DEFERRING: Cell<bool> = const { Cell::new(false) };
}

struct LoggerState {
    config: LogConfig,
    /// Lines not yet written, per destination index in `config.dests`
    /// (standard streams and files only).
    pending: Vec<String>,
    files: Vec<(PathBuf, Option<File>)>,
    syslog: Option<UnixDatagram>,
    topic: Option<mpsc::UnboundedSender<TopicLine>>,
    reported_file_error: bool,
}

impl Logger {
    /// Logs the given types to stderr, as Mosquitto does with no configuration.
    pub fn stderr(types: LogType) -> Self {
        Logger::new(
            LogConfig {
                types: types.0,
                ..LogConfig::default()
            },
            false,
        )
    }

    /// A logger for `config`; `verbose` (`-v`) enables every type.
    pub fn new(config: LogConfig, verbose: bool) -> Self {
        let logger = Logger {
            inner: Arc::new(Mutex::new(LoggerState {
                config: LogConfig::default(),
                pending: Vec::new(),
                files: Vec::new(),
                syslog: None,
                topic: None,
                reported_file_error: false,
            })),
            types: Arc::new(std::sync::atomic::AtomicU32::new(0)),
        };
        logger.reconfigure(config, verbose);
        logger
    }

    /// Applies a reloaded configuration and reopens every file.
    pub fn reconfigure(&self, mut config: LogConfig, verbose: bool) {
        if verbose {
            config.types = LogType::ALL.0;
        }
        self.types
            .store(config.types, std::sync::atomic::Ordering::Relaxed);
        let Ok(mut state) = self.inner.lock() else {
            return;
        };
        state.write_pending();
        state.pending = vec![String::new(); config.dests.len()];
        state.files = config
            .dests
            .iter()
            .filter_map(|d| match d {
                LogDest::File(p) => Some((p.clone(), None)),
                _ => None,
            })
            .collect();
        state.syslog = None;
        state.config = config;
        state.open_files();
    }

    /// Reopens log files (after logrotate moved them).
    pub fn reopen(&self) {
        if let Ok(mut state) = self.inner.lock() {
            state.write_pending();
            state.open_files();
        }
    }

    /// For the runtime's `on_thread_park`, which runs on a worker about to
    /// go idle: writes what is pending, and from now on lets this thread's
    /// lines wait for the next time a worker goes idle.
    pub fn worker_idle(&self) {
        DEFERRING.with(|d| d.set(true));
        self.flush();
    }

    /// Writes the lines that workers left pending.
    pub fn flush(&self) {
        if let Ok(mut state) = self.inner.lock() {
            state.write_pending();
        }
    }

    /// Sends `log_dest topic` lines to the router.
    pub fn set_topic_sink(&self, sink: mpsc::UnboundedSender<TopicLine>) {
        if let Ok(mut state) = self.inner.lock() {
            state.topic = Some(sink);
        }
    }

    pub fn enabled(&self, t: LogType) -> bool {
        self.types.load(std::sync::atomic::Ordering::Relaxed) & t.0 != 0
    }

    /// `connection_messages`.
    pub fn connection_messages(&self) -> bool {
        self.inner
            .lock()
            .map(|s| s.config.connection_messages)
            .unwrap_or(true)
    }

    pub fn log(&self, t: LogType, args: std::fmt::Arguments<'_>) {
        use std::fmt::Write as _;
        if !self.enabled(t) {
            return;
        }
        let Ok(mut state) = self.inner.lock() else {
            return;
        };
        let state = &mut *state;
        // The line with its newline, in one buffer: one write per line on
        // the unbuffered standard streams.
        let mut line = String::with_capacity(128);
        match (&state.config.timestamp, &state.config.timestamp_format) {
            (false, _) => {}
            (true, Some(format)) => {
                let _ = write!(line, "{}: ", chrono::Local::now().format(format));
            }
            (true, None) => {
                let secs = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let _ = write!(line, "{secs}: ");
            }
        }
        let prefix = line.len();
        let _ = line.write_fmt(args);
        line.push('\n');
        let defer = DEFERRING.with(Cell::get);
        if !defer {
            state.write_pending();
        }
        // A destination that fails must not take the broker down, nor stop
        // the others.
        for i in 0..state.config.dests.len() {
            match &state.config.dests[i] {
                LogDest::Stdout | LogDest::Stderr | LogDest::File(_) if defer => {
                    if let Some(p) = state.pending.get_mut(i) {
                        p.push_str(&line);
                    }
                }
                LogDest::Stdout | LogDest::Stderr | LogDest::File(_) => state.write_to(i, &line),
                LogDest::Syslog => state.write_syslog(t, &line[prefix..line.len() - 1]),
                LogDest::Topic => {
                    if let Some(sink) = &state.topic {
                        let _ = sink.send(TopicLine {
                            kind: t,
                            line: line[..line.len() - 1].to_string(),
                        });
                    }
                }
            }
        }
        if state.pending.iter().map(String::len).sum::<usize>() >= PENDING_LIMIT {
            state.write_pending();
        }
    }
}

impl LoggerState {
    fn open_files(&mut self) {
        let mut failed = Vec::new();
        for (path, file) in &mut self.files {
            *file = match OpenOptions::new().create(true).append(true).open(&*path) {
                Ok(f) => Some(f),
                Err(e) => {
                    failed.push(format!(
                        "Error: Unable to open log file {}: {e}.",
                        path.display()
                    ));
                    None
                }
            };
        }
        for f in failed {
            let _ = writeln!(std::io::stderr().lock(), "{f}");
        }
    }

    /// Writes `text` (whole lines, each with its newline) to destination
    /// `i`: a standard stream or a file.
    fn write_to(&mut self, i: usize, text: &str) {
        match &self.config.dests[i] {
            LogDest::Stdout => {
                let _ = std::io::stdout().lock().write_all(text.as_bytes());
            }
            LogDest::Stderr => {
                let _ = std::io::stderr().lock().write_all(text.as_bytes());
            }
            LogDest::File(path) => {
                let Some((_, Some(file))) = self.files.iter_mut().find(|(p, _)| p == path) else {
                    return;
                };
                if file.write_all(text.as_bytes()).is_err() && !self.reported_file_error {
                    self.reported_file_error = true;
                    let _ = writeln!(
                        std::io::stderr().lock(),
                        "Error: cannot write to log file {}.",
                        path.display()
                    );
                }
            }
            LogDest::Syslog | LogDest::Topic => {}
        }
    }

    /// Writes every pending line, destination by destination.
    fn write_pending(&mut self) {
        for i in 0..self.pending.len() {
            if !self.pending[i].is_empty() {
                let text = std::mem::take(&mut self.pending[i]);
                self.write_to(i, &text);
                // Keep the buffer's capacity for the next batch.
                self.pending[i] = text;
                self.pending[i].clear();
            }
        }
    }

    fn write_syslog(&mut self, t: LogType, message: &str) {
        if self.syslog.is_none() {
            self.syslog = UnixDatagram::unbound().ok();
        }
        let Some(socket) = &self.syslog else {
            return;
        };
        // LOG_DAEMON (3) unless log_facility picks LOG_LOCAL0..7 (16..23).
        let facility = self.config.facility.map_or(3, |f| 16 + f);
        let pri = u32::from(facility) * 8 + u32::from(t.severity());
        let packet = format!("<{pri}>midge[{}]: {message}", std::process::id());
        let _ = socket.send_to(packet.as_bytes(), "/dev/log");
    }
}

/// `log!(logger, LogType::NOTICE, "format", args...)`
#[macro_export]
macro_rules! log {
    ($logger:expr, $t:expr, $($arg:tt)*) => {
        if $logger.enabled($t) {
            $logger.log($t, format_args!($($arg)*));
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_logger(path: &std::path::Path) -> Logger {
        Logger::new(
            LogConfig {
                dests: vec![LogDest::File(path.to_path_buf())],
                timestamp: false,
                ..LogConfig::default()
            },
            false,
        )
    }

    fn read(path: &std::path::Path) -> String {
        std::fs::read_to_string(path).unwrap_or_default()
    }

    #[test]
    fn worker_lines_wait_for_idle_and_keep_their_order() {
        let dir = std::env::temp_dir().join(format!("midge-log-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("batch.log");
        let log = file_logger(&path);

        // A thread that never went idle as a worker writes through.
        log!(log, LogType::NOTICE, "first");
        assert_eq!(read(&path), "first\n");

        let worker = {
            let log = log.clone();
            let path = path.clone();
            std::thread::spawn(move || {
                log.worker_idle();
                log!(log, LogType::NOTICE, "from a worker {}", 1);
                log!(log, LogType::NOTICE, "from a worker {}", 2);
                let before_idle = read(&path);
                log.worker_idle();
                (before_idle, read(&path))
            })
        };
        let (before_idle, after_idle) = worker.join().expect("worker thread");
        assert_eq!(before_idle, "first\n", "a worker's lines wait");
        assert_eq!(
            after_idle, "first\nfrom a worker 1\nfrom a worker 2\n",
            "written, in order, when the worker goes idle"
        );

        // Pending worker lines go out ahead of another thread's line.
        let worker = {
            let log = log.clone();
            std::thread::spawn(move || {
                log.worker_idle();
                log!(log, LogType::NOTICE, "pending");
            })
        };
        worker.join().expect("worker thread");
        log!(log, LogType::NOTICE, "last");
        assert_eq!(
            read(&path),
            "first\nfrom a worker 1\nfrom a worker 2\npending\nlast\n"
        );

        // A full buffer is written without waiting.
        let worker = {
            let log = log.clone();
            let path = path.clone();
            std::thread::spawn(move || {
                log.worker_idle();
                let long = "x".repeat(1000);
                for _ in 0..(PENDING_LIMIT / 1000 + 1) {
                    log!(log, LogType::NOTICE, "{long}");
                }
                read(&path).len()
            })
        };
        let written = worker.join().expect("worker thread");
        assert!(written > PENDING_LIMIT, "only {written} bytes written");
        std::fs::remove_dir_all(&dir).ok();
    }
}
