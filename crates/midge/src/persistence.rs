//! Opening the store `persistence true` asks for, and adapting it to the
//! server's interface. Recovery problems (a damaged file set aside) are
//! logged, never fatal.

use midge_config::Config;
use midge_core::StoreOp;
use midge_server::{log, Durability, LogType, Logger, Persistence};
use midge_store::Store;
use std::time::Duration;

struct Adapter(Box<dyn Store>);

impl Persistence for Adapter {
    fn apply(&mut self, ops: &[StoreOp]) -> Result<(), String> {
        self.0.apply(ops).map_err(|e| e.to_string())
    }

    fn holds_delivery(&self, client_id: &str, seq: u64) -> bool {
        self.0.holds_delivery(client_id, seq)
    }

    fn sync(&mut self) -> Result<(), String> {
        self.0.sync().map_err(|e| e.to_string())
    }

    fn checkpoint(&mut self) -> Result<(), String> {
        self.0.checkpoint().map_err(|e| e.to_string())
    }
}

/// Opens and recovers the store; `None` when persistence is off.
pub fn open(config: &Config, log: &Logger) -> Result<Option<Durability>, String> {
    if !config.persistence {
        return Ok(None);
    }
    let options = midge::store_options::from_config(config);
    let (store, recovery) = midge_store::open(&options).map_err(|e| e.to_string())?;
    for w in &recovery.warnings {
        log!(log, LogType::WARNING, "Warning: persistence: {}", w);
    }
    let s = &recovery.stats;
    log!(
        log,
        LogType::NOTICE,
        "Restored {} retained messages, {} sessions, {} subscriptions and {} queued messages from {} in {} ms.",
        s.retained,
        s.sessions,
        s.subscriptions,
        s.deliveries,
        options.path().display(),
        s.elapsed.as_millis()
    );
    // autosave_on_changes counts changes in Mosquitto; Midge journals every
    // change, so only the time-based schedule means anything for it.
    let checkpoint_every = (config.autosave_interval > 0 && !config.autosave_on_changes)
        .then(|| Duration::from_secs(u64::from(config.autosave_interval)));
    Ok(Some(Durability {
        store: Box::new(Adapter(store)),
        restored: recovery.state,
        checkpoint_every,
    }))
}
