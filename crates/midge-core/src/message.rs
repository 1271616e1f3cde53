//! An application message as the broker routes it: one allocation per
//! published message, shared by reference among every subscriber, the retained
//! index and offline queues.

use bytes::Bytes;
use bytestring::ByteString;
use midge_codec::{Props, QoS};
use std::sync::Arc;
use std::time::Instant;

use crate::ids::SessionKey;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: ByteString,
    pub payload: Bytes,
    /// QoS the publisher sent it with; each subscriber gets at most its granted QoS.
    pub qos: QoS,
    /// The publisher's retain flag.
    pub retain: bool,
    /// 5.0 properties to pass on (topic alias, subscription ids and message
    /// expiry removed); boxed only when there are some.
    pub properties: Props,
    /// Who published it (for 5.0 No Local); `None` for wills of ended sessions.
    pub publisher: Option<SessionKey>,
    /// When a 5.0 Message Expiry Interval runs out; `None` never expires.
    pub expires_at: Option<Instant>,
}

pub type SharedMessage = Arc<Message>;

impl Message {
    /// A message with no properties, no publisher and no expiry, as the
    /// broker publishes its own (`$SYS`).
    pub fn plain(topic: impl Into<ByteString>, payload: Bytes, qos: QoS, retain: bool) -> Message {
        Message {
            topic: topic.into(),
            payload,
            qos,
            retain,
            properties: Default::default(),
            publisher: None,
            expires_at: None,
        }
    }

    /// Bytes this message costs in a queue (Mosquitto counts the payload).
    pub fn queued_size(&self) -> u64 {
        self.payload.len() as u64
    }

    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }

    /// Whole seconds left, rounded up, for the outgoing Message Expiry
    /// Interval ([MQTT-3.3.2-6]: the receiver sees the time remaining).
    pub fn remaining_expiry(&self, now: Instant) -> Option<u32> {
        let left = self.expires_at?.saturating_duration_since(now);
        let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        Some(u32::try_from(secs).unwrap_or(u32::MAX).max(1))
    }
}
