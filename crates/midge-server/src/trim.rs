//! Giving freed memory back to the system once the broker goes quiet.
//!
//! The C allocator keeps what the program frees, for reuse. After a burst
//! (a fan-out of millions of messages, say) a broker that is idle again
//! would keep tens of megabytes it no longer uses: 65 MB after a 5 s
//! fan-out to 50 subscribers, measured. Once a second this task looks at the
//! traffic counters; after a quiet second that follows traffic, it asks the
//! allocator to return its free pages. It never trims under load, and only
//! once per quiet spell.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::log::{LogType, Logger};
use crate::server::Counters;

/// How long the traffic counters must stand still before a trim.
const QUIET: Duration = Duration::from_secs(1);

/// Decides, from one reading of the traffic counters per [`QUIET`] period,
/// when to trim: at the first quiet period after some traffic.
#[derive(Debug, Default)]
struct IdleWatch {
    last: u64,
    traffic_since_trim: bool,
}

impl IdleWatch {
    fn observe(&mut self, traffic: u64) -> bool {
        if traffic != self.last {
            self.last = traffic;
            self.traffic_since_trim = true;
            return false;
        }
        std::mem::take(&mut self.traffic_since_trim)
    }
}

/// Runs until `stop` turns true.
pub async fn trim_when_idle(counters: Arc<Counters>, log: Logger, mut stop: watch::Receiver<bool>) {
    let traffic = || {
        counters.bytes_received.load(Ordering::Relaxed)
            + counters.bytes_sent.load(Ordering::Relaxed)
    };
    let mut watch = IdleWatch {
        last: traffic(),
        traffic_since_trim: false,
    };
    let mut ticks = tokio::time::interval(QUIET);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.changed() => return,
        }
        if watch.observe(traffic()) {
            let before = resident_kb();
            let started = std::time::Instant::now();
            if release_free_memory() {
                crate::log!(
                    log,
                    LogType::DEBUG,
                    "Idle: gave freed memory back to the system in {} µs (resident {} kB, was {} kB).",
                    started.elapsed().as_micros(),
                    resident_kb(),
                    before
                );
            }
        }
    }
}

/// Asks the allocator to return free memory; false where it cannot.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn release_free_memory() -> bool {
    // SAFETY: malloc_trim takes a number and only rearranges the
    // allocator's own free lists; it is thread-safe (it locks each arena).
    unsafe { libc::malloc_trim(0) };
    true
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_memory() -> bool {
    false
}

/// Resident set size in kB (0 where /proc has none), as `$SYS` reports it.
fn resident_kb() -> u64 {
    crate::sys::resident_bytes().map_or(0, |b| b / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_once_after_traffic_stops_and_never_under_load() {
        let mut w = IdleWatch::default();
        assert!(!w.observe(0), "no traffic yet: nothing to give back");
        assert!(!w.observe(100), "traffic");
        assert!(!w.observe(250), "still traffic");
        assert!(w.observe(250), "first quiet period after traffic");
        assert!(!w.observe(250), "still quiet: already trimmed");
        assert!(!w.observe(250));
        assert!(!w.observe(300), "traffic again");
        assert!(w.observe(300), "quiet again");
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn freed_memory_goes_back_to_the_system() {
        // 64 MB in 1 KiB blocks, then one block after them that stays, so
        // the allocator cannot give the rest back by shrinking its heap
        // from the top as it would on its own.
        let blocks: Vec<Box<[u8; 1024]>> = (0..65_536).map(|i| Box::new([i as u8; 1024])).collect();
        let pin = Box::new([1u8; 1024]);
        let full = resident_kb();
        drop(blocks);
        let freed = resident_kb();
        assert!(
            freed + 32 * 1024 > full,
            "the allocator gave most back by itself ({full} kB, then {freed} kB): the test proves nothing"
        );
        assert!(release_free_memory());
        let trimmed = resident_kb();
        assert!(
            trimmed + 32 * 1024 < freed,
            "resident {trimmed} kB after the trim, {freed} kB before"
        );
        assert_eq!(pin[0], 1);
    }
}
