//! Measurement: a latency histogram, the live counters shared by the
//! publisher and subscriber tasks, the payload timestamp, and samples of the
//! broker process from `/proc` (CPU time, resident memory).
//!
//! Nothing here touches the network; the hot path only does atomic adds per
//! read or write batch and a histogram increment per delivery.

use anyhow::{anyhow, Context, Result};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

/// The process-wide time origin of payload timestamps. Publishers and
/// subscribers live in the same process, so a monotonic clock is enough.
static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the process-wide epoch (monotonic).
pub fn now_ns() -> u64 {
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Bytes at the front of a payload that carry the send time and sequence
/// number; shorter payloads carry no timestamp and give no latency.
pub const STAMP_LEN: usize = 16;

/// Writes the send time (and a sequence number) into the front of `payload`.
#[inline]
pub fn stamp(payload: &mut [u8], seq: u64) {
    if payload.len() >= STAMP_LEN {
        payload[0..8].copy_from_slice(&now_ns().to_le_bytes());
        payload[8..16].copy_from_slice(&seq.to_le_bytes());
    }
}

/// Latency of a received payload in microseconds, if it carries a stamp.
#[inline]
pub fn latency_us(payload: &[u8], now: u64) -> Option<u64> {
    let ts = u64::from_le_bytes(payload.get(0..8)?.try_into().ok()?);
    // A stamp from the future is not ours: ignore it rather than wrap.
    now.checked_sub(ts).map(|ns| ns / 1000)
}

/// Counters shared by every task of a run, read by the progress line and by
/// the drain logic. Updated once per batch, not per message.
#[derive(Default)]
pub struct Live {
    /// PUBLISH packets written to the socket by publishers.
    pub sent: AtomicU64,
    /// PUBACK/PUBCOMP received by publishers.
    pub acked: AtomicU64,
    /// PUBLISH packets received by subscribers (deliveries).
    pub received: AtomicU64,
    /// `now_ns()` of the most recent delivery.
    pub last_rx_ns: AtomicU64,
}

impl Live {
    pub fn add_sent(&self, n: u64) {
        self.sent.fetch_add(n, Ordering::Relaxed);
    }
    pub fn add_received(&self, n: u64, now: u64) {
        self.received.fetch_add(n, Ordering::Relaxed);
        self.last_rx_ns.fetch_max(now, Ordering::Relaxed);
    }
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

/// Sub-buckets per power of two: 64, so a bucket is within 1.6 % of its value.
const SUB_BITS: u32 = 6;
const SUB: usize = 1 << SUB_BITS;
const BUCKETS: usize = (64 - SUB_BITS as usize + 1) * SUB;

/// A log-linear histogram of microsecond values, exact below 128 µs. Each
/// receiving task owns one; they are merged at the end.
#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
    sum: u128,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
            sum: 0,
        }
    }
}

impl Histogram {
    fn index(v: u64) -> usize {
        if v < (2 * SUB) as u64 {
            return v as usize;
        }
        let msb = 63 - v.leading_zeros();
        let shift = msb - SUB_BITS;
        let sub = (v >> shift) as usize & (SUB - 1);
        ((shift as usize + 1) << SUB_BITS) + sub
    }

    /// The middle of bucket `idx`.
    fn value(idx: usize) -> u64 {
        if idx < 2 * SUB {
            return idx as u64;
        }
        let shift = (idx >> SUB_BITS) - 1;
        let sub = (idx & (SUB - 1)) as u64;
        ((SUB as u64 + sub) << shift) + ((1u64 << shift) >> 1)
    }

    #[inline]
    pub fn record(&mut self, us: u64) {
        self.counts[Self::index(us)] += 1;
        self.total += 1;
        self.max = self.max.max(us);
        self.sum += u128::from(us);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    pub fn mean(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.sum as f64 / self.total as f64
        }
    }

    /// The value at percentile `p` (0..=100), never above the maximum seen.
    pub fn percentile(&self, p: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((p / 100.0) * self.total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::value(i).min(self.max);
            }
        }
        self.max
    }
}

/// One look at the broker process.
#[derive(Debug, Clone, Copy)]
pub struct ProcSample {
    /// utime + stime of all its threads, in seconds.
    pub cpu_s: f64,
    pub rss_kb: u64,
}

/// Reads `/proc/PID/stat` (utime, stime) and `/proc/PID/status` (VmRSS).
pub fn sample_process(pid: u32) -> Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("broker process {pid} not found (/proc/{pid}/stat)"))?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow!("unexpected format of /proc/{pid}/stat"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Field 3 (state) is fields[0]; utime is field 14, stime field 15.
    let ticks = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .ok_or_else(|| anyhow!("unexpected format of /proc/{pid}/stat"))
    };
    let cpu_ticks = ticks(11)? + ticks(12)?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("broker process {pid} not found (/proc/{pid}/status)"))?;
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    Ok(ProcSample {
        cpu_s: cpu_ticks as f64 / crate::sys::clock_ticks_per_sec() as f64,
        rss_kb,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_percentiles_are_close() {
        let mut h = Histogram::default();
        for v in 1..=10_000u64 {
            h.record(v);
        }
        for (p, want) in [(50.0, 5000.0), (90.0, 9000.0), (99.0, 9900.0)] {
            let got = h.percentile(p) as f64;
            assert!((got - want).abs() / want < 0.02, "p{p}: {got} vs {want}");
        }
        assert_eq!(h.max(), 10_000);
        assert_eq!(h.percentile(100.0), 10_000);
    }

    #[test]
    fn histogram_index_is_monotonic() {
        let mut last = 0;
        for v in 0..100_000u64 {
            let i = Histogram::index(v);
            assert!(i >= last);
            last = i;
        }
        assert!(Histogram::index(u64::MAX) < BUCKETS);
    }
}
