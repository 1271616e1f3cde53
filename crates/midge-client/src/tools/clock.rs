//! Local time for `-F`'s `%I`, `%U`, `%j`/`%J` timestamps and `@` codes.
//!
//! mosquitto_sub hands `@X` to the C library's `strftime` with the local
//! time zone; to print exactly what it prints (locale and time zone rules
//! included) we call the same two functions. This is the crate's only
//! `unsafe`: two FFI calls on buffers we own, sized and checked here.

use std::time::{SystemTime, UNIX_EPOCH};

/// A moment, taken once per message as mosquitto does.
pub trait Clock {
    /// `strftime(fmt)` for this moment in local time; empty on failure.
    fn strftime(&self, fmt: &str) -> Vec<u8>;
    /// Nanoseconds within the second.
    fn nanos(&self) -> u32;
}

/// The system clock, read when created.
pub struct SystemClock {
    secs: i64,
    nanos: u32,
}

impl SystemClock {
    pub fn now() -> SystemClock {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        SystemClock {
            secs: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nanos: d.subsec_nanos(),
        }
    }
}

impl Clock for SystemClock {
    fn strftime(&self, fmt: &str) -> Vec<u8> {
        local_strftime(self.secs, fmt)
    }

    fn nanos(&self) -> u32 {
        self.nanos
    }
}

#[allow(unsafe_code)]
fn local_strftime(secs: i64, fmt: &str) -> Vec<u8> {
    let Ok(cfmt) = std::ffi::CString::new(fmt) else {
        return Vec::new();
    };
    let t: libc::time_t = secs as libc::time_t;
    // SAFETY: `tm` is plain data that localtime_r fills; zeroed is a valid value.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are to live locals of the right types.
    let r = unsafe { libc::localtime_r(&t, &mut tm) };
    if r.is_null() {
        return Vec::new();
    }
    let mut buf = [0u8; 100];
    // SAFETY: buf is 100 writable bytes and strftime writes at most that
    // many (NUL included); fmt is NUL-terminated; tm was filled above.
    let n = unsafe {
        libc::strftime(
            buf.as_mut_ptr().cast::<libc::c_char>(),
            buf.len(),
            cfmt.as_ptr(),
            &tm,
        )
    };
    buf[..n.min(buf.len())].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_the_epoch_in_utc() {
        // The tests run with whatever TZ the machine has, so check only
        // what does not depend on it.
        let c = SystemClock {
            secs: 86400 * 365,
            nanos: 5,
        };
        assert_eq!(c.strftime("%%"), b"%");
        assert_eq!(c.strftime("%s"), b"31536000");
        assert_eq!(c.strftime("%Y").len(), 4);
        assert_eq!(c.nanos(), 5);
    }
}
