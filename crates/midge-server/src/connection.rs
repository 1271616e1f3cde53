//! One client connection, one task: it reads and decodes batches of
//! packets for the router, and encodes each outgoing batch into one buffer
//! written with one call. Reading, handing to the router and writing are
//! polled side by side, so a client that writes while it is not reading
//! cannot deadlock the broker, and an idle connection costs one small task.

use bytes::BytesMut;
use midge_codec::{decode_packet, encode_packet, DecodeError, Packet, ProtocolVersion};
use midge_core::{ConnId, Transmit};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::sync::mpsc::{self, OwnedPermit};

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
/// queue holds no allocation at all, only the connection task's waker.
#[derive(Default)]
pub struct Outbox {
    state: std::sync::Mutex<OutboxState>,
    /// Transmits held for the store (waiting for what they acknowledge to
    /// be durable): while there are any, nothing may overtake them.
    held: AtomicUsize,
    /// Weight of the transmits given to the writer and not yet written:
    /// the router adds, the connection takes off (see [`transmit_weight`]).
    /// Kept here rather than in an allocation of its own.
    pub(crate) backlog: AtomicUsize,
}

#[derive(Default)]
struct OutboxState {
    items: std::collections::VecDeque<Transmit>,
    closed: bool,
    /// The connection task, while it waits for something to write.
    waker: Option<Waker>,
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
        let waker = s.waker.take();
        drop(s);
        if let Some(w) = waker {
            w.wake();
        }
        true
    }

    /// Counts a transmit the router holds back until the store has synced.
    pub fn hold(&self) {
        self.held.fetch_add(1, Ordering::AcqRel);
    }

    /// Whether transmits are held for this connection.
    pub fn holding(&self) -> bool {
        self.held.load(Ordering::Acquire) > 0
    }

    /// Queues a transmit that was held (see [`Outbox::hold`]).
    pub fn send_held(&self, t: Transmit) -> bool {
        let sent = self.send(t);
        self.held.fetch_sub(1, Ordering::AcqRel);
        sent
    }

    /// No more transmits will come: the writer stops once the queue is empty.
    pub fn close(&self) {
        let waker = match self.state.lock() {
            Ok(mut s) => {
                s.closed = true;
                s.waker.take()
            }
            Err(_) => None,
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    pub(crate) fn try_recv(&self) -> Option<Transmit> {
        self.state.lock().ok()?.pop()
    }

    /// The next transmit, `Ready(None)` once closed and empty; otherwise
    /// the task is woken by the next [`Outbox::send`] or [`Outbox::close`].
    fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<Transmit>> {
        let Ok(mut s) = self.state.lock() else {
            return Poll::Ready(None);
        };
        if let Some(t) = s.pop() {
            return Poll::Ready(Some(t));
        }
        if s.closed {
            return Poll::Ready(None);
        }
        match &s.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => s.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
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

/// The future that serves one connection until it ends. The router first
/// hears of it (`Open`) through the same queue as its packets, so nothing
/// is read before the router knows the connection.
pub fn run_connection<S>(
    stream: S,
    conn: ConnId,
    origin: Origin,
    router: mpsc::Sender<RouterMsg>,
    max_packet_size: usize,
    counters: Arc<Counters>,
) -> Connection<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let outbox = Arc::new(Outbox::default());
    let open = RouterMsg::Open {
        conn,
        writer: outbox.clone(),
        peer: origin.peer.into_boxed_str(),
        identity: origin.identity,
        mount: origin.mount,
    };
    Connection {
        stream,
        reader: Reader {
            conn,
            buf: BytesMut::new(),
            version: None,
            flowing: false,
            max_packet_size,
        },
        router,
        reserve: None,
        to_router: VecDeque::from([open]),
        outbox,
        counters,
        out: BytesMut::new(),
        out_weight: 0,
        reading: true,
        flushing: false,
        closing: false,
        released: false,
        timer: None,
    }
}

/// Waits for room in the router's queue (only while it is full).
type Reserve = Pin<Box<dyn Future<Output = Result<OwnedPermit<RouterMsg>, ()>> + Send>>;

/// A connection's whole state, polled as one future: an idle connection
/// costs this struct and nothing more (a `select!` loop would also hold
/// every branch's future, and an `async fn` the state of each `.await`).
pub struct Connection<S> {
    stream: S,
    reader: Reader,
    router: mpsc::Sender<RouterMsg>,
    /// Set while the router's queue is full.
    reserve: Option<Reserve>,
    /// Decoded messages waiting for room in the router's queue; reading
    /// stops while there are any (back-pressure on the client).
    to_router: VecDeque<RouterMsg>,
    outbox: Arc<Outbox>,
    counters: Arc<Counters>,
    /// Encoded packets not yet written, and their weight in the backlog.
    out: BytesMut,
    out_weight: usize,
    reading: bool,
    /// Everything was written; waiting for the stream to flush it.
    flushing: bool,
    /// The broker closed the connection: write what is left, then stop.
    closing: bool,
    /// The router let go of the connection (after Lost).
    released: bool,
    /// After bad input: how long the client is given to read our answer;
    /// at the end, how long its shutdown may take. Boxed, and only then: a
    /// timer inline would grow every connection.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Future for Connection<S> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            // Done once nothing is left to write or to tell the router.
            if (this.closing || this.released)
                && this.out.is_empty()
                && !this.flushing
                && (this.to_router.is_empty() || this.released)
            {
                return this.poll_shutdown(cx);
            }
            let Ok(mut progress) = this.poll_router(cx) else {
                // The router is gone: the broker is stopping.
                return Poll::Ready(());
            };
            progress |= this.poll_read(cx);
            progress |= this.poll_outbox(cx);
            progress |= this.poll_write(cx);
            progress |= this.poll_timer(cx);
            // Every branch that made no progress has registered the waker.
            if !progress {
                return Poll::Pending;
            }
        }
    }
}

/// The router's queue is closed: the broker is stopping.
struct RouterGone;

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Hands decoded messages to the router; whether any moved.
    fn poll_router(&mut self, cx: &mut Context<'_>) -> Result<bool, RouterGone> {
        let mut progress = false;
        while let Some(msg) = self.to_router.pop_front() {
            if let Some(reserve) = self.reserve.as_mut() {
                match reserve.as_mut().poll(cx) {
                    Poll::Ready(Ok(permit)) => {
                        self.reserve = None;
                        permit.send(msg);
                        progress = true;
                        continue;
                    }
                    Poll::Ready(Err(())) => return Err(RouterGone),
                    Poll::Pending => {
                        self.to_router.push_front(msg);
                        return Ok(progress);
                    }
                }
            }
            match self.router.try_send(msg) {
                Ok(()) => progress = true,
                Err(mpsc::error::TrySendError::Full(msg)) => {
                    // Polled on the next turn of this loop.
                    self.to_router.push_front(msg);
                    let router = self.router.clone();
                    self.reserve = Some(Box::pin(async move {
                        router.reserve_owned().await.map_err(|_| ())
                    }));
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return Err(RouterGone),
            }
        }
        if self.to_router.capacity() > 0 {
            // Do not keep the queue's allocation while idle.
            self.to_router = VecDeque::new();
        }
        Ok(progress)
    }

    /// Reads and decodes, unless the router has not taken the last batch.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.reading || !self.to_router.is_empty() {
            return false;
        }
        let read = if self.reader.buf.is_empty() && !self.reader.flowing {
            // A quiet connection waits for data without a buffer of its
            // own: what arrives lands on the stack and is copied.
            let mut quiet = [0u8; QUIET_READ];
            let mut into = ReadBuf::new(&mut quiet);
            Pin::new(&mut self.stream)
                .poll_read(cx, &mut into)
                .map_ok(|()| {
                    self.reader.buf.extend_from_slice(into.filled());
                    into.filled().len()
                })
        } else {
            let room = self.reader.room();
            // `read_buf` keeps no state between polls: a fresh one each time.
            std::pin::pin!(self.stream.read_buf(room)).poll(cx)
        };
        match read {
            Poll::Pending => false,
            Poll::Ready(Ok(n)) if n > 0 => {
                self.counters
                    .bytes_received
                    .fetch_add(n as u64, Ordering::Relaxed);
                if self.reader.decode(n, &mut self.to_router) {
                    // Bad input: stop reading, let the broker answer.
                    self.reading = false;
                    self.timer = Some(Box::pin(tokio::time::sleep(CLOSE_GRACE)));
                }
                true
            }
            Poll::Ready(_) => {
                self.reading = false;
                self.to_router.push_back(RouterMsg::Lost {
                    conn: self.reader.conn,
                });
                true
            }
        }
    }

    /// Encodes what the router sent, up to one write batch.
    fn poll_outbox(&mut self, cx: &mut Context<'_>) -> bool {
        if self.released || self.closing || self.flushing || self.out.len() >= WRITE_BATCH {
            return false;
        }
        match self.outbox.poll_recv(cx) {
            Poll::Pending => false,
            Poll::Ready(Some(t)) => {
                self.out_weight += transmit_weight(&t);
                self.closing |= encode(&t, &mut self.out);
                while !self.closing && self.out.len() < WRITE_BATCH {
                    let Some(t) = self.outbox.try_recv() else {
                        break;
                    };
                    self.out_weight += transmit_weight(&t);
                    self.closing |= encode(&t, &mut self.out);
                }
                true
            }
            Poll::Ready(None) => {
                self.released = true;
                true
            }
        }
    }

    /// Writes the batch, then flushes it (TLS and WebSockets buffer).
    fn poll_write(&mut self, cx: &mut Context<'_>) -> bool {
        if self.flushing {
            return match Pin::new(&mut self.stream).poll_flush(cx) {
                Poll::Pending => false,
                Poll::Ready(Ok(())) => {
                    self.flushing = false;
                    release_backlog(&self.outbox.backlog, self.out_weight, &self.counters);
                    self.out_weight = 0;
                    // Nothing queued: give the buffer back while idle.
                    self.out = BytesMut::new();
                    true
                }
                Poll::Ready(Err(_)) => {
                    self.write_failed();
                    true
                }
            };
        }
        if self.out.is_empty() {
            return false;
        }
        match Pin::new(&mut self.stream).poll_write(cx, &self.out) {
            Poll::Pending => false,
            Poll::Ready(Ok(n)) if n > 0 => {
                self.counters
                    .bytes_sent
                    .fetch_add(n as u64, Ordering::Relaxed);
                let _ = self.out.split_to(n);
                self.flushing = self.out.is_empty();
                true
            }
            Poll::Ready(_) => {
                self.write_failed();
                true
            }
        }
    }

    fn poll_timer(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(timer) = self.timer.as_mut() else {
            return false;
        };
        if timer.as_mut().poll(cx).is_pending() {
            return false;
        }
        // The client did not take our answer in time.
        self.timer = None;
        self.to_router.push_back(RouterMsg::Lost {
            conn: self.reader.conn,
        });
        self.out.clear();
        self.flushing = false;
        self.closing = true;
        true
    }

    /// The end: a connection the broker closed is shut down (the TLS
    /// close_notify, the WebSocket close frame), for at most [`CLOSE_GRACE`].
    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.closing {
            return Poll::Ready(());
        }
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(CLOSE_GRACE)));
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        Pin::new(&mut self.stream).poll_shutdown(cx).map(|_| ())
    }

    /// A write failed: the client is gone. Tell the router (once) and stop.
    fn write_failed(&mut self) {
        self.out.clear();
        self.flushing = false;
        if self.reading {
            self.reading = false;
            self.to_router.push_back(RouterMsg::Lost {
                conn: self.reader.conn,
            });
        }
        self.closing = true;
    }
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
