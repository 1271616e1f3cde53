//! One client connection, one task: it reads and decodes batches of
//! packets for the router, and encodes each outgoing batch into one buffer
//! written with one call. Reading, handing to the router and writing are
//! polled side by side, so a client that writes while it is not reading
//! cannot deadlock the broker, and an idle connection costs one small task.

use bytes::BytesMut;
use midge_codec::{decode_packet, encode_packet, DecodeError, Packet, ProtocolVersion};
use midge_core::{ConnId, Transmit};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::router::RouterMsg;
use crate::server::Counters;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Read buffer taken while data flows; see [`Reader::room`].
const READ_CHUNK: usize = 8 * 1024;
/// First read of a quiet connection: enough for a CONNECT, a PINGREQ or a
/// small PUBLISH, without holding kilobytes for every idle client.
const QUIET_READ: usize = 256;
/// Largest batch the writer builds before writing.
const WRITE_BATCH: usize = 64 * 1024;
/// Bytes handed to a connection's writer and not yet written beyond which
/// QoS 0 messages to it are dropped: a client that reads slowly (or not at
/// all) cannot make the broker buffer without bound. QoS 1/2 are bounded by
/// the in-flight window and queue limits instead.
pub const SLOW_READER_LIMIT: usize = 8 * 1024 * 1024;

/// A writer backlog above this makes the router stop taking new messages
/// until it drains: publishers then wait on TCP instead of the broker
/// buffering what subscribers cannot take yet (flow control, not loss).
pub const CONGESTED: usize = 256 * 1024;

/// A connection congested longer than this is a slow reader: the router
/// stops waiting for it (its QoS 0 messages are dropped past
/// [`SLOW_READER_LIMIT`]) so one client cannot stall everyone.
pub const SLOW_AFTER: std::time::Duration = std::time::Duration::from_secs(3);

/// What a transmit costs in the writer's backlog: close to its encoded size,
/// computed the same way on both sides of the channel.
pub fn transmit_weight(t: &Transmit) -> usize {
    t.packets
        .iter()
        .map(|p| match p {
            Packet::Publish(p) => p.payload.len() + p.topic.len() + 16,
            _ => 16,
        })
        .sum()
}

/// The queue from the router to one connection's writer. Lighter than a
/// channel (which allocates a block of slots up front): an idle connection's
/// queue holds no allocation at all.
#[derive(Default)]
pub struct Outbox {
    state: std::sync::Mutex<OutboxState>,
    notify: tokio::sync::Notify,
}

#[derive(Default)]
struct OutboxState {
    items: std::collections::VecDeque<Transmit>,
    closed: bool,
}

impl OutboxState {
    /// Next transmit; an emptied queue gives its allocation back.
    fn pop(&mut self) -> Option<Transmit> {
        let t = self.items.pop_front();
        if self.items.is_empty() && self.items.capacity() > 0 {
            self.items = Default::default();
        }
        t
    }
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Outbox")
    }
}

impl Outbox {
    /// Queues a transmit; false when the writer is gone.
    pub fn send(&self, t: Transmit) -> bool {
        let Ok(mut s) = self.state.lock() else {
            return false;
        };
        if s.closed {
            return false;
        }
        s.items.push_back(t);
        drop(s);
        self.notify.notify_one();
        true
    }

    /// No more transmits will come: the writer stops once the queue is empty.
    pub fn close(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.closed = true;
        }
        self.notify.notify_one();
    }

    fn try_recv(&self) -> Option<Transmit> {
        self.state.lock().ok()?.pop()
    }

    async fn recv(&self) -> Option<Transmit> {
        loop {
            {
                let mut s = self.state.lock().ok()?;
                if let Some(t) = s.pop() {
                    return Some(t);
                }
                if s.closed {
                    return None;
                }
            }
            // A permit is kept if send() came in between: nothing is missed.
            self.notify.notified().await;
        }
    }
}

/// How long a connection that sent garbage is given to receive our answer.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Where a connection came from, for the router.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The peer's address, for logs.
    pub peer: String,
    /// The user name a TLS client certificate proved, if the listener takes it.
    pub identity: Option<String>,
    /// The listener's `mount_point`.
    pub mount: Option<Arc<str>>,
}

pub async fn run_connection<S>(
    stream: S,
    conn: ConnId,
    origin: Origin,
    router: mpsc::Sender<RouterMsg>,
    max_packet_size: usize,
    counters: Arc<Counters>,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let outbox = Arc::new(Outbox::default());
    let backlog = Arc::new(AtomicUsize::new(0));
    if router
        .send(RouterMsg::Open {
            conn,
            writer: outbox.clone(),
            peer: origin.peer,
            identity: origin.identity,
            mount: origin.mount,
            backlog: backlog.clone(),
        })
        .await
        .is_err()
    {
        return;
    }
    let mut reader = Reader {
        conn,
        buf: BytesMut::new(),
        version: None,
        flowing: false,
        max_packet_size,
    };
    // Decoded messages waiting for room in the router's queue; reading
    // stops while there are any (back-pressure on the client).
    let mut to_router: VecDeque<RouterMsg> = VecDeque::new();
    // Encoded packets not yet written, and their weight in the backlog.
    let mut out = BytesMut::new();
    let mut out_weight = 0usize;
    let mut reading = true;
    // The broker closed the connection: write what is left, then stop.
    let mut closing = false;
    // The router let go of the connection (after Lost).
    let mut released = false;
    // After bad input: how long the client is given to read our answer.
    // Boxed, and only then: a timer inline would grow every connection.
    let mut grace: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    loop {
        // Done once nothing is left to write or to tell the router.
        if (closing || released) && out.is_empty() && (to_router.is_empty() || released) {
            if closing {
                let _ = tokio::time::timeout(CLOSE_GRACE, wr.shutdown()).await;
            }
            return;
        }
        tokio::select! {
            r = rd.read_buf(reader.room()), if reading && to_router.is_empty() => {
                match r {
                    Ok(n) if n > 0 => {
                        counters.bytes_received.fetch_add(n as u64, Ordering::Relaxed);
                        if reader.decode(n, &mut to_router) {
                            // Bad input: stop reading, let the broker answer.
                            reading = false;
                            grace = Some(Box::pin(tokio::time::sleep(CLOSE_GRACE)));
                        }
                    }
                    _ => {
                        reading = false;
                        to_router.push_back(RouterMsg::Lost { conn });
                    }
                }
            }
            permit = router.reserve(), if !to_router.is_empty() => {
                let Ok(permit) = permit else { return };
                if let Some(msg) = to_router.pop_front() {
                    permit.send(msg);
                }
                if to_router.is_empty() {
                    // Do not keep the queue's allocation while idle.
                    to_router = VecDeque::new();
                }
            }
            t = outbox.recv(), if !released && !closing && out.len() < WRITE_BATCH => {
                match t {
                    Some(t) => {
                        out_weight += transmit_weight(&t);
                        closing |= encode(&t, &mut out);
                        while !closing && out.len() < WRITE_BATCH {
                            let Some(t) = outbox.try_recv() else { break };
                            out_weight += transmit_weight(&t);
                            closing |= encode(&t, &mut out);
                        }
                    }
                    None => released = true,
                }
            }
            w = wr.write(&out), if !out.is_empty() => {
                match w {
                    Ok(n) if n > 0 => {
                        counters.bytes_sent.fetch_add(n as u64, Ordering::Relaxed);
                        let _ = out.split_to(n);
                        if out.is_empty() {
                            if wr.flush().await.is_err() {
                                write_failed(&mut out, &mut reading, &mut to_router, conn, &mut closing);
                            }
                            release_backlog(&backlog, out_weight, &counters);
                            out_weight = 0;
                            // Nothing queued: give the buffer back while idle.
                            out = BytesMut::new();
                        }
                    }
                    _ => write_failed(&mut out, &mut reading, &mut to_router, conn, &mut closing),
                }
            }
            _ = async { if let Some(g) = grace.as_mut() { g.await } }, if grace.is_some() => {
                // The client did not take our answer in time.
                grace = None;
                to_router.push_back(RouterMsg::Lost { conn });
                out.clear();
                closing = true;
            }
        }
    }
}

/// A write failed: the client is gone. Tell the router (once) and stop.
fn write_failed(
    out: &mut BytesMut,
    reading: &mut bool,
    to_router: &mut VecDeque<RouterMsg>,
    conn: ConnId,
    closing: &mut bool,
) {
    out.clear();
    if *reading {
        *reading = false;
        to_router.push_back(RouterMsg::Lost { conn });
    }
    *closing = true;
}

/// Takes written bytes off the connection's backlog, and wakes the router
/// if that ends a congestion it may be waiting on.
fn release_backlog(backlog: &AtomicUsize, weight: usize, counters: &Counters) {
    let before = backlog
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
            Some(b.saturating_sub(weight))
        })
        .unwrap_or(0);
    if before > CONGESTED && before.saturating_sub(weight) <= CONGESTED {
        counters.drained.notify_one();
    }
}

/// The reading side: a buffer that is only as large as the traffic needs,
/// and the decoder.
struct Reader {
    conn: ConnId,
    buf: BytesMut,
    version: Option<ProtocolVersion>,
    /// Whether the last read filled what it was given: data is flowing.
    flowing: bool,
    max_packet_size: usize,
}

impl Reader {
    /// Room to read into: a small buffer for a quiet connection, a larger
    /// one while data flows.
    fn room(&mut self) -> &mut BytesMut {
        let want = if self.flowing { READ_CHUNK } else { QUIET_READ };
        if self.buf.capacity() - self.buf.len() < want / 4 {
            self.buf.reserve(want);
        }
        &mut self.buf
    }

    /// Decodes what arrived into messages for the router. Returns true on
    /// bad input (after queueing what decoded before it and the error).
    fn decode(&mut self, n: usize, to_router: &mut VecDeque<RouterMsg>) -> bool {
        self.flowing = n >= QUIET_READ / 2 && n * 2 >= self.buf.capacity().min(READ_CHUNK);
        let conn = self.conn;
        let mut packets = Vec::new();
        let mut error = None;
        loop {
            match decode_packet(&mut self.buf, self.version, self.max_packet_size) {
                Ok(Some(p)) => {
                    if let Packet::Connect(c) = &p {
                        self.version.get_or_insert(c.protocol);
                    }
                    packets.push(p);
                }
                Ok(None) => break,
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        if !packets.is_empty() {
            to_router.push_back(RouterMsg::Packets { conn, packets });
        }
        // A connection going quiet gives its read buffer back: idle
        // clients cost no buffer memory.
        if self.buf.is_empty() && !self.flowing {
            self.buf = BytesMut::new();
        }
        let Some(e) = error else {
            return false;
        };
        to_router.push_back(match e {
            DecodeError::UnsupportedProtocolVersion { level } => {
                RouterMsg::UnsupportedVersion { conn, level }
            }
            e => RouterMsg::ProtocolError {
                conn,
                reason: e.reason_code(),
                detail: e.to_string(),
            },
        });
        true
    }
}

fn encode(t: &Transmit, out: &mut BytesMut) -> bool {
    for p in &t.packets {
        // The core only builds packets that encode; a failure here is a bug
        // we must not turn into a crash.
        let _ = encode_packet(p, t.protocol, out);
    }
    t.close
}
