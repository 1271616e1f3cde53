//! The router task: sole owner of the broker core. It takes batches of
//! decoded packets from connection readers, runs the core, and hands each
//! connection's outgoing batch to its writer. Owning the core in one task
//! means no lock on the publish path; the per-connection work (reading,
//! decoding, encoding, writing) runs in parallel on the other cores.

use midge_codec::Packet;
use midge_codec::{ProtocolVersion, ReasonCode};
use midge_core::{Broker, BrokerEvent, ConnId, DisconnectReason, Transmit};
use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

use crate::connection::{transmit_weight, Outbox, CONGESTED, SLOW_AFTER, SLOW_READER_LIMIT};
use crate::durable::{Durability, StoreThread};
use crate::log::{LogType, Logger};
use crate::server::{Control, Counters, ServerOptions};
use crate::sys::SysTopics;
use bytes::Bytes;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// What connection tasks tell the router.
#[derive(Debug)]
pub enum RouterMsg {
    Open {
        conn: ConnId,
        writer: Arc<crate::connection::Outbox>,
        peer: Box<str>,
        /// The user name a TLS client certificate proved, if the listener
        /// takes it from there.
        identity: Option<String>,
        /// The listener's `mount_point`.
        mount: Option<Arc<str>>,
    },
    Packets {
        conn: ConnId,
        packets: Vec<Packet>,
    },
    /// The socket closed or failed.
    Lost {
        conn: ConnId,
    },
    /// The client sent bytes that do not decode; `reason` is the 5.0 code.
    ProtocolError {
        conn: ConnId,
        reason: ReasonCode,
        detail: String,
    },
    /// CONNECT with a protocol level we do not speak.
    UnsupportedVersion {
        conn: ConnId,
        level: u8,
    },
}

struct Peer {
    /// The connection's queue; its `backlog` counts what is not yet written.
    writer: Arc<crate::connection::Outbox>,
    address: Box<str>,
}

/// Most messages handled before the router flushes outgoing batches: large
/// enough to batch under load, small enough to keep latency low.
const BATCH: usize = 256;

/// Packets the core may hold for the connections before the router stops
/// taking messages and flushes them, whatever [`BATCH`] says: a message
/// read from a publisher carries up to a hundred PUBLISH packets, and each
/// leaves a packet for every subscriber. Without this bound a fan-out to
/// 50 subscribers staged 1.3 million packets (about 100 MB) per batch.
const FLUSH_AT_PACKETS: usize = 64 * 1024;

pub async fn run_router(
    options: ServerOptions,
    mut rx: mpsc::Receiver<RouterMsg>,
    mut control: mpsc::UnboundedReceiver<Control>,
    counters: Arc<Counters>,
    log: Logger,
    durability: Option<Durability>,
    shutdown: impl Future<Output = ()>,
) {
    let mut broker = Broker::new(options.broker.clone());
    broker.set_access_control(options.access.as_ref().map(|a| a.0.clone()));
    let store = durability.map(|d| {
        broker.restore(d.restored, Instant::now());
        StoreThread::start(d.store, d.checkpoint_every, log.clone())
    });
    let mut peers: HashMap<ConnId, Peer> = HashMap::new();
    let (topic_tx, mut topic_rx) = mpsc::unbounded_channel();
    log.set_topic_sink(topic_tx);
    let mut sys = SysTopics::new(options.sys_interval, counters.clone());
    let mut congested: HashMap<ConnId, Instant> = HashMap::new();
    let mut memory = MemoryWatch::new(options.memory_limit);
    tokio::pin!(shutdown);
    let timer = tokio::time::sleep(Duration::from_secs(86_400));
    tokio::pin!(timer);
    loop {
        wait_for_writers(&mut congested, &peers, &counters).await;
        memory.check(&mut broker, &log);
        // One timer for the core's next deadline and the next $SYS
        // update, moved only when that changes: a fresh timer per turn of
        // this loop would be registered and dropped per message.
        let deadline = broker.poll_timeout();
        let sys_due = sys.next_due();
        let next = match (deadline, sys_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(next) = next.map(tokio::time::Instant::from_std) {
            if timer.deadline() != next {
                timer.as_mut().reset(next);
            }
        }
        tokio::select! {
            msg = rx.recv() => {
                let Some(msg) = msg else { break };
                let now = Instant::now();
                handle(&mut broker, &mut peers, msg, now, &log);
                for _ in 1..BATCH {
                    if broker.queued_packets() >= FLUSH_AT_PACKETS {
                        break;
                    }
                    match rx.try_recv() {
                        Ok(msg) => handle(&mut broker, &mut peers, msg, now, &log),
                        Err(_) => break,
                    }
                }
                if broker.poll_timeout().is_some_and(|d| d <= now) {
                    broker.handle_timeout(now);
                }
            }
            _ = &mut timer, if next.is_some() => {
                let now = Instant::now();
                if deadline.is_some_and(|d| d <= now) {
                    broker.handle_timeout(now);
                }
                if sys_due.is_some_and(|d| d <= now) {
                    sys.publish(&mut broker, now);
                }
            }
            line = topic_rx.recv() => {
                if let Some(l) = line {
                    let topic = format!("$SYS/broker/log/{}", l.kind.topic_level());
                    broker.publish_internal(&topic, Bytes::from(l.line), false, Instant::now());
                }
            }
            c = control.recv() => match c {
                Some(Control::Reload(o)) => {
                    broker.set_config(o.broker.clone());
                    memory = MemoryWatch::new(o.memory_limit);
                    broker.set_access_control(o.access.as_ref().map(|a| a.0.clone()));
                    sys.set_interval(o.sys_interval);
                }
                Some(Control::Checkpoint) => match &store {
                    Some(s) => s.checkpoint(),
                    None => crate::log!(log, LogType::NOTICE, "Persistence is off (state is kept in memory): nothing to save."),
                },
                Some(Control::DumpSubscriptions) => {
                    let lines = broker.dump_subscriptions();
                    crate::log!(log, LogType::NOTICE, "Subscriptions ({}):", lines.len());
                    for l in lines {
                        crate::log!(log, LogType::NOTICE, "  {}", l);
                    }
                }
                None => {}
            },
            _ = &mut shutdown => {
                broker.shutdown(Instant::now());
                flush(&mut broker, &mut peers, &mut congested, &log, store.as_ref());
                break;
            }
        }
        flush(
            &mut broker,
            &mut peers,
            &mut congested,
            &log,
            store.as_ref(),
        );
    }
    for p in peers.values() {
        p.writer.close();
    }
    if let Some(s) = store {
        // Blocking join of the store thread: the runtime is winding down.
        tokio::task::block_in_place(|| s.finish());
    }
}

fn handle(
    broker: &mut Broker,
    peers: &mut HashMap<ConnId, Peer>,
    msg: RouterMsg,
    now: Instant,
    log: &Logger,
) {
    match msg {
        RouterMsg::Open {
            conn,
            writer,
            peer,
            identity,
            mount,
        } => {
            peers.insert(
                conn,
                Peer {
                    writer,
                    address: peer,
                },
            );
            broker.connection_opened(conn, now);
            if let Some(name) = identity {
                broker.set_transport_identity(conn, name.into());
            }
            if let Some(m) = mount {
                broker.set_mount_point(conn, bytestring::ByteString::from(&*m));
            }
        }
        RouterMsg::Packets { conn, packets } => {
            let debug = log.enabled(LogType::DEBUG);
            for p in packets {
                if debug {
                    let who = match &p {
                        Packet::Connect(c) => c.client_id.to_string(),
                        _ => broker.client_id(conn).unwrap_or("unknown").to_owned(),
                    };
                    let (name, details) = describe_packet(&p);
                    crate::log!(
                        log,
                        LogType::DEBUG,
                        "Received {} from {}{}",
                        name,
                        who,
                        details
                    );
                }
                broker.handle_packet(conn, p, now);
            }
        }
        RouterMsg::Lost { conn } => {
            broker.connection_lost(conn, now);
            if let Some(p) = peers.remove(&conn) {
                p.writer.close();
            }
        }
        RouterMsg::ProtocolError {
            conn,
            reason,
            detail,
        } => {
            if let Some(p) = peers.get(&conn) {
                crate::log!(
                    log,
                    LogType::NOTICE,
                    "Bad packet from {}: {}",
                    p.address,
                    detail
                );
            }
            broker.protocol_error(conn, reason, now);
        }
        RouterMsg::UnsupportedVersion { conn, level } => {
            if let Some(p) = peers.get(&conn) {
                crate::log!(
                    log,
                    LogType::NOTICE,
                    "Refusing client from {}: unsupported protocol level {}.",
                    p.address,
                    level
                );
            }
            broker.unsupported_protocol_version(conn, now);
        }
    }
}

/// `memory_limit`: resident memory sampled at most every 100 ms.
struct MemoryWatch {
    limit: u64,
    last: Option<Instant>,
    exceeded: bool,
}

impl MemoryWatch {
    fn new(limit: u64) -> Self {
        MemoryWatch {
            limit,
            last: None,
            exceeded: false,
        }
    }

    fn check(&mut self, broker: &mut Broker, log: &Logger) {
        if self.limit == 0 {
            return;
        }
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < std::time::Duration::from_millis(100))
        {
            return;
        }
        self.last = Some(now);
        let Some(rss) = crate::sys::resident_bytes() else {
            return;
        };
        let exceeded = rss > self.limit;
        if exceeded != self.exceeded {
            self.exceeded = exceeded;
            broker.set_memory_exceeded(exceeded);
            if exceeded {
                crate::log!(
                    log,
                    LogType::WARNING,
                    "Warning: memory_limit reached ({} bytes in use): refusing new messages.",
                    rss
                );
            } else {
                crate::log!(
                    log,
                    LogType::NOTICE,
                    "Memory back under memory_limit: accepting messages again."
                );
            }
        }
    }
}

/// Flow control: while a writer is congested, do not take new messages.
/// A writer congested for longer than [`SLOW_AFTER`] is a slow reader and
/// no longer waited for.
async fn wait_for_writers(
    congested: &mut HashMap<ConnId, Instant>,
    peers: &HashMap<ConnId, Peer>,
    counters: &Counters,
) {
    loop {
        let now = Instant::now();
        // Entries stay while congested, so a slow reader keeps its first
        // timestamp and is not waited for again.
        congested.retain(|id, _| {
            peers
                .get(id)
                .is_some_and(|p| p.writer.backlog.load(Ordering::Relaxed) > CONGESTED)
        });
        if congested
            .values()
            .all(|since| now.duration_since(*since) >= SLOW_AFTER)
        {
            return;
        }
        // Bounded: a missed wake-up costs a millisecond, not a stall.
        let _ = tokio::time::timeout(
            std::time::Duration::from_millis(1),
            counters.drained.notified(),
        )
        .await;
    }
}

fn flush(
    broker: &mut Broker,
    peers: &mut HashMap<ConnId, Peer>,
    congested: &mut HashMap<ConnId, Instant>,
    log: &Logger,
    store: Option<&StoreThread>,
) {
    let through_store = store.filter(|s| broker.has_store_ops() || !s.idle());
    let mut held = Vec::new();
    let debug = log.enabled(LogType::DEBUG);
    while let Some(mut t) = broker.poll_transmit() {
        let close = t.close;
        let conn = t.conn;
        if debug {
            let who = broker.client_id(conn).unwrap_or("unknown").to_owned();
            for p in &t.packets {
                let (name, details) = describe_packet(p);
                crate::log!(
                    log,
                    LogType::DEBUG,
                    "Sending {} to {}{}",
                    name,
                    who,
                    details
                );
            }
        }
        if let Some(p) = peers.get_mut(&conn) {
            if p.writer.backlog.load(Ordering::Relaxed) > SLOW_READER_LIMIT {
                let before = t.packets.len();
                t.packets.retain(
                    |p| !matches!(p, Packet::Publish(p) if p.qos == midge_codec::QoS::AtMostOnce),
                );
                if t.packets.len() < before && p.writer.first_drop() {
                    crate::log!(
                        log,
                        LogType::WARNING,
                        "Warning: client at {} is not reading; dropping QoS 0 messages to it.",
                        p.address
                    );
                }
            }
            let weight = transmit_weight(&t);
            let before = p.writer.backlog.fetch_add(weight, Ordering::Relaxed);
            if before + weight > CONGESTED {
                congested.entry(conn).or_insert_with(Instant::now);
            }
            // A writer that already stopped means the socket is gone; the
            // reader reports that as Lost.
            let mut holding = false;
            if through_store.is_some() {
                if let Some((rest, rest_weight)) = send_early(&p.writer, t, weight) {
                    p.writer.hold();
                    held.push((p.writer.clone(), rest, rest_weight));
                    holding = true;
                }
            } else {
                let _ = p.writer.send(t, weight);
            }
            if close {
                if !holding {
                    p.writer.close();
                }
                // Held, the transmit itself closes the connection once
                // written.
                peers.remove(&conn);
            }
        }
    }
    if let Some(s) = through_store {
        s.submit(broker.take_store_ops(), held);
    }
    for e in broker.drain_events() {
        log_event(&e, peers, log);
    }
}

/// While the store syncs, a connection's packets wait for it, except the
/// leading ones that acknowledge nothing: a PUBLISH at QoS 0 or 1 and a
/// PINGRESP, when nothing is held for the connection already (its packets
/// keep their order). A subscriber so gets its QoS 1 message before the
/// message is durable; should the broker die first, the publisher has no
/// PUBACK and sends it again, a duplicate QoS 1 allows. Sent early, the
/// message is often acknowledged before the store writes it, and then it
/// is never written. `weight` is the transmit's [`transmit_weight`].
/// Returns what must be held, and its weight.
fn send_early(writer: &Outbox, mut t: Transmit, weight: usize) -> Option<(Transmit, usize)> {
    if writer.holding() {
        return Some((t, weight));
    }
    let early = t
        .packets
        .iter()
        .take_while(|p| match p {
            Packet::Publish(p) => p.qos != midge_codec::QoS::ExactlyOnce,
            Packet::PingResp => true,
            _ => false,
        })
        .count();
    if early == t.packets.len() && !t.close {
        let _ = writer.send(t, weight);
        return None;
    }
    if early > 0 {
        let rest = t.packets.split_off(early);
        let first = Transmit {
            conn: t.conn,
            protocol: t.protocol,
            packets: std::mem::replace(&mut t.packets, rest),
            close: false,
        };
        // Only a split weighs again, and only the part sent early.
        let first_weight = transmit_weight(&first);
        let _ = writer.send(first, first_weight);
        return Some((t, weight.saturating_sub(first_weight)));
    }
    Some((t, weight))
}

fn protocol_tag(p: ProtocolVersion) -> u8 {
    // Mosquitto's internal protocol numbers as its log shows them.
    match p {
        ProtocolVersion::V31 => 1,
        ProtocolVersion::V311 => 2,
        ProtocolVersion::V5 => 5,
    }
}

fn log_event(e: &BrokerEvent, peers: &HashMap<ConnId, Peer>, log: &Logger) {
    let address = |c: &ConnId| peers.get(c).map(|p| &*p.address).unwrap_or("unknown");
    match e {
        BrokerEvent::ClientConnected { .. } | BrokerEvent::ClientDisconnected { .. }
            if !log.connection_messages() => {}
        BrokerEvent::ClientConnected {
            conn,
            client_id,
            protocol,
            clean_start,
            keep_alive,
            username,
            ..
        } => {
            let user = username
                .as_ref()
                .map(|u| format!(", u'{u}'"))
                .unwrap_or_default();
            crate::log!(
                log,
                LogType::NOTICE,
                "New client connected from {} as {} (p{}, c{}, k{}{}).",
                address(conn),
                client_id,
                protocol_tag(*protocol),
                u8::from(*clean_start),
                keep_alive,
                user
            );
        }
        BrokerEvent::ConnectRefused {
            conn,
            client_id,
            code,
        } => {
            crate::log!(
                log,
                LogType::NOTICE,
                "Client {} from {} refused: CONNACK code {}.",
                client_id,
                address(conn),
                code
            );
        }
        BrokerEvent::ClientDisconnected {
            client_id, reason, ..
        } => {
            let msg = match reason {
                DisconnectReason::ClientDisconnected => format!("Client {client_id} disconnected."),
                DisconnectReason::ConnectionLost => {
                    format!("Client {client_id} closed its connection.")
                }
                DisconnectReason::KeepAliveTimeout => {
                    format!("Client {client_id} has exceeded timeout, disconnecting.")
                }
                DisconnectReason::TakenOver => {
                    format!("Client {client_id} already connected, closing old connection.")
                }
                DisconnectReason::ConnectTimeout => {
                    format!("Client {client_id} sent no CONNECT in time.")
                }
                DisconnectReason::ProtocolError(rc) => {
                    format!(
                        "Client {client_id} disconnected due to protocol error (reason 0x{:02X}).",
                        rc.0
                    )
                }
                DisconnectReason::ServerShutdown => {
                    format!("Client {client_id} disconnected: server shutting down.")
                }
            };
            crate::log!(log, LogType::NOTICE, "{}", msg);
        }
        BrokerEvent::Subscribed {
            client_id,
            filter,
            qos,
        } => {
            crate::log!(
                log,
                LogType::SUBSCRIBE,
                "{} {} {}",
                client_id,
                *qos as u8,
                filter
            );
        }
        BrokerEvent::Unsubscribed { client_id, filter } => {
            crate::log!(log, LogType::UNSUBSCRIBE, "{} {}", client_id, filter);
        }
        _ => {}
    }
}

/// A packet as Mosquitto's debug log shows it: its name, and the details
/// that follow the client id (`Received PUBLISH from c1 (d0, q1, r0, m1,
/// 'topic', ... (5 bytes))`, `Sending PUBACK to c1 (m1, rc0)`).
fn describe_packet(p: &Packet) -> (&'static str, String) {
    let mid = |id: midge_codec::PacketId| id.get();
    match p {
        Packet::Connect(_) => ("CONNECT", String::new()),
        Packet::ConnAck(a) => (
            "CONNACK",
            format!(" ({}, {})", u8::from(a.session_present), a.code),
        ),
        Packet::Publish(p) => (
            "PUBLISH",
            format!(
                " (d{}, q{}, r{}, m{}, '{}', ... ({} bytes))",
                u8::from(p.dup),
                p.qos as u8,
                u8::from(p.retain),
                p.packet_id.map_or(0, mid),
                p.topic,
                p.payload.len()
            ),
        ),
        Packet::PubAck(r) => (
            "PUBACK",
            format!(" (m{}, rc{})", mid(r.packet_id), r.reason.0),
        ),
        Packet::PubRec(r) => (
            "PUBREC",
            format!(" (m{}, rc{})", mid(r.packet_id), r.reason.0),
        ),
        Packet::PubRel(r) => ("PUBREL", format!(" (m{})", mid(r.packet_id))),
        Packet::PubComp(r) => ("PUBCOMP", format!(" (m{})", mid(r.packet_id))),
        Packet::Subscribe(s) => {
            let filters: Vec<String> = s
                .filters
                .iter()
                .map(|(f, o)| format!("{} (QoS {})", f, o.qos as u8))
                .collect();
            (
                "SUBSCRIBE",
                format!(" (m{}) {}", mid(s.packet_id), filters.join(", ")),
            )
        }
        Packet::SubAck(s) => ("SUBACK", format!(" (m{})", mid(s.packet_id))),
        Packet::Unsubscribe(u) => ("UNSUBSCRIBE", format!(" (m{})", mid(u.packet_id))),
        Packet::UnsubAck(u) => ("UNSUBACK", format!(" (m{})", mid(u.packet_id))),
        Packet::PingReq => ("PINGREQ", String::new()),
        Packet::PingResp => ("PINGRESP", String::new()),
        Packet::Disconnect(d) => ("DISCONNECT", format!(" ({})", d.reason.0)),
        Packet::Auth(a) => ("AUTH", format!(" ({})", a.reason.0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use midge_codec::{PacketId, PubResponse, Publish, QoS};

    fn publish(qos: QoS) -> Packet {
        Packet::Publish(Publish {
            dup: false,
            qos,
            retain: false,
            topic: "t".into(),
            packet_id: (qos != QoS::AtMostOnce).then(|| PacketId::new(1).expect("id")),
            payload: Bytes::from_static(b"m"),
            properties: Default::default(),
        })
    }

    fn puback() -> Packet {
        Packet::PubAck(PubResponse::new(PacketId::new(2).expect("id")))
    }

    fn transmit(packets: Vec<Packet>, close: bool) -> Transmit {
        Transmit {
            conn: ConnId(1),
            protocol: ProtocolVersion::V311,
            packets,
            close,
        }
    }

    fn kinds(t: &Transmit) -> Vec<u8> {
        t.packets.iter().map(Packet::packet_type).collect()
    }

    #[test]
    fn publishes_go_ahead_of_the_store_acknowledgements_wait() {
        let w = Outbox::new(ConnId(1));
        let t = transmit(
            vec![
                publish(QoS::AtLeastOnce),
                puback(),
                publish(QoS::AtMostOnce),
            ],
            false,
        );
        let weight = transmit_weight(&t);
        let (held, held_weight) = send_early(&w, t, weight).expect("the PUBACK waits");
        assert_eq!(kinds(&held), vec![4, 3]);
        let (sent, sent_weight) = w.try_recv().expect("sent");
        assert_eq!(kinds(&sent), vec![3]);
        // The weight is split, not counted again.
        assert_eq!(held_weight, transmit_weight(&held));
        assert_eq!(sent_weight + held_weight, weight);
        // Only publishes: nothing waits.
        assert!(send_early(&w, transmit(vec![publish(QoS::AtLeastOnce)], false), 0).is_none());
        assert!(w.try_recv().is_some());
    }

    #[test]
    fn nothing_overtakes_what_is_held() {
        let w = Outbox::new(ConnId(1));
        // QoS 2 needs the message durable first.
        let held = send_early(&w, transmit(vec![publish(QoS::ExactlyOnce)], false), 0);
        assert!(held.is_some() && w.try_recv().is_none());
        w.hold();
        let held = send_early(&w, transmit(vec![publish(QoS::AtMostOnce)], false), 0);
        assert!(
            held.is_some() && w.try_recv().is_none(),
            "behind a held transmit"
        );
        assert!(w.send_held(transmit(Vec::new(), false), 0));
        assert!(!w.holding());
        // A closing transmit: its publishes go, the close waits its turn.
        let (held, _) =
            send_early(&w, transmit(vec![publish(QoS::AtMostOnce)], true), 0).expect("held");
        assert!(held.close && held.packets.is_empty());
    }
}
