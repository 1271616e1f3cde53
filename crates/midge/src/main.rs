//! `midge`: the broker binary. Takes Mosquitto's command line (`-c`, `-p`,
//! `-v`, `--test-config`), reads a `mosquitto.conf`, binds the listeners and
//! runs the server until SIGINT or SIGTERM.

use clap::Parser;
use midge_config::{Config, ListenAddress, SocketDomain};
use midge_core::BrokerConfig;
use midge_server::{log, serve, LogType, Logger, ServerOptions};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;

/// Exit code for a configuration that cannot be used (Mosquitto's).
const EXIT_CONFIG: u8 = 3;

#[derive(Parser, Debug)]
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
    /// Run in the background (not supported yet).
    #[arg(short = 'd', long = "daemon")]
    daemon: bool,
    /// Check the configuration file and exit.
    #[arg(long = "test-config")]
    test_config: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut config = match &args.config_file {
        Some(path) => match midge_config::parse_file(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("Error: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
        None => Config::default(),
    };
    if let Err(reason) = check_supported(&config, &args) {
        eprintln!("Error: {reason}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let port_applied = config.apply_port_overrides(&args.port);
    if args.test_config {
        println!("Configuration is valid.");
        return ExitCode::SUCCESS;
    }
    let log = Logger::stderr(if args.verbose {
        LogType::ALL
    } else {
        LogType::DEFAULT
    });
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
    if !args.port.is_empty() && !port_applied {
        log!(
            log,
            LogType::WARNING,
            "Warning: -p is ignored when the configuration file defines listeners."
        );
    }
    if config.local_only {
        log!(
            log,
            LogType::NOTICE,
            "Starting in local only mode. Connections will only be possible from clients running on this machine."
        );
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("Error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(run(config, log.clone()));
    log!(
        log,
        LogType::NOTICE,
        "midge version {} terminating",
        env!("CARGO_PKG_VERSION")
    );
    code
}

/// Refuses what the configuration asks for but this build cannot do yet,
/// rather than ignoring it.
fn check_supported(config: &Config, args: &Args) -> Result<(), String> {
    if args.daemon {
        return Err("-d (daemon mode) is not supported by midge yet".into());
    }
    for l in &config.listeners {
        if let ListenAddress::Unix { path } = &l.address {
            return Err(format!(
                "Unix socket listeners ({}) are not supported by midge yet",
                path.display()
            ));
        }
        if l.max_connections.is_some() {
            return Err("max_connections is not supported by midge yet".into());
        }
    }
    if config.max_inflight_bytes != 0 {
        return Err("max_inflight_bytes is not supported by midge yet".into());
    }
    Ok(())
}

async fn run(config: Config, log: Logger) -> ExitCode {
    let listeners = match bind_all(&config, &log).await {
        Ok(l) => l,
        Err(e) => {
            log!(log, LogType::ERROR, "Error: {}", e);
            return ExitCode::FAILURE;
        }
    };
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ (u64::from(std::process::id()) << 32);
    let options = ServerOptions {
        broker: BrokerConfig {
            max_inflight_messages: config.max_inflight_messages,
            max_queued_messages: config.max_queued_messages,
            max_queued_bytes: config.max_queued_bytes,
            queue_qos0_messages: config.queue_qos0_messages,
            allow_anonymous: config.allow_anonymous,
            allow_zero_length_clientid: config.allow_zero_length_clientid,
            auto_id_prefix: config.auto_id_prefix.clone(),
            retain_available: config.retain_available,
            max_keepalive: config.max_keepalive,
            message_size_limit: config.message_size_limit,
            id_seed: seed,
            maximum_packet_size: config.max_packet_size,
            ..BrokerConfig::default()
        },
        max_packet_size: config.max_packet_size as usize,
        set_tcp_nodelay: config.set_tcp_nodelay,
    };
    serve(listeners, options, log, shutdown_signal()).await;
    ExitCode::SUCCESS
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers, run until killed.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Binds every TCP listener. An address given by name binds each address
/// the name resolves to; no address binds IPv4 and IPv6 wildcards apart, as
/// Mosquitto does.
async fn bind_all(config: &Config, log: &Logger) -> Result<Vec<TcpListener>, String> {
    let mut out = Vec::new();
    for l in &config.listeners {
        let ListenAddress::Tcp {
            port,
            bind,
            socket_domain,
        } = &l.address
        else {
            continue;
        };
        let addrs: Vec<SocketAddr> = match bind {
            Some(host) => tokio::net::lookup_host((host.as_str(), *port))
                .await
                .map_err(|e| format!("cannot resolve listener address {host}: {e}"))?
                .collect(),
            None => vec![
                SocketAddr::from(([0, 0, 0, 0], *port)),
                SocketAddr::from(([0u16; 8], *port)),
            ],
        };
        for addr in addrs {
            let wanted = match socket_domain {
                Some(SocketDomain::Ipv4) => addr.is_ipv4(),
                Some(SocketDomain::Ipv6) => addr.is_ipv6(),
                None => true,
            };
            if !wanted {
                continue;
            }
            match bind_one(addr) {
                Ok(listener) => {
                    let actual = listener.local_addr().map(|a| a.port()).unwrap_or(*port);
                    let family = if addr.is_ipv4() { "ipv4" } else { "ipv6" };
                    log!(
                        log,
                        LogType::NOTICE,
                        "Opening {} listen socket on port {}.",
                        family,
                        actual
                    );
                    out.push(listener);
                }
                // IPv6 may be disabled on the host; IPv4 alone is enough.
                Err(e) if addr.is_ipv6() && !out.is_empty() => {
                    log!(
                        log,
                        LogType::WARNING,
                        "Warning: cannot listen on {}: {}.",
                        addr,
                        e
                    );
                }
                Err(e) => return Err(format!("cannot listen on {addr}: {e}")),
            }
        }
    }
    if out.is_empty() {
        return Err("no listener could be opened".into());
    }
    Ok(out)
}

fn bind_one(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        // So 0.0.0.0 and :: can share a port.
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}
