//! CONNECT, enhanced authentication (AUTH), session takeover and resumption,
//! and DISCONNECT.

use bytes::Bytes;
use bytestring::ByteString;
use midge_codec::{
    connect_return_code, Auth, ConnAck, Connect, Disconnect, Packet, Properties, ProtocolVersion,
    PubResponse, QoS, ReasonCode,
};
use std::time::Instant;

use super::{Broker, PendingAuth, Timer};
use crate::auth::AuthStep;
use crate::event::{BrokerEvent, DisconnectReason};
use crate::ids::{ConnId, SessionKey};
use crate::session::{LinkState, OutState, Session, NEVER_EXPIRES};

impl Broker {
    pub(super) fn handle_connect(&mut self, conn_id: ConnId, c: Box<Connect>, now: Instant) {
        let protocol = c.protocol;
        let v5 = protocol.is_v5();
        if let Some(conn) = self.links.conns.get_mut(&conn_id) {
            conn.protocol = Some(protocol);
        }
        let Some(method) = c.properties.authentication_method.clone() else {
            self.finish_connect(conn_id, *c, None, now);
            return;
        };
        let found = self
            .auth_methods
            .iter()
            .find(|m| m.name() == &*method)
            .cloned();
        let Some(found) = found else {
            let rc = if v5 {
                ReasonCode::BAD_AUTHENTICATION_METHOD.0
            } else {
                connect_return_code::NOT_AUTHORIZED
            };
            self.refuse(conn_id, c.client_id.clone(), rc);
            return;
        };
        let (step, exchange) = found.begin(
            &c.client_id,
            c.username.as_deref(),
            c.properties.authentication_data.as_deref(),
        );
        if let Some(conn) = self.links.conns.get_mut(&conn_id) {
            // A copy: a slice would keep the whole CONNECT (see finish_connect).
            conn.extras_mut().auth_method = Some(ByteString::from(&*method));
        }
        match step {
            AuthStep::Success { data } => self.finish_connect(conn_id, *c, data, now),
            AuthStep::Fail => {
                self.refuse(conn_id, c.client_id.clone(), ReasonCode::NOT_AUTHORIZED.0)
            }
            AuthStep::Continue { data } => {
                self.send_auth(conn_id, ReasonCode::CONTINUE_AUTHENTICATION, &method, data);
                if let Some(conn) = self.links.conns.get_mut(&conn_id) {
                    conn.auth = Some(Box::new(PendingAuth {
                        method,
                        exchange,
                        connect: Some(c),
                    }));
                }
            }
        }
    }

    fn send_auth(
        &mut self,
        conn_id: ConnId,
        reason: ReasonCode,
        method: &ByteString,
        data: Option<Bytes>,
    ) {
        self.links.send(
            conn_id,
            Packet::Auth(Auth {
                reason,
                properties: Properties {
                    authentication_method: Some(method.clone()),
                    authentication_data: data,
                    ..Properties::default()
                }
                .into(),
            }),
        );
    }

    /// AUTH from the client: the next step of an exchange before CONNACK
    /// (`key` None), or a re-authentication (0x19) or its next step after.
    pub(super) fn handle_auth(
        &mut self,
        conn_id: ConnId,
        key: Option<SessionKey>,
        a: Auth,
        now: Instant,
    ) {
        let Some(conn) = self.links.conns.get_mut(&conn_id) else {
            return;
        };
        let method_ok = a.properties.authentication_method.is_some()
            && a.properties.authentication_method.as_ref() == conn.auth_method();
        // [MQTT-4.12.0-5] the method must stay the same; AUTH without an
        // exchange (other than starting a re-authentication) is an error.
        if !method_ok {
            self.protocol_error(conn_id, ReasonCode::PROTOCOL_ERROR, now);
            return;
        }
        let data = a.properties.authentication_data.as_deref();
        let step = match (a.reason, conn.auth.as_mut()) {
            (ReasonCode::CONTINUE_AUTHENTICATION, Some(p)) => p.exchange.step(data),
            (ReasonCode::REAUTHENTICATE, None) if key.is_some() => {
                let method = conn.auth_method().cloned().unwrap_or_default();
                let client_id = key
                    .and_then(|k| self.sessions.get(k))
                    .map(|s| s.client_id.to_string())
                    .unwrap_or_default();
                let Some(m) = self
                    .auth_methods
                    .iter()
                    .find(|m| m.name() == &*method)
                    .cloned()
                else {
                    self.protocol_error(conn_id, ReasonCode::BAD_AUTHENTICATION_METHOD, now);
                    return;
                };
                let (step, exchange) = m.begin(&client_id, None, data);
                if let (AuthStep::Continue { .. }, Some(conn)) =
                    (&step, self.links.conns.get_mut(&conn_id))
                {
                    conn.auth = Some(Box::new(PendingAuth {
                        method,
                        exchange,
                        connect: None,
                    }));
                }
                step
            }
            _ => {
                self.protocol_error(conn_id, ReasonCode::PROTOCOL_ERROR, now);
                return;
            }
        };
        let Some(conn) = self.links.conns.get_mut(&conn_id) else {
            return;
        };
        let method = conn.auth_method().cloned().unwrap_or_default();
        match step {
            AuthStep::Continue { data } => {
                self.send_auth(conn_id, ReasonCode::CONTINUE_AUTHENTICATION, &method, data);
            }
            AuthStep::Success { data } => {
                let pending = conn.auth.take();
                match pending.and_then(|p| p.connect) {
                    Some(c) => self.finish_connect(conn_id, *c, data, now),
                    None => self.send_auth(conn_id, ReasonCode::SUCCESS, &method, data),
                }
            }
            AuthStep::Fail => {
                let pending = conn.auth.take();
                match pending.and_then(|p| p.connect) {
                    Some(c) => {
                        self.refuse(conn_id, c.client_id.clone(), ReasonCode::NOT_AUTHORIZED.0)
                    }
                    None => self.close(
                        conn_id,
                        now,
                        true,
                        Some(ReasonCode::NOT_AUTHORIZED),
                        DisconnectReason::ProtocolError(ReasonCode::NOT_AUTHORIZED),
                    ),
                }
            }
        }
    }

    /// CONNECT checks after authentication: client id, anonymous access,
    /// keep-alive, then takeover or a new session, CONNACK and resumption.
    fn finish_connect(
        &mut self,
        conn_id: ConnId,
        c: Connect,
        auth_data: Option<Bytes>,
        now: Instant,
    ) {
        let Connect {
            protocol,
            clean_start,
            keep_alive,
            client_id,
            will,
            username,
            password,
            properties,
        } = c;
        let identity = self
            .links
            .conns
            .get(&conn_id)
            .and_then(|c| c.identity().cloned());
        // The client id and user name stay as long as the connection or the
        // session: copied out, they no longer hold the whole CONNECT (its
        // password too) in memory, and each takes only its own bytes.
        let username = identity
            .clone()
            .or_else(|| username.as_deref().map(ByteString::from));
        let v5 = protocol.is_v5();
        let code = |v3: u8, v5_code: ReasonCode| if v5 { v5_code.0 } else { v3 };

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
            ByteString::from(&*client_id)
        };

        // Who the client proved to be: a TLS certificate, an enhanced
        // authentication exchange, or a user name and password checked
        // against the password file.
        let mut authenticated = identity.is_some()
            || self
                .links
                .conns
                .get(&conn_id)
                .is_some_and(|c| c.auth_method().is_some());
        let refused = code(
            connect_return_code::NOT_AUTHORIZED,
            ReasonCode::NOT_AUTHORIZED,
        );
        if let (Some(access), Some(user)) = (&self.access, &username) {
            if access.checks_passwords() && !authenticated {
                // A wrong password is refused as not authorised, as
                // Mosquitto 2 does.
                if !access.authenticate(user, password.as_deref()) {
                    self.refuse(conn_id, client_id, refused);
                    return;
                }
                authenticated = true;
            }
        }
        // Without allow_anonymous, a client must have proved who it is: a
        // user name alone, with no password file to check it against, is
        // refused too (Mosquitto 2.0 does the same).
        if !self.config.allow_anonymous && !authenticated {
            self.refuse(conn_id, client_id, refused);
            return;
        }
        if let (Some(access), Some(w)) = (&self.access, &will) {
            if access.has_acl() && !access.can_publish(&client_id, username.as_deref(), &w.topic) {
                self.refuse(conn_id, client_id, refused);
                return;
            }
        }

        // A will above our maximum QoS or retained when retain is off is
        // refused ([MQTT-3.2.2-12], [MQTT-3.2.2-13]).
        if let Some(w) = &will {
            if v5 && w.qos > self.config.maximum_qos {
                self.refuse(conn_id, client_id, ReasonCode::QOS_NOT_SUPPORTED.0);
                return;
            }
            if v5 && w.retain && !self.config.retain_available {
                self.refuse(conn_id, client_id, ReasonCode::RETAIN_NOT_SUPPORTED.0);
                return;
            }
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
        let key = match self.sessions.find(&client_id) {
            Some(key) => {
                let old_conn = self.sessions.get(key).and_then(|s| s.conn());
                if let Some(old) = old_conn {
                    // [MQTT-3.1.4-3]: the old connection goes and its will is
                    // published, subject to its Will Delay Interval (which
                    // the resumption below then cancels).
                    self.close(
                        old,
                        now,
                        true,
                        Some(ReasonCode::SESSION_TAKEN_OVER),
                        DisconnectReason::TakenOver,
                    );
                }
                // The session may have ended just now (old expiry 0).
                match self.sessions.get(key) {
                    Some(_) if clean_start => {
                        self.end_session(key, now);
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
            None => self
                .sessions
                .insert(Session::new(&client_id, protocol, expiry_interval)),
        };
        let window = self
            .config
            .inflight_window()
            .min(usize::from(properties.receive_maximum.unwrap_or(u16::MAX)));
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        session.set_conn(Some(conn_id));
        session.protocol = protocol;
        session.expiry_interval = expiry_interval;
        session.expires_at = None;
        let mount = self
            .links
            .conns
            .get(&conn_id)
            .and_then(|c| c.mount().cloned());
        session.set_will(will.map(|mut w| {
            if let Some(m) = &mount {
                w.topic = ByteString::from(format!("{m}{}", w.topic));
            }
            Box::new(w)
        }));
        session.set_mount(mount);
        session.username = username.clone();
        // [MQTT-3.1.3-9] a reconnect within the Will Delay Interval cancels the will.
        session.take_pending_will();
        session.link = LinkState {
            send_window: window,
            max_packet_out: if v5 {
                properties.maximum_packet_size.unwrap_or(0)
            } else {
                0
            },
            alias_out_max: if v5 {
                properties.topic_alias_maximum.unwrap_or(0)
            } else {
                0
            },
            ..LinkState::default()
        };

        self.persist_session(key);
        let grace = super::keep_alive_grace(effective_keep_alive);
        let mut auth_method = None;
        if let Some(conn) = self.links.conns.get_mut(&conn_id) {
            conn.session = Some(key);
            conn.keep_alive = effective_keep_alive;
            conn.auth = None;
            auth_method = conn.auth_method().cloned();
        }
        // The connect timeout's entry, due no later than `now + timeout`,
        // goes on to watch the keep-alive; a shorter grace needs its own.
        if let Some(g) = grace {
            if self.config.connect_timeout.is_none_or(|t| g < t) {
                self.push_timer(now + g, Timer::KeepAlive(conn_id));
            }
        }

        let mut ack_props = Properties::default();
        if v5 {
            ack_props.assigned_client_identifier = assigned;
            ack_props.server_keep_alive = server_keep_alive;
            let ours = self.config.inflight_window();
            if ours < usize::from(u16::MAX) {
                ack_props.receive_maximum = Some(ours as u16);
            }
            if !self.config.retain_available {
                ack_props.retain_available = Some(0);
            }
            if self.config.maximum_qos < QoS::ExactlyOnce {
                ack_props.maximum_qos = Some(self.config.maximum_qos as u8);
            }
            if self.config.topic_alias_maximum > 0 {
                ack_props.topic_alias_maximum = Some(self.config.topic_alias_maximum);
            }
            if self.config.maximum_packet_size > 0 {
                ack_props.maximum_packet_size = Some(self.config.maximum_packet_size);
            }
            if properties.request_response_information == Some(1) {
                ack_props.response_information = self
                    .config
                    .response_information
                    .as_deref()
                    .map(ByteString::from);
            }
            ack_props.authentication_method = auth_method;
            ack_props.authentication_data = auth_data;
        }
        self.links.send(
            conn_id,
            Packet::ConnAck(ConnAck {
                session_present,
                code: 0,
                properties: ack_props.into(),
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
            self.resend_inflight(conn_id, key, now);
        }
        self.pump_queue(key, now);
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

    /// [MQTT-4.4.0-1] on resumption, unacknowledged PUBLISH packets are sent
    /// again with DUP set, and PUBREL for those awaiting PUBCOMP.
    ///
    /// The new connection may allow less than the old one: copies beyond its
    /// Receive Maximum go back to the front of the queue (they had not been
    /// acknowledged, so sending them again later is the same redelivery),
    /// and copies larger than its Maximum Packet Size are dropped as if
    /// delivered ([MQTT-3.1.2-25]).
    fn resend_inflight(&mut self, conn_id: ConnId, key: SessionKey, now: Instant) {
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        let protocol = s.protocol;
        if s.link.max_packet_out > 0 {
            let mut dropped = Vec::new();
            let mut kept = std::mem::take(&mut s.inflight);
            kept.retain(|f| {
                if f.state != OutState::AwaitAck {
                    return true;
                }
                let p = super::publish::outgoing_publish(
                    &f.delivery,
                    Some(f.packet_id),
                    protocol,
                    s.mount(),
                    now,
                );
                let big = super::publish::too_large(&p, s, 0);
                if big {
                    dropped.push(f.delivery.seq);
                }
                !big
            });
            s.inflight = kept;
            for seq in dropped {
                super::persist::unstore_delivery(&mut self.store_ops, s, seq);
                self.stats.messages_dropped += 1;
            }
        }
        while s.inflight.len() > s.link.send_window {
            let Some(pos) = s
                .inflight
                .iter()
                .rposition(|f| f.state == OutState::AwaitAck)
            else {
                break;
            };
            let Some(f) = s.inflight.remove(pos) else {
                break;
            };
            let d = f.delivery;
            super::persist::restore_delivery(
                &mut self.store_ops,
                s,
                &d,
                crate::persist::StoredState::Queued,
            );
            s.queue.push_front(d);
        }
        let mut packets = Vec::with_capacity(s.inflight.len());
        for f in &s.inflight {
            packets.push(match f.state {
                OutState::AwaitAck => {
                    let mut p = super::publish::outgoing_publish(
                        &f.delivery,
                        Some(f.packet_id),
                        protocol,
                        s.mount(),
                        now,
                    );
                    p.dup = true;
                    Packet::Publish(p)
                }
                OutState::AwaitComp => Packet::PubRel(PubResponse::new(f.packet_id)),
            });
        }
        for p in packets {
            self.links.send(conn_id, p);
        }
    }

    pub(super) fn handle_disconnect(
        &mut self,
        conn_id: ConnId,
        key: SessionKey,
        d: Disconnect,
        now: Instant,
    ) {
        let mut send_will = false;
        if let Some(s) = self.sessions.get_mut(key) {
            if s.protocol.is_v5() {
                if let Some(new) = d.properties.session_expiry_interval {
                    // [MQTT-3.14.2-2] cannot raise it from 0.
                    if s.expiry_interval == 0 && new != 0 {
                        self.protocol_error(conn_id, ReasonCode::PROTOCOL_ERROR, now);
                        return;
                    }
                    let changed = s.expiry_interval != new;
                    s.expiry_interval = new;
                    if changed && new != 0 {
                        self.persist_session(key);
                    }
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
}
