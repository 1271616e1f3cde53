//! `midge`: the broker binary. Takes Mosquitto's command line (`-c`, `-d`,
//! `-p`, `-v`, `--test-config`), reads a `mosquitto.conf`, binds the
//! listeners, drops privileges, and runs the server. Signals as Mosquitto:
//! SIGHUP reloads, SIGUSR1 checkpoints, SIGUSR2 logs the subscriptions,
//! SIGINT/SIGTERM stop. Under systemd (`Type=notify`) it reports READY,
//! RELOADING, STOPPING and watchdog pings on `$NOTIFY_SOCKET`.

mod access;
mod listen;
mod notify;
mod persistence;

use clap::Parser;
use midge_config::Config;
use midge_server::{log, serve, Control, LogType, Logger, ServerOptions};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// Set once this process wrote its pid file.
static PID_WRITTEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Exit code for a configuration that cannot be used (Mosquitto's).
const EXIT_CONFIG: u8 = 3;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "midge",
    version,
    about = "An MQTT 3.1, 3.1.1 and 5.0 broker that reads mosquitto.conf"
)]
struct Args {
    /// Configuration file (mosquitto.conf format). Without it, listen on
    /// 127.0.0.1 and ::1 port 1883 with anonymous access.
    #[arg(short = 'c', long = "config-file", value_name = "FILE")]
    config_file: Option<PathBuf>,
    /// Port to listen on in local-only mode (may be given several times; 0
    /// picks a free port, logged at start-up).
    #[arg(short = 'p', long = "port", value_name = "PORT")]
    port: Vec<u16>,
    /// Log everything (log_type all).
    #[arg(short = 'v', long = "verbose")]
    verbose: bool,
    /// Run in the background.
    #[arg(short = 'd', long = "daemon")]
    daemon: bool,
    /// Check the configuration file and exit.
    #[arg(long = "test-config")]
    test_config: bool,
}

fn load_config(args: &Args) -> Result<Config, String> {
    let mut config = match &args.config_file {
        Some(path) => midge_config::parse_file(path).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    // The core applies one set of security settings to every listener.
    if config.per_listener_settings {
        let differs = config.listeners.windows(2).any(|w| {
            w[0].allow_anonymous != w[1].allow_anonymous
                || w[0].allow_zero_length_clientid != w[1].allow_zero_length_clientid
                || w[0].auto_id_prefix != w[1].auto_id_prefix
        });
        if differs {
            return Err(format!(
                "{}: per_listener_settings true with different allow_anonymous, \
                 allow_zero_length_clientid or auto_id_prefix per listener is not supported by midge yet",
                args.config_file.as_deref().map(|p| p.display().to_string()).unwrap_or_default()
            ));
        }
        if let Some(first) = config.listeners.first() {
            config.allow_anonymous = first.allow_anonymous;
            config.allow_zero_length_clientid = first.allow_zero_length_clientid;
            config.auto_id_prefix = first.auto_id_prefix.clone();
        }
    }
    config.apply_port_overrides(&args.port);
    Ok(config)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match load_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("Error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if args.test_config {
        println!("Configuration is valid.");
        return ExitCode::SUCCESS;
    }
    if args.daemon {
        // Before any thread exists. The working directory is kept so
        // relative paths in the configuration mean what they meant.
        if let Err(e) = nix::unistd::daemon(true, false) {
            eprintln!("Error: cannot daemonize: {e}");
            return ExitCode::FAILURE;
        }
    }
    // Before any thread exists (the logger may start one), and after the
    // daemon's fork, which would size the table down again.
    let fds = midge::fd_table::prepare();
    let log = Logger::new(config.log.clone(), args.verbose);
    log!(
        log,
        LogType::NOTICE,
        "midge version {} starting",
        env!("CARGO_PKG_VERSION")
    );
    match &args.config_file {
        Some(p) => log!(log, LogType::NOTICE, "Config loaded from {}.", p.display()),
        None => log!(log, LogType::NOTICE, "Using default config."),
    }
    if config.local_only {
        log!(
            log,
            LogType::NOTICE,
            "Starting in local only mode. Connections will only be possible from clients running on this machine."
        );
        if args.config_file.is_some() {
            log!(
                log,
                LogType::NOTICE,
                "Create a configuration file which defines a listener to allow remote access."
            );
        }
    }
    let table = match &fds.presized {
        Ok(top) => format!("file table grown to descriptor {top}"),
        Err(e) => format!("file table not grown: {e}"),
    };
    log!(
        log,
        LogType::DEBUG,
        "Open-file limit {} (was {}); {table}.",
        fds.limit,
        fds.limit_before
    );
    let idle_log = log.clone();
    let code = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads(&config))
        .enable_all()
        // Workers' log lines are written in batches, when a worker goes idle.
        .on_thread_park(move || idle_log.worker_idle())
        .build()
    {
        Ok(runtime) => {
            let code = runtime.block_on(run(args, config.clone(), log.clone()));
            drop(runtime);
            log.flush();
            code
        }
        Err(e) => {
            log!(
                log,
                LogType::ERROR,
                "Error: cannot start the runtime: {}",
                e
            );
            ExitCode::FAILURE
        }
    };
    if let Some(pid_file) = &config.pid_file {
        // Only our own: a failed start must not remove a running broker's.
        if PID_WRITTEN.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = std::fs::remove_file(pid_file);
        }
    }
    log!(
        log,
        LogType::NOTICE,
        "midge version {} terminating",
        env!("CARGO_PKG_VERSION")
    );
    code
}

/// Threads serving connections: `worker_threads`, or one less than the
/// cores (at least one). On two cores one thread measured best: a message
/// crosses no thread from socket to socket (p50 latency 32 µs instead of
/// 106 at 5k msg/s), and the other core serves the kernel's network work.
fn worker_threads(config: &Config) -> usize {
    config.worker_threads.map_or_else(
        || {
            std::thread::available_parallelism()
                .map_or(1, |n| n.get().saturating_sub(1))
                .max(1)
        },
        usize::from,
    )
}

fn server_options(config: &Config, seed: u64) -> Result<ServerOptions, String> {
    Ok(ServerOptions {
        access: access::load(config)?,
        broker: midge::broker_config::from_config(config, seed),
        max_packet_size: config.max_packet_size as usize,
        memory_limit: config.memory_limit,
        sys_interval: (config.sys_interval > 0)
            .then(|| Duration::from_secs(u64::from(config.sys_interval))),
    })
}

async fn run(args: Args, config: Config, log: Logger) -> ExitCode {
    let bound = match listen::bind_all(&config, &log).await {
        Ok(l) => l,
        Err(e) => {
            log!(log, LogType::ERROR, "Error: {}", e);
            return ExitCode::FAILURE;
        }
    };
    let listeners = bound.listeners;
    let tls = bound.tls;
    // Written once the listeners are bound (so whoever waits for the pid
    // file can connect) and before privileges are dropped (so it may live
    // in a root-owned directory such as /run).
    if let Some(pid_file) = &config.pid_file {
        if let Err(e) = std::fs::write(pid_file, format!("{}\n", std::process::id())) {
            log!(
                log,
                LogType::ERROR,
                "Error: Unable to write pid file {}: {}.",
                pid_file.display(),
                e
            );
            return ExitCode::FAILURE;
        }
        PID_WRITTEN.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    if let Some(user) = &config.user {
        if let Err(e) = drop_privileges(user, &log) {
            log!(log, LogType::ERROR, "Error: {}", e);
            return ExitCode::FAILURE;
        }
    }
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ (u64::from(std::process::id()) << 32);
    let options = match server_options(&config, seed) {
        Ok(o) => o,
        Err(e) => {
            log!(log, LogType::ERROR, "Error: {}", e);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let durability = match persistence::open(&config, &log) {
        Ok(d) => d,
        Err(e) => {
            log!(log, LogType::ERROR, "Error: persistence: {}", e);
            return ExitCode::FAILURE;
        }
    };
    let (control_tx, control_rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let signals = tokio::spawn(handle_signals(
        args,
        config,
        log.clone(),
        control_tx,
        stop_tx,
        seed,
        tls,
    ));
    notify::send("READY=1");
    notify::spawn_watchdog();
    serve(
        listeners,
        options,
        log,
        control_rx,
        durability,
        async move {
            let _ = stop_rx.await;
        },
    )
    .await;
    signals.abort();
    ExitCode::SUCCESS
}

/// Mosquitto's signals. A failed reload keeps the running configuration.
async fn handle_signals(
    args: Args,
    mut config: Config,
    log: Logger,
    control: mpsc::UnboundedSender<Control>,
    stop: tokio::sync::oneshot::Sender<()>,
    seed: u64,
    tls: Vec<(midge_config::TlsConfig, midge_server::tls::SharedTls)>,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup), Ok(mut usr1), Ok(mut usr2)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
        signal(SignalKind::user_defined1()),
        signal(SignalKind::user_defined2()),
    ) else {
        log!(
            log,
            LogType::ERROR,
            "Error: cannot install signal handlers."
        );
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                notify::send(&format!("RELOADING=1\nMONOTONIC_USEC={}", notify::monotonic_usec()));
                log!(log, LogType::NOTICE, "Reloading config.");
                log.reopen();
                listen::reload_tls(&tls, &log);
                match load_config(&args) {
                    Ok(new) => {
                        log.reconfigure(new.log.clone(), args.verbose);
                        for (what, changed) in [
                            ("listeners", new.listeners != config.listeners),
                            ("pid_file", new.pid_file != config.pid_file),
                            ("user", new.user != config.user),
                            ("persistence options", new.persistence != config.persistence
                                || new.persistence_location != config.persistence_location
                                || new.persistence_file != config.persistence_file),
                            ("max_packet_size", new.max_packet_size != config.max_packet_size),
                            ("set_tcp_nodelay", new.set_tcp_nodelay != config.set_tcp_nodelay),
                        ] {
                            if changed {
                                log!(log, LogType::WARNING, "Warning: changes to {} take effect after a restart.", what);
                            }
                        }
                        // What needs a restart keeps its running value.
                        let mut effective = new.clone();
                        effective.persistence = config.persistence;
                        effective.max_packet_size = config.max_packet_size;
                        match server_options(&effective, seed) {
                            Ok(o) => {
                                let _ = control.send(Control::Reload(Box::new(o)));
                                config = new;
                            }
                            Err(e) => log!(log, LogType::ERROR, "Error: reload failed, keeping the running configuration: {}", e),
                        }
                    }
                    Err(e) => log!(log, LogType::ERROR, "Error: reload failed, keeping the running configuration: {}", e),
                }
                notify::send("READY=1");
            }
            _ = usr1.recv() => {
                let _ = control.send(Control::Checkpoint);
            }
            _ = usr2.recv() => {
                let _ = control.send(Control::DumpSubscriptions);
            }
        }
    }
    notify::send("STOPPING=1");
    let _ = stop.send(());
}

/// Switches to `user` after the listeners are bound, as Mosquitto does when
/// started as root. Not root: nothing to drop.
fn drop_privileges(user: &str, log: &Logger) -> Result<(), String> {
    use nix::unistd::{getuid, setgid, setgroups, setuid, User};
    if !getuid().is_root() {
        return Ok(());
    }
    let account = User::from_name(user)
        .map_err(|e| format!("cannot look up user {user}: {e}"))?
        .ok_or_else(|| {
            format!("user {user} does not exist; create it or change the user option")
        })?;
    setgroups(&[account.gid]).map_err(|e| format!("setgroups: {e}"))?;
    setgid(account.gid).map_err(|e| format!("setgid: {e}"))?;
    setuid(account.uid).map_err(|e| format!("setuid: {e}"))?;
    log!(
        log,
        LogType::INFORMATION,
        "Dropped privileges to user {}.",
        user
    );
    Ok(())
}
