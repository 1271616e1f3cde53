//! Group commit between the router and the store.
//!
//! The router hands each batch's store operations, together with the
//! packets that batch produced, to one store thread. That thread writes
//! what is waiting as one group, syncs once, and only then passes the
//! packets on to the connections: a PUBACK, PUBREC or SUBACK never leaves
//! before what it acknowledges is durable, and one fsync covers as many
//! messages as arrived while the previous one ran. Packets of batches with
//! nothing to store go straight out when no batch is waiting, and behind
//! the waiting ones otherwise, so a connection's packets keep their order.
//!
//! A message queued for a persistent session that is online is usually
//! acknowledged by the subscriber within a millisecond (the router sends a
//! QoS 0/1 PUBLISH without waiting for the store). So the store thread
//! holds such deliveries back for a short while ([`Pending`]): one whose
//! acknowledgement arrives meanwhile is never written, and the publisher's
//! PUBACK, which waited for the message to be durable *or* delivered, goes
//! without a sync. What is still unacknowledged when the wait is over, and
//! every other kind of change at once, is written and synced as before.

use bytestring::ByteString;
use midge_core::session::OutState;
use midge_core::{RestoredState, StoreOp, StoredState, Transmit};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::log::{LogType, Logger};

/// The store as the server sees it; the binary adapts `midge-store` to it.
pub trait Persistence: Send + 'static {
    fn apply(&mut self, ops: &[StoreOp]) -> Result<(), String>;
    /// Whether this delivery is in the store (applied, not deleted).
    fn holds_delivery(&self, client_id: &str, seq: u64) -> bool;
    /// Makes what was applied durable (per the store's sync policy).
    fn sync(&mut self) -> Result<(), String>;
    /// Compacts the store.
    fn checkpoint(&mut self) -> Result<(), String>;
}

/// A store and what it recovered at start-up.
pub struct Durability {
    pub store: Box<dyn Persistence>,
    pub restored: RestoredState,
    /// Compact the store this often (`autosave_interval`); None: only when
    /// the store decides, at SIGUSR1 and at shutdown.
    pub checkpoint_every: Option<Duration>,
}

/// How often an idle store thread wakes up.
const IDLE_TICK: Duration = Duration::from_millis(100);

/// How long a delivery may wait unwritten for its acknowledgement: the
/// last sync's duration, within these bounds. A publisher's PUBACK for a
/// message nobody acknowledges in time so waits at most about twice as
/// long as it would without the wait.
const HOLD_MIN: Duration = Duration::from_millis(1);
const HOLD_MAX: Duration = Duration::from_millis(20);

/// At most this many operations wait unwritten.
const HOLD_OPS: usize = 1 << 16;

/// A transmit held for the store, its writer, and its weight in the
/// writer's backlog ([`crate::connection::transmit_weight`]).
pub(crate) type Outgoing = (Arc<crate::connection::Outbox>, Transmit, usize);

enum Job {
    Batch {
        ops: Vec<StoreOp>,
        out: Vec<Outgoing>,
    },
    Checkpoint,
}

/// A batch whose packets wait for the store.
struct Waiting {
    out: Vec<Outgoing>,
    /// Absolute index (see [`Pending::first`]) past its last operation.
    end: u64,
    /// Its operations not cancelled yet.
    open: usize,
    since: Instant,
}

/// Operations not written yet, and the batches waiting for them.
#[derive(Default)]
struct Pending {
    /// `None`: cancelled (a delivery and its deletion, both unwritten).
    ops: VecDeque<Option<StoreOp>>,
    /// Absolute index of `ops[0]`.
    first: u64,
    batches: VecDeque<Waiting>,
    /// Unwritten deliveries: where their operations are.
    deliveries: HashMap<(ByteString, u64), Vec<u64>>,
    /// Something waits that must not wait (anything but a delivery put or
    /// deleted).
    urgent: bool,
}

/// A delivery just sent to its (online) subscriber, or deleted: may wait
/// for the acknowledgement. Any other change is written at once: a copy
/// queued for an offline session (nothing will acknowledge it soon), and a
/// QoS 2 delivery past PUBREC (its PUBREL waits for it, so no PUBCOMP can
/// come to cancel it).
fn may_wait(op: &StoreOp) -> bool {
    matches!(
        op,
        StoreOp::PutDelivery {
            state: StoredState::InFlight(_, OutState::AwaitAck),
            ..
        } | StoreOp::DeleteDelivery { .. }
    )
}

impl Pending {
    fn add(&mut self, ops: Vec<StoreOp>, out: Vec<Outgoing>, store: &dyn Persistence) {
        let mut open = ops.len();
        let start = self.first + self.ops.len() as u64;
        for op in ops {
            let at = self.first + self.ops.len() as u64;
            let waits = may_wait(&op);
            self.urgent |= !waits;
            match &op {
                StoreOp::PutDelivery { client_id, seq, .. } if waits => {
                    self.deliveries
                        .entry((client_id.clone(), *seq))
                        .or_default()
                        .push(at);
                }
                StoreOp::DeleteDelivery { client_id, seq } => {
                    let key = (client_id.clone(), *seq);
                    // Cancelled only when no earlier group wrote it.
                    if self.deliveries.contains_key(&key) && !store.holds_delivery(client_id, *seq)
                    {
                        for put in self.deliveries.remove(&key).unwrap_or_default() {
                            if self.cancel(put) && put >= start {
                                // A put of this same batch.
                                open -= 1;
                            }
                        }
                        open -= 1;
                        self.ops.push_back(None);
                        continue;
                    }
                }
                _ => {}
            }
            self.ops.push_back(Some(op));
        }
        self.batches.push_back(Waiting {
            out,
            end: self.first + self.ops.len() as u64,
            open,
            since: Instant::now(),
        });
    }

    /// Cancels the operation at `at`, counting it off its batch if that
    /// batch is queued already; false if it was cancelled before.
    fn cancel(&mut self, at: u64) -> bool {
        let Some(slot) = at
            .checked_sub(self.first)
            .and_then(|i| self.ops.get_mut(i as usize))
        else {
            return false;
        };
        if slot.take().is_none() {
            return false;
        }
        let batch = self.batches.partition_point(|b| b.end <= at);
        if let Some(b) = self.batches.get_mut(batch) {
            b.open -= 1;
        }
        true
    }

    /// Takes the leading batches whose operations all cancelled out: they
    /// wait for nothing.
    fn take_ready(&mut self) -> Vec<Waiting> {
        let ready = self.batches.iter().take_while(|b| b.open == 0).count();
        let taken: Vec<Waiting> = self.batches.drain(..ready).collect();
        if let Some(last) = taken.last() {
            let n = (last.end - self.first) as usize;
            self.ops.drain(..n);
            self.first = last.end;
        }
        taken
    }

    /// Whether to write now: something urgent, too much waiting, or the
    /// oldest batch waited long enough.
    fn due(&self, hold: Duration) -> bool {
        self.urgent
            || self.ops.len() >= HOLD_OPS
            || self
                .batches
                .front()
                .is_some_and(|b| b.since.elapsed() >= hold)
    }

    /// How long until the oldest batch is due.
    fn wait(&self, hold: Duration) -> Duration {
        self.batches
            .front()
            .map_or(IDLE_TICK, |b| hold.saturating_sub(b.since.elapsed()))
    }

    /// Everything still waiting: the operations to write and the batches.
    fn take_all(&mut self) -> (Vec<StoreOp>, Vec<Waiting>) {
        self.first += self.ops.len() as u64;
        let ops = self.ops.drain(..).flatten().collect();
        self.deliveries.clear();
        self.urgent = false;
        (ops, self.batches.drain(..).collect())
    }
}

/// The router's handle on the store thread.
pub(crate) struct StoreThread {
    jobs: std_mpsc::Sender<Job>,
    /// Batches handed over and not yet released.
    waiting: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StoreThread {
    pub(crate) fn start(
        mut store: Box<dyn Persistence>,
        checkpoint_every: Option<std::time::Duration>,
        log: Logger,
    ) -> StoreThread {
        let (jobs, rx) = std_mpsc::channel::<Job>();
        let waiting = Arc::new(AtomicUsize::new(0));
        let waiting2 = waiting.clone();
        let thread = std::thread::Builder::new()
            .name("midge-store".into())
            .spawn(move || {
                run_store(&mut *store, &rx, &waiting2, checkpoint_every, &log);
            })
            .ok();
        StoreThread {
            jobs,
            waiting,
            thread,
        }
    }

    /// True when packets with nothing to store may go straight out.
    pub(crate) fn idle(&self) -> bool {
        self.waiting.load(Ordering::Acquire) == 0
    }

    pub(crate) fn submit(&self, ops: Vec<StoreOp>, out: Vec<Outgoing>) {
        self.waiting.fetch_add(1, Ordering::AcqRel);
        if let Err(std_mpsc::SendError(Job::Batch { out, .. })) =
            self.jobs.send(Job::Batch { ops, out })
        {
            // The thread is gone (it cannot be, short of a bug); deliver.
            send_held(out);
        }
    }

    pub(crate) fn checkpoint(&self) {
        let _ = self.jobs.send(Job::Checkpoint);
    }

    /// Waits for the last batches and the final checkpoint.
    pub(crate) fn finish(mut self) {
        let (dead, _) = std_mpsc::channel();
        drop(std::mem::replace(&mut self.jobs, dead));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Passes held packets on, each connection's in the order they were held.
fn send_held(out: Vec<Outgoing>) {
    for (writer, t, weight) in out {
        writer.send_held(t, weight);
    }
}

/// The store thread's loop.
fn run_store(
    store: &mut dyn Persistence,
    rx: &std_mpsc::Receiver<Job>,
    waiting: &AtomicUsize,
    checkpoint_every: Option<Duration>,
    log: &Logger,
) {
    let mut failed = false;
    let mut last_checkpoint = Instant::now();
    let mut pending = Pending::default();
    let mut hold = HOLD_MIN;
    let mut stopping = false;
    while !stopping || !pending.batches.is_empty() {
        let mut checkpoint = false;
        let first = if stopping {
            None
        } else {
            match rx.recv_timeout(pending.wait(hold)) {
                Ok(job) => Some(job),
                Err(std_mpsc::RecvTimeoutError::Timeout) => None,
                Err(std_mpsc::RecvTimeoutError::Disconnected) => {
                    stopping = true;
                    None
                }
            }
        };
        if first.is_none() && pending.batches.is_empty() {
            // Idle: a timed sync policy still syncs after the last batch,
            // and autosave_interval checkpoints happen.
            if let Err(e) = store.sync() {
                report(log, &mut failed, &e);
            }
            if checkpoint_every.is_some_and(|every| last_checkpoint.elapsed() >= every) {
                last_checkpoint = Instant::now();
                if let Err(e) = store.checkpoint() {
                    crate::log!(log, LogType::ERROR, "Error: checkpoint failed: {}", e);
                }
            }
            continue;
        }
        for job in first.into_iter().chain(rx.try_iter()) {
            match job {
                Job::Batch { ops, out } => pending.add(ops, out, store),
                Job::Checkpoint => checkpoint = true,
            }
        }
        release(pending.take_ready(), waiting);
        if !(checkpoint || stopping || pending.due(hold)) {
            continue;
        }
        let (ops, batches) = pending.take_all();
        if let Err(e) = store.apply(&ops) {
            report(log, &mut failed, &e);
        }
        drop(ops);
        if checkpoint {
            if let Err(e) = store.sync().and_then(|_| store.checkpoint()) {
                crate::log!(log, LogType::ERROR, "Error: checkpoint failed: {}", e);
            } else {
                crate::log!(
                    log,
                    LogType::NOTICE,
                    "Saving in-memory database to disk (checkpoint done)."
                );
            }
        }
        let started = Instant::now();
        if let Err(e) = store.sync() {
            report(log, &mut failed, &e);
        }
        hold = started.elapsed().clamp(HOLD_MIN, HOLD_MAX);
        release(batches, waiting);
    }
    // Clean shutdown: leave the store compact.
    if let Err(e) = store.sync().and_then(|_| store.checkpoint()) {
        crate::log!(log, LogType::ERROR, "Error: final checkpoint failed: {}", e);
    }
}

/// Passes the batches' packets on, in order, and counts them released.
fn release(batches: Vec<Waiting>, waiting: &AtomicUsize) {
    let n = batches.len();
    for b in batches {
        send_held(b.out);
    }
    if n > 0 {
        waiting.fetch_sub(n, Ordering::AcqRel);
    }
}

fn report(log: &Logger, failed: &mut bool, e: &str) {
    // Said once per failure spell, not once per batch.
    if !*failed {
        crate::log!(
            log,
            LogType::ERROR,
            "Error: persistence write failed, acknowledged messages may not survive a crash: {}",
            e
        );
    }
    *failed = true;
}

#[cfg(test)]
mod tests {
    use super::*;
    use midge_codec::{PacketId, ProtocolVersion, QoS};
    use midge_core::session::SubIds;
    use midge_core::{ConnId, Message};

    /// A store that only says what it holds.
    #[derive(Default)]
    struct Holds(Vec<(String, u64)>);

    impl Persistence for Holds {
        fn apply(&mut self, _: &[StoreOp]) -> Result<(), String> {
            Ok(())
        }
        fn holds_delivery(&self, client_id: &str, seq: u64) -> bool {
            self.0.iter().any(|(c, s)| c == client_id && *s == seq)
        }
        fn sync(&mut self) -> Result<(), String> {
            Ok(())
        }
        fn checkpoint(&mut self) -> Result<(), String> {
            Ok(())
        }
    }

    fn put(seq: u64, state: StoredState) -> StoreOp {
        StoreOp::PutDelivery {
            client_id: "sub".into(),
            seq,
            message: Arc::new(Message::plain(
                "t",
                bytes::Bytes::from_static(b"m"),
                QoS::AtLeastOnce,
                false,
            )),
            qos: QoS::AtLeastOnce,
            retain: false,
            sub_ids: SubIds::None,
            state,
        }
    }

    /// A delivery sent to an online subscriber, awaiting its PUBACK.
    fn sent(seq: u64) -> StoreOp {
        let id = PacketId::new(u16::try_from(seq).expect("small")).expect("non-zero");
        put(seq, StoredState::InFlight(id, OutState::AwaitAck))
    }

    fn delete(seq: u64) -> StoreOp {
        StoreOp::DeleteDelivery {
            client_id: "sub".into(),
            seq,
        }
    }

    /// A batch's packets: one empty transmit, to tell batches apart.
    fn out(conn: u64) -> Vec<Outgoing> {
        vec![(
            Arc::new(crate::connection::Outbox::new(ConnId(1))),
            Transmit {
                conn: ConnId(conn),
                protocol: ProtocolVersion::V311,
                packets: Vec::new(),
                close: false,
            },
            0,
        )]
    }

    fn conns(batches: &[Waiting]) -> Vec<u64> {
        batches.iter().map(|b| b.out[0].1.conn.0).collect()
    }

    fn seqs(ops: &[StoreOp]) -> Vec<(bool, u64)> {
        ops.iter()
            .map(|op| match op {
                StoreOp::PutDelivery { seq, .. } => (true, *seq),
                StoreOp::DeleteDelivery { seq, .. } => (false, *seq),
                _ => (false, 0),
            })
            .collect()
    }

    #[test]
    fn a_delivery_acknowledged_before_it_is_written_is_never_written() {
        let store = Holds::default();
        let mut p = Pending::default();
        p.add(vec![sent(1)], out(1), &store);
        assert!(
            p.take_ready().is_empty(),
            "the PUBACK waits for the message"
        );
        p.add(vec![delete(1)], out(2), &store);
        assert_eq!(
            conns(&p.take_ready()),
            vec![1, 2],
            "acknowledged: nothing to wait for"
        );
        let (ops, batches) = p.take_all();
        assert!(ops.is_empty() && batches.is_empty());
        // Within one batch too.
        p.add(vec![sent(2), delete(2)], out(3), &store);
        assert_eq!(conns(&p.take_ready()), vec![3]);
        assert!(!p.due(HOLD_MAX));
    }

    #[test]
    fn batches_leave_in_order_and_what_is_unacknowledged_is_written() {
        let store = Holds::default();
        let mut p = Pending::default();
        p.add(vec![sent(1)], out(1), &store);
        p.add(vec![sent(2)], out(2), &store);
        p.add(vec![delete(2)], out(3), &store);
        // Batch 2 cancelled out, but batch 1 is ahead of it.
        assert!(p.take_ready().is_empty());
        assert!(!p.due(HOLD_MAX), "deliveries may wait");
        assert!(p.due(Duration::ZERO), "until the hold is over");
        let (ops, batches) = p.take_all();
        assert_eq!(seqs(&ops), vec![(true, 1)]);
        assert_eq!(conns(&batches), vec![1, 2, 3]);
        // Once written, the deletion is written too.
        let store = Holds(vec![("sub".into(), 1)]);
        p.add(vec![delete(1)], out(4), &store);
        assert!(p.take_ready().is_empty());
        let (ops, _) = p.take_all();
        assert_eq!(seqs(&ops), vec![(false, 1)]);
    }

    #[test]
    fn an_update_of_a_written_delivery_is_not_cancelled_away() {
        // Queued on disk, then sent (updated) and acknowledged: the delete
        // must reach the disk or the queued copy would come back.
        let store = Holds(vec![("sub".into(), 7)]);
        let mut p = Pending::default();
        let sent = StoredState::InFlight(PacketId::new(1).expect("id"), OutState::AwaitAck);
        p.add(vec![put(7, sent)], out(1), &store);
        p.add(vec![delete(7)], out(2), &store);
        assert!(p.take_ready().is_empty());
        let (ops, _) = p.take_all();
        assert_eq!(seqs(&ops), vec![(true, 7), (false, 7)]);
    }

    #[test]
    fn other_changes_are_written_at_once() {
        let store = Holds::default();
        let mut p = Pending::default();
        p.add(vec![sent(1)], out(1), &store);
        assert!(!p.due(HOLD_MAX));
        let session = StoreOp::PutSession {
            client_id: "sub".into(),
            protocol: ProtocolVersion::V311,
            expiry_interval: 60,
        };
        p.add(vec![session], out(2), &store);
        assert!(p.due(HOLD_MAX));
        // A copy queued for an offline session: nothing will cancel it soon.
        let mut p = Pending::default();
        p.add(vec![put(4, StoredState::Queued)], out(1), &store);
        assert!(p.due(HOLD_MAX));
        // A QoS 2 delivery past PUBREC: its PUBREL waits for it.
        let mut p = Pending::default();
        let released = StoredState::InFlight(PacketId::new(1).expect("id"), OutState::AwaitComp);
        p.add(vec![put(3, released)], out(1), &store);
        assert!(p.due(HOLD_MAX));
    }
}
