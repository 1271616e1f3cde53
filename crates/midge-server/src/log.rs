//! Mosquitto-compatible logging: the same destinations (`log_dest stdout,
//! stderr, file, syslog, topic`), the same types (`log_type`), and lines in
//! the same form (`<unix time>: <message>`, or `log_timestamp_format`), so
//! existing log tooling keeps parsing them. Files are reopened on SIGHUP so
//! logrotate can move them away.

use midge_config::{LogConfig, LogDest};
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

struct LoggerState {
    config: LogConfig,
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
            state.open_files();
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
        if !self.enabled(t) {
            return;
        }
        let message = args.to_string();
        let Ok(mut state) = self.inner.lock() else {
            return;
        };
        let line = match (&state.config.timestamp, &state.config.timestamp_format) {
            (false, _) => message.clone(),
            (true, Some(format)) => {
                format!("{}: {message}", chrono::Local::now().format(format))
            }
            (true, None) => {
                let secs = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                format!("{secs}: {message}")
            }
        };
        let dests = state.config.dests.clone();
        // One write per line on the unbuffered standard streams (`writeln!`
        // would make two: the line, then its newline).
        let terminated = format!("{line}\n");
        // A destination that fails must not take the broker down, nor stop
        // the others.
        for dest in &dests {
            match dest {
                LogDest::Stdout => {
                    let _ = std::io::stdout().lock().write_all(terminated.as_bytes());
                }
                LogDest::Stderr => {
                    let _ = std::io::stderr().lock().write_all(terminated.as_bytes());
                }
                LogDest::File(path) => state.write_file(path, &line),
                LogDest::Syslog => state.write_syslog(t, &message),
                LogDest::Topic => {
                    if let Some(sink) = &state.topic {
                        let _ = sink.send(TopicLine {
                            kind: t,
                            line: line.clone(),
                        });
                    }
                }
            }
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

    fn write_file(&mut self, path: &PathBuf, line: &str) {
        let Some((_, Some(file))) = self.files.iter_mut().find(|(p, _)| p == path) else {
            return;
        };
        if writeln!(file, "{line}").is_err() && !self.reported_file_error {
            self.reported_file_error = true;
            let _ = writeln!(
                std::io::stderr().lock(),
                "Error: cannot write to log file {}.",
                path.display()
            );
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
