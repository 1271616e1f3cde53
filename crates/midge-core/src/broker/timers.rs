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
    heap: BinaryHeap<Reverse<(Instant, Timer)>>,
    /// The heap's size after the last sweep (or when there was none, 0):
    /// the next sweep waits until it has grown past `SLACK` times this.
    live_at_sweep: usize,
}

impl Timers {
    /// Adds an entry. `is_live` tells whether an entry still points at
    /// something; it is asked only when the heap has grown enough to sweep.
    pub(super) fn push(&mut self, due: Instant, timer: Timer, is_live: impl FnMut(&Timer) -> bool) {
        self.heap.push(Reverse((due, timer)));
        if self.heap.len() > MIN_SWEEP.max(self.live_at_sweep.saturating_mul(SLACK + 1)) {
            self.sweep(is_live);
        }
    }

    fn sweep(&mut self, mut is_live: impl FnMut(&Timer) -> bool) {
        self.heap.retain(|Reverse((_, t))| is_live(t));
        self.live_at_sweep = self.heap.len();
        // Give back what a burst of connections left behind.
        if self.heap.capacity() > 2 * self.heap.len().max(MIN_SWEEP) {
            self.heap.shrink_to(self.heap.len().max(MIN_SWEEP));
        }
    }

    /// The earliest entry, if it is due at `now`, taken off the heap.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<(Instant, Timer)> {
        match self.heap.peek() {
            Some(Reverse((due, _))) if *due <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }

    /// When the earliest entry is due.
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((t, _))| *t)
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
