//! Mosquitto-compatible log lines (`<unix time>: <message>`) filtered by log
//! type, so existing log tooling keeps parsing them.

use std::io::Write;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Mosquitto's `log_type` values, as bits.
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
}

/// Where log lines go. Cheap to clone; shared by every task.
#[derive(Clone)]
pub struct Logger {
    inner: Arc<LoggerInner>,
}

struct LoggerInner {
    types: u32,
}

impl Logger {
    /// Logs the given types to stderr, as Mosquitto does by default.
    pub fn stderr(types: LogType) -> Self {
        Logger {
            inner: Arc::new(LoggerInner { types: types.0 }),
        }
    }

    pub fn enabled(&self, t: LogType) -> bool {
        self.inner.types & t.0 != 0
    }

    pub fn log(&self, t: LogType, args: std::fmt::Arguments<'_>) {
        if !self.enabled(t) {
            return;
        }
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut err = std::io::stderr().lock();
        // A closed stderr must not take the broker down.
        let _ = writeln!(err, "{secs}: {args}");
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
