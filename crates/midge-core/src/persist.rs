//! What the core asks the store to make durable, and what the store gives
//! back at start-up. The core stays free of disks: it lists changes as
//! [`StoreOp`]s ([`crate::Broker::take_store_ops`]); the server writes them
//! through the store (one group commit per batch) before it lets the
//! acknowledgements of that batch go out, so a PUBACK, PUBREC or SUBACK is
//! only seen once what it acknowledges is durable.
//!
//! Only what must survive a restart is listed: retained messages, and the
//! state of sessions that outlive their connection (Session Expiry Interval
//! above 0, or 3.1.1 clean session 0): subscriptions, queued and in-flight
//! messages, QoS 2 packet ids received but not released, and wills waiting
//! for their delay.

use bytestring::ByteString;
use midge_codec::{LastWill, PacketId, ProtocolVersion, QoS};
use std::time::Duration;

use crate::message::{Message, SharedMessage};
use crate::session::{OutState, SubIds, Subscription};

/// Where a stored copy of a message stands in its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredState {
    /// Waiting in the queue; no packet id yet.
    Queued,
    /// Sent with this packet id.
    InFlight(PacketId, OutState),
}

/// One change to durable state.
#[derive(Debug, Clone)]
#[non_exhaustive]
#[allow(clippy::large_enum_variant)] // built once per change, never stored in bulk
pub enum StoreOp {
    PutRetained {
        message: SharedMessage,
    },
    DeleteRetained {
        topic: ByteString,
    },
    /// Creates or updates a session's settings. It is online until
    /// [`StoreOp::SessionOffline`].
    PutSession {
        client_id: ByteString,
        protocol: ProtocolVersion,
        expiry_interval: u32,
    },
    /// The connection went away at the time the store writes this; the
    /// session expires `expiry_interval` seconds later. `will` is a will
    /// waiting for its Will Delay Interval.
    SessionOffline {
        client_id: ByteString,
        will: Option<LastWill>,
    },
    /// Ends a session: everything stored under this client id goes.
    DeleteSession {
        client_id: ByteString,
    },
    PutSubscription {
        client_id: ByteString,
        filter: ByteString,
        subscription: Subscription,
    },
    DeleteSubscription {
        client_id: ByteString,
        filter: ByteString,
    },
    /// Adds or replaces the copy numbered `seq` in the session.
    PutDelivery {
        client_id: ByteString,
        seq: u64,
        message: SharedMessage,
        qos: QoS,
        retain: bool,
        sub_ids: SubIds,
        state: StoredState,
    },
    DeleteDelivery {
        client_id: ByteString,
        seq: u64,
    },
    /// A QoS 2 PUBLISH was received and delivered; its PUBREL is awaited.
    PutIncomingQos2 {
        client_id: ByteString,
        packet_id: u16,
    },
    DeleteIncomingQos2 {
        client_id: ByteString,
        packet_id: u16,
    },
}

/// A stored copy of a message, as loaded.
#[derive(Debug, Clone)]
pub struct RestoredDelivery {
    pub seq: u64,
    /// `expires_at` is ignored; see `expires_in`.
    pub message: Message,
    /// Time left of the Message Expiry Interval, if it has one.
    pub expires_in: Option<Duration>,
    pub qos: QoS,
    pub retain: bool,
    pub sub_ids: SubIds,
    pub state: StoredState,
}

/// A session as loaded. It is offline: its clients reconnect to it.
#[derive(Debug, Clone)]
pub struct RestoredSession {
    pub client_id: ByteString,
    pub protocol: ProtocolVersion,
    pub expiry_interval: u32,
    /// How long it has been offline (0 when the broker stopped while the
    /// client was connected: it counts from the restart).
    pub offline_for: Duration,
    /// A delayed will and the time left before it is due.
    pub pending_will: Option<(LastWill, Duration)>,
    pub subscriptions: Vec<(ByteString, Subscription)>,
    /// In `seq` order.
    pub deliveries: Vec<RestoredDelivery>,
    pub incoming_qos2: Vec<u16>,
}

/// Everything the store recovered.
#[derive(Debug, Clone, Default)]
pub struct RestoredState {
    /// Retained messages, with the time left of their expiry interval.
    pub retained: Vec<(Message, Option<Duration>)>,
    pub sessions: Vec<RestoredSession>,
}
