//! `midge_db_import`: moves the state of a Mosquitto broker (its
//! persistence file, `mosquitto.db`) into a Midge store, so that retained
//! messages and persistent sessions survive the switch.
//!
//! ```text
//! midge_db_import [-c midge.conf | --persistence-location DIR] [--persistence-file NAME] [--force] MOSQUITTO_DB
//! ```
//!
//! The destination is `persistence_location`/`persistence_file` from the
//! configuration file, or the directory given (file `midge.db` unless
//! `--persistence-file`). The whole input is read and checked before
//! anything is written: a damaged or unknown file is one line on stderr and
//! exit code 1, and the store is left alone. An existing store that holds
//! anything is only replaced with `--force` (it is then kept beside as
//! `<file>.before-import-<unix time>`). Reading the file is
//! `midge_store::mosquitto_db`; this is the command line and the writing.
//! See `docs/migration.md`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use clap::{ArgGroup, Parser};
use midge_config::Config;
use midge_core::{Broker, BrokerConfig};
use midge_store::mosquitto_db::{self, Summary};
use midge_store::{Store, StoreOptions, SyncPolicy, DEFAULT_FILE_NAME};

#[derive(Parser, Debug)]
#[command(
    name = "midge_db_import",
    version,
    about = "Import a Mosquitto persistence file (mosquitto.db) into a Midge store.",
    group(ArgGroup::new("destination").required(true).args(["config_file", "persistence_location"]))
)]
struct Args {
    /// Midge (or mosquitto) configuration file: the store is its
    /// persistence_location / persistence_file.
    #[arg(short = 'c', long = "config-file", value_name = "FILE")]
    config_file: Option<PathBuf>,
    /// Directory of the Midge store.
    #[arg(long, value_name = "DIR")]
    persistence_location: Option<PathBuf>,
    /// File name of the Midge store in that directory (default midge.db;
    /// with -c, the configuration's persistence_file).
    #[arg(long, value_name = "NAME")]
    persistence_file: Option<String>,
    /// Replace a Midge store that already holds retained messages or
    /// sessions (the old file is kept beside it).
    #[arg(long)]
    force: bool,
    /// The Mosquitto persistence file to read.
    #[arg(value_name = "MOSQUITTO_DB")]
    mosquitto_db: PathBuf,
}

/// One line on stderr and exit code 1.
struct Failure(String);

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(msg)) => {
            eprintln!("midge_db_import: {msg}");
            ExitCode::from(1)
        }
    }
}

/// The configuration file given with `-c`, if any.
fn configuration(args: &Args) -> Result<Option<Config>, Failure> {
    let Some(file) = &args.config_file else {
        return Ok(None);
    };
    let config = midge_config::parse_file(file).map_err(|e| Failure(e.to_string()))?;
    if !config.persistence {
        println!(
            "Note: {} has persistence off; midge reads the imported store only with `persistence true`.",
            file.display()
        );
    }
    Ok(Some(config))
}

fn destination(args: &Args, config: Option<&Config>) -> Result<StoreOptions, Failure> {
    let mut options = match (config, &args.persistence_location) {
        // The import syncs as `persistence_sync always`, whatever the file says.
        (Some(config), _) => StoreOptions {
            sync: SyncPolicy::Always,
            ..midge::store_options::from_config(config)
        },
        (None, Some(dir)) => StoreOptions::new(dir),
        (None, None) => StoreOptions::new("."),
    };
    if let Some(name) = &args.persistence_file {
        options.file_name = name.clone();
    }
    if options.file_name.is_empty() {
        options.file_name = DEFAULT_FILE_NAME.to_string();
    }
    Ok(options)
}

fn run(args: &Args) -> Result<(), Failure> {
    let source = &args.mosquitto_db;
    let bytes = std::fs::read(source).map_err(|e| {
        Failure(format!(
            "cannot read {}: {}",
            source.display(),
            strerror(&e)
        ))
    })?;
    let db =
        mosquitto_db::parse(&bytes).map_err(|e| Failure(format!("{}: {e}", source.display())))?;
    let now_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let now = Instant::now();
    let conversion = mosquitto_db::convert(&db, now_unix, now);

    let config = configuration(args)?;
    let options = destination(args, config.as_ref())?;
    let path = options.path();
    let writing = |e: midge_store::StoreError| Failure(format!("writing {}: {e}", path.display()));
    let mut store = open_destination(&options, args.force)?;
    for group in conversion.ops.chunks(1024) {
        store.apply(group).map_err(writing)?;
    }
    store.sync().map_err(writing)?;
    let mut summary = conversion.summary;
    if !conversion.unreleased.is_empty() {
        // Delivered now, by the broker core over the state just written.
        drop(store);
        let (reopened, recovery) = midge_store::open(&options)
            .map_err(|e| Failure(format!("cannot reopen {}: {e}", path.display())))?;
        store = reopened;
        let mut core = Broker::new(BrokerConfig {
            persistence: true,
            ..config
                .as_ref()
                .map(|c| midge::broker_config::from_config(c, 0))
                .unwrap_or_default()
        });
        core.restore(recovery.state, now);
        for u in conversion.unreleased {
            if !core.adopt_unreleased_qos2(&u.client_id, u.packet_id, u.message, now) {
                summary.unreleased -= 1;
                summary.skip("incoming QoS 2 message listed twice for its packet id");
            }
        }
        store.apply(&core.take_store_ops()).map_err(writing)?;
        store.sync().map_err(writing)?;
    }
    store
        .checkpoint()
        .map_err(|e| Failure(format!("checkpointing {}: {e}", path.display())))?;
    print_summary(source, db.version, &path, &summary);
    Ok(())
}

/// Opens the store, refusing (or with `force`, setting aside) one that
/// already holds state.
fn open_destination(options: &StoreOptions, force: bool) -> Result<Box<dyn Store>, Failure> {
    let path = options.path();
    let open = |options: &StoreOptions| {
        midge_store::open(options).map_err(|e| Failure(format!("cannot open the Midge store: {e}")))
    };
    let (store, recovery) = open(options)?;
    for w in &recovery.warnings {
        println!("Warning: existing Midge store: {w}");
    }
    let state = &recovery.state;
    if state.retained.is_empty() && state.sessions.is_empty() {
        return Ok(store);
    }
    let what = format!(
        "{} already holds a Midge store with {} retained messages and {} sessions",
        path.display(),
        state.retained.len(),
        state.sessions.len()
    );
    if !force {
        return Err(Failure(format!(
            "{what}; nothing imported (use --force to replace it)"
        )));
    }
    drop(store);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let aside = backup_name(&path, now);
    std::fs::rename(&path, &aside).map_err(|e| {
        Failure(format!(
            "cannot move {} aside to {}: {}",
            path.display(),
            aside.display(),
            strerror(&e)
        ))
    })?;
    println!("{what}: moved aside to {}.", aside.display());
    let (store, _) = open(options)?;
    Ok(store)
}

fn backup_name(path: &Path, now: u64) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".before-import-{now}"));
    PathBuf::from(name)
}

fn print_summary(source: &Path, version: u32, dest: &Path, s: &Summary) {
    println!(
        "Imported {} (Mosquitto format version {version}) into {}:",
        source.display(),
        dest.display()
    );
    println!("  {} retained messages", s.retained);
    println!("  {} sessions", s.sessions);
    println!("  {} subscriptions", s.subscriptions);
    println!(
        "  {} queued messages ({} in flight)",
        s.messages, s.in_flight
    );
    if s.unreleased > 0 {
        println!(
            "  {} incoming QoS 2 messages awaiting their PUBREL, delivered now",
            s.unreleased
        );
    }
    if s.skipped.is_empty() {
        println!("Nothing skipped.");
    } else {
        println!("Skipped:");
        for (why, n) in &s.skipped {
            println!("  {n} x {why}");
        }
    }
}

/// `strerror` text: the io::Error message without Rust's " (os error N)".
fn strerror(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error ") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}
