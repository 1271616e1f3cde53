//! The bench's MQTT client side, directly on `midge-codec` and tokio: open a
//! connection (optionally from a given source address), CONNECT/CONNACK,
//! SUBSCRIBE many filters pipelined, and the two hot loops, publisher and
//! subscriber.
//!
//! Both loops work in batches so the bench is not the bottleneck on a small
//! machine: a publisher encodes a PUBLISH once as a template and then copies
//! it many times into one buffer, patching the packet id and timestamp in
//! place, and writes the buffer with one call (the socket's back-pressure
//! bounds it); a subscriber reads up to 256 KiB at a time and decodes every
//! whole packet in the buffer, answering acknowledgements in one write.
//! Everything speaks MQTT 3.1.1, which every broker we compare understands.

use anyhow::{anyhow, bail, Context, Result};
use bytes::BytesMut;
use midge_codec::{
    decode_packet, encode_packet, Connect, Packet, ProtocolVersion, PubResponse, Publish, QoS,
    Subscribe, SubscriptionOptions,
};
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU16;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use crate::stats::{self, Histogram, Live};

pub const VERSION: ProtocolVersion = ProtocolVersion::V311;
/// Largest packet we accept from the broker (the protocol's maximum).
const MAX_PACKET: usize = 268_435_460;
/// How much a publisher puts in one write call.
const WRITE_BATCH_BYTES: usize = 64 * 1024;
/// Room kept free in a read buffer before each read.
const READ_CHUNK: usize = 256 * 1024;
/// Time allowed for TCP connect plus CONNACK.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how to connect.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub keep_alive: u16,
    /// Source addresses handed out round-robin (empty: let the kernel pick).
    pub sources: Arc<Vec<IpAddr>>,
}

impl Target {
    pub fn source(&self, i: usize) -> Option<IpAddr> {
        if self.sources.is_empty() {
            None
        } else {
            Some(self.sources[i % self.sources.len()])
        }
    }
}

fn packet_id(n: u16) -> NonZeroU16 {
    NonZeroU16::new(n).unwrap_or(NonZeroU16::MIN)
}

fn encode(packet: &Packet, buf: &mut BytesMut) -> Result<()> {
    encode_packet(packet, VERSION, buf).map_err(|e| anyhow!("cannot encode {packet:?}: {e}"))
}

/// Opens a TCP connection and completes the MQTT handshake. Returns the
/// stream and whatever the broker sent after the CONNACK. `clean_session`
/// false asks for a persistent session (3.1.1 clean session 0), which needs
/// a non-empty `client_id`.
pub async fn connect(
    target: &Target,
    source: Option<IpAddr>,
    client_id: &str,
    clean_session: bool,
) -> Result<(TcpStream, BytesMut)> {
    let addr = target.addr;
    let fut = async {
        let sock = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .context("cannot create a socket")?;
        if let Some(src) = source {
            sock.bind(SocketAddr::new(src, 0))
                .with_context(|| format!("cannot bind source address {src}"))?;
        }
        let mut stream = sock
            .connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true).ok();
        let mut out = BytesMut::with_capacity(64);
        encode(
            &Packet::Connect(Box::new(Connect {
                protocol: VERSION,
                clean_start: clean_session,
                keep_alive: target.keep_alive,
                client_id: client_id.into(),
                will: None,
                username: None,
                password: None,
                properties: Default::default(),
            })),
            &mut out,
        )?;
        stream
            .write_all(&out)
            .await
            .with_context(|| format!("{addr}: cannot send CONNECT"))?;
        let mut buf = BytesMut::with_capacity(4096);
        loop {
            match decode_packet(&mut buf, Some(VERSION), MAX_PACKET) {
                Ok(Some(Packet::ConnAck(ack))) => {
                    if ack.code != 0 {
                        bail!(
                            "{addr}: broker refused the connection of {client_id}: CONNACK return code {} ({})",
                            ack.code,
                            connack_meaning(ack.code)
                        );
                    }
                    return Ok((stream, buf));
                }
                Ok(Some(other)) => bail!(
                    "{addr}: expected CONNACK, got packet type {}",
                    other.packet_type()
                ),
                Ok(None) => {}
                Err(e) => bail!("{addr}: malformed reply to CONNECT: {e}"),
            }
            let n = stream
                .read_buf(&mut buf)
                .await
                .with_context(|| format!("{addr}: connection lost before CONNACK"))?;
            if n == 0 {
                bail!("{addr}: broker closed the connection before CONNACK");
            }
        }
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, fut).await {
        Ok(r) => r,
        Err(_) => bail!("{addr}: no CONNACK within {} s", CONNECT_TIMEOUT.as_secs()),
    }
}

fn connack_meaning(code: u8) -> &'static str {
    match code {
        1 => "unacceptable protocol version",
        2 => "identifier rejected",
        3 => "server unavailable",
        4 => "bad user name or password",
        5 => "not authorized",
        _ => "unknown",
    }
}

/// Ends any session the broker keeps under `client_id`: connects with clean
/// session 1 and disconnects, then waits (bounded) for the broker to close
/// the connection, so a persistent session opened next starts empty.
pub async fn clear_session(target: &Target, source: Option<IpAddr>, client_id: &str) -> Result<()> {
    let (stream, _) = connect(target, source, client_id, true).await?;
    let (rd, wr) = stream.into_split();
    close(rd, wr).await;
    Ok(())
}

/// Sends DISCONNECT and waits (bounded) for the broker to close the
/// connection, so the broker is done with it: a persistent session is then
/// offline. Whatever arrives meanwhile is dropped unread. The write side is
/// left open, so the broker closes first and TIME_WAIT stays on its side:
/// the bench's source ports are free again at once, and a loop of connects
/// (`churn`) never runs out of them.
pub async fn close(mut rd: OwnedReadHalf, mut wr: OwnedWriteHalf) {
    send_disconnect(&mut wr).await;
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(CONNECT_TIMEOUT, async {
        while let Ok(n) = rd.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// Subscribes to every filter, `per_packet` filters per SUBSCRIBE, all
/// packets pipelined, and waits for every SUBACK. Fails if any filter is
/// refused.
pub async fn subscribe(
    stream: TcpStream,
    mut buf: BytesMut,
    filters: &[String],
    qos: QoS,
    per_packet: usize,
) -> Result<(OwnedReadHalf, OwnedWriteHalf, BytesMut)> {
    let (mut rd, mut wr) = stream.into_split();
    let mut out = BytesMut::new();
    let mut packets = 0usize;
    for (i, chunk) in filters.chunks(per_packet.max(1)).enumerate() {
        let id = (i % 65535) as u16 + 1;
        encode(
            &Packet::Subscribe(Subscribe {
                packet_id: packet_id(id),
                filters: chunk
                    .iter()
                    .map(|f| {
                        (
                            f.as_str().into(),
                            SubscriptionOptions {
                                qos,
                                ..Default::default()
                            },
                        )
                    })
                    .collect(),
                properties: Default::default(),
            }),
            &mut out,
        )?;
        packets += 1;
    }
    let write = async {
        wr.write_all(&out).await.context("cannot send SUBSCRIBE")?;
        Ok::<_, anyhow::Error>(())
    };
    let read = async {
        let mut acks = 0usize;
        while acks < packets {
            loop {
                match decode_packet(&mut buf, Some(VERSION), MAX_PACKET) {
                    Ok(Some(Packet::SubAck(ack))) => {
                        if let Some(bad) = ack.reasons.iter().find(|r| r.is_error()) {
                            bail!("broker refused a subscription (SUBACK code {:#04x})", bad.0);
                        }
                        acks += 1;
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(e) => bail!("malformed packet from the broker: {e}"),
                }
            }
            if acks >= packets {
                break;
            }
            buf.reserve(READ_CHUNK);
            if rd.read_buf(&mut buf).await.context("reading SUBACK")? == 0 {
                bail!("broker closed the connection before every SUBACK arrived");
            }
        }
        Ok(())
    };
    tokio::try_join!(write, read)?;
    Ok((rd, wr, buf))
}

/// What a subscriber saw.
#[derive(Default)]
pub struct SubResult {
    pub received: u64,
    pub hist: Histogram,
}

/// Receives until `stop` turns true or the broker closes the connection,
/// counting deliveries and recording the latency of stamped payloads.
/// Acknowledges QoS 1 and 2 deliveries.
pub async fn run_subscriber(
    mut rd: OwnedReadHalf,
    mut wr: OwnedWriteHalf,
    mut buf: BytesMut,
    live: Arc<Live>,
    mut stop: watch::Receiver<bool>,
) -> Result<SubResult> {
    let mut res = SubResult::default();
    let mut out = BytesMut::with_capacity(4096);
    loop {
        let mut n = 0u64;
        let now = stats::now_ns();
        loop {
            match decode_packet(&mut buf, Some(VERSION), MAX_PACKET) {
                Ok(Some(Packet::Publish(p))) => {
                    n += 1;
                    if p.payload.len() >= stats::STAMP_LEN {
                        if let Some(us) = stats::latency_us(&p.payload, now) {
                            res.hist.record(us);
                        }
                    }
                    match (p.qos, p.packet_id) {
                        (QoS::AtLeastOnce, Some(id)) => {
                            encode(&Packet::PubAck(PubResponse::new(id)), &mut out)?
                        }
                        (QoS::ExactlyOnce, Some(id)) => {
                            encode(&Packet::PubRec(PubResponse::new(id)), &mut out)?
                        }
                        _ => {}
                    }
                }
                Ok(Some(Packet::PubRel(r))) => {
                    encode(&Packet::PubComp(PubResponse::new(r.packet_id)), &mut out)?
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => bail!("malformed packet from the broker: {e}"),
            }
        }
        if n > 0 {
            res.received += n;
            live.add_received(n, now);
        }
        if !out.is_empty() {
            wr.write_all(&out).await.context("subscriber write")?;
            out.clear();
        }
        if *stop.borrow() {
            break;
        }
        buf.reserve(READ_CHUNK);
        tokio::select! {
            r = rd.read_buf(&mut buf) => {
                match r {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => return Err(e).context("subscriber read"),
                }
            }
            _ = stop.changed() => break,
        }
    }
    disconnect(&mut wr).await;
    Ok(res)
}

/// Sends DISCONNECT and shuts the write side, ignoring errors (the run is over).
pub async fn disconnect(wr: &mut OwnedWriteHalf) {
    send_disconnect(wr).await;
    let _ = wr.shutdown().await;
}

/// Sends DISCONNECT, ignoring errors.
async fn send_disconnect(wr: &mut OwnedWriteHalf) {
    let mut out = BytesMut::new();
    if encode(&Packet::Disconnect(Default::default()), &mut out).is_ok() {
        let _ = wr.write_all(&out).await;
    }
}

/// How one publisher publishes.
#[derive(Clone)]
pub struct PubSpec {
    pub topic: String,
    pub qos: QoS,
    pub payload: usize,
    /// At most this many QoS 1/2 publishes unacknowledged.
    pub window: usize,
    /// Messages per second for this publisher; `None`: as fast as possible.
    pub rate: Option<f64>,
    /// Stop after this many messages (0: no limit).
    pub count: u64,
    /// Stop publishing at this instant.
    pub deadline: Instant,
    /// How long to wait for outstanding acknowledgements after the deadline.
    pub drain: Duration,
}

#[derive(Default)]
pub struct PubResult {
    pub sent: u64,
    pub acked: u64,
}

/// Packet ids in flight for a QoS 1/2 publisher, shared by its writer and
/// its acknowledgement reader.
struct Window {
    size: usize,
    st: Mutex<WinState>,
    notify: Notify,
}

struct WinState {
    outstanding: usize,
    used: Vec<u64>,
    next: u16,
    /// PUBREC received: PUBREL to send.
    pubrel: Vec<u16>,
    acked: u64,
    closed: bool,
}

impl Window {
    fn new(size: usize) -> Window {
        Window {
            size: size.clamp(1, 65535),
            st: Mutex::new(WinState {
                outstanding: 0,
                used: vec![0; 1024],
                next: 1,
                pubrel: Vec::new(),
                acked: 0,
                closed: false,
            }),
            notify: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WinState> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes up to `max` free ids into `ids` and the pending PUBRELs into
    /// `rel`; waits while there is neither.
    async fn acquire(&self, max: usize, ids: &mut Vec<u16>, rel: &mut Vec<u16>) {
        loop {
            {
                let mut st = self.lock();
                std::mem::swap(rel, &mut st.pubrel);
                let n = max.min(self.size - st.outstanding);
                for _ in 0..n {
                    let mut id = st.next;
                    while st.used[usize::from(id) / 64] & (1 << (id % 64)) != 0 {
                        id = if id == u16::MAX { 1 } else { id + 1 };
                    }
                    st.used[usize::from(id) / 64] |= 1 << (id % 64);
                    st.next = if id == u16::MAX { 1 } else { id + 1 };
                    ids.push(id);
                }
                st.outstanding += n;
                if n > 0 || !rel.is_empty() || st.closed || (max == 0 && st.outstanding == 0) {
                    return;
                }
            }
            self.notify.notified().await;
        }
    }

    fn outstanding(&self) -> usize {
        self.lock().outstanding
    }

    fn close(&self) {
        self.lock().closed = true;
        self.notify.notify_one();
    }
}

/// Publishes until the deadline or the count, then waits (bounded) for the
/// outstanding acknowledgements and disconnects.
pub async fn run_publisher(
    stream: TcpStream,
    mut buf: BytesMut,
    spec: PubSpec,
    live: Arc<Live>,
    seq_base: u64,
) -> Result<PubResult> {
    let (mut rd, mut wr) = stream.into_split();
    let qos = spec.qos;
    let payload = vec![0u8; spec.payload];
    let mut template = BytesMut::new();
    encode(
        &Packet::Publish(Publish {
            dup: false,
            qos,
            retain: false,
            topic: spec.topic.as_str().into(),
            packet_id: (qos != QoS::AtMostOnce).then(|| packet_id(1)),
            payload: payload.into(),
            properties: Default::default(),
        }),
        &mut template,
    )?;
    let payload_at = template.len() - spec.payload;
    let per_batch = (WRITE_BATCH_BYTES / template.len()).max(1);
    let window = Arc::new(Window::new(if qos == QoS::AtMostOnce {
        65535
    } else {
        spec.window
    }));

    // The acknowledgement reader (QoS 1/2 only; at QoS 0 the broker sends nothing).
    let reader = (qos != QoS::AtMostOnce).then(|| {
        let window = window.clone();
        tokio::spawn(async move {
            let mut freed = Vec::new();
            loop {
                loop {
                    match decode_packet(&mut buf, Some(VERSION), MAX_PACKET) {
                        Ok(Some(Packet::PubAck(r))) | Ok(Some(Packet::PubComp(r))) => {
                            freed.push(r.packet_id.get())
                        }
                        Ok(Some(Packet::PubRec(r))) => {
                            window.lock().pubrel.push(r.packet_id.get());
                            window.notify.notify_one();
                        }
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(e) => {
                            window.close();
                            return Err(anyhow!("malformed packet from the broker: {e}"));
                        }
                    }
                }
                if !freed.is_empty() {
                    let mut st = window.lock();
                    for &id in &freed {
                        let (w, b) = (usize::from(id) / 64, 1u64 << (id % 64));
                        if st.used[w] & b != 0 {
                            st.used[w] &= !b;
                            st.outstanding -= 1;
                            st.acked += 1;
                        }
                    }
                    drop(st);
                    freed.clear();
                    window.notify.notify_one();
                }
                buf.reserve(READ_CHUNK);
                match rd.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => {
                        window.close();
                        return Ok(());
                    }
                    Ok(_) => {}
                }
            }
        })
    });

    let start = Instant::now();
    let mut sent = 0u64;
    let mut out = BytesMut::with_capacity(WRITE_BATCH_BYTES + template.len());
    let mut ids = Vec::with_capacity(per_batch);
    let mut rel = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result: Result<()> = async {
        loop {
            if Instant::now() >= spec.deadline || (spec.count > 0 && sent >= spec.count) {
                break;
            }
            let mut want = per_batch as u64;
            if spec.count > 0 {
                want = want.min(spec.count - sent);
            }
            if let Some(rate) = spec.rate {
                let due = (start.elapsed().as_secs_f64() * rate) as u64;
                let n = due.saturating_sub(sent);
                if n == 0 {
                    tick.tick().await;
                    continue;
                }
                want = want.min(n);
            }
            ids.clear();
            rel.clear();
            if qos != QoS::AtMostOnce {
                let acquired = tokio::time::timeout_at(
                    spec.deadline,
                    window.acquire(want as usize, &mut ids, &mut rel),
                )
                .await;
                if acquired.is_err() {
                    break;
                }
                if ids.is_empty() && rel.is_empty() {
                    // Closed: the reader saw the connection end.
                    bail!("broker closed the publisher's connection");
                }
            }
            out.clear();
            for &id in &rel {
                encode(&Packet::PubRel(PubResponse::new(packet_id(id))), &mut out)?;
            }
            let n = if qos == QoS::AtMostOnce {
                want as usize
            } else {
                ids.len()
            };
            for i in 0..n {
                let at = out.len();
                out.extend_from_slice(&template);
                if let Some(id) = ids.get(i) {
                    out[at + payload_at - 2..at + payload_at].copy_from_slice(&id.to_be_bytes());
                }
                stats::stamp(&mut out[at + payload_at..], seq_base + sent + i as u64);
            }
            wr.write_all(&out).await.context("publisher write")?;
            sent += n as u64;
            live.add_sent(n as u64);
        }
        // Let the outstanding acknowledgements (and QoS 2 PUBRELs) finish.
        if qos != QoS::AtMostOnce {
            let drain_until = Instant::now() + spec.drain;
            while window.outstanding() > 0 {
                ids.clear();
                rel.clear();
                let waited =
                    tokio::time::timeout_at(drain_until, window.acquire(0, &mut ids, &mut rel))
                        .await;
                if waited.is_err() {
                    break;
                }
                if rel.is_empty() {
                    if window.lock().closed {
                        break;
                    }
                    // Woken by an acknowledgement: check the count again.
                    continue;
                }
                out.clear();
                for &id in &rel {
                    encode(&Packet::PubRel(PubResponse::new(packet_id(id))), &mut out)?;
                }
                wr.write_all(&out).await.context("publisher write")?;
            }
        }
        Ok(())
    }
    .await;
    disconnect(&mut wr).await;
    if let Some(r) = reader {
        r.abort();
    }
    result?;
    let acked = window.lock().acked;
    live.acked
        .fetch_add(acked, std::sync::atomic::Ordering::Relaxed);
    Ok(PubResult { sent, acked })
}
