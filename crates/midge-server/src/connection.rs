//! One client connection, one task: it reads and decodes batches of
//! packets for the router, and encodes each outgoing batch into one buffer
//! written with one call. Reading, handing to the router and writing are
//! polled side by side, so a client that writes while it is not reading
//! cannot deadlock the broker, and an idle connection costs one small task,
//! or none once parked (`crate::park`).

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

/// Read buffer taken while data flows; see [`read_room`].
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

/// What a transmit costs in the writer's backlog: close to its encoded size.
/// The router weighs each transmit once and hands the weight along with it
/// ([`Outbox::send`]), so the writer takes off exactly what was added.
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
pub struct Outbox {
    /// The connection this queue writes to (kept here, where it costs no
    /// more memory, rather than in the connection's task).
    conn: ConnId,
    state: std::sync::Mutex<OutboxState>,
    /// Transmits held for the store (waiting for what they acknowledge to
    /// be durable): while there are any, nothing may overtake them.
    held: AtomicUsize,
    /// Weight of the transmits given to the writer and not yet written:
    /// the router adds, the connection takes off (see [`transmit_weight`]).
    /// Kept here rather than in an allocation of its own.
    pub(crate) backlog: AtomicUsize,
}

/// A transmit and its [`transmit_weight`], as the router counted it in the
/// writer's backlog.
type Weighed = (Transmit, usize);

#[derive(Default)]
struct OutboxState {
    /// Boxed only while transmits wait: an empty queue is one pointer
    /// instead of 32 bytes, which keeps the outbox in a 96-byte chunk.
    #[allow(clippy::box_collection)]
    items: Option<Box<std::collections::VecDeque<Weighed>>>,
    closed: bool,
    /// QoS 0 messages to this slow reader were dropped (it is said once).
    dropped: bool,
    /// The connection task, while it waits for something to write.
    waker: Option<Waker>,
}

impl OutboxState {
    /// Next transmit; an emptied queue gives its allocation back.
    fn pop(&mut self) -> Option<Weighed> {
        let items = self.items.as_mut()?;
        let t = items.pop_front();
        if items.is_empty() {
            self.items = None;
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
    pub fn new(conn: ConnId) -> Self {
        Outbox {
            conn,
            state: Default::default(),
            held: AtomicUsize::new(0),
            backlog: AtomicUsize::new(0),
        }
    }

    /// Queues a transmit of `weight` ([`transmit_weight`], already added to
    /// the backlog); false when the writer is gone.
    pub fn send(&self, t: Transmit, weight: usize) -> bool {
        let Ok(mut s) = self.state.lock() else {
            return false;
        };
        if s.closed {
            return false;
        }
        s.items
            .get_or_insert_with(Default::default)
            .push_back((t, weight));
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
    pub fn send_held(&self, t: Transmit, weight: usize) -> bool {
        let sent = self.send(t, weight);
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

    /// Has `waker` woken by the next [`Outbox::send`] or [`Outbox::close`]
    /// instead of the connection's task, if `still_parked` says the
    /// connection is still without one (checked under this queue's lock, so
    /// a task that took the connection back cannot have its own waker
    /// replaced). Err when there is something to write or the queue is
    /// closed: the connection has work, and must not park.
    pub(crate) fn park(
        &self,
        waker: &Waker,
        still_parked: impl FnOnce() -> bool,
    ) -> Result<(), ()> {
        let Ok(mut s) = self.state.lock() else {
            return Err(());
        };
        if s.closed || s.items.is_some() {
            return Err(());
        }
        if still_parked() {
            s.waker = Some(waker.clone());
        }
        Ok(())
    }

    /// True the first time QoS 0 messages to this connection are dropped
    /// (the router logs that once per connection).
    pub(crate) fn first_drop(&self) -> bool {
        self.state
            .lock()
            .is_ok_and(|mut s| !std::mem::replace(&mut s.dropped, true))
    }

    pub(crate) fn try_recv(&self) -> Option<Weighed> {
        self.state.lock().ok()?.pop()
    }

    /// The next transmit, `Ready(None)` once closed and empty; otherwise
    /// the task is woken by the next [`Outbox::send`] or [`Outbox::close`].
    fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<Weighed>> {
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
    link: Arc<RouterLink>,
) -> Connection<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let outbox = Arc::new(Outbox::new(conn));
    let open = RouterMsg::Open {
        conn,
        writer: outbox.clone(),
        peer: origin.peer.into_boxed_str(),
        identity: origin.identity,
        mount: origin.mount,
    };
    Connection {
        stream,
        read_buf: BytesMut::new(),
        version: None,
        flowing: false,
        link,
        outbox,
        rare: Some(Box::new(Rare {
            to_router: VecDeque::from([open]),
            ..Rare::default()
        })),
        out: BytesMut::new(),
        out_weight: 0,
        reading: true,
        answered: false,
        flushing: false,
        closing: false,
        released: false,
    }
}

/// What all connections of a server share: one allocation for all of them
/// instead of three pointers in each.
pub struct RouterLink {
    /// The router's queue.
    pub router: mpsc::Sender<RouterMsg>,
    pub counters: Arc<Counters>,
    /// Largest packet accepted from a client (`max_packet_size`).
    pub max_packet_size: usize,
    /// Where a parked connection's task is spawned again (the `park` module).
    pub runtime: tokio::runtime::Handle,
}

/// Waits for room in the router's queue (only while it is full).
type Reserve = Pin<Box<dyn Future<Output = Result<OwnedPermit<RouterMsg>, ()>> + Send>>;

/// A connection's whole state, polled as one future: an idle connection
/// costs this struct and nothing more (a `select!` loop would also hold
/// every branch's future, and an `async fn` the state of each `.await`).
///
/// Its size is watched (`a_plain_connection_task_stays_small`): tokio
/// allocates a task in steps of 128 bytes, and with a plain TCP stream
/// this state fits the 256-byte step. What only a few connections need at
/// a time is in [`Rare`], allocated only then.
pub struct Connection<S> {
    stream: S,
    /// What was read and not yet decoded: as large as the traffic needs
    /// (see [`read_room`]), nothing while the client is quiet.
    read_buf: BytesMut,
    /// The protocol, once the CONNECT is decoded.
    version: Option<ProtocolVersion>,
    /// Whether the last read filled what it was given: data is flowing.
    flowing: bool,
    link: Arc<RouterLink>,
    outbox: Arc<Outbox>,
    rare: Option<Box<Rare>>,
    /// Encoded packets not yet written, and their weight in the backlog.
    out: BytesMut,
    out_weight: usize,
    reading: bool,
    /// Something was written: the client has its CONNACK, so the
    /// connection may park when idle (an unanswered one is about to be
    /// answered).
    answered: bool,
    /// Everything was written; waiting for the stream to flush it.
    flushing: bool,
    /// The broker closed the connection: write what is left, then stop.
    closing: bool,
    /// The router let go of the connection (after Lost).
    released: bool,
}

/// The parts of a connection's state that are used only for a moment: it
/// exists while any of them is, so an idle connection does not carry them.
#[derive(Default)]
struct Rare {
    /// Messages waiting for room in the router's queue; reading stops
    /// while there are any (back-pressure on the client).
    to_router: VecDeque<RouterMsg>,
    /// Set while the router's queue is full.
    reserve: Option<Reserve>,
    /// After bad input: how long the client is given to read our answer;
    /// at the end, how long its shutdown may take.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Rare {
    fn is_empty(&self) -> bool {
        self.to_router.is_empty() && self.reserve.is_none() && self.timer.is_none()
    }
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
                && (this.released || !this.waits_for_router())
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
                if this.rare.as_ref().is_some_and(|r| r.is_empty()) {
                    this.rare = None;
                }
                return Poll::Pending;
            }
        }
    }
}

/// The router's queue is closed: the broker is stopping.
struct RouterGone;

/// What an idle connection is made of: all that [`crate::park`] keeps
/// while the connection has no task.
pub(crate) struct IdleParts<S> {
    pub(crate) stream: S,
    version: Option<ProtocolVersion>,
    pub(crate) outbox: Arc<Outbox>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Whether the connection holds nothing but its socket and its links:
    /// established, answered, nothing read and undecoded, nothing to write,
    /// nothing waiting for the router, no timer.
    pub(crate) fn is_idle(&self) -> bool {
        self.version.is_some()
            && self.answered
            && self.reading
            && self.rare.is_none()
            && self.read_buf.is_empty()
            && !self.flowing
            && self.out.is_empty()
            && self.out_weight == 0
            && !self.flushing
            && !self.closing
            && !self.released
    }

    /// Has `waker` woken when data or the end of the stream arrives; false
    /// if some already had (it was read: poll the connection again).
    pub(crate) fn arm(&mut self, waker: &Waker) -> bool {
        !self.poll_read(&mut Context::from_waker(waker))
    }

    /// The idle connection taken apart (see [`Self::is_idle`]); the link
    /// to the router is kept elsewhere, by whoever parks it.
    pub(crate) fn into_idle_parts(self) -> IdleParts<S> {
        IdleParts {
            stream: self.stream,
            version: self.version,
            outbox: self.outbox,
        }
    }

    /// The connection an [`IdleParts`] was taken from, as it was.
    pub(crate) fn from_idle_parts(parts: IdleParts<S>, link: Arc<RouterLink>) -> Self {
        Connection {
            stream: parts.stream,
            read_buf: BytesMut::new(),
            version: parts.version,
            flowing: false,
            link,
            outbox: parts.outbox,
            rare: None,
            out: BytesMut::new(),
            out_weight: 0,
            reading: true,
            answered: true,
            flushing: false,
            closing: false,
            released: false,
        }
    }

    fn rare_mut(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    /// Whether messages wait for room in the router's queue.
    fn waits_for_router(&self) -> bool {
        self.rare.as_ref().is_some_and(|r| !r.to_router.is_empty())
    }

    /// Hands a message to the router at once if its queue has room and
    /// nothing waits before it; otherwise queues it for [`Self::poll_router`].
    fn tell_router(&mut self, msg: RouterMsg) {
        let msg = if self.waits_for_router() {
            msg
        } else {
            match self.link.router.try_send(msg) {
                Ok(()) => return,
                // Closed: `poll_router` finds it so and stops the task.
                Err(mpsc::error::TrySendError::Full(m) | mpsc::error::TrySendError::Closed(m)) => m,
            }
        };
        self.rare_mut().to_router.push_back(msg);
    }

    /// Hands waiting messages to the router; whether any moved.
    fn poll_router(&mut self, cx: &mut Context<'_>) -> Result<bool, RouterGone> {
        let Some(rare) = self.rare.as_mut() else {
            return Ok(false);
        };
        let mut progress = false;
        while let Some(msg) = rare.to_router.pop_front() {
            if let Some(reserve) = rare.reserve.as_mut() {
                match reserve.as_mut().poll(cx) {
                    Poll::Ready(Ok(permit)) => {
                        rare.reserve = None;
                        permit.send(msg);
                        progress = true;
                        continue;
                    }
                    Poll::Ready(Err(())) => return Err(RouterGone),
                    Poll::Pending => {
                        rare.to_router.push_front(msg);
                        return Ok(progress);
                    }
                }
            }
            match self.link.router.try_send(msg) {
                Ok(()) => progress = true,
                Err(mpsc::error::TrySendError::Full(msg)) => {
                    // Polled on the next turn of this loop.
                    rare.to_router.push_front(msg);
                    let router = self.link.router.clone();
                    rare.reserve = Some(Box::pin(async move {
                        router.reserve_owned().await.map_err(|_| ())
                    }));
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return Err(RouterGone),
            }
        }
        Ok(progress)
    }

    /// Reads and decodes, unless the router has not taken the last batch.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.reading || self.waits_for_router() {
            return false;
        }
        let read = if self.read_buf.is_empty() && !self.flowing {
            // A quiet connection waits for data without a buffer of its
            // own: what arrives lands on the stack and is copied.
            let mut quiet = [0u8; QUIET_READ];
            let mut into = ReadBuf::new(&mut quiet);
            Pin::new(&mut self.stream)
                .poll_read(cx, &mut into)
                .map_ok(|()| {
                    self.read_buf.extend_from_slice(into.filled());
                    into.filled().len()
                })
        } else {
            let room = read_room(&mut self.read_buf, self.flowing);
            // `read_buf` keeps no state between polls: a fresh one each time.
            std::pin::pin!(self.stream.read_buf(room)).poll(cx)
        };
        match read {
            Poll::Pending => false,
            Poll::Ready(Ok(n)) if n > 0 => {
                self.link
                    .counters
                    .bytes_received
                    .fetch_add(n as u64, Ordering::Relaxed);
                if self.decode(n) {
                    // Bad input: stop reading, let the broker answer.
                    self.reading = false;
                    self.rare_mut().timer = Some(Box::pin(tokio::time::sleep(CLOSE_GRACE)));
                }
                true
            }
            Poll::Ready(_) => {
                self.reading = false;
                self.tell_router(RouterMsg::Lost {
                    conn: self.outbox.conn,
                });
                true
            }
        }
    }

    /// Decodes what arrived into messages for the router. Returns true on
    /// bad input (after handing on what decoded before it and the error).
    fn decode(&mut self, n: usize) -> bool {
        self.flowing = n >= QUIET_READ / 2 && n * 2 >= self.read_buf.capacity().min(READ_CHUNK);
        let conn = self.outbox.conn;
        let mut packets = Vec::new();
        let mut error = None;
        loop {
            match decode_packet(&mut self.read_buf, self.version, self.link.max_packet_size) {
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
            self.tell_router(RouterMsg::Packets { conn, packets });
        }
        // A connection going quiet gives its read buffer back: idle
        // clients cost no buffer memory.
        if self.read_buf.is_empty() && !self.flowing {
            self.read_buf = BytesMut::new();
        }
        let Some(e) = error else {
            return false;
        };
        self.tell_router(match e {
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

    /// Encodes what the router sent, up to one write batch.
    fn poll_outbox(&mut self, cx: &mut Context<'_>) -> bool {
        if self.released || self.closing || self.flushing || self.out.len() >= WRITE_BATCH {
            return false;
        }
        match self.outbox.poll_recv(cx) {
            Poll::Pending => false,
            Poll::Ready(Some((t, weight))) => {
                self.out_weight += weight;
                self.closing |= encode(&t, &mut self.out);
                while !self.closing && self.out.len() < WRITE_BATCH {
                    let Some((t, weight)) = self.outbox.try_recv() else {
                        break;
                    };
                    self.out_weight += weight;
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
                    release_backlog(&self.outbox.backlog, self.out_weight, &self.link.counters);
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
                self.link
                    .counters
                    .bytes_sent
                    .fetch_add(n as u64, Ordering::Relaxed);
                let _ = self.out.split_to(n);
                self.flushing = self.out.is_empty();
                self.answered = true;
                true
            }
            Poll::Ready(_) => {
                self.write_failed();
                true
            }
        }
    }

    fn poll_timer(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(timer) = self.rare.as_mut().and_then(|r| r.timer.as_mut()) else {
            return false;
        };
        if timer.as_mut().poll(cx).is_pending() {
            return false;
        }
        // The client did not take our answer in time.
        self.rare_mut().timer = None;
        self.tell_router(RouterMsg::Lost {
            conn: self.outbox.conn,
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
            .rare_mut()
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
            self.tell_router(RouterMsg::Lost {
                conn: self.outbox.conn,
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

/// Room to read into: a small buffer for a quiet connection, a larger one
/// while data flows.
fn read_room(buf: &mut BytesMut, flowing: bool) -> &mut BytesMut {
    let want = if flowing { READ_CHUNK } else { QUIET_READ };
    if buf.capacity() - buf.len() < want / 4 {
        buf.reserve(want);
    }
    buf
}

fn encode(t: &Transmit, out: &mut BytesMut) -> bool {
    for p in &t.packets {
        // The core only builds packets that encode; a failure here is a bug
        // we must not turn into a crash.
        let _ = encode_packet(p, t.protocol, out);
    }
    t.close
}
