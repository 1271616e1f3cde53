//! Reading Mosquitto's persistence file (`mosquitto.db`) and turning what it
//! holds into Midge [`StoreOp`]s, for `midge_db_import`.
//!
//! # The format (versions 5 and 6: Mosquitto 1.6 and 2.0)
//!
//! ```text
//! magic, 15 bytes: 00 B5 00 "mosquitto db"
//! crc u32 (always 0, never checked) | db version u32
//! chunks: type u32 | length u32 | `length` bytes
//! ```
//!
//! The header's integers, the chunk header and every length or port field
//! are big-endian (`htonl`/`htons`); the 64-bit fields (`store_id`,
//! `expiry_time`, `session_expiry_time`, `last_db_id`) are written in the
//! writer's native byte order, read here as little-endian (every Debian
//! 64-bit architecture but s390x). Each chunk starts with a C struct written
//! as is (padding included), followed by its strings (not terminated), the
//! payload and, for messages, MQTT 5.0 properties as in a PUBLISH packet
//! (Variable Byte Integer length first):
//!
//! | type | fixed part (bytes) | then |
//! | --- | --- | --- |
//! | 1 CFG | last_db_id u64, shutdown u8, dbid_size u8, pad (16) | |
//! | 2 MSG_STORE | store_id u64, expiry_time i64, payloadlen u32, source_mid u16, source_id_len u16, source_username_len u16, topic_len u16, source_port u16, qos u8, retain u8 (32) | source id, source username, topic, payload, properties |
//! | 3 CLIENT_MSG | store_id u64, mid u16, id_len u16, qos u8, state u8, retain<<4 \| dup u8, direction u8 (16) | client id, properties |
//! | 4 RETAIN | store_id u64 (8) | |
//! | 5 SUB | identifier u32, id_len u16, topic_len u16, qos u8, options u8, pad (12) | client id, filter |
//! | 6 CLIENT | session_expiry_time i64, session_expiry_interval u32, last_mid u16, id_len u16, v6: listener_port u16, username_len u16, pad (v6: 24, v5: 16) | client id, v6: username |
//!
//! A writer whose `int64_t` is 4-byte aligned (i386) leaves out the padding
//! of CFG (12 bytes) and CLIENT (v6: 20); the CFG chunk's length tells.
//! Mosquitto writes CFG, every MSG_STORE, each CLIENT followed by its
//! CLIENT_MSGs, then SUBs, then RETAINs, and skips chunk types it does not
//! know. This reader does the same, but trusts no length: every field is
//! bounds-checked against its chunk and every chunk against the file, and
//! any inconsistency is a [`DbError`] naming the byte, never a panic.
//!
//! [`parse`] reads the file; [`convert`] maps it to store operations and
//! says what it left out and why.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use midge_codec::{
    decode_packet, validate_topic_filter, validate_topic_name, Packet, Props, ProtocolVersion, QoS,
    RetainHandling, SubscriptionOptions,
};
use midge_core::session::{OutState, SubIds, Subscription, NEVER_EXPIRES};
use midge_core::{Message, StoreOp, StoredState};

/// The first 15 bytes of every `mosquitto.db`.
pub const MAGIC: [u8; 15] = [
    0x00, 0xB5, 0x00, b'm', b'o', b's', b'q', b'u', b'i', b't', b't', b'o', b' ', b'd', b'b',
];

const CHUNK_CFG: u32 = 1;
const CHUNK_MSG_STORE: u32 = 2;
const CHUNK_CLIENT_MSG: u32 = 3;
const CHUNK_RETAIN: u32 = 4;
const CHUNK_SUB: u32 = 5;
const CHUNK_CLIENT: u32 = 6;

/// `mosquitto_msg_direction`.
const DIRECTION_IN: u8 = 0;
const DIRECTION_OUT: u8 = 1;

/// `mosquitto_msg_state` values that occur in a saved session.
mod state {
    pub const PUBLISH_QOS0: u8 = 1;
    pub const PUBLISH_QOS1: u8 = 2;
    pub const WAIT_FOR_PUBACK: u8 = 3;
    pub const PUBLISH_QOS2: u8 = 4;
    pub const WAIT_FOR_PUBREC: u8 = 5;
    pub const RESEND_PUBREL: u8 = 6;
    pub const WAIT_FOR_PUBCOMP: u8 = 9;
    pub const QUEUED: u8 = 11;
}

/// Why a file could not be read. One line each, for the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DbError {
    #[error("the file is empty")]
    Empty,
    #[error("not a Mosquitto persistence file (it does not start with Mosquitto's \"mosquitto db\" header)")]
    NotMosquitto,
    #[error("unsupported mosquitto.db format version {0} (midge_db_import reads versions 5 and 6, written by Mosquitto 1.6 and 2.x)")]
    UnsupportedVersion(u32),
    #[error("damaged mosquitto.db at byte {offset}: {what}")]
    Damaged { offset: usize, what: String },
}

fn damaged(offset: usize, what: impl Into<String>) -> DbError {
    DbError::Damaged {
        offset,
        what: what.into(),
    }
}

/// A message as Mosquitto stores it once, however many sessions hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub store_id: u64,
    /// Unix time (seconds) its Message Expiry Interval runs out; 0: never.
    pub expiry_time: i64,
    pub source_mid: u16,
    pub source_id: Bytes,
    pub source_username: Bytes,
    pub source_port: u16,
    pub topic: Bytes,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    pub properties: Props,
}

/// A session (`CLIENT` chunk).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientChunk {
    pub client_id: Bytes,
    /// Unix time (seconds) the session ends; 0 while connected, or never.
    pub session_expiry_time: i64,
    pub session_expiry_interval: u32,
    pub last_mid: u16,
    pub listener_port: u16,
    pub username: Bytes,
}

/// One copy of a stored message in a session (`CLIENT_MSG` chunk).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientMessage {
    pub store_id: u64,
    pub client_id: Bytes,
    pub mid: u16,
    /// The QoS this session gets it with.
    pub qos: QoS,
    /// `mosquitto_msg_state`.
    pub state: u8,
    pub retain: bool,
    pub dup: bool,
    /// 0 in (from the client), 1 out (to the client).
    pub direction: u8,
    /// The copy's own properties: its subscription identifiers.
    pub properties: Props,
}

/// A subscription (`SUB` chunk).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubChunk {
    pub client_id: Bytes,
    pub filter: Bytes,
    pub qos: u8,
    /// MQTT 5.0 options byte without the QoS bits (bit 2 No Local, bit 3
    /// Retain As Published, bits 4-5 Retain Handling).
    pub options: u8,
    /// Subscription identifier; 0: none.
    pub identifier: u32,
}

/// Everything a `mosquitto.db` holds, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MosquittoDb {
    pub version: u32,
    pub last_db_id: u64,
    /// Whether it was written at shutdown (rather than by autosave).
    pub shutdown: bool,
    pub messages: Vec<StoredMessage>,
    pub clients: Vec<ClientChunk>,
    pub client_messages: Vec<ClientMessage>,
    /// Store ids of retained messages.
    pub retained: Vec<u64>,
    pub subscriptions: Vec<SubChunk>,
    /// Chunks of a type this reader does not know: (type, byte offset).
    pub unknown_chunks: Vec<(u32, usize)>,
}

/// A bounds-checked reader over one chunk's bytes; offsets in errors are
/// relative to the whole file.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    /// File offset of `buf[0]`.
    base: usize,
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a [u8], base: usize) -> Cursor<'a> {
        Cursor { buf, pos: 0, base }
    }

    fn offset(&self) -> usize {
        self.base + self.pos
    }

    fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], DbError> {
        if n > self.left() {
            return Err(damaged(
                self.offset(),
                format!(
                    "{what} needs {n} bytes but only {} are left in its chunk",
                    self.left()
                ),
            ));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], DbError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    fn u8(&mut self, what: &str) -> Result<u8, DbError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn be16(&mut self, what: &str) -> Result<u16, DbError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    fn be32(&mut self, what: &str) -> Result<u32, DbError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    /// A native-order 64-bit field (see the module docs).
    fn ne64(&mut self, what: &str) -> Result<u64, DbError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn skip(&mut self, n: usize, what: &str) -> Result<(), DbError> {
        self.take(n, what).map(|_| ())
    }

    fn bytes(&mut self, n: usize, what: &str) -> Result<Bytes, DbError> {
        self.take(n, what).map(Bytes::copy_from_slice)
    }

    fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos..];
        self.pos = self.buf.len();
        s
    }

    /// The chunk must end here.
    fn end(&self, chunk: &str) -> Result<(), DbError> {
        if self.left() == 0 {
            Ok(())
        } else {
            Err(damaged(
                self.offset(),
                format!(
                    "{chunk} chunk has {} bytes more than its fields",
                    self.left()
                ),
            ))
        }
    }
}

/// Struct layout of the writer: whether `int64_t` members are 8-byte aligned.
#[derive(Clone, Copy)]
struct Layout {
    align8: bool,
}

/// Reads a whole `mosquitto.db`.
pub fn parse(file: &[u8]) -> Result<MosquittoDb, DbError> {
    if file.is_empty() {
        return Err(DbError::Empty);
    }
    if file.len() < MAGIC.len() || file[..MAGIC.len()] != MAGIC {
        return Err(DbError::NotMosquitto);
    }
    let mut head = Cursor::new(&file[MAGIC.len()..], MAGIC.len());
    head.be32("the header's checksum field")
        .map_err(|_| damaged(file.len(), "the file ends inside its header"))?;
    let version = head
        .be32("the format version")
        .map_err(|_| damaged(file.len(), "the file ends inside its header"))?;
    if version != 5 && version != 6 {
        return Err(DbError::UnsupportedVersion(version));
    }
    let mut db = MosquittoDb {
        version,
        ..MosquittoDb::default()
    };
    let mut pos = MAGIC.len() + 8;
    let mut layout: Option<Layout> = None;
    while pos < file.len() {
        let start = pos;
        if file.len() - pos < 8 {
            return Err(damaged(
                pos,
                format!(
                    "the file ends inside a chunk header ({} of 8 bytes)",
                    file.len() - pos
                ),
            ));
        }
        let mut h = Cursor::new(&file[pos..pos + 8], pos);
        let kind = h.be32("chunk type")?;
        let len = h.be32("chunk length")? as usize;
        pos += 8;
        if len > file.len() - pos {
            return Err(damaged(
                start,
                format!(
                    "chunk of type {kind} says it is {len} bytes long but only {} bytes are left in the file",
                    file.len() - pos
                ),
            ));
        }
        let mut c = Cursor::new(&file[pos..pos + len], pos);
        pos += len;
        if layout.is_none() && kind != CHUNK_CFG {
            return Err(damaged(
                start,
                format!(
                    "the first chunk must be the configuration chunk (type 1), not type {kind}"
                ),
            ));
        }
        match kind {
            CHUNK_CFG => {
                let align8 = match len {
                    16 => true,
                    12 => false,
                    _ => {
                        return Err(damaged(
                            start,
                            format!("configuration chunk of {len} bytes (expected 16)"),
                        ))
                    }
                };
                if layout.is_some() {
                    return Err(damaged(start, "a second configuration chunk"));
                }
                db.last_db_id = c.ne64("last_db_id")?;
                db.shutdown = c.u8("shutdown flag")? != 0;
                let dbid_size = c.u8("dbid_size")?;
                if dbid_size != 8 {
                    return Err(damaged(
                        start,
                        format!("message ids of {dbid_size} bytes (Mosquitto writes 8)"),
                    ));
                }
                c.rest();
                layout = Some(Layout { align8 });
            }
            CHUNK_MSG_STORE => db.messages.push(read_msg_store(&mut c)?),
            CHUNK_CLIENT_MSG => db.client_messages.push(read_client_msg(&mut c)?),
            CHUNK_RETAIN => {
                db.retained.push(c.ne64("retained message's store id")?);
                c.end("retained-message")?;
            }
            CHUNK_SUB => db.subscriptions.push(read_sub(&mut c)?),
            CHUNK_CLIENT => {
                let align8 = layout.is_some_and(|l| l.align8);
                db.clients.push(read_client(&mut c, version, align8)?);
            }
            other => db.unknown_chunks.push((other, start)),
        }
    }
    if layout.is_none() {
        return Err(damaged(
            file.len(),
            "the file ends before its configuration chunk",
        ));
    }
    Ok(db)
}

fn qos(v: u8, offset: usize, what: &str) -> Result<QoS, DbError> {
    QoS::from_u8(v).ok_or_else(|| damaged(offset, format!("{what} has QoS {v}")))
}

fn read_msg_store(c: &mut Cursor) -> Result<StoredMessage, DbError> {
    let store_id = c.ne64("message store id")?;
    let expiry_time = c.ne64("message expiry time")? as i64;
    let payload_len = c.be32("payload length")? as usize;
    let source_mid = c.be16("source mid")?;
    let source_id_len = usize::from(c.be16("source client id length")?);
    let source_username_len = usize::from(c.be16("source username length")?);
    let topic_len = usize::from(c.be16("topic length")?);
    let source_port = c.be16("source port")?;
    let at = c.offset();
    let q = qos(c.u8("message QoS")?, at, "a stored message")?;
    let retain = c.u8("retain flag")? != 0;
    let source_id = c.bytes(source_id_len, "the source client id")?;
    let source_username = c.bytes(source_username_len, "the source username")?;
    let topic = c.bytes(topic_len, "the topic")?;
    let payload = c.bytes(payload_len, "the payload")?;
    let props_at = c.offset();
    let properties = read_properties(c.rest(), props_at)?;
    Ok(StoredMessage {
        store_id,
        expiry_time,
        source_mid,
        source_id,
        source_username,
        source_port,
        topic,
        payload,
        qos: q,
        retain,
        properties,
    })
}

fn read_client_msg(c: &mut Cursor) -> Result<ClientMessage, DbError> {
    let store_id = c.ne64("client message's store id")?;
    let mid = c.be16("client message's mid")?;
    let id_len = usize::from(c.be16("client id length")?);
    let at = c.offset();
    let q = qos(c.u8("client message's QoS")?, at, "a client message")?;
    let state = c.u8("client message's state")?;
    let retain_dup = c.u8("retain and dup flags")?;
    let direction = c.u8("direction")?;
    if direction != DIRECTION_IN && direction != DIRECTION_OUT {
        return Err(damaged(
            at + 3,
            format!("client message with direction {direction}"),
        ));
    }
    let client_id = c.bytes(id_len, "the client id")?;
    let props_at = c.offset();
    let properties = read_properties(c.rest(), props_at)?;
    Ok(ClientMessage {
        store_id,
        client_id,
        mid,
        qos: q,
        state,
        retain: retain_dup >> 4 != 0,
        dup: retain_dup & 0x0F != 0,
        direction,
        properties,
    })
}

fn read_sub(c: &mut Cursor) -> Result<SubChunk, DbError> {
    let identifier = c.be32("subscription identifier")?;
    let id_len = usize::from(c.be16("client id length")?);
    let topic_len = usize::from(c.be16("filter length")?);
    let qos = c.u8("subscription QoS")?;
    let options = c.u8("subscription options")?;
    c.skip(2, "subscription padding")?;
    let client_id = c.bytes(id_len, "the client id")?;
    let filter = c.bytes(topic_len, "the topic filter")?;
    c.end("subscription")?;
    Ok(SubChunk {
        client_id,
        filter,
        qos,
        options,
        identifier,
    })
}

fn read_client(c: &mut Cursor, version: u32, align8: bool) -> Result<ClientChunk, DbError> {
    let session_expiry_time = c.ne64("session expiry time")? as i64;
    let session_expiry_interval = c.be32("session expiry interval")?;
    let last_mid = c.be16("last mid")?;
    let id_len = usize::from(c.be16("client id length")?);
    let (listener_port, username_len) = if version == 6 {
        let port = c.be16("listener port")?;
        let user = usize::from(c.be16("username length")?);
        if align8 {
            c.skip(4, "client padding")?;
        }
        (port, user)
    } else {
        (0, 0)
    };
    let at = c.offset();
    let client_id = c.bytes(id_len, "the client id")?;
    if client_id.is_empty() {
        return Err(damaged(at, "a session with an empty client id"));
    }
    let username = c.bytes(username_len, "the username")?;
    c.end("client")?;
    Ok(ClientChunk {
        client_id,
        session_expiry_time,
        session_expiry_interval,
        last_mid,
        listener_port,
        username,
    })
}

/// Decodes a property block as it sits in a PUBLISH (length first) by
/// decoding a PUBLISH around it, so the rules are `midge-codec`'s.
fn read_properties(raw: &[u8], offset: usize) -> Result<Props, DbError> {
    if raw.is_empty() {
        return Ok(Props::new());
    }
    // Topic "a" (3 bytes), QoS 0 (no packet id), properties, empty payload.
    let remaining = 3 + raw.len();
    let mut buf = BytesMut::with_capacity(remaining + 8);
    buf.extend_from_slice(&[0x30]);
    let mut n = remaining;
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        buf.extend_from_slice(&[b]);
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&[0, 1, b'a']);
    buf.extend_from_slice(raw);
    let bad = |why: String| damaged(offset, format!("unreadable MQTT 5.0 properties: {why}"));
    match decode_packet(&mut buf, Some(ProtocolVersion::V5), usize::MAX) {
        Ok(Some(Packet::Publish(p))) if p.payload.is_empty() && buf.is_empty() => Ok(p.properties),
        Ok(Some(_)) => Err(bad(format!(
            "{} bytes do not form one property list",
            raw.len()
        ))),
        Ok(None) => Err(bad("the property list is cut short".into())),
        Err(e) => Err(bad(e.to_string())),
    }
}

/// Counts of what [`convert`] produced and what it left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub retained: usize,
    pub sessions: usize,
    pub subscriptions: usize,
    /// Queued and in-flight messages (one per session holding it).
    pub messages: usize,
    /// Of `messages`, those in flight (sent, awaiting acknowledgement).
    pub in_flight: usize,
    /// Incoming QoS 2 messages Mosquitto had acknowledged with PUBREC and
    /// held for their PUBREL ([`Conversion::unreleased`]).
    pub unreleased: usize,
    /// Why something was left out, and how many times.
    pub skipped: BTreeMap<String, usize>,
}

impl Summary {
    /// Counts one thing left out, by reason.
    pub fn skip(&mut self, reason: impl Into<String>) {
        *self.skipped.entry(reason.into()).or_default() += 1;
    }
}

/// The operations that rebuild a file's state in a Midge store, in the
/// order to apply them: retained messages, then per session `PutSession`,
/// `SessionOffline`, its subscriptions and its messages.
#[derive(Debug, Clone, Default)]
pub struct Conversion {
    pub ops: Vec<StoreOp>,
    /// Incoming QoS 2 messages awaiting their PUBREL, in file order. No
    /// store operation can hold one: Mosquitto delivers such a message on
    /// PUBREL, Midge on PUBLISH and keeps only the packet id. The importer
    /// hands them to the broker core once `ops` are written
    /// (`Broker::adopt_unreleased_qos2`), which delivers them.
    pub unreleased: Vec<Unreleased>,
    pub summary: Summary,
}

/// An incoming QoS 2 message from `client_id`, acknowledged with PUBREC by
/// Mosquitto, its PUBREL not yet come.
#[derive(Debug, Clone)]
pub struct Unreleased {
    pub client_id: ByteString,
    pub packet_id: std::num::NonZeroU16,
    pub message: Message,
}

/// Maps a parsed file to store operations. `now_unix` (seconds) and `now`
/// are the same moment: expiry times in the file are wall-clock, Midge's
/// are `Instant`s.
pub fn convert(db: &MosquittoDb, now_unix: i64, now: Instant) -> Conversion {
    let mut out = Conversion::default();
    let sum = &mut out.summary;

    // Messages by store id; `None`: present but unusable (reason counted
    // where it is referenced).
    let mut messages: HashMap<u64, Result<Arc<Message>, &'static str>> = HashMap::new();
    for m in &db.messages {
        messages
            .entry(m.store_id)
            .or_insert_with(|| to_message(m, now_unix, now));
    }

    for id in &db.retained {
        match messages.get(id) {
            None => sum.skip("retained message whose stored message is not in the file"),
            Some(Err(why)) => sum.skip(format!("retained message: {why}")),
            Some(Ok(m)) => {
                let mut m = Message::clone(m);
                m.retain = true;
                out.ops.push(StoreOp::PutRetained {
                    message: Arc::new(m),
                });
                sum.retained += 1;
            }
        }
    }

    // Sessions kept, by client id, with the reason others were dropped.
    let mut kept: HashSet<&[u8]> = HashSet::new();
    let mut dropped: HashMap<&[u8], String> = HashMap::new();
    let mut session_order: Vec<(&ClientChunk, ByteString, u32)> = Vec::new();
    for c in &db.clients {
        let id: &[u8] = &c.client_id;
        if kept.contains(id) || dropped.contains_key(id) {
            sum.skip("session listed twice in the file (the first is kept)");
            continue;
        }
        let why = match ByteString::try_from(c.client_id.clone()) {
            Err(_) => Err("its client id is not UTF-8".to_string()),
            Ok(client_id) => session_expiry(c, now_unix).map(|e| (client_id, e)),
        };
        match why {
            Ok((client_id, expiry)) => {
                kept.insert(id);
                session_order.push((c, client_id, expiry));
            }
            Err(why) => {
                sum.skip(format!("session: {why}"));
                dropped.insert(id, why);
            }
        }
    }

    let mut subs_by_client: HashMap<&[u8], Vec<&SubChunk>> = HashMap::new();
    for s in &db.subscriptions {
        let id: &[u8] = &s.client_id;
        if kept.contains(id) {
            subs_by_client.entry(id).or_default().push(s);
        } else if let Some(why) = dropped.get(id) {
            sum.skip(format!("subscription of a session left out ({why})"));
        } else {
            sum.skip("subscription of a client with no session in the file");
        }
    }
    let mut msgs_by_client: HashMap<&[u8], Vec<&ClientMessage>> = HashMap::new();
    for m in &db.client_messages {
        let id: &[u8] = &m.client_id;
        if kept.contains(id) {
            msgs_by_client.entry(id).or_default().push(m);
        } else if let Some(why) = dropped.get(id) {
            sum.skip(format!("queued message of a session left out ({why})"));
        } else {
            sum.skip("queued message of a client with no session in the file");
        }
    }

    for (c, client_id, expiry_interval) in session_order {
        let id: &[u8] = &c.client_id;
        let subs = subs_by_client.remove(id).unwrap_or_default();
        let msgs = msgs_by_client.remove(id).unwrap_or_default();
        // Mosquitto does not store the protocol. A finite expiry interval
        // or a 5.0-only subscription feature means 5.0; otherwise 3.1.1 (a
        // reconnecting client sets its own anyway).
        let v5 = c.session_expiry_interval != NEVER_EXPIRES
            || subs.iter().any(|s| s.identifier != 0 || s.options != 0);
        out.ops.push(StoreOp::PutSession {
            client_id: client_id.clone(),
            protocol: if v5 {
                ProtocolVersion::V5
            } else {
                ProtocolVersion::V311
            },
            expiry_interval,
        });
        out.ops.push(StoreOp::SessionOffline {
            client_id: client_id.clone(),
            will: None,
        });
        sum.sessions += 1;

        for s in subs {
            match to_subscription(s) {
                Ok((filter, subscription)) => {
                    out.ops.push(StoreOp::PutSubscription {
                        client_id: client_id.clone(),
                        filter,
                        subscription,
                    });
                    sum.subscriptions += 1;
                }
                Err(why) => sum.skip(format!("subscription: {why}")),
            }
        }

        let mut seq = 0u64;
        for m in msgs {
            let message = match messages.get(&m.store_id) {
                None => {
                    sum.skip("queued message whose stored message is not in the file");
                    continue;
                }
                Some(Err(why)) => {
                    sum.skip(format!("queued message: {why}"));
                    continue;
                }
                Some(Ok(message)) => message,
            };
            if m.direction == DIRECTION_IN {
                // Mosquitto keeps only QoS 2 messages in this direction, from
                // PUBLISH to PUBREL (states wait_for_pubrel and send_pubrec).
                match std::num::NonZeroU16::new(m.mid) {
                    Some(packet_id) if m.qos == QoS::ExactlyOnce => {
                        let mut message = Message::clone(message);
                        message.retain = m.retain;
                        out.unreleased.push(Unreleased {
                            client_id: client_id.clone(),
                            packet_id,
                            message,
                        });
                        sum.unreleased += 1;
                    }
                    _ => sum.skip("incoming message other than QoS 2 with a packet id"),
                }
                continue;
            }
            let stored = match delivery_state(m) {
                Ok(s) => s,
                Err(why) => {
                    sum.skip(why);
                    continue;
                }
            };
            let mut sub_ids = SubIds::None;
            for id in &m.properties.subscription_identifiers {
                sub_ids.push(*id);
            }
            seq += 1;
            if matches!(stored, StoredState::InFlight(..)) {
                sum.in_flight += 1;
            }
            out.ops.push(StoreOp::PutDelivery {
                client_id: client_id.clone(),
                seq,
                message: message.clone(),
                qos: m.qos,
                retain: m.retain,
                sub_ids,
                state: stored,
            });
            sum.messages += 1;
        }
    }

    for (kind, _) in &db.unknown_chunks {
        sum.skip(format!("chunk of unknown type {kind}"));
    }
    out
}

/// The expiry interval to store for a session, or why it is left out.
fn session_expiry(c: &ClientChunk, now_unix: i64) -> Result<u32, String> {
    let interval = c.session_expiry_interval;
    if interval == 0 {
        return Err("Session Expiry Interval 0 (it ends with its connection)".into());
    }
    if interval == NEVER_EXPIRES {
        return Ok(NEVER_EXPIRES);
    }
    if c.session_expiry_time == 0 {
        // Connected when the file was written: the whole interval is left.
        return Ok(interval);
    }
    let left = c.session_expiry_time.saturating_sub(now_unix);
    if left <= 0 {
        return Err("its Session Expiry Interval has run out".into());
    }
    Ok(u32::try_from(left).unwrap_or(u32::MAX).min(interval))
}

fn to_message(
    m: &StoredMessage,
    now_unix: i64,
    now: Instant,
) -> Result<Arc<Message>, &'static str> {
    let expires_at = if m.expiry_time > 0 {
        let left = m.expiry_time.saturating_sub(now_unix);
        if left <= 0 {
            return Err("its Message Expiry Interval has run out");
        }
        now.checked_add(Duration::from_secs(left.unsigned_abs()))
    } else {
        None
    };
    let Ok(topic) = ByteString::try_from(m.topic.clone()) else {
        return Err("its topic is not UTF-8");
    };
    if validate_topic_name(&topic).is_err() {
        return Err("its topic is not a valid topic name");
    }
    let mut properties = m.properties.clone();
    // Carried by `expires_at` and per copy, as the broker keeps them.
    if let Some(p) = properties.get_mut() {
        p.message_expiry_interval = None;
        p.topic_alias = None;
        p.subscription_identifiers.clear();
    }
    properties.shrink();
    Ok(Arc::new(Message {
        topic,
        payload: m.payload.clone(),
        qos: m.qos,
        retain: m.retain,
        properties,
        publisher: None,
        expires_at,
    }))
}

fn to_subscription(s: &SubChunk) -> Result<(ByteString, Subscription), String> {
    let Ok(filter) = ByteString::try_from(s.filter.clone()) else {
        return Err("its topic filter is not UTF-8".into());
    };
    if validate_topic_filter(&filter).is_err() {
        return Err(format!("invalid topic filter \"{filter}\""));
    }
    let Some(qos) = QoS::from_u8(s.qos) else {
        return Err(format!("QoS {} on \"{filter}\"", s.qos));
    };
    let retain_handling = match (s.options >> 4) & 0x03 {
        1 => RetainHandling::SendAtSubscribeIfNew,
        2 => RetainHandling::DoNotSend,
        _ => RetainHandling::SendAtSubscribe,
    };
    let options = SubscriptionOptions {
        qos,
        no_local: s.options & 0x04 != 0,
        retain_as_published: s.options & 0x08 != 0,
        retain_handling,
    };
    let identifier = (s.identifier != 0).then_some(s.identifier);
    Ok((
        filter,
        Subscription {
            options,
            identifier,
        },
    ))
}

/// Where an outgoing copy stands in Midge, from Mosquitto's state.
fn delivery_state(m: &ClientMessage) -> Result<StoredState, String> {
    let packet_id = std::num::NonZeroU16::new(m.mid);
    let in_flight = |s: OutState| match packet_id {
        Some(id) => StoredState::InFlight(id, s),
        None => StoredState::Queued,
    };
    Ok(match m.state {
        _ if m.qos == QoS::AtMostOnce => StoredState::Queued,
        state::QUEUED | state::PUBLISH_QOS0 => StoredState::Queued,
        // Due to be sent but not sent yet, unless it is a resend.
        state::PUBLISH_QOS1 | state::PUBLISH_QOS2 if !m.dup => StoredState::Queued,
        state::PUBLISH_QOS1 | state::PUBLISH_QOS2 => in_flight(OutState::AwaitAck),
        state::WAIT_FOR_PUBACK | state::WAIT_FOR_PUBREC => in_flight(OutState::AwaitAck),
        state::RESEND_PUBREL | state::WAIT_FOR_PUBCOMP => in_flight(OutState::AwaitComp),
        other => {
            return Err(format!(
                "outgoing message in a state Mosquitto does not save for it ({other})"
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written by Debian's Mosquitto 2.0.11 (`crates/midge/tests/db_import.rs`
    /// regenerates it): retained `r/one`, `r/two` (5.0 user property and
    /// content type), `r/exp` (expiry 3600 s); sessions `sub311` (3.1.1,
    /// `x/#` QoS 1), `sub5` (5.0, expiry 7200 s, `x/#` and `y/+` QoS 2 with
    /// identifier 7), `inflight1` (`z/#`, one QoS 1 message sent and never
    /// acknowledged); five messages queued to `sub311`/`sub5` while offline.
    const FIXTURE: &[u8] = include_bytes!("../../midge/tests/data/mosquitto-2.0.11.db");

    fn client<'a>(db: &'a MosquittoDb, id: &str) -> &'a ClientChunk {
        db.clients
            .iter()
            .find(|c| c.client_id == id.as_bytes())
            .expect("client in fixture")
    }

    /// The moment the fixture was written (sub5 expires 7200 s after).
    fn written_at(db: &MosquittoDb) -> i64 {
        client(db, "sub5").session_expiry_time - 7200
    }

    fn sessions(ops: &[StoreOp]) -> Vec<(String, ProtocolVersion, u32)> {
        ops.iter()
            .filter_map(|op| match op {
                StoreOp::PutSession {
                    client_id,
                    protocol,
                    expiry_interval,
                } => Some((client_id.to_string(), *protocol, *expiry_interval)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn reads_the_fixture() {
        let db = parse(FIXTURE).expect("fixture parses");
        assert_eq!(db.version, 6);
        assert!(db.shutdown);
        assert_eq!(db.retained.len(), 3);
        assert_eq!(db.clients.len(), 3);
        assert_eq!(db.subscriptions.len(), 4);
        assert_eq!(db.client_messages.len(), 10);
        assert!(db.unknown_chunks.is_empty());
        assert_eq!(client(&db, "sub311").session_expiry_interval, NEVER_EXPIRES);
        assert_eq!(client(&db, "sub5").session_expiry_interval, 7200);
        let topics: HashSet<&[u8]> = db.messages.iter().map(|m| &m.topic[..]).collect();
        for t in ["r/one", "r/two", "r/exp", "x/q1", "y/z", "z/1"] {
            assert!(topics.contains(t.as_bytes()), "{t}");
        }
        let two = db
            .messages
            .iter()
            .find(|m| m.topic == "r/two")
            .expect("r/two");
        assert_eq!(&two.payload[..], b"retained two");
        assert_eq!(two.properties.content_type.as_deref(), Some("text/plain"));
        assert_eq!(two.properties.user_properties.len(), 1);
        let inflight: Vec<_> = db
            .client_messages
            .iter()
            .filter(|m| m.client_id == "inflight1")
            .collect();
        assert_eq!(inflight.len(), 1);
        assert_eq!(inflight[0].state, state::WAIT_FOR_PUBACK);
        assert_ne!(inflight[0].mid, 0);
        let sub5 = db
            .subscriptions
            .iter()
            .find(|s| s.client_id == "sub5")
            .expect("sub5 subscription");
        assert_eq!((sub5.qos, sub5.identifier), (2, 7));
    }

    #[test]
    fn converts_the_fixture() {
        let db = parse(FIXTURE).expect("fixture parses");
        let now_unix = written_at(&db) + 10;
        let now = Instant::now();
        let c = convert(&db, now_unix, now);
        let s = &c.summary;
        assert_eq!(
            (
                s.retained,
                s.sessions,
                s.subscriptions,
                s.messages,
                s.in_flight
            ),
            (3, 3, 4, 10, 1)
        );
        assert!(s.skipped.is_empty(), "{:?}", s.skipped);
        let mut got = sessions(&c.ops);
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            got,
            [
                (
                    "inflight1".to_string(),
                    ProtocolVersion::V311,
                    NEVER_EXPIRES
                ),
                ("sub311".to_string(), ProtocolVersion::V311, NEVER_EXPIRES),
                ("sub5".to_string(), ProtocolVersion::V5, 7190),
            ]
        );
        for op in &c.ops {
            match op {
                StoreOp::PutRetained { message } if message.topic == "r/exp" => {
                    let stored = db
                        .messages
                        .iter()
                        .find(|m| m.topic == "r/exp")
                        .expect("r/exp");
                    let left = message.expires_at.expect("expiry").duration_since(now);
                    let expected = stored.expiry_time - now_unix;
                    assert!((3580..=3600).contains(&expected), "{expected}");
                    assert_eq!(left, Duration::from_secs(expected.unsigned_abs()));
                }
                StoreOp::PutRetained { message } => {
                    assert!(message.expires_at.is_none() && message.retain);
                }
                StoreOp::PutSubscription {
                    client_id,
                    subscription,
                    ..
                } if client_id == "sub5" => {
                    assert_eq!(subscription.identifier, Some(7));
                    assert_eq!(subscription.options.qos, QoS::ExactlyOnce);
                }
                StoreOp::PutDelivery {
                    client_id,
                    sub_ids,
                    state,
                    ..
                } if client_id == "sub5" => {
                    assert_eq!(*sub_ids, SubIds::One(7));
                    assert_eq!(*state, StoredState::Queued);
                }
                StoreOp::PutDelivery {
                    client_id, state, ..
                } if client_id == "inflight1" => {
                    assert!(matches!(
                        state,
                        StoredState::InFlight(_, OutState::AwaitAck)
                    ));
                }
                _ => {}
            }
        }
        // Each session: PutSession, then SessionOffline, before its own ops.
        let mut seen = HashSet::new();
        for op in &c.ops {
            match op {
                StoreOp::PutSession { client_id, .. } => {
                    seen.insert(client_id.clone());
                }
                StoreOp::PutSubscription { client_id, .. }
                | StoreOp::PutDelivery { client_id, .. }
                | StoreOp::SessionOffline { client_id, .. } => {
                    assert!(seen.contains(client_id), "{client_id} before its session");
                }
                _ => {}
            }
        }
    }

    #[test]
    fn expiry_counts_from_when_mosquitto_wrote_the_file() {
        let db = parse(FIXTURE).expect("fixture parses");
        let c = convert(&db, written_at(&db) + 8000, Instant::now());
        let s = &c.summary;
        assert_eq!((s.retained, s.sessions, s.messages), (2, 2, 5));
        assert_eq!(
            s.skipped
                .get("retained message: its Message Expiry Interval has run out"),
            Some(&1)
        );
        assert_eq!(
            s.skipped
                .get("session: its Session Expiry Interval has run out"),
            Some(&1)
        );
        assert_eq!(s.skipped.values().sum::<usize>(), 1 + 1 + 2 + 5);
    }

    /// Offsets where a chunk ends (a file cut there is a valid, shorter one).
    fn chunk_ends(file: &[u8]) -> Vec<usize> {
        let mut ends = Vec::new();
        let mut pos = MAGIC.len() + 8;
        while pos + 8 <= file.len() {
            let len = u32::from_be_bytes(file[pos + 4..pos + 8].try_into().expect("4"));
            pos += 8 + len as usize;
            ends.push(pos);
        }
        ends
    }

    #[test]
    fn every_truncation_is_refused_or_a_shorter_whole_file() {
        let ends = chunk_ends(FIXTURE);
        assert_eq!(ends.last(), Some(&FIXTURE.len()));
        for n in 0..FIXTURE.len() {
            match parse(&FIXTURE[..n]) {
                Ok(db) => {
                    assert!(ends.contains(&n), "cut at {n} accepted");
                    let _ = convert(&db, 0, Instant::now());
                }
                Err(e) => {
                    assert!(!ends.contains(&n), "cut at chunk end {n} refused: {e}");
                    let msg = e.to_string();
                    assert!(!msg.is_empty() && !msg.contains('\n'), "{msg}");
                    if n > MAGIC.len() + 8 {
                        assert!(
                            matches!(e, DbError::Damaged { offset, .. } if offset <= n),
                            "cut at {n}: {e}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn garbled_bytes_never_panic() {
        let mut file = FIXTURE.to_vec();
        for i in 0..file.len() {
            let orig = file[i];
            for v in [0x00, 0xFF, 0x7F, 0x80, orig ^ 0x01, orig.wrapping_add(16)] {
                file[i] = v;
                if let Ok(db) = parse(&file) {
                    let _ = convert(&db, 0, Instant::now());
                }
            }
            file[i] = orig;
        }
    }

    #[test]
    fn foreign_files_and_versions() {
        assert_eq!(parse(b""), Err(DbError::Empty));
        assert_eq!(parse(b"SQLite format 3\0"), Err(DbError::NotMosquitto));
        for v in [0u32, 2, 3, 4, 7, u32::MAX] {
            let mut f = FIXTURE.to_vec();
            f[19..23].copy_from_slice(&v.to_be_bytes());
            assert_eq!(parse(&f), Err(DbError::UnsupportedVersion(v)));
        }
        let e = parse(&FIXTURE[..MAGIC.len() + 8]).expect_err("no CFG chunk");
        assert!(e.to_string().contains("configuration chunk"), "{e}");
    }

    // --- Hand-built files -------------------------------------------------

    struct File(Vec<u8>);

    impl File {
        fn new(version: u32) -> File {
            let mut f = File(MAGIC.to_vec());
            f.0.extend_from_slice(&0u32.to_be_bytes());
            f.0.extend_from_slice(&version.to_be_bytes());
            let mut cfg = 42u64.to_le_bytes().to_vec();
            cfg.extend_from_slice(&[1, 8, 0, 0, 0, 0, 0, 0]);
            f.chunk(CHUNK_CFG, &cfg)
        }

        fn chunk(mut self, kind: u32, body: &[u8]) -> File {
            self.0.extend_from_slice(&kind.to_be_bytes());
            self.0
                .extend_from_slice(&u32::try_from(body.len()).expect("len").to_be_bytes());
            self.0.extend_from_slice(body);
            self
        }

        fn message(self, id: u64, topic: &str, payload: &[u8], qos: u8, props: &[u8]) -> File {
            let mut b = id.to_le_bytes().to_vec();
            b.extend_from_slice(&0i64.to_le_bytes());
            b.extend_from_slice(&u32::try_from(payload.len()).expect("len").to_be_bytes());
            b.extend_from_slice(&0u16.to_be_bytes()); // source mid
            b.extend_from_slice(&3u16.to_be_bytes()); // source id
            b.extend_from_slice(&0u16.to_be_bytes()); // source username
            b.extend_from_slice(&u16::try_from(topic.len()).expect("len").to_be_bytes());
            b.extend_from_slice(&1883u16.to_be_bytes());
            b.extend_from_slice(&[qos, 0]);
            b.extend_from_slice(b"pub");
            b.extend_from_slice(topic.as_bytes());
            b.extend_from_slice(payload);
            b.extend_from_slice(props);
            self.chunk(CHUNK_MSG_STORE, &b)
        }

        fn client(self, id: &str, expiry_time: i64, interval: u32) -> File {
            let mut b = expiry_time.to_le_bytes().to_vec();
            b.extend_from_slice(&interval.to_be_bytes());
            b.extend_from_slice(&0u16.to_be_bytes());
            b.extend_from_slice(&u16::try_from(id.len()).expect("len").to_be_bytes());
            b.extend_from_slice(&1883u16.to_be_bytes());
            b.extend_from_slice(&4u16.to_be_bytes());
            b.extend_from_slice(&[0; 4]);
            b.extend_from_slice(id.as_bytes());
            b.extend_from_slice(b"user");
            self.chunk(CHUNK_CLIENT, &b)
        }

        #[allow(clippy::too_many_arguments)]
        fn client_msg(
            self,
            store: u64,
            id: &str,
            mid: u16,
            qos: u8,
            st: u8,
            dup: bool,
            dir: u8,
            props: &[u8],
        ) -> File {
            let mut b = store.to_le_bytes().to_vec();
            b.extend_from_slice(&mid.to_be_bytes());
            b.extend_from_slice(&u16::try_from(id.len()).expect("len").to_be_bytes());
            b.extend_from_slice(&[qos, st, u8::from(dup), dir]);
            b.extend_from_slice(id.as_bytes());
            b.extend_from_slice(props);
            self.chunk(CHUNK_CLIENT_MSG, &b)
        }

        fn sub(self, id: &str, filter: &str, qos: u8, options: u8, identifier: u32) -> File {
            let mut b = identifier.to_be_bytes().to_vec();
            b.extend_from_slice(&u16::try_from(id.len()).expect("len").to_be_bytes());
            b.extend_from_slice(&u16::try_from(filter.len()).expect("len").to_be_bytes());
            b.extend_from_slice(&[qos, options, 0, 0]);
            b.extend_from_slice(id.as_bytes());
            b.extend_from_slice(filter.as_bytes());
            self.chunk(CHUNK_SUB, &b)
        }

        fn retain(self, id: u64) -> File {
            self.chunk(CHUNK_RETAIN, &id.to_le_bytes())
        }
    }

    fn convert_now(f: &File) -> Conversion {
        convert(&parse(&f.0).expect("parses"), 1_000_000, Instant::now())
    }

    #[test]
    fn subscription_options_and_states() {
        let f = File::new(6)
            .message(1, "a/b", b"hello", 2, &[])
            .client("c", 0, 600)
            .client_msg(
                1,
                "c",
                5,
                1,
                state::WAIT_FOR_PUBACK,
                false,
                DIRECTION_OUT,
                &[],
            )
            .client_msg(
                1,
                "c",
                6,
                2,
                state::WAIT_FOR_PUBCOMP,
                false,
                DIRECTION_OUT,
                &[],
            )
            .client_msg(1, "c", 7, 2, state::PUBLISH_QOS2, true, DIRECTION_OUT, &[])
            .client_msg(1, "c", 8, 2, state::PUBLISH_QOS2, false, DIRECTION_OUT, &[])
            .client_msg(1, "c", 0, 0, state::PUBLISH_QOS0, false, DIRECTION_OUT, &[])
            // Incoming, QoS 2, wait_for_pubrel (7), retain set (0x10).
            .chunk(CHUNK_CLIENT_MSG, &{
                let mut b = 1u64.to_le_bytes().to_vec();
                b.extend_from_slice(&[0, 9, 0, 1, 2, 7, 0x10, DIRECTION_IN, b'c']);
                b
            })
            .client_msg(1, "c", 12, 1, 7, false, DIRECTION_IN, &[])
            .client_msg(1, "c", 10, 1, 7, false, DIRECTION_OUT, &[])
            .client_msg(99, "c", 11, 1, state::QUEUED, false, DIRECTION_OUT, &[])
            .sub("c", "a/#", 1, 0x04 | 0x08 | 0x20, 0)
            .sub("c", "a/#/b", 1, 0, 0)
            .sub("c", "b", 3, 0, 0)
            .sub("nobody", "a", 0, 0, 0)
            .retain(1)
            .retain(2);
        let c = convert_now(&f);
        let states: Vec<StoredState> = c
            .ops
            .iter()
            .filter_map(|op| match op {
                StoreOp::PutDelivery { state, .. } => Some(*state),
                _ => None,
            })
            .collect();
        let id = |n| std::num::NonZeroU16::new(n).expect("nonzero");
        assert_eq!(
            states,
            [
                StoredState::InFlight(id(5), OutState::AwaitAck),
                StoredState::InFlight(id(6), OutState::AwaitComp),
                StoredState::InFlight(id(7), OutState::AwaitAck),
                StoredState::Queued,
                StoredState::Queued,
            ]
        );
        let sub = c
            .ops
            .iter()
            .find_map(|op| match op {
                StoreOp::PutSubscription { subscription, .. } => Some(*subscription),
                _ => None,
            })
            .expect("a/#");
        assert!(sub.options.no_local && sub.options.retain_as_published);
        assert_eq!(sub.options.retain_handling, RetainHandling::DoNotSend);
        let s = &c.summary;
        assert_eq!(
            (s.retained, s.sessions, s.subscriptions, s.messages),
            (1, 1, 1, 5)
        );
        let skipped: Vec<&str> = s.skipped.keys().map(String::as_str).collect();
        assert_eq!(skipped.len(), 7, "{skipped:#?}");
        assert!(skipped.contains(&"incoming message other than QoS 2 with a packet id"));
        assert_eq!(sessions(&c.ops), [("c".into(), ProtocolVersion::V5, 600)]);
        // The incoming QoS 2 message awaiting its PUBREL is handed on, with
        // the retain flag its publisher set.
        assert_eq!(s.unreleased, 1);
        let u = &c.unreleased[0];
        assert_eq!((u.client_id.as_ref(), u.packet_id.get()), ("c", 9));
        assert_eq!(
            (u.message.topic.as_ref(), &u.message.payload[..]),
            ("a/b", &b"hello"[..])
        );
        assert!(u.message.retain);
    }

    #[test]
    fn sessions_left_out_take_their_subscriptions_and_messages() {
        let f = File::new(6)
            .message(1, "t", b"", 1, &[])
            .client("zero", 0, 0)
            .client_msg(1, "zero", 1, 1, state::QUEUED, false, DIRECTION_OUT, &[])
            .sub("zero", "t", 1, 0, 0)
            .client("gone", 999_000, 3600)
            .client("kept", 1_000_500, 3600)
            .client("kept", 0, 60)
            .chunk(77, b"future");
        let c = convert_now(&f);
        assert_eq!(
            sessions(&c.ops),
            [("kept".into(), ProtocolVersion::V5, 500)]
        );
        let skipped = &c.summary.skipped;
        assert_eq!(skipped.len(), 6, "{skipped:#?}");
        assert!(skipped.contains_key("chunk of unknown type 77"));
    }

    #[test]
    fn properties_are_checked() {
        // User property "k"="v", then a property PUBLISH may not carry.
        let good = [7, 0x26, 0, 1, b'k', 0, 1, b'v'];
        let f = File::new(6).message(1, "t", b"p", 0, &good);
        let db = parse(&f.0).expect("parses");
        assert_eq!(db.messages[0].properties.user_properties.len(), 1);
        for bad in [
            &[2, 0x11, 0][..],                  // session expiry in a PUBLISH
            &[9, 0x26, 0, 1, b'k', 0, 1, b'v'], // list longer than its bytes
            &[0x80],                            // cut-short length
            &[1, 0x01, 1],                      // bytes after the list
        ] {
            let f = File::new(6).message(1, "t", b"p", 0, bad);
            let e = parse(&f.0).expect_err("bad properties");
            assert!(e.to_string().contains("properties"), "{e}");
        }
    }

    #[test]
    fn other_layouts() {
        // Version 5 (Mosquitto 1.6): no listener port and username.
        let mut b = 0i64.to_le_bytes().to_vec();
        b.extend_from_slice(&u32::MAX.to_be_bytes());
        b.extend_from_slice(&3u16.to_be_bytes());
        b.extend_from_slice(&2u16.to_be_bytes());
        b.extend_from_slice(b"v5");
        let db = parse(&File::new(5).chunk(CHUNK_CLIENT, &b).0).expect("v5 client");
        assert_eq!(db.clients[0].client_id, "v5");
        assert_eq!(db.clients[0].last_mid, 3);
        // A 4-byte-aligned writer (i386): 12-byte CFG, 20-byte CLIENT.
        let mut f = MAGIC.to_vec();
        f.extend_from_slice(&0u32.to_be_bytes());
        f.extend_from_slice(&6u32.to_be_bytes());
        let mut cfg = 1u64.to_le_bytes().to_vec();
        cfg.extend_from_slice(&[0, 8, 0, 0]);
        let mut file = File(f).chunk(CHUNK_CFG, &cfg);
        let mut b = 0i64.to_le_bytes().to_vec();
        b.extend_from_slice(&60u32.to_be_bytes());
        b.extend_from_slice(&0u16.to_be_bytes());
        b.extend_from_slice(&1u16.to_be_bytes());
        b.extend_from_slice(&0u16.to_be_bytes());
        b.extend_from_slice(&0u16.to_be_bytes());
        b.extend_from_slice(b"x");
        file = file.chunk(CHUNK_CLIENT, &b);
        let db = parse(&file.0).expect("i386 layout");
        assert_eq!(db.clients[0].session_expiry_interval, 60);
        // The same client read with the 8-byte layout does not fit.
        let mut wrong = File::new(6);
        wrong = wrong.chunk(CHUNK_CLIENT, &b);
        assert!(parse(&wrong.0).is_err());
    }
}
