//! Group commit between the router and the store.
//!
//! The router hands each batch's store operations, together with the
//! packets that batch produced, to the store thread. That thread takes every
//! batch waiting and applies their operations; the fsync that makes them
//! durable runs on a second thread, the syncer, which only then passes the
//! packets on to the connections. A PUBACK, PUBREC or SUBACK never leaves
//! before what it acknowledges is durable; one fsync covers as many
//! messages as arrived while the previous one ran, and the store thread
//! writes the next group while the disk syncs the last. Packets of batches
//! with nothing to store go straight out when no batch is waiting, and
//! behind the waiting ones otherwise, so a connection's packets keep their
//! order.

use midge_core::{RestoredState, StoreOp, Transmit};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;

use crate::log::{LogType, Logger};

/// The store as the server sees it; the binary adapts `midge-store` to it.
pub trait Persistence: Send + 'static {
    fn apply(&mut self, ops: &[StoreOp]) -> Result<(), String>;
    /// Makes what was applied durable (per the store's sync policy).
    fn sync(&mut self) -> Result<(), String>;
    /// Like [`Persistence::sync`], but may hand the fsync back, to be run on
    /// the syncer thread while the store thread writes on; `None` when the
    /// policy does not wait for it or nothing needs it.
    fn begin_sync(&mut self) -> Result<Option<SyncJob>, String> {
        self.sync().map(|()| None)
    }
    /// Compacts the store.
    fn checkpoint(&mut self) -> Result<(), String>;
}

/// An fsync to run off the store thread; see [`Persistence::begin_sync`].
pub type SyncJob = Box<dyn FnOnce() -> Result<(), String> + Send>;

/// A store and what it recovered at start-up.
pub struct Durability {
    pub store: Box<dyn Persistence>,
    pub restored: RestoredState,
    /// Compact the store this often (`autosave_interval`); None: only when
    /// the store decides, at SIGUSR1 and at shutdown.
    pub checkpoint_every: Option<std::time::Duration>,
}

/// How often an idle store thread wakes up.
const IDLE_TICK: std::time::Duration = std::time::Duration::from_millis(100);

pub(crate) type Outgoing = (Arc<crate::connection::Outbox>, Transmit);

/// What the syncer gets per round of the store thread: the fsync covering
/// the batches' operations (if any) and their packets.
struct Synced {
    job: Option<SyncJob>,
    outs: Vec<Vec<Outgoing>>,
    batches: usize,
}

enum Job {
    Batch {
        ops: Vec<StoreOp>,
        out: Vec<Outgoing>,
    },
    Checkpoint,
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
        let (to_syncer, syncer) = std_mpsc::channel::<Synced>();
        let syncer = std::thread::Builder::new()
            .name("midge-sync".into())
            .spawn({
                let waiting = waiting.clone();
                let log = log.clone();
                move || run_syncer(&syncer, &waiting, &log)
            })
            .ok();
        let waiting2 = waiting.clone();
        let thread = std::thread::Builder::new()
            .name("midge-store".into())
            .spawn(move || {
                let mut failed = false;
                let mut last_checkpoint = std::time::Instant::now();
                loop {
                    // Wake up now and then with nothing to do, so a timed
                    // sync policy still syncs after the last batch, and so
                    // autosave_interval checkpoints happen.
                    let first = match rx.recv_timeout(IDLE_TICK) {
                        Ok(job) => job,
                        Err(std_mpsc::RecvTimeoutError::Timeout) => {
                            if let Err(e) = store.sync() {
                                report(&log, &mut failed, &e);
                            }
                            if checkpoint_every
                                .is_some_and(|every| last_checkpoint.elapsed() >= every)
                            {
                                last_checkpoint = std::time::Instant::now();
                                if let Err(e) = store.checkpoint() {
                                    crate::log!(
                                        log,
                                        LogType::ERROR,
                                        "Error: checkpoint failed: {}",
                                        e
                                    );
                                }
                            }
                            continue;
                        }
                        Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
                    };
                    let mut batches = vec![first];
                    batches.extend(rx.try_iter());
                    let mut outs = Vec::new();
                    let mut count = 0;
                    for job in batches {
                        match job {
                            Job::Batch { ops, out } => {
                                if let Err(e) = store.apply(&ops) {
                                    report(&log, &mut failed, &e);
                                }
                                outs.push(out);
                                count += 1;
                            }
                            Job::Checkpoint => {
                                if let Err(e) = store.sync().and_then(|_| store.checkpoint()) {
                                    crate::log!(
                                        log,
                                        LogType::ERROR,
                                        "Error: checkpoint failed: {}",
                                        e
                                    );
                                } else {
                                    crate::log!(
                                        log,
                                        LogType::NOTICE,
                                        "Saving in-memory database to disk (checkpoint done)."
                                    );
                                }
                            }
                        }
                    }
                    let job = match store.begin_sync() {
                        Ok(job) => job,
                        Err(e) => {
                            report(&log, &mut failed, &e);
                            None
                        }
                    };
                    let synced = Synced {
                        job,
                        outs,
                        batches: count,
                    };
                    if let Err(std_mpsc::SendError(synced)) = to_syncer.send(synced) {
                        // No syncer thread (it could not be started).
                        release(vec![synced], &waiting2);
                    }
                }
                // Clean shutdown: the last packets out, then the store left
                // compact.
                drop(to_syncer);
                if let Some(syncer) = syncer {
                    let _ = syncer.join();
                }
                if let Err(e) = store.sync().and_then(|_| store.checkpoint()) {
                    crate::log!(log, LogType::ERROR, "Error: final checkpoint failed: {}", e);
                }
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
            for (w, t) in out {
                let _ = w.send(t);
            }
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

/// The syncer thread: runs the fsyncs the store thread hands over, then
/// lets the packets they cover go. When several rounds are waiting, the
/// last one's fsync covers them all: the earlier rounds were written before
/// it to the same file, or a checkpoint in between synced them.
fn run_syncer(rounds: &std_mpsc::Receiver<Synced>, waiting: &AtomicUsize, log: &Logger) {
    let mut failed = false;
    while let Ok(first) = rounds.recv() {
        let mut all = vec![first];
        all.extend(rounds.try_iter());
        if let Some(job) = all.iter_mut().rev().find_map(|r| r.job.take()) {
            match job() {
                Ok(()) => failed = false,
                Err(e) => report(log, &mut failed, &e),
            }
        }
        release(all, waiting);
    }
}

fn release(rounds: Vec<Synced>, waiting: &AtomicUsize) {
    let mut batches = 0;
    for round in rounds {
        batches += round.batches;
        for out in round.outs {
            for (writer, t) in out {
                let _ = writer.send(t);
            }
        }
    }
    waiting.fetch_sub(batches, Ordering::AcqRel);
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
