//! MQTT wire format for protocol levels 3 (3.1, `MQIsdp`), 4 (3.1.1) and 5 (5.0).
//!
//! This crate owns the bytes on the wire and nothing else: packet types, the
//! decoder with the specification's validation rules, and the encoder. It knows
//! nothing of sessions, sockets or time. Payloads and strings are `Bytes`-backed
//! so decoding never copies them.
#![forbid(unsafe_code)]

pub mod decode;
pub mod encode;
pub mod packet;
pub mod properties;
pub mod topic;

pub use decode::{decode_packet, DecodeError};
pub use encode::{encode_packet, encoded_len, publish_encoded_len, EncodeError};
pub use packet::*;
pub use topic::{
    has_wildcard, parse_shared, validate_topic_filter, validate_topic_name, TopicError,
};
#[cfg(test)]
mod roundtrip_tests;
