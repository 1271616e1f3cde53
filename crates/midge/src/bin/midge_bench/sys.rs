//! The system call the bench needs that std does not offer: the clock tick
//! rate that `/proc/PID/stat` counts CPU time in. (The open-file limit is
//! raised through `midge::fd_table`, shared with the broker.)
//!
//! It goes through `libc` (already in the build through tokio) rather than a
//! wrapper crate.

/// Clock ticks per second of `/proc/PID/stat` times (`USER_HZ`, 100 on
/// every Linux we know of, asked anyway).
#[allow(unsafe_code)]
pub fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf takes an integer and touches no memory of ours.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}
