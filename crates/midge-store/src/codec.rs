//! The bytes of one store operation: what sits inside a journal record.
//!
//! Every operation is self-contained, so the same encoding serves the journal
//! (one record per group commit) and the checkpoint (the live operations
//! written again). Times are wall-clock milliseconds since the Unix epoch, so
//! they mean the same after a restart: a message's expiry and the moment a
//! session went offline. Messages and wills are MQTT 5.0 PUBLISH packets
//! written by `midge-codec`, so the store invents no message format of its
//! own; the fields around them are fixed-width little-endian integers and
//! length-prefixed UTF-8 strings.
//!
//! Decoding never trusts the input: every length is checked against what is
//! left, and a value out of range is an error, never a panic.

use bytes::{BufMut, BytesMut};
use bytestring::ByteString;
use midge_codec::{
    decode_packet, encode_packet, LastWill, Packet, PacketId, ProtocolVersion, Publish, QoS,
    RetainHandling, SubscriptionOptions,
};
use midge_core::session::{OutState, SubIds, Subscription};
use midge_core::{Message, StoreOp, StoredState};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

pub(crate) const PUT_RETAINED: u8 = 1;
pub(crate) const DELETE_RETAINED: u8 = 2;
pub(crate) const PUT_SESSION: u8 = 3;
pub(crate) const SESSION_OFFLINE: u8 = 4;
pub(crate) const DELETE_SESSION: u8 = 5;
pub(crate) const PUT_SUBSCRIPTION: u8 = 6;
pub(crate) const DELETE_SUBSCRIPTION: u8 = 7;
pub(crate) const PUT_DELIVERY: u8 = 8;
pub(crate) const DELETE_DELIVERY: u8 = 9;
pub(crate) const PUT_INCOMING_QOS2: u8 = 10;
pub(crate) const DELETE_INCOMING_QOS2: u8 = 11;

/// Why an operation could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("record ends inside a field")]
    Truncated,
    #[error("unknown operation tag {0}")]
    UnknownTag(u8),
    #[error("invalid {0}")]
    Invalid(&'static str),
    #[error("{0} bytes left over after the operation")]
    Trailing(usize),
    #[error("stored message: {0}")]
    Packet(String),
    #[error("a store operation this version of midge-store does not know")]
    UnknownOp,
}

/// Wall clock and monotonic clock read together, so an `Instant` from the
/// core converts to wall time the same way for every op of a group.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    pub wall: SystemTime,
    pub mono: Instant,
}

impl Clock {
    pub fn now() -> Clock {
        Clock {
            wall: SystemTime::now(),
            mono: Instant::now(),
        }
    }

    pub fn wall_ms(&self) -> u64 {
        unix_ms(self.wall)
    }

    /// `SystemTime::now() + (at - Instant::now())`, in ms since the epoch.
    fn instant_to_ms(&self, at: Instant) -> u64 {
        let now = self.wall_ms();
        match at.checked_duration_since(self.mono) {
            Some(ahead) => now.saturating_add(duration_ms(ahead)),
            None => now.saturating_sub(duration_ms(self.mono - at)),
        }
    }
}

pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(duration_ms).unwrap_or(0)
}

fn duration_ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Appends the encoding of `op` to `out`.
pub(crate) fn encode_op(op: &StoreOp, clock: &Clock, out: &mut BytesMut) -> Result<(), CodecError> {
    match op {
        StoreOp::PutRetained { message } => {
            out.put_u8(PUT_RETAINED);
            put_str(out, &message.topic);
            put_message(out, message, clock)?;
        }
        StoreOp::DeleteRetained { topic } => {
            out.put_u8(DELETE_RETAINED);
            put_str(out, topic);
        }
        StoreOp::PutSession {
            client_id,
            protocol,
            expiry_interval,
        } => {
            out.put_u8(PUT_SESSION);
            put_str(out, client_id);
            out.put_u8(protocol.level());
            out.put_u32_le(*expiry_interval);
        }
        StoreOp::SessionOffline { client_id, will } => {
            out.put_u8(SESSION_OFFLINE);
            put_str(out, client_id);
            out.put_u64_le(clock.wall_ms());
            match will {
                None => out.put_u8(0),
                Some(will) => {
                    out.put_u8(1);
                    put_will(out, will)?;
                }
            }
        }
        StoreOp::DeleteSession { client_id } => {
            out.put_u8(DELETE_SESSION);
            put_str(out, client_id);
        }
        StoreOp::PutSubscription {
            client_id,
            filter,
            subscription,
        } => {
            out.put_u8(PUT_SUBSCRIPTION);
            put_str(out, client_id);
            put_str(out, filter);
            let o = &subscription.options;
            out.put_u8(o.qos as u8);
            out.put_u8(u8::from(o.no_local));
            out.put_u8(u8::from(o.retain_as_published));
            out.put_u8(o.retain_handling as u8);
            match subscription.identifier {
                None => out.put_u8(0),
                Some(id) => {
                    out.put_u8(1);
                    out.put_u32_le(id);
                }
            }
        }
        StoreOp::DeleteSubscription { client_id, filter } => {
            out.put_u8(DELETE_SUBSCRIPTION);
            put_str(out, client_id);
            put_str(out, filter);
        }
        StoreOp::PutDelivery {
            client_id,
            seq,
            message,
            qos,
            retain,
            sub_ids,
            state,
        } => {
            out.put_u8(PUT_DELIVERY);
            put_str(out, client_id);
            out.put_u64_le(*seq);
            out.put_u8(*qos as u8);
            out.put_u8(u8::from(*retain));
            match sub_ids {
                SubIds::None => out.put_u8(0),
                SubIds::One(id) => {
                    out.put_u8(1);
                    out.put_u32_le(*id);
                }
                SubIds::Many(ids) => {
                    out.put_u8(2);
                    out.put_u32_le(len_u32(ids.len()));
                    for id in ids {
                        out.put_u32_le(*id);
                    }
                }
            }
            match state {
                StoredState::Queued => out.put_u8(0),
                StoredState::InFlight(id, s) => {
                    out.put_u8(1);
                    out.put_u16_le(id.get());
                    out.put_u8(match s {
                        OutState::AwaitAck => 0,
                        OutState::AwaitComp => 1,
                    });
                }
            }
            // Last, so replay can find the key without decoding the message.
            put_message(out, message, clock)?;
        }
        StoreOp::DeleteDelivery { client_id, seq } => {
            out.put_u8(DELETE_DELIVERY);
            put_str(out, client_id);
            out.put_u64_le(*seq);
        }
        StoreOp::PutIncomingQos2 {
            client_id,
            packet_id,
        } => {
            out.put_u8(PUT_INCOMING_QOS2);
            put_str(out, client_id);
            out.put_u16_le(*packet_id);
        }
        StoreOp::DeleteIncomingQos2 {
            client_id,
            packet_id,
        } => {
            out.put_u8(DELETE_INCOMING_QOS2);
            put_str(out, client_id);
            out.put_u16_le(*packet_id);
        }
        _ => return Err(CodecError::UnknownOp),
    }
    Ok(())
}

fn len_u32(n: usize) -> u32 {
    // Strings and lists in MQTT are far below 4 GiB; a packet that large
    // never reaches the store.
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn put_str(out: &mut BytesMut, s: &str) {
    out.put_u32_le(len_u32(s.len()));
    out.put_slice(s.as_bytes());
}

fn put_publish(out: &mut BytesMut, publish: Publish) -> Result<(), CodecError> {
    let len_at = out.len();
    out.put_u32_le(0);
    encode_packet(&Packet::Publish(publish), ProtocolVersion::V5, out)
        .map_err(|e| CodecError::Packet(e.to_string()))?;
    let len = len_u32(out.len() - len_at - 4);
    out[len_at..len_at + 4].copy_from_slice(&len.to_le_bytes());
    Ok(())
}

fn packet_id_for(qos: QoS) -> Option<PacketId> {
    // The codec wants an id exactly when QoS > 0; the stored one means nothing.
    (qos != QoS::AtMostOnce).then_some(PacketId::MIN)
}

/// `[expiry flag u8][expiry ms u64]?[len u32][PUBLISH]`.
fn put_message(out: &mut BytesMut, m: &Message, clock: &Clock) -> Result<(), CodecError> {
    match m.expires_at {
        None => out.put_u8(0),
        Some(at) => {
            out.put_u8(1);
            out.put_u64_le(clock.instant_to_ms(at));
        }
    }
    put_publish(
        out,
        Publish {
            dup: false,
            qos: m.qos,
            retain: m.retain,
            topic: m.topic.clone(),
            packet_id: packet_id_for(m.qos),
            payload: m.payload.clone(),
            properties: m.properties.clone(),
        },
    )
}

/// `[will delay: flag u8, u32?][len u32][PUBLISH]`: the Will Delay Interval
/// is not a PUBLISH property, so it travels beside the packet.
fn put_will(out: &mut BytesMut, w: &LastWill) -> Result<(), CodecError> {
    let mut properties = w.properties.clone();
    let delay = properties
        .get_mut()
        .and_then(|p| p.will_delay_interval.take());
    properties.shrink();
    match delay {
        None => out.put_u8(0),
        Some(d) => {
            out.put_u8(1);
            out.put_u32_le(d);
        }
    }
    put_publish(
        out,
        Publish {
            dup: false,
            qos: w.qos,
            retain: w.retain,
            topic: w.topic.clone(),
            packet_id: packet_id_for(w.qos),
            payload: w.payload.clone(),
            properties,
        },
    )
}

/// A stored message and its expiry (wall ms), decoded only when asked.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StoredMessage {
    pub message: Message,
    pub expires_at_ms: Option<u64>,
}

/// A decoded operation. With `full == false` the message of a put is
/// checked for length only and left out (`None`), which is all replay needs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Op {
    PutRetained {
        topic: ByteString,
        message: Option<StoredMessage>,
    },
    DeleteRetained {
        topic: ByteString,
    },
    PutSession {
        client_id: ByteString,
        protocol: ProtocolVersion,
        expiry_interval: u32,
    },
    SessionOffline {
        client_id: ByteString,
        at_ms: u64,
        will: Option<LastWill>,
    },
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
    PutDelivery {
        client_id: ByteString,
        seq: u64,
        qos: QoS,
        retain: bool,
        sub_ids: SubIds,
        state: StoredState,
        message: Option<StoredMessage>,
    },
    DeleteDelivery {
        client_id: ByteString,
        seq: u64,
    },
    PutIncomingQos2 {
        client_id: ByteString,
        packet_id: u16,
    },
    DeleteIncomingQos2 {
        client_id: ByteString,
        packet_id: u16,
    },
}

/// Decodes one operation; the whole of `buf` must be used.
pub(crate) fn decode_op(buf: &[u8], full: bool) -> Result<Op, CodecError> {
    let mut r = Reader { buf };
    let tag = r.u8()?;
    let op = match tag {
        PUT_RETAINED => Op::PutRetained {
            topic: r.str()?,
            message: r.message(full)?,
        },
        DELETE_RETAINED => Op::DeleteRetained { topic: r.str()? },
        PUT_SESSION => Op::PutSession {
            client_id: r.str()?,
            protocol: match r.u8()? {
                3 => ProtocolVersion::V31,
                4 => ProtocolVersion::V311,
                5 => ProtocolVersion::V5,
                _ => return Err(CodecError::Invalid("protocol level")),
            },
            expiry_interval: r.u32()?,
        },
        SESSION_OFFLINE => Op::SessionOffline {
            client_id: r.str()?,
            at_ms: r.u64()?,
            will: match r.u8()? {
                0 => None,
                1 => Some(r.will()?),
                _ => return Err(CodecError::Invalid("will flag")),
            },
        },
        DELETE_SESSION => Op::DeleteSession {
            client_id: r.str()?,
        },
        PUT_SUBSCRIPTION => Op::PutSubscription {
            client_id: r.str()?,
            filter: r.str()?,
            subscription: {
                let qos = r.qos()?;
                let no_local = r.bool()?;
                let retain_as_published = r.bool()?;
                let retain_handling = match r.u8()? {
                    0 => RetainHandling::SendAtSubscribe,
                    1 => RetainHandling::SendAtSubscribeIfNew,
                    2 => RetainHandling::DoNotSend,
                    _ => return Err(CodecError::Invalid("retain handling")),
                };
                let identifier = match r.u8()? {
                    0 => None,
                    1 => Some(r.u32()?),
                    _ => return Err(CodecError::Invalid("identifier flag")),
                };
                Subscription {
                    options: SubscriptionOptions {
                        qos,
                        no_local,
                        retain_as_published,
                        retain_handling,
                    },
                    identifier,
                }
            },
        },
        DELETE_SUBSCRIPTION => Op::DeleteSubscription {
            client_id: r.str()?,
            filter: r.str()?,
        },
        PUT_DELIVERY => Op::PutDelivery {
            client_id: r.str()?,
            seq: r.u64()?,
            qos: r.qos()?,
            retain: r.bool()?,
            sub_ids: match r.u8()? {
                0 => SubIds::None,
                1 => SubIds::One(r.u32()?),
                2 => {
                    let n = r.u32()? as usize;
                    if n > r.buf.len() / 4 {
                        return Err(CodecError::Truncated);
                    }
                    let mut ids = Vec::with_capacity(n);
                    for _ in 0..n {
                        ids.push(r.u32()?);
                    }
                    SubIds::Many(ids)
                }
                _ => return Err(CodecError::Invalid("subscription identifiers")),
            },
            state: match r.u8()? {
                0 => StoredState::Queued,
                1 => {
                    let id = PacketId::new(r.u16()?).ok_or(CodecError::Invalid("packet id 0"))?;
                    let s = match r.u8()? {
                        0 => OutState::AwaitAck,
                        1 => OutState::AwaitComp,
                        _ => return Err(CodecError::Invalid("in-flight state")),
                    };
                    StoredState::InFlight(id, s)
                }
                _ => return Err(CodecError::Invalid("delivery state")),
            },
            message: r.message(full)?,
        },
        DELETE_DELIVERY => Op::DeleteDelivery {
            client_id: r.str()?,
            seq: r.u64()?,
        },
        PUT_INCOMING_QOS2 => Op::PutIncomingQos2 {
            client_id: r.str()?,
            packet_id: r.u16()?,
        },
        DELETE_INCOMING_QOS2 => Op::DeleteIncomingQos2 {
            client_id: r.str()?,
            packet_id: r.u16()?,
        },
        other => return Err(CodecError::UnknownTag(other)),
    };
    if !r.buf.is_empty() {
        return Err(CodecError::Trailing(r.buf.len()));
    }
    Ok(op)
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.buf.len() < n {
            return Err(CodecError::Truncated);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, CodecError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, CodecError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, CodecError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn bool(&mut self) -> Result<bool, CodecError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(CodecError::Invalid("boolean")),
        }
    }

    fn qos(&mut self) -> Result<QoS, CodecError> {
        QoS::from_u8(self.u8()?).ok_or(CodecError::Invalid("QoS"))
    }

    fn str(&mut self) -> Result<ByteString, CodecError> {
        let n = self.u32()? as usize;
        let bytes = self.take(n)?;
        std::str::from_utf8(bytes)
            .map(ByteString::from)
            .map_err(|_| CodecError::Invalid("UTF-8 string"))
    }

    fn publish(&mut self, full: bool) -> Result<Option<Publish>, CodecError> {
        let n = self.u32()? as usize;
        let bytes = self.take(n)?;
        if !full {
            return Ok(None);
        }
        let mut buf = BytesMut::from(bytes);
        match decode_packet(&mut buf, Some(ProtocolVersion::V5), usize::MAX) {
            Ok(Some(Packet::Publish(p))) if buf.is_empty() => Ok(Some(p)),
            Ok(Some(_)) => Err(CodecError::Packet("not a lone PUBLISH".into())),
            Ok(None) => Err(CodecError::Packet("incomplete PUBLISH".into())),
            Err(e) => Err(CodecError::Packet(e.to_string())),
        }
    }

    fn message(&mut self, full: bool) -> Result<Option<StoredMessage>, CodecError> {
        let expires_at_ms = match self.u8()? {
            0 => None,
            1 => Some(self.u64()?),
            _ => return Err(CodecError::Invalid("expiry flag")),
        };
        Ok(self.publish(full)?.map(|p| StoredMessage {
            message: Message {
                topic: p.topic,
                payload: p.payload,
                qos: p.qos,
                retain: p.retain,
                properties: p.properties,
                publisher: None,
                expires_at: None,
            },
            expires_at_ms,
        }))
    }

    fn will(&mut self) -> Result<LastWill, CodecError> {
        let delay = match self.u8()? {
            0 => None,
            1 => Some(self.u32()?),
            _ => return Err(CodecError::Invalid("will delay flag")),
        };
        let p = self.publish(true)?.ok_or(CodecError::Truncated)?;
        let mut properties = p.properties;
        if delay.is_some() {
            properties.will_delay_interval = delay;
        }
        Ok(LastWill {
            topic: p.topic,
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
            properties,
        })
    }
}

/// Encodes `op` into a fresh buffer (tests and one-off writes).
#[cfg(test)]
pub(crate) fn encode_one(op: &StoreOp, clock: &Clock) -> Result<bytes::Bytes, CodecError> {
    let mut b = BytesMut::new();
    encode_op(op, clock, &mut b)?;
    Ok(b.freeze())
}
