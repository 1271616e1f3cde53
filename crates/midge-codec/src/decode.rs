//! Decoding bytes from the wire into [`Packet`]s, with every validation rule
//! the specification puts on the wire format of 3.1, 3.1.1 and 5.0.
//!
//! Rules that need session state (topic alias mapping, receive maximum,
//! packet identifiers in flight, who may send which packet) are the core's.
//! Decoding never copies payloads or strings: they are slices of the packet's
//! `Bytes`. It never panics and never allocates in proportion to a length
//! field before the bytes it announces have arrived.

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use thiserror::Error;

use crate::packet::*;
use crate::properties::{self as prop, PropertyContext};
use crate::topic::{validate_topic_filter, validate_topic_name, TopicError};

/// Why bytes could not be decoded. Each message cites the clause of the
/// specification (5.0 numbering, with 3.1.1's where it differs).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("[MQTT-1.5.5-1] variable byte integer longer than four bytes or not minimally encoded (3.1.1: section 2.2.3)")]
    MalformedVariableByteInteger,
    #[error("[MQTT-1.5.4-1] (3.1.1: [MQTT-1.5.3-1]) string is not well-formed UTF-8")]
    InvalidUtf8,
    #[error("[MQTT-1.5.4-2] (3.1.1: [MQTT-1.5.3-2]) string contains U+0000")]
    NullCharacter,
    #[error("packet of {size} bytes exceeds the maximum packet size of {max} bytes")]
    PacketTooLarge { size: usize, max: usize },
    #[error("malformed packet: reserved control packet type {0} (section 2.1.2)")]
    ReservedPacketType(u8),
    #[error("[MQTT-2.1.3-1] (3.1.1: [MQTT-2.2.2-1]) invalid fixed header flags {flags:#06b} for packet type {packet_type}")]
    InvalidHeaderFlags { packet_type: u8, flags: u8 },
    #[error("[MQTT-3.1.0-1] first packet on a connection must be CONNECT, got packet type {0}")]
    ExpectedConnect(u8),
    #[error("malformed packet: a field runs past the end of the packet")]
    UnexpectedEnd,
    #[error("malformed packet: {0} bytes left over at the end of the packet")]
    TrailingBytes(usize),
    #[error("[MQTT-3.1.2-1] protocol name is neither MQTT nor MQIsdp")]
    InvalidProtocolName,
    #[error("[MQTT-3.1.2-2] unsupported protocol level {level}")]
    UnsupportedProtocolVersion { level: u8 },
    #[error("[MQTT-3.1.2-3] CONNECT reserved flag is not zero")]
    ConnectReservedFlag,
    #[error("[MQTT-3.1.2-11] will QoS or will retain set without the will flag")]
    WillFlagsWithoutWill,
    #[error("[MQTT-3.1.2-12] (3.1.1: [MQTT-3.1.2-14]) will QoS is 3")]
    InvalidWillQoS,
    #[error("[MQTT-3.1.2-22] password flag set without user name flag")]
    PasswordWithoutUsername,
    #[error("[MQTT-3.2.2-1] CONNACK acknowledge flags 7-1 are not zero")]
    ConnAckReservedFlags,
    #[error(
        "[MQTT-3.2.2-6] (3.1.1: [MQTT-3.2.2-4]) session present set with a non-zero return code"
    )]
    SessionPresentWithError,
    #[error("malformed packet: invalid CONNACK return code {0} (3.1.1 table 3.1)")]
    InvalidConnectReturnCode(u8),
    #[error("[MQTT-3.3.1-4] PUBLISH QoS is 3")]
    InvalidPublishQoS,
    #[error("[MQTT-3.3.1-2] DUP flag set on a QoS 0 PUBLISH")]
    DupWithQoS0,
    #[error("{0}")]
    InvalidTopicName(TopicError),
    #[error("{0}")]
    InvalidTopicFilter(TopicError),
    #[error("[MQTT-3.3.2-14] response topic is not a valid topic name: {0}")]
    InvalidResponseTopic(TopicError),
    #[error("[MQTT-2.2.1-3] (3.1.1: [MQTT-2.3.1-1]) packet identifier is zero")]
    ZeroPacketId,
    #[error("[MQTT-3.8.3-3] SUBSCRIBE contains no topic filter")]
    EmptySubscribe,
    #[error("[MQTT-3.10.3-2] UNSUBSCRIBE contains no topic filter")]
    EmptyUnsubscribe,
    #[error("malformed packet: packet type {0} carries no reason code")]
    EmptyAckPayload(u8),
    #[error("[MQTT-3.8.3-5] (3.1.1: [MQTT-3-8.3-4]) reserved bits set in subscription options {0:#010b}")]
    ReservedSubscriptionOptions(u8),
    #[error("malformed packet: subscription QoS is 3 (3.1.1: [MQTT-3-8.3-4])")]
    InvalidSubscriptionQoS,
    #[error("protocol error: subscription retain handling is 3 (section 3.8.3.1)")]
    InvalidRetainHandling,
    #[error("[MQTT-3.8.3-4] no local set on a shared subscription")]
    NoLocalOnSharedSubscription,
    #[error("protocol error: reason code {code:#04x} is not valid in packet type {packet_type}")]
    InvalidReasonCode { packet_type: u8, code: u8 },
    #[error("malformed packet: unknown property identifier {0:#x} (section 2.2.2.2)")]
    UnknownProperty(u32),
    #[error("[MQTT-2.2.2-2] malformed packet: property {id:#04x} is not allowed in {context}")]
    PropertyNotAllowed { id: u8, context: &'static str },
    #[error("protocol error: property {0:#04x} appears more than once")]
    DuplicateProperty(u8),
    #[error("protocol error: property {id:#04x} has invalid value {value}")]
    InvalidPropertyValue { id: u8, value: u32 },
    #[error(
        "protocol error: authentication data without authentication method (section 3.1.2.11.10)"
    )]
    AuthDataWithoutMethod,
}

impl DecodeError {
    /// The MQTT 5.0 reason code to put in the DISCONNECT (or CONNACK) that
    /// answers this error.
    pub fn reason_code(&self) -> ReasonCode {
        use DecodeError::*;
        match self {
            PacketTooLarge { .. } => ReasonCode::PACKET_TOO_LARGE,
            UnsupportedProtocolVersion { .. } => ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
            InvalidTopicName(_) => ReasonCode::TOPIC_NAME_INVALID,
            InvalidTopicFilter(_) => ReasonCode::TOPIC_FILTER_INVALID,
            InvalidProtocolName
            | ExpectedConnect(_)
            | InvalidRetainHandling
            | NoLocalOnSharedSubscription
            | InvalidReasonCode { .. }
            | DuplicateProperty(_)
            | InvalidPropertyValue { .. }
            | InvalidResponseTopic(_)
            | AuthDataWithoutMethod
            | EmptySubscribe
            | EmptyUnsubscribe
            | ZeroPacketId => ReasonCode::PROTOCOL_ERROR,
            MalformedVariableByteInteger
            | InvalidUtf8
            | NullCharacter
            | ReservedPacketType(_)
            | InvalidHeaderFlags { .. }
            | UnexpectedEnd
            | TrailingBytes(_)
            | ConnectReservedFlag
            | WillFlagsWithoutWill
            | InvalidWillQoS
            | PasswordWithoutUsername
            | ConnAckReservedFlags
            | SessionPresentWithError
            | InvalidConnectReturnCode(_)
            | InvalidPublishQoS
            | DupWithQoS0
            | EmptyAckPayload(_)
            | ReservedSubscriptionOptions(_)
            | InvalidSubscriptionQoS
            // 5.0 §2.2.2.2: a property not valid for the packet type makes
            // it a Malformed Packet.
            | PropertyNotAllowed { .. }
            | UnknownProperty(_) => ReasonCode::MALFORMED_PACKET,
        }
    }
}

type Result<T> = std::result::Result<T, DecodeError>;

/// Decodes one packet from the front of `buf`.
///
/// `version` is `None` until the connection's CONNECT has been decoded: then
/// only CONNECT is accepted, and it carries its own protocol level. Returns
/// `Ok(None)`, consuming nothing, while `buf` holds less than a whole packet.
/// A packet whose total size exceeds `max_packet_size` is refused as soon as
/// its fixed header is known.
pub fn decode_packet(
    buf: &mut BytesMut,
    version: Option<ProtocolVersion>,
    max_packet_size: usize,
) -> Result<Option<Packet>> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let packet_type = first >> 4;
    let flags = first & 0x0F;
    // Checked before waiting for the body, so garbage is refused at once.
    check_fixed_header(packet_type, flags, version)?;

    let mut remaining: usize = 0;
    let mut header_len = 0;
    for i in 0..4 {
        let Some(&b) = buf.get(1 + i) else {
            return Ok(None);
        };
        remaining |= usize::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            if b == 0 && i > 0 {
                return Err(DecodeError::MalformedVariableByteInteger);
            }
            header_len = 2 + i;
            break;
        }
    }
    if header_len == 0 {
        return Err(DecodeError::MalformedVariableByteInteger);
    }
    let size = header_len + remaining;
    if size > max_packet_size {
        return Err(DecodeError::PacketTooLarge {
            size,
            max: max_packet_size,
        });
    }
    if buf.len() < size {
        return Ok(None);
    }
    let packet = buf.split_to(size).freeze();
    let mut r = Reader::new(packet.slice(header_len..));
    // CONNECT sets its own level; otherwise the header check ensured `Some`.
    let v = version.unwrap_or(ProtocolVersion::V5);
    let decoded = match packet_type {
        1 => Packet::Connect(Box::new(decode_connect(&mut r)?)),
        2 => Packet::ConnAck(decode_connack(&mut r, v)?),
        3 => Packet::Publish(decode_publish(&mut r, v, flags)?),
        4 => Packet::PubAck(decode_pub_response(&mut r, v, packet_type)?),
        5 => Packet::PubRec(decode_pub_response(&mut r, v, packet_type)?),
        6 => Packet::PubRel(decode_pub_response(&mut r, v, packet_type)?),
        7 => Packet::PubComp(decode_pub_response(&mut r, v, packet_type)?),
        8 => Packet::Subscribe(decode_subscribe(&mut r, v)?),
        9 => Packet::SubAck(decode_suback(&mut r, v)?),
        10 => Packet::Unsubscribe(decode_unsubscribe(&mut r, v)?),
        11 => Packet::UnsubAck(decode_unsuback(&mut r, v)?),
        12 => Packet::PingReq,
        13 => Packet::PingResp,
        14 => Packet::Disconnect(decode_disconnect(&mut r, v)?),
        15 => Packet::Auth(decode_auth(&mut r)?),
        other => return Err(DecodeError::ReservedPacketType(other)),
    };
    r.finish()?;
    Ok(Some(decoded))
}

fn check_fixed_header(packet_type: u8, flags: u8, version: Option<ProtocolVersion>) -> Result<()> {
    if packet_type == 0 {
        return Err(DecodeError::ReservedPacketType(0));
    }
    let Some(version) = version else {
        if packet_type != 1 {
            return Err(DecodeError::ExpectedConnect(packet_type));
        }
        return check_flags(packet_type, flags, 0);
    };
    match packet_type {
        15 if !version.is_v5() => Err(DecodeError::ReservedPacketType(15)),
        3 => {
            let qos = (flags >> 1) & 0b11;
            if qos == 3 {
                return Err(DecodeError::InvalidPublishQoS);
            }
            if qos == 0 && flags & 0b1000 != 0 {
                return Err(DecodeError::DupWithQoS0);
            }
            Ok(())
        }
        // 3.1 sets DUP on a resent PUBREL/SUBSCRIBE/UNSUBSCRIBE and says the
        // other packets' flags are unused; only the QoS 1 marking is required.
        6 | 8 | 10 if version == ProtocolVersion::V31 => {
            check_flags(packet_type, flags & 0b0111, 0b0010)
        }
        _ if version == ProtocolVersion::V31 => Ok(()),
        6 | 8 | 10 => check_flags(packet_type, flags, 0b0010),
        _ => check_flags(packet_type, flags, 0),
    }
}

fn check_flags(packet_type: u8, flags: u8, expected: u8) -> Result<()> {
    if flags == expected {
        Ok(())
    } else {
        Err(DecodeError::InvalidHeaderFlags { packet_type, flags })
    }
}

/// A cursor over one packet's bytes. Every read is bounds-checked.
struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    fn new(buf: Bytes) -> Self {
        Reader { buf, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn finish(&self) -> Result<()> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let end = self.pos.checked_add(N).ok_or(DecodeError::UnexpectedEnd)?;
        let bytes = self
            .buf
            .get(self.pos..end)
            .ok_or(DecodeError::UnexpectedEnd)?;
        let mut out = [0; N];
        out.copy_from_slice(bytes);
        self.pos = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn packet_id(&mut self) -> Result<PacketId> {
        PacketId::new(self.u16()?).ok_or(DecodeError::ZeroPacketId)
    }

    fn variable_int(&mut self) -> Result<u32> {
        let mut value: u32 = 0;
        for i in 0..4 {
            let b = self.u8()?;
            value |= u32::from(b & 0x7F) << (7 * i);
            if b & 0x80 == 0 {
                if b == 0 && i > 0 {
                    return Err(DecodeError::MalformedVariableByteInteger);
                }
                return Ok(value);
            }
        }
        Err(DecodeError::MalformedVariableByteInteger)
    }

    fn take(&mut self, n: usize) -> Result<Bytes> {
        if n > self.remaining() {
            return Err(DecodeError::UnexpectedEnd);
        }
        let out = self.buf.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(out)
    }

    fn rest(&mut self) -> Bytes {
        let out = self.buf.slice(self.pos.min(self.buf.len())..);
        self.pos = self.buf.len();
        out
    }

    fn binary(&mut self) -> Result<Bytes> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    fn string(&mut self) -> Result<ByteString> {
        let raw = self.binary()?;
        if raw.contains(&0) {
            return Err(DecodeError::NullCharacter);
        }
        ByteString::try_from(raw).map_err(|_| DecodeError::InvalidUtf8)
    }
}

fn decode_connect(r: &mut Reader) -> Result<Connect> {
    let name = r.binary()?;
    let level = r.u8()?;
    let protocol = match (&name[..], level) {
        (b"MQTT", 4) => ProtocolVersion::V311,
        (b"MQTT", 5) => ProtocolVersion::V5,
        (b"MQIsdp", 3) => ProtocolVersion::V31,
        (b"MQTT", _) | (b"MQIsdp", _) => {
            return Err(DecodeError::UnsupportedProtocolVersion { level })
        }
        _ => return Err(DecodeError::InvalidProtocolName),
    };
    let flags = r.u8()?;
    if flags & 0x01 != 0 {
        return Err(DecodeError::ConnectReservedFlag);
    }
    let clean_start = flags & 0x02 != 0;
    let will_flag = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 0b11;
    let will_retain = flags & 0x20 != 0;
    let has_password = flags & 0x40 != 0;
    let has_username = flags & 0x80 != 0;
    if !will_flag && (will_qos != 0 || will_retain) {
        return Err(DecodeError::WillFlagsWithoutWill);
    }
    let will_qos = QoS::from_u8(will_qos).ok_or(DecodeError::InvalidWillQoS)?;
    if has_password && !has_username && !protocol.is_v5() {
        return Err(DecodeError::PasswordWithoutUsername);
    }
    let keep_alive = r.u16()?;
    let properties = decode_properties_if(r, protocol, PropertyContext::Connect)?;
    let client_id = r.string()?;
    let will = if will_flag {
        let properties = decode_properties_if(r, protocol, PropertyContext::Will)?;
        let topic = r.string()?;
        validate_topic_name(&topic).map_err(DecodeError::InvalidTopicName)?;
        let payload = r.binary()?;
        Some(LastWill {
            topic,
            payload,
            qos: will_qos,
            retain: will_retain,
            properties,
        })
    } else {
        None
    };
    let username = if has_username {
        Some(r.string()?)
    } else {
        None
    };
    let password = if has_password {
        Some(r.binary()?)
    } else {
        None
    };
    Ok(Connect {
        protocol,
        clean_start,
        keep_alive,
        client_id,
        will,
        username,
        password,
        properties,
    })
}

fn decode_connack(r: &mut Reader, v: ProtocolVersion) -> Result<ConnAck> {
    let flags = r.u8()?;
    if flags & 0xFE != 0 {
        return Err(DecodeError::ConnAckReservedFlags);
    }
    let session_present = flags & 0x01 != 0;
    let code = r.u8()?;
    if v.is_v5() {
        check_reason(2, code)?;
    } else if code > 5 {
        return Err(DecodeError::InvalidConnectReturnCode(code));
    }
    if session_present && code != 0 {
        return Err(DecodeError::SessionPresentWithError);
    }
    let properties = decode_properties_if(r, v, PropertyContext::ConnAck)?;
    Ok(ConnAck {
        session_present,
        code,
        properties,
    })
}

fn decode_publish(r: &mut Reader, v: ProtocolVersion, flags: u8) -> Result<Publish> {
    // The fixed header check already refused QoS 3 and DUP on QoS 0.
    let qos = QoS::from_u8((flags >> 1) & 0b11).ok_or(DecodeError::InvalidPublishQoS)?;
    let topic = r.string()?;
    let packet_id = if qos == QoS::AtMostOnce {
        None
    } else {
        Some(r.packet_id()?)
    };
    let properties = decode_properties_if(r, v, PropertyContext::Publish)?;
    // 5.0 lets an empty topic stand for the one the topic alias maps to.
    if !(topic.is_empty() && properties.topic_alias.is_some()) {
        validate_topic_name(&topic).map_err(DecodeError::InvalidTopicName)?;
    }
    Ok(Publish {
        dup: flags & 0b1000 != 0,
        qos,
        retain: flags & 0b0001 != 0,
        topic,
        packet_id,
        payload: r.rest(),
        properties,
    })
}

fn decode_pub_response(r: &mut Reader, v: ProtocolVersion, packet_type: u8) -> Result<PubResponse> {
    let packet_id = r.packet_id()?;
    let mut out = PubResponse::new(packet_id);
    // 5.0 omits the reason code when it is Success with no properties, and
    // the property length when there are no properties.
    if v.is_v5() && r.remaining() > 0 {
        out.reason = ReasonCode(r.u8()?);
        check_reason(packet_type, out.reason.0)?;
        if r.remaining() > 0 {
            out.properties = decode_properties(r, PropertyContext::PubResponse)?;
        }
    }
    Ok(out)
}

fn decode_subscribe(r: &mut Reader, v: ProtocolVersion) -> Result<Subscribe> {
    let packet_id = r.packet_id()?;
    let properties = decode_properties_if(r, v, PropertyContext::Subscribe)?;
    let mut filters = Vec::new();
    while r.remaining() > 0 {
        let filter = r.string()?;
        validate_topic_filter(&filter).map_err(DecodeError::InvalidTopicFilter)?;
        let options = r.u8()?;
        let reserved = if v.is_v5() { 0xC0 } else { 0xFC };
        if options & reserved != 0 {
            return Err(DecodeError::ReservedSubscriptionOptions(options));
        }
        let qos = QoS::from_u8(options & 0b11).ok_or(DecodeError::InvalidSubscriptionQoS)?;
        let retain_handling = match (options >> 4) & 0b11 {
            0 => RetainHandling::SendAtSubscribe,
            1 => RetainHandling::SendAtSubscribeIfNew,
            2 => RetainHandling::DoNotSend,
            _ => return Err(DecodeError::InvalidRetainHandling),
        };
        let no_local = options & 0b0100 != 0;
        if no_local && crate::topic::parse_shared(&filter).is_some() {
            return Err(DecodeError::NoLocalOnSharedSubscription);
        }
        filters.push((
            filter,
            SubscriptionOptions {
                qos,
                no_local,
                retain_as_published: options & 0b1000 != 0,
                retain_handling,
            },
        ));
    }
    if filters.is_empty() {
        return Err(DecodeError::EmptySubscribe);
    }
    Ok(Subscribe {
        packet_id,
        filters,
        properties,
    })
}

fn decode_suback(r: &mut Reader, v: ProtocolVersion) -> Result<SubAck> {
    let packet_id = r.packet_id()?;
    let properties = decode_properties_if(r, v, PropertyContext::SubAck)?;
    let reasons = decode_reason_list(r, v, 9)?;
    Ok(SubAck {
        packet_id,
        reasons,
        properties,
    })
}

fn decode_unsubscribe(r: &mut Reader, v: ProtocolVersion) -> Result<Unsubscribe> {
    let packet_id = r.packet_id()?;
    let properties = decode_properties_if(r, v, PropertyContext::Unsubscribe)?;
    let mut filters = Vec::new();
    while r.remaining() > 0 {
        let filter = r.string()?;
        validate_topic_filter(&filter).map_err(DecodeError::InvalidTopicFilter)?;
        filters.push(filter);
    }
    if filters.is_empty() {
        return Err(DecodeError::EmptyUnsubscribe);
    }
    Ok(Unsubscribe {
        packet_id,
        filters,
        properties,
    })
}

fn decode_unsuback(r: &mut Reader, v: ProtocolVersion) -> Result<UnsubAck> {
    let packet_id = r.packet_id()?;
    if !v.is_v5() {
        return Ok(UnsubAck {
            packet_id,
            reasons: Vec::new(),
            properties: Props::new(),
        });
    }
    let properties = decode_properties(r, PropertyContext::UnsubAck)?;
    let reasons = decode_reason_list(r, v, 11)?;
    Ok(UnsubAck {
        packet_id,
        reasons,
        properties,
    })
}

fn decode_reason_list(
    r: &mut Reader,
    v: ProtocolVersion,
    packet_type: u8,
) -> Result<Vec<ReasonCode>> {
    let mut reasons = Vec::with_capacity(r.remaining());
    while r.remaining() > 0 {
        let code = r.u8()?;
        if v.is_v5() {
            check_reason(packet_type, code)?;
        } else if !matches!(code, 0 | 1 | 2 | 0x80) {
            return Err(DecodeError::InvalidReasonCode { packet_type, code });
        }
        reasons.push(ReasonCode(code));
    }
    if reasons.is_empty() {
        return Err(DecodeError::EmptyAckPayload(packet_type));
    }
    Ok(reasons)
}

fn decode_disconnect(r: &mut Reader, v: ProtocolVersion) -> Result<Disconnect> {
    let mut out = Disconnect::default();
    if v.is_v5() && r.remaining() > 0 {
        out.reason = ReasonCode(r.u8()?);
        check_reason(14, out.reason.0)?;
        if r.remaining() > 0 {
            out.properties = decode_properties(r, PropertyContext::Disconnect)?;
        }
    }
    Ok(out)
}

fn decode_auth(r: &mut Reader) -> Result<Auth> {
    let mut out = Auth::default();
    if r.remaining() > 0 {
        out.reason = ReasonCode(r.u8()?);
        check_reason(15, out.reason.0)?;
        if r.remaining() > 0 {
            out.properties = decode_properties(r, PropertyContext::Auth)?;
        }
    }
    Ok(out)
}

/// Whether `code` is one of the 5.0 reason codes listed for `packet_type`.
pub(crate) fn reason_allowed(packet_type: u8, code: u8) -> bool {
    match packet_type {
        2 => matches!(
            code,
            0x00 | 0x80
                | 0x81
                | 0x82
                | 0x83
                | 0x84
                | 0x85
                | 0x86
                | 0x87
                | 0x88
                | 0x89
                | 0x8A
                | 0x8C
                | 0x90
                | 0x95
                | 0x97
                | 0x99
                | 0x9A
                | 0x9B
                | 0x9C
                | 0x9D
                | 0x9F
        ),
        4 | 5 => matches!(
            code,
            0x00 | 0x10 | 0x80 | 0x83 | 0x87 | 0x90 | 0x91 | 0x97 | 0x99
        ),
        6 | 7 => matches!(code, 0x00 | 0x92),
        9 => matches!(
            code,
            0x00 | 0x01 | 0x02 | 0x80 | 0x83 | 0x87 | 0x8F | 0x91 | 0x97 | 0x9E | 0xA1 | 0xA2
        ),
        11 => matches!(code, 0x00 | 0x11 | 0x80 | 0x83 | 0x87 | 0x8F | 0x91),
        14 => matches!(
            code,
            0x00 | 0x04
                | 0x80
                | 0x81
                | 0x82
                | 0x83
                | 0x87
                | 0x89
                | 0x8B
                | 0x8D
                | 0x8E
                | 0x8F
                | 0x90
                | 0x93
                | 0x94
                | 0x95
                | 0x96
                | 0x97
                | 0x98
                | 0x99
                | 0x9A
                | 0x9B
                | 0x9C
                | 0x9D
                | 0x9E
                | 0x9F
                | 0xA0
                | 0xA1
                | 0xA2
        ),
        15 => matches!(code, 0x00 | 0x18 | 0x19),
        _ => false,
    }
}

fn check_reason(packet_type: u8, code: u8) -> Result<()> {
    if reason_allowed(packet_type, code) {
        Ok(())
    } else {
        Err(DecodeError::InvalidReasonCode { packet_type, code })
    }
}

fn decode_properties_if(r: &mut Reader, v: ProtocolVersion, ctx: PropertyContext) -> Result<Props> {
    if v.is_v5() {
        decode_properties(r, ctx)
    } else {
        Ok(Props::new())
    }
}

fn flag_byte(id: u8, value: u8) -> Result<u8> {
    if value <= 1 {
        Ok(value)
    } else {
        Err(DecodeError::InvalidPropertyValue {
            id,
            value: value.into(),
        })
    }
}

/// A property list with its length prefix. An empty list allocates nothing.
fn decode_properties(r: &mut Reader, ctx: PropertyContext) -> Result<Props> {
    let len = r.variable_int()?;
    if len == 0 {
        return Ok(Props::new());
    }
    let mut r = Reader::new(r.take(usize::try_from(len).map_err(|_| DecodeError::UnexpectedEnd)?)?);
    let mut p = Box::<Properties>::default();
    // Identifiers are all below 64: one bit each records "already seen".
    let mut seen: u64 = 0;
    while r.remaining() > 0 {
        let wide_id = r.variable_int()?;
        let id = u8::try_from(wide_id).map_err(|_| DecodeError::UnknownProperty(wide_id))?;
        match ctx.allows(id) {
            None => return Err(DecodeError::UnknownProperty(wide_id)),
            Some(false) => {
                return Err(DecodeError::PropertyNotAllowed {
                    id,
                    context: ctx.name(),
                })
            }
            Some(true) => {}
        }
        let repeatable = id == prop::USER_PROPERTY
            || (id == prop::SUBSCRIPTION_IDENTIFIER && ctx == PropertyContext::Publish);
        if !repeatable {
            let bit = 1u64 << (id & 63);
            if seen & bit != 0 {
                return Err(DecodeError::DuplicateProperty(id));
            }
            seen |= bit;
        }
        match id {
            prop::PAYLOAD_FORMAT_INDICATOR => {
                p.payload_format_indicator = Some(flag_byte(id, r.u8()?)?)
            }
            prop::MESSAGE_EXPIRY_INTERVAL => p.message_expiry_interval = Some(r.u32()?),
            prop::CONTENT_TYPE => p.content_type = Some(r.string()?),
            prop::RESPONSE_TOPIC => {
                let topic = r.string()?;
                validate_topic_name(&topic).map_err(DecodeError::InvalidResponseTopic)?;
                p.response_topic = Some(topic);
            }
            prop::CORRELATION_DATA => p.correlation_data = Some(r.binary()?),
            prop::SUBSCRIPTION_IDENTIFIER => {
                let value = r.variable_int()?;
                if value == 0 {
                    return Err(DecodeError::InvalidPropertyValue { id, value });
                }
                p.subscription_identifiers.push(value);
            }
            prop::SESSION_EXPIRY_INTERVAL => p.session_expiry_interval = Some(r.u32()?),
            prop::ASSIGNED_CLIENT_IDENTIFIER => p.assigned_client_identifier = Some(r.string()?),
            prop::SERVER_KEEP_ALIVE => p.server_keep_alive = Some(r.u16()?),
            prop::AUTHENTICATION_METHOD => p.authentication_method = Some(r.string()?),
            prop::AUTHENTICATION_DATA => p.authentication_data = Some(r.binary()?),
            prop::REQUEST_PROBLEM_INFORMATION => {
                p.request_problem_information = Some(flag_byte(id, r.u8()?)?)
            }
            prop::WILL_DELAY_INTERVAL => p.will_delay_interval = Some(r.u32()?),
            prop::REQUEST_RESPONSE_INFORMATION => {
                p.request_response_information = Some(flag_byte(id, r.u8()?)?)
            }
            prop::RESPONSE_INFORMATION => p.response_information = Some(r.string()?),
            prop::SERVER_REFERENCE => p.server_reference = Some(r.string()?),
            prop::REASON_STRING => p.reason_string = Some(r.string()?),
            prop::RECEIVE_MAXIMUM => {
                let value = r.u16()?;
                if value == 0 {
                    return Err(DecodeError::InvalidPropertyValue { id, value: 0 });
                }
                p.receive_maximum = Some(value);
            }
            prop::TOPIC_ALIAS_MAXIMUM => p.topic_alias_maximum = Some(r.u16()?),
            // Alias 0 is the broker's to refuse, with DISCONNECT 0x94.
            prop::TOPIC_ALIAS => p.topic_alias = Some(r.u16()?),
            prop::MAXIMUM_QOS => p.maximum_qos = Some(flag_byte(id, r.u8()?)?),
            prop::RETAIN_AVAILABLE => p.retain_available = Some(flag_byte(id, r.u8()?)?),
            prop::USER_PROPERTY => {
                let key = r.string()?;
                let value = r.string()?;
                p.user_properties.push((key, value));
            }
            prop::MAXIMUM_PACKET_SIZE => {
                let value = r.u32()?;
                if value == 0 {
                    return Err(DecodeError::InvalidPropertyValue { id, value });
                }
                p.maximum_packet_size = Some(value);
            }
            prop::WILDCARD_SUBSCRIPTION_AVAILABLE => {
                p.wildcard_subscription_available = Some(flag_byte(id, r.u8()?)?)
            }
            prop::SUBSCRIPTION_IDENTIFIER_AVAILABLE => {
                p.subscription_identifier_available = Some(flag_byte(id, r.u8()?)?)
            }
            prop::SHARED_SUBSCRIPTION_AVAILABLE => {
                p.shared_subscription_available = Some(flag_byte(id, r.u8()?)?)
            }
            _ => return Err(DecodeError::UnknownProperty(wide_id)),
        }
    }
    if p.authentication_data.is_some() && p.authentication_method.is_none() {
        return Err(DecodeError::AuthDataWithoutMethod);
    }
    Ok(p.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::TopicError;
    use ProtocolVersion::*;

    const MAX: usize = 1 << 20;

    fn dec(bytes: &[u8], v: Option<ProtocolVersion>) -> Result<Option<Packet>> {
        decode_packet(&mut BytesMut::from(bytes), v, MAX)
    }

    /// Fixed header byte, then the remaining length (small bodies only).
    fn frame(first: u8, body: &[u8]) -> Vec<u8> {
        assert!(body.len() < 128);
        let mut out = vec![first, body.len() as u8];
        out.extend_from_slice(body);
        out
    }

    fn s(text: &str) -> Vec<u8> {
        let mut out = (text.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(text.as_bytes());
        out
    }

    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    /// CONNECT with the given name, level and flags, client id "c", no will.
    fn connect(name: &str, level: u8, flags: u8, rest: &[u8]) -> Vec<u8> {
        let props: &[u8] = if level == 5 { &[0] } else { &[] };
        frame(
            0x10,
            &cat(&[&s(name), &[level, flags, 0, 60], props, &s("c"), rest]),
        )
    }

    fn publish5(props: &[u8]) -> Vec<u8> {
        let mut body = cat(&[&s("t"), &[props.len() as u8], props]);
        body.extend_from_slice(b"x");
        frame(0x30, &body)
    }

    /// Name, version, bytes, expected error, clause the message must cite.
    type Case = (
        &'static str,
        Option<ProtocolVersion>,
        Vec<u8>,
        DecodeError,
        &'static str,
    );

    #[test]
    fn refused_with_the_expected_error() {
        use DecodeError as E;
        let cases: Vec<Case> = vec![
            (
                "first packet not CONNECT",
                None,
                frame(0x30, &cat(&[&s("a")])),
                E::ExpectedConnect(3),
                "[MQTT-3.1.0-1]",
            ),
            (
                "PINGREQ before CONNECT",
                None,
                vec![0xC0, 0],
                E::ExpectedConnect(12),
                "[MQTT-3.1.0-1]",
            ),
            (
                "bad protocol name",
                None,
                connect("MQTX", 4, 2, &[]),
                E::InvalidProtocolName,
                "[MQTT-3.1.2-1]",
            ),
            (
                "MQTT level 3",
                None,
                connect("MQTT", 3, 2, &[]),
                E::UnsupportedProtocolVersion { level: 3 },
                "[MQTT-3.1.2-2]",
            ),
            (
                "MQIsdp level 4",
                None,
                connect("MQIsdp", 4, 2, &[]),
                E::UnsupportedProtocolVersion { level: 4 },
                "[MQTT-3.1.2-2]",
            ),
            (
                "MQTT level 6",
                None,
                connect("MQTT", 6, 2, &[]),
                E::UnsupportedProtocolVersion { level: 6 },
                "[MQTT-3.1.2-2]",
            ),
            (
                "CONNECT reserved flag",
                None,
                connect("MQTT", 4, 3, &[]),
                E::ConnectReservedFlag,
                "[MQTT-3.1.2-3]",
            ),
            (
                "will QoS without will",
                None,
                connect("MQTT", 4, 0x08, &[]),
                E::WillFlagsWithoutWill,
                "[MQTT-3.1.2-11]",
            ),
            (
                "will retain without will",
                None,
                connect("MQTT", 5, 0x20, &[]),
                E::WillFlagsWithoutWill,
                "[MQTT-3.1.2-11]",
            ),
            (
                "will QoS 3",
                None,
                connect("MQTT", 4, 0x1C, &cat(&[&s("w"), &s("p")])),
                E::InvalidWillQoS,
                "[MQTT-3.1.2-14]",
            ),
            (
                "password without user name 3.1.1",
                None,
                connect("MQTT", 4, 0x40, &s("pw")),
                E::PasswordWithoutUsername,
                "[MQTT-3.1.2-22]",
            ),
            (
                "password without user name 3.1",
                None,
                connect("MQIsdp", 3, 0x40, &s("pw")),
                E::PasswordWithoutUsername,
                "[MQTT-3.1.2-22]",
            ),
            (
                "will topic with wildcard",
                None,
                connect("MQTT", 4, 0x04, &cat(&[&s("w/#"), &s("p")])),
                E::InvalidTopicName(TopicError::WildcardInName),
                "[MQTT-3.3.2-2]",
            ),
            (
                "CONNECT header flags",
                None,
                vec![0x11, 0],
                E::InvalidHeaderFlags {
                    packet_type: 1,
                    flags: 1,
                },
                "[MQTT-2.2.2-1]",
            ),
            (
                "PUBREL flags 0",
                Some(V311),
                frame(0x60, &[0, 1]),
                E::InvalidHeaderFlags {
                    packet_type: 6,
                    flags: 0,
                },
                "[MQTT-2.2.2-1]",
            ),
            (
                "SUBSCRIBE flags 0",
                Some(V5),
                frame(0x80, &[0, 1]),
                E::InvalidHeaderFlags {
                    packet_type: 8,
                    flags: 0,
                },
                "[MQTT-2.1.3-1]",
            ),
            (
                "UNSUBSCRIBE flags 0",
                Some(V311),
                frame(0xA0, &[0, 1]),
                E::InvalidHeaderFlags {
                    packet_type: 10,
                    flags: 0,
                },
                "[MQTT-2.2.2-1]",
            ),
            (
                "PUBACK flags 1",
                Some(V311),
                frame(0x41, &[0, 1]),
                E::InvalidHeaderFlags {
                    packet_type: 4,
                    flags: 1,
                },
                "[MQTT-2.2.2-1]",
            ),
            (
                "PINGREQ flags",
                Some(V5),
                vec![0xC8, 0],
                E::InvalidHeaderFlags {
                    packet_type: 12,
                    flags: 8,
                },
                "[MQTT-2.1.3-1]",
            ),
            (
                "packet type 0",
                Some(V311),
                vec![0x00, 0],
                E::ReservedPacketType(0),
                "reserved control packet type",
            ),
            (
                "AUTH in 3.1.1",
                Some(V311),
                vec![0xF0, 0],
                E::ReservedPacketType(15),
                "reserved control packet type",
            ),
            (
                "PUBLISH QoS 3",
                Some(V311),
                frame(0x36, &cat(&[&s("a"), &[0, 1]])),
                E::InvalidPublishQoS,
                "[MQTT-3.3.1-4]",
            ),
            (
                "DUP on QoS 0",
                Some(V5),
                frame(0x38, &cat(&[&s("a"), &[0]])),
                E::DupWithQoS0,
                "[MQTT-3.3.1-2]",
            ),
            (
                "topic with +",
                Some(V311),
                frame(0x30, &s("a/+")),
                E::InvalidTopicName(TopicError::WildcardInName),
                "[MQTT-3.3.2-2]",
            ),
            (
                "topic with #",
                Some(V5),
                frame(0x30, &cat(&[&s("#"), &[0]])),
                E::InvalidTopicName(TopicError::WildcardInName),
                "[MQTT-3.3.2-2]",
            ),
            (
                "empty topic 3.1.1",
                Some(V311),
                frame(0x30, &s("")),
                E::InvalidTopicName(TopicError::Empty),
                "[MQTT-4.7.3-1]",
            ),
            (
                "empty topic 5.0 without alias",
                Some(V5),
                frame(0x30, &cat(&[&s(""), &[0]])),
                E::InvalidTopicName(TopicError::Empty),
                "[MQTT-4.7.3-1]",
            ),
            (
                "invalid UTF-8",
                Some(V311),
                frame(0x30, &[0, 2, 0xC3, 0x28]),
                E::InvalidUtf8,
                "[MQTT-1.5.4-1]",
            ),
            (
                "UTF-16 surrogate",
                Some(V311),
                frame(0x30, &[0, 3, 0xED, 0xA0, 0x80]),
                E::InvalidUtf8,
                "[MQTT-1.5.4-1]",
            ),
            (
                "U+0000 in topic",
                Some(V311),
                frame(0x30, &[0, 3, b'a', 0, b'b']),
                E::NullCharacter,
                "[MQTT-1.5.4-2]",
            ),
            (
                "U+0000 in client id",
                None,
                frame(0x10, &cat(&[&s("MQTT"), &[4, 2, 0, 60], &[0, 1, 0]])),
                E::NullCharacter,
                "[MQTT-1.5.4-2]",
            ),
            (
                "PUBLISH packet id 0",
                Some(V311),
                frame(0x32, &cat(&[&s("a"), &[0, 0]])),
                E::ZeroPacketId,
                "[MQTT-2.2.1-3]",
            ),
            (
                "PUBACK packet id 0",
                Some(V311),
                frame(0x40, &[0, 0]),
                E::ZeroPacketId,
                "[MQTT-2.3.1-1]",
            ),
            (
                "SUBSCRIBE packet id 0",
                Some(V311),
                frame(0x82, &cat(&[&[0, 0], &s("a"), &[0]])),
                E::ZeroPacketId,
                "[MQTT-2.2.1-3]",
            ),
            (
                "SUBSCRIBE without filter",
                Some(V311),
                frame(0x82, &[0, 1]),
                E::EmptySubscribe,
                "[MQTT-3.8.3-3]",
            ),
            (
                "SUBSCRIBE 5.0 without filter",
                Some(V5),
                frame(0x82, &[0, 1, 0]),
                E::EmptySubscribe,
                "[MQTT-3.8.3-3]",
            ),
            (
                "UNSUBSCRIBE without filter",
                Some(V311),
                frame(0xA2, &[0, 1]),
                E::EmptyUnsubscribe,
                "[MQTT-3.10.3-2]",
            ),
            (
                "subscription options reserved 3.1.1",
                Some(V311),
                frame(0x82, &cat(&[&[0, 1], &s("a"), &[0x04]])),
                E::ReservedSubscriptionOptions(4),
                "[MQTT-3-8.3-4]",
            ),
            (
                "subscription options reserved 5.0",
                Some(V5),
                frame(0x82, &cat(&[&[0, 1, 0], &s("a"), &[0x40]])),
                E::ReservedSubscriptionOptions(0x40),
                "[MQTT-3.8.3-5]",
            ),
            (
                "subscription QoS 3",
                Some(V311),
                frame(0x82, &cat(&[&[0, 1], &s("a"), &[3]])),
                E::InvalidSubscriptionQoS,
                "QoS is 3",
            ),
            (
                "retain handling 3",
                Some(V5),
                frame(0x82, &cat(&[&[0, 1, 0], &s("a"), &[0x30]])),
                E::InvalidRetainHandling,
                "retain handling",
            ),
            (
                "no local on shared",
                Some(V5),
                frame(0x82, &cat(&[&[0, 1, 0], &s("$share/g/a"), &[0x04]])),
                E::NoLocalOnSharedSubscription,
                "[MQTT-3.8.3-4]",
            ),
            (
                "filter # not last",
                Some(V311),
                frame(0x82, &cat(&[&[0, 1], &s("a/#/b"), &[0]])),
                E::InvalidTopicFilter(TopicError::MisplacedMultiLevelWildcard),
                "[MQTT-4.7.1-1]",
            ),
            (
                "filter + not alone",
                Some(V5),
                frame(0xA2, &cat(&[&[0, 1, 0], &s("a+")])),
                E::InvalidTopicFilter(TopicError::MisplacedSingleLevelWildcard),
                "[MQTT-4.7.1-2]",
            ),
            (
                "empty filter",
                Some(V311),
                frame(0xA2, &cat(&[&[0, 1], &s("")])),
                E::InvalidTopicFilter(TopicError::Empty),
                "[MQTT-4.7.3-1]",
            ),
            (
                "bad share name",
                Some(V311),
                frame(0x82, &cat(&[&[0, 1], &s("$share//a"), &[0]])),
                E::InvalidTopicFilter(TopicError::InvalidShareName),
                "[MQTT-4.8.2-1]",
            ),
            (
                "PUBACK 3.1.1 too long",
                Some(V311),
                frame(0x40, &[0, 1, 0]),
                E::TrailingBytes(1),
                "left over",
            ),
            (
                "PINGREQ with body",
                Some(V311),
                frame(0xC0, &[0]),
                E::TrailingBytes(1),
                "left over",
            ),
            (
                "DISCONNECT 3.1.1 with body",
                Some(V311),
                frame(0xE0, &[0]),
                E::TrailingBytes(1),
                "left over",
            ),
            (
                "CONNACK 3.1.1 too long",
                Some(V311),
                frame(0x20, &[0, 0, 0]),
                E::TrailingBytes(1),
                "left over",
            ),
            (
                "string past end",
                Some(V311),
                frame(0x32, &[0, 5, b'a', b'b']),
                E::UnexpectedEnd,
                "past the end",
            ),
            (
                "PUBACK too short",
                Some(V311),
                frame(0x40, &[1]),
                E::UnexpectedEnd,
                "past the end",
            ),
            (
                "CONNECT truncated",
                None,
                frame(0x10, &s("MQTT")),
                E::UnexpectedEnd,
                "past the end",
            ),
            (
                "remaining length 5 bytes",
                Some(V311),
                vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
                E::MalformedVariableByteInteger,
                "[MQTT-1.5.5-1]",
            ),
            (
                "remaining length not minimal",
                Some(V311),
                vec![0xC0, 0x80, 0x00],
                E::MalformedVariableByteInteger,
                "[MQTT-1.5.5-1]",
            ),
            (
                "property length past end",
                Some(V5),
                frame(0x30, &cat(&[&s("a"), &[5, 1]])),
                E::UnexpectedEnd,
                "past the end",
            ),
            (
                "unknown property",
                Some(V5),
                publish5(&[0x05, 1]),
                E::UnknownProperty(5),
                "unknown property",
            ),
            (
                "property not allowed",
                Some(V5),
                publish5(&[0x11, 0, 0, 0, 1]),
                E::PropertyNotAllowed {
                    id: 0x11,
                    context: "PUBLISH",
                },
                "not allowed",
            ),
            (
                "topic alias in CONNECT",
                None,
                frame(
                    0x10,
                    &cat(&[&s("MQTT"), &[5, 2, 0, 60, 3, 0x23, 0, 1], &s("c")]),
                ),
                E::PropertyNotAllowed {
                    id: 0x23,
                    context: "CONNECT",
                },
                "not allowed",
            ),
            (
                "will delay in CONNECT",
                None,
                frame(
                    0x10,
                    &cat(&[&s("MQTT"), &[5, 2, 0, 60, 5, 0x18, 0, 0, 0, 1], &s("c")]),
                ),
                E::PropertyNotAllowed {
                    id: 0x18,
                    context: "CONNECT",
                },
                "not allowed",
            ),
            (
                "topic alias in will",
                None,
                frame(
                    0x10,
                    &cat(&[
                        &s("MQTT"),
                        &[5, 6, 0, 60, 0],
                        &s("c"),
                        &[3, 0x23, 0, 1],
                        &s("w"),
                        &s("p"),
                    ]),
                ),
                E::PropertyNotAllowed {
                    id: 0x23,
                    context: "will properties",
                },
                "not allowed",
            ),
            (
                "duplicate property",
                Some(V5),
                publish5(&[0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 2]),
                E::DuplicateProperty(2),
                "more than once",
            ),
            (
                "two subscription identifiers in SUBSCRIBE",
                Some(V5),
                frame(0x82, &cat(&[&[0, 1, 4, 0x0B, 1, 0x0B, 2], &s("a"), &[0]])),
                E::DuplicateProperty(0x0B),
                "more than once",
            ),
            (
                "subscription identifier 0",
                Some(V5),
                publish5(&[0x0B, 0]),
                E::InvalidPropertyValue { id: 0x0B, value: 0 },
                "invalid value",
            ),
            (
                "payload format indicator 2",
                Some(V5),
                publish5(&[0x01, 2]),
                E::InvalidPropertyValue { id: 1, value: 2 },
                "invalid value",
            ),
            (
                "receive maximum 0",
                None,
                frame(
                    0x10,
                    &cat(&[&s("MQTT"), &[5, 2, 0, 60, 3, 0x21, 0, 0], &s("c")]),
                ),
                E::InvalidPropertyValue { id: 0x21, value: 0 },
                "invalid value",
            ),
            (
                "maximum packet size 0",
                None,
                frame(
                    0x10,
                    &cat(&[&s("MQTT"), &[5, 2, 0, 60, 5, 0x27, 0, 0, 0, 0], &s("c")]),
                ),
                E::InvalidPropertyValue { id: 0x27, value: 0 },
                "invalid value",
            ),
            (
                "request problem information 2",
                None,
                frame(
                    0x10,
                    &cat(&[&s("MQTT"), &[5, 2, 0, 60, 2, 0x17, 2], &s("c")]),
                ),
                E::InvalidPropertyValue { id: 0x17, value: 2 },
                "invalid value",
            ),
            (
                "maximum QoS 2",
                Some(V5),
                frame(0x20, &[0, 0, 2, 0x24, 2]),
                E::InvalidPropertyValue { id: 0x24, value: 2 },
                "invalid value",
            ),
            (
                "authentication data without method",
                Some(V5),
                frame(0xF0, &[0x18, 4, 0x16, 0, 1, 7]),
                E::AuthDataWithoutMethod,
                "authentication method",
            ),
            (
                "response topic with wildcard",
                Some(V5),
                publish5(&cat(&[&[0x08], &s("r/#")])),
                E::InvalidResponseTopic(TopicError::WildcardInName),
                "[MQTT-3.3.2-14]",
            ),
            (
                "property identifier too wide",
                Some(V5),
                publish5(&[0x81, 0x01, 0]),
                E::UnknownProperty(0x81),
                "unknown property",
            ),
            (
                "PUBACK reason 0x92",
                Some(V5),
                frame(0x40, &[0, 1, 0x92]),
                E::InvalidReasonCode {
                    packet_type: 4,
                    code: 0x92,
                },
                "not valid",
            ),
            (
                "PUBREL reason 0x10",
                Some(V5),
                frame(0x62, &[0, 1, 0x10]),
                E::InvalidReasonCode {
                    packet_type: 6,
                    code: 0x10,
                },
                "not valid",
            ),
            (
                "DISCONNECT reason 0x05",
                Some(V5),
                frame(0xE0, &[0x05]),
                E::InvalidReasonCode {
                    packet_type: 14,
                    code: 5,
                },
                "not valid",
            ),
            (
                "AUTH reason 0x01",
                Some(V5),
                frame(0xF0, &[0x01]),
                E::InvalidReasonCode {
                    packet_type: 15,
                    code: 1,
                },
                "not valid",
            ),
            (
                "CONNACK reason 0x01",
                Some(V5),
                frame(0x20, &[0, 1, 0]),
                E::InvalidReasonCode {
                    packet_type: 2,
                    code: 1,
                },
                "not valid",
            ),
            (
                "SUBACK 3.1.1 code 3",
                Some(V311),
                frame(0x90, &[0, 1, 3]),
                E::InvalidReasonCode {
                    packet_type: 9,
                    code: 3,
                },
                "not valid",
            ),
            (
                "UNSUBACK 5.0 reason 0x01",
                Some(V5),
                frame(0xB0, &[0, 1, 0, 1]),
                E::InvalidReasonCode {
                    packet_type: 11,
                    code: 1,
                },
                "not valid",
            ),
            (
                "SUBACK without codes",
                Some(V311),
                frame(0x90, &[0, 1]),
                E::EmptyAckPayload(9),
                "no reason code",
            ),
            (
                "UNSUBACK 5.0 without codes",
                Some(V5),
                frame(0xB0, &[0, 1, 0]),
                E::EmptyAckPayload(11),
                "no reason code",
            ),
            (
                "CONNACK reserved flags",
                Some(V311),
                frame(0x20, &[2, 0]),
                E::ConnAckReservedFlags,
                "[MQTT-3.2.2-1]",
            ),
            (
                "session present with error",
                Some(V311),
                frame(0x20, &[1, 5]),
                E::SessionPresentWithError,
                "[MQTT-3.2.2-4]",
            ),
            (
                "CONNACK return code 6",
                Some(V311),
                frame(0x20, &[0, 6]),
                E::InvalidConnectReturnCode(6),
                "return code",
            ),
            (
                "CONNACK 5.0 without properties",
                Some(V5),
                frame(0x20, &[0, 0]),
                E::UnexpectedEnd,
                "past the end",
            ),
        ];
        for (name, version, bytes, want, clause) in cases {
            let got = dec(&bytes, version);
            assert_eq!(got, Err(want.clone()), "{name}");
            let msg = want.to_string();
            assert!(
                msg.contains(clause),
                "{name}: {msg:?} does not cite {clause}"
            );
        }
    }

    #[test]
    fn accepted_edge_cases() {
        let ok = |name: &str, v, bytes: Vec<u8>| {
            let got = dec(&bytes, v);
            assert!(matches!(got, Ok(Some(_))), "{name}: {got:?}");
            got.unwrap().unwrap()
        };
        ok(
            "password without user name 5.0",
            None,
            connect("MQTT", 5, 0x40, &s("pw")),
        );
        ok(
            "empty client id",
            None,
            frame(0x10, &cat(&[&s("MQTT"), &[4, 2, 0, 60], &s("")])),
        );
        ok(
            "second CONNECT decodes",
            Some(V311),
            connect("MQTT", 4, 2, &[]),
        );
        ok(
            "3.1 SUBSCRIBE with DUP",
            Some(V31),
            frame(0x8A, &cat(&[&[0, 1], &s("a"), &[1]])),
        );
        ok(
            "3.1 PUBACK with unused flags",
            Some(V31),
            frame(0x48, &[0, 1]),
        );
        let p = ok(
            "empty topic with alias",
            Some(V5),
            frame(0x30, &cat(&[&s(""), &[3, 0x23, 0, 7]])),
        );
        assert!(matches!(p, Packet::Publish(ref p) if p.properties.topic_alias == Some(7)));
        ok(
            "topic alias 0 is the broker's business",
            Some(V5),
            publish5(&[0x23, 0, 0]),
        );
        let p = ok(
            "two subscription identifiers in PUBLISH",
            Some(V5),
            publish5(&[0x0B, 1, 0x0B, 0x80, 0x01]),
        );
        assert!(
            matches!(p, Packet::Publish(ref p) if p.properties.subscription_identifiers == [1, 128])
        );
        let p = ok("PUBACK short form", Some(V5), frame(0x40, &[0, 9]));
        assert_eq!(
            p,
            Packet::PubAck(PubResponse::new(PacketId::new(9).unwrap()))
        );
        let p = ok("PUBREC reason only", Some(V5), frame(0x50, &[0, 9, 0x10]));
        assert!(
            matches!(p, Packet::PubRec(ref r) if r.reason == ReasonCode::NO_MATCHING_SUBSCRIBERS)
        );
        let p = ok("DISCONNECT short form", Some(V5), vec![0xE0, 0]);
        assert_eq!(p, Packet::Disconnect(Disconnect::default()));
        let p = ok("AUTH short form", Some(V5), vec![0xF0, 0]);
        assert_eq!(p, Packet::Auth(Auth::default()));
        let p = ok(
            "user properties repeat",
            Some(V5),
            publish5(&cat(&[
                &[0x26],
                &s("k"),
                &s("1"),
                &[0x26],
                &s("k"),
                &s("2"),
            ])),
        );
        assert!(matches!(p, Packet::Publish(ref p) if p.properties.user_properties.len() == 2));
    }

    #[test]
    fn protocol_level_detection() {
        for (name, level, want) in [("MQIsdp", 3, V31), ("MQTT", 4, V311), ("MQTT", 5, V5)] {
            let p = dec(&connect(name, level, 2, &[]), None).unwrap().unwrap();
            let Packet::Connect(c) = p else {
                panic!("not CONNECT")
            };
            assert_eq!(c.protocol, want);
            assert!(c.clean_start);
            assert_eq!(c.client_id, "c");
        }
    }

    #[test]
    fn too_large_is_refused_from_the_fixed_header() {
        // Only the fixed header has arrived; it announces 2 MiB.
        let mut buf = BytesMut::from(&[0x30, 0xFF, 0xFF, 0x7F][..]);
        let got = decode_packet(&mut buf, Some(V311), 1000);
        assert_eq!(
            got,
            Err(DecodeError::PacketTooLarge {
                size: 4 + 2_097_151,
                max: 1000
            })
        );
        assert_eq!(got.unwrap_err().reason_code(), ReasonCode::PACKET_TOO_LARGE);
        // The limit counts the fixed header: 2 + 8 = 10 bytes.
        let p = frame(0x30, &cat(&[&s("topic"), b"x"]));
        assert_eq!(p.len(), 10);
        assert!(decode_packet(&mut BytesMut::from(&p[..]), Some(V311), 10).is_ok());
        assert_eq!(
            decode_packet(&mut BytesMut::from(&p[..]), Some(V311), 9),
            Err(DecodeError::PacketTooLarge { size: 10, max: 9 })
        );
    }

    #[test]
    fn consumes_exactly_one_packet() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&frame(0x40, &[0, 1]));
        buf.extend_from_slice(&[0xC0, 0, 0xD0]);
        let a = decode_packet(&mut buf, Some(V311), MAX).unwrap();
        assert!(matches!(a, Some(Packet::PubAck(_))));
        assert_eq!(&buf[..], &[0xC0, 0, 0xD0]);
        assert_eq!(
            decode_packet(&mut buf, Some(V311), MAX),
            Ok(Some(Packet::PingReq))
        );
        assert_eq!(decode_packet(&mut buf, Some(V311), MAX), Ok(None));
        assert_eq!(&buf[..], &[0xD0]);
    }

    #[test]
    fn payload_is_not_copied() {
        let bytes = frame(0x30, &cat(&[&s("t"), b"payload"]));
        let mut buf = BytesMut::from(&bytes[..]);
        let base = buf.as_ptr() as usize;
        let Some(Packet::Publish(p)) = decode_packet(&mut buf, Some(V311), MAX).unwrap() else {
            panic!("not PUBLISH")
        };
        assert_eq!(p.payload, &b"payload"[..]);
        assert_eq!(p.payload.as_ptr() as usize, base + 5);
        assert_eq!(p.topic.as_bytes().as_ptr() as usize, base + 4);
    }

    #[test]
    fn reason_codes_for_errors() {
        use DecodeError as E;
        let cases = [
            (E::UnexpectedEnd, ReasonCode::MALFORMED_PACKET),
            (E::DuplicateProperty(1), ReasonCode::PROTOCOL_ERROR),
            (
                E::UnsupportedProtocolVersion { level: 6 },
                ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
            ),
            (
                E::PacketTooLarge { size: 2, max: 1 },
                ReasonCode::PACKET_TOO_LARGE,
            ),
            (
                E::InvalidTopicName(TopicError::Empty),
                ReasonCode::TOPIC_NAME_INVALID,
            ),
            (
                E::InvalidTopicFilter(TopicError::Empty),
                ReasonCode::TOPIC_FILTER_INVALID,
            ),
            (E::ExpectedConnect(3), ReasonCode::PROTOCOL_ERROR),
        ];
        for (err, want) in cases {
            assert_eq!(err.reason_code(), want, "{err}");
        }
    }
}
