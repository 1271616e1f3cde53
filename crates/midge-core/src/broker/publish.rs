//! The publish path: PUBLISH from clients (topic aliases, flow control,
//! payload checks), retained storage, routing to subscribers and shared
//! groups, delivery within each session's in-flight window, the QoS 1/2
//! acknowledgement flows, and building outgoing PUBLISH packets.

use bytestring::ByteString;
use midge_codec::{
    publish_encoded_len, Packet, PacketId, Props, ProtocolVersion, PubResponse, Publish, QoS,
    ReasonCode,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::persist::{restore_delivery, store_delivery, unstore_delivery};
use super::{Broker, Target};
use crate::ids::{ConnId, SessionKey};
use crate::message::{Message, SharedMessage};
use crate::persist::{StoreOp, StoredState};
use crate::session::{Delivery, Inflight, OutState, Session, SubIds};

impl Broker {
    pub(super) fn handle_publish(
        &mut self,
        conn_id: ConnId,
        key: SessionKey,
        mut p: Publish,
        now: Instant,
    ) {
        self.stats.messages_received += 1;
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        let protocol = session.protocol;
        let mut reason = ReasonCode::SUCCESS;
        let mut denied = false;
        if protocol.is_v5() {
            // [MQTT-3.3.4-6] a client does not send Subscription Identifiers.
            if !p.properties.subscription_identifiers.is_empty() {
                self.protocol_error(conn_id, ReasonCode::PROTOCOL_ERROR, now);
                return;
            }
            if let Some(alias) = p.properties.topic_alias {
                // [MQTT-3.3.2-8], [MQTT-3.3.2-9]
                if alias == 0 || alias > self.config.topic_alias_maximum {
                    self.protocol_error(conn_id, ReasonCode::TOPIC_ALIAS_INVALID, now);
                    return;
                }
                if p.topic.is_empty() {
                    match session
                        .link
                        .aliases
                        .as_ref()
                        .and_then(|a| a.incoming.get(&alias))
                    {
                        Some(t) => p.topic = t.clone(),
                        None => {
                            // An alias never set by this connection.
                            self.protocol_error(conn_id, ReasonCode::PROTOCOL_ERROR, now);
                            return;
                        }
                    }
                } else {
                    session
                        .link
                        .aliases
                        .get_or_insert_with(Default::default)
                        .incoming
                        .insert(alias, p.topic.clone());
                }
            } else if p.topic.is_empty() {
                self.protocol_error(conn_id, ReasonCode::PROTOCOL_ERROR, now);
                return;
            }
            if p.qos > self.config.maximum_qos {
                self.protocol_error(conn_id, ReasonCode::QOS_NOT_SUPPORTED, now);
                return;
            }
            if p.retain && !self.config.retain_available {
                self.protocol_error(conn_id, ReasonCode::RETAIN_NOT_SUPPORTED, now);
                return;
            }
            // Our Receive Maximum counts QoS 2 messages not yet released
            // (QoS 1 is acknowledged at once) [MQTT-3.3.4-9].
            if let (QoS::ExactlyOnce, Some(id)) = (p.qos, p.packet_id) {
                if !session.awaits_pubrel(id.get())
                    && session.awaiting_pubrel() >= self.config.inflight_window()
                {
                    self.protocol_error(conn_id, ReasonCode::RECEIVE_MAXIMUM_EXCEEDED, now);
                    return;
                }
            }
            if p.properties.payload_format_indicator == Some(1)
                && std::str::from_utf8(&p.payload).is_err()
            {
                if p.qos == QoS::AtMostOnce {
                    self.protocol_error(conn_id, ReasonCode::PAYLOAD_FORMAT_INVALID, now);
                    return;
                }
                reason = ReasonCode::PAYLOAD_FORMAT_INVALID;
            }
        }
        if let Some(m) = session.mount() {
            p.topic = ByteString::from(format!("{m}{}", p.topic));
        }
        if let Some(access) = &self.access {
            if access.has_acl()
                && !access.can_publish(&session.client_id, session.username.as_deref(), &p.topic)
            {
                // 5.0 says so; 3.x cannot, and gets its acknowledgement as
                // if delivered ([MQTT-3.3.5-2]).
                reason = if protocol.is_v5() {
                    ReasonCode::NOT_AUTHORIZED
                } else {
                    ReasonCode::SUCCESS
                };
                denied = true;
            }
        }
        if self.memory_exceeded && !denied {
            reason = if protocol.is_v5() {
                ReasonCode::QUOTA_EXCEEDED
            } else {
                ReasonCode::SUCCESS
            };
            denied = true;
            self.stats.messages_dropped += 1;
        }
        let limit = self.config.message_size_limit;
        if limit != 0 && p.payload.len() > limit as usize {
            reason = if protocol.is_v5() {
                // 0x95 is no PUBACK/PUBREC reason code; Mosquitto answers 0x83.
                ReasonCode::IMPLEMENTATION_SPECIFIC_ERROR
            } else {
                // 3.x cannot say why; Mosquitto acknowledges and drops.
                ReasonCode::SUCCESS
            };
            if !protocol.is_v5() {
                self.stats.messages_dropped += 1;
            }
        }
        let accepted = !denied
            && reason == ReasonCode::SUCCESS
            && (limit == 0 || p.payload.len() <= limit as usize);

        let fresh = match (p.qos, p.packet_id) {
            (QoS::ExactlyOnce, Some(id)) if accepted => {
                await_pubrel(session, id, &mut self.store_ops)
            }
            _ => true,
        };
        let packet_id = p.packet_id;
        let qos = p.qos;
        if accepted && fresh {
            let expires_at = p
                .properties
                .message_expiry_interval
                .map(|s| now + Duration::from_secs(u64::from(s)));
            let properties = if protocol.is_v5() {
                forwardable(p.properties)
            } else {
                Props::new()
            };
            let msg = Arc::new(Message {
                topic: p.topic,
                payload: p.payload,
                qos: p.qos,
                retain: p.retain,
                properties,
                publisher: Some(key),
                expires_at,
            });
            self.publish_message(msg, now);
        }
        let ack = |id: PacketId| PubResponse {
            packet_id: id,
            reason,
            properties: Default::default(),
        };
        match (qos, packet_id) {
            (QoS::AtLeastOnce, Some(id)) => {
                self.links.send(conn_id, Packet::PubAck(ack(id)));
            }
            (QoS::ExactlyOnce, Some(id)) => {
                self.links.send(conn_id, Packet::PubRec(ack(id)));
            }
            _ => {}
        }
    }

    /// Takes over a QoS 2 message that another broker received from
    /// `client_id` and acknowledged with PUBREC, and whose PUBREL had not
    /// come (a `mosquitto.db` holds these; `midge_db_import` hands them
    /// here after restoring the imported store). That broker would deliver
    /// it on PUBREL; Midge delivers on PUBLISH, so it is routed now, as if
    /// the client had just published it, and its packet id awaits the
    /// PUBREL: the client's PUBREL gets its PUBCOMP, and a resent PUBLISH
    /// with that id is not delivered again [MQTT-4.3.3-10]. False, and
    /// nothing done, when there is no such session or the id is awaited
    /// already.
    pub fn adopt_unreleased_qos2(
        &mut self,
        client_id: &str,
        packet_id: PacketId,
        mut message: Message,
        now: Instant,
    ) -> bool {
        let Some(key) = self.sessions.find(client_id) else {
            return false;
        };
        let Some(session) = self.sessions.get_mut(key) else {
            return false;
        };
        if !await_pubrel(session, packet_id, &mut self.store_ops) {
            return false;
        }
        message.qos = QoS::ExactlyOnce;
        message.publisher = Some(key);
        self.publish_message(Arc::new(message), now);
        true
    }

    /// `$SYS` topics describe this run of the broker: never stored.
    fn persists_retained(&self, topic: &str) -> bool {
        self.config.persistence && !topic.starts_with("$SYS/")
    }

    /// Stores (retain) and routes one message from a client or a will.
    pub(super) fn publish_message(&mut self, msg: SharedMessage, now: Instant) {
        if msg.retain && self.config.retain_available {
            if msg.payload.is_empty() {
                if self.retained.remove(&msg.topic).is_some() && self.persists_retained(&msg.topic)
                {
                    self.store_ops.push(StoreOp::DeleteRetained {
                        topic: msg.topic.clone(),
                    });
                }
            } else {
                self.retained.insert(&msg.topic, msg.clone());
                if self.persists_retained(&msg.topic) {
                    self.store_ops.push(StoreOp::PutRetained {
                        message: msg.clone(),
                    });
                }
            }
        }
        self.route(&msg, now);
    }

    /// Delivers `msg` once to every session with a matching subscription, at
    /// the highest QoS granted among them (capped by the message's QoS) and
    /// with every matching subscription identifier; then to one member of
    /// each matching shared group.
    fn route(&mut self, msg: &SharedMessage, now: Instant) {
        self.route_generation += 1;
        let generation = self.route_generation;
        let mut targets = std::mem::take(&mut self.targets);
        targets.clear();
        let sessions = &mut self.sessions;
        let acl = self.access.as_deref().filter(|a| a.has_acl());
        self.tree.for_each_match(&msg.topic, |key, sub| {
            let Some(s) = sessions.get_mut(key) else {
                return;
            };
            if sub.options.no_local && msg.publisher == Some(key) {
                return;
            }
            if let Some(a) = acl {
                if s.route_mark != generation
                    && !a.can_read(&s.client_id, s.username.as_deref(), &msg.topic)
                {
                    return;
                }
            }
            if s.route_mark == generation {
                if let Some(t) = targets.get_mut(s.route_slot) {
                    t.qos = t.qos.max(sub.options.qos);
                    t.retain_as_published |= sub.options.retain_as_published;
                    if let Some(id) = sub.identifier {
                        t.sub_ids.push(id);
                    }
                }
            } else {
                s.route_mark = generation;
                s.route_slot = targets.len();
                targets.push(Target {
                    key,
                    qos: sub.options.qos,
                    retain_as_published: sub.options.retain_as_published,
                    sub_ids: sub.identifier.map_or(SubIds::None, SubIds::One),
                });
            }
        });
        for t in targets.drain(..) {
            // [MQTT-3.3.1-9] forwarded messages carry retain 0, unless 5.0
            // Retain As Published says otherwise.
            let d = Delivery {
                message: msg.clone(),
                qos: msg.qos.min(t.qos),
                retain: t.retain_as_published && msg.retain,
                sub_ids: t.sub_ids,
                shared_group: None,
                seq: 0,
            };
            self.deliver(t.key, d, now);
        }
        self.targets = targets;

        if self.shared.is_empty() {
            return;
        }
        let mut groups = std::mem::take(&mut self.groups_scratch);
        groups.clear();
        self.shared.for_each_match(&msg.topic, |g| groups.push(g));
        for &gid in &groups {
            let sessions = &self.sessions;
            let online = |k: SessionKey| sessions.get(k).is_some_and(|s| s.conn().is_some());
            if let Some((key, sub)) = self.shared.pick(gid, online, None) {
                let d = Delivery {
                    message: msg.clone(),
                    qos: msg.qos.min(sub.options.qos),
                    retain: sub.options.retain_as_published && msg.retain,
                    sub_ids: sub.identifier.map_or(SubIds::None, SubIds::One),
                    shared_group: Some(gid),
                    seq: 0,
                };
                self.deliver(key, d, now);
            }
        }
        self.groups_scratch = groups;
    }

    /// Sends a copy now if the session is online and its window has room,
    /// else queues it (bounded; QoS 0 only with `queue_qos0_messages` when
    /// offline).
    pub(super) fn deliver(&mut self, key: SessionKey, d: Delivery, now: Instant) {
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        if d.message.is_expired(now) {
            return;
        }
        let Some(conn_id) = s.conn() else {
            if d.qos != QoS::AtMostOnce || self.config.queue_qos0_messages {
                self.enqueue(key, d);
            }
            return;
        };
        if d.qos != QoS::AtMostOnce
            && (!s.window_has_room(d.message.queued_size(), self.config.max_inflight_bytes)
                || !s.queue.is_empty())
        {
            self.enqueue(key, d);
            return;
        }
        if self.send_delivery(conn_id, key, d, now) {
            self.stats.messages_sent += 1;
        }
    }

    fn enqueue(&mut self, key: SessionKey, mut d: Delivery) {
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        if s.has_room(
            d.message.queued_size(),
            self.config.max_queued_messages,
            self.config.max_queued_bytes,
        ) {
            store_delivery(&mut self.store_ops, s, &mut d, StoredState::Queued);
        }
        if !s.enqueue(
            d,
            self.config.max_queued_messages,
            self.config.max_queued_bytes,
        ) {
            self.stats.messages_dropped += 1;
        }
    }

    /// Builds and sends one PUBLISH, taking a packet id and an in-flight slot
    /// for QoS 1/2. A copy larger than the client's Maximum Packet Size is
    /// dropped as if delivered ([MQTT-3.1.2-25]). Returns true when sent.
    fn send_delivery(
        &mut self,
        conn_id: ConnId,
        key: SessionKey,
        mut d: Delivery,
        now: Instant,
    ) -> bool {
        let Some(s) = self.sessions.get_mut(key) else {
            return false;
        };
        let mut p = outgoing_publish(&d, None, s.protocol, s.mount(), now);
        // A Topic Alias property may be added below (3 bytes).
        let alias_room = if s.link.alias_out_max > 0 { 3 } else { 0 };
        if too_large(&p, s, alias_room) {
            self.stats.messages_dropped += 1;
            unstore_delivery(&mut self.store_ops, s, d.seq);
            return false;
        }
        if d.qos == QoS::AtMostOnce {
            unstore_delivery(&mut self.store_ops, s, d.seq);
        } else {
            let id = s.next_packet_id();
            p.packet_id = Some(id);
            store_delivery(
                &mut self.store_ops,
                s,
                &mut d,
                StoredState::InFlight(id, OutState::AwaitAck),
            );
            s.inflight.push_back(Inflight {
                packet_id: id,
                delivery: d,
                state: OutState::AwaitAck,
            });
        }
        apply_outgoing_alias(s, &mut p);
        self.links.send(conn_id, Packet::Publish(p))
    }

    /// Moves queued messages into the in-flight window while there is room.
    pub(super) fn pump_queue(&mut self, key: SessionKey, now: Instant) {
        loop {
            let Some(s) = self.sessions.get_mut(key) else {
                return;
            };
            let Some(conn_id) = s.conn() else {
                return;
            };
            let next = s.queue.front().map_or(0, |d| d.message.queued_size());
            if !s.window_has_room(next, self.config.max_inflight_bytes) {
                return;
            }
            let Some(d) = s.dequeue() else {
                return;
            };
            // [MQTT-3.3.2-5] an expired message is not sent.
            if d.message.is_expired(now) {
                unstore_delivery(&mut self.store_ops, s, d.seq);
                continue;
            }
            if self.send_delivery(conn_id, key, d, now) {
                self.stats.messages_sent += 1;
            }
        }
    }

    pub(super) fn handle_puback(&mut self, key: SessionKey, id: PacketId, now: Instant) {
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        if let Some(pos) = s.inflight_position(id) {
            if s.inflight[pos].delivery.qos == QoS::AtLeastOnce {
                if let Some(f) = s.inflight.remove(pos) {
                    unstore_delivery(&mut self.store_ops, s, f.delivery.seq);
                }
                self.pump_queue(key, now);
            }
        }
    }

    pub(super) fn handle_pubrec(
        &mut self,
        conn_id: ConnId,
        key: SessionKey,
        r: PubResponse,
        now: Instant,
    ) {
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        let id = r.packet_id;
        let pos = s
            .inflight_position(id)
            .filter(|&p| s.inflight[p].delivery.qos == QoS::ExactlyOnce);
        // 5.0: a PUBREC with an error code ends the exchange ([MQTT-4.3.3-4]).
        if r.reason.is_error() {
            if let Some(pos) = pos {
                if let Some(f) = s.inflight.remove(pos) {
                    unstore_delivery(&mut self.store_ops, s, f.delivery.seq);
                }
                self.pump_queue(key, now);
            }
            return;
        }
        let mut rel = PubResponse::new(id);
        match pos {
            Some(pos) if s.inflight[pos].state != OutState::AwaitComp => {
                if let Some(state) = s.inflight.state_mut(pos) {
                    *state = OutState::AwaitComp;
                }
                let state = StoredState::InFlight(id, OutState::AwaitComp);
                restore_delivery(&mut self.store_ops, s, &s.inflight[pos].delivery, state);
            }
            // A repeated PUBREC: answer PUBREL again.
            Some(_) => {}
            None if s.protocol.is_v5() => rel.reason = ReasonCode::PACKET_IDENTIFIER_NOT_FOUND,
            None => {}
        }
        self.links.send(conn_id, Packet::PubRel(rel));
    }

    pub(super) fn handle_pubrel(&mut self, conn_id: ConnId, key: SessionKey, id: PacketId) {
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        let mut comp = PubResponse::new(id);
        let released = s.release(id.get());
        if released && s.stored {
            self.store_ops.push(StoreOp::DeleteIncomingQos2 {
                client_id: s.client_id.clone(),
                packet_id: id.get(),
            });
        }
        if !released && s.protocol.is_v5() {
            comp.reason = ReasonCode::PACKET_IDENTIFIER_NOT_FOUND;
        }
        self.links.send(conn_id, Packet::PubComp(comp));
    }

    pub(super) fn handle_pubcomp(&mut self, key: SessionKey, id: PacketId, now: Instant) {
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        if let Some(pos) = s.inflight_position(id) {
            if s.inflight[pos].state == OutState::AwaitComp {
                if let Some(f) = s.inflight.remove(pos) {
                    unstore_delivery(&mut self.store_ops, s, f.delivery.seq);
                }
                self.pump_queue(key, now);
            }
        }
    }

    /// When a session loses its connection, copies it got through shared
    /// subscriptions and has not acknowledged go to another member of the
    /// group; with no other member they stay.
    pub(super) fn redistribute_shared(&mut self, key: SessionKey, now: Instant) {
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        let movable =
            |f: &Inflight| f.delivery.shared_group.is_some() && f.state == OutState::AwaitAck;
        if !s.inflight.iter().any(movable) && !s.queue.iter().any(|d| d.shared_group.is_some()) {
            return;
        }
        let mut inflight = Vec::new();
        s.inflight.retain(|f| {
            if movable(f) {
                inflight.push(f.clone());
                false
            } else {
                true
            }
        });
        let mut queued = Vec::new();
        s.queue.retain(|d| {
            if d.shared_group.is_some() {
                queued.push(d.clone());
                false
            } else {
                true
            }
        });

        for f in inflight {
            let seq = f.delivery.seq;
            let mut moved = f.delivery.clone();
            moved.seq = 0;
            let kept = self.hand_to_other_member(key, moved, now).is_some();
            if let Some(s) = self.sessions.get_mut(key) {
                if kept {
                    s.inflight.push_back(f);
                } else {
                    unstore_delivery(&mut self.store_ops, s, seq);
                }
            }
        }
        for d in queued {
            let seq = d.seq;
            let mut moved = d.clone();
            moved.seq = 0;
            let kept = self.hand_to_other_member(key, moved, now).is_some();
            if let Some(s) = self.sessions.get_mut(key) {
                if kept {
                    s.queue.push_back(d);
                } else {
                    unstore_delivery(&mut self.store_ops, s, seq);
                }
            }
        }
    }

    /// Gives `d` to another member of its shared group; returns it when
    /// there is none.
    fn hand_to_other_member(
        &mut self,
        from: SessionKey,
        d: Delivery,
        now: Instant,
    ) -> Option<Delivery> {
        let gid = d.shared_group?;
        let sessions = &self.sessions;
        let online = |k: SessionKey| sessions.get(k).is_some_and(|s| s.conn().is_some());
        match self.shared.pick(gid, online, Some(from)) {
            Some((other, sub)) => {
                let qos = d.qos.min(sub.options.qos);
                self.deliver(
                    other,
                    Delivery {
                        qos,
                        sub_ids: sub.identifier.map_or(SubIds::None, SubIds::One),
                        seq: 0,
                        ..d
                    },
                    now,
                );
                None
            }
            None => Some(d),
        }
    }
}

/// Records an incoming QoS 2 packet id until its PUBREL, in the store too
/// when the session is kept there; false if it was awaited already (a
/// resent PUBLISH, not to be delivered again).
fn await_pubrel(session: &mut Session, id: PacketId, store_ops: &mut Vec<StoreOp>) -> bool {
    let fresh = session.await_pubrel(id.get());
    if fresh && session.stored {
        store_ops.push(StoreOp::PutIncomingQos2 {
            client_id: session.client_id.clone(),
            packet_id: id.get(),
        });
    }
    fresh
}

/// Properties a 5.0 message keeps on its way to subscribers ([MQTT-3.3.2-*]):
/// the topic alias is per connection, subscription identifiers are the
/// receiver's own, and the Message Expiry Interval is written per delivery
/// with the time left. Allocates nothing; drops the box if nothing is left.
pub(super) fn forwardable(mut p: Props) -> Props {
    if let Some(q) = p.get_mut() {
        q.topic_alias = None;
        q.subscription_identifiers.clear();
        q.message_expiry_interval = None;
    }
    p.shrink();
    p
}

/// The PUBLISH a subscriber receives for one delivery.
pub(super) fn outgoing_publish(
    d: &Delivery,
    packet_id: Option<PacketId>,
    protocol: ProtocolVersion,
    mount: Option<&ByteString>,
    now: Instant,
) -> Publish {
    let msg = &d.message;
    let topic = match mount {
        Some(m) if msg.topic.starts_with(&**m) => msg.topic.slice_ref(&msg.topic[m.len()..]),
        _ => msg.topic.clone(),
    };
    // Written only when they differ from the message's, so a copy without
    // properties or subscription identifiers allocates nothing, and one with
    // properties clones them once.
    let properties = if protocol.is_v5() {
        let mut p = msg.properties.clone();
        if !d.sub_ids.matches(&p.subscription_identifiers) {
            p.subscription_identifiers = d.sub_ids.to_vec();
        }
        let expiry = msg.remaining_expiry(now);
        if p.message_expiry_interval != expiry {
            p.message_expiry_interval = expiry;
        }
        p
    } else {
        Props::new()
    };
    Publish {
        dup: false,
        qos: d.qos,
        retain: d.retain,
        topic,
        packet_id,
        payload: msg.payload.clone(),
        properties,
    }
}

/// Whether a PUBLISH (plus `extra` bytes) is over the client's Maximum
/// Packet Size; such a copy is dropped as if delivered ([MQTT-3.1.2-25]).
pub(super) fn too_large(p: &Publish, s: &Session, extra: usize) -> bool {
    s.link.max_packet_out > 0
        && publish_encoded_len(p, s.protocol) + extra > s.link.max_packet_out as usize
}

/// Uses a topic alias towards a 5.0 client that allows them: the first
/// PUBLISH on a topic sets the alias, later ones send it with an empty topic.
fn apply_outgoing_alias(s: &mut Session, p: &mut Publish) {
    if s.link.alias_out_max == 0 {
        return;
    }
    let aliases = &mut s.link.aliases.get_or_insert_with(Default::default).outgoing;
    if let Some(&alias) = aliases.get(&p.topic) {
        p.properties.topic_alias = Some(alias);
        p.topic = Default::default();
    } else if aliases.len() < usize::from(s.link.alias_out_max) {
        let alias = aliases.len() as u16 + 1;
        aliases.insert(p.topic.clone(), alias);
        p.properties.topic_alias = Some(alias);
    }
}
