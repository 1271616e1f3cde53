//! MQTT 5.0 property identifiers (section 2.2.2.2) and where each may appear.
//!
//! The table lives here so the decoder and the encoder agree on it; reading
//! and writing the values is done by `decode` and `encode`.

pub const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
pub const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
pub const CONTENT_TYPE: u8 = 0x03;
pub const RESPONSE_TOPIC: u8 = 0x08;
pub const CORRELATION_DATA: u8 = 0x09;
pub const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
pub const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
pub const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
pub const SERVER_KEEP_ALIVE: u8 = 0x13;
pub const AUTHENTICATION_METHOD: u8 = 0x15;
pub const AUTHENTICATION_DATA: u8 = 0x16;
pub const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
pub const WILL_DELAY_INTERVAL: u8 = 0x18;
pub const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
pub const RESPONSE_INFORMATION: u8 = 0x1A;
pub const SERVER_REFERENCE: u8 = 0x1C;
pub const REASON_STRING: u8 = 0x1F;
pub const RECEIVE_MAXIMUM: u8 = 0x21;
pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
pub const TOPIC_ALIAS: u8 = 0x23;
pub const MAXIMUM_QOS: u8 = 0x24;
pub const RETAIN_AVAILABLE: u8 = 0x25;
pub const USER_PROPERTY: u8 = 0x26;
pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
pub const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
pub const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
pub const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;

/// Largest value of a Variable Byte Integer (section 1.5.5).
pub const MAX_VARIABLE_BYTE_INTEGER: u32 = 268_435_455;

/// Where a property list sits. PUBACK, PUBREC, PUBREL and PUBCOMP share one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropertyContext {
    Connect,
    Will,
    ConnAck,
    Publish,
    PubResponse,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

impl PropertyContext {
    const fn bit(self) -> u16 {
        1 << self as u16
    }

    pub fn name(self) -> &'static str {
        match self {
            PropertyContext::Connect => "CONNECT",
            PropertyContext::Will => "will properties",
            PropertyContext::ConnAck => "CONNACK",
            PropertyContext::Publish => "PUBLISH",
            PropertyContext::PubResponse => "PUBACK/PUBREC/PUBREL/PUBCOMP",
            PropertyContext::Subscribe => "SUBSCRIBE",
            PropertyContext::SubAck => "SUBACK",
            PropertyContext::Unsubscribe => "UNSUBSCRIBE",
            PropertyContext::UnsubAck => "UNSUBACK",
            PropertyContext::Disconnect => "DISCONNECT",
            PropertyContext::Auth => "AUTH",
        }
    }

    /// Whether property `id` may appear here. `None`: the identifier is unknown.
    pub fn allows(self, id: u8) -> Option<bool> {
        allowed_mask(id).map(|mask| mask & self.bit() != 0)
    }
}

const fn mask(contexts: &[PropertyContext]) -> u16 {
    let mut m = 0;
    let mut i = 0;
    while i < contexts.len() {
        m |= contexts[i].bit();
        i += 1;
    }
    m
}

fn allowed_mask(id: u8) -> Option<u16> {
    use PropertyContext::*;
    Some(match id {
        PAYLOAD_FORMAT_INDICATOR
        | MESSAGE_EXPIRY_INTERVAL
        | CONTENT_TYPE
        | RESPONSE_TOPIC
        | CORRELATION_DATA => mask(&[Publish, Will]),
        SUBSCRIPTION_IDENTIFIER => mask(&[Publish, Subscribe]),
        SESSION_EXPIRY_INTERVAL => mask(&[Connect, ConnAck, Disconnect]),
        ASSIGNED_CLIENT_IDENTIFIER
        | SERVER_KEEP_ALIVE
        | RESPONSE_INFORMATION
        | MAXIMUM_QOS
        | RETAIN_AVAILABLE
        | WILDCARD_SUBSCRIPTION_AVAILABLE
        | SUBSCRIPTION_IDENTIFIER_AVAILABLE
        | SHARED_SUBSCRIPTION_AVAILABLE => mask(&[ConnAck]),
        AUTHENTICATION_METHOD | AUTHENTICATION_DATA => mask(&[Connect, ConnAck, Auth]),
        REQUEST_PROBLEM_INFORMATION | REQUEST_RESPONSE_INFORMATION => mask(&[Connect]),
        WILL_DELAY_INTERVAL => mask(&[Will]),
        SERVER_REFERENCE => mask(&[ConnAck, Disconnect]),
        REASON_STRING => mask(&[ConnAck, PubResponse, SubAck, UnsubAck, Disconnect, Auth]),
        RECEIVE_MAXIMUM | TOPIC_ALIAS_MAXIMUM | MAXIMUM_PACKET_SIZE => mask(&[Connect, ConnAck]),
        TOPIC_ALIAS => mask(&[Publish]),
        USER_PROPERTY => u16::MAX,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_spot_checks() {
        use PropertyContext::*;
        let cases = [
            (TOPIC_ALIAS, Publish, Some(true)),
            (TOPIC_ALIAS, Will, Some(false)),
            (WILL_DELAY_INTERVAL, Will, Some(true)),
            (WILL_DELAY_INTERVAL, Connect, Some(false)),
            (USER_PROPERTY, PubResponse, Some(true)),
            (REASON_STRING, Connect, Some(false)),
            (SUBSCRIPTION_IDENTIFIER, Subscribe, Some(true)),
            (SUBSCRIPTION_IDENTIFIER, Unsubscribe, Some(false)),
            (0x00, Connect, None),
            (0x2B, Connect, None),
        ];
        for (id, ctx, want) in cases {
            assert_eq!(ctx.allows(id), want, "{id:#04x} in {ctx:?}");
        }
    }
}
