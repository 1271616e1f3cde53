//! An application message as the broker routes it: one allocation per
//! published message, shared by reference among every subscriber, the retained
//! index and offline queues.

use bytes::Bytes;
use bytestring::ByteString;
use midge_codec::{Properties, QoS};
use std::sync::Arc;

use crate::ids::SessionKey;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: ByteString,
    pub payload: Bytes,
    /// QoS the publisher sent it with; each subscriber gets at most its granted QoS.
    pub qos: QoS,
    /// The publisher's retain flag.
    pub retain: bool,
    /// 5.0 properties to pass on (topic alias and subscription ids removed).
    pub properties: Properties,
    /// Who published it (for 5.0 No Local); `None` for wills of ended sessions.
    pub publisher: Option<SessionKey>,
}

pub type SharedMessage = Arc<Message>;

impl Message {
    /// Bytes this message costs in a queue (Mosquitto counts the payload).
    pub fn queued_size(&self) -> u64 {
        self.payload.len() as u64
    }
}
