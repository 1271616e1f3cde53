//! Per-client session state: subscriptions, the outgoing in-flight window and
//! queue, and QoS 2 packet ids received but not yet released. A session may
//! outlive its connection (3.1.1 clean session 0, 5.0 session expiry).

use bytestring::ByteString;
use midge_codec::{LastWill, PacketId, ProtocolVersion, QoS, SubscriptionOptions};
use std::collections::{HashMap, HashSet, VecDeque};
use std::num::NonZeroU16;
use std::time::Instant;

use crate::ids::ConnId;
use crate::message::SharedMessage;

/// Session expiry interval meaning "never expires" (5.0: 0xFFFFFFFF).
pub const NEVER_EXPIRES: u32 = u32::MAX;

/// Where an outgoing QoS 1/2 message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutState {
    /// PUBLISH sent; waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    AwaitAck,
    /// PUBREL sent; waiting for PUBCOMP.
    AwaitComp,
}

#[derive(Debug, Clone)]
pub struct Inflight {
    pub packet_id: PacketId,
    pub message: SharedMessage,
    pub qos: QoS,
    pub retain: bool,
    pub state: OutState,
}

#[derive(Debug, Clone)]
pub struct Queued {
    pub message: SharedMessage,
    pub qos: QoS,
    pub retain: bool,
}

/// A subscription as the session remembers it (the topic tree holds a copy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscription {
    pub options: SubscriptionOptions,
    pub identifier: Option<u32>,
}

#[derive(Debug)]
pub struct Session {
    pub client_id: ByteString,
    /// The connection currently attached, if any.
    pub conn: Option<ConnId>,
    pub protocol: ProtocolVersion,
    /// Seconds the session outlives its connection: 0 ends it with the
    /// connection (3.1.1 clean session 1), [`NEVER_EXPIRES`] keeps it forever.
    pub expiry_interval: u32,
    /// When an offline session ends; `None` while connected or never.
    pub expires_at: Option<Instant>,
    pub subscriptions: HashMap<ByteString, Subscription>,
    pub inflight: VecDeque<Inflight>,
    pub queue: VecDeque<Queued>,
    pub queued_bytes: u64,
    /// QoS 2 packet ids received and delivered, awaiting PUBREL ([MQTT-4.3.3-10]).
    pub incoming_qos2: HashSet<u16>,
    pub will: Option<LastWill>,
    /// Messages dropped because the queue was full (Mosquitto's counter).
    pub dropped: u64,
    last_packet_id: u16,
    /// Marks the routing pass that last matched this session, so a message
    /// matching several of its subscriptions is delivered once.
    pub(crate) route_mark: u64,
    pub(crate) route_slot: usize,
}

impl Session {
    pub fn new(client_id: ByteString, protocol: ProtocolVersion, expiry_interval: u32) -> Self {
        Session {
            client_id,
            conn: None,
            protocol,
            expiry_interval,
            expires_at: None,
            subscriptions: HashMap::new(),
            inflight: VecDeque::new(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            incoming_qos2: HashSet::new(),
            will: None,
            dropped: 0,
            last_packet_id: 0,
            route_mark: 0,
            route_slot: 0,
        }
    }

    /// Next packet id not in use by an in-flight message. The caller keeps the
    /// window below 65 535 so this always terminates.
    pub fn next_packet_id(&mut self) -> PacketId {
        loop {
            self.last_packet_id = self.last_packet_id.wrapping_add(1);
            if let Some(id) = NonZeroU16::new(self.last_packet_id) {
                if !self.inflight.iter().any(|f| f.packet_id == id) {
                    return id;
                }
            }
        }
    }

    pub fn inflight_position(&self, packet_id: PacketId) -> Option<usize> {
        self.inflight.iter().position(|f| f.packet_id == packet_id)
    }

    /// Queues a message, refusing it when a limit is reached (0 = unlimited).
    pub fn enqueue(&mut self, item: Queued, max_messages: u32, max_bytes: u64) -> bool {
        let size = item.message.queued_size();
        let full_count = max_messages != 0 && self.queue.len() >= max_messages as usize;
        let full_bytes = max_bytes != 0 && self.queued_bytes + size > max_bytes;
        if full_count || full_bytes {
            self.dropped += 1;
            return false;
        }
        self.queued_bytes += size;
        self.queue.push_back(item);
        true
    }

    pub fn dequeue(&mut self) -> Option<Queued> {
        let item = self.queue.pop_front()?;
        self.queued_bytes = self.queued_bytes.saturating_sub(item.message.queued_size());
        Some(item)
    }
}
