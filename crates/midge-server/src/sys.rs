//! The `$SYS/broker/...` topics Mosquitto publishes every `sys_interval`
//! seconds: version, uptime, clients, messages, bytes, load averages,
//! retained and subscription counts, store and memory figures. Like
//! Mosquitto, a value is published (retained) only when it changed, except
//! the uptime.

use bytes::Bytes;
use midge_core::Broker;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::server::Counters;

/// Load averages over 1, 5 and 15 minutes, as Mosquitto computes them
/// (exponentially weighted per-minute rates).
#[derive(Default)]
struct Load {
    averages: [f64; 3],
    last: u64,
}

impl Load {
    fn update(&mut self, total: u64, interval: Duration) {
        let per_minute =
            (total.saturating_sub(self.last)) as f64 * 60.0 / interval.as_secs_f64().max(1.0);
        self.last = total;
        for (avg, minutes) in self.averages.iter_mut().zip([1.0f64, 5.0, 15.0]) {
            let k = (-interval.as_secs_f64() / (minutes * 60.0)).exp();
            *avg = per_minute + k * (*avg - per_minute);
        }
    }
}

pub struct SysTopics {
    interval: Option<Duration>,
    next: Option<Instant>,
    started: Instant,
    counters: Arc<Counters>,
    last: HashMap<String, String>,
    max_clients: usize,
    loads: HashMap<&'static str, Load>,
}

impl SysTopics {
    pub fn new(interval: Option<Duration>, counters: Arc<Counters>) -> Self {
        let now = Instant::now();
        SysTopics {
            interval,
            // The first publication comes right away, so $SYS exists at once.
            next: interval.map(|_| now),
            started: now,
            counters,
            last: HashMap::new(),
            max_clients: 0,
            loads: HashMap::new(),
        }
    }

    pub fn set_interval(&mut self, interval: Option<Duration>) {
        self.interval = interval;
        self.next = interval.map(|i| Instant::now() + i);
    }

    pub fn next_due(&self) -> Option<Instant> {
        self.next
    }

    pub fn publish(&mut self, broker: &mut Broker, now: Instant) {
        let Some(interval) = self.interval else {
            self.next = None;
            return;
        };
        self.next = Some(now + interval);
        let stats = broker.stats();
        let connected = broker.connection_count();
        let disconnected = broker.offline_session_count();
        self.max_clients = self.max_clients.max(connected);
        let received = self.counters.bytes_received.load(Ordering::Relaxed);
        let sent = self.counters.bytes_sent.load(Ordering::Relaxed);
        let mut values: Vec<(String, String)> = vec![
            (
                "version".into(),
                format!("midge version {}", env!("CARGO_PKG_VERSION")),
            ),
            ("clients/connected".into(), connected.to_string()),
            ("clients/active".into(), connected.to_string()),
            ("clients/disconnected".into(), disconnected.to_string()),
            ("clients/inactive".into(), disconnected.to_string()),
            (
                "clients/total".into(),
                (connected + disconnected).to_string(),
            ),
            ("clients/maximum".into(), self.max_clients.to_string()),
            (
                "messages/received".into(),
                stats.messages_received.to_string(),
            ),
            ("messages/sent".into(), stats.messages_sent.to_string()),
            (
                "publish/messages/received".into(),
                stats.messages_received.to_string(),
            ),
            (
                "publish/messages/sent".into(),
                stats.messages_sent.to_string(),
            ),
            (
                "publish/messages/dropped".into(),
                stats.messages_dropped.to_string(),
            ),
            ("bytes/received".into(), received.to_string()),
            ("bytes/sent".into(), sent.to_string()),
            (
                "retained messages/count".into(),
                broker.retained_count().to_string(),
            ),
            (
                "subscriptions/count".into(),
                broker.subscription_count().to_string(),
            ),
            (
                "store/messages/count".into(),
                broker.stored_message_count().to_string(),
            ),
            (
                "messages/stored".into(),
                broker.stored_message_count().to_string(),
            ),
        ];
        if let Some(rss) = resident_bytes() {
            // Mosquitto's heap figures need its memory tracking; Midge gives
            // the resident set size, the figure operators watch.
            values.push(("heap/current".into(), rss.to_string()));
        }
        for (name, total) in [
            ("messages/received", stats.messages_received),
            ("messages/sent", stats.messages_sent),
            ("publish/dropped", stats.messages_dropped),
            ("bytes/received", received),
            ("bytes/sent", sent),
            ("connections", stats.connections_total),
        ] {
            let load = self.loads.entry(name).or_default();
            load.update(total, interval);
            for (avg, window) in load.averages.iter().zip(["1min", "5min", "15min"]) {
                values.push((format!("load/{name}/{window}"), format!("{avg:.2}")));
            }
        }
        let uptime = now.duration_since(self.started).as_secs();
        broker.publish_internal(
            "$SYS/broker/uptime",
            Bytes::from(format!("{uptime} seconds")),
            true,
            now,
        );
        for (name, value) in values {
            if self.last.get(&name) == Some(&value) {
                continue;
            }
            let topic = format!("$SYS/broker/{name}");
            broker.publish_internal(&topic, Bytes::from(value.clone()), true, now);
            self.last.insert(name, value);
        }
    }
}

pub(crate) fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
