//! Group commit between the router and the store.
//!
//! The router hands each batch's store operations, together with the
//! packets that batch produced, to one store thread. That thread takes every
//! batch waiting, applies their operations, syncs once, and only then passes
//! the packets on to the connections: a PUBACK, PUBREC or SUBACK never
//! leaves before what it acknowledges is durable, and one fsync covers as
//! many messages as arrived while the previous one ran. Packets of batches
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
    /// Compacts the store.
    fn checkpoint(&mut self) -> Result<(), String>;
}

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
                    if let Err(e) = store.sync() {
                        report(&log, &mut failed, &e);
                    }
                    for out in outs {
                        for (writer, t) in out {
                            let _ = writer.send(t);
                        }
                    }
                    waiting2.fetch_sub(count, Ordering::AcqRel);
                }
                // Clean shutdown: leave the store compact.
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
