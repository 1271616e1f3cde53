//! The connection: a transport (TCP or Unix socket, with TLS over either:
//! see [`crate::tls`]), CONNECT/CONNACK, and a
//! `poll` loop that answers acknowledgements, keeps the connection alive
//! with PINGREQ and hands events to the caller.
//!
//! One task drives everything: the tools call [`Client::poll`] inside their
//! own `select!` (timeouts, signals, stdin). `poll` is cancel-safe: bytes read
//! are kept in the read buffer and bytes to write stay in the write buffer
//! until the socket has taken them, so dropping a `poll` future mid-way loses
//! nothing and never sends half a packet before the next one.
//!
//! With `debug` on, every packet sent and received is logged on stdout in
//! libmosquitto's words (`Client X sending CONNECT`), since scripts and users
//! of `mosquitto_sub -d` read those lines.

use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use midge_codec::{
    decode_packet, encode_packet, ConnAck, Connect, DecodeError, Disconnect, EncodeError, Packet,
    PacketId, Properties, ProtocolVersion, Publish, QoS, ReasonCode, SubAck, Subscribe,
    SubscriptionOptions, UnsubAck, Unsubscribe,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::session::{AckOutcome, Session};
use crate::tls::TlsOptions;

/// Where the broker is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    Tcp { host: String, port: u16 },
    Unix(PathBuf),
}

/// Everything needed to open a connection.
#[derive(Debug, Clone)]
pub struct Options {
    pub transport: Transport,
    /// The CONNECT to send (protocol level, client id, will, credentials,
    /// 5.0 properties).
    pub connect: Connect,
    /// Log packets on stdout, libmosquitto style.
    pub debug: bool,
    /// Outgoing QoS 1/2 messages in flight at most.
    pub max_inflight: usize,
    /// Disable Nagle's algorithm.
    pub nodelay: bool,
    /// Local address to bind the TCP socket to (`-A`).
    pub bind_address: Option<String>,
    /// TLS over the transport, when set.
    pub tls: Option<TlsOptions>,
}

/// Errors, grouped by who is at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The socket could not be opened or failed; the text is the system's.
    #[error("{}", io_text(.0))]
    Io(std::io::Error),
    /// A TLS file (CA, certificate, key) could not be used; the text is
    /// libmosquitto's log line for it.
    #[error("A TLS error occurred.")]
    TlsSetup(String),
    /// The client key is encrypted: we do not ask for its password.
    #[error("A TLS error occurred.")]
    TlsKeyPassword(PathBuf),
    /// We refused the handshake: the server's certificate or name did not
    /// verify (the text says why, for `-d`).
    #[error("A TLS error occurred.")]
    TlsVerify(String),
    /// The server refused or cut the handshake: an alert (no common
    /// version, our certificate refused), or no TLS there.
    #[error("A TLS error occurred.")]
    TlsHandshake(String),
    /// The server ended an established TLS session with an alert (e.g. it
    /// requires a client certificate) or sent garbled records; libmosquitto
    /// reports EPROTO, "Protocol error".
    #[error("Protocol error")]
    TlsAlert(String),
    /// The host name could not be resolved.
    #[error("{0}")]
    Lookup(String),
    /// The broker answered CONNACK with a refusal.
    #[error("connection refused with code {code}")]
    Refused { code: u8, version: ProtocolVersion },
    /// The broker closed the connection (or sent DISCONNECT).
    #[error("The connection was lost.")]
    ConnectionLost { reason: Option<ReasonCode> },
    /// The broker sent bytes we cannot decode, or a packet out of place.
    #[error("A network protocol error occurred when communicating with the broker.")]
    Protocol(String),
    /// We were asked to send what the wire format cannot carry.
    #[error("{0}")]
    Encode(#[from] EncodeError),
}

impl From<std::io::Error> for Error {
    /// TLS failures travel as I/O errors: they are told apart here, and a
    /// TLS session closed without close_notify is a lost connection, as a
    /// TCP end of stream is.
    fn from(e: std::io::Error) -> Self {
        if let Some(t) = crate::tls::rustls_error(&e) {
            return Error::TlsAlert(t.to_string());
        }
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            return Error::ConnectionLost { reason: None };
        }
        Error::Io(e)
    }
}

impl From<DecodeError> for Error {
    fn from(e: DecodeError) -> Self {
        Error::Protocol(e.to_string())
    }
}

/// The system's text for an I/O error, without Rust's " (os error N)" tail,
/// so messages read like mosquitto's `strerror` ones.
pub(crate) fn io_text(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// What `poll` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A message to the application (after its acknowledgement was sent).
    Message(Received),
    /// An outgoing message is complete: QoS 0 written, QoS 1 PUBACK, QoS 2 PUBCOMP.
    Published {
        mid: u16,
        reason: ReasonCode,
    },
    SubAck(SubAck),
    UnsubAck(UnsubAck),
}

/// A delivered message, with the order its 5.0 properties had on the wire
/// (the codec's [`Properties`] does not keep it; `-F %j` prints in it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub publish: Publish,
    /// Property identifiers as they came, repeats included; empty for 3.x.
    pub prop_order: Vec<u8>,
}

trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// A connected client.
pub struct Client {
    stream: Pin<Box<dyn Stream>>,
    version: ProtocolVersion,
    rbuf: BytesMut,
    wbuf: BytesMut,
    session: Session,
    events: VecDeque<Event>,
    keep_alive: Option<Duration>,
    last_sent: Instant,
    ping_outstanding: bool,
    debug: bool,
    log_id: String,
    max_packet_size: usize,
    closed: bool,
    /// Property order of incoming QoS 2 messages held until PUBREL.
    held_order: std::collections::HashMap<u16, Vec<u8>>,
    /// Property order of the PUBLISH being decoded.
    next_order: Vec<u8>,
}

/// Largest packet we accept: the protocol's own limit.
const MAX_PACKET: usize = 268_435_455 + 5;

async fn open(opts: &Options) -> Result<Pin<Box<dyn Stream>>, Error> {
    let raw = open_raw(opts).await?;
    let Some(tls) = &opts.tls else {
        return Ok(raw);
    };
    // No name to check on a Unix socket (libmosquitto skips it for port 0).
    let (host, check_name) = match &opts.transport {
        Transport::Tcp { host, .. } => (host.clone(), true),
        Transport::Unix(path) => (path.to_string_lossy().into_owned(), false),
    };
    let stream = crate::tls::handshake(tls, &host, check_name, raw, opts.debug).await?;
    Ok(Box::pin(stream))
}

async fn open_raw(opts: &Options) -> Result<Pin<Box<dyn Stream>>, Error> {
    let nodelay = opts.nodelay;
    match &opts.transport {
        Transport::Tcp { host, port } => {
            let addrs = tokio::net::lookup_host((host.as_str(), *port))
                .await
                .map_err(|e| Error::Lookup(lookup_text(&e)))?;
            let mut last = None;
            for addr in addrs {
                let attempt = async {
                    let socket = if addr.is_ipv4() {
                        tokio::net::TcpSocket::new_v4()?
                    } else {
                        tokio::net::TcpSocket::new_v6()?
                    };
                    if let Some(bind) = &opts.bind_address {
                        let local = tokio::net::lookup_host((bind.as_str(), 0))
                            .await?
                            .find(|a| a.is_ipv4() == addr.is_ipv4())
                            .ok_or_else(|| {
                                std::io::Error::new(
                                    std::io::ErrorKind::AddrNotAvailable,
                                    "Cannot assign requested address",
                                )
                            })?;
                        socket.bind(local)?;
                    }
                    socket.connect(addr).await
                };
                match attempt.await {
                    Ok(s) => {
                        if nodelay {
                            s.set_nodelay(true)?;
                        }
                        return Ok(Box::pin(s));
                    }
                    Err(e) => last = Some(e),
                }
            }
            Err(Error::Io(last.unwrap_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::NotFound, "Lookup error.")
            })))
        }
        Transport::Unix(path) => Ok(Box::pin(tokio::net::UnixStream::connect(path).await?)),
    }
}

/// getaddrinfo's text for a failed lookup (what libmosquitto prints).
fn lookup_text(e: &std::io::Error) -> String {
    let s = io_text(e);
    // std reports "failed to lookup address information: <gai_strerror>".
    match s.strip_prefix("failed to lookup address information: ") {
        Some(rest) => rest.to_string(),
        None => s,
    }
}

impl Client {
    /// Connects, sends CONNECT and waits for CONNACK. A refusal is
    /// `Error::Refused` with the return code (3.x) or reason code (5.0).
    pub async fn connect(opts: &Options) -> Result<(Client, ConnAck), Error> {
        let stream = open(opts).await?;
        let version = opts.connect.protocol;
        let mut client = Client {
            stream,
            version,
            rbuf: BytesMut::with_capacity(4096),
            wbuf: BytesMut::with_capacity(4096),
            session: Session::new(opts.max_inflight),
            events: VecDeque::new(),
            keep_alive: match opts.connect.keep_alive {
                0 => None,
                k => Some(Duration::from_secs(u64::from(k))),
            },
            last_sent: Instant::now(),
            ping_outstanding: false,
            debug: opts.debug,
            log_id: if opts.connect.client_id.is_empty() {
                "(null)".to_string()
            } else {
                opts.connect.client_id.to_string()
            },
            max_packet_size: MAX_PACKET,
            closed: false,
            held_order: std::collections::HashMap::new(),
            next_order: Vec::new(),
        };
        client.log("sending CONNECT");
        client.queue(&Packet::Connect(Box::new(opts.connect.clone())))?;
        client.flush().await?;
        let connack = match client.read_packet().await? {
            Packet::ConnAck(c) => c,
            Packet::Auth(_) => {
                return Err(Error::Protocol(
                    "extended authentication is not supported".into(),
                ))
            }
            other => {
                return Err(Error::Protocol(format!(
                    "expected CONNACK, got packet type {}",
                    other.packet_type()
                )))
            }
        };
        if let Some(id) = &connack.properties.assigned_client_identifier {
            client.log_id = id.to_string();
        }
        client.log(&format!("received CONNACK ({})", connack.code));
        if connack.code != 0 {
            return Err(Error::Refused {
                code: connack.code,
                version,
            });
        }
        if let Some(k) = connack.properties.server_keep_alive {
            client.keep_alive = (k > 0).then(|| Duration::from_secs(u64::from(k)));
        }
        if let Some(rm) = connack.properties.receive_maximum {
            client.session.limit_inflight(rm);
        }
        if let Some(mps) = connack.properties.maximum_packet_size {
            client.max_packet_size = usize::try_from(mps).unwrap_or(usize::MAX);
        }
        Ok((client, connack))
    }

    pub fn version(&self) -> ProtocolVersion {
        self.version
    }

    /// The client id as the broker knows it (assigned one included), or
    /// `(null)` when empty: the name used in `-d` lines.
    pub fn log_id(&self) -> &str {
        &self.log_id
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    /// True when no outgoing message, subscription or unsubscription waits
    /// for its acknowledgement.
    pub fn is_idle(&self) -> bool {
        self.session.is_idle()
    }

    fn log(&self, what: &str) {
        if self.debug {
            let mut out = std::io::stdout().lock();
            // A closed stdout must not kill the connection.
            let _ = writeln!(out, "Client {} {}", self.log_id, what);
            let _ = out.flush();
        }
    }

    fn queue(&mut self, packet: &Packet) -> Result<(), Error> {
        encode_packet(packet, self.version, &mut self.wbuf)?;
        Ok(())
    }

    /// Writes out everything queued. Cancel-safe: progress is kept in `wbuf`.
    pub async fn flush(&mut self) -> Result<(), Error> {
        while !self.wbuf.is_empty() {
            let n = self.stream.write_buf(&mut self.wbuf).await?;
            if n == 0 {
                return Err(Error::ConnectionLost { reason: None });
            }
            self.last_sent = Instant::now();
        }
        self.stream.flush().await?;
        Ok(())
    }

    async fn read_packet(&mut self) -> Result<Packet, Error> {
        loop {
            if let Some(p) = decode_packet(&mut self.rbuf, Some(self.version), MAX_PACKET)? {
                return Ok(p);
            }
            let n = self.stream.read_buf(&mut self.rbuf).await?;
            if n == 0 {
                self.closed = true;
                return Err(Error::ConnectionLost { reason: None });
            }
        }
    }

    /// Sends a PUBLISH. Waits (handling incoming packets, whose events are
    /// kept for later `poll`s) while the in-flight window is full. Returns
    /// the message id; QoS 0 completes at once with a `Published` event.
    pub async fn publish(
        &mut self,
        topic: &str,
        payload: Bytes,
        qos: QoS,
        retain: bool,
        properties: Properties,
    ) -> Result<u16, Error> {
        while qos != QoS::AtMostOnce && !self.session.can_send() {
            let ev = self.next_event().await?;
            self.events.push_back(ev);
        }
        let mid = self
            .session
            .begin_publish(qos)
            .map_err(|e| Error::Protocol(e.to_string()))?;
        let publish = Publish {
            dup: false,
            qos,
            retain,
            topic: ByteString::from(topic),
            packet_id: if qos == QoS::AtMostOnce {
                None
            } else {
                PacketId::new(mid)
            },
            payload,
            properties: properties.into(),
        };
        self.log(&format!(
            "sending PUBLISH (d0, q{}, r{}, m{}, '{}', ... ({} bytes))",
            qos as u8,
            u8::from(retain),
            mid,
            topic,
            publish.payload.len()
        ));
        let packet = Packet::Publish(publish);
        let len = midge_codec::encoded_len(&packet, self.version);
        if len > self.max_packet_size {
            return Err(Error::Protocol(format!(
                "packet of {len} bytes exceeds the broker's maximum packet size"
            )));
        }
        self.queue(&packet)?;
        self.flush().await?;
        if qos == QoS::AtMostOnce {
            self.events.push_back(Event::Published {
                mid,
                reason: ReasonCode::SUCCESS,
            });
        }
        Ok(mid)
    }

    /// Sends one SUBSCRIBE for all `filters`; returns its message id.
    pub async fn subscribe(
        &mut self,
        filters: &[(String, SubscriptionOptions)],
        properties: Properties,
    ) -> Result<u16, Error> {
        let mid = self.session.begin_request();
        let packet_id = PacketId::new(mid).ok_or_else(|| Error::Protocol("mid 0".into()))?;
        for (f, o) in filters {
            let opts = if self.version.is_v5() {
                (u8::from(o.no_local) << 2)
                    | (u8::from(o.retain_as_published) << 3)
                    | ((o.retain_handling as u8) << 4)
            } else {
                0
            };
            self.log(&format!(
                "sending SUBSCRIBE (Mid: {mid}, Topic: {f}, QoS: {}, Options: 0x{opts:02x})",
                o.qos as u8
            ));
        }
        let sub = Subscribe {
            packet_id,
            filters: filters
                .iter()
                .map(|(f, o)| (ByteString::from(f.as_str()), *o))
                .collect(),
            properties: properties.into(),
        };
        self.queue(&Packet::Subscribe(sub))?;
        self.flush().await?;
        Ok(mid)
    }

    /// Sends an UNSUBSCRIBE for one filter; returns its message id.
    pub async fn unsubscribe(
        &mut self,
        filter: &str,
        properties: Properties,
    ) -> Result<u16, Error> {
        let mid = self.session.begin_request();
        let packet_id = PacketId::new(mid).ok_or_else(|| Error::Protocol("mid 0".into()))?;
        self.log(&format!(
            "sending UNSUBSCRIBE (Mid: {mid}, Topic: {filter})"
        ));
        self.queue(&Packet::Unsubscribe(Unsubscribe {
            packet_id,
            filters: vec![ByteString::from(filter)],
            properties: properties.into(),
        }))?;
        self.flush().await?;
        Ok(mid)
    }

    /// Sends DISCONNECT and closes the write side.
    pub async fn disconnect(
        &mut self,
        reason: ReasonCode,
        properties: Properties,
    ) -> Result<(), Error> {
        if self.closed {
            return Ok(());
        }
        self.log("sending DISCONNECT");
        self.queue(&Packet::Disconnect(Disconnect {
            reason,
            properties: properties.into(),
        }))?;
        self.flush().await?;
        let _ = self.stream.shutdown().await;
        self.closed = true;
        Ok(())
    }

    /// Closes the socket without DISCONNECT (the broker will publish the will).
    pub async fn close(&mut self) {
        let _ = self.stream.shutdown().await;
        self.closed = true;
    }

    /// The next event. Cancel-safe (see the module docs).
    pub async fn poll(&mut self) -> Result<Event, Error> {
        if let Some(ev) = self.events.pop_front() {
            return Ok(ev);
        }
        self.next_event().await
    }

    async fn next_event(&mut self) -> Result<Event, Error> {
        loop {
            self.flush().await?;
            // Whole packets already buffered are handled before reading more.
            if self.version.is_v5() && self.rbuf.first().map(|b| b >> 4) == Some(3) {
                self.next_order = publish_property_order(&self.rbuf).unwrap_or_default();
            }
            if let Some(p) = decode_packet(&mut self.rbuf, Some(self.version), MAX_PACKET)? {
                if let Some(ev) = self.handle(p)? {
                    self.flush().await?;
                    return Ok(ev);
                }
                continue;
            }
            let deadline = self.keep_alive.map(|k| self.last_sent + k);
            tokio::select! {
                r = self.stream.read_buf(&mut self.rbuf) => {
                    if r? == 0 {
                        self.closed = true;
                        return Err(Error::ConnectionLost { reason: None });
                    }
                }
                _ = sleep_until(deadline) => {
                    if self.ping_outstanding {
                        return Err(Error::ConnectionLost { reason: None });
                    }
                    self.ping_outstanding = true;
                    self.log("sending PINGREQ");
                    self.queue(&Packet::PingReq)?;
                    // Counts as sent even if the socket is slow to take it.
                    self.last_sent = Instant::now();
                }
            }
        }
    }

    fn handle(&mut self, packet: Packet) -> Result<Option<Event>, Error> {
        match packet {
            Packet::Publish(p) => {
                self.log(&format!(
                    "received PUBLISH (d{}, q{}, r{}, m{}, '{}', ... ({} bytes))",
                    u8::from(p.dup),
                    p.qos as u8,
                    u8::from(p.retain),
                    p.packet_id.map_or(0, |i| i.get()),
                    p.topic,
                    p.payload.len()
                ));
                let order = std::mem::take(&mut self.next_order);
                if let (QoS::ExactlyOnce, Some(id)) = (p.qos, p.packet_id) {
                    self.held_order
                        .entry(id.get())
                        .or_insert_with(|| order.clone());
                }
                let inc = self.session.on_publish(p);
                if let Some(reply) = inc.reply {
                    self.log_reply(&reply);
                    self.queue(&reply)?;
                }
                Ok(inc.deliver.map(|publish| {
                    Event::Message(Received {
                        publish,
                        prop_order: order,
                    })
                }))
            }
            Packet::PubRel(r) => {
                self.log(&format!("received PUBREL (Mid: {})", r.packet_id));
                let inc = self.session.on_pubrel(&r);
                let order = self
                    .held_order
                    .remove(&r.packet_id.get())
                    .unwrap_or_default();
                if let Some(reply) = inc.reply {
                    self.log_reply(&reply);
                    self.queue(&reply)?;
                }
                Ok(inc.deliver.map(|publish| {
                    Event::Message(Received {
                        publish,
                        prop_order: order,
                    })
                }))
            }
            Packet::PubAck(a) => {
                self.log(&format!(
                    "received PUBACK (Mid: {}, RC:{})",
                    a.packet_id, a.reason.0
                ));
                let outcome = self.session.on_puback(&a);
                self.ack_outcome(outcome)
            }
            Packet::PubRec(a) => {
                self.log(&format!("received PUBREC (Mid: {})", a.packet_id));
                let outcome = self.session.on_pubrec(&a);
                self.ack_outcome(outcome)
            }
            Packet::PubComp(a) => {
                self.log(&format!(
                    "received PUBCOMP (Mid: {}, RC:{})",
                    a.packet_id, a.reason.0
                ));
                let outcome = self.session.on_pubcomp(&a);
                self.ack_outcome(outcome)
            }
            Packet::SubAck(s) => {
                self.log("received SUBACK");
                self.session.complete_request(s.packet_id);
                Ok(Some(Event::SubAck(s)))
            }
            Packet::UnsubAck(u) => {
                self.log("received UNSUBACK");
                self.session.complete_request(u.packet_id);
                Ok(Some(Event::UnsubAck(u)))
            }
            Packet::PingResp => {
                self.log("received PINGRESP");
                self.ping_outstanding = false;
                Ok(None)
            }
            Packet::PingReq => {
                self.log("received PINGREQ");
                self.log("sending PINGRESP");
                self.queue(&Packet::PingResp)?;
                Ok(None)
            }
            Packet::Disconnect(d) => {
                if self.debug {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "Received DISCONNECT ({})", d.reason.0);
                    let _ = out.flush();
                }
                self.closed = true;
                Err(Error::ConnectionLost {
                    reason: Some(d.reason),
                })
            }
            other => Err(Error::Protocol(format!(
                "unexpected packet type {} from the broker",
                other.packet_type()
            ))),
        }
    }

    fn ack_outcome(&mut self, outcome: AckOutcome) -> Result<Option<Event>, Error> {
        match outcome {
            AckOutcome::Completed { mid, reason } => Ok(Some(Event::Published { mid, reason })),
            AckOutcome::Reply(p) => {
                self.log_reply(&p);
                self.queue(&p)?;
                Ok(None)
            }
            AckOutcome::Unknown => Ok(None),
        }
    }

    fn log_reply(&self, p: &Packet) {
        if !self.debug {
            return;
        }
        let line = match p {
            Packet::PubAck(a) => format!("sending PUBACK (m{}, rc{})", a.packet_id, a.reason.0),
            Packet::PubRec(a) => format!("sending PUBREC (m{}, rc{})", a.packet_id, a.reason.0),
            Packet::PubRel(a) => format!("sending PUBREL (m{})", a.packet_id),
            Packet::PubComp(a) => format!("sending PUBCOMP (m{})", a.packet_id),
            _ => return,
        };
        self.log(&line);
    }
}

/// The identifiers of a whole 5.0 PUBLISH's properties, in wire order.
/// `None` when `buf` does not start with a whole, well-formed one (the
/// decoder then says why).
pub fn publish_property_order(buf: &[u8]) -> Option<Vec<u8>> {
    fn varint(b: &[u8], pos: &mut usize) -> Option<usize> {
        let mut v = 0usize;
        for k in 0..4 {
            let byte = *b.get(*pos)?;
            *pos += 1;
            v |= usize::from(byte & 0x7F) << (7 * k);
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    let first = *buf.first()?;
    if first >> 4 != 3 {
        return None;
    }
    let qos = (first >> 1) & 3;
    let mut pos = 1;
    let remaining = varint(buf, &mut pos)?;
    let body = buf.get(pos..pos.checked_add(remaining)?)?;
    let mut i = 0;
    let tlen = usize::from(u16::from_be_bytes([*body.get(i)?, *body.get(i + 1)?]));
    i += 2 + tlen;
    if qos > 0 {
        i += 2;
    }
    let plen = varint(body, &mut i)?;
    let end = i.checked_add(plen)?;
    if end > body.len() {
        return None;
    }
    let mut order = Vec::new();
    while i < end {
        let id = *body.get(i)?;
        i += 1;
        let skip = |i: &mut usize, n: usize| -> Option<()> {
            *i = i.checked_add(n)?;
            (*i <= end).then_some(())
        };
        let string_len = |i: usize| -> Option<usize> {
            Some(2 + usize::from(u16::from_be_bytes([*body.get(i)?, *body.get(i + 1)?])))
        };
        match id {
            0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => skip(&mut i, 1)?,
            0x13 | 0x21 | 0x22 | 0x23 => skip(&mut i, 2)?,
            0x02 | 0x11 | 0x18 | 0x27 => skip(&mut i, 4)?,
            0x0B => {
                varint(body, &mut i)?;
            }
            0x03 | 0x08 | 0x09 | 0x12 | 0x15 | 0x16 | 0x1A | 0x1C | 0x1F => {
                let n = string_len(i)?;
                skip(&mut i, n)?;
            }
            0x26 => {
                let n = string_len(i)?;
                skip(&mut i, n)?;
                let n = string_len(i)?;
                skip(&mut i, n)?;
            }
            _ => return None,
        }
        order.push(id);
    }
    Some(order)
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
