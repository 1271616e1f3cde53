//! SUBSCRIBE and UNSUBSCRIBE: the subscription tree, shared groups, and
//! retained messages sent on subscribe.

use bytestring::ByteString;
use midge_codec::{
    Packet, QoS, ReasonCode, RetainHandling, SubAck, Subscribe, SubscriptionOptions, UnsubAck,
    Unsubscribe,
};
use std::time::Instant;

use super::Broker;
use crate::event::BrokerEvent;
use crate::ids::{ConnId, SessionKey};
use crate::message::SharedMessage;
use crate::session::{Delivery, SubIds, Subscription};

impl Broker {
    pub(super) fn handle_subscribe(
        &mut self,
        conn_id: ConnId,
        key: SessionKey,
        sub: Subscribe,
        now: Instant,
    ) {
        let Some(s) = self.sessions.get(key) else {
            return;
        };
        let v5 = s.protocol.is_v5();
        let client_id = s.id_copy();
        let username = s.username.clone();
        let acl = self.access.clone().filter(|a| a.has_acl());
        let identifier = sub.properties.subscription_identifiers.first().copied();
        let mut reasons = Vec::with_capacity(sub.filters.len());
        let mut retained: Vec<(SharedMessage, Subscription)> = Vec::new();
        let mount = self.sessions.get(key).and_then(|s| s.mount().cloned());
        for (filter, mut options) in sub.filters {
            let filter = mounted(mount.as_ref(), filter);
            if !v5 {
                options = SubscriptionOptions {
                    qos: options.qos,
                    ..Default::default()
                };
            }
            options.qos = options.qos.min(self.config.maximum_qos);
            // A filter the client may never read is refused, where Mosquitto
            // grants it and then delivers nothing.
            if let Some(a) = &acl {
                if !a.can_subscribe(&client_id, username.as_deref(), &filter) {
                    reasons.push(if v5 {
                        ReasonCode::NOT_AUTHORIZED
                    } else {
                        ReasonCode::UNSPECIFIED_ERROR
                    });
                    continue;
                }
            }
            let subscription = Subscription {
                options,
                identifier,
            };
            let existed = match midge_codec::parse_shared(&filter) {
                Some((group, f)) => {
                    // [MQTT-3.8.3-4] No Local on a shared subscription is a
                    // protocol error.
                    if options.no_local {
                        self.protocol_error(conn_id, ReasonCode::PROTOCOL_ERROR, now);
                        return;
                    }
                    self.shared.subscribe(group, f, key, subscription)
                }
                None => self.tree.insert(&filter, key, subscription).is_some(),
            };
            if let Some(s) = self.sessions.get_mut(key) {
                s.subscriptions.insert(filter.clone(), subscription);
                if s.stored {
                    self.store_ops
                        .push(crate::persist::StoreOp::PutSubscription {
                            client_id: s.client_id.clone(),
                            filter: filter.clone(),
                            subscription,
                        });
                }
            }
            reasons.push(ReasonCode(options.qos as u8));
            self.events.push(BrokerEvent::Subscribed {
                client_id: client_id.clone(),
                filter: filter.clone(),
                qos: options.qos,
            });
            // Retained messages are not sent for shared subscriptions
            // ([MQTT-3.8.4-?], 5.0 §4.8.2).
            let send_retained = !filter.starts_with("$share/")
                && match options.retain_handling {
                    RetainHandling::SendAtSubscribe => true,
                    RetainHandling::SendAtSubscribeIfNew => !existed,
                    RetainHandling::DoNotSend => false,
                };
            if send_retained {
                self.retained.for_each_match(&filter, |topic, m| {
                    let readable = acl
                        .as_ref()
                        .is_none_or(|a| a.can_read(&client_id, username.as_deref(), topic));
                    if readable {
                        retained.push((m.clone(), subscription));
                    }
                });
            }
        }
        self.links.send(
            conn_id,
            Packet::SubAck(SubAck {
                packet_id: sub.packet_id,
                reasons,
                properties: Default::default(),
            }),
        );
        // [MQTT-3.3.1-8] retained messages sent on subscribe carry retain 1.
        for (m, sub) in retained {
            let qos: QoS = m.qos.min(sub.options.qos);
            let d = Delivery {
                message: m,
                qos,
                retain: true,
                sub_ids: sub.identifier.map_or(SubIds::None, SubIds::One),
                shared_group: None,
                seq: 0,
            };
            self.deliver(key, d, now);
        }
    }

    pub(super) fn handle_unsubscribe(&mut self, conn_id: ConnId, key: SessionKey, u: Unsubscribe) {
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        let v5 = s.protocol.is_v5();
        let client_id = s.id_copy();
        let mut reasons = Vec::new();
        let mount = s.mount().cloned();
        for filter in u.filters {
            let filter = mounted(mount.as_ref(), filter);
            let existed = s.subscriptions.remove(&filter).is_some();
            if existed && s.stored {
                self.store_ops
                    .push(crate::persist::StoreOp::DeleteSubscription {
                        client_id: s.client_id.clone(),
                        filter: filter.clone(),
                    });
            }
            match midge_codec::parse_shared(&filter) {
                Some((group, f)) => {
                    self.shared.unsubscribe(group, f, key);
                }
                None => {
                    self.tree.remove(&filter, key);
                }
            }
            if v5 {
                reasons.push(if existed {
                    ReasonCode::SUCCESS
                } else {
                    ReasonCode::NO_SUBSCRIPTION_EXISTED
                });
            }
            self.events.push(BrokerEvent::Unsubscribed {
                client_id: client_id.clone(),
                filter: ByteString::clone(&filter),
            });
        }
        self.links.send(
            conn_id,
            Packet::UnsubAck(UnsubAck {
                packet_id: u.packet_id,
                reasons,
                properties: Default::default(),
            }),
        );
    }
}

/// A client's filter as seen inside its listener's `mount_point`:
/// `a/#` becomes `mount/a/#`, and `$share/g/a/#` becomes `$share/g/mount/a/#`.
fn mounted(mount: Option<&ByteString>, filter: ByteString) -> ByteString {
    let Some(m) = mount else {
        return filter;
    };
    match midge_codec::parse_shared(&filter) {
        Some((group, f)) => ByteString::from(format!("$share/{group}/{m}{f}")),
        None => ByteString::from(format!("{m}{filter}")),
    }
}
