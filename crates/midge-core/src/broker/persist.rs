//! The core's side of persistence: listing changes as store operations, and
//! rebuilding sessions and retained messages from what the store recovered.

use std::sync::Arc;
use std::time::Instant;

use super::{Broker, Timer};
use crate::ids::SessionKey;
use crate::message::Message;
use crate::persist::{RestoredState, StoreOp, StoredState};
use crate::session::{Delivery, Inflight, Session, NEVER_EXPIRES};

impl Broker {
    /// Changes made durable-worthy since the last call, in order. The server
    /// must write them (and wait for the write when the sync policy asks)
    /// before it sends the packets [`Broker::poll_transmit`] gave for the
    /// same calls.
    pub fn take_store_ops(&mut self) -> Vec<StoreOp> {
        std::mem::take(&mut self.store_ops)
    }

    pub fn has_store_ops(&self) -> bool {
        !self.store_ops.is_empty()
    }

    /// Records a session's settings when it is (or stops being) one the
    /// store keeps.
    pub(super) fn persist_session(&mut self, key: SessionKey) {
        if !self.config.persistence {
            return;
        }
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        if s.expiry_interval > 0 {
            s.stored = true;
            self.store_ops.push(StoreOp::PutSession {
                client_id: s.client_id.clone(),
                protocol: s.protocol,
                expiry_interval: s.expiry_interval,
            });
        } else if s.stored {
            s.stored = false;
            self.store_ops.push(StoreOp::DeleteSession {
                client_id: s.client_id.clone(),
            });
        }
    }

    /// Rebuilds state from the store, before any client connects. Sessions
    /// come back offline; their expiry and delayed wills count on from
    /// where they were.
    pub fn restore(&mut self, state: RestoredState, now: Instant) {
        for (mut message, expires_in) in state.retained {
            message.expires_at = expires_in.map(|d| now + d);
            message.publisher = None;
            let topic = message.topic.clone();
            self.retained.insert(&topic, Arc::new(message));
        }
        for r in state.sessions {
            let mut s = Session::new(&r.client_id, r.protocol, r.expiry_interval);
            s.stored = true;
            if r.expiry_interval != NEVER_EXPIRES {
                let left = std::time::Duration::from_secs(u64::from(r.expiry_interval))
                    .saturating_sub(r.offline_for);
                s.expires_at = Some(now + left);
            }
            if let Some((will, left)) = r.pending_will {
                s.set_pending_will(Box::new(will), now + left);
            }
            for (filter, sub) in &r.subscriptions {
                s.subscriptions.insert(filter.clone(), *sub);
            }
            for id in &r.incoming_qos2 {
                s.await_pubrel(*id);
            }
            for d in r.deliveries {
                s.next_seq = s.next_seq.max(d.seq + 1);
                let mut message: Message = d.message;
                message.expires_at = d.expires_in.map(|e| now + e);
                message.publisher = None;
                let delivery = Delivery {
                    message: Arc::new(message),
                    qos: d.qos,
                    retain: d.retain,
                    sub_ids: d.sub_ids,
                    shared_group: None,
                    seq: d.seq,
                };
                match d.state {
                    StoredState::Queued => {
                        s.queue.push_back(delivery);
                    }
                    StoredState::InFlight(packet_id, state) => s.inflight.push_back(Inflight {
                        packet_id,
                        delivery,
                        state,
                    }),
                }
            }
            let expires_at = s.expires_at;
            let will_at = s.pending_will().map(|(_, at)| *at);
            // A client id seen twice keeps the first.
            if self.sessions.find(&r.client_id).is_some() {
                continue;
            }
            let key = self.sessions.insert(s);
            for (filter, sub) in r.subscriptions {
                match midge_codec::parse_shared(&filter) {
                    Some((group, f)) => {
                        self.shared.subscribe(group, f, key, sub);
                    }
                    None => {
                        self.tree.insert(&filter, key, sub);
                    }
                }
            }
            if let Some(at) = expires_at {
                self.push_timer(at, Timer::SessionExpiry(key));
            }
            if let Some(at) = will_at {
                self.push_timer(at, Timer::WillDelay(key));
            }
        }
    }
}

/// Records a copy of a message as queued or in flight in a stored session,
/// numbering it the first time.
pub(super) fn store_delivery(
    ops: &mut Vec<StoreOp>,
    s: &mut Session,
    d: &mut Delivery,
    state: StoredState,
) {
    if !s.stored {
        return;
    }
    if d.seq == 0 {
        d.seq = s.next_seq;
        s.next_seq += 1;
    }
    restore_delivery(ops, s, d, state);
}

/// Records a new state for a copy already numbered in a stored session.
pub(super) fn restore_delivery(
    ops: &mut Vec<StoreOp>,
    s: &Session,
    d: &Delivery,
    state: StoredState,
) {
    if !s.stored || d.seq == 0 {
        return;
    }
    ops.push(StoreOp::PutDelivery {
        client_id: s.client_id.clone(),
        seq: d.seq,
        message: d.message.clone(),
        qos: d.qos,
        retain: d.retain,
        sub_ids: d.sub_ids.clone(),
        state,
    });
}

/// Forgets a stored copy (delivered, expired, dropped or moved).
pub(super) fn unstore_delivery(ops: &mut Vec<StoreOp>, s: &Session, seq: u64) {
    if s.stored && seq != 0 {
        ops.push(StoreOp::DeleteDelivery {
            client_id: s.client_id.clone(),
            seq,
        });
    }
}
