//! The process's open-file limit and its kernel file table, both set up
//! before the first thread starts.
//!
//! Every connection is a file descriptor. Linux grows a process's file table
//! by doubling it, and while more than one thread shares the table, each
//! doubling waits for an RCU grace period (`expand_fdtable` calls
//! `synchronize_rcu`). The thread that accepts connections sleeps through
//! it: a fresh broker taking its first ten thousand connections went through
//! eight doublings and lost a fifth of its connect rate to them. Growing the
//! table once, while the process has one thread, takes them out.

use std::os::fd::AsRawFd;

/// The file table is grown up front to at most this many slots (128 KiB of
/// kernel memory). Beyond it, a doubling waits as before; the table never
/// shrinks, so each happens once in the broker's life.
pub const PRESIZED_SLOTS: u64 = 16_384;

/// What [`prepare`] did, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdSetup {
    /// The soft `RLIMIT_NOFILE` before and after raising it to the hard one.
    pub limit_before: u64,
    pub limit: u64,
    /// The descriptor the table was grown to cover, or why it was not.
    pub presized: Result<u64, String>,
}

/// Raises the soft open-file limit to the hard limit (as Go's runtime and
/// many servers do: the usual soft default of 1024 would cap the broker near
/// a thousand clients), then grows the file table to cover
/// `min(limit, PRESIZED_SLOTS)` descriptors. Call it before any thread is
/// started. Failures leave things as they were and are only reported.
pub fn prepare() -> FdSetup {
    let limit_before = nofile_limit().map(|(soft, _)| soft).unwrap_or(0);
    let limit = raise_nofile_limit().map(|(soft, _)| soft).unwrap_or(0);
    FdSetup {
        limit_before,
        limit,
        presized: presize(limit.min(PRESIZED_SLOTS)),
    }
}

/// `RLIMIT_NOFILE` as `(soft, hard)`.
#[allow(unsafe_code)]
fn nofile_limit() -> std::io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the rlimit struct we pass, which lives
    // for the whole call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // rlim_t is u64 here but not on every target.
    #[allow(clippy::unnecessary_cast)]
    Ok((lim.rlim_cur as u64, lim.rlim_max as u64))
}

/// `RLIMIT_NOFILE` after raising the soft limit to the hard limit:
/// `(soft, hard)`. The raise fails, changing nothing, when the hard limit is
/// above the kernel's `nr_open`.
#[allow(unsafe_code)]
pub fn raise_nofile_limit() -> std::io::Result<(u64, u64)> {
    let (soft, hard) = nofile_limit()?;
    if soft < hard {
        let wanted = libc::rlimit {
            rlim_cur: hard as libc::rlim_t,
            rlim_max: hard as libc::rlim_t,
        };
        // SAFETY: setrlimit only reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) } == 0 {
            return Ok((hard, hard));
        }
    }
    Ok((soft, hard))
}

/// Makes the file table cover descriptor `slots - 1`: duplicates a file onto
/// the lowest free descriptor at or above it, and closes that again at once.
/// Returns the descriptor the table now covers.
#[allow(unsafe_code)]
fn presize(slots: u64) -> Result<u64, String> {
    let top = slots
        .checked_sub(1)
        .and_then(|t| libc::c_int::try_from(t).ok())
        .ok_or_else(|| format!("no descriptor to grow to (limit {slots})"))?;
    let file = std::fs::File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
    // SAFETY: F_DUPFD only reads its integer arguments. It picks a free
    // descriptor, so no file of the process is touched.
    let copy = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_DUPFD, top) };
    if copy == -1 {
        return Err(format!("F_DUPFD: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: `copy` was just opened above and nothing else knows it.
    unsafe { libc::close(copy) };
    Ok(u64::try_from(copy).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `FDSize` in /proc/self/status: the slots of the file table.
    fn table_slots() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").expect("read status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("FDSize:"))
            .expect("FDSize line")
            .trim()
            .parse()
            .expect("a number")
    }

    #[test]
    fn presize_grows_the_file_table_and_leaves_no_descriptor_open() {
        let wanted = 3000;
        let (soft, _) = raise_nofile_limit().expect("RLIMIT_NOFILE");
        assert!(
            soft >= wanted,
            "the test needs RLIMIT_NOFILE of at least {wanted}"
        );
        let covered = presize(wanted).expect("presize");
        assert!(covered >= wanted - 1, "covered {covered}");
        assert!(table_slots() >= wanted, "FDSize {}", table_slots());
        #[allow(unsafe_code)]
        // SAFETY: F_GETFD only asks whether the descriptor is open.
        let open = unsafe { libc::fcntl(covered as libc::c_int, libc::F_GETFD) } != -1;
        assert!(!open, "descriptor {covered} left open");
    }

    #[test]
    fn prepare_reports_the_limit_it_leaves() {
        let setup = prepare();
        assert!(setup.limit >= setup.limit_before);
        let (soft, hard) = nofile_limit().expect("RLIMIT_NOFILE");
        assert_eq!(setup.limit, soft);
        let nr_open: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .expect("read fs.nr_open")
            .trim()
            .parse()
            .expect("a number");
        assert!(
            soft == hard || hard > nr_open,
            "soft limit {soft} raised to the hard one {hard}"
        );
        assert_eq!(setup.presized, Ok(soft.min(PRESIZED_SLOTS) - 1));
    }
}
