//! The scenarios: who connects, who subscribes to what, who publishes where,
//! and the one report each run produces.
//!
//! Every message-flow scenario goes the same way ([`run_flow`]): connect and
//! subscribe the subscribers, connect the publishers, sample the broker,
//! publish until the deadline, drain (wait until every expected delivery has
//! arrived or nothing arrived for a while), sample the broker again, stop.
//! Throughput is deliveries counted at the subscribers divided by the time
//! from the first publish to the last delivery, so a broker that buffers
//! instead of delivering gains nothing, and loss is what was expected and
//! never arrived. `p2p --offline` goes another way, with its subscribers
//! away while the publishers publish (the `offline` module).

use anyhow::{anyhow, bail, Result};
use bytes::BytesMut;
use midge_codec::QoS;
use serde_json::{json, Map, Value};
use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::mqtt::{self, PubSpec, Target};
use crate::offline;
use crate::stats::{self, Histogram, Live, ProcSample};
use crate::Opts;

/// Everything a scenario needs from the command line.
pub struct Ctx {
    pub target: Target,
    pub opts: Opts,
    pub run_id: String,
}

impl Ctx {
    fn client_id(&self, scenario: &str, role: &str, i: usize) -> String {
        client_id(&self.run_id, scenario, role, i)
    }

    /// A persistent subscriber's id: the same in every run, so a broker
    /// that restores sessions would find it again (`--persistent`).
    pub(crate) fn fixed_client_id(scenario: &str, role: &str, i: usize) -> String {
        format!("midge_bench-{scenario}-{role}{i}")
    }

    pub(crate) fn sample(&self) -> Result<Option<ProcSample>> {
        self.opts.broker_pid.map(stats::sample_process).transpose()
    }
}

/// A client id unique to this run of the bench.
fn client_id(run_id: &str, scenario: &str, role: &str, i: usize) -> String {
    format!("{run_id}-{scenario}-{role}{i}")
}

/// A subscriber to start: its filters.
pub(crate) struct SubSpec {
    pub filters: Vec<String>,
}

/// One scenario's result, printed as one JSON object or a summary.
pub struct Report(pub Map<String, Value>);

impl Report {
    fn new(scenario: &str) -> Report {
        let mut m = Map::new();
        m.insert("scenario".into(), json!(scenario));
        Report(m)
    }

    pub(crate) fn set(&mut self, key: &str, v: Value) {
        self.0.insert(key.into(), v);
    }

    pub fn to_json(&self) -> String {
        Value::Object(self.0.clone()).to_string()
    }

    /// A few readable lines.
    pub fn summary(&self) -> String {
        let g = |k: &str| self.0.get(k).cloned().unwrap_or(Value::Null);
        let f = |k: &str| g(k).as_f64();
        let mut s = format!(
            "{}: {:.0} msg/s over {:.2} s; sent {}, received {} of {} expected, loss {:.3} %",
            g("scenario").as_str().unwrap_or("?"),
            f("msgs_per_sec").unwrap_or(0.0),
            f("duration_s").unwrap_or(0.0),
            g("sent"),
            g("received"),
            g("expected"),
            f("loss_pct").unwrap_or(0.0),
        );
        if g("offline").as_bool() == Some(true) {
            s.push_str(&format!(
                " (offline persistent sessions: publish phase; drained in {:.2} s)",
                f("drain_s").unwrap_or(0.0)
            ));
        } else if g("persistent").as_bool() == Some(true) {
            s.push_str(" (persistent sessions)");
        }
        if let Some(p50) = f("p50_us") {
            s.push_str(&format!(
                "\n  latency µs: p50 {} p90 {} p99 {} p99.9 {} max {}",
                p50,
                g("p90_us"),
                g("p99_us"),
                g("p999_us"),
                g("max_us")
            ));
        }
        if let Some(c) = f("connects_per_sec") {
            s.push_str(&format!(
                "\n  {} connections, {:.0} connects/s, {} failed",
                g("connections"),
                c,
                g("failed")
            ));
        }
        if let Some(b) = f("broker_rss_per_conn_bytes") {
            s.push_str(&format!("\n  broker RSS per connection: {b:.0} bytes"));
        }
        if let (Some(t), Some(_)) = (f("subscribe_s"), f("filters")) {
            s.push_str(&format!(
                "\n  {} filters subscribed in {t:.2} s",
                g("filters")
            ));
        }
        if let Some(cpu) = f("broker_cpu_s") {
            s.push_str(&format!(
                "\n  broker: {cpu:.2} CPU s, {:.0} msg per CPU s, RSS {} -> {} kB",
                f("msgs_per_cpu_s").unwrap_or(0.0),
                g("broker_rss_start_kb"),
                g("broker_rss_end_kb")
            ));
        }
        s
    }
}

pub(crate) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Prints a `\r`-updated line on stderr each second while a run goes on,
/// if stderr is a terminal.
pub(crate) fn progress(
    name: &str,
    live: Arc<Live>,
    start: Instant,
) -> Option<tokio::task::JoinHandle<()>> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let name = name.to_string();
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        let mut last = 0;
        loop {
            tick.tick().await;
            let r = live.received();
            eprint!(
                "\r{name}: {:>4.0} s  sent {:>11}  received {:>11}  {:>9} msg/s   ",
                start.elapsed().as_secs_f64(),
                live.sent(),
                r,
                r - last
            );
            last = r;
        }
    }))
}

pub(crate) fn end_progress(h: Option<tokio::task::JoinHandle<()>>) {
    if let Some(h) = h {
        h.abort();
        eprint!("\r\x1b[K");
    }
}

fn qos_of(ctx: &Ctx, default: u8) -> Result<QoS> {
    let q = ctx.opts.qos.unwrap_or(default);
    QoS::from_u8(q).ok_or_else(|| anyhow!("--qos must be 0, 1 or 2, not {q}"))
}

/// Subscribers first, then publishers, then the timed run and the drain.
async fn run_flow(
    ctx: &Ctx,
    name: &str,
    qos: QoS,
    subs: Vec<SubSpec>,
    pubs: Vec<(String, Option<f64>)>,
    // Deliveries expected per message sent.
    fanout: u64,
    mut report: Report,
) -> Result<Report> {
    let o = &ctx.opts;
    let start_sample = ctx.sample()?;
    let live = Arc::new(Live::default());
    let (stop_tx, stop_rx) = watch::channel(false);

    // Subscribers, connected in parallel; the slowest SUBACK sets the start.
    let sub_start = Instant::now();
    let mut connecting = JoinSet::new();
    let persistent = o.persistent;
    for (i, spec) in subs.into_iter().enumerate() {
        let target = ctx.target.clone();
        let id = if persistent {
            Ctx::fixed_client_id(name, "s", i)
        } else {
            ctx.client_id(name, "s", i)
        };
        let per_packet = o.filters_per_subscribe;
        connecting.spawn(async move {
            if persistent {
                // A session left by an earlier run would replay its queue
                // into this run's count: end it first.
                mqtt::clear_session(&target, target.source(i), &id).await?;
            }
            let (stream, buf) = mqtt::connect(&target, target.source(i), &id, !persistent).await?;
            mqtt::subscribe(stream, buf, &spec.filters, qos, per_packet).await
        });
    }
    let mut sub_tasks = JoinSet::new();
    while let Some(r) = connecting.join_next().await {
        let (rd, wr, buf) = r.map_err(|e| anyhow!("subscriber task failed: {e}"))??;
        sub_tasks.spawn(mqtt::run_subscriber(
            rd,
            wr,
            buf,
            live.clone(),
            stop_rx.clone(),
        ));
    }
    let subscribe_s = sub_start.elapsed().as_secs_f64();

    let pub_conns = connect_publishers(ctx, name, pubs).await?;
    let n_pubs = pub_conns.len();
    let cpu_start = ctx.sample()?;
    let bar = progress(name, live.clone(), Instant::now());
    let published = publish(ctx, qos, pub_conns, &live).await;

    let expected = published.sent * fanout;
    let drain = drain_quiet(o);
    wait_for_deliveries(&live, expected, drain, Instant::now() + drain_limit(o)).await;
    let cpu_end = ctx.sample()?;
    end_progress(bar);
    let _ = stop_tx.send(true);
    let received = join_subscribers(sub_tasks).await;
    if let Some(e) = published.error {
        return Err(e);
    }
    let (received, hist) = received?;
    let t0_ns = published.t0_ns;
    let last_rx = live.last_rx_ns.load(Ordering::Relaxed);
    let duration_s = if received > 0 && last_rx > t0_ns {
        (last_rx - t0_ns) as f64 / 1e9
    } else {
        published.publish_s
    };
    let rate = if duration_s > 0.0 {
        received as f64 / duration_s
    } else {
        0.0
    };
    report.set("qos", json!(qos as u8));
    report.set("persistent", json!(persistent));
    report.set("payload", json!(o.payload));
    report.set("publishers", json!(n_pubs));
    report.set("msgs_per_sec", json!(round3(rate)));
    report.set("sent", json!(published.sent));
    if qos != QoS::AtMostOnce {
        report.set("acked", json!(published.acked));
    }
    report.set("expected", json!(expected));
    report.set("received", json!(received));
    report.set("loss_pct", json!(round3(loss_pct(expected, received))));
    report.set("duration_s", json!(round3(duration_s)));
    report.set("publish_s", json!(round3(published.publish_s)));
    report.set("subscribe_s", json!(round3(subscribe_s)));
    set_latency(&mut report, &hist);
    if let (Some(s0), Some(c0), Some(c1)) = (start_sample, cpu_start, cpu_end) {
        set_broker(&mut report, received, s0, c0, c1, c1.rss_kb);
    }
    if o.settle > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(o.settle)).await;
        if let Some(s) = ctx.sample()? {
            report.set("broker_rss_settled_kb", json!(s.rss_kb));
        }
    }
    Ok(report)
}

/// A publisher connected and ready to publish.
pub(crate) struct PubConn {
    stream: TcpStream,
    /// What the broker sent after the CONNACK.
    buf: BytesMut,
    topic: String,
    rate: Option<f64>,
}

/// Connects one publisher per `(topic, rate)`, on clean sessions, one
/// after the other.
pub(crate) async fn connect_publishers(
    ctx: &Ctx,
    name: &str,
    pubs: Vec<(String, Option<f64>)>,
) -> Result<Vec<PubConn>> {
    let mut conns = Vec::with_capacity(pubs.len());
    for (i, (topic, rate)) in pubs.into_iter().enumerate() {
        let id = ctx.client_id(name, "p", i);
        let (stream, buf) = mqtt::connect(&ctx.target, ctx.target.source(i + 7), &id, true).await?;
        conns.push(PubConn {
            stream,
            buf,
            topic,
            rate,
        });
    }
    Ok(conns)
}

/// What the publishers did, together.
pub(crate) struct Published {
    pub sent: u64,
    /// PUBACK/PUBCOMP received.
    pub acked: u64,
    /// `now_ns()` when publishing started.
    pub t0_ns: u64,
    /// From the start to the last publisher's end (its acknowledgements
    /// awaited, bounded by `--drain`).
    pub publish_s: f64,
    /// The first publisher's failure, if any.
    pub error: Option<anyhow::Error>,
}

/// Runs every publisher until `--duration` or `--count`, all at once, and
/// waits for them all.
pub(crate) async fn publish(
    ctx: &Ctx,
    qos: QoS,
    conns: Vec<PubConn>,
    live: &Arc<Live>,
) -> Published {
    let o = &ctx.opts;
    let t0 = Instant::now();
    let t0_ns = stats::now_ns();
    let deadline = t0 + Duration::from_secs_f64(o.duration);
    let mut pub_tasks = JoinSet::new();
    for (i, c) in conns.into_iter().enumerate() {
        let spec = PubSpec {
            topic: c.topic,
            qos,
            payload: o.payload,
            window: o.window,
            rate: c.rate,
            count: o.count,
            deadline,
            drain: drain_quiet(o),
        };
        pub_tasks.spawn(mqtt::run_publisher(
            c.stream,
            c.buf,
            spec,
            live.clone(),
            (i as u64) << 40,
        ));
    }
    let (mut sent, mut acked, mut error) = (0, 0, None);
    while let Some(r) = pub_tasks.join_next().await {
        match r {
            Ok(Ok(p)) => {
                sent += p.sent;
                acked += p.acked;
            }
            Ok(Err(e)) => error = error.or(Some(e)),
            Err(e) => error = error.or(Some(anyhow!("publisher task failed: {e}"))),
        }
    }
    Published {
        sent,
        acked,
        t0_ns,
        publish_s: t0.elapsed().as_secs_f64(),
        error,
    }
}

/// How long nothing may arrive before the drain gives up (`--drain`).
pub(crate) fn drain_quiet(o: &Opts) -> Duration {
    Duration::from_secs_f64(o.drain.max(0.1))
}

/// The longest a drain may take: twice the run's length (at least `--drain`).
pub(crate) fn drain_limit(o: &Opts) -> Duration {
    Duration::from_secs_f64(o.duration * 2.0).max(drain_quiet(o))
}

/// Drain: waits until `expected` deliveries arrived, or none arrived for
/// `quiet`, or `until` passed.
pub(crate) async fn wait_for_deliveries(
    live: &Live,
    expected: u64,
    quiet: Duration,
    until: Instant,
) {
    let mut last = live.received();
    let mut last_change = Instant::now();
    while live.received() < expected && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let r = live.received();
        if r != last {
            last = r;
            last_change = Instant::now();
        } else if last_change.elapsed() >= quiet {
            break;
        }
    }
}

/// Waits for every subscriber task (stopped by its watch) and adds up their
/// deliveries and latencies; the first failure wins.
pub(crate) async fn join_subscribers(
    mut tasks: JoinSet<Result<mqtt::SubResult>>,
) -> Result<(u64, Histogram)> {
    let mut hist = Histogram::default();
    let mut received = 0;
    let mut error = None;
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Ok(s)) => {
                received += s.received;
                hist.merge(&s.hist);
            }
            Ok(Err(e)) => error = error.or(Some(e)),
            Err(e) => error = error.or(Some(anyhow!("subscriber task failed: {e}"))),
        }
    }
    match error {
        Some(e) => Err(e.context("a subscriber failed")),
        None => Ok((received, hist)),
    }
}

/// The share of `expected` deliveries that never arrived, in percent.
pub(crate) fn loss_pct(expected: u64, received: u64) -> f64 {
    if expected == 0 {
        0.0
    } else {
        expected.saturating_sub(received) as f64 * 100.0 / expected as f64
    }
}

/// The latency percentiles of `hist`, null when nothing was measured.
pub(crate) fn set_latency(report: &mut Report, hist: &Histogram) {
    if hist.count() > 0 {
        report.set("p50_us", json!(hist.percentile(50.0)));
        report.set("p90_us", json!(hist.percentile(90.0)));
        report.set("p99_us", json!(hist.percentile(99.0)));
        report.set("p999_us", json!(hist.percentile(99.9)));
        report.set("max_us", json!(hist.max()));
        report.set("mean_us", json!(round3(hist.mean())));
    } else {
        for k in ["p50_us", "p90_us", "p99_us", "p999_us", "max_us", "mean_us"] {
            report.set(k, Value::Null);
        }
    }
}

/// The broker's CPU time between `c0` and `c1` and `counted` messages per
/// CPU second; its RSS at `s0` (before any client) and `rss_end_kb`.
pub(crate) fn set_broker(
    report: &mut Report,
    counted: u64,
    s0: ProcSample,
    c0: ProcSample,
    c1: ProcSample,
    rss_end_kb: u64,
) {
    let cpu = c1.cpu_s - c0.cpu_s;
    report.set("broker_cpu_s", json!(round3(cpu)));
    report.set(
        "msgs_per_cpu_s",
        if cpu > 0.0 {
            json!(round3(counted as f64 / cpu))
        } else {
            Value::Null
        },
    );
    report.set("broker_rss_start_kb", json!(s0.rss_kb));
    report.set("broker_rss_end_kb", json!(rss_end_kb));
}

pub async fn fanin(ctx: &Ctx) -> Result<Report> {
    let o = &ctx.opts;
    let qos = qos_of(ctx, 0)?;
    let p = o.publishers.max(1);
    let rate = o.pub_rate.map(|r| r / p as f64);
    let pubs = (0..p).map(|i| (format!("bench/{i}/data"), rate)).collect();
    let subs = vec![SubSpec {
        filters: vec!["bench/+/data".into()],
    }];
    run_flow(ctx, "fanin", qos, subs, pubs, 1, Report::new("fanin")).await
}

pub async fn fanout(ctx: &Ctx) -> Result<Report> {
    let o = &ctx.opts;
    let qos = qos_of(ctx, 0)?;
    let s = o.subscribers.max(1);
    let subs = (0..s)
        .map(|_| SubSpec {
            filters: vec!["bench/fanout".into()],
        })
        .collect();
    let pubs = vec![("bench/fanout".to_string(), o.pub_rate)];
    let mut r = Report::new("fanout");
    r.set("subscribers", json!(s));
    run_flow(ctx, "fanout", qos, subs, pubs, s as u64, r).await
}

pub async fn p2p(ctx: &Ctx) -> Result<Report> {
    let o = &ctx.opts;
    let qos = qos_of(ctx, 1)?;
    let n = o.pairs.max(1);
    let rate = o.pub_rate.map(|r| r / n as f64);
    let subs = (0..n)
        .map(|i| SubSpec {
            filters: vec![format!("bench/p2p/{i}")],
        })
        .collect();
    let pubs = (0..n).map(|i| (format!("bench/p2p/{i}"), rate)).collect();
    let mut r = Report::new("p2p");
    r.set("pairs", json!(n));
    r.set("window", json!(o.window));
    if o.offline {
        return offline::run(ctx, "p2p", qos, subs, pubs, r).await;
    }
    run_flow(ctx, "p2p", qos, subs, pubs, 1, r).await
}

pub async fn latency(ctx: &Ctx) -> Result<Report> {
    let o = &ctx.opts;
    let qos = qos_of(ctx, 1)?;
    if o.payload < stats::STAMP_LEN {
        bail!(
            "latency needs --payload of at least {} bytes (the timestamp)",
            stats::STAMP_LEN
        );
    }
    if o.rate.is_nan() || o.rate <= 0.0 {
        bail!("--rate must be positive");
    }
    let subs = vec![SubSpec {
        filters: vec!["bench/latency".into()],
    }];
    let pubs = vec![("bench/latency".to_string(), Some(o.rate))];
    let mut r = Report::new("latency");
    r.set("rate", json!(o.rate));
    run_flow(ctx, "latency", qos, subs, pubs, 1, r).await
}

/// One client subscribes to `--filters` distinct filters (half of them with
/// a `+`), exactly one of which matches the topic the fan-in publishers use.
pub async fn subs(ctx: &Ctx) -> Result<Report> {
    let o = &ctx.opts;
    let qos = qos_of(ctx, 0)?;
    let n = o.filters.max(1);
    let filters = (0..n)
        .map(|i| {
            if i % 2 == 0 {
                format!("bench/s/{i}/data")
            } else {
                format!("bench/s/{i}/+")
            }
        })
        .collect();
    let p = o.publishers.max(1);
    let rate = o.pub_rate.map(|r| r / p as f64);
    let pubs = (0..p)
        .map(|_| ("bench/s/0/data".to_string(), rate))
        .collect();
    let mut r = Report::new("subs");
    r.set("filters", json!(n));
    run_flow(ctx, "subs", qos, vec![SubSpec { filters }], pubs, 1, r).await
}

/// Opens `--connections` idle connections, `--connect-concurrency` at a
/// time, holds them `--hold` seconds, closes them.
pub async fn conn(ctx: &Ctx) -> Result<Report> {
    let o = &ctx.opts;
    let n = o.connections;
    let start_sample = ctx.sample()?;
    let live = Arc::new(Live::default());
    let sem = Arc::new(Semaphore::new(o.connect_concurrency.max(1)));
    let t0 = Instant::now();
    let t0_ns = stats::now_ns();
    let bar = progress("conn", live.clone(), t0);
    let mut set = JoinSet::new();
    for i in 0..n {
        let permit = sem
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| anyhow!("semaphore closed"))?;
        let target = ctx.target.clone();
        let id = ctx.client_id("conn", "c", i);
        let live = live.clone();
        live.add_sent(1);
        set.spawn(async move {
            let r = mqtt::connect(&target, target.source(i), &id, true).await;
            if r.is_ok() {
                live.add_received(1, stats::now_ns());
            }
            drop(permit);
            r.map(|(s, _)| s)
        });
    }
    let mut streams = Vec::with_capacity(n);
    let mut first_error = None;
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Ok(s)) => streams.push(s),
            Ok(Err(e)) => first_error = first_error.or(Some(e)),
            Err(e) => first_error = first_error.or(Some(anyhow!("connection task failed: {e}"))),
        }
    }
    end_progress(bar);
    let connected = streams.len();
    let failed = n - connected;
    if connected == 0 {
        return Err(first_error.unwrap_or_else(|| anyhow!("no connection was made")));
    }
    if let Some(e) = &first_error {
        eprintln!("midge_bench: conn: {failed} of {n} connections failed; first error: {e:#}");
    }
    let last = live.last_rx_ns.load(Ordering::Relaxed);
    let connect_s = (last.saturating_sub(t0_ns)) as f64 / 1e9;
    let rate = if connect_s > 0.0 {
        connected as f64 / connect_s
    } else {
        0.0
    };
    // Let the broker settle its per-connection state before measuring.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let end_sample = ctx.sample()?;
    if o.hold > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(o.hold)).await;
    }
    drop(streams);

    let mut r = connect_report("conn", n, n as u64, connected as u64, rate, connect_s);
    for k in ["p50_us", "p90_us", "p99_us", "p999_us", "max_us"] {
        r.set(k, Value::Null);
    }
    if let (Some(s0), Some(s1)) = (start_sample, end_sample) {
        let cpu = s1.cpu_s - s0.cpu_s;
        r.set("broker_cpu_s", json!(round3(cpu)));
        r.set("msgs_per_cpu_s", Value::Null);
        r.set("broker_rss_start_kb", json!(s0.rss_kb));
        r.set("broker_rss_end_kb", json!(s1.rss_kb));
        r.set(
            "broker_rss_per_conn_bytes",
            json!(round3(
                (s1.rss_kb as f64 - s0.rss_kb as f64) * 1024.0 / connected as f64
            )),
        );
    }
    Ok(r)
}

/// The counts of a connect scenario: `tried` connects, `done` of them with
/// a CONNACK (a failed one counts as lost), at `rate` over `duration_s`.
fn connect_report(
    scenario: &str,
    connections: usize,
    tried: u64,
    done: u64,
    rate: f64,
    duration_s: f64,
) -> Report {
    let mut r = Report::new(scenario);
    r.set("connections", json!(connections));
    r.set("failed", json!(tried - done));
    r.set("connects_per_sec", json!(round3(rate)));
    r.set("msgs_per_sec", json!(round3(rate)));
    r.set("sent", json!(tried));
    r.set("expected", json!(tried));
    r.set("received", json!(done));
    r.set("loss_pct", json!(round3(loss_pct(tried, done))));
    r.set("duration_s", json!(round3(duration_s)));
    r
}

/// Sustained connect rate: `--connect-concurrency` clients, each in a loop
/// until `--duration` is over: TCP connect, CONNECT (clean session),
/// CONNACK, DISCONNECT, wait for the broker to close. The rate counts
/// completed handshakes; the latency is TCP connect to CONNACK.
pub async fn churn(ctx: &Ctx) -> Result<Report> {
    let o = &ctx.opts;
    let workers = o.connect_concurrency.max(1);
    let live = Arc::new(Live::default());
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start_sample = ctx.sample()?;
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(o.duration);
    let bar = progress("churn", live.clone(), t0);
    let mut set = JoinSet::new();
    for _ in 0..workers {
        let target = ctx.target.clone();
        let (live, next) = (live.clone(), next.clone());
        let run_id = ctx.run_id.clone();
        set.spawn(async move {
            let mut hist = Histogram::default();
            let mut first_error = None;
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let id = client_id(&run_id, "churn", "c", i);
                live.add_sent(1);
                let began = Instant::now();
                match mqtt::connect(&target, target.source(i), &id, true).await {
                    Ok((stream, _)) => {
                        hist.record(began.elapsed().as_micros() as u64);
                        live.add_received(1, stats::now_ns());
                        let (rd, wr) = stream.into_split();
                        mqtt::close(rd, wr).await;
                    }
                    Err(e) => first_error = first_error.or(Some(e)),
                }
            }
            (hist, first_error)
        });
    }
    let mut hist = Histogram::default();
    let mut first_error = None;
    while let Some(r) = set.join_next().await {
        match r {
            Ok((h, e)) => {
                hist.merge(&h);
                first_error = first_error.or(e);
            }
            Err(e) => first_error = first_error.or(Some(anyhow!("client task failed: {e}"))),
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let end_sample = ctx.sample()?;
    end_progress(bar);
    let (tried, done) = (live.sent(), live.received());
    let failed = tried - done;
    if done == 0 {
        return Err(first_error.unwrap_or_else(|| anyhow!("no connection was made")));
    }
    if let Some(e) = &first_error {
        eprintln!("midge_bench: churn: {failed} connects failed; first error: {e:#}");
    }
    let rate = done as f64 / elapsed;
    let mut r = connect_report("churn", done as usize, tried, done, rate, elapsed);
    set_latency(&mut r, &hist);
    if let (Some(s0), Some(s1)) = (start_sample, end_sample) {
        set_broker(&mut r, done, s0, s0, s1, s1.rss_kb);
    }
    Ok(r)
}
