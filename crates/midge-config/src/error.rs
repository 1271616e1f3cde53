//! Configuration errors. Every one names the file and, when a line is at
//! fault, the line: `{file}:{line}: {reason}`, or `{file}: {reason}` when the
//! file itself cannot be read. The variants group errors by what the operator
//! has to do about them (fix a typo, wait for a feature, fix a value, fix the
//! file system).

use std::io;
use std::path::{Path, PathBuf};

/// Why a configuration was refused. Parsing stops at the first error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A word that is no Mosquitto 2.0 option at all.
    #[error("{}:{line}: {reason}", file.display())]
    UnknownOption {
        file: PathBuf,
        line: usize,
        option: String,
        reason: String,
    },
    /// A Mosquitto option (or option value) that Midge does not support.
    #[error("{}:{line}: {reason}", file.display())]
    NotSupported {
        file: PathBuf,
        line: usize,
        option: String,
        reason: String,
    },
    /// A value that is not a number, out of range, not `true`/`false`, not one
    /// of the allowed words, or the wrong number of arguments.
    #[error("{}:{line}: {reason}", file.display())]
    BadValue {
        file: PathBuf,
        line: usize,
        option: String,
        reason: String,
    },
    /// The main file or an included file is missing or cannot be read.
    #[error("{}: {reason}", file.display())]
    Unreadable {
        file: PathBuf,
        reason: String,
        #[source]
        source: io::Error,
    },
    /// An `include_dir` directory that cannot be listed.
    #[error("{}:{line}: {reason}", file.display())]
    IncludeDir {
        file: PathBuf,
        line: usize,
        dir: PathBuf,
        reason: String,
        #[source]
        source: io::Error,
    },
    /// Two listeners on the same port and address.
    #[error("{}:{line}: {reason}", file.display())]
    DuplicateListener {
        file: PathBuf,
        line: usize,
        reason: String,
    },
    /// Options that are each valid but not together or not there (for
    /// example `per_listener_settings true` after a security option, or
    /// `include_dir` in an included file), and lines that are not UTF-8.
    #[error("{}:{line}: {reason}", file.display())]
    Invalid {
        file: PathBuf,
        line: usize,
        reason: String,
    },
}

impl ConfigError {
    /// The file at fault.
    pub fn file(&self) -> &Path {
        match self {
            ConfigError::UnknownOption { file, .. }
            | ConfigError::NotSupported { file, .. }
            | ConfigError::BadValue { file, .. }
            | ConfigError::Unreadable { file, .. }
            | ConfigError::IncludeDir { file, .. }
            | ConfigError::DuplicateListener { file, .. }
            | ConfigError::Invalid { file, .. } => file,
        }
    }

    /// The 1-based line at fault; `None` when the whole file is.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::UnknownOption { line, .. }
            | ConfigError::NotSupported { line, .. }
            | ConfigError::BadValue { line, .. }
            | ConfigError::IncludeDir { line, .. }
            | ConfigError::DuplicateListener { line, .. }
            | ConfigError::Invalid { line, .. } => Some(*line),
            ConfigError::Unreadable { .. } => None,
        }
    }

    /// The reason, without the file and line.
    pub fn reason(&self) -> &str {
        match self {
            ConfigError::UnknownOption { reason, .. }
            | ConfigError::NotSupported { reason, .. }
            | ConfigError::BadValue { reason, .. }
            | ConfigError::Unreadable { reason, .. }
            | ConfigError::IncludeDir { reason, .. }
            | ConfigError::DuplicateListener { reason, .. }
            | ConfigError::Invalid { reason, .. } => reason,
        }
    }
}
