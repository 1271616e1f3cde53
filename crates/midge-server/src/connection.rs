//! One client connection: a reader that decodes batches of packets for the
//! router, and a writer that encodes each outgoing batch into one buffer and
//! writes it with one call. Reading and writing run apart so a client that
//! writes while it is not reading cannot deadlock the broker.

use bytes::BytesMut;
use midge_codec::{decode_packet, encode_packet, DecodeError, Packet, ProtocolVersion};
use midge_core::{ConnId, Transmit};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use crate::router::RouterMsg;
use crate::server::Counters;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Read buffer taken while data flows; see [`read_loop`].
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
        let mut s = self.state.lock().ok()?;
        let t = s.items.pop_front();
        if s.items.is_empty() && s.items.capacity() > 0 {
            s.items = Default::default();
        }
        t
    }

    fn is_empty(&self) -> bool {
        self.state
            .lock()
            .map(|s| s.items.is_empty())
            .unwrap_or(true)
    }

    async fn recv(&self) -> Option<Transmit> {
        loop {
            {
                let mut s = self.state.lock().ok()?;
                if let Some(t) = s.items.pop_front() {
                    if s.items.is_empty() && s.items.capacity() > 0 {
                        s.items = Default::default();
                    }
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
    let (rd, wr) = tokio::io::split(stream);
    let outbox = Arc::new(Outbox::default());
    let backlog = Arc::new(AtomicUsize::new(0));
    let (closed_tx, closed_rx) = oneshot::channel();
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
    let writer = tokio::spawn(write_loop(counters.clone(), backlog, wr, outbox, closed_tx));
    read_loop(rd, conn, &router, max_packet_size, closed_rx, &counters).await;
    // The writer ends when the router drops its sender (after Lost) or
    // after a closing batch.
    let _ = writer.await;
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut rd: R,
    conn: ConnId,
    router: &mpsc::Sender<RouterMsg>,
    max_packet_size: usize,
    mut closed: oneshot::Receiver<bool>,
    counters: &Counters,
) {
    let mut buf = BytesMut::new();
    let mut version: Option<ProtocolVersion> = None;
    // Whether the last read filled what it was given: data is flowing.
    let mut flowing = false;
    loop {
        let want = if flowing { READ_CHUNK } else { QUIET_READ };
        if buf.capacity() - buf.len() < want / 4 {
            buf.reserve(want);
        }
        let room = buf.capacity() - buf.len();
        let n = tokio::select! {
            r = rd.read_buf(&mut buf) => r,
            by_broker = &mut closed => {
                // The writer stopped: either the broker closed the connection
                // (it knows), or a write failed (tell it).
                if by_broker != Ok(true) {
                    let _ = router.send(RouterMsg::Lost { conn }).await;
                }
                return;
            }
        };
        match n {
            Ok(0) | Err(_) => {
                let _ = router.send(RouterMsg::Lost { conn }).await;
                return;
            }
            Ok(n) => {
                flowing = n >= room / 2;
                counters
                    .bytes_received
                    .fetch_add(n as u64, Ordering::Relaxed);
            }
        }
        let mut packets = Vec::new();
        let mut error = None;
        loop {
            match decode_packet(&mut buf, version, max_packet_size) {
                Ok(Some(p)) => {
                    if let Packet::Connect(c) = &p {
                        version.get_or_insert(c.protocol);
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
        if !packets.is_empty()
            && router
                .send(RouterMsg::Packets { conn, packets })
                .await
                .is_err()
        {
            return;
        }
        if let Some(e) = error {
            let msg = match e {
                DecodeError::UnsupportedProtocolVersion { level } => {
                    RouterMsg::UnsupportedVersion { conn, level }
                }
                e => RouterMsg::ProtocolError {
                    conn,
                    reason: e.reason_code(),
                    detail: e.to_string(),
                },
            };
            let _ = router.send(msg).await;
            // Stop reading; give the writer a bounded time to send the answer.
            let _ = tokio::time::timeout(CLOSE_GRACE, closed).await;
            let _ = router.send(RouterMsg::Lost { conn }).await;
            return;
        }
        // A connection going quiet gives its read buffer back: idle
        // clients cost no buffer memory.
        if buf.is_empty() && !flowing {
            buf = BytesMut::new();
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    counters: Arc<Counters>,
    backlog: Arc<AtomicUsize>,
    mut wr: W,
    rx: Arc<Outbox>,
    closed: oneshot::Sender<bool>,
) {
    let mut out = BytesMut::new();
    let mut closed_by_broker = false;
    'outer: while let Some(t) = rx.recv().await {
        let mut weight = transmit_weight(&t);
        let mut close = encode(&t, &mut out);
        while !close && out.len() < WRITE_BATCH {
            match rx.try_recv() {
                Some(t) => {
                    weight += transmit_weight(&t);
                    close = encode(&t, &mut out);
                }
                None => break,
            }
        }
        if wr.write_all(&out).await.is_err() || wr.flush().await.is_err() {
            break 'outer;
        }
        counters
            .bytes_sent
            .fetch_add(out.len() as u64, Ordering::Relaxed);
        // Saturating: the router adds before the writer subtracts.
        let before = backlog
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(weight))
            })
            .unwrap_or(0);
        if before > CONGESTED && before.saturating_sub(weight) <= CONGESTED {
            counters.drained.notify_one();
        }
        out.clear();
        if out.capacity() > WRITE_BATCH * 2 || rx.is_empty() {
            // Nothing more to write now: do not hold the buffer while idle.
            out = BytesMut::new();
        }
        if close {
            closed_by_broker = true;
            break;
        }
    }
    let _ = wr.flush().await;
    let _ = wr.shutdown().await;
    let _ = closed.send(closed_by_broker);
}

fn encode(t: &Transmit, out: &mut BytesMut) -> bool {
    for p in &t.packets {
        // The core only builds packets that encode; a failure here is a bug
        // we must not turn into a crash.
        let _ = encode_packet(p, t.protocol, out);
    }
    t.close
}
