//! `midge_bench`: a load generator for MQTT brokers (any broker, not only
//! midge), built directly on `midge-codec` and tokio.
//!
//! Scenarios: `fanin` (P publishers to one wildcard subscriber), `fanout`
//! (one publisher to S subscribers), `p2p` (N publisher/subscriber pairs),
//! `latency` (a fixed rate, percentiles), `conn` (many idle connections:
//! connect rate and the broker's memory per connection), `churn` (clients
//! connecting and disconnecting in a loop: sustained connect rate) and
//! `subs` (one client with many filters, one of which matches a fan-in). Each run is
//! bounded by `--duration` and a hard `--timeout`.
//!
//! `--persistent` gives the subscribers persistent sessions (clean session
//! 0, fixed client ids), so that a broker with persistence on writes their
//! QoS 1/2 messages to its store before acknowledging them. `--offline`
//! (p2p only) keeps those sessions offline while the publishers publish,
//! so every message must be written to the store before its PUBACK; the
//! subscribers come back afterwards and drain their queues.
//!
//! Counting is honest: a message counts only when a subscriber received it;
//! loss is what was expected and never arrived, at QoS 0 too. With
//! `--broker-pid` the broker's CPU time and resident memory are sampled from
//! `/proc`. `--json` prints one JSON object per scenario on stdout.

#[path = "midge_bench/mqtt.rs"]
mod mqtt;
#[path = "midge_bench/offline.rs"]
mod offline;
#[path = "midge_bench/scenarios.rs"]
mod scenarios;
#[path = "midge_bench/stats.rs"]
mod stats;
#[path = "midge_bench/sys.rs"]
mod sys;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, ValueEnum};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// --publishers P → 1 subscriber on bench/+/data.
    Fanin,
    /// 1 publisher → --subscribers S on one topic; rate counts deliveries.
    Fanout,
    /// --pairs N, each publisher → its own subscriber (default QoS 1, --window).
    P2p,
    /// 1 publisher at --rate msg/s → 1 subscriber; latency percentiles.
    Latency,
    /// --connections N idle connections: connect rate, broker RSS per connection.
    Conn,
    /// --connect-concurrency clients connecting and disconnecting for --duration: sustained connect rate.
    Churn,
    /// 1 client with --filters N distinct filters, 1 matching a fan-in.
    Subs,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Fanin => "fanin",
            Scenario::Fanout => "fanout",
            Scenario::P2p => "p2p",
            Scenario::Latency => "latency",
            Scenario::Conn => "conn",
            Scenario::Churn => "churn",
            Scenario::Subs => "subs",
        }
    }
}

/// Options; each scenario uses those that concern it.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "midge_bench",
    version,
    about = "Load generator for MQTT brokers: throughput, latency, connections, subscriptions",
    after_help = "Examples:\n  midge_bench fanin --publishers 8 --qos 0\n  midge_bench p2p latency --json --broker-pid $(pidof midge)\n  midge_bench p2p --persistent --qos 1\n  midge_bench p2p --persistent --offline\n  midge_bench conn --connections 10000 --source-addrs 4 --hold 5"
)]
pub struct Opts {
    /// Scenarios to run, one after the other.
    #[arg(value_enum, required = true)]
    scenarios: Vec<Scenario>,
    /// Broker host.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Broker port.
    #[arg(long, short = 'p', default_value_t = 1883)]
    pub port: u16,
    /// QoS of publishes and subscriptions (default: 1 for p2p and latency, 0 otherwise).
    #[arg(long, short = 'q')]
    pub qos: Option<u8>,
    /// Payload size in bytes; 16 or more carries a send timestamp (latency).
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Publishing time per scenario, seconds.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Stop each publisher after this many messages (0: only --duration).
    #[arg(long, default_value_t = 0)]
    pub count: u64,
    /// After publishing, wait until nothing arrived for this long, seconds.
    #[arg(long, default_value_t = 1.0)]
    pub drain: f64,
    /// Hard limit for each scenario, seconds (default: 4 × duration + 60).
    #[arg(long)]
    pub timeout: Option<f64>,
    /// Publishers (fanin, subs).
    #[arg(long, default_value_t = 8)]
    pub publishers: usize,
    /// Subscribers (fanout).
    #[arg(long, default_value_t = 50)]
    pub subscribers: usize,
    /// Publisher/subscriber pairs (p2p).
    #[arg(long, default_value_t = 16)]
    pub pairs: usize,
    /// Unacknowledged QoS 1/2 publishes allowed per publisher.
    #[arg(long, default_value_t = 64)]
    pub window: usize,
    /// Messages per second (latency).
    #[arg(long, default_value_t = 5000.0)]
    pub rate: f64,
    /// Total publish rate for the throughput scenarios, msg/s (default: as fast as possible).
    #[arg(long = "pub-rate")]
    pub pub_rate: Option<f64>,
    /// Idle connections to open (conn).
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// Connections being set up at once (conn, churn).
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,
    /// Keep the idle connections open this long before closing, seconds (conn).
    #[arg(long, default_value_t = 1.0)]
    pub hold: f64,
    /// Distinct filters for the subs scenario.
    #[arg(long, default_value_t = 100_000)]
    pub filters: usize,
    /// Filters per SUBSCRIBE packet (subs).
    #[arg(long, default_value_t = 500)]
    pub filters_per_subscribe: usize,
    /// Source addresses for client sockets: a list (127.0.0.1,127.0.0.2) or a
    /// count N meaning 127.0.0.1 .. 127.0.0.N; spreads ephemeral ports.
    #[arg(long = "source-addrs")]
    pub source_addrs: Option<String>,
    /// The broker's process id: report its CPU time and memory.
    #[arg(long = "broker-pid")]
    pub broker_pid: Option<u32>,
    /// Message scenarios: after the run, with every client gone, wait
    /// this many seconds and report the broker's memory again
    /// (`broker_rss_settled_kb`): does it give back what the run took?
    #[arg(long, default_value_t = 0.0)]
    pub settle: f64,
    /// One JSON object per scenario on stdout.
    #[arg(long)]
    pub json: bool,
    /// Subscribers keep persistent sessions (clean session 0, fixed client
    /// ids midge_bench-SCENARIO-sI; any earlier session under those ids is
    /// ended first), so QoS 1/2 messages to them go through the broker's store.
    #[arg(long)]
    pub persistent: bool,
    /// With --persistent, p2p only: the subscribers subscribe and disconnect,
    /// the publishers publish to their offline sessions (rate: acknowledged
    /// publishes per second), then the subscribers reconnect and drain.
    #[arg(long)]
    pub offline: bool,
    /// Threads of the bench itself (default: one per core). 1 runs every
    /// client on one thread, which costs the bench the least CPU per
    /// connection (on two cores it leaves the broker a whole core).
    #[arg(long = "client-threads")]
    pub client_threads: Option<usize>,
    /// Extra label copied into each JSON object as "label" (e.g. the broker's name).
    #[arg(long)]
    pub label: Option<String>,
}

fn parse_sources(s: &str) -> Result<Vec<IpAddr>> {
    if let Ok(n) = s.trim().parse::<u8>() {
        if n == 0 {
            bail!("--source-addrs count must be at least 1");
        }
        return Ok((1..=n)
            .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)))
            .collect());
    }
    s.split(',')
        .map(|a| {
            a.trim()
                .parse::<IpAddr>()
                .map_err(|_| anyhow!("--source-addrs: {a:?} is not an IP address"))
        })
        .collect()
}

/// `--offline` makes sense only for p2p to persistent sessions at QoS 1 or 2.
fn check_offline(opts: &Opts) -> Result<()> {
    if !opts.offline {
        return Ok(());
    }
    if !opts.persistent {
        bail!("--offline needs --persistent: only persistent sessions keep messages while offline");
    }
    if let Some(s) = opts.scenarios.iter().find(|&&s| s != Scenario::P2p) {
        bail!(
            "--offline works only with the p2p scenario, not {}",
            s.name()
        );
    }
    if opts.qos == Some(0) {
        bail!("--offline needs QoS 1 or 2: a broker need not queue QoS 0 messages for offline sessions");
    }
    Ok(())
}

fn main() -> ExitCode {
    let opts = Opts::parse();
    match run(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("midge_bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(opts: Opts) -> Result<()> {
    if opts.duration.is_nan() || opts.duration <= 0.0 {
        bail!("--duration must be positive");
    }
    if !(opts.settle >= 0.0 && opts.settle.is_finite()) {
        bail!("--settle must be a number of seconds, 0 or more");
    }
    check_offline(&opts)?;
    let (soft, hard) =
        midge::fd_table::raise_nofile_limit().context("cannot read RLIMIT_NOFILE")?;
    if opts.scenarios.contains(&Scenario::Conn) {
        let need = opts.connections as u64 + 256;
        if soft < need {
            bail!(
                "{} connections need about {need} file descriptors, but RLIMIT_NOFILE is {soft} (hard limit {hard}); raise it (ulimit -Hn, as root) or lower --connections",
                opts.connections
            );
        }
    }
    let addr: SocketAddr = (opts.host.as_str(), opts.port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {}", opts.host))?
        .next()
        .ok_or_else(|| anyhow!("{} resolves to no address", opts.host))?;
    let sources = match &opts.source_addrs {
        Some(s) => parse_sources(s)?,
        None => Vec::new(),
    };
    if let Some(pid) = opts.broker_pid {
        stats::sample_process(pid)?;
    }
    let timeout = opts.timeout.unwrap_or(opts.duration * 4.0 + 60.0);
    // Keep-alive longer than the whole run: no PINGREQ needed.
    let keep_alive = (timeout + 60.0).clamp(60.0, 65535.0) as u16;
    let runtime = match opts.client_threads {
        Some(0) => bail!("--client-threads must be at least 1"),
        Some(1) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
        None => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    }
    .context("cannot start the tokio runtime")?;
    let ctx = scenarios::Ctx {
        target: mqtt::Target {
            addr,
            keep_alive,
            sources: Arc::new(sources),
        },
        run_id: format!("mb{}", std::process::id()),
        opts: opts.clone(),
    };
    for &s in &opts.scenarios {
        let fut = async {
            match s {
                Scenario::Fanin => scenarios::fanin(&ctx).await,
                Scenario::Fanout => scenarios::fanout(&ctx).await,
                Scenario::P2p => scenarios::p2p(&ctx).await,
                Scenario::Latency => scenarios::latency(&ctx).await,
                Scenario::Conn => scenarios::conn(&ctx).await,
                Scenario::Churn => scenarios::churn(&ctx).await,
                Scenario::Subs => scenarios::subs(&ctx).await,
            }
        };
        let mut report = runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs_f64(timeout), fut).await })
            .map_err(|_| {
                anyhow!(
                    "{}: did not finish within the --timeout of {timeout} s",
                    s.name()
                )
            })?
            .with_context(|| s.name())?;
        if let Some(l) = &opts.label {
            report.0.insert("label".into(), serde_json::json!(l));
        }
        if opts.json {
            println!("{}", report.to_json());
        } else {
            println!("{}", report.summary());
        }
    }
    // Tasks left (e.g. a subscriber after an error) must not hold the exit.
    runtime.shutdown_timeout(Duration::from_millis(100));
    Ok(())
}
