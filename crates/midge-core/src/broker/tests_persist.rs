//! Persistence seen from the core: the store operations a flow produces,
//! applied to a simple in-memory model of a store, are enough to rebuild
//! the broker after a restart.

use super::tests::*;
use super::*;
use crate::persist::{RestoredDelivery, RestoredSession, RestoredState, StoreOp, StoredState};
use crate::session::{SubIds, Subscription};
use midge_codec::{PubResponse, QoS};
use std::collections::BTreeMap;

/// The smallest store that honours the operations: the reference the real
/// store is checked against.
#[derive(Default)]
struct Model {
    retained: BTreeMap<String, Message>,
    sessions: BTreeMap<String, ModelSession>,
}

#[derive(Default)]
struct ModelSession {
    protocol: Option<ProtocolVersion>,
    expiry: u32,
    subs: BTreeMap<String, Subscription>,
    deliveries: BTreeMap<u64, (Message, QoS, bool, SubIds, StoredState)>,
    incoming: Vec<u16>,
}

impl Model {
    fn apply(&mut self, ops: Vec<StoreOp>) {
        for op in ops {
            match op {
                StoreOp::PutRetained { message } => {
                    self.retained
                        .insert(message.topic.to_string(), (*message).clone());
                }
                StoreOp::DeleteRetained { topic } => {
                    self.retained.remove(&*topic);
                }
                StoreOp::PutSession {
                    client_id,
                    protocol,
                    expiry_interval,
                } => {
                    let s = self.sessions.entry(client_id.to_string()).or_default();
                    s.protocol = Some(protocol);
                    s.expiry = expiry_interval;
                }
                StoreOp::SessionOffline { .. } => {}
                StoreOp::DeleteSession { client_id } => {
                    self.sessions.remove(&*client_id);
                }
                StoreOp::PutSubscription {
                    client_id,
                    filter,
                    subscription,
                } => {
                    self.session(&client_id)
                        .subs
                        .insert(filter.to_string(), subscription);
                }
                StoreOp::DeleteSubscription { client_id, filter } => {
                    self.session(&client_id).subs.remove(&*filter);
                }
                StoreOp::PutDelivery {
                    client_id,
                    seq,
                    message,
                    qos,
                    retain,
                    sub_ids,
                    state,
                } => {
                    self.session(&client_id)
                        .deliveries
                        .insert(seq, ((*message).clone(), qos, retain, sub_ids, state));
                }
                StoreOp::DeleteDelivery { client_id, seq } => {
                    self.session(&client_id).deliveries.remove(&seq);
                }
                StoreOp::PutIncomingQos2 {
                    client_id,
                    packet_id,
                } => {
                    self.session(&client_id).incoming.push(packet_id);
                }
                StoreOp::DeleteIncomingQos2 {
                    client_id,
                    packet_id,
                } => {
                    self.session(&client_id)
                        .incoming
                        .retain(|p| *p != packet_id);
                }
            }
        }
    }

    fn session(&mut self, id: &str) -> &mut ModelSession {
        self.sessions
            .get_mut(id)
            .expect("operation on a session the store does not hold")
    }

    fn restored(&self) -> RestoredState {
        RestoredState {
            retained: self.retained.values().map(|m| (m.clone(), None)).collect(),
            sessions: self
                .sessions
                .iter()
                .map(|(id, s)| RestoredSession {
                    client_id: id.as_str().into(),
                    protocol: s.protocol.unwrap_or(ProtocolVersion::V311),
                    expiry_interval: s.expiry,
                    offline_for: Duration::ZERO,
                    pending_will: None,
                    subscriptions: s
                        .subs
                        .iter()
                        .map(|(f, sub)| (f.as_str().into(), *sub))
                        .collect(),
                    deliveries: s
                        .deliveries
                        .iter()
                        .map(|(seq, (m, qos, retain, ids, state))| RestoredDelivery {
                            seq: *seq,
                            message: m.clone(),
                            expires_in: None,
                            qos: *qos,
                            retain: *retain,
                            sub_ids: ids.clone(),
                            state: *state,
                        })
                        .collect(),
                    incoming_qos2: s.incoming.clone(),
                })
                .collect(),
        }
    }
}

fn persistent_config() -> BrokerConfig {
    BrokerConfig {
        persistence: true,
        max_inflight_messages: 2,
        ..Default::default()
    }
}

#[test]
fn clean_sessions_and_qos0_write_nothing() {
    let mut h = Harness::new(persistent_config());
    let s = h.connect("clean", true);
    h.subscribe(s, "t", QoS::AtLeastOnce);
    let p = h.connect("pub", true);
    h.send(p, publish("t", "x", QoS::AtLeastOnce, false, Some(1)));
    assert!(h.broker.take_store_ops().is_empty());
}

#[test]
fn restart_restores_sessions_queues_inflight_and_retained() {
    let mut h = Harness::new(persistent_config());
    let mut model = Model::default();
    let sub = h.connect("sub", false);
    h.subscribe(sub, "q/#", QoS::ExactlyOnce);
    let p = h.connect("pub", false);
    h.send(
        p,
        publish("q/keep", "retained", QoS::AtLeastOnce, true, Some(1)),
    );
    // The subscriber receives 2 (its window) and acknowledges none; 2 more queue.
    for i in 2..=5u16 {
        h.send(
            p,
            publish("q/x", &format!("m{i}"), QoS::AtLeastOnce, false, Some(i)),
        );
    }
    // A QoS 2 message from the publisher not yet released.
    h.send(p, publish("other", "q2", QoS::ExactlyOnce, false, Some(77)));
    let first = h.take(sub);
    let sent: Vec<_> = publishes(&first)
        .iter()
        .map(|p| (p.packet_id, p.payload.clone()))
        .collect();
    assert_eq!(sent.len(), 2);
    model.apply(h.broker.take_store_ops());

    // kill -9: a new broker from what the store has.
    let mut h2 = Harness::new(persistent_config());
    h2.broker.restore(model.restored(), h2.now());
    assert_eq!(h2.broker.retained_count(), 1);
    assert_eq!(h2.broker.session_count(), 2);
    let (sub, ack) = h2.connect_with(connect_packet("sub", false, 0, ProtocolVersion::V311));
    assert!(ack.session_present);
    let again = h2.take(sub);
    let resent = publishes(&again);
    // The two in flight come again with DUP and their packet ids.
    assert_eq!(resent.len(), 2);
    for (p, (id, payload)) in resent.iter().zip(&sent) {
        assert!(p.dup);
        assert_eq!(&p.packet_id, id);
        assert_eq!(&p.payload, payload);
    }
    // Acknowledging releases the queued ones, in order.
    let mut rest = Vec::new();
    let mut pending: Vec<_> = resent.iter().filter_map(|p| p.packet_id).collect();
    while let Some(id) = pending.pop() {
        h2.send(sub, Packet::PubAck(PubResponse::new(id)));
        for p in publishes(&h2.take(sub)) {
            rest.push(p.payload.clone());
            pending.push(p.packet_id.expect("id"));
        }
    }
    let rest: Vec<&[u8]> = rest.iter().map(|b| &b[..]).collect();
    // The retained message and m2 were in flight; m3..m5 were queued.
    assert_eq!(rest, vec![&b"m3"[..], b"m4", b"m5"]);

    // The publisher's unreleased QoS 2 id survived: a resend is not delivered twice.
    let other = h2.connect("watch", true);
    h2.subscribe(other, "other", QoS::AtMostOnce);
    let (p, _) = h2.connect_with(connect_packet("pub", false, 0, ProtocolVersion::V311));
    h2.take(p);
    h2.send(p, publish("other", "q2", QoS::ExactlyOnce, false, Some(77)));
    assert!(publishes(&h2.take(other)).is_empty());
}

#[test]
fn ended_sessions_and_cleared_retained_leave_the_store() {
    let mut h = Harness::new(persistent_config());
    let mut model = Model::default();
    let s = h.connect("s", false);
    h.subscribe(s, "a", QoS::AtLeastOnce);
    let p = h.connect("p", true);
    h.send(p, publish("r", "x", QoS::AtMostOnce, true, None));
    h.send(p, publish("r", "", QoS::AtMostOnce, true, None));
    h.lose(s);
    // Reconnecting with clean session ends the stored session.
    h.connect("s", true);
    model.apply(h.broker.take_store_ops());
    assert!(model.retained.is_empty());
    assert!(model.sessions.is_empty());
}
