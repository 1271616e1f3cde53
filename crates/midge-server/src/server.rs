//! Wiring: accept loops for the listeners the caller bound, the router task,
//! and shutdown. Modelled on mini-redis: listeners and a shutdown future come
//! in from outside so tests bind port 0 and stop the server when they like.

use midge_core::{Broker, BrokerConfig, ConnId};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::connection::run_connection;
use crate::log::{LogType, Logger};
use crate::router::{run_router, RouterMsg};

/// What the server needs beyond the core's own configuration.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub broker: BrokerConfig,
    /// Largest packet accepted from a client, in bytes (`max_packet_size`;
    /// the protocol's own limit, 268 435 460, when 0).
    pub max_packet_size: usize,
    /// Disable Nagle's algorithm on client sockets (`set_tcp_nodelay`).
    pub set_tcp_nodelay: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            broker: BrokerConfig::default(),
            max_packet_size: 0,
            set_tcp_nodelay: false,
        }
    }
}

/// Largest packet the protocol allows: 268 435 455 bytes of remaining
/// length plus a 5-byte fixed header.
const PROTOCOL_MAX_PACKET: usize = 268_435_460;

/// Capacity of the channel from connections to the router: when the router
/// falls behind, readers wait, and so back-pressure reaches publishers.
const ROUTER_QUEUE: usize = 4096;

/// Runs the broker on the given listeners until `shutdown` completes.
pub async fn serve(
    listeners: Vec<TcpListener>,
    options: ServerOptions,
    log: Logger,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let (router_tx, router_rx) = mpsc::channel(ROUTER_QUEUE);
    let (stop_tx, stop_rx) = watch::channel(false);
    let max_packet = match options.max_packet_size {
        0 => PROTOCOL_MAX_PACKET,
        n => n,
    };
    let next_id = Arc::new(AtomicU64::new(1));
    let mut accepts = Vec::new();
    for listener in listeners {
        accepts.push(tokio::spawn(accept_loop(
            listener,
            router_tx.clone(),
            next_id.clone(),
            max_packet,
            options.set_tcp_nodelay,
            log.clone(),
            stop_rx.clone(),
        )));
    }
    drop(router_tx);
    let broker = Broker::new(options.broker);
    let router_log = log.clone();
    let router = tokio::spawn(run_router(broker, router_rx, router_log, async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    }));
    let _ = router.await;
    for a in accepts {
        a.abort();
    }
    // Give writers a moment to send their last packets.
    tokio::time::sleep(Duration::from_millis(50)).await;
}

async fn accept_loop(
    listener: TcpListener,
    router: mpsc::Sender<RouterMsg>,
    next_id: Arc<AtomicU64>,
    max_packet: usize,
    nodelay: bool,
    log: Logger,
    mut stop: watch::Receiver<bool>,
) {
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
        };
        match accepted {
            Ok((stream, addr)) => {
                if nodelay {
                    let _ = stream.set_nodelay(true);
                }
                let conn = ConnId(next_id.fetch_add(1, Ordering::Relaxed));
                let peer = addr.to_string();
                crate::log!(
                    log,
                    LogType::INFORMATION,
                    "New connection from {} on port {}.",
                    peer,
                    port
                );
                tokio::spawn(run_connection(
                    stream,
                    conn,
                    peer,
                    router.clone(),
                    max_packet,
                ));
            }
            Err(e) => {
                // Out of file descriptors and the like: refuse gracefully,
                // try again shortly.
                crate::log!(
                    log,
                    LogType::ERROR,
                    "Error accepting connection on port {}: {}.",
                    port,
                    e
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
