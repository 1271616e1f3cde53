//! Authentication files shared by the broker and the tools, in Mosquitto's formats.
//!
//! This crate owns the on-disk formats and the checks made against them; it knows
//! nothing of connections or MQTT: the password file that `mosquitto_passwd`
//! writes and the `password_file` option reads, and the `acl_file` of topic
//! rules (see [`acl`]):
//!
//! ```text
//! # comment
//! alice:$7$101$<base64 salt>$<base64 hash>     PBKDF2-HMAC-SHA512 (Mosquitto 2.0 default)
//! bob:$6$<base64 salt>$<base64 hash>           SHA-512 of password || salt (1.x)
//! ```
//!
//! Everything read here comes from outside, so parsing never panics: a line that
//! does not parse is reported with its number and the reason. Verification costs
//! the same whether or not the user exists, and compares hashes in constant time.
//!
//! ```
//! use midge_auth::PasswordFile;
//!
//! let mut file = PasswordFile::default();
//! file.set("alice", "secret", 101).unwrap();
//! let text = file.to_string();
//! let file = PasswordFile::parse(&text).unwrap();
//! assert!(file.verify("alice", "secret"));
//! assert!(!file.verify("alice", "wrong"));
//! assert!(!file.verify("mallory", "secret"));
//! ```
#![forbid(unsafe_code)]

pub mod acl;
mod error;
mod file;
mod hash;

pub use acl::{Access, AclError, AclFile, AclLineError};
pub use error::{HashError, LineError, PasswordFileError, UsernameError};
pub use file::{validate_username, PasswordFile};
pub use hash::{HashAlgorithm, PasswordHash, DEFAULT_ITERATIONS, HASH_LEN, SALT_LEN};
