//! Midge's configuration: Mosquitto 2.0's `mosquitto.conf` format, read into
//! a typed [`Config`] with Mosquitto's defaults and default rules applied.
//!
//! This crate owns the file format, the option table ([`OPTIONS`]), the
//! typed result and its defaults, and errors that say `file:line: reason`.
//! It does not bind sockets, read password files or know MQTT: the server
//! turns a [`Config`] into listeners and limits.
//!
//! Every option of Mosquitto 2.0 is recognised. The ones Midge does not
//! implement yet are refused with "`NAME` is not supported by midge yet",
//! never skipped: an operator moving from Mosquitto must not get a broker
//! that silently drops `password_file` or `persistence true`. Parsing stops
//! at the first error.
//!
//! ```
//! use std::path::Path;
//! let config = midge_config::parse_str("listener 1883\nallow_anonymous true\n",
//!                                      Path::new("mosquitto.conf")).unwrap();
//! assert_eq!(config.listeners.len(), 1);
//! assert!(config.allow_anonymous);
//!
//! let err = midge_config::parse_str("psk_file x\n", Path::new("m.conf")).unwrap_err();
//! assert_eq!(err.to_string(), "m.conf:1: psk_file is not supported by midge yet");
//! ```
#![forbid(unsafe_code)]

mod config;
mod error;
mod options;
mod parser;

use std::path::Path;

pub use config::{
    log_types, Config, ListenAddress, ListenerConfig, ListenerProtocol, LogConfig, LogDest,
    PersistenceSync, SocketDomain, TlsConfig, DEFAULT_AUTO_ID_PREFIX, DEFAULT_PORT,
};
pub use error::ConfigError;
pub use options::{lookup as lookup_option, MosquittoOption, Support, OPTIONS};

/// Reads a `mosquitto.conf` and the files its `include_dir` lines name.
pub fn parse_file(path: &Path) -> Result<Config, ConfigError> {
    parser::parse_main_file(path)
}

/// Parses the text of a main configuration file. `origin` names it in
/// errors and in [`Config::sources`]; `include_dir` is still read from disk,
/// a relative directory from the current directory, as Mosquitto does.
pub fn parse_str(text: &str, origin: &Path) -> Result<Config, ConfigError> {
    parser::parse_main_bytes(text.as_bytes(), origin)
}

#[cfg(test)]
mod tests;
