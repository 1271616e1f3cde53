//! Errors, grouped by what went wrong: a line of the file, a hash string, a
//! username given to `set`, or the operating system.

use std::path::PathBuf;

/// Why a `$6$` / `$7$` hash string is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HashError {
    /// Plain text where a hash was expected (`mosquitto_passwd -U` converts these).
    #[error(
        "password is not hashed (does not start with '$'); convert the file with midge_passwd -U"
    )]
    NotHashed,
    #[error("unknown hash type '${0}$' (expected $6$ or $7$)")]
    UnknownType(String),
    #[error("wrong number of '$' fields for a ${kind}$ hash: expected {expected}, found {found}")]
    FieldCount {
        kind: u8,
        expected: usize,
        found: usize,
    },
    #[error("invalid iteration count '{0}' (expected a whole number from 1 to 4294967295)")]
    Iterations(String),
    #[error("salt is not valid base64")]
    SaltBase64,
    #[error("salt is empty")]
    EmptySalt,
    #[error("hash is not valid base64")]
    HashBase64,
    #[error("hash is {0} bytes long, expected 64 (SHA-512)")]
    HashLength(usize),
}

/// Why a username cannot be stored in a password file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UsernameError {
    #[error("username is empty")]
    Empty,
    #[error("username must be less than 65536 bytes long")]
    TooLong,
    #[error("username must not contain control characters")]
    ControlCharacter,
    #[error("username must not contain the ':' character")]
    Colon,
}

/// Why one line of a password file does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LineError {
    #[error("not valid UTF-8")]
    NotUtf8,
    #[error("missing ':' between username and password")]
    MissingSeparator,
    #[error("empty username")]
    EmptyUsername,
    #[error("username is 65536 bytes or longer")]
    UsernameTooLong,
    #[error("empty password")]
    EmptyPassword,
    #[error("unexpected ':' after the password hash")]
    ExtraSeparator,
    #[error("duplicate username '{username}' (first defined on line {first_line})")]
    DuplicateUser { username: String, first_line: usize },
    #[error("{0}")]
    Hash(#[from] HashError),
}

/// Everything that can go wrong reading, changing or writing a password file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PasswordFileError {
    /// A line of the file is malformed. `line` counts from 1.
    #[error("line {line}: {reason}")]
    Line { line: usize, reason: LineError },
    #[error("invalid username: {0}")]
    Username(#[from] UsernameError),
    #[error("number of iterations must be > 0")]
    ZeroIterations,
    #[error("cannot get random bytes for the salt: {0}")]
    Random(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl PasswordFileError {
    /// The 1-based line number, for errors about one line of the file.
    pub fn line(&self) -> Option<usize> {
        match self {
            PasswordFileError::Line { line, .. } => Some(*line),
            _ => None,
        }
    }
}
