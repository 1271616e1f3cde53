//! The broker's timers: when each connection and session next needs a look.
//!
//! One min-heap of `(due, what)`. Entries are not removed when what they
//! point at goes away (a closed connection, an ended session): they are
//! checked when they come due. So that a stream of short connections cannot
//! pile them up, the heap drops dead entries whenever it holds more than
//! [`SLACK`] times the live ones.
//!
//! A connection has one entry at a time in the usual case: the connect
//! timeout's entry, when it comes due after CONNECT, turns into the
//! keep-alive check (see `Broker::handle_timeout`).
//!
//! Every idle connection pays for its entry, so an entry is 16 bytes, not
//! the 32 of an `(Instant, Timer)`: the due time as nanoseconds from the
//! first entry's, rounded up to a multiple of 4 so that its two low bits
//! can hold the kind of timer, and the id.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use crate::ids::{ConnId, SessionKey};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Timer {
    /// The connection must have sent CONNECT by now; once it has, the same
    /// entry checks its keep-alive.
    ConnectTimeout(ConnId),
    KeepAlive(ConnId),
    SessionExpiry(SessionKey),
    WillDelay(SessionKey),
}

/// Dead entries may outnumber live ones this many times before a sweep.
const SLACK: usize = 2;
/// Below this many entries the heap is never swept.
const MIN_SWEEP: usize = 1024;

#[derive(Debug, Default)]
pub(super) struct Timers {
    heap: BinaryHeap<Reverse<Entry>>,
    /// What entries' due times count from: the first entry's.
    base: Option<Instant>,
    /// The heap's size after the last sweep (or when there was none, 0):
    /// the next sweep waits until it has grown past `SLACK` times this.
    live_at_sweep: usize,
}

/// A timer in 16 bytes: `(due and kind, id)`, ordered by due time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Entry(i64, u64);

const KIND_BITS: i64 = 0b11;

impl Entry {
    fn new(base: Instant, due: Instant, timer: Timer) -> Entry {
        let nanos = |d: std::time::Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        let offset = match due.checked_duration_since(base) {
            Some(after) => nanos(after),
            None => -nanos(base.duration_since(due)),
        };
        // Rounded up, never down: an entry must not come due early.
        let offset = offset.saturating_add(KIND_BITS) & !KIND_BITS;
        let (kind, id) = match timer {
            Timer::ConnectTimeout(ConnId(id)) => (0, id),
            Timer::KeepAlive(ConnId(id)) => (1, id),
            Timer::SessionExpiry(SessionKey(key)) => (2, u64::from(key)),
            Timer::WillDelay(SessionKey(key)) => (3, u64::from(key)),
        };
        Entry(offset | kind, id)
    }

    fn due(self, base: Instant) -> Instant {
        let offset = self.0 & !KIND_BITS;
        let magnitude = std::time::Duration::from_nanos(offset.unsigned_abs());
        let due = if offset >= 0 {
            base.checked_add(magnitude)
        } else {
            base.checked_sub(magnitude)
        };
        due.unwrap_or(base)
    }

    fn timer(self) -> Timer {
        // Session keys were u32 when packed.
        let key = SessionKey(u32::try_from(self.1).unwrap_or(u32::MAX));
        match self.0 & KIND_BITS {
            0 => Timer::ConnectTimeout(ConnId(self.1)),
            1 => Timer::KeepAlive(ConnId(self.1)),
            2 => Timer::SessionExpiry(key),
            _ => Timer::WillDelay(key),
        }
    }
}

impl Timers {
    /// Adds an entry. `is_live` tells whether an entry still points at
    /// something; it is asked only when the heap has grown enough to sweep.
    pub(super) fn push(&mut self, due: Instant, timer: Timer, is_live: impl FnMut(&Timer) -> bool) {
        let base = *self.base.get_or_insert(due);
        self.heap.push(Reverse(Entry::new(base, due, timer)));
        if self.heap.len() > MIN_SWEEP.max(self.live_at_sweep.saturating_mul(SLACK + 1)) {
            self.sweep(is_live);
        }
    }

    fn sweep(&mut self, mut is_live: impl FnMut(&Timer) -> bool) {
        self.heap.retain(|Reverse(e)| is_live(&e.timer()));
        self.live_at_sweep = self.heap.len();
        // Give back what a burst of connections left behind.
        if self.heap.capacity() > 2 * self.heap.len().max(MIN_SWEEP) {
            self.heap.shrink_to(self.heap.len().max(MIN_SWEEP));
        }
    }

    /// The earliest entry, if it is due at `now`, taken off the heap.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<(Instant, Timer)> {
        let base = self.base?;
        match self.heap.peek() {
            Some(Reverse(e)) if e.due(base) <= now => {
                self.heap.pop().map(|Reverse(e)| (e.due(base), e.timer()))
            }
            _ => None,
        }
    }

    /// When the earliest entry is due.
    pub(super) fn next_due(&self) -> Option<Instant> {
        let base = self.base?;
        self.heap.peek().map(|Reverse(e)| e.due(base))
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn entries_come_out_in_due_order_and_only_when_due() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        timers.push(
            t0 + Duration::from_secs(3),
            Timer::KeepAlive(ConnId(1)),
            |_| true,
        );
        timers.push(
            t0 + Duration::from_secs(1),
            Timer::KeepAlive(ConnId(2)),
            |_| true,
        );
        assert_eq!(timers.next_due(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(timers.pop_due(t0), None);
        let first = timers.pop_due(t0 + Duration::from_secs(5));
        assert_eq!(
            first,
            Some((t0 + Duration::from_secs(1), Timer::KeepAlive(ConnId(2))))
        );
        let second = timers.pop_due(t0 + Duration::from_secs(5));
        assert_eq!(
            second,
            Some((t0 + Duration::from_secs(3), Timer::KeepAlive(ConnId(1))))
        );
        assert_eq!(timers.pop_due(t0 + Duration::from_secs(5)), None);
    }

    #[test]
    fn an_entry_is_16_bytes_comes_back_whole_and_never_early() {
        assert_eq!(std::mem::size_of::<Reverse<Entry>>(), 16);
        // Far enough from boot that a day before it is still an Instant.
        let base = Instant::now() + Duration::from_secs(2 * 86_400);
        let timers = [
            Timer::ConnectTimeout(ConnId(u64::MAX)),
            Timer::KeepAlive(ConnId(7)),
            Timer::SessionExpiry(SessionKey(u32::MAX)),
            Timer::WillDelay(SessionKey(0)),
        ];
        for nanos in [0u64, 1, 2, 3, 5, 999_999_999, 86_400_000_000_001] {
            for later in [true, false] {
                let d = Duration::from_nanos(nanos);
                let due = if later { base + d } else { base - d };
                for timer in timers {
                    let e = Entry::new(base, due, timer);
                    assert_eq!(e.timer(), timer);
                    let back = e.due(base);
                    assert!(back >= due, "{nanos} ns, later {later}: early");
                    assert!(
                        back - due < Duration::from_nanos(4),
                        "{nanos} ns, later {later}: {:?} late",
                        back - due
                    );
                }
            }
        }
    }

    #[test]
    fn dead_entries_are_swept_so_the_heap_tracks_the_live_ones() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        // 100 000 connections come and go; only the last 10 are open.
        let total = 100_000u64;
        for id in 0..total {
            let live = |t: &Timer| matches!(t, Timer::KeepAlive(ConnId(c)) if *c + 10 >= id);
            timers.push(
                t0 + Duration::from_secs(90),
                Timer::KeepAlive(ConnId(id)),
                live,
            );
        }
        assert!(
            timers.len() <= 3 * MIN_SWEEP,
            "{} entries kept",
            timers.len()
        );
        assert!(
            timers.heap.capacity() <= 8 * MIN_SWEEP,
            "capacity {}",
            timers.heap.capacity()
        );
        // The live ones are all still there.
        let mut ids: Vec<u64> = std::iter::from_fn(|| timers.pop_due(t0 + Duration::from_secs(90)))
            .filter_map(|(_, t)| match t {
                Timer::KeepAlive(ConnId(c)) if c + 10 >= total - 1 => Some(c),
                _ => None,
            })
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, (total - 11..total).collect::<Vec<_>>());
    }
}
