//! Midge's crash-safe persistence.
//!
//! The core lists every durable change as a [`StoreOp`]; the server hands
//! each group of them to [`Store::apply`] and calls [`Store::sync`] once
//! (group commit) before the acknowledgements of that group go out. At
//! start-up [`open`] recovers what was stored as a [`RestoredState`] for
//! `Broker::restore`.
//!
//! The engine is a single file: a versioned header, then one CRC-framed
//! record per `apply` (see `format`). The store keeps the live state in
//! memory as the encoded operations that made it, so a checkpoint
//! ([`Store::checkpoint`], and automatically when the journal grows well
//! beyond the live state) rewrites only the live operations to a temporary
//! file, syncs it and renames it over the store. Recovery replays the
//! records in order and stops at the first one that is torn or damaged:
//! everything before it is kept, and a damaged file is copied aside before
//! it is rewritten, so `open` never fails because of what a file contains.
//! `docs/durability.md` says what is guaranteed under each [`SyncPolicy`]
//! and why this engine was chosen over redb and fjall.
//!
//! This crate owns the bytes on disk and nothing else: it does not decide
//! what is durable (the core does) nor when to sync (the server does).
#![forbid(unsafe_code)]

mod codec;
mod format;
mod live;
pub mod mosquitto_db;
mod store;

#[cfg(test)]
mod tests;

pub use codec::CodecError;
pub use store::open;

use std::path::PathBuf;
use std::time::Duration;

use midge_core::{RestoredState, StoreOp};

/// When [`Store::sync`] forces written data to stable storage
/// (`persistence_sync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncPolicy {
    /// fsync every group commit: nothing acknowledged is lost, on a crash
    /// or on power loss.
    #[default]
    Always,
    /// fsync at most once per interval: acknowledged messages of the last
    /// interval can be lost on power loss, not on `kill -9`.
    Interval(Duration),
    /// Leave it to the OS: lost on power loss, kept on `kill -9`.
    Never,
}

/// Where the store lives and how hard it syncs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// The directory (`persistence_location`); created if missing.
    pub dir: PathBuf,
    /// The file in it (`persistence_file`, default `midge.db`).
    pub file_name: String,
    pub sync: SyncPolicy,
}

impl StoreOptions {
    /// `midge.db` in `dir`, syncing every group commit.
    pub fn new(dir: impl Into<PathBuf>) -> StoreOptions {
        StoreOptions {
            dir: dir.into(),
            file_name: DEFAULT_FILE_NAME.to_string(),
            sync: SyncPolicy::Always,
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(&self.file_name)
    }
}

/// Default `persistence_file`.
pub const DEFAULT_FILE_NAME: &str = "midge.db";

/// What [`open`] recovered, and what it could not.
#[derive(Debug, Clone, Default)]
pub struct Recovery {
    pub state: RestoredState,
    /// What was damaged, where it was moved aside, and what was lost; one
    /// line each, for the log.
    pub warnings: Vec<String>,
    pub stats: RecoveryStats,
}

/// Counts and timing of a recovery.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryStats {
    /// Size of the file read.
    pub bytes_read: u64,
    /// Bytes after the last good record that were not replayed.
    pub bytes_discarded: u64,
    /// Records (group commits or checkpoint chunks) replayed.
    pub records: u64,
    /// Operations replayed.
    pub ops: u64,
    pub retained: usize,
    pub sessions: usize,
    pub subscriptions: usize,
    pub deliveries: usize,
    pub elapsed: Duration,
}

/// Durable storage of the broker's state.
pub trait Store: Send {
    /// Writes a group of operations. The group is atomic: after a crash it
    /// is recovered whole or not at all. It is durable once [`Store::sync`]
    /// returns.
    fn apply(&mut self, ops: &[StoreOp]) -> Result<(), StoreError>;
    /// Whether this delivery of the session is in the store (was applied
    /// and not deleted): a delivery that is not need not be written only to
    /// be deleted (see the server's group commit).
    fn holds_delivery(&self, client_id: &str, seq: u64) -> bool;
    /// Makes everything applied so far durable per the [`SyncPolicy`]
    /// (Always: fsync now).
    fn sync(&mut self) -> Result<(), StoreError>;
    /// Compacts: rewrites live state only, reclaims space (SIGUSR1, clean
    /// shutdown, and on its own when the journal grows). Everything applied
    /// before it is durable when it returns, whatever the policy.
    fn checkpoint(&mut self) -> Result<(), StoreError>;
}

/// What went wrong, and on which path. Damaged contents are never an error
/// (see [`open`]); these are failures to read or write at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot store an operation in {}: {source}", path.display())]
    Encode {
        path: PathBuf,
        #[source]
        source: CodecError,
    },
    /// An earlier write or sync failed in a way that leaves the file's
    /// durable contents unknown; writes are refused until a successful
    /// checkpoint rewrites the store from memory (or a restart recovers it).
    #[error("{} refuses writes after an earlier failure: {reason}", path.display())]
    Failed { path: PathBuf, reason: String },
    /// Another process has the store open (its lock file is held).
    #[error(
        "{} is held by another process using this store (another midge, or midge_db_import): \
         stop it, or give this broker its own persistence_location",
        path.display()
    )]
    Locked { path: PathBuf },
}
