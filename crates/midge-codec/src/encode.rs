//! Encoding [`Packet`]s to the wire for a given protocol level.
//!
//! The size of a packet is computed first, so the output buffer is reserved
//! once and written without intermediate allocations (PUBLISH is on the hot
//! path). For 3.1 and 3.1.1 the fields those levels lack are not written:
//! properties, and reason codes other than the CONNACK return code and the
//! SUBACK return codes. Semantic checks (topic syntax, reason codes) are the
//! sender's business; the encoder refuses only what it cannot represent or
//! what would make the peer's decoder fail on the framing.

use bytes::{BufMut, BytesMut};
use thiserror::Error;

use crate::packet::*;
use crate::properties::{self as prop, MAX_VARIABLE_BYTE_INTEGER};

/// Why a packet could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EncodeError {
    #[error("string or binary field of {0} bytes exceeds 65535 bytes (section 1.5.4)")]
    FieldTooLong(usize),
    #[error("packet remaining length {0} exceeds 268435455 bytes (section 2.1.4)")]
    PacketTooLarge(usize),
    #[error("subscription identifier {0} outside 1..=268435455")]
    InvalidSubscriptionIdentifier(u32),
    #[error("PUBLISH with QoS {qos:?} has packet identifier {packet_id:?} (must be present exactly when QoS > 0)")]
    PacketIdMismatch {
        qos: QoS,
        packet_id: Option<PacketId>,
    },
    #[error("[MQTT-3.3.1-2] DUP flag set on a QoS 0 PUBLISH")]
    DupWithQoS0,
    #[error("AUTH exists only in MQTT 5.0")]
    AuthRequiresV5,
}

type Result<T> = std::result::Result<T, EncodeError>;

/// Appends `packet`, encoded for `version`, to `buf`. CONNECT is encoded for
/// its own `protocol` field. On error nothing is appended.
pub fn encode_packet(packet: &Packet, version: ProtocolVersion, buf: &mut BytesMut) -> Result<()> {
    let start = buf.len();
    let result = encode_inner(packet, version, buf);
    if result.is_err() {
        buf.truncate(start);
    }
    result
}

/// Total size in bytes of `packet` encoded for `version`, fixed header
/// included (what a 5.0 peer's Maximum Packet Size limits).
pub fn encoded_len(packet: &Packet, version: ProtocolVersion) -> usize {
    let body = body_len(packet, version);
    1 + variable_int_len(body.remaining) + body.remaining
}

/// [`encoded_len`] of a PUBLISH, without building a [`Packet`] around it
/// (the broker checks every delivery against a client's Maximum Packet Size).
pub fn publish_encoded_len(p: &Publish, version: ProtocolVersion) -> usize {
    let (remaining, _) = publish_body_len(p, version);
    1 + variable_int_len(remaining) + remaining
}

/// Remaining length and property-list length of a PUBLISH. The packet id is
/// counted from the QoS, so a copy not yet given its id is sized right.
fn publish_body_len(p: &Publish, version: ProtocolVersion) -> (usize, usize) {
    let v5 = version.is_v5();
    let props = if v5 { properties_len(&p.properties) } else { 0 };
    let id = if p.qos == QoS::AtMostOnce { 0 } else { 2 };
    let props_field = if v5 { with_prefix(props) } else { 0 };
    (
        field_len(p.topic.as_bytes()) + id + props_field + p.payload.len(),
        props,
    )
}

/// Sizes computed once and reused while writing.
struct BodyLen {
    remaining: usize,
    /// Length of the packet's property list (not of its length prefix).
    props: usize,
}

fn encode_inner(packet: &Packet, version: ProtocolVersion, buf: &mut BytesMut) -> Result<()> {
    let body = body_len(packet, version);
    if body.remaining > MAX_VARIABLE_BYTE_INTEGER as usize {
        return Err(EncodeError::PacketTooLarge(body.remaining));
    }
    buf.reserve(1 + variable_int_len(body.remaining) + body.remaining);
    let v5 = version.is_v5();
    match packet {
        Packet::Connect(c) => {
            buf.put_u8(0x10);
            put_variable_int(buf, body.remaining);
            write_connect(c, body.props, buf)?;
        }
        Packet::ConnAck(c) => {
            buf.put_u8(0x20);
            put_variable_int(buf, body.remaining);
            buf.put_u8(u8::from(c.session_present));
            buf.put_u8(c.code);
            if v5 {
                put_properties(buf, &c.properties, body.props)?;
            }
        }
        Packet::Publish(p) => {
            if p.qos == QoS::AtMostOnce && p.dup {
                return Err(EncodeError::DupWithQoS0);
            }
            if (p.qos == QoS::AtMostOnce) != p.packet_id.is_none() {
                return Err(EncodeError::PacketIdMismatch {
                    qos: p.qos,
                    packet_id: p.packet_id,
                });
            }
            buf.put_u8(0x30 | u8::from(p.dup) << 3 | (p.qos as u8) << 1 | u8::from(p.retain));
            put_variable_int(buf, body.remaining);
            put_binary(buf, p.topic.as_bytes())?;
            if let Some(id) = p.packet_id {
                buf.put_u16(id.get());
            }
            if v5 {
                put_properties(buf, &p.properties, body.props)?;
            }
            buf.put_slice(&p.payload);
        }
        Packet::PubAck(r) => write_pub_response(0x40, r, v5, &body, buf)?,
        Packet::PubRec(r) => write_pub_response(0x50, r, v5, &body, buf)?,
        Packet::PubRel(r) => write_pub_response(0x62, r, v5, &body, buf)?,
        Packet::PubComp(r) => write_pub_response(0x70, r, v5, &body, buf)?,
        Packet::Subscribe(s) => {
            buf.put_u8(0x82);
            put_variable_int(buf, body.remaining);
            buf.put_u16(s.packet_id.get());
            if v5 {
                put_properties(buf, &s.properties, body.props)?;
            }
            for (filter, o) in &s.filters {
                put_binary(buf, filter.as_bytes())?;
                let mut options = o.qos as u8;
                if v5 {
                    options |= u8::from(o.no_local) << 2
                        | u8::from(o.retain_as_published) << 3
                        | (o.retain_handling as u8) << 4;
                }
                buf.put_u8(options);
            }
        }
        Packet::SubAck(s) => {
            buf.put_u8(0x90);
            put_variable_int(buf, body.remaining);
            buf.put_u16(s.packet_id.get());
            if v5 {
                put_properties(buf, &s.properties, body.props)?;
                for r in &s.reasons {
                    buf.put_u8(r.0);
                }
            } else {
                for r in &s.reasons {
                    // 3.x knows only granted QoS 0/1/2 and failure.
                    buf.put_u8(if r.0 <= 2 { r.0 } else { 0x80 });
                }
            }
        }
        Packet::Unsubscribe(u) => {
            buf.put_u8(0xA2);
            put_variable_int(buf, body.remaining);
            buf.put_u16(u.packet_id.get());
            if v5 {
                put_properties(buf, &u.properties, body.props)?;
            }
            for filter in &u.filters {
                put_binary(buf, filter.as_bytes())?;
            }
        }
        Packet::UnsubAck(u) => {
            buf.put_u8(0xB0);
            put_variable_int(buf, body.remaining);
            buf.put_u16(u.packet_id.get());
            if v5 {
                put_properties(buf, &u.properties, body.props)?;
                for r in &u.reasons {
                    buf.put_u8(r.0);
                }
            }
        }
        Packet::PingReq => buf.put_slice(&[0xC0, 0]),
        Packet::PingResp => buf.put_slice(&[0xD0, 0]),
        Packet::Disconnect(d) => {
            buf.put_u8(0xE0);
            put_variable_int(buf, body.remaining);
            if v5 {
                put_reason_and_properties(buf, d.reason, &d.properties, &body)?;
            }
        }
        Packet::Auth(a) => {
            if !v5 {
                return Err(EncodeError::AuthRequiresV5);
            }
            buf.put_u8(0xF0);
            put_variable_int(buf, body.remaining);
            put_reason_and_properties(buf, a.reason, &a.properties, &body)?;
        }
    }
    Ok(())
}

fn write_pub_response(
    first: u8,
    r: &PubResponse,
    v5: bool,
    body: &BodyLen,
    buf: &mut BytesMut,
) -> Result<()> {
    buf.put_u8(first);
    put_variable_int(buf, body.remaining);
    buf.put_u16(r.packet_id.get());
    if v5 {
        put_reason_and_properties(buf, r.reason, &r.properties, body)?;
    }
    Ok(())
}

/// The 5.0 short forms: nothing for Success without properties, the reason
/// code alone when there are no properties.
fn put_reason_and_properties(
    buf: &mut BytesMut,
    reason: ReasonCode,
    props: &Props,
    body: &BodyLen,
) -> Result<()> {
    let empty = props.is_empty();
    if reason == ReasonCode::SUCCESS && empty {
        return Ok(());
    }
    buf.put_u8(reason.0);
    if !empty {
        put_properties(buf, props, body.props)?;
    }
    Ok(())
}

fn reason_and_properties_len(reason: ReasonCode, props: &Props) -> (usize, usize) {
    if props.is_empty() {
        (usize::from(reason != ReasonCode::SUCCESS), 0)
    } else {
        let p = properties_len(props);
        (1 + variable_int_len(p) + p, p)
    }
}

fn write_connect(c: &Connect, props_len: usize, buf: &mut BytesMut) -> Result<()> {
    let v5 = c.protocol.is_v5();
    put_binary(buf, c.protocol.protocol_name().as_bytes())?;
    buf.put_u8(c.protocol.level());
    let mut flags = u8::from(c.clean_start) << 1;
    if let Some(w) = &c.will {
        flags |= 0x04 | (w.qos as u8) << 3 | u8::from(w.retain) << 5;
    }
    if c.password.is_some() {
        flags |= 0x40;
    }
    if c.username.is_some() {
        flags |= 0x80;
    }
    buf.put_u8(flags);
    buf.put_u16(c.keep_alive);
    if v5 {
        put_properties(buf, &c.properties, props_len)?;
    }
    put_binary(buf, c.client_id.as_bytes())?;
    if let Some(w) = &c.will {
        if v5 {
            put_properties(buf, &w.properties, properties_len(&w.properties))?;
        }
        put_binary(buf, w.topic.as_bytes())?;
        put_binary(buf, &w.payload)?;
    }
    if let Some(u) = &c.username {
        put_binary(buf, u.as_bytes())?;
    }
    if let Some(p) = &c.password {
        put_binary(buf, p)?;
    }
    Ok(())
}

fn field_len(bytes: &[u8]) -> usize {
    2 + bytes.len()
}

/// Property list with its length prefix, for 5.0 only.
fn with_prefix(props: usize) -> usize {
    variable_int_len(props) + props
}

fn body_len(packet: &Packet, version: ProtocolVersion) -> BodyLen {
    let v5 = version.is_v5();
    let props_of = |p: &Props| if v5 { properties_len(p) } else { 0 };
    let prefixed = |n: usize| if v5 { with_prefix(n) } else { 0 };
    let (remaining, props) = match packet {
        Packet::Connect(c) => {
            let v5 = c.protocol.is_v5();
            let props = if v5 { properties_len(&c.properties) } else { 0 };
            let mut n = field_len(c.protocol.protocol_name().as_bytes()) + 1 + 1 + 2;
            if v5 {
                n += with_prefix(props);
            }
            n += field_len(c.client_id.as_bytes());
            if let Some(w) = &c.will {
                if v5 {
                    n += with_prefix(properties_len(&w.properties));
                }
                n += field_len(w.topic.as_bytes()) + field_len(&w.payload);
            }
            n += c.username.as_ref().map_or(0, |u| field_len(u.as_bytes()));
            n += c.password.as_ref().map_or(0, |p| field_len(p));
            (n, props)
        }
        Packet::ConnAck(c) => {
            let props = props_of(&c.properties);
            (2 + prefixed(props), props)
        }
        Packet::Publish(p) => publish_body_len(p, version),
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
            if v5 {
                let (n, props) = reason_and_properties_len(r.reason, &r.properties);
                (2 + n, props)
            } else {
                (2, 0)
            }
        }
        Packet::Subscribe(s) => {
            let props = props_of(&s.properties);
            let filters: usize = s
                .filters
                .iter()
                .map(|(f, _)| field_len(f.as_bytes()) + 1)
                .sum();
            (2 + prefixed(props) + filters, props)
        }
        Packet::SubAck(s) => {
            let props = props_of(&s.properties);
            (2 + prefixed(props) + s.reasons.len(), props)
        }
        Packet::Unsubscribe(u) => {
            let props = props_of(&u.properties);
            let filters: usize = u.filters.iter().map(|f| field_len(f.as_bytes())).sum();
            (2 + prefixed(props) + filters, props)
        }
        Packet::UnsubAck(u) => {
            if v5 {
                let props = properties_len(&u.properties);
                (2 + with_prefix(props) + u.reasons.len(), props)
            } else {
                (2, 0)
            }
        }
        Packet::PingReq | Packet::PingResp => (0, 0),
        Packet::Disconnect(d) if v5 => reason_and_properties_len(d.reason, &d.properties),
        Packet::Disconnect(_) => (0, 0),
        Packet::Auth(a) => reason_and_properties_len(a.reason, &a.properties),
    };
    BodyLen { remaining, props }
}

fn variable_int_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Callers guarantee `value` <= 268_435_455 (checked once per packet).
fn put_variable_int(buf: &mut BytesMut, mut value: usize) {
    loop {
        let mut byte = (value & 0x7F) as u8;
        value >>= 7;
        if value > 0 {
            byte |= 0x80;
        }
        buf.put_u8(byte);
        if value == 0 {
            return;
        }
    }
}

fn put_binary(buf: &mut BytesMut, bytes: &[u8]) -> Result<()> {
    let len = u16::try_from(bytes.len()).map_err(|_| EncodeError::FieldTooLong(bytes.len()))?;
    buf.put_u16(len);
    buf.put_slice(bytes);
    Ok(())
}

fn opt_len<T>(value: &Option<T>, len: impl Fn(&T) -> usize) -> usize {
    value.as_ref().map_or(0, |v| 1 + len(v))
}

/// Encoded size of the property list, without its length prefix.
fn properties_len(p: &Props) -> usize {
    // Most packets carry no properties (nothing allocated): skip the
    // field-by-field sum.
    if p.is_empty() {
        return 0;
    }
    let byte = |_: &u8| 1;
    let u16 = |_: &u16| 2;
    let u32 = |_: &u32| 4;
    let s = |s: &bytestring::ByteString| field_len(s.as_bytes());
    let b = |b: &bytes::Bytes| field_len(b);
    let mut n = opt_len(&p.payload_format_indicator, byte)
        + opt_len(&p.message_expiry_interval, u32)
        + opt_len(&p.content_type, s)
        + opt_len(&p.response_topic, s)
        + opt_len(&p.correlation_data, b)
        + opt_len(&p.session_expiry_interval, u32)
        + opt_len(&p.assigned_client_identifier, s)
        + opt_len(&p.server_keep_alive, u16)
        + opt_len(&p.authentication_method, s)
        + opt_len(&p.authentication_data, b)
        + opt_len(&p.request_problem_information, byte)
        + opt_len(&p.will_delay_interval, u32)
        + opt_len(&p.request_response_information, byte)
        + opt_len(&p.response_information, s)
        + opt_len(&p.server_reference, s)
        + opt_len(&p.reason_string, s)
        + opt_len(&p.receive_maximum, u16)
        + opt_len(&p.topic_alias_maximum, u16)
        + opt_len(&p.topic_alias, u16)
        + opt_len(&p.maximum_qos, byte)
        + opt_len(&p.retain_available, byte)
        + opt_len(&p.maximum_packet_size, u32)
        + opt_len(&p.wildcard_subscription_available, byte)
        + opt_len(&p.subscription_identifier_available, byte)
        + opt_len(&p.shared_subscription_available, byte);
    for id in &p.subscription_identifiers {
        n += 1 + variable_int_len(*id as usize);
    }
    for (k, v) in &p.user_properties {
        n += 1 + field_len(k.as_bytes()) + field_len(v.as_bytes());
    }
    n
}

fn put_properties(buf: &mut BytesMut, p: &Props, len: usize) -> Result<()> {
    put_variable_int(buf, len);
    if len == 0 {
        return Ok(());
    }
    let byte = |buf: &mut BytesMut, id: u8, v: Option<u8>| {
        if let Some(v) = v {
            buf.put_u8(id);
            buf.put_u8(v);
        }
    };
    let two = |buf: &mut BytesMut, id: u8, v: Option<u16>| {
        if let Some(v) = v {
            buf.put_u8(id);
            buf.put_u16(v);
        }
    };
    let four = |buf: &mut BytesMut, id: u8, v: Option<u32>| {
        if let Some(v) = v {
            buf.put_u8(id);
            buf.put_u32(v);
        }
    };
    let field = |buf: &mut BytesMut, id: u8, v: Option<&[u8]>| -> Result<()> {
        if let Some(v) = v {
            buf.put_u8(id);
            put_binary(buf, v)?;
        }
        Ok(())
    };
    byte(
        buf,
        prop::PAYLOAD_FORMAT_INDICATOR,
        p.payload_format_indicator,
    );
    four(
        buf,
        prop::MESSAGE_EXPIRY_INTERVAL,
        p.message_expiry_interval,
    );
    field(buf, prop::CONTENT_TYPE, str_field(&p.content_type))?;
    field(buf, prop::RESPONSE_TOPIC, str_field(&p.response_topic))?;
    field(buf, prop::CORRELATION_DATA, p.correlation_data.as_deref())?;
    for &id in &p.subscription_identifiers {
        if id == 0 || id > MAX_VARIABLE_BYTE_INTEGER {
            return Err(EncodeError::InvalidSubscriptionIdentifier(id));
        }
        buf.put_u8(prop::SUBSCRIPTION_IDENTIFIER);
        put_variable_int(buf, id as usize);
    }
    four(
        buf,
        prop::SESSION_EXPIRY_INTERVAL,
        p.session_expiry_interval,
    );
    field(
        buf,
        prop::ASSIGNED_CLIENT_IDENTIFIER,
        str_field(&p.assigned_client_identifier),
    )?;
    two(buf, prop::SERVER_KEEP_ALIVE, p.server_keep_alive);
    field(
        buf,
        prop::AUTHENTICATION_METHOD,
        str_field(&p.authentication_method),
    )?;
    field(
        buf,
        prop::AUTHENTICATION_DATA,
        p.authentication_data.as_deref(),
    )?;
    byte(
        buf,
        prop::REQUEST_PROBLEM_INFORMATION,
        p.request_problem_information,
    );
    four(buf, prop::WILL_DELAY_INTERVAL, p.will_delay_interval);
    byte(
        buf,
        prop::REQUEST_RESPONSE_INFORMATION,
        p.request_response_information,
    );
    field(
        buf,
        prop::RESPONSE_INFORMATION,
        str_field(&p.response_information),
    )?;
    field(buf, prop::SERVER_REFERENCE, str_field(&p.server_reference))?;
    field(buf, prop::REASON_STRING, str_field(&p.reason_string))?;
    two(buf, prop::RECEIVE_MAXIMUM, p.receive_maximum);
    two(buf, prop::TOPIC_ALIAS_MAXIMUM, p.topic_alias_maximum);
    two(buf, prop::TOPIC_ALIAS, p.topic_alias);
    byte(buf, prop::MAXIMUM_QOS, p.maximum_qos);
    byte(buf, prop::RETAIN_AVAILABLE, p.retain_available);
    for (k, v) in &p.user_properties {
        buf.put_u8(prop::USER_PROPERTY);
        put_binary(buf, k.as_bytes())?;
        put_binary(buf, v.as_bytes())?;
    }
    four(buf, prop::MAXIMUM_PACKET_SIZE, p.maximum_packet_size);
    byte(
        buf,
        prop::WILDCARD_SUBSCRIPTION_AVAILABLE,
        p.wildcard_subscription_available,
    );
    byte(
        buf,
        prop::SUBSCRIPTION_IDENTIFIER_AVAILABLE,
        p.subscription_identifier_available,
    );
    byte(
        buf,
        prop::SHARED_SUBSCRIPTION_AVAILABLE,
        p.shared_subscription_available,
    );
    Ok(())
}

fn str_field(v: &Option<bytestring::ByteString>) -> Option<&[u8]> {
    v.as_ref().map(|s| &s.as_bytes()[..])
}
