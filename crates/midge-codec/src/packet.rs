//! Packet types shared by all protocol levels: one `Packet` enum, with the
//! fields of MQTT 5.0 (properties, reason codes) that 3.1/3.1.1 leave empty.

use bytes::Bytes;
use bytestring::ByteString;
use std::fmt;
use std::num::NonZeroU16;
use std::ops::{Deref, DerefMut};

/// A packet identifier; the spec forbids zero ([MQTT-2.2.1-3]).
pub type PacketId = NonZeroU16;

/// Protocol level negotiated by CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProtocolVersion {
    /// MQTT 3.1, protocol name `MQIsdp`, level 3.
    V31,
    /// MQTT 3.1.1, protocol name `MQTT`, level 4.
    V311,
    /// MQTT 5.0, protocol name `MQTT`, level 5.
    V5,
}

impl ProtocolVersion {
    pub fn level(self) -> u8 {
        match self {
            ProtocolVersion::V31 => 3,
            ProtocolVersion::V311 => 4,
            ProtocolVersion::V5 => 5,
        }
    }

    pub fn protocol_name(self) -> &'static str {
        match self {
            ProtocolVersion::V31 => "MQIsdp",
            ProtocolVersion::V311 | ProtocolVersion::V5 => "MQTT",
        }
    }

    pub fn is_v5(self) -> bool {
        self == ProtocolVersion::V5
    }
}

/// Quality of service level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(u8)]
pub enum QoS {
    #[default]
    AtMostOnce = 0,
    AtLeastOnce = 1,
    ExactlyOnce = 2,
}

impl QoS {
    pub fn from_u8(v: u8) -> Option<QoS> {
        match v {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

/// A reason code (5.0) or, on CONNACK to a 3.x client, the connect return code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ReasonCode(pub u8);

impl ReasonCode {
    pub const SUCCESS: ReasonCode = ReasonCode(0x00);
    pub const NORMAL_DISCONNECTION: ReasonCode = ReasonCode(0x00);
    pub const GRANTED_QOS_0: ReasonCode = ReasonCode(0x00);
    pub const GRANTED_QOS_1: ReasonCode = ReasonCode(0x01);
    pub const GRANTED_QOS_2: ReasonCode = ReasonCode(0x02);
    pub const DISCONNECT_WITH_WILL: ReasonCode = ReasonCode(0x04);
    pub const NO_MATCHING_SUBSCRIBERS: ReasonCode = ReasonCode(0x10);
    pub const NO_SUBSCRIPTION_EXISTED: ReasonCode = ReasonCode(0x11);
    pub const CONTINUE_AUTHENTICATION: ReasonCode = ReasonCode(0x18);
    pub const REAUTHENTICATE: ReasonCode = ReasonCode(0x19);
    pub const UNSPECIFIED_ERROR: ReasonCode = ReasonCode(0x80);
    pub const MALFORMED_PACKET: ReasonCode = ReasonCode(0x81);
    pub const PROTOCOL_ERROR: ReasonCode = ReasonCode(0x82);
    pub const IMPLEMENTATION_SPECIFIC_ERROR: ReasonCode = ReasonCode(0x83);
    pub const UNSUPPORTED_PROTOCOL_VERSION: ReasonCode = ReasonCode(0x84);
    pub const CLIENT_IDENTIFIER_NOT_VALID: ReasonCode = ReasonCode(0x85);
    pub const BAD_USER_NAME_OR_PASSWORD: ReasonCode = ReasonCode(0x86);
    pub const NOT_AUTHORIZED: ReasonCode = ReasonCode(0x87);
    pub const SERVER_UNAVAILABLE: ReasonCode = ReasonCode(0x88);
    pub const SERVER_BUSY: ReasonCode = ReasonCode(0x89);
    pub const BANNED: ReasonCode = ReasonCode(0x8A);
    pub const SERVER_SHUTTING_DOWN: ReasonCode = ReasonCode(0x8B);
    pub const BAD_AUTHENTICATION_METHOD: ReasonCode = ReasonCode(0x8C);
    pub const KEEP_ALIVE_TIMEOUT: ReasonCode = ReasonCode(0x8D);
    pub const SESSION_TAKEN_OVER: ReasonCode = ReasonCode(0x8E);
    pub const TOPIC_FILTER_INVALID: ReasonCode = ReasonCode(0x8F);
    pub const TOPIC_NAME_INVALID: ReasonCode = ReasonCode(0x90);
    pub const PACKET_IDENTIFIER_IN_USE: ReasonCode = ReasonCode(0x91);
    pub const PACKET_IDENTIFIER_NOT_FOUND: ReasonCode = ReasonCode(0x92);
    pub const RECEIVE_MAXIMUM_EXCEEDED: ReasonCode = ReasonCode(0x93);
    pub const TOPIC_ALIAS_INVALID: ReasonCode = ReasonCode(0x94);
    pub const PACKET_TOO_LARGE: ReasonCode = ReasonCode(0x95);
    pub const MESSAGE_RATE_TOO_HIGH: ReasonCode = ReasonCode(0x96);
    pub const QUOTA_EXCEEDED: ReasonCode = ReasonCode(0x97);
    pub const ADMINISTRATIVE_ACTION: ReasonCode = ReasonCode(0x98);
    pub const PAYLOAD_FORMAT_INVALID: ReasonCode = ReasonCode(0x99);
    pub const RETAIN_NOT_SUPPORTED: ReasonCode = ReasonCode(0x9A);
    pub const QOS_NOT_SUPPORTED: ReasonCode = ReasonCode(0x9B);
    pub const USE_ANOTHER_SERVER: ReasonCode = ReasonCode(0x9C);
    pub const SERVER_MOVED: ReasonCode = ReasonCode(0x9D);
    pub const SHARED_SUBSCRIPTIONS_NOT_SUPPORTED: ReasonCode = ReasonCode(0x9E);
    pub const CONNECTION_RATE_EXCEEDED: ReasonCode = ReasonCode(0x9F);
    pub const MAXIMUM_CONNECT_TIME: ReasonCode = ReasonCode(0xA0);
    pub const SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED: ReasonCode = ReasonCode(0xA1);
    pub const WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED: ReasonCode = ReasonCode(0xA2);

    pub fn is_error(self) -> bool {
        self.0 >= 0x80
    }
}

/// MQTT 3.1 / 3.1.1 CONNACK return codes ([MQTT-3.2.2-4] .. table 3.1).
pub mod connect_return_code {
    pub const ACCEPTED: u8 = 0;
    pub const UNACCEPTABLE_PROTOCOL_VERSION: u8 = 1;
    pub const IDENTIFIER_REJECTED: u8 = 2;
    pub const SERVER_UNAVAILABLE: u8 = 3;
    pub const BAD_USER_NAME_OR_PASSWORD: u8 = 4;
    pub const NOT_AUTHORIZED: u8 = 5;
}

/// MQTT 5.0 properties (section 2.2.2). Every field is optional; a 3.x packet
/// always has the default (empty) value. Order of user properties is kept.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Properties {
    /// 0x01, byte.
    pub payload_format_indicator: Option<u8>,
    /// 0x02, four-byte integer, seconds.
    pub message_expiry_interval: Option<u32>,
    /// 0x03, UTF-8 string.
    pub content_type: Option<ByteString>,
    /// 0x08, UTF-8 string (a topic name).
    pub response_topic: Option<ByteString>,
    /// 0x09, binary data.
    pub correlation_data: Option<Bytes>,
    /// 0x0B, variable byte integer 1..=268_435_455; PUBLISH to a client may carry several.
    pub subscription_identifiers: Vec<u32>,
    /// 0x11, four-byte integer, seconds.
    pub session_expiry_interval: Option<u32>,
    /// 0x12, UTF-8 string.
    pub assigned_client_identifier: Option<ByteString>,
    /// 0x13, two-byte integer, seconds.
    pub server_keep_alive: Option<u16>,
    /// 0x15, UTF-8 string.
    pub authentication_method: Option<ByteString>,
    /// 0x16, binary data.
    pub authentication_data: Option<Bytes>,
    /// 0x17, byte 0 or 1.
    pub request_problem_information: Option<u8>,
    /// 0x18, four-byte integer, seconds.
    pub will_delay_interval: Option<u32>,
    /// 0x19, byte 0 or 1.
    pub request_response_information: Option<u8>,
    /// 0x1A, UTF-8 string.
    pub response_information: Option<ByteString>,
    /// 0x1C, UTF-8 string.
    pub server_reference: Option<ByteString>,
    /// 0x1F, UTF-8 string.
    pub reason_string: Option<ByteString>,
    /// 0x21, two-byte integer, non-zero.
    pub receive_maximum: Option<u16>,
    /// 0x22, two-byte integer.
    pub topic_alias_maximum: Option<u16>,
    /// 0x23, two-byte integer, non-zero.
    pub topic_alias: Option<u16>,
    /// 0x24, byte 0 or 1.
    pub maximum_qos: Option<u8>,
    /// 0x25, byte 0 or 1.
    pub retain_available: Option<u8>,
    /// 0x26, UTF-8 string pair; may repeat, order kept.
    pub user_properties: Vec<(ByteString, ByteString)>,
    /// 0x27, four-byte integer, non-zero.
    pub maximum_packet_size: Option<u32>,
    /// 0x28, byte 0 or 1.
    pub wildcard_subscription_available: Option<u8>,
    /// 0x29, byte 0 or 1.
    pub subscription_identifier_available: Option<u8>,
    /// 0x2A, byte 0 or 1.
    pub shared_subscription_available: Option<u8>,
}

impl Properties {
    /// No property set; the same as `Properties::default()`, usable in `const`.
    pub const EMPTY: Properties = Properties {
        payload_format_indicator: None,
        message_expiry_interval: None,
        content_type: None,
        response_topic: None,
        correlation_data: None,
        subscription_identifiers: Vec::new(),
        session_expiry_interval: None,
        assigned_client_identifier: None,
        server_keep_alive: None,
        authentication_method: None,
        authentication_data: None,
        request_problem_information: None,
        will_delay_interval: None,
        request_response_information: None,
        response_information: None,
        server_reference: None,
        reason_string: None,
        receive_maximum: None,
        topic_alias_maximum: None,
        topic_alias: None,
        maximum_qos: None,
        retain_available: None,
        user_properties: Vec::new(),
        maximum_packet_size: None,
        wildcard_subscription_available: None,
        subscription_identifier_available: None,
        shared_subscription_available: None,
    };

    /// Whether no property is set.
    pub fn is_empty(&self) -> bool {
        *self == Properties::EMPTY
    }
}

/// What [`Props`] reads through when it holds nothing.
static NO_PROPERTIES: Properties = Properties::EMPTY;

/// The properties of a packet: a [`Properties`] boxed only when at least one
/// is set. `Properties` is some 400 bytes and most packets (every 3.x packet,
/// most 5.0 PUBLISHes and acknowledgements) carry none, so keeping it inline
/// made every [`Packet`] that large and moving packets through queues costly.
///
/// Reads go through `Deref` (`p.properties.topic_alias` works whether or not
/// anything is stored: an empty `Props` reads as [`Properties::EMPTY`]).
/// Writes through `DerefMut` allocate on first use; to clear a property
/// without allocating, use [`Props::get_mut`]. Equality, `Debug` and `Clone`
/// go by content: an empty box equals no box, and cloning an empty `Props`
/// does not allocate.
#[derive(Default)]
pub struct Props(Option<Box<Properties>>);

impl Props {
    /// No properties, without allocating.
    pub const fn new() -> Props {
        Props(None)
    }

    /// Whether no property is set.
    pub fn is_empty(&self) -> bool {
        self.0.as_deref().is_none_or(Properties::is_empty)
    }

    /// The stored properties, if any were allocated: lets a caller clear or
    /// change properties that are present without allocating when there are
    /// none.
    pub fn get_mut(&mut self) -> Option<&mut Properties> {
        self.0.as_deref_mut()
    }

    /// Frees the box if no property is left set (after clearing some through
    /// [`Props::get_mut`] or `DerefMut`).
    pub fn shrink(&mut self) {
        if self.0.as_deref().is_some_and(Properties::is_empty) {
            self.0 = None;
        }
    }

    /// The properties by value (the default when there are none).
    pub fn into_inner(self) -> Properties {
        self.0.map_or_else(Properties::default, |b| *b)
    }

    /// Takes the properties out, leaving `self` empty.
    pub fn take(&mut self) -> Properties {
        std::mem::take(self).into_inner()
    }
}

impl Deref for Props {
    type Target = Properties;

    fn deref(&self) -> &Properties {
        self.0.as_deref().unwrap_or(&NO_PROPERTIES)
    }
}

impl DerefMut for Props {
    fn deref_mut(&mut self) -> &mut Properties {
        self.0.get_or_insert_with(Default::default)
    }
}

impl From<Properties> for Props {
    fn from(p: Properties) -> Props {
        if p.is_empty() {
            Props(None)
        } else {
            Props(Some(Box::new(p)))
        }
    }
}

impl From<Box<Properties>> for Props {
    fn from(p: Box<Properties>) -> Props {
        if p.is_empty() {
            Props(None)
        } else {
            Props(Some(p))
        }
    }
}

impl From<Props> for Properties {
    fn from(p: Props) -> Properties {
        p.into_inner()
    }
}

impl Clone for Props {
    fn clone(&self) -> Props {
        match &self.0 {
            Some(b) if !b.is_empty() => Props(Some(b.clone())),
            _ => Props(None),
        }
    }
}

impl PartialEq for Props {
    fn eq(&self, other: &Props) -> bool {
        match (&self.0, &other.0) {
            (None, None) => true,
            _ => **self == **other,
        }
    }
}

impl Eq for Props {}

impl PartialEq<Properties> for Props {
    fn eq(&self, other: &Properties) -> bool {
        **self == *other
    }
}

impl fmt::Debug for Props {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

/// The will carried in CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastWill {
    pub topic: ByteString,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// Will properties (5.0): will delay, message expiry, content type, ...
    pub properties: Props,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    pub protocol: ProtocolVersion,
    /// Clean Session (3.x) / Clean Start (5.0).
    pub clean_start: bool,
    pub keep_alive: u16,
    /// May be empty (3.1.1, 5.0); the broker decides what that means.
    pub client_id: ByteString,
    pub will: Option<LastWill>,
    pub username: Option<ByteString>,
    pub password: Option<Bytes>,
    pub properties: Props,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    pub session_present: bool,
    /// 3.x: connect return code (see [`connect_return_code`]); 5.0: reason code.
    pub code: u8,
    pub properties: Props,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    /// May be empty in 5.0 when a topic alias is given.
    pub topic: ByteString,
    /// `Some` exactly when `qos` > 0.
    pub packet_id: Option<PacketId>,
    pub payload: Bytes,
    pub properties: Props,
}

/// PUBACK, PUBREC, PUBREL and PUBCOMP share this shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubResponse {
    pub packet_id: PacketId,
    /// Always `SUCCESS` for 3.x.
    pub reason: ReasonCode,
    pub properties: Props,
}

impl PubResponse {
    pub fn new(packet_id: PacketId) -> Self {
        PubResponse {
            packet_id,
            reason: ReasonCode::SUCCESS,
            properties: Props::new(),
        }
    }
}

/// Retain Handling subscription option (5.0, 3.8.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RetainHandling {
    #[default]
    SendAtSubscribe = 0,
    SendAtSubscribeIfNew = 1,
    DoNotSend = 2,
}

/// Subscription options byte (3.x uses only `qos`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SubscriptionOptions {
    pub qos: QoS,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub retain_handling: RetainHandling,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    pub packet_id: PacketId,
    /// At least one ([MQTT-3.8.3-3]).
    pub filters: Vec<(ByteString, SubscriptionOptions)>,
    pub properties: Props,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    pub packet_id: PacketId,
    /// One per filter; 3.x uses 0, 1, 2 or 0x80.
    pub reasons: Vec<ReasonCode>,
    pub properties: Props,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    pub packet_id: PacketId,
    pub filters: Vec<ByteString>,
    pub properties: Props,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    pub packet_id: PacketId,
    /// One per filter in 5.0; empty in 3.x.
    pub reasons: Vec<ReasonCode>,
    pub properties: Props,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disconnect {
    /// Always `NORMAL_DISCONNECTION` for 3.x.
    pub reason: ReasonCode,
    pub properties: Props,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Auth {
    pub reason: ReasonCode,
    pub properties: Props,
}

/// Every control packet. CONNECT is boxed: it is large and rare. Properties
/// are boxed inside [`Props`], so a `Packet` stays small to move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Connect(Box<Connect>),
    ConnAck(ConnAck),
    Publish(Publish),
    PubAck(PubResponse),
    PubRec(PubResponse),
    PubRel(PubResponse),
    PubComp(PubResponse),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(UnsubAck),
    PingReq,
    PingResp,
    Disconnect(Disconnect),
    Auth(Auth),
}

impl Packet {
    /// Control packet type number (the high nibble of the fixed header).
    pub fn packet_type(&self) -> u8 {
        match self {
            Packet::Connect(_) => 1,
            Packet::ConnAck(_) => 2,
            Packet::Publish(_) => 3,
            Packet::PubAck(_) => 4,
            Packet::PubRec(_) => 5,
            Packet::PubRel(_) => 6,
            Packet::PubComp(_) => 7,
            Packet::Subscribe(_) => 8,
            Packet::SubAck(_) => 9,
            Packet::Unsubscribe(_) => 10,
            Packet::UnsubAck(_) => 11,
            Packet::PingReq => 12,
            Packet::PingResp => 13,
            Packet::Disconnect(_) => 14,
            Packet::Auth(_) => 15,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode_packet;
    use bytes::BytesMut;

    #[test]
    fn packets_are_small() {
        // Packets are moved through the broker's queues, once per delivery.
        assert!(
            std::mem::size_of::<Packet>() <= 96,
            "{}",
            std::mem::size_of::<Packet>()
        );
        assert!(
            std::mem::size_of::<Publish>() <= 96,
            "{}",
            std::mem::size_of::<Publish>()
        );
        assert_eq!(std::mem::size_of::<Props>(), std::mem::size_of::<usize>());
    }

    #[test]
    fn empty_props_do_not_allocate() {
        let p = Props::default();
        assert!(p.0.is_none() && p.is_empty());
        assert_eq!(*p, Properties::default());
        assert_eq!(p.topic_alias, None);
        assert!(Props::from(Properties::default()).0.is_none());
        assert!(p.clone().0.is_none());
        assert!(Props::new().0.is_none());
    }

    #[test]
    fn props_allocate_on_first_write_and_compare_by_content() {
        let mut p = Props::new();
        assert!(p.get_mut().is_none());
        p.topic_alias = Some(3);
        assert!(p.0.is_some() && !p.is_empty());
        let q: Props = Properties {
            topic_alias: Some(3),
            ..Properties::default()
        }
        .into();
        assert_eq!(p, q);
        assert_eq!(p.clone(), q);
        assert_eq!(format!("{p:?}"), format!("{:?}", *q));

        // Emptied through a write: equal to nothing, and cloned as nothing.
        p.get_mut().expect("allocated").topic_alias = None;
        assert!(p.0.is_some() && p.is_empty());
        assert_eq!(p, Props::new());
        assert!(p.clone().0.is_none());
        p.shrink();
        assert!(p.0.is_none());

        let mut r = q.clone();
        assert_eq!(r.take().topic_alias, Some(3));
        assert!(r.is_empty());
        assert_eq!(q.into_inner().topic_alias, Some(3));
    }

    fn decode(bytes: &[u8], v: ProtocolVersion) -> Packet {
        decode_packet(&mut BytesMut::from(bytes), Some(v), usize::MAX)
            .expect("valid")
            .expect("whole packet")
    }

    #[test]
    fn decoding_without_properties_allocates_none() {
        // 3.1.1 PUBLISH QoS 0, topic "a", payload "x".
        let Packet::Publish(p) = decode(&[0x30, 4, 0, 1, b'a', b'x'], ProtocolVersion::V311) else {
            panic!("not a PUBLISH");
        };
        assert!(p.properties.0.is_none());
        // 5.0 PUBLISH with an empty property list.
        let Packet::Publish(p) = decode(&[0x30, 5, 0, 1, b'a', 0, b'x'], ProtocolVersion::V5)
        else {
            panic!("not a PUBLISH");
        };
        assert!(p.properties.0.is_none());
        // 5.0 PUBLISH with a Topic Alias.
        let Packet::Publish(p) = decode(
            &[0x30, 8, 0, 1, b'a', 3, 0x23, 0, 7, b'x'],
            ProtocolVersion::V5,
        ) else {
            panic!("not a PUBLISH");
        };
        assert_eq!(p.properties.topic_alias, Some(7));
        assert!(p.properties.0.is_some());
    }
}
