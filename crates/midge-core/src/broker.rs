//! The broker state machine: connections, sessions, QoS flows, routing,
//! retained messages, wills and timers.
//!
//! Shaped like quinn-proto: the server calls [`Broker::handle_packet`],
//! [`Broker::connection_lost`] and [`Broker::handle_timeout`] with the current
//! time, then drains [`Broker::poll_transmit`] (packets to write, connections
//! to close) and [`Broker::drain_events`] (what to log), and sleeps until
//! [`Broker::poll_timeout`]. Nothing here blocks or reads a clock.

use bytestring::ByteString;
use midge_codec::{
    connect_return_code, ConnAck, Connect, Disconnect, LastWill, Packet, ProtocolVersion,
    ReasonCode,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::auth::{AuthExchange, AuthMethod};
use crate::config::BrokerConfig;
use crate::event::{BrokerEvent, DisconnectReason};
use crate::ids::{ConnId, IdMap, SessionKey};
use crate::message::{Message, SharedMessage};
use crate::retained::RetainedIndex;
use crate::session::{Subscription, NEVER_EXPIRES};
use crate::shared::SharedGroups;
use crate::topic_tree::SubscriptionTree;

mod connect;
mod persist;
mod publish;
mod sessions;
mod subscribe;
mod timers;

use sessions::Sessions;

use timers::{Timer, Timers};

/// Packets for one connection, and whether to close it after writing them.
#[derive(Debug)]
pub struct Transmit {
    pub conn: ConnId,
    /// The level to encode with (3.1.1 before CONNECT).
    pub protocol: ProtocolVersion,
    pub packets: Vec<Packet>,
    /// Close the connection once `packets` are written.
    pub close: bool,
}

/// Counters for `$SYS` and benchmarks.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub messages_received: u64,
    pub messages_sent: u64,
    pub messages_dropped: u64,
    pub connections_total: u64,
}

#[derive(Debug)]
struct Connection {
    /// The session attached, which holds the client id: a connection keeps
    /// no copy of its own (see [`Broker::client_id`]).
    session: Option<SessionKey>,
    protocol: Option<ProtocolVersion>,
    /// The keep-alive in force, in seconds (0: none); see [`Connection::grace`].
    keep_alive: u16,
    last_seen: Instant,
    outbox: Vec<Packet>,
    /// Size of the last batch, to size the next one in one allocation
    /// (growing a vector of packets copies them at every doubling).
    last_batch: u16,
    queued_for_transmit: bool,
    closing: bool,
    /// An enhanced-authentication exchange in progress (before CONNACK, or a
    /// re-authentication after it).
    auth: Option<Box<PendingAuth>>,
    /// What few connections have, behind one box: an idle connection
    /// without them pays 8 bytes, not 96.
    extras: Option<Box<ConnExtras>>,
}

/// 1.5 × a keep-alive of `seconds`, `None` for 0.
fn keep_alive_grace(seconds: u16) -> Option<Duration> {
    (seconds > 0).then(|| Duration::from_millis(u64::from(seconds) * 1500))
}

#[derive(Debug, Default)]
struct ConnExtras {
    /// The Authentication Method this connection authenticated with.
    auth_method: Option<ByteString>,
    /// A user name proven by the transport (TLS client certificate with
    /// `use_identity_as_username`): it replaces CONNECT's, unchecked.
    identity: Option<ByteString>,
    /// The listener's `mount_point`.
    mount: Option<ByteString>,
}

impl Connection {
    /// How long the connection may stay silent: 1.5 × the keep-alive
    /// ([MQTT-3.1.2-24]); `None` when the keep-alive is 0.
    fn grace(&self) -> Option<Duration> {
        keep_alive_grace(self.keep_alive)
    }

    fn auth_method(&self) -> Option<&ByteString> {
        self.extras.as_ref().and_then(|e| e.auth_method.as_ref())
    }

    fn identity(&self) -> Option<&ByteString> {
        self.extras.as_ref().and_then(|e| e.identity.as_ref())
    }

    fn mount(&self) -> Option<&ByteString> {
        self.extras.as_ref().and_then(|e| e.mount.as_ref())
    }

    fn extras_mut(&mut self) -> &mut ConnExtras {
        self.extras.get_or_insert_with(Box::default)
    }
}

struct PendingAuth {
    method: ByteString,
    exchange: Box<dyn AuthExchange>,
    /// The CONNECT waiting for the exchange to succeed; `None` on re-auth.
    connect: Option<Box<Connect>>,
}

impl std::fmt::Debug for PendingAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingAuth")
            .field("method", &self.method)
            .finish_non_exhaustive()
    }
}

/// Connections and the list of those with something to transmit. Kept apart
/// from the sessions so both can be borrowed at once on the publish path.
#[derive(Debug, Default)]
struct Links {
    /// Boxed, as are the sessions: a table of boxes wastes little of its
    /// spare capacity, a table of the structs a lot (idle connections).
    conns: IdMap<ConnId, Box<Connection>>,
    dirty: Vec<ConnId>,
    /// Packets in the connections' outboxes, not yet taken by
    /// [`Broker::poll_transmit`].
    queued: usize,
}

impl Links {
    fn send(&mut self, conn_id: ConnId, packet: Packet) -> bool {
        let Some(conn) = self.conns.get_mut(&conn_id) else {
            return false;
        };
        if conn.closing {
            return false;
        }
        if conn.outbox.capacity() == 0 {
            conn.outbox.reserve(usize::from(conn.last_batch).max(4));
        }
        conn.outbox.push(packet);
        self.queued += 1;
        self.mark_dirty(conn_id);
        true
    }

    /// Forgets a connection, and the packets it still had to send.
    fn remove(&mut self, conn_id: ConnId) {
        if let Some(conn) = self.conns.remove(&conn_id) {
            self.queued -= conn.outbox.len();
        }
    }

    /// Lists the connection for the next [`Broker::poll_transmit`], once.
    fn mark_dirty(&mut self, conn_id: ConnId) {
        if let Some(conn) = self.conns.get_mut(&conn_id) {
            if !conn.queued_for_transmit {
                conn.queued_for_transmit = true;
                self.dirty.push(conn_id);
            }
        }
    }
}

/// One subscriber of the message being routed, after merging all of its
/// matching subscriptions.
#[derive(Debug, Clone)]
struct Target {
    key: SessionKey,
    qos: midge_codec::QoS,
    retain_as_published: bool,
    sub_ids: crate::session::SubIds,
}

pub struct Broker {
    config: BrokerConfig,
    links: Links,
    sessions: Sessions,
    tree: SubscriptionTree<SessionKey, Subscription>,
    shared: SharedGroups,
    retained: RetainedIndex<SharedMessage>,
    auth_methods: Vec<Arc<dyn AuthMethod>>,
    access: Option<Arc<dyn crate::access::AccessControl>>,
    timers: Timers,
    events: Vec<BrokerEvent>,
    route_generation: u64,
    targets: Vec<Target>,
    groups_scratch: Vec<u32>,
    store_ops: Vec<crate::persist::StoreOp>,
    /// The server says the broker is over `memory_limit`: new messages are
    /// refused until it is not.
    memory_exceeded: bool,
    id_state: u64,
    stats: Stats,
}

impl Broker {
    pub fn new(config: BrokerConfig) -> Self {
        let id_state = config.id_seed;
        Broker {
            config,
            links: Links::default(),
            sessions: Sessions::default(),
            tree: SubscriptionTree::new(),
            shared: SharedGroups::default(),
            retained: RetainedIndex::new(),
            auth_methods: Vec::new(),
            access: None,
            timers: Timers::default(),
            events: Vec::new(),
            route_generation: 0,
            targets: Vec::new(),
            groups_scratch: Vec::new(),
            store_ops: Vec::new(),
            memory_exceeded: false,
            id_state,
            stats: Stats::default(),
        }
    }

    /// Sets (or, on reload, replaces) the password and ACL checks.
    pub fn set_access_control(&mut self, access: Option<Arc<dyn crate::access::AccessControl>>) {
        self.access = access;
    }

    /// Mosquitto's `memory_limit`: while set, PUBLISH from clients is
    /// refused (5.0: 0x97 Quota exceeded; 3.x: acknowledged and dropped).
    pub fn set_memory_exceeded(&mut self, exceeded: bool) {
        self.memory_exceeded = exceeded;
    }

    /// Offers an enhanced-authentication method to 5.0 clients.
    pub fn register_auth_method(&mut self, method: Arc<dyn AuthMethod>) {
        self.auth_methods.push(method);
    }

    /// Applies a reloaded configuration (SIGHUP). Limits apply to what
    /// happens from now on; connected clients keep what they negotiated.
    pub fn set_config(&mut self, config: BrokerConfig) {
        let seed = self.config.id_seed;
        self.config = BrokerConfig {
            id_seed: seed,
            ..config
        };
    }

    /// Publishes a message from the broker itself (`$SYS` topics, log
    /// lines with `log_dest topic`).
    pub fn publish_internal(
        &mut self,
        topic: &str,
        payload: bytes::Bytes,
        retain: bool,
        now: Instant,
    ) {
        let msg = Arc::new(Message::plain(
            topic,
            payload,
            midge_codec::QoS::AtMostOnce,
            retain,
        ));
        self.publish_message(msg, now);
    }

    /// Every subscription as `client_id filter qos`, for SIGUSR2.
    pub fn dump_subscriptions(&self) -> Vec<String> {
        let mut out = Vec::new();
        for s in self.sessions.iter() {
            for (filter, sub) in &s.subscriptions {
                out.push(format!(
                    "{} {} {}",
                    s.client_id, filter, sub.options.qos as u8
                ));
            }
        }
        out.sort();
        out
    }

    /// Sessions kept for clients that are not connected.
    pub fn offline_session_count(&self) -> usize {
        self.sessions.iter().filter(|s| s.conn().is_none()).count()
    }

    /// Messages waiting in sessions' queues and in flight.
    pub fn stored_message_count(&self) -> usize {
        self.sessions
            .iter()
            .map(|s| s.queue.len() + s.inflight.len())
            .sum::<usize>()
            + self.retained.len()
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    pub fn connection_count(&self) -> usize {
        self.links.conns.len()
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    pub fn subscription_count(&self) -> usize {
        self.tree.len() + self.shared.len()
    }

    pub fn retained_count(&self) -> usize {
        self.retained.len()
    }

    /// A new network connection. It must send CONNECT within
    /// `config.connect_timeout`.
    pub fn connection_opened(&mut self, conn: ConnId, now: Instant) {
        self.links.conns.insert(
            conn,
            Box::new(Connection {
                session: None,
                protocol: None,
                keep_alive: 0,
                last_seen: now,
                outbox: Vec::new(),
                last_batch: 0,
                queued_for_transmit: false,
                closing: false,
                auth: None,
                extras: None,
            }),
        );
        self.stats.connections_total += 1;
        if let Some(t) = self.config.connect_timeout {
            self.push_timer(now + t, Timer::ConnectTimeout(conn));
        }
    }

    /// The transport proved who the client is (a TLS client certificate):
    /// that name is its user name, whatever CONNECT says.
    pub fn set_transport_identity(&mut self, conn: ConnId, username: ByteString) {
        if let Some(c) = self.links.conns.get_mut(&conn) {
            c.extras_mut().identity = Some(username);
        }
    }

    /// The client id of a connection's session (for debug logging); `None`
    /// before the CONNACK and once the session is detached.
    pub fn client_id(&self, conn: ConnId) -> Option<&str> {
        let key = self.links.conns.get(&conn)?.session?;
        Some(&*self.sessions.get(key)?.client_id).filter(|id| !id.is_empty())
    }

    /// The connection came in on a listener with a `mount_point`.
    pub fn set_mount_point(&mut self, conn: ConnId, prefix: ByteString) {
        if let Some(c) = self.links.conns.get_mut(&conn) {
            c.extras_mut().mount = Some(prefix);
        }
    }

    /// The socket closed or failed. The will is published unless the client
    /// had sent DISCONNECT.
    pub fn connection_lost(&mut self, conn: ConnId, now: Instant) {
        self.close(conn, now, true, None, DisconnectReason::ConnectionLost);
        // Nothing more can be written to it.
        self.links.remove(conn);
    }

    /// The server could not decode what the client sent. A 5.0 client is sent
    /// DISCONNECT with `reason` first ([MQTT-4.13.1-1]); the will is published.
    pub fn protocol_error(&mut self, conn: ConnId, reason: ReasonCode, now: Instant) {
        self.close(
            conn,
            now,
            true,
            Some(reason),
            DisconnectReason::ProtocolError(reason),
        );
    }

    /// A CONNECT with a protocol level we do not speak: CONNACK with return
    /// code 1 (3.1.1 form, which Paho uses to fall back to 3.1), then close.
    pub fn unsupported_protocol_version(&mut self, conn: ConnId, now: Instant) {
        // A second CONNECT (whatever its level) is a protocol error on a
        // live connection [MQTT-3.1.0-2], not a refused first one.
        if self
            .links
            .conns
            .get(&conn)
            .is_some_and(|c| c.protocol.is_some())
        {
            self.protocol_error(conn, ReasonCode::PROTOCOL_ERROR, now);
            return;
        }
        self.links.send(
            conn,
            Packet::ConnAck(ConnAck {
                session_present: false,
                code: connect_return_code::UNACCEPTABLE_PROTOCOL_VERSION,
                properties: Default::default(),
            }),
        );
        self.events.push(BrokerEvent::ConnectRefused {
            conn,
            client_id: ByteString::new(),
            code: connect_return_code::UNACCEPTABLE_PROTOCOL_VERSION,
        });
        self.mark_closing(conn);
    }

    /// Graceful stop: the wills of connected clients are published first,
    /// while every subscriber is still connected to get them (a persistent
    /// session that is offline gets them queued, and stored), then every
    /// connection is closed and told why when it speaks 5.0.
    pub fn shutdown(&mut self, now: Instant) {
        let ids: Vec<ConnId> = self.links.conns.keys().copied().collect();
        let mut wills = Vec::new();
        for id in &ids {
            let key = self.links.conns.get(id).and_then(|c| c.session);
            if let Some(s) = key.and_then(|k| self.sessions.get_mut(k)) {
                if let Some(w) = s.take_will() {
                    wills.push(w);
                }
            }
        }
        for w in wills {
            self.publish_will(*w, now);
        }
        for id in ids {
            self.close(
                id,
                now,
                false,
                Some(ReasonCode::SERVER_SHUTTING_DOWN),
                DisconnectReason::ServerShutdown,
            );
        }
    }

    pub fn handle_packet(&mut self, conn_id: ConnId, packet: Packet, now: Instant) {
        let Some(conn) = self.links.conns.get_mut(&conn_id) else {
            return;
        };
        if conn.closing {
            return;
        }
        conn.last_seen = now;
        let Some(key) = conn.session else {
            match packet {
                Packet::Connect(c) if conn.protocol.is_none() => {
                    self.handle_connect(conn_id, c, now)
                }
                Packet::Auth(a) if conn.auth.is_some() => self.handle_auth(conn_id, None, a, now),
                Packet::Disconnect(_) if conn.auth.is_some() => self.close(
                    conn_id,
                    now,
                    false,
                    None,
                    DisconnectReason::ClientDisconnected,
                ),
                // [MQTT-3.1.0-1] the first packet must be CONNECT.
                _ => self.protocol_error(conn_id, ReasonCode::PROTOCOL_ERROR, now),
            }
            return;
        };
        match packet {
            Packet::Publish(p) => self.handle_publish(conn_id, key, p, now),
            Packet::PubAck(r) => self.handle_puback(key, r.packet_id, now),
            Packet::PubRec(r) => self.handle_pubrec(conn_id, key, r, now),
            Packet::PubRel(r) => self.handle_pubrel(conn_id, key, r.packet_id),
            Packet::PubComp(r) => self.handle_pubcomp(key, r.packet_id, now),
            Packet::Subscribe(s) => self.handle_subscribe(conn_id, key, s, now),
            Packet::Unsubscribe(u) => self.handle_unsubscribe(conn_id, key, u),
            Packet::PingReq => {
                self.links.send(conn_id, Packet::PingResp);
            }
            Packet::Disconnect(d) => self.handle_disconnect(conn_id, key, d, now),
            Packet::Auth(a) => self.handle_auth(conn_id, Some(key), a, now),
            // [MQTT-3.1.0-2] a second CONNECT is a protocol error; the other
            // packets only flow from server to client.
            _ => self.protocol_error(conn_id, ReasonCode::PROTOCOL_ERROR, now),
        }
    }

    /// Adds a timer entry; see [`timers`] for how dead ones are dropped.
    fn push_timer(&mut self, due: Instant, timer: Timer) {
        let conns = &self.links.conns;
        let sessions = &self.sessions;
        self.timers.push(due, timer, |t| match *t {
            Timer::ConnectTimeout(id) | Timer::KeepAlive(id) => conns.contains_key(&id),
            Timer::SessionExpiry(key) | Timer::WillDelay(key) => sessions.get(key).is_some(),
        });
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((_, timer)) = self.timers.pop_due(now) {
            match timer {
                Timer::ConnectTimeout(id) => {
                    let Some(c) = self.links.conns.get(&id) else {
                        continue;
                    };
                    if c.closing {
                        continue;
                    }
                    if c.session.is_none() {
                        self.close(id, now, false, None, DisconnectReason::ConnectTimeout);
                    } else {
                        // Connected: this entry now watches the keep-alive.
                        self.check_keep_alive(id, now);
                    }
                }
                Timer::KeepAlive(id) => self.check_keep_alive(id, now),
                Timer::SessionExpiry(key) => {
                    let expired = self.sessions.get(key).is_some_and(|s| {
                        s.conn().is_none() && s.expires_at.is_some_and(|t| t <= now)
                    });
                    if expired {
                        self.end_session(key, now);
                    }
                }
                Timer::WillDelay(key) => {
                    let due_will =
                        self.sessions
                            .get_mut(key)
                            .and_then(|s| match s.pending_will() {
                                Some((_, at)) if *at <= now && s.conn().is_none() => {
                                    s.take_pending_will()
                                }
                                _ => None,
                            });
                    if let Some((will, _)) = due_will {
                        self.publish_will(*will, now);
                    }
                }
            }
        }
    }

    /// Closes a connection silent past its keep-alive grace
    /// ([MQTT-3.1.2-24]), or looks again when the grace would run out.
    fn check_keep_alive(&mut self, id: ConnId, now: Instant) {
        let Some(c) = self.links.conns.get(&id) else {
            return;
        };
        let Some(grace) = c.grace() else { return };
        if c.closing {
            return;
        }
        let deadline = c.last_seen + grace;
        if deadline <= now {
            self.close(
                id,
                now,
                true,
                Some(ReasonCode::KEEP_ALIVE_TIMEOUT),
                DisconnectReason::KeepAliveTimeout,
            );
        } else {
            self.push_timer(deadline, Timer::KeepAlive(id));
        }
    }

    /// When [`Broker::handle_timeout`] next has work, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_due()
    }

    /// Packets waiting for [`Broker::poll_transmit`]. A server handling a
    /// batch of input takes them once this grows: one message fanned out
    /// to many subscribers leaves a packet for each.
    pub fn queued_packets(&self) -> usize {
        self.links.queued
    }

    /// Next batch of packets for one connection.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        while let Some(id) = self.links.dirty.pop() {
            let Some(conn) = self.links.conns.get_mut(&id) else {
                continue;
            };
            conn.queued_for_transmit = false;
            let packets = std::mem::take(&mut conn.outbox);
            self.links.queued -= packets.len();
            conn.last_batch = u16::try_from(packets.len()).unwrap_or(u16::MAX);
            let close = conn.closing;
            let protocol = conn.protocol.unwrap_or(ProtocolVersion::V311);
            if close {
                self.links.remove(id);
            }
            return Some(Transmit {
                conn: id,
                protocol,
                packets,
                close,
            });
        }
        None
    }

    /// Takes every pending event at once.
    pub fn drain_events(&mut self) -> Vec<BrokerEvent> {
        std::mem::take(&mut self.events)
    }

    // ----- connection life cycle -------------------------------------------

    fn mark_closing(&mut self, conn_id: ConnId) {
        let Some(conn) = self.links.conns.get_mut(&conn_id) else {
            return;
        };
        conn.closing = true;
        self.links.mark_dirty(conn_id);
    }

    /// Closes a connection: optional DISCONNECT (5.0 only), detach its session,
    /// publish its will if `send_will`.
    fn close(
        &mut self,
        conn_id: ConnId,
        now: Instant,
        send_will: bool,
        reason: Option<ReasonCode>,
        why: DisconnectReason,
    ) {
        let Some(conn) = self.links.conns.get_mut(&conn_id) else {
            return;
        };
        if conn.closing {
            return;
        }
        if let (Some(reason), Some(ProtocolVersion::V5)) = (reason, conn.protocol) {
            self.links.send(
                conn_id,
                Packet::Disconnect(Disconnect {
                    reason,
                    properties: Default::default(),
                }),
            );
        }
        self.mark_closing(conn_id);
        let Some(conn) = self.links.conns.get_mut(&conn_id) else {
            return;
        };
        if let Some(key) = conn.session.take() {
            let client_id = self
                .sessions
                .get(key)
                .map(crate::session::Session::id_copy)
                .unwrap_or_default();
            self.events.push(BrokerEvent::ClientDisconnected {
                conn: conn_id,
                client_id,
                reason: why,
            });
            self.detach_session(key, now, send_will);
        }
    }

    fn detach_session(&mut self, key: SessionKey, now: Instant, send_will: bool) {
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        s.set_conn(None);
        let will = s.take_will();
        let expiry = s.expiry_interval;
        // A will with a Will Delay Interval waits, unless the session ends
        // first ([MQTT-3.1.2-8]); a reconnect in between cancels it.
        let mut will_now = None;
        let mut will_timer = None;
        if send_will {
            if let Some(will) = will {
                match will.properties.will_delay_interval {
                    Some(delay) if delay > 0 && expiry != 0 => {
                        let at = now + Duration::from_secs(u64::from(delay));
                        s.set_pending_will(will, at);
                        will_timer = Some(at);
                    }
                    _ => will_now = Some(will),
                }
            }
        }
        if s.stored && expiry != 0 {
            let will = s.pending_will().map(|(w, _)| (**w).clone());
            self.store_ops
                .push(crate::persist::StoreOp::SessionOffline {
                    client_id: s.client_id.clone(),
                    will,
                });
        }
        if let Some(at) = will_timer {
            self.push_timer(at, Timer::WillDelay(key));
        }
        // QoS 1/2 copies sent through a shared subscription go to another
        // member rather than wait for this one.
        self.redistribute_shared(key, now);
        match expiry {
            0 => self.end_session(key, now),
            NEVER_EXPIRES => {}
            secs => {
                if let Some(s) = self.sessions.get_mut(key) {
                    let at = now + Duration::from_secs(u64::from(secs));
                    s.expires_at = Some(at);
                    self.push_timer(at, Timer::SessionExpiry(key));
                }
            }
        }
        if let Some(will) = will_now {
            self.publish_will(*will, now);
        }
    }

    /// Removes a session and all its subscriptions; a will still waiting
    /// for its delay is published now.
    fn end_session(&mut self, key: SessionKey, now: Instant) {
        let Some(mut s) = self.sessions.remove(key) else {
            return;
        };
        if s.stored {
            self.store_ops.push(crate::persist::StoreOp::DeleteSession {
                client_id: s.client_id.clone(),
            });
        }
        for filter in s.subscriptions.keys() {
            match midge_codec::parse_shared(filter) {
                Some((group, f)) => {
                    self.shared.unsubscribe(group, f, key);
                }
                None => {
                    self.tree.remove(filter, key);
                }
            }
        }
        if let Some((will, _)) = s.take_pending_will() {
            self.publish_will(*will, now);
        }
    }

    fn publish_will(&mut self, will: LastWill, now: Instant) {
        let expires_at = will
            .properties
            .message_expiry_interval
            .map(|s| now + Duration::from_secs(u64::from(s)));
        let mut properties = will.properties;
        if let Some(p) = properties.get_mut() {
            p.will_delay_interval = None;
        }
        let properties = publish::forwardable(properties);
        let msg = Arc::new(Message {
            topic: will.topic,
            payload: will.payload,
            qos: will.qos,
            retain: will.retain,
            properties,
            publisher: None,
            expires_at,
        });
        self.publish_message(msg, now);
    }

    fn refuse(&mut self, conn_id: ConnId, client_id: ByteString, code: u8) {
        self.links.send(
            conn_id,
            Packet::ConnAck(ConnAck {
                session_present: false,
                code,
                properties: Default::default(),
            }),
        );
        if let Some(c) = self.links.conns.get_mut(&conn_id) {
            c.auth = None;
        }
        self.events.push(BrokerEvent::ConnectRefused {
            conn: conn_id,
            client_id,
            code,
        });
        self.mark_closing(conn_id);
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_access;
#[cfg(test)]
mod tests_persist;
#[cfg(test)]
mod tests_v5;
