//! `-D command identifier value`: MQTT 5.0 properties given on the command
//! line, parsed and checked as mosquitto's clients do (same names, same
//! error messages).

use bytes::Bytes;
use bytestring::ByteString;
use midge_codec::properties::{self as p, PropertyContext};
use midge_codec::Properties;

/// The packets `-D` can put properties on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Connect,
    Publish,
    Subscribe,
    Unsubscribe,
    Disconnect,
    Will,
}

impl Command {
    fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "connect" => Command::Connect,
            "publish" => Command::Publish,
            "subscribe" => Command::Subscribe,
            "unsubscribe" => Command::Unsubscribe,
            "disconnect" => Command::Disconnect,
            "will" => Command::Will,
            _ => return None,
        })
    }

    fn context(self) -> PropertyContext {
        match self {
            Command::Connect => PropertyContext::Connect,
            Command::Publish => PropertyContext::Publish,
            Command::Subscribe => PropertyContext::Subscribe,
            Command::Unsubscribe => PropertyContext::Unsubscribe,
            Command::Disconnect => PropertyContext::Disconnect,
            Command::Will => PropertyContext::Will,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Command::Connect => "connect",
            Command::Publish => "publish",
            Command::Subscribe => "subscribe",
            Command::Unsubscribe => "unsubscribe",
            Command::Disconnect => "disconnect",
            Command::Will => "will",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Byte,
    Int16,
    Int32,
    VarInt,
    Str,
    Binary,
    Pair,
}

/// Mosquitto's property names, with identifier and value type.
const NAMES: &[(&str, u8, Kind)] = &[
    (
        "payload-format-indicator",
        p::PAYLOAD_FORMAT_INDICATOR,
        Kind::Byte,
    ),
    (
        "message-expiry-interval",
        p::MESSAGE_EXPIRY_INTERVAL,
        Kind::Int32,
    ),
    ("content-type", p::CONTENT_TYPE, Kind::Str),
    ("response-topic", p::RESPONSE_TOPIC, Kind::Str),
    ("correlation-data", p::CORRELATION_DATA, Kind::Binary),
    (
        "subscription-identifier",
        p::SUBSCRIPTION_IDENTIFIER,
        Kind::VarInt,
    ),
    (
        "session-expiry-interval",
        p::SESSION_EXPIRY_INTERVAL,
        Kind::Int32,
    ),
    (
        "assigned-client-identifier",
        p::ASSIGNED_CLIENT_IDENTIFIER,
        Kind::Str,
    ),
    ("server-keep-alive", p::SERVER_KEEP_ALIVE, Kind::Int16),
    ("authentication-method", p::AUTHENTICATION_METHOD, Kind::Str),
    ("authentication-data", p::AUTHENTICATION_DATA, Kind::Binary),
    (
        "request-problem-information",
        p::REQUEST_PROBLEM_INFORMATION,
        Kind::Byte,
    ),
    ("will-delay-interval", p::WILL_DELAY_INTERVAL, Kind::Int32),
    (
        "request-response-information",
        p::REQUEST_RESPONSE_INFORMATION,
        Kind::Byte,
    ),
    ("response-information", p::RESPONSE_INFORMATION, Kind::Str),
    ("server-reference", p::SERVER_REFERENCE, Kind::Str),
    ("reason-string", p::REASON_STRING, Kind::Str),
    ("receive-maximum", p::RECEIVE_MAXIMUM, Kind::Int16),
    ("topic-alias-maximum", p::TOPIC_ALIAS_MAXIMUM, Kind::Int16),
    ("topic-alias", p::TOPIC_ALIAS, Kind::Int16),
    ("maximum-qos", p::MAXIMUM_QOS, Kind::Byte),
    ("retain-available", p::RETAIN_AVAILABLE, Kind::Byte),
    ("user-property", p::USER_PROPERTY, Kind::Pair),
    ("maximum-packet-size", p::MAXIMUM_PACKET_SIZE, Kind::Int32),
    (
        "wildcard-subscription-available",
        p::WILDCARD_SUBSCRIPTION_AVAILABLE,
        Kind::Byte,
    ),
    (
        "subscription-identifier-available",
        p::SUBSCRIPTION_IDENTIFIER_AVAILABLE,
        Kind::Byte,
    ),
    (
        "shared-subscription-available",
        p::SHARED_SUBSCRIPTION_AVAILABLE,
        Kind::Byte,
    ),
];

/// The name mosquitto gives a property identifier (JSON output uses it).
pub fn property_name(id: u8) -> Option<&'static str> {
    NAMES.iter().find(|(_, i, _)| *i == id).map(|(n, _, _)| *n)
}

/// The property lists `-D` fills, one per command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PropertySet {
    pub connect: Properties,
    pub publish: Properties,
    pub subscribe: Properties,
    pub unsubscribe: Properties,
    pub disconnect: Properties,
    pub will: Properties,
}

impl PropertySet {
    fn get_mut(&mut self, c: Command) -> &mut Properties {
        match c {
            Command::Connect => &mut self.connect,
            Command::Publish => &mut self.publish,
            Command::Subscribe => &mut self.subscribe,
            Command::Unsubscribe => &mut self.unsubscribe,
            Command::Disconnect => &mut self.disconnect,
            Command::Will => &mut self.will,
        }
    }
}

const NOT_ENOUGH: &str = "Error: --property argument given but not enough arguments specified.\n\n";

/// Parses one `-D` at `args[*i]` (the word after `-D`), advancing `*i` to
/// its last word. Errors are mosquitto's messages, newlines included.
pub fn parse_property(
    set: &mut PropertySet,
    args: &[Vec<u8>],
    i: &mut usize,
) -> Result<(), String> {
    let word = |k: usize| -> Option<String> {
        args.get(k).map(|a| String::from_utf8_lossy(a).into_owned())
    };
    let Some(cmdname) = word(*i) else {
        return Err(NOT_ENOUGH.into());
    };
    let Some(cmd) = Command::parse(&cmdname) else {
        return Err("Error: Invalid command given in --property argument.\n\n".into());
    };
    let Some(propname) = word(*i + 1) else {
        return Err(NOT_ENOUGH.into());
    };
    let Some(&(name, id, kind)) = NAMES.iter().find(|(n, _, _)| *n == propname) else {
        return Err("Error: Invalid property name given in --property argument.\n\n".into());
    };
    let Some(value) = args.get(*i + 2) else {
        return Err(NOT_ENOUGH.into());
    };
    let value2 = if kind == Kind::Pair {
        match args.get(*i + 3) {
            Some(v) => Some(v.clone()),
            None => return Err(NOT_ENOUGH.into()),
        }
    } else {
        None
    };
    if cmd.context().allows(id) != Some(true) {
        return Err(format!(
            "Error: {name} property not allowed for {} in --property argument.\n\n",
            cmd.name()
        ));
    }
    let text = || String::from_utf8_lossy(value).into_owned();
    let num = || super::args::atoi(value);
    let props = set.get_mut(cmd);
    let dup = || {
        Err(format!(
            "Error: Duplicate {name} property in --property argument.\n\n"
        ))
    };
    macro_rules! set_once {
        ($field:expr, $v:expr) => {{
            if $field.is_some() {
                return dup();
            }
            $field = Some($v);
        }};
    }
    match (id, kind) {
        (p::USER_PROPERTY, _) => {
            let v2 = value2.unwrap_or_default();
            props.user_properties.push((
                ByteString::from(text()),
                ByteString::from(String::from_utf8_lossy(&v2).into_owned()),
            ));
        }
        (p::SUBSCRIPTION_IDENTIFIER, _) => {
            let v = num();
            if !(1..=i64::from(p::MAX_VARIABLE_BYTE_INTEGER)).contains(&v) {
                return Err(format!("Error: Invalid value for {name} property.\n\n"));
            }
            if !props.subscription_identifiers.is_empty() {
                return dup();
            }
            props.subscription_identifiers.push(v as u32);
        }
        (_, Kind::Byte) => {
            let v = u8::try_from(num())
                .map_err(|_| format!("Error: Invalid value for {name} property.\n\n"))?;
            match id {
                p::PAYLOAD_FORMAT_INDICATOR => set_once!(props.payload_format_indicator, v),
                p::REQUEST_PROBLEM_INFORMATION => set_once!(props.request_problem_information, v),
                p::REQUEST_RESPONSE_INFORMATION => {
                    set_once!(props.request_response_information, v)
                }
                p::MAXIMUM_QOS => set_once!(props.maximum_qos, v),
                p::RETAIN_AVAILABLE => set_once!(props.retain_available, v),
                p::WILDCARD_SUBSCRIPTION_AVAILABLE => {
                    set_once!(props.wildcard_subscription_available, v)
                }
                p::SUBSCRIPTION_IDENTIFIER_AVAILABLE => {
                    set_once!(props.subscription_identifier_available, v)
                }
                _ => set_once!(props.shared_subscription_available, v),
            }
        }
        (_, Kind::Int16) => {
            let v = u16::try_from(num())
                .map_err(|_| format!("Error: Invalid value for {name} property.\n\n"))?;
            match id {
                p::SERVER_KEEP_ALIVE => set_once!(props.server_keep_alive, v),
                p::RECEIVE_MAXIMUM => set_once!(props.receive_maximum, v),
                p::TOPIC_ALIAS_MAXIMUM => set_once!(props.topic_alias_maximum, v),
                _ => set_once!(props.topic_alias, v),
            }
        }
        (_, Kind::Int32) => {
            let v = u32::try_from(num())
                .map_err(|_| format!("Error: Invalid value for {name} property.\n\n"))?;
            match id {
                p::MESSAGE_EXPIRY_INTERVAL => set_once!(props.message_expiry_interval, v),
                p::SESSION_EXPIRY_INTERVAL => set_once!(props.session_expiry_interval, v),
                p::WILL_DELAY_INTERVAL => set_once!(props.will_delay_interval, v),
                _ => set_once!(props.maximum_packet_size, v),
            }
        }
        (_, Kind::Str) => {
            let v = ByteString::from(text());
            match id {
                p::CONTENT_TYPE => set_once!(props.content_type, v),
                p::RESPONSE_TOPIC => set_once!(props.response_topic, v),
                p::ASSIGNED_CLIENT_IDENTIFIER => set_once!(props.assigned_client_identifier, v),
                p::AUTHENTICATION_METHOD => set_once!(props.authentication_method, v),
                p::RESPONSE_INFORMATION => set_once!(props.response_information, v),
                p::SERVER_REFERENCE => set_once!(props.server_reference, v),
                _ => set_once!(props.reason_string, v),
            }
        }
        (_, Kind::Binary) => {
            let v = Bytes::copy_from_slice(value);
            match id {
                p::CORRELATION_DATA => set_once!(props.correlation_data, v),
                _ => set_once!(props.authentication_data, v),
            }
        }
        (_, Kind::VarInt) | (_, Kind::Pair) => {}
    }
    *i += if kind == Kind::Pair { 3 } else { 2 };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(words: &[&str]) -> Result<(PropertySet, usize), String> {
        let args: Vec<Vec<u8>> = words.iter().map(|w| w.as_bytes().to_vec()).collect();
        let mut set = PropertySet::default();
        let mut i = 0;
        parse_property(&mut set, &args, &mut i)?;
        Ok((set, i))
    }

    #[test]
    fn table() {
        let (s, i) = run(&["publish", "content-type", "text/plain"]).unwrap();
        assert_eq!(s.publish.content_type.as_deref(), Some("text/plain"));
        assert_eq!(i, 2);
        let (s, i) = run(&["connect", "user-property", "k", "v"]).unwrap();
        assert_eq!(s.connect.user_properties, vec![("k".into(), "v".into())]);
        assert_eq!(i, 3);
        let (s, _) = run(&["will", "will-delay-interval", "30"]).unwrap();
        assert_eq!(s.will.will_delay_interval, Some(30));
        let (s, _) = run(&["subscribe", "subscription-identifier", "42"]).unwrap();
        assert_eq!(s.subscribe.subscription_identifiers, vec![42]);

        let errs = [
            (&["bogus", "user-property", "a", "b"][..], "Error: Invalid command given in --property argument.\n\n"),
            (&["connect", "bogus", "1"][..], "Error: Invalid property name given in --property argument.\n\n"),
            (&["connect", "user-property", "1"][..], NOT_ENOUGH),
            (&["connect"][..], NOT_ENOUGH),
            (
                &["publish", "session-expiry-interval", "1"][..],
                "Error: session-expiry-interval property not allowed for publish in --property argument.\n\n",
            ),
        ];
        for (words, want) in errs {
            assert_eq!(run(words).unwrap_err(), want, "{words:?}");
        }
    }
}
