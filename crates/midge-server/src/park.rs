//! Idle plain connections without a task. A plain TCP or Unix connection
//! with nothing to read, write or hand to the router gives its task back
//! (256 bytes in tokio 1.54) and waits as one small [`Parked`] allocation:
//! its socket, its outbox and its listener slot (through which it finds
//! the router again). That
//! allocation is also the waker the socket's readiness and the router's
//! next transmit call, and the first of them spawns a task for the
//! connection again. Nothing is re-registered with the reactor, so parking
//! costs no system call. TLS and WebSocket connections keep their tasks:
//! their own state is kilobytes.

use crate::connection::{Connection, IdleParts, RouterLink};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use tokio::io::{AsyncRead, AsyncWrite};

/// What a parked connection keeps besides its socket (its listener slot),
/// through which it finds the router again.
pub(crate) trait Held: Unpin + Send + 'static {
    fn link(&self) -> &Arc<RouterLink>;
}

/// A plain connection's task, with what must live as long as the
/// connection (`H`: its listener slot). It ends when the connection ends,
/// or when the connection parks.
pub(crate) struct ParkingTask<S, H> {
    inner: Option<(Connection<S>, H)>,
}

impl<S, H> ParkingTask<S, H> {
    pub(crate) fn new(conn: Connection<S>, held: H) -> Self {
        ParkingTask {
            inner: Some((conn, held)),
        }
    }
}

impl<S, H> Future for ParkingTask<S, H>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Held,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let Some((conn, _)) = this.inner.as_mut() else {
            return Poll::Ready(());
        };
        if Pin::new(&mut *conn).poll(cx).is_ready() {
            this.inner = None;
            return Poll::Ready(());
        }
        if !conn.is_idle() {
            return Poll::Pending;
        }
        let Some((conn, held)) = this.inner.take() else {
            return Poll::Pending;
        };
        match park(conn, held) {
            Ok(()) => Poll::Ready(()),
            Err(back) => {
                // Something arrived while parking: serve it.
                this.inner = Some(back);
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }
}

/// Parks an idle connection; gives it back if something arrived meanwhile
/// and no wake-up has taken it over.
#[allow(clippy::type_complexity)]
fn park<S, H>(mut conn: Connection<S>, held: H) -> Result<(), (Connection<S>, H)>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Held,
{
    let parked = Arc::new(Parked {
        state: Mutex::new(State::Arming),
    });
    let waker = Waker::from(parked.clone());
    // From here on the socket's readiness wakes `parked`.
    if !conn.arm(&waker) {
        return Err((conn, held));
    }
    let parts = conn.into_idle_parts();
    let outbox = parts.outbox.clone();
    let (parts, held) = match parked.settle(parts, held) {
        Ok(()) => return finish(&parked, &waker, &outbox),
        Err(back) => back,
    };
    let link = held.link().clone();
    Err((Connection::from_idle_parts(parts, link), held))
}

/// The connection is parked; the router's queue is the last thing to wake
/// `parked` instead of the task.
#[allow(clippy::type_complexity)]
fn finish<S, H>(
    parked: &Arc<Parked<S, H>>,
    waker: &Waker,
    outbox: &crate::connection::Outbox,
) -> Result<(), (Connection<S>, H)>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Held,
{
    let still_parked = || parked.is_parked();
    if outbox.park(waker, still_parked).is_ok() {
        return Ok(());
    }
    // Something to write came first: take the connection back, unless a
    // wake-up already has (then its new task writes it).
    match parked.take() {
        Some((parts, held)) => {
            let link = held.link().clone();
            Err((Connection::from_idle_parts(parts, link), held))
        }
        None => Ok(()),
    }
}

/// A parked connection, and the waker that brings it back.
struct Parked<S, H> {
    state: Mutex<State<S, H>>,
}

enum State<S, H> {
    /// The socket's waker is set; the connection is not stored yet.
    Arming,
    /// Woken while arming: the connection must not park.
    Woken,
    Parked(IdleParts<S>, H),
    /// Taken back by a wake-up (or given back while parking).
    Gone,
}

impl<S, H: Held> Parked<S, H> {
    /// Stores the connection, unless a wake-up came while arming.
    #[allow(clippy::type_complexity)]
    fn settle(&self, parts: IdleParts<S>, held: H) -> Result<(), (IdleParts<S>, H)> {
        let Ok(mut state) = self.state.lock() else {
            return Err((parts, held));
        };
        if !matches!(*state, State::Arming) {
            return Err((parts, held));
        }
        held.link().counters.parked.fetch_add(1, Ordering::Relaxed);
        *state = State::Parked(parts, held);
        Ok(())
    }

    fn is_parked(&self) -> bool {
        self.state
            .lock()
            .is_ok_and(|s| matches!(*s, State::Parked(..)))
    }

    /// The parked connection, once; a wake-up before it is stored marks
    /// it woken.
    fn take(&self) -> Option<(IdleParts<S>, H)> {
        let mut state = self.state.lock().ok()?;
        match std::mem::replace(&mut *state, State::Gone) {
            State::Parked(parts, held) => {
                held.link().counters.parked.fetch_sub(1, Ordering::Relaxed);
                Some((parts, held))
            }
            State::Arming | State::Woken => {
                *state = State::Woken;
                None
            }
            State::Gone => None,
        }
    }
}

impl<S, H> Wake for Parked<S, H>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Held,
{
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let Some((parts, held)) = self.take() else {
            return;
        };
        let link = held.link().clone();
        let runtime = link.runtime.clone();
        // On a runtime shutting down the task is dropped at once, and with
        // it the socket.
        runtime.spawn(ParkingTask::new(
            Connection::from_idle_parts(parts, link),
            held,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::{run_connection, Origin, Outbox, RouterLink};
    use crate::router::RouterMsg;
    use crate::server::Counters;
    use midge_codec::{Packet, ProtocolVersion};
    use midge_core::{ConnId, Transmit};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio::sync::mpsc;

    /// A 3.1.1 CONNECT with client id "a".
    const CONNECT: [u8; 15] = [
        0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 1, b'a',
    ];
    const PINGREQ: [u8; 2] = [0xc0, 0];
    const PINGRESP: [u8; 2] = [0xd0, 0];

    /// A listener slot: the tests count the holders of `_counted`.
    struct TestSlot {
        _counted: Arc<()>,
        link: Arc<RouterLink>,
    }

    impl Held for TestSlot {
        fn link(&self) -> &Arc<RouterLink> {
            &self.link
        }
    }

    struct Harness {
        client: DuplexStream,
        router: mpsc::Receiver<RouterMsg>,
        outbox: Arc<Outbox>,
        counters: Arc<Counters>,
        /// Held by the connection as its listener slot would be.
        held: Arc<()>,
    }

    impl Harness {
        /// A connection, as the router sees it, that has sent its CONNECT.
        async fn connected() -> Harness {
            let (tx, mut router) = mpsc::channel(16);
            let counters = Arc::new(Counters::default());
            let link = Arc::new(RouterLink {
                router: tx,
                counters: counters.clone(),
                max_packet_size: 1 << 20,
                runtime: tokio::runtime::Handle::current(),
            });
            let (mut client, server) = tokio::io::duplex(4096);
            let held = Arc::new(());
            let origin = Origin {
                peer: "test".into(),
                identity: None,
                mount: None,
            };
            let slot = TestSlot {
                _counted: held.clone(),
                link: link.clone(),
            };
            let conn = run_connection(server, ConnId(1), origin, link);
            tokio::spawn(ParkingTask::new(conn, slot));
            let outbox = match recv(&mut router).await {
                RouterMsg::Open { writer, .. } => writer,
                other => panic!("expected Open, got {other:?}"),
            };
            client.write_all(&CONNECT).await.expect("write CONNECT");
            match recv(&mut router).await {
                RouterMsg::Packets { packets, .. } => {
                    assert!(matches!(packets[..], [Packet::Connect(_)]), "{packets:?}")
                }
                other => panic!("expected the CONNECT, got {other:?}"),
            }
            Harness {
                client,
                router,
                outbox,
                counters,
                held,
            }
        }

        /// The router's answer: a PINGRESP stands in for the CONNACK.
        fn answer(&self, close: bool) {
            let t = Transmit {
                conn: ConnId(1),
                protocol: ProtocolVersion::V311,
                packets: vec![Packet::PingResp],
                close,
            };
            self.outbox.backlog.fetch_add(16, Ordering::Relaxed);
            assert!(self.outbox.send(t, 16));
        }

        async fn read_pingresp(&mut self) {
            let mut got = [0u8; 2];
            tokio::time::timeout(Duration::from_secs(5), self.client.read_exact(&mut got))
                .await
                .expect("the answer in time")
                .expect("read");
            assert_eq!(got, PINGRESP);
        }

        fn parked(&self) -> usize {
            self.counters.parked.load(Ordering::Relaxed)
        }

        /// Waits until the connection is parked, and checks that it has no
        /// task then.
        async fn until_parked(&self) {
            for _ in 0..5000 {
                if self.parked() == 1 {
                    let tasks = tokio::runtime::Handle::current()
                        .metrics()
                        .num_alive_tasks();
                    assert_eq!(tasks, 0, "a parked connection keeps no task");
                    assert_eq!(Arc::strong_count(&self.held), 2, "the slot is kept");
                    return;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            panic!("the idle connection did not park");
        }
    }

    async fn recv(router: &mut mpsc::Receiver<RouterMsg>) -> RouterMsg {
        tokio::time::timeout(Duration::from_secs(5), router.recv())
            .await
            .expect("a message for the router in time")
            .expect("the connection holds the router's queue")
    }

    #[tokio::test]
    async fn an_unanswered_connection_keeps_its_task() {
        let h = Harness::connected().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(h.parked(), 0);
        assert_eq!(
            tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks(),
            1
        );
    }

    #[tokio::test]
    async fn an_idle_connection_parks_and_comes_back_for_each_way() {
        let mut h = Harness::connected().await;
        h.answer(false);
        h.read_pingresp().await;
        h.until_parked().await;

        // The router writes to it: a task takes it back, then it parks again.
        h.answer(false);
        h.read_pingresp().await;
        h.until_parked().await;

        // The client writes: the packet reaches the router.
        h.client.write_all(&PINGREQ).await.expect("write PINGREQ");
        match recv(&mut h.router).await {
            RouterMsg::Packets { packets, .. } => {
                assert!(matches!(packets[..], [Packet::PingReq]), "{packets:?}")
            }
            other => panic!("expected the PINGREQ, got {other:?}"),
        }
        h.until_parked().await;

        // The client goes away: the router hears of it.
        let Harness {
            client,
            mut router,
            counters,
            ..
        } = h;
        drop(client);
        match recv(&mut router).await {
            RouterMsg::Lost { conn } => assert_eq!(conn, ConnId(1)),
            other => panic!("expected Lost, got {other:?}"),
        }
        assert_eq!(counters.parked.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_parked_connection_closed_by_the_broker_ends() {
        let mut h = Harness::connected().await;
        h.answer(false);
        h.read_pingresp().await;
        for _ in 0..5000 {
            if h.parked() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(h.parked(), 1);
        // The last packet, then the close.
        h.answer(true);
        h.read_pingresp().await;
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), h.client.read_to_end(&mut rest))
            .await
            .expect("the end in time")
            .expect("read to the end");
        assert!(rest.is_empty(), "{rest:?}");
        for _ in 0..5000 {
            if Arc::strong_count(&h.held) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(Arc::strong_count(&h.held), 1, "the slot is given back");
        assert_eq!(h.parked(), 0);
    }
}
