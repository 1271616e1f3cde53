//! The journal store: appending group commits, syncing them per policy,
//! checkpointing, and recovering at start-up.
//!
//! Invariants the crash tests check:
//! - the file is always a header followed by whole records, except for a
//!   torn last record after a crash (an append that failed part-way is cut
//!   back before anything else is written);
//! - a checkpoint never touches the live file: it writes `<file>.tmp`,
//!   syncs it, renames it over the file and syncs the directory, so at every
//!   instant the file is either the old store or the new one;
//! - recovery never deletes bytes it could not read: they stay in a
//!   `<file>.corrupt-<unix time>` beside the store.

use bytes::{BufMut, Bytes, BytesMut};
use midge_core::StoreOp;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Instant, UNIX_EPOCH};

use crate::codec::{self, decode_op, encode_op, Clock};
use crate::format::{self, Header, Tail, FRAME_HEADER, HEADER_LEN, MAX_RECORD};
use crate::live::{Key, Live};
use crate::{Recovery, RecoveryStats, Store, StoreError, StoreOptions, SyncPolicy};

/// Knobs the tests turn; the defaults are what the broker runs with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tuning {
    /// No automatic checkpoint while the file is smaller than this.
    pub compact_min: u64,
    /// Records a checkpoint writes are about this large.
    pub chunk: usize,
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning {
            compact_min: 64 << 20,
            chunk: 1 << 20,
        }
    }
}

pub(crate) struct JournalStore {
    dir: PathBuf,
    path: PathBuf,
    tmp_path: PathBuf,
    file: File,
    /// Bytes in the file: where the next record goes.
    len: u64,
    /// How much of the file an fsync has covered.
    synced_len: u64,
    last_fsync: Instant,
    policy: SyncPolicy,
    tuning: Tuning,
    live: Live,
    buf: BytesMut,
    keys: Vec<(Key, std::ops::Range<usize>)>,
    failed: Option<String>,
    /// `<file>.lock`, held while the store is open (see [`lock`]).
    _lock: Option<Flock<File>>,
}

impl std::fmt::Debug for JournalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalStore")
            .field("path", &self.path)
            .field("len", &self.len)
            .field("synced_len", &self.synced_len)
            .field("live_bytes", &self.live.bytes())
            .finish_non_exhaustive()
    }
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io {
        action,
        path,
        source,
    }
}

/// Opens the store in `options.dir`, creating it if needed, and recovers
/// what it holds.
///
/// Never fails because of what the file contains: a torn tail is cut off, a
/// damaged part (and everything after it) or a file from a newer Midge is
/// moved aside, each reported in [`Recovery::warnings`]. Fails only when
/// the directory or the file cannot be created, read or written.
pub fn open(options: &StoreOptions) -> Result<(Box<dyn Store>, Recovery), StoreError> {
    let (store, recovery) = open_tuned(options, Tuning::default())?;
    Ok((Box::new(store), recovery))
}

/// Takes `<file>.lock` beside the store, for as long as the store is open:
/// a second broker (or `midge_db_import`) opening the same store is refused
/// instead of writing over the first one's journal. The lock is the
/// kernel's (flock), so it goes with the process, however that ends.
fn lock(dir: &Path, file_name: &str) -> Result<Flock<File>, StoreError> {
    let path = dir.join(format!("{file_name}.lock"));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err("open the lock file", &path))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        if e == Errno::EWOULDBLOCK {
            StoreError::Locked { path }
        } else {
            io_err("lock", &path)(io::Error::from(e))
        }
    })
}

pub(crate) fn open_tuned(
    options: &StoreOptions,
    tuning: Tuning,
) -> Result<(JournalStore, Recovery), StoreError> {
    let started = Instant::now();
    let dir = options.dir.clone();
    fs::create_dir_all(&dir).map_err(io_err("create the directory", &dir))?;
    let lock = lock(&dir, &options.file_name)?;
    let path = options.path();
    let tmp_path = dir.join(format!("{}.tmp", options.file_name));
    let mut warnings = Vec::new();
    let mut stats = RecoveryStats::default();

    if tmp_path.exists() {
        // A checkpoint died before its rename: the store it was replacing
        // is intact, and this half-written copy is worth nothing.
        fs::remove_file(&tmp_path).map_err(io_err("remove", &tmp_path))?;
        warnings.push(format!(
            "{}: removed an unfinished checkpoint (the store itself is intact)",
            tmp_path.display()
        ));
    }

    let data = match fs::read(&path) {
        Ok(d) => Some(Bytes::from(d)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_err("read", &path)(e)),
    };
    let mut live = Live::default();
    // Whether the file must be rewritten from `live` before appending.
    let mut rewrite = true;
    let mut good_end = 0u64;
    if let Some(data) = &data {
        stats.bytes_read = data.len() as u64;
        match format::check_header(data) {
            Header::Unwritten => {
                if !data.is_empty() {
                    warnings.push(format!(
                        "{}: store file has an incomplete header ({} bytes), \
                         left by a crash while it was created; started empty",
                        path.display(),
                        data.len()
                    ));
                }
            }
            Header::Invalid(why) => {
                let aside = set_aside(&path, true)?;
                warnings.push(format!(
                    "{}: not readable as a Midge store ({why}); moved to {}; \
                     nothing in it was recovered, started empty",
                    path.display(),
                    aside.display()
                ));
                stats.bytes_discarded = data.len() as u64;
            }
            Header::Future(v) => {
                let aside = set_aside(&path, true)?;
                warnings.push(format!(
                    "{}: written by a newer Midge (store format {v}; this one reads up to {}); \
                     moved to {} untouched; started empty. Run the newer Midge, or keep \
                     this empty store",
                    path.display(),
                    format::FORMAT_VERSION,
                    aside.display()
                ));
                stats.bytes_discarded = data.len() as u64;
            }
            Header::Valid => {
                let tail = replay(data, &mut live, &mut stats);
                let end = tail.offset(data.len());
                good_end = end as u64;
                let lost = data.len() - end;
                stats.bytes_discarded = lost as u64;
                match tail {
                    Tail::Clean => rewrite = false,
                    Tail::Zeros { offset } => warnings.push(format!(
                        "{}: {lost} zero bytes after the last record (from byte {offset}) \
                         were cut off; they held nothing",
                        path.display()
                    )),
                    Tail::Torn { offset, reason } => {
                        let aside = set_aside(&path, false)?;
                        warnings.push(format!(
                            "{}: the last write ({lost} bytes from byte {offset}: {reason}) \
                             was cut short by a crash before it was synced, so it was never \
                             acknowledged; it was cut off (original kept in {})",
                            path.display(),
                            aside.display()
                        ));
                    }
                    Tail::Damaged { offset, reason } => {
                        let aside = set_aside(&path, false)?;
                        warnings.push(format!(
                            "{}: damaged record at byte {offset} ({reason}); the {lost} bytes \
                             from there to the end could not be replayed and the changes in \
                             them (messages, sessions, subscriptions) are lost; everything \
                             before byte {offset} was recovered; the damaged file is kept in {}",
                            path.display(),
                            aside.display()
                        ));
                    }
                }
                if (data.len() as u64) > 2 * live.bytes() + (1 << 20) {
                    // Most of the buffer is history: free it.
                    live.detach();
                }
            }
        }
    }

    let now = Clock::now();
    let (state, cleanup) = live.restore(now.wall_ms(), &mut warnings);
    stats.retained = state.retained.len();
    stats.sessions = state.sessions.len();
    stats.subscriptions = state.sessions.iter().map(|s| s.subscriptions.len()).sum();
    stats.deliveries = state.sessions.iter().map(|s| s.deliveries.len()).sum();

    let mut store = if rewrite {
        let (file, len, dir_synced) =
            write_checkpoint(&dir, &path, &tmp_path, &live, tuning.chunk)?;
        dir_synced?;
        JournalStore::new(dir, path, tmp_path, file, len, options.sync, tuning, live)
    } else {
        let mut file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io_err("open for writing", &path))?;
        file.seek(SeekFrom::Start(good_end))
            .map_err(io_err("seek in", &path))?;
        JournalStore::new(
            dir,
            path,
            tmp_path,
            file,
            good_end,
            options.sync,
            tuning,
            live,
        )
    };
    store._lock = Some(lock);
    if !cleanup.is_empty() {
        // Expired or unreadable entries left out of the restored state go
        // from the store too (redone at the next start if this is lost).
        store.apply(&cleanup)?;
        store.sync()?;
    } else {
        store.maybe_compact()?;
    }
    stats.elapsed = started.elapsed();
    Ok((
        store,
        Recovery {
            state,
            warnings,
            stats,
        },
    ))
}

/// Replays every good record of `data` into `live`.
fn replay(data: &Bytes, live: &mut Live, stats: &mut RecoveryStats) -> Tail {
    let mut keys = Vec::new();
    format::scan(data, |payload| {
        keys.clear();
        for range in format::split_ops(data, payload)? {
            let op = decode_op(&data[range.clone()], false)
                .map_err(|e| format!("undecodable operation: {e}"))?;
            keys.push((Key::of_op(op), range));
        }
        // Only once the whole group decoded: a group is applied whole.
        stats.records += 1;
        stats.ops += keys.len() as u64;
        for (key, range) in keys.drain(..) {
            live.apply(key, data.slice(range));
        }
        Ok(())
    })
}

/// Moves a store file out of the way as `<file>.corrupt-<unix time>`:
/// renamed when nothing of it is used (`whole`), otherwise linked (or
/// copied), since the file itself is rewritten from what was recovered.
fn set_aside(path: &Path, whole: bool) -> Result<PathBuf, StoreError> {
    let secs = std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut aside = path.with_file_name(format!("{name}.corrupt-{secs}"));
    let mut n = 1;
    while aside.exists() {
        n += 1;
        aside = path.with_file_name(format!("{name}.corrupt-{secs}-{n}"));
    }
    if whole {
        fs::rename(path, &aside).map_err(io_err("move aside", path))?;
    } else if fs::hard_link(path, &aside).is_err() {
        fs::copy(path, &aside).map_err(io_err("copy aside", path))?;
    }
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(aside)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync the directory", dir))
}

/// Writes the live state to `tmp`, syncs it, renames it over `path` and
/// syncs the directory. Returns the new file, positioned at its end, and
/// whether syncing the directory worked.
fn write_checkpoint(
    dir: &Path,
    path: &Path,
    tmp: &Path,
    live: &Live,
    chunk: usize,
) -> Result<(File, u64, Result<(), StoreError>), StoreError> {
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(tmp)
            .map_err(io_err("create", tmp))?;
        let mut out = Vec::with_capacity(chunk + FRAME_HEADER + HEADER_LEN);
        out.extend_from_slice(&format::header(Clock::now().wall_ms()));
        let mut len = 0u64;
        let mut frame_start = out.len();
        out.extend_from_slice(&[0; FRAME_HEADER]);
        for entry in live.entries() {
            out.extend_from_slice(&u32::try_from(entry.len()).unwrap_or(u32::MAX).to_le_bytes());
            out.extend_from_slice(entry);
            if out.len() - frame_start >= chunk {
                format::seal(&mut out[frame_start..]);
                file.write_all(&out).map_err(io_err("write", tmp))?;
                len += out.len() as u64;
                out.clear();
                frame_start = 0;
                out.extend_from_slice(&[0; FRAME_HEADER]);
            }
        }
        if out.len() - frame_start > FRAME_HEADER {
            format::seal(&mut out[frame_start..]);
        } else {
            out.truncate(frame_start);
        }
        file.write_all(&out).map_err(io_err("write", tmp))?;
        len += out.len() as u64;
        file.sync_all().map_err(io_err("sync", tmp))?;
        Ok((file, len))
    })();
    let (file, len) = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = fs::remove_file(tmp);
            return Err(e);
        }
    };
    if let Err(e) = fs::rename(tmp, path) {
        let _ = fs::remove_file(tmp);
        return Err(io_err("rename a checkpoint over", path)(e));
    }
    // Once renamed, the new file is the store even if syncing the directory
    // fails (then the rename may not survive power loss, but the file it
    // replaced holds the same state): the caller switches to it either way.
    Ok((file, len, sync_dir(dir)))
}

impl JournalStore {
    #[allow(clippy::too_many_arguments)]
    fn new(
        dir: PathBuf,
        path: PathBuf,
        tmp_path: PathBuf,
        file: File,
        len: u64,
        policy: SyncPolicy,
        tuning: Tuning,
        live: Live,
    ) -> JournalStore {
        JournalStore {
            dir,
            path,
            tmp_path,
            file,
            len,
            synced_len: len,
            last_fsync: Instant::now(),
            policy,
            tuning,
            live,
            buf: BytesMut::new(),
            keys: Vec::new(),
            failed: None,
            _lock: None,
        }
    }

    fn check(&self) -> Result<(), StoreError> {
        match &self.failed {
            None => Ok(()),
            Some(reason) => Err(StoreError::Failed {
                path: self.path.clone(),
                reason: reason.clone(),
            }),
        }
    }

    fn fsync(&mut self) -> Result<(), StoreError> {
        if self.synced_len == self.len {
            return Ok(());
        }
        if let Err(e) = self.file.sync_data() {
            // After a failed fsync the kernel may have dropped the dirty
            // pages: retrying would report success for lost data.
            self.failed = Some(format!("fsync failed: {e}"));
            return Err(io_err("sync", &self.path)(e));
        }
        self.synced_len = self.len;
        self.last_fsync = Instant::now();
        Ok(())
    }

    /// Checkpoints when the file has grown well past the live state.
    fn maybe_compact(&mut self) -> Result<(), StoreError> {
        let min = self.tuning.compact_min;
        if self.len > min && self.len > 2 * self.live.bytes() + min {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// Bytes in the file (tests).
    #[cfg(test)]
    pub fn len(&self) -> u64 {
        self.len
    }

    #[cfg(test)]
    pub fn synced_len(&self) -> u64 {
        self.synced_len
    }
}

impl Store for JournalStore {
    fn apply(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
        self.check()?;
        if ops.is_empty() {
            return Ok(());
        }
        let clock = Clock::now();
        self.buf.clear();
        self.keys.clear();
        self.buf.put_bytes(0, FRAME_HEADER);
        for op in ops {
            let at = self.buf.len();
            self.buf.put_u32_le(0);
            let key = Key::of_store_op(op).ok_or(codec::CodecError::UnknownOp);
            let encoded = key.and_then(|k| encode_op(op, &clock, &mut self.buf).map(|()| k));
            let key = encoded.map_err(|source| StoreError::Encode {
                path: self.path.clone(),
                source,
            })?;
            let len = self.buf.len() - at - 4;
            let len32 = u32::try_from(len).unwrap_or(u32::MAX);
            self.buf[at..at + 4].copy_from_slice(&len32.to_le_bytes());
            self.keys.push((key, at + 4..self.buf.len()));
        }
        if self.buf.len() - FRAME_HEADER > MAX_RECORD {
            return Err(StoreError::Encode {
                path: self.path.clone(),
                source: codec::CodecError::Invalid("group larger than 1 GiB"),
            });
        }
        format::seal(&mut self.buf);
        if let Err(e) = self.file.write_all(&self.buf) {
            // Cut the partial record back, or every later record would sit
            // behind a torn one and be lost at recovery.
            let undone = self
                .file
                .set_len(self.len)
                .and_then(|()| self.file.seek(SeekFrom::Start(self.len)).map(|_| ()));
            if let Err(e2) = undone {
                self.failed = Some(format!("write failed ({e}) and could not be undone ({e2})"));
            }
            return Err(io_err("write", &self.path)(e));
        }
        self.len += self.buf.len() as u64;
        for (key, range) in self.keys.drain(..) {
            self.live
                .apply(key, Bytes::copy_from_slice(&self.buf[range]));
        }
        Ok(())
    }

    fn holds_delivery(&self, client_id: &str, seq: u64) -> bool {
        self.live.has_delivery(client_id, seq)
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        self.check()?;
        match self.policy {
            SyncPolicy::Always => self.fsync()?,
            SyncPolicy::Interval(every) => {
                if self.last_fsync.elapsed() >= every {
                    self.fsync()?;
                }
            }
            SyncPolicy::Never => {}
        }
        self.maybe_compact()
    }

    fn checkpoint(&mut self) -> Result<(), StoreError> {
        // Also the way out of a failed state: the file is rewritten from
        // memory, which holds everything applied.
        let (file, len, dir_synced) = write_checkpoint(
            &self.dir,
            &self.path,
            &self.tmp_path,
            &self.live,
            self.tuning.chunk,
        )?;
        self.file = file;
        self.len = len;
        self.synced_len = len;
        self.last_fsync = Instant::now();
        self.failed = None;
        dir_synced
    }
}
