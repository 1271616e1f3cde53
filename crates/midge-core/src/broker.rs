//! The broker state machine: connections, sessions, QoS flows, routing,
//! retained messages, wills and timers.
//!
//! Shaped like quinn-proto: the server calls [`Broker::handle_packet`],
//! [`Broker::connection_lost`] and [`Broker::handle_timeout`] with the current
//! time, then drains [`Broker::poll_transmit`] (packets to write, connections
//! to close) and [`Broker::poll_event`] (what to log), and sleeps until
//! [`Broker::poll_timeout`]. Nothing here blocks or reads a clock.

use bytestring::ByteString;
use midge_codec::{
    connect_return_code, ConnAck, Connect, Disconnect, LastWill, Packet, PacketId, Properties,
    ProtocolVersion, PubResponse, Publish, QoS, ReasonCode, SubAck, Subscribe, UnsubAck,
    Unsubscribe,
};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::BrokerConfig;
use crate::event::{BrokerEvent, DisconnectReason};
use crate::ids::{ConnId, IdMap, SessionKey};
use crate::message::{Message, SharedMessage};
use crate::retained::RetainedIndex;
use crate::session::{Inflight, OutState, Queued, Session, Subscription, NEVER_EXPIRES};
use crate::topic_tree::SubscriptionTree;

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
    session: Option<SessionKey>,
    protocol: Option<ProtocolVersion>,
    client_id: ByteString,
    /// 1.5 × keep-alive; `None` when keep-alive is 0.
    grace: Option<Duration>,
    last_seen: Instant,
    outbox: Vec<Packet>,
    queued_for_transmit: bool,
    closing: bool,
}

/// Connections and the list of those with something to transmit. Kept apart
/// from the sessions so both can be borrowed at once on the publish path.
#[derive(Debug, Default)]
struct Links {
    conns: IdMap<ConnId, Connection>,
    dirty: Vec<ConnId>,
}

impl Links {
    fn send(&mut self, conn_id: ConnId, packet: Packet) -> bool {
        let Some(conn) = self.conns.get_mut(&conn_id) else {
            return false;
        };
        if conn.closing {
            return false;
        }
        conn.outbox.push(packet);
        if !conn.queued_for_transmit {
            conn.queued_for_transmit = true;
            self.dirty.push(conn_id);
        }
        true
    }
}

/// Session table: a slab, so a session is found by index on the publish path.
#[derive(Debug, Default)]
struct Sessions {
    slots: Vec<Option<Session>>,
    free: Vec<u32>,
}

impl Sessions {
    fn insert(&mut self, session: Session) -> SessionKey {
        if let Some(i) = self.free.pop() {
            self.slots[i as usize] = Some(session);
            SessionKey(i)
        } else {
            self.slots.push(Some(session));
            SessionKey((self.slots.len() - 1) as u32)
        }
    }

    fn remove(&mut self, key: SessionKey) -> Option<Session> {
        let s = self.slots.get_mut(key.0 as usize)?.take()?;
        self.free.push(key.0);
        Some(s)
    }

    fn get(&self, key: SessionKey) -> Option<&Session> {
        self.slots.get(key.0 as usize)?.as_ref()
    }

    fn get_mut(&mut self, key: SessionKey) -> Option<&mut Session> {
        self.slots.get_mut(key.0 as usize)?.as_mut()
    }

    fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    ConnectTimeout(ConnId),
    KeepAlive(ConnId),
    SessionExpiry(SessionKey),
}

/// One subscriber of the message being routed, after merging all of its
/// matching subscriptions.
#[derive(Debug, Clone, Copy)]
struct Target {
    key: SessionKey,
    qos: QoS,
    retain_as_published: bool,
}

pub struct Broker {
    config: BrokerConfig,
    links: Links,
    sessions: Sessions,
    clients: HashMap<ByteString, SessionKey>,
    tree: SubscriptionTree<SessionKey, Subscription>,
    retained: RetainedIndex<SharedMessage>,
    timers: BinaryHeap<Reverse<(Instant, Timer)>>,
    events: Vec<BrokerEvent>,
    route_generation: u64,
    targets: Vec<Target>,
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
            clients: HashMap::new(),
            tree: SubscriptionTree::new(),
            retained: RetainedIndex::new(),
            timers: BinaryHeap::new(),
            events: Vec::new(),
            route_generation: 0,
            targets: Vec::new(),
            id_state,
            stats: Stats::default(),
        }
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
        self.tree.len()
    }

    pub fn retained_count(&self) -> usize {
        self.retained.len()
    }

    /// A new network connection. It must send CONNECT within
    /// `config.connect_timeout`.
    pub fn connection_opened(&mut self, conn: ConnId, now: Instant) {
        self.links.conns.insert(
            conn,
            Connection {
                session: None,
                protocol: None,
                client_id: ByteString::new(),
                grace: None,
                last_seen: now,
                outbox: Vec::new(),
                queued_for_transmit: false,
                closing: false,
            },
        );
        self.stats.connections_total += 1;
        if let Some(t) = self.config.connect_timeout {
            self.timers
                .push(Reverse((now + t, Timer::ConnectTimeout(conn))));
        }
    }

    /// The socket closed or failed. The will is published unless the client
    /// had sent DISCONNECT.
    pub fn connection_lost(&mut self, conn: ConnId, now: Instant) {
        self.close(conn, now, true, None, DisconnectReason::ConnectionLost);
        // Nothing more can be written to it.
        self.links.conns.remove(&conn);
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
        let _ = now;
        self.links.send(
            conn,
            Packet::ConnAck(ConnAck {
                session_present: false,
                code: connect_return_code::UNACCEPTABLE_PROTOCOL_VERSION,
                properties: Properties::default(),
            }),
        );
        self.events.push(BrokerEvent::ConnectRefused {
            conn,
            client_id: ByteString::new(),
            code: connect_return_code::UNACCEPTABLE_PROTOCOL_VERSION,
        });
        self.mark_closing(conn);
    }

    /// Every connection is closed (wills are not sent: the broker is going
    /// away, not the clients) and told why when it speaks 5.0.
    pub fn shutdown(&mut self, now: Instant) {
        let ids: Vec<ConnId> = self.links.conns.keys().copied().collect();
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
                // [MQTT-3.1.0-1] the first packet must be CONNECT.
                _ => self.protocol_error(conn_id, ReasonCode::PROTOCOL_ERROR, now),
            }
            return;
        };
        match packet {
            Packet::Publish(p) => self.handle_publish(conn_id, key, p, now),
            Packet::PubAck(r) => self.handle_puback(key, r.packet_id),
            Packet::PubRec(r) => self.handle_pubrec(conn_id, key, r.packet_id),
            Packet::PubRel(r) => self.handle_pubrel(conn_id, key, r.packet_id),
            Packet::PubComp(r) => self.handle_pubcomp(key, r.packet_id),
            Packet::Subscribe(s) => self.handle_subscribe(conn_id, key, s),
            Packet::Unsubscribe(u) => self.handle_unsubscribe(conn_id, key, u),
            Packet::PingReq => {
                self.links.send(conn_id, Packet::PingResp);
            }
            Packet::Disconnect(d) => self.handle_disconnect(conn_id, key, d, now),
            // [MQTT-3.1.0-2] a second CONNECT is a protocol error; the other
            // packets only flow from server to client.
            _ => self.protocol_error(conn_id, ReasonCode::PROTOCOL_ERROR, now),
        }
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((due, timer))) = self.timers.peek().copied() {
            if due > now {
                break;
            }
            self.timers.pop();
            match timer {
                Timer::ConnectTimeout(id) => {
                    let waiting = self
                        .links
                        .conns
                        .get(&id)
                        .is_some_and(|c| c.session.is_none() && !c.closing);
                    if waiting {
                        self.close(id, now, false, None, DisconnectReason::ConnectTimeout);
                    }
                }
                Timer::KeepAlive(id) => {
                    let Some(c) = self.links.conns.get(&id) else {
                        continue;
                    };
                    let Some(grace) = c.grace else { continue };
                    if c.closing {
                        continue;
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
                        self.timers.push(Reverse((deadline, Timer::KeepAlive(id))));
                    }
                }
                Timer::SessionExpiry(key) => {
                    let expired = self.sessions.get(key).is_some_and(|s| {
                        s.conn.is_none() && s.expires_at.is_some_and(|t| t <= now)
                    });
                    if expired {
                        self.end_session(key);
                    }
                }
            }
        }
    }

    /// When [`Broker::handle_timeout`] next has work, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((t, _))| *t)
    }

    /// Next batch of packets for one connection.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        while let Some(id) = self.links.dirty.pop() {
            let Some(conn) = self.links.conns.get_mut(&id) else {
                continue;
            };
            conn.queued_for_transmit = false;
            let packets = std::mem::take(&mut conn.outbox);
            let close = conn.closing;
            let protocol = conn.protocol.unwrap_or(ProtocolVersion::V311);
            if close {
                self.links.conns.remove(&id);
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

    pub fn poll_event(&mut self) -> Option<BrokerEvent> {
        if self.events.is_empty() {
            None
        } else {
            Some(self.events.remove(0))
        }
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
        if !conn.queued_for_transmit {
            conn.queued_for_transmit = true;
            self.links.dirty.push(conn_id);
        }
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
                    properties: Properties::default(),
                }),
            );
        }
        self.mark_closing(conn_id);
        let Some(conn) = self.links.conns.get_mut(&conn_id) else {
            return;
        };
        let client_id = conn.client_id.clone();
        if let Some(key) = conn.session.take() {
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
        s.conn = None;
        let will = s.will.take();
        match s.expiry_interval {
            0 => self.end_session(key),
            NEVER_EXPIRES => {}
            secs => {
                let at = now + Duration::from_secs(u64::from(secs));
                s.expires_at = Some(at);
                self.timers.push(Reverse((at, Timer::SessionExpiry(key))));
            }
        }
        if send_will {
            if let Some(will) = will {
                self.publish_will(will);
            }
        }
    }

    /// Removes a session and all its subscriptions.
    fn end_session(&mut self, key: SessionKey) {
        let Some(s) = self.sessions.remove(key) else {
            return;
        };
        for filter in s.subscriptions.keys() {
            self.tree.remove(filter, key);
        }
        if self.clients.get(&s.client_id) == Some(&key) {
            self.clients.remove(&s.client_id);
        }
    }

    fn publish_will(&mut self, will: LastWill) {
        let msg = Arc::new(Message {
            topic: will.topic,
            payload: will.payload,
            qos: will.qos,
            retain: will.retain,
            properties: forwardable(will.properties),
            publisher: None,
        });
        self.publish_message(msg);
    }

    fn refuse(&mut self, conn_id: ConnId, client_id: ByteString, code: u8) {
        self.links.send(
            conn_id,
            Packet::ConnAck(ConnAck {
                session_present: false,
                code,
                properties: Properties::default(),
            }),
        );
        self.events.push(BrokerEvent::ConnectRefused {
            conn: conn_id,
            client_id,
            code,
        });
        self.mark_closing(conn_id);
    }

    fn handle_connect(&mut self, conn_id: ConnId, c: Box<Connect>, now: Instant) {
        let Connect {
            protocol,
            clean_start,
            keep_alive,
            client_id,
            will,
            username,
            password: _,
            properties,
        } = *c;
        let v5 = protocol.is_v5();
        if let Some(conn) = self.links.conns.get_mut(&conn_id) {
            conn.protocol = Some(protocol);
        }
        let code = |v3: u8, v5_code: ReasonCode| if v5 { v5_code.0 } else { v3 };

        // Enhanced authentication (5.0 AUTH) has no method configured yet.
        if properties.authentication_method.is_some() {
            let rc = code(
                connect_return_code::NOT_AUTHORIZED,
                ReasonCode::BAD_AUTHENTICATION_METHOD,
            );
            self.refuse(conn_id, client_id, rc);
            return;
        }

        let mut assigned = None;
        let client_id = if client_id.is_empty() {
            // 3.1 requires 1..23 characters; 3.1.1 allows an empty id only
            // with clean session ([MQTT-3.1.3-7], [MQTT-3.1.3-8]).
            let allowed = self.config.allow_zero_length_clientid
                && match protocol {
                    ProtocolVersion::V31 => false,
                    ProtocolVersion::V311 => clean_start,
                    ProtocolVersion::V5 => true,
                };
            if !allowed {
                let rc = code(
                    connect_return_code::IDENTIFIER_REJECTED,
                    ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
                );
                self.refuse(conn_id, client_id, rc);
                return;
            }
            let id = ByteString::from(self.assign_client_id());
            assigned = Some(id.clone());
            id
        } else {
            client_id
        };

        if !self.config.allow_anonymous && username.is_none() {
            let rc = code(
                connect_return_code::NOT_AUTHORIZED,
                ReasonCode::NOT_AUTHORIZED,
            );
            self.refuse(conn_id, client_id, rc);
            return;
        }

        // Mosquitto's max_keepalive: a 5.0 client is told the server's value,
        // a 3.x client asking for more (or for none) is refused.
        let mut effective_keep_alive = keep_alive;
        let mut server_keep_alive = None;
        let max_ka = self.config.max_keepalive;
        if max_ka < u16::MAX && (keep_alive > max_ka || keep_alive == 0) {
            if v5 {
                effective_keep_alive = max_ka;
                server_keep_alive = Some(max_ka);
            } else {
                self.refuse(conn_id, client_id, connect_return_code::IDENTIFIER_REJECTED);
                return;
            }
        }

        let expiry_interval = if v5 {
            properties.session_expiry_interval.unwrap_or(0)
        } else if clean_start {
            0
        } else {
            NEVER_EXPIRES
        };

        // Take over an existing session, or start a new one.
        let mut session_present = false;
        let existing = self.clients.get(&client_id).copied();
        let key = match existing {
            Some(key) => {
                let old_conn = self.sessions.get(key).and_then(|s| s.conn);
                if let Some(old) = old_conn {
                    // [MQTT-3.1.4-3]: the old connection goes, its will is
                    // published (a 5.0 session continuing cancels it).
                    let send_will = !v5 || clean_start;
                    self.close(
                        old,
                        now,
                        send_will,
                        Some(ReasonCode::SESSION_TAKEN_OVER),
                        DisconnectReason::TakenOver,
                    );
                }
                // The session may have ended just now (old expiry 0).
                match self.sessions.get(key) {
                    Some(_) if clean_start => {
                        self.end_session(key);
                        None
                    }
                    Some(_) => {
                        session_present = true;
                        Some(key)
                    }
                    None => None,
                }
            }
            None => None,
        };
        let key = match key {
            Some(k) => k,
            None => {
                let k = self.sessions.insert(Session::new(
                    client_id.clone(),
                    protocol,
                    expiry_interval,
                ));
                self.clients.insert(client_id.clone(), k);
                k
            }
        };
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        session.conn = Some(conn_id);
        session.protocol = protocol;
        session.expiry_interval = expiry_interval;
        session.expires_at = None;
        session.will = will;

        let grace = (effective_keep_alive > 0)
            .then(|| Duration::from_millis(u64::from(effective_keep_alive) * 1500));
        if let Some(conn) = self.links.conns.get_mut(&conn_id) {
            conn.session = Some(key);
            conn.client_id = client_id.clone();
            conn.grace = grace;
        }
        if let Some(g) = grace {
            self.timers
                .push(Reverse((now + g, Timer::KeepAlive(conn_id))));
        }

        let mut ack_props = Properties::default();
        if v5 {
            ack_props.assigned_client_identifier = assigned;
            ack_props.server_keep_alive = server_keep_alive;
            let window = self.config.inflight_window();
            if window < usize::from(u16::MAX) {
                ack_props.receive_maximum = Some(window as u16);
            }
            if !self.config.retain_available {
                ack_props.retain_available = Some(0);
            }
            // Not yet offered (MQTT 5.0 complete is a later step).
            ack_props.subscription_identifier_available = Some(0);
            ack_props.shared_subscription_available = Some(0);
        }
        self.links.send(
            conn_id,
            Packet::ConnAck(ConnAck {
                session_present,
                code: 0,
                properties: ack_props,
            }),
        );
        self.events.push(BrokerEvent::ClientConnected {
            conn: conn_id,
            client_id,
            protocol,
            clean_start,
            keep_alive: effective_keep_alive,
            username,
            session_present,
        });
        if session_present {
            self.resend_inflight(conn_id, key);
        }
        self.pump_queue(key);
    }

    /// A UUID-shaped id, unique within this process and, through the seed
    /// the server gives, across restarts.
    fn assign_client_id(&mut self) -> String {
        let mut next = || {
            // splitmix64
            self.id_state = self.id_state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.id_state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let (a, b) = (next(), next());
        format!(
            "{}{:08X}-{:04X}-{:04X}-{:04X}-{:012X}",
            self.config.auto_id_prefix,
            a >> 32,
            (a >> 16) & 0xFFFF,
            a & 0xFFFF,
            b >> 48,
            b & 0xFFFF_FFFF_FFFF
        )
    }

    fn resend_inflight(&mut self, conn_id: ConnId, key: SessionKey) {
        let Some(s) = self.sessions.get(key) else {
            return;
        };
        let protocol = s.protocol;
        for f in &s.inflight {
            let packet = match f.state {
                OutState::AwaitAck => Packet::Publish(outgoing_publish(
                    &f.message,
                    f.qos,
                    f.retain,
                    Some(f.packet_id),
                    true,
                    protocol,
                )),
                OutState::AwaitComp => Packet::PubRel(PubResponse::new(f.packet_id)),
            };
            self.links.send(conn_id, packet);
        }
    }

    fn handle_disconnect(&mut self, conn_id: ConnId, key: SessionKey, d: Disconnect, now: Instant) {
        let mut send_will = false;
        if let Some(s) = self.sessions.get_mut(key) {
            if s.protocol.is_v5() {
                if let Some(new) = d.properties.session_expiry_interval {
                    // [MQTT-3.14.2-2] cannot raise it from 0.
                    if s.expiry_interval == 0 && new != 0 {
                        self.protocol_error(conn_id, ReasonCode::PROTOCOL_ERROR, now);
                        return;
                    }
                    s.expiry_interval = new;
                }
                send_will = d.reason == ReasonCode::DISCONNECT_WITH_WILL;
            }
        }
        // [MQTT-3.14.4-3] a normal DISCONNECT discards the will.
        self.close(
            conn_id,
            now,
            send_will,
            None,
            DisconnectReason::ClientDisconnected,
        );
    }

    // ----- publish path -----------------------------------------------------

    fn handle_publish(&mut self, conn_id: ConnId, key: SessionKey, p: Publish, now: Instant) {
        self.stats.messages_received += 1;
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        let protocol = session.protocol;
        if protocol.is_v5() {
            // No topic alias maximum was granted in CONNACK, so any alias is
            // invalid ([MQTT-3.3.2-8]).
            if p.properties.topic_alias.is_some() {
                self.protocol_error(conn_id, ReasonCode::TOPIC_ALIAS_INVALID, now);
                return;
            }
            if p.retain && !self.config.retain_available {
                self.protocol_error(conn_id, ReasonCode::RETAIN_NOT_SUPPORTED, now);
                return;
            }
        }
        let limit = self.config.message_size_limit;
        let too_big = limit != 0 && p.payload.len() > limit as usize;

        let deliver = match (p.qos, p.packet_id) {
            (QoS::ExactlyOnce, Some(id)) => session.incoming_qos2.insert(id.get()),
            _ => true,
        };
        if deliver && !too_big {
            let msg = Arc::new(Message {
                topic: p.topic,
                payload: p.payload,
                qos: p.qos,
                retain: p.retain,
                properties: if protocol.is_v5() {
                    forwardable(p.properties)
                } else {
                    Properties::default()
                },
                publisher: Some(key),
            });
            self.publish_message(msg);
        }
        let reason = if too_big && protocol.is_v5() {
            ReasonCode::PACKET_TOO_LARGE
        } else {
            ReasonCode::SUCCESS
        };
        let ack = |id: PacketId| PubResponse {
            packet_id: id,
            reason,
            properties: Properties::default(),
        };
        match (p.qos, p.packet_id) {
            (QoS::AtLeastOnce, Some(id)) => {
                self.links.send(conn_id, Packet::PubAck(ack(id)));
            }
            (QoS::ExactlyOnce, Some(id)) => {
                if too_big {
                    if let Some(s) = self.sessions.get_mut(key) {
                        s.incoming_qos2.remove(&id.get());
                    }
                }
                self.links.send(conn_id, Packet::PubRec(ack(id)));
            }
            _ => {}
        }
    }

    /// Stores (retain) and routes one message from a client or a will.
    fn publish_message(&mut self, msg: SharedMessage) {
        if msg.retain && self.config.retain_available {
            if msg.payload.is_empty() {
                self.retained.remove(&msg.topic);
            } else {
                self.retained.insert(&msg.topic, msg.clone());
            }
        }
        self.route(&msg);
    }

    /// Delivers `msg` once to every session with a matching subscription, at
    /// the highest QoS granted among them, capped by the message's QoS.
    fn route(&mut self, msg: &SharedMessage) {
        self.route_generation += 1;
        let generation = self.route_generation;
        let mut targets = std::mem::take(&mut self.targets);
        targets.clear();
        let sessions = &mut self.sessions;
        self.tree.for_each_match(&msg.topic, |key, sub| {
            let Some(s) = sessions.get_mut(key) else {
                return;
            };
            if sub.options.no_local && msg.publisher == Some(key) {
                return;
            }
            if s.route_mark == generation {
                if let Some(t) = targets.get_mut(s.route_slot) {
                    t.qos = t.qos.max(sub.options.qos);
                    t.retain_as_published |= sub.options.retain_as_published;
                }
            } else {
                s.route_mark = generation;
                s.route_slot = targets.len();
                targets.push(Target {
                    key,
                    qos: sub.options.qos,
                    retain_as_published: sub.options.retain_as_published,
                });
            }
        });
        for t in &targets {
            // [MQTT-3.3.1-9] forwarded messages carry retain 0, unless 5.0
            // Retain As Published says otherwise.
            let retain = t.retain_as_published && msg.retain;
            self.deliver(t.key, msg, msg.qos.min(t.qos), retain);
        }
        self.targets = targets;
    }

    fn deliver(&mut self, key: SessionKey, msg: &SharedMessage, qos: QoS, retain: bool) {
        let window = self.config.inflight_window();
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        let Some(conn_id) = s.conn else {
            if qos != QoS::AtMostOnce || self.config.queue_qos0_messages {
                let queued = Queued {
                    message: msg.clone(),
                    qos,
                    retain,
                };
                if !s.enqueue(
                    queued,
                    self.config.max_queued_messages,
                    self.config.max_queued_bytes,
                ) {
                    self.stats.messages_dropped += 1;
                }
            }
            return;
        };
        if qos == QoS::AtMostOnce {
            let p = outgoing_publish(msg, qos, retain, None, false, s.protocol);
            if self.links.send(conn_id, Packet::Publish(p)) {
                self.stats.messages_sent += 1;
            }
            return;
        }
        if s.inflight.len() < window && s.queue.is_empty() {
            let id = s.next_packet_id();
            s.inflight.push_back(Inflight {
                packet_id: id,
                message: msg.clone(),
                qos,
                retain,
                state: OutState::AwaitAck,
            });
            let p = outgoing_publish(msg, qos, retain, Some(id), false, s.protocol);
            if self.links.send(conn_id, Packet::Publish(p)) {
                self.stats.messages_sent += 1;
            }
        } else {
            let queued = Queued {
                message: msg.clone(),
                qos,
                retain,
            };
            if !s.enqueue(
                queued,
                self.config.max_queued_messages,
                self.config.max_queued_bytes,
            ) {
                self.stats.messages_dropped += 1;
            }
        }
    }

    /// Moves queued messages into the in-flight window while there is room.
    fn pump_queue(&mut self, key: SessionKey) {
        let window = self.config.inflight_window();
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        let Some(conn_id) = s.conn else {
            return;
        };
        while s.inflight.len() < window {
            let Some(q) = s.dequeue() else {
                break;
            };
            let packet_id = if q.qos == QoS::AtMostOnce {
                None
            } else {
                let id = s.next_packet_id();
                s.inflight.push_back(Inflight {
                    packet_id: id,
                    message: q.message.clone(),
                    qos: q.qos,
                    retain: q.retain,
                    state: OutState::AwaitAck,
                });
                Some(id)
            };
            let p = outgoing_publish(&q.message, q.qos, q.retain, packet_id, false, s.protocol);
            if self.links.send(conn_id, Packet::Publish(p)) {
                self.stats.messages_sent += 1;
            }
        }
    }

    fn handle_puback(&mut self, key: SessionKey, id: PacketId) {
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        if let Some(pos) = s.inflight_position(id) {
            if s.inflight[pos].qos == QoS::AtLeastOnce {
                s.inflight.remove(pos);
                self.pump_queue(key);
            }
        }
    }

    fn handle_pubrec(&mut self, conn_id: ConnId, key: SessionKey, id: PacketId) {
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        let mut rel = PubResponse::new(id);
        match s.inflight_position(id) {
            Some(pos) if s.inflight[pos].qos == QoS::ExactlyOnce => {
                s.inflight[pos].state = OutState::AwaitComp;
            }
            _ if s.protocol.is_v5() => rel.reason = ReasonCode::PACKET_IDENTIFIER_NOT_FOUND,
            _ => {}
        }
        self.links.send(conn_id, Packet::PubRel(rel));
    }

    fn handle_pubrel(&mut self, conn_id: ConnId, key: SessionKey, id: PacketId) {
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        let mut comp = PubResponse::new(id);
        if !s.incoming_qos2.remove(&id.get()) && s.protocol.is_v5() {
            comp.reason = ReasonCode::PACKET_IDENTIFIER_NOT_FOUND;
        }
        self.links.send(conn_id, Packet::PubComp(comp));
    }

    fn handle_pubcomp(&mut self, key: SessionKey, id: PacketId) {
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        if let Some(pos) = s.inflight_position(id) {
            if s.inflight[pos].state == OutState::AwaitComp {
                s.inflight.remove(pos);
                self.pump_queue(key);
            }
        }
    }

    // ----- subscriptions ----------------------------------------------------

    fn handle_subscribe(&mut self, conn_id: ConnId, key: SessionKey, sub: Subscribe) {
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        let protocol = s.protocol;
        let client_id = s.client_id.clone();
        let identifier = sub.properties.subscription_identifiers.first().copied();
        let mut reasons = Vec::with_capacity(sub.filters.len());
        let mut retained: Vec<(SharedMessage, QoS)> = Vec::new();
        for (filter, mut options) in sub.filters {
            if filter.starts_with("$share/") {
                // Shared subscriptions come with MQTT 5.0 complete.
                reasons.push(if protocol.is_v5() {
                    ReasonCode::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED
                } else {
                    ReasonCode::UNSPECIFIED_ERROR
                });
                continue;
            }
            if !protocol.is_v5() {
                options = midge_codec::SubscriptionOptions {
                    qos: options.qos,
                    ..Default::default()
                };
            }
            let subscription = Subscription {
                options,
                identifier,
            };
            let existed = self.tree.insert(&filter, key, subscription).is_some();
            if let Some(s) = self.sessions.get_mut(key) {
                s.subscriptions.insert(filter.clone(), subscription);
            }
            reasons.push(ReasonCode(options.qos as u8));
            self.events.push(BrokerEvent::Subscribed {
                client_id: client_id.clone(),
                filter: filter.clone(),
                qos: options.qos,
            });
            let send_retained = match options.retain_handling {
                midge_codec::RetainHandling::SendAtSubscribe => true,
                midge_codec::RetainHandling::SendAtSubscribeIfNew => !existed,
                midge_codec::RetainHandling::DoNotSend => false,
            };
            if send_retained {
                self.retained.for_each_match(&filter, |_, m| {
                    retained.push((m.clone(), options.qos));
                });
            }
        }
        self.links.send(
            conn_id,
            Packet::SubAck(SubAck {
                packet_id: sub.packet_id,
                reasons,
                properties: Properties::default(),
            }),
        );
        // [MQTT-3.3.1-8] retained messages sent on subscribe carry retain 1.
        for (m, granted) in retained {
            let qos = m.qos.min(granted);
            self.deliver(key, &m, qos, true);
        }
    }

    fn handle_unsubscribe(&mut self, conn_id: ConnId, key: SessionKey, u: Unsubscribe) {
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        let v5 = s.protocol.is_v5();
        let client_id = s.client_id.clone();
        let mut reasons = Vec::new();
        for filter in u.filters {
            let existed = s.subscriptions.remove(&filter).is_some();
            self.tree.remove(&filter, key);
            if v5 {
                reasons.push(if existed {
                    ReasonCode::SUCCESS
                } else {
                    ReasonCode::NO_SUBSCRIPTION_EXISTED
                });
            }
            self.events.push(BrokerEvent::Unsubscribed {
                client_id: client_id.clone(),
                filter,
            });
        }
        self.links.send(
            conn_id,
            Packet::UnsubAck(UnsubAck {
                packet_id: u.packet_id,
                reasons,
                properties: Properties::default(),
            }),
        );
    }
}

/// Properties a 5.0 message keeps on its way to subscribers ([MQTT-3.3.2-*]):
/// the topic alias is per connection and subscription identifiers are the
/// receiver's own.
fn forwardable(mut p: Properties) -> Properties {
    p.topic_alias = None;
    p.subscription_identifiers.clear();
    p
}

fn outgoing_publish(
    msg: &Message,
    qos: QoS,
    retain: bool,
    packet_id: Option<PacketId>,
    dup: bool,
    protocol: ProtocolVersion,
) -> Publish {
    Publish {
        dup,
        qos,
        retain,
        topic: msg.topic.clone(),
        packet_id,
        payload: msg.payload.clone(),
        properties: if protocol.is_v5() {
            msg.properties.clone()
        } else {
            Properties::default()
        },
    }
}

#[cfg(test)]
mod tests;
