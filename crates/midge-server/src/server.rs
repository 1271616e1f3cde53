//! Wiring: accept loops for the listeners the caller bound (TCP, Unix
//! sockets, either one carrying MQTT or MQTT over WebSockets), the router
//! task, operator controls (reload, dumps) and shutdown. Modelled on
//! mini-redis: listeners and a shutdown future come in from outside so tests
//! bind port 0 and stop the server when they like.

use midge_core::{BrokerConfig, ConnId};
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{mpsc, watch};

use crate::connection::{run_connection, Origin, RouterLink};
use crate::durable::Durability;
use crate::log::{LogType, Logger};
use crate::park::ParkingTask;
use crate::router::run_router;
use crate::tls::Identity;

/// What the server needs beyond the core's own configuration.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub broker: BrokerConfig,
    /// Largest packet accepted from a client, in bytes (`max_packet_size`;
    /// the protocol's own limit, 268 435 460, when 0).
    pub max_packet_size: usize,
    /// How often `$SYS/broker/...` is published (`sys_interval`); `None` = never.
    pub sys_interval: Option<Duration>,
    /// Password and ACL checks (`password_file`, `acl_file`).
    pub access: Option<AccessHandle>,
    /// `memory_limit` in bytes of resident memory (0: none): above it, new
    /// messages are refused until memory falls again.
    pub memory_limit: u64,
}

/// Shared password/ACL checks, as the core's trait object.
#[derive(Clone)]
pub struct AccessHandle(pub Arc<dyn midge_core::AccessControl>);

impl std::fmt::Debug for AccessHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessHandle")
    }
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            broker: BrokerConfig::default(),
            max_packet_size: 0,
            sys_interval: Some(Duration::from_secs(10)),
            access: None,
            memory_limit: 0,
        }
    }
}

/// A bound socket to accept clients on.
#[derive(Debug)]
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// A listener and its settings.
#[derive(Debug)]
pub struct BoundListener {
    pub listener: Listener,
    /// `protocol websockets`, with `websockets_headers_size`: the largest
    /// HTTP upgrade request accepted, in bytes. `None`: plain MQTT.
    pub websockets: Option<usize>,
    /// `max_connections`; `None` = no limit.
    pub max_connections: Option<u32>,
    /// `set_tcp_nodelay`.
    pub nodelay: bool,
    /// TLS (`certfile`/`keyfile`), replaceable on SIGHUP.
    pub tls: Option<crate::tls::SharedTls>,
    /// `mount_point`.
    pub mount_point: Option<Arc<str>>,
}

impl BoundListener {
    /// A plain MQTT listener with no limits.
    pub fn mqtt(listener: Listener) -> Self {
        BoundListener {
            listener,
            websockets: None,
            max_connections: None,
            nodelay: false,
            tls: None,
            mount_point: None,
        }
    }
}

/// What the operator can ask of a running server (signals, in the binary).
#[derive(Debug)]
pub enum Control {
    /// SIGHUP: apply a reloaded configuration.
    Reload(Box<ServerOptions>),
    /// SIGUSR2: write every subscription to the log.
    DumpSubscriptions,
    /// SIGUSR1: compact the store now.
    Checkpoint,
}

/// Traffic counters kept by the connection tasks, read for `$SYS`.
#[derive(Debug, Default)]
pub struct Counters {
    pub bytes_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// Signalled by a writer whose backlog falls below
    /// [`crate::connection::CONGESTED`]: the router may read again.
    pub drained: tokio::sync::Notify,
    /// Idle connections parked without a task (the `park` module).
    pub parked: std::sync::atomic::AtomicUsize,
}

/// Largest packet the protocol allows: 268 435 455 bytes of remaining
/// length plus a 5-byte fixed header.
const PROTOCOL_MAX_PACKET: usize = 268_435_460;

/// Capacity of the channel from connections to the router: when the router
/// falls behind, readers wait, and so back-pressure reaches publishers.
const ROUTER_QUEUE: usize = 256;

/// How long a TLS client has to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the broker on the given listeners until `shutdown` completes.
pub async fn serve(
    listeners: Vec<BoundListener>,
    options: ServerOptions,
    log: Logger,
    control: mpsc::UnboundedReceiver<Control>,
    durability: Option<Durability>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let (router_tx, router_rx) = mpsc::channel(ROUTER_QUEUE);
    let (stop_tx, stop_rx) = watch::channel(false);
    let max_packet = match options.max_packet_size {
        0 => PROTOCOL_MAX_PACKET,
        n => n,
    };
    let counters = Arc::new(Counters::default());
    let shared = Arc::new(AcceptShared {
        link: Arc::new(RouterLink {
            router: router_tx,
            counters: counters.clone(),
            max_packet_size: max_packet,
            runtime: tokio::runtime::Handle::current(),
        }),
        next_id: AtomicU64::new(1),
        log: log.clone(),
    });
    // The accept loops and the idle trimmer: stopped when the router ends.
    let mut tasks = Vec::new();
    for listener in listeners {
        tasks.push(tokio::spawn(accept_loop(
            listener,
            shared.clone(),
            stop_rx.clone(),
        )));
    }
    drop(shared);
    tasks.push(tokio::spawn(crate::trim::trim_when_idle(
        counters.clone(),
        log.clone(),
        stop_rx.clone(),
    )));
    let router = tokio::spawn(run_router(
        options,
        router_rx,
        control,
        counters,
        log.clone(),
        durability,
        async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        },
    ));
    let _ = router.await;
    for t in tasks {
        t.abort();
    }
    // Give writers a moment to send their last packets.
    tokio::time::sleep(Duration::from_millis(50)).await;
}

struct AcceptShared {
    link: Arc<RouterLink>,
    next_id: AtomicU64,
    log: Logger,
}

/// A listener's count of open connections, and the router they talk to.
struct Listening {
    open: AtomicUsize,
    link: Arc<RouterLink>,
}

/// One connection's place in its listener's count, given back when the
/// connection ends; a parked connection finds the router through it.
struct Slot(Arc<Listening>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl crate::park::Held for Slot {
    fn link(&self) -> &Arc<RouterLink> {
        &self.0.link
    }
}

async fn accept_loop(l: BoundListener, shared: Arc<AcceptShared>, mut stop: watch::Receiver<bool>) {
    let listening = Arc::new(Listening {
        open: AtomicUsize::new(0),
        link: shared.link.clone(),
    });
    let name = match &l.listener {
        Listener::Tcp(t) => format!("port {}", t.local_addr().map(|a| a.port()).unwrap_or(0)),
        Listener::Unix(u) => format!(
            "socket {}",
            u.local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
                .unwrap_or_default()
        ),
    };
    loop {
        let accepted = tokio::select! {
            a = accept(&l.listener) => a,
            _ = stop.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors and the like: refuse gracefully,
                // try again shortly.
                crate::log!(
                    shared.log,
                    LogType::ERROR,
                    "Error accepting connection on {}: {}.",
                    name,
                    e
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if let Some(max) = l.max_connections {
            if listening.open.load(Ordering::Relaxed) >= max as usize {
                crate::log!(
                    shared.log,
                    LogType::NOTICE,
                    "Client connection from {} denied: max_connections exceeded.",
                    peer
                );
                drop(stream);
                continue;
            }
        }
        listening.open.fetch_add(1, Ordering::Relaxed);
        let slot = Slot(listening.clone());
        crate::log!(
            shared.log,
            LogType::INFORMATION,
            "New connection from {} on {}.",
            peer,
            name
        );
        let shared = shared.clone();
        let websockets = l.websockets;
        let nodelay = l.nodelay;
        let mount = l.mount_point.clone();
        let tls = l
            .tls
            .as_ref()
            .and_then(|t| t.read().ok().map(|g| g.clone()));
        // Each kind of stream gets its own task: one async block with all
        // of them inline would be as large as the largest (TLS and
        // WebSocket state is kilobytes), and every idle plain-TCP
        // connection would pay for it.
        match (stream, tls) {
            (Accepted::Tcp(s), Some(tls)) => {
                tokio::spawn(serve_tls(
                    s, tls, nodelay, websockets, peer, mount, shared, slot,
                ));
            }
            (Accepted::Tcp(s), None) => {
                if nodelay {
                    let _ = s.set_nodelay(true);
                }
                match websockets {
                    // The common case gets a task no larger than the
                    // connection's own state.
                    None => spawn_plain(s, peer, mount, &shared, slot),
                    Some(_) => {
                        tokio::spawn(async move {
                            let _slot = slot;
                            drive(s, websockets, peer, None, mount, &shared).await
                        });
                    }
                }
            }
            (Accepted::Unix(s), _) => match websockets {
                None => spawn_plain(s, peer, mount, &shared, slot),
                Some(_) => {
                    tokio::spawn(async move {
                        let _slot = slot;
                        drive(s, websockets, peer, None, mount, &shared).await
                    });
                }
            },
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn serve_tls(
    s: tokio::net::TcpStream,
    tls: crate::tls::TlsSettings,
    nodelay: bool,
    websockets: Option<usize>,
    peer: String,
    mount: Option<Arc<str>>,
    shared: Arc<AcceptShared>,
    slot: Slot,
) {
    let _slot = slot;
    if nodelay {
        let _ = s.set_nodelay(true);
    }
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor.accept(s)).await;
    let s = match handshake {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            crate::log!(
                shared.log,
                LogType::NOTICE,
                "TLS handshake with {} failed: {}.",
                peer,
                e
            );
            return;
        }
        Err(_) => {
            crate::log!(
                shared.log,
                LogType::NOTICE,
                "TLS handshake with {} timed out.",
                peer
            );
            return;
        }
    };
    let identity = match tls.identity {
        Identity::Connect => None,
        mode => {
            let cert = s.get_ref().1.peer_certificates().and_then(|c| c.first());
            match cert.and_then(|c| crate::tls::identity_of(c, mode)) {
                Some(name) => Some(name),
                None => {
                    crate::log!(
                        shared.log,
                        LogType::NOTICE,
                        "Client {} has no usable certificate identity, disconnecting.",
                        peer
                    );
                    return;
                }
            }
        }
    };
    drive(s, websockets, peer, identity, mount, &shared).await
}

enum Accepted {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

async fn accept(l: &Listener) -> std::io::Result<(Accepted, String)> {
    match l {
        Listener::Tcp(t) => {
            let (s, a) = t.accept().await?;
            Ok((Accepted::Tcp(s), a.to_string()))
        }
        Listener::Unix(u) => {
            let (s, _) = u.accept().await?;
            let path = u
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
                .unwrap_or_else(|| "unix".to_owned());
            Ok((Accepted::Unix(s), path))
        }
    }
}

async fn drive<S>(
    stream: S,
    websockets: Option<usize>,
    peer: String,
    identity: Option<String>,
    mount: Option<Arc<str>>,
    shared: &AcceptShared,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = ConnId(shared.next_id.fetch_add(1, Ordering::Relaxed));
    if let Some(headers_limit) = websockets {
        // Boxed: the WebSocket state would otherwise size every connection's task.
        let handshake = Box::pin(tokio::time::timeout(
            Duration::from_secs(10),
            crate::ws::accept(stream, headers_limit),
        ));
        match handshake.await {
            Ok(Ok(ws)) => Box::pin(connection(ws, conn, peer, identity, mount, shared)).await,
            Ok(Err(e)) => {
                crate::log!(
                    shared.log,
                    LogType::WEBSOCKETS,
                    "WebSocket handshake with {} failed: {}.",
                    peer,
                    e
                );
            }
            Err(_) => {
                crate::log!(
                    shared.log,
                    LogType::WEBSOCKETS,
                    "WebSocket handshake with {} timed out.",
                    peer
                );
            }
        }
    } else {
        connection(stream, conn, peer, identity, mount, shared).await
    }
}

fn connection<S>(
    stream: S,
    conn: ConnId,
    peer: String,
    identity: Option<String>,
    mount: Option<Arc<str>>,
    shared: &AcceptShared,
) -> crate::connection::Connection<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    run_connection(
        stream,
        conn,
        Origin {
            peer,
            identity,
            mount,
        },
        shared.link.clone(),
    )
}

/// A plain TCP or Unix connection's task: the connection's state and the
/// listener slot it holds, nothing else; it parks when idle
/// (the `park` module).
fn spawn_plain<S>(
    stream: S,
    peer: String,
    mount: Option<Arc<str>>,
    shared: &AcceptShared,
    slot: Slot,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = ConnId(shared.next_id.fetch_add(1, Ordering::Relaxed));
    tokio::spawn(ParkingTask::new(
        connection(stream, conn, peer, None, mount, shared),
        slot,
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a plain connection costs in its task while it has one (an idle
    /// one parks without): keep it from creeping back. tokio 1.54
    /// allocates a task as 104 bytes of its own plus the future, rounded up
    /// to 128: up to 152 bytes of future the task takes 256 bytes, one byte
    /// more and it takes 384.
    /// Every connection has an outbox, idle or not: 72 bytes and the
    /// `Arc`'s two counts take a 96-byte chunk from glibc's allocator.
    #[test]
    fn an_outbox_stays_small() {
        let size = std::mem::size_of::<crate::connection::Outbox>();
        assert!(size <= 72, "an outbox is {size} bytes");
    }

    #[test]
    fn a_plain_connection_task_stays_small() {
        let size = std::mem::size_of::<ParkingTask<tokio::net::TcpStream, Slot>>();
        assert!(size <= 152, "a connection task's future is {size} bytes");
    }
}
