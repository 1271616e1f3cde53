//! The live state: for every key the store holds, the encoded operation that
//! put it there.
//!
//! Replay and the running store keep the same structure, so a checkpoint is
//! a plain write of these bytes, and nothing is decoded beyond the keys until
//! the very end of recovery, when the live entries become a
//! [`RestoredState`]. Entries removed later in the journal are never decoded.

use bytes::Bytes;
use bytestring::ByteString;
use midge_core::session::NEVER_EXPIRES;
use midge_core::{RestoredDelivery, RestoredSession, RestoredState, StoreOp};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::codec::{decode_op, Op};

/// What an operation touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Key {
    PutRetained(ByteString),
    DeleteRetained(ByteString),
    PutSession(ByteString),
    SessionOffline(ByteString),
    DeleteSession(ByteString),
    PutSubscription(ByteString, ByteString),
    DeleteSubscription(ByteString, ByteString),
    PutDelivery(ByteString, u64),
    DeleteDelivery(ByteString, u64),
    PutIncomingQos2(ByteString, u16),
    DeleteIncomingQos2(ByteString, u16),
}

impl Key {
    pub fn of_store_op(op: &StoreOp) -> Option<Key> {
        Some(match op {
            StoreOp::PutRetained { message } => Key::PutRetained(message.topic.clone()),
            StoreOp::DeleteRetained { topic } => Key::DeleteRetained(topic.clone()),
            StoreOp::PutSession { client_id, .. } => Key::PutSession(client_id.clone()),
            StoreOp::SessionOffline { client_id, .. } => Key::SessionOffline(client_id.clone()),
            StoreOp::DeleteSession { client_id } => Key::DeleteSession(client_id.clone()),
            StoreOp::PutSubscription {
                client_id, filter, ..
            } => Key::PutSubscription(client_id.clone(), filter.clone()),
            StoreOp::DeleteSubscription { client_id, filter } => {
                Key::DeleteSubscription(client_id.clone(), filter.clone())
            }
            StoreOp::PutDelivery { client_id, seq, .. } => {
                Key::PutDelivery(client_id.clone(), *seq)
            }
            StoreOp::DeleteDelivery { client_id, seq } => {
                Key::DeleteDelivery(client_id.clone(), *seq)
            }
            StoreOp::PutIncomingQos2 {
                client_id,
                packet_id,
            } => Key::PutIncomingQos2(client_id.clone(), *packet_id),
            StoreOp::DeleteIncomingQos2 {
                client_id,
                packet_id,
            } => Key::DeleteIncomingQos2(client_id.clone(), *packet_id),
            _ => return None,
        })
    }

    pub fn of_op(op: Op) -> Key {
        match op {
            Op::PutRetained { topic, .. } => Key::PutRetained(topic),
            Op::DeleteRetained { topic } => Key::DeleteRetained(topic),
            Op::PutSession { client_id, .. } => Key::PutSession(client_id),
            Op::SessionOffline { client_id, .. } => Key::SessionOffline(client_id),
            Op::DeleteSession { client_id } => Key::DeleteSession(client_id),
            Op::PutSubscription {
                client_id, filter, ..
            } => Key::PutSubscription(client_id, filter),
            Op::DeleteSubscription { client_id, filter } => {
                Key::DeleteSubscription(client_id, filter)
            }
            Op::PutDelivery { client_id, seq, .. } => Key::PutDelivery(client_id, seq),
            Op::DeleteDelivery { client_id, seq } => Key::DeleteDelivery(client_id, seq),
            Op::PutIncomingQos2 {
                client_id,
                packet_id,
            } => Key::PutIncomingQos2(client_id, packet_id),
            Op::DeleteIncomingQos2 {
                client_id,
                packet_id,
            } => Key::DeleteIncomingQos2(client_id, packet_id),
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct LiveSession {
    put: Option<Bytes>,
    offline: Option<Bytes>,
    subs: HashMap<ByteString, Bytes>,
    deliveries: BTreeMap<u64, Bytes>,
    incoming: BTreeMap<u16, Bytes>,
}

impl LiveSession {
    fn bytes(&self) -> u64 {
        let one = |b: &Option<Bytes>| b.as_ref().map_or(0, |b| b.len() as u64);
        one(&self.put)
            + one(&self.offline)
            + self.subs.values().map(|b| b.len() as u64).sum::<u64>()
            + self
                .deliveries
                .values()
                .map(|b| b.len() as u64)
                .sum::<u64>()
            + self.incoming.values().map(|b| b.len() as u64).sum::<u64>()
    }

    fn entries(&self) -> impl Iterator<Item = &Bytes> {
        // PutSession first: it clears the offline mark when replayed.
        self.put
            .iter()
            .chain(self.offline.iter())
            .chain(self.subs.values())
            .chain(self.deliveries.values())
            .chain(self.incoming.values())
    }
}

#[derive(Debug, Default)]
pub(crate) struct Live {
    retained: HashMap<ByteString, Bytes>,
    sessions: HashMap<ByteString, LiveSession>,
    /// Total length of the live encodings: what a checkpoint writes.
    bytes: u64,
}

fn replace(slot: &mut Option<Bytes>, new: Option<Bytes>, total: &mut u64) {
    if let Some(old) = slot.take() {
        *total -= old.len() as u64;
    }
    if let Some(new) = new {
        *total += new.len() as u64;
        *slot = Some(new);
    }
}

fn put_in<K: Ord + std::hash::Hash>(
    map: &mut impl MapLike<K>,
    key: K,
    bytes: Bytes,
    total: &mut u64,
) {
    *total += bytes.len() as u64;
    if let Some(old) = map.put(key, bytes) {
        *total -= old.len() as u64;
    }
}

fn take_from<K: Ord + std::hash::Hash>(map: &mut impl MapLike<K>, key: &K, total: &mut u64) {
    if let Some(old) = map.take(key) {
        *total -= old.len() as u64;
    }
}

trait MapLike<K> {
    fn put(&mut self, k: K, v: Bytes) -> Option<Bytes>;
    fn take(&mut self, k: &K) -> Option<Bytes>;
}

impl<K: std::hash::Hash + Eq> MapLike<K> for HashMap<K, Bytes> {
    fn put(&mut self, k: K, v: Bytes) -> Option<Bytes> {
        self.insert(k, v)
    }
    fn take(&mut self, k: &K) -> Option<Bytes> {
        self.remove(k)
    }
}

impl<K: Ord> MapLike<K> for BTreeMap<K, Bytes> {
    fn put(&mut self, k: K, v: Bytes) -> Option<Bytes> {
        self.insert(k, v)
    }
    fn take(&mut self, k: &K) -> Option<Bytes> {
        self.remove(k)
    }
}

impl Live {
    /// Whether a delivery of this session is stored.
    pub fn has_delivery(&self, client_id: &str, seq: u64) -> bool {
        self.sessions
            .get(client_id)
            .is_some_and(|s| s.deliveries.contains_key(&seq))
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Applies one operation, given what it touches and its encoding.
    pub fn apply(&mut self, key: Key, bytes: Bytes) {
        let total = &mut self.bytes;
        match key {
            Key::PutRetained(topic) => put_in(&mut self.retained, topic, bytes, total),
            Key::DeleteRetained(topic) => take_from(&mut self.retained, &topic, total),
            Key::PutSession(id) => {
                let s = self.sessions.entry(id).or_default();
                replace(&mut s.put, Some(bytes), total);
                // Back online: no offline time, no pending will.
                replace(&mut s.offline, None, total);
            }
            Key::SessionOffline(id) => {
                let s = self.sessions.entry(id).or_default();
                replace(&mut s.offline, Some(bytes), total);
            }
            Key::DeleteSession(id) => {
                if let Some(s) = self.sessions.remove(&id) {
                    *total -= s.bytes();
                }
            }
            // Entries of a session the store has not seen are kept under an
            // implicit one: the core always sends PutSession first, and a
            // session without settings is reported and dropped at load.
            Key::PutSubscription(id, filter) => {
                let s = self.sessions.entry(id).or_default();
                put_in(&mut s.subs, filter, bytes, total);
            }
            Key::DeleteSubscription(id, filter) => {
                if let Some(s) = self.sessions.get_mut(&id) {
                    take_from(&mut s.subs, &filter, total);
                }
            }
            Key::PutDelivery(id, seq) => {
                let s = self.sessions.entry(id).or_default();
                put_in(&mut s.deliveries, seq, bytes, total);
            }
            Key::DeleteDelivery(id, seq) => {
                if let Some(s) = self.sessions.get_mut(&id) {
                    take_from(&mut s.deliveries, &seq, total);
                }
            }
            Key::PutIncomingQos2(id, pid) => {
                let s = self.sessions.entry(id).or_default();
                put_in(&mut s.incoming, pid, bytes, total);
            }
            Key::DeleteIncomingQos2(id, pid) => {
                if let Some(s) = self.sessions.get_mut(&id) {
                    take_from(&mut s.incoming, &pid, total);
                }
            }
        }
    }

    /// Every live encoding, in an order that replays to this same state.
    pub fn entries(&self) -> impl Iterator<Item = &Bytes> {
        self.sessions
            .values()
            .flat_map(LiveSession::entries)
            .chain(self.retained.values())
    }

    /// Copies every entry into its own allocation, so the buffer the
    /// entries were sliced from (a whole file read at start-up) is freed.
    pub fn detach(&mut self) {
        let copy = |b: &mut Bytes| *b = Bytes::copy_from_slice(b);
        self.retained.values_mut().for_each(copy);
        for s in self.sessions.values_mut() {
            s.put.iter_mut().for_each(copy);
            s.offline.iter_mut().for_each(copy);
            s.subs.values_mut().for_each(copy);
            s.deliveries.values_mut().for_each(copy);
            s.incoming.values_mut().for_each(copy);
        }
    }

    /// Builds what the core restores from, at wall time `now_ms`. Returns
    /// the operations that bring the store in line with what was left out
    /// (expired sessions and retained messages, undecodable entries).
    pub fn restore(
        &self,
        now_ms: u64,
        warnings: &mut Vec<String>,
    ) -> (RestoredState, Vec<StoreOp>) {
        let mut state = RestoredState::default();
        let mut cleanup = Vec::new();
        let left = |at_ms: u64| Duration::from_millis(at_ms.saturating_sub(now_ms));
        for (topic, bytes) in &self.retained {
            match decode_op(bytes, true) {
                Ok(Op::PutRetained {
                    message: Some(m), ..
                }) => {
                    if m.expires_at_ms.is_some_and(|at| at <= now_ms) {
                        cleanup.push(StoreOp::DeleteRetained {
                            topic: topic.clone(),
                        });
                        continue;
                    }
                    state.retained.push((m.message, m.expires_at_ms.map(left)));
                }
                other => {
                    warnings.push(format!(
                        "retained message on {topic:?} could not be decoded ({}); dropped",
                        describe(other)
                    ));
                    cleanup.push(StoreOp::DeleteRetained {
                        topic: topic.clone(),
                    });
                }
            }
        }
        for (id, s) in &self.sessions {
            let Some(put) = &s.put else {
                warnings.push(format!(
                    "session {id:?} has entries but no settings record; dropped"
                ));
                cleanup.push(StoreOp::DeleteSession {
                    client_id: id.clone(),
                });
                continue;
            };
            let (protocol, expiry_interval) = match decode_op(put, true) {
                Ok(Op::PutSession {
                    protocol,
                    expiry_interval,
                    ..
                }) => (protocol, expiry_interval),
                other => {
                    warnings.push(format!(
                        "session {id:?}: settings could not be decoded ({}); session dropped",
                        describe(other)
                    ));
                    cleanup.push(StoreOp::DeleteSession {
                        client_id: id.clone(),
                    });
                    continue;
                }
            };
            let (offline_for, will) = match s.offline.as_ref().map(|b| decode_op(b, true)) {
                None => (None, None),
                Some(Ok(Op::SessionOffline { at_ms, will, .. })) => (
                    Some(Duration::from_millis(now_ms.saturating_sub(at_ms))),
                    will,
                ),
                Some(other) => {
                    warnings.push(format!(
                        "session {id:?}: offline record could not be decoded ({}); \
                         taken as offline from now, without a will",
                        describe(other)
                    ));
                    (Some(Duration::ZERO), None)
                }
            };
            let pending_will = will.map(|w| {
                let delay =
                    Duration::from_secs(u64::from(w.properties.will_delay_interval.unwrap_or(0)));
                let left = delay.saturating_sub(offline_for.unwrap_or_default());
                (w, left)
            });
            let expired = offline_for.is_some_and(|off| {
                expiry_interval != NEVER_EXPIRES
                    && off >= Duration::from_secs(u64::from(expiry_interval))
            });
            let mut restored = RestoredSession {
                client_id: id.clone(),
                protocol,
                expiry_interval,
                offline_for: offline_for.unwrap_or_default(),
                pending_will,
                subscriptions: Vec::new(),
                deliveries: Vec::new(),
                incoming_qos2: Vec::new(),
            };
            if expired {
                // Ended while the broker was down. Its will must still go
                // out: the core ends the session at once and publishes it.
                if restored.pending_will.is_some() {
                    state.sessions.push(restored);
                } else {
                    cleanup.push(StoreOp::DeleteSession {
                        client_id: id.clone(),
                    });
                }
                continue;
            }
            for (filter, bytes) in &s.subs {
                match decode_op(bytes, true) {
                    Ok(Op::PutSubscription { subscription, .. }) => {
                        restored.subscriptions.push((filter.clone(), subscription));
                    }
                    other => {
                        warnings.push(format!(
                            "session {id:?}: subscription {filter:?} could not be decoded ({}); dropped",
                            describe(other)
                        ));
                        cleanup.push(StoreOp::DeleteSubscription {
                            client_id: id.clone(),
                            filter: filter.clone(),
                        });
                    }
                }
            }
            for (seq, bytes) in &s.deliveries {
                match decode_op(bytes, true) {
                    Ok(Op::PutDelivery {
                        qos,
                        retain,
                        sub_ids,
                        state: st,
                        message: Some(m),
                        ..
                    }) => restored.deliveries.push(RestoredDelivery {
                        seq: *seq,
                        message: m.message,
                        expires_in: m.expires_at_ms.map(left),
                        qos,
                        retain,
                        sub_ids,
                        state: st,
                    }),
                    other => {
                        warnings.push(format!(
                            "session {id:?}: message #{seq} could not be decoded ({}); dropped",
                            describe(other)
                        ));
                        cleanup.push(StoreOp::DeleteDelivery {
                            client_id: id.clone(),
                            seq: *seq,
                        });
                    }
                }
            }
            restored.incoming_qos2 = s.incoming.keys().copied().collect();
            state.sessions.push(restored);
        }
        (state, cleanup)
    }
}

fn describe(r: Result<Op, crate::codec::CodecError>) -> String {
    match r {
        Ok(_) => "unexpected operation under this key".to_string(),
        Err(e) => e.to_string(),
    }
}
